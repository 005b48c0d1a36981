"""Post-processing of predicted masks used in the literature: small-component removal
and keeping the largest connected component."""

from __future__ import annotations

import cv2
import numpy as np


def remove_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop 8-connected components of ``mask`` smaller than ``min_px`` pixels.

    Args:
        mask: ``(H, W)`` bool.
        min_px: minimum component size to keep; ``<= 1`` returns the mask unchanged.

    Returns:
        ``(H, W)`` bool.
    """
    if min_px <= 1 or not mask.any():
        return mask.astype(bool, copy=True)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep only the largest 8-connected component of a ``(H, W)`` bool mask."""
    if not mask.any():
        return mask.astype(bool, copy=True)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def postprocess(mask: np.ndarray, min_component_px: int = 0, keep_largest: bool = False) -> np.ndarray:
    """Apply the configured post-processing to a ``(H, W)`` bool mask."""
    mask = remove_small_components(mask, min_component_px)
    return keep_largest_component(mask) if keep_largest else mask
