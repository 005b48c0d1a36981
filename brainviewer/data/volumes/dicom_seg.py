"""A predicted mask of a DICOM series written as a DICOM Segmentation (SEG) object, with ``highdicom``.

The SEG is the standard's own container for a segmentation: PACS viewers, 3D Slicer, OHIF and
highdicom read it back onto the images it was made from. One SEG holds:

* one segment, ``Tumour`` (segment number 1), BINARY (one bit per pixel), with the SNOMED CT codes
  category *Morphologically Abnormal Structure* (49755003) and type *Neoplasm* (108369006), segmented
  ``AUTOMATIC``-ally by the algorithm named in its Algorithm Identification (family *Artificial
  Intelligence*, DCM 123110; the model's name; brainviewer's version);
* one frame per image of the source series, in the series' order along the slice normal, every frame
  referring to its source image (SOP Instance UID) and carrying that image's position; the pixel
  measures and orientation are the series'. Empty frames are kept, so frame ``k`` is slice ``k``.

Privacy. The SEG is a new series of the source's study: the standard makes it carry the Patient and
Study modules of its sources (Patient Name and ID, Birth Date, Sex, Study Instance UID, Study Date and
Time, Referring Physician, Study ID, Accession Number, and whatever else those modules hold in the
source), and highdicom copies exactly those, as it must for the SEG to be filed with its images.
Nothing else from the sources is copied (no institution, operator, series or protocol description,
no private tags), and brainviewer adds nothing identifying: its own series description, manufacturer
``brainviewer``, the model's name, no content creator. A user who needs an anonymous SEG anonymises its
sources first; the SEG then carries their anonymised fields.

The mask comes in the :class:`~brainviewer.data.volumes.base.Volume`'s display orientation and is
mapped back to the series' own grid exactly as a NIfTI export is (reslicing undone, square-pixel
resampling undone by nearest neighbour). The source datasets are read again from the same files the
volume was read from (a volume keeps no identifying header, so it cannot supply them).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainviewer.data.volumes.base import Volume, VolumeError, _neutral_id
from brainviewer.data.volumes.dicom import _iter_folder, _iter_zip, _parse_dicom
from brainviewer.data.volumes.dicom_series import _DicomSlice, _sort_slices
from brainviewer.data.volumes.nifti import _mask_array_for_nifti

logger = logging.getLogger(__name__)

#: The one segment's label, and the text of the SEG's series description.
SEGMENT_LABEL = "Tumour"
SERIES_DESCRIPTION = "brainviewer predicted tumour mask"
MANUFACTURER = "brainviewer"
#: Series number of a SEG brainviewer writes (sources rarely use numbers this high).
SEG_SERIES_NUMBER = 9901

FileSource = Iterable[tuple[str, bytes | Callable[[], bytes]]]


def series_source_files(source: str | Path | bytes | Sequence[tuple[str, bytes]], name: str = "") -> FileSource:
    """The ``(name, bytes)`` files of a DICOM input as the readers take it: a folder, a ``.zip`` (path or
    bytes, ``name`` ending in ``.zip``), or the loose ``.dcm`` files (a sequence of pairs; a single
    ``.zip`` among them is opened)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            return _iter_folder(path)
        if path.suffix.lower() == ".zip":
            return _iter_zip(path.read_bytes(), path.name)
        return [(path.name, path.read_bytes())]
    if isinstance(source, (bytes, bytearray, memoryview)):
        if name.lower().endswith(".zip"):
            return _iter_zip(bytes(source), name)
        return [(name or "the upload", bytes(source))]
    files = list(source)
    if len(files) == 1 and files[0][0].lower().endswith(".zip"):
        return _iter_zip(files[0][1], files[0][0])
    return files


def source_datasets(files: FileSource, volume: Volume) -> list[Any]:
    """The pydicom datasets of the series ``volume`` was read from, in its slice order.

    The series is chosen as :func:`~brainviewer.data.volumes.dicom.read_dicom_files` chose it (the one with
    the most images) and sorted as it sorted it (along the slice normal).

    Raises:
        VolumeError: the files hold no such series, or it does not match the volume's grid.
    """
    groups: dict[str, list[_DicomSlice]] = {}
    for order, (_name, content) in enumerate(files):
        ds = _parse_dicom(content() if callable(content) else content)
        if ds is None or "PixelData" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "unknown")), []).append(_DicomSlice(ds, order))
    if not groups:
        raise VolumeError("The source files hold no DICOM images; give the series the volume was read from.")
    uid, chosen = max(groups.items(), key=lambda kv: (len(kv[1]), -kv[1][0].order))
    if volume.patient_id.startswith("dicom-") and uid != "unknown" and volume.patient_id != _neutral_id("dicom", uid):
        raise VolumeError(
            f"The source files hold another series than {volume.patient_id}; give the files it was read from."
        )
    ordered, _positions, _plane = _sort_slices(chosen, [])
    return [item.ds for item in ordered]


