"""End to end in a real browser: streamlit run app.py, driven by headless Chromium through Playwright.

Uploads a real LGG slice of a held-out patient and its mask, waits for the five panels, moves the threshold
slider with the keyboard, checks that the page follows, and takes a screenshot (docs/screenshot.png with
BRAINVIEWER_SAVE_SCREENSHOT=1).
Skips when Chromium (/usr/bin/chromium), the playwright package or the LGG data is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
REAL_WEIGHTS = ROOT / "weights" / "lgg-unet-resnet18"
SCREENSHOT = ROOT / "docs" / "screenshot.png"
# A validation patient of the default model (never trained on), on a slice near its mean Dice:
# the screenshot is a fair example, not a flattering one.
LGG_PATIENT = "TCGA_DU_7008_19830723"
LGG_SLICE = 26
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_app(
    env: dict[str, str], log: Path, port: int | None = None, extra_args: Sequence[str] = ()
) -> Iterator[str]:
    """``streamlit run app.py`` on 127.0.0.1 with ``env`` (and ``extra_args`` flags), its output in ``log``;
    yields its URL once healthy and stops it afterwards (the browser tests' one way to start the app)."""
    port = port or _free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", *extra_args,
    ]  # fmt: skip
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _weights_for_screenshot(tiny_weights: Path) -> Path:
    """$BRAINVIEWER_WEIGHTS when it names a weights folder, else weights/lgg-unet-resnet18 when trained,
    else the tiny untrained test model (its predictions are noise, but the page works the same)."""
    named = Path(os.environ.get("BRAINVIEWER_WEIGHTS", "")).expanduser()
    for folder in (named, REAL_WEIGHTS):
        if str(folder) not in ("", ".") and (folder / "model.safetensors").is_file():
            return folder
    return tiny_weights


@pytest.fixture
def app_url(tiny_weights, tmp_path):
    """A running `streamlit run app.py` on a free port (weights: see :func:`_weights_for_screenshot`)."""
    yield from _running_app(tiny_weights, tmp_path, {})


@pytest.fixture
def examples_app_url(tiny_weights, tmp_path):
    """As :func:`app_url`, with the shared data as the real examples source (what a fresh start shows)."""
    if not (SHARED_DATA / "lgg").is_dir() or not (SHARED_DATA / "figshare").is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    if not (REAL_WEIGHTS / "model.safetensors").is_file():
        pytest.skip(f"the shipped default model is not present at {REAL_WEIGHTS}")
    yield from _running_app(tiny_weights, tmp_path, {"BRAINVIEWER_EXAMPLES": str(SHARED_DATA)})


def _running_app(tiny_weights: Path, tmp_path: Path, extra_env: dict[str, str]):
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    weights = _weights_for_screenshot(tiny_weights)
    env = {k: v for k, v in os.environ.items() if k != "BRAINVIEWER_DATA"}
    env.update(
        BRAINVIEWER_WEIGHTS=str(weights),
        BRAINVIEWER_WEIGHTS_DIR=str(weights.parent),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra_env)
    with running_app(env, tmp_path / "streamlit.log") as url:
        yield url


def _prediction_caption(page) -> str:
    locator = page.get_by_text("Green: probability ≥", exact=False)
    locator.first.wait_for(timeout=60_000)
    return locator.first.inner_text().strip()


