"""Where the model is unsure: the binary entropy of its tumour probabilities, per pixel and per slice.

Why entropy and not flip-TTA or an ensemble: the entropy is computed from the probabilities the app
already caches, so it is free (no forward pass) and updates with nothing to wait for; flip-TTA
disagreement would cost one or more extra forward passes per slice (a whole patient again on the
Patients page), and an ensemble needs several models. The price: entropy only shows the doubt the
model expresses in its own probability, not the doubt it would show under a perturbed input.

What it means and what it does not:

* High entropy (up to 1 bit, at p = 0.5) marks pixels the model scores near 50/50; these are
  mostly the tumour's border and faint or unusual tissue — the places worth a second look.
* It is **not** a calibrated probability of error: the model's probabilities were never
  calibrated, and a pixel at 1 bit is not "wrong with probability 0.5".
* Low entropy does **not** mean correct: a model can be confidently wrong (a missed tumour at
  p ≈ 0, a bright artefact at p ≈ 1 both read as certain).

No Streamlit, no torch: NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Entropy (bits) from which a pixel counts as "uncertain": 0.5 bit is p between about 0.11 and 0.89.
UNCERTAIN_BITS = 0.5
_EPS = 1e-7


def binary_entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel binary entropy ``-p log2 p - (1-p) log2 (1-p)`` of tumour probabilities.

    Args:
        probs: ``(H, W)`` (any shape) probabilities in ``[0, 1]``; NaN counts as 0.

    Returns:
        float32 array of the same shape in ``[0, 1]`` bits: 0 where p is 0 or 1, 1 at p = 0.5.

    Raises:
        ValueError: probabilities outside ``[0, 1]`` (beyond rounding).
    """
    p = np.nan_to_num(np.asarray(probs, dtype=np.float32), nan=0.0)
    if p.size and (float(p.min()) < -1e-4 or float(p.max()) > 1 + 1e-4):
        raise ValueError(
            f"probabilities must lie in [0, 1], got {float(p.min()):.3g}..{float(p.max()):.3g}; "
            "pass the model's sigmoid output, not its logits"
        )
    sure = (p <= 0.0) | (p >= 1.0)
    p = np.clip(p, _EPS, 1.0 - _EPS)
    q = 1.0 - p
    entropy = -(p * np.log2(p) + q * np.log2(q))
    entropy[sure] = 0.0
    return np.clip(entropy, 0.0, 1.0).astype(np.float32, copy=False)


@dataclass(frozen=True)
class SliceUncertainty:
    """One slice's uncertainty summary.

    Attributes:
        index: the slice's 0-based index.
        total_bits: the sum of the slice's pixel entropies (an "uncertain area" in pixel-bits: a 50/50
            pixel adds 1, a sure one 0).
        uncertain_px: pixels at or above :data:`UNCERTAIN_BITS`.
        predicted_px: predicted tumour pixels (``None`` when no masks were given).
    """

    index: int
    total_bits: float
    uncertain_px: int
    predicted_px: int | None = None


def slice_uncertainty(probs: np.ndarray, index: int = 0, pred_mask: np.ndarray | None = None) -> SliceUncertainty:
    """The :class:`SliceUncertainty` of one ``(H, W)`` probability map."""
    entropy = binary_entropy(probs)
    return SliceUncertainty(
        index=int(index),
        total_bits=float(entropy.sum(dtype=np.float64)),
        uncertain_px=int(np.count_nonzero(entropy >= UNCERTAIN_BITS)),
        predicted_px=None if pred_mask is None else int(np.count_nonzero(pred_mask)),
    )


def rank_slices(
    probs: Sequence[np.ndarray], pred_masks: Sequence[np.ndarray] | None = None, top: int | None = 10
) -> list[SliceUncertainty]:
    """Slices ranked "review these first": most total entropy first, ties by index.

    Args:
        probs: one ``(H, W)`` probability map per slice.
        pred_masks: the slices' predicted masks (for the predicted-area column), or ``None``.
        top: how many to return (``None``: all); slices without any uncertainty (0 bits) are left out.

    Returns:
        At most ``top`` :class:`SliceUncertainty`, highest ``total_bits`` first.

    Raises:
        ValueError: ``pred_masks`` of another length than ``probs``, or ``top`` below 1.
    """
    if pred_masks is not None and len(pred_masks) != len(probs):
        raise ValueError(f"{len(pred_masks)} masks for {len(probs)} probability maps; give one mask per slice")
    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1 (or None for all), got {top}")
    rows = [slice_uncertainty(p, i, None if pred_masks is None else pred_masks[i]) for i, p in enumerate(probs)]
    rows = [row for row in rows if row.total_bits > 0.0]
    rows.sort(key=lambda row: (-row.total_bits, row.index))
    return rows if top is None else rows[:top]


def uncertainty_rgb(entropy: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Colour a ``(H, W)`` entropy map in ``[0, 1]`` bits: ``(H, W, 3)`` uint8 (viridis: 0 dark blue, 1 yellow)."""
    from matplotlib import colormaps

    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    index = np.clip(np.rint(np.asarray(entropy, dtype=np.float32) * 255), 0, 255).astype(np.uint8)
    return lut[index]
