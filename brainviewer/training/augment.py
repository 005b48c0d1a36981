"""Training augmentations (albumentations) and tumour-aware random crops."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


def build_augmentation(strength: str) -> A.Compose | None:
    """The augmentation pipeline for ``strength`` (none, light, medium, strong).

    It acts on an ``(S, S, C)`` float32 unit-range image and its ``(S, S)`` uint8 mask.
    """
    if strength == "none":
        return None
    ops: list[A.BasicTransform] = [A.HorizontalFlip(p=0.5)]
    if strength in ("medium", "strong"):
        big = strength == "strong"
        ops += [
            A.Affine(
                scale=(0.85, 1.15) if big else (0.9, 1.1),
                translate_percent=(-0.08, 0.08) if big else (-0.05, 0.05),
                rotate=(-20, 20) if big else (-12, 12),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.6,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=0.15 if big else 0.1, contrast_limit=0.15 if big else 0.1, p=0.5
            ),
        ]
    if strength == "strong":
        ops += [
            A.VerticalFlip(p=0.1),
            A.ElasticTransform(alpha=30, sigma=6, p=0.2),
            A.RandomGamma(gamma_limit=(85, 115), p=0.3),
        ]
    elif strength not in ("light", "medium"):
        raise ValueError(f"augmentation strength must be none, light, medium or strong; got {strength!r}")
    return A.Compose(ops, seed=0)


def apply_augmentation(
    pipeline: A.Compose | None, image: np.ndarray, mask: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``pipeline`` reproducibly: the same ``seed`` always gives the same result."""
    if pipeline is None:
        return image, mask
    pipeline.set_random_seed(seed)
    out = pipeline(image=image, mask=mask)
    return np.clip(out["image"], 0.0, 1.0).astype(np.float32, copy=False), out["mask"]


def copy_missing_sequences(image: np.ndarray, rng: np.random.Generator, prob: float, source: int = 1) -> np.ndarray:
    """Mimic a patient scanned without some sequences, the way ``kaggle_3m`` stores one.

    Its slices have 3 channels (pre-contrast, FLAIR, post-contrast); where a sequence is missing
    the FLAIR image fills its channel. With probability ``prob`` this copies channel ``source``
    into the others: half the time into all of them, else into one chosen at random. A model
    trained only on complete scans misses much of the tumour on such patients.

    Args:
        image: ``(H, W, C)`` float32; with fewer than 2 channels it is returned as is.
        rng: the sample's random generator.
        prob: chance of the change, in ``[0, 1]``.
        source: the channel that stands in for missing ones (FLAIR, 1, in ``kaggle_3m``).

    Returns:
        The image, changed or not (a new array when changed).
    """
    channels = image.shape[-1] if image.ndim == 3 else 1
    if channels < 2 or prob <= 0 or rng.random() >= prob:
        return image
    others = [c for c in range(channels) if c != source]
    targets = others if rng.random() < 0.5 else [others[int(rng.integers(len(others)))]]
    image = image.copy()
    for channel in targets:
        image[..., channel] = image[..., source]
    return image


INTENSITY_GAIN = (0.75, 1.33)
"""Range of the per-channel intensity gain of :func:`vary_intensity` (log-uniform)."""
INTENSITY_GAMMA = (0.7, 1.5)
"""Range of the per-channel gamma of :func:`vary_intensity` (log-uniform)."""
BIAS_FIELD_COEFF = (-0.3, 0.3)
"""Range of the Legendre coefficients of :func:`vary_intensity`'s bias field (MONAI ``RandBiasField``, degree 3)."""


def vary_intensity(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Mimic another scanner or hospital: each channel's intensities get their own gain and gamma, and the
    image a smooth multiplicative bias field (MONAI's ``RandBiasField``: ``exp`` of a degree-3 Legendre
    polynomial), the differences an intensity normalisation leaves between sites.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` float32 in unit range.
        rng: the sample's random generator.
        prob: chance of the change, in ``[0, 1]``.

    Returns:
        The image, changed or not (a new array, clipped to ``[0, 1]``, when changed).
    """
    if prob <= 0 or rng.random() >= prob:
        return image
    from monai.transforms import RandBiasField

    planar = image[..., None] if image.ndim == 2 else image
    channels = planar.shape[-1]
    gain = np.exp(rng.uniform(*np.log(INTENSITY_GAIN), channels)).astype(np.float32)
    gamma = np.exp(rng.uniform(*np.log(INTENSITY_GAMMA), channels)).astype(np.float32)
    out = np.clip(planar, 0.0, 1.0) ** gamma * gain
    bias = RandBiasField(degree=3, coeff_range=BIAS_FIELD_COEFF, prob=1.0)
    bias.set_random_state(seed=int(rng.integers(2**31)))
    out = np.asarray(bias(np.moveaxis(out, -1, 0).astype(np.float32)))  # MONAI is channel-first
    out = np.clip(np.moveaxis(out, 0, -1), 0.0, 1.0).astype(np.float32)
    return out[..., 0] if image.ndim == 2 else out


def random_crop(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator, tumour_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size x size`` crop; with probability ``tumour_prob`` (when there is tumour) it is
    centred on a random tumour pixel (clamped to the image)."""
    height, width = mask.shape
    if size >= height and size >= width:
        return image, mask
    ys, xs = np.nonzero(mask) if rng.random() < tumour_prob else ((), ())
    if len(ys):
        k = int(rng.integers(len(ys)))
        top = int(np.clip(ys[k] - size // 2, 0, height - size))
        left = int(np.clip(xs[k] - size // 2, 0, width - size))
    else:
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]
