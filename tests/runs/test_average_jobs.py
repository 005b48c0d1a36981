"""Averaging jobs launched from the fine-tuning page: a detached process, read back from disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import split_patients
from brainviewer.model.segmenter import load_model
from brainviewer.runs import averages as average_jobs
from tests.training.test_average import tiny_folder


def wait_for(runs_dir: Path, name: str, timeout: float = 120.0) -> average_jobs.AverageJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = average_jobs.read_job(average_jobs.jobs_dir(runs_dir) / f"{name}.json")
        assert job is not None
        if job.status != average_jobs.RUNNING:
            return job
        time.sleep(0.5)
    raise AssertionError(f"average job {name} still running after {timeout} s")


def sources(tmp_path: Path, phantom_dataset: Path) -> list[Path]:
    split = split_patients(open_dataset(phantom_dataset).patient_ids, val_count=2, seed=1)
    folders = [tiny_folder(tmp_path / "runs", f"r{i}", i) for i in range(2)]
    for folder in folders:
        split.save(folder / "split.json")
        (folder / "train_config.json").write_text(json.dumps({"data": str(phantom_dataset)}))
    return folders


def test_average_job_writes_a_scored_weights_folder(tmp_path: Path, phantom_dataset: Path) -> None:
    a, b = sources(tmp_path, phantom_dataset)
    runs_dir, weights_dir = tmp_path / "runs", tmp_path / "weights"
    assert average_jobs.default_data([a, b]) == str(phantom_dataset)
    job = average_jobs.start_average([a, b], "soup", str(phantom_dataset), runs_dir, weights_dir)
    assert job.out == weights_dir / "soup" and job.sources == [str(a), str(b)]
    done = wait_for(runs_dir, "soup")
    assert done.status == average_jobs.DONE, done.log.read_text()
    assert done.summary is not None and done.summary["patients"] == 2
    assert load_model(done.out)[1].threshold == done.summary["threshold"]
    assert [j.name for j in average_jobs.list_averages(runs_dir)] == ["soup"]
    # the name is now taken: nothing is overwritten
    with pytest.raises(ValueError, match="already exists"):
        average_jobs.start_average([a, b], "soup", None, runs_dir, weights_dir)


def test_a_failed_average_job_says_why(tmp_path: Path, phantom_dataset: Path) -> None:
    a, b = sources(tmp_path, phantom_dataset)
    (b / "split.json").unlink()  # no common split: the dataset cannot be used to choose a threshold
    runs_dir = tmp_path / "runs"
    average_jobs.start_average([a, b], "soup", str(phantom_dataset), runs_dir, tmp_path / "weights")
    failed = wait_for(runs_dir, "soup")
    assert failed.status == average_jobs.FAILED
    assert "do not share one split.json" in failed.error
    assert not (tmp_path / "weights" / "soup").exists()
    # a failed job's name can be used again, here without data
    average_jobs.start_average([a, b], "soup", None, runs_dir, tmp_path / "weights")
    assert wait_for(runs_dir, "soup").status == average_jobs.DONE


def test_start_average_refuses_before_launching(tmp_path: Path, phantom_dataset: Path) -> None:
    a, b = sources(tmp_path, phantom_dataset)
    other = tiny_folder(tmp_path, "mobile", 2, encoder="mobilenet_v2")
    cases = [
        ([a], "soup", "at least two"),
        ([a, a], "soup", "chosen twice"),
        ([a, other], "soup", "another architecture"),
        ([a, tmp_path / "missing"], "soup", "not a complete weights folder"),
        ([a, b], "../escape", "not allowed"),
    ]
    for folders, name, message in cases:
        with pytest.raises(ValueError, match=message):
            average_jobs.start_average(folders, name, None, tmp_path / "runs", tmp_path / "weights")
    assert average_jobs.list_averages(tmp_path / "runs") == []
    assert average_jobs.default_data([a, other]) == ""
