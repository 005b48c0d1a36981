"""Scoring a model on a dataset, patient by patient (Buda et al. 2019 protocol).

For each patient all slices are stacked into one volume:

* ``volume_dice``: Dice of the stacked prediction against the stacked truth;
* ``tumour_slice_dice``: mean Dice over the slices whose truth has tumour;
* ``fp_rate``: fraction of tumour-free slices on which anything is predicted;
* ``sensitivity``, ``precision``, ``volume_similarity`` of the stacked volume
  (:mod:`brainviewer.evaluation.metrics`; empty masks: 1.0 when the denominator is 0);
* ``hd95`` and ``surface_dice`` of the stacked volume (:mod:`brainviewer.evaluation.surface`, via
  MONAI), in ``distance_unit``: ``"mm"`` where the patient's spacing is given, ``"px"`` otherwise
  (kaggle_3m slices record none). Both empty: 0 and 1.0; exactly one empty: the volume diagonal
  and 0.0.

Dataset summaries (:meth:`EvaluationReport.summary`) are the mean and median of per-patient
volume Dice, micro Dice (all pixels of all patients pooled), and the pooled false-positive slice
rate; :meth:`EvaluationReport.scores` gives, per score, mean ± SD, median [IQR] and a seeded
bootstrap 95% interval of the mean over patients (:func:`score_summaries`). The report's JSON
carries both (``summary`` and ``scores``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from brainviewer.data.datasets import Dataset, load_arrays
from brainviewer.evaluation.groups import (  # noqa: F401  (re-exported: the historical home of these names)
    GROUP_COLUMNS,
    GROUP_ID_COLUMNS,
    NO_GROUP,
    group_summaries,
    read_groups,
)
from brainviewer.evaluation.metrics import (
    Counts,
    counts,
    dice_from_counts,
    precision_from_counts,
    sensitivity_from_counts,
    volume_similarity_from_counts,
)
from brainviewer.evaluation.report import (  # noqa: F401  (re-exported)
    REPORT_PATIENT_COLUMNS,
    patient_csv_cells,
    report_patients_csv,
    write_report,
)
from brainviewer.evaluation.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, describe
from brainviewer.evaluation.surface import DEFAULT_TOLERANCE, stack_spacing, surface_scores
from brainviewer.model.postprocess import postprocess_volume
from brainviewer.model.preprocessing import volume_levels

if TYPE_CHECKING:
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import Segmenter

logger = logging.getLogger(__name__)

ProbsFn = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class PatientResult:
    """Scores of one patient volume."""

    patient_id: str
    n_slices: int
    n_tumour_slices: int
    volume_dice: float
    tumour_slice_dice: float | None
    fp_rate: float | None
    truth_voxels: int
    pred_voxels: int
    slice_dice: list[float] = field(default_factory=list)
    slice_truth_px: list[int] = field(default_factory=list)
    slice_pred_px: list[int] = field(default_factory=list)
    slice_max_prob: list[float] = field(default_factory=list)
    sensitivity: float | None = None
    """Volume ``TP / (TP + FN)``; 1.0 when the truth is empty."""
    precision: float | None = None
    """Volume ``TP / (TP + FP)``; 1.0 when nothing is predicted."""
    volume_similarity: float | None = None
    """Volume ``1 - |P - T| / (P + T)`` of voxel counts; 1.0 when both are empty."""
    hd95: float | None = None
    """95th percentile Hausdorff distance in ``distance_unit`` (``None``: not computed)."""
    surface_dice: float | None = None
    """Normalised surface Dice at the report's ``surface_tolerance`` (``None``: not computed)."""
    distance_unit: str | None = None
    """``"mm"`` or ``"px"`` for ``hd95`` and the tolerance (``None``: not computed)."""

    @property
    def hd95_worst_case(self) -> bool:
        """Exactly one of prediction and truth is empty: ``hd95`` is the volume diagonal (a penalty)."""
        return self.hd95 is not None and (self.truth_voxels == 0) != (self.pred_voxels == 0)


SUMMARY_SCORES = ("volume_dice", "sensitivity", "precision", "volume_similarity", "hd95", "surface_dice")
"""Per-patient scores summarised by :func:`score_summaries`."""


