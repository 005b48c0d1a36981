"""The Fine-tuning page through Streamlit's AppTest: start a run, watch it, promote it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from brainviewer import runs
from brainviewer.training.config import TrainConfig
from brainviewer.training.session import cpu_bf16_supported

PAGE = "../../pages/finetune.py"  # AppTest resolves paths against this test file
POLL_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def small_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained weights folder (mobilenet_v2 encoder, depth 3, input 64)."""
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import build_model, save_weights

    torch.manual_seed(0)
    model = build_model("Unet", "mobilenet_v2", in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    folder = tmp_path_factory.mktemp("base") / "small-base"
    return save_weights(model, folder, Preprocessing(input_size=64, mean=[0.1] * 3, std=[0.2] * 3))


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_base: Path):
    """Temporary runs and weights folders; weights/current is the active model; fresh Streamlit caches."""
    import streamlit as st

    runs_dir, weights_dir = tmp_path / "runs", tmp_path / "weights"
    weights_dir.mkdir()
    shutil.copytree(small_base, weights_dir / "current")
    (weights_dir / "ACTIVE").write_text("current\n")
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    for name in ("BRAINVIEWER_WEIGHTS", "BRAINVIEWER_DATA", "BRAINVIEWER_DEMO"):
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    before = set(runs.process._CHILDREN)
    yield runs_dir, weights_dir
    for pid, proc in list(runs.process._CHILDREN.items()):
        if pid not in before and proc.poll() is None:
            proc.kill()
            proc.wait(10)
    st.cache_data.clear()
    st.cache_resource.clear()


def new_page():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(PAGE, default_timeout=60)


def page_text(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "subheader", "title"):
        parts.extend(str(element.value) for element in at.get(kind))
    parts.extend(str(element.proto.text) for element in at.get("progress"))
    parts.extend(caption for image in at.image for caption in image.captions)
    return "\n".join(parts)


def progress_values(at) -> list[tuple[float, str]]:
    return [(element.proto.value / 100, element.proto.text) for element in at.get("progress")]


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def fill_start_form(at, data: Path, name: str) -> None:
    at.text_input(key="finetune_data").set_value(str(data))
    at.selectbox(key="finetune_crop").set_value(32)
    at.selectbox(key="finetune_augment").set_value("light")
    at.selectbox(key="finetune_device").set_value("cpu")
    at.number_input(key="finetune_epochs").set_value(2)
    at.number_input(key="finetune_batch").set_value(4)
    at.number_input(key="finetune_threads").set_value(1)
    at.number_input(key="finetune_patience").set_value(0)
    at.text_input(key="finetune_name").set_value(name)


