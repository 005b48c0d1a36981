"""Exports: masks ZIP re-imports as a dataset, CSV contents, HTML report, privacy, no overwrites."""

from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.data.volumes import Volume, read_dicom_files, read_nifti, volume_from_dataset
from brainviewer.evaluation.evaluate import evaluate_probs
from brainviewer.views.exports import (
    INDEX_CSV,
    PATIENT_COLUMNS,
    README_NAME,
    evaluation_json,
    evaluation_patients_csv,
    evaluation_slices_csv,
    export_layout,
    masks_zip_bytes,
    patient_report_html,
    patients_csv,
    save_new,
    slices_csv,
)
from brainviewer.views.patient import predicted_masks, summarise_patient
from tests.data.test_volumes import IDENTIFYING, series_files

WHEN = datetime(2024, 5, 6, 7, 8, tzinfo=timezone.utc)


def fake_prediction(volume: Volume) -> list[np.ndarray]:
    """A deterministic 'prediction' different from any ground truth: a square that grows with the slice index."""
    masks = []
    for i in range(volume.n_slices):
        mask = np.zeros(volume.shape, bool)
        mask[2 : 4 + i, 3 : 5 + i] = True
        masks.append(mask)
    return masks


def unzip(data: bytes, folder: Path) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)
        return archive.namelist()


