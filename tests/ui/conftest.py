"""Page tests start without real examples (``BRAINVIEWER_EXAMPLES=off``): they see the synthetic phantom
unless a test points the examples source at the shared data itself (see tests/ui/test_app_examples.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINVIEWER_EXAMPLES", "off")
