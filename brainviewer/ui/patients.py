"""The Patients page's helpers: a whole patient's probabilities (cached in batches), the slice
scrubber, and the page's sections: the current slice's panels, the per-slice strip, volume cards,
the tumour-slice montage and the downloads.

The patient itself comes from :mod:`brainviewer.ui.patient_sources`. The model runs once per
patient; scrubbing slices or moving the threshold only re-reads its cached output.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import streamlit as st

from brainviewer.data.volumes import Volume, nifti_mask_bytes
from brainviewer.model.inference import patient_levels, predict_batch
from brainviewer.model.segmenter import Segmenter
from brainviewer.ui.common import PATIENT_BATCH, item_banner, metric_cards, show_panels
from brainviewer.ui.dicom_seg_download import dicom_seg_button
from brainviewer.ui.mask_editor import mask_editor, volume_source
from brainviewer.ui.patient_sources import PATIENT_SOURCE_UPLOAD
from brainviewer.ui.reading_view import review_reading_view
from brainviewer.ui.sidebar import ModelState
from brainviewer.ui.state import (
    PATIENT_CURRENT_KEY,
    PATIENT_OPEN_SLICE_KEY,
    PATIENT_PROBS_DONE_KEY,
    PATIENT_SLICE_KEY,
    READING_PATIENT,
)
from brainviewer.views.exports import masks_zip_bytes, patient_report_html, patients_csv, safe_file_stem, slices_csv
from brainviewer.views.figures import patient_strip_figure
from brainviewer.views.patient import (
    PatientSummary,
    model_inputs,
    montage,
    montage_slices,
    predicted_masks,
    summarise_patient,
    tumour_gif,
    volume_step_note,
)
from brainviewer.views.review import SYNTHETIC_LABEL, ReviewItem, render_review

logger = logging.getLogger(__name__)


# === Inference and the slice scrubber ==========================================================


@st.cache_data(max_entries=40, show_spinner=False)
def _batch_probs(
    model_id: str, volume_key: str, start: int, stop: int, _segmenter: Segmenter, _images: list, _levels: object
) -> list:
    """Probabilities of slices ``start:stop`` of one volume (``_levels``: the whole patient's intensity
    levels, or ``None``), keyed by model id + volume key + range."""
    return [np.asarray(p, dtype=np.float32) for p in predict_batch(_segmenter, _images, len(_images), _levels)]


@st.cache_data(max_entries=40, show_spinner=False)
def _patient_levels(model_id: str, volume_key: str, _segmenter: Segmenter, _images: list) -> object:
    """The patient's intensity levels for this model (``None`` unless it normalises per patient), computed
    once per (model, patient): every rerun (scrubbing, threshold) reads them from the cache."""
    return patient_levels(_segmenter, _images)


def volume_probs(model: ModelState, volume: Volume, volume_key: str) -> list[np.ndarray] | None:
    """Whole-patient probabilities, computed once per (model, patient) in cached batches of
    :data:`PATIENT_BATCH` slices with a progress bar; later reruns (scrubbing, threshold) read the cache.

    Returns ``None`` without a model, or when the model fails (the error is shown).
    """
    if model.segmenter is None or model.model_id is None:
        return None
    images = model_inputs(volume)
    total = len(images)
    levels = _patient_levels(model.model_id, volume_key, model.segmenter, images)
    done = st.session_state.setdefault(PATIENT_PROBS_DONE_KEY, set())
    show = (model.model_id, volume_key) not in done  # no progress bar flashing on cached reruns
    placeholder = st.empty()
    probs: list[np.ndarray] = []
    try:
        for start in range(0, total, PATIENT_BATCH):
            stop = min(total, start + PATIENT_BATCH)
            if show:
                text = f"Segmenting the patient: slices {start + 1}-{stop} of {total}…"
                placeholder.progress(start / total, text=text)
            chunk = images[start:stop]
            probs.extend(_batch_probs(model.model_id, volume_key, start, stop, model.segmenter, chunk, levels))
    except Exception as err:
        logger.exception("model failed on %s", volume_key)
        placeholder.empty()
        st.error(f"The model failed on this patient: {type(err).__name__}: {err}")
        return None
    placeholder.empty()
    done.add((model.model_id, volume_key))
    return probs


def slice_scrubber(n_slices: int, default: int) -> int:
    """Slice slider (key ``patient_slice``, 1-based; arrow keys move a focused slider) with
    previous / next buttons. Returns the 0-based index."""

    def step(delta: int) -> None:
        current = int(st.session_state.get(PATIENT_SLICE_KEY, default + 1))
        st.session_state[PATIENT_SLICE_KEY] = min(n_slices, max(1, current + delta))

    if n_slices <= 1:
        st.session_state[PATIENT_SLICE_KEY] = 1
        return 0
    value = st.session_state.get(PATIENT_SLICE_KEY)
    if not isinstance(value, int) or not 1 <= value <= n_slices:
        st.session_state[PATIENT_SLICE_KEY] = default + 1
    left, middle, right = st.columns([1, 12, 1], vertical_alignment="bottom")
    left.button(
        "◀", key="patient_prev", on_click=step, args=(-1,), help="Previous slice", width="stretch", shortcut="B"
    )
    number = middle.slider(
        "Slice",
        1,
        n_slices,
        key=PATIENT_SLICE_KEY,
        help="Drag, or click the slider and use the arrow keys.",
    )
    right.button("▶", key="patient_next", on_click=step, args=(1,), help="Next slice", width="stretch", shortcut="N")
    return int(number) - 1


# === The page's sections =======================================================================


def prediction(
    model: ModelState, volume: Volume, probs: list[np.ndarray] | None, threshold: float
) -> tuple[list[np.ndarray] | None, PatientSummary]:
    """The predicted masks at ``threshold`` (``None`` without probabilities) and the patient's summary."""
    pred_masks = (
        predicted_masks(probs, threshold, model.min_component_px, model.keep_largest, model.volume_keep_largest)
        if probs is not None
        else None
    )
    summary = (
        summarise_patient(volume, pred_masks, probs, threshold)
        if pred_masks is not None
        else summarise_patient(volume, [np.zeros(volume.shape, bool)] * volume.n_slices)
    )
    return pred_masks, summary


