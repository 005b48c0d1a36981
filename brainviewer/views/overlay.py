"""Pictures for people: mask overlays, PNG bytes and the five-panel review figure.

Plain NumPy / PIL / matplotlib (Agg, no pyplot state): no Streamlit, no torch.

Conventions
-----------
* A **display image** is ``(H, W, 3)`` ``uint8`` RGB. Grayscale scans are repeated into
  the three channels; 3-channel LGG scans (pre-contrast, FLAIR, post-contrast) are shown
  as RGB as they are, the way LGG viewers and notebooks show them. Non-8-bit scans are
  windowed with :func:`brainviewer.data.io.to_uint8` first.
* Ground truth is drawn in :data:`GT_COLOR` (red), predictions in :data:`PRED_COLOR` (green).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from brainviewer.data.io import to_uint8

#: Colour of ground-truth masks in overlays (RGB).
GT_COLOR: tuple[int, int, int] = (255, 0, 0)
#: Colour of predicted masks in overlays (RGB).
PRED_COLOR: tuple[int, int, int] = (0, 255, 0)
#: Default opacity of the mask colour over the scan.
DEFAULT_ALPHA = 0.4
#: Titles of the five review panels, in order.
PANEL_TITLES: tuple[str, ...] = (
    "Original",
    "Ground-truth mask",
    "Ground truth over scan",
    "Predicted mask",
    "Prediction over scan",
)


#: Display choices for 3-channel scans: label -> channel index (``None`` = the three as RGB).
#: The LGG slices hold pre-contrast, FLAIR and post-contrast; FLAIR shows these tumours best, and a
#: grayscale base keeps the red (truth) and green (prediction) overlays unambiguous.
DISPLAY_CHANNELS: dict[str, int | None] = {
    "FLAIR (channel 2)": 1,
    "Pre-contrast (channel 1)": 0,
    "Post-contrast (channel 3)": 2,
    "All three as RGB": None,
}
DEFAULT_DISPLAY_CHANNEL: int | None = 1


def display_rgb(image: np.ndarray, channel: int | None = None) -> np.ndarray:
    """A scan as a ``(H, W, 3)`` uint8 RGB picture.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` scan of any numeric dtype.
        channel: for a 3-channel scan, show this channel (0, 1 or 2) in grayscale;
            ``None`` shows the three channels as RGB. Ignored for grayscale scans.

    Returns:
        ``(H, W, 3)`` uint8; a new array (never a view of ``image``).

    Raises:
        ValueError: for any other shape, or a channel outside 0..2.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        gray = to_uint8(image)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        if channel is None:
            return np.array(to_uint8(image), dtype=np.uint8, copy=True)
        if channel not in (0, 1, 2):
            raise ValueError(f"channel must be 0, 1, 2 or None; got {channel!r}")
        gray = to_uint8(np.ascontiguousarray(image[..., channel]))
        return np.repeat(gray[..., None], 3, axis=2)
    raise ValueError(f"image has shape {image.shape}; expected (H, W) or (H, W, 3). Read it with brainviewer.data.io.")


def mask_display(mask: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` bool mask as a ``(H, W)`` uint8 picture: tumour 255 (white), background 0."""
    return np.asarray(mask, dtype=bool).astype(np.uint8) * 255


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """The inner boundary of a ``(H, W)`` bool mask: mask pixels with a 4-neighbour outside it.

    Pixels on the image border count as boundary when they belong to the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    padded = np.pad(mask.astype(np.uint8), 1)  # outside the image is background
    eroded = cv2.erode(padded, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8))[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: Sequence[int] = GT_COLOR,
    alpha: float = DEFAULT_ALPHA,
    contour: bool = False,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a mask's colour over a scan.

    Under the mask each pixel becomes ``(1 - alpha) * scan + alpha * color`` (rounded);
    outside it the scan is unchanged. With ``contour=True`` the mask's inner boundary is
    drawn in ``color`` at full opacity, so the outline stays visible at low ``alpha``.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` scan, any numeric dtype (see :func:`display_rgb`).
        mask: ``(H, W)`` bool (or 0/nonzero) mask of the same height and width.
        color: RGB colour, three ints in 0..255.
        alpha: opacity of the colour, in ``[0, 1]``.
        contour: also draw the outline at full opacity.
        base: the scan's :func:`display_rgb` when already computed (saves the conversion).

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: mask size differs from the scan, or ``alpha``/``color`` out of range.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb_color = np.asarray(color, dtype=np.float32)
    if rgb_color.shape != (3,) or rgb_color.min() < 0 or rgb_color.max() > 255:
        raise ValueError(f"color must be three values in 0..255, got {color!r}")
    out = display_rgb(image) if base is None else np.array(base, dtype=np.uint8, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != out.shape[:2]:
        raise ValueError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the scan is {out.shape[1]}x{out.shape[0]}; "
            "a mask must have the scan's size."
        )
    if mask.any():
        under = out[mask].astype(np.float32)
        out[mask] = np.clip(np.rint((1.0 - alpha) * under + alpha * rgb_color), 0, 255).astype(np.uint8)
        if contour:
            out[mask_contour(mask)] = rgb_color.astype(np.uint8)
    return out


def placeholder_image(shape: tuple[int, int], text: str) -> np.ndarray:
    """A light-grey ``(H, W, 3)`` uint8 picture with ``text`` centred on it, for unavailable panels.

    Args:
        shape: ``(H, W)`` of the scan the panel stands beside (so the row stays aligned).
        text: one or more lines (``\\n``) to write.
    """
    height, width = int(shape[0]), int(shape[1])
    canvas = Image.new("RGB", (width, height), (240, 242, 246))
    lines = text.split("\n")
    longest = max(len(line) for line in lines) or 1
    size = int(max(8, min(width * 1.6 / longest, height / (3 * len(lines)), 48)))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(canvas).multiline_text(
        (width / 2, height / 2), text, fill=(96, 102, 114), font=font, anchor="mm", align="center", spacing=size // 3
    )
    return np.asarray(canvas)


def probs_to_rgb(probs: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """Colour a ``(H, W)`` probability map in ``[0, 1]`` with a matplotlib colormap: ``(H, W, 3)`` uint8."""
    from matplotlib import colormaps

    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    index = np.clip(np.rint(np.nan_to_num(np.asarray(probs, dtype=np.float32)) * 255), 0, 255).astype(np.uint8)
    return lut[index]


#: Longest side, in pixels, of the five overview panels as sent to the browser. They are drawn about 260 px
#: wide on a 1440 px screen, and encoding five full 512x512 panels as PNG on every rerun (a threshold move)
#: took longer than the rest of the rerun; the reading view shows the scan at full resolution.
OVERVIEW_MAX_SIDE = 320


def overview_picture(image: np.ndarray, max_side: int = OVERVIEW_MAX_SIDE) -> np.ndarray:
    """A panel picture shrunk (area averaging) so that its longer side is at most ``max_side``.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 picture.
        max_side: the longest side to keep; a smaller picture comes back unchanged (the same array).

    Returns:
        uint8 picture of the same number of channels, aspect ratio kept.
    """
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def image_to_png_bytes(image: np.ndarray, compress_level: int = 3) -> bytes:
    """Encode a ``(H, W)`` or ``(H, W, 3)`` uint8 picture as PNG bytes (same size).

    Raises:
        ValueError: for other dtypes or shapes (convert with :func:`display_rgb` first).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"PNG export needs uint8 pixels, got {image.dtype}; use display_rgb() first.")
    if image.ndim == 2:
        mode = "L"
    elif image.ndim == 3 and image.shape[2] == 3:
        mode = "RGB"
    else:
        raise ValueError(f"picture has shape {image.shape}; expected (H, W) or (H, W, 3).")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode=mode).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def mask_to_png_bytes(mask: np.ndarray) -> bytes:
    """Encode a ``(H, W)`` bool mask as an 8-bit grayscale PNG of the same size, values {0, 255}.

    This is the format of the LGG ``_mask`` files, so a saved prediction can be read back
    with :func:`brainviewer.data.io.read_mask` or uploaded as ground truth.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask has shape {mask.shape}; expected (H, W).")
    return image_to_png_bytes(mask_display(mask))


def _placeholder(ax, shape: tuple[int, int], text: str) -> None:
    """Draw an unavailable panel: a light-grey scan-sized box with ``text`` in the middle."""
    ax.imshow(np.full((*shape, 3), (240, 242, 246), dtype=np.uint8), interpolation="nearest")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555b66", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#c9ced6")


def five_panel_figure(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    probs: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    note: str = "",
    heading: str = "",
    dpi: int = 100,
    display_channel: int | None = None,
) -> bytes:
    """The review figure as PNG bytes.

    Five panels in a row: the original scan, the ground-truth mask, ground truth over the
    scan (red), the predicted mask, and the prediction over the scan (green). Missing
    ground truth or prediction is drawn as a labelled placeholder panel. When ``probs`` is
    given, a sixth panel at the end of the row shows the probability map with a colour bar.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` scan.
        truth: ``(H, W)`` bool ground truth, or ``None``.
        pred: ``(H, W)`` bool predicted mask, or ``None`` (no model).
        probs: ``(H, W)`` float probabilities in ``[0, 1]``, or ``None``.
        titles: five panel titles (default :data:`PANEL_TITLES`).
        alpha: overlay opacity.
        note: footer line, e.g. ``"SYNTHETIC PHANTOM"`` or the model name and threshold.
        heading: title line above the panels, e.g. the scan's file name.
        dpi: resolution. The figure is 3 inches wide per panel and 3.8 inches high.

    Returns:
        PNG bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    titles = list(titles or PANEL_TITLES)
    if len(titles) != 5:
        raise ValueError(f"five_panel_figure needs 5 titles, got {len(titles)}")
    base = display_rgb(image, display_channel)
    shape = base.shape[:2]
    columns = 5 if probs is None else 6
    fig = Figure(figsize=(3 * columns, 3.8), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, columns, squeeze=True)
    no_truth, no_pred = "No ground truth", "No prediction\n(no model loaded)"
    panels: list[np.ndarray | str] = [
        base,
        mask_display(truth) if truth is not None else no_truth,
        overlay(base, truth, GT_COLOR, alpha, contour=True, base=base) if truth is not None else no_truth,
        mask_display(pred) if pred is not None else no_pred,
        overlay(base, pred, PRED_COLOR, alpha, contour=True, base=base) if pred is not None else no_pred,
    ]
    for ax, title, panel in zip(axes[:5], titles, panels, strict=True):
        ax.set_title(title, fontsize=11)
        if isinstance(panel, str):
            _placeholder(ax, shape, panel)
        else:
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_axis_off()
    if probs is not None:
        shown = axes[5].imshow(np.asarray(probs, dtype=np.float32), cmap="magma", vmin=0.0, vmax=1.0)
        axes[5].set_title("Tumour probability", fontsize=11)
        axes[5].set_axis_off()
        fig.colorbar(shown, ax=axes[5], fraction=0.046, pad=0.04)
    if heading:
        fig.suptitle(heading, fontsize=12, fontweight="bold")
    if note:
        fig.text(0.5, 0.02, note, ha="center", va="bottom", fontsize=10, color="#333333")
    fig.tight_layout(rect=(0, 0.07 if note else 0, 1, 0.94 if heading else 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()
