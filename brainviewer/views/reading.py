"""The reading view's picture work: window/level, ground truth and prediction over one image (filled or
as outlines), the zoom box around the tumour, and the picture as a PNG data URI for the browser.

No Streamlit here (:mod:`brainviewer.ui.reading_view` shows it). Everything works on the **display
image** the five panels show: ``(H, W, 3)`` uint8 RGB (a scan's chosen channel in grayscale, or its
three channels as RGB; non-8-bit scans are already scaled to 0..255 by
:func:`brainviewer.data.io.to_uint8`, 0.5-99.5 percentile). Window and level are therefore in these
0..255 display units, applied through a 256-entry look-up table, so moving them costs one table
look-up per pixel (about a millisecond for a 512x512 slice) whatever the scan's dtype was.

Typical use::

    window = preset_window(PRESET_BRAIN, base)            # or Window(level, width) from the sliders
    picture = compose(apply_window(base, window), truth, pred, style=STYLE_OUTLINE)
    uri = png_data_uri(picture)                            # the plotly image's source
"""

from __future__ import annotations

import base64
from typing import NamedTuple

import cv2
import numpy as np

from brainviewer.views.overlay import DEFAULT_ALPHA, GT_COLOR, PRED_COLOR, mask_contour

#: Window presets, by name. "Full range" shows the display image as the five panels do.
PRESET_FULL = "Full range"
PRESET_BRAIN = "Brain"
PRESET_TUMOUR = "Tumour contrast"
PRESETS: tuple[str, ...] = (PRESET_FULL, PRESET_BRAIN, PRESET_TUMOUR)
#: What each preset does, for the help text.
PRESET_HELP: dict[str, str] = {
    PRESET_FULL: "0-255: the picture as the five panels show it.",
    PRESET_BRAIN: "1st-99th percentile of the head's pixels (non-black): stretches the brain, darkens the air.",
    PRESET_TUMOUR: "60th-99.8th percentile of the head's pixels: spreads the brightest tissue, where FLAIR and "
    "post-contrast lesions are, over the whole grey scale.",
}
#: Percentiles of the head's pixels each preset spans (``None``: the full 0..255).
_PRESET_PERCENTILES: dict[str, tuple[float, float] | None] = {
    PRESET_FULL: None,
    PRESET_BRAIN: (1.0, 99.0),
    PRESET_TUMOUR: (60.0, 99.8),
}
#: Overlay styles.
STYLE_FILLED = "Filled"
STYLE_OUTLINE = "Outline"
STYLES: tuple[str, ...] = (STYLE_FILLED, STYLE_OUTLINE)
#: Height of the reading view's picture in CSS pixels (as wide as its column allows, square pixels).
VIEW_HEIGHT_PX = 640
#: The narrowest window (display units): a width of 1 is a hard threshold at the level.
MIN_WIDTH = 1.0
MAX_WIDTH = 255.0


class Window(NamedTuple):
    """A display window in 0..255 display units: ``level`` is its centre, ``width`` its span.

    Values at ``level - width/2`` and below are black, at ``level + width/2`` and above white, linear
    in between (the radiology convention, brightness = level, contrast = 1/width).
    """

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2


#: The identity window: the display image unchanged.
FULL_WINDOW = Window(127.5, 255.0)


def window_from_range(low: float, high: float) -> Window:
    """The window spanning ``low..high`` (display units); a span under :data:`MIN_WIDTH` is widened to it."""
    width = float(np.clip(high - low, MIN_WIDTH, MAX_WIDTH))
    return Window(float((low + high) / 2), width)


