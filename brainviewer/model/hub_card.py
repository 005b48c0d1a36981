"""The Hugging Face Hub metadata of a model card: the YAML front matter of ``weights/<name>/README.md``.

The Hub reads the block between the first two ``---`` lines of a model repo's ``README.md``
(https://huggingface.co/docs/hub/model-cards). brainviewer writes, through ``huggingface_hub``'s
:class:`~huggingface_hub.ModelCardData` (which also checks it):

* ``pipeline_tag: image-segmentation``, ``library_name: segmentation-models-pytorch`` (the folder loads with
  ``segmentation_models_pytorch.from_pretrained``), ``license``, ``tags``;
* ``datasets``: short names of the datasets the weights were trained on (with a base model's, for a
  fine-tuned one). They are not Hub dataset ids: none of these datasets is on the Hub; the card's
  *Data* section links their sources;
* ``metrics`` and a ``model-index`` with the results the folder records, nothing else:
  ``cv_evaluation.json`` (pooled cross-validation folds) where the folder holds one, else
  ``evaluation/evaluation.json`` (``python -m brainviewer evaluate ... --out THIS_FOLDER/evaluation``, the
  shipped preprocessing on the held-out patients of ``split.json``), else ``validation.json`` (the
  figures at training time). Each result names its split (cross-validation, or which held-out patients)
  and carries, in the metric's name, the 95% bootstrap interval of the mean where the file has one.

:func:`folder_card_data` reads those files; :func:`with_front_matter` puts the YAML on a card, replacing
the front matter it had and keeping the rest of the card as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainviewer.model.hub import EVALUATION_SUBDIR as EVALUATION_DIR  # pushed and downloaded with the weights

logger = logging.getLogger(__name__)

LIBRARY_NAME = "segmentation-models-pytorch"
PIPELINE_TAG = "image-segmentation"
LICENSE = "mit"
TAGS = ["medical-imaging", "brain-mri", "tumour-segmentation", "brainviewer", "unet", "pytorch"]
TASK_NAME = "Brain tumour segmentation"
#: Dataset folder names -> (short name for ``datasets``, name for people).
KNOWN_DATASETS: dict[str, tuple[str, str]] = {
    "lgg": ("lgg-mri-segmentation", "LGG MRI Segmentation (Buda et al. 2019, TCGA-LGG, kaggle_3m)"),
    "kaggle_3m": ("lgg-mri-segmentation", "LGG MRI Segmentation (Buda et al. 2019, TCGA-LGG, kaggle_3m)"),
    "figshare": ("figshare-brain-tumor", "figshare brain tumour dataset (Cheng et al. 2015, T1-weighted CE)"),
}
#: Per-patient scores of an evaluation file -> (metric type, what it is for people).
SCORE_METRICS: dict[str, tuple[str, str]] = {
    "volume_dice": ("dice", "Dice"),
    "hd95": ("hd95", "HD95"),
    "surface_dice": ("surface_dice", "surface Dice"),
    "sensitivity": ("sensitivity", "sensitivity"),
    "precision": ("precision", "precision"),
    "volume_similarity": ("volume_similarity", "volume similarity"),
}
EVALUATION_FILE = "evaluation.json"
CV_EVALUATION_FILE = "cv_evaluation.json"
CV_DIR = "cross_validation"
"""Where a weights folder keeps its recipe's cross-validation (``cv-evaluate ... --out FOLDER/cross_validation``)."""


@dataclass
class CardRecords:
    """What a weights folder records about its training and results (each ``None`` / empty when absent)."""

    name: str
    dataset_path: str | None = None
    base_datasets: list[str] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    validation: dict | None = None
    evaluation: dict | None = None
    cv_evaluation: dict | None = None


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        logger.warning("%s is not readable JSON (%s); left out of the card's metadata", path, err)
        return None
    return data if isinstance(data, dict) else None


def dataset_short_name(path: str | None) -> str | None:
    """The ``datasets`` entry of a dataset folder (``/data/lgg`` -> ``lgg-mri-segmentation``), or ``None``."""
    if not path:
        return None
    name = Path(path).name
    return KNOWN_DATASETS.get(name, (name, name))[0]


def dataset_pretty_name(path: str | None) -> str:
    """A dataset folder's name for people (the folder name when it is not one of :data:`KNOWN_DATASETS`)."""
    if not path:
        return "unknown dataset"
    name = Path(path).name
    return KNOWN_DATASETS.get(name, (name, name))[1]


