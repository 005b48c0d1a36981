"""Large scans are drawn from a display copy; the prediction, metrics and mask download stay at full size."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.views import display_copy
from brainviewer.views.display_copy import display_shape, shrink_mask
from brainviewer.views.review import ReviewItem, render_review, threshold_view


def test_display_shape_keeps_small_scans_and_the_aspect_of_large_ones() -> None:
    assert display_shape((256, 256)) is None
    assert display_shape((1024, 1000)) is None
    assert display_shape((4096, 4096)) == (1024, 1024)
    assert display_shape((4096, 3072)) == (1024, 768)
    assert display_shape((3000, 10)) == (1024, 3)
    assert display_shape((100, 5000), max_side=64) == (1, 64)


def test_shrink_mask_keeps_a_small_component_visible() -> None:
    mask = np.zeros((4096, 4096), bool)
    mask[101, 2001] = True  # one full-size pixel
    mask[3000:3400, 100:500] = True
    small = shrink_mask(mask, (1024, 1024))
    assert small.dtype == bool and small.shape == (1024, 1024)
    assert small[25, 500]  # the single pixel's display pixel
    assert small[750:850, 25:125].all() and not small[600:700, 600:700].any()
    assert not shrink_mask(np.zeros((2048, 2048), bool), (1024, 1024)).any()


def _large_item(side: int) -> tuple[ReviewItem, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (side, side), dtype=np.uint16)
    truth = np.zeros((side, side), bool)
    truth[side // 4 : side // 2, side // 4 : side // 2] = True
    probs = np.zeros((side, side), np.float32)
    probs[side // 4 + 7 : side // 2 + 7, side // 4 : side // 2] = 0.8
    probs[side - 3, 5] = 0.9  # one full-size pixel of prediction far from the rest
    return ReviewItem("big.png", image, truth), probs


@pytest.mark.parametrize("channel", [None, 1])
def test_a_large_scan_is_drawn_small_and_scored_at_full_size(channel: int | None) -> None:
    item, probs = _large_item(2048)
    if channel is not None:
        item.image = np.stack([item.image] * 3, axis=2)
    view = render_review(item, probs, threshold=0.5, display_channel=channel)
    full = threshold_view(probs, 0.5, item.truth)
    assert view.pred_mask is not None and view.pred_mask.shape == (2048, 2048)
    assert (view.pred_mask == full.pred_mask).all()
    assert view.metrics == full.metrics and view.areas == full.areas
    for panel in view.panels:
        assert panel.image is not None and panel.image.shape[:2] == (1024, 1024), panel.title
    assert view.panels[3].image[1022, 2] == 255  # the lone predicted pixel is visible in the copy
    assert view.display_probs is not None and view.display_probs.shape == (1024, 1024)
    assert view.probs is probs  # the full-size probabilities are kept for the figure download
    assert view.display_note is not None and "2048×2048 px scan is drawn at 1024×1024 px" in view.display_note
    assert display_copy.DISPLAY_MAX_SIDE_ENV in view.display_note
    assert "drawn at 1024×1024" in view.panels[0].caption
    assert view.mask_png() is not None and len(view.mask_png()) > 0
    again = render_review(item, probs, threshold=0.7, display_channel=channel)  # the copies are made once
    assert again.panels[0].image is view.panels[0].image


def test_a_scan_at_the_display_size_is_drawn_as_it_is() -> None:
    item, probs = _large_item(1024)
    view = render_review(item, probs, threshold=0.5)
    assert view.shown is None and view.display_note is None and view.display_probs is probs
    assert view.panels[3].image is not None and (view.panels[3].image > 0).sum() == view.areas.pred_px