def luminance(base: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 brightness of a display image (its mean over the three channels)."""
    base = _check_base(base)
    return base.mean(axis=2).round().astype(np.uint8)


def preset_window(preset: str, base: np.ndarray) -> Window:
    """The window of ``preset`` (one of :data:`PRESETS`) for this display image.

    The Brain and Tumour-contrast presets take percentiles of the head's pixels (brightness > 0; all
    pixels when the picture is black), so they adapt to each slice the way an auto-window does.

    Raises:
        ValueError: an unknown preset (the message lists the known ones).
    """
    if preset not in _PRESET_PERCENTILES:
        raise ValueError(f"unknown window preset {preset!r}; choose one of {', '.join(PRESETS)}")
    percentiles = _PRESET_PERCENTILES[preset]
    if percentiles is None:
        return FULL_WINDOW
    gray = luminance(base)
    head = gray[gray > 0]
    values = head if head.size else gray.ravel()
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return window_from_range(low, high)


def window_lut(window: Window) -> np.ndarray:
    """The ``(256,)`` uint8 look-up table of ``window``: display value in, windowed value out.

    Raises:
        ValueError: a width outside ``[1, 255]`` or a level outside ``[0, 255]``.
    """
    level, width = float(window.level), float(window.width)
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"window width must be between {MIN_WIDTH:g} and {MAX_WIDTH:g}, got {width:g}")
    if not 0.0 <= level <= 255.0:
        raise ValueError(f"window level must be between 0 and 255, got {level:g}")
    values = np.arange(256, dtype=np.float32)
    scaled = (values - (level - width / 2)) / width
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def apply_window(base: np.ndarray, window: Window) -> np.ndarray:
    """The display image seen through ``window``: ``(H, W, 3)`` uint8, a new array."""
    base = _check_base(base)
    if window == FULL_WINDOW:
        return base.copy()
    return cv2.LUT(base, window_lut(window))


def compose(
    picture: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    show_truth: bool = True,
    show_pred: bool = True,
    style: str = STYLE_FILLED,
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """Ground truth (red) and prediction (green) over one picture.

    ``Filled`` blends each mask's colour at ``alpha`` and draws its outline solid (where both masks
    cover a pixel the colours mix to yellow-brown); ``Outline`` draws only the outlines (inner
    boundaries, 1 px), so the scan under the masks stays visible. A mask that is ``None`` or switched
    off is not drawn.

    Args:
        picture: ``(H, W, 3)`` uint8 (e.g. :func:`apply_window`'s output).
        truth, pred: ``(H, W)`` bool masks, or ``None``.
        show_truth, show_pred: draw the layer.
        style: one of :data:`STYLES`.
        alpha: opacity of the filled colour, in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` uint8, a new array.

    Raises:
        ValueError: an unknown style, alpha outside ``[0, 1]``, or a mask of another size.
    """
    if style not in STYLES:
        raise ValueError(f"unknown overlay style {style!r}; choose one of {', '.join(STYLES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = np.array(_check_base(picture), copy=True)
    layers = [(truth, GT_COLOR, show_truth), (pred, PRED_COLOR, show_pred)]
    for mask, color, shown in layers:
        if mask is None or not shown:
            continue
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != out.shape[:2]:
            raise ValueError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the picture is {out.shape[1]}x{out.shape[0]}; "
                "a mask must have the scan's size."
            )
        if style == STYLE_FILLED and mask.any():
            under = out[mask].astype(np.float32)
            out[mask] = np.rint((1.0 - alpha) * under + alpha * np.asarray(color, np.float32)).astype(np.uint8)
    for mask, color, shown in layers:  # outlines last, so neither fill covers the other's outline
        if mask is not None and shown:
            out[mask_contour(mask)] = color
    return out


def fit_to(shape: tuple[int, int], array: np.ndarray | None) -> np.ndarray | None:
    """``array`` (a ``(h, w)`` bool mask or float map) resized to ``shape`` ``(H, W)`` when its size differs, e.g.
    a full-resolution mask over a display copy of a large scan: masks by nearest neighbour (they stay bool),
    maps by area averaging when shrinking, linear when growing. ``None`` and same-size arrays pass through."""
    if array is None:
        return None
    array = np.asarray(array)
    if array.shape[:2] == tuple(shape):
        return array
    size = (int(shape[1]), int(shape[0]))
    if array.dtype == bool:
        return cv2.resize(array.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    shrink = array.shape[0] > shape[0]
    return cv2.resize(array.astype(np.float32), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def zoom_box(
    masks: list[np.ndarray | None], shape: tuple[int, int], margin: float = 0.5, min_side: int = 32
) -> tuple[int, int, int, int] | None:
    """A square box around every pixel of ``masks``, for "zoom to tumour".

    The box is the masks' bounding square grown by ``margin`` of its side on each side, at least
    ``min_side`` pixels, and kept inside the image (shifted, not cut, where the image allows).

    Args:
        masks: ``(H, W)`` bool masks (``None`` entries are skipped).
        shape: ``(H, W)`` of the image.
        margin: extra space on each side, as a share of the tumour's larger side.
        min_side: the smallest side of the box in pixels.

    Returns:
        ``(row0, row1, col0, col1)`` with ``row1``/``col1`` exclusive, or ``None`` when no mask has a pixel.
    """
    height, width = int(shape[0]), int(shape[1])
    union = np.zeros((height, width), dtype=bool)
    for mask in masks:
        if mask is not None:
            union |= np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(union.any(axis=1))[0], np.nonzero(union.any(axis=0))[0]
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(r1 - r0, c1 - c0)
    side = int(min(max(round(side * (1 + 2 * margin)), min_side), max(height, width)))
    return (*_span(r0, r1, side, height), *_span(c0, c1, side, width))


def _span(start: int, stop: int, side: int, limit: int) -> tuple[int, int]:
    """A span of ``min(side, limit)`` pixels centred on ``start:stop``, shifted to fit in ``0:limit``."""
    side = min(side, limit)
    begin = (start + stop) // 2 - side // 2
    begin = min(max(begin, 0), limit - side)
    return begin, begin + side


def png_data_uri(picture: np.ndarray, compress_level: int = 1) -> str:
    """A ``(H, W, 3)`` uint8 picture as a ``data:image/png;base64,...`` URI (lossless; fast compression)."""
    picture = _check_base(picture)
    ok, encoded = cv2.imencode(".png", picture[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB
        raise ValueError("the picture could not be encoded as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def reading_figure(
    picture: np.ndarray, box: tuple[int, int, int, int] | None, revision: str, height_px: int = VIEW_HEIGHT_PX
) -> dict:
    """The plotly figure (a plain dict, no validation cost) of ``picture``: an image trace of its PNG, square
    pixels, pan on drag, the axes limited to ``box`` (``(row0, row1, col0, col1)``) when given."""
    x_axis: dict = {"visible": False, "constrain": "domain"}
    y_axis: dict = {"visible": False, "scaleanchor": "x", "constrain": "domain"}
    if box is not None:
        r0, r1, c0, c1 = box
        x_axis["range"] = [c0 - 0.5, c1 - 0.5]
        y_axis["range"] = [r1 - 0.5, r0 - 0.5]  # image rows grow downwards
    else:  # no range: plotly fits the image, and a zoom the user made is kept across reruns (uirevision)
        y_axis["autorange"] = "reversed"
    return {
        "data": [
            {
                "type": "image",
                "source": png_data_uri(picture),
                "hovertemplate": "column %{x}, row %{y}<extra></extra>",
            }
        ],
        "layout": {
            "height": height_px,
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "xaxis": x_axis,
            "yaxis": y_axis,
            "dragmode": "pan",
            "uirevision": revision,
        },
    }


def _check_base(base: np.ndarray) -> np.ndarray:
    base = np.asarray(base)
    if base.dtype != np.uint8 or base.ndim != 3 or base.shape[2] != 3:
        raise ValueError(
            f"expected a (H, W, 3) uint8 display image, got {base.shape} {base.dtype}; "
            "make one with brainviewer.views.overlay.display_rgb"
        )
    return base
