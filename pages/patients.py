"""Patients: a whole patient volume beside the model, slice by slice, with volumes, Dice and exports."""

import functools

import numpy as np
import streamlit as st
from plotly.subplots import make_subplots

from brainviewer import ui
from brainviewer.data.volumes import nifti_mask_bytes
from brainviewer.views.exports import masks_zip_bytes, patient_report_html, patients_csv, safe_file_stem, slices_csv
from brainviewer.views.overlay import GT_COLOR, PRED_COLOR
from brainviewer.views.patient import montage, predicted_masks, summarise_patient, tumour_gif
from brainviewer.views.review import SYNTHETIC_LABEL, ReviewItem, render_review

MAX_MONTAGE = 36

st.title("Patients", anchor=False)
st.caption(
    "A whole patient, slice by slice: ground truth in red, prediction in green. The model runs once per patient; "
    "scrubbing slices or moving the threshold only re-reads its cached output."
)

request = ui.consume_open_patient_request()
model = ui.sidebar_model()
dataset = ui.sidebar_dataset()
source = ui.patient_source_picker(has_dataset=dataset is not None)

synthetic = False
volume, volume_key, error = None, None, None
if source == ui.PATIENT_SOURCE_DATASET:
    if dataset is None:
        ui.no_dataset_help()
        st.stop()
    volume, volume_key = ui.dataset_patient(dataset, model=model)
elif source == ui.PATIENT_SOURCE_UPLOAD:
    volume, volume_key, error = ui.volume_upload()
    if error:
        st.error(error, icon=":material/error:")
    if volume is None:
        st.stop()
else:
    synthetic = True
    volume, volume_key = ui.dataset_patient(ui.phantom_dataset(), label="Phantom patient")

for note in volume.notes:
    st.caption(f"ℹ️ {note}")

# --- inference (cached per model and patient) and the prediction at the current threshold
probs = ui.volume_probs(model, volume, volume_key)
threshold, opacity = ui.review_controls(model)
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

# --- the slice scrubber opens a new patient on its largest tumour slice
if st.session_state.get("_patient_current") != volume_key:
    st.session_state["_patient_current"] = volume_key
    opened = st.session_state.pop("_patient_open_slice", 0)
    start = summary.largest_gt_slice if summary.has_ground_truth else summary.largest_pred_slice
    start = (opened - 1) if 1 <= opened <= volume.n_slices else (start if start is not None else volume.n_slices // 2)
    st.session_state[ui.PATIENT_SLICE_KEY] = start + 1
index = ui.slice_scrubber(volume.n_slices, default=volume.n_slices // 2)

# --- the five panels of the current slice
item = ReviewItem(
    f"{volume.patient_id} · slice {index + 1} of {volume.n_slices}",
    volume.display_image(index),
    truth=volume.mask(index),
    source=f"{SYNTHETIC_LABEL if synthetic else volume.source_kind} · {volume.slice_names[index]}",
    synthetic=synthetic,
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
        if source == ui.PATIENT_SOURCE_UPLOAD
        else "the dataset has no mask for this slice"
    ),
)
ui.item_banner(item, model)
ui.show_panels(view)

# --- the whole volume: tumour area per slice (truth and prediction) and per-slice Dice
slices = np.arange(1, volume.n_slices + 1)
has_truth = summary.has_ground_truth
rows = 2 if has_truth and probs is not None else 1
figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4][:rows])
if has_truth:
    figure.add_bar(
        x=slices,
        y=[a or 0 for a in summary.truth_area_px],
        name="Ground truth (px)",
        marker_color="rgb({},{},{})".format(*GT_COLOR),
        row=1,
        col=1,
    )
if probs is not None:
    figure.add_bar(
        x=slices,
        y=summary.pred_area_px,
        name="Predicted (px)",
        marker_color="rgb({},{},{})".format(*PRED_COLOR),
        row=1,
        col=1,
    )
    if has_truth:
        dice = [np.nan if d is None else d for d in summary.slice_dice]
        figure.add_scatter(
            x=slices, y=dice, mode="lines+markers", name="Slice Dice", line_color="#3b7dd8", row=2, col=1
        )
        figure.update_yaxes(range=[0, 1.05], title_text="Dice", row=2, col=1)
figure.add_vline(x=index + 1, line_dash="dot", line_color="#555")
figure.update_yaxes(title_text="tumour px", row=1, col=1)
figure.update_xaxes(title_text="slice", row=rows, col=1)
figure.update_layout(
    barmode="group",
    height=220 + 140 * (rows - 1),
    margin={"t": 10, "b": 10, "l": 10, "r": 10},
    legend={"orientation": "h", "y": 1.12},
)
st.plotly_chart(figure, key="patient_strip", config={"displayModeBar": False})

# --- tumour volume and Dice
spacing = volume.spacing_mm


def volume_text(voxels: int | None, mm3: float | None) -> str:
    """The card value: millilitres when the spacing is known, else voxels."""
    if voxels is None:
        return "n/a"
    return f"{mm3 / 1000:,.2f} mL" if mm3 is not None else f"{voxels:,} vox"


predicted = probs is not None
gt_count = len(summary.gt_tumour_slices) if has_truth else "n/a"
pred_count = len(summary.pred_tumour_slices) if predicted else "n/a"
cards = [
    ("Tumour volume, truth", volume_text(summary.gt_voxels, summary.gt_volume_mm3), "Ground-truth tumour volume."),
    (
        "Tumour volume, predicted",
        volume_text(summary.pred_voxels, summary.pred_volume_mm3) if predicted else "n/a",
        "Predicted tumour volume at this threshold.",
    ),
    ("Tumour slices", f"{gt_count} / {pred_count}", "Slices with tumour: by ground truth / by prediction."),
    (
        "Volume Dice",
        f"{summary.volume_dice:.3f}" if predicted and summary.volume_dice is not None else "n/a",
        "One Dice over all slices stacked (Buda et al. 2019).",
    ),
    (
        "Mean tumour-slice Dice",
        f"{summary.tumour_slice_dice:.3f}" if predicted and summary.tumour_slice_dice is not None else "n/a",
        "Mean Dice over the slices whose ground truth has tumour.",
    ),
]
for column, (label, value, help_text) in zip(st.columns(len(cards)), cards, strict=True):
    column.metric(label, value, help=help_text, border=True)
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

# --- montage of the tumour slices
tumour = summary.tumour_slices if predicted else summary.gt_tumour_slices
with st.expander(f"Tumour slices ({len(tumour)})", expanded=bool(tumour)):
    if not tumour:
        st.caption("No tumour on any slice, by ground truth or prediction.")
    else:
        shown = (
            tumour
            if len(tumour) <= MAX_MONTAGE
            else [tumour[int(i)] for i in np.linspace(0, len(tumour) - 1, MAX_MONTAGE)]
        )
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

# --- downloads
if probs is not None and pred_masks is not None:
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
                patient_report_html, volume, summary, pred_masks, model.label or "model", threshold, None, note
            ),
            file_name=f"{stem}_report.html",
            mime="text/html",
            key="patient_report",
            on_click="ignore",
            icon=":material/download:",
            help="One self-contained page: key slices, volumes, metrics, model and threshold.",
        )
elif not model.available:
    st.info(f"No prediction: {model.reason}. The volume and its ground truth are shown without the model.")
if request is not None:
    st.toast(f"Opened {request['patient_id']} from the Evaluation page.")
