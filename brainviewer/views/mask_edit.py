"""Editing a predicted mask by hand: strokes painted or erased, connected components removed with a
click, and a bounded undo history. Pure functions on arrays; no Streamlit here (the editor widget is
:mod:`brainviewer.ui.mask_editor`).

Masks are ``(H, W)`` bool arrays at the scan's size. A stroke comes from the drawing canvas as an
``(h, w, 4)`` RGBA uint8 picture of the strokes alone (transparent elsewhere), at the canvas's size,
which is the scan's size times a display scale; :func:`stroke_mask` brings it back to the scan's grid.

Typical use::

    edit = MaskEdit.start(pred_mask)
    edit = edit.apply(stroke_mask(rgba, pred_mask.shape), PAINT)
    edit = edit.remove_component_at(row=40, col=52)
    edit = edit.undo()
    added, removed = edit.changes()
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

PAINT = "paint"
ERASE = "erase"
#: Edits the undo history keeps; older ones are dropped (each is one packed mask, H*W/8 bytes).
HISTORY_LIMIT = 30
#: A canvas pixel counts as painted when its alpha reaches this (0-255; anti-aliased stroke edges are fainter).
STROKE_ALPHA = 128


def _check_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {mask.shape}; pass one slice's mask.")
    return mask.astype(bool, copy=False)


def stroke_mask(rgba: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a scan of ``shape`` ``(H, W)`` that a canvas picture of strokes covers.

    Args:
        rgba: ``(h, w, 4)`` uint8 canvas picture (strokes opaque, the rest transparent), any size with
            the scan's aspect ratio (the canvas shows the scan scaled by a display factor, and a screen
            with a device pixel ratio above 1 returns more pixels still).
        shape: the scan's ``(H, W)``.

    Returns:
        ``(H, W)`` bool: a scan pixel is painted when at least half of the canvas area over it is painted
        (box-filtered alpha >= :data:`STROKE_ALPHA`).

    Raises:
        ValueError: ``rgba`` is not an ``(h, w, 4)`` picture.
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"a canvas picture is (h, w, 4) RGBA, got shape {rgba.shape}; ask the canvas for image_data.")
    alpha = Image.fromarray(np.ascontiguousarray(rgba[..., 3]).astype(np.uint8), mode="L")
    if alpha.size != (shape[1], shape[0]):
        alpha = alpha.resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(alpha) >= STROKE_ALPHA


def path_mask(obj: dict, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a scan of ``shape`` ``(H, W)`` that one free-hand canvas stroke covers.

    Args:
        obj: a fabric.js ``path`` object of the canvas's ``json_data`` (``path`` commands in canvas pixels,
            ``strokeWidth``); one stroke, so strokes can be applied (and undone) one at a time.
        scale: canvas pixels per scan pixel.
        shape: the scan's ``(H, W)``.

    Returns:
        ``(H, W)`` bool, as :func:`stroke_mask` would give for the stroke drawn alone (round caps and joins).
    """
    points = [
        (float(command[i]), float(command[i + 1]))
        for command in obj.get("path") or []
        for i in range(1, len(command) - 1, 2)
    ]
    size = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))
    alpha = Image.new("L", size, 0)
    if points:
        width = float(obj.get("strokeWidth", 1))
        draw = ImageDraw.Draw(alpha)
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(width)), joint="curve")
        radius = width / 2
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    rgba = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    rgba[..., 3] = np.asarray(alpha)
    return stroke_mask(rgba, shape)


def apply_stroke(mask: np.ndarray, stroke: np.ndarray, mode: str) -> np.ndarray:
    """``mask`` with ``stroke`` painted in (``mode`` :data:`PAINT`) or erased (:data:`ERASE`); a new array.

    Raises:
        ValueError: shapes differ, or an unknown ``mode``.
    """
    mask, stroke = _check_mask(mask), _check_mask(stroke, "stroke")
    if mask.shape != stroke.shape:
        raise ValueError(f"the stroke is {stroke.shape} but the mask is {mask.shape}; bring it to the mask's grid.")
    if mode == PAINT:
        return mask | stroke
    if mode == ERASE:
        return mask & ~stroke
    raise ValueError(f"mode must be {PAINT!r} or {ERASE!r}, got {mode!r}")


