"""The sidebar lists each training run's best weights after the weights folders, so a run can be reviewed
before it is promoted; a public demo lists none."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.ui.test_app_review import new_app

LABEL = "run my-finetune (best)"


@pytest.fixture
def a_run(app_env, tiny_weights: Path) -> Path:
    """A run folder whose best/ holds the tiny weights (a run that validated at least once)."""
    run = Path(os.environ["BRAINVIEWER_RUNS_DIR"]) / "my-finetune"
    shutil.copytree(tiny_weights, run / "best")
    (run / "config.json").write_text("{}")
    return run


def test_a_runs_best_weights_can_be_chosen_and_reviewed(a_run: Path) -> None:
    at = new_app().run()
    weights = at.sidebar.selectbox(key="model_choice")
    assert weights.options[0].endswith("(default)") and LABEL in weights.options
    weights.set_value(LABEL).run()
    assert not at.exception, [e.value for e in at.exception]
    caption = " ".join(str(c.value) for c in at.sidebar.caption)
    assert "**my-finetune (best)**" in caption  # the run's best/ folder, named after its run
    assert not any("Could not load" in str(w.value) for w in at.sidebar.warning)


def test_a_public_demo_lists_no_runs(a_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINVIEWER_DEMO", "1")
    at = new_app().run()
    assert LABEL not in at.sidebar.selectbox(key="model_choice").options


def test_a_run_still_training_says_so_and_the_choice_survives_its_end(
    a_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket

    from brainviewer.runs import read

    monkeypatch.setattr(read, "process_alive", lambda pid: pid == 4242)  # a training process, as far as it knows
    status = a_run / "status.json"
    status.write_text(json.dumps({"state": "running", "pid": 4242, "host": socket.gethostname()}))
    at = new_app().run()
    training = "run my-finetune (best so far, still training)"
    assert training in at.sidebar.selectbox(key="model_choice").options
    at.sidebar.selectbox(key="model_choice").set_value(training).run()
    status.write_text(json.dumps({"state": "finished"}))  # the run ends: its label changes
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="model_choice").value == LABEL  # still its weights, not the default's


def test_the_sidebar_names_the_planes_only_for_weights_that_record_them(app_env, tiny_weights: Path) -> None:
    """The tiny weights record no planes (as every trained run): no claim. A copy that records them: named."""
    import json

    at = new_app().run()
    assert "Trained on" not in " ".join(str(c.value) for c in at.sidebar.caption)
    recorded = Path(os.environ["BRAINVIEWER_RUNS_DIR"]) / "planes" / "best"
    shutil.copytree(tiny_weights, recorded)
    prep = json.loads((recorded / "preprocessing.json").read_text())
    (recorded / "preprocessing.json").write_text(json.dumps({**prep, "planes": ["sagittal", "axial"]}))
    (recorded.parent / "config.json").write_text("{}")
    at = new_app().run()
    at.sidebar.selectbox(key="model_choice").set_value("run planes (best)").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Trained on axial and sagittal slices" in " ".join(str(c.value) for c in at.sidebar.caption)
