"""Patient volumes: NIfTI files, DICOM series and dataset patients as one stack of slices.

Everything here is plain NumPy + nibabel + pydicom: no Streamlit, no torch.

Conventions
-----------
* A :class:`Volume` holds ``slices``: a list of scans in slice order, each ``(H, W)`` or
  ``(H, W, 3)`` (dtype ``uint8``, ``uint16`` or ``float32``, real intensities), all the same size,
  and optionally ``masks``: one ``(H, W)`` bool ground truth per slice (``None`` for a slice without).
* ``spacing_mm`` is ``(row, col, slice)``: millimetres between image rows, between image columns,
  and between neighbouring slices; ``None`` when unknown (PNG datasets).

Orientation (NIfTI)
-------------------
The image is first reoriented with :func:`nibabel.as_closest_canonical`, so the data axes run
towards the patient's Right, Anterior and Superior (RAS+). Slices are taken along the third
axis (index 0 = most inferior) and shown the way radiology viewers show axial slices:

* image row 0 is the most **anterior** row (anterior at the top);
* image column 0 is the patient's **right** (the patient's right is on the viewer's left).

In array terms, for a canonical array ``data[x, y, z]`` of shape ``(X, Y, Z)``::

    slice z  ==  data[::-1, ::-1, z].T        # shape (Y, X)

so ``spacing_mm = (zoom_y, zoom_x, zoom_z)`` of the canonical image. A predicted mask written back
with :func:`write_nifti_mask` is transformed back through the same steps and saved with the input
file's own affine and orientation.

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

Pixel shape
-----------
Axial slices whose pixels are not square (longer side more than :data:`MAX_PIXEL_ASPECT` times the
shorter, typically slices reformatted from thick sagittal or coronal ones) are resampled to square
pixels of the finer spacing (linear for scans, nearest for masks) so that anatomy keeps its shape
on screen and for the model; ``Volume.grid_shape`` keeps the original slice size and a NIfTI mask
export maps back to it.

Privacy
-------
A :class:`Volume` never keeps identifying header fields (names, ids, dates, institutions,
free-text descriptions). Its ``patient_id`` is neutral (``dicom-<hash of the series UID>``,
``nifti-<hash of the file>``) unless the caller gives one, and ``info`` holds only the technical
fields of :func:`safe_dicom_summary` / :func:`safe_nifti_summary`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from brainviewer.data.datasets import Dataset
from brainviewer.data.io import natural_key
from brainviewer.files import write_new
from brainviewer.views.overlay import mask_to_png_bytes

logger = logging.getLogger(__name__)

#: Largest volume accepted, in voxels (512 x 512 x 512); larger inputs are refused.
MAX_VOXELS = 512 * 512 * 512
#: Largest number of files read from one DICOM folder or zip.
MAX_DICOM_FILES = 5000
#: Largest total uncompressed size read from one zip, in bytes.
MAX_ZIP_BYTES = 2 * 1024**3
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Slices whose pixels are more elongated than this (long side / short side) are resampled to square pixels.
MAX_PIXEL_ASPECT = 1.2
#: A sagittal or coronal DICOM series of fewer slices is shown as stored, not resliced to axial.
MIN_RESLICE_SLICES = 8
#: Largest side of a slice after resampling to square pixels; the pixel grows instead.
MAX_RESAMPLED_SIDE = 1024

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


class VolumeError(ValueError):
    """A file, folder or zip could not be read as a volume. The message says why and what to do."""


@dataclass
class Volume:
    """One patient's slices, in slice order, with optional ground truth.

    Attributes:
        patient_id: a neutral label (never a name or a hospital id taken from a header).
        slices: scans, each ``(H, W)`` or ``(H, W, 3)``, ``uint8`` / ``uint16`` / ``float32``, all the same size.
        masks: per-slice ``(H, W)`` bool ground truth (``None`` for a slice without), or ``None``.
        spacing_mm: ``(row, col, slice)`` millimetres, or ``None`` when unknown.
        source_kind: ``nifti``, ``dicom``, or the dataset kind (``kaggle_3m``, ``image_mask_folders``, ...).
        slice_names: a short neutral name per slice, used in tables and exported file names.
        slice_paths: for dataset patients, each slice's image path relative to the dataset folder
            (POSIX), so exports can follow the dataset's own layout; else ``None``.
        affine: NIfTI, and DICOM series with full geometry: the input's 4x4 RAS affine (to write a
            prediction back as NIfTI).
        nifti_header: with ``affine``: the input file's header (a copy), or one made for a DICOM series.
        nifti_ornt: with ``affine``: the orientation transform from the input's axes to RAS+.
        grid_shape: ``(H, W)`` of the slices before they were resampled to square pixels, or ``None``
            when they were not (see *Pixel shape* above).
        info: non-identifying technical fields (see :func:`safe_dicom_summary`).
        notes: things the reader had to decide (which series, missing spacing ...), for people.
    """

    patient_id: str
    slices: list[np.ndarray]
    masks: list[np.ndarray | None] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    source_kind: str = "images"
    slice_names: list[str] = field(default_factory=list)
    slice_paths: list[str] | None = None
    affine: np.ndarray | None = None
    nifti_header: Any | None = None
    nifti_ornt: np.ndarray | None = None
    grid_shape: tuple[int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.slices:
            raise VolumeError(f"{self.patient_id} has no slices.")
        shape = self.slices[0].shape
        for i, image in enumerate(self.slices):
            if image.shape != shape:
                raise VolumeError(
                    f"{self.patient_id}: slice {i} is {image.shape} but slice 0 is {shape}; "
                    "all slices of a volume must have the same size."
                )
        if self.masks is not None:
            if len(self.masks) != len(self.slices):
                raise VolumeError(f"{self.patient_id}: {len(self.masks)} masks for {len(self.slices)} slices.")
            for i, mask in enumerate(self.masks):
                if mask is not None and mask.shape != shape[:2]:
                    raise VolumeError(f"{self.patient_id}: mask {i} is {mask.shape}, its slice is {shape[:2]}.")
        if not self.slice_names:
            self.slice_names = [f"slice_{i + 1:03d}" for i in range(len(self.slices))]
        if len(self.slice_names) != len(self.slices):
            raise VolumeError(f"{self.patient_id}: {len(self.slice_names)} names for {len(self.slices)} slices.")
        if self.slice_paths is not None and len(self.slice_paths) != len(self.slices):
            raise VolumeError(f"{self.patient_id}: {len(self.slice_paths)} paths for {len(self.slices)} slices.")
        self._window = _volume_window(self.slices)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of every slice."""
        return tuple(self.slices[0].shape[:2])  # type: ignore[return-value]

    @property
    def has_ground_truth(self) -> bool:
        return self.masks is not None and any(m is not None for m in self.masks)

    @property
    def voxel_mm3(self) -> float | None:
        """Volume of one voxel in mm³, or ``None`` when the spacing is unknown."""
        if self.spacing_mm is None:
            return None
        return float(np.prod(self.spacing_mm))

    def display_image(self, index: int) -> np.ndarray:
        """Slice ``index`` as ``uint8`` for display and inference, windowed over the whole volume
        (0.5-99.5 percentile of all slices), so brightness does not jump while scrubbing.

        Returns:
            ``(H, W)`` or ``(H, W, 3)`` uint8.
        """
        image = self.slices[index]
        if image.dtype == np.uint8:
            return image
        lo, hi = self._window
        values = (image.astype(np.float32) - lo) / (hi - lo)
        return (np.clip(values, 0.0, 1.0) * 255).round().astype(np.uint8)

    def display_images(self) -> list[np.ndarray]:
        """All slices as ``uint8`` (see :meth:`display_image`)."""
        return [self.display_image(i) for i in range(self.n_slices)]

    def mask(self, index: int) -> np.ndarray | None:
        """Ground truth of slice ``index`` (``(H, W)`` bool) or ``None``."""
        return None if self.masks is None else self.masks[index]


