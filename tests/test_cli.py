"""The command line: ``python -m brainviewer train|evaluate|predict``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainviewer.cli import main
from brainviewer.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def test_train_help_lists_every_config_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
    assert "--resume RUN_DIR" in text and "--config CONFIG" in text
    assert "Share of patients held out for validation" in text  # field docs become the help
    assert "--amp, --no-amp" in text


def test_evaluate_prints_the_summary(
    phantom_dataset: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            str(phantom_dataset),
            "--weights",
            str(tiny_weights),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
            "--threshold",
            "0.6",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["patients"] == 6 and summary["slices"] == 48
    assert summary["threshold"] == 0.6 and 0.0 <= summary["mean_volume_dice"] <= 1.0
    assert {p.name for p in out.iterdir()} == {"evaluation.json", "per_patient.csv", "per_patient_dice.png"}
    assert json.loads((out / "evaluation.json").read_text())["summary"] == summary
    assert summary["tta_flip"] is False  # the weights' setting
    # a second run refuses to overwrite the report
    code = main(
        [
            "evaluate",
            str(phantom_dataset),
            "--weights",
            str(tiny_weights),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_evaluate_with_flip_tta(phantom_dataset: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", str(phantom_dataset), "--weights", str(tiny_weights), "--device", "cpu", "--quiet"]
    assert main([*args, "--no-tta"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--tta"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert (plain["tta_flip"], flipped["tta_flip"]) == (False, True)


def test_evaluate_with_groups(
    phantom_dataset: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from brainviewer.data.datasets import open_dataset

    ids = open_dataset(phantom_dataset).patient_ids
    groups = tmp_path / "groups.csv"
    groups.write_text("patient_id,group\n" + "".join(f"{p},{'even' if i % 2 else 'odd'}\n" for i, p in enumerate(ids)))
    args = ["evaluate", str(phantom_dataset), "--weights", str(tiny_weights), "--device", "cpu", "--quiet"]
    assert main([*args, "--groups", str(groups)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {name: g["patients"] for name, g in summary["groups"].items()} == {
        "even": len(ids) // 2,
        "odd": len(ids) // 2,
    }
    assert main([*args, "--groups", str(tmp_path / "nowhere.csv")]) == 2
    assert "cannot read groups" in capsys.readouterr().err


def test_evaluate_one_side_of_a_split(
    phantom_dataset: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from brainviewer.data.split import split_patients

    split = split_patients([f"PHANTOM_{i:02d}_20000101" for i in range(6)], val_count=2, mode="contiguous")
    path = split.save(tmp_path / "split.json")
    assert (
        main(
            ["evaluate", str(phantom_dataset), "--weights", str(tiny_weights), "--device", "cpu", "--split", str(path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("PHANTOM_")]
    assert [row.split()[0] for row in rows] == ["PHANTOM_04_20000101", "PHANTOM_05_20000101"]
    assert json.loads(out[out.index("{") :])["patients"] == 2


def test_predict_writes_masks(
    phantom_dataset: Path, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = phantom_dataset / "PHANTOM_01_20000101"
    out = tmp_path / "pred"
    assert main(["predict", str(patient), "--weights", str(tiny_weights), "--device", "cpu", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 8 masks to {out}"
    masks = sorted(out.glob("*_pred.png"))
    assert len(masks) == 8 and np.asarray(Image.open(masks[0])).shape == (64, 64)
    # again: nothing written, every file refused, exit code 1
    assert main(["predict", str(patient), "--weights", str(tiny_weights), "--device", "cpu", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "wrote 0 masks" in captured.out and "8 files failed" in captured.out
    assert captured.err.count("already exists") == 8
    # --volume: the folder is one patient volume
    args = ["predict", str(patient), "--weights", str(tiny_weights), "--device", "cpu", "--volume"]
    assert main([*args, "--out", str(tmp_path / "vol")]) == 0
    assert len(list((tmp_path / "vol").glob("*_pred.png"))) == 8


def test_missing_weights_exit_2(phantom_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(phantom_dataset), "--weights", str(tmp_path / "none")]) == 2
    assert "No weights at" in capsys.readouterr().err


def test_bad_dataset_path_exits_2(tiny_weights: Path, tmp_path: Path) -> None:
    """Through the real entry point: exit status 2 and a message saying what is expected."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "brainviewer",
            "evaluate",
            str(tmp_path / "nowhere"),
            "--weights",
            str(tiny_weights),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_bad_dataset_exits_2_and_leaves_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "nowhere"),
            "--out-dir",
            str(tmp_path / "runs"),
            "--run-name",
            "x",
            "--input-size",
            "64",
            "--crop-size",
            "32",
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_train_rejects_bad_flag_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path), "--loss", "l2"]) == 2
    assert "loss must be one of" in capsys.readouterr().err


def test_train_from_config_file_and_flags(
    phantom_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "data": str(phantom_dataset),
                "input_size": 64,
                "crop_size": 32,
                "batch_size": 4,
                "epochs": 3,
                "val_patients": 1,
                "threads": 1,
                "augment": "none",
            }
        )
    )
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--max-steps",
            "2",
            "--out-dir",
            str(tmp_path / "runs"),
            "--run-name",
            "cli",
            "--no-amp",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip())
    assert run_dir == tmp_path / "runs" / "cli"
    saved = TrainConfig.load(run_dir / "config.json")
    assert (saved.epochs, saved.max_steps, saved.amp, saved.input_size) == (3, 2, False, 64)  # flags override
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_benchmark_smoke(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = [
        "benchmark",
        "--weights",
        str(tiny_weights),
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--skip-training",
        "--threads",
        "1",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "model forward, batch 16" in table and "re-threshold (cached probs)" in table
    assert "1 intra-op" in table
    result = json.loads(out.read_text())
    names = [m["name"] for m in result["measurements"]]
    assert "inference, 40-slice volume" in names and not any("training" in n for n in names)
    volume = next(m for m in result["measurements"] if m["name"] == "inference, 40-slice volume")
    assert volume["items"] == 40 and volume["per_item_ms"] == pytest.approx(1000 * volume["median_s"] / 40)
    assert main(args) == 2  # refuses to overwrite the JSON
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("bf16", [False, True])
def test_benchmark_training_step_trains_in_float32_and_under_cpu_amp(bf16: bool) -> None:
    """The step the benchmark times, as ``train`` does it without and with ``--cpu-amp``: the weights move."""
    import inspect

    import torch

    from brainviewer.evaluation.benchmark_workloads import _training_step_fn

    torch.manual_seed(0)
    step = _training_step_fn(torch.device("cpu"), bf16=bf16)
    model = inspect.getclosurevars(step).nonlocals["model"]
    before = next(model.parameters()).detach().clone()
    step()
    after = next(model.parameters()).detach()
    assert after.dtype == torch.float32 and not torch.equal(before, after)  # master weights stay float32


def test_every_commands_help_prints_without_printf_escapes() -> None:
    """argparse formats ``%`` in argument help but not in a description: ``95%%`` there reaches the reader."""
    from brainviewer.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, name
