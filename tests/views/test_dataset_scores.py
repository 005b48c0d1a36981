"""The Evaluation page's score tables: titles with unit and tolerance, summaries, and how to read them."""

from __future__ import annotations

from brainviewer.evaluation.evaluate import PatientResult, score_summaries
from brainviewer.views.dataset_evaluation import (
    EMPTY_MASKS_NOTE,
    distance_note,
    patient_score_rows,
    score_column,
    score_summary_rows,
)


def patient(pid: str, dice: float, hd95: float | None, truth: int = 100, pred: int = 90, unit: str = "px"):
    return PatientResult(
        patient_id=pid,
        n_slices=4,
        n_tumour_slices=2,
        volume_dice=dice,
        tumour_slice_dice=dice,
        fp_rate=0.0,
        truth_voxels=truth,
        pred_voxels=pred,
        sensitivity=dice,
        precision=dice,
        volume_similarity=1.0,
        hd95=hd95,
        surface_dice=dice,
        distance_unit=unit if hd95 is not None else None,
    )


def test_titles_carry_the_unit_and_the_tolerance() -> None:
    assert score_column("hd95", "px", 2.0) == "HD95 (px)"
    assert score_column("hd95", "mm", 2.0) == "HD95 (mm)"
    assert score_column("surface_dice", "mm", 1.5) == "surface Dice @ 1.5 mm"
    assert score_column("volume_dice", "px", 2.0) == "Dice"


def test_summary_rows_by_hand() -> None:
    patients = [patient("a", 0.8, 2.0), patient("b", 0.6, 4.0), patient("c", 0.7, None)]
    scores = score_summaries(patients, surface_tolerance=2.0)
    rows = {row["score"]: row for row in score_summary_rows(scores)}
    dice = rows["Dice"]
    assert dice["mean ± SD"] == "0.700 ± 0.100"
    assert dice["median [IQR]"] == "0.700 [0.650, 0.750]"
    assert dice["patients"] == 3
    low, high = (float(x) for x in dice["95% CI of the mean"].strip("[]").split(", "))
    assert 0.6 <= low <= 0.7 <= high <= 0.8
    hd95 = rows["HD95 (px)"]  # patient c has none: left out, n says so
    assert hd95["mean ± SD"] == "3.00 ± 1.41" and hd95["patients"] == 2
    assert list(rows) == ["Dice", "sensitivity", "precision", "volume similarity", "HD95 (px)", "surface Dice @ 2 px"]


def test_patient_rows_and_the_notes() -> None:
    patients = [patient("a", 0.8, 2.0), patient("e", 0.0, 362.0, truth=0, pred=50)]
    scores = score_summaries(patients, surface_tolerance=2.0)
    rows = patient_score_rows(patients, "px", 2.0)
    assert rows[1]["HD95 (px)"] == 362.0 and rows[1]["truth px"] == 0 and rows[1]["surface Dice @ 2 px"] == 0.0
    note = distance_note(scores)
    assert "in **pixels**" in note and "records no pixel spacing" in note
    assert "within 2 px" in note
    assert "1 patient got the worst-case HD95" in note
    assert "2,000 resamples, seed 0" in note
    assert "HD95 is the diagonal of the whole volume" in EMPTY_MASKS_NOTE
    mm = score_summaries([patient("a", 0.8, 2.0, unit="mm")], surface_tolerance=1.0)
    assert "in **mm**" in distance_note(mm) and "within 1 mm" in distance_note(mm)


def test_scores_no_patient_has_are_left_out() -> None:
    scores = score_summaries([patient("a", 0.8, None)], surface_tolerance=None)
    titles = [row["score"] for row in score_summary_rows(scores)]
    assert titles == ["Dice", "sensitivity", "precision", "volume similarity", "surface Dice"]
