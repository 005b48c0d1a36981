"""Post-processing of predicted masks: small-component removal, largest component."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.postprocess import keep_largest_component, postprocess, remove_small_components


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
