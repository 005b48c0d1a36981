"""Controlling runs: stop, kill, resume and delete them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from brainviewer.files import read_json_object
from brainviewer.runs.folders import flock, write_json
from brainviewer.runs.launch import device_busy, launch_training
from brainviewer.runs.layout import (
    EARLY_STOPPED,
    FINISHED,
    QUEUED,
    RESUMABLE,
    RUNNING,
    STARTING,
    STATUS_FILE,
    STOP_FILE,
    STOPPED,
    TRASH,
    UNKNOWN,
)
from brainviewer.runs.logs import forget_records
from brainviewer.runs.process import process_alive, resolve_device, spawn_queue_runner
from brainviewer.runs.read import RunInfo, read_run

logger = logging.getLogger(__name__)


class RunStateError(ValueError):
    """The run is in a state that does not allow the action (the message says what does)."""


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
        with flock(run_dir.parent):
            status = read_json_object(run_dir / STATUS_FILE)
            if status.get("state") == QUEUED:
                status.update(state=STOPPED, updated=time.time(), note="taken off the queue before it started")
                status.pop("queued_at", None)
                write_json(run_dir / STATUS_FILE, status)
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
            write_json(run_dir / STATUS_FILE, status)
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
    with flock(run_dir.parent):
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
        if queue and device_busy(run_dir.parent, device, exclude=info.name):
            status = read_json_object(run_dir / STATUS_FILE)
            status.update(state=QUEUED, queued_at=time.time(), device=device, updated=time.time())
            for key in ("pid", "error", "note"):
                status.pop(key, None)
            write_json(run_dir / STATUS_FILE, status)
            spawn_queue_runner(run_dir.parent)
        else:
            launch_training(run_dir, device)
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
    with flock(run_dir.parent):
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
    forget_records(run_dir)
    logger.info("moved %s to %s", run_dir, target)
    return target
