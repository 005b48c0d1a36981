"""Numeric patient ids (figshare's images/<id>.png) through the Evaluation page (AppTest): the per-patient
Dice chart puts one bar per patient on a category axis, never slivers on a numeric axis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

APP = "../../app.py"  # AppTest resolves paths against this test file
IDS = ("1", "2", "10", "918", "1841")  # gaps as in figshare: a numeric axis would squeeze them into clumps


@pytest.fixture
def numeric_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "numeric"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index, image_id in enumerate(IDS):
        scan = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + index : 30 + index, 12:34] = 255
        Image.fromarray(scan).save(root / "images" / f"{image_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
    return root


def test_numeric_ids_are_bars_on_a_category_axis(monkeypatch, tmp_path, tiny_weights, numeric_dataset):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(numeric_dataset))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/evaluation.py")
    at.run()
    at.button(key="eval_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    bars = next(c for c in charts if any(t.get("type") == "bar" for t in c["data"]))
    assert bars["layout"]["xaxis"]["type"] == "category"
    xs = [str(x) for trace in bars["data"] if trace.get("type") == "bar" for x in trace["x"]]
    assert sorted(xs, key=int) == sorted(IDS, key=int)  # one bar per patient
    st.cache_data.clear()
    st.cache_resource.clear()