def zip_text(data: bytes) -> bytes:
    """All members of a ZIP, decompressed and concatenated (to search for leaked text)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return b"".join(archive.namelist()[i].encode() + archive.read(n) for i, n in enumerate(archive.namelist()))


def test_kaggle_zip_reimports_over_the_images(phantom_dataset: Path, tmp_path: Path) -> None:
    dataset = open_dataset(phantom_dataset)
    pid = dataset.patient_ids[0]
    volume = volume_from_dataset(dataset, pid)
    pred = fake_prediction(volume)
    data = masks_zip_bytes(volume, pred, model_name="tiny", threshold=0.5, created=WHEN)
    # a copy of the patient's images only (no ground truth), then the ZIP unpacked into it
    copy = tmp_path / "copy"
    (copy / pid).mkdir(parents=True)
    for record in dataset.patients[pid]:
        shutil.copy(record.image_path, copy / pid / record.image_path.name)
    names = unzip(data, copy)
    assert f"{pid}/{pid}_1_mask.png" in names and README_NAME in names
    assert not any(n.endswith(".png") and not n.endswith("_mask.png") for n in names)  # no images by default
    again = open_dataset(copy)
    assert again.kind == "kaggle_3m" and again.patient_ids == [pid]
    for record, expected in zip(again.patients[pid], pred, strict=True):
        np.testing.assert_array_equal(again.load_mask(record), expected)
    readme = (copy / README_NAME).read_text()
    assert "tiny" in readme and "0.50" in readme and "COPY" in readme


def test_kaggle_zip_with_images_is_a_dataset_anywhere(phantom_dataset: Path, tmp_path: Path) -> None:
    dataset = open_dataset(phantom_dataset)
    pid = dataset.patient_ids[2]
    volume = volume_from_dataset(dataset, pid)
    pred = fake_prediction(volume)
    unzip(masks_zip_bytes(volume, pred, include_images=True), tmp_path)
    again = open_dataset(tmp_path)
    records = again.patients[pid]
    assert len(records) == volume.n_slices
    for k, record in enumerate(records):
        np.testing.assert_array_equal(again.load_image(record), volume.slices[k])
        np.testing.assert_array_equal(again.load_mask(record), pred[k])


def test_image_mask_folders_zip(tmp_path: Path) -> None:
    root = tmp_path / "figs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("7", "12"):
        Image.fromarray(np.full((16, 20), int(name), np.uint8)).save(root / "images" / f"{name}.jpg")
        Image.fromarray(np.zeros((16, 20), np.uint8)).save(root / "masks" / f"{name}.png")
    dataset = open_dataset(root)
    volume = volume_from_dataset(dataset, "12")
    images, masks, include = export_layout(volume)
    assert (images, masks, include) == (["images/12.jpg"], ["masks/12.png"], False)
    pred = fake_prediction(volume)
    target = tmp_path / "restored"
    shutil.copytree(root / "images", target / "images")  # the images only
    unzip(masks_zip_bytes(volume, pred), target)
    again = open_dataset(target)
    record = again.patients["12"][0]
    np.testing.assert_array_equal(again.load_mask(record), pred[0])
    assert again.load_mask(again.patients["7"][0]) is None  # only the exported patient got a mask


def test_data_mask_csv_zip_has_an_index(tmp_path: Path) -> None:
    root = tmp_path / "csvset"
    (root / "scans").mkdir(parents=True)
    (root / "truth").mkdir()
    rows = ["patient_id,image_path,mask_path,mask"]
    for n in (1, 2, 3):
        Image.fromarray(np.full((12, 12, 3), 20 * n, np.uint8)).save(root / "scans" / f"p_{n}.png")
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "truth" / f"p_{n}.png")
        rows.append(f"p,scans/p_{n}.png,truth/p_{n}.png,0")
    (root / "data_mask.csv").write_text("\n".join(rows) + "\n")
    dataset = open_dataset(root / "data_mask.csv")
    volume = volume_from_dataset(dataset, "p")
    pred = fake_prediction(volume)
    names = unzip(masks_zip_bytes(volume, pred), root)
    assert INDEX_CSV in names and "scans/p_2_mask.png" in names
    again = open_dataset(root / INDEX_CSV)
    assert [r.image_path.name for r in again.patients["p"]] == ["p_1.png", "p_2.png", "p_3.png"]
    for record, expected in zip(again.patients["p"], pred, strict=True):
        np.testing.assert_array_equal(again.load_mask(record), expected)
    index = list(csv.DictReader(io.StringIO((root / INDEX_CSV).read_text())))
    assert [r["mask"] for r in index] == ["1", "1", "1"]


def test_nifti_zip_is_a_kaggle_dataset(tmp_path: Path) -> None:
    data = np.zeros((12, 10, 3), np.float32)
    data[1, 2, :] = [100.0, 200.0, 300.0]
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "scan.nii.gz"))
    volume = read_nifti(tmp_path / "scan.nii.gz")
    pred = fake_prediction(volume)
    unzip(masks_zip_bytes(volume, pred), tmp_path / "out")
    again = open_dataset(tmp_path / "out")
    assert again.kind == "kaggle_3m" and again.patient_ids == [volume.patient_id]
    for k, record in enumerate(again.patients[volume.patient_id]):
        np.testing.assert_array_equal(again.load_image(record), volume.display_image(k))
        np.testing.assert_array_equal(again.load_mask(record), pred[k])


def _hand_summary() -> tuple[Volume, list[np.ndarray]]:
    truth = [np.zeros((4, 4), bool) for _ in range(3)]
    truth[1][1:3, 1:3] = True
    truth[2][0, 0:2] = True
    pred = [np.zeros((4, 4), bool) for _ in range(3)]
    pred[0][3, 3] = True
    pred[1][1:3, 1:3] = True
    volume = Volume("hand", [np.full((4, 4), 80, np.uint8)] * 3, masks=truth, spacing_mm=(0.5, 0.5, 2.0))
    return volume, pred


def test_slices_and_patients_csv() -> None:
    volume, pred = _hand_summary()
    probs = [m.astype(np.float32) * 0.8 for m in pred]
    summary = summarise_patient(volume, pred, probs, threshold=0.5)
    rows = list(csv.DictReader(io.StringIO(slices_csv(summary, volume))))
    assert [r["slice"] for r in rows] == ["1", "2", "3"]
    assert rows[0] == {
        "patient_id": "hand",
        "slice": "1",
        "name": "slice_001",
        "truth_area_px": "0",
        "pred_area_px": "1",
        "dice": "0.000000",
        "max_prob": "0.800000",
        "truth_tumour": "0",
        "pred_tumour": "1",
    }
    assert rows[1]["dice"] == "1.000000" and rows[2]["truth_area_px"] == "2" and rows[2]["max_prob"] == "0.000000"
    (patient,) = csv.DictReader(io.StringIO(patients_csv([summary])))
    assert list(patient) == list(PATIENT_COLUMNS)
    assert patient["volume_dice"] == f"{8 / 11:.6f}"
    assert patient["gt_voxels"] == "6" and patient["pred_voxels"] == "5"
    assert patient["gt_volume_mm3"] == "3.000000" and patient["pred_volume_mm3"] == "2.500000"
    assert patient["tumour_slice_dice"] == "0.500000" and patient["threshold"] == "0.500000"


def test_evaluation_csv_and_json(phantom_dataset: Path) -> None:
    dataset = open_dataset(phantom_dataset).subset(["PHANTOM_03_20000101"])
    report = evaluate_probs(
        dataset, lambda scans: [np.zeros(s.shape[:2], np.float32) for s in scans], [(0.5, 0, False)]
    )[0]
    (row,) = csv.DictReader(io.StringIO(evaluation_patients_csv(report)))
    # nothing predicted: Dice 0 on the volume, 0 on the 4 tumour slices, no false positives
    assert row["patient_id"] == "PHANTOM_03_20000101" and row["n_slices"] == "8" and row["n_tumour_slices"] == "4"
    assert row["volume_dice"] == "0.000000" and row["fp_rate"] == "0.000000" and row["pred_voxels"] == "0"
    assert '"mean_volume_dice": 0.0' in evaluation_json(report, {"model": "tiny"})
    text = evaluation_slices_csv([{"patient_id": "a", "slice": 1, "dice": 0.25, "flag": True}])
    assert text == "patient_id,slice,dice,flag\na,1,0.250000,1\n"
    assert evaluation_slices_csv([]) == ""


def test_html_report_holds_the_metrics() -> None:
    volume, pred = _hand_summary()
    summary = summarise_patient(volume, pred, threshold=0.5)
    page = patient_report_html(
        volume,
        summary,
        pred,
        model_name="lgg-unet-resnet18",
        threshold=0.5,
        created=WHEN,
        note="SYNTHETIC PHANTOM: not a real scan",
    )
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Patient hand" in page
    assert "lgg-unet-resnet18" in page and "threshold 0.50" in page and "2024-05-06 07:08 UTC" in page
    assert "<th>Volume Dice</th><td>0.727</td>" in page  # 8/11
    assert "<td>0.500</td>" in page  # mean tumour-slice Dice
    assert "6 voxels = 3.0 mm³ (0.00 mL)" in page and "5 voxels = 2.5 mm³" in page
    assert "SYNTHETIC PHANTOM" in page
    # one key slice (slice 2 is both the largest truth and prediction): scan, truth, prediction
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    assert "Slice 2 of 3: largest ground-truth tumour, largest predicted tumour" in page
    assert "http" not in page.replace("<!DOCTYPE html>", "")  # self-contained: nothing fetched


def test_html_escapes_text() -> None:
    volume = Volume("<script>x</script>", [np.zeros((4, 4), np.uint8)])
    pred = [np.zeros((4, 4), bool)]
    page = patient_report_html(volume, summarise_patient(volume, pred), pred, "m&m", 0.4, created=WHEN)
    assert "<script>x" not in page and "&lt;script&gt;" in page and "m&amp;m" in page


def test_dicom_exports_never_leak_identifying_fields() -> None:
    volume = read_dicom_files(series_files(3))
    pred = fake_prediction(volume)
    summary = summarise_patient(volume, pred, threshold=0.5)
    outputs = {
        "zip": zip_text(masks_zip_bytes(volume, pred, model_name="m", threshold=0.5)),
        "html": patient_report_html(volume, summary, pred, "m", 0.5).encode(),
        "slices": slices_csv(summary, volume).encode(),
        "patients": patients_csv([summary]).encode(),
    }
    for kind, data in outputs.items():
        for word in IDENTIFYING:
            assert word.encode() not in data, f"{word} leaked into the {kind} export"
    assert volume.patient_id.encode() in outputs["html"]


def test_save_new_never_overwrites(tmp_path: Path) -> None:
    target = save_new(tmp_path / "sub" / "report.html", "<p>one</p>")
    assert target.read_text() == "<p>one</p>"
    with pytest.raises(FileExistsError):
        save_new(target, b"two")
    assert target.read_text() == "<p>one</p>"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary files left


def test_zip_checks_mask_count_and_shape(phantom_dataset: Path) -> None:
    volume, pred = _hand_summary()
    with pytest.raises(ValueError, match="2 masks for 3 slices"):
        masks_zip_bytes(volume, pred[:2])
    with pytest.raises(ValueError, match="mask 0"):
        masks_zip_bytes(volume, [np.zeros((5, 5), bool)] * 3)
    assert predicted_masks([np.zeros((4, 4))], 0.5)[0].dtype == bool


def test_dicom_zip_holds_the_windowed_slices_the_model_saw(tmp_path: Path) -> None:
    from brainviewer.views.patient import model_inputs

    volume = read_dicom_files(series_files(3))
    assert volume.slices[0].dtype == np.uint16
    pred = fake_prediction(volume)
    unzip(masks_zip_bytes(volume, pred), tmp_path)
    again = open_dataset(tmp_path)
    for k, record in enumerate(again.patients[volume.patient_id]):
        np.testing.assert_array_equal(again.load_image(record), model_inputs(volume)[k])


def test_html_report_names_the_real_source_and_draws_a_3_channel_scan_as_one_gray_channel() -> None:
    """A phantom written in the kaggle_3m layout says it is a phantom, not 'source kaggle_3m'; a 3-channel
    scan is drawn as its FLAIR channel in grayscale (as the pages do), so a red channel never reads as truth."""
    scan = np.zeros((8, 8, 3), np.uint8)
    scan[..., 0], scan[..., 1], scan[..., 2] = 10, 200, 90  # pre-contrast, FLAIR, post-contrast
    truth = np.zeros((8, 8), bool)
    volume = Volume("PHANTOM_00", [scan], masks=[truth], source_kind="kaggle_3m")
    pred = [np.zeros((8, 8), bool)]
    summary = summarise_patient(volume, pred)
    page = patient_report_html(volume, summary, pred, "m", 0.5, created=WHEN, source="SYNTHETIC PHANTOM")
    assert "source SYNTHETIC PHANTOM" in page and "source kaggle_3m" not in page
    assert "Scan (channel 2 of 3, grayscale)" in page
    first = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)[0]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))).convert("RGB"))
    assert (picture == picture[..., :1]).all()  # gray: R = G = B
    assert "source kaggle_3m" in patient_report_html(volume, summary, pred, "m", 0.5, created=WHEN)
    rgb = patient_report_html(volume, summary, pred, "m", 0.5, created=WHEN, display_channel=None)
    assert "Scan (channel" not in rgb