def write_run(runs_dir: Path, name: str, status: dict) -> Path:
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    TrainConfig(data="/data/x", epochs=4, run_name=name, device="cpu").save(run_dir / "config.json")
    (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def test_page_without_runs_offers_the_form_with_the_active_model_first(page_env) -> None:
    at = new_page().run()
    assert not at.exception
    assert at.selectbox(key="finetune_base").value == "current model (current)"
    assert at.selectbox(key="finetune_base").options[-1] == "From scratch (untrained)"
    assert "No runs yet" in page_text(at)
    assert not button(at, "Start").disabled
    # the sidebar has the model section, as on every page: the app's model, the one a promotion replaces
    assert at.sidebar.selectbox(key="model_choice").value.startswith("current")


def test_demo_mode_disables_starting(page_env, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path) -> None:
    runs_dir, _ = page_env
    monkeypatch.setenv("BRAINVIEWER_DEMO", "1")
    at = new_page().run()
    assert button(at, "Start").disabled
    assert "public demo" in page_text(at)
    assert not runs_dir.exists() or runs.list_runs(runs_dir) == []


def test_dead_run_is_shown_dead_and_resumable_and_delete_needs_the_name(page_env) -> None:
    runs_dir, _ = page_env
    proc = subprocess.Popen([sys.executable, "-c", "pass", "brainviewer-test"])
    proc.wait(30)  # its pid is no longer alive
    write_run(
        runs_dir,
        "crashed",
        {
            "state": "running",
            "pid": proc.pid,
            "host": socket.gethostname(),
            "global_step": 3,
            "total_steps": 12,
            "epoch": 1,
        },
    )
    at = new_page().run()
    assert not at.exception
    assert at.selectbox(key="finetune_run").value == "crashed"
    assert "dead (process gone)" in page_text(at)
    assert not at.button(key="finetune_resume").disabled
    assert at.button(key="finetune_stop").disabled and at.button(key="finetune_kill").disabled
    assert progress_values(at) == [(0.25, "step 3/12 · dead")]

    assert at.button(key="finetune_delete").disabled  # nothing typed yet
    at.text_input(key="finetune_delete_confirm").set_value("crash").run()
    assert at.button(key="finetune_delete").disabled
    at.text_input(key="finetune_delete_confirm").set_value("crashed").run()
    at.button(key="finetune_delete").click().run()
    assert not (runs_dir / "crashed").exists()
    assert [p.name.startswith("crashed-") for p in (runs_dir / ".trash").iterdir()] == [True]
    assert "Moved crashed" in page_text(at)


@pytest.mark.slow
def test_start_watch_finish_and_promote_from_the_page(page_env, phantom_dataset: Path) -> None:
    runs_dir, weights_dir = page_env
    at = new_page().run()
    fill_start_form(at, phantom_dataset, "from-page")
    button(at, "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_dir = runs_dir / "from-page"
    assert run_dir.is_dir()  # the folder exists as soon as Start returns
    assert at.selectbox(key="finetune_run").value == "from-page"
    config = TrainConfig.load(run_dir / "config.json")
    assert (config.init_weights, config.input_size, config.crop_size, config.epochs, config.batch_size) == (
        str((weights_dir / "current").resolve()),
        64,
        32,
        2,
        4,
    )

    # poll the page as a user's open tab would, until the run has finished
    seen_running = False
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        text = page_text(at)
        if "from-page** · :blue[running]" in text:
            seen_running = True
            assert progress_values(at) and 0.0 <= progress_values(at)[0][0] <= 1.0
        if ":green[finished]" in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.5)
        at.run()
    assert seen_running
    assert progress_values(at)[0][0] == 1.0 and progress_values(at)[0][1].startswith("step ")
    info = runs.read_run(run_dir)
    assert info.status == "finished" and info.global_step == info.total_steps
    text = page_text(at)
    assert f"{info.best_dice:.3f}" in [str(m.value) for m in at.metric]  # best validation Dice card
    assert "Dice" in text and "PHANTOM_" in text  # sample validation predictions with their Dice
    assert len(at.get("plotly_chart")) >= 3  # loss, validation Dice, comparison

    # promote: a new folder under weights/ becomes ACTIVE; the old one stays
    assert at.selectbox(key="finetune_choose").value == "from-page"
    # the base model's score on the same validation patients, on request, beside the run's
    at.button(key="finetune_base_score").click().run()
    assert not at.exception, [e.value for e in at.exception]
    cards = {m.label: m.value for m in at.metric}
    assert cards["This run"] == f"{info.final_dice:.3f}" and cards["Base: current"] != "n/a"
    assert cards["Gain"] == f"{info.final_dice - float(cards['Base: current']):+.3f}"
    # the name offered is the base model's and the date; the user may change it
    name_box = at.text_input(key="finetune_promote_name_from-page")
    assert name_box.value == runs.promote.promoted_name(run_dir) and name_box.value.startswith("current-ft-")
    name_box.set_value("my-model").run()
    at.button(key="finetune_promote").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (weights_dir / "ACTIVE").read_text() == "my-model\n"
    assert (weights_dir / "my-model" / "model.safetensors").is_file()
    assert (weights_dir / "current" / "model.safetensors").is_file()
    assert "weights/my-model is now the app's model" in page_text(at)
    # the sidebar (on this page too) now shows it: the session's kept choice of the old model is dropped
    assert at.sidebar.selectbox(key="model_choice").value == "my-model (default)"
    from brainviewer.model.weights import default_weights_spec

    assert default_weights_spec() == str(weights_dir / "my-model")


def test_sampling_and_cross_validation_options_reach_the_run(page_env, phantom_dataset: Path) -> None:
    runs_dir, _ = page_env
    at = new_page().run()
    fill_start_form(at, phantom_dataset, "fold-1")
    at.number_input(key="finetune_missing_sequence").set_value(0.25)
    at.number_input(key="finetune_empty_fraction").set_value(0.4)
    at.number_input(key="finetune_intensity_augment").set_value(0.5)
    at.checkbox(key="finetune_tumour_head").check()
    at.number_input(key="finetune_cv_folds").set_value(3)
    at.number_input(key="finetune_cv_fold").set_value(3)  # out of range: explained, nothing started
    button(at, "Start").click().run()
    assert "Cannot start: cv_fold must be between 0 and cv_folds - 1 (2)" in page_text(at)
    assert not (runs_dir / "fold-1").exists()

    at.number_input(key="finetune_cv_fold").set_value(1)
    button(at, "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    config = TrainConfig.load(runs_dir / "fold-1" / "config.json")
    assert (config.cv_folds, config.cv_fold, config.missing_sequence_prob, config.empty_fraction) == (3, 1, 0.25, 0.4)
    assert config.intensity_augment_prob == 0.5 and config.tumour_head
    assert config.cpu_amp == cpu_bf16_supported()  # on by default where the CPU has native bf16


def test_bf16_on_the_cpu_is_off_and_disabled_where_the_cpu_lacks_it(
    page_env, phantom_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brainviewer.ui import finetune

    runs_dir, _ = page_env
    monkeypatch.setattr(finetune, "cpu_bf16_supported", lambda: False)
    at = new_page().run()
    box = at.checkbox(key="finetune_cpu_amp")
    assert box.disabled and not box.value
    fill_start_form(at, phantom_dataset, "plain")
    button(at, "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not TrainConfig.load(runs_dir / "plain" / "config.json").cpu_amp


def test_a_base_with_a_split_keeps_it_unless_unticked(page_env, phantom_dataset: Path) -> None:
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import split_patients

    runs_dir, weights_dir = page_env
    base_split = split_patients(open_dataset(phantom_dataset).patient_ids, val_count=2, seed=11)
    base_split.save(weights_dir / "current" / "split.json")
    at = new_page().run()
    fill_start_form(at, phantom_dataset, "kept")
    assert at.checkbox(key="finetune_keep_base_split").value is True
    button(at, "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    config = TrainConfig.load(runs_dir / "kept" / "config.json")
    assert Path(config.split_file) == (weights_dir / "current" / "split.json").resolve()

    at.text_input(key="finetune_name").set_value("redrawn")
    at.checkbox(key="finetune_keep_base_split").uncheck()
    button(at, "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert TrainConfig.load(runs_dir / "redrawn" / "config.json").split_file == ""


def test_average_two_runs_from_the_page_and_use_the_result(page_env, small_base: Path, phantom_dataset: Path) -> None:
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import split_patients

    runs_dir, weights_dir = page_env
    split = split_patients(open_dataset(phantom_dataset).patient_ids, val_count=2, seed=1)
    for name in ("run-a", "run-b"):
        run_dir = write_run(runs_dir, name, {"state": "finished", "epoch": 4, "global_step": 8, "total_steps": 8})
        best = shutil.copytree(small_base, run_dir / "best")
        split.save(best / "split.json")
        split.save(run_dir / "split.json")
        (best / "train_config.json").write_text(json.dumps({"data": str(phantom_dataset)}))
    at = new_page().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="finetune_average_runs").value == [at.selectbox(key="finetune_choose").value]
    assert button(at, "Average").disabled  # one run is not an average
    at.multiselect(key="finetune_average_runs").set_value(["run-a", "run-b"]).run()
    assert at.checkbox(key="finetune_average_score").value and not at.checkbox(key="finetune_average_score").disabled
    at.text_input(key="finetune_average_name").set_value("soup").run()
    button(at, "Average").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Averaging 2 runs into weights/soup" in page_text(at)

    deadline = time.monotonic() + POLL_TIMEOUT_S
    while "weights/soup (average of 2): mean Dice" not in page_text(at):
        assert "failed" not in page_text(at), page_text(at)
        assert time.monotonic() < deadline, page_text(at)
        time.sleep(0.5)
        at.run()
    assert (weights_dir / "soup" / "average.json").is_file()
    assert (weights_dir / "ACTIVE").read_text() == "current\n"  # averaging alone changes nothing
    at.button(key="finetune_average_use_soup").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (weights_dir / "ACTIVE").read_text() == "soup\n"
    assert "weights/soup is now the app's model" in page_text(at)
    # the name is taken now: a second average of that name is refused, nothing is overwritten
    at.text_input(key="finetune_average_name").set_value("soup").run()
    button(at, "Average").click().run()
    assert "Cannot average" in page_text(at) and "already exists" in page_text(at)


def test_log_pane_shows_the_newest_line_first_and_the_table_explains_final_dice(page_env) -> None:
    runs_dir, _ = page_env
    proc = subprocess.Popen([sys.executable, "-c", "pass", "brainviewer-test"])
    proc.wait(30)  # its pid is no longer alive: a dead run, nothing refreshes it
    run_dir = write_run(
        runs_dir, "logged", {"state": "running", "pid": proc.pid, "host": socket.gethostname(), "global_step": 1}
    )
    (run_dir / "train.log").write_text("line 1 oldest\nline 2\nline 3 newest\n")
    at = new_page().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "**Log** (newest line first)" in page_text(at)
    (log,) = [c for c in at.code if "line 2" in c.value]
    assert log.value.splitlines() == ["line 3 newest", "line 2", "line 1 oldest"]
    assert "*final* re-scores those best weights after the threshold and post-processing" in page_text(at)
