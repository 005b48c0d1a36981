"""The corrections dataset (brainviewer.data.corrections): saves never overwrite, provenance, training indexes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainviewer.data.corrections import (
    CORRECTIONS_ENV,
    SourceScan,
    corrections_root,
    latest_corrections,
    read_records,
    save_correction,
    write_training_index,
)
from brainviewer.data.datasets import open_dataset
from brainviewer.data.io import read_image, read_mask
from brainviewer.data.split import Split, load_split_file

MODEL = {"label": "tiny", "id": "tiny@0@cpu"}


def scan_and_masks(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    predicted = np.zeros((32, 32), bool)
    predicted[4:10, 4:10] = True
    corrected = predicted.copy()
    corrected[4:6, 4:10] = False  # 12 removed
    corrected[20:23, 20:23] = True  # 9 added
    return image, predicted, corrected


def test_the_folder_is_a_setting_with_a_working_directory_default(monkeypatch, tmp_path):
    monkeypatch.delenv(CORRECTIONS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert corrections_root() == tmp_path / "corrections"
    monkeypatch.setenv(CORRECTIONS_ENV, str(tmp_path / "elsewhere"))
    assert corrections_root() == tmp_path / "elsewhere"


def test_a_save_writes_scan_mask_and_provenance_in_a_layout_the_app_opens(tmp_path):
    image, predicted, corrected = scan_and_masks()
    source = SourceScan("TCGA_CS_4943_20000902_16.tif", "TCGA_CS_4943_20000902", "/data/x.tif", "dataset")
    saved = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.4)
    assert saved.scan == tmp_path / "TCGA_CS_4943_20000902" / "TCGA_CS_4943_20000902_16.png"
    assert (read_image(saved.scan) == image).all()
    assert (read_mask(saved.mask) == corrected).all()
    record = json.loads(saved.record_path.read_text())
    assert record["pixels"] == {"predicted": 36, "corrected": 33, "added": 9, "removed": 12}
    assert record["source"]["name"] == source.name and record["source"]["path"] == "/data/x.tif"
    assert len(record["source"]["sha256"]) == 64 and record["model"] == MODEL and record["threshold"] == 0.4
    assert record["saved_at"].endswith("+00:00")
    dataset = open_dataset(tmp_path)
    assert dataset.kind == "kaggle_3m" and dataset.patient_ids == ["TCGA_CS_4943_20000902"]
    assert (dataset.load_mask(dataset.records[0]) == corrected).all()


def test_saving_the_same_scan_again_keeps_one_slice_and_moves_the_earlier_save_to_history(tmp_path):
    image, predicted, corrected = scan_and_masks()
    source = SourceScan("case_3.png")
    first = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.5)
    before = {p.name[len("case_3") :]: p.read_bytes() for p in (first.scan, first.mask, first.record_path)}
    second = save_correction(tmp_path, source, image, predicted, predicted, MODEL, 0.5)
    assert not second.unchanged
    assert (second.scan, second.mask) == (first.scan, first.mask)  # the slice keeps its own name
    assert (read_mask(second.mask) == predicted).all()
    history = first.scan.parent / ".history"
    # nothing lost: the earlier save's files, byte for byte, under <name>-v1
    assert {p.name: p.read_bytes() for p in history.iterdir()} == {f"case_3-v1{k}": v for k, v in before.items()}
    assert second.record["previous"] == {
        "scan": ".history/case_3-v1.png",
        "mask": ".history/case_3-v1_mask.png",
        "record": ".history/case_3-v1.json",
    }
    assert second.record["version"] == 2
    third = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.5)
    assert third.record["previous"]["record"] == ".history/case_3-v2.json" and third.record["version"] == 3
    assert len(list(history.iterdir())) == 6
    # the folder opens as a dataset of one slice (the history is hidden), and training uses that slice
    dataset = open_dataset(tmp_path)
    assert len(dataset.records) == 1 and (dataset.load_mask(dataset.records[0]) == corrected).all()
    (newest,) = latest_corrections(tmp_path)
    assert newest.image_path == third.scan and len(read_records(tmp_path)) == 1


def test_a_save_identical_to_the_saved_mask_writes_nothing(tmp_path):
    image, predicted, corrected = scan_and_masks()
    source = SourceScan("case_3.png")
    first = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.5)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.5)
    assert again.unchanged and again.mask == first.mask and again.record_path == first.record_path
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_a_folder_saved_with_v2_names_still_trains_on_the_newest_version(tmp_path):
    image, predicted, corrected = scan_and_masks()
    source = SourceScan("case_3.png")
    first = save_correction(tmp_path, source, image, predicted, corrected, MODEL, 0.5)
    record = {**first.record, "scan": "case_3-v2.png", "mask": "case_3-v2_mask.png", "version": 2}
    record["saved_at"] = "2999-01-01T00:00:00+00:00"
    folder = first.scan.parent
    (folder / "case_3-v2.png").write_bytes(first.scan.read_bytes())
    (folder / "case_3-v2_mask.png").write_bytes(first.mask.read_bytes())
    (folder / "case_3-v2.json").write_text(json.dumps(record))
    (newest,) = latest_corrections(tmp_path)
    assert newest.image_path.name == "case_3-v2.png"


def test_a_mask_of_another_size_is_refused_with_both_sizes(tmp_path):
    image, predicted, corrected = scan_and_masks()
    with pytest.raises(ValueError, match=r"\(16, 32\).*\(32, 32\)"):
        save_correction(tmp_path, SourceScan("a.png"), image, predicted, corrected[:16], MODEL, 0.5)
    assert not any(tmp_path.rglob("*.png"))


def test_a_16_bit_colour_or_float_scan_is_kept_losslessly_as_tiff(tmp_path):
    image = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    _, predicted, corrected = scan_and_masks()
    saved = save_correction(tmp_path, SourceScan("vol_5"), image, predicted, corrected, MODEL, None)
    assert saved.scan.suffix == ".tif" and (read_image(saved.scan) == image).all()


def test_training_index_alone_and_mixed_keep_the_corrected_patients_in_training(tmp_path, phantom_dataset):
    image, predicted, corrected = scan_and_masks()
    root = tmp_path / "corrections"
    dataset = open_dataset(phantom_dataset)
    corrected_patient = dataset.patient_ids[0]
    save_correction(root, SourceScan("s_1.png", corrected_patient), image, predicted, corrected, MODEL, 0.5)
    save_correction(root, SourceScan("other_2.png"), image, predicted, corrected, MODEL, 0.5)

    alone = write_training_index(root)
    assert alone.split_file is None and set(alone.corrected_patients) == {corrected_patient, "other"}
    assert open_dataset(alone.csv).patient_ids == alone.corrected_patients
    assert open_dataset(root).patient_ids == alone.corrected_patients  # the mix folder is hidden from the layout

    base = Split(train=dataset.patient_ids[2:], val=dataset.patient_ids[:2], mode="random", seed=42)
    mixed = write_training_index(root, phantom_dataset, base)
    mixed_data = open_dataset(mixed.csv)
    assert set(mixed_data.patient_ids) == set(dataset.patient_ids) | {"other"}
    assert len(mixed_data.patients[corrected_patient]) == 1  # only its corrected slice
    corrected_only = open_dataset(json.loads((mixed.csv.parent / "mix.json").read_text())["corrected_index"])
    assert set(corrected_only.patient_ids) == {corrected_patient, "other"} and len(corrected_only) == 2
    split = load_split_file(mixed.split_file)
    assert corrected_patient in split.train and "other" in split.train
    assert split.val == [dataset.patient_ids[1]]  # the base's other held-out patient stays held out


def test_training_index_without_corrections_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="correct a mask"):
        write_training_index(tmp_path)


def test_saved_corrections_are_readable_like_other_files_the_app_writes(tmp_path):
    import os

    image, predicted, corrected = scan_and_masks()
    old = os.umask(0o022)
    try:
        saved = save_correction(tmp_path, SourceScan("case_3.png"), image, predicted, corrected, MODEL, 0.5)
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in (saved.scan, saved.mask, saved.record_path)} == {0o644}
