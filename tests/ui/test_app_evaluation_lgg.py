"""On real LGG patients the Evaluation page and ``python -m brainviewer evaluate`` give the same scores.

Three held-out patients of the default model (the ones with fewest slices, to keep the test short), as a
``data_mask.csv`` in a temporary folder that both read. Skips without the shared data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from brainviewer.cli import main as cli_main
from brainviewer.data.datasets import open_dataset, write_data_mask_csv
from brainviewer.data.split import Split
from brainviewer.views.dataset_evaluation import score_summary_rows
from tests.ui.test_app_patients import metric_values, open_page

ROOT = Path(__file__).resolve().parents[2]
LGG_WEIGHTS = ROOT / "weights" / "lgg-unet-resnet18"


def dataframe_with(at, column: str):
    """The one dataframe on the page with ``column``."""
    (frame,) = [d.value for d in at.dataframe if column in d.value.columns]
    return frame


@pytest.fixture
def lgg_subset(lgg_root: Path, tmp_path: Path) -> Path:
    """A data_mask.csv of the 3 shortest validation patients of the default model."""
    if not (LGG_WEIGHTS / "model.safetensors").is_file():
        pytest.skip(f"no weights at {LGG_WEIGHTS}")
    dataset = open_dataset(lgg_root)
    val = [p for p in Split.load(LGG_WEIGHTS / "split.json").val if p in dataset.patients]
    shortest = sorted(val, key=lambda p: (len(dataset.patients[p]), p))[:3]
    return write_data_mask_csv(dataset.subset(shortest), tmp_path / "data" / "data_mask.csv", relative=False)


def test_the_evaluation_page_and_the_evaluate_command_agree_on_lgg(
    lgg_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st

    out = tmp_path / "cli"
    assert (
        cli_main(
            [
                "evaluate",
                str(lgg_subset),
                "--weights",
                str(LGG_WEIGHTS),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    cli = json.loads((out / "evaluation.json").read_text())
    with (out / "per_patient.csv").open() as f:
        cli_rows = {row["patient_id"]: row for row in csv.DictReader(f)}

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(LGG_WEIGHTS))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(lgg_subset))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = open_page("pages/evaluation.py")
    assert not at.exception, at.exception
    assert at.toggle(key="eval_held_out").value  # the 3 patients are the model's held-out ones
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception

    cards = metric_values(at)
    assert cards["Mean volume Dice"] == f"{cli['summary']['mean_volume_dice']:.3f}"
    assert cards["Micro Dice"] == f"{cli['summary']['micro_dice']:.3f}"
    summary_table = dataframe_with(at, "mean ± SD")
    assert summary_table.to_dict("records") == score_summary_rows(cli["scores"])
    assert list(summary_table["score"]) == [
        "Dice",
        "sensitivity",
        "precision",
        "volume similarity",
        "HD95 (px)",
        "surface Dice @ 2 px",
    ]

    table = dataframe_with(at, "surface Dice @ 2 px")
    assert sorted(table["patient"]) == sorted(cli_rows)
    columns = {
        "Dice": "volume_dice",
        "sensitivity": "sensitivity",
        "precision": "precision",
        "volume similarity": "volume_similarity",
        "HD95 (px)": "hd95",
        "surface Dice @ 2 px": "surface_dice",
        "truth px": "truth_voxels",
        "predicted px": "pred_voxels",
    }
    for row in table.to_dict("records"):
        theirs = cli_rows[row["patient"]]
        assert theirs["distance_unit"] == "px"
        for page_name, cli_name in columns.items():
            assert np.isclose(row[page_name], float(theirs[cli_name]), atol=1e-6), (row["patient"], page_name)
    st.cache_data.clear()
    st.cache_resource.clear()
