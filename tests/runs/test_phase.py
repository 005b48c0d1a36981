"""brainviewer.runs.phase: what a running run does between its progress records, and the time left."""

from __future__ import annotations

from brainviewer.runs.phase import SEARCH_VALIDATIONS, run_phase


def trains(steps: range, epoch: int, total: int, t0: float = 0.0, every: float = 2.0) -> list[dict]:
    return [
        {"type": "train", "step": s, "epoch": epoch, "total_steps": total, "time": t0 + i * every}
        for i, s in enumerate(steps)
    ]


def test_training_steps_on_time_leave_the_status_eta_alone():
    records = trains(range(1, 11), epoch=0, total=40)
    assert run_phase(records, epochs=4, train_eta_s=60.0, now=records[-1]["time"] + 3.0) is None


def test_a_late_record_at_an_epoch_end_is_a_validation_with_its_duration():
    records = trains(range(1, 11), epoch=0, total=40)
    records.append({"type": "val", "step": 10, "epoch": 0, "seconds": 30.0, "time": 50.0})
    records += trains(range(11, 21), epoch=1, total=40, t0=52.0)
    now = records[-1]["time"] + 20.0  # 20 s without a record, the usual interval being 2 s
    phase = run_phase(records, epochs=4, train_eta_s=0.0, now=now)
    assert phase is not None and phase.text == "validating epoch 2 on the validation patients"
    assert phase.seconds_left == 10.0  # 30 s validation, 20 s of it gone; not "0s"


def test_after_the_last_validation_the_post_processing_search_runs():
    records = trains(range(1, 11), epoch=0, total=10)
    records.append({"type": "val", "step": 10, "epoch": 0, "seconds": 12.0, "time": 30.0})
    phase = run_phase(records, epochs=1, train_eta_s=0.0, now=40.0)
    assert phase is not None and phase.text.startswith("choosing the threshold and post-processing")
    assert phase.seconds_left == SEARCH_VALIDATIONS * 12.0 - 10.0
    # the last epoch's validation itself, before any was measured: unknown, never "0s"
    phase = run_phase(records[:-1], epochs=1, train_eta_s=0.0, now=records[-2]["time"] + 20.0)
    assert phase is not None and phase.text.startswith("validating epoch 1")
    assert phase.seconds_left is None
    records.append({"type": "final", "step": 10, "time": 80.0})
    assert run_phase(records, epochs=1, train_eta_s=0.0, now=200.0).text == "saving the chosen weights"
