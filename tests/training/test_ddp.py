"""Distributed training: two CPU processes under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from brainviewer.model.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    """Two ranks finish a run whose encoder is frozen for the first epoch (DDP must be rebuilt)."""
    from brainviewer.data.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "data", patients=4, slices=6, size=64)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "brainviewer",
        "train",
        "--data",
        str(data),
        "--out-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "ddp",
        "--input-size",
        "64",
        "--crop-size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "2",
        "--max-steps",
        "5",
        "--val-patients",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--freeze-encoder-epochs",
        "1",
        "--checkpoint-every-steps",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = tmp_path / "runs" / "ddp"
    status = json.loads((run_dir / "status.json").read_text())
    # 3 train patients x 4 tumour slices + half of their 6 empty slices = 15; 2 ranks x 2 = 4 a step -> 3 steps
    assert status["state"] == "finished" and status["global_step"] == 5 and status["total_steps"] == 5
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2, 3, 4, 5]  # rank 0 alone writes
    assert [r["epoch"] for r in records if r["type"] == "val"] == [0, 1]
    assert [r["event"] for r in records if r["type"] == "event"] == ["started", "finished"]
    segmenter = Segmenter.from_folder(run_dir / "best", device="cpu")
    assert segmenter.prep.input_size == 64
    assert (run_dir / "train.log").read_text().count("validation: mean Dice") == 2
