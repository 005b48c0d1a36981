"""Correcting a mask in a real browser: streamlit run app.py, driven by headless Chromium through Playwright.

Opens the Review page on a synthetic phantom slice, turns on "Correct the mask", paints one stroke with the
brush on the canvas, saves, and checks that the saved mask differs from the model's prediction exactly where
the stroke went; then removes the stroke again with one click of "Remove component". Another test paints
three strokes in quick succession (no waits between them, the app rerunning meanwhile) and checks that all
three are in the saved mask, then that Undo takes back the last one alone. Skips when Chromium
(/usr/bin/chromium) or the playwright package is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.io import read_image, read_mask
from brainviewer.model.segmenter import Segmenter
from brainviewer.views.review import threshold_view
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, _weights_for_screenshot, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BRUSH = 6  # scan pixels, the editor's default
ROW, COL_START, COL_END = 30, 20, 100  # the stroke, in scan pixels of the 256x256 phantom slice


@pytest.fixture
def corrections_app(tiny_weights: Path, tmp_path: Path):
    """A running app (real weights when present, else the tiny model) saving corrections under ``tmp_path``."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    weights = _weights_for_screenshot(tiny_weights)
    corrections = tmp_path / "corrections"
    env = {k: v for k, v in os.environ.items() if k not in ("BRAINVIEWER_DATA", "BRAINVIEWER_DEMO")}
    env.update(
        BRAINVIEWER_WEIGHTS=str(weights),
        BRAINVIEWER_WEIGHTS_DIR=str(weights.parent),
        BRAINVIEWER_CORRECTIONS_DIR=str(corrections),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    with running_app(env, tmp_path / "streamlit.log") as url:
        yield url, corrections, weights


def _open_editor(browser, url: str):
    """A 1440x1000 page of the app with the mask editor turned on: ``(page, the canvas's bounding box)``."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(url)
    page.get_by_text("Correct the mask").first.wait_for(timeout=120_000)
    page.get_by_text("Correct the mask").first.click()
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=60_000)
    canvas.scroll_into_view_if_needed()
    return page, canvas.bounding_box()


def _stroke(page, box: dict, row: int, step: int) -> None:
    """Drag the brush along scan row ``row`` from COL_START to COL_END, a mouse move every ``step`` scan pixels."""
    scale = box["width"] / 256
    y = box["y"] + (row + 0.5) * scale
    page.mouse.move(box["x"] + (COL_START + 0.5) * scale, y)
    page.mouse.down()
    for col in range(COL_START, COL_END + 1, step):
        page.mouse.move(box["x"] + (col + 0.5) * scale, y)
    page.mouse.up()


def test_paint_a_stroke_and_save_the_correction(corrections_app):
    from playwright.sync_api import expect, sync_playwright

    url, corrections, weights = corrections_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page, box = _open_editor(browser, url)
            assert box is not None and round(box["width"]) == 448  # 256 px scan at 1.75 times its size
            scale = box["width"] / 256
            _stroke(page, box, ROW, step=4)
            expect(page.get_by_text("px added").first).not_to_contain_text("+0 px added", timeout=60_000)
            page.get_by_role("button", name="Save correction").click()
            expect(page.get_by_text("Saved ").first).to_be_visible(timeout=60_000)

            # a click with "Remove component" on the stroke (apart from the predicted tumour) removes it
            page.get_by_text("Remove component", exact=True).click()
            page.wait_for_timeout(2_000)
            canvas = page.locator("canvas.upper-canvas").first
            box = canvas.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + (COL_START + COL_END) / 2 * scale, box["y"] + (ROW + 0.5) * scale)
            expect(page.get_by_text("px added").first).to_contain_text("+0 px added, −0 px removed", timeout=60_000)
        finally:
            browser.close()

    (record_path,) = corrections.rglob("*.json")
    record = json.loads(record_path.read_text())
    saved = read_mask(record_path.with_name(record["mask"]))
    scan = read_image(record_path.with_name(record["scan"]))
    predicted = _predicted(weights, scan, record["threshold"])
    rows, cols = np.indices(saved.shape)
    # within the brush's reach of the stroke's path (half a brush, plus a pixel of anti-aliasing)
    reach = (
        (np.abs(rows - ROW) <= BRUSH // 2 + 1)
        & (cols >= COL_START - BRUSH // 2 - 1)
        & (cols <= COL_END + BRUSH // 2 + 1)
    )
    core = (np.abs(rows - ROW) <= BRUSH // 2 - 2) & (cols >= COL_START + 2) & (cols <= COL_END - 2)
    changed = saved ^ predicted
    assert changed.any()
    assert not (changed & ~reach).any(), "the saved mask changed outside the painted stroke"
    assert saved[core].all(), "the painted stroke is not tumour in the saved mask"
    assert not (predicted & ~saved).any()  # painting removes nothing
    assert record["pixels"]["added"] == int(changed.sum()) and record["pixels"]["removed"] == 0


def _predicted(weights: Path, scan: np.ndarray, threshold: float) -> np.ndarray:
    """The mask the Review page shows (and the editor starts from): empty where the weights' tumour-present
    gate calls the slice tumour-free."""
    segmenter = Segmenter.from_folder(weights, device="cpu")
    (probs,), (presence,) = segmenter.predict_slices([scan])
    mask = threshold_view(
        probs,
        threshold,
        min_component_px=segmenter.prep.min_component_px,
        keep_largest=segmenter.prep.keep_largest,
    ).pred_mask
    return mask if segmenter.tumour_shown(presence) else np.zeros_like(mask)


def _click_until(page, button, shown, tries: int = 3) -> None:
    """Click ``button`` until ``shown`` is visible (as a user clicks again): on this 2-core machine a click
    that lands while Streamlit's reruns pile up is sometimes dropped (no error, nothing done)."""
    from playwright.sync_api import expect

    for attempt in range(tries):
        button.click()
        try:
            expect(shown).to_be_visible(timeout=30_000 if attempt < tries - 1 else 60_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise
            page.wait_for_timeout(2_000)


def test_strokes_in_quick_succession_are_all_kept(corrections_app):
    from playwright.sync_api import expect, sync_playwright

    url, corrections, weights = corrections_app
    rows = (30, 60, 90)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page, box = _open_editor(browser, url)
            assert box is not None
            for row in rows:  # no waits: each mouse-up sends the canvas while the app may still be rerunning
                _stroke(page, box, row, step=8)
            expect(page.get_by_text("px added").first).not_to_contain_text("+0 px added", timeout=60_000)
            page.wait_for_timeout(5_000)  # the app's reruns for the strokes end (a click during one can be lost)
            _click_until(
                page, page.get_by_role("button", name="Save correction").first, page.get_by_text("Saved ").first
            )
            # Undo takes back one stroke (the last); saved again, the first save moves to .history
            added = page.get_by_text("px added").first
            before = added.inner_text()
            _click_until(
                page,
                page.get_by_role("button", name="Undo", exact=True).first,
                page.get_by_text("px added").filter(has_not_text=before).first,
            )
            page.wait_for_timeout(3_000)
            _click_until(
                page, page.get_by_role("button", name="Save correction").first, page.get_by_text(".history/").first
            )
        finally:
            browser.close()

    def core(mask: np.ndarray, row: int) -> np.ndarray:
        return mask[row - BRUSH // 2 + 2 : row + BRUSH // 2 - 1, COL_START + 2 : COL_END - 1]

    (record_path,) = corrections.glob("*/*.json")
    record = json.loads(record_path.read_text())
    first = read_mask(record_path.parent / record["previous"]["mask"])
    predicted = _predicted(weights, read_image(record_path.with_name(record["scan"])), record["threshold"])
    for row in rows:
        assert core(first, row).all(), f"the stroke at row {row} is not in the saved mask"
    assert not (predicted & ~first).any()
    second = read_mask(record_path.with_name(record["mask"]))
    assert core(second, rows[0]).all() and core(second, rows[1]).all()
    assert not (second ^ predicted)[rows[2] - BRUSH : rows[2] + BRUSH].any(), "Undo did not take back the last stroke"
