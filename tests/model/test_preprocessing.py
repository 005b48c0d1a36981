"""Scan -> model input and model output -> scan-sized map."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from brainviewer.model.preprocessing import (
    PREPROCESSING_FILE,
    Preprocessing,
    letterbox,
    match_channels,
    normalise,
    prepare_unit,
    to_input,
    to_unit_range,
    unletterbox,
)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """No divide-by-zero or invalid-value warnings anywhere in these functions."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- intensities


def test_to_unit_range_uint8_divides_by_255() -> None:
    image = np.array([[0, 51, 102], [153, 204, 255]] * 4, dtype=np.uint8)
    unit = to_unit_range(image)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit[:2], [[0, 0.2, 0.4], [0.6, 0.8, 1.0]], atol=1e-7)
    rgb = np.dstack([image, image // 2, image // 3])
    np.testing.assert_allclose(to_unit_range(rgb)[..., 1], (image // 2) / 255, atol=1e-7)


def test_to_unit_range_16bit_uses_the_99_8th_percentile() -> None:
    image = np.arange(1000, dtype=np.uint16).reshape(25, 40) * 50  # 0, 50, ..., 49950
    unit = to_unit_range(image)
    # 99.8th percentile of 0..999 (x50): index 0.998 * 999 = 997.002 -> 49850.1.
    hi = 997.002 * 50
    assert unit.dtype == np.float32 and unit.shape == image.shape
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert unit.flat[500] == pytest.approx(500 * 50 / hi, rel=1e-6)
    assert np.all(unit.flat[998:] == 1.0)  # the brightest 0.2 % are clipped


def test_to_unit_range_float_with_negatives() -> None:
    image = np.linspace(-100.0, 900.0, 1001, dtype=np.float64).reshape(7, 143)  # CT-like units
    unit = to_unit_range(image)
    assert unit.dtype == np.float32
    assert unit.flat[0] == 0.0  # the minimum maps to 0
    # Shifted to 0..1000; 99.8th percentile = 998 -> the old 0 (now 100) maps to 100/998.
    assert unit.flat[100] == pytest.approx(100 / 998, rel=1e-5)
    assert unit.min() >= 0.0 and unit.max() <= 1.0


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.full((8, 8), 1000, np.uint16), 1.0),  # constant bright: divided by itself
        (np.zeros((8, 8), np.uint16), 0.0),  # all zero: no division by zero
        (np.full((8, 8, 3), 0.25, np.float32), 1.0),
        (np.full((8, 8), -5.0, np.float64), 0.0),  # constant negative: shifted to 0, stays 0
        (np.zeros((8, 8), np.uint8), 0.0),
        (np.full((8, 8), 255, np.uint8), 1.0),
    ],
)
def test_to_unit_range_constant_images(image: np.ndarray, expected: float) -> None:
    unit = to_unit_range(image)
    assert unit.shape == image.shape and unit.dtype == np.float32
    np.testing.assert_array_equal(unit, np.full(image.shape, expected, np.float32))


def test_to_unit_range_mostly_empty_16bit() -> None:
    image = np.zeros((40, 40), np.uint16)
    image[0, 0] = 3000  # one bright pixel: the 99.8th percentile is 0, so the maximum is used
    unit = to_unit_range(image)
    assert unit[0, 0] == 1.0 and unit.sum() == 1.0


# --------------------------------------------------------------------------- channels


def test_match_channels() -> None:
    gray = np.arange(12, dtype=np.float32).reshape(3, 4)
    rgb = np.stack([gray, gray + 100, gray + 200], axis=-1)
    three = Preprocessing(in_channels=3)
    out = match_channels(gray, three)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    np.testing.assert_array_equal(match_channels(rgb, three), rgb)

    one = Preprocessing(in_channels=1, mean=[0.0], std=[1.0])  # gray_channel defaults to 1 (FLAIR)
    np.testing.assert_array_equal(match_channels(rgb, one), (gray + 100)[..., None])
    np.testing.assert_array_equal(
        match_channels(rgb, Preprocessing(in_channels=1, gray_channel=2)), (gray + 200)[..., None]
    )
    np.testing.assert_allclose(
        match_channels(rgb, Preprocessing(in_channels=1, gray_channel=-1)), (gray + 100)[..., None]
    )
    np.testing.assert_array_equal(match_channels(gray, one), gray[..., None])


# --------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (64, 64), (17, 50)])
def test_letterbox_round_trip_keeps_shape_and_location(shape: tuple[int, int]) -> None:
    height, width = shape
    image = np.zeros(shape, np.float32)
    top, left = height // 4, width // 3
    image[top : top + height // 3, left : left + width // 3] = 1.0  # a block away from the borders
    boxed = letterbox(image, 64)
    assert boxed.shape == (64, 64)
    side = max(shape)
    # The padding is on the bottom/right: beyond the scan's extent the letterbox is 0.
    assert not boxed[int(np.ceil(height * 64 / side)) + 1 :, :].any()
    assert not boxed[:, int(np.ceil(width * 64 / side)) + 1 :].any()
    back = unletterbox(boxed, shape)
    assert back.shape == shape and back.dtype == np.float32
    found = back > 0.5
    block = image > 0.5
    # The block comes back where it was: centres agree within a pixel, overlap is high.
    np.testing.assert_allclose(np.argwhere(found).mean(axis=0), np.argwhere(block).mean(axis=0), atol=1.5)
    assert (found & block).sum() / (found | block).sum() > 0.75


def test_letterbox_channels_and_identity() -> None:
    rgb = np.random.default_rng(0).random((30, 20, 3)).astype(np.float32)
    assert letterbox(rgb, 32).shape == (32, 32, 3)
    one = rgb[..., :1]
    assert letterbox(one, 32).shape == (32, 32, 1)  # a single channel keeps its axis
    square = rgb[:20]
    np.testing.assert_array_equal(letterbox(square, 20), square)  # right size already: untouched
    mask = np.zeros((30, 20), np.uint8)
    mask[5:10, 5:10] = 1
    nearest = letterbox(mask, 60, interpolation=0)  # 30 -> 60: exactly 2x, nearest neighbour
    assert set(np.unique(nearest)) == {0, 1} and nearest.sum() == 4 * 25


def test_to_input_normalises_and_pads() -> None:
    prep = Preprocessing(input_size=32, in_channels=3, mean=[0.1, 0.1, 0.1], std=[0.2, 0.2, 0.2])
    image = np.full((64, 32), 51, np.uint8)  # unit value 0.2, tall: padded on the right half
    net = to_input(image, prep)
    assert net.shape == (3, 32, 32) and net.dtype == np.float32 and net.flags.c_contiguous
    # Scan region: (0.2 - 0.1) / 0.2 = 0.5; padding: (0 - 0.1) / 0.2 = -0.5.
    np.testing.assert_allclose(net[:, :, :15], 0.5, atol=1e-5)
    np.testing.assert_allclose(net[:, :, 17:], -0.5, atol=1e-5)
    unit = prepare_unit(image, prep)
    assert unit.shape == (32, 32, 3)
    np.testing.assert_allclose(normalise(unit, prep), net)


# --------------------------------------------------------------------------- settings


def test_save_load_round_trip(tmp_path: Path) -> None:
    prep = Preprocessing(
        input_size=128,
        in_channels=1,
        channel_names=["T1-CE"],
        gray_channel=0,
        mean=[0.2],
        std=[0.3],
        threshold=0.4,
        min_component_px=12,
        keep_largest=True,
    )
    path = prep.save(tmp_path)
    assert path == tmp_path / PREPROCESSING_FILE
    assert json.loads(path.read_text())["input_size"] == 128
    assert Preprocessing.load(tmp_path) == prep


def test_load_tolerates_unknown_and_missing_keys(tmp_path: Path) -> None:
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps({"input_size": 96.0, "future_setting": 1}))
    prep = Preprocessing.load(tmp_path)
    assert prep.input_size == 96 and isinstance(prep.input_size, int)
    assert prep == Preprocessing(input_size=96)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"threshold": 2}', '{"mean": "abc"}'])
