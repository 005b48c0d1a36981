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
from brainviewer.data.volumes.base import MAX_DICOM_FILES, MAX_ZIP_BYTES, Volume, VolumeError, _neutral_id
from brainviewer.data.volumes.dicom_series import _DicomSlice, _series_to_volume

logger = logging.getLogger(__name__)


def _iter_folder(folder: Path) -> Iterable[tuple[str, Callable[[], bytes]]]:
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])),
        key=lambda p: natural_key(str(p.relative_to(folder))),
    )
    if len(files) > MAX_DICOM_FILES:
        raise VolumeError(f"{folder} holds {len(files)} files, more than {MAX_DICOM_FILES}; give one series' folder.")
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
        raise VolumeError(f"{label} holds {len(members)} files, more than {MAX_DICOM_FILES}; zip one series.")
    if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
        raise VolumeError(f"{label} unpacks to more than {MAX_ZIP_BYTES // 1024**3} GiB; zip one series.")
    for member in sorted(members, key=lambda m: natural_key(m.filename)):
        yield member.filename, (lambda m=member: archive.read(m))


def _parse_dicom(data: bytes) -> Any | None:
    """A pydicom dataset, or ``None`` when ``data`` is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if len(data) < 132 and not data.startswith(b"\x08\x00"):
        return None
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        pass
    except Exception as err:  # truncated or damaged: report as not DICOM
        logger.debug("pydicom could not parse a file: %s", err)
        return None
    try:  # files without the 128-byte preamble (older exports)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception:
        return None
    if "SOPClassUID" not in ds and "Rows" not in ds:
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
