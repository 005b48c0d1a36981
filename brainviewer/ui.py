"""Streamlit widget helpers shared by the pages. The ONE module of the library that imports Streamlit.

Pages stay thin: they call these helpers, which read widgets and return values, and one
library function per result. Everything heavy is cached:

* the model, with ``st.cache_resource``, keyed by weights folder, the mtime of its
  ``model.safetensors`` and the device (a promoted or retrained model is picked up on the
  next rerun without restarting the app);
* probabilities, with ``st.cache_data``, keyed by model id and scan content hash, so
  moving the threshold or opacity slider never runs the model again;
* datasets (``st.cache_resource``), dataset slices and phantom slices (``st.cache_data``).

Layout: one section per concern, each starting with a ``# === <name> ===`` banner.
Helpers for other pages go in their own section at the end of the file.

Session-state keys used here (shared across pages): ``dataset_path`` (the dataset folder),
``model_choice`` (selected weights), ``threshold`` and ``opacity`` (Review sliders).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from brainviewer.data.datasets import DATA_ENV, Dataset, open_dataset
from brainviewer.data.io import IMAGE_SUFFIXES
from brainviewer.data.split import SPLIT_FILE, Split, patient_of_file, weights_split
from brainviewer.model.segmenter import CONFIG_FILE, WEIGHTS_FILE, Segmenter, default_device
from brainviewer.model.weights import (
    WEIGHTS_ENV,
    default_weights_spec,
    list_local_weights,
    resolve_weights_folder,
    weights_root,
)
from brainviewer.views.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_DISPLAY_CHANNEL,
    DISPLAY_CHANNELS,
    placeholder_image,
    probs_to_rgb,
)
from brainviewer.views.review import (
    SYNTHETIC_LABEL,
    ReviewItem,
    ReviewView,
    download_names,
    figure_note,
    input_kind_note,
    item_from_record,
    items_from_uploads,
    phantom_items,
)

logger = logging.getLogger(__name__)

#: Sentence shown wherever a prediction would be when no model exists yet.
NO_WEIGHTS_TEXT = "No trained weights present yet"


# === General ===================================================================================


def _state_index(key: str, options: list[str] | tuple[str, ...], default: int = 0) -> int:
    """Index of the option a keyed widget currently holds (so a re-created widget shows the same value)."""
    value = st.session_state.get(key)
    return options.index(value) if value in options else default


# === Model =====================================================================================


@dataclass
class ModelState:
    """The model the pages use, or why there is none.

    Attributes:
        segmenter: the loaded model, or ``None``.
        model_id: cache key of the loaded weights (folder, file mtime, device); ``None`` without a model.
        label: the weights folder name, for people.
        threshold: default probability cut (from the weights' preprocessing.json; 0.5 without a model).
        device: where the model runs, for people (``CPU`` or ``CUDA (<GPU name>)``).
        message: why there is no model (``None`` when one is loaded).
        min_component_px, keep_largest, volume_keep_largest: the weights' post-processing.
        split: the patient split the weights were trained with (their ``split.json``), if known.
    """

    segmenter: Segmenter | None
    model_id: str | None
    label: str | None
    threshold: float
    device: str
    message: str | None = None
    min_component_px: int = 0
    keep_largest: bool = False
    volume_keep_largest: bool = False
    split: Split | None = None

    @property
    def available(self) -> bool:
        return self.segmenter is not None

    @property
    def reason(self) -> str:
        """Short lower-case reason there is no prediction, for panel captions."""
        if self.segmenter is not None:
            return ""
        if self.message and self.message.startswith(NO_WEIGHTS_TEXT):
            return NO_WEIGHTS_TEXT[0].lower() + NO_WEIGHTS_TEXT[1:]
        return "the model could not be loaded" if self.message else "no model loaded"


def device_label() -> str:
    """``CPU`` or ``CUDA (<GPU name>)`` for the device models are loaded on."""
    device = default_device()
    if device.type == "cuda":
        import torch

        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return "CPU"


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _load_segmenter(folder: str, weights_mtime_ns: int, device: str) -> Segmenter:
    """Load once per (folder, model.safetensors mtime, device); a changed file gives a new entry."""
    logger.info("loading weights %s (mtime %s) on %s", folder, weights_mtime_ns, device)
    return Segmenter.from_folder(folder, device=device)


@st.cache_resource(ttl=3600, show_spinner="Fetching the model…")
def _resolve_remote(spec: str) -> str:
    return str(resolve_weights_folder(spec))


def _resolve(spec: str) -> Path:
    """A local folder for a weights spec; Hub ids are resolved once an hour at most."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    return Path(_resolve_remote(spec))


def _weights_choices() -> list[tuple[str, str]]:
    """``[(label, spec), ...]``: the default weights first (when they exist or are named), then other local folders."""
    default = default_weights_spec()
    explicit = bool(os.environ.get(WEIGHTS_ENV))
    default_path = Path(default).expanduser()
    default_exists = default_path.is_dir()
    choices: list[tuple[str, str]] = []
    seen: set[str] = set()
    if default_exists or explicit:
        choices.append((f"{default_path.name or default} (default)", default))
        seen.add(str(default_path.resolve()) if default_exists else default)
    for folder in list_local_weights():
        if str(folder.resolve()) not in seen:
            choices.append((folder.name, str(folder)))
            seen.add(str(folder.resolve()))
    return choices


@st.cache_data(max_entries=8, show_spinner=False)
def _weights_split(folder: str, weights_mtime_ns: int) -> Split | None:
    return weights_split(folder)


def load_model_state(spec: str) -> ModelState:
    """Load the weights named by ``spec`` (path, name under weights/, or Hub id) into a :class:`ModelState`.

    Never raises: a missing or corrupt folder gives a state without a model and a message.
    """
    device = str(default_device())
    try:
        folder = _resolve(spec)
        weights_file = folder / WEIGHTS_FILE
        mtime = weights_file.stat().st_mtime_ns if weights_file.is_file() else 0
        segmenter = _load_segmenter(str(folder.resolve()), mtime, device)
    except Exception as err:  # WeightsError, Hub/network errors, torch errors: warn, keep the app up
        logger.warning("could not load weights %s: %s", spec, err)
        return ModelState(None, None, Path(spec).name or spec, 0.5, device_label(), f"Could not load {spec}: {err}")
    return ModelState(
        segmenter=segmenter,
        model_id=f"{segmenter.source}@{mtime}@{device}",
        label=segmenter.name,
        threshold=float(segmenter.prep.threshold),
        device=device_label(),
        min_component_px=int(segmenter.prep.min_component_px),
        keep_largest=bool(segmenter.prep.keep_largest),
        volume_keep_largest=bool(segmenter.prep.volume_keep_largest),
        split=_weights_split(str(folder.resolve()), mtime),
    )


def _architecture(segmenter: Segmenter) -> str:
    try:
        config = json.loads((Path(segmenter.source) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return type(segmenter.model).__name__
    return f"{config.get('_model_class', type(segmenter.model).__name__)} · {config.get('encoder_name', '?')}"


def sidebar_model() -> ModelState:
    """Sidebar section "Model": choose weights, show what is loaded. Returns the :class:`ModelState`.

    With no weights anywhere it states so plainly and returns a state without a model; a
    missing or corrupt folder gives a warning; the app stays up either way.
    """
    threads, training = share_cpu_with_training()
    sidebar = st.sidebar
    sidebar.subheader("Model")
    if training:
        sidebar.caption(
            f":material/model_training: A training run is using the CPU, so the model here runs on {threads} "
            f"thread{'s' if threads > 1 else ''} and predictions may be slower until it ends."
        )
    choices = _weights_choices()
    if not choices:
        sidebar.info(
            f"{NO_WEIGHTS_TEXT}. Scans and ground truth are shown without predictions. "
            "Train one with `python -m brainviewer train`, or set BRAINVIEWER_WEIGHTS to a weights folder."
        )
        return ModelState(None, None, None, 0.5, device_label(), f"{NO_WEIGHTS_TEXT}.")
    labels = [label for label, _ in choices]
    specs = dict(choices)
    label = sidebar.selectbox(
        "Weights",
        labels,
        index=_state_index("model_choice", labels),
        key="model_choice",
        help="The default weights, then the other complete weights folders under weights/.",
    )
    state = load_model_state(specs[label])
    if state.segmenter is None:
        sidebar.warning(f"{state.message}\n\nThe review still shows scans and ground truth, without predictions.")
        return state
    prep = state.segmenter.prep
    sidebar.caption(
        f"**{state.label}** · {_architecture(state.segmenter)}  \n"
        f"Input {prep.input_size} px, {prep.in_channels} channel{'s' if prep.in_channels > 1 else ''} · "
        f"device {state.device}  \n"
        f"Default threshold {state.threshold:.2f}"
        + (f" · components < {prep.min_component_px} px removed" if prep.min_component_px else "")
        + (" · largest component kept" if prep.keep_largest else "")
        + (" · largest 3-D component kept per patient" if prep.volume_keep_largest else "")
        + (" · mirror-averaged (flip TTA)" if prep.tta_flip else "")
    )
    return state


# === Dataset ===================================================================================

DATASET_STATE = "dataset_path"


@st.cache_resource(max_entries=4, ttl=600, show_spinner="Indexing the dataset…")
def _open_dataset(path: str, mtime_ns: int) -> Dataset:
    return open_dataset(path)


def dataset_path() -> str:
    """The configured dataset folder: what the user typed this session, else ``$BRAINVIEWER_DATA``, else ``""``."""
    if DATASET_STATE not in st.session_state:
        st.session_state[DATASET_STATE] = os.environ.get(DATA_ENV, "").strip()
    return st.session_state[DATASET_STATE]


def load_dataset(path: str) -> tuple[Dataset | None, str | None]:
    """Open (cached) the dataset at ``path``: ``(dataset, None)`` or ``(None, error message)``."""
    try:
        target = Path(path).expanduser()
        dataset = _open_dataset(str(target.resolve()), target.stat().st_mtime_ns)
    except FileNotFoundError:
        return None, f"{path} does not exist."
    except Exception as err:  # DatasetError, permissions, malformed CSV/JSON: say it, keep the page up
        return None, str(err) or type(err).__name__
    return dataset, None


def sidebar_dataset() -> Dataset | None:
    """Sidebar section "Dataset": a folder (or data_mask.csv / COCO .json) remembered across pages.

    Returns:
        The opened dataset, or ``None`` when none is configured or it cannot be opened
        (the error is shown in the sidebar).
    """
    sidebar = st.sidebar
    sidebar.subheader("Dataset")
    current = dataset_path()
    typed = sidebar.text_input(
        "Dataset folder",
        value=current,
        key="dataset_path_input",
        placeholder="/data/lgg/kaggle_3m",
        help=(
            "A kaggle_3m folder (patient folders with <slice>_mask files), a data_mask.csv, "
            "images/ + masks/ folders, or a COCO _annotations.coco.json. "
            f"Set {DATA_ENV} to open one at start."
        ),
    ).strip()
    st.session_state[DATASET_STATE] = typed
    if not typed:
        sidebar.caption("No dataset configured.")
        return None
    dataset, error = load_dataset(typed)
    if dataset is None:
        sidebar.error(error)
        return None
    sidebar.caption(f"{len(dataset.patients)} patients · {len(dataset):,} slices · {dataset.kind}")
    return dataset


# === Inference =================================================================================


@st.cache_data(max_entries=64, show_spinner="Running the model on this scan…")
def _cached_probs(model_id: str, item_key: str, _segmenter: Segmenter, _image: np.ndarray) -> np.ndarray:
    """Probabilities keyed by (model id, scan content hash); the underscored arguments are not hashed."""
    return _segmenter.predict_probs_batch([_image])[0]


def item_probs(model: ModelState, item: ReviewItem) -> np.ndarray | None:
    """``(H, W)`` float32 tumour probabilities of ``item`` (cached), or ``None`` without a model.

    A failing model shows ``st.error`` and returns ``None``; it never stops the page.
    """
    if model.segmenter is None or model.model_id is None:
        return None
    try:
        return _cached_probs(model.model_id, item.key, model.segmenter, item.image)
    except Exception as err:
        logger.exception("model failed on %s", item.name)
        st.error(f"The model failed on {item.name}: {type(err).__name__}: {err}")
        return None


# === Review: sources ===========================================================================

SOURCE_UPLOAD = "Upload"
SOURCE_DATASET = "Dataset sample"
SOURCE_PHANTOM = "Synthetic phantom"
SOURCES = (SOURCE_UPLOAD, SOURCE_DATASET, SOURCE_PHANTOM)
#: Extensions the upload widget accepts (without the dot).
UPLOAD_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]


def source_picker(has_dataset: bool) -> str:
    """Radio "Scans from": Upload / Dataset sample / Synthetic phantom (key ``review_source``).

    Defaults to the dataset when one is configured, else to the synthetic phantom; configuring a
    dataset while the phantom is shown switches to the dataset.
    """
    default = SOURCE_DATASET if has_dataset else SOURCE_PHANTOM
    had_dataset = st.session_state.get("_review_had_dataset")
    st.session_state["_review_had_dataset"] = has_dataset
    if has_dataset and had_dataset is False and st.session_state.get("review_source") == SOURCE_PHANTOM:
        st.session_state["review_source"] = SOURCE_DATASET  # a dataset was just configured: show it
    return st.radio(
        "Scans from",
        SOURCES,
        index=_state_index("review_source", SOURCES, SOURCES.index(default)),
        key="review_source",
        horizontal=True,
        help="Synthetic phantom slices are generated pictures, not real scans.",
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
        return [], []
    signature = tuple((f.file_id, f.name, f.size) for f in files)
    memo = st.session_state.get("_review_upload_memo")
    if memo is not None and memo[0] == signature:
        return memo[1], memo[2]
    items, errors = items_from_uploads([(f.name, f.getvalue()) for f in files])
    st.session_state["_review_upload_memo"] = (signature, items, errors)
    return items, errors


@st.cache_data(max_entries=32, show_spinner=False)
def _tumour_slice(root: str, patient_id: str, _dataset: Dataset) -> int:
    """Index of the patient's slice with the largest ground-truth area (the middle one if none)."""
    records = _dataset.patients[patient_id]
    areas = []
    for record in records:
        try:
            mask = _dataset.load_mask(record)
        except Exception:
            mask = None
        areas.append(0 if mask is None else int(np.count_nonzero(mask)))
    return int(np.argmax(areas)) if max(areas, default=0) > 0 else len(records) // 2


@st.cache_data(max_entries=32, show_spinner="Reading the slice…")
def _record_item(
    root: str, image_path: str, mtime_ns: int, _dataset: Dataset, index: int, patient_id: str
) -> ReviewItem:
    return item_from_record(_dataset, _dataset.patients[patient_id][index])


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
        index=_state_index("review_patient", patients, first_held_out(model, patients)),
        key="review_patient",
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
    return phantom_source_items()


def pick_item(items: list[ReviewItem]) -> ReviewItem | None:
    """A selectbox (key ``review_item``) when there are several items; the chosen one (or ``None``)."""
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    names = [item.name for item in items]
    chosen = st.selectbox(
        f"Scan ({len(items)} loaded)", names, index=_state_index("review_item", names), key="review_item"
    )
    return items[names.index(chosen)]


# === Review: display ===========================================================================


def review_controls(model: ModelState) -> tuple[float, float]:
    """Threshold (key ``threshold``, 0.01-0.99) and opacity (key ``opacity``) sliders side by side.

    The threshold starts at the model's default and is reset to it when the model changes.
    """
    default = round(float(model.threshold), 2)
    threshold_value = st.session_state.get("threshold")
    if st.session_state.get("_threshold_model") != model.model_id or threshold_value is None:
        st.session_state["_threshold_model"] = model.model_id
        if threshold_value is not None and threshold_value != default:
            # written here and passed as the slider's value below, the two always agree; Streamlit's warning
            # about a value set both ways is switched off in .streamlit/config.toml for this reason
            st.session_state["threshold"] = default
        threshold_value = default
    left, right = st.columns(2)
    threshold = left.slider(
        "Probability threshold",
        min_value=0.01,
        max_value=0.99,
        value=float(threshold_value),
        step=0.01,
        key="threshold",
        disabled=not model.available,
        help="Pixels with tumour probability at or above this are predicted tumour. Moving it never reruns the model.",
    )
    alpha = right.slider(
        "Mask opacity",
        min_value=0.0,
        max_value=1.0,
        value=float(st.session_state.get("opacity", DEFAULT_ALPHA)),
        step=0.05,
        key="opacity",
        help="How strongly the mask colour covers the scan in the overlays; outlines stay solid.",
    )
    return float(threshold), float(alpha)


def display_channel_control(item: ReviewItem) -> int | None:
    """For a 3-channel scan, a selectbox (key ``display_channel``) of the channel shown under the
    overlays; FLAIR by default. Returns the channel index, or ``None`` for an RGB composite."""
    if item.image.ndim != 3:
        return None
    labels = list(DISPLAY_CHANNELS)
    default = labels[list(DISPLAY_CHANNELS.values()).index(DEFAULT_DISPLAY_CHANNEL)]
    current = st.session_state.get("display_channel", default)
    label = st.selectbox(
        "Show channel",
        labels,
        index=labels.index(current) if current in labels else 0,
        key="display_channel",
        help="Three-channel LGG slices hold pre-contrast, FLAIR and post-contrast. One channel in grayscale "
        "keeps the red (ground truth) and green (prediction) overlays unambiguous.",
    )
    return DISPLAY_CHANNELS[label]


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
        note = input_kind_note(item.image, model.segmenter.prep, model.label) if model.segmenter else None
        if note:
            st.info(note, icon=":material/info:")
        if item.source == "upload" and model.split is not None:  # a dataset pick has its note already
            patient_id = patient_of_file(item.name, model.split)
            if patient_id is not None:
                patient_split_note(model, patient_id)


def show_panels(view: ReviewView) -> None:
    """The five panels in one row: title above, picture, caption below. Unavailable ones are grey cards."""
    for column, panel in zip(st.columns(5, gap="small"), view.panels, strict=True):
        with column:
            st.markdown(f"**{panel.title}**")
            if panel.image is not None:
                picture = panel.image
            else:
                picture = placeholder_image(view.item.shape, panel.caption.split(":")[0])
            st.image(picture, caption=panel.caption, width="stretch", output_format="PNG")


def show_metrics(view: ReviewView, model: ModelState) -> None:
    """Metric cards (Dice, IoU, precision, recall, pixel accuracy; tumour areas) or a plain statement why not."""
    areas = view.areas
    if view.metrics is not None:
        m = view.metrics
        scores = [
            ("Dice", f"{m.dice:.3f}", "2|P∩T| / (|P|+|T|). 1.000 when both masks are empty."),
            ("IoU", f"{m.iou:.3f}", "|P∩T| / |P∪T|. 1.000 when both masks are empty."),
            ("Precision", f"{m.precision:.3f}", "Share of predicted pixels that are tumour."),
            ("Recall", f"{m.recall:.3f}", "Share of tumour pixels that were found."),
            ("Pixel accuracy", f"{m.accuracy:.4f}", "Share of all pixels labelled right (mostly background)."),
        ]
        for column, (label, value, help_text) in zip(st.columns(5, gap="small"), scores, strict=True):
            column.metric(label, value, help=help_text, border=True)
        areas_row = [
            ("Truth area (px)", f"{m.truth_area_px:,}", "Ground-truth tumour pixels."),
            ("Predicted area (px)", f"{m.pred_area_px:,}", "Predicted tumour pixels at this threshold."),
            ("Difference (px)", f"{m.pred_area_px - m.truth_area_px:+,}", "Predicted minus ground-truth area."),
        ]
        for column, (label, value, help_text) in zip(st.columns(5, gap="small"), areas_row, strict=False):
            column.metric(label, value, help=help_text, border=True)
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
    pred_col, _, _, _, _ = st.columns(5, gap="small")
    pred_col.metric("Predicted area (px)", f"{areas.pred_px:,}", border=True)


def show_downloads(view: ReviewView, model: ModelState) -> None:
    """Download buttons: predicted mask PNG (scan size), overlay PNG, five-panel PNG (made on click)."""
    names = download_names(view.item)
    note = figure_note(view.item, model.label if model.available else None, view.threshold)
    mask_png = view.mask_png()
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Predicted mask",
            data=mask_png or b"",
            file_name=names["mask"],
            mime="image/png",
            key="download_mask",
            on_click="ignore",
            disabled=mask_png is None,
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
        left.image(probs_to_rgb(view.probs), caption="Tumour probability, 0 (black) to 1 (yellow)", width="stretch")
        high = float(view.probs.max())
        right.caption(
            f"Highest probability on this scan: {high:.3f}. "
            f"Pixels ≥ threshold {view.threshold:.2f}: {view.areas.pred_px:,}."
        )


# === Other pages ===============================================================================
# Helpers for the Patients, Evaluation and Fine-tuning pages go below, each page in its own
# "# === <Page> ===" section. Reuse the sections above (model, dataset, review display) rather
# than duplicating them.


# --- Patients and evaluation ---
# Helpers of pages/patients.py and pages/evaluation.py. Session-state keys: ``patient_source``,
# ``patient_pick``, ``patient_slice`` (the slice slider, 1-based), ``open_patient`` (a request
# from another page to show a patient: {"source", "dataset_path", "patient_id", "slice"}),
# ``eval_*`` (evaluation settings and the last requested evaluation).

from typing import TYPE_CHECKING  # noqa: E402 - this section's own imports

if TYPE_CHECKING:
    from brainviewer.data.volumes import Volume
    from brainviewer.views.patient import DatasetEvaluation

PATIENT_SOURCE_DATASET = "Dataset patient"
PATIENT_SOURCE_UPLOAD = "NIfTI / DICOM upload"
PATIENT_SOURCE_PHANTOM = "Synthetic phantom"
PATIENT_SOURCES = (PATIENT_SOURCE_DATASET, PATIENT_SOURCE_UPLOAD, PATIENT_SOURCE_PHANTOM)
PATIENT_SLICE_KEY = "patient_slice"
OPEN_PATIENT_KEY = "open_patient"
PATIENTS_PAGE = "pages/patients.py"
#: Slices per model call on the Patients page (each batch is cached on its own, so an
#: interrupted run keeps the batches already done).
PATIENT_BATCH = 16


@st.cache_resource(show_spinner="Writing the synthetic phantom dataset…")
def phantom_dataset_path(patients: int = 4, slices: int = 12, size: int = 128) -> str:
    """A temporary ``kaggle_3m``-layout folder of SYNTHETIC phantom patients (written once per server)."""
    import tempfile

    from brainviewer.data.phantom import write_phantom_dataset

    root = Path(tempfile.mkdtemp(prefix="brainviewer-phantom-"))
    return str(write_phantom_dataset(root, patients=patients, slices=slices, size=size))


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


def consume_open_patient_request() -> dict | None:
    """Apply a request from another page to open a patient (before the Patients widgets exist).

    Sets the source, patient and slice widgets' state, and the dataset folder, then forgets
    the request. Returns it (or ``None``).
    """
    request = st.session_state.pop(OPEN_PATIENT_KEY, None)
    if not request:
        return None
    if request.get("source") == "phantom":
        st.session_state["patient_source"] = PATIENT_SOURCE_PHANTOM
    else:
        st.session_state["patient_source"] = PATIENT_SOURCE_DATASET
        if request.get("dataset_path"):
            st.session_state[DATASET_STATE] = request["dataset_path"]
            st.session_state["dataset_path_input"] = request["dataset_path"]
    st.session_state["patient_pick"] = request["patient_id"]
    st.session_state["_patient_current"] = None  # treat as a new patient ...
    st.session_state["_patient_open_slice"] = int(request.get("slice") or 0)  # ... opened on this slice
    return request


def open_patient(patient_id: str, slice_number: int | None, source: str, dataset_path: str = "") -> None:
    """Switch to the Patients page showing ``patient_id`` at ``slice_number`` (1-based)."""
    st.session_state[OPEN_PATIENT_KEY] = {
        "source": source,
        "dataset_path": dataset_path,
        "patient_id": patient_id,
        "slice": slice_number,
    }
    st.switch_page(PATIENTS_PAGE)


def patient_source_picker(has_dataset: bool) -> str:
    """Radio "Patient from" (key ``patient_source``): dataset / NIfTI-DICOM upload / synthetic phantom."""
    # the index only for a first render: state set by another page must not meet a default too
    first = {} if "patient_source" in st.session_state else {"index": 0 if has_dataset else 2}
    return st.radio(
        "Patient from",
        PATIENT_SOURCES,
        **first,
        key="patient_source",
        horizontal=True,
        help="Synthetic phantom patients are generated pictures, not real scans.",
    )


@st.cache_data(max_entries=6, show_spinner="Reading the patient's slices…")
def _dataset_volume(root: str, patient_id: str, n_records: int, _dataset: Dataset) -> Volume:
    from brainviewer.data.volumes import volume_from_dataset

    return volume_from_dataset(_dataset, patient_id)


def dataset_patient(dataset: Dataset, label: str = "Patient", model: ModelState | None = None) -> tuple[Volume, str]:
    """Patient selectbox (key ``patient_pick``) and the chosen patient's :class:`~brainviewer.data.volumes.Volume`.

    With ``model``, its held-out patients are tagged and a note says whether it was trained on the patient.

    Returns:
        ``(volume, volume_key)``; the key (dataset folder + patient id) names the volume in caches.
    """
    patients = dataset.patient_ids
    if st.session_state.get("patient_pick") not in patients:
        st.session_state.pop("patient_pick", None)
    patient_id = st.selectbox(
        label,
        patients,
        index=_state_index("patient_pick", patients, first_held_out(model, patients)),  # opens on a held-out one
        key="patient_pick",
        help=f"{len(patients)} patients in {Path(dataset.root).name}.",
        format_func=functools.partial(patient_label, model),
    )
    patient_split_note(model, patient_id)
    root = str(Path(dataset.root).resolve())
    volume = _dataset_volume(root, patient_id, len(dataset.patients[patient_id]), dataset)
    return volume, f"{dataset.kind}:{root}::{patient_id}"


def volume_upload() -> tuple[Volume | None, str | None, str | None]:
    """Uploaders for a NIfTI file or a DICOM series (.zip or .dcm files) and an optional NIfTI mask.

    Returns:
        ``(volume, volume_key, error)``: the volume (or ``None``), its cache key (a content
        hash), and an error message when the upload could not be read.
    """
    import hashlib

    from brainviewer.data.volumes import VolumeError, is_nifti_name, read_dicom_files, read_dicom_zip, read_nifti

    files = st.file_uploader(
        "A NIfTI volume (.nii, .nii.gz), a DICOM series as .zip, or the .dcm files of one series",
        type=["nii", "gz", "zip", "dcm"],
        accept_multiple_files=True,
        key="patient_upload",
        help="Identifying DICOM fields (names, ids, dates, institutions) are never shown or exported.",
    )
    if not files:
        return None, None, None
    mask_file = None
    if any(is_nifti_name(f.name) for f in files):
        mask_file = st.file_uploader(
            "Optional: its ground-truth mask volume (.nii, .nii.gz; voxels > 0 are tumour)",
            type=["nii", "gz"],
            key="patient_mask_upload",
        )
    signature = (tuple((f.file_id, f.name) for f in files), mask_file.file_id if mask_file else None)
    memo = st.session_state.get("_patient_upload_memo")
    if memo is not None and memo[0] == signature:
        return memo[1], memo[2], memo[3]
    digest = hashlib.blake2b(digest_size=12)
    for f in files:
        digest.update(f.getvalue())
    if mask_file:
        digest.update(mask_file.getvalue())
    key = f"upload:{digest.hexdigest()}"
    volume, error = None, None
    try:
        with st.spinner("Reading the volume…"):
            if len(files) == 1 and is_nifti_name(files[0].name):
                volume = read_nifti(
                    files[0].getvalue(),
                    name=files[0].name,
                    mask=mask_file.getvalue() if mask_file else None,
                    mask_name=mask_file.name if mask_file else None,
                )
            elif len(files) == 1 and files[0].name.lower().endswith(".zip"):
                volume = read_dicom_zip(files[0].getvalue(), name=files[0].name)
            elif any(is_nifti_name(f.name) for f in files):
                error = "Upload one NIfTI file at a time (its mask goes in the second box)."
            else:
                volume = read_dicom_files([(f.name, f.getvalue()) for f in files], label="the uploaded files")
    except VolumeError as err:
        error = str(err)
    except Exception as err:  # a reader bug must not take the page down
        logger.exception("could not read the uploaded volume")
        error = f"The upload could not be read ({type(err).__name__}: {err})."
    st.session_state["_patient_upload_memo"] = (signature, volume, key, error)
    return volume, key, error


@st.cache_data(max_entries=40, show_spinner=False)
def _batch_probs(model_id: str, volume_key: str, start: int, stop: int, _segmenter: Segmenter, _images: list) -> list:
    """Probabilities of slices ``start:stop`` of one volume, keyed by model id + volume key + range."""
    return [np.asarray(p, dtype=np.float32) for p in _segmenter.predict_probs_batch(_images, batch_size=len(_images))]


def volume_probs(model: ModelState, volume: Volume, volume_key: str) -> list[np.ndarray] | None:
    """Whole-patient probabilities, computed once per (model, patient) in cached batches of
    :data:`PATIENT_BATCH` slices with a progress bar; later reruns (scrubbing, threshold) read the cache.

    Returns ``None`` without a model, or when the model fails (the error is shown).
    """
    from brainviewer.views.patient import model_inputs

    if model.segmenter is None or model.model_id is None:
        return None
    images = model_inputs(volume)
    total = len(images)
    done = st.session_state.setdefault("_patient_probs_done", set())
    show = (model.model_id, volume_key) not in done  # no progress bar flashing on cached reruns
    placeholder = st.empty()
    probs: list[np.ndarray] = []
    try:
        for start in range(0, total, PATIENT_BATCH):
            stop = min(total, start + PATIENT_BATCH)
            if show:
                text = f"Segmenting the patient: slices {start + 1}-{stop} of {total}…"
                placeholder.progress(start / total, text=text)
            probs.extend(_batch_probs(model.model_id, volume_key, start, stop, model.segmenter, images[start:stop]))
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
    left.button("◀", key="patient_prev", on_click=step, args=(-1,), help="Previous slice", width="stretch")
    number = middle.slider(
        "Slice",
        1,
        n_slices,
        key=PATIENT_SLICE_KEY,
        help="Drag, or click the slider and use the arrow keys.",
    )
    right.button("▶", key="patient_next", on_click=step, args=(1,), help="Next slice", width="stretch")
    return int(number) - 1


@st.cache_data(max_entries=4096, show_spinner=False)
def _patient_evaluation(
    model_id: str,
    dataset_key: str,
    patient_id: str,
    threshold: float,
    min_component_px: int,
    keep_largest: bool,
    volume_keep_largest: bool,
    _segmenter: Segmenter,
    _dataset: Dataset,
) -> DatasetEvaluation:
    """One patient's evaluation (report + slice scores), keyed by model, dataset, patient and setting."""
    from brainviewer.views.patient import evaluate_dataset

    return evaluate_dataset(
        _dataset.subset([patient_id]),
        lambda scans: _segmenter.predict_probs_batch(scans, batch_size=PATIENT_BATCH),
        threshold,
        min_component_px,
        keep_largest,
        volume_keep_largest,
    )


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
    repeated evaluation resumes where it stopped) with a progress bar; the merged
    :class:`~brainviewer.views.patient.DatasetEvaluation`, or ``None`` on error (shown)."""
    from brainviewer.views.patient import merge_evaluations

    if model.segmenter is None or model.model_id is None:
        return None
    patient_ids = dataset.patient_ids
    request = (
        model.model_id,
        dataset_key,
        float(threshold),
        int(min_component_px),
        bool(keep_largest),
        bool(volume_keep_largest),
    )
    finished = st.session_state.setdefault("_eval_done", set())
    show = request not in finished  # no progress bar flashing on cached reruns
    placeholder = st.empty()
    parts = []
    try:
        for done, patient_id in enumerate(patient_ids):
            if show:
                placeholder.progress(
                    done / len(patient_ids), text=f"Evaluating patient {done + 1} of {len(patient_ids)}: {patient_id}…"
                )
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
                )
            )
    except Exception as err:
        logger.exception("evaluation failed")
        placeholder.empty()
        st.error(f"The evaluation failed: {type(err).__name__}: {err}")
        return None
    placeholder.empty()
    finished.add(request)
    return merge_evaluations(parts)


# --- Fine-tuning ---
# Helpers of pages/finetune.py. Runs live on disk (brainviewer.runs), never in the session, so
# every open tab shows the same runs. Session-state keys: ``finetune_*`` (the Start form's
# fields), ``finetune_run`` (the watched run), ``finetune_per_patient``, ``finetune_choose``
# (the run to evaluate / promote / delete), ``finetune_eval`` (the last requested evaluation),
# ``finetune_flash`` (messages shown once after an action).

from datetime import datetime  # noqa: E402 - this section's own imports

from brainviewer import runs as runs_lib  # noqa: E402
from brainviewer.model.segmenter import ARCHITECTURES  # noqa: E402
from brainviewer.runs import averages as average_jobs  # noqa: E402
from brainviewer.training.config import AUGMENTATIONS, LOSSES, SPLIT_MODES, TrainConfig  # noqa: E402
from brainviewer.views import figures  # noqa: E402

#: Set to 1 on a public demo: starting, resuming, promoting and deleting runs are disabled.
DEMO_ENV = "BRAINVIEWER_DEMO"
#: Seconds between refreshes of the watched run while a run is active or queued.
FINETUNE_REFRESH_S = 3
#: Seconds between looks for runs started or ended elsewhere (another tab, the command line).
FINETUNE_IDLE_REFRESH_S = 15
FROM_SCRATCH = "From scratch (untrained)"
INPUT_SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
CROP_SIZES = (0, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384)
STATUS_TEXT = {
    runs_lib.RUNNING: ":blue[running]",
    runs_lib.QUEUED: ":violet[queued]",
    runs_lib.STOPPED: ":orange[stopped]",
    runs_lib.FINISHED: ":green[finished]",
    runs_lib.EARLY_STOPPED: ":green[finished early (no better validation)]",
    runs_lib.FAILED: ":red[failed]",
    runs_lib.DEAD: ":red[dead (process gone)]",
    runs_lib.UNKNOWN: ":gray[unknown]",
}


_DEFAULT_TORCH_THREADS = torch.get_num_threads()


@st.cache_data(ttl=5, show_spinner=False)
def _cpu_training_threads(runs_dir: str) -> int:
    return runs_lib.cpu_training_threads(runs_dir)


def share_cpu_with_training() -> tuple[int, int]:
    """On CPU, keep the app's inference to the cores that training runs leave free (see
    :func:`brainviewer.runs.serving_threads`), and go back to the default once they end.

    Returns:
        ``(threads the app's inference uses, CPU threads training takes)``; ``(threads, 0)`` on a GPU.
    """
    if default_device().type != "cpu":
        return torch.get_num_threads(), 0
    training = _cpu_training_threads(str(runs_lib.runs_root()))
    want = runs_lib.serving_threads(training, _DEFAULT_TORCH_THREADS)
    if torch.get_num_threads() != want:
        logger.info("CPU training takes %d thread(s): the app's inference now uses %d", training, want)
        torch.set_num_threads(want)
    return want, training


def finetune_demo_mode() -> bool:
    """Whether ``$BRAINVIEWER_DEMO`` asks for a read-only page (public demo)."""
    return os.environ.get(DEMO_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def finetune_flash(kind: str | None = None, text: str = "") -> None:
    """Queue a message for the next run of the page (``kind``: success, info, warning, error), or
    (without arguments) show and forget the queued ones."""
    if kind is not None:
        st.session_state.setdefault("finetune_flash", []).append((kind, text))
        return
    for kind_, text_ in st.session_state.pop("finetune_flash", []):
        getattr(st, kind_)(text_)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def finetune_form(runs_dir: Path, disabled: bool = False) -> TrainConfig | None:
    """The Start form. Returns the run's :class:`TrainConfig` when Start is pressed and the
    settings are valid (else ``None``; invalid settings are explained with ``st.error``)."""
    choices = runs_lib.base_weight_choices(runs_dir)
    labels = [*choices, FROM_SCRATCH]
    with st.form("finetune_form", border=True):
        base = st.selectbox(
            "Start from",
            labels,
            index=_state_index("finetune_base", labels),
            key="finetune_base",
            help="The app's current model, any weights folder under weights/, or the best weights of an earlier run. "
            "Fine-tuning keeps the base model's architecture and input size.",
        )
        data = st.text_input(
            "Dataset (with ground-truth masks)",
            value=dataset_path(),
            key="finetune_data",
            placeholder="/data/lgg/kaggle_3m",
            help=f"Any layout brainviewer reads. Defaults to the sidebar's dataset or ${DATA_ENV}.",
        )
        c1, c2, c3, c4, c5 = st.columns(5)
        val_fraction = c1.number_input(
            "Validation share of patients", 0.01, 0.9, 0.15, 0.01, key="finetune_val_fraction"
        )
        val_patients = c2.number_input(
            "…or this many validation patients", 0, 100_000, 0, key="finetune_val_patients", help="0 = use the share."
        )
        split_mode = c3.selectbox(
            "Split",
            SPLIT_MODES,
            key="finetune_split_mode",
            help="random: seeded shuffle of patients; contiguous: the last patients in natural id order "
            "(for datasets whose neighbouring ids are the same patient).",
        )
        split_blocks = c4.number_input(
            "Id ranges",
            1,
            100,
            1,
            key="finetune_split_blocks",
            help="Contiguous split only: cut the ordered ids into this many equal ranges and hold out the end of "
            "each (e.g. 3 for figshare, numbered in three tumour-type ranges).",
        )
        seed = c5.number_input("Seed", 0, 2**31 - 1, 42, key="finetune_seed")
        keep_base_split = st.checkbox(
            "Keep the base model's split",
            value=True,
            key="finetune_keep_base_split",
            help="When the base weights come with a split.json: the patients they were validated on stay held out "
            "and those they were trained on stay in training, so validation is never on a patient the base model "
            "has seen; the dataset's other patients are split by the settings above. Off: draw a new split. "
            "Ignored with cross-validation folds.",
        )
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 1000, 10, key="finetune_epochs")
        lr = c2.number_input("Learning rate", 1e-6, 1.0, 3e-4, format="%.1e", key="finetune_lr", step=1e-5)
        batch_size = c3.number_input("Batch size", 1, 512, 16, key="finetune_batch")
        freeze = c4.number_input(
            "Frozen-encoder epochs", 0, 1000, 0, key="finetune_freeze", help="Train only the decoder at first."
        )
        c1, c2, c3, c4 = st.columns(4)
        input_size = c1.selectbox(
            "Image size",
            INPUT_SIZES,
            index=INPUT_SIZES.index(256),
            key="finetune_input_size",
            help="The network's input side. Used from scratch only: fine-tuning keeps the base model's.",
        )
        crop_size = c2.selectbox(
            "Crop size",
            CROP_SIZES,
            index=CROP_SIZES.index(128),
            key="finetune_crop",
            help="Train on random crops of this side (0 = whole images); at most the image size.",
        )
        augment = c3.selectbox(
            "Augmentation", AUGMENTATIONS, index=AUGMENTATIONS.index("medium"), key="finetune_augment"
        )
        loss = c4.selectbox("Loss", LOSSES, index=LOSSES.index("bce_dice"), key="finetune_loss")
        c1, c2, c3, c4 = st.columns(4)
        devices = ["auto", "cpu", *(["cuda"] if _cuda_available() else [])]
        device = c1.selectbox("Device", devices, key="finetune_device", help="auto: CUDA when present, else CPU.")
        threads = c2.number_input(
            "CPU threads",
            0,
            256,
            max(1, (os.cpu_count() or 1) - 1),
            key="finetune_threads",
            help="For training on the CPU. 0 = all cores (torch's default); the default leaves one core to the app, "
            "which also keeps its own inference to the cores training leaves free.",
        )
        patience = c3.number_input(
            "Early-stop patience", 0, 1000, 12, key="finetune_patience", help="Epochs without a better Dice; 0 = never."
        )
        run_name = c4.text_input("Run name", key="finetune_name", placeholder="dated default")
        with st.expander("Sampling and cross-validation"):
            c1, c2, c3, c4 = st.columns(4)
            missing_sequence = c1.number_input(
                "Missing-sequence share",
                0.0,
                1.0,
                0.0,
                0.05,
                key="finetune_missing_sequence",
                help="3-channel LGG-style scans: the share of training slices whose pre- and/or post-contrast channel "
                "is replaced by FLAIR, as kaggle_3m stores patients without those sequences. 0 = never.",
            )
            empty_fraction = c2.number_input(
                "Tumour-free share",
                0.0,
                1.0,
                0.5,
                0.05,
                key="finetune_empty_fraction",
                help="Share of the tumour-free training slices drawn each epoch (every tumour slice is always used).",
            )
            cv_folds = c3.number_input(
                "Cross-validation folds",
                0,
                100,
                0,
                key="finetune_cv_folds",
                help="0 = one split by the validation share. K >= 2: cut the patients into K folds (by the split "
                "mode and seed above) and hold out one; start one run per fold and pool them with "
                "`python -m brainviewer cv-evaluate`.",
            )
            cv_fold = c4.number_input(
                "Held-out fold", 0, 99, 0, key="finetune_cv_fold", help="0 .. folds - 1; with folds only."
            )
        with st.expander("From scratch only: architecture"):
            c1, c2, c3 = st.columns(3)
            arch = c1.selectbox("Architecture", list(ARCHITECTURES), key="finetune_arch")
            encoder = c2.text_input("Encoder", value="resnet18", key="finetune_encoder")
            in_channels = c3.selectbox("Channels", (3, 1), key="finetune_channels", help="3 for LGG, 1 for grayscale.")
        submitted = st.form_submit_button("Start", type="primary", disabled=disabled, icon=":material/play_arrow:")
    if not submitted:
        return None
    init_weights = "" if base == FROM_SCRATCH else choices[base]
    base_split = Path(init_weights) / SPLIT_FILE if init_weights else None
    split_file = str(base_split) if keep_base_split and not cv_folds and base_split and base_split.is_file() else ""
    try:
        if init_weights:  # the trainer uses the base model's architecture and size
            described = runs_lib.weights_summary(init_weights)
            input_size, in_channels = described["input_size"], described["in_channels"]
            arch, encoder = described["arch"], described["encoder"]
        return TrainConfig(
            data=data.strip(),
            val_fraction=float(val_fraction),
            val_patients=int(val_patients),
            split_mode=split_mode,
            split_blocks=int(split_blocks),
            split_file=split_file,
            cv_folds=int(cv_folds),
            cv_fold=int(cv_fold),
            seed=int(seed),
            arch=arch,
            encoder=encoder.strip(),
            in_channels=int(in_channels),
            input_size=int(input_size),
            init_weights=init_weights,
            crop_size=int(crop_size),
            empty_fraction=float(empty_fraction),
            missing_sequence_prob=float(missing_sequence),
            augment=augment,
            loss=loss,
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            freeze_encoder_epochs=int(freeze),
            early_stop_patience=int(patience),
            device=device,
            threads=int(threads),
            run_name=run_name.strip(),
        )
    except ValueError as err:
        st.error(f"Cannot start: {err}", icon=":material/error:")
        return None


def finetune_run_picker(run_list: list[runs_lib.RunInfo]) -> runs_lib.RunInfo | None:
    """Selectbox of runs, newest first (key ``finetune_run``); the chosen run or ``None`` without runs."""
    if not run_list:
        st.info("No runs yet. Start one above; it trains in its own process and shows up here.")
        return None
    names = [r.name for r in run_list]
    status = {r.name: r.status for r in run_list}
    active = next((i for i, r in enumerate(run_list) if r.status == runs_lib.RUNNING), 0)
    name = st.selectbox(
        "Run",
        names,
        index=_state_index("finetune_run", names, active),
        help="Newest first; the page opens on the run that is training.",
        key="finetune_run",
        format_func=lambda n: f"{n} · {status.get(n, '?')}",
    )
    return run_list[names.index(name)]


def _runs_signature(run_list: list[runs_lib.RunInfo]) -> tuple:
    return tuple((r.name, r.status) for r in run_list)


def finetune_watch(info: runs_lib.RunInfo, run_list: list[runs_lib.RunInfo], demo: bool) -> None:
    """The watched run: status, progress, controls, curves, log and sample predictions.

    A fragment that re-reads the run from disk every :data:`FINETUNE_REFRESH_S` seconds while any
    run is active or queued; when a run starts, ends or appears it reruns the whole page.
    """
    active = any(r.status in (runs_lib.RUNNING, runs_lib.QUEUED) for r in run_list)
    every = FINETUNE_REFRESH_S if active else FINETUNE_IDLE_REFRESH_S
    st.fragment(_finetune_watch_body, run_every=every)(str(info.path), _runs_signature(run_list), demo)


def _finetune_watch_body(run_path: str, signature: tuple, demo: bool) -> None:
    run_dir = Path(run_path)
    if not demo:
        runs_lib.process_queue(run_dir.parent)  # start a queued run whose device is free
    run_list = runs_lib.list_runs(run_dir.parent)
    if _runs_signature(run_list) != signature:
        st.rerun()  # a run started, ended or appeared: refresh the whole page
    info = next((r for r in run_list if r.path == run_dir), None)
    if info is None:
        st.rerun()
    finetune_status(info, run_list)
    finetune_controls(info, demo)
    finetune_curves(info)
    left, right = st.columns([3, 2])
    with left:
        finetune_samples(info)
    with right:
        st.markdown("**Log**")
        lines = runs_lib.tail_log(info.path, 14)
        st.code("\n".join(lines) if lines else "(no log yet)", language=None, height=320, wrap_lines=True)


def finetune_status(info: runs_lib.RunInfo, run_list: list[runs_lib.RunInfo]) -> None:
    """Status line, progress bar with ETA, and metric cards of one run."""
    fmt = runs_lib.format_duration
    base = Path(info.base_weights).name if info.config.init_weights else info.base_weights
    st.markdown(f"**{info.name}** · {STATUS_TEXT.get(info.status, info.status)}")
    st.caption(
        f"base {base} · data {info.dataset} · {info.config.arch} {info.config.encoder} · device {info.device} · "
        f"created {datetime.fromtimestamp(info.created):%Y-%m-%d %H:%M}"
    )
    epoch_text = f"epoch {min(info.epoch + 1, info.epochs)}/{info.epochs}"
    steps = f"step {info.global_step:,}/{info.total_steps:,}" if info.total_steps else f"step {info.global_step:,}"
    if info.is_starting:
        st.progress(info.progress, text="Starting: loading the data and the model…")
    elif info.status == runs_lib.RUNNING:
        st.progress(info.progress, text=f"{steps} · {epoch_text} · ETA {fmt(info.eta_s)}")
    elif info.status == runs_lib.QUEUED:
        queue = [
            r.name
            for r in sorted(run_list, key=lambda r: (r.queued_at or 0.0, r.name))
            if r.status == runs_lib.QUEUED and r.device == info.device
        ]
        busy = [r.name for r in run_list if r.status == runs_lib.RUNNING and r.device == info.device]
        st.info(
            f"Queued ({queue.index(info.name) + 1} of {len(queue)} on {info.device}): it starts when "
            f"{', '.join(busy) or 'the active run'} ends. Queued runs start while this page is open or, "
            "without it, through the background queue runner.",
            icon=":material/schedule:",
        )
    else:
        st.progress(info.progress, text=f"{steps} · {info.status}")
    if info.status == runs_lib.FAILED:
        st.error(f"Failed: {info.error or 'see the log'}. Resume continues from the last checkpoint.")
    elif info.status == runs_lib.DEAD:
        st.warning(
            "The training process is gone (killed, or the machine restarted) without writing a final status. "
            f"Resume continues from its last checkpoint{'' if info.has_checkpoint else ' (none yet: from the start)'}."
        )
    elif info.status == runs_lib.UNKNOWN:
        st.warning(
            f"Its status was written on another machine ({info.host}) or it has not written one yet; "
            "this page cannot tell whether it is still training."
        )
    elif info.status == runs_lib.STOPPED:
        st.info("Stopped. Resume continues from its last checkpoint.", icon=":material/pause_circle:")
    cards = [
        (
            "Best validation Dice",
            "n/a" if info.best_dice is None else f"{info.best_dice:.3f}",
            "Mean per-patient volume Dice on the validation patients"
            + ("" if info.best_epoch is None else f" (epoch {info.best_epoch + 1})"),
        ),
        ("Images / s", "n/a" if info.images_per_s is None else f"{info.images_per_s:.1f}", "Recent throughput."),
        ("Training time", fmt(info.duration_s), "All launches together."),
        ("ETA", fmt(info.eta_s) if info.status == runs_lib.RUNNING else "n/a", "Estimated time left."),
    ]
    for column, (label, value, help_text) in zip(st.columns(4, gap="small"), cards, strict=True):
        column.metric(label, value, help=help_text, border=True)


def finetune_controls(info: runs_lib.RunInfo, demo: bool) -> None:
    """Stop / Resume / Kill buttons; each acts, then reruns the page."""
    can_stop = info.status in (runs_lib.RUNNING, runs_lib.QUEUED, runs_lib.UNKNOWN)
    can_resume = info.resumable or info.status == runs_lib.UNKNOWN
    with st.container(horizontal=True, gap="small"):
        stop = st.button(
            "Stop",
            key="finetune_stop",
            icon=":material/stop:",
            disabled=demo or not can_stop,
            help="Graceful: the run saves a checkpoint at its next step and stops (a queued run leaves the queue).",
        )
        resume = st.button(
            "Resume",
            key="finetune_resume",
            icon=":material/play_arrow:",
            disabled=demo or not can_resume,
            help="Continue a stopped, failed or dead run from its last checkpoint (queued if the device is busy).",
        )
        kill = st.button(
            "Kill",
            key="finetune_kill",
            icon=":material/dangerous:",
            disabled=demo or info.status != runs_lib.RUNNING,
            help="For a stuck run: SIGTERM (it checkpoints and stops), then SIGKILL after 10 s.",
        )
    force = False
    if info.status == runs_lib.UNKNOWN:
        force = st.checkbox("Nothing trains this run any more (resume anyway)", key="finetune_force")
    try:
        if stop:
            runs_lib.stop_run(info.path)
            finetune_flash("info", f"Asked {info.name} to stop; it saves a checkpoint at its next step.")
        elif resume:
            if info.status == runs_lib.UNKNOWN and not force:
                st.warning("Tick the box first: resuming a run that still trains elsewhere would corrupt it.")
                return
            resumed = runs_lib.resume_run(info.path, force=force)
            finetune_flash("success", f"{info.name} is {resumed.status}.")
        elif kill:
            with st.spinner(f"Ending {info.name}…"):
                killed = runs_lib.kill_run(info.path)
            finetune_flash("warning", f"{info.name} is {killed.status}.")
        else:
            return
    except (ValueError, OSError) as err:
        st.error(str(err), icon=":material/error:")
        return
    st.rerun()


def finetune_curves(info: runs_lib.RunInfo) -> None:
    """Training loss against the step and validation Dice against the epoch, side by side."""
    train_rows, val_rows = runs_lib.read_metrics(info.path)
    if not train_rows and not val_rows:
        st.caption("Curves appear after the first logged steps.")
        return
    per_patient = st.toggle("Per-patient validation lines", key="finetune_per_patient")
    left, right = st.columns(2)
    left.plotly_chart(figures.loss_figure(train_rows), key="finetune_loss_chart")
    right.plotly_chart(figures.dice_figure(val_rows, per_patient), key="finetune_dice_chart")


@st.cache_resource(max_entries=8, show_spinner=False)
def _validation_samples(run_dir: str, split_mtime_ns: int, n: int) -> tuple:
    return runs_lib.validation_records(run_dir, n)


@st.cache_data(max_entries=64, show_spinner=False)
def _sample_picture(model_id: str, image_path: str, _segmenter: Segmenter, _dataset: Dataset, _record) -> tuple:
    """(outlined picture, Dice or None) of one validation slice under one model version."""
    from brainviewer.evaluation.metrics import dice
    from brainviewer.views.patient import outlined

    image = _dataset.load_image(_record)
    truth = _dataset.load_mask(_record, shape=image.shape[:2])
    pred = _segmenter.mask_from_probs(_segmenter.predict_probs(image))
    return outlined(image, truth, pred), (None if truth is None else dice(pred, truth))


def finetune_samples(info: runs_lib.RunInfo, n: int = 3) -> None:
    """Predictions of the run's current best weights on ``n`` validation slices (truth red, prediction green)."""
    st.markdown("**Sample validation predictions** (best weights so far; truth red, prediction green)")
    if not info.has_best:
        st.caption("They appear once the first validation has saved best weights.")
        return
    model = load_model_state(str(info.best_dir))
    if model.segmenter is None or model.model_id is None:
        st.caption(f"The best weights are being written; trying again at the next refresh. ({model.message})")
        return
    try:
        split = info.path / runs_lib.SPLIT_FILE
        dataset, records = _validation_samples(str(info.path), split.stat().st_mtime_ns, n)
        pictures = [_sample_picture(model.model_id, str(r.image_path), model.segmenter, dataset, r) for r in records]
    except Exception as err:  # data moved or unreadable: say so, keep the page up
        st.caption(f"No sample predictions: {type(err).__name__}: {err}")
        return
    for column, record, (picture, score) in zip(st.columns(max(1, len(records))), records, pictures, strict=False):
        dice_text = "" if score is None else f" · Dice {score:.3f}"
        column.image(picture, caption=f"{record.name}{dice_text}", width="stretch")


def finetune_compare(runs_dir: Path, run_list: list[runs_lib.RunInfo]) -> None:
    """The runs table and their validation curves in one figure; re-read from disk every 10 s
    while a run is active or queued."""
    active = any(r.status in (runs_lib.RUNNING, runs_lib.QUEUED) for r in run_list)
    st.fragment(_finetune_compare_body, run_every=10 if active else None)(str(runs_dir))


def _finetune_compare_body(runs_dir: str) -> None:
    run_list = runs_lib.list_runs(runs_dir)
    table = runs_lib.compare_runs(run_list).drop(columns=["duration_s"])
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "best Dice": st.column_config.NumberColumn(format="%.3f", help="Best validation Dice while training."),
            "final Dice": st.column_config.NumberColumn(
                format="%.3f", help="The best weights at the threshold chosen when the run finished."
            ),
            "lr": st.column_config.NumberColumn(format="%.1e"),
        },
        key="finetune_table",
    )
    with_curves = [r.name for r in run_list if runs_lib.read_metrics(r.path)[1]]
    if not with_curves:
        return
    chosen = st.multiselect("Validation curves of", with_curves, default=with_curves[:5], key="finetune_compare_runs")
    by_name = {r.name: r for r in run_list}
    curves = {name: runs_lib.read_metrics(by_name[name].path)[1] for name in chosen}
    st.plotly_chart(figures.compare_figure(curves), key="finetune_compare_chart")


