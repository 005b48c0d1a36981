"""Volumes: NIfTI and DICOM reading (orientation, spacing, privacy), bad inputs, mask writers."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.data.volumes import (
    SAFE_DICOM_FIELDS,
    Volume,
    VolumeError,
    open_volume,
    read_dicom_files,
    read_dicom_folder,
    read_dicom_zip,
    read_nifti,
    safe_dicom_summary,
    volume_from_dataset,
    write_nifti_mask,
    write_png_masks,
)
from brainviewer.data.volumes.base import PLANE_INFO

IDENTIFYING = ("Doe", "Jane", "PID-4711", "19800101", "General Hospital", "Dr^Who")

# --------------------------------------------------------------------------------------------
# NIfTI helpers
# --------------------------------------------------------------------------------------------

# A RAS+ volume (x to the patient's Right, y Anterior, z Superior), shape (X, Y, Z) = (6, 5, 4),
# voxel size 2.2 x 2 x 3 mm (pixels square enough not to be resampled). One marker voxel sits at the
# patient's far LEFT (x = 0), most ANTERIOR row (y = 4), slice z = 1. Shown radiologically (anterior
# up, patient right on the viewer's left) it must land in the top row, right-most column: image[0, 5] of slice 1.
X, Y, Z = 6, 5, 4
MARKER = (0, 4, 1)
MARKER_DISPLAY = (1, 0, 5)  # (slice, row, col)


def ras_volume() -> tuple[np.ndarray, np.ndarray]:
    data = np.zeros((X, Y, Z), dtype=np.int16)
    data[MARKER] = 1000
    data[3, 1, 2] = 200  # a second, dimmer voxel so the window is not degenerate
    affine = np.diag([2.2, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-3.0, -5.0, -6.0]
    return data, affine


def save_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    img.header["descrip"] = b"Doe^Jane 19800101"  # converters sometimes leave names here
    nib.save(img, str(path))
    return path


def reoriented(img: nib.Nifti1Image, codes: tuple[str, str, str]) -> nib.Nifti1Image:
    return img.as_reoriented(ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(codes)))


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


def test_nifti_marker_lands_radiologically(tmp_path: Path) -> None:
    data, affine = ras_volume()
    path = save_nifti(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    volume = read_nifti(path)
    assert volume.n_slices == Z
    assert volume.shape == (Y, X)  # rows run along y, columns along x
    z, row, col = MARKER_DISPLAY
    assert volume.slices[z][row, col] == 1000
    assert int(np.count_nonzero(volume.slices[z])) == 1
    # the second voxel: x=3 -> col X-1-3 = 2, y=1 -> row Y-1-1 = 3, slice 2
    assert volume.slices[2][3, 2] == 200
    assert volume.spacing_mm == pytest.approx((2.0, 2.2, 3.0))
    assert volume.voxel_mm3 == pytest.approx(13.2)
    assert volume.source_kind == "nifti"
    assert volume.patient_id.startswith("nifti-")


@pytest.mark.parametrize("codes", [("P", "L", "I"), ("L", "P", "S"), ("S", "R", "A")])
def test_nifti_other_orientations_show_the_same(tmp_path: Path, codes: tuple[str, str, str]) -> None:
    data, affine = ras_volume()
    canonical = nib.Nifti1Image(data, affine)
    other = reoriented(canonical, codes)
    assert nib.aff2axcodes(other.affine) == codes
    path = save_nifti(other, tmp_path / "scan.nii")
    volume = read_nifti(path)
    reference = read_nifti(save_nifti(canonical, tmp_path / "ref.nii"))
    assert volume.spacing_mm == pytest.approx((2.0, 2.2, 3.0))
    for got, want in zip(volume.slices, reference.slices, strict=True):
        np.testing.assert_array_equal(got, want)
    z, row, col = MARKER_DISPLAY
    assert volume.slices[z][row, col] == 1000


def test_nifti_from_bytes_with_mask_and_privacy(tmp_path: Path) -> None:
    data, affine = ras_volume()
    scan = save_nifti(nib.Nifti1Image(data, affine), tmp_path / "Doe_Jane.nii.gz")
    mask = save_nifti(nib.Nifti1Image((data > 500).astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    volume = read_nifti(scan.read_bytes(), name="upload.nii.gz", mask=mask.read_bytes(), mask_name="m.nii.gz")
    assert volume.masks is not None and volume.has_ground_truth
    z, row, col = MARKER_DISPLAY
    assert volume.masks[z][row, col]
    assert sum(int(m.sum()) for m in volume.masks) == 1
    text = json.dumps(volume.info) + volume.patient_id + " ".join(volume.notes)
    assert volume.info["voxel_size_mm"] == [2.2, 2.0, 3.0]
    assert volume.info["file_axes"] == "RAS"
    for word in IDENTIFYING[:2]:
        assert word not in text


def test_nifti_mask_of_another_grid_is_refused(tmp_path: Path) -> None:
    data, affine = ras_volume()
    scan = save_nifti(nib.Nifti1Image(data, affine), tmp_path / "scan.nii")
    other = save_nifti(nib.Nifti1Image(np.zeros((6, 5, 3), np.uint8), affine), tmp_path / "mask.nii")
    with pytest.raises(VolumeError, match="not on the grid"):
        read_nifti(scan, mask=other)


def test_nifti_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="empty"):
        read_nifti(b"", name="x.nii")
    with pytest.raises(VolumeError, match="could not be read as NIfTI"):
        read_nifti(b"this is not a nifti file at all" * 20, name="x.nii")
    with pytest.raises(VolumeError, match=r"damaged \.gz"):
        read_nifti(b"\x1f\x8b\x08\x00garbage", name="x.nii.gz")
    four_d = save_nifti(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(VolumeError, match="several volumes"):
        read_nifti(four_d)


def test_nifti_mask_round_trip_keeps_affine(tmp_path: Path) -> None:
    data, affine = ras_volume()
    file_img = reoriented(nib.Nifti1Image(data, affine), ("P", "L", "I"))
    path = save_nifti(file_img, tmp_path / "scan.nii.gz")
    volume = read_nifti(path)
    masks = [s > 500 for s in volume.slices]  # the marker only
    out = write_nifti_mask(masks, volume, tmp_path / "pred.nii.gz")
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, file_img.affine)
    assert written.shape == file_img.shape
    assert written.get_data_dtype() == np.uint8
    expected = (np.asanyarray(file_img.dataobj) > 500).astype(np.uint8)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), expected)
    assert b"Doe" not in written.header["descrip"].tobytes()
    again = read_nifti(out)  # and it reads back onto the same display grid
    for got, want in zip(again.slices, masks, strict=True):
        np.testing.assert_array_equal(got > 0, want)
    with pytest.raises(FileExistsError):
        write_nifti_mask(masks, volume, out)


def test_nifti_of_elongated_pixels_is_resampled_and_its_masks_map_back(tmp_path: Path) -> None:
    # RAS (X, Y, Z) = (6, 4, 3), voxels 1 x 3 x 2 mm: axial slices of 4 rows of 3 mm by 6 columns of 1 mm
    data = np.zeros((6, 4, 3), np.int16)
    data[1, 2, 1] = 1000
    data[4, 0, 2] = 300
    affine = np.diag([1.0, 3.0, 2.0, 1.0])
    truth = (data == 1000).astype(np.uint8)
    scan = save_nifti(nib.Nifti1Image(data, affine), tmp_path / "scan.nii")
    mask_file = save_nifti(nib.Nifti1Image(truth, affine), tmp_path / "mask.nii")
    volume = read_nifti(scan, mask=mask_file)
    assert volume.grid_shape == (4, 6) and volume.shape == (12, 6)
    assert volume.spacing_mm == pytest.approx((1.0, 1.0, 2.0))
    assert volume.voxel_mm3 == pytest.approx(2.0)
    assert any("resampled to 12x6" in note for note in volume.notes)
    # the ground truth follows the scan: y = 2 -> display row 4 - 1 - 2 = 1 -> rows 3..5; x = 1 -> column 4
    assert volume.masks is not None and all(m.shape == (12, 6) for m in volume.masks)
    assert {tuple(v) for v in np.argwhere(volume.masks[1])} == {(3, 4), (4, 4), (5, 4)}
    assert float(volume.slices[1][4, 4]) == pytest.approx(1000.0)
    out = write_nifti_mask(volume.masks, volume, tmp_path / "pred.nii")
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), truth)  # back on the file's grid


def test_nifti_mask_needs_a_nifti_volume() -> None:
    volume = Volume("p", [np.zeros((8, 8), np.uint8)])
    with pytest.raises(VolumeError, match="not read from a NIfTI file or a DICOM series"):
        write_nifti_mask([np.zeros((8, 8), bool)], volume, "/nonexistent/x.nii")


# --------------------------------------------------------------------------------------------
# DICOM helpers
# --------------------------------------------------------------------------------------------


def make_dicom(
    path: Path | None,
    pixels: np.ndarray,
    position: tuple[float, float, float] | None,
    instance: int | None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.55),
    slope: float | None = None,
    intercept: float | None = None,
    with_pixels: bool = True,
) -> bytes:
    """One MR slice as DICOM bytes (written to ``path`` too when given), with identifying fields set."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-4711"
    ds.PatientBirthDate = "19800101"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "Dr^Who"
    ds.SeriesDescription = "Doe Jane brain"
    ds.StudyDate = "20200101"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [spacing[0], spacing[1]]
    ds.SliceThickness = 2.0
    ds.MagneticFieldStrength = 1.5
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def series_files(n: int = 5, rows: int = 8, cols: int = 10, **kwargs: object) -> list[tuple[str, bytes]]:
    """``n`` slices at z = 10, 12, ...; slice k (by position) holds value 100 + k at (2, 5).

    Files are named and numbered in REVERSE order, so only position sorting gets it right.
    """
    files = []
    for k in range(n):
        pixels = np.zeros((rows, cols), np.uint16)
        pixels[2, 5] = 100 + k
        data = make_dicom(None, pixels, (0.0, 0.0, 10.0 + 2 * k), instance=n - k, **kwargs)
        files.append((f"IM{n - k:04d}.dcm", data))
    return sorted(files)


