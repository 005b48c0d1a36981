"""The Patients page offers a DICOM SEG of an uploaded DICOM series (and only then), built from the upload."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_dicom_seg import make_series
from tests.ui.test_app_patients import open_page

SEG_LABEL = "Predicted mask (DICOM SEG)"


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(f"series/{name}", data)
    return buffer.getvalue()


def _upload(at, files: list[tuple[str, bytes, str]]):
    from brainviewer.ui import patient_sources as ui
    from brainviewer.ui.state import PATIENT_UPLOAD_KEY

    at.radio(key="patient_source").set_value(ui.PATIENT_SOURCE_UPLOAD).run()
    at.file_uploader(key=PATIENT_UPLOAD_KEY).set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return [b.proto.label for b in at.get("download_button")]


@pytest.mark.usefixtures("app_env")
def test_a_dicom_zip_upload_offers_a_seg_and_a_nifti_upload_does_not(tmp_path: Path) -> None:
    import nibabel as nib

    at = open_page("pages/patients.py")
    labels = _upload(at, [("series.zip", _zip(make_series(rows=64, cols=64)), "application/zip")])
    assert SEG_LABEL in labels and "Predicted mask (NIfTI)" in labels

    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((64, 64, 4), np.float32), np.eye(4)), str(path))
    at = open_page("pages/patients.py")
    labels = _upload(at, [("scan.nii.gz", path.read_bytes(), "application/gzip")])
    assert SEG_LABEL not in labels and "Predicted mask (NIfTI)" in labels


def test_the_button_builds_the_seg_from_the_upload_every_time_it_is_pressed() -> None:
    import highdicom as hd

    from brainviewer.data.volumes import read_dicom_zip
    from brainviewer.ui.dicom_seg_download import _seg_bytes

    files = make_series()
    upload = [("series.zip", _zip(files))]
    volume = read_dicom_zip(upload[0][1], name="series.zip")
    masks = [np.asarray(image) >= 1000 for image in volume.slices]
    first, second = (_seg_bytes(masks, volume, upload, "tiny") for _ in range(2))  # the zip is opened afresh
    for data in (first, second):
        seg = hd.seg.segread(io.BytesIO(data))
        assert int(seg.NumberOfFrames) == len(files)
        assert int(seg.pixel_array.sum()) == len(files)  # one marker pixel per image
