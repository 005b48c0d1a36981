"""A dataset evaluation, slice by slice: per-patient report, per-slice scores, slice-level detection.

No Streamlit here. The Evaluation page evaluates (and caches) patient by patient and merges the parts::

    parts = [evaluate_dataset(dataset.subset([pid]), probs_fn, threshold=0.5) for pid in dataset.patient_ids]
    result = merge_evaluations(parts)
    curve = result.detection()                     # precision / recall of finding tumour slices
    rows = worst_patient_rows(result.worst_patients(10))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.evaluate import NO_GROUP, EvaluationReport, PatientResult, ProbsFn, evaluate_probs


@dataclass(frozen=True)
class SliceScore:
    """One slice of a dataset evaluation.

    Attributes:
        patient_id: its patient.
        slice: 1-based position within the patient.
        name: the slice's file name.
        truth_area_px: ground-truth tumour pixels.
        pred_area_px: predicted tumour pixels (after threshold and post-processing).
        dice: Dice of the slice (1.0 when both masks are empty).
        max_prob: the slice's highest tumour probability (slice-level detection score).
    """

    patient_id: str
    slice: int
    name: str
    truth_area_px: int
    pred_area_px: int
    dice: float
    max_prob: float


@dataclass
class DatasetEvaluation:
    """A dataset evaluation: the per-patient report and the per-slice scores behind it."""

    report: EvaluationReport
    slices: list[SliceScore]

    def slice_rows(self) -> list[dict]:
        return [asdict(s) for s in self.slices]

    def worst_patients(self, n: int = 10) -> list[PatientResult]:
        """The ``n`` patients with the lowest volume Dice (lowest first)."""
        return sorted(self.report.patients, key=lambda p: (p.volume_dice, p.patient_id))[:n]

    def worst_slices(self, n: int = 10) -> list[SliceScore]:
        """The ``n`` slices with the lowest Dice among those with tumour by truth or prediction
        (ties: larger tumour first)."""
        scored = [s for s in self.slices if s.truth_area_px or s.pred_area_px]
        return sorted(scored, key=lambda s: (s.dice, -(s.truth_area_px + s.pred_area_px)))[:n]

    def detection(self, thresholds: Sequence[float] | None = None) -> list[dict]:
        """Slice-level tumour detection curve (see :func:`detection_curve`)."""
        return detection_curve(
            [s.max_prob for s in self.slices], [s.truth_area_px > 0 for s in self.slices], thresholds
        )


def evaluate_dataset(
    dataset: Dataset,
    probs_fn: ProbsFn,
    threshold: float = 0.5,
    min_component_px: int = 0,
    keep_largest: bool = False,
    volume_keep_largest: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetEvaluation:
    """:func:`brainviewer.evaluation.evaluate.evaluate_probs` for one setting, keeping per-slice scores too.

    Args:
        dataset: slices with ground truth, grouped by patient.
        probs_fn: maps a patient's list of scans to their ``(H, W)`` float32 probabilities
            (e.g. ``lambda scans: segmenter.predict_probs_batch(scans, 16)``).
        threshold, min_component_px, keep_largest: the prediction's cut and per-slice post-processing.
        volume_keep_largest: keep only the largest 3-D component of each patient's prediction.
        progress: called with ``(patients done, patients total)``.

    Returns:
        :class:`DatasetEvaluation` (the report, and one :class:`SliceScore` per slice).
    """
    setting = (threshold, min_component_px, keep_largest, volume_keep_largest)
    report = evaluate_probs(dataset, probs_fn, [setting], progress)[0]
    slices = [
        SliceScore(
            patient_id=pid,
            slice=k + 1,
            name=record.name,
            truth_area_px=result.slice_truth_px[k],
            pred_area_px=result.slice_pred_px[k],
            dice=float(result.slice_dice[k]),
            max_prob=result.slice_max_prob[k],
        )
        for (pid, records), result in zip(dataset.patients.items(), report.patients, strict=True)
        for k, record in enumerate(records)
    ]
    return DatasetEvaluation(report, slices)


def detection_curve(
    max_probs: Sequence[float], truth_tumour: Sequence[bool], thresholds: Sequence[float] | None = None
) -> list[dict]:
    """Precision and recall of slice-level tumour detection over a sweep of thresholds.

    A slice is predicted positive when its highest probability is ``>= t``; it is truly positive
    when its ground truth has tumour.

    Args:
        max_probs: per slice, the highest tumour probability.
        truth_tumour: per slice, whether the ground truth has tumour.
        thresholds: cuts to evaluate (default 0.05, 0.10, ..., 0.95).

    Returns:
        One dict per threshold: ``threshold, tp, fp, fn, tn, precision, recall``. Precision is
        1.0 when no slice is predicted positive, recall 1.0 when no slice has tumour.
    """
    if len(max_probs) != len(truth_tumour):
        raise ValueError(f"{len(max_probs)} scores for {len(truth_tumour)} slices.")
    scores = np.asarray(max_probs, dtype=np.float64)
    truth = np.asarray(truth_tumour, dtype=bool)
    cuts = [round(float(t), 4) for t in (thresholds if thresholds is not None else np.arange(1, 20) / 20)]
    curve = []
    for t in cuts:
        positive = scores >= t
        tp = int(np.count_nonzero(positive & truth))
        fp = int(np.count_nonzero(positive & ~truth))
        fn = int(np.count_nonzero(~positive & truth))
        tn = int(positive.size - tp - fp - fn)
        curve.append(
            {
                "threshold": t,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "tn": tn,
                "precision": tp / (tp + fp) if tp + fp else 1.0,
                "recall": tp / (tp + fn) if tp + fn else 1.0,
            }
        )
    return curve


def merge_evaluations(parts: Sequence[DatasetEvaluation]) -> DatasetEvaluation:
    """Join evaluations of disjoint patient groups made with one setting into one.

    Lets a caller evaluate (and cache) patient by patient. The dataset summaries are rebuilt
    from the per-patient results: micro Dice from each patient's true positives
    (``volume_dice * (truth_voxels + pred_voxels) / 2``) and the false-positive slice rate from
    each patient's ``fp_rate`` and tumour-free slice count, so they equal a single
    :func:`evaluate_dataset` over all patients.

    Raises:
        ValueError: no parts, or parts made with different settings.
    """
    if not parts:
        raise ValueError("nothing to merge: evaluate at least one patient.")
    settings = {
        (p.report.threshold, p.report.min_component_px, p.report.keep_largest, p.report.volume_keep_largest)
        for p in parts
    }
    if len(settings) > 1:
        raise ValueError(f"cannot merge evaluations made with different settings: {sorted(settings)}")
    threshold, min_px, keep_largest, volume_keep_largest = settings.pop()
    patients = [patient for part in parts for patient in part.report.patients]
    tp = overlap = fp_slices = empty_slices = 0
    for patient in patients:
        total = patient.truth_voxels + patient.pred_voxels
        tp += round(patient.volume_dice * total / 2) if total else 0
        overlap += total
        empty = patient.n_slices - patient.n_tumour_slices
        empty_slices += empty
        fp_slices += round((patient.fp_rate or 0.0) * empty)
    micro = 1.0 if overlap == 0 else 2 * tp / overlap
    report = EvaluationReport(
        threshold,
        min_px,
        keep_largest,
        patients,
        micro,
        fp_slices,
        empty_slices,
        volume_keep_largest=volume_keep_largest,
        surface_tolerance=parts[0].report.surface_tolerance,
    )
    return DatasetEvaluation(report, [s for part in parts for s in part.slices])


# --------------------------------------------------------------------------------------------
# What the Evaluation page shows of an evaluation
# --------------------------------------------------------------------------------------------

#: The thresholds of the detection sweep (the page adds its own threshold).
DETECTION_SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.96, 0.05))


def dataset_key(dataset: Dataset) -> str:
    """Cache key of a dataset's patients: its kind, resolved folder and a hash of its patient ids."""
    root = str(Path(dataset.root).resolve())
    digest = hashlib.blake2b("|".join(dataset.patient_ids).encode(), digest_size=8).hexdigest()
    return f"{dataset.kind}:{root}:{digest}"


