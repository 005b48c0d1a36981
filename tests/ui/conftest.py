"""Page tests start without real examples (``BRAINVIEWER_EXAMPLES=off``): they see the synthetic phantom
unless a test points the examples source at the shared data itself (see tests/ui/test_app_examples.py).
``app_env`` is the usual page-test setting: the tiny model, no dataset, not a demo, fresh caches."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINVIEWER_EXAMPLES", "off")


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path):
    """The tiny model configured, no dataset (the pages show the synthetic phantom), not a public demo, and
    fresh Streamlit caches before and after."""
    import streamlit as st

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    monkeypatch.delenv("BRAINVIEWER_DEMO", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
