"""Correcting a mask and saving it, through streamlit's AppTest (Review and Patients pages, tiny model).

The canvas cannot be drawn on in AppTest (tests/ui/test_browser_corrections.py draws in a real browser);
here an edit is made through the editor's session state, as a finished stroke would leave it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.datasets import open_dataset
from brainviewer.data.io import read_image, read_mask
from brainviewer.ui.state import MASK_EDIT_KEY
from brainviewer.views.mask_edit import PAINT

APP = "../../app.py"  # AppTest resolves paths against this test file


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path) -> Path:
    """The tiny model, no dataset, corrections in a fresh folder (returned); fresh Streamlit caches."""
    import streamlit as st

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    corrections = tmp_path / "corrections"
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    monkeypatch.setenv("BRAINVIEWER_CORRECTIONS_DIR", str(corrections))
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    monkeypatch.delenv("BRAINVIEWER_DEMO", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield corrections
    st.cache_data.clear()
    st.cache_resource.clear()


def open_editor(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    at.toggle(key="mask_edit_on").set_value(True).run()
    assert not at.exception, at.exception
    return at


def the_edit(at):
    (key, edit), *others = at.session_state[MASK_EDIT_KEY].items()
    assert not others
    return key, edit


def saved_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_painted_correction_is_saved_with_its_provenance_and_a_second_save_keeps_the_first(app_env: Path):
    at = open_editor()
    assert at.button(key="mask_edit_undo").disabled and at.button(key="mask_edit_reset").disabled
    key, edit = the_edit(at)
    predicted = edit.mask
    stroke = np.zeros(edit.shape, dtype=bool)
    stroke[10:20, 30:60] = True
    at.session_state[MASK_EDIT_KEY] = {key: edit.apply(stroke, PAINT)}
    at.run()
    assert not at.button(key="mask_edit_undo").disabled
    added = int((stroke & ~predicted).sum())
    assert any(f"+{added:,} px added" in c.value and "Dice with the ground truth" in c.value for c in at.caption)

    at.button(key="mask_edit_save").click().run()
    assert not at.exception, at.exception
    assert any("Saved" in s.value for s in at.success)
    first = saved_files(app_env)
    (mask_path,) = [p for p in first if p.name.endswith("_mask.png")]
    corrected = read_mask(mask_path)
    assert (corrected == (predicted | stroke)).all()  # the saved mask differs exactly where it was painted
    (record_path,) = [p for p in first if p.suffix == ".json"]
    record = json.loads(record_path.read_text())
    assert record["pixels"]["added"] == added and record["pixels"]["removed"] == 0
    assert record["source"]["kind"] == "phantom" and record["threshold"] == pytest.approx(0.5)
    assert record["model"]["label"] == "tiny" and record["saved_at"]
    scan = read_image(mask_path.with_name(mask_path.name.replace("_mask", "")))
    assert scan.shape[:2] == corrected.shape

    at.button(key="mask_edit_save").click().run()  # the same mask saved again: nothing written, and it says so
    assert saved_files(app_env) == first
    assert any("Nothing saved" in i.value for i in at.info)

    key, edit = the_edit(at)
    at.session_state[MASK_EDIT_KEY] = {key: edit.undo()}  # back to the prediction, saved again
    at.run()
    at.button(key="mask_edit_save").click().run()
    assert not at.exception, at.exception
    assert any(".history/" in s.value for s in at.success)
    second = saved_files(app_env)
    # the earlier save is kept, byte for byte, in the patient's hidden history; the slice keeps its name
    history = {p.name.replace("-v1", ""): data for p, data in second.items() if p.parent.name == ".history"}
    assert history == {p.name: data for p, data in first.items()}
    assert (read_mask(mask_path) == predicted).all()
    dataset = open_dataset(app_env)  # the app opens the corrections folder as a dataset: one slice
    assert dataset.kind == "kaggle_3m" and len(dataset.records) == 1


def test_undo_and_reset_through_the_buttons(app_env: Path):
    at = open_editor()
    key, edit = the_edit(at)
    stroke = np.zeros(edit.shape, dtype=bool)
    stroke[0:5, 0:5] = True
    at.session_state[MASK_EDIT_KEY] = {key: edit.apply(stroke, PAINT)}
    at.run()
    at.button(key="mask_edit_reset").click().run()
    assert not at.exception, at.exception
    _, reset = the_edit(at)
    assert not reset.edited and reset.can_undo
    at.button(key="mask_edit_undo").click().run()
    _, undone = the_edit(at)
    assert (undone.mask == (edit.mask | stroke)).all()


def test_in_a_public_demo_nothing_is_saved_on_the_server(app_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BRAINVIEWER_DEMO", "1")
    at = open_editor()
    assert at.button(key="mask_edit_save").disabled
    assert not app_env.exists()


def test_the_patients_page_saves_a_dataset_slice_with_its_path(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path
):
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    at = open_editor("pages/patients.py")
    at.button(key="mask_edit_save").click().run()
    assert not at.exception, at.exception
    (record_path,) = app_env.rglob("*.json")
    record = json.loads(record_path.read_text())
    patient = open_dataset(phantom_dataset).patient_ids[0]
    assert record["patient_id"] == patient and record["source"]["kind"] == "dataset"
    assert record["source"]["path"].startswith(patient)
    assert record["pixels"]["added"] == 0 and record["pixels"]["removed"] == 0
