"""What a training process leaves in its run folder besides its status: ``metrics.jsonl`` and the logs.

Reading the metrics records (cached by file size and time, so every page refresh does not
parse them again), the last lines of ``train.log`` / ``stdout.log``, and the seconds a run
has spent training.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from brainviewer.runs.layout import LOG_FILE, METRICS_FILE, STDOUT_FILE

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


def forget_records(run_dir: Path) -> None:
    """Drop the cached records of ``run_dir`` (the run folder moved away)."""
    _METRICS_CACHE.pop(run_dir / METRICS_FILE, None)


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


def training_duration(records: list[dict], running: bool) -> float:
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
