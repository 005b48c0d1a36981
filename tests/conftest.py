"""Shared fixtures. Tests run on CPU, one torch thread, with the Hub offline."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BRAINVIEWER_TEST", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("BRAINVIEWER_SHARED_DATA", ROOT.parent / "shared" / "data"))
LGG = SHARED_DATA / "lgg"
FIGSHARE = SHARED_DATA / "figshare"
COCO = SHARED_DATA / "coco" / "test"


@pytest.fixture(autouse=True)
def _empty_runs_folder(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts with an empty runs folder of its own, never the checkout's runs/ (a developer's
    training runs would show in the app's lists); a test that needs runs sets BRAINVIEWER_RUNS_DIR itself."""
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (see README: Datasets)")
    return path


@pytest.fixture(scope="session")
def lgg_root() -> Path:
    return _require(LGG)


@pytest.fixture(scope="session")
def figshare_root() -> Path:
    return _require(FIGSHARE)


@pytest.fixture(scope="session")
def coco_root() -> Path:
    return _require(COCO)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small kaggle_3m-layout phantom dataset: 6 patients x 8 slices, 64x64."""
    from brainviewer.data.phantom import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), patients=6, slices=8, size=64)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, small Unet weights folder (64x64 input) for fast inference tests."""
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import build_model, save_weights

    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    prep = Preprocessing(input_size=64, mean=[0.1] * 3, std=[0.2] * 3)
    return save_weights(model, folder, prep, card="# tiny test model\n")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
