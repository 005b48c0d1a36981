"""Intensity normalisation (``preprocessing.json`` ``intensity_norm``) is applied the same way on every
path: PyTorch, ONNX, ``predict`` (per slice and ``--volume``) and per patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainviewer.evaluation.predict import predict_paths
from brainviewer.model.inference import predict_volume_probs
from brainviewer.model.postprocess import keep_largest_volume_component
from brainviewer.model.preprocessing import Preprocessing, to_input, unletterbox, volume_levels
from brainviewer.model.segmenter import Segmenter, build_model, save_weights


@pytest.fixture(scope="module", params=["percentile", "volume_percentile"])
def norm_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = build_model("Unet", "resnet18", in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    prep = Preprocessing(
        input_size=64, mean=[0.3] * 3, std=[0.2] * 3, intensity_norm=request.param, norm_target=[0.6, 0.5, 0.55]
    )
    return save_weights(model, tmp_path_factory.mktemp("norm") / request.param, prep, card="# test\n")


def _volume() -> list[np.ndarray]:
    """Four slices of one head whose brightness differs from slice to slice (uint8, 3 channels)."""
    rng = np.random.default_rng(3)
    slices = []
    for gain in (0.5, 0.8, 1.0, 1.3):
        image = np.zeros((60, 70, 3), np.float32)
        image[6:54, 8:62] = rng.uniform(40, 150, size=(48, 54, 3)) * gain
        slices.append(np.clip(image, 0, 255).astype(np.uint8))
    return slices


def _by_hand(segmenter: Segmenter, image: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    batch = torch.from_numpy(to_input(image, segmenter.prep, levels)[None])
    with torch.inference_mode():
        probs = torch.sigmoid(segmenter.model(batch))[0, 0].numpy()
    return unletterbox(probs, image.shape[:2])


def test_pytorch_applies_the_norm_recorded_with_the_weights(norm_weights: Path) -> None:
    segmenter = Segmenter.from_folder(norm_weights, device="cpu")
    assert segmenter.prep.intensity_norm in ("percentile", "volume_percentile")
    slices = _volume()
    single = segmenter.predict_probs(slices[0])
    np.testing.assert_allclose(single, _by_hand(segmenter, slices[0], None), atol=1e-5)
    levels = volume_levels(slices, segmenter.prep)
    per_patient = predict_volume_probs(segmenter, slices, batch_size=3)
    for image, probs in zip(slices, per_patient, strict=True):
        np.testing.assert_allclose(probs, _by_hand(segmenter, image, levels), atol=1e-5)
    if segmenter.prep.intensity_norm == "percentile":
        assert levels is None  # each image alone, whether or not it is part of a volume
    else:
        assert levels is not None and levels.shape == (3,)
        assert np.abs(per_patient[0] - single).max() > 1e-4  # the patient's levels, not the slice's own


def test_onnx_matches_pytorch_with_the_norm(norm_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from brainviewer.model.onnx_backend import OnnxSegmenter, export_onnx

    segmenter = Segmenter.from_folder(norm_weights, device="cpu")
    onnx = OnnxSegmenter.from_file(export_onnx(norm_weights, tmp_path / "m.onnx", dynamo=False), threads=1)
    assert onnx.prep == segmenter.prep
    slices = _volume()
    for expected, got in zip(
        predict_volume_probs(segmenter, slices, 2), predict_volume_probs(onnx, slices, 2), strict=True
    ):
        assert np.abs(expected - got).max() < 1e-4
    assert np.abs(segmenter.predict_probs(slices[2]) - onnx.predict_probs(slices[2])).max() < 1e-4


def test_predict_command_normalises_a_folder_as_one_patient(norm_weights: Path, tmp_path: Path) -> None:
    segmenter = Segmenter.from_folder(norm_weights, device="cpu")
    patient = tmp_path / "patient"
    patient.mkdir()
    slices = _volume()
    for i, image in enumerate(slices, start=1):
        Image.fromarray(image).save(patient / f"p_{i}.png")
    threshold = float(np.median(np.concatenate([p.ravel() for p in predict_volume_probs(segmenter, slices)])))
    for volume, expected in (
        (True, predict_volume_probs(segmenter, slices, 3)),  # batches as predict_paths makes them
        (False, segmenter.predict_probs_batch(slices, 3)),
    ):
        out = tmp_path / f"out-{volume}"
        written, failed = predict_paths(segmenter, [patient], out, threshold=threshold, batch_size=3, volume=volume)
        assert not failed and len(written) == len(slices)
        by_name = {path.name: path for path in written}
        masks = [segmenter.mask_from_probs(probs, threshold) for probs in expected]
        if volume:  # --volume then keeps the largest 3-D component
            masks = keep_largest_volume_component(masks)
        for i, mask in enumerate(masks, start=1):
            np.testing.assert_array_equal(np.asarray(Image.open(by_name[f"p_{i}_pred.png"])) > 0, mask)


def test_a_brighter_scanner_gives_the_same_input_per_volume() -> None:
    """The same head 1.3 times brighter: per-volume normalisation removes at least 90% of the difference."""
    normed = Preprocessing(input_size=64, intensity_norm="volume_percentile", norm_target=[0.6])
    plain = Preprocessing(input_size=64)
    slices = _volume()
    brighter = [np.clip(s.astype(np.float32) * 1.3, 0, 255).astype(np.uint8) for s in slices]
    for dim, bright in zip(slices, brighter, strict=True):
        before = np.abs(to_input(dim, plain) - to_input(bright, plain)).mean()
        after = np.abs(
            to_input(dim, normed, volume_levels(slices, normed))
            - to_input(bright, normed, volume_levels(brighter, normed))
        ).mean()
        assert after < before / 10


def test_training_normalises_each_patient_as_inference_does(tmp_path: Path) -> None:
    """The training cache holds what inference feeds the network: per-patient levels for volume_percentile."""
    from brainviewer.data.datasets import open_dataset
    from brainviewer.model.preprocessing import prepare_unit
    from brainviewer.training.data import SliceCache

    root = tmp_path / "kaggle_3m"
    for pid, gain in (("P_A", 1.0), ("P_B", 1.4)):
        (root / pid).mkdir(parents=True)
        for i, image in enumerate(_volume(), start=1):
            bright = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            Image.fromarray(bright).save(root / pid / f"{pid}_{i}.png")
            Image.fromarray(np.zeros(image.shape[:2], np.uint8)).save(root / pid / f"{pid}_{i}_mask.png")
    dataset = open_dataset(root)
    assert len(dataset.patients) == 2 and len(dataset) == 8
    prep = Preprocessing(input_size=64, intensity_norm="volume_percentile", norm_target=[0.6])
    cache = SliceCache.build(dataset, prep)
    for i, record in enumerate(dataset):
        scans = [dataset.load_image(r) for r in dataset.patients[record.patient_id]]
        expected = prepare_unit(dataset.load_image(record), prep, volume_levels(scans, prep))
        np.testing.assert_allclose(cache.images[i].astype(np.float32), expected, atol=1e-3)


def test_a_slice_seen_alone_is_not_rescaled_by_a_per_volume_model() -> None:
    """volume_percentile without a patient's levels leaves the slice as an un-normalised model sees it."""
    image = _volume()[0]
    normed = Preprocessing(input_size=64, intensity_norm="volume_percentile", norm_target=[0.6])
    plain = Preprocessing(input_size=64)
    np.testing.assert_array_equal(to_input(image, normed), to_input(image, plain))
    assert np.abs(to_input(image, normed, volume_levels(_volume(), normed)) - to_input(image, plain)).max() > 0.05
