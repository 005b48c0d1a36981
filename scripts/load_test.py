"""Load test: concurrent browser sessions upload the largest accepted scan to the app in demo mode.

Usage (not part of the default test run; heavy on a small machine)::

    python scripts/load_test.py                       # 10 sessions, the app's default model
    python scripts/load_test.py --sessions 4 --timeout 300 --max-rss-gb 4

It starts ``streamlit run app.py`` as the Dockerfile does (demo mode, 20 MB uploads, no file watcher) on a
free port, opens ``--sessions`` headless Chromium sessions at once (Playwright, one browser context each, so
one Streamlit session each), and in each uploads a 4096 x 4096 16-bit RGB TIFF with its mask: the largest
scan the pixel budget (``BRAINVIEWER_MAX_SCAN_PIXELS``) accepts, 96 MiB decoded, 14 MB on the wire. It waits
until every session shows its five panels and samples the resident memory of the server's process tree
(``/proc``, Linux) every 0.2 s. Prints one JSON object and exits 1 unless every session got its panels and
the peak stayed under ``--max-rss-gb``. The scan is a synthetic phantom enlarged, not a real scan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync"]
SIDE = 4096


def largest_scan(folder: Path) -> tuple[Path, Path]:
    """A ``SIDE x SIDE`` 16-bit RGB phantom TIFF (zlib) and its mask PNG, written to ``folder``."""
    import cv2
    import numpy as np
    import tifffile
    from PIL import Image

    from brainviewer.data.phantom import phantom_slice

    image, mask = phantom_slice(seed=0, size=256)  # (256, 256, 3) uint8, like an LGG slice
    rgb = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST).astype(np.uint16) * 257
    assert rgb.shape == (SIDE, SIDE, 3), rgb.shape
    scan = folder / "load_scan.tif"
    tifffile.imwrite(scan, rgb, compression="zlib", predictor=True, photometric="rgb")
    big_mask = cv2.resize(mask.astype(np.uint8) * 255, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
    mask_path = folder / "load_scan_mask.png"
    Image.fromarray(big_mask).save(mask_path)
    return scan, mask_path


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class Sampler(threading.Thread):
    """Samples :func:`tree_rss` of ``pid`` every ``interval`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1
            self.stopped.wait(self.interval)


async def one_session(browser, url: str, files: list[str], index: int, timeout_s: float) -> dict:
    """One visitor: open the app, upload ``files`` on Review, wait for the five panels."""
    started = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    result = {"session": index, "panels": 0, "seconds": None, "error": None}
    try:
        page = await context.new_page()
        await page.goto(url, timeout=timeout_s * 1000)
        radio = page.locator('[data-testid="stRadio"]').get_by_text("Upload", exact=True)
        await radio.click(timeout=timeout_s * 1000)
        file_input = page.locator('input[type="file"]')
        await file_input.wait_for(state="attached", timeout=timeout_s * 1000)
        await file_input.set_input_files(files)
        caption = page.get_by_text("Green: probability ≥", exact=False).first
        await caption.wait_for(timeout=timeout_s * 1000)
        result["panels"] = await page.locator('[data-testid="stImage"]:visible').count()
        result["seconds"] = round(time.perf_counter() - started, 1)
        errors = await page.locator('[data-testid="stException"]').count()
        if errors:
            result["error"] = f"{errors} exception(s) on the page"
    except Exception as err:  # a timeout or a closed page: reported, the other sessions go on
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        try:  # what the page said instead (an error message, a spinner)
            shown = await page.locator('[data-testid="stAlert"], [data-testid="stSpinner"]').all_inner_texts()
            result["page_said"] = [text[:300] for text in shown]
            if os.environ.get("LOAD_TEST_SCREENSHOTS"):
                await page.screenshot(path=str(Path(os.environ["LOAD_TEST_SCREENSHOTS"]) / f"session{index}.png"))
        except Exception:
            pass
    finally:
        await context.close()
    return result


async def run_sessions(url: str, files: list[str], sessions: int, timeout_s: float) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(one_session(browser, url, files, i, timeout_s) for i in range(sessions)))
        finally:
            await browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600, help="seconds each session may take")
    parser.add_argument("--max-rss-gb", type=float, default=4.0, help="peak server memory allowed (GiB)")
    parser.add_argument("--weights", default=None, help="weights folder or name (default: the app's model)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(json.dumps({"error": f"Chromium not found at {CHROMIUM}"}))
        return 2

    with tempfile.TemporaryDirectory(prefix="brainviewer-load-") as tmp:
        scan, mask = largest_scan(Path(tmp))
        env = {k: v for k, v in os.environ.items() if k not in ("BRAINVIEWER_DATA", "BRAINVIEWER_DATASETS")}
        env.update(BRAINVIEWER_DEMO="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
        if args.weights:
            env["BRAINVIEWER_WEIGHTS"] = args.weights
        port = free_port()
        command = [  # the Dockerfile's CMD, on a local port
            sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
            "--server.address", "127.0.0.1", "--server.headless", "true", "--server.maxUploadSize", "20",
            "--server.fileWatcherType", "none", "--server.enableXsrfProtection", "false",
            "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
        log = Path(tmp) / "streamlit.log"
        with log.open("w") as handle:
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        sampler = Sampler(server.pid)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            idle = tree_rss(server.pid)
            sampler.start()
            started = time.perf_counter()
            results = asyncio.run(run_sessions(url, [str(scan), str(mask)], args.sessions, args.timeout))
            wall = time.perf_counter() - started
            time.sleep(1.0)  # one more sample after the last panels
        finally:
            sampler.stopped.set()
            sampler.join(5)
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(15)
        ok = [r for r in results if r["panels"] >= 5 and not r["error"]]
        report = {
            "sessions": args.sessions,
            "with_panels": len(ok),
            "scan": f"{SIDE}x{SIDE} 16-bit RGB TIFF ({scan.stat().st_size / 1e6:.1f} MB) + mask",
            "server_rss_idle_mib": round(idle / 2**20),
            "server_rss_peak_mib": round(sampler.peak / 2**20),
            "limit_mib": round(args.max_rss_gb * 1024),
            "rss_samples": sampler.samples,
            "seconds_to_panels": sorted(r["seconds"] for r in ok),
            "wall_s": round(wall, 1),
            "failures": [r for r in results if r not in ok],
            "cpus": os.cpu_count(),
        }
        print(json.dumps(report, indent=1))
        passed = len(ok) == args.sessions and sampler.peak < args.max_rss_gb * 2**30
        if not passed:
            print(log.read_text()[-2000:], file=sys.stderr)
        return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
