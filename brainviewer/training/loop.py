"""The training loop: one readable function, resumable, single process or DDP.

A run folder holds::

    config.json       the TrainConfig (also copied into every checkpoint)
    split.json        the patient split
    metrics.jsonl     one JSON object a line: training steps, validations, events
    status.json       state (running, finished, stopped, failed), pid, progress
    train.log         the log
    last.pt           the latest checkpoint (model, optimiser, counters), written atomically
    best/             weights folder of the best validation per-patient Dice
    STOP              created by a user to ask the run to stop at the next step

All randomness (slice order, crops, augmentation) is derived from
``(seed, epoch, position)``, so a killed run resumed from ``last.pt`` continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from brainviewer.data.datasets import Dataset, load_arrays, open_dataset
from brainviewer.data.split import Split, base_trained_val, split_for_config, weights_split
from brainviewer.evaluation.evaluate import (
    EvaluationReport,
    choose_postprocessing,
    default_sweep,
    evaluate_probs,
    with_setting,
)
from brainviewer.files import write_atomic
from brainviewer.model.preprocessing import (
    GRAY_CHANNEL_NAME,
    LGG_CHANNEL_NAMES,
    Preprocessing,
    is_grayscale,
    letterbox,
    normalise,
    prepare_unit,
)
from brainviewer.model.segmenter import Segmenter, build_model, load_model, save_weights
from brainviewer.runs.layout import BEST, CHECKPOINT, METRICS_FILE, STATUS_FILE, STOP_FILE
from brainviewer.training.augment import apply_augmentation, build_augmentation, copy_missing_sequences, random_crop
from brainviewer.training.config import TrainConfig
from brainviewer.training.losses import get_loss

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data
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
        for i, record in enumerate(dataset):
            image, mask = load_arrays(dataset, record)
            images[i] = prepare_unit(image, prep)
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


# ----------------------------------------------------------------------------- schedule
def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay, as a pure function of the global step."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- run files
def atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class RunState:
    """Counters saved in every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_dice: float = -1.0
    best_epoch: int = -1
    bad_validations: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def write_status(run_dir: Path, state: str, **extra: object) -> None:
    """Write ``status.json`` (state: running, finished, stopped, failed, early_stopped)."""
    status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(), **extra}
    write_atomic(run_dir / STATUS_FILE, json.dumps(status, indent=2) + "\n")


def append_metrics(run_dir: Path, record: dict) -> None:
    with (run_dir / METRICS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, global_step: int, epoch: int | None = None) -> None:
    """Drop metrics written after the checkpoint we resume from (they will be replayed).

    Events are kept. Training records after ``global_step`` go; so do validations of
    epochs the checkpoint has not finished (``epoch`` and later: a checkpoint taken at the
    last step of an epoch precedes that epoch's validation, which is repeated) and the
    ``final`` record (a resumed run chooses its post-processing again).
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by the kill
        kind = record.get("type")
        if kind == "event":
            kept.append(line)
        elif kind == "final":
            continue
        elif record.get("step", 0) <= global_step and not (
            kind == "val" and epoch is not None and record.get("epoch", -1) >= epoch
        ):
            kept.append(line)
    write_atomic(path, "".join(k + "\n" for k in kept))


def remove_stale_files(run_dir: Path) -> None:
    """Remove what a killed process may have left: temporary checkpoint and weights files."""
    import shutil

    for path in run_dir.glob(f".{CHECKPOINT}.tmp*"):
        path.unlink(missing_ok=True)
    moved_aside = sorted(run_dir.glob(f".{BEST}.old-*"))
    if moved_aside and not (run_dir / BEST).exists():  # killed between the two renames of save_weights
        os.replace(moved_aside.pop(), run_dir / BEST)
    for path in run_dir.glob(f".{BEST}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def new_run_dir(config: TrainConfig) -> Path:
    name = config.run_name or f"{datetime.now():%Y%m%d-%H%M%S}-{config.arch}-{config.encoder}"
    run_dir = Path(config.out_dir) / name
    if run_dir.exists():
        raise FileExistsError(
            f"run folder {run_dir} already exists; resume it with --resume or pick another --run-name"
        )
    run_dir.mkdir(parents=True)
    return run_dir


# ----------------------------------------------------------------------------- validation
def validate(
    segmenter: Segmenter, val_set: Dataset, sweep: bool = False
) -> tuple[EvaluationReport, list[EvaluationReport]]:
    """Per-patient scores on the validation patients at the model's threshold (and a sweep)."""
    prep = segmenter.prep
    base = (prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest)
    settings = [base] + (default_sweep(base[0]) if sweep else [])
    reports = evaluate_probs(val_set, lambda scans: segmenter.predict_probs_batch(scans, 16), settings)
    return reports[0], reports


