"""Where Review items come from: uploaded files (scans paired with their masks), dataset slices, phantoms.

No Streamlit here: :mod:`brainviewer.ui.review` shows what these read. Every problem with an
uploaded file becomes a message, never an exception::

    items, errors = items_from_uploads([(name, content), ...])
    item = item_from_record(dataset, dataset.patients[patient_id][0])
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from brainviewer.data.datasets import Dataset, SliceRecord
from brainviewer.data.io import (
    ScanReadError,
    pair_files,
    read_image,
    read_image_with_notes,
    read_mask_with_notes,
    scan_stem_for_mask,
)
from brainviewer.data.phantom import PHANTOM_NOTE, phantom_slice
from brainviewer.limits import MIB, env_limit, raise_hint
from brainviewer.views.review import SYNTHETIC_LABEL, ReviewItem

logger = logging.getLogger(__name__)

MAX_SESSION_MB_ENV = "BRAINVIEWER_MAX_SESSION_MB"
#: Decoded bytes (scans and masks) one upload keeps; beyond it the scans read first are dropped as others are read.
MAX_SESSION_BYTES = env_limit(MAX_SESSION_MB_ENV, 512) * MIB


def items_from_uploads(
    files: Iterable[tuple[str, bytes]], pages: Mapping[str, int] | None = None, max_bytes: int | None = None
) -> tuple[list[ReviewItem], list[str]]:
    """Read uploaded files into review items, pairing each scan with its ``_mask`` file.

    Never raises for bad input: every problem becomes a message.

    * An unreadable scan (damaged, not an image, too small, unsupported type) is left out
      and its message is added to ``errors``.
    * An unreadable mask, or one whose size differs from its scan, is dropped: the item
      keeps its scan and carries the reason in :attr:`ReviewItem.messages`.
    * Two files with one stem and no ``_mask`` in either name (figshare's ``images/1.png`` and
      ``masks/1.png``): when exactly one of them holds at most two values, it is the other's mask.
    * A file added twice (same name, same bytes) is read once, without a message.
    * A mask with no matching scan, and any other second file with the same stem, go to ``errors``.
    * What the readers did is said in :attr:`ReviewItem.messages`: which page of a multi-page TIFF (the first
      that is not blank) or frame of an animated image is shown, and how a graded mask was binarised.

    Args:
        files: ``(file name, content)`` tuples in upload order.
        pages: the 0-based page (or frame) to show of a multi-page or animated scan, by scan name (the page
            picker's choice); a scan not named here shows its first page that is not blank.
        max_bytes: decoded bytes the items may hold together (default :data:`MAX_SESSION_BYTES`); when more
            is read, the items read first are dropped (at least one item is kept) and ``errors`` says so.

    Returns:
        ``(items, errors)``: items in natural name order, and messages for files that
        could not be used.
    """
    errors: list[str] = []
    unique: list[tuple[str, bytes]] = []
    seen: dict[tuple[bool, str], int] = {}  # (is a mask name, stem) -> index in unique
    notes: dict[str, str] = {}  # scan name -> how its same-named mask was recognised
    copies: set[tuple[str, bytes]] = set()  # (name, content) already taken
    for name, content in files:
        if (name, content) in copies:
            continue  # the same file added again (re-adding to an upload): read it once
        copies.add((name, content))
        mask_stem = scan_stem_for_mask(name)
        slot = (mask_stem is not None, (mask_stem or Path(name).stem).lower())
        if slot not in seen:
            seen[slot] = len(unique)
            unique.append((name, content))
            continue
        first_name, first_content = unique[seen[slot]]
        if not slot[0] and (True, slot[1]) not in seen:
            # images/1.png + masks/1.png (figshare's layout): the file that holds only two values is the mask
            scan_first = _mask_like(content, name) and not _mask_like(first_content, first_name)
            scan_second = _mask_like(first_content, first_name) and not _mask_like(content, name)
            if scan_first or scan_second:
                (scan, scan_bytes), (mask, mask_bytes) = (
                    ((first_name, first_content), (name, content))
                    if scan_first
                    else ((name, content), (first_name, first_content))
                )
                unique[seen[slot]] = (scan, scan_bytes)
                seen[(True, slot[1])] = len(unique)
                unique.append((f"{Path(scan).stem}_mask{Path(mask).suffix}", mask_bytes))
                notes[scan] = (
                    f"Two files named like {Path(scan).stem} were uploaded; the one that holds only two values is "
                    f"used as the ground truth. Name masks {Path(scan).stem}_mask{Path(mask).suffix} to say so."
                )
                continue
        errors.append(
            f"{name} has the same name as {first_name} (apart from the extension), which is used instead. "
            f"A ground-truth mask is recognised by its name: {slot[1]}_mask{Path(name).suffix}."
        )
    pairs, orphans = pair_files(unique)
    for name in orphans:
        errors.append(
            f"{name} looks like a ground-truth mask, but no scan named {scan_stem_for_mask(name)}.* was uploaded "
            "with it. Upload the scan together with its mask."
        )
    items: list[ReviewItem] = []
    budget, kept, dropped = MAX_SESSION_BYTES if max_bytes is None else max_bytes, 0, 0
    for pair in pairs:
        try:
            info = read_image_with_notes(pair.scan_bytes, pair.scan_name, (pages or {}).get(pair.scan_name))
        except ScanReadError as err:
            errors.append(str(err))
            continue
        except Exception as err:  # a reader bug must not take the page down
            logger.exception("unexpected error reading %s", pair.scan_name)
            errors.append(f"{pair.scan_name} could not be read ({type(err).__name__}: {err}).")
            continue
        item = ReviewItem(pair.scan_name, info.image, source="upload", page=info.page, pages=info.pages)
        item.messages.extend(info.notes)  # which page of a multi-page file, which frame of an animation
        if pair.scan_name in notes:
            item.messages.append(notes[pair.scan_name])
        if pair.mask_name is not None and pair.mask_bytes is not None:
            page = info.page if info.pages > 1 else None  # a multi-page mask follows its scan's page
            item.truth, mask_notes = _read_upload_mask(pair.mask_name, pair.mask_bytes, item.shape, page)
            item.messages.extend(mask_notes)
        items.append(item)
        kept += _decoded_bytes(item)
        while kept > budget and len(items) > 1:  # drop the oldest now, before the next scan is decoded
            kept -= _decoded_bytes(items.pop(0))
            dropped += 1
    if dropped:
        errors.append(
            f"The uploaded scans need more memory than one session keeps ({budget / MIB:,.0f} MiB decoded), so the "
            f"{dropped} read first were dropped. Upload fewer or smaller scans at a time. "
            + raise_hint(MAX_SESSION_MB_ENV)
        )
    return items, errors


def _decoded_bytes(item: ReviewItem) -> int:
    """Bytes an item's decoded scan and mask hold."""
    return int(item.image.nbytes) + (0 if item.truth is None else int(item.truth.nbytes))


def _mask_like(content: bytes, name: str) -> bool:
    """Whether an uploaded file reads as an image of at most two distinct values (a mask, not a scan)."""
    try:
        return int(np.unique(read_image(content, name)).size) <= 2
    except Exception:  # unreadable: the normal path reports it
        return False


def _read_upload_mask(
    name: str, content: bytes, shape: tuple[int, int], page: int | None = None
) -> tuple[np.ndarray | None, list[str]]:
    """``(mask, notes)``: the mask (``None`` when unusable) and notes on how it was read or why it was dropped."""
    try:
        info = read_mask_with_notes(content, name, shape=shape, page=page)
        return info.image, info.notes
    except ScanReadError as err:
        return None, [f"{err} The scan is shown without ground truth."]
    except Exception as err:
        logger.exception("unexpected error reading mask %s", name)
        reason = f"{type(err).__name__}: {err}"
        return None, [f"{name} could not be read ({reason}). The scan is shown without ground truth."]


def item_from_record(dataset: Dataset, record: SliceRecord) -> ReviewItem:
    """A review item for one dataset slice.

    A mask that cannot be read (or has the wrong size) is dropped with a message.

    Raises:
        ScanReadError: when the scan itself cannot be read.
    """
    image = dataset.load_image(record)
    item = ReviewItem(
        record.name,
        image,
        source=f"dataset {Path(dataset.root).name} ({dataset.kind}), patient {record.patient_id}",
        patient_id=record.patient_id,
        channels_by_layout=dataset.kind == "kaggle_3m",
    )
    try:
        item.truth = dataset.load_mask(record, shape=item.shape)
    except ScanReadError as err:
        item.messages.append(f"{err} The scan is shown without ground truth.")
    return item


def phantom_items(n: int = 3, size: int = 256) -> list[ReviewItem]:
    """``n`` synthetic phantom slices with their masks, labelled synthetic.

    The last one has no tumour when ``n >= 3`` (so an empty-truth slice is always at hand).
    """
    items = []
    for index in range(n):
        tumour = not (n >= 3 and index == n - 1)
        image, mask = phantom_slice(seed=index, size=size, tumour=tumour, position=0.5)
        label = "tumour" if tumour else "no tumour"
        items.append(
            ReviewItem(
                f"phantom_{index + 1}.png",
                image,
                truth=mask,
                source=SYNTHETIC_LABEL,
                synthetic=True,
                messages=[f"{PHANTOM_NOTE} ({label})"],
            )
        )
    return items
