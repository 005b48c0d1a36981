"""Starting runs: checking a configuration, claiming a run folder, launching the training process.

Training never happens in the web process. :func:`start_run` writes the run folder
(``config.json`` and ``split.json``, so a bad dataset path or an impossible split is reported
at once) and launches ``python -m brainviewer train --resume <run>`` as a detached process
(its own session; closing the browser or restarting Streamlit does not stop it), or queues
the run when another one is active on its device.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from brainviewer.files import read_json_object
from brainviewer.model.weights import PROJECT_ROOT
from brainviewer.runs.folders import MODEL_CONFIG_FILE, WEIGHTS_FILE, flock, runs_root, validate_name, write_json
from brainviewer.runs.layout import (
    BEST,
    CONFIG_FILE,
    FAILED,
    LAUNCH_FILE,
    QUEUED,
    RUNNING,
    SPLIT_FILE,
    STARTING,
    STATUS_FILE,
    STDOUT_FILE,
    STOP_FILE,
)
from brainviewer.runs.process import child_env, resolve_device, spawn_queue_runner, track_child
from brainviewer.runs.promote import weights_summary
from brainviewer.runs.read import RunInfo, list_runs, read_run
from brainviewer.training.config import TrainConfig

if TYPE_CHECKING:
    from brainviewer.data.split import Split

logger = logging.getLogger(__name__)


def default_run_name(config: TrainConfig) -> str:
    """``<date>-<time>-ft-<base weights>`` for fine-tuning, ``<date>-<time>-<arch>-<encoder>`` from scratch."""
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    if config.init_weights:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(config.init_weights.rstrip("/")).name).strip("-.")
        if base == BEST:  # an earlier run's best/: name it after that run
            base = Path(config.init_weights.rstrip("/")).parent.name
        return f"{stamp}-ft-{base or 'weights'}"[:100]
    return f"{stamp}-{config.arch}-{config.encoder}"


def _claim_run_dir(runs_dir: Path, config: TrainConfig) -> Path:
    """Create the run folder (``mkdir`` claims the name); a default name gets a suffix when taken."""
    if config.run_name:
        name = validate_name(config.run_name)
        try:
            (runs_dir / name).mkdir()
        except FileExistsError:
            raise FileExistsError(f"a run named {name!r} already exists in {runs_dir}; choose another name.") from None
        return runs_dir / name
    base = default_run_name(config)
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        try:
            (runs_dir / name).mkdir()
        except FileExistsError:
            continue
        return runs_dir / name
    raise FileExistsError(f"could not find a free run name like {base} in {runs_dir}")


def _check_weights_folder(spec: str) -> str:
    from brainviewer.model.weights import resolve_weights_folder

    folder = resolve_weights_folder(spec).resolve()
    missing = [f for f in (MODEL_CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a complete weights folder (missing {', '.join(missing)}).")
    return str(folder)


def prepare_config(config: TrainConfig) -> tuple[TrainConfig, Split]:
    """Check ``config`` before a run is made: the data opens, the split is possible, the base weights exist.

    Returns:
        A copy with absolute ``data`` and ``init_weights`` paths, and the patient
        :class:`~brainviewer.data.split.Split`.

    Raises:
        ValueError: with a message saying what to fix (dataset, split or weights).
    """
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import split_for_config

    config = replace(config)
    data = Path(config.data).expanduser()
    if not data.exists():
        raise ValueError(f"dataset {config.data} does not exist; give a dataset folder, data_mask.csv or COCO json.")
    config.data = str(data.resolve())
    if config.split_file:
        config.split_file = str(Path(config.split_file).expanduser().resolve())
    dataset = open_dataset(config.data)
    if not any(r.has_ground_truth for r in dataset):
        raise ValueError(f"{config.data} has no masks; training needs ground truth.")
    # the same call brainviewer.training.loop makes for a fresh run
    split = split_for_config(dataset.patient_ids, config)
    if config.init_weights:
        config.init_weights = _check_weights_folder(config.init_weights)
        base = weights_summary(config.init_weights)
        if config.crop_size and config.crop_size > base["input_size"]:
            raise ValueError(
                f"crop size {config.crop_size} is larger than the base model's input size {base['input_size']}; "
                "choose a smaller crop (or 0 for whole images)."
            )
        # the trainer takes architecture and input size from the base weights: record them truthfully
        config = replace(config, **base)
    return config, split


def start_run(config: TrainConfig, runs_dir: str | Path | None = None, queue: bool = True) -> RunInfo:
    """Create a run and launch its training process, or queue it when its device is busy.

    Args:
        config: the run's configuration; ``run_name`` empty means a dated default name,
            ``out_dir`` is replaced by ``runs_dir``.
        runs_dir: folder of runs (default :func:`runs_root`).
        queue: when False, start even if another run is active on the same device.

    Returns:
        The new run (status ``running`` or ``queued``); its folder exists on return.

    Raises:
        ValueError: the dataset, split, weights or run name is not usable (the message says why).
        FileExistsError: a run of that name exists.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = runs_dir.resolve()
    if config.run_name:
        validate_name(config.run_name)
        if (runs_dir / config.run_name).exists():
            raise FileExistsError(f"a run named {config.run_name!r} already exists in {runs_dir}; choose another name.")
    config, split = prepare_config(config)
    device = resolve_device(config.device)
    with flock(runs_dir):
        run_dir = _claim_run_dir(runs_dir, config)
        try:
            config.run_name, config.out_dir = run_dir.name, str(runs_dir)
            config.save(run_dir / CONFIG_FILE)
            split.save(run_dir / SPLIT_FILE)
            write_json(run_dir / LAUNCH_FILE, {"created": time.time(), "device": device, "launches": []})
            if queue and device_busy(runs_dir, device, exclude=run_dir.name):
                write_json(
                    run_dir / STATUS_FILE,
                    {
                        "state": QUEUED,
                        "queued_at": time.time(),
                        "device": device,
                        "updated": time.time(),
                        "global_step": 0,
                    },
                )
                logger.info("queued %s: another run is active on %s", run_dir.name, device)
                spawn_queue_runner(runs_dir)
            else:
                launch_training(run_dir, device)
        except BaseException:
            # nothing was launched or queued: remove the folder this call made a moment ago
            if not (run_dir / STATUS_FILE).is_file():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return read_run(run_dir)


