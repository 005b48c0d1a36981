"""The post-processing search after training keeps the weights' starting settings unless another setting scores
strictly better on the validation patients (a tie, or a validation on which everything scores 0, keeps them)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from brainviewer.evaluation.evaluate import EvaluationReport, PatientResult
from brainviewer.training import validation
from brainviewer.training.config import TrainConfig


def report(threshold: float, dice: float, volume_keep_largest: bool = True, tta: bool = False, fp: int = 0):
    patient = PatientResult("p1", 8, 4, dice, None, None, 10, 10)
    return EvaluationReport(threshold, 0, False, [patient], dice, fp, 10, tta, volume_keep_largest)


def test_an_all_zero_validation_keeps_the_starting_settings() -> None:
    base = report(0.5, 0.0)
    kept, changed = validation.keep_base_unless_better(base, report(0.7, 0.0, volume_keep_largest=False, tta=True))
    assert kept is base and not changed


def test_a_tie_keeps_the_starting_settings() -> None:
    base = report(0.5, 0.61231)
    kept, changed = validation.keep_base_unless_better(base, report(0.3, 0.61234, tta=True))  # equal to 4 decimals
    assert kept is base and not changed


def test_a_strictly_better_setting_is_chosen() -> None:
    better = report(0.3, 0.7, tta=True)
    kept, changed = validation.keep_base_unless_better(report(0.5, 0.6), better)
    assert kept is better and changed


def test_a_setting_within_the_false_positive_limit_beats_one_over_it() -> None:
    within = report(0.7, 0.5)
    kept, changed = validation.keep_base_unless_better(report(0.5, 0.6, fp=5), within)  # base: FP rate 0.5
    assert kept is within and changed


def test_finalise_logs_that_it_kept_the_starting_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A degenerate validation (every option Dice 0): the weights keep threshold 0.5, the largest 3-D component
    and no flip TTA, and the log says they were kept."""
    from types import SimpleNamespace

    (tmp_path / "best").mkdir()
    prep = SimpleNamespace(
        threshold=0.5, min_component_px=0, keep_largest=False, volume_keep_largest=True, tta_flip=False
    )
    best = SimpleNamespace(prep=prep, model=None)  # no tumour-present head: no gate to choose
    searched = report(0.7, 0.0, volume_keep_largest=False, tta=True)
    candidates = [report(0.5, 0.0), searched]
    monkeypatch.setattr(validation.Segmenter, "from_folder", lambda *a, **k: best)
    monkeypatch.setattr(validation, "choose_postprocessing", lambda *a, **k: (searched, candidates))
    monkeypatch.setattr(validation, "with_setting", lambda p, r: SimpleNamespace(chosen=r))
    saved, records = [], []
    monkeypatch.setattr(validation, "save_best", lambda *a, **k: saved.append(a))
    monkeypatch.setattr(validation, "append_metrics", lambda run_dir, record: records.append(record))
    with caplog.at_level(logging.INFO, logger=validation.__name__):
        validation.finalise(
            tmp_path, SimpleNamespace(device="cpu"), None, TrainConfig(), SimpleNamespace(global_step=3)
        )
    assert best.prep.chosen is candidates[0]
    (final,) = records
    assert (final["threshold"], final["volume_keep_largest"], final["tta_flip"]) == (0.5, True, False)
    assert final["kept_starting_settings"] is True
    assert "kept the starting settings" in caplog.text


def test_a_setting_with_dice_zero_within_the_limit_beats_starting_settings_over_it() -> None:
    """Not an all-zero validation (the starting settings find some tumour): the FP-rate limit still decides."""
    within = report(0.7, 0.0)
    kept, changed = validation.keep_base_unless_better(report(0.5, 0.04, fp=5), within, [within])
    assert kept is within and changed
