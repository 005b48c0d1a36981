"""Reading runs: a :class:`RunInfo` per run folder, from its config, status, launches and metrics.

How a run's status is decided (``dead``, ``unknown``, ...): see :mod:`brainviewer.runs`.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from brainviewer.files import read_json_object
from brainviewer.runs.folders import complete_weights, first_time_in_process, remove_stale_temporaries, runs_root
from brainviewer.runs.layout import (
    BEST,
    CHECKPOINT,
    CONFIG_FILE,
    DEAD,
    EARLY_STOPPED,
    FAILED,
    FINISHED,
    LAUNCH_FILE,
    LAUNCH_GRACE_S,
    QUEUED,
    RESUMABLE,
    RUNNING,
    STARTING,
    STATUS_FILE,
    STATUSES,
    UNKNOWN,
)
from brainviewer.runs.logs import read_records, training_duration
from brainviewer.runs.process import process_alive, process_fields, resolve_device
from brainviewer.training.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class RunInfo:
    """One run as found on disk.

    Attributes:
        name: the run folder's name.
        path: the run folder.
        config: its :class:`TrainConfig` (``config.json``).
        status: one of :data:`STATUSES` (``dead``: status.json says running but the process is gone).
        state: the raw ``state`` of ``status.json`` (``starting`` between launch and the trainer's first status).
        pid: the training process id (last launch), if any.
        host: the machine that wrote ``status.json``.
        device: where it trains (``cpu``, ``cuda:0``).
        epoch: the epoch in progress (0-based; equals ``config.epochs`` when done).
        global_step: optimisation steps done.
        total_steps: steps of the whole run, once the trainer has counted them.
        eta_s: estimated seconds left (running runs only).
        images_per_s: recent training throughput.
        best_dice: best validation mean per-patient Dice so far.
        best_epoch: the epoch (0-based) it was reached at.
        final_dice: validation mean per-patient Dice of the best weights at the threshold and
            post-processing chosen when the run finished (``None`` before it finishes).
        created: when the run was created (epoch seconds).
        updated: when ``status.json`` was last written.
        duration_s: seconds spent training (all launches together).
        error: the failure message, for failed runs.
        queued_at: when it was queued, for queued runs.
        has_best: whether ``best/`` holds complete weights.
        has_checkpoint: whether ``last.pt`` exists (resuming continues from it).
    """

    name: str
    path: Path
    config: TrainConfig
    status: str
    state: str
    pid: int | None
    host: str | None
    device: str
    epoch: int
    global_step: int
    total_steps: int | None
    eta_s: float | None
    images_per_s: float | None
    best_dice: float | None
    best_epoch: int | None
    final_dice: float | None
    created: float
    updated: float
    duration_s: float
    error: str | None
    queued_at: float | None
    has_best: bool
    has_checkpoint: bool

    @property
    def base_weights(self) -> str:
        """The weights it fine-tunes (``config.init_weights``), or ``from scratch``."""
        return self.config.init_weights or "from scratch"

    @property
    def dataset(self) -> str:
        return self.config.data

    @property
    def epochs(self) -> int:
        return self.config.epochs

    @property
    def progress(self) -> float:
        """Share of the run done, in ``[0, 1]`` (1 for finished runs)."""
        if self.status in (FINISHED, EARLY_STOPPED):
            return 1.0
        if self.total_steps:
            return min(1.0, self.global_step / self.total_steps)
        return 0.0

    @property
    def is_active(self) -> bool:
        """Whether a training process is working on it now."""
        return self.status == RUNNING

    @property
    def is_starting(self) -> bool:
        """Launched, still loading data and model (no step counted yet)."""
        return self.status == RUNNING and self.state == STARTING

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE

    @property
    def best_dir(self) -> Path:
        return self.path / BEST


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run folder (holds ``config.json``; not hidden)."""
    return path.is_dir() and not path.name.startswith(".") and (path / CONFIG_FILE).is_file()


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_run(run_dir: str | Path) -> RunInfo:
    """A :class:`RunInfo` for ``run_dir``.

    Raises:
        FileNotFoundError: not a run folder (no ``config.json``).
        ValueError: ``config.json`` is not a valid :class:`TrainConfig`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE}).")
    try:
        config = TrainConfig.load(run_dir / CONFIG_FILE)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{run_dir / CONFIG_FILE} is not a valid training config: {err}") from err
    status = read_json_object(run_dir / STATUS_FILE)
    launch = read_json_object(run_dir / LAUNCH_FILE)
    launches = launch.get("launches") or []
    # no status.json: launched by us a moment ago, or a command-line run still loading its data
    state, host, pid = process_fields(status, launches)
    updated = float(status.get("updated") or (run_dir / CONFIG_FILE).stat().st_mtime)

    if state in (RUNNING, STARTING):
        if host and host != socket.gethostname():
            resolved = UNKNOWN
        elif pid is None:
            resolved = RUNNING if state == STARTING and time.time() - updated < LAUNCH_GRACE_S else DEAD
        else:
            resolved = RUNNING if process_alive(pid) else DEAD
    elif state in STATUSES:
        resolved = state
    else:
        resolved = FAILED

    records = read_records(run_dir)
    vals = [r for r in records if r.get("type") == "val" and _finite(r.get("val_dice_mean")) is not None]
    best = max(vals, key=lambda r: r["val_dice_mean"], default=None)
    best_dice = _finite(best["val_dice_mean"]) if best else _finite(status.get("best_dice"))
    best_epoch = int(best["epoch"]) if best and "epoch" in best else None
    final = next((r for r in reversed(records) if r.get("type") == "final"), None)
    eta = _finite(status.get("eta_s")) if resolved == RUNNING else None
    if eta is not None:
        eta = max(0.0, eta - (time.time() - updated))
    total_steps = status.get("total_steps")
    best_dir = run_dir / BEST
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        config=config,
        status=resolved,
        state=state,
        pid=pid,
        host=host,
        device=str(launch.get("device") or status.get("device") or resolve_device(config.device)),
        epoch=int(status.get("epoch") or 0),
        global_step=int(status.get("global_step") or 0),
        total_steps=int(total_steps) if isinstance(total_steps, (int, float)) and total_steps > 0 else None,
        eta_s=eta,
        images_per_s=_finite(status.get("images_per_s")) if resolved == RUNNING else None,
        best_dice=best_dice,
        best_epoch=best_epoch,
        final_dice=_finite(final.get("mean_volume_dice")) if final else None,
        created=float(launch.get("created") or (run_dir / CONFIG_FILE).stat().st_mtime),
        updated=updated,
        duration_s=training_duration(records, resolved == RUNNING),
        error=status.get("error") if resolved == FAILED else None,
        queued_at=_finite(status.get("queued_at")) if resolved == QUEUED else None,
        has_best=complete_weights(best_dir),
        has_checkpoint=(run_dir / CHECKPOINT).is_file(),
    )


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """All runs under ``runs_dir`` (default :func:`runs_root`), newest first.

    Folders whose ``config.json`` cannot be read are skipped (and logged).
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    if not runs_dir.is_dir():
        return []
    if first_time_in_process("runs", runs_dir):
        clean_stale_run_temporaries(runs_dir)
    runs = []
    for path in runs_dir.iterdir():
        if not is_run_dir(path):
            continue
        try:
            runs.append(read_run(path))
        except (OSError, ValueError) as err:
            logger.warning("skipping %s: %s", path, err)
    return sorted(runs, key=lambda r: (r.created, r.name), reverse=True)


def clean_stale_run_temporaries(runs_dir: str | Path | None = None) -> list[Path]:
    """Remove the ``.*.tmp`` files killed writers left in the runs folder and its run folders (e.g. a 0-byte
    ``.status.json.<random>.tmp``), once they are :data:`~brainviewer.runs.folders.STALE_TEMP_AGE_S` old.
    :func:`list_runs` does this the first time it reads a runs folder in a process.

    Returns:
        The files removed.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    removed = remove_stale_temporaries(runs_dir)
    try:
        folders = [path for path in runs_dir.iterdir() if path.is_dir() and not path.is_symlink()]
    except OSError:
        folders = []
    for folder in folders:
        removed += remove_stale_temporaries(folder)
    for path in removed:
        logger.info("removed the stale temporary file %s", path)
    return removed