def test_load_rejects_a_broken_file(tmp_path: Path, content: str) -> None:
    (tmp_path / PREPROCESSING_FILE).write_text(content)
    with pytest.raises(ValueError, match=PREPROCESSING_FILE):
        Preprocessing.load(tmp_path)


def test_load_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Preprocessing.load(tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 2},
        {"input_size": 100},
        {"input_size": 0},
        {"input_size": 16},
        {"input_size": "256"},
        {"input_size": 256.5},
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": float("nan")},
        {"std": [1.0, 0.0, 1.0]},
        {"std": [-1.0]},
        {"std": [float("nan")] * 3},
        {"mean": [0.0, 0.0]},
        {"mean": [float("inf")] * 3},
        {"gray_channel": 3},
        {"gray_channel": -2},
        {"min_component_px": -1},
    ],
)
def test_invalid_values_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Preprocessing(**kwargs)


def test_single_mean_and_std_expand() -> None:
    prep = Preprocessing(in_channels=3, mean=[0.5], std=[0.25])
    assert prep.mean == [0.5, 0.5, 0.5] and prep.std == [0.25, 0.25, 0.25]
    gray = Preprocessing(in_channels=1)  # the 3-channel defaults (all equal) fit a 1-channel model
    assert gray.mean == [0.0] and gray.std == [1.0]
    assert Preprocessing(in_channels=1, mean=[0.2] * 3, std=[0.3] * 3).mean == [0.2]
    with pytest.raises(ValueError, match="mean needs 1 values, got 3"):
        Preprocessing(in_channels=1, mean=[0.1, 0.2, 0.3])


