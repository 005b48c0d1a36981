"""The Fine-tuning page's "Learn from corrections": start a run on the masks corrected on the Review and
Patients pages (alone, or mixed with a dataset), and after it compare the run with its base model on the
Evaluation page, on the corrected patients and on held-out ones.

The run trains in its own process like every run (:func:`brainviewer.runs.start_run`); the index it trains
on is written by :func:`brainviewer.runs.corrections.corrections_config`. The comparison is a request in
``COMPARE_REQUEST_KEY`` (``{"models": [base label, run label], "dataset_path": path, "unseen": bool}``, the
labels being those of :func:`brainviewer.runs.base_weight_choices`) that the Evaluation page answers: on the
corrected patients every patient is scored (the run trained on them: that is the gain it shows); on held-out
patients (the mixed dataset, else the base model's training dataset) only those neither model trained on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import streamlit as st

from brainviewer import runs as runs_lib
from brainviewer.data.corrections import corrections_root, latest_corrections
from brainviewer.runs.corrections import (
    base_training_dataset,
    corrections_config,
    corrections_run_info,
    describe,
    discard_mix,
    plural,
)
from brainviewer.training.config import TrainConfig
from brainviewer.ui.finetune import FROM_SCRATCH, finetune_flash
from brainviewer.ui.server_files import demo_mode
from brainviewer.ui.sidebar import dataset_path
from brainviewer.ui.state import COMPARE_REQUEST_KEY, FINETUNE_RUN_KEY

logger = logging.getLogger(__name__)

EVALUATION_PAGE = "pages/evaluation.py"
ALONE = "The corrections alone"
MIXED = "The corrections and a dataset"


def corrections_start(runs_dir: Path, demo: bool) -> None:
    """The "Learn from corrections" expander: what is saved, and a form that starts a run on it."""
    with st.expander("Learn from corrections", icon=":material/school:"):
        if demo:
            st.info("This is a public demo: corrections are not saved and runs cannot be started.")
            return
        root = corrections_root()
        slices = latest_corrections(root)
        if not slices:
            st.info(
                f"No corrections saved yet in {root}. Correct a mask on the Review or Patients page "
                '("Correct the mask") and save it; it then appears here.',
                icon=":material/brush:",
            )
            return
        patients = sorted({r.patient_id for r in slices})
        st.caption(
            f"{plural(len(slices), 'corrected slice')} of {plural(len(patients), 'patient')} in {root} "
            "(the last save of each; earlier saves in .history are not used). Splits stay by patient: alone, the "
            "corrected patients are split among themselves; mixed with a dataset, every corrected patient trains "
            "and the dataset's other patients keep the side the base model's split gave them, so its held-out "
            "patients stay held out for the comparison."
        )
        config = _form(runs_dir, root)
        if config is None:
            return
        try:
            with st.spinner("Writing the training index and launching…"):
                started = runs_lib.start_run(config, runs_dir)
        except (ValueError, OSError) as err:
            discard_mix(config, root)  # the index written for a run that never started
            st.error(f"Cannot start: {err}", icon=":material/error:")
            return
        st.session_state[FINETUNE_RUN_KEY] = started.name
        finetune_flash("success", f"{started.name} is {started.status} (learning from corrections).")
        st.rerun()


def _default_mix(choices: dict[str, str], root: Path) -> str:
    """The dataset offered to mix in: the first base model's training dataset when its records name an existing
    folder, else the sidebar's dataset unless that is the corrections folder itself, else ``""``."""
    first = next(iter(choices.values()), "")
    sidebar = dataset_path()
    if sidebar:
        try:
            if Path(sidebar).expanduser().resolve() == root.resolve():
                sidebar = ""
        except OSError:
            sidebar = ""
    return base_training_dataset(first) or sidebar


