"""The package layout: Streamlit only in the UI, modules small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "brainviewer"
UI_PACKAGE = PACKAGE / "ui"
MAX_LINES = 450


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (``import a.b`` and ``from a.b import c`` give ``a``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if UI_PACKAGE not in p.parents)


def test_streamlit_is_imported_only_by_the_ui() -> None:
    """``brainviewer.ui``, ``pages/`` and ``app.py`` may import Streamlit; the rest of the library never."""
    offenders = [str(p.relative_to(ROOT)) for p in _library_modules() if "streamlit" in _imported_modules(p)]
    assert not offenders, f"Streamlit imported outside brainviewer/ui/: {offenders}"


def test_the_layout_check_sees_an_offender(tmp_path: Path) -> None:
    """The check above is not vacuous: it finds a plain, a dotted and a function-level import."""
    for source in (
        "import streamlit as st\n",
        "from streamlit.testing.v1 import AppTest\n",
        "def f():\n    import streamlit\n",
    ):
        module = tmp_path / "m.py"
        module.write_text(source)
        assert "streamlit" in _imported_modules(module)


@pytest.mark.parametrize("path", _library_modules() + sorted(UI_PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_readable(path: Path) -> None:
    """No module over about 450 lines unless its docstring says why (a line starting ``Long:``)."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert lines <= MAX_LINES or "Long:" in doc, f"{path.relative_to(ROOT)} has {lines} lines; split it by concern"
