"""Public-demo safety: no server path typed by a visitor is read, messages never echo server files, the phantom
folder is made once per process and removed, and an upload holds a limited number of files."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.training.config import TrainConfig
from brainviewer.ui import server_files

APP = "../../app.py"  # AppTest resolves paths against this test file
ROOT = Path(__file__).resolve().parents[2]
PAGES = tuple(f"pages/{page.name}" for page in sorted((ROOT / "pages").glob("*.py")))  # every page, new ones too
SECRET = "TOPSECRET-7f3a9c"


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path, phantom_dataset: Path):
    """Demo mode; the phantom dataset is the one dataset offered; a finished run with best weights; the tiny
    model; fresh Streamlit caches."""
    import streamlit as st

    weights_dir, runs_dir = tmp_path / "weights", tmp_path / "runs"
    weights_dir.mkdir()
    run_dir = runs_dir / "demo-run"
    run_dir.mkdir(parents=True)
    TrainConfig(data=str(phantom_dataset), epochs=1, run_name="demo-run", device="cpu").save(run_dir / "config.json")
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    ids = open_dataset(phantom_dataset).patient_ids
    (run_dir / "split.json").write_text(json.dumps({"train": ids[:4], "val": ids[4:], "mode": "random", "seed": 0}))
    shutil.copytree(tiny_weights, run_dir / "best")
    groups = tmp_path / "groups.csv"
    groups.write_text("patient_id,group\n" + "".join(f"{p},{'A' if i % 2 else 'B'}\n" for i, p in enumerate(ids)))
    monkeypatch.setenv("BRAINVIEWER_DEMO", "1")
    monkeypatch.setenv("BRAINVIEWER_DATASETS", f"phantom={phantom_dataset}")
    monkeypatch.setenv("BRAINVIEWER_GROUPS", f"halves={groups}")
    monkeypatch.delenv("BRAINVIEWER_SPLITS", raising=False)
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path, phantom_dataset: Path):
    """Not a demo: the phantom dataset and the tiny model; fresh Streamlit caches."""
    import streamlit as st

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.delenv("BRAINVIEWER_DEMO", raising=False)
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    return at.run()


def everything_shown(at) -> str:
    """Every text the page shows, widget labels, values and options included."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader", "toast"):
        parts.extend(str(element.value) for element in at.get(kind))
    for widget in (*at.text_input, *at.selectbox):
        parts.append(str(widget.label))
        parts.append(str(widget.value))
    parts.extend(str(option) for box in at.selectbox for option in box.options)
    parts.extend(str(table.value.to_csv()) for table in at.dataframe)
    return "\n".join(parts)


def editable_text_inputs(at) -> list[str]:
    """Labels of the boxes a visitor can type in: text inputs, text areas, and select boxes that take a new option."""
    typed = [box.label for box in (*at.text_input, *at.text_area) if not box.disabled]
    return typed + [box.label for box in (*at.selectbox, *at.multiselect) if box.proto.accept_new_options]


# === Demo mode =================================================================================


def test_named_paths_are_parsed_from_name_path_pairs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = f" lgg = {tmp_path}/lgg ;{tmp_path}/figshare\n dup={tmp_path}/a;dup={tmp_path}/b;;"
    assert server_files.parse_named_paths(raw) == {
        "lgg": f"{tmp_path}/lgg",
        "figshare": f"{tmp_path}/figshare",
        "dup": f"{tmp_path}/a",
    }
    monkeypatch.setenv("BRAINVIEWER_DATASETS", f"one={tmp_path}/one")
    monkeypatch.setenv("BRAINVIEWER_DATA", f"{tmp_path}/default")
    assert list(server_files.named_datasets()) == ["default", "one"]  # $BRAINVIEWER_DATA first


