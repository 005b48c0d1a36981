"""DICOM inputs: folders, ``.zip`` files and loose ``(name, bytes)`` files, parsed with pydicom; the
largest series found becomes a volume (see :mod:`brainviewer.data.volumes.dicom_series`).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from brainviewer.data.io import natural_key
from brainviewer.data.volumes.base import (
    MAX_DICOM_FILES,
    MAX_DICOM_FILES_ENV,
    MAX_VOXELS,
    MAX_VOXELS_ENV,
    Volume,
    VolumeError,
    _check_decoded,
    _neutral_id,
)
from brainviewer.data.volumes.compressed import ZipBudget, check_zip_headers
from brainviewer.data.volumes.dicom_series import _DicomSlice, _series_to_volume
from brainviewer.limits import raise_hint

logger = logging.getLogger(__name__)


def _iter_folder(folder: Path) -> Iterable[tuple[str, Callable[[], bytes]]]:
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])),
        key=lambda p: natural_key(str(p.relative_to(folder))),
    )
    if len(files) > MAX_DICOM_FILES:
        raise VolumeError(
            f"{folder} holds {len(files)} files, more than the {MAX_DICOM_FILES} accepted (the DICOM file limit); "
            "give one series' folder. " + raise_hint(MAX_DICOM_FILES_ENV)
        )
    for path in files:
        yield str(path.relative_to(folder)), path.read_bytes


def _iter_zip(data: bytes, label: str) -> Iterable[tuple[str, Callable[[], bytes]]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise VolumeError(f"{label} is not a valid zip file ({err}). Zip the DICOM folder again.") from err
    members = [
        m
        for m in archive.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and not PurePosixPath(m.filename).name.startswith(".")
    ]
    if not members:
        raise VolumeError(f"{label} is empty: it holds no files. Zip the folder that contains the .dcm files.")
    if len(members) > MAX_DICOM_FILES:
        raise VolumeError(
            f"{label} holds {len(members)} files, more than the {MAX_DICOM_FILES} accepted (the DICOM file limit); "
            "zip one series. " + raise_hint(MAX_DICOM_FILES_ENV)
        )
    check_zip_headers(len(data), members, label)
    budget = ZipBudget(len(data), label)
    for member in sorted(members, key=lambda m: natural_key(m.filename)):
        yield member.filename, (lambda m=member: budget.read(archive, m))


#: Group numbers a DICOM file without its 128-byte preamble may start with (file meta, identification,
#: patient, ...): anything else is not parsed by force, so random or blank data is skipped at once.
_BARE_DICOM_GROUPS = frozenset({0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


#: Most top-level elements parsed from one DICOM file (real files have a few hundred); past it, or at a tag
#: that does not ascend, the file is taken as damaged or not DICOM, so crafted or blank data costs little.
MAX_DICOM_ELEMENTS = 10_000
#: File meta VRs with a 4-byte length (explicit VR little endian).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def _dataset_start(data: bytes, offset: int) -> int:
    """Offset of the first element after the file meta group (0002,xxxx) that starts at ``offset``, if any."""
    for _ in range(256):
        if data[offset : offset + 2] != b"\x02\x00" or offset + 8 > len(data):
            break
        if data[offset + 4 : offset + 6] in _LONG_VRS:
            offset += 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6 : offset + 8], "little")
    return offset


class _ElementGuard:
    """pydicom ``stop_when`` callback: stops at a tag that does not ascend or past :data:`MAX_DICOM_ELEMENTS`."""

    def __init__(self) -> None:
        self.last, self.count, self.tripped = -1, 0, False

    def __call__(self, tag: Any, vr: Any, length: int) -> bool:
        self.count += 1
        if int(tag) <= self.last or self.count > MAX_DICOM_ELEMENTS:
            self.tripped = True
            return True
        self.last = int(tag)
        return False


def _read_guarded(data: bytes, force: bool) -> Any | None:
    """pydicom's :func:`~pydicom.filereader.read_partial` under an :class:`_ElementGuard`; ``None`` when it trips."""
    from pydicom.filereader import read_partial

    guard = _ElementGuard()
    ds = read_partial(io.BytesIO(data), stop_when=guard, force=force)
    if guard.tripped:
        logger.debug("a file stopped parsing at element %s (tags out of order or too many); skipped", guard.count)
        return None
    return ds


def _parse_dicom(data: bytes) -> Any | None:
    """A pydicom dataset, or ``None`` when ``data`` is not DICOM (or is damaged, or crafted to be slow to parse)."""
    from pydicom.errors import InvalidDicomError

    if len(data) < 132 and not data.startswith(b"\x08\x00"):
        return None
    preamble = data[128:132] == b"DICM"
    start = _dataset_start(data, 132 if preamble else 0)
    if start < len(data) and data[start : start + 2] == b"\x00\x00":
        return None  # a command group (0000,xxxx) never starts a file's data set; pydicom would walk all of it
    try:
        return _read_guarded(data, force=False)
    except InvalidDicomError:
        pass
    except Exception as err:  # truncated or damaged: report as not DICOM
        logger.debug("pydicom could not parse a file: %s", err)
        return None
    if int.from_bytes(data[:2], "little") not in _BARE_DICOM_GROUPS:
        return None
    try:  # files without the 128-byte preamble (older exports)
        ds = _read_guarded(data, force=True)
    except Exception:
        return None
    if ds is None or ("SOPClassUID" not in ds and "Rows" not in ds):
        return None
    return ds


