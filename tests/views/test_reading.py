"""The reading view's pure picture work: window/level, presets, overlays, zoom box, PNG data URI."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from brainviewer.views.overlay import GT_COLOR, PRED_COLOR
from brainviewer.views.reading import (
    FULL_WINDOW,
    PRESET_BRAIN,
    PRESET_FULL,
    PRESET_TUMOUR,
    STYLE_FILLED,
    STYLE_OUTLINE,
    Window,
    apply_window,
    compose,
    fit_to,
    png_data_uri,
    preset_window,
    reading_figure,
    window_from_range,
    window_lut,
    zoom_box,
)


def gray_base(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=2)


def ramp() -> np.ndarray:
    return gray_base(np.tile(np.arange(256, dtype=np.uint8), (4, 1)))


def test_full_window_is_the_identity():
    assert np.array_equal(window_lut(FULL_WINDOW), np.arange(256, dtype=np.uint8))
    base = ramp()
    assert np.array_equal(apply_window(base, FULL_WINDOW), base)


def test_window_maps_its_ends_to_black_and_white_linearly_in_between():
    lut = window_lut(Window(level=100.0, width=50.0))  # 75..125
    assert lut[:76].max() == 0 and lut[125:].min() == 255
    assert lut[100] == 128  # the level is mid-grey
    assert np.all(np.diff(lut.astype(int)) >= 0)


def test_width_one_is_a_hard_threshold_at_the_level():
    lut = window_lut(Window(level=100.0, width=1.0))
    assert set(np.unique(lut[:100])) == {0} and set(np.unique(lut[101:])) == {255}


@pytest.mark.parametrize("window", [Window(100, 0.5), Window(100, 300), Window(-1, 50), Window(256, 50)])
def test_a_window_out_of_range_is_refused_with_its_limits(window):
    with pytest.raises(ValueError, match="between"):
        window_lut(window)


def test_a_narrower_window_gives_more_contrast_and_leaves_the_input_alone():
    base = ramp()
    before = base.copy()
    out = apply_window(base, Window(128.0, 64.0))
    assert np.array_equal(base, before)
    assert out.shape == base.shape and out.dtype == np.uint8
    step_in, step_out = int(base[0, 130, 0]) - int(base[0, 126, 0]), int(out[0, 130, 0]) - int(out[0, 126, 0])
    assert step_out > step_in


def test_presets_take_percentiles_of_the_head_not_the_black_background():
    values = np.zeros((100, 100), dtype=np.uint8)
    values[20:80, 20:80] = np.linspace(50, 200, 60 * 60).reshape(60, 60).astype(np.uint8)
    base = gray_base(values)
    assert preset_window(PRESET_FULL, base) == FULL_WINDOW
    brain, tumour = preset_window(PRESET_BRAIN, base), preset_window(PRESET_TUMOUR, base)
    assert 50 <= brain.low < 55 and 195 < brain.high <= 200  # 1st-99th percentile of 50..200
    assert tumour.low > brain.low and tumour.width < brain.width  # the bright end only
    with pytest.raises(ValueError, match="choose one of"):
        preset_window("Bone", base)


def test_a_flat_picture_gets_the_narrowest_window_not_an_error():
    assert window_from_range(90, 90).width == 1.0
    window = preset_window(PRESET_BRAIN, gray_base(np.full((8, 8), 90)))
    assert window.width == 1.0 and window.level == 90.0


def masks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = gray_base(np.full((40, 40), 100))
    truth = np.zeros((40, 40), bool)
    truth[5:20, 5:20] = True
    pred = np.zeros((40, 40), bool)
    pred[15:30, 15:30] = True
    return base, truth, pred


def colour_px(picture: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(picture == np.asarray(colour, np.uint8), axis=2).sum())


def test_outline_and_filled_differ_and_outline_keeps_the_scan_inside():
    base, truth, pred = masks()
    filled = compose(base, truth, pred, style=STYLE_FILLED, alpha=0.5)
    outline = compose(base, truth, pred, style=STYLE_OUTLINE, alpha=0.5)
    assert not np.array_equal(filled, outline)
    assert np.array_equal(outline[10, 10], base[10, 10])  # inside the truth, away from its border
    assert not np.array_equal(filled[10, 10], base[10, 10])
    assert colour_px(outline, GT_COLOR) > 0 and colour_px(outline, PRED_COLOR) > 0


def test_a_hidden_layer_is_not_drawn():
    base, truth, pred = masks()
    no_truth = compose(base, truth, pred, show_truth=False, style=STYLE_OUTLINE)
    assert colour_px(no_truth, GT_COLOR) == 0 and colour_px(no_truth, PRED_COLOR) > 0
    nothing = compose(base, truth, pred, show_truth=False, show_pred=False)
    assert np.array_equal(nothing, base)
    assert np.array_equal(compose(base, None, None), base)


def test_compose_refuses_a_mask_of_another_size_and_unknown_styles():
    base, truth, _ = masks()
    with pytest.raises(ValueError, match="scan's size"):
        compose(base, truth[:20], None)
    with pytest.raises(ValueError, match="choose one of"):
        compose(base, truth, None, style="Dotted")
    with pytest.raises(ValueError, match="uint8 display image"):
        compose(base[..., 0], truth, None)


def test_zoom_box_is_a_square_around_both_masks_with_a_margin_inside_the_image():
    _, truth, pred = masks()
    r0, r1, c0, c1 = zoom_box([truth, None, pred], (40, 40), margin=0.25, min_side=4)
    assert r1 - r0 == c1 - c0  # square
    assert r0 <= 5 and r1 >= 30 and c0 <= 5 and c1 >= 30  # holds both masks (5..29)
    assert min(r0, c0) >= 0 and max(r1, c1) <= 40
    assert zoom_box([np.zeros((40, 40), bool), None], (40, 40)) is None


def test_zoom_box_of_a_small_tumour_at_the_edge_is_shifted_in_not_cut():
    mask = np.zeros((100, 100), bool)
    mask[0:3, 97:100] = True
    r0, r1, c0, c1 = zoom_box([mask], (100, 100), min_side=32)
    assert (r0, r1, c0, c1) == (0, 32, 68, 100)


def test_png_data_uri_round_trips_the_picture_losslessly():
    base, truth, pred = masks()
    picture = compose(base, truth, pred)
    uri = png_data_uri(picture)
    assert uri.startswith("data:image/png;base64,")
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded[..., ::-1], picture)


def test_reading_figure_shows_the_picture_with_square_pixels_and_the_zoom_box():
    base, truth, pred = masks()
    picture = compose(base, truth, pred)
    whole = reading_figure(picture, None, "scan-1")
    trace, layout = whole["data"][0], whole["layout"]
    assert trace["type"] == "image" and trace["source"] == png_data_uri(picture)
    assert layout["yaxis"]["scaleanchor"] == "x" and layout["height"] >= 512
    assert "range" not in layout["xaxis"] and layout["uirevision"] == "scan-1"
    zoomed = reading_figure(picture, (5, 30, 10, 35), "scan-1:1")["layout"]
    assert zoomed["xaxis"]["range"] == [9.5, 34.5]
    assert zoomed["yaxis"]["range"] == [29.5, 4.5]  # rows grow downwards


def test_fit_to_resizes_a_full_resolution_mask_to_a_display_copy():
    mask = np.zeros((1024, 1024), bool)
    mask[256:512, 512:768] = True
    small = fit_to((256, 256), mask)
    assert small.dtype == bool and small.shape == (256, 256)
    assert small[64:128, 128:192].all() and small.sum() == 64 * 64
    probs = np.full((1024, 1024), 0.25, np.float32)
    assert fit_to((256, 256), probs).shape == (256, 256) and np.allclose(fit_to((256, 256), probs), 0.25)
    assert fit_to((8, 8), None) is None and fit_to((1024, 1024), mask) is mask
