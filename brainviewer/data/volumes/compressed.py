"""Bounded decompression for the volume readers: zip entries and ``.gz`` files are inflated in chunks, and
every chunk is counted against a byte budget and the compression-ratio limit, so a zip or gzip bomb is
refused after at most one chunk past its budget instead of being inflated whole.

The limits themselves (:data:`~brainviewer.data.volumes.base.MAX_ZIP_BYTES`,
:data:`~brainviewer.data.volumes.base.MAX_COMPRESSION_RATIO`, ...) live in :mod:`brainviewer.data.volumes.base`.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

from brainviewer.data.volumes.base import (
    MAX_COMPRESSION_RATIO,
    MAX_COMPRESSION_RATIO_ENV,
    MAX_ZIP_BYTES,
    MAX_ZIP_BYTES_ENV,
    RATIO_FLOOR_BYTES,
    VolumeError,
)
from brainviewer.limits import MIB, raise_hint

#: Bytes inflated per step; the most a bomb costs past its budget before it is refused.
CHUNK_BYTES = 1 * MIB
#: Errors the standard library raises on damaged compressed data.
DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError, RuntimeError)


def read_capped(stream: BinaryIO, limit: int, check: Callable[[int], None] | None = None) -> tuple[bytes, bool]:
    """Read ``stream`` in chunks of :data:`CHUNK_BYTES`, never more than ``limit`` bytes.

    Args:
        stream: a decompressing file object (``ZipExtFile``, ``GzipFile``).
        limit: the most bytes returned.
        check: called with the running total after each chunk; raises to stop reading.

    Returns:
        ``(data, more)``: at most ``limit`` bytes, and whether the stream holds more after them.
    """
    parts: list[bytes] = []
    total = 0
    while total < limit:
        chunk = stream.read(min(CHUNK_BYTES, limit - total))
        if not chunk:
            return b"".join(parts), False
        total += len(chunk)
        if check is not None:
            check(total)
        parts.append(chunk)
    return b"".join(parts), bool(stream.read(1))


def check_ratio(uncompressed: int, compressed: int, label: str) -> None:
    """Refuse ``uncompressed`` bytes inflated from ``compressed`` ones at more than :data:`MAX_COMPRESSION_RATIO`
    (only once ``uncompressed`` reaches :data:`RATIO_FLOOR_BYTES`)."""
    if uncompressed >= RATIO_FLOOR_BYTES and uncompressed > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise VolumeError(
            f"{label} inflates {max(compressed, 1):,} compressed bytes to {uncompressed:,} or more (over "
            f"{MAX_COMPRESSION_RATIO}:1, the compression-ratio limit): it looks like a zip or gzip bomb, not a scan. "
            "Real scans compress far less; compress the file again from the original. "
            + raise_hint(MAX_COMPRESSION_RATIO_ENV)
        )


def _zip_too_large(label: str, size: int) -> VolumeError:
    return VolumeError(
        f"{label} unpacks to {size / MIB:,.0f} MiB or more, more than the {MAX_ZIP_BYTES / MIB:,.0f} MiB accepted "
        "from one zip (the zip-size limit); zip one series. " + raise_hint(MAX_ZIP_BYTES_ENV)
    )


def check_zip_headers(archive_bytes: int, members: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse a zip from its headers alone: declared total size over :data:`MAX_ZIP_BYTES`, or a declared
    compression ratio over :data:`MAX_COMPRESSION_RATIO` (for the whole zip or one entry)."""
    declared = sum(int(m.file_size) for m in members)
    if declared > MAX_ZIP_BYTES:
        raise _zip_too_large(label, declared)
    check_ratio(declared, archive_bytes, label)
    for member in members:
        check_ratio(int(member.file_size), int(member.compress_size), f"{member.filename} in {label}")


class ZipBudget:
    """The bytes actually inflated from one zip so far, against :data:`MAX_ZIP_BYTES` and the ratio limit.

    Args:
        archive_bytes: size of the zip file itself.
        label: the zip, for messages.
    """

    def __init__(self, archive_bytes: int, label: str) -> None:
        self.archive_bytes = archive_bytes
        self.label = label
        self.inflated = 0

    def read(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
        """One entry's bytes, inflated in chunks; refused as soon as the entry passes its declared size or the
        ratio limit, or the zip passes its budget.

        Raises:
            VolumeError: a limit is passed, or the entry is damaged, encrypted or of an unknown compression.
        """
        name = f"{member.filename} in {self.label}"
        before = self.inflated

        def check(total: int) -> None:
            self.inflated = before + total
            if self.inflated > MAX_ZIP_BYTES:
                raise _zip_too_large(self.label, self.inflated)
            check_ratio(total, int(member.compress_size), name)
            check_ratio(self.inflated, self.archive_bytes, self.label)

        try:
            with archive.open(member) as stream:
                data, more = read_capped(stream, int(member.file_size), check)
        except VolumeError:
            raise
        except DECOMPRESS_ERRORS as err:
            raise VolumeError(f"{name} could not be unpacked ({err}). Zip the DICOM folder again.") from err
        if more:
            raise VolumeError(f"{name} holds more data than its zip header declares; zip the DICOM folder again.")
        return data


def gunzip_capped(data: bytes, limit: int, label: str) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of gzip ``data``, inflated in chunks under the ratio limit.

    Returns:
        ``(inflated, more)``: at most ``limit`` bytes, and whether the file inflates to more.

    Raises:
        VolumeError: damaged gzip data, or the ratio limit is passed.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            return read_capped(stream, limit, lambda total: check_ratio(total, len(data), label))
    except VolumeError:
        raise
    except DECOMPRESS_ERRORS as err:
        raise VolumeError(f"{label} is a damaged .gz file ({err}). Compress it again or use plain .nii.") from err
