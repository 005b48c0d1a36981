"""Training runs on disk: read, start, queue, stop, resume, delete, compare and promote them.

No Streamlit here: the fine-tuning page (``pages/finetune.py``) is a thin view of these
functions. Every fact comes from the run folders (layout in :mod:`brainviewer.training.loop`), never
from a browser session, so several tabs, a restarted Streamlit server and the command line
all see the same runs.

Training never happens in the web process. :func:`start_run` writes the run folder
(``config.json`` and ``split.json``, so a bad dataset path or an impossible split is reported
at once) and launches ``python -m brainviewer train --resume <run>`` as a detached process
(its own session; closing the browser or restarting Streamlit does not stop it). On a folder
without ``last.pt`` ``--resume`` starts from step 0 with the saved split, exactly as a fresh
``train --config`` run would (the only difference: its first event in ``metrics.jsonl`` is
called ``resumed``).

Files this module adds to a run folder::

    launch.json   created time, device, and every launch (pid, host, time, command)
    stdout.log    stdout and stderr of the training process (appended at each launch)

and to the runs folder::

    .queue-runner.lock    held by the queue runner on duty
    .queue-runner.log     its output
    .trash/               deleted runs (moved here; nothing is removed; empty it by hand)

**One run per device.** A run started while another run is active on the same device
(``cpu``, ``cuda:0``, ...) is written as ``queued``. :func:`process_queue` starts the oldest
queued run of each free device; the page calls it on every refresh, and :func:`start_run`
also spawns a tiny detached *queue runner* (``python -m brainviewer.runs queue-runner RUNS``)
that calls it every few seconds and exits once the queue is empty, so a queued run starts
when the active one ends even when no page is open. Starting, queueing, resuming and deleting
runs hold an ``flock`` on the runs folder, so two tabs never start the same queued run twice.

**Status.** ``status.json`` says what the training process last wrote. A run it says is
``running`` whose process is gone (killed, machine rebooted) is reported ``dead``; dead,
stopped and failed runs can be resumed from their last checkpoint. A run written by another
machine (``host`` differs) cannot be checked from here and is reported ``unknown``.

**Promotion.** :func:`promote_run` copies a run's ``best/`` weights to ``weights/<name>``
(never overwriting: a suffix is added) and records that folder in ``weights/ACTIVE``, which
:func:`brainviewer.model.weights.default_weights_spec` reads (``$BRAINVIEWER_WEIGHTS`` still
overrides it). Both steps are atomic renames: a failure leaves ``ACTIVE`` and every existing
folder as they were, and the previous model stays available under its own name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from brainviewer.files import read_json_object, write_atomic
from brainviewer.model.weights import PROJECT_ROOT, list_local_weights, weights_root
from brainviewer.training.config import TrainConfig
from brainviewer.runs.layout import (  # noqa: F401  (re-exported: the package's public names)
    RUNS_ENV,
    ACTIVE_FILE,
    CONFIG_FILE,
    SPLIT_FILE,
    STATUS_FILE,
    METRICS_FILE,
    LOG_FILE,
    CHECKPOINT,
    BEST,
    STOP_FILE,
    LAUNCH_FILE,
    STDOUT_FILE,
    TRASH,
    RUNNER_LOCK,
    RUNNER_LOG,
    RUNNING,
    QUEUED,
    STOPPED,
    FINISHED,
    EARLY_STOPPED,
    FAILED,
    DEAD,
    UNKNOWN,
    STATUSES,
    RESUMABLE,
    STARTING,
    LAUNCH_GRACE_S,
    QUEUE_POLL_S,
)

if TYPE_CHECKING:
    import pandas as pd

    from brainviewer.data.split import Split

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Processes launched by this process, kept so they are reaped (no zombies) and their exit seen.
_CHILDREN: dict[int, subprocess.Popen] = {}


class RunStateError(ValueError):
    """The run is in a state that does not allow the action (the message says what does)."""


# ----------------------------------------------------------------------------- small helpers
def runs_root() -> Path:
    """The folder holding runs: ``$BRAINVIEWER_RUNS_DIR``, else ``runs/`` of the project."""
    return Path(os.environ.get(RUNS_ENV, PROJECT_ROOT / "runs"))


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block.

    ``path`` is a folder (locked through its own descriptor, so no lock file is left in it)
    or a file (created if needed).
    """
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def validate_name(name: str, what: str = "run") -> str:
    """``name`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``; not starting with ``.``)."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def resolve_device(spec: str) -> str:
    """The device a run with ``config.device == spec`` trains on: ``cpu`` or ``cuda:N``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        import torch

        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        return "cuda:0"
    return spec


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) brainviewer process on this machine.

    ``os.kill(pid, 0)`` tells whether the pid exists; ``/proc/<pid>/cmdline`` must mention
    ``brainviewer``, so a pid reused by an unrelated program after a reboot does not count.
    """
    if not pid or pid <= 0:
        return False
    _reap_children()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists but belongs to another user
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no /proc (macOS): the pid exists, trust it
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and "brainviewer" in cmdline


def track_child(proc: subprocess.Popen) -> None:
    """Remember a process this process launched, so it is reaped when it ends (no zombie)."""
    _CHILDREN[proc.pid] = proc


def _reap_children() -> None:
    """Collect exit codes of processes this process launched; mark runs that died while starting as failed."""
    for pid, proc in list(_CHILDREN.items()):
        code = proc.poll()
        if code is None:
            continue
        del _CHILDREN[pid]
        run_dir = getattr(proc, "run_dir", None)
        if run_dir is None or code <= 0:
            continue  # success, or killed by a signal: status.json (or 'dead') tells the story
        status = read_json_object(run_dir / STATUS_FILE)
        if status.get("state") == STARTING and status.get("pid") == pid:
            last = tail_log(run_dir, 1, STDOUT_FILE)
            error = f"the training process exited with code {code}" + (f": {last[-1]}" if last else "")
            _write_json(run_dir / STATUS_FILE, {**status, "state": FAILED, "error": error, "updated": time.time()})


# ----------------------------------------------------------------------------- reading runs
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


_METRICS_CACHE: dict[Path, tuple[tuple[int, int], list[dict]]] = {}


def read_records(run_dir: str | Path) -> list[dict]:
    """Every record of ``metrics.jsonl`` (train, val, final and event), in file order.

    Lines that are not complete JSON (the last line while it is being written, or one cut
    off when the process was killed) are skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        return []
    key = (stat.st_size, stat.st_mtime_ns)
    cached = _METRICS_CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    records = []
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
    if len(_METRICS_CACHE) > 256:
        _METRICS_CACHE.clear()
    _METRICS_CACHE[path] = (key, records)
    return records


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Training rows and validation rows of a run.

    Returns:
        ``(train_rows, val_rows)``: dicts as the trainer wrote them. Train rows have ``step``,
        ``epoch``, ``loss``, ``lr``, ``images_per_s``, ``eta_s``, ``total_steps``; validation rows
        have ``step``, ``epoch`` (0-based), ``val_dice_mean``, ``val_dice_median``, ``val_fp_rate``,
        ``val_dice_per_patient`` (patient id -> Dice), ``best``.
    """
    records = read_records(run_dir)
    return [r for r in records if r.get("type") == "train"], [r for r in records if r.get("type") == "val"]


def tail_log(run_dir: str | Path, n: int = 20, name: str = LOG_FILE) -> list[str]:
    """The last ``n`` lines of the run's ``train.log`` (or ``stdout.log`` when there is no train.log yet)."""
    run_dir = Path(run_dir)
    path = run_dir / name
    if not path.is_file() and name == LOG_FILE:
        path = run_dir / STDOUT_FILE
    if not path.is_file() or n <= 0:
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = max(4096, 400 * n)
        while True:
            start = max(0, size - block)
            handle.seek(start)
            data = handle.read()
            lines = data.splitlines()
            if start == 0 or len(lines) > n:
                break
            block *= 4
    if start > 0:
        lines = lines[1:]  # the first line may be cut
    return [line.decode("utf-8", errors="replace") for line in lines[-n:]]


