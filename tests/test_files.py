"""brainviewer.files: atomic replace and create-only writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainviewer.files import write_atomic, write_new


def test_write_new_creates_and_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.txt"
    write_new(path, "first")
    with pytest.raises(FileExistsError, match="already exists"):
        write_new(path, b"second")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]  # no temporary file left behind


def test_write_atomic_replaces(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
