"""Validation during training: per-patient scores, the best weights kept in ``best/``, and at the end
the threshold and post-processing chosen on the validation patients."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.distributed as dist

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.evaluate import (
    EvaluationReport,
    choose_postprocessing,
    default_sweep,
    evaluate_probs,
    with_setting,
)
from brainviewer.model.inference import predict_volume_probs
from brainviewer.model.segmenter import Segmenter, save_weights
from brainviewer.runs.layout import BEST, SPLIT_FILE
from brainviewer.training.config import TrainConfig
from brainviewer.training.records import RunState, append_metrics
from brainviewer.training.session import TrainingSession

logger = logging.getLogger(__name__)


def validate(
    segmenter: Segmenter, val_set: Dataset, sweep: bool = False
) -> tuple[EvaluationReport, list[EvaluationReport]]:
    """Per-patient scores on the validation patients at the model's threshold (and a sweep)."""
    prep = segmenter.prep
    base = (prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest)
    settings = [base] + (default_sweep(base[0]) if sweep else [])
    reports = evaluate_probs(  # a patient's slices share their intensity levels, as at inference
        val_set, lambda scans: predict_volume_probs(segmenter, scans, 16), settings, surface_tolerance=None
    )
    return reports[0], reports


def validate_and_record(session: TrainingSession) -> bool:
    """Validate on rank 0, save the best weights; every rank learns whether it improved."""
    segmenter, run_dir, state, device = session.segmenter, session.run_dir, session.state, session.device
    improved = False
    if session.rank == 0:
        t0 = time.time()
        segmenter.model.eval()
        report, _ = validate(segmenter, session.val_set)
        segmenter.model.train()
        summary = report.summary()
        improved = report.mean_dice > state.best_dice
        if improved:
            state.best_dice, state.best_epoch, state.bad_validations = report.mean_dice, state.epoch, 0
            save_best(segmenter, run_dir, session.config, state, summary)
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
    if session.world > 1:
        flag = torch.tensor([int(improved)], device=device if device.type == "cuda" else "cpu")
        dist.broadcast(flag, src=0)
        improved = bool(flag.item())
    return improved


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
        SPLIT_FILE: (run_dir / SPLIT_FILE).read_text(),
        "validation.json": json.dumps(summary, indent=2) + "\n",
        **(extra or {}),
    }
    save_weights(segmenter.model, run_dir / BEST, segmenter.prep, card=card, extra_files=files, overwrite=True)


def finalise(run_dir: Path, segmenter: Segmenter, val_set: Dataset, config: TrainConfig, state: RunState) -> None:
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
