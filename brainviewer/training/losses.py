"""Segmentation losses on logits ``(N, 1, H, W)`` against float targets in {0, 1}."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (pixels of all images pooled)."""
    probs = torch.sigmoid(logits)
    inter = (probs * target).sum()
    return 1.0 - (2.0 * inter + smooth) / (probs.sum() + target.sum() + smooth)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, the usual default for tumour masks."""
    return bce_loss(logits, target) + soft_dice_loss(logits, target)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): BCE down-weighted on easy pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t) ** gamma * bce).mean()


def tversky_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0
) -> torch.Tensor:
    """1 - Tversky index; ``beta > alpha`` penalises missed tumour more than false alarms."""
    probs = torch.sigmoid(logits)
    tp = (probs * target).sum()
    fp = (probs * (1 - target)).sum()
    fn = ((1 - probs) * target).sum()
    return 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def focal_tversky_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 0.75) -> torch.Tensor:
    """Focal Tversky (Abraham & Khan 2019): Tversky loss raised to ``gamma``.

    Clamped away from 0 first: ``x ** 0.75`` has an infinite gradient at 0 (a perfect batch).
    """
    return tversky_loss(logits, target).clamp_min(1e-6) ** gamma


LOSS_FUNCTIONS: dict[str, LossFn] = {
    "dice": soft_dice_loss,
    "bce": bce_loss,
    "bce_dice": bce_dice_loss,
    "focal": focal_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
}


def get_loss(name: str) -> LossFn:
    """The loss called ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r}. Choose one of: {', '.join(LOSS_FUNCTIONS)}.") from None