def test_demo_pages_take_no_server_path_and_offer_the_listed_dataset(demo_env: None, phantom_dataset: Path) -> None:
    patients = open_dataset(phantom_dataset).patient_ids
    assert {"pages/review.py", "pages/patients.py", "pages/evaluation.py", "pages/finetune.py"} <= set(PAGES)
    for page in PAGES:
        at = open_page(page)
        assert not at.exception, (page, at.exception)
        assert editable_text_inputs(at) == [], page
        choice = at.sidebar.selectbox(key="dataset_choice")
        assert choice.options == ["(none)", "phantom"] and choice.value == "phantom", page
        assert not at.error, (page, [e.value for e in at.error])
        assert str(phantom_dataset) not in everything_shown(at), page  # the demo names datasets, not paths

    at = open_page("pages/review.py")
    assert at.radio(key="review_source").value == "Dataset sample"
    assert at.selectbox(key="review_patient").options == patients
    assert len(at.image) >= 5 and "Ground truth:" in everything_shown(at) + str([i.captions for i in at.image])
    at = open_page("pages/patients.py")
    assert at.selectbox(key="patient_pick").options == patients
    assert len(at.image) >= 5 and not at.error  # the listed dataset's patient, segmented

    # no dataset chosen: nothing opens, nothing is typed
    at.sidebar.selectbox(key="dataset_choice").set_value("(none)").run()
    assert not at.exception, at.exception
    assert "No dataset chosen." in [c.value for c in at.sidebar.caption]


def test_demo_evaluation_offers_listed_groups_and_run_splits(demo_env: None, phantom_dataset: Path) -> None:
    at = open_page("pages/evaluation.py")
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert editable_text_inputs(at) == []
    groups = at.selectbox(key="eval_groups_choice")
    assert groups.options == ["(none)", "halves"] and groups.value == "halves"
    table = next(d.value for d in at.dataframe if "group" in d.value.columns)
    assert list(table["group"]) == ["A", "B"]

    splits = at.selectbox(key="eval_split_choice")
    assert splits.options == ["(none)", "run demo-run"]
    at.selectbox(key="eval_split_choice").set_value("run demo-run").run()
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    ids = open_dataset(phantom_dataset).patient_ids
    assert f"{len(ids[4:])} patients" in everything_shown(at)


def test_demo_fine_tuning_evaluates_a_run_on_a_listed_dataset_only(demo_env: None) -> None:
    at = open_page("pages/finetune.py")
    assert not at.exception, at.exception
    assert editable_text_inputs(at) == []
    data = at.selectbox(key="finetune_eval_data_choice")
    assert data.options == ["(none)", "phantom"] and data.value == "phantom"
    at.button(key="finetune_eval_button").click().run()
    assert not at.exception, at.exception
    assert "Mean Dice" in [m.label for m in at.metric]


def test_demo_dataset_index_pointing_outside_its_folder_is_refused_without_paths(
    demo_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, phantom_dataset: Path
) -> None:
    folder = tmp_path / "escaping"
    folder.mkdir()
    record = next(iter(open_dataset(phantom_dataset).patients.values()))[0]
    (folder / "data_mask.csv").write_text(
        f"patient_id,image_path,mask_path,mask\nP,{record.image_path},{record.mask_path},1\n"
    )
    monkeypatch.setenv("BRAINVIEWER_DATASETS", f"escaping={folder}")
    at = open_page("pages/review.py")
    assert not at.exception, at.exception
    assert [e.value for e in at.sidebar.error] == ["The dataset escaping could not be opened."]
    assert str(record.image_path) not in everything_shown(at) and str(folder) not in everything_shown(at)


# === Outside demo mode: typed paths, but no file content in messages ===========================


