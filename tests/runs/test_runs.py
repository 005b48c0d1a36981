"""brainviewer.runs: reading run folders, detached training processes, the queue, promotion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from brainviewer import runs
from brainviewer.training.config import TrainConfig
from brainviewer.views import figures

RUN_TIMEOUT_S = 150.0


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def small_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained weights folder (mobilenet_v2 encoder, depth 3, input 64) to fine-tune from."""
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import build_model, save_weights

    torch.manual_seed(0)
    model = build_model("Unet", "mobilenet_v2", in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    folder = tmp_path_factory.mktemp("base") / "small-base"
    return save_weights(model, folder, Preprocessing(input_size=64, mean=[0.1] * 3, std=[0.2] * 3))


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Temporary runs and weights folders (the real weights/ is never touched); children we launch are ended."""
    runs_dir, weights_dir = tmp_path / "runs", tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.delenv("BRAINVIEWER_WEIGHTS", raising=False)
    before = set(runs.process._CHILDREN)
    yield runs_dir, weights_dir
    for pid, proc in list(runs.process._CHILDREN.items()):
        if pid not in before and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def tiny_config(data: Path, base: Path, **changes: object) -> TrainConfig:
    config = TrainConfig(
        data=str(data),
        init_weights=str(base),
        input_size=64,
        crop_size=32,
        epochs=2,
        batch_size=4,
        threads=1,
        device="cpu",
        augment="light",
        early_stop_patience=0,
        log_every=1,
        warmup_epochs=0.5,
    )
    return replace(config, **changes)


def wait_for(run_dir: Path, predicate, timeout: float = RUN_TIMEOUT_S, what: str = "") -> runs.RunInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = runs.read_run(run_dir)
        if predicate(info):
            return info
        if time.monotonic() > deadline:
            log = "\n".join(runs.tail_log(run_dir, 30, runs.STDOUT_FILE))
            raise AssertionError(f"timed out waiting for {what or predicate}; status {info.status}\n{log}")
        time.sleep(0.1)


def write_fake_run(runs_dir: Path, name: str, status: dict | None, metrics: list[str] | None = None) -> Path:
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    TrainConfig(data="/data/x", epochs=5, run_name=name, device="cpu").save(run_dir / "config.json")
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text("".join(metrics))
    return run_dir


def fake_best(run_dir: Path, base: Path) -> Path:
    shutil.copytree(base, run_dir / "best")
    return run_dir / "best"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (hidden ones too) -> (size, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def sleeper() -> subprocess.Popen:
    """A live process whose command line mentions brainviewer (stands in for a trainer)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "brainviewer-test"])
    yield proc
    proc.kill()
    proc.wait(10)


# ----------------------------------------------------------------------------- reading runs
def test_read_run_finished_with_metrics_and_a_cut_last_line(tmp_path: Path) -> None:
    lines = [
        json.dumps({"type": "event", "event": "started", "step": 0, "time": 100.0}) + "\n",
        json.dumps({"type": "train", "step": 1, "epoch": 0, "loss": 0.9, "time": 110.0}) + "\n",
        json.dumps({"type": "val", "step": 1, "epoch": 0, "val_dice_mean": 0.40, "time": 120.0}) + "\n",
        json.dumps({"type": "event", "event": "resumed", "step": 1, "time": 200.0}) + "\n",
        json.dumps({"type": "train", "step": 2, "epoch": 1, "loss": 0.5, "time": 210.0}) + "\n",
        json.dumps({"type": "val", "step": 2, "epoch": 1, "val_dice_mean": 0.55, "time": 215.0}) + "\n",
        json.dumps({"type": "val", "step": 3, "epoch": 2, "val_dice_mean": 0.50, "time": 230.0}) + "\n",
        '{"type": "train", "step": 4, "lo',  # cut off by a kill
    ]
    status = {
        "state": "finished",
        "pid": 999999,
        "host": socket.gethostname(),
        "updated": 240.0,
        "epoch": 3,
        "global_step": 3,
        "total_steps": 3,
        "eta_s": 5.0,
    }
    run_dir = write_fake_run(tmp_path, "done", status, lines)
    info = runs.read_run(run_dir)
    assert info.status == "finished" and info.name == "done"
    assert info.best_dice == pytest.approx(0.55) and info.best_epoch == 1
    assert info.duration_s == pytest.approx(20.0 + 30.0)  # 100->120, then 200->230
    assert info.progress == 1.0 and info.eta_s is None
    assert info.base_weights == "from scratch" and info.dataset == "/data/x"
    train_rows, val_rows = runs.read_metrics(run_dir)
    assert [r["step"] for r in train_rows] == [1, 2]
    assert [r["val_dice_mean"] for r in val_rows] == [0.40, 0.55, 0.50]


