"""A tumour-free slice predicted empty on the Review page (AppTest): Dice, IoU, precision and recall read
n/a with the reason in their help, not the 1.000 the metric functions return. The model is made to predict
nothing (probabilities 0), so the test never depends on what an untrained model happens to predict."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from brainviewer.model.segmenter import Segmenter

APP = "../../app.py"  # AppTest resolves paths against this test file


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_tumour_free_slice_predicted_empty_reads_n_a(monkeypatch, tmp_path, tiny_weights):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    monkeypatch.setattr(
        Segmenter,
        "predict_slices",
        lambda self, images, batch_size=8, levels=None: (
            [np.zeros(i.shape[:2], np.float32) for i in images],
            [None] * len(images),
        ),
    )
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.radio(key="review_source").set_value("Upload").run()
    scan = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    at.file_uploader(key="review_upload").set_value(
        [
            ("healthy.png", _png(np.stack([scan] * 3, axis=-1)), "image/png"),
            ("healthy_mask.png", _png(np.zeros((64, 64), np.uint8)), "image/png"),
        ]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    cards = {m.label: m for m in at.metric}
    assert cards["Truth area (px)"].value == "0" and cards["Predicted area (px)"].value == "0"
    for name in ("Dice", "IoU", "Precision", "Recall"):
        assert cards[name].value == "n/a", (name, cards[name].value)
        assert cards[name].help.startswith("n/a:"), cards[name].help  # the reason, on hover
    assert cards["Pixel accuracy"].value == "1.0000"  # defined: every pixel is right
    st.cache_data.clear()
    st.cache_resource.clear()
