"""Segmentation losses: hand-computed values, perfect and wrong predictions."""

from __future__ import annotations

import math

import pytest
import torch

from brainviewer.training.config import LOSSES
from brainviewer.training.losses import (
    LOSS_FUNCTIONS,
    bce_loss,
    focal_loss,
    focal_tversky_loss,
    get_loss,
    soft_dice_loss,
    tversky_loss,
)

#: A 2x2 target with two tumour pixels.
TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def confident(target: torch.Tensor, correct: bool, margin: float = 20.0) -> torch.Tensor:
    """Logits of +-margin that agree (or disagree) with ``target`` everywhere."""
    sign = 2 * target - 1
    return sign * margin if correct else -sign * margin


def test_loss_names_match_the_config_choices() -> None:
    assert tuple(LOSS_FUNCTIONS) == LOSSES


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_is_near_zero_and_wrong_is_large(name: str) -> None:
    loss_fn = get_loss(name)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 5:12] = 1
    perfect = float(loss_fn(confident(target, True), target))
    wrong = float(loss_fn(confident(target, False), target))
    unsure = float(loss_fn(torch.zeros_like(target), target))
    assert 0.0 <= perfect < 1e-3
    assert wrong > unsure > perfect
    assert wrong > 0.15


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_and_point_the_right_way(name: str) -> None:
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    get_loss(name)(logits, TARGET).backward()
    grad = logits.grad[0, 0]
    assert torch.isfinite(grad).all()
    assert (grad[0] < 0).all()  # tumour pixels: raise their logits
    assert (grad[1] >= 0).all()  # background: lower (or keep) theirs
    # also at a perfect prediction (x ** 0.75 has an infinite slope at 0)
    logits = confident(TARGET, True).requires_grad_(True)
    get_loss(name)(logits, TARGET).backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_by_hand() -> None:
    # every probability 0.5: intersection 2 x 0.5 = 1, sum of probs 2, sum of target 2, smooth 1
    assert float(soft_dice_loss(torch.zeros(1, 1, 2, 2), TARGET)) == pytest.approx(1 - (2 * 1 + 1) / (2 + 2 + 1))
    # probabilities 0.8 on the tumour pixels and 0.2 elsewhere
    p = torch.tensor([[[[0.8, 0.8], [0.2, 0.2]]]])
    logits = torch.log(p / (1 - p))
    expected = 1 - (2 * 1.6 + 1) / (2.0 + 2 + 1)
    assert float(soft_dice_loss(logits, TARGET)) == pytest.approx(expected, rel=1e-5)
    # smooth=0, perfect: exactly zero; all wrong: exactly one minus nothing
    assert float(soft_dice_loss(confident(TARGET, True), TARGET, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(confident(TARGET, False), TARGET, smooth=0.0)) == pytest.approx(1.0, abs=1e-6)


def test_dice_pools_the_batch() -> None:
    """One soft Dice over every pixel of every image, not a mean of per-image Dice."""
    target = torch.cat([TARGET, torch.zeros_like(TARGET)])
    logits = torch.cat([confident(TARGET, True), torch.zeros_like(TARGET)])  # second image: all 0.5
    # intersection 2, probabilities 2 + 4 x 0.5, target 2: 1 - 5/7 (a per-image mean would give 1/3)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(1 - 5 / 7, rel=1e-5)


def test_bce_by_hand() -> None:
    assert float(bce_loss(torch.zeros(1, 1, 2, 2), TARGET)) == pytest.approx(math.log(2))
    p = torch.tensor([[[[0.9, 0.6], [0.3, 0.1]]]])
    logits = torch.log(p / (1 - p))
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.7) + math.log(0.9)) / 4
    assert float(bce_loss(logits, TARGET)) == pytest.approx(expected, rel=1e-5)


def test_focal_and_tversky_by_hand() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # every probability 0.5
    # focal: alpha_t (0.25 on tumour, 0.75 on background) x (1 - 0.5)^2 x ln 2, averaged
    assert float(focal_loss(logits, TARGET)) == pytest.approx((2 * 0.25 + 2 * 0.75) / 4 * 0.25 * math.log(2))
    # tversky: tp = 1, fp = 1, fn = 1 -> 1 - (1 + 1) / (1 + 0.3 + 0.7 + 1)
    assert float(tversky_loss(logits, TARGET)) == pytest.approx(1 - 2 / 3)
    assert float(focal_tversky_loss(logits, TARGET)) == pytest.approx((1 / 3) ** 0.75)
    # beta > alpha: a miss costs more than a false alarm of the same size
    miss = torch.tensor([[[[20.0, -20.0], [-20.0, -20.0]]]])
    false_alarm = torch.tensor([[[[20.0, 20.0], [20.0, -20.0]]]])
    assert float(tversky_loss(miss, TARGET)) > float(tversky_loss(false_alarm, TARGET))


def test_unknown_loss_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"Unknown loss 'l2'.*dice, bce, bce_dice, focal, tversky, focal_tversky"):
        get_loss("l2")