def _volume_window(slices: Sequence[np.ndarray]) -> tuple[float, float]:
    if slices[0].dtype == np.uint8:
        return 0.0, 255.0
    stride = max(1, int(np.ceil(sum(s.size for s in slices) / 2_000_000)))
    sample = np.concatenate([s.reshape(-1)[::stride] for s in slices]).astype(np.float32)
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _neutral_id(prefix: str, key: bytes | str) -> str:
    data = key.encode() if isinstance(key, str) else key
    return f"{prefix}-{hashlib.sha256(data).hexdigest()[:10]}"


def _check_voxels(shape: Sequence[int], label: str) -> None:
    if int(np.prod(shape)) > MAX_VOXELS:
        raise VolumeError(
            f"{label} has {int(np.prod(shape)):,} voxels {tuple(shape)}, more than the {MAX_VOXELS:,} accepted. "
            "Crop or downsample it first."
        )


def _scan_dtype(array: np.ndarray) -> np.ndarray:
    """Bring an array to a scan dtype: uint8, uint16 (non-negative integers) or float32."""
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return np.ascontiguousarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 65535:
        return np.ascontiguousarray(array.astype(np.uint16))
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(values)


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


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
        A :class:`Volume` in the radiological display orientation described in the module docstring,
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


def _axial_slices(
    raw: np.ndarray, affine: np.ndarray, zooms: Sequence[float]
) -> tuple[list[np.ndarray], tuple[float, float, float] | None, np.ndarray]:
    """Axial display slices of a volume given on any voxel grid.

    Args:
        raw: ``(I, J, K)`` voxels on the input's own axes.
        affine: 4x4 voxel-to-RAS affine of those axes.
        zooms: voxel size in mm along ``I, J, K``.

    Returns:
        ``(slices, spacing_mm, ornt)``: the slices, inferior first, in the display orientation of the
        module docstring (the input's axes reordered and flipped to the nearest RAS+ axes, no
        interpolation); ``(row, col, slice)`` mm or ``None`` when a zoom is not positive; the
        orientation transform from the input's axes to RAS+.
    """
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)
    canonical = _to_canonical(raw, ornt)
    canon_zooms = [0.0, 0.0, 0.0]  # zooms follow the input's axes; reorder them to the canonical axes
    for axis, (target, _flip) in enumerate(ornt[:3]):
        canon_zooms[int(target)] = abs(float(zooms[axis]))
    spacing = (canon_zooms[1], canon_zooms[0], canon_zooms[2])  # rows run along y, columns along x
    slices = [_scan_dtype(canonical_slice(canonical, z)) for z in range(canonical.shape[2])]
    return slices, (spacing if all(z > 0 for z in spacing) else None), ornt