def finetune_choose(run_list: list[runs_lib.RunInfo]) -> runs_lib.RunInfo | None:
    """Selectbox of the runs that have best weights (key ``finetune_choose``)."""
    with_best = [r for r in run_list if r.has_best]
    if not with_best:
        st.caption("Runs appear here once they have best weights (after their first validation).")
        return None
    names = [r.name for r in with_best]
    name = st.selectbox(
        "Run to evaluate or promote", names, index=_state_index("finetune_choose", names), key="finetune_choose"
    )
    return with_best[names.index(name)]


def finetune_evaluate(info: runs_lib.RunInfo) -> None:
    """Evaluate the run's best weights on a dataset (per patient, cached, with a progress bar)."""
    from brainviewer.data.split import Split

    c1, c2 = st.columns([3, 2])
    data = c1.text_input("Dataset", value=dataset_path() or info.dataset, key="finetune_eval_data")
    scope = c2.radio(
        "Patients",
        ("The run's validation patients", "All patients"),
        key="finetune_eval_scope",
        horizontal=True,
        help="Validation patients are the fair test of a run; the others were trained on (if it is the same data).",
    )
    if st.button("Evaluate", key="finetune_eval_button", icon=":material/analytics:"):
        st.session_state["finetune_eval"] = {"run": info.name, "data": data.strip(), "scope": scope}
    request = st.session_state.get("finetune_eval")
    if not request or request["run"] != info.name:
        return
    dataset, error = load_dataset(request["data"])
    if dataset is None:
        st.error(error)
        return
    if request["scope"] != "All patients":
        val = set(Split.load(info.path / runs_lib.SPLIT_FILE).val)
        subset = dataset.subset(val)
        if len(subset):
            dataset = subset
        else:
            st.info("None of the run's validation patients are in this dataset: evaluating all its patients.")
    model = load_model_state(str(info.best_dir))
    if model.segmenter is None:
        st.error(model.message)
        return
    key = f"{dataset.kind}:{Path(dataset.root).resolve()}:{request['scope']}"
    result = evaluate_with_progress(
        model, dataset, key, model.threshold, model.min_component_px, model.keep_largest, model.volume_keep_largest
    )
    if result is None:
        return
    report = result.report
    cards = [
        ("Mean Dice", f"{report.mean_dice:.3f}"),
        ("Median Dice", f"{report.median_dice:.3f}"),
        ("Micro Dice", f"{report.micro_dice:.3f}"),
        ("FP rate (empty slices)", "n/a" if report.fp_rate is None else f"{report.fp_rate:.3f}"),
    ]
    for column, (label, value) in zip(st.columns(4, gap="small"), cards, strict=True):
        column.metric(label, value, border=True)
    st.caption(
        f"{len(report.patients)} patient{'s' if len(report.patients) != 1 else ''} of {Path(request['data']).name} · "
        f"threshold {report.threshold:.2f} "
        f"(the run's choice on its validation data)"
    )
    st.plotly_chart(figures.patient_dice_figure(report.patients, report.mean_dice), key="finetune_eval_chart")


