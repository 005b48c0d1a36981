"""The benchmark's reading-view rows run and time what their names say (512x512, no Streamlit)."""

from __future__ import annotations

import json
from pathlib import Path

from brainviewer.evaluation.benchmark_workloads import READING_SIDE, reading_view_rows
from brainviewer.model.segmenter import Segmenter


def test_reading_view_rows_run_on_a_512_slice(tiny_weights: Path) -> None:
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    rows = reading_view_rows(segmenter)
    names = [name for name, _, _ in rows]
    assert READING_SIDE == 512 and all("512x512" in name for name in names)
    assert names[0].startswith("window/level move") and names[1].startswith("threshold move")
    spec = json.loads(rows[0][1]())  # the plotly JSON st.plotly_chart would send
    assert spec["data"][0]["type"] == "image" and spec["data"][0]["source"].startswith("data:image/png")
    assert json.loads(rows[1][1]())["data"][0]["type"] == "image"
    assert rows[2][1]().shape == (512, 512, 3)  # the uncertainty map
    assert len(rows[3][1]()) == 5  # five panels, each a PNG