def score_summaries(patients: Sequence[PatientResult], surface_tolerance: float | None) -> dict:
    """``per_patient_scores`` (each of :data:`SUMMARY_SCORES` through
    :func:`brainviewer.evaluation.stats.describe`; ``None`` where no patient has it) and how to read them.

    Returns:
        ``{"per_patient_scores", "distance_unit" ("mm", "px", "mixed" or None), "surface_dice_tolerance",
        "hd95_worst_case_patients", "bootstrap" ({"resamples", "seed", "confidence"}, resampling patients)}``.
    """
    units = sorted({p.distance_unit for p in patients if p.distance_unit})
    return {
        "per_patient_scores": {name: describe(getattr(p, name) for p in patients) for name in SUMMARY_SCORES},
        "distance_unit": units[0] if len(units) == 1 else "mixed" if units else None,
        "surface_dice_tolerance": surface_tolerance if units else None,
        "hd95_worst_case_patients": sum(p.hd95_worst_case for p in patients),
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": CONFIDENCE},
    }


@dataclass
class EvaluationReport:
    """Per-patient results and dataset summaries for one threshold / post-processing."""

    threshold: float
    min_component_px: int
    keep_largest: bool
    patients: list[PatientResult]
    micro_dice: float
    fp_slices: int
    empty_slices: int
    tta_flip: bool = False
    """Whether the probabilities were averaged with the mirrored scan's (set by the caller, which made them)."""
    volume_keep_largest: bool = False
    """Whether only the largest 3-D component of each patient's stacked prediction was kept."""
    group_of: dict[str, str] = field(default_factory=dict)
    """Patient id -> group (e.g. tumour type, see :func:`read_groups`); with it, the summary has per-group figures."""
    surface_tolerance: float | None = None
    """Surface Dice tolerance in the patients' ``distance_unit`` (``None``: boundary metrics not computed)."""

    @property
    def dice_values(self) -> list[float]:
        return [p.volume_dice for p in self.patients]

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice_values)) if self.patients else math.nan

    @property
    def median_dice(self) -> float:
        return float(np.median(self.dice_values)) if self.patients else math.nan

    @property
    def fp_rate(self) -> float | None:
        return self.fp_slices / self.empty_slices if self.empty_slices else None

    def summary(self) -> dict:
        tumour = [p.tumour_slice_dice for p in self.patients if p.tumour_slice_dice is not None]
        return {
            "patients": len(self.patients),
            "slices": sum(p.n_slices for p in self.patients),
            "threshold": self.threshold,
            "min_component_px": self.min_component_px,
            "keep_largest": self.keep_largest,
            "volume_keep_largest": self.volume_keep_largest,
            "tta_flip": self.tta_flip,
            "mean_volume_dice": self.mean_dice,
            "median_volume_dice": self.median_dice,
            "micro_dice": self.micro_dice,
            "mean_tumour_slice_dice": float(np.mean(tumour)) if tumour else None,
            "fp_rate_empty_slices": self.fp_rate,
            "fp_slices": self.fp_slices,
            "empty_slices": self.empty_slices,
            **({"groups": group_summaries(self.patients, self.group_of)} if self.group_of else {}),
        }

    def scores(self) -> dict:
        """Every per-patient score summarised over the patients (:func:`score_summaries`)."""
        return score_summaries(self.patients, self.surface_tolerance)

    def to_json(self) -> dict:
        """``{"summary": summary(), "scores": scores(), "patients": [every PatientResult as a dict]}``."""
        return {"summary": self.summary(), "scores": self.scores(), "patients": [asdict(p) for p in self.patients]}