def finetune_promote(info: runs_lib.RunInfo, demo: bool) -> None:
    """Promote the run's best weights to weights/<name> and make them the app's model."""
    active = runs_lib.active_weights()
    current = Path(default_weights_spec())
    st.caption(
        f"The app's model now: **{current.name}**"
        + (f" (weights/ACTIVE names {active})" if active else "")
        + ". Promoting copies this run's best weights to a new folder under weights/ and makes it the model "
        "every page uses; the previous model stays available in its own folder."
    )
    if info.status == runs_lib.RUNNING:
        st.caption("This run is still training: its best weights so far are promoted.")
    name = st.text_input("New weights folder name", key="finetune_promote_name", placeholder=info.name)
    if st.button("Promote", key="finetune_promote", type="primary", icon=":material/upgrade:", disabled=demo):
        try:
            folder = runs_lib.promote_run(info.path, name=name.strip() or None)
        except (ValueError, OSError) as err:
            st.error(f"Could not promote: {err}", icon=":material/error:")
            return
        finetune_flash("success", f"weights/{folder.name} is now the app's model (previous: {current.name}).")
        if os.environ.get(WEIGHTS_ENV):
            finetune_flash(
                "warning",
                f"{WEIGHTS_ENV} is set ({os.environ[WEIGHTS_ENV]}) and overrides weights/ACTIVE: "
                "unset it to use the promoted model by default.",
            )
        st.session_state.pop("model_choice", None)  # the sidebar picks the new default
        st.rerun()


