"""Post-processing of predicted masks used in the literature: small-component removal,
keeping the largest connected component of a slice, and keeping the largest 3-D connected
component of a patient's stacked slices (as in Buda et al. 2019)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


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


def keep_largest_volume_component(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Keep only the largest 3-D connected component of a patient's stacked slice masks.

    Slices are stacked in the given order and components are 26-connected, so a blob that
    continues on the next slice is one component. Predictions away from the main lesion (a
    bright scalp region, the top slices of the head) are dropped on every slice.

    Args:
        masks: the patient's ``(H, W)`` bool masks, in slice order.

    Returns:
        New ``(H, W)`` bool masks, one per slice. If the slices differ in size (not one volume),
        the masks come back unchanged, and a warning is logged.
    """
    if not masks:
        return []
    if len({np.shape(m) for m in masks}) > 1:
        logger.warning("slices of different sizes: not one volume, so the largest 3-D component is not applied")
        return [np.asarray(m, dtype=bool).copy() for m in masks]
    volume = np.stack([np.asarray(m, dtype=bool) for m in masks])
    if not volume.any():
        return list(volume)
    labels, _ = ndimage.label(volume, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return list(labels == int(np.argmax(sizes)))


def postprocess_volume(
    masks: Sequence[np.ndarray],
    min_component_px: int = 0,
    keep_largest: bool = False,
    volume_keep_largest: bool = False,
) -> list[np.ndarray]:
    """:func:`postprocess` on each slice, then (optionally) the largest 3-D component of the stack."""
    masks = [postprocess(np.asarray(m, dtype=bool), min_component_px, keep_largest) for m in masks]
    return keep_largest_volume_component(masks) if volume_keep_largest else masks
