"""The one place that names the files of a run folder, the runs folder and the weights folder,
and the statuses a run can have. Everything that writes or reads a run imports them from here.

A run folder (``runs/<name>/``)::

    config.json     the TrainConfig of the run (written first; a run is resumed from it)
    split.json      the patient split (train / val)
    status.json     what the training process last wrote (state, epoch, step, pid, host)
    metrics.jsonl   one JSON record per logged step, validation and event
    train.log       the training log
    last.pt         the last checkpoint (model, optimiser, RunState), written atomically
    best/           the best weights so far, a complete weights folder
    STOP            present: the trainer stops at the next step and checkpoints
    launch.json     created time, device, and every launch (pid, host, time, command)
    stdout.log      stdout and stderr of the training process (appended at each launch)

The runs folder also holds ``.queue-runner.lock`` / ``.queue-runner.log`` (the queue runner),
``.trash/`` (deleted runs) and ``.averages/`` (weight-averaging jobs).
"""

from __future__ import annotations

#: Environment variable naming the folder that holds runs (default: ``runs/`` of the project).
RUNS_ENV = "BRAINVIEWER_RUNS_DIR"
#: The file in the weights folder naming the active model (read by brainviewer.model.weights).
ACTIVE_FILE = "ACTIVE"
#: The file a promoted weights folder gets: which run it came from, when, and from what base.
PROMOTION_FILE = "promotion.json"

# Run-folder file names (the trainer, the app and the queue all use these).
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CHECKPOINT = "last.pt"
BEST = "best"
STOP_FILE = "STOP"
LAUNCH_FILE = "launch.json"
STDOUT_FILE = "stdout.log"
TRASH = ".trash"
RUNNER_LOCK = ".queue-runner.lock"
RUNNER_LOG = ".queue-runner.log"

# Statuses a RunInfo reports.
RUNNING = "running"
QUEUED = "queued"
STOPPED = "stopped"
FINISHED = "finished"
EARLY_STOPPED = "early_stopped"
FAILED = "failed"
DEAD = "dead"
UNKNOWN = "unknown"
STATUSES = (RUNNING, QUEUED, STOPPED, FINISHED, EARLY_STOPPED, FAILED, DEAD, UNKNOWN)
#: Runs that can be continued from their last checkpoint.
RESUMABLE = (STOPPED, FAILED, DEAD)
#: status.json state written by this module between launch and the trainer's first status.
STARTING = "starting"
#: A "starting" status with no process recorded is considered dead after this many seconds.
LAUNCH_GRACE_S = 60.0
#: Seconds between two looks at the queue by the queue runner.
QUEUE_POLL_S = 3.0
#: Folder under the runs folder holding one ``<name>.json`` record and ``<name>.log`` per averaging job.
AVERAGES_DIR = ".averages"
#: Status of a finished averaging job (a running or failed one uses RUNNING / FAILED).
DONE = "done"
