"""The Review page's helpers: where scans come from (upload, dataset sample, phantom), the model's
probabilities of one scan (cached), and the display channel, metric cards, downloads and probability map.

Probabilities are cached with ``st.cache_data``, keyed by model id and scan content hash, so
moving the threshold or opacity slider never runs the model again; dataset and phantom slices
are cached too. The threshold and opacity sliders, the banner and the five panels are shared with
the Patients page (:mod:`brainviewer.ui.common`).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import streamlit as st

from brainviewer.data.datasets import Dataset
from brainviewer.data.io import IMAGE_SUFFIXES
from brainviewer.limits import env_limit, raise_hint, scan_slot
from brainviewer.ui.common import (
    first_held_out,
    item_banner,
    metric_cards,
    patient_label,
    patient_split_note,
    review_controls,
    show_panels,
)
from brainviewer.ui.examples import example_source_items, review_examples
from brainviewer.ui.mask_editor import mask_editor, review_source
from brainviewer.ui.reading_view import review_reading_view
from brainviewer.ui.review_model import gate_decision, item_prediction
from brainviewer.ui.review_pages import chosen_pages, page_picker
from brainviewer.ui.sidebar import ModelState
from brainviewer.ui.state import (
    DISPLAY_CHANNEL_KEY,
    READING_REVIEW,
    REVIEW_HAD_DATASET_KEY,
    REVIEW_ITEM_KEY,
    REVIEW_PATIENT_KEY,
    REVIEW_SOURCE_KEY,
    REVIEW_UPLOAD_MEMO_KEY,
    REVIEW_UPLOAD_NAMES_KEY,
    state_index,
)
from brainviewer.views.overlay import DEFAULT_DISPLAY_CHANNEL, DISPLAY_CHANNELS, probs_to_rgb
from brainviewer.views.review import (
    SYNTHETIC_LABEL,
    ReviewItem,
    ReviewView,
    download_names,
    figure_note,
    render_review,
)
from brainviewer.views.review_sources import item_from_record, items_from_uploads, phantom_items

logger = logging.getLogger(__name__)


# === Inference =================================================================================


# === Sources ===================================================================================

SOURCE_UPLOAD = "Upload"
SOURCE_DATASET = "Dataset sample"
SOURCE_PHANTOM = "Synthetic phantom"
SOURCE_EXAMPLES = "Real examples"
SOURCES = (SOURCE_UPLOAD, SOURCE_DATASET, SOURCE_EXAMPLES, SOURCE_PHANTOM)
#: Extensions the upload widget accepts (without the dot).
UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]
MAX_UPLOAD_FILES_ENV = "BRAINVIEWER_MAX_UPLOAD_FILES"
#: Files (scans and masks) one upload may hold; more are refused before any is decoded.
MAX_UPLOAD_FILES = env_limit(MAX_UPLOAD_FILES_ENV, 40)
MAX_SESSION_SCANS_ENV = "BRAINVIEWER_MAX_SESSION_SCANS"
#: Decoded scans a session keeps from its uploads; the oldest are dropped beyond it.
MAX_SESSION_SCANS = env_limit(MAX_SESSION_SCANS_ENV, 40)


def source_picker(has_dataset: bool, has_examples: bool = False) -> str:
    """Radio "Scans from" (key ``review_source``): Upload / Dataset sample / Real examples (when there are) /
    Synthetic phantom. Defaults to the dataset, else the examples, else the phantom; configuring a dataset
    while the examples or the phantom are shown switches to the dataset."""
    sources = SOURCES if has_examples else tuple(s for s in SOURCES if s != SOURCE_EXAMPLES)
    default = SOURCE_DATASET if has_dataset else SOURCE_EXAMPLES if has_examples else SOURCE_PHANTOM
    had_dataset = st.session_state.get(REVIEW_HAD_DATASET_KEY)
    st.session_state[REVIEW_HAD_DATASET_KEY] = has_dataset
    shown = st.session_state.get(REVIEW_SOURCE_KEY)
    if has_dataset and had_dataset is False and shown in (SOURCE_PHANTOM, SOURCE_EXAMPLES):
        st.session_state[REVIEW_SOURCE_KEY] = SOURCE_DATASET  # a dataset was just configured: show it
    return st.radio(
        "Scans from",
        sources,
        index=state_index(REVIEW_SOURCE_KEY, sources, sources.index(default)),
        key=REVIEW_SOURCE_KEY,
        horizontal=True,
        help="Real examples: public scans with their ground truth. Synthetic phantom: generated, not real scans.",
    )


def upload_items() -> tuple[list[ReviewItem], list[str]]:
    """The upload widget (key ``review_upload``) and the items read from it (remembered per upload)."""
    files = st.file_uploader(
        "Scans, with their ground-truth masks if you have them",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="review_upload",
        help=(
            "Name a mask after its scan: TCGA_CS_4941_19960909_12.tif + TCGA_CS_4941_19960909_12_mask.tif. "
            "Scans without a mask are shown without ground truth."
        ),
    )
    if not files:
        st.session_state.pop(REVIEW_UPLOAD_MEMO_KEY, None)
        st.session_state.pop(REVIEW_UPLOAD_NAMES_KEY, None)
        return [], []
    if len(files) > MAX_UPLOAD_FILES:
        st.session_state.pop(REVIEW_UPLOAD_MEMO_KEY, None)  # nothing decoded is kept
        return [], [
            f"{len(files)} files were uploaded; the app reads at most {MAX_UPLOAD_FILES} at a time (scans and "
            f"masks together). Remove some files from the upload. {raise_hint(MAX_UPLOAD_FILES_ENV)}"
        ]
    pages = chosen_pages([f.name for f in files])  # the page picker's choices (multi-page / animated scans)
    signature = (tuple((f.file_id, f.name, f.size) for f in files), tuple(sorted(pages.items())))
    memo = st.session_state.get(REVIEW_UPLOAD_MEMO_KEY)
    if memo is not None and memo[0] == signature:
        return memo[1], memo[2]
    st.session_state.pop(REVIEW_UPLOAD_MEMO_KEY, None)  # free the previous upload's scans first
    with scan_slot():  # a bounded number of uploads decoded at once, all sessions together
        items, errors = items_from_uploads([(f.name, f.getvalue()) for f in files], pages)
    items, dropped = keep_newest(items, MAX_SESSION_SCANS)
    if dropped:
        errors = [
            *errors,
            f"Only the last {MAX_SESSION_SCANS} scans are kept; the {dropped} uploaded first were dropped. "
            + raise_hint(MAX_SESSION_SCANS_ENV),
        ]
    st.session_state[REVIEW_UPLOAD_MEMO_KEY] = (signature, items, errors)
    select_new_scan([item.name for item in items])
    return items, errors


def select_new_scan(names: list[str]) -> None:
    """When an upload adds scans to the previous one, point the scan picker at the first added scan."""
    before = st.session_state.get(REVIEW_UPLOAD_NAMES_KEY)
    st.session_state[REVIEW_UPLOAD_NAMES_KEY] = names
    added = [name for name in names if before is not None and name not in before]
    if added:
        st.session_state[REVIEW_ITEM_KEY] = added[0]  # set before the picker is made this run


def keep_newest(items: list[ReviewItem], cap: int) -> tuple[list[ReviewItem], int]:
    """The last ``cap`` items (the newest uploads) and how many older ones were dropped."""
    dropped = max(0, len(items) - cap)
    return items[dropped:], dropped


@st.cache_data(max_entries=32, show_spinner=False)
def _tumour_slice(root: str, patient_id: str, _dataset: Dataset) -> int:
    """Index of the patient's slice with the largest ground-truth area (the middle one if none)."""
    return _dataset.largest_truth_index(patient_id)