class _Accumulator:
    """Accumulates counts for one (threshold, min_component_px, keep_largest, volume_keep_largest) setting.

    With ``surface_tolerance`` set, each patient also gets HD95 and surface Dice of its stacked
    post-processed volume (``None``: skipped, e.g. for a sweep of many settings).
    """

    def __init__(
        self,
        threshold: float,
        min_component_px: int,
        keep_largest: bool,
        volume_keep_largest: bool = False,
        surface_tolerance: float | None = DEFAULT_TOLERANCE,
    ) -> None:
        self.surface_tolerance = surface_tolerance
        self.threshold = threshold
        self.min_component_px = min_component_px
        self.keep_largest = keep_largest
        self.volume_keep_largest = volume_keep_largest
        self.patients: list[PatientResult] = []
        self.total = Counts(0, 0, 0, 0)
        self.fp_slices = 0
        self.empty_slices = 0

    def add_patient(
        self,
        patient_id: str,
        probs: Sequence[np.ndarray],
        truths: Sequence[np.ndarray],
        spacing_mm: Sequence[float] | None = None,
    ) -> None:
        """Score one patient: ``(H, W)`` float probabilities and bool truths, slice by slice in order;
        ``spacing_mm``: its ``(row, col, slice)`` millimetres, or ``None`` (distances in pixels)."""
        volume = Counts(0, 0, 0, 0)
        slice_dice, tumour_dice, truth_px, pred_px, max_prob = [], [], [], [], []
        fp = empty = 0
        preds = postprocess_volume(
            [prob >= self.threshold for prob in probs],
            self.min_component_px,
            self.keep_largest,
            self.volume_keep_largest,
        )
        for prob, pred, truth in zip(probs, preds, truths, strict=True):
            c = counts(pred, truth)
            volume = volume + c
            d = dice_from_counts(c)
            slice_dice.append(d)
            truth_px.append(c.tp + c.fn)
            pred_px.append(c.tp + c.fp)
            max_prob.append(float(np.max(prob)) if prob.size else 0.0)
            if truth.any():
                tumour_dice.append(d)
            else:
                empty += 1
                fp += int(pred.any())
        surface = (
            surface_scores(np.stack(preds), np.stack(truths), stack_spacing(spacing_mm), self.surface_tolerance)
            if self.surface_tolerance is not None and len(truths)
            else None
        )
        self.total = self.total + volume
        self.fp_slices += fp
        self.empty_slices += empty
        self.patients.append(
            PatientResult(
                patient_id=patient_id,
                n_slices=len(truths),
                n_tumour_slices=len(tumour_dice),
                volume_dice=dice_from_counts(volume),
                tumour_slice_dice=float(np.mean(tumour_dice)) if tumour_dice else None,
                fp_rate=fp / empty if empty else None,
                truth_voxels=volume.tp + volume.fn,
                pred_voxels=volume.tp + volume.fp,
                slice_dice=slice_dice,
                slice_truth_px=truth_px,
                slice_pred_px=pred_px,
                slice_max_prob=max_prob,
                sensitivity=sensitivity_from_counts(volume),
                precision=precision_from_counts(volume),
                volume_similarity=volume_similarity_from_counts(volume),
                hd95=surface.hd95 if surface else None,
                surface_dice=surface.surface_dice if surface else None,
                distance_unit=surface.unit if surface else None,
            )
        )

    def report(self) -> EvaluationReport:
        return EvaluationReport(
            self.threshold,
            self.min_component_px,
            self.keep_largest,
            self.patients,
            dice_from_counts(self.total),
            self.fp_slices,
            self.empty_slices,
            volume_keep_largest=self.volume_keep_largest,
            surface_tolerance=self.surface_tolerance,
        )


def evaluate_probs(
    dataset: Dataset,
    probs_fn: ProbsFn,
    settings: Sequence[tuple[float, int, bool] | tuple[float, int, bool, bool]],
    progress: Callable[[int, int], None] | None = None,
    *,
    surface_tolerance: float | None = DEFAULT_TOLERANCE,
    spacing_mm: Mapping[str, Sequence[float]] | None = None,
) -> list[EvaluationReport]:
    """Score ``dataset`` for several post-processing settings with one pass of inference.

    Args:
        dataset: slices grouped by patient; every slice needs ground truth.
        probs_fn: maps a list of scans to their ``(H, W)`` float32 probabilities.
        settings: ``(threshold, min_component_px, keep_largest[, volume_keep_largest])`` tuples to score
            (see :mod:`brainviewer.model.postprocess`).
        progress: called with ``(patients done, patients total)``.
        surface_tolerance: surface Dice tolerance (mm, or pixels without spacing); ``None`` skips HD95 and
            surface Dice (they cost about 0.05-0.3 s per patient and setting on one CPU thread for 20-90 slices of
            256 x 256, more when the prediction is scattered).
        spacing_mm: patient id -> ``(row, col, slice)`` millimetres where known; others are in pixels.

    Returns:
        One :class:`EvaluationReport` per setting, in the same order.
    """
    return evaluate_probs_variants(
        dataset,
        lambda scans: (probs_fn(scans),),
        [settings],
        progress,
        surface_tolerance=surface_tolerance,
        spacing_mm=spacing_mm,
    )[0]


