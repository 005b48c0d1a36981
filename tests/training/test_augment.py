"""Training augmentations: reproducible, tumour-aware crops, and the missing-sequence copy."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.model.preprocessing import Preprocessing
from brainviewer.training.augment import (
    apply_augmentation,
    build_augmentation,
    copy_missing_sequences,
    random_crop,
    vary_intensity,
)
from brainviewer.training.config import TrainConfig
from brainviewer.training.data import SliceCache, make_sample


def scan(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)


@pytest.mark.parametrize("strength", ["light", "medium", "strong"])
def test_same_seed_same_result_and_values_stay_in_range(strength: str) -> None:
    pipeline = build_augmentation(strength)
    image, mask = scan(), np.zeros((32, 32), np.uint8)
    mask[8:20, 10:22] = 1
    a = apply_augmentation(pipeline, image, mask, seed=11)
    b = apply_augmentation(pipeline, image, mask, seed=11)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].dtype == np.float32 and a[0].min() >= 0.0 and a[0].max() <= 1.0
    assert set(np.unique(a[1])) <= {0, 1}
    outcomes = {apply_augmentation(pipeline, image, mask, seed=s)[0].tobytes() for s in range(8)}
    assert len(outcomes) > 1  # different seeds, different pictures


def test_no_augmentation_and_unknown_strength() -> None:
    assert build_augmentation("none") is None
    image = scan()
    assert apply_augmentation(None, image, np.zeros((32, 32), np.uint8), 0)[0] is image
    with pytest.raises(ValueError, match="none, light, medium or strong"):
        build_augmentation("extreme")


def test_tumour_crop_is_centred_on_the_tumour() -> None:
    image, mask = scan(size=64), np.zeros((64, 64), np.uint8)
    mask[50, 50] = 1
    rng = np.random.default_rng(0)
    for _ in range(5):
        crop_image, crop_mask = random_crop(image, mask, 32, rng, tumour_prob=1.0)
        assert crop_image.shape == (32, 32, 3) and crop_mask.sum() == 1  # clamped to the image, tumour inside


def test_missing_sequences_copy_flair_into_the_other_channels() -> None:
    image = scan()
    rng = np.random.default_rng(1)
    outcomes = {"unchanged": 0, "all": 0, "pre": 0, "post": 0}
    for _ in range(400):
        out = copy_missing_sequences(image, rng, prob=0.5)
        if out is image:
            outcomes["unchanged"] += 1
            continue
        assert np.array_equal(out[..., 1], image[..., 1])  # FLAIR itself never changes
        pre, post = np.array_equal(out[..., 0], image[..., 1]), np.array_equal(out[..., 2], image[..., 1])
        assert pre or post
        outcomes["all" if pre and post else "pre" if pre else "post"] += 1
        assert pre or np.array_equal(out[..., 0], image[..., 0])
        assert post or np.array_equal(out[..., 2], image[..., 2])
    assert 150 < outcomes["unchanged"] < 250 and 70 < outcomes["all"] < 130
    assert outcomes["pre"] > 20 and outcomes["post"] > 20
    assert np.array_equal(image, scan())  # the input is never modified
    assert copy_missing_sequences(image, rng, prob=0.0) is image
    gray = np.zeros((8, 8, 1), np.float32)
    assert copy_missing_sequences(gray, rng, prob=1.0) is gray


def _with_and_without(tmp_path, **option: float) -> tuple[Preprocessing, TrainConfig, TrainConfig, object]:
    """``(prep, config without option, config with option, light pipeline)`` for 64 px slices in 32 px crops."""
    prep = Preprocessing(input_size=64, mean=[0.0] * 3, std=[1.0] * 3)
    plain = TrainConfig(data=str(tmp_path), input_size=64, crop_size=32, augment="light")
    return prep, plain, TrainConfig(**{**plain.__dict__, **option}), build_augmentation("light")


def test_training_samples_with_missing_sequences_keep_their_crops(tmp_path) -> None:
    """The option changes channels only: crops, flips and masks are those of a run without it."""
    rng = np.random.default_rng(0)
    images = rng.random((4, 64, 64, 3)).astype(np.float16)
    masks = np.zeros((4, 64, 64), np.uint8)
    masks[:, 20:40, 20:40] = 1
    cache = SliceCache(images, masks, np.ones(4, bool))
    prep, plain, copied, pipeline = _with_and_without(tmp_path, missing_sequence_prob=1.0)
    for index in range(4):
        a_image, a_mask = make_sample(cache, index, plain, prep, pipeline, seed=100 + index)
        b_image, b_mask = make_sample(cache, index, copied, prep, pipeline, seed=100 + index)
        assert np.array_equal(a_mask, b_mask) and np.array_equal(a_image[1], b_image[1])
        assert np.array_equal(b_image[0], b_image[1]) or np.array_equal(b_image[2], b_image[1])
        again, _ = make_sample(cache, index, copied, prep, pipeline, seed=100 + index)
        assert np.array_equal(again, b_image)
    with pytest.raises(ValueError, match="missing_sequence_prob"):
        TrainConfig(data=str(tmp_path), missing_sequence_prob=1.5)


def test_another_scanners_intensities_differ_per_channel_are_smooth_and_reproducible() -> None:
    image = np.tile(np.linspace(0.1, 0.9, 64, dtype=np.float32), (64, 1))[..., None].repeat(3, axis=2)
    assert vary_intensity(image, np.random.default_rng(0), prob=0.0) is image
    out = vary_intensity(image, np.random.default_rng(1), prob=1.0)
    assert out.shape == image.shape and out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out[..., 0], out[..., 1])  # each channel its own gain and gamma
    assert np.array_equal(out, vary_intensity(image, np.random.default_rng(1), prob=1.0))
    column = out[:, 32, 1]  # the input is constant down a column: what changes there is the bias field
    assert column.std() > 0 and np.abs(np.diff(column)).max() < 0.05  # smooth, no speckle
    gray = vary_intensity(image[..., 0], np.random.default_rng(2), prob=1.0)
    assert gray.shape == (64, 64)


def test_training_samples_with_scanner_intensities_keep_their_masks(tmp_path) -> None:
    """The option changes intensities only: masks and crops are those of a run without it."""
    rng = np.random.default_rng(0)
    cache = SliceCache(rng.random((3, 64, 64, 3)).astype(np.float16), np.ones((3, 64, 64), np.uint8), np.ones(3, bool))
    prep, plain, varied, pipeline = _with_and_without(tmp_path, intensity_augment_prob=1.0)
    for index in range(3):
        a_image, a_mask = make_sample(cache, index, plain, prep, pipeline, seed=7 + index)
        b_image, b_mask = make_sample(cache, index, varied, prep, pipeline, seed=7 + index)
        assert np.array_equal(a_mask, b_mask) and not np.allclose(a_image, b_image)
    with pytest.raises(ValueError, match="intensity_augment_prob"):
        TrainConfig(data=str(tmp_path), intensity_augment_prob=-0.1)
