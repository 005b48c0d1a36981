"""Overlap metrics for binary masks, per slice and per patient volume.

Conventions for empty masks (both prediction and truth empty): Dice and IoU are 1.0
(a perfect "no tumour" answer), precision and recall are 1.0. These follow Buda et
al. 2019, where a volume's Dice is computed over all its slices stacked.

Every ratio whose denominator is 0 is 1.0 (nothing could go wrong), so:

* truth empty, prediction not: Dice = IoU = precision = 0.0, recall = 1.0;
* prediction empty, truth not: Dice = IoU = recall = 0.0, precision = 1.0.

Per-volume sensitivity (recall), precision and volume similarity of the counts follow the
same rule (:func:`sensitivity_from_counts`, :func:`precision_from_counts`,
:func:`volume_similarity_from_counts`); boundary metrics (HD95, surface Dice) are in
:mod:`brainviewer.evaluation.surface`.

Masks are read as ``bool``: any non-zero value (255, or a probability) counts as tumour,
so threshold probabilities before calling these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Pixel counts of a prediction against the truth."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def counts(pred: np.ndarray, truth: np.ndarray) -> Counts:
    """Confusion counts of two bool masks of the same shape (any number of dimensions).

    Raises:
        ValueError: when the shapes differ.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} must have the same shape")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return Counts(tp, fp, fn, int(pred.size) - tp - fp - fn)


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def dice_from_counts(c: Counts) -> float:
    """Dice ``2TP / (2TP + FP + FN)`` in [0, 1]; 1.0 when both masks are empty."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def sensitivity_from_counts(c: Counts) -> float:
    """Sensitivity (recall, true-positive rate) ``TP / (TP + FN)`` in [0, 1].

    1.0 when the truth is empty (no tumour to miss), whatever is predicted.
    """
    return _ratio(c.tp, c.tp + c.fn)


def precision_from_counts(c: Counts) -> float:
    """Precision (positive predictive value) ``TP / (TP + FP)`` in [0, 1].

    1.0 when nothing is predicted (no false alarm), whatever the truth.
    """
    return _ratio(c.tp, c.tp + c.fp)


def volume_similarity_from_counts(c: Counts) -> float:
    """Volume similarity ``1 - |FN - FP| / (2TP + FP + FN)`` = ``1 - |P - T| / (P + T)`` in [0, 1].

    ``P`` and ``T`` are the predicted and true voxel counts: it compares sizes only, not where
    they are (two disjoint masks of the same size score 1.0). 1.0 when both masks are empty,
    0.0 when exactly one is.
    """
    den = 2 * c.tp + c.fp + c.fn
    return 1.0 if den == 0 else 1.0 - abs(c.fn - c.fp) / den


@dataclass(frozen=True)
class SliceMetrics:
    """Metrics of one prediction against its truth (all in [0, 1]; areas in pixels)."""

    dice: float
    iou: float
    precision: float
    recall: float
    accuracy: float
    truth_area_px: int
    pred_area_px: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def slice_metrics(pred: np.ndarray, truth: np.ndarray) -> SliceMetrics:
    """Dice, IoU, precision, recall, pixel accuracy and areas for ``(H, W)`` bool masks."""
    c = counts(pred, truth)
    return SliceMetrics(
        dice=dice_from_counts(c),
        iou=_ratio(c.tp, c.tp + c.fp + c.fn),
        precision=_ratio(c.tp, c.tp + c.fp),
        recall=_ratio(c.tp, c.tp + c.fn),
        accuracy=_ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn),
        truth_area_px=c.tp + c.fn,
        pred_area_px=c.tp + c.fp,
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|P∩T| / (|P|+|T|)`` of two bool masks; 1.0 when both are empty."""
    return dice_from_counts(counts(pred, truth))


def volume_dice(preds: Iterable[np.ndarray], truths: Iterable[np.ndarray]) -> float:
    """Per-volume Dice: one Dice over all slices of a patient stacked (Buda et al. 2019)."""
    total = Counts(0, 0, 0, 0)
    for pred, truth in zip(preds, truths, strict=True):
        total = total + counts(pred, truth)
    return dice_from_counts(total)
