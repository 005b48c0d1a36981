"""The training loop: one readable function, resumable, single process or DDP.

:func:`train` sets the process up (run folder, logging, signals, process group); :func:`run_epochs`
is the loop itself, over named steps: set the session up (:mod:`~brainviewer.training.session`),
then for each epoch train it (:mod:`~brainviewer.training.steps`), validate and keep the best
(:mod:`~brainviewer.training.validation`), checkpoint, and check for a stop or an early stop;
then choose the post-processing and record the end. What goes in the run folder is described in
:mod:`brainviewer.training.records`.

All randomness (slice order, crops, augmentation) is derived from
``(seed, epoch, position)``, so a killed run resumed from ``last.pt`` continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from brainviewer.data.datasets import Dataset, open_dataset
from brainviewer.runs.layout import CONFIG_FILE, EARLY_STOPPED, FAILED, FINISHED, STOP_FILE, STOPPED
from brainviewer.training.config import TrainConfig
from brainviewer.training.records import append_event, new_run_dir, setup_logging, write_status
from brainviewer.training.session import TrainingSession, open_session
from brainviewer.training.steps import max_steps_reached, save_checkpoint, train_epoch
from brainviewer.training.validation import finalise, validate_and_record

logger = logging.getLogger(__name__)


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    """The device ``config.device`` names; ``auto``: this process's GPU if there is one, else the CPU."""
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
        if not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); give a folder made by train")
        config = TrainConfig.load(run_dir / CONFIG_FILE)
    elif config is None:
        raise ValueError("give a config or a run folder to resume")
    dataset = open_dataset(config.data)  # before creating the run folder: a bad path leaves nothing behind
    device = _device(config, local_rank)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if resume is None:
        if rank == 0:
            run_dir = new_run_dir(config)
            config.save(run_dir / CONFIG_FILE)
        if distributed:
            names = [str(run_dir) if rank == 0 else None]
            dist.broadcast_object_list(names, src=0)
            run_dir = Path(names[0])
    handlers = setup_logging(run_dir, rank)
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
        return run_epochs(config, dataset, run_dir, resume is not None, device, rank, world, stop_requested)
    except KeyboardInterrupt:
        if rank == 0:
            logger.info("interrupted; resume from the last checkpoint with --resume %s", run_dir)
            write_status(run_dir, STOPPED, error="interrupted (KeyboardInterrupt); resume from the last checkpoint")
        raise
    except Exception as err:
        if rank == 0:
            logger.exception("training failed")
            write_status(run_dir, FAILED, error=f"{type(err).__name__}: {err}")
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


def run_epochs(
    config: TrainConfig,
    dataset: Dataset,
    run_dir: Path,
    resuming: bool,
    device: torch.device,
    rank: int,
    world: int,
    stop: dict[str, bool],
) -> Path:
    """Set up, train epoch after epoch until the end, a stop request or an early stop, then finalise."""
    t_start = time.time()
    session = open_session(config, dataset, run_dir, resuming, device, rank, world, stop)
    ending = FINISHED
    while session.state.epoch < config.epochs:
        if not train_epoch(session):
            stop_on_request(session)
            return run_dir
        if max_steps_reached(session) and session.state.step_in_epoch < session.steps_per_epoch:
            validate_and_record(session)  # the epoch max_steps cut short
            save_checkpoint(session)
            break
        end_epoch(session)
        if early_stop(session):
            ending = EARLY_STOPPED
            break
        if max_steps_reached(session):
            break
    finish(session, ending, t_start)
    return run_dir


def end_epoch(session: TrainingSession) -> None:
    """End of epoch: validate (every ``val_every`` epochs and after the last), keep the best, count a
    validation that did not improve, checkpoint."""
    state, config = session.state, session.config
    done = state.epoch + 1
    validating = done % config.val_every == 0 or done >= config.epochs or max_steps_reached(session)
    if validating and not validate_and_record(session):
        state.bad_validations += 1
    state.epoch = done
    state.step_in_epoch = 0
    save_checkpoint(session)


def early_stop(session: TrainingSession) -> bool:
    """Whether ``early_stop_patience`` validations in a row did not improve on the best."""
    config, state = session.config, session.state
    if config.early_stop_patience and state.bad_validations >= config.early_stop_patience:
        logger.info("early stop: no better validation Dice for %d epochs", state.bad_validations)
        return True
    return False


def stop_on_request(session: TrainingSession) -> None:
    """Checkpoint and record the stop; the STOP file, obeyed, is removed so a resumed run carries on."""
    save_checkpoint(session)
    if session.rank != 0:
        return
    run_dir, state = session.run_dir, session.state
    (run_dir / STOP_FILE).unlink(missing_ok=True)  # obeyed: resuming must not stop again
    write_status(run_dir, STOPPED, epoch=state.epoch, global_step=state.global_step, total_steps=session.total_steps)
    append_event(run_dir, STOPPED, state.global_step)
    logger.info("stopped at epoch %d step %d; resume with --resume %s", state.epoch, state.step_in_epoch, run_dir)


def finish(session: TrainingSession, ending: str, t_start: float) -> None:
    """Choose the post-processing for the best weights and record how the run ended (rank 0); all ranks wait."""
    run_dir, state = session.run_dir, session.state
    if session.rank == 0:
        finalise(run_dir, session.segmenter, session.val_set, session.config, state)
        write_status(
            run_dir,
            ending,
            epoch=state.epoch,
            global_step=state.global_step,
            total_steps=session.total_steps,
            best_dice=state.best_dice,
            best_epoch=state.best_epoch,
            wall_seconds=time.time() - t_start,
        )
        append_event(run_dir, ending, state.global_step)
    if session.world > 1:
        dist.barrier()