def test_upload_threshold_and_screenshot(app_url, lgg_root, tiny_weights, tmp_path):
    """Upload, threshold by keyboard, and a full-page screenshot: into the test's folder, and into
    docs/screenshot.png (the README's picture) only with ``BRAINVIEWER_SAVE_SCREENSHOT=1``."""
    from playwright.sync_api import expect, sync_playwright

    screenshot = SCREENSHOT if os.environ.get("BRAINVIEWER_SAVE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"

    folder = lgg_root / "kaggle_3m" / LGG_PATIENT
    scans = [p for p in folder.glob(f"{LGG_PATIENT}_{LGG_SLICE}.*")]
    masks = [p for p in folder.glob(f"{LGG_PATIENT}_{LGG_SLICE}_mask.*")]
    if len(scans) != 1 or len(masks) != 1:
        pytest.skip(f"slice {LGG_SLICE} of {LGG_PATIENT} or its mask is missing from {folder}")
    scan, mask = scans[0], masks[0]
    truth_px = int((np.asarray(Image.open(mask)) > 0).sum())
    split_file = _weights_for_screenshot(tiny_weights) / "split.json"
    held_out = split_file.is_file() and LGG_PATIENT in json.loads(split_file.read_text())["val"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(app_url)
            # First screen: the synthetic phantom, clearly labelled.
            expect(page.get_by_text("SYNTHETIC PHANTOM", exact=False).first).to_be_visible(timeout=90_000)

            page.locator('[data-testid="stRadio"]').get_by_text("Upload", exact=True).click()
            file_input = page.locator('input[type="file"]')
            file_input.wait_for(state="attached", timeout=30_000)
            file_input.set_input_files([str(scan), str(mask)])

            expect(page.get_by_text(f"Ground truth: {truth_px:,} px")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(scan.name, exact=True).first).to_be_visible()
            if held_out:
                expect(page.get_by_text(f"Held out: {LGG_PATIENT}", exact=False)).to_be_visible()
            expect(page.locator('[data-testid="stMetric"]').filter(has_text="Dice")).to_be_visible()
            expect(page.locator('[data-testid="stImage"]:visible')).to_have_count(6)  # 5 panels + uncertainty map
            before = _prediction_caption(page)
            assert before.startswith("Green: probability ≥ ")
            start = float(before.rsplit(" ", 1)[1])  # the model's default threshold
            up, down = round(start + 0.05, 2), round(start - 0.05, 2)

            slider = page.locator('[data-testid="stSlider"]').filter(has_text="Probability threshold")
            thumb = slider.get_by_role("slider")
            thumb.focus()
            for _ in range(5):
                thumb.press("ArrowRight")
            expect(page.get_by_text(f"Green: probability ≥ {up:.2f}")).to_be_visible(timeout=30_000)
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text(f"{up:.2f}")
            for _ in range(10):
                thumb.press("ArrowLeft")
            expect(page.get_by_text(f"Green: probability ≥ {down:.2f}")).to_be_visible(timeout=30_000)
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text(f"{down:.2f}")
            expect(page.locator('[data-testid="stException"]')).to_have_count(0)

            # Let images settle, then grow the viewport to the page's height: Streamlit scrolls inside
            # its main container, so a plain full-page screenshot would stop at the first screen.
            page.wait_for_load_state("networkidle")
            height = page.evaluate(
                "() => { const main = document.querySelector('[data-testid=stMain]');"
                " return Math.max(document.body.scrollHeight, main ? main.scrollHeight : 0); }"
            )
            page.set_viewport_size({"width": 1440, "height": min(max(int(height) + 40, 900), 4000)})
            page.mouse.move(0, 0)
            time.sleep(1.0)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 50_000


def test_the_chosen_model_stays_chosen_from_page_to_page(app_url):
    """A model picked in the sidebar on Review is still the one on Patients and Evaluation (a real browser:
    Streamlit forgets a widget's value when another page is opened, which AppTest does not show)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(app_url)
            picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Weights")
            picker.wait_for(timeout=90_000)
            picker.click()
            options = page.locator('[role="option"]')
            options.first.wait_for(timeout=30_000)
            labels = [text.strip() for text in options.all_inner_texts()]
            other = next((label for label in labels if "(default)" not in label), None)
            if other is None:
                pytest.skip(f"only one weights folder beside the app's model: {labels}")
            options.filter(has_text=other).first.click()
            expect(picker.locator("input")).to_have_value(other, timeout=30_000)
            for title in ("Patients", "Evaluation", "Review"):
                page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
                picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(
                    has_text="Weights"
                )
                expect(picker.locator("input")).to_have_value(other, timeout=60_000)
                expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        finally:
            browser.close()


#: Metric labels and values (and buttons of the main column) whose text does not fit (an element scrolls
#: sideways or is cut with an ellipsis), and metric cards that stick out of the page's main column.
TRUNCATED_METRICS_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]').getBoundingClientRect();
  const cut = [];
  for (const card of document.querySelectorAll('[data-testid="stMetric"]')) {
    const parts = card.querySelectorAll('[data-testid="stMetricLabel"], [data-testid="stMetricValue"]');
    for (const part of parts) {
      for (const el of [part, ...part.querySelectorAll('*')]) {
        if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
          cut.push(card.innerText.replace(/\\s+/g, ' ') + ' [' + el.scrollWidth + ' > ' + el.clientWidth + ']');
        }
      }
    }
    const box = card.getBoundingClientRect();
    if (box.right > main.right + 1 || box.width < 40) {
      cut.push(card.innerText.replace(/\\s+/g, ' ') + ' [outside the page]');
    }
  }
  for (const button of document.querySelectorAll('[data-testid="stMain"] [data-testid="stButton"] button')) {
    for (const el of [button, ...button.querySelectorAll('*')]) {
      if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
        cut.push('button ' + button.innerText + ' [' + el.scrollWidth + ' > ' + el.clientWidth + ']');
      }
    }
  }
  return [...new Set(cut)];
}"""


def _metric_values(page) -> dict[str, str]:
    cards = page.locator('[data-testid="stMetric"]')
    labels = cards.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = cards.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values, strict=True)}