def finetune_average(run_list: list[runs_lib.RunInfo], chosen: runs_lib.RunInfo, runs_dir: Path, demo: bool) -> None:
    """Average the best weights of several runs into a new weights folder, in its own process."""
    st.caption(
        'The weight average of runs fine-tuned from one model (a "model soup") often scores at least as well '
        "as the best of them, at the cost of one model. It runs as its own process and writes a new folder "
        "under weights/; nothing existing is overwritten."
    )
    by_name = {r.name: r for r in run_list if r.has_best}
    picked = st.multiselect("Runs to average", list(by_name), default=[chosen.name], key="finetune_average_runs")
    folders = [str(by_name[name].best_dir) for name in picked if name in by_name]
    data = average_jobs.default_data(folders) if folders else ""
    c1, c2 = st.columns([2, 3])
    placeholder = f"avg-{picked[0]}" if picked else "avg"
    name = c1.text_input("New weights folder name", key="finetune_average_name", placeholder=placeholder)
    score = c2.checkbox(
        "Choose the threshold on the runs' validation patients",
        value=True,
        key="finetune_average_score",
        disabled=not data,
        help=(
            f"Scores the average on {Path(data).name} (a few minutes on a CPU), as at the end of a run."
            if data
            else "The runs were trained on different datasets: the first run's threshold is kept."
        ),
    )
    if st.button(
        "Average",
        key="finetune_average_start",
        icon=":material/merge:",
        disabled=demo or len(folders) < 2,
        help="Choose at least two runs." if len(folders) < 2 else None,
    ):
        try:
            job = average_jobs.start_average(
                folders, name.strip() or placeholder, data if score and data else None, runs_dir
            )
        except (ValueError, OSError) as err:
            st.error(f"Cannot average: {err}", icon=":material/error:")
        else:
            st.success(f"Averaging {len(folders)} runs into weights/{job.name}.", icon=":material/merge:")
    jobs = average_jobs.list_averages(runs_dir)
    if jobs:
        running = any(job.status == average_jobs.RUNNING for job in jobs)
        st.fragment(_finetune_average_jobs, run_every=5 if running else None)(str(runs_dir), demo)


