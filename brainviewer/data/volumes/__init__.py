"""Patient volumes: NIfTI files, DICOM series and dataset patients as one stack of slices.

Everything here is plain NumPy + nibabel + pydicom: no Streamlit, no torch.

Modules, one per format:

* :mod:`~brainviewer.data.volumes.base`: :class:`Volume`, :class:`VolumeError`, the size limits, and the
  display orientation and square pixels shared by the readers (see its docstring for the conventions);
* :mod:`~brainviewer.data.volumes.nifti`: NIfTI reading, and predicted masks written as NIfTI;
* :mod:`~brainviewer.data.volumes.png`: predicted masks written as PNG files;
* :mod:`~brainviewer.data.volumes.dicom`: DICOM folders, zips and files;
* :mod:`~brainviewer.data.volumes.compressed`: zip entries and ``.gz`` files inflated in chunks under the limits;
* :mod:`~brainviewer.data.volumes.dicom_series`: one DICOM series (order, geometry, multi-frame, header summary);
* :mod:`~brainviewer.data.volumes.dataset`: one patient of a 2-D slice dataset.
* :mod:`~brainviewer.data.volumes.dicom_seg`: a predicted mask of a DICOM series as a DICOM SEG (highdicom).

:func:`open_volume` (here) picks the reader from the input.

Privacy
-------
A :class:`Volume` never keeps identifying header fields (names, ids, dates, institutions,
free-text descriptions). Its ``patient_id`` is neutral (``dicom-<hash of the series UID>``,
``nifti-<hash of the file>``) unless the caller gives one, and ``info`` holds only the technical
fields of :func:`safe_dicom_summary` / :func:`safe_nifti_summary`.
"""

from __future__ import annotations

from pathlib import Path

from brainviewer.data.volumes.base import (
    MAX_COMPRESSION_RATIO,
    MAX_DICOM_FILES,
    MAX_PIXEL_ASPECT,
    MAX_RESAMPLED_SIDE,
    MAX_VOLUME_BYTES,
    MAX_VOXELS,
    MAX_ZIP_BYTES,
    MIN_RESLICE_SLICES,
    Volume,
    VolumeError,
    canonical_slice,
    slices_to_canonical,
)
from brainviewer.data.volumes.dataset import dataset_base, volume_from_dataset
from brainviewer.data.volumes.dicom import _parse_dicom, read_dicom_files, read_dicom_folder, read_dicom_zip
from brainviewer.data.volumes.dicom_series import SAFE_DICOM_FIELDS, safe_dicom_summary
from brainviewer.data.volumes.nifti import (
    NIFTI_SUFFIXES,
    is_nifti_name,
    nifti_mask_bytes,
    nifti_mask_image,
    read_nifti,
    safe_nifti_summary,
    write_nifti_mask,
)
from brainviewer.data.volumes.png import safe_relative_name, write_png_masks

__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MAX_DICOM_FILES",
    "MAX_PIXEL_ASPECT",
    "MAX_RESAMPLED_SIDE",
    "MAX_VOLUME_BYTES",
    "MAX_VOXELS",
    "MAX_ZIP_BYTES",
    "MIN_RESLICE_SLICES",
    "NIFTI_SUFFIXES",
    "SAFE_DICOM_FIELDS",
    "Volume",
    "VolumeError",
    "canonical_slice",
    "dataset_base",
    "is_nifti_name",
    "nifti_mask_bytes",
    "nifti_mask_image",
    "open_volume",
    "read_dicom_files",
    "read_dicom_folder",
    "read_dicom_zip",
    "read_nifti",
    "safe_dicom_summary",
    "safe_nifti_summary",
    "safe_relative_name",
    "slices_to_canonical",
    "volume_from_dataset",
    "write_nifti_mask",
    "write_png_masks",
]


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