def seg_frames(masks: Sequence[np.ndarray], volume: Volume) -> np.ndarray:
    """``masks`` (one ``(H, W)`` bool mask per display slice) on the series' own grid.

    Returns:
        ``(slices, rows, columns)`` ``uint8`` 0/1, slice ``k`` the ``k``-th image of the series along its normal.

    Raises:
        VolumeError: the volume is not a DICOM series with position headers, or the masks do not fit it.
    """
    if volume.source_kind != "dicom" or volume.affine is None:
        raise VolumeError(
            f"{volume.patient_id} is not a DICOM series with position and orientation headers, so a DICOM SEG "
            "cannot refer to its images. Export the mask as NIfTI or PNG instead."
        )
    data = _mask_array_for_nifti(masks, volume)  # (columns, rows, slices) in the series' order
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))).astype(np.uint8)


def dicom_seg(
    masks: Sequence[np.ndarray],
    volume: Volume,
    files: FileSource,
    model_name: str,
    model_version: str | None = None,
) -> Any:
    """A ``highdicom.seg.Segmentation`` of ``masks`` referring to the series ``volume`` was read from.

    Args:
        masks: one ``(H, W)`` bool mask per slice of ``volume``, in its display orientation.
        volume: a single-frame DICOM series with position headers (``source_kind == "dicom"``, an affine).
        files: the files ``volume`` was read from (see :func:`series_source_files`).
        model_name: the algorithm's name (the weights folder or Hub repo), at most 64 characters kept.
        model_version: the algorithm's version (default: brainviewer's version).

    Raises:
        VolumeError: a volume or files that cannot make a SEG; the message says what to export instead.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from brainviewer import __version__

    frames = seg_frames(masks, volume)
    sources = source_datasets(files, volume)
    if len(sources) != frames.shape[0] or any((int(ds.Rows), int(ds.Columns)) != frames.shape[1:] for ds in sources):
        raise VolumeError(
            f"The source series has {len(sources)} images of {int(sources[0].Rows)}x{int(sources[0].Columns)}; "
            f"the mask has {frames.shape[0]} slices of {frames.shape[2]}x{frames.shape[1]}. Give the files the "
            "volume was read from."
        )
    missing = [k for k in ("FrameOfReferenceUID", "StudyInstanceUID") if k not in sources[0]]
    if missing:
        raise VolumeError(
            f"The source series has no {' or '.join(missing)}, which a DICOM SEG must refer to. Export the mask "
            "as NIfTI instead."
        )
    name = (model_name or "brainviewer model")[:64]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, family=codes.cid7162.ArtificialIntelligence, version=(model_version or __version__)[:64]
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=name,
            software_versions=__version__,
            device_serial_number="none",
            series_description=SERIES_DESCRIPTION,
            omit_empty_frames=False,
        )
    except (ValueError, AttributeError, KeyError, TypeError) as err:
        raise VolumeError(
            f"highdicom could not make a DICOM SEG of this series ({err}). Export the mask as NIfTI instead."
        ) from err


def dicom_seg_bytes(
    masks: Sequence[np.ndarray],
    volume: Volume,
    files: FileSource,
    model_name: str,
    model_version: str | None = None,
) -> bytes:
    """The file bytes of :func:`dicom_seg` (a ``.dcm`` file, explicit VR little endian)."""
    seg = dicom_seg(masks, volume, files, model_name, model_version)
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_seg(
    masks: Sequence[np.ndarray],
    volume: Volume,
    files: FileSource,
    path: str | Path,
    model_name: str,
    model_version: str | None = None,
) -> Path:
    """Write :func:`dicom_seg_bytes` to ``path``, never replacing an existing file.

    Raises:
        FileExistsError: ``path`` exists.
    """
    from brainviewer.files import write_new

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_new(path, dicom_seg_bytes(masks, volume, files, model_name, model_version))
    logger.info("wrote DICOM SEG %s (%d frames)", path, volume.n_slices)
    return path
