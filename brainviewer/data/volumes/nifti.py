"""NIfTI files: reading a ``.nii`` / ``.nii.gz`` volume (and its ground-truth mask volume), its safe
technical summary, and writing predicted masks back as NIfTI on the input's grid.

The display orientation and pixel resampling are those of :mod:`brainviewer.data.volumes.base`.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainviewer.data.volumes.base import (
    Volume,
    VolumeError,
    _axial_slices,
    _check_voxels,
    _neutral_id,
    _resample_mask,
    _square_pixels,
    _to_canonical,
    canonical_slice,
    slices_to_canonical,
)
from brainviewer.files import write_new

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_name(name: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` file names."""
    return str(name).lower().endswith(NIFTI_SUFFIXES)


def _load_nifti(source: str | Path | bytes, label: str) -> Any:
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
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise VolumeError(f"{label} is a damaged .gz file ({err}). Compress it again or use plain .nii.") from err
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
        patient_id=patient_id or _neutral_id("nifti", np.asarray(img.affine).tobytes() + raw.tobytes()),
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
