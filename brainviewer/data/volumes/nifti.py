"""NIfTI files: reading a ``.nii`` / ``.nii.gz`` volume (and its ground-truth mask volume), its safe
technical summary, and writing predicted masks back as NIfTI on the input's grid.

The display orientation and pixel resampling are those of :mod:`brainviewer.data.volumes.base`.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainviewer.data.volumes.base import (
    Volume,
    VolumeError,
    _axial_slices,
    _check_decoded,
    _check_voxels,
    _resample_mask,
    _square_pixels,
    _to_canonical,
    canonical_slice,
    slices_to_canonical,
)
from brainviewer.data.volumes.compressed import gunzip_capped
from brainviewer.files import write_new
from brainviewer.limits import MIB

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Largest absolute value accepted in a NIfTI affine, in mm (a scanner's field of view is well under a metre).
MAX_AFFINE_MM = 1e6
#: Voxel sizes accepted, in mm (smallest, largest): outside them the header's geometry is broken.
VOXEL_MM_RANGE = (1e-3, 1e3)
#: Largest offset of the voxel data in a NIfTI file (the header and its extensions), in bytes.
MAX_NIFTI_OFFSET = 64 * MIB
#: Bytes inflated first to read the header (a NIfTI-2 header is 540 bytes).
_HEAD_BYTES = 544


def is_nifti_name(name: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names."""
    return str(name).lower().endswith(NIFTI_SUFFIXES)


def _nifti_header(head: bytes, label: str) -> Any:
    """The NIfTI-1 or NIfTI-2 header at the start of ``head`` (the file's first bytes, inflated), checked by
    nibabel, with nothing else read.

    Raises:
        VolumeError: neither kind of header (the message gives nibabel's reason).
    """
    import nibabel as nib

    errors = []
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize  # 348 or 540 bytes
        if len(head) < size:
            errors.append(f"{len(head)} bytes, shorter than a {size}-byte header")
            continue
        try:
            with nib.imageglobals.LoggingOutputSuppressor():
                return klass(binaryblock=head[:size], check=True)
        except Exception as err:  # nibabel raises several kinds (HeaderDataError, ValueError, ...)
            errors.append(str(err))
    raise VolumeError(
        f"{label} could not be read as NIfTI ({errors[0]}). Give a .nii or .nii.gz file "
        "(e.g. converted from DICOM with dcm2niix), or a .zip of the DICOM series."
    )


def _check_affine(affine: np.ndarray, label: str) -> None:
    """Refuse a voxel-to-world affine that is not finite, holds an absurd value, is singular, or gives voxel
    sizes outside :data:`VOXEL_MM_RANGE`."""
    affine = np.asarray(affine, dtype=np.float64)
    fix = "Fix the header (e.g. with fslorient or nibabel) or convert the scan again from DICOM."
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise VolumeError(f"{label}: the header's affine holds NaN or infinite values, so it has no geometry. {fix}")
    if np.abs(affine).max() > MAX_AFFINE_MM:
        raise VolumeError(
            f"{label}: the header's affine holds {np.abs(affine).max():.3g}, beyond the {MAX_AFFINE_MM:.0e} mm "
            f"a scan's geometry can have. {fix}"
        )
    axes = affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    if sizes.min() == 0 or abs(np.linalg.det(axes)) <= 1e-6 * float(np.prod(sizes)):
        raise VolumeError(
            f"{label}: the header's affine is zero or singular (its voxel axes {np.round(sizes, 4).tolist()} mm do "
            f"not span 3-D space), so the slices have no orientation. {fix}"
        )
    low, high = VOXEL_MM_RANGE
    if sizes.min() < low or sizes.max() > high:
        raise VolumeError(
            f"{label}: the header gives voxel sizes of {np.round(sizes, 6).tolist()} mm, outside the "
            f"{low:g}-{high:g} mm of a scan. {fix}"
        )


def _check_nifti_header(header: Any, label: str) -> int:
    """Check a NIfTI header before any voxel is read: dimensions, data type, affine, and the voxel and
    decoded-bytes budgets (:data:`MAX_VOXELS`, :data:`MAX_VOLUME_BYTES`).

    Returns:
        The file's expected size in bytes: the data offset plus voxels x bytes per voxel.

    Raises:
        VolumeError: the header is malformed or the volume is over a budget.
    """
    shape = tuple(int(n) for n in header.get_data_shape())
    if not shape:
        raise VolumeError(f"{label}: the header declares no dimensions. Convert the scan again.")
    if min(shape) <= 0:
        raise VolumeError(
            f"{label}: the header declares a dimension of size 0 or less (shape {shape}), so the file holds no voxels. "
            "Convert the scan again."
        )
    _check_voxels(shape, label)
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind not in "iuf" or dtype.fields:
        raise VolumeError(f"{label} stores {dtype} voxels; give a scan of integer or real (float) values.")
    slope, inter = header.get_slope_inter()
    scaled = slope is not None and (slope != 1.0 or inter not in (None, 0.0))
    voxels = math.prod(shape)
    converted = scaled or dtype.newbyteorder("=") not in (np.uint8, np.uint16, np.float32)
    stored = dtype.itemsize + (8 if scaled else 0)  # scale factors give a float64 array
    _check_decoded(voxels, stored, converted, label, f"{dtype.name} data" + (" (scaled)" if scaled else ""))
    try:
        affine = header.get_best_affine()
    except Exception as err:  # nibabel raises several kinds on a damaged qform / sform
        raise VolumeError(
            f"{label}: the header's orientation could not be read ({err}). Convert the scan again."
        ) from err
    _check_affine(affine, label)
    offset = int(header.get_data_offset())
    if offset > MAX_NIFTI_OFFSET:
        raise VolumeError(
            f"{label}: the header puts the voxel data {offset:,} bytes into the file, more than the "
            f"{MAX_NIFTI_OFFSET:,} a header and its extensions can take. Convert the scan again."
        )
    return offset + voxels * dtype.itemsize


