"""``python -m brainviewer compare-models`` on the phantom dataset with two tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from brainviewer.cli import main as cli_main
from brainviewer.data.datasets import open_dataset
from brainviewer.evaluation.compare_models import compare_models
from brainviewer.evaluation.compare_run import evaluate_weights, report_scores
from brainviewer.model.segmenter import Segmenter


@pytest.fixture(scope="module")
def two_models(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny model and a copy that cuts its probabilities at 0.6 (another prediction, same network)."""
    other = tmp_path_factory.mktemp("other") / "tiny-cut"
    shutil.copytree(tiny_weights, other)
    prep = json.loads((other / "preprocessing.json").read_text())
    prep["threshold"] = 0.6
    (other / "preprocessing.json").write_text(json.dumps(prep))
    return [tiny_weights, other]


def test_compare_models_writes_what_evaluate_and_compare_models_give(
    phantom_dataset: Path, two_models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, table = tmp_path / "cmp.json", tmp_path / "cmp.csv"
    argv = ["compare-models", str(phantom_dataset), *map(str, two_models), "--device", "cpu", "--out", str(out)]
    assert cli_main([*argv, "--csv", str(table)]) == 0
    data = json.loads(out.read_text())

    dataset = open_dataset(phantom_dataset)
    reports = {f.name: evaluate_weights(dataset, Segmenter.from_folder(f, device="cpu")) for f in two_models}
    expected = compare_models({label: report_scores(r, "volume_dice") for label, r in reports.items()})
    assert data["models"] == ["tiny", "tiny-cut"] and data["reference"] == "tiny"
    assert data["pairs"] == json.loads(json.dumps(expected.to_json()["pairs"]))
    assert data["evaluations"]["tiny-cut"]["threshold"] == 0.6
    assert data["evaluations"]["tiny"]["mean_volume_dice"] == pytest.approx(reports["tiny"].mean_dice)
    assert len(data["patients"]) == len(dataset.patient_ids)
    assert table.read_text() == expected.to_csv()
    assert "tiny-cut - tiny (volume_dice, 6 patients): mean" in capsys.readouterr().out

    assert cli_main(argv) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["compare-models", str(phantom_dataset), str(two_models[0])]) == 2
    assert "at least two" in capsys.readouterr().err
