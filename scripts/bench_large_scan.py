"""Time the Review page's server on the largest scan it accepts: upload to panels, then threshold moves.

Usage::

    python scripts/bench_large_scan.py                                   # default model, 4096x4096 upload
    python scripts/bench_large_scan.py --weights weights/lgg-unet-resnet18 --moves 5
    python scripts/bench_large_scan.py --no-display-copy                 # panels at full size, for comparison

The page runs in Streamlit's AppTest (the real page script, in this process: reading the upload, the model,
thresholding, overlays, metrics and the image encoding Streamlit does for ``st.image``), so the times are the
server's share of a slider move, without the network and the browser. The scan is a synthetic phantom slice
(not a real scan) enlarged to the side that :data:`brainviewer.data.io.MAX_PIXELS` accepts, uploaded as a
3-channel 8-bit PNG with its mask. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def largest_upload(side: int) -> tuple[bytes, bytes]:
    """A ``side x side`` phantom slice and its mask as PNG bytes (the slice is a 256 px phantom enlarged)."""
    import cv2
    import numpy as np
    from PIL import Image

    from brainviewer.data.phantom import phantom_slice

    image, mask = phantom_slice(seed=0, size=256)
    big = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    big_mask = cv2.resize(mask.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
    scan_png, mask_png = io.BytesIO(), io.BytesIO()
    Image.fromarray(big).save(scan_png, format="PNG")
    Image.fromarray(big_mask).save(mask_png, format="PNG")
    return scan_png.getvalue(), mask_png.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights folder or name (default: the app's model)")
    parser.add_argument("--side", type=int, default=0, help="scan side in px (default: the largest accepted square)")
    parser.add_argument("--moves", type=int, default=5, help="threshold moves timed")
    parser.add_argument("--no-display-copy", action="store_true", help="draw the panels at full size (before)")
    args = parser.parse_args(argv)
    if args.no_display_copy:
        os.environ["BRAINVIEWER_DISPLAY_MAX_SIDE"] = str(1 << 30)
    if args.weights:
        os.environ["BRAINVIEWER_WEIGHTS"] = args.weights
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from streamlit.testing.v1 import AppTest

    from brainviewer.data.io import MAX_PIXELS

    side = args.side or math.isqrt(MAX_PIXELS)
    scan_png, mask_png = largest_upload(side)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.switch_page("pages/review.py")
    at.run()
    at.radio(key="review_source").set_value("Upload").run()
    files = [("large.png", scan_png, "image/png"), ("large_mask.png", mask_png, "image/png")]
    started = time.perf_counter()
    at.file_uploader(key="review_upload").set_value(files).run()
    upload_s = time.perf_counter() - started
    problems = [str(e.value) for e in at.error] + [str(e.value) for e in at.exception]
    if problems or len(at.image) < 5:
        print(json.dumps({"error": problems or f"{len(at.image)} pictures shown, expected 5"}))
        return 1
    moves = []
    for index in range(args.moves):
        value = round(0.3 + 0.4 * (index % 2) + 0.01 * index, 2)  # alternate far apart: a new mask each time
        started = time.perf_counter()
        at.slider(key="threshold").set_value(value).run()
        moves.append(time.perf_counter() - started)
    notes = [str(c.value) for c in at.caption if "drawn at" in str(c.value)]
    threads = os.environ["OMP_NUM_THREADS"]
    print(
        json.dumps(
            {
                "scan": f"{side}x{side} 3-channel 8-bit PNG ({len(scan_png) / 1024:.0f} KiB) + mask",
                "display_copy": not args.no_display_copy,
                "upload_to_panels_s": round(upload_s, 3),
                "threshold_move_s": {
                    "median": round(statistics.median(moves), 3),
                    "min": round(min(moves), 3),
                    "max": round(max(moves), 3),
                },
                "moves": len(moves),
                "page_note": notes[0] if notes else None,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
