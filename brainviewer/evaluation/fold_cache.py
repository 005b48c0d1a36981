"""A scored cross-validation fold, saved so that a later ``cv-evaluate`` need not predict it again.

Scoring a fold means predicting every slice of its validation patients (twice with ``--single-slice``): minutes
per fold on a CPU. Folds finish one at a time over hours, so ``cv-evaluate --out DIR`` keeps each fold's result
in ``DIR/folds/<fold>.json`` and reuses it when nothing it depends on changed: the weights folder's files (a run
whose best weights improved is scored again), the dataset, the patients scored, ``--single-slice`` and
:data:`FORMAT`, which changes whenever the scoring does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainviewer.evaluation.evaluate import EvaluationReport, PatientResult
from brainviewer.evaluation.single_slice import PatientSlices

if TYPE_CHECKING:
    from brainviewer.data.split import Split
    from brainviewer.evaluation.crossval import FoldResult

logger = logging.getLogger(__name__)

FOLDS_DIR = "folds"
"""Sub-folder of the report folder that holds one scored fold per file."""
FORMAT = 1
"""Version of the scoring and of this file's layout; a saved fold of another version is scored again."""
_IGNORED = {"README.md"}  # the model card does not change a prediction


def weights_fingerprint(weights: Path) -> str:
    """SHA-256 over the names and bytes of the files directly in ``weights`` (all but the model card)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in weights.iterdir() if p.is_file() and p.name not in _IGNORED):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(weights: Path, dataset_root: Path, patients: list[str], single_slice: bool) -> dict:
    """What a scored fold depends on; a saved fold is reused only when its key is equal."""
    return {
        "format": FORMAT,
        "weights": weights_fingerprint(weights),
        "dataset": str(Path(dataset_root).resolve()),
        "patients": sorted(patients),
        "single_slice": single_slice,
    }


def cache_path(folds_dir: Path, fold_name: str) -> Path:
    """``folds_dir/<fold>.json``, the fold's path made into one safe file name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(fold_name).resolve()).strip("/"))
    return folds_dir / f"{stem[-150:]}.json"


def save_fold(path: Path, key: dict, result: FoldResult) -> None:
    """Write ``result`` (its report, gate and single-slice records) with ``key`` to ``path``."""
    document = {
        "key": key,
        "report": asdict(result.report),
        "gate": result.gate,
        "gate_max_fp": result.gate_max_fp,
        "slices": None
        if result.slices is None
        else {pid: {f.name: getattr(s, f.name).tolist() for f in fields(s)} for pid, s in result.slices.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document) + "\n")
    partial.replace(path)


def load_fold(path: Path, key: dict, name: str, weights: Path, split: Split) -> FoldResult | None:
    """The fold ``name`` (``weights``, ``split``) as saved in ``path``, when it was scored under ``key``.

    Returns:
        ``None`` when there is no such file, it is unreadable or its key differs (the fold must be scored).
    """
    from brainviewer.evaluation.crossval import FoldResult

    try:
        document = json.loads(path.read_text())
        if document.get("key") != key:
            return None
        report = dict(document["report"])
        report["patients"] = [PatientResult(**p) for p in report["patients"]]
        slices = document["slices"]
        return FoldResult(
            name,
            weights,
            split,
            EvaluationReport(**report),
            gate=document["gate"],
            gate_max_fp=float(document["gate_max_fp"]),
            slices=None
            if slices is None
            else {
                pid: PatientSlices(**{name: np.asarray(values) for name, values in record.items()})
                for pid, record in slices.items()
            },
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        if path.exists():
            logger.warning("%s could not be reused (%s); scoring the fold again", path, error)
        return None
