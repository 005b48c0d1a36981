"""The reading view on Review and Patients, and the Patients page's "review these first" ranking (AppTest,
tiny untrained model, synthetic phantom)."""

from __future__ import annotations

import ast
import base64
import json

import cv2
import numpy as np
import pytest

from brainviewer.model.uncertainty import rank_slices
from brainviewer.ui.state import (
    PATIENT_SLICE_KEY,
    READING_LEVEL,
    READING_OUTLINE,
    READING_PATIENT,
    READING_PRED,
    READING_PRESET,
    READING_RESET,
    READING_REVIEW,
    READING_TRUTH,
    READING_WIDTH,
    READING_ZOOM,
    REVIEW_FIRST_GO,
    reading_key,
)
from brainviewer.views.overlay import GT_COLOR, PRED_COLOR
from brainviewer.views.reading import PRESET_BRAIN, PRESET_FULL
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, app_url  # noqa: F401  (app_url: the running app, a fixture)

APP = "../../app.py"  # AppTest resolves paths against this test file
PAGES = [("pages/review.py", READING_REVIEW), ("pages/patients.py", READING_PATIENT)]


def open_page(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


def reading_spec(at) -> dict:
    """The reading view's plotly figure (the one chart whose trace is an image)."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    images = [spec for spec in specs if spec["data"] and spec["data"][0].get("type") == "image"]
    assert len(images) == 1, f"expected one reading view, found {len(images)}"
    return images[0]


def picture(at) -> np.ndarray:
    """The reading view's picture, decoded: (H, W, 3) uint8 RGB."""
    uri = reading_spec(at)["data"][0]["source"]
    data = np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]


def colour_px(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == np.asarray(colour, np.uint8), axis=2).sum())


@pytest.mark.parametrize(
    ("page", "prefix"), [("pages/review.py", READING_REVIEW), ("pages/patients.py", READING_PATIENT)]
)
def test_window_level_changes_the_picture_and_reset_restores_it(app_env, page, prefix):
    key = lambda part: reading_key(prefix, part)  # noqa: E731
    at = open_page(page)
    spec = reading_spec(at)
    assert spec["layout"]["height"] >= 512  # the large view
    first = picture(at)
    assert at.radio(key=key(READING_PRESET)).value == PRESET_FULL
    assert (at.slider(key=key(READING_LEVEL)).value, at.slider(key=key(READING_WIDTH)).value) == (127.5, 255.0)

    at.slider(key=key(READING_WIDTH)).set_value(60.0).run()
    assert not at.exception, at.exception
    assert at.radio(key=key(READING_PRESET)).value == "Custom"  # a moved slider leaves the preset
    narrow = picture(at)
    assert narrow.shape == first.shape and not np.array_equal(narrow, first)

    at.radio(key=key(READING_PRESET)).set_value(PRESET_BRAIN).run()
    assert not at.exception, at.exception
    assert at.slider(key=key(READING_WIDTH)).value < 255.0  # the preset wrote its window into the sliders

    at.button(key=key(READING_RESET)).click().run()
    assert not at.exception, at.exception
    assert at.radio(key=key(READING_PRESET)).value == PRESET_FULL
    assert at.slider(key=key(READING_WIDTH)).value == 255.0
    assert np.array_equal(picture(at), first)


@pytest.mark.parametrize(
    ("page", "prefix"), [("pages/review.py", READING_REVIEW), ("pages/patients.py", READING_PATIENT)]
)
def test_outline_and_filled_differ_and_each_layer_can_be_hidden(app_env, page, prefix):
    key = lambda part: reading_key(prefix, part)  # noqa: E731
    at = open_page(page)
    filled = picture(at)
    assert colour_px(filled, GT_COLOR) > 0  # the phantom's ground truth, outlined in red
    at.button(key=key(READING_OUTLINE)).click().run()
    outline = picture(at)
    assert not np.array_equal(outline, filled)
    # an outline keeps the scan under the mask: fewer pixels differ from the bare scan than when filled
    at.button(key=key(READING_TRUTH)).click().run()
    at.button(key=key(READING_PRED)).click().run()
    bare = picture(at)
    assert colour_px(bare, GT_COLOR) == 0 and colour_px(bare, PRED_COLOR) == 0
    changed = lambda image: int(np.any(image != bare, axis=2).sum())  # noqa: E731
    assert 0 < changed(outline) < changed(filled)

    at.button(key=key(READING_TRUTH)).click().run()  # the truth back, the prediction still hidden
    truth_only = picture(at)
    assert colour_px(truth_only, GT_COLOR) > 0 and colour_px(truth_only, PRED_COLOR) == 0
    assert at.button(key=key(READING_PRED)).proto.type == "secondary"  # shown as off
    assert at.button(key=key(READING_TRUTH)).proto.type == "primary"