def device_busy(runs_dir: Path, device: str, exclude: str | None = None) -> bool:
    """Whether a run other than ``exclude`` is active on ``device``."""
    return any(r.status == RUNNING and r.device == device and r.name != exclude for r in list_runs(runs_dir))


def launch_training(run_dir: Path, device: str | None = None) -> int:
    """Launch ``python -m brainviewer train --resume run_dir`` detached; returns its pid. Call under the lock."""
    config = TrainConfig.load(run_dir / CONFIG_FILE)
    device = device or resolve_device(config.device)
    (run_dir / STOP_FILE).unlink(missing_ok=True)  # a STOP left by the last stop would end it at once
    previous = read_json_object(run_dir / STATUS_FILE)
    keep = {k: previous[k] for k in ("epoch", "global_step", "total_steps") if k in previous}
    status = {
        "state": STARTING,
        "pid": None,
        "host": socket.gethostname(),
        "device": device,
        "updated": time.time(),
        **keep,
    }
    write_json(run_dir / STATUS_FILE, status)
    command = [sys.executable, "-m", "brainviewer", "train", "--resume", str(run_dir)]
    with (run_dir / STDOUT_FILE).open("ab") as log:
        log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} launch: {' '.join(command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(PROJECT_ROOT),
                env=child_env(config.threads),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            write_json(run_dir / STATUS_FILE, {**status, "state": FAILED, "error": f"could not launch: {err}"})
            raise
    proc.run_dir = run_dir  # type: ignore[attr-defined]
    track_child(proc)
    launch = read_json_object(run_dir / LAUNCH_FILE) or {"created": time.time()}
    launch["device"] = device
    launch.setdefault("launches", []).append(
        {"pid": proc.pid, "host": socket.gethostname(), "time": time.time(), "command": command}
    )
    write_json(run_dir / LAUNCH_FILE, launch)
    current = read_json_object(run_dir / STATUS_FILE)
    if current.get("state") == STARTING and current.get("pid") is None:  # the trainer has not written yet
        write_json(run_dir / STATUS_FILE, {**current, "pid": proc.pid})
    logger.info("launched %s (pid %d) on %s", run_dir.name, proc.pid, device)
    return proc.pid
