"""The sidebar every page shows: the model (weights choice, cached loading) and the dataset folder.

* The model is loaded with ``st.cache_resource``, keyed by weights folder, the mtime of its
  ``model.safetensors`` and the device (a promoted or retrained model is picked up on the
  next rerun without restarting the app); :class:`ModelState` says what is loaded, or why nothing is.
* Datasets are opened with ``st.cache_resource``; the folder is remembered across pages
  (:data:`~brainviewer.ui.state.DATASET_PATH_KEY`).
* On a CPU, the app's inference keeps to the cores a training run leaves free.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from brainviewer import runs as runs_lib
from brainviewer.data.datasets import DATA_ENV, Dataset, open_dataset
from brainviewer.data.split import Split, weights_split
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import CONFIG_FILE, WEIGHTS_FILE, Segmenter, default_device
from brainviewer.model.weights import WEIGHTS_ENV, default_weights_spec, list_local_weights, resolve_weights_folder
from brainviewer.runs.promote import clean_stale_promotions_once
from brainviewer.ui.server_files import NONE_CHOICE, demo_mode, named_datasets
from brainviewer.ui.state import (
    DATASET_CHOICE_KEY,
    DATASET_PATH_INPUT_KEY,
    DATASET_PATH_KEY,
    MODEL_CHOICE_KEY,
    MODEL_SPEC_KEY,
    state_index,
)
from brainviewer.views.scan_kind import planes_text

logger = logging.getLogger(__name__)

#: Sentence shown wherever a prediction would be when no model exists yet.
NO_WEIGHTS_TEXT = "No trained weights present yet"


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
    """``[(label, spec), ...]``: the default weights first (when they exist or are named), then other local folders.

    The first call in a process also removes what killed promotions left in the weights folder.
    """
    clean_stale_promotions_once()
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


#: How the sidebar names a run's best weights while the run may still replace them.
UNFINISHED_RUN_NOTE = {
    runs_lib.RUNNING: "best so far, still training",
    runs_lib.QUEUED: "best so far, queued",
    runs_lib.STOPPED: "best so far, stopped",
    runs_lib.DEAD: "best so far, stopped",
    runs_lib.FAILED: "best so far, failed",
}


def run_choice_label(run: runs_lib.RunInfo) -> str:
    """``run <name> (best)`` for a run that ended; a run that may still replace its best weights says so."""
    return f"run {run.name} ({UNFINISHED_RUN_NOTE.get(run.status, 'best')})"


def _run_choices(listed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``[(label, spec), ...]`` of the runs' ``best/`` weights (:func:`run_choice_label`), not in a public demo:
    a run's weights can be reviewed without promoting them. Folders already ``listed`` are left out."""
    if demo_mode():
        return []
    seen = {str(Path(spec).expanduser().resolve()) for _, spec in listed if Path(spec).expanduser().is_dir()}
    runs = [run for run in runs_lib.list_runs() if run.has_best]
    return [(run_choice_label(run), str(run.best_dir)) for run in runs if str(run.best_dir.resolve()) not in seen]


def weights_choices() -> list[tuple[str, str]]:
    """``[(label, spec), ...]`` of the weights the sidebar lists, default first (the models a page can compare)."""
    return _weights_choices()


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
        label=f"{folder.resolve().parent.name} ({folder.name})" if folder.name == runs_lib.BEST else segmenter.name,
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
    choices += _run_choices(choices)
    if not choices:
        sidebar.info(
            f"{NO_WEIGHTS_TEXT}. Scans and ground truth are shown without predictions. "
            "Train one with `python -m brainviewer train`, or set BRAINVIEWER_WEIGHTS to a weights folder."
        )
        return ModelState(None, None, None, 0.5, device_label(), f"{NO_WEIGHTS_TEXT}.")
    labels = [label for label, _ in choices]
    specs = dict(choices)
    kept = st.session_state.get(MODEL_SPEC_KEY)
    if st.session_state.get(MODEL_CHOICE_KEY) not in labels and kept in specs.values():
        # another page was open (Streamlit forgot the widget's value), or the chosen run finished and its label
        # changed: the session remembers the weights chosen
        st.session_state[MODEL_CHOICE_KEY] = next(label for label, spec in choices if spec == kept)
    label = sidebar.selectbox(
        "Weights",
        labels,
        index=state_index(MODEL_CHOICE_KEY, labels),
        key=MODEL_CHOICE_KEY,
        help="The default weights, then the other complete weights folders under weights/, then the best "
        "weights of each training run (not in a public demo): review a run's weights before promoting them. A run "
        "still training says so: it replaces its best weights whenever it improves.",
    )
    st.session_state[MODEL_SPEC_KEY] = specs[label]
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
        + (f"  \nTrained on {planes_text(prep.planes)} slices" if prep.planes else "")
    )
    return state


# === Dataset ===================================================================================


@st.cache_resource(max_entries=4, ttl=600, show_spinner="Indexing the dataset…")
def _open_dataset(path: str, mtime_ns: int, confine: bool = False) -> Dataset:
    return open_dataset(path, confine=confine)


def dataset_path() -> str:
    """The configured dataset folder: what the user typed (or, in demo mode, chose) this session, else
    ``$BRAINVIEWER_DATA`` (in demo mode: the first dataset the operator offers), else ``""``."""
    if DATASET_PATH_KEY not in st.session_state:
        if demo_mode():
            st.session_state[DATASET_PATH_KEY] = next(iter(named_datasets().values()), "")
        else:
            st.session_state[DATASET_PATH_KEY] = os.environ.get(DATA_ENV, "").strip()
    return st.session_state[DATASET_PATH_KEY]