def current_slice(volume: Volume, volume_key: str, summary: PatientSummary) -> int:
    """The slice scrubber, which opens a new patient on its largest tumour slice (or on the slice another
    page asked for); the current slice, 0-based."""
    if st.session_state.get(PATIENT_CURRENT_KEY) != volume_key:
        st.session_state[PATIENT_CURRENT_KEY] = volume_key
        opened = st.session_state.pop(PATIENT_OPEN_SLICE_KEY, 0)
        st.session_state[PATIENT_SLICE_KEY] = summary.opening_slice(opened) + 1
    return slice_scrubber(volume.n_slices, default=volume.n_slices // 2)


def show_slice(
    volume: Volume,
    index: int,
    probs: list[np.ndarray] | None,
    pred_masks: list[np.ndarray] | None,
    threshold: float,
    opacity: float,
    model: ModelState,
    source: str,
    synthetic: bool,
) -> None:
    """The five panels of slice ``index``, under the banner."""
    item = ReviewItem(
        f"{volume.patient_id} · slice {index + 1} of {volume.n_slices}",
        volume.display_image(index),
        truth=volume.mask(index),
        source=f"{SYNTHETIC_LABEL if synthetic else volume.source_kind} · {volume.slice_names[index]}",
        synthetic=synthetic,
        channels_by_layout=volume.source_kind == "kaggle_3m",
    )
    view = render_review(
        item,
        None if probs is None else probs[index],
        threshold=threshold,
        alpha=opacity,
        min_component_px=model.min_component_px,
        keep_largest=model.keep_largest,
        pred_mask=None if pred_masks is None else pred_masks[index],
        no_prediction_reason=model.reason,
        no_truth_hint=(
            "add its mask volume under 'Optional: its ground-truth mask volume'"
            if source == PATIENT_SOURCE_UPLOAD
            else "the dataset has no mask for this slice"
        ),
    )
    item_banner(item, model)
    show_panels(view)
    review_reading_view(view, READING_PATIENT, view_id=volume.patient_id)
    mask_editor(item, view.pred_mask, model, threshold, volume_source(volume, index, synthetic))
    if model.volume_keep_largest and probs is not None and pred_masks is not None:
        note = volume_step_note(probs[index], pred_masks[index], threshold, model.min_component_px, model.keep_largest)
        if note:
            st.caption(
                f"{note} on this slice: these weights keep only the patient's largest 3-D tumour component, so "
                "the Review page, which sees one slice at a time, shows more predicted pixels here."
            )


def show_strip(summary: PatientSummary, index: int, predicted: bool) -> None:
    """The whole volume: tumour area per slice (truth and prediction) and per-slice Dice."""
    figure = patient_strip_figure(summary, index, predicted)
    st.plotly_chart(figure, key="patient_strip", config={"displayModeBar": False})


def volume_number(voxels: int | None, mm3: float | None) -> str:
    """The card value without its unit (the label carries it): millilitres when the spacing is known, else
    voxels; ``n/a`` without a volume."""
    if voxels is None:
        return "n/a"
    return f"{mm3 / 1000:,.2f}" if mm3 is not None else f"{voxels:,}"


def show_volumes(summary: PatientSummary, spacing: tuple[float, float, float] | None, predicted: bool) -> None:
    """Tumour volume and Dice cards, and a caption with the voxel counts and spacing."""
    has_truth = summary.has_ground_truth
    gt_count = len(summary.gt_tumour_slices) if has_truth else "n/a"
    pred_count = len(summary.pred_tumour_slices) if predicted else "n/a"
    unit = "mL" if summary.gt_volume_mm3 is not None or summary.pred_volume_mm3 is not None else "voxels"
    cards = [
        (
            "Volume Dice",
            f"{summary.volume_dice:.3f}" if predicted and summary.volume_dice is not None else "n/a",
            "One Dice over all slices stacked (Buda et al. 2019).",
        ),
        (
            "Mean slice Dice",
            f"{summary.tumour_slice_dice:.3f}" if predicted and summary.tumour_slice_dice is not None else "n/a",
            "Mean tumour-slice Dice: the mean Dice over the slices whose ground truth has tumour.",
        ),
        (
            f"Truth ({unit})",
            volume_number(summary.gt_voxels, summary.gt_volume_mm3),
            "Ground-truth tumour volume (millilitres where the voxel spacing is known, else voxels).",
        ),
        (
            f"Predicted ({unit})",
            volume_number(summary.pred_voxels, summary.pred_volume_mm3) if predicted else "n/a",
            "Predicted tumour volume at this threshold (millilitres where the voxel spacing is known, else voxels).",
        ),
        ("Tumour slices", f"{gt_count} / {pred_count}", "Slices with tumour: by ground truth / by prediction."),
    ]
    metric_cards(cards)
    voxels = [
        f"truth {summary.gt_voxels:,}" if summary.gt_voxels is not None else None,
        f"predicted {summary.pred_voxels:,}" if predicted else None,
    ]
    voxel_text = "Tumour voxels: " + " · ".join(v for v in voxels if v) if any(voxels) else ""
    if spacing:
        spacing_text = f"voxel spacing {spacing[0]:.3g} × {spacing[1]:.3g} × {spacing[2]:.3g} mm (row × column × slice)"
    else:
        spacing_text = "pixel spacing unknown, so volumes are in voxels"
    st.caption(" · ".join(t for t in (voxel_text, spacing_text) if t) + ".")


def show_montage(volume: Volume, summary: PatientSummary, pred_masks: list[np.ndarray] | None, synthetic: bool) -> None:
    """A montage of the tumour slices (by prediction and truth, or by truth alone without a model), animated
    on request."""
    tumour = summary.tumour_slices if pred_masks is not None else summary.gt_tumour_slices
    with st.expander(f"Tumour slices ({len(tumour)})", expanded=bool(tumour)):
        if not tumour:
            st.caption("No tumour on any slice, by ground truth or prediction.")
            return
        shown = montage_slices(tumour)
        images = [volume.display_image(i) for i in shown]
        truths = [volume.mask(i) for i in shown]
        preds = [pred_masks[i] for i in shown] if pred_masks is not None else None
        labels = [str(i + 1) for i in shown]
        st.image(
            montage(images, truths, preds, labels=labels),
            caption="Slice numbers in the corners; "
            "truth red, prediction green" + (f" · {SYNTHETIC_LABEL}" if synthetic else ""),
        )
        if st.toggle("Animate", key="patient_gif"):
            st.image(tumour_gif(images, truths, preds, labels=labels), caption="Tumour slices, animated")


def show_patient_downloads(
    volume: Volume,
    summary: PatientSummary,
    pred_masks: list[np.ndarray] | None,
    threshold: float,
    model: ModelState,
    synthetic: bool,
) -> None:
    """Download buttons (predicted masks as ZIP and NIfTI, metrics as CSV, a report page), or why there is
    no prediction."""
    if pred_masks is None:
        if not model.available:
            st.info(f"No prediction: {model.reason}. The volume and its ground truth are shown without the model.")
        return
    stem = safe_file_stem(volume.patient_id)
    note = f"{SYNTHETIC_LABEL}: not a real scan" if synthetic else ""
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Predicted masks (ZIP)",
            data=functools.partial(masks_zip_bytes, volume, pred_masks, None, model.label, threshold),
            file_name=f"{stem}_predicted_masks.zip",
            mime="application/zip",
            key="patient_zip",
            on_click="ignore",
            icon=":material/download:",
            help="PNG masks in the dataset's own layout and _mask naming (see the README inside).",
        )
        if volume.affine is not None:
            st.download_button(
                "Predicted mask (NIfTI)",
                data=functools.partial(nifti_mask_bytes, pred_masks, volume),
                file_name=f"{stem}_predicted_mask.nii.gz",
                mime="application/gzip",
                key="patient_nifti",
                on_click="ignore",
                icon=":material/download:",
                help="uint8 mask on the input's grid, with its affine.",
            )
        dicom_seg_button(volume, pred_masks, model.label, stem)
        st.download_button(
            "Per-slice metrics (CSV)",
            data=slices_csv(summary, volume),
            file_name=f"{stem}_slices.csv",
            mime="text/csv",
            key="patient_slices_csv",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Patient metrics (CSV)",
            data=patients_csv([summary]),
            file_name=f"{stem}_patient.csv",
            mime="text/csv",
            key="patient_csv",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Report (HTML)",
            data=functools.partial(
                patient_report_html,
                volume,
                summary,
                pred_masks,
                model.label or "model",
                threshold,
                None,
                note,
                source=f"{SYNTHETIC_LABEL}, generated by brainviewer (not a scan)" if synthetic else None,
            ),
            file_name=f"{stem}_report.html",
            mime="text/html",
            key="patient_report",
            on_click="ignore",
            icon=":material/download:",
            help="One self-contained page: key slices, volumes, metrics, model and threshold.",
        )
