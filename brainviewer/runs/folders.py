"""The runs folder and the basics every other module of :mod:`brainviewer.runs` shares.

Where the runs folder is (:func:`runs_root`), its lock (:func:`flock`: starting, queueing,
resuming, deleting and promoting hold it), atomic JSON writes, the names a run or weights
folder may have, and whether a folder holds complete weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from brainviewer.files import write_atomic
from brainviewer.model.segmenter import CONFIG_FILE as MODEL_CONFIG_FILE
from brainviewer.model.segmenter import WEIGHTS_FILE
from brainviewer.model.weights import PROJECT_ROOT
from brainviewer.runs.layout import RUNS_ENV

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: A temporary file (``.<name>.<random>.tmp`` of :func:`brainviewer.files.write_atomic`) older than this is
#: a leftover of a killed writer: such a write takes milliseconds.
STALE_TEMP_AGE_S = 3600.0
_CLEANED: set[tuple[str, str]] = set()


def runs_root() -> Path:
    """The folder holding runs: ``$BRAINVIEWER_RUNS_DIR``, else ``runs/`` of the project."""
    return Path(os.environ.get(RUNS_ENV, PROJECT_ROOT / "runs"))


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block.

    ``path`` is a folder (locked through its own descriptor, so no lock file is left in it)
    or a file (created if needed).
    """
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def validate_name(name: str, what: str = "run") -> str:
    """``name`` if it is a safe folder name (letters, digits, ``.``, ``_``, ``-``; not starting with ``.``)."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def complete_weights(folder: Path) -> bool:
    """Whether ``folder`` holds complete weights (``config.json`` and ``model.safetensors``)."""
    return (folder / MODEL_CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def first_time_in_process(what: str, folder: Path) -> bool:
    """True on the first call for ``(what, folder)`` in this process, then False (cleanups run once)."""
    key = (what, str(folder.resolve()))
    if key in _CLEANED:
        return False
    _CLEANED.add(key)
    return True


def remove_stale_temporaries(folder: Path, min_age_s: float = STALE_TEMP_AGE_S, now: float | None = None) -> list[Path]:
    """Remove the hidden ``.*.tmp`` files directly in ``folder`` (left by writes whose process was killed)
    that are at least ``min_age_s`` old; younger ones may still be being written.

    Returns:
        The files removed.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = list(folder.glob(".*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        try:
            info = path.lstat()
            if not path.is_file() or path.is_symlink() or now - info.st_mtime < min_age_s:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
