"""The queue: one run per device, queued runs started as their devices free up.

A run started while another run is active on the same device (``cpu``, ``cuda:0``, ...) is
written as ``queued``. :func:`process_queue` starts the oldest queued run of each free
device; the page calls it on every refresh, and starting or resuming a queued run also
spawns a tiny detached *queue runner* (``python -m brainviewer.runs queue-runner RUNS``,
:func:`main`) that calls it every few seconds and exits once the queue is empty, so a
queued run starts when the active one ends even when no page is open.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import time
from pathlib import Path

from brainviewer.runs.folders import flock, runs_root
from brainviewer.runs.launch import launch_training
from brainviewer.runs.layout import QUEUE_POLL_S, QUEUED, RUNNER_LOCK, RUNNING
from brainviewer.runs.read import RunInfo, list_runs, read_run

logger = logging.getLogger(__name__)


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
    with flock(runs_dir):
        runs = list_runs(runs_dir)
        busy = {r.device for r in runs if r.status == RUNNING}
        queued = sorted((r for r in runs if r.status == QUEUED), key=lambda r: (r.queued_at or 0.0, r.name))
        for run in queued:
            if run.device in busy:
                continue
            launch_training(run.path, run.device)
            busy.add(run.device)
            started.append(run.path)
    return [read_run(p) for p in started]


def queued_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """Queued runs in the order they will start."""
    return sorted((r for r in list_runs(runs_dir) if r.status == QUEUED), key=lambda r: (r.queued_at or 0.0, r.name))


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
            with flock(runs_dir):
                if not any(r.status == QUEUED for r in list_runs(runs_dir)):
                    fcntl.flock(duty, fcntl.LOCK_UN)
                    return 0
            time.sleep(poll_s)


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