def _duration(records: list[dict], running: bool) -> float:
    """Training seconds: per launch, from its started/resumed event to its last record."""
    total, start, last = 0.0, None, None
    for record in records:
        moment = record.get("time")
        if not isinstance(moment, (int, float)):
            continue
        if record.get("type") == "event" and record.get("event") in ("started", "resumed"):
            if start is not None and last is not None:
                total += max(0.0, last - start)
            start = last = moment
        else:
            last = moment
            if start is None:
                start = moment
    if start is not None and last is not None:
        total += max(0.0, (time.time() if running else last) - start)
    return total


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _process_fields(status: dict, launches: list[dict]) -> tuple[str, str | None, int | None]:
    """``(state, host, pid)`` of a run from its ``status.json``, else its last launch.

    No ``status.json`` yet: ``starting`` when we launched it, else ``unknown``.
    """
    state = str(status.get("state") or (STARTING if launches else UNKNOWN))
    host = status.get("host") or (launches[-1].get("host") if launches else None)
    pid = status.get("pid") or (launches[-1].get("pid") if launches else None)
    return state, host, int(pid) if isinstance(pid, (int, float)) else None


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
    state, host, pid = _process_fields(status, launches)
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
        duration_s=_duration(records, resolved == RUNNING),
        error=status.get("error") if resolved == FAILED else None,
        queued_at=_finite(status.get("queued_at")) if resolved == QUEUED else None,
        has_best=(best_dir / "config.json").is_file() and (best_dir / "model.safetensors").is_file(),
        has_checkpoint=(run_dir / CHECKPOINT).is_file(),
    )