# ----------------------------------------------------------------------------- main loop
def _setup_logging(run_dir: Path, rank: int) -> list[logging.Handler]:
    """Log to ``run_dir/train.log`` (and stderr if nothing else does); returns the handlers added."""
    if rank != 0:
        return []
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    added: list[logging.Handler] = [handler]
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        root.addHandler(stream)
        added.append(stream)
    return added


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return torch.device(config.device)


def train(config: TrainConfig | None = None, resume: str | Path | None = None) -> Path:
    """Train a model; returns the run folder.

    Args:
        config: the run's configuration (ignored when resuming: the run's own is used).
        resume: a run folder to continue from its ``last.pt``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    distributed = world > 1

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json); give a folder made by train")
        config = TrainConfig.load(run_dir / "config.json")
    elif config is None:
        raise ValueError("give a config or a run folder to resume")
    dataset = open_dataset(config.data)  # before creating the run folder: a bad path leaves nothing behind
    device = _device(config, local_rank)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if resume is None:
        if rank == 0:
            run_dir = new_run_dir(config)
            config.save(run_dir / "config.json")
        if distributed:
            names = [str(run_dir) if rank == 0 else None]
            dist.broadcast_object_list(names, src=0)
            run_dir = Path(names[0])
    handlers = _setup_logging(run_dir, rank)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    stop_requested = {"flag": False}

    def _on_signal(signum: int, _frame: object) -> None:
        logger.info("signal %d: will checkpoint and stop", signum)
        stop_requested["flag"] = True

    # signal handlers can only be set from the main thread (the app may train in a worker thread)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _on_signal) if in_main_thread else None

    try:
        return _train(config, dataset, run_dir, resume is not None, device, rank, world, stop_requested)
    except KeyboardInterrupt:
        if rank == 0:
            logger.info("interrupted; resume from the last checkpoint with --resume %s", run_dir)
            write_status(run_dir, "stopped", error="interrupted (KeyboardInterrupt); resume from the last checkpoint")
        raise
    except Exception as err:
        if rank == 0:
            logger.exception("training failed")
            write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
        root = logging.getLogger()
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    resuming: bool,
    device: torch.device,
    rank: int,
    world: int,
    stop: dict,
) -> Path:
    t_start = time.time()
    if rank == 0 and not resuming:
        split = split_for_config(dataset.patient_ids, config)
        split.save(run_dir / "split.json")
    if rank == 0 and resuming:
        remove_stale_files(run_dir)
        if (run_dir / STOP_FILE).exists():  # a stop request the run already obeyed
            (run_dir / STOP_FILE).unlink()
            logger.info("removed the old STOP file")
    if world > 1:
        dist.barrier()
    split = Split.load(run_dir / "split.json")
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

    # model and preprocessing
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
    norm_changed = bool(config.intensity_norm) and config.intensity_norm != prep.intensity_norm
    if norm_changed:  # the base's mean and std describe other input, so they are measured again below
        prep.intensity_norm = config.intensity_norm
    kind = scan_kind(train_set)
    if prep.in_channels == 3 and kind is not None:  # what the model learns to read, for the app and the card
        prep.channel_names = [GRAY_CHANNEL_NAME] * 3 if kind == GRAY_CHANNEL_NAME else list(LGG_CHANNEL_NAMES)
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

    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
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
        append_metrics(
            run_dir,
            {
                "type": "event",
                "event": "resumed" if restored else "started",
                "step": state.global_step,
                "time": time.time(),
            },
        )
    net, net_frozen = model, None

    loss_fn = get_loss(config.loss)
    pipeline = build_augmentation(config.augment)
    use_amp = config.amp and device.type == "cuda"
    per_step = config.batch_size * world
    steps_per_epoch = max(1, len(epoch_order(cache, config, 0)) // per_step)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    segmenter = Segmenter(model, prep, device, name=run_dir.name, source=str(run_dir))

    def checkpoint_now() -> None:
        if rank != 0:
            return
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": asdict(state),
                "preprocessing": asdict(prep),
                "config": asdict(config),
            },
            run_dir / CHECKPOINT,
        )

    def should_stop() -> bool:
        flag = stop["flag"] or (run_dir / STOP_FILE).exists()
        if world > 1:
            t = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
            dist.all_reduce(t)
            flag = bool(t.item())
        return flag

    if rank == 0:
        write_status(run_dir, "running", epoch=state.epoch, global_step=state.global_step, total_steps=total_steps)
    seen_images, t_window = 0, time.time()
    finished_reason = "finished"
    while state.epoch < config.epochs:
        epoch = state.epoch
        frozen = epoch < config.freeze_encoder_epochs
        for p in model.encoder.parameters():
            p.requires_grad_(not frozen)
        if world > 1 and frozen is not net_frozen:
            # DDP registers the parameters that require grad when it is built: rebuild it when that changes
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            net_frozen = frozen
        order = epoch_order(cache, config, epoch)
        model.train()
        progress = _progress_bar(rank, steps_per_epoch, state.step_in_epoch, epoch, config.epochs)
        batches = iter(
            batch_loader(
                EpochBatches(
                    cache, config, prep, pipeline, order, epoch, rank, world, state.step_in_epoch, steps_per_epoch
                ),
                config.workers,
                pin_memory=device.type == "cuda",
            )
        )
        while state.step_in_epoch < steps_per_epoch:
            if config.max_steps and state.global_step >= config.max_steps:
                break
            if should_stop():
                checkpoint_now()
                if rank == 0:
                    (run_dir / STOP_FILE).unlink(missing_ok=True)  # obeyed: resuming must not stop again
                    write_status(
                        run_dir, "stopped", epoch=epoch, global_step=state.global_step, total_steps=total_steps
                    )
                    append_metrics(
                        run_dir, {"type": "event", "event": "stopped", "step": state.global_step, "time": time.time()}
                    )
                    logger.info(
                        "stopped at epoch %d step %d; resume with --resume %s", epoch, state.step_in_epoch, run_dir
                    )
                return run_dir
            t_step = time.time()
            images, targets = next(batches)
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            lr = learning_rate(config, state.global_step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(step_seed(config.seed, epoch, state.step_in_epoch, rank))  # dropout, replayable
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(images)
            loss = loss_fn(logits.float(), targets)
            loss.backward()
            optimizer.step()
            state.step_in_epoch += 1
            state.global_step += 1
            elapsed = time.time() - t_step
            state.train_seconds += elapsed
            seen_images += images.shape[0] * world
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if rank == 0 and (state.global_step % config.log_every == 0 or state.step_in_epoch == steps_per_epoch):
                now = time.time()
                ips = seen_images / max(1e-9, now - t_window)
                seen_images, t_window = 0, now
                remaining = total_steps - state.global_step
                record = {
                    "type": "train",
                    "step": state.global_step,
                    "epoch": epoch,
                    "epoch_progress": state.step_in_epoch / steps_per_epoch,
                    "loss": float(loss.item()),
                    "lr": lr,
                    "images_per_s": ips,
                    "eta_s": remaining * per_step / max(ips, 1e-9),
                    "total_steps": total_steps,
                    "time": now,
                }
                append_metrics(run_dir, record)
                write_status(
                    run_dir,
                    "running",
                    epoch=epoch,
                    global_step=state.global_step,
                    total_steps=total_steps,
                    eta_s=record["eta_s"],
                    images_per_s=ips,
                )
            if config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0:
                checkpoint_now()
        if progress is not None:
            progress.close()
        if config.max_steps and state.global_step >= config.max_steps and state.step_in_epoch < steps_per_epoch:
            finished_reason = "finished"
            _validate_and_record(segmenter, val_set, run_dir, config, state, prep, rank, world, device, final=True)
            checkpoint_now()
            break
        # end of epoch: validate, keep the best, checkpoint
        improved = _validate_and_record(segmenter, val_set, run_dir, config, state, prep, rank, world, device)
        state.epoch += 1
        state.step_in_epoch = 0
        if not improved:
            state.bad_validations += 1
        checkpoint_now()
        if config.early_stop_patience and state.bad_validations >= config.early_stop_patience:
            finished_reason = "early_stopped"
            logger.info("early stop: no better validation Dice for %d epochs", state.bad_validations)
            break
        if config.max_steps and state.global_step >= config.max_steps:
            break

    if rank == 0:
        _finalise(run_dir, segmenter, val_set, config, state)
        write_status(
            run_dir,
            finished_reason,
            epoch=state.epoch,
            global_step=state.global_step,
            total_steps=total_steps,
            best_dice=state.best_dice,
            best_epoch=state.best_epoch,
            wall_seconds=time.time() - t_start,
        )
        append_metrics(
            run_dir, {"type": "event", "event": finished_reason, "step": state.global_step, "time": time.time()}
        )
    if world > 1:
        dist.barrier()
    return run_dir


def _progress_bar(rank: int, total: int, initial: int, epoch: int, epochs: int):
    if rank != 0:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch + 1}/{epochs}",
        leave=False,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    )


def _validate_and_record(
    segmenter: Segmenter,
    val_set: Dataset,
    run_dir: Path,
    config: TrainConfig,
    state: RunState,
    prep: Preprocessing,
    rank: int,
    world: int,
    device: torch.device,
    final: bool = False,
) -> bool:
    """Validate on rank 0, save the best weights; every rank learns whether it improved."""
    improved = False
    if rank == 0:
        t0 = time.time()
        segmenter.model.eval()
        report, _ = validate(segmenter, val_set)
        segmenter.model.train()
        summary = report.summary()
        improved = report.mean_dice > state.best_dice
        if improved:
            state.best_dice, state.best_epoch, state.bad_validations = report.mean_dice, state.epoch, 0
            save_best(segmenter, run_dir, config, state, summary)
        record = {
            "type": "val",
            "step": state.global_step,
            "epoch": state.epoch,
            "val_dice_mean": report.mean_dice,
            "val_dice_median": report.median_dice,
            "val_micro_dice": report.micro_dice,
            "val_fp_rate": report.fp_rate,
            "val_tumour_slice_dice": summary["mean_tumour_slice_dice"],
            "val_dice_per_patient": {p.patient_id: p.volume_dice for p in report.patients},
            "best": improved,
            "seconds": time.time() - t0,
            "time": time.time(),
        }
        append_metrics(run_dir, record)
        state.history.append({k: record[k] for k in ("epoch", "step", "val_dice_mean", "val_fp_rate")})
        logger.info(
            "epoch %d validation: mean Dice %.4f median %.4f FP rate %s%s (%.0fs)",
            state.epoch + 1,
            report.mean_dice,
            report.median_dice,
            "n/a" if report.fp_rate is None else f"{report.fp_rate:.3f}",
            " (best)" if improved else "",
            time.time() - t0,
        )
    if world > 1:
        flag = torch.tensor([int(improved)], device=device if device.type == "cuda" else "cpu")
        dist.broadcast(flag, src=0)
        improved = bool(flag.item())
    return improved


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


def save_best(
    segmenter: Segmenter,
    run_dir: Path,
    config: TrainConfig,
    state: RunState,
    summary: dict,
    extra: dict[str, str] | None = None,
) -> None:
    """Atomically replace ``run_dir/best`` with the current weights and a model card."""
    from brainviewer.model.modelcard import render_card

    card = render_card(config, state, summary, run_dir, segmenter.prep.channel_names)
    files = {
        "train_config.json": config.to_json(),
        "split.json": (run_dir / "split.json").read_text(),
        "validation.json": json.dumps(summary, indent=2) + "\n",
        **(extra or {}),
    }
    save_weights(segmenter.model, run_dir / BEST, segmenter.prep, card=card, extra_files=files, overwrite=True)


def _finalise(run_dir: Path, segmenter: Segmenter, val_set: Dataset, config: TrainConfig, state: RunState) -> None:
    """Choose threshold and post-processing on validation data for the best weights."""
    best_dir = run_dir / BEST
    if not best_dir.is_dir():
        return
    best = Segmenter.from_folder(best_dir, device=segmenter.device)
    chosen, candidates = choose_postprocessing(best, val_set)
    best.prep = with_setting(best.prep, chosen)
    summary = chosen.summary()
    logger.info(
        "chosen on validation: threshold %.2f, min component %d px, largest 3-D component %s, flip TTA %s"
        " -> mean Dice %.4f, FP rate %s",
        chosen.threshold,
        chosen.min_component_px,
        chosen.volume_keep_largest,
        chosen.tta_flip,
        chosen.mean_dice,
        chosen.fp_rate,
    )
    table = [report.summary() for report in candidates]
    save_best(best, run_dir, config, state, summary, {"threshold_sweep.json": json.dumps(table, indent=2) + "\n"})
    append_metrics(run_dir, {"type": "final", "step": state.global_step, **summary, "time": time.time()})
