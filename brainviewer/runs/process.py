"""Processes of runs: devices, liveness, the children this process launched, and CPU thread sharing.

A run's process is looked up from its ``status.json`` (else its last launch in
``launch.json``); :func:`process_alive` tells whether it still lives. Processes launched
from here (training runs, the queue runner, averaging jobs) are tracked so they are reaped
when they end; a training process that exits with an error before its first status is
marked ``failed``. :func:`cpu_training_threads` and :func:`serving_threads` let the app
keep to the CPU cores that training leaves free.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from brainviewer.files import read_json_object
from brainviewer.model.weights import PROJECT_ROOT
from brainviewer.runs.folders import runs_root, write_json
from brainviewer.runs.layout import (
    CONFIG_FILE,
    FAILED,
    LAUNCH_FILE,
    RUNNER_LOG,
    RUNNING,
    STARTING,
    STATUS_FILE,
    STDOUT_FILE,
    UNKNOWN,
)
from brainviewer.runs.logs import tail_log
from brainviewer.training.config import TrainConfig

#: Processes launched by this process, kept so they are reaped (no zombies) and their exit seen.
_CHILDREN: dict[int, subprocess.Popen] = {}
_REAP_LOCK = threading.Lock()


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
    """Remember a process this process launched and reap it the moment it ends: a daemon thread waits on it,
    so a finished run leaves no zombie under the server even when no page asks about it again (a finished
    run's status is read from its folder, never from its process, so the polling below would not reach it)."""
    _CHILDREN[proc.pid] = proc
    threading.Thread(target=_wait_for, args=(proc,), name=f"reap-{proc.pid}", daemon=True).start()


def _wait_for(proc: subprocess.Popen) -> None:
    try:
        proc.wait()
    except Exception:  # pragma: no cover - never let a reaper thread raise
        return
    _reap_children()


def _reap_children() -> None:
    """Collect exit codes of processes this process launched; mark runs that died while starting as failed."""
    with _REAP_LOCK:
        for pid, proc in list(_CHILDREN.items()):
            code = proc.poll()
            if code is None:
                continue
            _CHILDREN.pop(pid, None)
            run_dir = getattr(proc, "run_dir", None)
            if run_dir is None or code <= 0:
                continue  # success, or killed by a signal: status.json (or 'dead') tells the story
            status = read_json_object(run_dir / STATUS_FILE)
            if status.get("state") == STARTING and status.get("pid") == pid:
                last = tail_log(run_dir, 1, STDOUT_FILE)
                error = f"the training process exited with code {code}" + (f": {last[-1]}" if last else "")
                write_json(run_dir / STATUS_FILE, {**status, "state": FAILED, "error": error, "updated": time.time()})


def process_fields(status: dict, launches: list[dict]) -> tuple[str, str | None, int | None]:
    """``(state, host, pid)`` of a run from its ``status.json``, else its last launch.

    No ``status.json`` yet: ``starting`` when we launched it, else ``unknown``.
    """
    state = str(status.get("state") or (STARTING if launches else UNKNOWN))
    host = status.get("host") or (launches[-1].get("host") if launches else None)
    pid = status.get("pid") or (launches[-1].get("pid") if launches else None)
    return state, host, int(pid) if isinstance(pid, (int, float)) else None


def child_env(threads: int) -> dict[str, str]:
    """The environment of a detached process: ``threads`` CPU threads (0: torch's default), the project importable."""
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn_queue_runner(runs_dir: Path) -> None:
    """Launch the detached queue runner (it exits at once if another one is on duty)."""
    command = [sys.executable, "-m", "brainviewer.runs", "queue-runner", str(runs_dir)]
    with (runs_dir / RUNNER_LOG).open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=str(PROJECT_ROOT),
            env=child_env(1),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    track_child(proc)


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
        state, host, pid = process_fields(read_json_object(run_dir / STATUS_FILE), launches)
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