def test_zoom_to_tumour_limits_the_axes_to_the_tumour(app_env):
    at = open_page("pages/review.py")
    whole = reading_spec(at)["layout"]
    at.button(key=reading_key(READING_REVIEW, READING_PRED)).click().run()  # the untrained model's mask is large
    at.button(key=reading_key(READING_REVIEW, READING_ZOOM)).click().run()
    zoomed = reading_spec(at)["layout"]
    span = lambda axis: abs(axis["range"][1] - axis["range"][0])  # noqa: E731
    assert "range" not in whole["xaxis"]  # the whole slice: plotly fits the image
    assert span(zoomed["xaxis"]) < picture(at).shape[1]
    assert zoomed["uirevision"] != whole["uirevision"]  # the browser drops the user's own zoom


def test_patients_page_ranks_slices_by_uncertainty_and_jumps_to_one(app_env):

    at = open_page("pages/patients.py")
    assert any(image.captions and "Entropy" in image.captions[0] for image in at.image)  # the uncertainty panel
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["Slice", "Uncertainty (bits)", "Uncertain px"]
    bits = table["Uncertainty (bits)"].tolist()
    assert bits == sorted(bits, reverse=True) and len(bits) >= 2
    shown = at.slider(key=PATIENT_SLICE_KEY).value
    rank = next(i for i, number in enumerate(table["Slice"], start=1) if number != shown)
    target = int(table["Slice"].iloc[rank - 1])
    at.button(key=f"{REVIEW_FIRST_GO}_{rank}").click().run()
    assert not at.exception, at.exception
    assert at.slider(key=PATIENT_SLICE_KEY).value == target != shown
    assert at.dataframe[0].value["Shown"].iloc[rank - 1] == "◀ now"
    assert table["Slice"].tolist() == at.dataframe[0].value["Slice"].tolist()  # the ranking stays put


def test_the_ranking_is_the_entropy_order_of_the_cached_probabilities(app_env, monkeypatch):
    """The table's order is rank_slices of the probabilities the page computed (none re-derived)."""
    seen: list[list[np.ndarray]] = []
    import brainviewer.ui.review_first as review_first

    original = review_first.rank_slices

    def spy(probs, pred_masks=None, top=10):
        seen.append(list(probs))
        return original(probs, pred_masks, top)

    monkeypatch.setattr(review_first, "rank_slices", spy)
    at = open_page("pages/patients.py")
    assert len(seen) == 1
    expected = [row.index + 1 for row in rank_slices(seen[0], top=None)][: len(at.dataframe[0].value)]
    assert at.dataframe[0].value["Slice"].tolist() == expected


# === In a real browser (headless Chromium): size, keyboard shortcut, zoom kept ==================

# Streamlit redraws the chart when its picture changes: between the old element going and the new one being laid
# out there is no chart, so every script below answers null (keep waiting) rather than failing in that moment.
_PLOT_STATE = (
    "() => { const d = document.querySelector('[data-testid=stPlotlyChart] .js-plotly-plot');"
    " if (!d || !d._fullLayout || !d.data) return null;"
    " const r = d.getBoundingClientRect();"
    " return {width: r.width, height: r.height, x: d._fullLayout.xaxis.range, source: d.data[0].source}; }"
)
_SOURCE_CHANGED = (
    "(old) => { const d = document.querySelector('.js-plotly-plot'); return d?.data && d.data[0].source !== old; }"
)
_ZOOMED_IN = (
    "(w) => { const r = document.querySelector('.js-plotly-plot')?._fullLayout?.xaxis?.range;"
    " return r && r[1] - r[0] < w; }"
)


# What covers the page (a dialog, a tooltip, a popover), for a failure message. A "Connection error ... Cached
# ForwardMsg MISS" dialog once did, in 1 run in 5 under load: the zoom button under it was `inert` and the picture
# stopped updating (Streamlit had sent a reference to a picture the browser had dropped; the app's config now
# sends large messages in full, see .streamlit/config.toml).
_OVERLAYS = (
    "() => [...document.querySelectorAll('[role=dialog], [role=tooltip], [role=menu], [data-baseweb=popover]')]"
    ".map(e => (e.getAttribute('data-testid') || e.getAttribute('role') || e.tagName) + ': '"
    " + (e.textContent || '').slice(0, 120))"
)
# Streamlit is not running the script (its running icon is gone).
_IDLE = "() => !document.querySelector('[data-testid=stStatusWidgetRunningIcon]')"