@st.cache_data(max_entries=32, show_spinner="Reading the slice…")
def _record_item(
    root: str, image_path: str, mtime_ns: int, _dataset: Dataset, index: int, patient_id: str
) -> ReviewItem:
    return item_from_record(_dataset, _dataset.patients[patient_id][index])


def dataset_items(dataset: Dataset | None, model: ModelState | None = None) -> tuple[list[ReviewItem], list[str]]:
    """Patient selectbox + slice slider (keys ``review_patient``, ``review_slice``): the chosen slice.

    Patients the model held out in training are tagged in the selectbox, and a note under it says
    whether the model was trained on the chosen patient.
    """
    if dataset is None:
        st.info("No dataset is configured. Enter a dataset folder in the sidebar, or set BRAINVIEWER_DATA.")
        return [], []
    patients = dataset.patient_ids
    left, right = st.columns([2, 3])
    patient_id = left.selectbox(
        "Patient",
        patients,
        index=state_index(REVIEW_PATIENT_KEY, patients, first_held_out(model, patients)),
        key=REVIEW_PATIENT_KEY,
        format_func=functools.partial(patient_label, model),
    )
    with left:
        patient_split_note(model, patient_id)
    records = dataset.patients[patient_id]
    default = _tumour_slice(str(dataset.root), patient_id, dataset)
    if len(records) > 1:
        number = right.slider(
            f"Slice (of {len(records)})",
            1,
            len(records),
            value=default + 1,
            key=f"review_slice_{patient_id}",
            help="Opens on the slice with the largest ground-truth tumour.",
        )
    else:
        number = 1
    record = records[number - 1]
    try:
        mtime = record.image_path.stat().st_mtime_ns
        item = _record_item(str(dataset.root), str(record.image_path), mtime, dataset, number - 1, patient_id)
    except Exception as err:  # unreadable slice: say which and why
        return [], [f"{record.image_path}: {err}"]
    return [item], []


