"""The model factory, safe save/load and inference on scans.

Every architecture goes through the same checks (a shared, parametrised test base in
the manner of segmentation_models.pytorch's tests): forward shape, finite gradients,
and a save/load round trip that gives identical outputs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from brainviewer.model import segmenter as model_module
from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing
from brainviewer.model.segmenter import (
    ARCHITECTURES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    Segmenter,
    WeightsError,
    build_model,
    load_model,
    save_weights,
)

SIZE = 64
PREP = Preprocessing(input_size=SIZE, mean=[0.1, 0.2, 0.3], std=[0.5, 0.6, 0.7], threshold=0.4, min_component_px=9)


# ----------------------------------------------------------------------------- every architecture
@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch_model(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, build_model(request.param, "resnet18", in_channels=3)


class TestArchitectures:
    """Checks every architecture in :data:`ARCHITECTURES` must pass."""

    batch = 2  # BatchNorm after global pooling (DeepLabV3+) needs more than one image in training mode

    def sample(self, seed: int = 1) -> torch.Tensor:
        return torch.randn(self.batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))

    def test_forward_shape(self, arch_model: tuple[str, torch.nn.Module]) -> None:
        _, model = arch_model
        model.eval()
        with torch.no_grad():
            logits = model(self.sample())
        assert logits.shape == (self.batch, 1, SIZE, SIZE)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()

    def test_backward_gives_finite_gradients(self, arch_model: tuple[str, torch.nn.Module]) -> None:
        _, model = arch_model
        model.train()
        model.zero_grad()
        target = (torch.rand(self.batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2)) > 0.7).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(self.sample()), target)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        model.zero_grad()

    def test_save_load_round_trip(self, arch_model: tuple[str, torch.nn.Module], tmp_path: Path) -> None:
        arch, model = arch_model
        model.eval()
        folder = save_weights(model, tmp_path / arch, PREP, card=f"# {arch}\n", extra_files={"note.txt": "hello"})
        assert {p.name for p in folder.iterdir()} == {
            CONFIG_FILE,
            WEIGHTS_FILE,
            PREPROCESSING_FILE,
            "README.md",
            "note.txt",
        }
        assert json.loads((folder / CONFIG_FILE).read_text())["_model_class"] == type(model).__name__
        loaded, prep = load_model(folder)
        assert type(loaded) is type(model) and not loaded.training
        assert prep == PREP
        x = self.sample(3)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_one_channel_model() -> None:
    model = build_model("Unet", "resnet18", in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)


# ----------------------------------------------------------------------------- factory errors
def test_unknown_encoder_lists_alternatives() -> None:
    with pytest.raises(ValueError, match=r"Unknown encoder 'resnet19'\. Try one of: resnet18, resnet34"):
        build_model("Unet", "resnet19")
    with pytest.raises(ValueError, match=r"Unknown encoder 'nonsense'\. Try one of: .*resnet18"):
        build_model("Unet", "nonsense")


def test_unknown_architecture_lists_choices() -> None:
    with pytest.raises(
        ValueError, match=re.escape("Unknown architecture 'UNet3D'. Choose one of: Unet, UnetPlusPlus, FPN")
    ):
        build_model("UNet3D")


# ----------------------------------------------------------------------------- safe saving
@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("Unet", "resnet18", encoder_depth=3, decoder_channels=(32, 16, 8)).eval()


@pytest.fixture
def saved(small_model: torch.nn.Module, tmp_path: Path) -> Path:
    return save_weights(small_model, tmp_path / "w", PREP, card="# original\n")


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_refuses_to_overwrite(small_model: torch.nn.Module, saved: Path) -> None:
    before = folder_snapshot(saved)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_weights(small_model, saved, PREP, card="# new\n")
    assert folder_snapshot(saved) == before


def test_overwrite_replaces_the_folder(small_model: torch.nn.Module, saved: Path) -> None:
    save_weights(small_model, saved, PREP, card="# new\n", overwrite=True)
    assert (saved / "README.md").read_text() == "# new\n"
    assert [p.name for p in saved.parent.iterdir()] == ["w"]  # the old copy was removed


def test_failed_write_leaves_the_old_folder_intact(
    small_model: torch.nn.Module, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = folder_snapshot(saved)

    def broken_save(self: Preprocessing, folder: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(Preprocessing, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(small_model, saved, PREP, card="# new\n", overwrite=True)
    assert folder_snapshot(saved) == before
    assert [p.name for p in saved.parent.iterdir()] == ["w"]


def test_failed_rename_puts_the_old_folder_back(
    small_model: torch.nn.Module, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a failure between moving the old folder aside and moving the new one in."""
    before = folder_snapshot(saved)
    real_replace = os.replace
    calls = []

    def replace_failing_second_time(src: object, dst: object) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(model_module.os, "replace", replace_failing_second_time)
    with pytest.raises(OSError, match="rename failed"):
        save_weights(small_model, saved, PREP, card="# new\n", overwrite=True)
    assert folder_snapshot(saved) == before
    assert [p.name for p in saved.parent.iterdir()] == ["w"]


# ----------------------------------------------------------------------------- loading errors
def test_load_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"No weights folder at .*python -m brainviewer train"):
        load_model(tmp_path / "nowhere")


def test_load_missing_file(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsError, match=re.escape("missing model.safetensors; it is not a complete weights folder")):
        load_model(saved)