def zip_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def test_dicom_folder_sorted_by_position_with_spacing(tmp_path: Path) -> None:
    for name, data in series_files():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "README.txt").write_text("not dicom")
    volume = read_dicom_folder(tmp_path)
    assert volume.n_slices == 5
    assert [int(s[2, 5]) for s in volume.slices] == [100, 101, 102, 103, 104]
    assert volume.spacing_mm == (0.5, 0.55, 2.0)
    assert volume.source_kind == "dicom"
    assert volume.slices[0].dtype == np.uint16
    assert volume.patient_id.startswith("dicom-")
    assert volume.info["Modality"] == "MR"
    assert volume.info["Rows"] == 8 and volume.info["Columns"] == 10
    assert volume.info[PLANE_INFO] == "axial" and not volume.notes  # an axial series: nothing to say


def test_dicom_zip_with_rescale(tmp_path: Path) -> None:
    files = series_files(3, slope=2.0, intercept=-10.0)
    volume = read_dicom_zip(zip_bytes([(f"series/{n}", d) for n, d in files]), name="upload.zip")
    assert volume.slices[0].dtype == np.float32
    assert [float(s[2, 5]) for s in volume.slices] == [190.0, 192.0, 194.0]
    assert float(volume.slices[0][0, 0]) == -10.0