def _finetune_average_jobs(runs_dir: str, demo: bool) -> None:
    for job in average_jobs.list_averages(runs_dir)[:5]:
        label = f"weights/{job.name} (average of {len(job.sources)})"
        if job.status == average_jobs.RUNNING:
            st.info(f"{label}: running…", icon=":material/hourglass_top:")
            with st.expander("Log"):
                lines = runs_lib.tail_log(job.log.parent, 8, job.log.name)
                st.code("\n".join(lines) or "(empty)", language=None, wrap_lines=True)
        elif job.status == average_jobs.FAILED:
            st.error(f"{label} failed: {job.error}", icon=":material/error:")
        else:
            summary = job.summary
            result = (
                f"mean Dice {summary['mean_volume_dice']:.3f} on {summary['patients']} validation patients"
                if summary
                else "done (not scored)"
            )
            st.success(f"{label}: {result}", icon=":material/check_circle:")
            if job.out.parent.resolve() == weights_root().resolve() and st.button(
                "Use as the app's model", key=f"finetune_average_use_{job.name}", disabled=demo
            ):
                try:
                    runs_lib.set_active(job.name)
                except (ValueError, OSError) as err:
                    st.error(f"Could not use it: {err}", icon=":material/error:")
                else:
                    finetune_flash("success", f"weights/{job.name} is now the app's model.")
                    st.session_state.pop("model_choice", None)
                    st.rerun(scope="app")


def _delete_run(path: str, name: str) -> None:
    try:
        moved = runs_lib.delete_run(path, st.session_state.get("finetune_delete_confirm", ""))
    except (ValueError, OSError) as err:
        finetune_flash("error", str(err))
        return
    st.session_state["finetune_delete_confirm"] = ""
    finetune_flash("success", f"Moved {name} to {moved} (empty the .trash folder by hand to free the space).")


def finetune_delete(info: runs_lib.RunInfo, demo: bool) -> None:
    """Delete (move to runs/.trash) after the user types the run's name."""
    typed = st.text_input(f"Type **{info.name}** to delete this run", key="finetune_delete_confirm")
    st.button(
        "Delete",
        key="finetune_delete",
        icon=":material/delete:",
        disabled=demo or typed != info.name or info.status in (runs_lib.RUNNING, runs_lib.UNKNOWN),
        on_click=_delete_run,
        args=(str(info.path), info.name),
        help="Moves the run folder to runs/.trash; stop a running run first.",
    )
