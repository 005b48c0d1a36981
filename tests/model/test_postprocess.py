"""Post-processing of predicted masks: small-component removal, largest component."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.model.postprocess import (
    keep_largest_component,
    keep_largest_volume_component,
    postprocess,
    postprocess_volume,
    remove_small_components,
)


def mask_from(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


MASK = mask_from(
    [
        "##......",
        "##......",
        "..#.....",  # touches the 2x2 block diagonally: one 8-connected component of 5 px
        "........",
        ".....###",
        ".....###",  # a 6 px block
        "#.......",  # a 1 px speck
    ]
)


def test_remove_small_components_uses_8_connectivity() -> None:
    kept = remove_small_components(MASK, 5)
    assert kept.dtype == bool and kept.shape == MASK.shape
    expected = MASK.copy()
    expected[6, 0] = False
    assert np.array_equal(kept, expected)
    only_big = remove_small_components(MASK, 6)
    assert only_big.sum() == 6 and only_big[4:6, 5:].all()
    assert not remove_small_components(MASK, 7).any()


@pytest.mark.parametrize("min_px", [0, 1])
def test_tiny_thresholds_keep_everything_and_return_a_copy(min_px: int) -> None:
    kept = remove_small_components(MASK, min_px)
    assert np.array_equal(kept, MASK) and kept is not MASK


def test_keep_largest() -> None:
    largest = keep_largest_component(MASK)
    assert largest.sum() == 6 and largest[4:6, 5:].all()
    empty = np.zeros((4, 4), dtype=bool)
    assert not keep_largest_component(empty).any()


def test_postprocess_combines_both() -> None:
    assert np.array_equal(postprocess(MASK), MASK)
    assert postprocess(MASK, min_component_px=2).sum() == 11
    assert postprocess(MASK, keep_largest=True).sum() == 6
    assert postprocess(MASK, min_component_px=7, keep_largest=True).sum() == 0
    uint8 = MASK.astype(np.uint8)
    assert postprocess(uint8, min_component_px=2).dtype == bool


def test_largest_volume_component_joins_slices_26_connected() -> None:
    first = mask_from(["##....", "##....", "......", "......"])
    # touches the block of the slice before only diagonally (row 2, col 2 vs row 1, col 1): one component
    second = mask_from(["......", "......", "..#...", "......"])
    third = mask_from(["....##", "....##", "......", "......"])  # 4 px, not touching the second slice
    kept = keep_largest_volume_component([first, second, third])
    assert [m.sum() for m in kept] == [4, 1, 0]  # 5 voxels beat 4
    assert all(m.dtype == bool and m.shape == first.shape for m in kept)
    alone = keep_largest_volume_component([first, np.zeros_like(first), third])  # a gap slice: 4 vs 4
    assert sum(m.sum() for m in alone) == 4


def test_largest_volume_component_edge_cases(caplog: pytest.LogCaptureFixture) -> None:
    assert keep_largest_volume_component([]) == []
    empty = [np.zeros((3, 3), bool)] * 2
    assert not any(m.any() for m in keep_largest_volume_component(empty))
    mixed = [np.ones((3, 3), bool), np.zeros((4, 4), bool)]
    kept = keep_largest_volume_component(mixed)  # slices of different sizes are not one volume
    assert [m.shape for m in kept] == [(3, 3), (4, 4)] and kept[0].all() and kept[0] is not mixed[0]
    assert "different sizes" in caplog.text


def test_postprocess_volume_applies_slice_then_volume_steps() -> None:
    slices = [MASK, MASK]
    assert [m.sum() for m in postprocess_volume(slices)] == [12, 12]
    assert [m.sum() for m in postprocess_volume(slices, min_component_px=2)] == [11, 11]
    # the two 6 px blocks stacked are the largest 3-D component (12 voxels vs 10 and 2)
    kept = postprocess_volume(slices, volume_keep_largest=True)
    assert [m.sum() for m in kept] == [6, 6] and kept[0][4:6, 5:].all()