def remove_component(mask: np.ndarray, row: int, col: int) -> tuple[np.ndarray, int]:
    """Remove the connected component (8-connectivity) of ``mask`` holding pixel ``(row, col)``.

    Returns:
        ``(new_mask, removed_px)``: a new ``(H, W)`` bool mask and how many pixels were removed (0, and
        the mask unchanged, when the pixel is background or outside the mask).
    """
    mask = _check_mask(mask)
    height, width = mask.shape
    if not (0 <= row < height and 0 <= col < width) or not mask[row, col]:
        return mask.copy(), 0
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    component = labels == labels[row, col]
    return mask & ~component, int(np.count_nonzero(component))


def mask_changes(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """``(added_px, removed_px)``: pixels tumour in ``after`` only, and in ``before`` only."""
    before, after = _check_mask(before), _check_mask(after)
    return int(np.count_nonzero(after & ~before)), int(np.count_nonzero(before & ~after))


def _pack(mask: np.ndarray) -> bytes:
    return np.packbits(mask, axis=None).tobytes()


def _unpack(packed: bytes, shape: tuple[int, int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=shape[0] * shape[1])
    return bits.reshape(shape).astype(bool)


@dataclass(frozen=True)
class MaskEdit:
    """An edited mask with its starting point and a bounded undo history (immutable: every edit returns a
    new :class:`MaskEdit`). Masks are kept bit-packed (``H*W/8`` bytes each).

    Attributes:
        shape: ``(H, W)`` of the masks.
        base: the starting mask (the prediction), packed.
        current: the edited mask, packed.
        history: earlier states, oldest first, at most ``limit``.
        limit: how many undo steps are kept.
    """

    shape: tuple[int, int]
    base: bytes
    current: bytes
    history: tuple[bytes, ...] = ()
    limit: int = HISTORY_LIMIT

    @classmethod
    def start(cls, base: np.ndarray, limit: int = HISTORY_LIMIT) -> MaskEdit:
        """An edit starting from ``base`` ``(H, W)`` (the predicted mask), nothing changed yet."""
        base = _check_mask(base)
        if limit < 1:
            raise ValueError(f"the undo history needs room for at least 1 step, got limit={limit}")
        packed = _pack(base)
        return cls((int(base.shape[0]), int(base.shape[1])), packed, packed, (), limit)

    @property
    def mask(self) -> np.ndarray:
        """The edited ``(H, W)`` bool mask (a new array)."""
        return _unpack(self.current, self.shape)

    @property
    def base_mask(self) -> np.ndarray:
        """The starting ``(H, W)`` bool mask (a new array)."""
        return _unpack(self.base, self.shape)

    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    @property
    def edited(self) -> bool:
        """Whether the mask differs from its starting point."""
        return self.current != self.base

    def push(self, new_mask: np.ndarray) -> MaskEdit:
        """This edit with ``new_mask`` as the current mask; the previous one goes on the history (the oldest
        dropped beyond ``limit``). A mask equal to the current one changes nothing."""
        new_mask = _check_mask(new_mask)
        if new_mask.shape != self.shape:
            raise ValueError(f"the new mask is {new_mask.shape} but this edit is {self.shape}")
        packed = _pack(new_mask)
        if packed == self.current:
            return self
        history = (*self.history, self.current)[-self.limit :]
        return MaskEdit(self.shape, self.base, packed, history, self.limit)

    def apply(self, stroke: np.ndarray, mode: str) -> MaskEdit:
        """Paint or erase ``stroke`` (``(H, W)`` bool), see :func:`apply_stroke`."""
        return self.push(apply_stroke(self.mask, stroke, mode))

    def remove_component_at(self, row: int, col: int) -> MaskEdit:
        """Remove the component under ``(row, col)``, see :func:`remove_component`."""
        new_mask, removed = remove_component(self.mask, row, col)
        return self.push(new_mask) if removed else self

    def undo(self) -> MaskEdit:
        """The state before the last edit (this one when there is nothing to undo)."""
        if not self.history:
            return self
        return MaskEdit(self.shape, self.base, self.history[-1], self.history[:-1], self.limit)

    def reset(self) -> MaskEdit:
        """Back to the starting mask; undoable."""
        return self.push(self.base_mask)

    def changes(self) -> tuple[int, int]:
        """``(added_px, removed_px)`` against the starting mask."""
        return mask_changes(self.base_mask, self.mask)
