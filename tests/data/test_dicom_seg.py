"""DICOM SEG export: a series made here goes in, a SEG comes out, and reads back onto the same grid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.volumes import VolumeError, read_dicom_files, read_dicom_zip, read_nifti
from brainviewer.data.volumes.dicom_seg import (
    SEGMENT_LABEL,
    dicom_seg_bytes,
    series_source_files,
    write_dicom_seg,
)

hd = pytest.importorskip("highdicom")

STUDY_UID = "1.2.826.0.1.3680043.8.498.77"
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.78"


def make_series(
    n: int = 6,
    rows: int = 12,
    cols: int = 10,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.55),
    gap: float = 2.0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.79",
) -> list[tuple[str, bytes]]:
    """``n`` MR slices (pydicom), stored and numbered in REVERSE position order, with identifying fields set.

    Slice ``k`` lies at ``k * gap`` mm along the normal of ``orientation`` from (-20, 30, 5) and holds a
    gradient plus a marker 1000 + k at (k % rows, 2 * k % cols).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    files = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "PID-4711", "19800101", "F"
        ds.InstitutionName = "General Hospital"
        ds.OperatorsName = "Op^Erator"
        ds.ReferringPhysicianName = "Dr^Who"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200101", "101010", "S1", "ACC1"
        ds.SeriesDescription = "Doe Jane brain"
        ds.Modality = "MR"
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE
        ds.SeriesNumber = 3
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [float(v) for v in np.array([-20.0, 30.0, 5.0]) + k * gap * normal]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = gap
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = (np.add.outer(np.arange(rows), np.arange(cols)) * 10).astype(np.uint16)
        pixels[k % rows, (2 * k) % cols] = 1000 + k
        ds.PixelData = pixels.tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((f"IM{n - k:04d}.dcm", buffer.getvalue()))
    return sorted(files)


