"""Learning from corrections on the Fine-tuning page (AppTest): start a run on the corrections, then ask the
Evaluation page to compare it with its base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainviewer import runs
from brainviewer.data.datasets import open_dataset
from brainviewer.ui.evaluation_compare import COMPARE
from brainviewer.ui.finetune_corrections import ALONE, MIXED
from brainviewer.ui.state import (
    COMPARE_MODELS_KEY,
    COMPARE_REQUEST_KEY,
    COMPARE_UNSEEN_KEY,
    DATASET_PATH_KEY,
    EVAL_MODE_KEY,
)
from tests.runs.test_corrections_run import correct_patients
from tests.runs.test_runs import wait_for
from tests.ui.test_app_finetune import page_env, page_text, small_base  # noqa: F401 (fixtures)

APP = "../../app.py"  # AppTest resolves paths against this test file


def finetune_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=90)
    at.switch_page("pages/finetune.py")
    return at.run()


def test_without_corrections_the_page_says_how_to_make_them(page_env, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("BRAINVIEWER_CORRECTIONS_DIR", str(tmp_path / "none"))
    at = finetune_page()
    assert not at.exception, at.exception
    assert "No corrections saved yet" in page_text(at)


def start_button(at):
    (start,) = [b for b in at.button if b.label == "Start" and b.proto.form_id == "corrections_form"]
    return start


def test_the_corrections_folder_is_not_offered_nor_accepted_as_the_dataset_to_mix_in(
    page_env,  # noqa: F811
    phantom_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    """The sidebar shows the corrections folder (the user opened it): the field offers the base model's training
    dataset instead, the corrections folder typed in is refused before anything is written, and a run that
    cannot start leaves no mix folder behind."""
    _, weights_dir = page_env
    root = tmp_path / "corrections"
    correct_patients(root, phantom_dataset, open_dataset(phantom_dataset).patient_ids[:1])
    (weights_dir / "current" / "train_config.json").write_text(json.dumps({"data": str(phantom_dataset)}))
    monkeypatch.setenv("BRAINVIEWER_CORRECTIONS_DIR", str(root))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(root))

    at = finetune_page()
    assert not at.exception, at.exception
    assert "8 corrected slices of 1 patient in" in page_text(at)  # not "1 patient(s)"
    assert at.text_input(key="corrections_data").value == str(phantom_dataset)

    at.radio(key="corrections_what").set_value(MIXED)
    at.text_input(key="corrections_data").set_value(str(root))
    start_button(at).click().run()
    assert not at.exception, at.exception
    assert any("is the corrections folder itself" in e.value for e in at.error), [e.value for e in at.error]
    assert not (root / ".mixes").exists()

    def refuse(*args, **kwargs):
        raise ValueError("the launcher said no")

    monkeypatch.setattr(runs, "start_run", refuse)
    at.text_input(key="corrections_data").set_value(str(phantom_dataset))
    start_button(at).click().run()
    assert not at.exception, at.exception
    assert any("the launcher said no" in e.value for e in at.error), [e.value for e in at.error]
    assert not list((root / ".mixes").iterdir())  # the index written for it was removed


def test_start_a_run_on_the_corrections_and_request_the_comparisons(
    page_env,  # noqa: F811
    phantom_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    runs_dir, weights_dir = page_env
    root = tmp_path / "corrections"
    patients = open_dataset(phantom_dataset).patient_ids[:3]
    correct_patients(root, phantom_dataset, patients)
    monkeypatch.setenv("BRAINVIEWER_CORRECTIONS_DIR", str(root))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(root))  # the user opened the corrections folder on the sidebar
    # the base model's records name the dataset it trained on: the held-out comparison uses it
    (weights_dir / "current" / "train_config.json").write_text(json.dumps({"data": str(phantom_dataset)}))

    at = finetune_page()
    assert not at.exception, at.exception
    assert f"{len(patients) * 8} corrected slices of {len(patients)} patients" in page_text(at)
    at.radio(key="corrections_what").set_value(ALONE)
    at.number_input(key="corrections_epochs").set_value(1)
    at.number_input(key="corrections_batch").set_value(4)
    at.number_input(key="corrections_threads").set_value(1)
    at.text_input(key="corrections_name").set_value("learn")
    start_button(at).click().run()
    assert not at.exception, at.exception
    done = wait_for(runs_dir / "learn", lambda r: r.status == "finished", what="corrections run finished")
    assert done.has_best
    mix = json.loads((Path(done.config.data).parent / "mix.json").read_text())
    assert mix["dataset"] is None and sorted(mix["corrected_patients"]) == sorted(patients)
    assert mix["corrected_index"] == done.config.data  # alone: the run's own index holds the corrections only

    at = finetune_page()
    assert not at.exception, at.exception
    assert "learn learned from corrections of 3 patients" in page_text(at)
    assert "this shows the gain on the corrected slices" in page_text(at)
    at.button(key="corrections_compare_corrected").click().run()
    # The button sets the request and switches to the Evaluation page, which consumes it at once: the compare
    # view opens with the base model and the run's best weights (every requested label found), on the corrections,
    # on every corrected patient (the run trained on them: the switch to unseen patients only is off).
    assert not at.exception, at.exception
    assert COMPARE_REQUEST_KEY not in at.session_state
    assert at.session_state[EVAL_MODE_KEY] == COMPARE
    assert len(at.session_state[COMPARE_MODELS_KEY]) == 2
    assert not [w for w in at.warning if "left out" in w.value], [w.value for w in at.warning]
    assert not at.warning, [w.value for w in at.warning]  # not "Every patient of this dataset trained ..."
    assert at.toggle(key=COMPARE_UNSEEN_KEY).value is False
    assert any(i.value.startswith(f"Dataset switched to {done.config.data} for this comparison") for i in at.info), [
        i.value for i in at.info
    ]
    assert f"All {len(patients)} patients: {len(patients)} patients, {len(patients) * 8} slices" in page_text(at)
    compared = open_dataset(at.session_state[DATASET_PATH_KEY])
    assert sorted(compared.patient_ids) == sorted(patients) and len(compared) == len(patients) * 8

    # held out: the base model's training dataset (not the sidebar's corrections folder), unseen patients only
    at = finetune_page()
    at.button(key="corrections_compare_held_out").click().run()
    assert not at.exception, at.exception
    assert at.session_state[EVAL_MODE_KEY] == COMPARE
    assert at.session_state[DATASET_PATH_KEY] == str(phantom_dataset)
    assert at.toggle(key=COMPARE_UNSEEN_KEY).value is True
    assert runs.read_run(runs_dir / "learn").status == "finished"

    # a base model whose records name no dataset: no held-out button, and the page says why
    (weights_dir / "current" / "train_config.json").unlink()
    at = finetune_page()
    assert not at.exception, at.exception
    assert not [b for b in at.button if b.key == "corrections_compare_held_out"]
    assert "Pick a dataset on the sidebar" in page_text(at)
