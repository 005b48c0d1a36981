"""Boundary metrics of a predicted mask against the truth: HD95 and surface Dice, via MONAI.

The distances come from MONAI (``monai.metrics.compute_hausdorff_distance`` and
``monai.metrics.compute_surface_dice``, see requirements.txt for the pinned version): the
surface of a mask is its voxels that a one-voxel (face-connected) erosion removes, and each
surface voxel's distance is the Euclidean distance to the nearest surface voxel of the other
mask, scaled by the voxel spacing.

* ``hd95``: the 95th percentile Hausdorff distance, the larger of the two directed 95th
  percentiles (prediction -> truth, truth -> prediction). Lower is better; 0 for identical masks.
* ``surface_dice``: normalised surface Dice (Nikolov et al. 2021) at a tolerance ``tau``: the
  share of both surfaces lying within ``tau`` of the other surface, in [0, 1]. Higher is better.

Units: millimetres when the voxel spacing is known, pixels (voxel steps) otherwise; then one step
along any axis, slices included, counts 1, whatever the true (unknown) anisotropy. The tolerance
is in the same unit. kaggle_3m PNG/TIFF slices record no spacing, so their figures are in pixels.

Empty masks (MONAI gives NaN or inf for them; these are scored here before calling it):

* both empty: ``hd95 = 0.0`` and ``surface_dice = 1.0`` (a perfect "no tumour", as Dice 1.0);
* exactly one empty (tumour missed, or predicted where there is none): ``surface_dice = 0.0``
  and ``hd95`` = the diagonal of the whole image volume in the same unit, the largest distance
  it can hold (the BraTS worst-case convention), flagged by ``worst_case``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MM = "mm"
PIXELS = "px"
DEFAULT_TOLERANCE = 2.0
"""Surface Dice tolerance ``tau``, in the distance unit (2 mm, or 2 pixels when the spacing is unknown)."""
HD_PERCENTILE = 95.0


@dataclass(frozen=True)
class SurfaceScores:
    """Boundary metrics of one prediction against its truth.

    Attributes:
        hd95: 95th percentile Hausdorff distance, in ``unit`` (``>= 0``).
        surface_dice: normalised surface Dice at ``tolerance``, in [0, 1].
        tolerance: the surface Dice tolerance, in ``unit``.
        unit: ``"mm"`` (spacing known) or ``"px"`` (voxel steps).
        worst_case: exactly one mask was empty, so ``hd95`` is the volume diagonal (see module doc).
    """

    hd95: float
    surface_dice: float
    tolerance: float
    unit: str
    worst_case: bool = False


def stack_spacing(spacing_mm: Sequence[float] | None) -> tuple[float, float, float] | None:
    """The spacing of a ``(slices, H, W)`` stack from brainviewer's ``(row, col, slice)`` millimetres.

    Returns:
        ``(slice, row, col)`` millimetres, or ``None`` when ``spacing_mm`` is ``None``.

    Raises:
        ValueError: not three positive finite numbers.
    """
    if spacing_mm is None:
        return None
    values = tuple(float(v) for v in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm must be three positive (row, col, slice) millimetres, got {spacing_mm!r}")
    row, col, slc = values
    return (slc, row, col)


def extent_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length of the diagonal of an image of ``shape`` voxels: ``sqrt(sum((n_i * s_i)^2))``.

    Args:
        shape: voxels along each axis.
        spacing: size of a voxel along each axis (same order as ``shape``); ``None``: 1 each (pixels).
    """
    steps = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * steps) ** 2)))


def _squeeze_single_slice(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...] | None]:
    """A one-slice 3-D stack as a 2-D image: otherwise every tumour pixel would be 'surface'
    (the slice's top and bottom faces), whereas a lone image's surface is its 2-D outline."""
    if pred.ndim == 3 and pred.shape[0] == 1:
        return pred[0], truth[0], None if spacing is None else spacing[1:]
    return pred, truth, spacing


def _crop_to_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union plus one voxel of background on every side.

    Distances do not change (the box holds both surfaces, and the zero border keeps a mask that
    touches the image edge closed there, as MONAI's own padded crop does); MONAI then works on a
    small array instead of searching the whole volume for the box twice.
    """
    union = pred | truth
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return np.pad(pred[tuple(box)], 1), np.pad(truth[tuple(box)], 1)


def surface_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> SurfaceScores:
    """HD95 and surface Dice of a bool prediction against the truth (see the module doc for empties).

    Args:
        pred: ``(H, W)`` or ``(D, H, W)`` mask; any non-zero value counts as tumour.
        truth: the ground truth, same shape.
        spacing: millimetres per voxel along each axis of the arrays (for a stack built by
            :func:`numpy.stack` of slices, ``(slice, row, col)``: see :func:`stack_spacing`);
            ``None``: unknown, distances in pixels. A ``(1, H, W)`` stack is scored as one 2-D image.
        tolerance: surface Dice tolerance, in the distance unit (mm or pixels).

    Returns:
        :class:`SurfaceScores`.

    Raises:
        ValueError: shapes differ, not 2-D or 3-D, bad spacing length, or negative tolerance.
    """
    pred = np.asarray(pred).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} must have the same shape")
    if pred.ndim not in (2, 3):
        raise ValueError(f"surface metrics need 2-D or 3-D masks, got {pred.ndim}-D")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != pred.ndim:
            raise ValueError(f"spacing {spacing} has {len(spacing)} values for {pred.ndim}-D masks")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    unit = PIXELS if spacing is None else MM
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return SurfaceScores(0.0, 1.0, tolerance, unit)
    if has_pred != has_truth:
        return SurfaceScores(extent_diagonal(pred.shape, spacing), 0.0, tolerance, unit, worst_case=True)

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, truth, spacing = _squeeze_single_slice(pred, truth, spacing)
    pred, truth = _crop_to_union(pred, truth)
    y_pred = torch.from_numpy(np.ascontiguousarray(pred))[None, None]  # (batch 1, channel 1, *spatial)
    y = torch.from_numpy(np.ascontiguousarray(truth))[None, None]
    with warnings.catch_warnings():
        # MONAI 1.6 passes a deprecated argument to itself (always_return_as_numpy): not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=HD_PERCENTILE, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, [tolerance], include_background=True, spacing=spacing)
    return SurfaceScores(float(hd95.item()), float(nsd.item()), tolerance, unit)
