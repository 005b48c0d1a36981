"""Cross-validation: pool the held-out patients of several fold runs into one score.

Train one run per fold (``python -m brainviewer train --cv-folds K --cv-fold k`` for k = 0 .. K-1,
same ``--seed`` / ``--split-mode``), then ``python -m brainviewer cv-evaluate DATASET RUN...`` scores
each fold's best weights on that fold's own validation patients, with the post-processing those
weights chose, and pools the patients: every patient is scored by a model that never trained on it,
and the mean per-volume Dice covers the whole dataset rather than one validation set (Buda et al.
2019 report their 0.82 this way).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainviewer.data.datasets import Dataset
from brainviewer.data.split import SPLIT_FILE, Split
from brainviewer.evaluation.evaluate import (
    REPORT_PATIENT_COLUMNS,
    EvaluationReport,
    PatientResult,
    evaluate_probs,
    patient_csv_cells,
    score_summaries,
)
from brainviewer.evaluation.fold_cache import FOLDS_DIR, cache_key, cache_path, load_fold, save_fold
from brainviewer.evaluation.groups import NO_GROUP
from brainviewer.evaluation.single_slice import (
    DEFAULT_MAX_FP,
    PatientSlices,
    leave_one_patient_out,
    patient_slices,
    score_thresholds,
)
from brainviewer.model.gate import GATE_FILE
from brainviewer.model.inference import predict_volume_probs

if TYPE_CHECKING:
    from brainviewer.model.segmenter import Segmenter

logger = logging.getLogger(__name__)

BEST_DIR = "best"
WORST_PATIENTS = 5
LOW_DICE = 0.30


@dataclass
class FoldResult:
    """One fold: where its weights came from, its split and its report on its validation patients."""

    name: str
    weights: Path
    split: Split
    report: EvaluationReport
    slices: dict[str, PatientSlices] | None = None
    """Each validation patient's slices predicted alone (``single_slice``), else ``None``."""
    gate: float | None = None
    """The weights' ``tumour_gate`` (``None``: no gate)."""
    gate_max_fp: float = DEFAULT_MAX_FP
    """The false-positive rate the weights' gate was chosen for (``tumour_gate.json``)."""