def cpu_training_threads(runs_dir: str | Path | None = None) -> int:
    """CPU threads taken by the runs training on this machine's CPU right now.

    Reads only each run's ``status.json``, ``launch.json`` and ``config.json`` (cheap enough for
    every page rerun). A run whose ``threads`` is 0 uses torch's default, all cores.

    Returns:
        The sum over live CPU runs of their thread counts (0 when none is training).
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    cores = os.cpu_count() or 1
    total = 0
    for config_file in runs_dir.glob(f"*/{CONFIG_FILE}"):
        run_dir = config_file.parent
        launches = read_json_object(run_dir / LAUNCH_FILE).get("launches") or []
        state, host, pid = _process_fields(read_json_object(run_dir / STATUS_FILE), launches)
        if state not in (RUNNING, STARTING) or (host and host != socket.gethostname()) or not process_alive(pid):
            continue
        try:
            config = TrainConfig.load(config_file)
        except (OSError, ValueError, TypeError):
            continue
        if resolve_device(config.device) == "cpu":
            total += config.threads if config.threads > 0 else cores
    return total


def serving_threads(training_threads: int, default: int, cores: int | None = None) -> int:
    """Torch threads for the app's own inference while training takes ``training_threads`` cores.

    Training and serving on the same cores both crawl, so the app keeps to the cores training
    leaves free, and to one thread when it leaves none.

    Args:
        training_threads: from :func:`cpu_training_threads`.
        default: the app's thread count when nothing trains (torch's default at start-up).
        cores: CPU cores of the machine (default ``os.cpu_count()``).

    Returns:
        ``default`` when nothing trains, else ``max(1, min(default, cores - training_threads))``.
    """
    if training_threads <= 0:
        return default
    cores = cores or os.cpu_count() or 1
    return max(1, min(default, cores - training_threads))


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """All runs under ``runs_dir`` (default :func:`runs_root`), newest first.

    Folders whose ``config.json`` cannot be read are skipped (and logged).
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    if not runs_dir.is_dir():
        return []
    runs = []
    for path in runs_dir.iterdir():
        if not is_run_dir(path):
            continue
        try:
            runs.append(read_run(path))
        except (OSError, ValueError) as err:
            logger.warning("skipping %s: %s", path, err)
    return sorted(runs, key=lambda r: (r.created, r.name), reverse=True)


# ----------------------------------------------------------------------------- starting runs
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
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
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


