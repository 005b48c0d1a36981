"""Page helpers more than one page uses: held-out patient tags, the review display (threshold and
opacity sliders, banner, five panels), the synthetic phantom dataset, and the cached evaluation.

The model and dataset sidebars are in :mod:`brainviewer.ui.sidebar`; each page's own helpers are
in its own module (``brainviewer.ui.<page>``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st

from brainviewer.data.datasets import DATA_ENV, Dataset
from brainviewer.data.split import patient_of_file
from brainviewer.model.inference import patient_levels, predict_batch
from brainviewer.model.segmenter import Segmenter
from brainviewer.runs.compare import format_duration
from brainviewer.ui.sidebar import ModelState, load_dataset, other_models_preprocessing, use_model_button
from brainviewer.ui.state import (
    EVAL_DONE_KEY,
    MODEL_CHOICE_KEY,
    OPACITY_KEY,
    THRESHOLD_KEY,
    THRESHOLD_MODEL_KEY,
    USE_FITTING_MODEL_KEY,
)
from brainviewer.views.dataset_evaluation import (
    DatasetEvaluation,
    evaluate_dataset,
    evaluation_request,
    merge_evaluations,
)
from brainviewer.views.examples import EXAMPLE_SOURCE
from brainviewer.views.overlay import DEFAULT_ALPHA, overview_picture, placeholder_image
from brainviewer.views.review import (
    NO_PREDICTION_TEXT,
    NO_TRUTH_TEXT,
    SYNTHETIC_LABEL,
    ReviewItem,
    ReviewView,
)
from brainviewer.views.scan_kind import fitting_model, input_kind_note

logger = logging.getLogger(__name__)


# === Held-out patients =========================================================================

HELD_OUT_TAG = "held out"


def first_held_out(model: ModelState | None, patients: list[str]) -> int:
    """Index of the first of ``patients`` the model held out in training (0 when none or unknown):
    the patient a page opens on, so a first look is a fair one."""
    if model is not None and model.split is not None:
        for i, patient_id in enumerate(patients):
            if model.split.side_of(patient_id) == "val":
                return i
    return 0


def patient_label(model: ModelState | None, patient_id: str) -> str:
    """The patient id, tagged ``· held out`` when it is a validation patient of the model's training."""
    held_out = model is not None and model.split is not None and model.split.side_of(patient_id) == "val"
    return f"{patient_id} · {HELD_OUT_TAG}" if held_out else patient_id


def patient_split_note(model: ModelState | None, patient_id: str) -> None:
    """Say whether the model was trained on this patient (its prediction flatters it) or held it out."""
    side = model.split.side_of(patient_id) if model is not None and model.split is not None else None
    if side == "val":
        st.caption(
            f":material/verified: Held out: {patient_id} is one of the validation patients of {model.label}, "
            "never trained on: a fair example of how it does on new patients."
        )
    elif side == "train":
        st.caption(
            f":material/info: {model.label} was trained on {patient_id}, so its prediction here looks better "
            f"than on a new patient. Patients marked '{HELD_OUT_TAG}' are the fair test."
        )


# === Review display (Review and Patients) =====================================================


def review_controls(model: ModelState) -> tuple[float, float]:
    """Threshold (key ``threshold``, 0.01-0.99) and opacity (key ``opacity``) sliders side by side.

    The threshold starts at the model's default and is reset to it when the model changes.
    """
    default = round(float(model.threshold), 2)
    threshold_value = st.session_state.get(THRESHOLD_KEY)
    if st.session_state.get(THRESHOLD_MODEL_KEY) != model.model_id or threshold_value is None:
        st.session_state[THRESHOLD_MODEL_KEY] = model.model_id
        if threshold_value is not None and threshold_value != default:
            # written here and passed as the slider's value below, the two always agree; Streamlit's warning
            # about a value set both ways is switched off in .streamlit/config.toml for this reason
            st.session_state[THRESHOLD_KEY] = default
        threshold_value = default
    left, right = st.columns(2)
    threshold = left.slider(
        "Probability threshold",
        min_value=0.01,
        max_value=0.99,
        value=float(threshold_value),
        step=0.01,
        key=THRESHOLD_KEY,
        disabled=not model.available,
        help="Pixels with tumour probability at or above this are predicted tumour. Moving it never reruns the model.",
    )
    alpha = right.slider(
        "Mask opacity",
        min_value=0.0,
        max_value=1.0,
        value=float(st.session_state.get(OPACITY_KEY, DEFAULT_ALPHA)),
        step=0.05,
        key=OPACITY_KEY,
        help="How strongly the mask colour covers the scan in the overlays; outlines stay solid.",
    )
    return float(threshold), float(alpha)