def _wait_settled(page, cards, timeout_s: float = 60.0) -> None:
    """Wait until the page has stopped running (no running indicator) and shows at least five metric cards."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running").count()
        if not running and cards.count() >= 5:
            time.sleep(1.0)  # let the layout settle
            if cards.count() >= 5:
                return
        time.sleep(0.5)
    pytest.fail(f"the page did not settle with its metric cards within {timeout_s:.0f} s")


def test_first_page_is_a_real_example_and_no_metric_is_cut_off(examples_app_url):
    """A fresh start opens on a real, credited example with a non-empty prediction of the default model
    (not the phantom), and at 1440 and 820 px wide every metric card on Review and Patients reads in full."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(examples_app_url)
            cards = page.locator('[data-testid="stMetric"]')
            expect(cards.filter(has_text="Predicted")).to_be_visible(timeout=120_000)
            expect(page.get_by_text(re.compile("SYNTHETIC PHANTOM"))).to_have_count(0)  # case-sensitive
            expect(page.get_by_text("Cheng et al.", exact=False).first).to_be_visible()
            radio = page.locator('[data-testid="stRadio"]').filter(has_text="Scans from")
            expect(radio.locator("input:checked")).to_have_count(1)
            assert "Real examples" in radio.locator("label:has(input:checked)").inner_text()
            values = _metric_values(page)
            predicted = next(v for k, v in values.items() if k.startswith("Predicted"))
            truth = next(v for k, v in values.items() if k.startswith("Truth"))
            assert int(truth.replace(",", "")) > 0 and int(predicted.replace(",", "")) > 0, values
            assert float(values["Dice"]) > 0.3, values  # a held-out patient: a fair and non-trivial first look
            for title in ("Review", "Patients"):
                page.set_viewport_size({"width": 1440, "height": 1000})
                page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
                expect(cards.filter(has_text="Dice").first).to_be_visible(timeout=120_000)
                page.wait_for_load_state("networkidle")
                for width in (1440, 820):
                    page.set_viewport_size({"width": width, "height": 1000})
                    _wait_settled(page, cards)
                    cut = page.evaluate(TRUNCATED_METRICS_JS)
                    assert cut == [], f"{title} at {width} px: {cut}"
            expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        finally:
            browser.close()