def sagittal_series(n: int = 8, gap: float = 3.0, instance_order: int = 1) -> list[tuple[str, bytes]]:
    """Sagittal slices of 6 x 6 pixels at LPS x = 0, gap, 2 gap, ...: columns run along +y (posterior,
    0.55 mm apart), rows along -z (inferior, 0.5 mm apart), so the slice normal is (-1, 0, 0).

    The slice at x = k * gap holds a marker 100 + k at row 1, column 2: LPS (k * gap, 1.1, -0.5)."""
    files = []
    for k in range(n):
        pixels = np.zeros((6, 6), np.uint16)
        pixels[1, 2] = 100 + k
        data = make_dicom(
            None, pixels, (k * gap, 0.0, 0.0), instance=instance_order * k + 10, orientation=(0, 1, 0, 0, 0, -1)
        )
        files.append((f"{k}.dcm", data))
    return files


def test_dicom_sorts_along_the_slice_normal_not_z() -> None:
    # Along the normal (-1, 0, 0) the order is x = 21, 18, ..., 0 whatever the instance numbers say;
    # the affine's slice axis follows that order.
    import pydicom

    from brainviewer.data.volumes.dicom_series import _DicomSlice, _series_affine, _sort_slices

    items = [_DicomSlice(pydicom.dcmread(io.BytesIO(d)), i) for i, (_, d) in enumerate(sagittal_series())]
    ordered, positions, plane = _sort_slices(items, [])
    assert [float(item.ds.ImagePositionPatient[0]) for item in ordered] == [21.0 - 3 * k for k in range(8)]
    assert plane == "sagittal" and positions == [3.0 * k - 21.0 for k in range(8)]
    affine = _series_affine([item.ds for item in ordered], (0.5, 0.55, 3.0))
    # voxel (column i, row j, slice k) -> LPS (21 - 3k, 0.55 i, -0.5 j) -> RAS (3k - 21, -0.55 i, -0.5 j)
    np.testing.assert_allclose(affine @ [2, 1, 7, 1], [0.0, -1.1, -0.5, 1], atol=1e-9)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [-21.0, 0.0, 0.0, 1], atol=1e-9)


