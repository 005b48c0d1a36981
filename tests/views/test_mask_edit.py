"""Mask editing: strokes, connected-component removal and the bounded undo history (brainviewer.views.mask_edit)."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.views.mask_edit import (
    ERASE,
    PAINT,
    MaskEdit,
    apply_stroke,
    mask_changes,
    remove_component,
    stroke_mask,
)


def two_blobs() -> np.ndarray:
    """A 32x32 mask with a 4x4 square at (2, 2) and an L-shaped blob touching only diagonally inside itself."""
    mask = np.zeros((32, 32), dtype=bool)
    mask[2:6, 2:6] = True  # 16 px
    mask[20:24, 20] = True  # 4 px, vertical bar
    mask[24, 21] = True  # diagonal neighbour of (23, 20): same component with 8-connectivity
    return mask


def test_remove_component_removes_exactly_the_clicked_component():
    mask = two_blobs()
    new, removed = remove_component(mask, 21, 20)
    assert removed == 5
    assert not new[20:25, 20:22].any()
    assert (new[2:6, 2:6]).all() and new.sum() == 16
    assert mask.sum() == 21  # the input is not changed


def test_remove_component_on_background_or_outside_changes_nothing():
    mask = two_blobs()
    for row, col in [(10, 10), (-1, 3), (3, 32), (40, 40)]:
        new, removed = remove_component(mask, row, col)
        assert removed == 0 and (new == mask).all()


def test_apply_stroke_paints_and_erases():
    mask = two_blobs()
    stroke = np.zeros_like(mask)
    stroke[4:8, 4:8] = True
    painted = apply_stroke(mask, stroke, PAINT)
    assert painted.sum() == 21 + 16 - 4  # 4 px already tumour
    erased = apply_stroke(mask, stroke, ERASE)
    assert erased.sum() == 21 - 4
    with pytest.raises(ValueError, match="paint"):
        apply_stroke(mask, stroke, "smudge")
    with pytest.raises(ValueError, match="grid"):
        apply_stroke(mask, stroke[:16], PAINT)


def test_stroke_mask_brings_a_scaled_canvas_back_to_the_scan_grid():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)  # canvas at twice the scan's size
    rgba[8:16, 10:20, 3] = 255
    rgba[30, 30, 3] = 255  # one canvas pixel: a quarter of a scan pixel, not painted
    stroke = stroke_mask(rgba, (32, 32))
    expected = np.zeros((32, 32), dtype=bool)
    expected[4:8, 5:10] = True
    assert (stroke == expected).all()
    with pytest.raises(ValueError, match="RGBA"):
        stroke_mask(rgba[..., :3], (32, 32))


def test_undo_walks_back_through_edits_and_reset_is_undoable():
    base = two_blobs()
    edit = MaskEdit.start(base)
    assert not edit.can_undo and not edit.edited
    stroke = np.zeros_like(base)
    stroke[10:12, 10:12] = True
    first = edit.apply(stroke, PAINT)
    second = first.remove_component_at(3, 3)
    assert second.changes() == (4, 16)
    assert (second.undo().mask == first.mask).all()
    assert (second.undo().undo().mask == base).all()
    assert not second.undo().undo().can_undo
    reset = second.reset()
    assert (reset.mask == base).all() and not reset.edited
    assert (reset.undo().mask == second.mask).all()
    assert edit.undo() is edit  # nothing to undo


def test_undo_history_is_bounded_and_no_op_edits_are_not_recorded():
    base = np.zeros((8, 8), dtype=bool)
    edit = MaskEdit.start(base, limit=3)
    for i in range(5):
        stroke = np.zeros_like(base)
        stroke[i, i] = True
        edit = edit.apply(stroke, PAINT)
    assert len(edit.history) == 3
    assert edit.apply(np.zeros_like(base), PAINT) is edit  # nothing changed: no history entry
    assert edit.remove_component_at(7, 0) is edit
    for _ in range(3):
        edit = edit.undo()
    assert not edit.can_undo
    assert edit.mask.sum() == 2  # the two oldest steps fell off the history
    with pytest.raises(ValueError, match="at least 1"):
        MaskEdit.start(base, limit=0)


def test_mask_changes_counts_added_and_removed():
    before = two_blobs()
    after = before.copy()
    after[2:6, 2:6] = False
    after[0, 31] = True
    assert mask_changes(before, after) == (1, 16)


def test_path_mask_rasterises_one_freehand_stroke_on_the_scan_grid():
    from brainviewer.views.mask_edit import path_mask

    # a horizontal stroke at canvas y=21 from x=10 to x=90, 8 canvas px wide, on a canvas twice the scan's size
    stroke = {"type": "path", "strokeWidth": 8, "path": [["M", 10, 21], ["Q", 50, 21, 50, 21], ["L", 90, 21]]}
    mask = path_mask(stroke, 2.0, (64, 64))
    assert mask.shape == (64, 64)
    assert mask[10, 5:45].all()  # the stroke's core, in scan pixels
    assert not mask[:7].any() and not mask[14:].any() and not mask[:, 48:].any()
    assert not path_mask({"type": "path", "path": []}, 2.0, (64, 64)).any()