def load_dataset(path: str, confine: bool = False) -> tuple[Dataset | None, str | None]:
    """Open (cached) the dataset at ``path``: ``(dataset, None)`` or ``(None, error message)``.

    With ``confine`` (demo mode) an index may not point outside its folder, and the message says only
    that the dataset could not be opened (the details are logged).
    """
    try:
        target = Path(path).expanduser()
        dataset = _open_dataset(str(target.resolve()), target.stat().st_mtime_ns, confine)
    except FileNotFoundError:
        if confine:
            logger.warning("dataset %s does not exist", path)
            return None, "This dataset could not be opened."
        return None, f"{path} does not exist."
    except Exception as err:  # DatasetError, permissions, malformed CSV/JSON: say it, keep the page up
        if confine:
            logger.warning("could not open dataset %s: %s", path, err)
            return None, "This dataset could not be opened."
        return None, str(err) or type(err).__name__
    return dataset, None


def named_dataset_name(path: str) -> str:
    """The name under which the operator offers the dataset at ``path`` (demo mode), or ``""``."""
    return next((name for name, named in named_datasets().items() if named == path), "")


def choose_named_dataset(label: str, key: str, container=st) -> tuple[str, str]:
    """Demo mode: a selectbox of the datasets the operator offers (none typed). Returns ``(name, path)``;
    ``("", "")`` when none is chosen or offered."""
    named = named_datasets()
    names = [NONE_CHOICE, *named]
    if st.session_state.get(key) not in names:  # first render: the session's dataset, if offered
        st.session_state[key] = named_dataset_name(dataset_path()) or NONE_CHOICE
    name = container.selectbox(
        label,
        names,
        key=key,
        help="The datasets this demo offers. Run the app on your own machine to open your own.",
    )
    return (name, named[name]) if name in named else ("", "")


def _sidebar_dataset_demo() -> Dataset | None:
    sidebar = st.sidebar
    if not named_datasets():
        st.session_state[DATASET_PATH_KEY] = ""
        sidebar.caption("This demo offers no dataset.")
        return None
    name, path = choose_named_dataset("Dataset", DATASET_CHOICE_KEY, sidebar)
    st.session_state[DATASET_PATH_KEY] = path
    if not path:
        sidebar.caption("No dataset chosen.")
        return None
    dataset, _ = load_dataset(path, confine=True)
    if dataset is None:
        sidebar.error(f"The dataset {name} could not be opened.")
        return None
    sidebar.caption(f"{len(dataset.patients)} patients · {len(dataset):,} slices · {dataset.kind}")
    return dataset


def sidebar_dataset() -> Dataset | None:
    """Sidebar section "Dataset": a folder (or data_mask.csv / COCO .json) remembered across pages; in demo
    mode a choice among the datasets the operator offers (:mod:`brainviewer.ui.server_files`).

    Returns:
        The opened dataset, or ``None`` when none is configured or it cannot be opened
        (the error is shown in the sidebar).
    """
    sidebar = st.sidebar
    sidebar.subheader("Dataset")
    if demo_mode():
        return _sidebar_dataset_demo()
    current = dataset_path()
    typed = sidebar.text_input(
        "Dataset folder",
        value=current,
        key=DATASET_PATH_INPUT_KEY,
        placeholder="/data/lgg/kaggle_3m",
        help=(
            "A kaggle_3m folder (patient folders with <slice>_mask files), a data_mask.csv, "
            "images/ + masks/ folders, or a COCO _annotations.coco.json. "
            f"Set {DATA_ENV} to open one at start."
        ),
    ).strip()
    st.session_state[DATASET_PATH_KEY] = typed
    if not typed:
        sidebar.caption("No dataset configured.")
        return None
    dataset, error = load_dataset(typed)
    if dataset is None:
        sidebar.error(error)
        return None
    sidebar.caption(f"{len(dataset.patients)} patients · {len(dataset):,} slices · {dataset.kind}")
    return dataset


# === CPU shared with training ==================================================================

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


def use_model(label: str) -> None:
    """Choose the weights ``label`` in the sidebar (a button's callback: runs before the next script run)."""
    specs = dict(_weights_choices())
    if label in specs:
        st.session_state[MODEL_CHOICE_KEY] = label
        st.session_state[MODEL_SPEC_KEY] = specs[label]


def use_model_button(label: str, what: str, key: str, why: str) -> None:
    """The one-click switch of the sidebar's model to ``label``: "Use <label> for this <what>"."""
    st.button(
        f"Use {label} for this {what}",
        key=key,
        icon=":material/swap_horiz:",
        on_click=use_model,
        args=(label,),
        help=f"Switches the sidebar's model to one trained on {why}.",
    )


def other_models_preprocessing(current: str | None) -> list[tuple[str, Preprocessing]]:
    """``(label, preprocessing)`` of every local weights choice but ``current`` (unreadable ones are skipped)."""
    found = []
    for label, spec in _weights_choices():
        if label == current or not Path(spec).is_dir():
            continue
        try:
            found.append((label, Preprocessing.load(spec)))
        except (OSError, ValueError):
            continue
    return found
