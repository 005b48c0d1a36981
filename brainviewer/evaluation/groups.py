"""Patient groups (e.g. tumour type) read from a CSV, and per-group figures of an evaluation."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from brainviewer.evaluation.evaluate import PatientResult


GROUP_ID_COLUMNS = ("patient_id", "patient", "file")
"""Columns of a groups CSV that can name the patient (the first one present is used)."""
GROUP_COLUMNS = ("label_name", "group", "label")
"""Columns of a groups CSV that can name the group (the first one present is used)."""
NO_GROUP = "(no group)"


def read_groups(path: str | Path) -> dict[str, str]:
    """Patient id -> group from a CSV such as figshare's ``labels.csv`` (``file,label,label_name``).

    The patient column is the first of :data:`GROUP_ID_COLUMNS` present, the group column the first
    of :data:`GROUP_COLUMNS`. A ``file`` value counts by its stem (``12.png`` is patient ``12``, as
    in image/mask folder datasets).

    Raises:
        ValueError: unreadable file, or no patient or group column.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read groups from {path}: {err}") from None
    columns = list(rows[0]) if rows else []
    id_column = next((c for c in GROUP_ID_COLUMNS if c in columns), None)
    group_column = next((c for c in GROUP_COLUMNS if c in columns), None)
    if id_column is None or group_column is None:
        raise ValueError(
            f"{path} needs a patient column ({' or '.join(GROUP_ID_COLUMNS)}) and a group column "
            f"({' or '.join(GROUP_COLUMNS)}); it has {columns or 'no rows'}"
        )
    groups = {}
    for row in rows:
        patient = (row[id_column] or "").strip()
        if id_column == "file":
            patient = Path(patient).stem
        if patient:
            groups[patient] = (row[group_column] or "").strip() or NO_GROUP
    return groups


def group_summaries(patients: Sequence[PatientResult], group_of: dict[str, str]) -> dict[str, dict]:
    """Per group (sorted by name; patients the mapping lacks under ``"(no group)"``): the number of
    patients and their mean and median volume Dice."""
    dice: dict[str, list[float]] = {}
    for patient in patients:
        dice.setdefault(group_of.get(patient.patient_id, NO_GROUP), []).append(patient.volume_dice)
    return {
        name: {
            "patients": len(values),
            "mean_volume_dice": float(np.mean(values)),
            "median_volume_dice": float(np.median(values)),
        }
        for name, values in sorted(dice.items())
    }