def folder_records(folder: str | Path, weights_root: Path | None = None, _depth: int = 0) -> CardRecords:
    """Read a weights folder's records: its training data (``train_config.json`` or ``average.json``), its base
    model's data (a folder of the same name under ``weights_root``), ``split.json`` and its result files."""
    folder = Path(folder)
    train = _read_json(folder / "train_config.json")
    average = _read_json(folder / "average.json")
    if train is None and average and average.get("sources"):
        train = (average["sources"][0] or {}).get("train_config")
    train = train or {}
    base_datasets: list[str] = []
    init = train.get("init_weights")
    if init and weights_root is not None and _depth < 3:
        base = weights_root / Path(init).name
        if base.is_dir() and base.resolve() != folder.resolve():
            records = folder_records(base, weights_root, _depth + 1)
            base_datasets = [d for d in [dataset_short_name(records.dataset_path), *records.base_datasets] if d]
    return CardRecords(
        name=folder.name,
        dataset_path=train.get("data"),
        base_datasets=base_datasets,
        split=_read_json(folder / "split.json") or {},
        validation=_read_json(folder / "validation.json"),
        evaluation=_read_json(folder / EVALUATION_DIR / EVALUATION_FILE),
        cv_evaluation=_read_json(folder / CV_EVALUATION_FILE)
        or _read_json(folder / CV_DIR / CV_EVALUATION_FILE)
        or _read_json(folder / EVALUATION_DIR / CV_EVALUATION_FILE),
    )


def _noun(n: object, plural: str) -> str:
    """``plural`` for ``n`` things (``patients`` -> ``patient`` for 1)."""
    return plural[:-1] if n == 1 and plural.endswith("s") else plural


def split_text(split: dict, per: str = "patients") -> str:
    """The held-out patients of a ``split.json``, in words (``13 held-out patients (random split by patient,
    seed 42; split.json)``); ``per``: what a patient is in this dataset (``images`` for figshare)."""
    n_val = len(split.get("val", []))
    if not split:
        return f"held-out {per} (split not recorded)"
    how = f"{split.get('mode', 'random')} split by patient, seed {split.get('seed', '?')}"
    if split.get("folds"):
        how = f"fold {int(split.get('fold', 0)) + 1} of {split['folds']} of a cross-validation, {how}"
    return f"{n_val} held-out {_noun(n_val, per)} ({how}; split.json)"


def _interval(summary: dict, digits: int = 3) -> str:
    low, high = summary.get("ci_low"), summary.get("ci_high")
    return f"; 95% bootstrap CI {low:.{digits}f}-{high:.{digits}f}" if low is not None and high is not None else ""


def _score_results(scores: dict, n: int, where: str) -> list[tuple[str, float, str]]:
    """``(metric type, value, name)`` of each per-patient score summary of an evaluation's ``scores``."""
    out = []
    unit = scores.get("distance_unit") or ""
    tolerance = scores.get("surface_dice_tolerance")
    for key, (metric, label) in SCORE_METRICS.items():
        summary = (scores.get("per_patient_scores") or {}).get(key)
        if not summary or summary.get("mean") is None:
            continue
        digits = 2 if key == "hd95" else 3
        text = f"{label}, mean of {n} {_noun(n, where)}"
        if key == "hd95" and unit:
            text += f", {unit}"
        if key == "surface_dice" and tolerance is not None:
            text += f", tolerance {tolerance:g} {unit}".rstrip()
        text += f" (median {summary['median']:.{digits}f}{_interval(summary, digits)})"
        out.append((metric, round(float(summary["mean"]), 4), text))
    return out


def _false_positive_results(cv: dict) -> list[tuple[str, float, str]]:
    """The share of tumour-free slices that show a predicted pixel, after the 3-D step and, where ``cv-evaluate
    --single-slice`` measured it, each slice predicted alone with the gate chosen leave-one-patient-out."""
    out = []
    pooled = cv.get("pooled", {})
    if pooled.get("fp_rate_empty_slices") is not None:
        text = (
            f"false-positive rate on tumour-free slices, whole patients with the 3-D step "
            f"({pooled['fp_slices']} of {pooled['empty_slices']})"
        )
        out.append(("false_positive_rate", round(float(pooled["fp_rate_empty_slices"]), 4), text))
    alone = (cv.get("single_slice") or {}).get("gated_leave_one_patient_out")
    if alone and alone.get("tumour_free_slices"):
        text = (
            f"false-positive rate on tumour-free slices, each predicted alone, tumour-present gate chosen "
            f"leave-one-patient-out ({alone['fp']} of {alone['tumour_free_slices']})"
        )
        out.append(("false_positive_rate", round(float(alone["fp_rate"]), 4), text))
    return out