@st.cache_data(max_entries=2, show_spinner=False)
def _phantoms(count: int, size: int) -> list[ReviewItem]:
    return phantom_items(count, size)


def phantom_source_items() -> tuple[list[ReviewItem], list[str]]:
    """Three synthetic phantom slices (the last one without tumour)."""
    st.caption(f"{SYNTHETIC_LABEL}: generated pictures with a drawn-in tumour, not real scans.")
    return _phantoms(3, 256), []


def source_items(
    source: str, dataset: Dataset | None, model: ModelState | None = None
) -> tuple[list[ReviewItem], list[str]]:
    """The items of the chosen source, and messages for files that could not be used."""
    if source == SOURCE_UPLOAD:
        return upload_items()
    if source == SOURCE_DATASET:
        return dataset_items(dataset, model)
    if source == SOURCE_EXAMPLES:
        return example_source_items()
    return phantom_source_items()


def pick_item(items: list[ReviewItem]) -> ReviewItem | None:
    """A selectbox (key ``review_item``) with Previous / Next buttons (keys ``review_prev``, ``review_next``)
    when there are several items; the chosen one (or ``None``)."""
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    names = [item.name for item in items]
    row = st.container(horizontal=True, vertical_alignment="bottom", gap="small")  # buttons never squeezed
    chosen = row.selectbox(
        f"Scan ({len(items)} loaded)", names, index=state_index(REVIEW_ITEM_KEY, names), key=REVIEW_ITEM_KEY
    )
    row.button(
        "Previous",
        key="review_prev",
        on_click=step_item,
        args=(names, -1),
        width="content",
        shortcut="B",
        help="Show the scan before this one; it wraps around: from the first scan it goes to the last.",
    )
    row.button(
        "Next",
        key="review_next",
        on_click=step_item,
        args=(names, 1),
        width="content",
        shortcut="N",
        help="Show the scan after this one; it wraps around: from the last scan it goes to the first.",
    )
    return items[names.index(chosen)]


def step_item(names: list[str], step: int) -> None:
    """Button callback: move the scan picker ``step`` places through ``names``, wrapping around at the ends."""
    current = st.session_state.get(REVIEW_ITEM_KEY)
    index = names.index(current) if current in names else 0
    st.session_state[REVIEW_ITEM_KEY] = names[(index + step) % len(names)]


# === Display =================================================================================


def display_channel_control(item: ReviewItem) -> int | None:
    """For a 3-channel scan, a selectbox (key ``display_channel``) of the channel shown under the
    overlays; FLAIR by default. Returns the channel index, or ``None`` for an RGB composite."""
    if item.image.ndim != 3:
        return None
    labels = list(DISPLAY_CHANNELS)
    default = labels[list(DISPLAY_CHANNELS.values()).index(DEFAULT_DISPLAY_CHANNEL)]
    current = st.session_state.get(DISPLAY_CHANNEL_KEY, default)
    label = st.selectbox(
        "Show channel",
        labels,
        index=labels.index(current) if current in labels else 0,
        key=DISPLAY_CHANNEL_KEY,
        help="Three-channel LGG slices hold pre-contrast, FLAIR and post-contrast. One channel in grayscale "
        "keeps the red (ground truth) and green (prediction) overlays unambiguous.",
    )
    return DISPLAY_CHANNELS[label]