def _form(runs_dir: Path, root: Path) -> TrainConfig | None:
    """The settings of a corrections run; its configuration when Start is pressed and they are valid."""
    choices = runs_lib.base_weight_choices(runs_dir)
    with st.form("corrections_form", border=True):
        base = st.selectbox("Start from", [*choices, FROM_SCRATCH], key="corrections_base")
        what = st.radio("Train on", (MIXED, ALONE), horizontal=True, key="corrections_what")
        data = st.text_input(
            "Dataset to mix in",
            value=_default_mix(choices, root),
            key="corrections_data",
            help="Any layout with masks (not COCO), not the corrections folder itself; empty: the dataset the base "
            "model trained on, when its records name it. Used with 'The corrections and a dataset' only.",
        )
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 1000, 5, key="corrections_epochs")
        lr = c2.number_input("Learning rate", 1e-6, 1.0, 1e-4, format="%.1e", step=1e-5, key="corrections_lr")
        batch = c3.number_input("Batch size", 1, 512, 8, key="corrections_batch")
        threads = c4.number_input("CPU threads", 0, 256, max(1, (os.cpu_count() or 1) - 1), key="corrections_threads")
        name = st.text_input("Run name", key="corrections_name", placeholder="dated default")
        submitted = st.form_submit_button("Start", type="primary", icon=":material/play_arrow:")
    if not submitted:
        return None
    init = "" if base == FROM_SCRATCH else choices[base]
    mix = (data.strip() or base_training_dataset(init)) if what == MIXED else None
    if what == MIXED and not mix:
        st.error(
            "Cannot start: give a dataset to mix in (the base model's records name none), or train on the "
            "corrections alone.",
            icon=":material/error:",
        )
        return None
    settings = TrainConfig(
        epochs=int(epochs), lr=float(lr), batch_size=int(batch), threads=int(threads), run_name=name.strip()
    )
    try:
        if init:  # the trainer uses the base model's architecture and size
            described = runs_lib.weights_summary(init)
            settings = replace(settings, **described, crop_size=min(settings.crop_size, described["input_size"]))
        return corrections_config(root, init, mix, settings)
    except (ValueError, OSError) as err:
        st.error(f"Cannot start: {err}", icon=":material/error:")
        return None


def _labels(info: runs_lib.RunInfo) -> tuple[str | None, str | None]:
    """The run's base weights and its best weights as labels of :func:`brainviewer.runs.base_weight_choices`
    (of a folder listed twice, the stable ``weights/<name>`` rather than ``current model (<name>)``)."""
    by_path = {str(Path(path).resolve()): label for label, path in runs_lib.base_weight_choices().items()}
    base = by_path.get(str(Path(info.config.init_weights).resolve())) if info.config.init_weights else None
    return base, by_path.get(str(info.best_dir.resolve()))


def request_compare(models: list[str], data: str, unseen: bool) -> None:
    """Ask the Evaluation page to compare ``models`` on the dataset at ``data`` (only on the patients none of
    them trained on when ``unseen``, else on all), and go there."""
    st.session_state[COMPARE_REQUEST_KEY] = {"models": models, "dataset_path": data, "unseen": unseen}
    st.switch_page(EVALUATION_PAGE)


def held_out_dataset(mix: dict, init_weights: str) -> str:
    """The dataset to compare a corrections run with its base on held-out patients: the dataset it was mixed
    with, else the base model's training dataset (when its records name an existing folder), else ``""``."""
    return str(mix.get("dataset") or "") or base_training_dataset(init_weights)


def corrections_compare(info: runs_lib.RunInfo) -> None:
    """For a run trained on corrections: what it learned from, and two buttons that compare it with its
    base model on the Evaluation page, on the corrected patients and on a held-out dataset."""
    mix = corrections_run_info(info.config)
    if mix is None:
        return
    st.caption(f"{info.name} learned from {describe(mix)}.")
    if demo_mode():
        return  # the comparison reads server paths from the run's records: not in a public demo
    base, run = _labels(info)
    if base is None or run is None:
        st.caption("Its base model or its best weights are not among the weights to compare (from scratch?).")
        return
    held_out = held_out_dataset(mix, info.config.init_weights)
    st.caption(
        "On the corrected patients both models are scored on every corrected slice, which the run trained on: "
        "this shows the gain on the corrected slices, not how it does on new patients."
    )
    left, right = st.columns(2)
    if left.button(
        "Compare with the base model on the corrected patients",
        key="corrections_compare_corrected",
        icon=":material/compare:",
        help="The gain: both models scored on the newest corrected masks (which the run trained on), all patients.",
    ):
        request_compare([base, run], mix.get("corrected_index") or info.config.data, unseen=False)
    if not held_out:
        right.caption(
            "No held-out comparison here: the run learned from the corrections alone and the base model's records "
            "name no dataset it trained on. Pick a dataset on the sidebar and compare the two models on the "
            "Evaluation page (Compare models)."
        )
        return
    if right.button(
        "Compare with the base model on held-out patients",
        key="corrections_compare_held_out",
        icon=":material/compare:",
        help=f"Any loss elsewhere: both models scored on {held_out}, only on the patients neither trained on.",
    ):
        request_compare([base, run], held_out, unseen=True)
