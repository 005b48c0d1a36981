"""Binary entropy of the probabilities and the per-slice "review these first" ranking."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.model.uncertainty import (
    UNCERTAIN_BITS,
    binary_entropy,
    rank_slices,
    slice_uncertainty,
    uncertainty_rgb,
)


def test_entropy_is_zero_when_sure_one_bit_at_a_coin_toss_and_symmetric():
    probs = np.array([0.0, 1.0, 0.5, 0.1, 0.9, np.nan], dtype=np.float32)
    entropy = binary_entropy(probs)
    assert entropy.dtype == np.float32 and entropy.shape == probs.shape
    assert entropy[0] == 0.0 and entropy[1] == 0.0 and entropy[5] == 0.0
    assert entropy[2] == pytest.approx(1.0)
    expected = -(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9))  # 0.469 bit
    assert entropy[3] == pytest.approx(expected, abs=1e-6) and entropy[4] == pytest.approx(expected, abs=1e-6)


def test_entropy_refuses_logits():
    with pytest.raises(ValueError, match="sigmoid"):
        binary_entropy(np.array([-3.0, 4.0]))


def test_uncertain_pixels_are_those_at_half_a_bit_or_more():
    probs = np.array([[0.05, 0.2], [0.5, 0.95]], dtype=np.float32)
    row = slice_uncertainty(probs, index=3, pred_mask=probs >= 0.5)
    assert row.index == 3 and row.predicted_px == 2
    assert row.uncertain_px == int((binary_entropy(probs) >= UNCERTAIN_BITS).sum()) == 2  # 0.2 and 0.5
    assert row.total_bits == pytest.approx(float(binary_entropy(probs).sum()), rel=1e-6)


def test_slices_are_ranked_most_uncertain_first_and_certain_ones_left_out():
    sure = np.zeros((8, 8), np.float32)
    some = sure.copy()
    some[:2, :2] = 0.5  # 4 bits
    more = sure.copy()
    more[:4, :4] = 0.5  # 16 bits
    tie = some.copy()
    ranked = rank_slices([sure, some, more, tie], top=None)
    assert [row.index for row in ranked] == [2, 1, 3]  # ties by slice index; the sure slice is left out
    assert [row.index for row in rank_slices([sure, some, more, tie], top=1)] == [2]
    masks = [p >= 0.5 for p in (sure, some, more, tie)]
    assert rank_slices([sure, some, more, tie], masks)[0].predicted_px == 16


def test_rank_slices_refuses_mismatched_masks_and_a_bad_top():
    probs = [np.zeros((4, 4), np.float32)] * 2
    with pytest.raises(ValueError, match="one mask per slice"):
        rank_slices(probs, [np.zeros((4, 4), bool)])
    with pytest.raises(ValueError, match="at least 1"):
        rank_slices(probs, top=0)


def test_uncertainty_picture_is_rgb_and_brighter_where_unsure():
    picture = uncertainty_rgb(binary_entropy(np.array([[0.0, 0.5]], np.float32)))
    assert picture.shape == (1, 2, 3) and picture.dtype == np.uint8
    assert int(picture[0, 1].sum()) > int(picture[0, 0].sum())
