"""Training runs on disk: read, start, queue, stop, resume, delete, compare and promote them.

No Streamlit here: the fine-tuning page (``pages/finetune.py``) is a thin view of these
functions. Every fact comes from the run folders (layout in :mod:`brainviewer.runs.layout`), never
from a browser session, so several tabs, a restarted Streamlit server and the command line
all see the same runs.

Training never happens in the web process: :func:`start_run` launches
``python -m brainviewer train --resume <run>`` as a detached process (see
:mod:`brainviewer.runs.launch`). On a folder without ``last.pt`` ``--resume`` starts from step 0
with the saved split, exactly as a fresh ``train --config`` run would (the only difference: its
first event in ``metrics.jsonl`` is called ``resumed``).

**One run per device.** A run started while another run is active on the same device is
queued, and started once that device is free (see :mod:`brainviewer.runs.queue`). Starting,
queueing, resuming and deleting runs hold an ``flock`` on the runs folder, so two tabs never
start the same queued run twice.

**Status.** ``status.json`` says what the training process last wrote. A run it says is
``running`` whose process is gone (killed, machine rebooted) is reported ``dead``; dead,
stopped and failed runs can be resumed from their last checkpoint. A run written by another
machine (``host`` differs) cannot be checked from here and is reported ``unknown``.

**Promotion.** :func:`promote_run` copies a run's ``best/`` weights to ``weights/<name>``
and records that folder in ``weights/ACTIVE``, atomically (see :mod:`brainviewer.runs.promote`).

Modules: ``layout`` (every file name and status), ``folders`` (the runs folder, its lock, names),
``logs`` (metrics and logs), ``process`` (processes, devices, CPU threads), ``read`` (:class:`RunInfo`),
``launch`` (starting runs), ``control`` (stop, kill, resume, delete), ``queue`` (the queue and its
runner), ``promote`` (the active weights), ``compare`` (comparing runs), ``averages`` (weight-averaging
jobs, imported on its own). This package re-exports the public names of all but ``averages``.
"""

from __future__ import annotations

from brainviewer.runs.compare import compare_runs, format_duration, validation_records
from brainviewer.runs.control import RunStateError, delete_run, kill_run, resume_run, stop_run
from brainviewer.runs.folders import runs_root, validate_name
from brainviewer.runs.launch import default_run_name, prepare_config, start_run
from brainviewer.runs.layout import (
    ACTIVE_FILE,
    BEST,
    CHECKPOINT,
    CONFIG_FILE,
    DEAD,
    EARLY_STOPPED,
    FAILED,
    FINISHED,
    LAUNCH_FILE,
    LAUNCH_GRACE_S,
    LOG_FILE,
    METRICS_FILE,
    QUEUE_POLL_S,
    QUEUED,
    RESUMABLE,
    RUNNER_LOCK,
    RUNNER_LOG,
    RUNNING,
    RUNS_ENV,
    SPLIT_FILE,
    STARTING,
    STATUS_FILE,
    STATUSES,
    STDOUT_FILE,
    STOP_FILE,
    STOPPED,
    TRASH,
    UNKNOWN,
)
from brainviewer.runs.logs import read_metrics, read_records, tail_log
from brainviewer.runs.process import (
    cpu_training_threads,
    process_alive,
    resolve_device,
    serving_threads,
    track_child,
)
from brainviewer.runs.promote import (
    active_weights,
    base_weight_choices,
    promote_run,
    set_active,
    weights_summary,
)
from brainviewer.runs.queue import main, process_queue, queued_runs, run_queue
from brainviewer.runs.read import RunInfo, is_run_dir, list_runs, read_run

__all__ = [
    "ACTIVE_FILE",
    "BEST",
    "CHECKPOINT",
    "CONFIG_FILE",
    "DEAD",
    "EARLY_STOPPED",
    "FAILED",
    "FINISHED",
    "LAUNCH_FILE",
    "LAUNCH_GRACE_S",
    "LOG_FILE",
    "METRICS_FILE",
    "QUEUED",
    "QUEUE_POLL_S",
    "RESUMABLE",
    "RUNNER_LOCK",
    "RUNNER_LOG",
    "RUNNING",
    "RUNS_ENV",
    "SPLIT_FILE",
    "STARTING",
    "STATUSES",
    "STATUS_FILE",
    "STDOUT_FILE",
    "STOPPED",
    "STOP_FILE",
    "TRASH",
    "UNKNOWN",
    "RunInfo",
    "RunStateError",
    "active_weights",
    "base_weight_choices",
    "compare_runs",
    "cpu_training_threads",
    "default_run_name",
    "delete_run",
    "format_duration",
    "is_run_dir",
    "kill_run",
    "list_runs",
    "main",
    "prepare_config",
    "process_alive",
    "process_queue",
    "promote_run",
    "queued_runs",
    "read_metrics",
    "read_records",
    "read_run",
    "resolve_device",
    "resume_run",
    "run_queue",
    "runs_root",
    "serving_threads",
    "set_active",
    "start_run",
    "stop_run",
    "tail_log",
    "track_child",
    "validate_name",
    "validation_records",
    "weights_summary",
]