def _load_nifti(source: str | Path | bytes, label: str) -> Any:
    """A nibabel image of a ``.nii`` / ``.nii.gz`` file whose header passed :func:`_check_nifti_header`.

    A ``.gz`` file is inflated in chunks, never past the size its header declares (nor past the ratio limit).
    """
    import nibabel as nib

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise VolumeError(f"{path} does not exist or is not a file.")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise VolumeError(f"{label} is empty (0 bytes). Choose the file again; it may not have uploaded.")
    compressed = data[:2] == b"\x1f\x8b"
    head = gunzip_capped(data, _HEAD_BYTES, label)[0] if compressed else data[:_HEAD_BYTES]
    expected = _check_nifti_header(_nifti_header(head, label), label)
    if compressed:
        data = gunzip_capped(data, expected, label)[0]
    errors = []
    for klass in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return klass.from_bytes(data)
        except Exception as err:  # nibabel raises several kinds (HeaderDataError, ValueError, ...)
            errors.append(str(err))
    raise VolumeError(
        f"{label} could not be read as NIfTI ({errors[0]}). Give a .nii or .nii.gz file "
        "(e.g. converted from DICOM with dcm2niix), or a .zip of the DICOM series."
    )


def _nifti_array(img: Any, label: str) -> np.ndarray:
    """Canonical (RAS+) 3-D data of ``img``."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise VolumeError(
            f"{label} has shape {tuple(img.shape)}: {len(img.shape)}-D data with several volumes. "
            "Give one 3-D volume (e.g. extract it with fslroi or nibabel)."
        )
    _check_voxels(shape, label)
    try:
        raw = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    except Exception as err:
        raise VolumeError(f"{label}: the voxel data could not be read ({err}). The file may be truncated.") from err
    raw = raw.reshape(shape)
    return raw.astype(np.float32) if raw.dtype.kind == "f" and raw.dtype != np.float32 else raw


def _nifti_id(affine: np.ndarray, raw: np.ndarray) -> str:
    """``nifti-<hash of the affine and voxels>``, hashed without copying the voxels."""
    digest = hashlib.sha256(np.asarray(affine).tobytes())
    digest.update(memoryview(np.ascontiguousarray(raw)).cast("B"))
    return f"nifti-{digest.hexdigest()[:10]}"


def read_nifti(
    source: str | Path | bytes,
    name: str | None = None,
    mask: str | Path | bytes | None = None,
    mask_name: str | None = None,
    patient_id: str | None = None,
) -> Volume:
    """Read a NIfTI volume (and optionally its ground-truth mask volume).

    Args:
        source: path or bytes of a ``.nii`` / ``.nii.gz`` file.
        name: file name when ``source`` is bytes (used in messages only).
        mask: optional label volume of the same grid; voxels ``> 0`` are tumour.
        mask_name: its file name when ``mask`` is bytes.
        patient_id: label to use; default ``nifti-<hash of the file>`` (file names can identify people).

    Returns:
        A :class:`Volume` in the radiological display orientation described in :mod:`brainviewer.data.volumes.base`,
        ``spacing_mm`` from the header zooms, and ``affine`` / ``nifti_header`` / ``nifti_ornt`` to
        write a prediction back.

    Raises:
        VolumeError: unreadable file, several volumes (4-D), mask of another grid, too large.
    """
    from nibabel.orientations import io_orientation

    label = name or (Path(source).name if isinstance(source, (str, Path)) else "the NIfTI file")
    img = _load_nifti(source, label)
    raw = _nifti_array(img, label)
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0] * max(0, 3 - len(img.header.get_zooms()))
    slices, spacing, ornt = _axial_slices(raw, img.affine, zooms)
    notes = []
    if spacing is None:
        notes.append("The header gives no voxel size; tumour volume is reported in voxels only.")
    slices, spacing, grid_shape = _square_pixels(slices, spacing, notes)
    masks = None
    if mask is not None:
        m_label = mask_name or (Path(mask).name if isinstance(mask, (str, Path)) else "the mask file")
        m_img = _load_nifti(mask, m_label)
        if tuple(m_img.shape[:3]) != tuple(img.shape[:3]) or not np.allclose(m_img.affine, img.affine, atol=1e-3):
            raise VolumeError(
                f"{m_label} ({tuple(m_img.shape)}) is not on the grid of {label} ({tuple(img.shape)}): "
                "a mask volume must have the scan's shape and affine."
            )
        m_canonical = _to_canonical(_nifti_array(m_img, m_label), io_orientation(m_img.affine))
        masks = [
            _resample_mask(canonical_slice(m_canonical, z) > 0, slices[0].shape[:2])
            for z in range(m_canonical.shape[2])
        ]
    header = img.header.copy()
    return Volume(
        patient_id=patient_id or _nifti_id(img.affine, raw),
        slices=slices,
        masks=masks,
        spacing_mm=spacing,
        source_kind="nifti",
        affine=np.array(img.affine, dtype=np.float64),
        nifti_header=header,
        nifti_ornt=ornt,
        grid_shape=grid_shape,
        info=safe_nifti_summary(img),
        notes=notes,
    )


def safe_nifti_summary(img: Any) -> dict[str, Any]:
    """Technical fields of a NIfTI image (shape, voxel size, orientation, data type).

    The header's free-text fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``) are
    never included: converters sometimes put names or dates there.
    """
    from nibabel.orientations import aff2axcodes

    return {
        "format": "NIfTI-2" if type(img).__name__ == "Nifti2Image" else "NIfTI-1",
        "shape": [int(s) for s in img.shape],
        "voxel_size_mm": [round(float(z), 4) for z in img.header.get_zooms()[:3]],
        "file_axes": "".join(str(c) for c in aff2axcodes(img.affine)),
        "data_type": str(img.header.get_data_dtype()),
    }


def _mask_array_for_nifti(masks: Sequence[np.ndarray], reference: Volume) -> np.ndarray:
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    if reference.affine is None or reference.nifti_header is None or reference.nifti_ornt is None:
        raise VolumeError(
            f"{reference.patient_id} was not read from a NIfTI file or a DICOM series with position headers, so "
            "there is no affine to write a NIfTI mask with. Export PNG masks instead."
        )
    if len(masks) != reference.n_slices:
        raise VolumeError(f"{len(masks)} masks for a volume of {reference.n_slices} slices.")
    for i, mask in enumerate(masks):
        if np.asarray(mask).shape != reference.shape:
            raise VolumeError(f"mask {i} is {np.asarray(mask).shape}; the volume's slices are {reference.shape}.")
    if reference.grid_shape is not None:  # slices were resampled to square pixels: back to the input's grid
        masks = [_resample_mask(m, reference.grid_shape) for m in masks]
    canonical = slices_to_canonical([np.asarray(m, dtype=bool) for m in masks]).astype(np.uint8)
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), reference.nifti_ornt)
    data = apply_orientation(canonical, back)
    file_shape = tuple(int(s) for s in reference.nifti_header.get_data_shape()[:3])
    return data.reshape(file_shape) if int(np.prod(file_shape)) == data.size else data


def nifti_mask_image(masks: Sequence[np.ndarray], reference: Volume) -> Any:
    """A ``uint8`` (0/1) NIfTI image of ``masks`` with ``reference``'s affine, orientation and grid.

    Args:
        masks: one ``(H, W)`` bool mask per slice, in :class:`Volume` display orientation.
        reference: the NIfTI volume the masks were predicted on.
    """
    import nibabel as nib

    data = _mask_array_for_nifti(masks, reference)
    header = reference.nifti_header.copy()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.uint8)
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(data, reference.affine, header)
    img.header.set_slope_inter(1.0, 0.0)
    for text_field in ("descrip", "aux_file", "intent_name", "db_name"):
        if text_field in img.header:
            img.header[text_field] = b""
    img.header["descrip"] = b"brainviewer predicted tumour mask"
    return img


def nifti_mask_bytes(masks: Sequence[np.ndarray], reference: Volume, compress: bool = True) -> bytes:
    """The bytes of a ``.nii.gz`` (or ``.nii`` when ``compress=False``) mask file, for downloads."""
    data = nifti_mask_image(masks, reference).to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def write_nifti_mask(masks: Sequence[np.ndarray], reference: Volume, path: str | Path) -> Path:
    """Write predicted masks as a ``uint8`` NIfTI file on ``reference``'s grid (same affine).

    Args:
        masks: one ``(H, W)`` bool mask per slice, in :class:`Volume` display orientation.
        reference: the NIfTI volume the masks belong to.
        path: a ``.nii`` or ``.nii.gz`` path that does not exist yet.

    Raises:
        FileExistsError: ``path`` exists (nothing is overwritten).
        VolumeError: ``reference`` is not a NIfTI volume, or the masks do not fit it.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise VolumeError(f"{path.name}: give a .nii or .nii.gz file name.")
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another name.")
    data = nifti_mask_bytes(masks, reference, compress=path.name.lower().endswith(".gz"))
    write_new(path, data)
    return path
