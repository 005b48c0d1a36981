"""Real examples first: the Review and Patients pages open on public scans read from the examples source
(the shared data beside the project here), credited, with ground truth and a non-empty prediction of the
shipped default model; a configured dataset takes over; without examples the phantom stays the fallback.
Skips where the shared data or the shipped weights are absent (a fresh clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainviewer.views.examples import (
    LGG_WEIGHTS,
    examples_root,
    figshare_example_ids,
    lgg_example_patient,
)
from tests.conftest import SHARED_DATA

APP = "../../app.py"  # AppTest resolves paths against this test file
ROOT = Path(__file__).resolve().parents[2]


# === the rule (pure) ============================================================================


def test_figshare_rule_takes_the_first_isolated_held_out_id_of_each_type():
    ids = [str(i) for i in (1, 2, 3, 10, 18, 26, 30, 31, 40, 48)]
    labels = {i: "a" if int(i) < 20 else "b" if int(i) < 35 else "c" for i in ids}
    # 1-3 and 30-31 are dense blocks (neighbours present); 10 is isolated but not held out
    held_out = {"1", "18", "26", "30", "40", "48"}
    assert figshare_example_ids(ids, labels, held_out) == ["18", "26", "40"]
    assert figshare_example_ids(ids, labels, None) == ["10", "26", "40"]  # no split: every id counts


def test_lgg_rule_takes_the_held_out_patient_with_fewest_slices_lowest_id_on_ties():
    counts = {"P3": 20, "P1": 20, "P2": 12, "P4": 40}
    assert lgg_example_patient(counts, {"P1", "P3", "P4"}) == "P1"
    assert lgg_example_patient(counts, None) == "P2"
    assert lgg_example_patient(counts, {"nobody"}) is None


def test_examples_root_is_operator_only_in_a_demo(tmp_path: Path):
    assert examples_root(demo=False, environ={"BRAINVIEWER_EXAMPLES": str(tmp_path)}) == tmp_path
    assert examples_root(demo=True, environ={"BRAINVIEWER_EXAMPLES": str(tmp_path)}) == tmp_path
    assert examples_root(demo=True, environ={}) is None  # a demo never falls back to a path beside the app
    assert examples_root(demo=False, environ={"BRAINVIEWER_EXAMPLES": "off"}) is None
    assert examples_root(demo=False, environ={"BRAINVIEWER_EXAMPLES": str(tmp_path / "missing")}) is None


# === the pages ==================================================================================


@pytest.fixture
def examples_env(monkeypatch: pytest.MonkeyPatch):
    """The shipped weights (default model), the shared data as the examples source, no dataset."""
    import streamlit as st

    if not (SHARED_DATA / "lgg").is_dir() or not (SHARED_DATA / "figshare").is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    if not (LGG_WEIGHTS / "model.safetensors").is_file():
        pytest.skip("the shipped LGG weights are not present")
    monkeypatch.setenv("BRAINVIEWER_EXAMPLES", str(SHARED_DATA))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(ROOT / "weights"))
    for name in ("BRAINVIEWER_WEIGHTS", "BRAINVIEWER_DATA", "BRAINVIEWER_DEMO"):
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def _text(at) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in at.get(kind)]
    parts += [caption for image in at.image for caption in image.captions]
    return "\n".join(parts)


def test_review_opens_on_a_real_credited_example_with_a_prediction(examples_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="review_source").value == "Real examples"
    text = _text(at)
    assert "SYNTHETIC" not in text
    assert "Cheng et al." in text and "Buda et al." in text
    cards = {m.label: m.value for m in at.metric}
    assert int(cards["Truth area (px)"].replace(",", "")) > 0
    assert int(cards["Predicted area (px)"].replace(",", "")) > 0
    assert float(cards["Dice"]) > 0.3  # the held-out LGG example: a fair, non-trivial first look
    assert "Held out:" in text  # and the page says so, as for an upload or a dataset pick of that patient
    names = at.selectbox(key="review_item").options
    assert names[0].startswith("TCGA_") and {"437.png", "721.png", "1101.png"} <= set(names)


def test_patients_opens_on_the_example_patient_and_switches_to_a_dataset(examples_env, phantom_dataset):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/patients.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="patient_source").value == "Real example"
    assert at.selectbox(key="patient_pick").value.startswith("TCGA_")
    assert "Buda et al." in _text(at)
    dice = {m.label: m.value for m in at.metric}["Volume Dice"]
    assert dice != "n/a" and float(dice) > 0.3
    at.text_input(key="dataset_path_input").set_value(str(phantom_dataset)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="patient_source").value == "Dataset patient"
    assert at.selectbox(key="patient_pick").value.startswith("PHANTOM_")