def test_dicom_sagittal_series_is_resliced_to_axial_with_square_pixels() -> None:
    volume = read_dicom_files(sagittal_series())
    # RAS: x spans 8 slices 3 mm apart, y 6 columns of 0.55 mm, z 6 rows of 0.5 mm. So: 6 axial
    # slices (0.5 mm apart), each 6 rows (y) by 8 columns (x) of 0.55 x 3 mm pixels, resampled to
    # square 0.55 mm pixels: 6 x 44.
    assert volume.n_slices == 6 and volume.grid_shape == (6, 8) and volume.shape == (6, 44)
    assert volume.spacing_mm == pytest.approx((0.55, 0.55, 0.5))
    assert any("sagittal series, shown as axial slices" in note for note in volume.notes)
    assert any("resampled to 6x44" in note for note in volume.notes)
    assert volume.info[PLANE_INFO] == "sagittal"  # for a model-aware note (views.scan_kind.plane_note) ...
    assert not any("trained" in note for note in volume.notes)  # ... the reader knows no model
    # The markers (RAS z = -0.5: the 2nd most superior of 6 levels; y = -1.1: 3rd row from the
    # anterior top) lie at x = -21, ..., -3, 0: the patient's right (x = 0) on the viewer's left.
    assert all(np.count_nonzero(volume.slices[z]) == 0 for z in (0, 1, 2, 3, 5))
    level = volume.slices[4]
    assert np.count_nonzero(level[[0, 1, 3, 4, 5]]) == 0
    centres = [round((b + 0.5) * 44 / 8 - 0.5) for b in range(8)]  # nearest the original columns' centres
    assert [float(level[2, c]) for c in centres] == pytest.approx([100.0 + b for b in range(8)], abs=0.1)
    assert volume.affine is not None and volume.nifti_header is not None


def test_dicom_sagittal_or_coronal_series_of_few_slices_is_shown_as_stored() -> None:
    volume = read_dicom_files(sagittal_series(n=2))
    assert volume.n_slices == 2 and volume.shape == (6, 6) and volume.affine is None
    assert [int(s[1, 2]) for s in volume.slices] == [101, 100]  # along the normal: x = 3, then 0
    assert any("sagittal series, shown as stored: 2 slice(s) are too few" in note for note in volume.notes)


