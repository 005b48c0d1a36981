"""Weight averaging ("model soup") launched from the fine-tuning page, in its own process.

``python -m brainviewer average`` takes minutes on a CPU when it chooses the threshold on
validation data, so the page never runs it in its script thread: :func:`start_average`
launches it detached (like a training run) and records the job in
``runs/.averages/<name>.json`` with its log beside it; :func:`list_averages` reads the jobs
back, so every tab and a restarted app see the same ones. The result is an ordinary weights
folder ``weights/<name>``, written atomically by :func:`brainviewer.training.average.write_average`,
which the page can then make the app's model.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brainviewer.files import read_json_object, write_atomic
from brainviewer.model.weights import PROJECT_ROOT, weights_root
from brainviewer.runs.folders import MODEL_CONFIG_FILE, complete_weights, runs_root, validate_name
from brainviewer.runs.layout import AVERAGES_DIR, DONE, FAILED, RUNNING
from brainviewer.runs.logs import tail_log
from brainviewer.runs.process import child_env, process_alive, track_child

logger = logging.getLogger(__name__)


@dataclass
class AverageJob:
    """One averaging job as read from disk.

    Attributes:
        name: the weights folder name it writes.
        out: ``weights/<name>``.
        sources: the averaged weights folders.
        data: dataset the threshold is chosen on, or None (the first source's settings are kept).
        status: ``running``, ``done`` or ``failed``.
        started: Unix time of the launch.
        log: the job's log file (stdout and stderr of the process).
        summary: ``validation.json`` of the result when it was chosen on data, else None.
        error: for a failed job, the last line of its log.
    """

    name: str
    out: Path
    sources: list[str]
    data: str | None
    status: str
    started: float
    log: Path
    summary: dict | None = None
    error: str = ""


def jobs_dir(runs_dir: str | Path | None = None) -> Path:
    """``<runs folder>/.averages``."""
    return (Path(runs_dir) if runs_dir is not None else runs_root()) / AVERAGES_DIR


def average_command(sources: Sequence[str | Path], out: Path, data: str | None) -> list[str]:
    """The ``python -m brainviewer average`` command line for a job."""
    command = [sys.executable, "-m", "brainviewer", "average", *map(str, sources), "--out", str(out)]
    if data:
        command += ["--data", str(data)]
    return command


def _check_sources(sources: Sequence[str | Path]) -> list[Path]:
    folders = [Path(s) for s in sources]
    if len(folders) < 2:
        raise ValueError(f"choose at least two runs to average, got {len(folders)}")
    if len({f.resolve() for f in folders}) != len(folders):
        raise ValueError("the same weights are chosen twice: choose different runs")
    configs = []
    for folder in folders:
        if not complete_weights(folder):
            raise ValueError(f"{folder} is not a complete weights folder (config.json and model.safetensors)")
        configs.append(read_json_object(folder / MODEL_CONFIG_FILE))
    for folder, config in zip(folders[1:], configs[1:], strict=True):
        if config != configs[0]:
            raise ValueError(
                f"{folder} is another architecture than {folders[0]} (config.json differs): "
                "average only runs fine-tuned from one model"
            )
    return folders


def start_average(
    sources: Sequence[str | Path],
    name: str,
    data: str | None = None,
    runs_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    threads: int = 1,
) -> AverageJob:
    """Launch ``python -m brainviewer average SOURCES --out weights/<name> [--data DATA]`` detached.

    Args:
        sources: two or more weights folders of one architecture (e.g. runs' ``best/``).
        name: the new weights folder's name; it must not exist yet (nothing is overwritten).
        data: a dataset holding the sources' common validation patients, to choose the
            threshold and post-processing on; None keeps the first source's.
        runs_dir: where the job record goes (default :func:`brainviewer.runs.runs_root`).
        weights_dir: where the result goes (default :func:`brainviewer.model.weights.weights_root`).
        threads: torch CPU threads of the job (0: torch's default).

    Raises:
        ValueError: fewer than two or incompatible sources, a bad or taken name, or a job of
            that name still running.
    """
    folders = _check_sources(sources)
    name = validate_name(name, "weights")
    out = (Path(weights_dir) if weights_dir is not None else weights_root()) / name
    if out.exists():
        raise ValueError(f"{out} already exists: choose another name (nothing is overwritten)")
    folder = jobs_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / f"{name}.json"
    previous = read_job(record_path)
    if previous is not None and previous.status == RUNNING:
        raise ValueError(f"an average named {name} is already running")
    command = average_command(folders, out, data)
    log = folder / f"{name}.log"
    with log.open("wb") as handle:
        handle.write(f"$ {' '.join(command)}\n".encode())
        handle.flush()
        proc = subprocess.Popen(
            command,
            cwd=str(PROJECT_ROOT),
            env=child_env(threads),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    track_child(proc)
    record = {
        "name": name,
        "out": str(out),
        "sources": [str(f) for f in folders],
        "data": data or None,
        "pid": proc.pid,
        "started": time.time(),
        "command": command,
    }
    write_atomic(record_path, json.dumps(record, indent=2) + "\n")
    logger.info("averaging %d models into %s (pid %d)", len(folders), out, proc.pid)
    job = read_job(record_path)
    assert job is not None
    return job


def read_job(record_path: str | Path) -> AverageJob | None:
    """The job recorded at ``record_path``, or None when there is no readable record."""
    record_path = Path(record_path)
    record = read_json_object(record_path)
    if not record.get("name") or not record.get("out"):
        return None
    out = Path(record["out"])
    log = record_path.with_suffix(".log")
    summary = None
    error = ""
    if process_alive(record.get("pid")):
        status = RUNNING
    elif complete_weights(out):
        status = DONE
        summary = read_json_object(out / "validation.json") or None
    else:
        status = FAILED
        lines = [line for line in tail_log(record_path.parent, 5, log.name) if line.strip()]
        error = lines[-1] if lines else "the process ended without writing the weights"
    return AverageJob(
        name=record["name"],
        out=out,
        sources=list(record.get("sources", [])),
        data=record.get("data"),
        status=status,
        started=float(record.get("started", 0.0)),
        log=log,
        summary=summary,
        error=error,
    )


def list_averages(runs_dir: str | Path | None = None) -> list[AverageJob]:
    """Every recorded averaging job, newest first."""
    folder = jobs_dir(runs_dir)
    if not folder.is_dir():
        return []
    jobs = [job for path in folder.glob("*.json") if (job := read_job(path)) is not None]
    return sorted(jobs, key=lambda job: job.started, reverse=True)


def default_data(sources: Sequence[str | Path]) -> str:
    """The dataset all ``sources`` were trained on (their ``train_config.json``), or ``""``."""
    datasets = {read_json_object(Path(s) / "train_config.json").get("data") or "" for s in sources}
    return datasets.pop() if len(datasets) == 1 else ""
