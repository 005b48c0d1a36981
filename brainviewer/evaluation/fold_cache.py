"""A scored cross-validation fold, saved so that a later ``cv-evaluate`` need not predict it again.

Scoring a fold means predicting every slice of its validation patients (twice with ``--single-slice``): minutes
per fold on a CPU. Folds finish one at a time over hours, so ``cv-evaluate --out DIR`` keeps each fold's result
in ``DIR/folds/<fold>.json`` and reuses it only when nothing it depends on changed (:func:`cache_key`): the
weights folder's files (a run whose best weights improved is scored again), the scored patients' files, the
options, the device kind (CUDA predicts in bf16) and the source of the code that scores (any change to it scores
every fold again).
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

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.evaluate import EvaluationReport, PatientResult
from brainviewer.evaluation.single_slice import PatientSlices
from brainviewer.files import write_atomic

if TYPE_CHECKING:
    from brainviewer.data.split import Split
    from brainviewer.evaluation.crossval import FoldResult

logger = logging.getLogger(__name__)

FOLDS_DIR = "folds"
"""Sub-folder of the report folder that holds one scored fold per file."""
FORMAT = 1
"""Version of this file's layout; a saved fold of another version is scored again."""
_IGNORED = {"README.md"}  # the model card does not change a prediction
_SCORING_MODULES = (
    "brainviewer.evaluation.crossval",
    "brainviewer.evaluation.evaluate",
    "brainviewer.evaluation.metrics",
    "brainviewer.evaluation.single_slice",
    "brainviewer.evaluation.surface",
    "brainviewer.model.inference",
    "brainviewer.model.postprocess",
    "brainviewer.model.preprocessing",
    "brainviewer.model.segmenter",
    "brainviewer.data.datasets",
    "brainviewer.data.io",
)
"""The modules whose source a saved fold's key holds: reading, predicting, post-processing and scoring."""


def _sha256_of_files(paths: list[Path], names: list[str]) -> str:
    digest = hashlib.sha256()
    for path, name in zip(paths, names, strict=True):
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def scoring_code_fingerprint() -> str:
    """SHA-256 of the source of :data:`_SCORING_MODULES`."""
    import importlib

    paths = [Path(importlib.import_module(m).__file__ or "") for m in _SCORING_MODULES]
    return _sha256_of_files(paths, list(_SCORING_MODULES))


def weights_fingerprint(weights: Path) -> str:
    """SHA-256 over the names and bytes of the files directly in ``weights`` (all but the model card)."""
    paths = sorted(p for p in weights.iterdir() if p.is_file() and p.name not in _IGNORED)
    return _sha256_of_files(paths, [p.name for p in paths])


def dataset_fingerprint(subset: Dataset) -> str:
    """SHA-256 over the scored slices' patients, file names and bytes: a corrected mask or a replaced scan scores
    the fold again, while the same files copied or touched elsewhere (a fresh checkout of the data, with new
    modification times) do not. It reads each file once: about 40 MB, well under a second, for an LGG fold."""
    digest = hashlib.sha256()
    for record in subset.records:
        for path in (record.image_path, record.mask_path):
            if path is None:
                digest.update(b"-\0")
                continue
            digest.update(f"{record.patient_id}\0{Path(path).name}\0".encode())
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def cache_key(weights: Path, subset: Dataset, single_slice: bool, device_type: str) -> dict:
    """What a scored fold depends on; a saved fold is reused only when its key is equal.

    Args:
        weights: the fold's weights folder.
        subset: the fold's validation patients, as scored.
        single_slice: whether each slice is also predicted alone.
        device_type: ``"cpu"`` or ``"cuda"`` (which predicts under bf16 autocast).
    """
    return {
        "format": FORMAT,
        "code": scoring_code_fingerprint(),
        "weights": weights_fingerprint(weights),
        "dataset": str(Path(subset.root).resolve()),
        "patients": sorted(subset.patient_ids),
        "files": dataset_fingerprint(subset),
        "single_slice": single_slice,
        "device": device_type,
    }


def cache_path(folds_dir: Path, fold_name: str) -> Path:
    """``folds_dir/<fold>-<hash>.json``: the fold's path made into a readable file name, with a hash of the
    whole resolved path so that two folds never share a file."""
    resolved = str(Path(fold_name).resolve())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.strip("/"))[-120:]
    return folds_dir / f"{stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:12]}.json"


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(document) + "\n")
    except OSError as error:  # the scores are still reported; only their reuse is lost
        logger.warning("could not save %s's scores to %s (%s): it is scored again next time", result.name, path, error)


def load_fold(path: Path, key: dict, name: str, weights: Path, split: Split) -> FoldResult | None:
    """The fold ``name`` (``weights``, ``split``) as saved in ``path``, when it was scored under ``key``.

    Returns:
        ``None`` when there is no such file, it is unreadable or its key differs (the fold must be scored).
    """
    from brainviewer.evaluation.crossval import FoldResult

    try:
        document = json.loads(path.read_text())
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        saved = document.get("key") or {}
        if saved != key:
            changed = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
            logger.info("%s: scoring it again (changed since %s was saved: %s)", name, path, ", ".join(changed))
            return None
        report = dict(document["report"])
        if set(report) != {f.name for f in fields(EvaluationReport)} or any(
            set(p) != {f.name for f in fields(PatientResult)} for p in report["patients"]
        ):
            raise ValueError("its fields are not those of this version")
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
                pid: PatientSlices(**{field: np.asarray(values) for field, values in record.items()})
                for pid, record in slices.items()
            },
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        if path.exists():
            logger.warning("%s could not be reused (%s); scoring the fold again", path, error)
        return None
