"""Overlap metrics on small masks counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.evaluation.metrics import Counts, counts, dice, dice_from_counts, slice_metrics, volume_dice

# 3 x 4 masks. Pixel by pixel:
#   pred  1 1 0 0     truth 1 0 0 0
#         1 0 0 0           1 1 0 0
#         0 0 0 1           0 0 0 0
# TP = (0,0),(1,0) = 2; FP = (0,1),(2,3) = 2; FN = (1,1) = 1; TN = 12 - 5 = 7.
PRED = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=bool)
TRUTH = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)


def test_counts_by_hand() -> None:
    assert counts(PRED, TRUTH) == Counts(tp=2, fp=2, fn=1, tn=7)
    assert counts(TRUTH, PRED) == Counts(tp=2, fp=1, fn=2, tn=7)  # swapping swaps FP and FN
    assert Counts(1, 2, 3, 4) + Counts(10, 20, 30, 40) == Counts(11, 22, 33, 44)


def test_slice_metrics_by_hand() -> None:
    m = slice_metrics(PRED, TRUTH)
    assert m.dice == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))  # 4/7
    assert m.iou == pytest.approx(2 / 5)
    assert m.precision == pytest.approx(2 / 4)
    assert m.recall == pytest.approx(2 / 3)
    assert m.accuracy == pytest.approx(9 / 12)
    assert (m.truth_area_px, m.pred_area_px) == (3, 4)
    assert dice(PRED, TRUTH) == pytest.approx(4 / 7)
    assert m.as_dict()["iou"] == pytest.approx(0.4)
    # Dice and IoU are tied: IoU = Dice / (2 - Dice).
    assert m.iou == pytest.approx(m.dice / (2 - m.dice))


def test_0_255_and_bool_masks_agree() -> None:
    assert slice_metrics(PRED.astype(np.uint8) * 255, TRUTH.astype(np.uint8)) == slice_metrics(PRED, TRUTH)


def test_perfect_and_disjoint() -> None:
    perfect = slice_metrics(TRUTH, TRUTH)
    assert (perfect.dice, perfect.iou, perfect.precision, perfect.recall, perfect.accuracy) == (1, 1, 1, 1, 1)
    disjoint = slice_metrics(~TRUTH, TRUTH)
    assert (disjoint.dice, disjoint.iou, disjoint.precision, disjoint.recall, disjoint.accuracy) == (0, 0, 0, 0, 0)


def test_empty_conventions() -> None:
    empty = np.zeros((4, 5), dtype=bool)
    both = slice_metrics(empty, empty)
    assert (both.dice, both.iou, both.precision, both.recall, both.accuracy) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert (both.truth_area_px, both.pred_area_px) == (0, 0)
    assert dice(empty, empty) == 1.0

    spot = empty.copy()
    spot[1, 2] = True
    false_alarm = slice_metrics(spot, empty)  # tumour predicted on an empty slice
    assert (false_alarm.dice, false_alarm.iou, false_alarm.precision, false_alarm.recall) == (0.0, 0.0, 0.0, 1.0)
    assert false_alarm.accuracy == pytest.approx(19 / 20)
    missed = slice_metrics(empty, spot)  # tumour missed entirely
    assert (missed.dice, missed.iou, missed.precision, missed.recall) == (0.0, 0.0, 1.0, 0.0)
    assert (missed.truth_area_px, missed.pred_area_px) == (1, 0)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        counts(PRED, TRUTH.T)
    with pytest.raises(ValueError):
        slice_metrics(PRED, TRUTH[:2])
    with pytest.raises(ValueError):
        dice(PRED, TRUTH[..., None])
    with pytest.raises(ValueError):
        volume_dice([PRED, PRED], [TRUTH, TRUTH.T])
    with pytest.raises(ValueError):  # a different number of slices
        volume_dice([PRED, PRED], [TRUTH])


def test_volume_dice_pools_slices() -> None:
    # Slice A: 1 tumour pixel found exactly (Dice 1). Slice B: 9 tumour pixels all missed (Dice 0).
    truth_a = np.zeros((5, 5), bool)
    truth_a[0, 0] = True
    pred_a = truth_a.copy()
    truth_b = np.zeros((5, 5), bool)
    truth_b[1:4, 1:4] = True
    pred_b = np.zeros((5, 5), bool)
    slice_dices = [dice(pred_a, truth_a), dice(pred_b, truth_b)]
    assert slice_dices == [1.0, 0.0]
    assert np.mean(slice_dices) == 0.5
    # Pooled: TP = 1, FP = 0, FN = 9 -> 2 / (2 + 9) = 2/11, far from the mean of slice Dice.
    assert volume_dice([pred_a, pred_b], [truth_a, truth_b]) == pytest.approx(2 / 11)
    # Empty-and-correct slices add nothing to the pooled Dice (they would lift a slice mean).
    empty = np.zeros((5, 5), bool)
    assert volume_dice([pred_a, pred_b, empty, empty], [truth_a, truth_b, empty, empty]) == pytest.approx(2 / 11)
    # Same result as one Dice over the stacked volume, and over generators.
    stacked = dice(np.stack([pred_a, pred_b]), np.stack([truth_a, truth_b]))
    assert stacked == pytest.approx(2 / 11)
    assert volume_dice(iter([pred_a, pred_b]), iter([truth_a, truth_b])) == pytest.approx(2 / 11)
    assert volume_dice([], []) == 1.0  # nothing to find, nothing found
    assert dice_from_counts(Counts(3, 1, 1, 0)) == pytest.approx(6 / 8)
