"""The bad-input corpus of tests/data/test_bad_inputs.py uploaded through the Review and Patients pages.

The same generated files (damaged, truncated, mislabelled, huge-header, many-page, animated, graded, NaN,
zip / gzip bombs, ...) go through the real pages in demo mode with Streamlit's AppTest, in one subprocess:
scans and masks through the Review page's uploader, volumes through the Patients page's. Every case must show
the page (panels) or the project's own message (``st.error`` / ``st.warning`` / a note), no exception may reach
the page and no message may be a raw exception (``IndexError: ...``); the process must stay under
:data:`MAX_RSS_BYTES` and each case under :data:`MAX_SECONDS_PER_CASE`. A file whose suffix the page's uploader
does not accept never reaches the app (the browser's file dialog and Streamlit's server both refuse it) and is
counted as ``filtered``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.test_bad_inputs import MAX_RSS_BYTES, MAX_SECONDS_PER_CASE, _corpus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: Longest the whole corpus may take through both pages (the subprocess is killed after this).
MAX_SECONDS_TOTAL = 900

_RUNNER = r"""
import io, json, re, resource, sys, time
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from brainviewer.data.io import read_image
from brainviewer.ui.review import UPLOAD_TYPES

VOLUME_TYPES = ["nii", "gz", "zip", "dcm"]  # the Patients page's uploader (brainviewer/ui/patient_sources.py)
RAW = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")  # a Python exception's name in a message

folder, app = Path(sys.argv[1]), sys.argv[2]


def page(path, radio_key, source):
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page(path)
    at.run()
    at.radio(key=radio_key).set_value(source).run()
    return at


def accepted(name, types):
    return "." in name and name.rsplit(".", 1)[1].lower() in types


def scan_for(mask_bytes, name):
    # a scan the mask can pair with: the mask's own size when it reads as an image, else 64 x 64
    try:
        shape = read_image(mask_bytes, name).shape[:2]
    except Exception:
        shape = (64, 64)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