def read_dicom_files(
    files: Iterable[tuple[str, bytes | Callable[[], bytes]]], label: str = "the upload", patient_id: str | None = None
) -> Volume:
    """Read a DICOM series from ``(file name, bytes)`` pairs (bytes may be a zero-argument loader).

    When several series are present the one with the most slices is used (``notes`` says so).

    Args:
        files: the files; non-DICOM files (README, thumbnails, DICOMDIR) are skipped.
        label: what to call the input in messages.
        patient_id: label to use; default ``dicom-<hash of the SeriesInstanceUID>``.

    Returns:
        A :class:`Volume` with ``spacing_mm`` from PixelSpacing and the slice positions.

    Raises:
        VolumeError: no DICOM images, missing pixel data, mixed slice sizes, duplicate positions,
            undecodable (compressed) pixels.
    """
    datasets: list[_DicomSlice] = []
    series_sizes: dict[str, list[int]] = {}
    looked = skipped_non_image = 0
    for order, (name, content) in enumerate(files):
        looked += 1
        data = content() if callable(content) else content
        ds = _parse_dicom(data)
        if ds is None:
            logger.debug("%s: %s is not DICOM; skipped", label, name)
            continue
        if "PixelData" not in ds and "Rows" not in ds:
            skipped_non_image += 1  # DICOMDIR, structured reports, presentation states
            continue
        datasets.append(_DicomSlice(ds, order))
        _count_series(series_sizes, ds, label)
    if not datasets:
        if looked == 0:
            raise VolumeError(f"{label} holds no files. Give a folder or zip of .dcm files.")
        what = "file is" if looked == 1 else f"{looked} files are"
        extra = f" ({skipped_non_image} DICOM object(s) without images, e.g. a DICOMDIR)" if skipped_non_image else ""
        raise VolumeError(
            f"No DICOM images in {label}: the {what} not DICOM images{extra}. Give the .dcm files of one "
            "series (a folder or a .zip), or a NIfTI .nii/.nii.gz file."
        )
    groups: dict[str, list[_DicomSlice]] = {}
    for item in datasets:
        groups.setdefault(str(item.ds.get("SeriesInstanceUID", "unknown")), []).append(item)
    notes = []
    uid, chosen = max(groups.items(), key=lambda kv: (len(kv[1]), -kv[1][0].order))
    if len(groups) > 1:
        sizes = ", ".join(str(len(g)) for g in sorted(groups.values(), key=len, reverse=True))
        notes.append(
            f"{label} holds {len(groups)} series ({sizes} images); showing the largest ({len(chosen)} images). "
            "Upload one series at a time to choose another."
        )
    if skipped_non_image:
        notes.append(f"Skipped {skipped_non_image} DICOM object(s) without images (e.g. DICOMDIR).")
    volume = _series_to_volume(chosen, label, notes)
    volume.patient_id = patient_id or (_neutral_id("dicom", uid) if uid != "unknown" else "dicom-series-1")
    return volume


def _count_series(sizes: dict[str, list[int]], ds: Any, label: str) -> None:
    """Add one image's voxels (Rows x Columns x frames, from its header; pixels not decoded) to its series'
    running total in ``sizes`` (``{series UID: [voxels, slices, samples, bytes per sample]}``) and refuse the
    series once it passes :data:`MAX_VOXELS` or :data:`MAX_VOLUME_BYTES` (with a float32 copy)."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        sample_bytes = max(1, (int(ds.get("BitsAllocated", 16) or 16) + 7) // 8)
    except (TypeError, ValueError) as err:
        raise VolumeError(
            f"An image in {label} has unreadable size fields (Rows, Columns, NumberOfFrames, SamplesPerPixel or "
            f"BitsAllocated: {err}). Export the series again."
        ) from err
    if min(rows, cols, frames, samples) < 0:
        raise VolumeError(f"An image in {label} declares a negative size; export the series again.")
    entry = sizes.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), [0, 0, 1, 1])
    entry[0] += rows * cols * frames
    entry[1] += frames
    entry[2], entry[3] = max(entry[2], samples), max(entry[3], sample_bytes)
    voxels, slices = entry[0], entry[1]
    if voxels > MAX_VOXELS:
        raise VolumeError(
            f"The DICOM series in {label} has {voxels:,} voxels in its first {slices:,} slices ({rows}x{cols} each), "
            f"more than the {MAX_VOXELS:,} accepted (the volume limit). Give fewer slices, or downsample the series "
            "first. " + raise_hint(MAX_VOXELS_ENV)
        )
    _check_decoded(voxels * entry[2], entry[3], True, f"The DICOM series in {label}", f"{entry[3] * 8}-bit samples")


def read_dicom_folder(folder: str | Path, patient_id: str | None = None) -> Volume:
    """Read the (largest) DICOM series in ``folder`` and its sub-folders. See :func:`read_dicom_files`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(f"{folder} is not a folder.")
    return read_dicom_files(_iter_folder(folder), label=f"folder {folder.name}", patient_id=patient_id)


def read_dicom_zip(source: str | Path | bytes, name: str | None = None, patient_id: str | None = None) -> Volume:
    """Read the (largest) DICOM series in a ``.zip`` (path or bytes). See :func:`read_dicom_files`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise VolumeError(f"{path} does not exist or is not a file.")
        data, label = path.read_bytes(), name or path.name
    else:
        data, label = bytes(source), name or "the zip file"
    if not data:
        raise VolumeError(f"{label} is empty (0 bytes). Choose the file again; it may not have uploaded.")
    return read_dicom_files(_iter_zip(data, label), label=label, patient_id=patient_id)
