"""Comparing runs: a table of runs side by side, durations, validation slices for sample predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from brainviewer.runs.layout import CONFIG_FILE, SPLIT_FILE
from brainviewer.training.config import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

    from brainviewer.runs.read import RunInfo


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

    The slice with the largest ground-truth tumour of each validation patient (the middle slice of a patient
    without one or whose masks cannot be read), then evenly spaced other validation slices.

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
        chosen.append(records[dataset.largest_truth_index(records[0].patient_id)])
        if len(chosen) >= n:
            break
    if len(chosen) < n:
        extra = [r for r in dataset.records if r not in chosen]
        step = max(1, len(extra) // max(1, n - len(chosen)))
        chosen.extend(extra[::step][: n - len(chosen)])
    return dataset, chosen