def test_running_stopped_dead_unknown_and_reused_pid(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    host = socket.gethostname()
    exited = subprocess.Popen([sys.executable, "-c", "pass", "brainviewer-test"])
    exited.wait(30)
    cases = {
        "alive": (
            {
                "state": "running",
                "pid": sleeper.pid,
                "host": host,
                "global_step": 5,
                "total_steps": 20,
                "epoch": 1,
                "eta_s": 1e6,
                "images_per_s": 12.5,
                "updated": time.time(),
            },
            "running",
        ),
        "stopped": ({"state": "stopped", "pid": sleeper.pid, "host": host, "global_step": 5}, "stopped"),
        "gone": ({"state": "running", "pid": exited.pid, "host": host, "global_step": 5}, "dead"),
        # a live pid that is not a brainviewer process (pytest itself): the pid was reused
        "reused": ({"state": "running", "pid": os.getpid(), "host": host}, "dead"),
        "elsewhere": ({"state": "running", "pid": sleeper.pid, "host": host + "-other"}, "unknown"),
        "broken": ({"state": "exploded"}, "failed"),
    }
    for name, (status, _) in cases.items():
        write_fake_run(tmp_path, name, status)
    found = {r.name: r for r in runs.list_runs(tmp_path)}
    assert {name: found[name].status for name in cases} == {name: want for name, (_, want) in cases.items()}
    alive = found["alive"]
    assert alive.is_active and alive.pid == sleeper.pid and alive.progress == pytest.approx(5 / 20)
    assert alive.images_per_s == 12.5 and 0 < alive.eta_s <= 1e6
    assert found["gone"].resumable and found["stopped"].resumable and not alive.resumable
    assert runs.process_alive(sleeper.pid) and not runs.process_alive(exited.pid)


def test_zombie_process_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass", "brainviewer-test"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, 0)  # the pid still exists ...
    assert not runs.process_alive(proc.pid)  # ... but it is a zombie
    proc.wait()


def test_tail_log_and_list_order(tmp_path: Path) -> None:
    run_dir = write_fake_run(tmp_path, "a", {"state": "stopped"})
    (run_dir / "train.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    assert runs.tail_log(run_dir, 3) == ["line 4997", "line 4998", "line 4999"]
    assert runs.tail_log(run_dir, 0) == []
    later = write_fake_run(tmp_path, "b", {"state": "stopped"})
    (later / "launch.json").write_text(json.dumps({"created": time.time() + 10, "launches": []}))
    (tmp_path / ".trash").mkdir()
    (tmp_path / "not-a-run").mkdir()
    assert [r.name for r in runs.list_runs(tmp_path)] == ["b", "a"]


def test_compare_runs_table(tmp_path: Path) -> None:
    lines = [json.dumps({"type": "val", "step": 4, "epoch": 1, "val_dice_mean": 0.7, "time": 1.0}) + "\n"]
    write_fake_run(tmp_path, "one", {"state": "stopped", "epoch": 2, "global_step": 4}, lines)
    table = runs.compare_runs(runs.list_runs(tmp_path))
    row = table.iloc[0]
    assert list(table["run"]) == ["one"]
    assert (row["status"], row["base"], row["best Dice"], row["best epoch"], row["epochs"], row["steps"]) == (
        "stopped",
        "from scratch",
        0.7,
        2,
        "2/5",
        4,
    )


def test_figures_hold_the_metrics() -> None:
    val_rows = [
        {"epoch": 0, "val_dice_mean": 0.3, "val_dice_per_patient": {"P1": 0.2, "P2": 0.4}, "best": True},
        {"epoch": 1, "val_dice_mean": 0.25, "val_dice_per_patient": {"P1": 0.1, "P2": 0.4}, "best": False},
    ]
    fig = figures.dice_figure(val_rows, per_patient=True)
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name) == ["P1", "P2", "mean per-patient Dice", "new best"]
    assert list(by_name["P1"].y) == [0.2, 0.1] and list(by_name["mean per-patient Dice"].x) == [1, 2]
    assert list(by_name["new best"].x) == [1] and list(by_name["new best"].y) == [0.3]
    assert len(figures.dice_figure(val_rows).data) == 2  # without per-patient lines
    loss = figures.loss_figure([{"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.5}])
    assert list(loss.data[0].x) == [10, 20] and list(loss.data[0].y) == [0.9, 0.5]
    assert figures.loss_figure([{"step": 10, "loss": 0.9}]).data[0].mode == "markers"  # one step shows as a point
    compare = figures.compare_figure({"a": val_rows, "b": val_rows[:1]})
    assert [t.name for t in compare.data] == ["a", "b"] and list(compare.data[1].y) == [0.3]


# ----------------------------------------------------------------------------- promotion and active weights
def test_promote_copies_best_and_switches_active_atomically(tmp_path: Path, dirs, small_base: Path) -> None:
    from brainviewer.model.weights import default_weights_spec

    runs_dir, weights_dir = dirs
    shutil.copytree(small_base, weights_dir / "old-model")
    runs.set_active("old-model", weights_dir)
    run_dir = write_fake_run(runs_dir, "ft-run", {"state": "finished"})
    fake_best(run_dir, small_base)

    name = runs.promote.promoted_name(run_dir)  # base weights + date, not the dated run name
    target = runs.promote_run(run_dir)
    assert target == weights_dir / name
    assert (weights_dir / "ACTIVE").read_text() == f"{name}\n" and runs.active_weights() == name
    assert default_weights_spec() == str(weights_dir / name)
    assert (target / "model.safetensors").read_bytes() == (small_base / "model.safetensors").read_bytes()
    assert json.loads((target / "promotion.json").read_text())["run"] == "ft-run"
    assert (weights_dir / "old-model" / "model.safetensors").is_file()  # the previous model stays

    # never clobbered: the same name again gets a suffix, and so does an explicit taken name
    assert runs.promote_run(run_dir) == weights_dir / f"{name}-2"
    assert runs.promote_run(run_dir, name="old-model") == weights_dir / "old-model-2"
    assert runs.active_weights() == "old-model-2"
    runs.set_active("old-model", weights_dir)
    with pytest.raises(ValueError, match="not allowed"):
        runs.promote_run(run_dir, name="../escape")
    with pytest.raises(ValueError, match="no best weights"):
        runs.promote_run(write_fake_run(runs_dir, "no-best", {"state": "running"}))


def test_promoted_name_is_the_base_and_the_date(tmp_path: Path) -> None:
    run_dir = tmp_path / "figshare-20261129-114754-ab12"
    run_dir.mkdir()
    config = {"init_weights": "/srv/app/weights/figshare-unet-resnet18/", "arch": "Unet", "encoder": "resnet18"}
    (run_dir / "config.json").write_text(json.dumps(config))
    when = time.mktime((2026, 11, 29, 12, 0, 0, 0, 0, -1))
    assert runs.promote.promoted_name(run_dir, when) == "figshare-ft-nov29"
    (run_dir / "config.json").write_text(json.dumps({**config, "encoder": "resnet34"}))  # not its suffix: kept
    assert runs.promote.promoted_name(run_dir, when) == "figshare-unet-resnet18-ft-nov29"
    (run_dir / "config.json").write_text(json.dumps({"init_weights": ""}))
    assert runs.promote.promoted_name(run_dir, when) == "scratch-ft-nov29"


@pytest.mark.parametrize("failing", ["copytree", "replace-folder", "replace-active"])
def test_promote_failure_leaves_everything_as_before(
    dirs, small_base: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    runs_dir, weights_dir = dirs
    shutil.copytree(small_base, weights_dir / "old-model")
    runs.set_active("old-model", weights_dir)
    run_dir = write_fake_run(runs_dir, "ft-run", {"state": "finished"})
    fake_best(run_dir, small_base)
    before = snapshot(weights_dir)

    real_replace = os.replace

    def broken(*args, **kwargs):
        raise OSError("injected failure")

    def replace_failing_for(kind: str):
        def fake(src, dst, *args, **kwargs):
            is_active = Path(dst).name == "ACTIVE"
            if (kind == "folder" and not is_active) or (kind == "active" and is_active):
                raise OSError("injected failure")
            return real_replace(src, dst, *args, **kwargs)

        return fake

    if failing == "copytree":
        monkeypatch.setattr(runs.promote.shutil, "copytree", broken)
    else:
        monkeypatch.setattr(runs.promote.os, "replace", replace_failing_for(failing.split("-")[1]))
    with pytest.raises(OSError, match="injected"):
        runs.promote_run(run_dir)
    monkeypatch.undo()
    assert snapshot(weights_dir) == before  # no new folder, no temp leftovers, ACTIVE untouched
    assert runs.active_weights(weights_dir) == "old-model"


def test_set_active_refuses_incomplete_folder(dirs) -> None:
    _, weights_dir = dirs
    (weights_dir / "half").mkdir()
    (weights_dir / "half" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a complete weights folder"):
        runs.set_active("half", weights_dir)
    assert not (weights_dir / "ACTIVE").exists()


# ----------------------------------------------------------------------------- refusing actions
def test_delete_needs_the_exact_name_and_moves_to_trash(dirs, sleeper: subprocess.Popen) -> None:
    runs_dir, _ = dirs
    run_dir = write_fake_run(runs_dir, "keep-me", {"state": "stopped"})
    (run_dir / "train.log").write_text("precious\n")
    with pytest.raises(ValueError, match="exactly"):
        runs.delete_run(run_dir, "keep-m")
    assert run_dir.is_dir()
    moved = runs.delete_run(run_dir, "keep-me")
    assert not run_dir.exists() and moved.parent == runs_dir / ".trash"
    assert (moved / "train.log").read_text() == "precious\n"
    assert runs.list_runs(runs_dir) == []

    live = write_fake_run(runs_dir, "live", {"state": "running", "pid": sleeper.pid, "host": socket.gethostname()})
    with pytest.raises(runs.RunStateError, match="stop it"):
        runs.delete_run(live, "live")
    assert live.is_dir()


def test_resume_and_stop_refuse_wrong_states(dirs, sleeper: subprocess.Popen) -> None:
    runs_dir, _ = dirs
    done = write_fake_run(runs_dir, "done", {"state": "finished"})
    live = write_fake_run(runs_dir, "live", {"state": "running", "pid": sleeper.pid, "host": socket.gethostname()})
    with pytest.raises(runs.RunStateError, match="finished"):
        runs.resume_run(done)
    with pytest.raises(runs.RunStateError, match="running"):
        runs.resume_run(live)
    with pytest.raises(runs.RunStateError, match="nothing to stop"):
        runs.stop_run(done)
    with pytest.raises(runs.RunStateError):
        runs.kill_run(done)
    assert runs.read_run(done).status == "finished"


def test_start_run_reports_bad_input_and_leaves_no_folder(dirs, phantom_dataset: Path, small_base: Path) -> None:
    runs_dir, _ = dirs
    with pytest.raises(ValueError, match="does not exist"):
        runs.start_run(tiny_config(runs_dir / "nowhere", small_base), runs_dir)
    with pytest.raises(ValueError, match="cannot hold out"):
        runs.start_run(tiny_config(phantom_dataset, small_base, val_patients=6), runs_dir)
    with pytest.raises(ValueError, match="not allowed"):
        runs.start_run(tiny_config(phantom_dataset, small_base, run_name="a/b"), runs_dir)
    assert runs.list_runs(runs_dir) == []
    write_fake_run(runs_dir, "taken", {"state": "stopped"})
    with pytest.raises(FileExistsError, match="already exists"):
        runs.start_run(tiny_config(phantom_dataset, small_base, run_name="taken"), runs_dir)
    assert [r.name for r in runs.list_runs(runs_dir)] == ["taken"]


# ----------------------------------------------------------------------------- real training processes
@pytest.mark.slow
def test_stop_mid_run_then_resume_finishes(dirs, phantom_dataset: Path, small_base: Path) -> None:
    runs_dir, _ = dirs
    config = tiny_config(phantom_dataset, small_base, run_name="stoppable", epochs=5)
    info = runs.start_run(config, runs_dir)
    wait_for(info.path, lambda r: r.state == "running" and r.global_step >= 2, what="two steps")
    runs.stop_run(info.path)
    stopped = wait_for(info.path, lambda r: r.status != "running", what="stopped")
    assert stopped.status == "stopped" and stopped.resumable and stopped.has_checkpoint
    assert 2 <= stopped.global_step < stopped.total_steps

    resumed = runs.resume_run(info.path)
    assert resumed.status == "running"
    done = wait_for(info.path, lambda r: r.status == "finished", what="finished after resume")
    assert done.global_step == done.total_steps
    assert len(json.loads((info.path / "launch.json").read_text())["launches"]) == 2
    events = [r["event"] for r in runs.read_records(info.path) if r.get("type") == "event"]
    # every launch is train --resume; the first has no checkpoint to resume from, so it says 'started'
    assert events == ["started", "stopped", "resumed", "finished"]


@pytest.mark.slow
def test_stop_while_starting_ends_the_process(dirs, phantom_dataset: Path, small_base: Path) -> None:
    runs_dir, _ = dirs
    info = runs.start_run(tiny_config(phantom_dataset, small_base, run_name="early"), runs_dir)
    assert info.is_starting
    runs.stop_run(info.path)  # the trainer would clear a STOP file at start-up: SIGTERM does it
    stopped = wait_for(info.path, lambda r: r.status != "running", what="stopped")
    assert stopped.status == "stopped" and stopped.global_step == 0
    deadline = time.monotonic() + 30
    while runs.process_alive(info.pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not (info.path / "STOP").exists()


@pytest.mark.slow
def test_killed_run_is_dead_and_resumes(dirs, phantom_dataset: Path, small_base: Path) -> None:
    runs_dir, weights_dir = dirs
    shutil.copytree(small_base, weights_dir / "current")
    runs.set_active("current", weights_dir)
    before = snapshot(weights_dir)
    config = tiny_config(phantom_dataset, small_base, run_name="killed", epochs=6, checkpoint_every_steps=2)
    info = runs.start_run(config, runs_dir)
    wait_for(info.path, lambda r: r.state == "running" and r.global_step >= 3, what="three steps")
    os.kill(info.pid, signal.SIGKILL)
    dead = wait_for(info.path, lambda r: r.status != "running", timeout=30, what="not running")
    assert dead.status == "dead" and dead.resumable and dead.state == "running"
    assert dead.global_step < dead.total_steps
    assert snapshot(weights_dir) == before  # the active weights are untouched

    runs.resume_run(info.path)
    done = wait_for(info.path, lambda r: r.status == "finished", what="finished after kill")
    assert done.global_step == done.total_steps
    assert snapshot(weights_dir) == before


@pytest.mark.slow
def test_run_trains_detached_and_a_second_run_is_queued_until_it_ends(
    dirs, phantom_dataset: Path, small_base: Path
) -> None:
    runs_dir, weights_dir = dirs
    first = runs.start_run(tiny_config(phantom_dataset, small_base, run_name="first"), runs_dir)
    assert first.status == "running" and first.path == runs_dir / "first" and first.pid != os.getpid()
    assert os.getsid(first.pid) == first.pid  # its own session: closing the page does not end it
    second = runs.start_run(tiny_config(phantom_dataset, small_base, run_name="second"), runs_dir)
    third = runs.start_run(tiny_config(phantom_dataset, small_base, run_name="third"), runs_dir)
    assert (second.status, third.status) == ("queued", "queued")
    assert [r.name for r in runs.queued_runs(runs_dir)] == ["second", "third"]
    assert runs.process_queue(runs_dir) == []  # the device is busy: nothing starts
    runs.stop_run(third.path)  # taken off the queue
    assert runs.read_run(third.path).status == "stopped"

    done = wait_for(first.path, lambda r: r.status == "finished", what="first finished")
    assert done.has_best and done.has_checkpoint and done.best_dice is not None
    assert done.base_weights == str(small_base.resolve())
    assert done.global_step == done.total_steps and done.progress == 1.0
    train_rows, val_rows = runs.read_metrics(first.path)
    assert len(val_rows) == 2 and train_rows[-1]["step"] == done.total_steps
    assert json.loads((first.path / "split.json").read_text())["val"]  # the split written up front was used
    assert any("validation" in line for line in runs.tail_log(first.path, 50))

    # the detached queue runner starts 'second' once 'first' is over (no page is polling here)
    second_done = wait_for(second.path, lambda r: r.status == "finished", what="second finished")
    first_end = max(r["time"] for r in runs.read_records(first.path))
    second_launch = json.loads((second.path / "launch.json").read_text())["launches"][0]["time"]
    assert second_launch >= first_end
    assert second_done.global_step == second_done.total_steps
    assert runs.read_run(third.path).status == "stopped"
    assert not (third.path / "metrics.jsonl").exists()  # it never ran
    assert not runs.process_alive(first.pid) or runs.read_run(first.path).status == "finished"
    assert list(weights_dir.iterdir()) == []  # training never writes into weights/


@pytest.mark.slow
def test_failed_runs_say_why(dirs, phantom_dataset: Path, small_base: Path, tmp_path: Path) -> None:
    runs_dir, _ = dirs
    corrupt = tmp_path / "corrupt-base"
    shutil.copytree(small_base, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    data = tmp_path / "data-copy"
    shutil.copytree(phantom_dataset, data)
    bad_weights = runs.start_run(tiny_config(phantom_dataset, corrupt, run_name="bad-weights"), runs_dir)
    vanished = runs.start_run(tiny_config(data, small_base, run_name="vanished"), runs_dir, queue=False)
    shutil.rmtree(data)  # gone before the process opens it (importing torch takes longer)

    # the trainer itself reports a failure inside training ...
    failed = wait_for(bad_weights.path, lambda r: r.status != "running", what="bad weights fail")
    assert failed.status == "failed" and failed.resumable and "model.safetensors" in failed.error
    # ... and a process that exits before the trainer writes anything is marked failed by its launcher
    failed = wait_for(vanished.path, lambda r: r.status != "running", what="vanished data fails")
    assert failed.status == "failed" and "exited with code 2" in failed.error
    assert str(data) in failed.error


def test_cpu_training_threads_counts_live_cpu_runs_only(tmp_path: Path, sleeper: subprocess.Popen) -> None:
    host = socket.gethostname()
    alive = {"state": "running", "pid": sleeper.pid, "host": host}
    for name, status, threads, device in [
        ("one-thread", alive, 1, "cpu"),
        ("all-cores", alive, 0, "cpu"),
        ("stopped", {**alive, "state": "stopped"}, 3, "cpu"),
        ("elsewhere", {**alive, "host": host + "-other"}, 3, "cpu"),
        ("gpu", alive, 3, "cuda"),
    ]:
        run_dir = tmp_path / name
        run_dir.mkdir()
        TrainConfig(data="/data/x", run_name=name, device=device, threads=threads).save(run_dir / "config.json")
        (run_dir / "status.json").write_text(json.dumps(status))
    assert runs.cpu_training_threads(tmp_path) == 1 + (os.cpu_count() or 1)
    assert runs.cpu_training_threads(tmp_path / "nothing-here") == 0


def test_serving_threads_leave_the_training_cores_alone() -> None:
    assert runs.serving_threads(0, default=8, cores=8) == 8  # nothing trains: the default
    assert runs.serving_threads(1, default=2, cores=2) == 1  # one thread each
    assert runs.serving_threads(6, default=8, cores=8) == 2
    assert runs.serving_threads(8, default=8, cores=8) == 1  # never less than one
    assert runs.serving_threads(2, default=4, cores=16) == 4  # never more than the default


# ----------------------------------------------------------------------------- leftovers of killed writers
def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_stale_promotion_copies_and_active_temporaries_are_removed_live_ones_kept(
    dirs, small_base: Path, sleeper: subprocess.Popen
) -> None:
    from brainviewer.runs.promote import clean_stale_promotions, clean_stale_promotions_once

    _, weights_dir = dirs
    complete = shutil.copytree(small_base, weights_dir / "current")
    (weights_dir / "ACTIVE").write_text("current\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    killed = shutil.copytree(small_base, weights_dir / f".lgg.promote-{dead.pid}-k3j_x9")  # its process is gone
    live = shutil.copytree(small_base, weights_dir / f".lgg-2.promote-{sleeper.pid}-ab12")  # still copying
    old_style = _age(shutil.copytree(small_base, weights_dir / ".old.promote-zz9_q1"), 2 * 3600)  # no pid, old
    young_style = shutil.copytree(small_base, weights_dir / ".new.promote-yy8_p2")  # no pid, young
    stale_tmp = weights_dir / ".ACTIVE.a1b2c3.tmp"  # a killed set_active's 0-byte file
    stale_tmp.write_text("")
    _age(stale_tmp, 2 * 3600)
    fresh_tmp = weights_dir / ".ACTIVE.d4e5f6.tmp"
    fresh_tmp.write_text("cur")

    assert clean_stale_promotions_once(weights_dir)  # the first time in this process ...
    assert not killed.exists() and not old_style.exists() and not stale_tmp.exists()
    assert live.is_dir() and young_style.is_dir() and fresh_tmp.is_file()
    assert runs.folders.complete_weights(complete) and runs.active_weights(weights_dir) == "current"
    _age(fresh_tmp, 2 * 3600)
    assert clean_stale_promotions_once(weights_dir) == []  # ... not again
    assert fresh_tmp.is_file()

    # while a promotion holds the weights folder's lock, no copy is touched (flock: per open descriptor)
    again = shutil.copytree(small_base, weights_dir / f".x.promote-{dead.pid}-aa11")
    with runs.folders.flock(weights_dir):
        assert clean_stale_promotions(weights_dir) == [fresh_tmp]  # only the old temporary file goes
    assert again.is_dir() and live.is_dir()
    assert clean_stale_promotions(weights_dir) == [again]
    assert live.is_dir() and young_style.is_dir() and complete.is_dir()


def test_promotion_names_its_copy_with_its_process_id(dirs, small_base: Path, monkeypatch) -> None:
    import tempfile as tempfile_module

    runs_dir, weights_dir = dirs
    run_dir = write_fake_run(runs_dir, "named", {"state": "finished"})
    fake_best(run_dir, small_base)
    prefixes: list[str] = []
    original = tempfile_module.mkdtemp

    def recording(*args, **kwargs):
        prefixes.append(kwargs.get("prefix", ""))
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile_module, "mkdtemp", recording)
    runs.promote_run(run_dir, name="named", weights_dir=weights_dir)
    assert prefixes == [f".named.promote-{os.getpid()}-"]


def test_stale_run_temporaries_are_removed_on_the_first_listing(tmp_path: Path) -> None:
    from brainviewer.runs import folders

    runs_dir = tmp_path / "runs"
    run_dir = write_fake_run(runs_dir, "killed", {"state": "stopped"})
    status = (run_dir / "status.json").read_text()
    stale = run_dir / ".status.json.q1w2e3.tmp"
    stale.write_text("")
    _age(stale, 2 * 3600)
    fresh = run_dir / ".status.json.r4t5y6.tmp"  # a writer may still be at work
    fresh.write_text("{")
    stale_top = runs_dir / ".queue.json.u7i8o9.tmp"
    stale_top.write_text("")
    _age(stale_top, 2 * 3600)
    assert [r.name for r in runs.list_runs(runs_dir)] == ["killed"]
    assert not stale.exists() and not stale_top.exists() and fresh.is_file()
    assert (run_dir / "status.json").read_text() == status and (run_dir / "config.json").is_file()

    again = run_dir / ".status.json.p0a9s8.tmp"
    again.write_text("")
    _age(again, 2 * 3600)
    runs.list_runs(runs_dir)
    assert again.exists()  # cleaned once per process only
    assert folders.remove_stale_temporaries(run_dir) == [again]