def _sources_by_uid(files: list[tuple[str, bytes]]) -> dict[str, object]:
    import pydicom

    datasets = [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


def _dataset_bytes(ds: object) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _blocks(volume: object) -> list[np.ndarray]:
    """A mask per display slice: an asymmetric block at the slice's marker (a 2x3 block below-right of it)."""
    masks = []
    for image in volume.slices:
        mask = np.zeros(np.asarray(image).shape, bool)
        r, c = np.argwhere(np.asarray(image) >= 1000)[0]
        mask[r : r + 2, c : c + 3] = True
        masks.append(mask)
    return masks


def _expected_markers(files: list[tuple[str, bytes]]) -> dict[str, np.ndarray]:
    """Source SOP Instance UID -> its marker pixel, on the source image's own grid."""
    return {uid: ds.pixel_array >= 1000 for uid, ds in _sources_by_uid(files).items()}


def _check_round_trip(files: list[tuple[str, bytes]], seg_bytes: bytes, expected: dict[str, np.ndarray]) -> None:
    """Read the SEG back: frames, references, pixels and geometry against the source images."""
    import pydicom

    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    sources = _sources_by_uid(files)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.SegmentationType == "BINARY"
    assert int(seg.NumberOfFrames) == len(sources)
    description = seg.get_segment_description(1)
    assert description.segment_label == SEGMENT_LABEL
    assert description.segmented_property_category.value == "49755003"  # Morphologically Abnormal Structure
    assert description.segmented_property_type.value == "108369006"  # Neoplasm
    assert description.SegmentAlgorithmType == "AUTOMATIC"
    assert description.algorithm_identification[0].AlgorithmName == "lgg-unet-resnet18"
    assert seg.FrameOfReferenceUID == FRAME_OF_REFERENCE and seg.StudyInstanceUID == STUDY_UID
    referenced = {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(sources)

    shared = seg.SharedFunctionalGroupsSequence[0]
    first = next(iter(sources.values()))
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
        [float(v) for v in first.ImageOrientationPatient],
    )
    np.testing.assert_allclose(
        [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], [float(v) for v in first.PixelSpacing]
    )
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in sources[uid].ImagePositionPatient],
        )
        np.testing.assert_array_equal(frames[index].astype(bool), expected[uid])
    for uid in sources:  # highdicom's own per-source lookup agrees
        pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1])
        np.testing.assert_array_equal(pixels[0, :, :, 0].astype(bool), expected[uid])
    assert pydicom.dcmread(io.BytesIO(seg_bytes)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    # and as volumes (highdicom): the SEG's voxel grid is the source series' grid, voxel for voxel
    seg_volume = seg.get_volume()
    source_volume = hd.get_volume_from_series(list(sources.values()))
    assert seg_volume.geometry_equal(source_volume)
    np.testing.assert_allclose(seg_volume.affine, source_volume.affine)
    truth = []  # the source images with the expected mask as their pixels: the expected volume, same grid
    for uid, ds in sources.items():
        copy = pydicom.dcmread(io.BytesIO(_dataset_bytes(ds)))
        copy.PixelData = expected[uid].astype(np.uint16).tobytes()
        truth.append(copy)
    expected_volume = hd.get_volume_from_series(truth)
    np.testing.assert_array_equal(
        seg_volume.array.reshape(seg_volume.spatial_shape).astype(bool), expected_volume.array.astype(bool)
    )


def test_axial_series_round_trips_through_a_seg() -> None:
    files = make_series()
    volume = read_dicom_files(files)
    masks = _blocks(volume)
    seg_bytes = dicom_seg_bytes(masks, volume, files, "lgg-unet-resnet18")
    # an axial series is shown as stored: display slice k is the k-th image along the normal (marker 1000 + k)
    uid_of_marker = {int(ds.pixel_array.max()): uid for uid, ds in _sources_by_uid(files).items()}
    expected = {uid_of_marker[int(np.asarray(image).max())]: m for image, m in zip(volume.slices, masks, strict=True)}
    _check_round_trip(files, seg_bytes, expected)


def test_sagittal_series_resliced_for_display_maps_back_to_its_own_images() -> None:
    files = make_series(n=9, rows=8, cols=8, orientation=(0, 1, 0, 0, 0, -1), gap=0.55)
    volume = read_dicom_files(files)
    assert any("reformatted" in note for note in volume.notes)  # shown resliced to axial
    assert volume.grid_shape is None and volume.n_slices == 8  # 8 rows along z became 8 axial slices
    masks = [np.asarray(image) >= 1000 for image in volume.slices]  # the marker voxels, wherever they are shown
    _check_round_trip(files, dicom_seg_bytes(masks, volume, files, "lgg-unet-resnet18"), _expected_markers(files))


def test_elongated_pixels_resampled_for_display_map_back_to_the_source_grid() -> None:
    files = make_series(spacing=(1.0, 0.5))
    volume = read_dicom_files(files)
    assert volume.grid_shape == (12, 10) and volume.shape == (24, 10)  # shown on square 0.5 mm pixels
    masks = []
    for image in volume.slices:  # the two display rows the marker's 1 mm row became
        mask = np.zeros(volume.shape, bool)
        r, c = np.argwhere(np.asarray(image) == np.asarray(image).max())[0]
        mask[2 * (r // 2) : 2 * (r // 2) + 2, c] = True
        masks.append(mask)
    _check_round_trip(files, dicom_seg_bytes(masks, volume, files, "lgg-unet-resnet18"), _expected_markers(files))


def test_a_zip_upload_gives_the_same_frames(tmp_path: Path) -> None:
    import zipfile

    files = make_series()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(f"series/{name}", data)
    volume = read_dicom_zip(buffer.getvalue(), name="upload.zip")
    masks = [np.asarray(image) >= 1000 for image in volume.slices]
    out = write_dicom_seg(
        masks,
        volume,
        series_source_files([("upload.zip", buffer.getvalue())]),
        tmp_path / "seg.dcm",
        "lgg-unet-resnet18",
    )
    _check_round_trip(files, out.read_bytes(), _expected_markers(files))
    with pytest.raises(FileExistsError):
        write_dicom_seg(masks, volume, files, out, "lgg-unet-resnet18")


def test_the_seg_copies_only_the_patient_and_study_modules() -> None:
    import pydicom

    files = make_series()
    volume = read_dicom_files(files)
    seg = pydicom.dcmread(io.BytesIO(dicom_seg_bytes(_blocks(volume), volume, files, "lgg-unet-resnet18")))
    assert str(seg.PatientName) == "Doe^Jane" and seg.PatientID == "PID-4711"  # required: the SEG joins the study
    assert seg.StudyDate == "20200101" and seg.AccessionNumber == "ACC1"
    for absent in ("InstitutionName", "OperatorsName", "ContentCreatorName"):
        assert absent not in seg
    assert seg.SeriesDescription == "brainviewer predicted tumour mask"
    assert seg.SeriesInstanceUID != "1.2.826.0.1.3680043.8.498.79" and seg.Manufacturer == "brainviewer"  # a new series
    texts = " ".join(str(e.value) for e in seg.iterall() if e.VR in ("LO", "SH", "LT", "ST", "UT"))
    assert "General Hospital" not in texts and "Doe Jane brain" not in texts


def test_inputs_that_cannot_make_a_seg_say_what_to_do(tmp_path: Path) -> None:
    import nibabel as nib

    files = make_series()
    volume = read_dicom_files(files)
    with pytest.raises(VolumeError, match="another series"):
        dicom_seg_bytes(_blocks(volume), volume, make_series(series_uid="1.2.3.4"), "m")
    with pytest.raises(VolumeError, match="slices"):
        dicom_seg_bytes(_blocks(volume)[:-1], volume, files, "m")
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), str(path))
    nifti = read_nifti(path)
    with pytest.raises(VolumeError, match="NIfTI or PNG"):
        dicom_seg_bytes([np.zeros(nifti.shape, bool)] * nifti.n_slices, nifti, files, "m")


def test_an_upload_of_two_series_refers_to_the_one_shown() -> None:
    shown, other = make_series(n=6), make_series(n=3, series_uid="1.2.826.0.1.3680043.8.498.80")
    files = shown + [(f"other/{name}", data) for name, data in other]
    volume = read_dicom_files(files)
    assert volume.n_slices == 6 and any("2 series" in note for note in volume.notes)
    masks = [np.asarray(image) >= 1000 for image in volume.slices]
    _check_round_trip(shown, dicom_seg_bytes(masks, volume, files, "lgg-unet-resnet18"), _expected_markers(shown))