def item_banner(item: ReviewItem, model: ModelState) -> None:
    """Heading for the current scan: its name and source, a SYNTHETIC warning, its messages, and for an
    uploaded slice of a patient in the model's split (by file name) whether the model was trained on it."""
    st.markdown(f"#### {item.name}")
    model_text = f"model **{model.label}** on {model.device}" if model.available else "no model"
    st.caption(f"{item.source} · {item.shape[1]}×{item.shape[0]} px · {model_text}")
    if item.synthetic:
        st.warning(
            f"**{SYNTHETIC_LABEL}**: a synthetic picture generated by brainviewer, not a real scan. "
            "Use it to try the app; judge the model on real data.",
            icon=":material/science:",
        )
    else:
        for message in item.messages:
            st.warning(message, icon=":material/warning:")
        by_layout = item.channels_by_layout
        note = input_kind_note(item.image, model.segmenter.prep, model.label, by_layout) if model.segmenter else None
        if note:
            st.info(note, icon=":material/info:")
            current = st.session_state.get(MODEL_CHOICE_KEY)
            better = fitting_model(item.image, other_models_preprocessing(current), by_layout)
            if better is not None:
                use_model_button(better, "scan", USE_FITTING_MODEL_KEY, "this kind of scan")
        if item.source == "upload" and model.split is not None:  # a dataset pick has its note already
            patient_id = patient_of_file(item.name, model.split)
            if patient_id is not None:
                patient_split_note(model, patient_id)
        elif item.source.startswith(EXAMPLE_SOURCE) and item.patient_id is not None:
            patient_split_note(model, item.patient_id)


def placeholder_text(caption: str) -> str:
    """The words on an unavailable panel's grey card: one short text per kind ("No ground truth", "No
    prediction"), so the two ground-truth cards of a scan without a mask are drawn alike (the font is fitted
    to the text, and "No ground truth for this scan" came out smaller than "No ground truth")."""
    head = caption.split(":")[0]
    return next((text for text in (NO_TRUTH_TEXT, NO_PREDICTION_TEXT) if head.startswith(text)), head)


def show_panels(view: ReviewView) -> None:
    """The five panels in one row: title above, picture, caption below. Unavailable ones are grey cards.
    They are an overview, sent at most :data:`~brainviewer.views.overlay.OVERVIEW_MAX_SIDE` px a side (the
    reading view below shows the scan at full resolution)."""
    for column, panel in zip(st.columns(5, gap="small"), view.panels, strict=True):
        with column:
            st.markdown(f"**{panel.title}**")
            if panel.image is not None:
                picture = panel.image
            else:
                picture = placeholder_image(view.panels[0].image.shape[:2], placeholder_text(panel.caption))
            st.image(overview_picture(picture), caption=panel.caption, width="stretch", output_format="PNG")


def metric_cards(cards: Sequence[tuple[str, str, str | None]]) -> None:
    """Bordered metric cards ``(label, value, help)`` in a row that wraps onto further rows when the page is
    narrow, each card as wide as its label and value: no number or label is ever cut off (a fixed number
    of columns squeezed "0.953" to "0…" at 820 px)."""
    with st.container(horizontal=True, gap="small", wrap=True):
        for label, value, help_text in cards:
            st.metric(label, value, help=help_text, border=True, width="content")


# === Synthetic phantom dataset (Evaluation and Patients) ======================================


@st.cache_resource(show_spinner="Writing the synthetic phantom dataset…")
def phantom_dataset_path(patients: int = 4, slices: int = 12, size: int = 128) -> str:
    """A temporary ``kaggle_3m``-layout folder of SYNTHETIC phantom patients, written once per server process
    and removed when it exits (:func:`brainviewer.data.phantom.process_phantom_dataset`)."""
    from brainviewer.data.phantom import process_phantom_dataset

    return str(process_phantom_dataset(patients=patients, slices=slices, size=size))


def phantom_dataset() -> Dataset:
    """The SYNTHETIC phantom dataset (see :func:`phantom_dataset_path`), opened and cached."""
    dataset, error = load_dataset(phantom_dataset_path())
    if dataset is None:  # pragma: no cover - the folder was just written
        raise RuntimeError(error)
    return dataset


def no_dataset_help() -> None:
    """Say how to configure a dataset (sidebar, BRAINVIEWER_DATA, README)."""
    st.info(
        f"No dataset is configured. Type a dataset folder in the sidebar (**Dataset folder**), or start the app "
        f"with `{DATA_ENV}=/path/to/kaggle_3m streamlit run app.py`. The README section *Datasets* lists the "
        "layouts brainviewer reads. Meanwhile you can try the synthetic phantom dataset (not real scans).",
        icon=":material/folder_open:",
    )


# === Evaluation (Evaluation and Fine-tuning) ===================================================

#: Slices per model call on the Patients page (each batch is cached on its own, so an
#: interrupted run keeps the batches already done).
PATIENT_BATCH = 16


#: Called with the number of slices just predicted.
SliceTick = Callable[[int], None]


