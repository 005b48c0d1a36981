"""Choosing one page of a multi-page or animated file, and the notes that say what was done.

Plain NumPy, no file formats: :mod:`brainviewer.data.io` decodes the pages and calls
:func:`choose_page`; the notes it returns are shown to the user next to the scan::

    array, index, notes = choose_page(6, decode, page=None, label="a.tif", kind="page")
    # notes: ["a.tif has 6 pages; page 2 of 6 is shown (page 1 is blank). ..."]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Pages (or frames) looked at when the first ones are blank; later ones are never decoded unless asked for.
MAX_PAGES_SCANNED = 16


@dataclass
class ScanInfo:
    """A scan (or mask) as read, with notes about what the reader did to it.

    Attributes:
        image: the scan, ``(H, W)`` or ``(H, W, 3)``; for a mask, ``(H, W)`` bool.
        notes: sentences for the user, e.g. which page of a multi-page file is shown, or how a graded
            mask was binarised. Empty when the file was read as is.
        page: 0-based index of the page (or frame) shown.
        pages: how many pages (or frames) the file holds (1 for an ordinary image).
    """

    image: np.ndarray
    notes: list[str] = field(default_factory=list)
    page: int = 0
    pages: int = 1


def is_blank(array: np.ndarray) -> bool:
    """True when every value in ``array`` is the same (an empty page: all black, all white, all zero)."""
    array = np.asarray(array)
    if array.size == 0:
        return True
    return bool(array.min() == array.max())


def page_out_of_range(label: str, page: int, count: int, kind: str = "page") -> str | None:
    """The message for a ``page`` index that ``label`` (with ``count`` pages) does not have, else ``None``."""
    if 0 <= page < count:
        return None
    return (
        f"{label} has {count} {kind}(s), so {kind} index {page} (counted from 0) does not exist. "
        f"Choose an index from 0 to {count - 1}."
    )


def choose_page(
    count: int,
    decode: Callable[[int], np.ndarray],
    page: int | None,
    label: str,
    kind: str = "page",
) -> tuple[np.ndarray, int, list[str]]:
    """Decode one page of a ``count``-page file: ``page`` when given, else the first that is not blank.

    Args:
        count: pages (or frames) in the file, at least 1.
        decode: decodes page ``i`` (0-based) into an array; it does its own size checks and raises for bad input.
        page: 0-based page to show (already checked to exist), or ``None`` for the first non-blank one
            among the first :data:`MAX_PAGES_SCANNED`.
        label: the file name, for the notes.
        kind: ``"page"`` (multi-page TIFF) or ``"frame"`` (animated GIF, PNG or WebP).

    Returns:
        ``(array, index, notes)``: the decoded page, its index, and notes for the user (none for a
        single-page file).
    """
    if count <= 1:
        return decode(0), 0, []
    if page is not None:
        return decode(page), page, [_page_note(label, page, count, kind, blank_before=0)]
    first: np.ndarray | None = None
    scanned = min(count, MAX_PAGES_SCANNED)
    for index in range(scanned):
        array = decode(index)
        if not is_blank(array):
            return array, index, [_page_note(label, index, count, kind, blank_before=index)]
        if first is None:
            first = array
    assert first is not None  # count > 1, so at least one page was decoded
    more = f"the first {scanned} of its {count}" if scanned < count else f"all {count}"
    return (
        first,
        0,
        [
            f"{label}: {more} {kind}s are blank (every pixel the same value); {kind} 1 is shown. "
            f"Check that the file holds the slice you meant, or save that {kind} as its own file."
        ],
    )


def _page_note(label: str, index: int, count: int, kind: str, blank_before: int) -> str:
    what = f"{label} is an animated image" if kind == "frame" else f"{label} has {count} pages"
    note = f"{what}: {kind} {index + 1} of {count} is shown"
    if blank_before == 1:
        note += f" because {kind} 1 is blank"
    elif blank_before > 1:
        note += f" because {kind}s 1-{blank_before} are blank"
    return note + f". One {kind} is reviewed at a time; the Review page's {kind} picker shows another."


def graded_mask_note(label: str, array: np.ndarray, threshold: float) -> str:
    """The note for a mask with many grey levels that was binarised at ``> threshold`` (half its maximum)."""
    values = np.asarray(array)
    if values.ndim == 3:
        values = values.max(axis=2)
    levels = int(np.unique(values).size)
    lo, hi = (values.min().item(), values.max().item()) if values.size else (0, 0)
    return (
        f"{label} is a graded mask ({_fmt(lo)}-{_fmt(hi)}, {levels} levels), not a label map; it was binarised at "
        f"> {_fmt(threshold)}, half its maximum. If tumour means any value above 0, save the mask with only "
        "the values 0 and 255."
    )


def _fmt(value: float) -> str:
    """A number without trailing zeros: 49.5, 99, 0.25."""
    return f"{float(value):.6g}"