def evaluation_request(
    model_id: str | None,
    key: str,
    threshold: float,
    min_component_px: int,
    keep_largest: bool,
    volume_keep_largest: bool = False,
) -> tuple:
    """What names one evaluation: model id, dataset key (:func:`dataset_key`) and the prediction's setting."""
    return (
        model_id,
        key,
        float(threshold),
        int(min_component_px),
        bool(keep_largest),
        bool(volume_keep_largest),
    )


def detection_thresholds(threshold: float) -> list[float]:
    """The sweep of :data:`DETECTION_SWEEP` with ``threshold`` (rounded to 0.01) added, ascending."""
    return sorted(set(DETECTION_SWEEP) | {round(float(threshold), 2)})


def detection_at(curve: Sequence[dict], threshold: float) -> dict:
    """The point of a detection curve (:func:`detection_curve`) at ``threshold`` rounded to 0.01."""
    return next(c for c in curve if c["threshold"] == round(float(threshold), 2))


def worst_patient_rows(patients: Sequence[PatientResult]) -> list[dict]:
    """One table row per patient: id, volume Dice, tumour slices, truth and predicted voxels."""
    return [
        {
            "patient": p.patient_id,
            "volume Dice": p.volume_dice,
            "tumour slices": p.n_tumour_slices,
            "truth px": p.truth_voxels,
            "predicted px": p.pred_voxels,
        }
        for p in patients
    ]