review = page("pages/review.py", "review_source", "Upload")
patients = page("pages/patients.py", "patient_source", "NIfTI / DICOM upload")
for line in (folder / "manifest.jsonl").read_text().splitlines():
    case = json.loads(line)
    data = (folder / case["file"]).read_bytes()
    name = case["name"]
    if case["reader"] == "volume":
        at, key, types = patients, "patient_upload", VOLUME_TYPES
        files = [(name, data, "application/octet-stream")]
    elif case["reader"] == "mask":
        at, key, types = review, "review_upload", UPLOAD_TYPES
        suffix = name.rsplit(".", 1)[1]  # paired by name with a scan of its size: scan.png + scan_mask.<suffix>
        files = [("scan.png", scan_for(data, name), "image/png"), (f"scan_mask.{suffix}", data, "image/png")]
    else:
        at, key, types = review, "review_upload", UPLOAD_TYPES
        files = [(name, data, "application/octet-stream")]
    result = {"name": name, "page": key, "outcome": "", "messages": [], "detail": "", "images": 0}
    started = time.perf_counter()
    if not all(accepted(f[0], types) for f in files):
        result["outcome"] = "filtered"
    else:
        try:
            at.file_uploader(key=key).set_value(files).run()
            result["images"] = len(at.image)
            result["messages"] = [str(e.value) for kind in ("error", "warning") for e in at.get(kind)]
            result["messages"] += [str(c.value) for c in at.caption if "ℹ️" in str(c.value)]  # volume notes
            if at.exception:
                result["outcome"] = "crash"
                result["detail"] = " | ".join(str(e.value)[:300] for e in at.exception)
            elif any(RAW.search(m) for m in result["messages"]):
                result["outcome"] = "raw"
                result["detail"] = next(m for m in result["messages"] if RAW.search(m))[:300]
            elif [e for e in at.error]:
                result["outcome"] = "message"
            elif result["images"]:
                result["outcome"] = "shown"
            else:
                result["outcome"] = "nothing"  # neither panels nor a message: the user is left guessing
        except BaseException as err:  # the AppTest itself failed: a bug the test reports
            result["outcome"], result["detail"] = "crash", f"{type(err).__name__}: {err}"[:300]
    result["seconds"] = time.perf_counter() - started
    # this process's own high-water mark (VmHWM): ru_maxrss also counts the parent's memory at the fork
    result["peak_rss"] = next(
        (int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def page_results(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> dict[str, dict[str, object]]:
    """Write the corpus, upload it all through both pages in one subprocess, and return one result per file."""
    folder = tmp_path_factory.mktemp("bad_uploads")
    manifest = []
    for index, (name, reader, content, expected) in enumerate(_corpus()):
        file = f"{index:03d}.bin"
        (folder / file).write_bytes(content)
        manifest.append(json.dumps({"name": name, "reader": reader, "file": file, "expected": expected}))
    (folder / "manifest.jsonl").write_text("\n".join(manifest))
    script = folder / "run_pages.py"
    script.write_text(_RUNNER)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        BRAINVIEWER_DEMO="1",  # a public demo: what a visitor can upload
        BRAINVIEWER_WEIGHTS=str(tiny_weights),
        BRAINVIEWER_WEIGHTS_DIR=str(folder / "weights"),
        BRAINVIEWER_RUNS_DIR=str(folder / "runs"),
    )
    for variable in ("BRAINVIEWER_DATA", "BRAINVIEWER_DATASETS"):
        env.pop(variable, None)
    (folder / "weights").mkdir()
    completed = subprocess.run(
        [sys.executable, str(script), str(folder), str(ROOT / "app.py")],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS_TOTAL,
        cwd=ROOT,
        env=env,
    )
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    done = len(results)
    assert completed.returncode == 0, f"the page process died after {done} case(s):\n{completed.stderr[-3000:]}"
    return results


def test_every_upload_shows_the_page_or_the_projects_message(page_results: dict[str, dict[str, object]]) -> None:
    corpus = {name: (reader, want) for name, reader, _, want in _corpus()}
    assert set(page_results) == set(corpus), "some cases printed no result"
    bad = {name: (r["outcome"], r["detail"]) for name, r in page_results.items() if r["outcome"] in ("crash", "raw")}
    assert not bad, f"an exception reached the page, or a message is a raw exception: {bad}"
    silent = [name for name, r in page_results.items() if r["outcome"] == "nothing"]
    assert not silent, f"neither panels nor a message: {silent}"
    wrong = {}
    for name, (reader, want) in corpus.items():
        outcome = page_results[name]["outcome"]
        if outcome == "filtered":
            continue
        if want == "error" and reader != "mask" and outcome != "message":
            wrong[name] = (want, outcome, page_results[name]["messages"])
        if want == "ok" and outcome != "shown":
            wrong[name] = (want, outcome, page_results[name]["messages"])
    assert not wrong, f"(the readers' outcome, the page's, its messages): {wrong}"
    reached = [name for name, r in page_results.items() if r["outcome"] != "filtered"]
    assert len(reached) >= 40, f"only {len(reached)} cases reached a page"


def test_the_pages_stay_within_memory_and_time(page_results: dict[str, dict[str, object]]) -> None:
    peak = max(int(r["peak_rss"]) for r in page_results.values())
    slowest = max(page_results.values(), key=lambda r: r["seconds"])
    outcomes = sorted({str(r["outcome"]) for r in page_results.values()})
    counts = {o: sum(r["outcome"] == o for r in page_results.values()) for o in outcomes}
    print(
        f"\n{len(page_results)} uploads: {counts}; peak RSS {peak / 2**20:,.0f} MiB; slowest {slowest['name']} "
        f"{slowest['seconds']:.1f} s"
    )  # shown with pytest -s
    assert peak < MAX_RSS_BYTES, f"the page process peaked at {peak / 2**20:,.0f} MiB"
    slow = {name: round(r["seconds"], 1) for name, r in page_results.items() if r["seconds"] > MAX_SECONDS_PER_CASE}
    assert not slow, f"cases over {MAX_SECONDS_PER_CASE:.0f} s: {slow}"


def test_what_the_readers_did_reaches_the_review_page(page_results: dict[str, dict[str, object]]) -> None:
    """Pages, frames and graded masks are said on the page, as warnings or notes beside the scan."""

    def said(name: str) -> str:
        return " ".join(page_results[name]["messages"])

    assert "graded mask (0-99, 100 levels)" in said("graded_mask.png")
    assert "page 1 of 3 is shown" in said("multipage_mask.tif")
    assert "frame 1 of 12 is shown" in said("animated.webp")
    assert "page 2 of 6 is shown because page 1 is blank" in said("multipage_blank_first.tif")
    for name in ("huge_header.png", "zero_bomb_8000.png", "channels64_huge_header.tif"):
        assert "BRAINVIEWER_MAX" in said(name), (name, said(name))  # the limit and how to raise it
    for name in ("zip_bomb.zip", "gzip_bomb_with_header.nii.gz", "many_entries.zip", "huge_dims.nii"):
        assert "BRAINVIEWER_MAX" in said(name), (name, said(name))