def results(records: CardRecords) -> tuple[str, list[tuple[str, float, str]]]:
    """The split and ``(metric type, value, name)`` results of the best record a folder holds (see module docstring)."""
    per = "patients" if Path(records.dataset_path or "").name != "figshare" else "images"
    if records.cv_evaluation and records.cv_evaluation.get("scores"):
        pooled = records.cv_evaluation.get("pooled", {})
        n = pooled.get("patients", "?")
        split = f"cross-validation: {n} {_noun(n, per)} of {pooled.get('folds', '?')} folds pooled"
        out = _score_results(records.cv_evaluation["scores"], pooled.get("patients", 0), per)
        return split, out + _false_positive_results(records.cv_evaluation)
    if records.evaluation and records.evaluation.get("scores"):
        n = (records.evaluation.get("summary") or {}).get("patients") or len(records.split.get("val", []))
        return split_text(records.split, per), _score_results(records.evaluation["scores"], n, per)
    if records.validation and records.validation.get("mean_volume_dice") is not None:
        v = records.validation
        n = v.get("patients", "?")
        of = f"of {n} {_noun(n, per)} (at training time)"
        out = [("dice", round(float(v["mean_volume_dice"]), 4), f"Dice, mean {of}")]
        if v.get("median_volume_dice") is not None:
            out.append(("dice", round(float(v["median_volume_dice"]), 4), f"Dice, median {of}"))
        return split_text(records.split, per), out
    return split_text(records.split, per), []


def card_data(records: CardRecords) -> Any:
    """The :class:`huggingface_hub.ModelCardData` of a weights folder's records."""
    from huggingface_hub import EvalResult, ModelCardData

    datasets = [d for d in [dataset_short_name(records.dataset_path), *records.base_datasets] if d]
    datasets = list(dict.fromkeys(datasets))
    split, found = results(records)
    dataset_type = dataset_short_name(records.dataset_path) or "unknown"
    evals = [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name=TASK_NAME,
            dataset_type=dataset_type,
            dataset_name=dataset_pretty_name(records.dataset_path),
            dataset_split=split,
            metric_type=metric,
            metric_value=value,
            metric_name=name,
        )
        for metric, value, name in found
    ]
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=LICENSE,
        tags=list(TAGS),
        datasets=datasets or None,
        metrics=list(dict.fromkeys(metric for metric, _, _ in found)) or None,
        model_name=records.name if evals else None,
        eval_results=evals or None,
    )


def folder_card_data(folder: str | Path, weights_root: Path | None = None) -> Any:
    """:func:`card_data` of the records in ``folder`` (base models looked up under ``weights_root``,
    default the folder's parent)."""
    folder = Path(folder)
    return card_data(folder_records(folder, weights_root or folder.parent))


def front_matter_lines(data: Any) -> list[str]:
    """The ``---`` fenced YAML lines of a :class:`~huggingface_hub.ModelCardData`."""
    return ["---", *data.to_yaml().splitlines(), "---"]


def split_front_matter(card: str) -> tuple[str, str]:
    """``(yaml, body)`` of a card: the text between the opening ``---`` and the closing one, and the rest
    (``("", card)`` when the card has no front matter)."""
    lines = card.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return "", card
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise ValueError("The card opens a '---' front matter block that is never closed; add the closing '---' line.")


def with_front_matter(card: str, data: Any) -> str:
    """``card`` with its front matter replaced by (or, without one, opened with) ``data``'s YAML."""
    _old, body = split_front_matter(card)
    return "\n".join(front_matter_lines(data)) + "\n" + body


def refresh_card(folder: str | Path, weights_root: Path | None = None) -> tuple[str, str]:
    """``(old, new)`` text of ``folder/README.md`` with its front matter generated from the folder's records
    (the body is kept as it is; a folder without a card gets a title line)."""
    path = Path(folder) / "README.md"
    old = path.read_text() if path.is_file() else f"# brainviewer model: {Path(folder).name}\n"
    return old, with_front_matter(old, folder_card_data(folder, weights_root))


def check_card(card: str) -> Any:
    """Parse a card's front matter with ``huggingface_hub`` (as the Hub would) and return its ``ModelCardData``.

    Raises:
        ValueError: the front matter is missing, not YAML, or lacks the Hub fields brainviewer writes.
    """
    from huggingface_hub import ModelCard

    try:
        parsed = ModelCard(card, ignore_metadata_errors=False)
    except Exception as err:  # huggingface_hub raises ValueError or yaml errors
        raise ValueError(f"The model card's front matter does not parse: {err}. Regenerate it.") from err
    data = parsed.data
    missing = [k for k in ("pipeline_tag", "library_name", "license", "tags") if not getattr(data, k, None)]
    if missing:
        raise ValueError(f"The model card's front matter lacks {', '.join(missing)}; regenerate it.")
    return data


def missing_fields(data: Any, required: Sequence[str] = ("datasets", "metrics", "eval_results")) -> list[str]:
    """The Hub fields of ``data`` that are empty (a folder without records has no results to report)."""
    return [k for k in required if not getattr(data, k, None)]