def worst_slice_rows(slices: Sequence[SliceScore]) -> list[dict]:
    """One table row per slice: patient, slice, Dice, truth and predicted pixels, highest probability."""
    return [
        {
            "patient": s.patient_id,
            "slice": s.slice,
            "Dice": s.dice,
            "truth px": s.truth_area_px,
            "predicted px": s.pred_area_px,
            "max prob": s.max_prob,
        }
        for s in slices
    ]


def open_targets(patients: Sequence[PatientResult], slices: Sequence[SliceScore]) -> dict[str, tuple[str, int | None]]:
    """``label -> (patient id, 1-based slice or None)`` of the worst patients and slices, to open them."""
    targets: dict[str, tuple[str, int | None]] = {f"Patient {p.patient_id}": (p.patient_id, None) for p in patients}
    targets.update({f"{s.patient_id}, slice {s.slice} (Dice {s.dice:.3f})": (s.patient_id, s.slice) for s in slices})
    return targets


def group_dice_values(patients: Sequence[PatientResult], group_of: dict[str, str], groups: Sequence[str]) -> dict:
    """``group -> [volume Dice of its patients]`` for ``groups``; a patient without a group is in ``NO_GROUP``."""
    return {name: [p.volume_dice for p in patients if group_of.get(p.patient_id, NO_GROUP) == name] for name in groups}


# --------------------------------------------------------------------------------------------
# Every per-patient score and its dataset summary (the Evaluation page's score table)
# --------------------------------------------------------------------------------------------

#: Per-patient scores the page shows, in order: report attribute -> column name (without unit).
SCORE_COLUMNS = {
    "volume_dice": "Dice",
    "sensitivity": "sensitivity",
    "precision": "precision",
    "volume_similarity": "volume similarity",
    "hd95": "HD95",
    "surface_dice": "surface Dice",
}

EMPTY_MASKS_NOTE = (
    "Empty masks: a ratio whose denominator is 0 counts 1 (prediction and truth both empty: Dice, sensitivity, "
    "precision, volume similarity and surface Dice 1, HD95 0); when exactly one of them is empty, Dice and surface "
    "Dice are 0 and HD95 is the diagonal of the whole volume (the largest distance it holds)."
)


