"""brainviewer.views.review_sources.items_from_uploads: a file added twice to an upload."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from brainviewer.views.review_sources import items_from_uploads


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _scan(shift: int = 0) -> np.ndarray:
    return ((np.arange(32 * 32).reshape(32, 32) + shift) % 256).astype(np.uint8)


def test_identical_files_are_read_once_without_an_error():
    scan, mask = _png(_scan()), _png(np.zeros((32, 32), dtype=np.uint8))
    files = [("a.png", scan), ("a_mask.png", mask), ("a.png", scan), ("a_mask.png", mask), ("b.png", _png(_scan(7)))]
    items, errors = items_from_uploads(files)
    assert errors == []
    assert [item.name for item in items] == ["a.png", "b.png"]
    assert items[0].truth is not None and items[0].messages == []


def test_a_different_file_with_the_same_name_is_still_reported():
    items, errors = items_from_uploads([("a.png", _png(_scan())), ("a.png", _png(_scan(9)))])
    assert len(items) == 1 and (items[0].image == _scan()).all()
    assert len(errors) == 1 and "a.png has the same name as a.png" in errors[0]