def weights_summary(folder: str | Path) -> dict:
    """``input_size``, ``in_channels``, ``arch`` and ``encoder`` of a weights folder (from its JSON files).

    Raises:
        ValueError: the files are missing or unreadable.
    """
    from brainviewer.model.preprocessing import Preprocessing

    folder = Path(folder)
    try:
        model_config = json.loads((folder / "config.json").read_text())
        prep = Preprocessing.load(folder) if (folder / "preprocessing.json").is_file() else Preprocessing()
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot read the model description in {folder}: {err}") from err
    return {
        "input_size": prep.input_size,
        "in_channels": prep.in_channels,
        "arch": str(model_config.get("_model_class", "Unet")),
        "encoder": str(model_config.get("encoder_name", "")),
    }


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
    with _flock(runs_dir):
        run_dir = _claim_run_dir(runs_dir, config)
        try:
            config.run_name, config.out_dir = run_dir.name, str(runs_dir)
            config.save(run_dir / CONFIG_FILE)
            split.save(run_dir / SPLIT_FILE)
            _write_json(run_dir / LAUNCH_FILE, {"created": time.time(), "device": device, "launches": []})
            if queue and _device_busy(runs_dir, device, exclude=run_dir.name):
                _write_json(
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
                _spawn_queue_runner(runs_dir)
            else:
                _launch(run_dir, device)
        except BaseException:
            # nothing was launched or queued: remove the folder this call made a moment ago
            if not (run_dir / STATUS_FILE).is_file():
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return read_run(run_dir)


def _device_busy(runs_dir: Path, device: str, exclude: str | None = None) -> bool:
    return any(r.status == RUNNING and r.device == device and r.name != exclude for r in list_runs(runs_dir))


def _child_env(config: TrainConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(config.threads)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _launch(run_dir: Path, device: str | None = None) -> int:
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
    _write_json(run_dir / STATUS_FILE, status)
    command = [sys.executable, "-m", "brainviewer", "train", "--resume", str(run_dir)]
    with (run_dir / STDOUT_FILE).open("ab") as log:
        log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} launch: {' '.join(command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                command,
                cwd=str(PROJECT_ROOT),
                env=_child_env(config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            _write_json(run_dir / STATUS_FILE, {**status, "state": FAILED, "error": f"could not launch: {err}"})
            raise
    proc.run_dir = run_dir  # type: ignore[attr-defined]
    track_child(proc)
    launch = read_json_object(run_dir / LAUNCH_FILE) or {"created": time.time()}
    launch["device"] = device
    launch.setdefault("launches", []).append(
        {"pid": proc.pid, "host": socket.gethostname(), "time": time.time(), "command": command}
    )
    _write_json(run_dir / LAUNCH_FILE, launch)
    current = read_json_object(run_dir / STATUS_FILE)
    if current.get("state") == STARTING and current.get("pid") is None:  # the trainer has not written yet
        _write_json(run_dir / STATUS_FILE, {**current, "pid": proc.pid})
    logger.info("launched %s (pid %d) on %s", run_dir.name, proc.pid, device)
    return proc.pid


def process_queue(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """Start the oldest queued run of every device that has no active run.

    Safe to call from many places at once (page refreshes in several tabs, the queue runner):
    it holds the runs folder's lock, so a queued run is started once.

    Returns:
        The runs it started.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root()
    if not runs_dir.is_dir():
        return []
    started = []
    with _flock(runs_dir):
        runs = list_runs(runs_dir)
        busy = {r.device for r in runs if r.status == RUNNING}
        queued = sorted((r for r in runs if r.status == QUEUED), key=lambda r: (r.queued_at or 0.0, r.name))
        for run in queued:
            if run.device in busy:
                continue
            _launch(run.path, run.device)
            busy.add(run.device)
            started.append(run.path)
    return [read_run(p) for p in started]


def queued_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """Queued runs in the order they will start."""
    return sorted((r for r in list_runs(runs_dir) if r.status == QUEUED), key=lambda r: (r.queued_at or 0.0, r.name))


def _spawn_queue_runner(runs_dir: Path) -> None:
    """Launch the detached queue runner (it exits at once if another one is on duty)."""
    command = [sys.executable, "-m", "brainviewer.runs", "queue-runner", str(runs_dir)]
    with (runs_dir / RUNNER_LOG).open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=str(PROJECT_ROOT),
            env=_child_env(TrainConfig(threads=1)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    track_child(proc)


def run_queue(runs_dir: str | Path, poll_s: float = QUEUE_POLL_S) -> int:
    """The queue runner's loop: start queued runs as devices free up; return once none is queued."""
    runs_dir = Path(runs_dir)
    with (runs_dir / RUNNER_LOCK).open("a") as duty:
        try:
            fcntl.flock(duty, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                return 0  # another runner is on duty
            raise
        while True:
            for run in process_queue(runs_dir):
                logger.info("queue runner started %s", run.name)
            # decide to leave under the runs lock: a run queued after this look spawns a new runner,
            # which gets the duty lock because this one releases it before the runs lock.
            with _flock(runs_dir):
                if not any(r.status == QUEUED for r in list_runs(runs_dir)):
                    fcntl.flock(duty, fcntl.LOCK_UN)
                    return 0
            time.sleep(poll_s)


# ----------------------------------------------------------------------------- controlling runs
def stop_run(run_dir: str | Path, wait_s: float = 5.0) -> RunInfo:
    """Ask a run to stop gracefully: it checkpoints at its next step and writes ``stopped``.

    A running run gets a ``STOP`` file. A run still starting (loading data and model) also gets
    SIGTERM, because the trainer clears an old ``STOP`` file when it (re)starts: before its
    handler is set the process simply ends (nothing was trained; the run is marked
    ``stopped``), after that it stops at its first step. Waits up to ``wait_s`` seconds for a
    starting run. A queued run is taken off the queue (status ``stopped``; resuming queues or
    starts it again).

    Raises:
        RunStateError: the run is not running or queued.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.status == QUEUED:
        with _flock(run_dir.parent):
            status = read_json_object(run_dir / STATUS_FILE)
            if status.get("state") == QUEUED:
                status.update(state=STOPPED, updated=time.time(), note="taken off the queue before it started")
                status.pop("queued_at", None)
                _write_json(run_dir / STATUS_FILE, status)
        return read_run(run_dir)
    if info.status not in (RUNNING, UNKNOWN):
        raise RunStateError(f"run {info.name} is {info.status}, not running; there is nothing to stop.")
    (run_dir / STOP_FILE).touch()
    logger.info("asked %s to stop", info.name)
    if info.is_starting and info.pid is not None and process_alive(info.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and process_alive(info.pid):
            if read_json_object(run_dir / STATUS_FILE).get("state") != STARTING:
                break  # the trainer is up and will stop at its first step
            time.sleep(0.1)
        status = read_json_object(run_dir / STATUS_FILE)
        if not process_alive(info.pid) and status.get("state") == STARTING:
            status.update(state=STOPPED, updated=time.time(), note="stopped before training started")
            _write_json(run_dir / STATUS_FILE, status)
            (run_dir / STOP_FILE).unlink(missing_ok=True)
    return read_run(run_dir)


def kill_run(run_dir: str | Path, timeout: float = 10.0) -> RunInfo:
    """End a stuck run: SIGTERM (the trainer checkpoints and stops at its next step), then SIGKILL
    after ``timeout`` seconds. A run killed by SIGKILL is reported ``dead`` and resumes from its
    last checkpoint.

    Raises:
        RunStateError: the run has no live process on this machine.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.status != RUNNING or info.pid is None:
        raise RunStateError(f"run {info.name} is {info.status}; there is no process of it on this machine to kill.")
    pid = info.pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not process_alive(pid):
            break
        logger.info("sending %s to %s (pid %d)", sig.name, info.name, pid)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.1)
    return read_run(run_dir)


def resume_run(run_dir: str | Path, queue: bool = True, force: bool = False) -> RunInfo:
    """Continue a stopped, failed or dead run from its last checkpoint (``train --resume``), detached.

    Queued like a new run when its device is busy (unless ``queue=False``).

    Args:
        force: also resume a run reported ``unknown`` (written by another machine); only do this
            when you know that machine is no longer training it.

    Raises:
        RunStateError: the run is running, queued or finished.
    """
    run_dir = Path(run_dir).resolve()
    with _flock(run_dir.parent):
        info = read_run(run_dir)
        allowed = RESUMABLE + ((UNKNOWN,) if force else ())
        if info.status not in allowed:
            hint = {
                RUNNING: "it is running",
                QUEUED: "it is queued and starts when its device is free",
                FINISHED: "it has finished; start a new run from its best weights instead",
                EARLY_STOPPED: "it stopped early (no better validation); start a new run from its best weights instead",
                UNKNOWN: "its process cannot be checked from here (another machine wrote its status, or it "
                "has not written one yet); resume it with force=True only if nothing trains it any more",
            }.get(info.status, info.status)
            raise RunStateError(f"cannot resume {info.name}: {hint}.")
        device = resolve_device(info.config.device)
        if queue and _device_busy(run_dir.parent, device, exclude=info.name):
            status = read_json_object(run_dir / STATUS_FILE)
            status.update(state=QUEUED, queued_at=time.time(), device=device, updated=time.time())
            for key in ("pid", "error", "note"):
                status.pop(key, None)
            _write_json(run_dir / STATUS_FILE, status)
            _spawn_queue_runner(run_dir.parent)
        else:
            _launch(run_dir, device)
    return read_run(run_dir)


def delete_run(run_dir: str | Path, confirm_name: str) -> Path:
    """Move a run to ``<runs>/.trash/<name>-<time>`` (nothing is removed; empty .trash by hand).

    Args:
        confirm_name: must equal the run's name exactly (the page asks the user to type it).

    Returns:
        Where the run now is.

    Raises:
        ValueError: ``confirm_name`` differs.
        RunStateError: the run is running (stop it first) or may be running on another machine.
    """
    run_dir = Path(run_dir)
    if confirm_name != run_dir.name:
        raise ValueError(f"type the run name {run_dir.name!r} exactly to delete it.")
    with _flock(run_dir.parent):
        info = read_run(run_dir)
        if info.status in (RUNNING, UNKNOWN):
            raise RunStateError(f"run {info.name} is {info.status}; stop it before deleting it.")
        trash = run_dir.parent / TRASH
        trash.mkdir(exist_ok=True)
        target = trash / f"{run_dir.name}-{datetime.now():%Y%m%d-%H%M%S}"
        n = 1
        while target.exists():
            n += 1
            target = trash / f"{run_dir.name}-{datetime.now():%Y%m%d-%H%M%S}-{n}"
        os.replace(run_dir, target)
    _METRICS_CACHE.pop(run_dir / METRICS_FILE, None)
    logger.info("moved %s to %s", run_dir, target)
    return target


# ----------------------------------------------------------------------------- active weights and promotion
def _complete_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def active_weights(weights_dir: str | Path | None = None) -> str | None:
    """The folder name recorded in ``weights/ACTIVE`` when it names an existing folder, else None.

    This is what :func:`brainviewer.model.weights.default_weights_spec` uses unless ``$BRAINVIEWER_WEIGHTS`` is set.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    try:
        name = (weights_dir / ACTIVE_FILE).read_text().strip()
    except OSError:
        return None
    return name if name and (weights_dir / name).is_dir() else None


def set_active(name: str, weights_dir: str | Path | None = None) -> Path:
    """Record ``weights/<name>`` as the app's model (``ACTIVE`` rewritten atomically); returns that folder.

    Raises:
        ValueError: no complete weights folder of that name.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    folder = weights_dir / validate_name(name, "weights")
    if not _complete_weights(folder):
        raise ValueError(f"{folder} is not a complete weights folder (config.json and model.safetensors).")
    write_atomic(weights_dir / ACTIVE_FILE, name + "\n")
    logger.info("active weights: %s", folder)
    return folder


def _free_folder(parent: Path, name: str) -> Path:
    for n in range(1, 1000):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free folder name like {name} in {parent}")


def promote_run(
    run_dir: str | Path, name: str | None = None, weights_dir: str | Path | None = None, activate: bool = True
) -> Path:
    """Copy a run's ``best/`` weights to ``weights/<name>`` and make them the active model.

    The copy is written under a hidden temporary name and renamed into place; then ``ACTIVE``
    is rewritten through a temporary file and a rename. A failure at any point removes what
    this call made and leaves ``ACTIVE`` and all existing folders as they were. An existing
    folder is never overwritten: ``-2``, ``-3``, ... is added to the name.

    Args:
        run_dir: the run.
        name: folder name under ``weights_dir`` (default: the run's name).
        weights_dir: the weights folder (default :func:`brainviewer.model.weights.weights_root`).
        activate: also record the new folder in ``ACTIVE``.

    Returns:
        The new weights folder.

    Raises:
        ValueError: the run has no complete ``best/`` yet, or the name is not allowed.
    """
    run_dir = Path(run_dir)
    best = run_dir / BEST
    if not _complete_weights(best):
        raise ValueError(f"run {run_dir.name} has no best weights yet; they are saved after its first validation.")
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = validate_name(name or run_dir.name, "weights")
    with _flock(weights_dir):
        target = _free_folder(weights_dir, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.promote-", dir=weights_dir))
        try:
            for _attempt in range(3):  # the run may replace best/ while we copy: copy again
                inode = best.stat().st_ino
                shutil.copytree(best, tmp, dirs_exist_ok=True)
                if best.stat().st_ino == inode:
                    break
                shutil.rmtree(tmp)
                tmp.mkdir()
            info = read_json_object(run_dir / STATUS_FILE)
            provenance = {
                "run": run_dir.name,
                "run_dir": str(run_dir.resolve()),
                "promoted": time.time(),
                "run_state": info.get("state"),
                "base_weights": read_json_object(run_dir / CONFIG_FILE).get("init_weights") or "from scratch",
            }
            (tmp / "promotion.json").write_text(json.dumps(provenance, indent=2) + "\n")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if activate:
            try:
                set_active(target.name, weights_dir)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)  # made by this call a moment ago
                raise
    logger.info("promoted %s to %s", run_dir.name, target)
    return target


# ----------------------------------------------------------------------------- choosing and comparing
def base_weight_choices(runs_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> dict[str, str]:
    """Weights a run can start from: label -> folder path.

    The app's current default model first, then every complete folder under ``weights/``,
    then the ``best/`` of every run that has one.
    """
    from brainviewer.model.weights import default_weights_spec

    choices: dict[str, str] = {}
    default = Path(default_weights_spec())
    if _complete_weights(default):
        choices[f"current model ({default.name})"] = str(default.resolve())
    for folder in list_local_weights(Path(weights_dir) if weights_dir is not None else None):
        choices.setdefault(f"weights/{folder.name}", str(folder.resolve()))
    for run in list_runs(runs_dir):
        if run.has_best:
            choices.setdefault(f"run {run.name} (best)", str(run.best_dir.resolve()))
    return choices


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s``; ``n/a`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def compare_runs(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """One row per run: status, base weights, dataset, best validation Dice, epochs, duration, settings.

    ``best Dice`` is the best validation mean per-patient Dice during training (at the threshold the
    run trains with); ``final Dice`` is that of the best weights at the threshold chosen when it finished.
    """
    import pandas as pd

    rows = []
    for run in runs:
        done = min(run.epoch, run.config.epochs)
        rows.append(
            {
                "run": run.name,
                "status": run.status,
                "base": Path(run.base_weights).name if run.config.init_weights else run.base_weights,
                "dataset": run.dataset,
                "best Dice": run.best_dice,
                "best epoch": None if run.best_epoch is None else run.best_epoch + 1,
                "final Dice": run.final_dice,
                "epochs": f"{done}/{run.config.epochs}",
                "steps": run.global_step,
                "duration": format_duration(run.duration_s),
                "duration_s": round(run.duration_s, 1),
                "lr": run.config.lr,
                "batch": run.config.batch_size,
                "loss": run.config.loss,
                "input": run.config.input_size,
                "crop": run.config.crop_size,
                "created": datetime.fromtimestamp(run.created).strftime("%Y-%m-%d %H:%M"),
            }
        )
    columns = [
        "run",
        "status",
        "base",
        "dataset",
        "best Dice",
        "best epoch",
        "final Dice",
        "epochs",
        "steps",
        "duration",
        "duration_s",
        "lr",
        "batch",
        "loss",
        "input",
        "crop",
        "created",
    ]
    return pd.DataFrame(rows, columns=columns)


def validation_records(run_dir: str | Path, n: int = 3):
    """Up to ``n`` validation slices of a run, for sample predictions.

    The middle slice of each validation patient (where tumours usually are), then evenly
    spaced other validation slices.

    Returns:
        ``(dataset, records)``: the run's dataset and the chosen :class:`~brainviewer.data.datasets.SliceRecord` s.
    """
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import Split

    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir / CONFIG_FILE)
    dataset = open_dataset(config.data).subset(Split.load(run_dir / SPLIT_FILE).val)
    chosen = []
    for records in dataset.patients.values():
        middle = records[len(records) // 2]
        chosen.append(middle)
        if len(chosen) >= n:
            break
    if len(chosen) < n:
        extra = [r for r in dataset.records if r not in chosen]
        step = max(1, len(extra) // max(1, n - len(chosen)))
        chosen.extend(extra[::step][: n - len(chosen)])
    return dataset, chosen


# ----------------------------------------------------------------------------- queue runner entry point
def main(argv: list[str] | None = None) -> int:
    """``python -m brainviewer.runs queue-runner RUNS_DIR``: start queued runs until none is left."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m brainviewer.runs")
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("queue-runner", help="start queued runs as their devices free up; exit when none is left")
    runner.add_argument("runs_dir")
    runner.add_argument("--poll", type=float, default=QUEUE_POLL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_queue(args.runs_dir, args.poll)