def test_a_sagittal_dicom_series_reads_as_the_same_axial_slices_as_its_nifti(tmp_path: Path) -> None:
    # Write a RAS volume (x, y, z) = (9, 5, 4) of 2.2 x 2 x 3 mm voxels as sagittal DICOM slices (one
    # per x): columns run along LPS +y, rows along -z, so pixel [j, i] of slice a is voxel
    # (a, 4 - i, 3 - j). Read back, it must show exactly what the NIfTI file of the same voxels shows.
    data = np.random.default_rng(0).integers(0, 1000, size=(9, 5, 4)).astype(np.int16)
    affine = np.diag([2.2, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-3.0, -5.0, -6.0]
    files = []
    for a in range(9):
        pixels = np.ascontiguousarray(data[a, ::-1, ::-1].T)  # (z rows, y columns)
        top = affine @ [a, 4, 3, 1]  # RAS of pixel [0, 0]
        position = (-top[0], -top[1], top[2])  # LPS
        files.append(
            (f"{a}.dcm", make_dicom(None, pixels, position, a + 1, orientation=(0, 1, 0, 0, 0, -1), spacing=(3.0, 2.0)))
        )
    dicom = read_dicom_files(files)
    nifti = read_nifti(save_nifti(nib.Nifti1Image(data, affine), tmp_path / "same.nii"))
    assert dicom.n_slices == nifti.n_slices == 4 and dicom.spacing_mm == pytest.approx(nifti.spacing_mm)
    for got, want in zip(dicom.slices, nifti.slices, strict=True):
        np.testing.assert_array_equal(got, want)
    # the series' first voxel (column 0, row 0 of the first slice along the normal, x = 0)
    np.testing.assert_allclose(dicom.affine @ [0, 0, 0, 1], affine @ [0, 4, 3, 1])


def test_dicom_resliced_mask_exports_to_the_series_grid(tmp_path: Path) -> None:
    volume = read_dicom_files(sagittal_series())
    masks = [image > 105.5 for image in volume.slices]  # the markers of slices x = 18 and 21 mm
    out = write_nifti_mask(masks, volume, tmp_path / "pred.nii.gz")
    written = nib.load(str(out))
    assert written.shape == (6, 6, 8)  # the series' own grid: column, row, slice
    np.testing.assert_allclose(written.affine, volume.affine)
    data = np.asanyarray(written.dataobj)
    # slices in position order along the normal: x = 21, 18, ... -> k = 0, 1 hold x = 21 and 18
    assert {tuple(v) for v in np.argwhere(data)} == {(2, 1, 0), (2, 1, 1)}


def test_dicom_coronal_series_is_named_in_the_notes() -> None:
    files = [
        (
            f"{n}.dcm",
            make_dicom(None, np.zeros((6, 6), np.uint16), (0.0, y, 0.0), instance=n, orientation=(1, 0, 0, 0, 0, -1)),
        )
        for n, y in enumerate(np.arange(8) * 3.0, start=1)
    ]
    assert any(note.startswith("This is a coronal series, shown as axial") for note in read_dicom_files(files).notes)


def test_dicom_falls_back_to_instance_number() -> None:
    files = []
    for k, instance in enumerate((3, 1, 2)):
        pixels = np.full((6, 6), instance, np.uint16)
        files.append((f"f{k}.dcm", make_dicom(None, pixels, None, instance=instance)))
    volume = read_dicom_files(files)
    assert [int(s[0, 0]) for s in volume.slices] == [1, 2, 3]
    assert any("InstanceNumber" in note for note in volume.notes)
    assert volume.spacing_mm == (0.5, 0.55, 2.0)  # from SliceThickness
    assert any("SliceThickness" in note for note in volume.notes)


def test_dicom_several_series_picks_the_largest() -> None:
    small = series_files(2, series_uid="1.2.3.4.1")
    large = series_files(4, series_uid="1.2.3.4.2")
    volume = read_dicom_files(small + large, label="the zip")
    assert volume.n_slices == 4
    assert any("2 series" in note and "largest" in note for note in volume.notes)


def test_dicom_missing_pixel_data() -> None:
    files = series_files(3)
    files[1] = ("broken.dcm", make_dicom(None, np.zeros((8, 10)), (0, 0, 99.0), 9, with_pixels=False))
    with pytest.raises(VolumeError, match="no pixel data"):
        read_dicom_files(files)


def test_dicom_mixed_sizes() -> None:
    files = [*series_files(2), ("other.dcm", make_dicom(None, np.zeros((16, 16)), (0, 0, 50.0), 7))]
    with pytest.raises(VolumeError, match=r"mixes slice sizes \(10x8, 16x16\)"):
        read_dicom_files(files)


def test_dicom_duplicate_positions() -> None:
    files = series_files(2)
    files.append(("dup.dcm", make_dicom(None, np.zeros((8, 10)), (0.0, 0.0, 10.0), 9)))
    with pytest.raises(VolumeError, match="share one slice position"):
        read_dicom_files(files)


def test_single_non_dicom_file_and_empty_zips() -> None:
    with pytest.raises(VolumeError, match=r"No DICOM images.*file is not DICOM"):
        open_volume(b"hello, I am a text file" * 10, name="scan.dcm")
    with pytest.raises(VolumeError, match="not a volume brainviewer can open"):
        open_volume(b"hello", name="notes.txt")
    with pytest.raises(VolumeError, match="holds no files"):
        read_dicom_zip(zip_bytes([]), name="empty.zip")
    with pytest.raises(VolumeError, match=r"No DICOM images in readme\.zip"):
        read_dicom_zip(zip_bytes([("README.md", b"# nothing here")]), name="readme.zip")
    with pytest.raises(VolumeError, match="not a valid zip"):
        read_dicom_zip(b"PK\x03\x04 but broken", name="bad.zip")
    with pytest.raises(VolumeError, match="empty"):
        read_dicom_zip(b"", name="zero.zip")


def test_open_volume_dispatches(tmp_path: Path) -> None:
    data, affine = ras_volume()
    nifti = save_nifti(nib.Nifti1Image(data, affine), tmp_path / "a.nii.gz")
    assert open_volume(nifti).source_kind == "nifti"
    assert open_volume(zip_bytes(series_files(2)), name="s.zip").n_slices == 2
    single = series_files(1)[0][1]
    volume = open_volume(single, name="one.dcm")
    assert volume.n_slices == 1 and volume.spacing_mm == (0.5, 0.55, 2.0)


def test_dicom_privacy(tmp_path: Path) -> None:
    import pydicom

    files = series_files(3)
    volume = read_dicom_files(files)
    fields = {k: v for k, v in vars(volume).items() if k not in ("slices", "masks")}
    text = repr(fields) + json.dumps(volume.info)
    for word in IDENTIFYING:
        assert word not in text
    ds = pydicom.dcmread(io.BytesIO(files[0][1]))
    summary = safe_dicom_summary(ds)
    assert set(summary) <= {*SAFE_DICOM_FIELDS, "TransferSyntax"}
    assert summary["Modality"] == "MR"
    assert summary["PixelSpacing"] == [0.5, 0.55]
    assert summary["MagneticFieldStrength"] == 1.5
    for word in IDENTIFYING:
        assert word not in json.dumps(summary)


# --------------------------------------------------------------------------------------------
# Datasets and PNG masks
# --------------------------------------------------------------------------------------------


def test_volume_from_dataset(phantom_dataset: Path) -> None:
    dataset = open_dataset(phantom_dataset)
    pid = dataset.patient_ids[1]
    volume = volume_from_dataset(dataset, pid)
    assert volume.n_slices == 8 and volume.shape == (64, 64)
    assert volume.spacing_mm is None and volume.voxel_mm3 is None
    assert volume.slice_paths[0] == f"{pid}/{pid}_1.png"
    assert volume.slice_names[-1] == f"{pid}_8"
    record = dataset.patients[pid][3]
    np.testing.assert_array_equal(volume.slices[3], dataset.load_image(record))
    np.testing.assert_array_equal(volume.masks[3], dataset.load_mask(record))
    with pytest.raises(KeyError, match="not in"):
        volume_from_dataset(dataset, "nobody")
    with_spacing = volume_from_dataset(dataset, pid, spacing_mm=(1.0, 1.0, 2.5))
    assert with_spacing.voxel_mm3 == 2.5


def test_volume_validates_shapes() -> None:
    with pytest.raises(VolumeError, match="no slices"):
        Volume("p", [])
    with pytest.raises(VolumeError, match="same size"):
        Volume("p", [np.zeros((8, 8)), np.zeros((8, 9))])
    with pytest.raises(VolumeError, match="mask 0"):
        Volume("p", [np.zeros((8, 8))], masks=[np.zeros((4, 4), bool)])


def test_display_window_is_shared_across_slices() -> None:
    dim = np.full((8, 8), 100.0, np.float32)
    bright = np.full((8, 8), 1000.0, np.float32)
    bright[0, 0] = 0.0
    volume = Volume("p", [dim, bright])
    # windowed over the volume, the dim slice stays dim (per-slice scaling would make it white)
    assert volume.display_image(0).max() < 128
    assert volume.display_image(1).max() == 255


def test_write_png_masks(tmp_path: Path) -> None:
    mask = np.zeros((8, 10), bool)
    mask[2:4, 3:7] = True
    paths = write_png_masks([mask, ~mask], ["p/a_mask", "p/b_mask"], tmp_path)
    assert [p.name for p in paths] == ["a_mask.png", "b_mask.png"]
    array = np.asarray(Image.open(paths[0]))
    assert array.dtype == np.uint8 and set(np.unique(array)) == {0, 255}
    np.testing.assert_array_equal(array > 0, mask)
    with pytest.raises(FileExistsError):
        write_png_masks([mask], ["p/a_mask"], tmp_path)
    with pytest.raises(ValueError, match="safe relative"):
        write_png_masks([mask], ["../escape"], tmp_path)