def _click_and_wait(page, target, done: str, arg: object) -> None:
    """Click ``target`` once Streamlit is idle, with the pointer off the buttons (a help tooltip follows it), and
    wait for the page script ``done(arg)``; on a timeout, say what covered the page and where the chart was."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(_IDLE, timeout=60_000)
        page.mouse.move(5, 5)
        target.click(timeout=30_000)
        page.wait_for_function(done, arg=arg, timeout=30_000)
    except PlaywrightTimeout as error:
        raise AssertionError(
            f"{error.message.splitlines()[0]}; on the page: {page.evaluate(_OVERLAYS)}; "
            f"chart x range {(page.evaluate(_PLOT_STATE) or {}).get('x')}"
        ) from error


def _plot_state(page) -> dict:
    """The chart's size, x range and picture, once a laid-out chart is on the page."""
    return page.wait_for_function(_PLOT_STATE, timeout=30_000).json_value()


@pytest.mark.browser
@pytest.mark.slow
def test_reading_view_in_a_browser_is_large_answers_keys_and_keeps_the_tumour_zoom(app_url):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})  # a laptop screen
            page.goto(app_url)
            chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
            chart.wait_for(timeout=120_000)
            chart.scroll_into_view_if_needed()
            first = _plot_state(page)
            assert first["width"] >= 512 and first["height"] >= 512, first

            truth = page.locator('[data-testid="stButton"]').filter(has_text="Ground truth").first
            assert "visibility_off" not in truth.inner_text()
            page.mouse.click(5, 5)  # the focus on the page, not on a widget
            page.keyboard.press("g")  # the shortcut hides the ground truth
            expect(truth).to_contain_text("visibility_off", timeout=30_000)
            page.wait_for_function(_SOURCE_CHANGED, arg=first["source"], timeout=30_000)

            page.locator('[data-testid="stButton"]').filter(has_text="Prediction").first.click()  # truth alone
            page.keyboard.press("g")
            expect(truth).not_to_contain_text("visibility_off", timeout=30_000)
            zoom = page.locator('[data-testid="stButton"]').filter(has_text="Zoom to tumour").first
            _click_and_wait(page, zoom, _ZOOMED_IN, first["x"][1] - first["x"][0])
            zoomed = _plot_state(page)
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Width (contrast)").get_by_role("slider")
            thumb.focus()
            for _ in range(10):
                thumb.press("ArrowLeft")
            page.wait_for_function(_SOURCE_CHANGED, arg=zoomed["source"], timeout=30_000)
            after = _plot_state(page)
            assert after["x"] == pytest.approx(zoomed["x"])  # the window moved, the zoom stayed
            expect(page.locator('[data-testid="stException"]')).to_have_count(0)
            expect(page.get_by_role("dialog")).to_have_count(0)  # no "Connection error"
        finally:
            browser.close()


def _window_script() -> None:
    import numpy as np
    import streamlit as st

    from brainviewer.ui.reading_view import current_window, reading_view

    base = np.repeat(np.tile(np.arange(256, dtype=np.uint8), (64, 1))[..., None], 3, axis=2)
    reading_view(base, None, None, None, "t")
    st.text(repr(tuple(current_window("t", base))))


def test_current_window_reports_the_window_the_user_set_for_a_view_below():
    """What the mask editor under the reading view reads to show the scan as the user windowed it."""
    from streamlit.testing.v1 import AppTest

    from brainviewer.views.reading import preset_window

    at = AppTest.from_function(_window_script, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.text[0].value == repr((127.5, 255.0))
    at.slider(key=reading_key("t", READING_WIDTH)).set_value(60.0).run()
    assert at.text[0].value == repr((127.5, 60.0))
    at.radio(key=reading_key("t", READING_PRESET)).set_value(PRESET_BRAIN).run()
    base = np.repeat(np.tile(np.arange(256, dtype=np.uint8), (64, 1))[..., None], 3, axis=2)
    brain = preset_window(PRESET_BRAIN, base)
    level, width = ast.literal_eval(at.text[0].value)
    assert abs(level - brain.level) <= 0.5 and abs(width - brain.width) <= 1