def score_column(name: str, unit: str | None, tolerance: float | None) -> str:
    """The column title of score ``name``: HD95 with its unit, surface Dice with its tolerance."""
    label = SCORE_COLUMNS[name]
    if name == "hd95" and unit:
        return f"{label} ({unit})"
    if name == "surface_dice" and tolerance is not None:
        return f"{label} @ {tolerance:g} {unit or ''}".rstrip()
    return label


def score_summary_rows(scores: dict, digits: int = 3) -> list[dict]:
    """One row per score of :meth:`~brainviewer.evaluation.evaluate.EvaluationReport.scores`: its title
    (:func:`score_column`) and ``mean ± SD``, ``median [IQR]``, ``95% CI`` texts and ``n`` (patients with the
    score). Scores no patient has are left out. HD95 has 2 decimals, the ratios ``digits``."""
    unit, tolerance = scores.get("distance_unit"), scores.get("surface_dice_tolerance")
    percent = round(100 * scores["bootstrap"]["confidence"])
    rows = []
    for name in SCORE_COLUMNS:
        summary = scores["per_patient_scores"].get(name)
        if summary is None:
            continue
        f = f"{{:.{2 if name == 'hd95' else digits}f}}".format
        sd = "" if summary["sd"] is None else f" ± {f(summary['sd'])}"
        rows.append(
            {
                "score": score_column(name, unit, tolerance),
                "mean ± SD": f"{f(summary['mean'])}{sd}",
                "median [IQR]": f"{f(summary['median'])} [{f(summary['q1'])}, {f(summary['q3'])}]",
                f"{percent}% CI of the mean": f"[{f(summary['ci_low'])}, {f(summary['ci_high'])}]",
                "patients": summary["n"],
            }
        )
    return rows


def patient_score_rows(patients: Sequence[PatientResult], unit: str | None, tolerance: float | None) -> list[dict]:
    """One row per patient: id, every score of :data:`SCORE_COLUMNS` (titled by :func:`score_column`;
    ``None`` where not computed), tumour slices, truth and predicted voxels."""
    return [
        {
            "patient": p.patient_id,
            **{score_column(name, unit, tolerance): getattr(p, name) for name in SCORE_COLUMNS},
            "tumour slices": p.n_tumour_slices,
            "truth px": p.truth_voxels,
            "predicted px": p.pred_voxels,
        }
        for p in patients
    ]


def distance_note(scores: dict) -> str:
    """How to read the boundary scores: HD95's unit (and why pixels), the surface Dice tolerance, how many
    patients got the worst-case HD95, and how the bootstrap interval was made."""
    unit, tolerance = scores.get("distance_unit"), scores.get("surface_dice_tolerance")
    boot = scores["bootstrap"]
    parts = []
    if unit == "px":
        parts.append(
            "Distances are in **pixels** (one step along rows, columns or slices counts 1): this dataset records "
            "no pixel spacing."
        )
    elif unit == "mm":
        parts.append("Distances are in **mm**, from each patient's voxel spacing.")
    elif unit == "mixed":
        parts.append("Distances are in mm for patients with a known spacing and in pixels for the others.")
    if tolerance is not None:
        parts.append(f"Surface Dice counts the outline within {tolerance:g} {unit if unit != 'mixed' else 'mm/px'}.")
    worst = scores.get("hd95_worst_case_patients") or 0
    if worst:
        parts.append(f"{worst} patient{'s' if worst > 1 else ''} got the worst-case HD95 (one mask empty).")
    parts.append(
        f"The {round(100 * boot['confidence'])}% CI is a percentile bootstrap of the mean over patients "
        f"({boot['resamples']:,} resamples, seed {boot['seed']})."
    )
    return " ".join(parts)