def show_metrics(view: ReviewView, model: ModelState) -> None:
    """Metric cards (Dice, IoU, precision, recall, pixel accuracy; tumour areas) or a plain statement why not."""
    areas = view.areas
    if view.metrics is not None:
        metric_cards(view.score_cards())  # n/a where a ratio has nothing to divide by
        metric_cards(view.area_cards())
        return
    if not model.available:
        truth = "" if areas.truth_px is None else f" Ground-truth tumour area: {areas.truth_px:,} px."
        st.info(f"No prediction: {model.reason}. Metrics need a model.{truth}", icon=":material/info:")
        return
    st.info(
        "No ground truth for this scan, so overlap metrics cannot be computed. "
        "Upload the scan together with <scan>_mask.<ext> to score it.",
        icon=":material/info:",
    )
    metric_cards([("Predicted area (px)", f"{areas.pred_px:,}", "Predicted tumour pixels at this threshold.")])


def show_downloads(view: ReviewView, model: ModelState, gate_note: str | None = None) -> None:
    """Download buttons: predicted mask PNG (scan size), overlay PNG, five-panel PNG (made on click); the
    figure's footer says what the tumour-present gate decided (``gate_note``)."""
    names = download_names(view.item)
    note = figure_note(view.item, model.label if model.available else None, view.threshold, gate_note)
    no_mask = view.pred_mask is None  # the PNG is encoded on click (a 4096 px mask takes most of a second)
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Predicted mask",
            data=b"" if no_mask else view.mask_png,
            file_name=names["mask"],
            mime="image/png",
            key="download_mask",
            on_click="ignore",
            disabled=no_mask,
            icon=":material/download:",
            help=f"{names['mask']}: 0/255 PNG at the scan's size, like the LGG _mask files.",
        )
        st.download_button(
            "Overlay",
            data=view.overlay_png(),
            file_name=names["overlay"],
            mime="image/png",
            key="download_overlay",
            on_click="ignore",
            icon=":material/download:",
            help=f"{names['overlay']}: prediction (green) over the scan; ground truth (red) without a model.",
        )
        st.download_button(
            "Five-panel figure",
            data=functools.partial(view.figure_png, note),
            file_name=names["figure"],
            mime="image/png",
            key="download_panels",
            on_click="ignore",
            icon=":material/download:",
            help=f"{names['figure']}: all panels, with model, threshold and source in the footer.",
        )


def show_probability_map(view: ReviewView) -> None:
    """A collapsed expander with the probability heat map (0 black to 1 yellow)."""
    if view.probs is None:
        return
    with st.expander("Probability map"):
        left, right = st.columns([1, 3])
        shown = probs_to_rgb(view.display_probs)
        left.image(shown, caption="Tumour probability, 0 (black) to 1 (yellow)", width="stretch")
        high = float(view.probs.max())
        right.caption(
            f"Highest probability on this scan: {high:.3f}. "
            f"Pixels ≥ threshold {view.threshold:.2f}: {view.areas.pred_px:,}."
        )


# === The page ==================================================================================


def choose_item(model: ModelState, dataset: Dataset | None) -> ReviewItem:
    """The source radio, the scans it gives (their errors shown) and the scan to review; stops the page
    while there is none."""
    source = source_picker(has_dataset=dataset is not None, has_examples=bool(review_examples()))
    items, errors = source_items(source, dataset, model)
    for error in errors:
        st.error(error, icon=":material/error:")
    item = pick_item(items)
    if item is not None and source == SOURCE_UPLOAD:
        page_picker(item)
    if item is None:
        if source == SOURCE_UPLOAD:
            st.info("Upload one or more scans, with their _mask files if you have them.", icon=":material/upload:")
        st.stop()
    return item


def show_item(item: ReviewItem, model: ModelState, dataset: Dataset | None = None) -> None:
    """One scan beside the model: banner, sliders, the five panels, the mask editor, metrics, downloads and
    probability map."""
    item_banner(item, model)
    threshold, opacity = review_controls(model)
    channel = display_channel_control(item)
    probs, presence = item_prediction(model, item)
    hidden, gate_note = gate_decision(model, presence, item.key) if probs is not None else (False, None)
    view = render_review(
        item,
        probs,
        threshold=threshold,
        alpha=opacity,
        min_component_px=model.min_component_px,
        keep_largest=model.keep_largest,
        pred_mask=np.zeros(item.shape, dtype=bool) if hidden else None,
        no_prediction_reason=model.reason,
        display_channel=channel,
    )
    show_panels(view)
    if view.display_note:  # a large scan's panels come from its display copy
        st.caption(view.display_note)
    review_reading_view(view, READING_REVIEW, view_id=item.key)
    mask_editor(item, view.pred_mask, model, view.threshold, review_source(item, dataset), channel)
    show_metrics(view, model)
    show_downloads(view, model, gate_note)
    show_probability_map(view)
