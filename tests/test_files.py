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


def test_write_new_makes_files_with_the_umask_s_mode_not_the_temporary_file_s(tmp_path):
    import os

    from brainviewer.files import write_new

    old = os.umask(0o022)
    try:
        path = write_new(tmp_path / "a.txt", "x")
        os.umask(0o077)
        private = write_new(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600