def patient_probs(segmenter: Segmenter, scans: list[np.ndarray], tick: SliceTick | None = None) -> list[np.ndarray]:
    """``(H, W)`` float32 probabilities of one patient's ``scans``, normalised with the whole patient's
    intensity levels where the weights ask for it (as ``python -m brainviewer evaluate`` and the Patients page
    do), :data:`PATIENT_BATCH` slices per model call; ``tick`` is told after each call how many were done."""
    levels = patient_levels(segmenter, scans)
    probs: list[np.ndarray] = []
    for start in range(0, len(scans), PATIENT_BATCH):
        chunk = scans[start : start + PATIENT_BATCH]
        probs.extend(predict_batch(segmenter, chunk, len(chunk), levels))
        if tick is not None:
            tick(len(chunk))
    return probs


#: Patient evaluations the server keeps (the oldest are dropped beyond it).
EVALUATION_CACHE_ENTRIES = 4096


@st.cache_resource(show_spinner=False)
def _evaluation_store() -> tuple[OrderedDict, threading.Lock]:
    """The server's patient evaluations by key, oldest first, and the lock that guards them. Not
    ``st.cache_data``: that replays the elements a cached call draws, and the progress bar is drawn from
    inside the computation."""
    return OrderedDict(), threading.Lock()


def _patient_evaluation(
    model_id: str,
    dataset_key: str,
    patient_id: str,
    threshold: float,
    min_component_px: int,
    keep_largest: bool,
    volume_keep_largest: bool,
    segmenter: Segmenter,
    dataset: Dataset,
    tick: SliceTick | None = None,
) -> DatasetEvaluation:
    """One patient's evaluation (report + slice scores), kept by model, dataset, patient and setting;
    ``tick`` hears of each batch of slices predicted (not when the evaluation is already kept)."""
    store, lock = _evaluation_store()
    key = (model_id, dataset_key, patient_id, threshold, min_component_px, keep_largest, volume_keep_largest)
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    result = evaluate_dataset(
        dataset.subset([patient_id]),
        lambda scans: patient_probs(segmenter, scans, tick),
        threshold,
        min_component_px,
        keep_largest,
        volume_keep_largest,
    )
    with lock:
        store[key] = result
        while len(store) > EVALUATION_CACHE_ENTRIES:
            store.popitem(last=False)
    return result


def progress_text(done: int, total: int, patient: tuple[int, int, str] | None, seconds_left: float | None) -> str:
    """The evaluation progress line: ``Evaluating slice 40 of 564 · about 2 min left``, with the patient
    (``(number, of, id)``) where patients have several slices; no time before one can be estimated."""
    text = f"Evaluating slice {min(done + 1, total):,} of {total:,}"
    if patient is not None:
        text += f" (patient {patient[0]:,} of {patient[1]:,}: {patient[2]})"
    if seconds_left is not None:
        text += f" · about {format_duration(seconds_left)} left"
    return text + "…"


def evaluate_with_progress(
    model: ModelState,
    dataset: Dataset,
    dataset_key: str,
    threshold: float,
    min_component_px: int,
    keep_largest: bool,
    volume_keep_largest: bool = False,
) -> DatasetEvaluation | None:
    """Evaluate every patient of ``dataset`` (each one cached on its own, so an interrupted or
    repeated evaluation resumes where it stopped) with a progress bar that moves with every batch of slices
    and says the time left (from the slices predicted so far; cached patients cost nothing); the merged
    :class:`~brainviewer.views.dataset_evaluation.DatasetEvaluation`, or ``None`` on error (shown)."""
    if model.segmenter is None or model.model_id is None:
        return None
    patients = dataset.patients
    total = sum(len(records) for records in patients.values())
    one_slice_each = all(len(records) == 1 for records in patients.values())
    request = evaluation_request(
        model.model_id, dataset_key, threshold, min_component_px, keep_largest, volume_keep_largest
    )
    finished = st.session_state.setdefault(EVAL_DONE_KEY, set())
    show = request not in finished  # no progress bar flashing on cached reruns
    placeholder = st.empty()
    counter = {"done": 0, "predicted": 0, "patient": None}
    started = time.monotonic()

    def draw() -> None:
        if not show:
            return
        rate = (time.monotonic() - started) / counter["predicted"] if counter["predicted"] else None
        left = None if rate is None else rate * (total - counter["done"])
        placeholder.progress(
            min(counter["done"] / max(total, 1), 1.0), progress_text(counter["done"], total, counter["patient"], left)
        )

    def tick(n: int) -> None:
        counter["done"] += n
        counter["predicted"] += n
        draw()

    parts = []
    try:
        for number, (patient_id, records) in enumerate(patients.items(), start=1):
            before = counter["done"]
            counter["patient"] = None if one_slice_each else (number, len(patients), patient_id)
            draw()
            parts.append(
                _patient_evaluation(
                    model.model_id,
                    dataset_key,
                    patient_id,
                    float(threshold),
                    int(min_component_px),
                    bool(keep_largest),
                    bool(volume_keep_largest),
                    model.segmenter,
                    dataset,
                    tick,
                )
            )
            counter["done"] = before + len(records)  # a cached patient counts as done without ticks
    except Exception as err:
        logger.exception("evaluation failed")
        placeholder.empty()
        st.error(f"The evaluation failed: {type(err).__name__}: {err}")
        return None
    placeholder.empty()
    finished.add(request)
    return merge_evaluations(parts)
