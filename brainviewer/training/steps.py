"""One epoch of optimisation steps: the learning-rate schedule, the step itself, progress records,
stop requests and checkpoints."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict

import torch
import torch.distributed as dist
import torch.nn.functional as F

from brainviewer.model.gate import split_output
from brainviewer.runs.layout import CHECKPOINT, RUNNING, STOP_FILE
from brainviewer.training.config import TrainConfig
from brainviewer.training.data import EpochBatches, batch_loader, epoch_order, step_seed
from brainviewer.training.records import append_metrics, atomic_torch_save, write_status
from brainviewer.training.session import TrainingSession

logger = logging.getLogger(__name__)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up then cosine decay, as a pure function of the global step."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def train_epoch(session: TrainingSession) -> bool:
    """Train the current epoch from its current step to its end (or ``max_steps``).

    Returns False when a stop request (the STOP file or SIGTERM) ended it early.
    """
    config, state = session.config, session.state
    epoch = state.epoch
    prepare_net(session, frozen=epoch < config.freeze_encoder_epochs)
    order = epoch_order(session.cache, config, epoch)
    session.model.train()
    progress = _progress_bar(session.rank, session.steps_per_epoch, state.step_in_epoch, epoch, config.epochs)
    batches = iter(
        batch_loader(
            EpochBatches(
                session.cache,
                config,
                session.prep,
                session.pipeline,
                order,
                epoch,
                session.rank,
                session.world,
                state.step_in_epoch,
                session.steps_per_epoch,
            ),
            config.workers,
            pin_memory=session.device.type == "cuda",
        )
    )
    try:
        while state.step_in_epoch < session.steps_per_epoch:
            if max_steps_reached(session):
                break
            if should_stop(session):
                return False
            t_step = time.time()
            images, loss, lr = train_step(session, batches)
            state.step_in_epoch += 1
            state.global_step += 1
            elapsed = time.time() - t_step
            state.train_seconds += elapsed
            session.seen_images += images * session.world
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if session.rank == 0 and (
                state.global_step % config.log_every == 0 or state.step_in_epoch == session.steps_per_epoch
            ):
                record_progress(session, loss, lr)
            if config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0:
                save_checkpoint(session)
    finally:
        if progress is not None:
            progress.close()
    return True


def prepare_net(session: TrainingSession, frozen: bool) -> None:
    """Freeze or unfreeze the encoder; under DDP, wrap the model again when that changed."""
    for p in session.model.encoder.parameters():
        p.requires_grad_(not frozen)
    if session.world > 1 and frozen is not session.net_frozen:
        # DDP registers the parameters that require grad when it is built: rebuild it when that changes
        device = session.device
        session.net = torch.nn.parallel.DistributedDataParallel(
            session.model, device_ids=[device.index] if device.type == "cuda" else None
        )
        session.net_frozen = frozen


def train_step(
    session: TrainingSession, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[int, torch.Tensor, float]:
    """One optimisation step on the next batch; returns its number of images, its loss and the learning rate."""
    device, optimizer, state = session.device, session.optimizer, session.state
    images, targets = next(batches)
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    lr = learning_rate(session.config, state.global_step, session.steps_per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(step_seed(session.config.seed, state.epoch, state.step_in_epoch, session.rank))  # dropout
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=session.use_amp):
        logits, labels = split_output(session.net(images))
    loss = session.loss_fn(logits.float(), targets)
    if labels is not None:  # the tumour-present head: does this crop hold tumour
        present = (targets.flatten(1).amax(1) > 0).float()
        head_loss = F.binary_cross_entropy_with_logits(labels.float()[:, 0], present)
        loss = loss + session.config.tumour_head_weight * head_loss
    loss.backward()
    optimizer.step()
    return images.shape[0], loss, lr


def record_progress(session: TrainingSession, loss: torch.Tensor, lr: float) -> None:
    """Append a ``train`` record to ``metrics.jsonl`` and update ``status.json`` (rank 0)."""
    state, run_dir = session.state, session.run_dir
    now = time.time()
    ips = session.seen_images / max(1e-9, now - session.t_window)
    session.seen_images, session.t_window = 0, now
    remaining = session.total_steps - state.global_step
    record = {
        "type": "train",
        "step": state.global_step,
        "epoch": state.epoch,
        "epoch_progress": state.step_in_epoch / session.steps_per_epoch,
        "loss": float(loss.item()),
        "lr": lr,
        "images_per_s": ips,
        "eta_s": remaining * session.config.batch_size * session.world / max(ips, 1e-9),
        "total_steps": session.total_steps,
        "time": now,
    }
    append_metrics(run_dir, record)
    write_status(
        run_dir,
        RUNNING,
        epoch=state.epoch,
        global_step=state.global_step,
        total_steps=session.total_steps,
        eta_s=record["eta_s"],
        images_per_s=ips,
    )


def max_steps_reached(session: TrainingSession) -> bool:
    """Whether the run has taken the ``max_steps`` it was limited to."""
    return bool(session.config.max_steps and session.state.global_step >= session.config.max_steps)


def should_stop(session: TrainingSession) -> bool:
    """Whether a stop was requested (SIGTERM or the STOP file) on any rank; every rank gets the same answer."""
    flag = session.stop["flag"] or (session.run_dir / STOP_FILE).exists()
    if session.world > 1:
        device = session.device
        t = torch.tensor([int(flag)], device=device if device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        flag = bool(t.item())
    return flag


def save_checkpoint(session: TrainingSession) -> None:
    """Write ``last.pt`` atomically (rank 0): model, optimiser, counters, preprocessing and config."""
    if session.rank != 0:
        return
    atomic_torch_save(
        {
            "model": session.model.state_dict(),
            "optimizer": session.optimizer.state_dict(),
            "state": asdict(session.state),
            "preprocessing": asdict(session.prep),
            "config": asdict(session.config),
        },
        session.run_dir / CHECKPOINT,
    )


def _progress_bar(rank: int, total: int, initial: int, epoch: int, epochs: int):
    """A tqdm bar over the epoch's steps on rank 0 (drawn only when stderr is a terminal); None elsewhere."""
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
