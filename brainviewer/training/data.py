"""Training data: slices cached at the network's input size, and the seeded batches of each epoch.

Which slices an epoch visits, in which order, and every crop and augmentation of a slice are
derived from ``(seed, epoch, position)`` alone, so the batches are the same in worker
processes and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from brainviewer.data.datasets import Dataset, load_arrays
from brainviewer.model.preprocessing import (
    GRAY_CHANNEL_NAME,
    Preprocessing,
    is_grayscale,
    letterbox,
    normalise,
    prepare_unit,
    volume_levels,
)
from brainviewer.training.augment import apply_augmentation, copy_missing_sequences, random_crop, vary_intensity
from brainviewer.training.config import TrainConfig


@dataclass
class SliceCache:
    """Training slices held in memory at the network's input size.

    Attributes:
        images: ``(N, S, S, C)`` float16, unit range.
        masks: ``(N, S, S)`` uint8 {0, 1}.
        has_tumour: ``(N,)`` bool.
    """

    images: np.ndarray
    masks: np.ndarray
    has_tumour: np.ndarray

    @classmethod
    def build(cls, dataset: Dataset, prep: Preprocessing) -> SliceCache:
        size, channels = prep.input_size, prep.in_channels
        images = np.zeros((len(dataset), size, size, channels), dtype=np.float16)
        masks = np.zeros((len(dataset), size, size), dtype=np.uint8)
        by_patient: dict[str, list[int]] = {}
        for i, record in enumerate(dataset):
            by_patient.setdefault(record.patient_id, []).append(i)
        for indices in by_patient.values():  # one patient at a time: its levels come from its own slices
            pairs = [load_arrays(dataset, dataset.records[i]) for i in indices]
            levels = volume_levels([image for image, _ in pairs], prep)  # None unless per-patient norm
            for i, (image, mask) in zip(indices, pairs, strict=True):
                images[i] = prepare_unit(image, prep, levels)
                if mask is not None:
                    masks[i] = letterbox(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        return cls(images, masks, masks.reshape(len(masks), -1).any(axis=1))


def epoch_order(cache: SliceCache, config: TrainConfig, epoch: int) -> np.ndarray:
    """Slice indices for ``epoch``: every tumour slice and a seeded share of empty ones, shuffled."""
    rng = np.random.default_rng([config.seed, epoch, 1])
    tumour = np.flatnonzero(cache.has_tumour)
    empty = np.flatnonzero(~cache.has_tumour)
    n_empty = round(len(empty) * config.empty_fraction)
    chosen = np.concatenate([tumour, rng.choice(empty, size=n_empty, replace=False)]) if n_empty else tumour
    if len(chosen) == 0:
        chosen = np.arange(len(cache.has_tumour))
    return rng.permutation(chosen)


def make_sample(
    cache: SliceCache, index: int, config: TrainConfig, prep: Preprocessing, pipeline, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented, cropped, normalised training pair: ``(C, s, s)`` float32, ``(1, s, s)`` float32."""
    rng = np.random.default_rng(seed)
    image = cache.images[index].astype(np.float32)
    mask = cache.masks[index]
    if config.missing_sequence_prob:  # its own stream: the crops and augmentations stay as without it
        image = copy_missing_sequences(image, np.random.default_rng([seed, 3]), config.missing_sequence_prob)
    if config.intensity_augment_prob:  # its own stream too
        image = vary_intensity(image, np.random.default_rng([seed, 4]), config.intensity_augment_prob)
    image, mask = apply_augmentation(pipeline, image, mask, int(rng.integers(2**31)))
    if config.crop_size:
        image, mask = random_crop(image, mask, config.crop_size, rng, config.tumour_crop_prob)
    return normalise(image, prep), mask[None].astype(np.float32)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of slice ``index`` in ``epoch``: fixed, whatever the resume point."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def step_seed(seed: int, epoch: int, step_in_epoch: int, rank: int) -> int:
    """The torch seed of one optimisation step (dropout masks): fixed, whatever the resume point."""
    return int(np.random.SeedSequence([seed, epoch, step_in_epoch, rank, 2]).generate_state(1)[0])


def batch_indices(order: np.ndarray, step_in_epoch: int, rank: int, world: int, batch_size: int) -> np.ndarray:
    """The slices of one process's batch; wraps around when an epoch holds fewer slices than one step."""
    first = (step_in_epoch * world + rank) * batch_size
    return order[np.arange(first, first + batch_size) % len(order)]


class EpochBatches(torch.utils.data.Dataset):
    """The batches one process trains on in one epoch, from step ``start`` on.

    Item ``k`` is the batch of step ``start + k``: ``(images (B, C, s, s) float32, targets
    (B, 1, s, s) float32)``. Every sample is seeded by ``(seed, epoch, slice index)``, so the
    batches are the same whether they are made here or in DataLoader worker processes,
    and whatever step a resumed run starts from.
    """

    def __init__(
        self,
        cache: SliceCache,
        config: TrainConfig,
        prep: Preprocessing,
        pipeline,
        order: np.ndarray,
        epoch: int,
        rank: int,
        world: int,
        start: int,
        steps: int,
    ) -> None:
        self.cache, self.config, self.prep, self.pipeline = cache, config, prep, pipeline
        self.order, self.epoch, self.rank, self.world = order, epoch, rank, world
        self.start, self.steps = start, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = batch_indices(self.order, self.start + k, self.rank, self.world, self.config.batch_size)
        pairs = [
            make_sample(
                self.cache,
                int(i),
                self.config,
                self.prep,
                self.pipeline,
                seed=sample_seed(self.config.seed, self.epoch, int(i)),
            )
            for i in indices
        ]
        return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


def batch_loader(batches: EpochBatches, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Iterate ``batches`` in order, prepared by ``workers`` processes (0 = in this process)."""
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
    )


def channel_stats(cache: SliceCache, max_images: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the cached (unit-range) training images."""
    step = max(1, len(cache.images) // max_images)
    sample = cache.images[::step].astype(np.float32)
    channels = sample.shape[-1]
    flat = sample.reshape(-1, channels)
    return flat.mean(axis=0).round(5).tolist(), np.maximum(flat.std(axis=0), 1e-3).round(5).tolist()


def scan_kind(dataset: Dataset, sample: int = 16) -> str | None:
    """``"grayscale"`` when ``sample`` slices spread over ``dataset`` are all grayscale (2-D, or three
    equal channels), ``"multichannel"`` when all hold distinct channels, ``None`` when mixed or empty."""
    records = list(dataset)
    if not records:
        return None
    picks = [records[i] for i in np.linspace(0, len(records) - 1, min(sample, len(records))).astype(int)]
    kinds = set()
    for record in picks:
        kinds.add(GRAY_CHANNEL_NAME if is_grayscale(dataset.load_image(record)) else "multichannel")
    return kinds.pop() if len(kinds) == 1 else None