def evaluate_probs_variants(
    dataset: Dataset,
    variants_fn: Callable[[list[np.ndarray]], Sequence[list[np.ndarray]]],
    settings: Sequence[Sequence[tuple[float, int, bool] | tuple[float, int, bool, bool]]],
    progress: Callable[[int, int], None] | None = None,
    *,
    surface_tolerance: float | None = DEFAULT_TOLERANCE,
    spacing_mm: Mapping[str, Sequence[float]] | None = None,
) -> list[list[EvaluationReport]]:
    """:func:`evaluate_probs` for several kinds of probabilities from one pass over the data.

    For example a model's plain probabilities and its flip-averaged ones, which one batched
    forward pass of the scans and their mirrors gives together
    (:meth:`brainviewer.model.segmenter.Segmenter.predict_probs_plain_and_flip`).

    Args:
        dataset: slices grouped by patient; every slice needs ground truth.
        variants_fn: maps a list of scans to one list of ``(H, W)`` probabilities per variant.
        settings: for each variant, the post-processing settings to score.
        progress: called with ``(patients done, patients total)``.
        surface_tolerance, spacing_mm: as for :func:`evaluate_probs`.

    Returns:
        For each variant, one :class:`EvaluationReport` per setting, in the same order.
    """
    accumulators = [
        [_Accumulator(*_full_setting(setting), surface_tolerance=surface_tolerance) for setting in variant]
        for variant in settings
    ]
    spacing_mm = spacing_mm or {}
    patients = dataset.patients
    for done, (pid, records) in enumerate(patients.items(), start=1):
        scans, truths = [], []
        for record in records:
            image, truth = load_arrays(dataset, record)
            if truth is None:
                raise ValueError(f"{record.image_path} has no ground truth; evaluation needs masks for every slice.")
            scans.append(image)
            truths.append(truth)
        variants = variants_fn(scans)
        if len(variants) != len(accumulators):
            raise ValueError(f"variants_fn gave {len(variants)} kinds of probabilities for {len(settings)} settings")
        for probs, variant_accumulators in zip(variants, accumulators, strict=True):
            for acc in variant_accumulators:
                acc.add_patient(pid, probs, truths, spacing_mm.get(pid))
        if progress:
            progress(done, len(patients))
    return [[acc.report() for acc in variant] for variant in accumulators]


def _full_setting(setting: Sequence) -> tuple[float, int, bool, bool]:
    """A 3- or 4-value setting as ``(threshold, min_component_px, keep_largest, volume_keep_largest)``."""
    threshold, min_px, keep_largest, *rest = setting
    return threshold, min_px, keep_largest, bool(rest[0]) if rest else False


def default_sweep(base_threshold: float = 0.5) -> list[tuple[float, int, bool, bool]]:
    """Threshold x small-component x largest-3-D-component settings used to choose
    post-processing on validation data (the simpler setting first, so it wins a tie)."""
    thresholds = sorted({round(t, 2) for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, base_threshold)})
    return [(t, m, False, v) for v in (False, True) for t in thresholds for m in (0, 16, 64, 128)]


def choose_setting(reports: Sequence[EvaluationReport], max_fp_rate: float = 0.05) -> EvaluationReport:
    """The report with the best mean volume Dice whose FP rate is within ``max_fp_rate``
    (or, if none is, the one with the lowest FP rate)."""
    ok = [r for r in reports if (r.fp_rate or 0.0) <= max_fp_rate]
    if ok:
        return max(ok, key=lambda r: (round(r.mean_dice, 4), -r.min_component_px))
    return min(reports, key=lambda r: (r.fp_rate or 0.0, -r.mean_dice))


def choose_postprocessing(
    segmenter: Segmenter, dataset: Dataset, batch_size: int = 16
) -> tuple[EvaluationReport, list[EvaluationReport]]:
    """Choose threshold, post-processing and flip TTA for ``segmenter`` on validation data.

    One pass over ``dataset``'s scans and their mirrors scores every setting of
    :func:`default_sweep`, without and with flip TTA; :func:`choose_setting` picks one.

    Returns:
        ``(chosen report, every report scored)``; apply the choice with :func:`with_setting`.
    """
    sweep = default_sweep(segmenter.prep.threshold)

    def both(scans: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return segmenter.predict_probs_plain_and_flip(scans, batch_size, volume_levels(scans, segmenter.prep))

    # the choice goes by Dice and FP rate: boundary metrics for 100+ settings would only cost time
    plain, flipped = evaluate_probs_variants(dataset, both, [sweep, sweep], surface_tolerance=None)
    for report in flipped:
        report.tta_flip = True
    candidates = plain + flipped  # plain first: on a tie the cheaper setting wins
    return choose_setting(candidates), candidates


def with_setting(prep: Preprocessing, report: EvaluationReport) -> Preprocessing:
    """``prep`` with the threshold, post-processing and TTA of ``report``."""
    return replace(
        prep,
        threshold=report.threshold,
        min_component_px=report.min_component_px,
        keep_largest=report.keep_largest,
        volume_keep_largest=report.volume_keep_largest,
        tta_flip=report.tta_flip,
    )
