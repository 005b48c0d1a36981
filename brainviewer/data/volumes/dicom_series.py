"""One DICOM series as a :class:`~brainviewer.data.volumes.base.Volume`: slice order, geometry, spacing,
pixels, multi-frame images, and the non-identifying header summary.

Orientation (DICOM)
-------------------
Slices are sorted by ``ImagePositionPatient`` projected on the slice normal (the cross product of
the two ``ImageOrientationPatient`` direction cosines), ascending, falling back to
``InstanceNumber``. With positions, orientation and pixel spacing known, the series gets the affine
its headers define (LPS turned into RAS) and goes through the same steps as a NIfTI file: a
sagittal or coronal series is shown as axial slices reformatted from it (voxels reordered, no
interpolation), the usual axial series (``ImageOrientationPatient`` ~ ``[1, 0, 0, 0, 1, 0]``) looks
as stored, and a predicted mask can be saved as NIfTI on the series' grid. Without that geometry
(or for colour images) pixels are shown as stored, in the order found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from brainviewer.data.volumes.base import (
    MIN_RESLICE_SLICES,
    PLANE_INFO,
    Volume,
    VolumeError,
    _axial_slices,
    _scan_dtype,
    _square_pixels,
)

#: DICOM keywords :func:`safe_dicom_summary` may report (technical, non-identifying).
SAFE_DICOM_FIELDS: tuple[str, ...] = (
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "MRAcquisitionType",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "RescaleSlope",
    "RescaleIntercept",
    "NumberOfFrames",
)
#: Value representations a safe field may have: codes and numbers only, never free text,
#: person names, dates or UIDs.
_SAFE_VRS = {"CS", "DS", "IS", "US", "UL", "SS", "SL", "FD", "FL"}


def safe_dicom_summary(ds: Any) -> dict[str, Any]:
    """Non-identifying technical fields of a DICOM dataset.

    Only keywords in :data:`SAFE_DICOM_FIELDS` whose value representation is a code string or a
    number are reported; names, ids, dates, times, UIDs, institutions, descriptions and every
    other free-text field are left out, whatever they contain.

    Returns:
        ``{keyword: value}`` with plain Python values (str, int, float or lists of them).
    """
    summary: dict[str, Any] = {}
    for keyword in SAFE_DICOM_FIELDS:
        element = ds.get(keyword) if hasattr(ds, "get") else None
        element = ds.data_element(keyword) if element is not None else None
        if element is None or element.VR not in _SAFE_VRS or element.value in (None, ""):
            continue
        summary[keyword] = _plain(element.value)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        summary["TransferSyntax"] = getattr(syntax, "name", "")
    return summary


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) or type(value).__name__ in ("DSfloat", "DSdecimal"):
        return float(value)
    return str(value)


@dataclass
class _DicomSlice:
    ds: Any
    order: int  # position in which it was found


def _series_to_volume(items: list[_DicomSlice], label: str, notes: list[str]) -> Volume:
    missing = [i for i, item in enumerate(items) if "PixelData" not in item.ds]
    if missing:
        raise VolumeError(
            f"{len(missing)} of the {len(items)} images of the series in {label} have no pixel data "
            f"(e.g. the file found at position {items[missing[0]].order + 1}). The series is incomplete or was "
            "exported headers-only; export it again with images."
        )
    sizes = sorted({(int(item.ds.Rows), int(item.ds.Columns)) for item in items})
    if len(sizes) > 1:
        listed = ", ".join(f"{c}x{r}" for r, c in sizes)
        raise VolumeError(
            f"The series in {label} mixes slice sizes ({listed}). A volume needs one size: "
            "give one series (e.g. not a localiser with the axial images)."
        )
    if len(items) == 1 and int(items[0].ds.get("NumberOfFrames", 1) or 1) > 1:
        return _multiframe_volume(items[0].ds, label, notes)
    ordered, positions, plane = _sort_slices(items, notes)
    slices = [_pixels(item.ds, label) for item in ordered]
    first = ordered[0].ds
    spacing = _dicom_spacing(first, positions, notes)
    info = safe_dicom_summary(first)
    info["slices"] = len(slices)
    if plane is not None:
        info[PLANE_INFO] = plane
    affine = _series_affine([item.ds for item in ordered], spacing) if slices[0].ndim == 2 else None
    too_few = plane not in (None, "axial") and len(slices) < MIN_RESLICE_SLICES
    if affine is None or too_few:
        if plane not in (None, "axial"):
            why = (
                f"{len(slices)} slice(s) are too few to reslice"
                if too_few
                else "without full slice geometry it cannot be resliced"
            )
            notes.append(f"This is a {plane} series, shown as stored: {why}.")
        return Volume("dicom-series-1", slices, spacing_mm=spacing, source_kind="dicom", info=info, notes=notes)
    import nibabel as nib

    raw = np.stack(slices, axis=2).transpose(1, 0, 2)  # the series' own axes: column, row, slice
    zooms = (spacing[1], spacing[0], spacing[2])
    axial, axial_spacing, ornt = _axial_slices(raw, affine, zooms)
    if plane != "axial":
        notes.append(
            f"This is a {plane} series, shown as axial slices reformatted from it (voxels reordered, no "
            f"interpolation). Reformatted slices are only as sharp as the series' {spacing[2]:.3g} mm slice "
            "spacing: expect poorer predictions than on an axial series of the patient, if there is one."
        )
    axial, axial_spacing, grid_shape = _square_pixels(axial, axial_spacing, notes)
    header = nib.Nifti1Header()
    header.set_data_shape(raw.shape)
    header.set_zooms(zooms)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    return Volume(
        patient_id="dicom-series-1",
        slices=axial,
        spacing_mm=axial_spacing,
        source_kind="dicom",
        affine=affine,
        nifti_header=header,
        nifti_ornt=ornt,
        grid_shape=grid_shape,
        info=info,
        notes=notes,
    )


def _series_affine(datasets: list[Any], spacing: tuple[float, float, float] | None) -> np.ndarray | None:
    """The voxel-to-RAS affine of a sorted series on its own axes (column, row, slice), or ``None``
    when a slice lacks position or orientation, or the spacing is unknown.

    DICOM gives patient coordinates in LPS: voxel ``(i, j, k)`` lies at
    ``position_0 + i * col_mm * row_cosine + j * row_mm * col_cosine + k * step``, where ``step`` is the
    mean displacement between consecutive slice positions (the normal times the slice spacing for a
    single slice); RAS flips the first two coordinates.
    """
    if spacing is None:
        return None
    try:
        iop = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient], dtype=np.float64)
        positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in datasets], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if iop.shape != (6,) or positions.shape != (len(datasets), 3):
        return None
    row_cosine, col_cosine = iop[:3], iop[3:]
    normal = np.cross(row_cosine, col_cosine)
    if np.linalg.norm(normal) < 0.5:
        return None
    row_mm, col_mm, slice_mm = spacing
    step = (positions[-1] - positions[0]) / (len(datasets) - 1) if len(datasets) > 1 else normal * slice_mm
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * col_mm
    lps[:3, 1] = col_cosine * row_mm
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _plane(normal: np.ndarray) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the patient axis (LPS x, y, z) closest to the slice normal."""
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _sort_slices(
    items: list[_DicomSlice], notes: list[str]
) -> tuple[list[_DicomSlice], list[float] | None, str | None]:
    """Slices in order along the normal, their positions along it, and the series' plane (``None`` unknown)."""

    def geometry(ds: Any) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        except (AttributeError, TypeError, ValueError):
            return None
        if iop.shape != (6,) or ipp.shape != (3,):
            return None
        return iop, ipp

    geoms = [geometry(item.ds) for item in items]
    if all(g is not None for g in geoms):
        normal = np.cross(geoms[0][0][:3], geoms[0][0][3:])
        if np.linalg.norm(normal) > 0.5:
            plane = _plane(normal)
            positions = [float(np.dot(g[1], normal)) for g in geoms]
            order = np.argsort(positions, kind="stable")
            sorted_pos = [positions[i] for i in order]
            if len(sorted_pos) > 1 and np.min(np.diff(sorted_pos)) < 1e-3:
                raise VolumeError(
                    "Several images of the series share one slice position (multi-echo, several time points "
                    "or duplicate files). Give one image per position."
                )
            return [items[i] for i in order], sorted_pos, plane
    numbers = [item.ds.get("InstanceNumber") for item in items]
    if all(n is not None and str(n) != "" for n in numbers):
        notes.append("Slice positions are missing; slices are ordered by InstanceNumber.")
        order = np.argsort([int(n) for n in numbers], kind="stable")
        return [items[i] for i in order], None, None
    notes.append("Slice positions and instance numbers are missing; slices are in file-name order.")
    return sorted(items, key=lambda item: item.order), None, None


