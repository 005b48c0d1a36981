"""Setting a training run up: the run folder, the split, the model and its preprocessing, the slice
cache, the optimiser and a restored checkpoint, gathered in one :class:`TrainingSession`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import torch
import torch.distributed as dist

from brainviewer.data.datasets import Dataset
from brainviewer.data.split import Split, base_trained_val, split_for_config, weights_split
from brainviewer.model.gate import attach_head, has_head
from brainviewer.model.preprocessing import GRAY_CHANNEL_NAME, LGG_CHANNEL_NAMES, Preprocessing
from brainviewer.model.segmenter import Segmenter, build_model, load_model
from brainviewer.runs.layout import CHECKPOINT, RUNNING, SPLIT_FILE, STOP_FILE
from brainviewer.training.augment import build_augmentation
from brainviewer.training.config import TrainConfig
from brainviewer.training.data import SliceCache, channel_stats, epoch_order, scan_kind
from brainviewer.training.losses import get_loss
from brainviewer.training.records import (
    RunState,
    append_event,
    remove_stale_files,
    truncate_metrics,
    write_status,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainingSession:
    """Everything one training process holds from set-up to the end of the run.

    Attributes:
        config: the run's configuration.
        run_dir: the run folder.
        rank, world: this process's rank and the number of processes.
        device: where the model trains.
        stop: ``{"flag": bool}``, set by the SIGTERM handler to ask for a stop.
        model: the network (``net`` wraps it in DistributedDataParallel when ``world > 1``).
        optimizer: its AdamW optimiser.
        prep: the preprocessing the weights are saved with.
        state: the counters saved in every checkpoint.
        cache: the training slices.
        val_set: the validation slices.
        segmenter: ``model`` with ``prep``, for validation.
        steps_per_epoch, total_steps: the run's length in optimisation steps.
        seen_images, t_window: images trained on since ``t_window``, for the throughput.
    """

    config: TrainConfig
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    stop: dict[str, bool]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    prep: Preprocessing
    state: RunState
    cache: SliceCache
    val_set: Dataset
    segmenter: Segmenter
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    pipeline: A.Compose | None
    use_amp: bool
    steps_per_epoch: int
    total_steps: int
    net: torch.nn.Module
    net_frozen: bool | None = None
    seen_images: int = 0
    t_window: float = 0.0


def open_session(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    resuming: bool,
    device: torch.device,
    rank: int,
    world: int,
    stop: dict[str, bool],
) -> TrainingSession:
    """Prepare the run folder, load the split, build (or fine-tune) the model, cache the slices,
    restore the checkpoint if there is one, and record that the run started or resumed."""
    prepare_run_folder(config, dataset, run_dir, resuming, rank, world)
    train_set, val_set = load_split(config, dataset, run_dir, rank)
    model, prep, norm_changed = model_and_preprocessing(config, train_set)
    cache = cache_slices(config, train_set, prep, norm_changed)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state, prep = restore_checkpoint(run_dir, resuming, rank, model, optimizer, prep)
    steps_per_epoch = max(1, len(epoch_order(cache, config, 0)) // (config.batch_size * world))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    session = TrainingSession(
        config=config,
        run_dir=run_dir,
        rank=rank,
        world=world,
        device=device,
        stop=stop,
        model=model,
        optimizer=optimizer,
        prep=prep,
        state=state,
        cache=cache,
        val_set=val_set,
        segmenter=Segmenter(model, prep, device, name=run_dir.name, source=str(run_dir)),
        loss_fn=get_loss(config.loss),
        pipeline=build_augmentation(config.augment),
        use_amp=use_amp(config, device),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        net=model,
    )
    if rank == 0:
        write_status(run_dir, RUNNING, epoch=state.epoch, global_step=state.global_step, total_steps=total_steps)
    session.t_window = time.time()  # the throughput window opens now
    return session


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports): ``cpu_amp`` pays off."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_amp(config: TrainConfig, device: torch.device) -> bool:
    """Whether steps (and, on CPU, validation) run under bf16 autocast: ``amp`` on CUDA, ``cpu_amp`` on
    a CPU with native bf16 (oneDNN says so); float32 otherwise."""
    if device.type == "cuda":
        return config.amp
    if not config.cpu_amp:
        return False
    if not cpu_bf16_supported():
        logger.warning("cpu_amp: this CPU has no native bf16 (AVX512-BF16 or AMX); training in float32")
        return False
    return True


def prepare_run_folder(
    config: TrainConfig, dataset: Dataset, run_dir: Path, resuming: bool, rank: int, world: int
) -> None:
    """Write the split of a new run, or clean up what a killed or stopped one left; all ranks wait for it."""
    if rank == 0 and not resuming:
        split = split_for_config(dataset.patient_ids, config)
        split.save(run_dir / SPLIT_FILE)
    if rank == 0 and resuming:
        remove_stale_files(run_dir)
        if (run_dir / STOP_FILE).exists():  # a stop request the run already obeyed
            (run_dir / STOP_FILE).unlink()
            logger.info("removed the old STOP file")
    if world > 1:
        dist.barrier()


def load_split(config: TrainConfig, dataset: Dataset, run_dir: Path, rank: int) -> tuple[Dataset, Dataset]:
    """The training and validation slices of the run's split; warns when a fine-tuned base trained on
    validation patients."""
    split = Split.load(run_dir / SPLIT_FILE)
    train_set, val_set = dataset.subset(split.train), dataset.subset(split.val)
    logger.info(
        "data %s: %d train patients (%d slices), %d validation patients (%d slices)",
        config.data,
        len(split.train),
        len(train_set),
        len(split.val),
        len(val_set),
    )
    if config.init_weights and rank == 0:
        trained_on = base_trained_val(split, weights_split(config.init_weights))
        if trained_on:
            logger.warning(
                "%d of the %d validation patients were in the base model's training set (%s): validation "
                "figures will flatter this run. Keep them held out with --split-file %s",
                len(trained_on),
                len(split.val),
                ", ".join(trained_on[:5]) + (", ..." if len(trained_on) > 5 else ""),
                config.init_weights,
            )
    return train_set, val_set


def model_and_preprocessing(config: TrainConfig, train_set: Dataset) -> tuple[torch.nn.Module, Preprocessing, bool]:
    """A new seeded model, or the base weights to fine-tune, with the preprocessing they read by;
    also whether the intensity normalisation changed (the mean and std must be measured again)."""
    if config.init_weights:
        model, prep = load_model(config.init_weights)
        logger.info("fine-tuning from %s", config.init_weights)
    else:
        torch.manual_seed(config.seed)
        model = build_model(config.arch, config.encoder, in_channels=config.in_channels)
        names = list(LGG_CHANNEL_NAMES) if config.in_channels == 3 else [GRAY_CHANNEL_NAME]
        prep = Preprocessing(
            input_size=config.input_size,
            in_channels=config.in_channels,
            channel_names=names,
            mean=[0.0] * config.in_channels,
            std=[1.0] * config.in_channels,
        )
    if config.tumour_head and not has_head(model):
        attach_head(model)  # trained with the segmentation; its gate threshold is chosen at the end of the run
    prep.tumour_gate = None  # a base model's threshold does not hold for the head once it trains on
    norm_changed = bool(config.intensity_norm) and config.intensity_norm != prep.intensity_norm
    if norm_changed:  # the base's mean and std describe other input, so they are measured again below
        prep.intensity_norm = config.intensity_norm
    kind = scan_kind(train_set)
    if prep.in_channels == 3 and kind is not None:  # what the model learns to read, for the app and the card
        prep.channel_names = [GRAY_CHANNEL_NAME] * 3 if kind == GRAY_CHANNEL_NAME else list(LGG_CHANNEL_NAMES)
    return model, prep, norm_changed


def cache_slices(config: TrainConfig, train_set: Dataset, prep: Preprocessing, norm_changed: bool) -> SliceCache:
    """Cache the training slices; a new model (or a new normalisation) takes its mean and std from them."""
    t0 = time.time()
    cache = SliceCache.build(train_set, prep)
    if not config.init_weights or norm_changed:
        prep.mean, prep.std = channel_stats(cache)
    logger.info(
        "cached %d training slices in %.1fs (%d with tumour); mean %s std %s",
        len(cache.images),
        time.time() - t0,
        int(cache.has_tumour.sum()),
        prep.mean,
        prep.std,
    )
    return cache


def restore_checkpoint(
    run_dir: Path,
    resuming: bool,
    rank: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    prep: Preprocessing,
) -> tuple[RunState, Preprocessing]:
    """Load ``last.pt`` into the model and optimiser when resuming; drop the metrics it had not reached
    and record the start. Returns the counters and preprocessing to continue with."""
    state = RunState()
    restored = resuming and (run_dir / CHECKPOINT).is_file()  # a run launched by the app starts with --resume
    if restored:
        checkpoint = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = RunState(**checkpoint["state"])
        prep = Preprocessing(**checkpoint["preprocessing"])
        logger.info("resumed at epoch %d step %d (global step %d)", state.epoch, state.step_in_epoch, state.global_step)
    if rank == 0:
        truncate_metrics(run_dir, state.global_step, state.epoch)
        append_event(run_dir, "resumed" if restored else "started", state.global_step)
    return state, prep
