"""Synthetic phantom slices and the phantom dataset writer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.datasets import open_dataset
from brainviewer.data.io import read_image, read_mask
from brainviewer.data.phantom import phantom_slice, write_phantom_dataset


def test_same_seed_same_slice_other_seed_other_slice() -> None:
    image_a, mask_a = phantom_slice(seed=3, size=64)
    image_b, mask_b = phantom_slice(seed=3, size=64)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    image_c, mask_c = phantom_slice(seed=4, size=64)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(mask_a, mask_c)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_types(size: int) -> None:
    image, mask = phantom_slice(seed=0, size=size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == bool


@pytest.mark.parametrize("seed", range(12))
def test_tumour_lies_inside_the_brain(seed: int) -> None:
    size = 128
    image, mask = phantom_slice(seed=seed, size=size, tumour=True, position=0.5)
    assert mask.any()
    # At position 0.5 the brain is the ellipse with radii 0.40 (rows) and 0.32 (columns) of the
    # side, centred in the slice.
    rows, cols = np.nonzero(mask)
    r = ((rows / size - 0.5) / 0.40) ** 2 + ((cols / size - 0.5) / 0.32) ** 2
    assert r.max() < 1.0
    # The tumour is bright on FLAIR: channel 1 is base + 0.35 inside the mask, channel 0 is 0.9 x base
    # everywhere (plus noise of sd 0.02), so FLAIR - pre / 0.9 is about 0.35 x 255 = 89 in the tumour
    # and about 0 in the rest of the brain.
    excess = image[..., 1].astype(float) - image[..., 0].astype(float) / 0.9
    yy, xx = np.mgrid[0:size, 0:size] / size
    brain = ((yy - 0.5) / 0.40) ** 2 + ((xx - 0.5) / 0.32) ** 2 < 1.0
    assert 80 < np.median(excess[mask]) < 98
    assert abs(np.median(excess[brain & ~mask])) < 6
    # Outside the skull there is only faint noise.
    head = ((yy - 0.5) / 0.40) ** 2 + ((xx - 0.5) / 0.32) ** 2 < 1.18
    assert image[~head].mean() < 5


@pytest.mark.parametrize("position", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_tumour_free_slices_have_empty_masks(position: float) -> None:
    for seed in range(5):
        image, mask = phantom_slice(seed=seed, size=64, tumour=False, position=position)
        assert not mask.any()
        assert image.any()  # there is still a head to look at


def test_tumour_slices_near_the_ends_still_have_a_tumour() -> None:
    for seed in range(10):
        for position in (0.05, 0.95):
            assert phantom_slice(seed=seed, size=64, tumour=True, position=position)[1].any()


def test_phantom_dataset_opens_as_kaggle_3m(phantom_dataset: Path) -> None:
    dataset = open_dataset(phantom_dataset)
    assert dataset.kind == "kaggle_3m"
    assert dataset.patient_ids == [f"PHANTOM_{p:02d}_20000101" for p in range(6)]
    assert len(dataset) == 6 * 8
    for pid, records in dataset.patients.items():
        assert [r.name for r in records] == [f"{pid}_{n}.png" for n in range(1, 9)]
        tumour = [n for n, r in enumerate(records, start=1) if read_mask(r.mask_path).any()]
        # Slice n sits at (n - 0.5) / 8; tumours are drawn for positions 0.25..0.75: slices 3..6.
        assert tumour == [3, 4, 5, 6]
        image = read_image(records[0].image_path)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_write_phantom_dataset_is_reproducible(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}

    first = write_phantom_dataset(tmp_path / "a", patients=2, slices=4, size=32, seed=5)
    second = write_phantom_dataset(tmp_path / "b", patients=2, slices=4, size=32, seed=5)
    other = write_phantom_dataset(tmp_path / "c", patients=2, slices=4, size=32, seed=6)
    assert first == tmp_path / "a"
    assert len(digest(first)) == 2 * 4 * 2
    assert digest(first) == digest(second)
    assert digest(first) != digest(other)
    # The files hold exactly phantom_slice's output (PNG is lossless).
    image, mask = phantom_slice(seed=5 * 100003 + 1 * 1009 + 2, size=32, tumour=True, position=1.5 / 4)
    folder = first / "PHANTOM_01_20000101"
    np.testing.assert_array_equal(read_image(folder / "PHANTOM_01_20000101_2.png"), image)
    np.testing.assert_array_equal(read_mask(folder / "PHANTOM_01_20000101_2_mask.png"), mask)
