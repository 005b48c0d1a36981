"""Overlays, PNG export and the five-panel figure (brainviewer.views.overlay)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from brainviewer.data.io import read_image, read_mask, to_uint8
from brainviewer.views.overlay import (
    GT_COLOR,
    PRED_COLOR,
    display_rgb,
    five_panel_figure,
    image_to_png_bytes,
    mask_contour,
    mask_to_png_bytes,
    overlay,
    placeholder_image,
    probs_to_rgb,
)


def _square_mask(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        return img.size


# --- overlay colours --------------------------------------------------------------------------


@pytest.mark.parametrize("color", [GT_COLOR, PRED_COLOR])
def test_full_opacity_paints_mask_pure_colour_and_leaves_outside_unchanged(color):
    image = np.full((10, 12), 100, dtype=np.uint8)
    mask = _square_mask(image.shape, 2, 3, 4)
    out = overlay(image, mask, color=color, alpha=1.0)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    assert (out[mask] == np.array(color, dtype=np.uint8)).all()
    assert (out[~mask] == 100).all()


def test_gt_and_pred_colours_are_red_and_green():
    assert GT_COLOR == (255, 0, 0)
    assert PRED_COLOR == (0, 255, 0)


def test_partial_opacity_blends_by_hand_computed_values():
    image = np.full((8, 8), 100, dtype=np.uint8)
    mask = _square_mask(image.shape, 0, 0, 2)
    out = overlay(image, mask, color=GT_COLOR, alpha=0.4)
    # 0.6 * 100 + 0.4 * 255 = 162 ; 0.6 * 100 + 0.4 * 0 = 60
    assert out[0, 0].tolist() == [162, 60, 60]
    assert out[5, 5].tolist() == [100, 100, 100]
    green = overlay(image, mask, color=PRED_COLOR, alpha=0.4)
    assert green[1, 1].tolist() == [60, 162, 60]


def test_zero_opacity_and_empty_mask_return_the_scan():
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    expected = np.repeat(image[..., None], 3, axis=2)
    assert (overlay(image, _square_mask((8, 8), 1, 1, 3), alpha=0.0) == expected).all()
    assert (overlay(image, np.zeros((8, 8), dtype=bool), alpha=1.0, contour=True) == expected).all()


def test_grayscale_becomes_rgb_with_equal_channels():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = display_rgb(image)
    assert rgb.shape == (3, 4, 3)
    for channel in range(3):
        assert (rgb[..., channel] == image).all()


def test_three_channel_uint8_scan_is_shown_as_rgb_unchanged():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    mask = _square_mask((9, 7), 0, 0, 2)
    out = overlay(image, mask, alpha=0.5)
    assert (out[~mask] == image[~mask]).all()
    assert (display_rgb(image) == image).all()
    assert display_rgb(image) is not image  # a copy: overlays never write into the scan


def test_sixteen_bit_scan_is_windowed_to_uint8():
    image = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 40).astype(np.uint16)  # 0..3960
    mask = _square_mask(image.shape, 4, 4, 2)
    out = overlay(image, mask, alpha=1.0)
    gray = to_uint8(image)
    assert out.dtype == np.uint8
    assert gray.max() == 255 and gray.min() == 0
    assert (out[~mask] == gray[~mask][:, None]).all()
    assert (out[mask] == np.array(GT_COLOR)).all()


def test_contour_is_the_inner_boundary_at_full_opacity():
    image = np.full((9, 9), 50, dtype=np.uint8)
    mask = _square_mask(image.shape, 2, 2, 5)  # rows/cols 2..6
    boundary = mask_contour(mask)
    assert boundary.sum() == 16  # 5x5 square: 25 - 3x3 interior
    assert not boundary[4, 4] and boundary[2, 2] and boundary[6, 4]
    out = overlay(image, mask, color=PRED_COLOR, alpha=0.0, contour=True)
    assert (out[boundary] == np.array(PRED_COLOR)).all()
    assert out[4, 4].tolist() == [50, 50, 50]  # interior: alpha 0 leaves the scan
    assert (out[~mask] == 50).all()  # outline never spills outside the mask


def test_mask_touching_the_border_has_border_pixels_in_its_contour():
    mask = np.zeros((6, 6), dtype=bool)
    mask[:3, :3] = True
    boundary = mask_contour(mask)
    # Outside the image counts as background, so only (1, 1) has all four neighbours in the mask.
    assert boundary.sum() == 8
    assert boundary[0, 0] and boundary[1, 0] and boundary[2, 2]
    assert not boundary[1, 1]


def test_overlay_refuses_mask_of_another_size_and_bad_alpha():
    image = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="scan's size"):
        overlay(image, np.zeros((8, 9), dtype=bool))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, np.zeros((8, 8), dtype=bool), alpha=1.5)
    with pytest.raises(ValueError, match="color"):
        overlay(image, np.zeros((8, 8), dtype=bool), color=(300, 0, 0))


# --- PNG bytes --------------------------------------------------------------------------------


def test_mask_png_round_trips_at_mask_size_with_values_0_and_255():
    mask = _square_mask((9, 13), 2, 3, 4)
    data = mask_to_png_bytes(mask)
    assert _png_size(data) == (13, 9)  # PIL gives (width, height)
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L"
        values = np.asarray(img)
    assert set(np.unique(values).tolist()) == {0, 255}
    assert (values == 255).sum() == 16
    assert (read_mask(data, "pred_mask.png") == mask).all()


def test_image_png_round_trips_exactly():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (11, 9, 3), dtype=np.uint8)
    data = image_to_png_bytes(rgb)
    assert _png_size(data) == (9, 11)
    assert (read_image(data, "overlay.png") == rgb).all()
    gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    assert (read_image(image_to_png_bytes(gray), "g.png") == gray).all()


def test_image_png_refuses_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        image_to_png_bytes(np.zeros((8, 8), dtype=np.float32))


# --- figure and helpers -----------------------------------------------------------------------


def test_five_panel_figure_png_has_the_expected_size():
    image = np.full((32, 32, 3), 80, dtype=np.uint8)
    truth = _square_mask((32, 32), 8, 8, 10)
    pred = _square_mask((32, 32), 10, 10, 10)
    one_row = five_panel_figure(image, truth, pred, note="model tiny · threshold 0.50", dpi=50)
    assert _png_size(one_row) == (750, 190)  # 15 x 3.8 inches at 50 dpi
    probs = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    with_probs = five_panel_figure(image, truth, pred, probs=probs, note="x", heading="scan.png", dpi=50)
    assert _png_size(with_probs) == (900, 190)  # a sixth panel: 18 x 3.8 inches


def test_five_panel_figure_draws_placeholders_without_truth_or_prediction():
    image = np.arange(256, dtype=np.uint16).reshape(16, 16) * 100
    data = five_panel_figure(image, None, None, note="SYNTHETIC PHANTOM", dpi=40)
    assert _png_size(data) == (600, 152)
    with pytest.raises(ValueError, match="5 titles"):
        five_panel_figure(image, None, None, titles=["a", "b"])


def test_placeholder_image_has_scan_shape_and_text():
    picture = placeholder_image((64, 80), "No ground truth")
    assert picture.shape == (64, 80, 3) and picture.dtype == np.uint8
    assert picture[0, 0].tolist() == [240, 242, 246]
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 2  # text pixels differ from the background


def test_probs_to_rgb_maps_ends_of_the_colormap():
    from matplotlib import colormaps

    probs = np.array([[0.0, 1.0], [0.5, 2.0]], dtype=np.float32)
    rgb = probs_to_rgb(probs)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    low = (np.array(colormaps["magma"](0.0)[:3]) * 255).round()
    high = (np.array(colormaps["magma"](1.0)[:3]) * 255).round()
    assert rgb[0, 0].tolist() == low.tolist()
    assert rgb[0, 1].tolist() == high.tolist()
    assert rgb[1, 1].tolist() == high.tolist()  # clipped to 1


def test_display_channel_shows_one_channel_in_grayscale() -> None:
    from brainviewer.views.overlay import display_rgb

    image = np.zeros((4, 5, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 200, 90
    flair = display_rgb(image, 1)
    assert flair.shape == (4, 5, 3)
    assert (flair == 200).all()  # FLAIR repeated into R, G and B: a neutral gray base
    assert (display_rgb(image, 0) == 10).all()
    assert (display_rgb(image, None) == image).all()
    with pytest.raises(ValueError, match="channel"):
        display_rgb(image, 3)


def test_review_defaults_to_flair_base_and_can_show_rgb() -> None:
    from brainviewer.views.review import ReviewItem, render_review

    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 1] = 120
    item = ReviewItem(name="s.png", image=image, truth=None)
    gray_view = render_review(item, None)
    assert (gray_view.panels[0].image == 120).all()
    assert "channel 2 of 3" in gray_view.panels[0].caption
    rgb_view = render_review(item, None, display_channel=None)
    assert (rgb_view.panels[0].image[..., 0] == 0).all() and (rgb_view.panels[0].image[..., 1] == 120).all()


def test_overview_picture_shrinks_large_panels_only():
    from brainviewer.views.overlay import OVERVIEW_MAX_SIDE, overview_picture

    small = np.zeros((OVERVIEW_MAX_SIDE, 100, 3), np.uint8)
    assert overview_picture(small) is small  # at or under the cap: the same array, not a copy
    wide = np.zeros((300, 1024, 3), np.uint8)
    wide[:, 512:] = 200  # right half bright
    shrunk = overview_picture(wide)
    assert shrunk.dtype == np.uint8 and shrunk.shape == (round(300 * OVERVIEW_MAX_SIDE / 1024), OVERVIEW_MAX_SIDE, 3)
    assert shrunk[:, : OVERVIEW_MAX_SIDE // 2 - 1].max() == 0 and shrunk[:, OVERVIEW_MAX_SIDE // 2 + 1 :].min() == 200
    gray = overview_picture(np.full((640, 640), 7, np.uint8), max_side=64)
    assert gray.shape == (64, 64) and (gray == 7).all()