def test_load_corrupt_safetensors(saved: Path) -> None:
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=re.escape("model.safetensors is corrupt")):
        load_model(saved)
    (saved / WEIGHTS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(saved)


def test_load_unknown_architecture(saved: Path) -> None:
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["_model_class"] = "SegFormer3D"
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(
        WeightsError, match=re.escape("cannot be built: Unknown architecture 'SegFormer3D'. Choose one of")
    ):
        load_model(saved)


def test_load_config_not_matching_tensors(saved: Path) -> None:
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["encoder_name"] = "resnet34"
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=re.escape("does not match config.json")):
        load_model(saved)


def test_load_invalid_json(saved: Path) -> None:
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_model(saved)


# ----------------------------------------------------------------------------- Segmenter
@pytest.fixture(scope="module")
def segmenter(tiny_weights: Path) -> Segmenter:
    return Segmenter.from_folder(tiny_weights, device="cpu")


@pytest.mark.parametrize(
    "image",
    [
        np.full((48, 80, 3), 120, dtype=np.uint8),  # RGB, wide
        np.full((90, 40), 70, dtype=np.uint8),  # grayscale, tall
        np.linspace(0, 4000, 70 * 50, dtype=np.uint16).reshape(70, 50),  # 16-bit
        np.random.default_rng(0).random((33, 65, 3), dtype=np.float32) * 900,  # float, odd sizes
    ],
    ids=["rgb-wide", "gray-tall", "uint16", "float-odd"],
)
def test_probs_at_the_scan_size(segmenter: Segmenter, image: np.ndarray) -> None:
    probs = segmenter.predict_probs(image)
    assert probs.shape == image.shape[:2] and probs.dtype == np.float32
    assert np.isfinite(probs).all() and probs.min() >= 0.0 and probs.max() <= 1.0


def test_batch_matches_single(segmenter: Segmenter) -> None:
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
        rng.integers(0, 255, (40, 72), dtype=np.uint8),
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
    ]
    batch = segmenter.predict_probs_batch(images, batch_size=2)
    assert [p.shape for p in batch] == [(64, 64), (40, 72), (64, 64)]
    for image, probs in zip(images, batch, strict=True):
        np.testing.assert_allclose(probs, segmenter.predict_probs(image), atol=1e-5)


def test_square_scan_at_input_size_is_the_network_output(segmenter: Segmenter) -> None:
    """No resizing for a scan already at the input size: probs are exactly sigmoid(logits)."""
    from brainviewer.model.preprocessing import to_input

    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = segmenter.model(torch.from_numpy(to_input(image, segmenter.prep))[None])
    np.testing.assert_allclose(segmenter.predict_probs(image), torch.sigmoid(logits)[0, 0].numpy(), atol=1e-6)


def test_flip_tta_is_the_mean_of_the_scan_and_its_mirror(segmenter: Segmenter) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    plain = segmenter.predict_probs(image)
    mirrored = segmenter.predict_probs(np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
    assert not np.allclose(plain, mirrored, atol=1e-4)  # an untrained net is not mirror-symmetric
    segmenter.prep.tta_flip = True
    try:
        np.testing.assert_allclose(segmenter.predict_probs(image), (plain + mirrored) / 2, atol=1e-6)
        # a mirrored scan gets the mirrored probabilities: TTA makes the model mirror-equivariant
        flipped = segmenter.predict_probs_batch([image, np.ascontiguousarray(image[:, ::-1])])
        np.testing.assert_allclose(flipped[1][:, ::-1], flipped[0], atol=1e-6)
    finally:
        segmenter.prep.tta_flip = False


def test_plain_and_flip_probs_in_one_pass_match_tta_off_and_on(segmenter: Segmenter) -> None:
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(64, 64, 3), (40, 72, 3), (64, 64, 3)]]
    calls: list[int] = []
    forward = segmenter.model.forward
    segmenter.model.forward = lambda x: calls.append(len(x)) or forward(x)  # type: ignore[method-assign]
    try:
        plain, averaged = segmenter.predict_probs_plain_and_flip(images, batch_size=2)
        assert calls == [4, 2]  # scans and mirrors together: 2 batches, not 2 passes over the data
        assert segmenter.prep.tta_flip is False  # untouched
        for got, want in zip(plain, segmenter.predict_probs_batch(images), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)
        segmenter.prep.tta_flip = True
        for got, want in zip(averaged, segmenter.predict_probs_batch(images), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        segmenter.prep.tta_flip = False
        segmenter.model.forward = forward  # type: ignore[method-assign]


def test_mask_from_probs_applies_the_post_processing(tiny_weights: Path) -> None:
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    probs = np.zeros((20, 20), dtype=np.float32)
    probs[2:6, 2:6] = 0.9  # 16 px
    probs[10:12, 10:12] = 0.6  # 4 px
    probs[15, 15] = 0.45
    assert segmenter.mask_from_probs(probs).sum() == 20  # the weights' threshold 0.5, no post-processing
    assert segmenter.mask_from_probs(probs, threshold=0.4).sum() == 21
    assert segmenter.mask_from_probs(probs, threshold=0.7).sum() == 16
    segmenter.prep.min_component_px = 5
    assert segmenter.mask_from_probs(probs).sum() == 16
    segmenter.prep.min_component_px, segmenter.prep.keep_largest = 0, True
    assert segmenter.mask_from_probs(probs, threshold=0.4).sum() == 16
