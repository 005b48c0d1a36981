"""Upload file names: which file is a scan's ground-truth mask, natural sort order, scan-mask pairs.

Plain Python, no pixels: :mod:`brainviewer.data.io` re-exports everything here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_MASK_RE = re.compile(r"^(?P<stem>.+?)[_-]mask$", re.IGNORECASE)


def is_mask_name(name: str | Path) -> bool:
    """True for ground-truth mask files named like ``<scan>_mask.<ext>``."""
    return _MASK_RE.match(Path(str(name)).stem) is not None


def scan_stem_for_mask(name: str | Path) -> str | None:
    """The scan stem a mask file belongs to (``a_3_mask.tif`` -> ``a_3``), else ``None``."""
    match = _MASK_RE.match(Path(str(name)).stem)
    return match.group("stem") if match else None


def natural_key(text: str) -> list[object]:
    """Sort key that orders embedded numbers numerically: ``_2`` before ``_10``.

    Text and numbers alternate in the key (it always starts with text, maybe ``""``), so
    any two keys compare without mixing ``str`` and ``int``. Letters compare case-blind.
    """
    parts = re.split(r"(\d+)", str(text))
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)]


@dataclass(frozen=True)
class UploadPair:
    """A scan and, when one was given, its ground-truth mask (file names and bytes)."""

    scan_name: str
    scan_bytes: bytes
    mask_name: str | None = None
    mask_bytes: bytes | None = None


def pair_files(files: Iterable[tuple[str, bytes]]) -> tuple[list[UploadPair], list[str]]:
    """Pair scans with their ``_mask`` files by name.

    Args:
        files: ``(file name, content)`` tuples, e.g. from an upload widget.

    Returns:
        ``(pairs, orphan_masks)``: one :class:`UploadPair` per scan in natural name order,
        and the names of mask files that matched no scan.
    """
    scans: dict[str, tuple[str, bytes]] = {}
    masks: dict[str, tuple[str, bytes]] = {}
    for name, content in files:
        stem = scan_stem_for_mask(name)
        if stem is not None:
            masks[stem] = (name, content)
        else:
            scans[Path(name).stem] = (name, content)
    pairs = []
    for stem in sorted(scans, key=natural_key):
        name, content = scans[stem]
        mask = masks.pop(stem, None)
        pairs.append(UploadPair(name, content, mask[0] if mask else None, mask[1] if mask else None))
    orphans = sorted((name for name, _ in masks.values()), key=natural_key)
    return pairs, orphans
