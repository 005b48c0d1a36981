"""Display copies of large scans: the panels of a big scan are drawn from a copy at most
:data:`DISPLAY_MAX_SIDE` pixels on its longer side, so moving the threshold stays fast.

A scan at the pixel budget (4096 x 4096, :data:`brainviewer.data.io.MAX_SCAN_PIXELS`) has 16.8 million
pixels: five full-size RGB panels are 250 MB of pictures to blend and encode on every slider move, and a
browser shows them a few hundred pixels wide anyway. The probabilities, the thresholded mask, the metrics,
the areas and the predicted-mask download stay at full resolution (:func:`brainviewer.views.review.render_review`);
only the pictures are shrunk. No Streamlit here::

    shape = display_shape((4096, 4096))         # (1024, 1024); None when the scan is small enough
    small = shrink_picture(rgb, shape)          # (1024, 1024, 3) uint8
    small_mask = shrink_mask(mask, shape)       # (1024, 1024) bool
"""

from __future__ import annotations

import cv2
import numpy as np

from brainviewer.limits import env_limit, scan_slot
from brainviewer.views.overlay import display_rgb

DISPLAY_MAX_SIDE_ENV = "BRAINVIEWER_DISPLAY_MAX_SIDE"
#: Longest side, in pixels, of the pictures drawn for a scan; larger scans are shown shrunk to it.
DISPLAY_MAX_SIDE = env_limit(DISPLAY_MAX_SIDE_ENV, 1024, minimum=64)


def display_shape(shape: tuple[int, int], max_side: int | None = None) -> tuple[int, int] | None:
    """``(h, w)`` of the display copy of an ``(H, W)`` scan, or ``None`` when it is shown as it is.

    The aspect ratio is kept (rounded), the longer side becomes ``max_side`` (default
    :data:`DISPLAY_MAX_SIDE`), and each side is at least 1 pixel.
    """
    limit = DISPLAY_MAX_SIDE if max_side is None else int(max_side)
    height, width = int(shape[0]), int(shape[1])
    side = max(height, width)
    if side <= limit:
        return None
    scale = limit / side
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_picture(picture: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, C)`` picture shrunk to ``shape`` by pixel-area averaging (no aliasing).

    Returns the same dtype (uint8 pictures stay uint8; float probabilities stay float in the same range).
    """
    height, width = shape
    return cv2.resize(np.ascontiguousarray(picture), (width, height), interpolation=cv2.INTER_AREA)


def shrink_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An ``(H, W)`` bool mask shrunk to ``shape``: a display pixel is set when any full-size pixel under it is.

    "Any" rather than "most", so a small predicted component (a few full-size pixels) stays visible in the
    display copy instead of vanishing; outlines are slightly thicker than the full-size mask's. Returns bool.
    """
    if not np.any(mask):
        return np.zeros(shape, dtype=bool)
    # INTER_AREA averages 0/1 over each display pixel's footprint: > 0 where any full-size pixel is set
    fraction = shrink_picture(np.asarray(mask, dtype=np.float32), shape)
    return fraction > 0


def shrunk_base(image: np.ndarray, channel: int | None, shown: tuple[int, int], cache: dict) -> np.ndarray:
    """The display copy of a scan as ``shown`` ``(h, w, 3)`` uint8 RGB (see
    :func:`~brainviewer.views.overlay.display_rgb` for ``channel``), made once per channel and kept in ``cache``."""
    key = ("base", channel, shown)
    if key not in cache:
        with scan_slot():  # full-size float copies of a large scan: a bounded number at once
            cache[key] = shrink_picture(display_rgb(image, channel), shown)
    return cache[key]


def shrunk_truth(truth: np.ndarray, shown: tuple[int, int], cache: dict) -> np.ndarray:
    """The display copy of a ground-truth mask (:func:`shrink_mask`), made once and kept in ``cache``."""
    key = ("truth", shown)
    if key not in cache:
        cache[key] = shrink_mask(truth, shown)
    return cache[key]


def display_note(full: tuple[int, int], shown: tuple[int, int]) -> str:
    """The sentence the page shows under a scan drawn from its display copy."""
    factor = max(full) / max(shown)
    return (
        f"This {full[1]}×{full[0]} px scan is drawn at {shown[1]}×{shown[0]} px ({factor:.1f}× smaller) so that "
        "moving the threshold stays fast. The prediction, the metrics, the areas and the predicted-mask download "
        "are at full resolution; the panels and the overlay download are at the display size. "
        f"(An operator can change the display size with the environment variable {DISPLAY_MAX_SIDE_ENV}.)"
    )
