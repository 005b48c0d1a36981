"""XSRF protection and uploads inside a cross-site iframe (how a Hugging Face Space shows the app).

A Space frames the app (``https://<user>-<space>.hf.space``) inside ``https://huggingface.co``: another site.
With XSRF protection on, Streamlit's upload request must carry the ``_streamlit_xsrf`` cookie, and a cookie of
a framed cross-site page is sent only with ``SameSite=None`` (Streamlit 1.67's ``server.xsrfCookieSameSite``,
which also marks it ``Secure``). Here a page on ``http://127.0.0.1:<port>`` frames the app on
``http://localhost:<port>`` (different hosts, so a different site; both count as secure contexts, so the
``Secure`` cookie is kept) in headless Chromium, and a scan is uploaded inside the frame. The default
(``lax``) must fail with 403, which is why the Dockerfile once turned XSRF off; ``none`` must let the upload
through, which is what the Dockerfile now uses.

Skips when Chromium (/usr/bin/chromium) or the playwright package is missing.
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile_flags() -> dict[str, str]:
    """The ``--server.*`` flags of the Dockerfile's CMD, as ``{name: value}``."""
    import json

    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    words = json.loads(cmd[4:])
    return {words[i].lstrip("-"): words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--server.")}


@pytest.fixture
def framed_app(request: pytest.FixtureRequest, tiny_weights: Path, tmp_path: Path):
    """The app with XSRF on and the given cookie SameSite, on localhost, and a page on 127.0.0.1 framing it."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    same_site = request.param
    env = {k: v for k, v in os.environ.items() if k not in ("BRAINVIEWER_DATA", "BRAINVIEWER_DATASETS")}
    env.update(
        BRAINVIEWER_DEMO="1",
        BRAINVIEWER_WEIGHTS=str(tiny_weights),
        BRAINVIEWER_WEIGHTS_DIR=str(tiny_weights.parent),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    port, frame_port = _free_port(), _free_port()
    (tmp_path / "frame.html").write_text(
        f'<!doctype html><title>another site</title><iframe id="app" src="http://localhost:{port}/" '
        'width="1400" height="1000" allow="clipboard-write"></iframe>'
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", frame_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    xsrf = ("--server.enableXsrfProtection", "true", "--server.xsrfCookieSameSite", same_site)
    try:
        with running_app(env, tmp_path / "streamlit.log", port, xsrf):
            yield f"http://127.0.0.1:{frame_port}/frame.html"
    finally:
        server.shutdown()


def _scan_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def _upload_in_frame(url: str, scan: Path, profile: Path, third_party_cookies: bool) -> tuple[list[int], int, bool]:
    """Upload ``scan`` on the framed Review page in a fresh Chromium profile (third-party cookies allowed or as
    the browser sets them by default): the upload requests' HTTP statuses, the panels shown, and whether the
    framed app's XSRF cookie was stored."""
    import json

    from playwright.sync_api import sync_playwright

    if third_party_cookies:  # what a user gets in Chrome's settings: "Allow third-party cookies"
        (profile / "Default").mkdir(parents=True)
        prefs = {"profile": {"cookie_controls_mode": 0, "block_third_party_cookies": False}}
        (profile / "Default" / "Preferences").write_text(json.dumps(prefs))
    statuses: list[int] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, viewport={"width": 1440, "height": 1100}
        )
        try:
            page = context.new_page()
            page.on(
                "response",
                lambda response: statuses.append(response.status) if "/_stcore/upload_file" in response.url else None,
            )
            page.goto(url)
            frame = page.frame_locator("#app")
            frame.locator('[data-testid="stRadio"]').get_by_text("Upload", exact=True).click(timeout=90_000)
            file_input = frame.locator('input[type="file"]')
            file_input.wait_for(state="attached", timeout=30_000)
            file_input.set_input_files([str(scan)])
            try:
                frame.get_by_text("Green: probability ≥", exact=False).first.wait_for(timeout=45_000)
            except Exception:  # no panels: the upload was refused (the statuses say how)
                pass
            panels = frame.locator('[data-testid="stImage"]').count()
            cookie = any(c["name"] == "_streamlit_xsrf" for c in context.cookies())
        finally:
            context.close()
    return statuses, panels, cookie


@pytest.mark.parametrize("framed_app", ["lax"], indirect=True)
def test_with_the_default_cookie_an_upload_in_a_cross_site_frame_is_refused(framed_app: str, tmp_path: Path) -> None:
    """SameSite=Lax: the cookie is stored, but not sent with the frame's cross-site upload request: 403."""
    statuses, panels, _ = _upload_in_frame(framed_app, _scan_png(tmp_path / "scan.png"), tmp_path / "profile", True)
    assert 403 in statuses and 200 not in statuses, statuses
    assert panels < 5


@pytest.mark.parametrize("framed_app", ["none"], indirect=True)
def test_samesite_none_uploads_in_a_cross_site_frame_only_where_third_party_cookies_are_allowed(
    framed_app: str, tmp_path: Path
) -> None:
    """SameSite=None works where the browser allows third-party cookies, and fails (403, no cookie stored in
    the frame) with headless Chromium's defaults, which block them, as Safari, Firefox's strict mode, Brave and
    private windows do. Streamlit 1.67 does not mark the cookie ``Partitioned`` (CHIPS), which such browsers
    would keep."""
    allowed = _upload_in_frame(framed_app, _scan_png(tmp_path / "scan.png"), tmp_path / "allowed", True)
    statuses, panels, cookie = allowed
    assert cookie and statuses and set(statuses) <= {200, 204}, allowed
    assert panels >= 5

    blocked = _upload_in_frame(framed_app, tmp_path / "scan.png", tmp_path / "default", False)
    statuses, panels, cookie = blocked
    assert not cookie and 403 in statuses and 200 not in statuses, blocked
    assert panels < 5


def test_the_dockerfile_keeps_xsrf_off_and_says_why() -> None:
    """XSRF on would break uploads in the Space for every visitor whose browser blocks third-party cookies."""
    flags = _dockerfile_flags()
    assert flags.get("server.enableXsrfProtection") == "false", flags
    text = (ROOT / "Dockerfile").read_text()
    assert "third-party cookies" in text and "tests/ui/test_demo_xsrf.py" in text