def _pixels(ds: Any, label: str) -> np.ndarray:
    try:
        array = ds.pixel_array
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "an unknown transfer syntax")
        raise VolumeError(
            f"The pixel data in {label} could not be decoded ({name}: {err}). Export the series uncompressed "
            "(Explicit VR Little Endian), or install a decoder such as pylibjpeg."
        ) from err
    array = np.asarray(array)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and array.ndim != 2:
        raise VolumeError(f"An image in {label} has pixel shape {array.shape}; expected one 2-D frame.")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0 or intercept != 0.0:
        array = array.astype(np.float32) * slope + intercept
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":  # inverted grey scale
        array = array.max() + array.min() - array.astype(np.float32)
    return _scan_dtype(array)


def _dicom_spacing(ds: Any, positions: list[float] | None, notes: list[str]) -> tuple[float, float, float] | None:
    try:
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        notes.append("PixelSpacing is missing; tumour volume is reported in voxels only.")
        return None
    slice_mm = None
    if positions is not None and len(positions) > 1:
        gaps = np.diff(positions)
        slice_mm = float(np.median(gaps))
        if np.max(gaps) > 1.5 * slice_mm:
            notes.append(f"Slice gaps are uneven ({np.min(gaps):.2f}-{np.max(gaps):.2f} mm): slices may be missing.")
    if slice_mm is None:
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = ds.get(keyword)
            if value not in (None, "") and float(value) > 0:
                slice_mm = float(value)
                notes.append(f"Slice spacing taken from {keyword} ({slice_mm:g} mm).")
                break
    if slice_mm is None or slice_mm <= 0 or row_mm <= 0 or col_mm <= 0:
        notes.append("The slice spacing is unknown; tumour volume is reported in voxels only.")
        return None
    return (row_mm, col_mm, slice_mm)


def _multiframe_volume(ds: Any, label: str, notes: list[str]) -> Volume:
    frames = np.asarray(_pixels_multiframe(ds, label))
    notes.append("Multi-frame DICOM: frames are shown in stored order.")
    spacing = None
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        row_mm, col_mm = (float(v) for v in measures.PixelSpacing)
        slice_mm = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 0)
        spacing = (row_mm, col_mm, slice_mm) if slice_mm > 0 else None
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    if spacing is None:
        spacing = _dicom_spacing(ds, None, notes)
    info = safe_dicom_summary(ds)
    info["slices"] = int(frames.shape[0])
    return Volume(
        "dicom-series-1",
        [_scan_dtype(f) for f in frames],
        spacing_mm=spacing,
        source_kind="dicom",
        info=info,
        notes=notes,
    )


def _pixels_multiframe(ds: Any, label: str) -> np.ndarray:
    try:
        array = np.asarray(ds.pixel_array)
    except Exception as err:
        raise VolumeError(f"The pixel data in {label} could not be decoded ({err}).") from err
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0 or intercept != 0.0:
        array = array.astype(np.float32) * slope + intercept
    return array