def fold_weights(path: str | Path) -> tuple[Path, Split]:
    """The weights folder and split of one fold.

    Args:
        path: a run folder (its ``best/`` weights are used) or a weights folder; either holds the
            ``split.json`` the fold was trained with.

    Raises:
        FileNotFoundError: no such folder, no ``best/`` weights yet, or no ``split.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; give a run folder or a weights folder")
    weights = path / BEST_DIR if (path / BEST_DIR).is_dir() else path
    if not (weights / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no weights (no {weights / 'config.json'}); a run has them once it validated an epoch"
        )
    for candidate in (weights / SPLIT_FILE, path / SPLIT_FILE):
        if candidate.is_file():
            return weights, Split.load(candidate)
    raise FileNotFoundError(f"{path} has no {SPLIT_FILE}: its validation patients are unknown")


def check_folds(splits: Sequence[Split], names: Sequence[str]) -> None:
    """Raise ``ValueError`` when two folds hold out the same patient (the pooled score would count it twice)."""
    seen: dict[str, str] = {}
    for split, name in zip(splits, names, strict=True):
        for patient in split.val:
            if patient in seen:
                raise ValueError(
                    f"patient {patient} is held out by both {seen[patient]} and {name}: the folds overlap. Train "
                    "every fold with the same --seed, --split-mode and --cv-folds and a different --cv-fold."
                )
            seen[patient] = name


def evaluate_folds(
    dataset: Dataset,
    folds: Sequence[str | Path],
    load_segmenter: Callable[[Path], Segmenter],
    batch_size: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
    single_slice: bool = False,
    cache_dir: str | Path | None = None,
    device_type: str = "cpu",
) -> list[FoldResult]:
    """Score each fold's weights on its own validation patients, with the weights' own post-processing.

    Args:
        dataset: the dataset the folds were trained on; every slice needs ground truth.
        folds: run or weights folders (see :func:`fold_weights`).
        load_segmenter: loads a weights folder (e.g. ``Segmenter.from_folder``).
        batch_size: slices per forward pass.
        progress: called with ``(fold name, patients done, patients total)``.
        single_slice: also predict every slice alone (no 3-D step, no patient-level rescaling, as the Review page
            does) for the false-positive rate on tumour-free slices with and without the weights' gate.
        cache_dir: where each scored fold is saved and, when its weights, patients' files, options, device kind
            and scoring code are unchanged, reused from (:mod:`~brainviewer.evaluation.fold_cache`); ``None``:
            always score.
        device_type: ``"cpu"`` or ``"cuda"``, the kind of device ``load_segmenter`` puts the models on (part of a
            saved fold's key: CUDA predicts under bf16 autocast).

    Raises:
        ValueError: overlapping folds, or a fold none of whose validation patients are in ``dataset``.
    """
    located = [(str(f), *fold_weights(f)) for f in folds]
    check_folds([split for _, _, split in located], [name for name, _, _ in located])
    results = []
    for name, weights, split in located:
        subset = dataset.subset(split.val)
        if not len(subset):
            raise ValueError(f"none of the validation patients of {name} are in this dataset; is it the right one?")
        missing = len(split.val) - len(subset.patient_ids)
        if missing:
            logger.warning("%s: %d of its %d validation patients are not in the dataset", name, missing, len(split.val))
        inherited = set(split.base_train)
        seen = [patient for patient in split.val if patient in inherited]
        if seen:
            logger.warning(
                "%s: %d of its %d validation patients were trained on by its base model (%s): its score flatters it",
                name,
                len(seen),
                len(split.val),
                ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else ""),
            )
        key = cache_key(weights, subset, single_slice, device_type) if cache_dir else None
        saved = cache_path(Path(cache_dir), name) if cache_dir else None
        result = load_fold(saved, key, name, weights, split) if saved and key else None
        if result is not None:
            logger.info("%s: reusing its scores from %s", name, saved)
        else:
            segmenter = load_segmenter(weights)
            result = _score_fold(name, weights, split, subset, segmenter, batch_size, progress, single_slice)
            if saved and key:
                save_fold(saved, key, result)
        results.append(result)
    return results


def _score_fold(
    name: str,
    weights: Path,
    split: Split,
    subset: Dataset,
    segmenter: Segmenter,
    batch_size: int,
    progress: Callable[[str, int, int], None] | None,
    single_slice: bool,
) -> FoldResult:
    """Score one fold by predicting ``subset``, its validation patients (with ``single_slice``, each slice alone
    too)."""
    prep = segmenter.prep
    setting = (prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest)
    report = evaluate_probs(
        subset,
        lambda scans, s=segmenter: predict_volume_probs(s, scans, batch_size),
        [setting],
        (lambda d, t: progress(name, d, t)) if progress else None,
    )[0]
    report.tta_flip = prep.tta_flip
    result = FoldResult(name, weights, split, report, gate=prep.tumour_gate)
    if (weights / GATE_FILE).is_file():
        result.gate_max_fp = float(json.loads((weights / GATE_FILE).read_text())["max_fp"])
    if single_slice:  # patient by patient, to report progress
        result.slices = {}
        for done, patient in enumerate(subset.patient_ids, 1):
            result.slices |= patient_slices(segmenter, subset, [patient], batch_size, need_head=False)
            if progress:
                progress(f"{name} (each slice alone)", done, len(subset.patient_ids))
    return result


def single_slice_summary(results: Sequence[FoldResult]) -> dict | None:
    """The folds' patients' slices, each predicted alone: the share of tumour-free slices that show a predicted
    pixel without a gate, with each fold's own gate (chosen on the same patients, so flattering), and with the
    gate chosen leave-one-patient-out within each fold (each patient gated at the threshold chosen, for the
    fold's ``gate_max_fp``, on the fold's other patients: the honest figure). Each as
    :func:`~brainviewer.evaluation.single_slice.score_gate`; ``None`` unless every fold has ``slices``."""
    if not results or any(r.slices is None for r in results):
        return None
    patients = {pid: s for r in results for pid, s in r.slices.items()}  # type: ignore[union-attr]
    own = {pid: r.gate for r in results for pid in r.slices}  # type: ignore[union-attr]
    honest: dict[str, float | None] = {}
    for r in results:
        if r.gate is None:  # a model without a gate (or one that needed none) shows every slice
            honest.update(dict.fromkeys(r.slices, None))  # type: ignore[union-attr]
        else:
            chosen = leave_one_patient_out(r.slices, r.gate_max_fp)["thresholds"]  # type: ignore[arg-type]
            honest.update(zip(r.slices, chosen, strict=True))  # type: ignore[arg-type]
    return {
        "gates": {r.name: r.gate for r in results},
        "ungated": score_thresholds(patients, dict.fromkeys(patients, None)),
        "gated_own_threshold": score_thresholds(patients, own),
        "gated_leave_one_patient_out": score_thresholds(patients, honest),
    }


def _true_positives(patient: PatientResult) -> int:
    """Voxels both predicted and true, recovered from the patient's Dice and voxel counts."""
    return round(patient.volume_dice * (patient.truth_voxels + patient.pred_voxels) / 2)


def pooled_summary(
    results: Sequence[FoldResult], dataset_patients: int | None = None, group_of: dict[str, str] | None = None
) -> dict:
    """Scores over the patients of all folds together, plus each fold's own (and, given ``group_of``, each
    group's: patient id -> group, e.g. the tumour type of :func:`~brainviewer.evaluation.groups.read_groups`).

    Returns:
        ``{"pooled": {...}, "scores": {...}, "folds": [{"fold", "weights", "summary"}, ...]}``. ``pooled`` has
        ``cv_folds`` (the folds the splits were cut into), ``patients``, ``mean_volume_dice``,
        ``median_volume_dice``, ``std_volume_dice``, ``micro_dice``
        (all voxels of all patients), ``fp_rate_empty_slices`` (tumour-free slices with a predicted pixel after
        the 3-D step, whole patients as ``evaluate`` predicts them), ``patients_below_0.30``,
        ``worst_patients`` (the lowest five: patient, fold, Dice), ``fold_mean_dice_mean`` /
        ``fold_mean_dice_std`` (the spread of the folds' means) and, given ``dataset_patients``,
        ``coverage`` (the share of the dataset's patients scored). ``seen_by_base`` counts the scored
        patients their fold's base model was trained on (fine-tuned folds; their scores flatter them).
        ``scores`` is :func:`~brainviewer.evaluation.evaluate.score_summaries` over the patients of all
        folds: mean ± SD, median [IQR] and bootstrap 95% interval of Dice, sensitivity, precision, volume
        similarity, HD95 and surface Dice, with ``distance_unit`` and ``surface_dice_tolerance``. With
        ``group_of``, ``groups`` maps each group (patients the mapping lacks under ``"(no group)"``) to the
        same ``scores`` over its pooled patients, so each group's mean has its own bootstrap interval. When the
        folds were scored with ``single_slice``, ``single_slice`` is :func:`single_slice_summary`.
    """
    patients = [p for r in results for p in r.report.patients]
    dice = np.array([p.volume_dice for p in patients], dtype=np.float64)
    tp = sum(_true_positives(p) for p in patients)
    both = sum(p.truth_voxels + p.pred_voxels for p in patients)
    fp_slices = sum(r.report.fp_slices for r in results)
    empty = sum(r.report.empty_slices for r in results)
    fold_means = np.array([r.report.mean_dice for r in results], dtype=np.float64)
    pooled = {
        "folds": len(results),
        "cv_folds": max((r.split.folds or 0 for r in results), default=0),
        "patients": len(patients),
        "slices": sum(p.n_slices for p in patients),
        "mean_volume_dice": float(dice.mean()) if len(dice) else None,
        "median_volume_dice": float(np.median(dice)) if len(dice) else None,
        "std_volume_dice": float(dice.std()) if len(dice) else None,
        "micro_dice": 2.0 * tp / both if both else 1.0,
        "fp_rate_empty_slices": fp_slices / empty if empty else None,
        "fp_slices": fp_slices,
        "empty_slices": empty,
        "fold_mean_dice_mean": float(fold_means.mean()) if len(fold_means) else None,
        "fold_mean_dice_std": float(fold_means.std()) if len(fold_means) else None,
        "seen_by_base": sum(len({p.patient_id for p in r.report.patients} & set(r.split.base_train)) for r in results),
        f"patients_below_{LOW_DICE:.2f}": int((dice < LOW_DICE).sum()),
        "worst_patients": [
            {"patient": p.patient_id, "fold": name, "volume_dice": p.volume_dice}
            for name, p in sorted(
                ((r.name, p) for r in results for p in r.report.patients), key=lambda item: item[1].volume_dice
            )[:WORST_PATIENTS]
        ],
    }
    tolerances = {r.report.surface_tolerance for r in results if r.report.surface_tolerance is not None}
    if dataset_patients:
        pooled["coverage"] = len(patients) / dataset_patients
    tolerance = tolerances.pop() if len(tolerances) == 1 else None
    summary = {
        "pooled": pooled,
        "scores": score_summaries(patients, tolerance),
        "folds": [{"fold": r.name, "weights": str(r.weights), "summary": r.report.summary()} for r in results],
    }
    alone = single_slice_summary(results)
    if alone is not None:
        summary["single_slice"] = alone
    if group_of:
        members: dict[str, list[PatientResult]] = {}
        for patient in patients:
            members.setdefault(group_of.get(patient.patient_id, NO_GROUP), []).append(patient)
        summary["groups"] = {
            name: {"patients": len(group), "scores": score_summaries(group, tolerance)}
            for name, group in sorted(members.items())
        }
    return summary


def pooled_patients_csv(results: Sequence[FoldResult]) -> str:
    """One CSV row per patient of every fold: ``fold``, then
    :data:`~brainviewer.evaluation.evaluate.REPORT_PATIENT_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("fold", *REPORT_PATIENT_COLUMNS))
    for result in results:
        for patient in result.report.patients:
            writer.writerow([result.name, *patient_csv_cells(patient)])
    return out.getvalue()


def _dice_row(name: str, n: int, scores: dict, bold: bool = False) -> str:
    dice = scores["per_patient_scores"]["volume_dice"]
    mean = f"{dice['mean']:.3f}"
    interval = f" ({dice['ci_low']:.3f}-{dice['ci_high']:.3f})" if dice.get("ci_low") is not None else ""
    return f"| {name} | {n} | {'**' + mean + '**' if bold else mean}{interval} | {dice['median']:.3f} |"


def cv_markdown(summary: dict, per: str = "patients") -> str:
    """The pooled figures of :func:`pooled_summary` as a model card section (markdown): mean Dice with its
    bootstrap 95% interval and median, overall and per group; the folds' means; the worst patients; the
    false-positive rates on tumour-free slices after the 3-D step and, with ``single_slice``, of a slice alone.
    ``per``: what one scored unit is (``images`` for figshare)."""
    pooled = summary["pooled"]
    n, folds, of = pooled["patients"], pooled["folds"], pooled.get("cv_folds") or pooled["folds"]
    title = f"{of}-fold cross-validation" + (f" ({folds} of its {of} folds)" if folds != of else "")
    lines = [
        f"| {title}, {n} {per} | {per} | mean Dice per {per[:-1]} (bootstrap 95% CI) | median |",
        "|---|---|---|---|",
        _dice_row("all", n, summary["scores"], bold=True),
    ]
    for name, group in (summary.get("groups") or {}).items():
        lines.append(_dice_row(name, group["patients"], group["scores"]))
    means = [f["summary"]["mean_volume_dice"] for f in summary["folds"]]
    worst = ", ".join(f"{w['patient']} {w['volume_dice']:.2f}" for w in pooled.get("worst_patients", []))
    lines += [
        "",
        f"Fold means {' / '.join(f'{m:.3f}' for m in means)} (SD {pooled['fold_mean_dice_std']:.3f}). "
        f"{pooled.get(f'patients_below_{LOW_DICE:.2f}', 0)} of {n} {per} score below {LOW_DICE:.2f}; the worst: "
        f"{worst}.",
    ]
    if pooled.get("fp_rate_empty_slices") is not None:
        lines += [
            "",
            f"Tumour-free slices with a predicted pixel, whole {per} with the 3-D step: "
            f"{pooled['fp_rate_empty_slices']:.1%} ({pooled['fp_slices']} of {pooled['empty_slices']}).",
        ]
    alone = summary.get("single_slice")
    if alone:
        lines += [
            "",
            "| each slice predicted alone | tumour-free slices with a predicted pixel | tumour slices shown |",
            "|---|---|---|",
        ]
        for key, label in (
            ("ungated", "no gate"),
            ("gated_own_threshold", "each fold's gate (chosen on these patients)"),
            ("gated_leave_one_patient_out", "gate chosen leave-one-patient-out"),
        ):
            f = alone[key]
            lines.append(
                f"| {label} | {f['fp_rate']:.1%} ({f['fp']} of {f['tumour_free_slices']}) | "
                f"{f['tumour_slices_shown']} of {f['tumour_slices']} |"
            )
    return "\n".join(lines) + "\n"


def report_paths(out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """The report files of :func:`write_cv_report` in ``out_dir``, by kind (``json``, ``csv``, ``markdown``).

    Raises:
        FileExistsError: one exists and ``overwrite`` is false (call before scoring, to fail early).
    """
    out_dir = Path(out_dir)
    paths = {
        "json": out_dir / "cv_evaluation.json",
        "csv": out_dir / "cv_per_patient.csv",
        "markdown": out_dir / "cv_summary.md",
    }
    clash = [str(p) for p in paths.values() if p.exists()]
    if clash and not overwrite:
        raise FileExistsError(
            f"{', '.join(clash)} already exist; choose another --out or pass --overwrite (folds already scored in "
            f"{out_dir / FOLDS_DIR} are reused)."
        )
    return paths


def write_cv_report(
    results: Sequence[FoldResult],
    out_dir: str | Path,
    dataset_patients: int | None = None,
    overwrite: bool = False,
    group_of: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``cv_evaluation.json`` (:func:`pooled_summary` and every patient), ``cv_per_patient.csv`` and
    ``cv_summary.md`` (:func:`cv_markdown`, for a model card).

    Raises:
        FileExistsError: a report file exists and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    paths = report_paths(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = pooled_summary(results, dataset_patients, group_of)
    document["patients"] = [{"fold": r.name, **asdict(p)} for r in results for p in r.report.patients]
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    paths["csv"].write_text(pooled_patients_csv(results))
    per = "images" if all(p.n_slices == 1 for r in results for p in r.report.patients) else "patients"
    paths["markdown"].write_text(cv_markdown(document, per))
    return paths