def test_groups_csv_and_run_split_never_show_what_a_file_holds(local_env: None, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{SECRET},{SECRET}-2\nroot:x:0:0:{SECRET}\n")
    at = open_page("pages/evaluation.py")
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception

    at.text_input(key="eval_groups").set_value(str(secret)).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("could not be used" in e and "needs a patient column" in e for e in errors), errors
    assert SECRET not in everything_shown(at)

    at.text_input(key="eval_groups").set_value("/dev/zero").run()  # not a regular file: never opened
    assert any("not a regular file" in e.value for e in at.error)
    at.text_input(key="eval_groups").set_value("").run()

    for split in (secret, Path("/dev/zero")):
        at.text_input(key="eval_split").set_value(str(split)).run()
        assert not at.exception, at.exception
        assert at.error, split
        assert SECRET not in everything_shown(at)
    assert any("not a regular file" in e.value for e in at.error)


def test_over_large_groups_csv_is_refused(local_env: None, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(server_files, "MAX_TEXT_FILE_BYTES", 64)
    big = tmp_path / "big.csv"
    big.write_text("patient_id,group\n" + "x,y\n" * 100)
    with pytest.raises(server_files.ServerFileError, match="BRAINVIEWER_MAX_TEXT_FILE_MB"):
        server_files.checked_file(big, "a groups CSV", server_files.MAX_TEXT_FILE_BYTES)
    assert server_files.checked_file(big, "a groups CSV") == big  # the default cap holds it


# === Upload caps ===============================================================================


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((16, 16)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_over_the_file_cap_is_refused_and_a_session_keeps_the_newest_scans(
    local_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brainviewer.ui import review

    monkeypatch.setattr(review, "MAX_UPLOAD_FILES", 3)
    monkeypatch.setattr(review, "MAX_SESSION_SCANS", 2)
    at = open_page("pages/review.py")
    at.radio(key="review_source").set_value("Upload").run()
    files = [(f"scan_{n}.png", _png(n), "image/png") for n in range(4)]
    at.file_uploader(key="review_upload").set_value(files).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("4 files were uploaded" in e and "at most 3" in e for e in errors), errors
    assert any("BRAINVIEWER_MAX_UPLOAD_FILES" in e for e in errors)
    assert "_review_upload_memo" not in at.session_state

    at.file_uploader(key="review_upload").set_value(files[:3]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="review_item").options == ["scan_1.png", "scan_2.png"]  # the oldest was dropped
    assert any("Only the last 2 scans are kept" in e.value for e in at.error)


# === The phantom folder ========================================================================


def test_the_phantom_folder_is_reused_removed_at_exit_and_stale_ones_cleaned(tmp_path: Path) -> None:
    from brainviewer.data import phantom

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    stale = tmp_path / f"brainviewer-phantom-{gone.pid}"
    (stale / "p1-s2-16").mkdir(parents=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f"brainviewer-phantom-{alive.pid}"
        live.mkdir()
        legacy_old = tmp_path / "brainviewer-phantom-k2j_x8q1"
        legacy_old.mkdir()
        old = 1_000_000.0
        os.utime(legacy_old, (old, old))
        legacy_new = tmp_path / "brainviewer-phantom-a1b2c3d4"
        legacy_new.mkdir()
        script = (
            "import sys; from brainviewer.data.phantom import process_phantom_dataset as p\n"
            f"a = p(patients=1, slices=2, size=16, temp_dir={str(tmp_path)!r})\n"
            "m = (a / '.complete').stat().st_mtime_ns\n"
            f"b = p(patients=1, slices=2, size=16, temp_dir={str(tmp_path)!r})\n"
            "assert a == b and (b / '.complete').stat().st_mtime_ns == m, 'not reused'\n"
            "print(a)\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        made = Path(done.stdout.strip())
        assert made.parent.name.startswith(phantom.PHANTOM_PREFIX) and made.parent.parent == tmp_path
        assert not made.parent.exists()  # removed when its process exited
        assert not stale.exists() and not legacy_old.exists()  # left by processes that are gone
        assert live.is_dir() and legacy_new.is_dir()  # a live process's, and a recent one of an older version
    finally:
        alive.kill()
        alive.wait(10)
