"""The volume type shared by every reader: :class:`Volume`, :class:`VolumeError`, the size limits,
and the display orientation and square-pixel resampling that NIfTI files and DICOM series both go through.

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
with :func:`~brainviewer.data.volumes.nifti.write_nifti_mask` is transformed back through the same
steps and saved with the input file's own affine and orientation.

Pixel shape
-----------
Axial slices whose pixels are not square (longer side more than :data:`MAX_PIXEL_ASPECT` times the
shorter, typically slices reformatted from thick sagittal or coronal ones) are resampled to square
pixels of the finer spacing (linear for scans, nearest for masks) so that anatomy keeps its shape
on screen and for the model; ``Volume.grid_shape`` keeps the original slice size and a NIfTI mask
export maps back to it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainviewer.limits import MIB, env_limit, raise_hint

#: Environment variable of :data:`MAX_VOXELS`.
MAX_VOXELS_ENV = "BRAINVIEWER_MAX_VOLUME_VOXELS"
#: Largest volume accepted, in voxels (default 512 x 512 x 512), checked from the headers (NIfTI header,
#: DICOM Rows x Columns x frames of every slice of a series) before any voxel is decoded.
MAX_VOXELS = env_limit(MAX_VOXELS_ENV, 512 * 512 * 512)
#: Environment variable of :data:`MAX_VOLUME_BYTES` (in MiB).
MAX_VOLUME_BYTES_ENV = "BRAINVIEWER_MAX_VOLUME_MB"
#: Largest decoded volume accepted, in bytes (default 1 GiB): voxels x bytes per stored sample, plus 4 bytes a
#: voxel for the ``float32`` copy of data that are not already ``uint8`` / ``uint16`` / ``float32``; checked from
#: the headers before decoding. A 512^3 ``float64`` NIfTI (1.5 GiB) is refused, a 512^3 ``int16`` one is not.
MAX_VOLUME_BYTES = env_limit(MAX_VOLUME_BYTES_ENV, 1024) * MIB
#: Environment variable of :data:`MAX_DICOM_FILES`.
MAX_DICOM_FILES_ENV = "BRAINVIEWER_MAX_DICOM_FILES"
#: Largest number of files read from one DICOM folder or zip.
MAX_DICOM_FILES = env_limit(MAX_DICOM_FILES_ENV, 5000)
#: Environment variable of :data:`MAX_ZIP_BYTES` (in MiB).
MAX_ZIP_BYTES_ENV = "BRAINVIEWER_MAX_ZIP_MB"
#: Largest total uncompressed size read from one zip, in bytes (default 1 GiB), checked against the zip's
#: headers first and against the bytes actually inflated while reading (headers can lie).
MAX_ZIP_BYTES = env_limit(MAX_ZIP_BYTES_ENV, 1024) * MIB
#: Environment variable of :data:`MAX_COMPRESSION_RATIO`.
MAX_COMPRESSION_RATIO_ENV = "BRAINVIEWER_MAX_COMPRESSION_RATIO"
#: Largest compression ratio (uncompressed / compressed bytes) accepted for a zip entry, a whole zip or a
#: ``.nii.gz`` file once its uncompressed size passes :data:`RATIO_FLOOR_BYTES` (default 200: real scans
#: compress 2-20 times; a zip or gzip bomb of zeros about 1000 times).
MAX_COMPRESSION_RATIO = env_limit(MAX_COMPRESSION_RATIO_ENV, 200)
#: Uncompressed size below which the compression ratio is not checked (a small, very compressible file
#: such as an empty mask costs little).
RATIO_FLOOR_BYTES = 16 * MIB
#: Slices whose pixels are more elongated than this (long side / short side) are resampled to square pixels.
MAX_PIXEL_ASPECT = 1.2
#: A sagittal or coronal DICOM series of fewer slices is shown as stored, not resliced to axial.
MIN_RESLICE_SLICES = 8
#: Largest side of a slice after resampling to square pixels; the pixel grows instead.
MAX_RESAMPLED_SIDE = 1024


class VolumeError(ValueError):
    """A file, folder or zip could not be read as a volume. The message says why and what to do."""


PLANE_INFO = "acquired_plane"
"""``Volume.info`` key of the plane a series was acquired in (``axial``, ``coronal``, ``sagittal``), when known."""


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
        info: non-identifying technical fields (see :func:`~brainviewer.data.volumes.dicom_series.safe_dicom_summary`);
            a DICOM series with slice geometry also records the plane it was acquired in under :data:`PLANE_INFO`.
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
    """Refuse a volume of more than :data:`MAX_VOXELS` voxels (``shape`` from a header, nothing decoded)."""
    voxels = math.prod(int(n) for n in shape) if len(shape) else 0  # Python ints: no int64 overflow
    if voxels > MAX_VOXELS:
        raise VolumeError(
            f"{label} has {voxels:,} voxels {tuple(int(n) for n in shape)}, more than the {MAX_VOXELS:,} accepted "
            "(the volume limit). Crop or downsample it first. " + raise_hint(MAX_VOXELS_ENV)
        )


def _decoded_bytes(voxels: int, itemsize: int, converted: bool) -> int:
    """Bytes a volume costs once decoded: ``voxels x itemsize``, plus 4 a voxel when it is ``converted`` to float32."""
    return int(voxels) * int(itemsize) + (int(voxels) * 4 if converted else 0)


def _check_decoded(voxels: int, itemsize: int, converted: bool, label: str, what: str) -> None:
    """Refuse a volume whose decoded bytes (see :func:`_decoded_bytes`) pass :data:`MAX_VOLUME_BYTES`.

    Args:
        voxels: voxels (times samples per voxel) declared by the header.
        itemsize: bytes per stored sample.
        converted: whether the reader makes a ``float32`` copy (4 more bytes a voxel).
        label: the input, for the message.
        what: the stored data type in words, for the message (e.g. ``float64``).
    """
    size = _decoded_bytes(voxels, itemsize, converted)
    if size > MAX_VOLUME_BYTES:
        copy = " plus a 4-byte float32 copy" if converted else ""
        raise VolumeError(
            f"{label} decodes to {size / MIB:,.0f} MiB ({voxels:,} voxels of {what}, {itemsize} byte(s) each{copy}), "
            f"more than the {MAX_VOLUME_BYTES / MIB:,.0f} MiB accepted per volume (the decoded-volume limit). Crop "
            "or downsample it, or save it with a smaller data type (e.g. int16 or float32). "
            + raise_hint(MAX_VOLUME_BYTES_ENV)
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
# Display orientation and square pixels (NIfTI and DICOM)
# --------------------------------------------------------------------------------------------


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
