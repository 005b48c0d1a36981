"""Runs that learn from the corrections dataset (brainviewer.runs.corrections): a tiny run starts and trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainviewer import runs
from brainviewer.data.corrections import SourceScan, save_correction
from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.runs.corrections import (
    base_training_dataset,
    corrections_config,
    corrections_run_info,
    describe,
    discard_mix,
)
from tests.runs.test_runs import dirs, small_base, tiny_config, wait_for  # noqa: F401 (fixtures)


def correct_patients(root: Path, dataset_path: Path, patients: list[str]) -> None:
    """Save a 'correction' of every slice of ``patients``: the truth with a 3x3 square added."""
    dataset = open_dataset(dataset_path)
    for patient in patients:
        for record in dataset.patients[patient]:
            image, truth = dataset.load_image(record), dataset.load_mask(record)
            corrected = truth.copy()
            corrected[2:5, 2:5] = True
            source = SourceScan(record.image_path.name, patient, str(record.image_path), "dataset")
            save_correction(root, source, image, truth, corrected, {"label": "t", "id": "t"}, 0.5)


def settings(base: Path, **changes):
    return tiny_config(Path("unused"), base, **changes)


def test_a_short_run_on_the_corrections_alone_starts_and_trains(dirs, phantom_dataset, small_base, tmp_path):  # noqa: F811
    runs_dir, _ = dirs
    root = tmp_path / "corrections"
    patients = open_dataset(phantom_dataset).patient_ids[:3]
    correct_patients(root, phantom_dataset, patients)
    config = corrections_config(root, str(small_base), None, settings(small_base, run_name="from-corrections"))
    assert config.split_file == "" and config.init_weights == str(small_base)
    run = runs.start_run(config, runs_dir)
    assert run.status == "running"
    done = wait_for(run.path, lambda r: r.status == "finished", what="corrections run finished")
    assert done.has_best
    split = json.loads((run.path / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == sorted(patients)  # split by patient, corrected patients only
    info = corrections_run_info(done.config)
    assert info is not None and info["dataset"] is None and sorted(info["corrected_patients"]) == sorted(patients)
    assert "alone" in describe(info)


def test_mixed_with_a_dataset_the_corrected_patient_trains_and_held_out_ones_stay_held_out(
    phantom_dataset,
    small_base,  # noqa: F811
    tmp_path,
):
    ids = open_dataset(phantom_dataset).patient_ids
    base_split = Split(train=ids[2:], val=ids[:2], mode="random", seed=42)
    base_split.save(small_base / "split.json")
    try:
        root = tmp_path / "corrections"
        correct_patients(root, phantom_dataset, [ids[0]])  # a patient the base model held out
        config = corrections_config(root, str(small_base), phantom_dataset, settings(small_base, epochs=1))
        config, split = runs.prepare_config(config)
        assert ids[0] in split.train and split.val == [ids[1]]
        assert corrections_run_info(config)["dataset"] == str(phantom_dataset.resolve())
    finally:
        (small_base / "split.json").unlink()


def test_corrections_of_one_patient_alone_cannot_be_split(tmp_path, phantom_dataset):
    root = tmp_path / "corrections"
    correct_patients(root, phantom_dataset, open_dataset(phantom_dataset).patient_ids[:1])
    with pytest.raises(ValueError, match="mix them with a dataset"):
        corrections_config(root, "", None)
    assert corrections_run_info(tiny_config(phantom_dataset, Path("x"))) is None  # an ordinary run


def test_the_corrections_folder_itself_is_refused_as_the_dataset_to_mix_in_before_anything_is_written(
    tmp_path, phantom_dataset
):
    root = tmp_path / "corrections"
    correct_patients(root, phantom_dataset, open_dataset(phantom_dataset).patient_ids[:2])
    with pytest.raises(ValueError, match="is the corrections folder itself"):
        corrections_config(root, "", root)
    assert not (root / ".mixes").exists()


def test_a_mix_that_could_not_start_is_removed(tmp_path, phantom_dataset):
    root = tmp_path / "corrections"
    correct_patients(root, phantom_dataset, open_dataset(phantom_dataset).patient_ids[:2])
    config = corrections_config(root, "", phantom_dataset)
    assert Path(config.data).is_file()
    discard_mix(config, root)
    assert not Path(config.data).parent.exists() and root.is_dir()
    discard_mix(tiny_config(phantom_dataset, Path("x")), root)  # not a mix: the dataset is left alone
    assert phantom_dataset.is_dir()


def test_the_base_models_training_dataset_when_its_records_name_an_existing_folder(tmp_path, phantom_dataset):
    weights = tmp_path / "w"
    weights.mkdir()
    assert base_training_dataset(weights) == "" and base_training_dataset("") == ""
    (weights / "train_config.json").write_text(json.dumps({"data": str(tmp_path / "gone")}))
    assert base_training_dataset(weights) == ""  # not a folder that exists
    (weights / "train_config.json").write_text(json.dumps({"data": str(phantom_dataset)}))
    assert base_training_dataset(weights) == str(phantom_dataset)
    (weights / "train_config.json").unlink()
    (weights / "average.json").write_text(json.dumps({"data": str(phantom_dataset), "sources": []}))
    assert base_training_dataset(weights) == str(phantom_dataset)
