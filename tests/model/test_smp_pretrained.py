"""A weights folder loads with ``segmentation_models_pytorch.from_pretrained(folder)`` as well as with the app.

smp (0.6 here) reads ``config.json`` (``_model_class`` plus the constructor arguments) and
``model.safetensors``; :func:`brainviewer.model.segmenter.save_weights` writes both, so the two loaders
must build the same network with the same parameters: equal outputs on a random input.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainviewer.compat import import_smp
from brainviewer.model.gate import attach_head, split_output
from brainviewer.model.hub import ALLOW_PATTERNS
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import ARCHITECTURES, CONFIG_FILE, WEIGHTS_FILE, build_model, load_model, save_weights
from brainviewer.model.weights import WEIGHTS_DIR, list_local_weights

SHIPPED = list_local_weights(WEIGHTS_DIR)


def _both_loaders(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    smp = import_smp()
    via_smp = smp.from_pretrained(str(folder))
    via_app, _ = load_model(folder)
    return via_smp.eval(), via_app.eval()


def _assert_same_network(via_smp: torch.nn.Module, via_app: torch.nn.Module, in_channels: int, size: int) -> None:
    assert type(via_smp) is type(via_app)
    app_state = via_app.state_dict()
    smp_state = via_smp.state_dict()
    assert smp_state.keys() == app_state.keys()
    assert all(torch.equal(smp_state[k], app_state[k]) for k in app_state)
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (out_smp, label_smp), (out_app, label_app) = split_output(via_smp(x)), split_output(via_app(x))
    assert out_smp.shape == (2, 1, size, size)
    assert torch.equal(out_smp, out_app)
    assert (label_smp is None) == (label_app is None)  # a tumour-present head (aux_params) loads in both
    if label_smp is not None:
        assert label_smp.shape == (2, 1) and torch.equal(label_smp, label_app)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_saved_folder_loads_with_smp_from_pretrained(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = {"encoder_depth": 3, "decoder_channels": (32, 16, 8)} if arch in ("Unet", "UnetPlusPlus") else {}
    model = build_model(arch, "resnet18", in_channels=1, **kwargs).eval()
    with torch.no_grad():  # non-default statistics, so that a loader that skipped buffers would differ
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    folder = save_weights(model, tmp_path / arch, Preprocessing(in_channels=1, input_size=64, mean=[0.5], std=[0.2]))
    via_smp, via_app = _both_loaders(folder)
    _assert_same_network(via_smp, via_app, in_channels=1, size=64)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(via_smp(x), model(x))


def test_the_tiny_fixture_loads_with_smp(tiny_weights: Path) -> None:
    via_smp, via_app = _both_loaders(tiny_weights)
    _assert_same_network(via_smp, via_app, in_channels=3, size=64)


def test_weights_with_a_tumour_present_head_load_with_smp(tiny_weights: Path, tmp_path: Path) -> None:
    model, prep = load_model(tiny_weights)
    attach_head(model, torch.linspace(-1, 1, int(model.encoder.out_channels[-1])).numpy(), 0.3)
    folder = save_weights(model, tmp_path / "gated", prep)
    via_smp, via_app = _both_loaders(folder)
    _assert_same_network(via_smp, via_app, in_channels=3, size=64)


@pytest.mark.skipif(not SHIPPED, reason="no weights folders under weights/")
@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_load_with_smp_and_the_app_alike(folder: Path) -> None:
    """Every folder in ``weights/``: the Hub files smp downloads are the ones the app ships and pushes."""
    assert {CONFIG_FILE, WEIGHTS_FILE} <= set(ALLOW_PATTERNS)
    via_smp, via_app = _both_loaders(folder)
    prep = Preprocessing.load(folder)
    _assert_same_network(via_smp, via_app, in_channels=prep.in_channels, size=64)
