"""Validation during training: per-patient scores, the best weights kept in ``best/``, and at the end
the threshold and post-processing chosen on the validation patients."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.evaluate import (
    EvaluationReport,
    choose_postprocessing,
    default_sweep,
    evaluate_probs,
    evaluate_probs_variants,
    with_setting,
)
from brainviewer.model.inference import predict_volume_probs
from brainviewer.model.preprocessing import volume_levels
from brainviewer.model.segmenter import Segmenter, save_weights
from brainviewer.runs.layout import BEST, SPLIT_FILE
from brainviewer.training.config import TrainConfig
from brainviewer.training.gate_fit import GATE_FILE, gate_card_section, gate_for_validation
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=session.use_amp and device.type == "cpu"):
            report, _ = validate(segmenter, session.val_set)  # the Segmenter runs bf16 on CUDA itself
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
    gate: dict | None = None,
) -> None:
    """Atomically replace ``run_dir/best`` with the current weights and a model card (with a section on the
    tumour-present ``gate`` report, when there is one)."""
    from brainviewer.model.modelcard import render_card

    card = render_card(config, state, summary, run_dir, segmenter.prep.channel_names)
    if gate is not None:
        card = card.rstrip("\n") + "\n\n" + gate_card_section(gate)
    files = {
        "train_config.json": config.to_json(),
        SPLIT_FILE: (run_dir / SPLIT_FILE).read_text(),
        "validation.json": json.dumps(summary, indent=2) + "\n",
        **(extra or {}),
    }
    save_weights(segmenter.model, run_dir / BEST, segmenter.prep, card=card, extra_files=files, overwrite=True)


def _setting(report: EvaluationReport) -> tuple:
    return (
        round(report.threshold, 4),
        report.min_component_px,
        report.keep_largest,
        report.volume_keep_largest,
        report.tta_flip,
    )


def _key(report: EvaluationReport, max_fp_rate: float) -> tuple:
    """What the choice ranks by (as :func:`~brainviewer.evaluation.evaluate.choose_setting`): within the FP-rate
    limit first, then mean Dice (to 4 decimals), else the lower FP rate."""
    fp = report.fp_rate or 0.0
    dice = round(report.mean_dice, 4) if report.patients else 0.0
    return (1, dice, 0.0) if fp <= max_fp_rate else (0, -fp, dice)


def keep_base_unless_better(
    base: EvaluationReport,
    chosen: EvaluationReport,
    candidates: Sequence[EvaluationReport] = (),
    max_fp_rate: float = 0.05,
) -> tuple[EvaluationReport, bool]:
    """``(the setting to keep, whether it is the search's choice)``: the search's ``chosen`` setting only when it
    scores strictly better than the base (starting) settings on the validation; a tie, or a validation on which
    every setting scored (``base``, ``chosen`` and ``candidates``) has mean Dice 0, keeps the base settings (a
    search on nothing must not change the model)."""
    if _setting(chosen) == _setting(base):
        return base, False
    if not any(r.mean_dice > 0 for r in (base, chosen, *candidates)):  # all-zero (or empty): no evidence
        return base, False
    return (chosen, True) if _key(chosen, max_fp_rate) > _key(base, max_fp_rate) else (base, False)


def base_report(segmenter: Segmenter, val_set: Dataset, candidates: list[EvaluationReport]) -> EvaluationReport:
    """The validation scores of ``segmenter``'s own threshold and post-processing: among ``candidates`` when the
    search scored them, else scored here."""
    prep = segmenter.prep
    report = EvaluationReport(
        prep.threshold, prep.min_component_px, prep.keep_largest, [], 0.0, 0, 0, prep.tta_flip, prep.volume_keep_largest
    )
    found = next((r for r in candidates if _setting(r) == _setting(report)), None)
    if found is not None:
        return found
    setting = [(prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest)]

    def both(scans: list) -> tuple[list, list]:
        return segmenter.predict_probs_plain_and_flip(scans, 16, volume_levels(scans, prep))

    plain, flipped = evaluate_probs_variants(val_set, both, [setting, setting], surface_tolerance=None)
    scored = flipped[0] if prep.tta_flip else plain[0]
    scored.tta_flip = bool(prep.tta_flip)
    return scored


def finalise(run_dir: Path, segmenter: Segmenter, val_set: Dataset, config: TrainConfig, state: RunState) -> None:
    """Choose threshold and post-processing on validation data for the best weights: the search's choice when it
    scores strictly better than the weights' own (starting) settings, else those kept."""
    best_dir = run_dir / BEST
    if not best_dir.is_dir():
        return
    best = Segmenter.from_folder(best_dir, device=segmenter.device)
    searched, candidates = choose_postprocessing(best, val_set)
    base = base_report(best, val_set, candidates)
    chosen, changed = keep_base_unless_better(base, searched, candidates)
    best.prep = with_setting(best.prep, chosen)
    gate = gate_for_validation(best, val_set, config.gate_max_fp)  # a model with a tumour-present head
    summary = chosen.summary()
    logger.info(
        "%s: threshold %.2f, min component %d px, largest 3-D component %s, flip TTA %s"
        " -> mean Dice %.4f, FP rate %s (starting settings: mean Dice %.4f)",
        "chosen on validation (better than the starting settings)"
        if changed
        else "kept the starting settings (no other setting scores strictly better on validation)",
        chosen.threshold,
        chosen.min_component_px,
        chosen.volume_keep_largest,
        chosen.tta_flip,
        chosen.mean_dice,
        "n/a" if chosen.fp_rate is None else f"{chosen.fp_rate:.3f}",
        base.mean_dice,
    )
    table = [report.summary() for report in candidates]
    extra = {"threshold_sweep.json": json.dumps(table, indent=2) + "\n"}
    if gate is not None:
        extra[GATE_FILE] = json.dumps(gate, indent=2) + "\n"
        logger.info(
            "tumour-present gate %s: single-slice FP rate %.3f -> %.3f, tumour slices shown %d/%d",
            gate["tumour_gate"],
            gate["ungated"]["fp_rate"],
            gate["gated"]["fp_rate"],
            gate["gated"]["tumour_slices_shown"],
            gate["gated"]["tumour_slices"],
        )
    save_best(best, run_dir, config, state, summary, extra, gate)
    append_metrics(
        run_dir,
        {
            "type": "final",
            "step": state.global_step,
            **summary,
            "kept_starting_settings": not changed,
            "time": time.time(),
        },
    )