def _square_shape(shape: tuple[int, int], spacing: tuple[float, float, float]) -> tuple[tuple[int, int], float]:
    """Slice size with square pixels of the finer in-plane spacing (capped at :data:`MAX_RESAMPLED_SIDE`)."""
    pixel = min(spacing[0], spacing[1])
    pixel = max(pixel, shape[0] * spacing[0] / MAX_RESAMPLED_SIDE, shape[1] * spacing[1] / MAX_RESAMPLED_SIDE)
    return (max(1, round(shape[0] * spacing[0] / pixel)), max(1, round(shape[1] * spacing[1] / pixel))), pixel


def _square_pixels(
    slices: list[np.ndarray], spacing: tuple[float, float, float] | None, notes: list[str]
) -> tuple[list[np.ndarray], tuple[float, float, float] | None, tuple[int, int] | None]:
    """Resample slices of elongated pixels to square ones (see *Pixel shape* in the module docstring).

    Returns:
        ``(slices, spacing_mm, grid_shape)``: unchanged with ``grid_shape`` ``None`` when the pixels are
        square enough or the spacing is unknown; else the resampled slices (``float32``, or ``uint8``
        for ``uint8`` input), the new spacing and the original ``(H, W)``.
    """
    if spacing is None or max(spacing[:2]) <= MAX_PIXEL_ASPECT * min(spacing[:2]):
        return slices, spacing, None
    from scipy import ndimage

    grid_shape = tuple(int(n) for n in slices[0].shape[:2])
    new_shape, pixel = _square_shape(grid_shape, spacing)
    factors = (new_shape[0] / grid_shape[0], new_shape[1] / grid_shape[1])
    resampled = []
    for image in slices:
        zoom = factors + (1.0,) * (image.ndim - 2)
        out = ndimage.zoom(image.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
        out = out[: new_shape[0], : new_shape[1]]
        resampled.append(np.clip(np.rint(out), 0, 255).astype(np.uint8) if image.dtype == np.uint8 else out)
    notes.append(
        f"The slices have {spacing[0]:.3g} x {spacing[1]:.3g} mm pixels; they are shown and predicted on square "
        f"{pixel:.3g} mm pixels ({grid_shape[0]}x{grid_shape[1]} resampled to {new_shape[0]}x{new_shape[1]}). "
        "A NIfTI mask export maps back to the original grid."
    )
    return resampled, (pixel, pixel, spacing[2]), grid_shape  # type: ignore[return-value]


def _grid_indices(n_from: int, n_to: int) -> np.ndarray:
    """For each of ``n_to`` pixel centres, the nearest of ``n_from`` pixels spanning the same extent."""
    return np.clip(((np.arange(n_to) + 0.5) * n_from / n_to).astype(np.int64), 0, n_from - 1)


def _resample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (``(h, w)`` bool) on a grid of ``shape`` covering the same extent, nearest neighbour."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(shape):
        return mask
    return mask[np.ix_(_grid_indices(mask.shape[0], shape[0]), _grid_indices(mask.shape[1], shape[1]))]


def _to_canonical(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    from nibabel.orientations import apply_orientation

    return apply_orientation(data, ornt)


def canonical_slice(canonical: np.ndarray, z: int) -> np.ndarray:
    """Display slice ``z`` of a RAS+ array ``(X, Y, Z)``: ``(Y, X)``, anterior at the top, patient right on the left."""
    return np.ascontiguousarray(canonical[::-1, ::-1, z].T)


def slices_to_canonical(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Invert :func:`canonical_slice` for a stack of display slices: RAS+ array ``(X, Y, Z)``."""
    return np.stack([np.asarray(s).T[::-1, ::-1] for s in slices], axis=2)


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


def write_png_masks(masks: Sequence[np.ndarray], names: Sequence[str], folder: str | Path) -> list[Path]:
    """Write masks as 8-bit PNGs (0 / 255) named ``<folder>/<name>.png``.

    Args:
        masks: ``(H, W)`` bool masks.
        names: one relative name per mask, without suffix; may contain ``/`` sub-folders.
        folder: output folder (created).

    Returns:
        The written paths.

    Raises:
        FileExistsError: any target exists (checked before anything is written).
        ValueError: names that are absolute, climb out with ``..``, repeat, or do not match the masks.
    """
    folder = Path(folder)
    if len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks but {len(names)} names.")
    targets = [folder / (safe_relative_name(n) + ".png") for n in names]
    if len(set(targets)) != len(targets):
        raise ValueError("mask names repeat; give each mask its own name.")
    clash = [str(t) for t in targets if t.exists()]
    if clash:
        raise FileExistsError(f"{len(clash)} file(s) already exist, e.g. {clash[0]}; choose an empty folder.")
    for mask, target in zip(masks, targets, strict=True):
        write_new(target, mask_to_png_bytes(mask))
    return targets


def safe_relative_name(name: str) -> str:
    """``name`` as a safe relative POSIX path (no absolute paths, no ``..``); raises ValueError otherwise."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{name!r} is not a safe relative file name.")
    return str(path)


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


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
    affine = _series_affine([item.ds for item in ordered], spacing) if slices[0].ndim == 2 else None
    too_few = plane not in (None, "axial") and len(slices) < MIN_RESLICE_SLICES
    if affine is None or too_few:
        if plane not in (None, "axial"):
            why = (
                f"{len(slices)} slice(s) are too few to reslice"
                if too_few
                else "without full slice geometry it cannot be resliced"
            )
            notes.append(
                f"This is a {plane} series, shown as stored: {why}, and the models here were trained on axial "
                "slices, so expect poorer predictions. An axial series of the patient, if there is one, is a "
                "better choice."
            )
        return Volume("dicom-series-1", slices, spacing_mm=spacing, source_kind="dicom", info=info, notes=notes)
    import nibabel as nib

    raw = np.stack(slices, axis=2).transpose(1, 0, 2)  # the series' own axes: column, row, slice
    zooms = (spacing[1], spacing[0], spacing[2])
    axial, axial_spacing, ornt = _axial_slices(raw, affine, zooms)
    if plane != "axial":
        notes.append(
            f"This is a {plane} series, shown as axial slices reformatted from it (voxels reordered, no "
            "interpolation), as the models here were trained on axial slices. Reformatted slices are only as sharp "
            f"as the series' {spacing[2]:.3g} mm slice spacing: expect poorer predictions than on an axial series "
            "of the patient, if there is one."
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


def open_volume(source: str | Path | bytes, name: str | None = None, patient_id: str | None = None) -> Volume:
    """Open a NIfTI file, a DICOM ``.zip``, a DICOM folder or a single ``.dcm`` file.

    Args:
        source: a path, or the file's bytes (then ``name`` gives its type by suffix).
        name: the file name when ``source`` is bytes.
        patient_id: label to use instead of the neutral default.

    Raises:
        VolumeError: unknown kind or unreadable input (the message says which kinds work).
    """
    if not isinstance(source, (bytes, bytearray, memoryview)):
        path = Path(source)
        if path.is_dir():
            return read_dicom_folder(path, patient_id)
        name = name or path.name
    label = name or "the upload"
    lower = label.lower()
    if is_nifti_name(lower):
        return read_nifti(source, name=label, patient_id=patient_id)
    if lower.endswith(".zip"):
        return read_dicom_zip(source, name=label, patient_id=patient_id)
    data = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray, memoryview)) else bytes(source)
    if lower.endswith((".dcm", ".dicom", ".ima")) or _parse_dicom(data) is not None:
        return read_dicom_files([(label, data)], label=label, patient_id=patient_id)
    raise VolumeError(
        f"{label} is not a volume brainviewer can open: give a NIfTI .nii/.nii.gz file, a .zip of a DICOM "
        "series, or a folder of .dcm files."
    )


# --------------------------------------------------------------------------------------------
# Dataset patients
# --------------------------------------------------------------------------------------------


def dataset_base(dataset: Dataset) -> Path:
    """The folder a dataset's relative paths start from (its root, or the folder of its CSV/JSON)."""
    root = Path(dataset.root)
    return root if root.is_dir() else root.parent


def volume_from_dataset(
    dataset: Dataset, patient_id: str, spacing_mm: tuple[float, float, float] | None = None
) -> Volume:
    """One patient of a 2-D slice dataset as a :class:`Volume`.

    Args:
        dataset: an open dataset.
        patient_id: one of ``dataset.patient_ids``.
        spacing_mm: ``(row, col, slice)`` when known (PNG/TIFF files do not record it).

    Raises:
        KeyError: unknown patient (the message lists a few that exist).
        VolumeError: slices of different sizes.
    """
    records = dataset.patients.get(patient_id)
    if records is None:
        known = ", ".join(dataset.patient_ids[:5])
        raise KeyError(f"patient {patient_id!r} is not in {dataset.root} (e.g. {known}).")
    base = dataset_base(dataset)
    slices, masks, paths = [], [], []
    for record in records:
        image = dataset.load_image(record)
        slices.append(image)
        masks.append(dataset.load_mask(record, shape=image.shape[:2]))
        try:
            paths.append(record.image_path.resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            paths.append(record.image_path.name)
    height, width = slices[0].shape[:2]
    return Volume(
        patient_id=patient_id,
        slices=slices,
        masks=masks if any(m is not None for m in masks) else None,
        spacing_mm=spacing_mm,
        source_kind=dataset.kind,
        slice_names=[Path(p).stem for p in paths],
        slice_paths=paths,
        info={"dataset_kind": dataset.kind, "slices": len(slices), "size": f"{width}x{height}"},
    )