def test_percentile_norm_moves_the_head_percentile_to_the_target() -> None:
    """Two scans of one head, one twice as bright (another scanner's gain), become the same input."""
    rng = np.random.default_rng(0)
    head = np.zeros((64, 64), dtype=np.float32)
    head[8:56, 8:56] = rng.uniform(0.1, 0.4, size=(48, 48))
    prep = Preprocessing(
        input_size=64, in_channels=1, intensity_norm="percentile", norm_target=0.6, mean=[0.0], std=[1.0]
    )
    dim = prepare_unit((head * 255).astype(np.uint8), prep)
    bright = prepare_unit((head * 2 * 255).astype(np.uint8), prep)
    inside = dim[..., 0][dim[..., 0] > 0.02]
    assert np.percentile(inside, 99) == pytest.approx(0.6, abs=0.01)
    np.testing.assert_allclose(dim, bright, atol=0.02)
    assert dim[0, 0, 0] == 0.0  # background stays background


def test_percentile_norm_leaves_an_empty_image_alone() -> None:
    prep = Preprocessing(in_channels=1, intensity_norm="percentile", mean=[0.0], std=[1.0])
    assert not prepare_unit(np.zeros((32, 32), np.uint8), prep).any()


def test_weights_without_the_norm_fields_load_as_before(tmp_path: Path) -> None:
    """preprocessing.json written before intensity_norm existed: no normalisation, same input."""
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps({"input_size": 64, "threshold": 0.4}))
    prep = Preprocessing.load(tmp_path)
    assert prep.intensity_norm == "none"
    image = np.random.default_rng(1).integers(0, 120, size=(40, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_unit(image, prep), letterbox(to_unit_range(image), 64))


def test_the_planes_weights_were_trained_on_are_recorded_only_when_known(tmp_path: Path) -> None:
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps({"input_size": 64}))
    assert Preprocessing.load(tmp_path).planes is None  # older weights: unknown, and the app says nothing
    assert Preprocessing(planes=["sagittal", "axial"]).planes == ["axial", "sagittal"]  # in PLANES order
    assert Preprocessing(planes="coronal").planes == ["coronal"]
    for bad in ([], ["oblique"], ["axial", 1]):
        with pytest.raises(ValueError, match="planes must list"):
            Preprocessing(planes=bad)


@pytest.mark.parametrize(
    "kwargs", [{"intensity_norm": "zscore"}, {"norm_percentile": 20.0}, {"norm_target": 0.0}, {"norm_target": True}]
)
def test_invalid_norm_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Preprocessing(**kwargs)
