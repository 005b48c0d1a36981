"""What the trainer writes into its run folder, file names from :mod:`brainviewer.runs.layout`.

A run folder holds::

    config.json       the TrainConfig (also copied into every checkpoint)
    split.json        the patient split
    metrics.jsonl     one JSON object a line: training steps, validations, events
    status.json       state (running, finished, stopped, failed), pid, progress
    train.log         the log
    last.pt           the latest checkpoint (model, optimiser, counters), written atomically
    best/             weights folder of the best validation per-patient Dice
    STOP              created by a user to ask the run to stop at the next step
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from brainviewer.files import write_atomic
from brainviewer.runs.layout import BEST, CHECKPOINT, LOG_FILE, METRICS_FILE, STATUS_FILE
from brainviewer.training.config import TrainConfig


def atomic_torch_save(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class RunState:
    """Counters saved in every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    bad_validations: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def write_status(run_dir: Path, state: str, **extra: object) -> None:
    """Write ``status.json`` (state: running, finished, stopped, failed, early_stopped)."""
    status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(), **extra}
    write_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one record to ``metrics.jsonl``."""
    with (run_dir / METRICS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def append_event(run_dir: Path, event: str, step: int) -> None:
    """Append an ``event`` record (started, resumed, stopped, finished, early_stopped) to ``metrics.jsonl``."""
    append_metrics(run_dir, {"type": "event", "event": event, "step": step, "time": time.time()})


def truncate_metrics(run_dir: Path, global_step: int, epoch: int | None = None) -> None:
    """Drop metrics written after the checkpoint we resume from (they will be replayed).

    Events are kept. Training records after ``global_step`` go; so do validations of
    epochs the checkpoint has not finished (``epoch`` and later: a checkpoint taken at the
    last step of an epoch precedes that epoch's validation, which is repeated) and the
    ``final`` record (a resumed run chooses its post-processing again).
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by the kill
        kind = record.get("type")
        if kind == "event":
            kept.append(line)
        elif kind == "final":
            continue
        elif record.get("step", 0) <= global_step and not (
            kind == "val" and epoch is not None and record.get("epoch", -1) >= epoch
        ):
            kept.append(line)
    write_atomic(path, "".join(k + "\n" for k in kept))


def remove_stale_files(run_dir: Path) -> None:
    """Remove what a killed process may have left: temporary checkpoint and weights files."""
    for path in run_dir.glob(f".{CHECKPOINT}.tmp*"):
        path.unlink(missing_ok=True)
    moved_aside = sorted(run_dir.glob(f".{BEST}.old-*"))
    if moved_aside and not (run_dir / BEST).exists():  # killed between the two renames of save_weights
        os.replace(moved_aside.pop(), run_dir / BEST)
    for path in run_dir.glob(f".{BEST}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def new_run_dir(config: TrainConfig) -> Path:
    """Create the folder of a new run, named by ``config.run_name`` or the time and model; never reuse one."""
    name = config.run_name or f"{datetime.now():%Y%m%d-%H%M%S}-{config.arch}-{config.encoder}"
    run_dir = Path(config.out_dir) / name
    if run_dir.exists():
        raise FileExistsError(
            f"run folder {run_dir} already exists; resume it with --resume or pick another --run-name"
        )
    run_dir.mkdir(parents=True)
    return run_dir


def setup_logging(run_dir: Path, rank: int) -> list[logging.Handler]:
    """Log to ``run_dir/train.log`` (and stderr if nothing else does); returns the handlers added."""
    if rank != 0:
        return []
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    added: list[logging.Handler] = [handler]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        root.addHandler(stream)
        added.append(stream)
    return added
