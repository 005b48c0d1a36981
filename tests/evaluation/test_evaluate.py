"""Per-patient evaluation on a tiny hand-made dataset whose every score is worked out by hand.

Each scan carries its own "prediction": channel 0 holds the probability x 255, so the fake
``probs_fn`` below returns exactly the probabilities the test wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.evaluation.evaluate import (
    EvaluationReport,
    choose_setting,
    default_sweep,
    evaluate_probs,
    evaluate_probs_variants,
    read_groups,
    write_report,
)

SIDE = 10
HIGH, LOW = 255, 102  # probabilities 1.0 and 0.4


def grid(cells: list[tuple[int, int]], value: int = 1) -> np.ndarray:
    array = np.zeros((SIDE, SIDE), dtype=np.uint8)
    for r, c in cells:
        array[r, c] = value
    return array


def block(r0: int, c0: int, h: int, w: int) -> list[tuple[int, int]]:
    return [(r, c) for r in range(r0, r0 + h) for c in range(c0, c0 + w)]


# (truth pixels, {probability value: pixels}) per slice, per patient
SLICES = {
    "P1": [
        # truth 2x2; prediction those 4 + 2 touching: tp 4, fp 2, fn 0 -> Dice 8/10
        (block(0, 0, 2, 2), {HIGH: [*block(0, 0, 2, 2), (0, 2), (1, 2)]}),
        # truth 2x3; prediction its first row: tp 3, fn 3 -> Dice 6/9
        (block(5, 5, 2, 3), {HIGH: block(5, 5, 1, 3)}),
        # no tumour; one isolated predicted pixel: a false-positive slice, Dice 0
        ([], {HIGH: [(8, 8)]}),
    ],
    "P2": [
        (block(3, 3, 1, 5), {HIGH: block(3, 3, 1, 5)}),  # perfect: tp 5
        ([], {}),  # empty and nothing predicted: Dice 1, no false positive
    ],
    "P3": [
        (block(4, 4, 2, 2), {LOW: block(4, 4, 2, 2)}),  # found only below threshold 0.4
        ([], {LOW: [(0, 0), (0, 1)]}),  # a 2 px false alarm below threshold 0.4
    ],
}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("handmade") / "kaggle_3m"
    for pid, slices in SLICES.items():
        folder = root / pid
        folder.mkdir(parents=True)
        for n, (truth, probs) in enumerate(slices, start=1):
            image = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
            for value, cells in probs.items():
                image[..., 0] = np.maximum(image[..., 0], grid(cells, value))
            image[..., 1] = 50  # anything: the fake model reads channel 0 only
            Image.fromarray(image).save(folder / f"{pid}_{n}.png")
            Image.fromarray(grid(truth, 255)).save(folder / f"{pid}_{n}_mask.png")
    return root


def probs_from_channel_0(scans: list[np.ndarray]) -> list[np.ndarray]:
    return [scan[..., 0].astype(np.float32) / 255.0 for scan in scans]


SETTINGS = [(0.5, 0, False), (0.5, 2, False), (0.3, 0, False), (0.3, 2, False)]


@pytest.fixture(scope="module")
def reports(dataset_root: Path) -> list[EvaluationReport]:
    return evaluate_probs(open_dataset(dataset_root), probs_from_channel_0, SETTINGS)


def test_per_patient_scores_by_hand(reports: list[EvaluationReport]) -> None:
    report = reports[0]  # threshold 0.5, no post-processing
    assert (report.threshold, report.min_component_px, report.keep_largest) == (0.5, 0, False)
    p1, p2, p3 = report.patients
    assert [p.patient_id for p in report.patients] == ["P1", "P2", "P3"]
    # P1 volume: tp 4+3 = 7, fp 2+1 = 3, fn 3 -> 14 / 20
    assert p1.volume_dice == pytest.approx(14 / 20)
    assert p1.slice_dice == pytest.approx([8 / 10, 6 / 9, 0.0])
    assert p1.tumour_slice_dice == pytest.approx((8 / 10 + 6 / 9) / 2)
    assert p1.fp_rate == 1.0
    assert (p1.n_slices, p1.n_tumour_slices, p1.truth_voxels, p1.pred_voxels) == (3, 2, 10, 10)
    assert (p2.volume_dice, p2.tumour_slice_dice, p2.fp_rate) == (1.0, 1.0, 0.0)
    assert p2.slice_dice == [1.0, 1.0]  # empty truth and empty prediction count as perfect
    assert (p3.volume_dice, p3.tumour_slice_dice, p3.fp_rate, p3.pred_voxels) == (0.0, 0.0, 0.0, 0)


def test_dataset_summaries_by_hand(reports: list[EvaluationReport]) -> None:
    summary = reports[0].summary()
    assert summary["patients"] == 3 and summary["slices"] == 7
    assert summary["mean_volume_dice"] == pytest.approx((0.7 + 1.0 + 0.0) / 3)
    assert summary["median_volume_dice"] == pytest.approx(0.7)
    # micro: all pixels pooled: tp 7+5+0, fp 3, fn 3+0+4
    assert summary["micro_dice"] == pytest.approx(2 * 12 / (2 * 12 + 3 + 7))
    assert summary["mean_tumour_slice_dice"] == pytest.approx(((0.8 + 6 / 9) / 2 + 1.0 + 0.0) / 3)
    # empty slices: P1 #3 (false positive), P2 #2, P3 #2
    assert (summary["fp_slices"], summary["empty_slices"]) == (1, 3)
    assert summary["fp_rate_empty_slices"] == pytest.approx(1 / 3)


def test_other_settings_by_hand(reports: list[EvaluationReport]) -> None:
    # min component 2 px removes P1's 1 px false positive: P1 tp 7, fp 2, fn 3 -> 14/19
    dice = [p.volume_dice for p in reports[1].patients]
    assert dice == pytest.approx([14 / 19, 1.0, 0.0])
    assert reports[1].fp_rate == 0.0
    # threshold 0.3 finds P3's tumour (tp 4) and its 2 px false alarm: P3 8/10; FP slices 2 of 3
    dice = [p.volume_dice for p in reports[2].patients]
    assert dice == pytest.approx([0.7, 1.0, 0.8])
    assert reports[2].fp_rate == pytest.approx(2 / 3)
    assert reports[2].mean_dice == pytest.approx(2.5 / 3)
    assert [p.volume_dice for p in reports[3].patients] == pytest.approx([14 / 19, 1.0, 0.8])
    assert reports[3].fp_rate == pytest.approx(1 / 3)


def test_choose_setting(reports: list[EvaluationReport]) -> None:
    r50, r52, r30, r32 = reports
    # FP rate <= 5 %: only threshold 0.5 with 2 px components removed
    assert choose_setting(reports) is r52
    # a looser FP budget admits the better Dice of threshold 0.3 + component removal
    assert choose_setting(reports, max_fp_rate=0.4) is r32
    # none within budget: the lowest FP rate, then the best Dice among those
    assert choose_setting([r50, r30, r32], max_fp_rate=0.05) is r32


def test_progress_and_single_inference_pass(dataset_root: Path) -> None:
    calls, progress = [], []

    def counting(scans: list[np.ndarray]) -> list[np.ndarray]:
        calls.append(len(scans))
        return probs_from_channel_0(scans)

    evaluate_probs(open_dataset(dataset_root), counting, SETTINGS, progress=lambda d, t: progress.append((d, t)))
    assert calls == [3, 2, 2]  # one call per patient, shared by every setting
    assert progress == [(1, 3), (2, 3), (3, 3)]


def test_variants_from_one_pass_match_separate_evaluations(dataset_root: Path) -> None:
    dataset = open_dataset(dataset_root)
    calls: list[int] = []

    def halved(scans: list[np.ndarray]) -> list[np.ndarray]:
        return [p / 2 for p in probs_from_channel_0(scans)]

    def both(scans: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        calls.append(len(scans))
        return probs_from_channel_0(scans), halved(scans)

    other = [(0.2, 0, False, True), (0.4, 0, False)]
    first, second = evaluate_probs_variants(dataset, both, [SETTINGS, other])
    assert calls == [3, 2, 2]  # one call per patient for both variants
    for got, want in (
        (first, evaluate_probs(dataset, probs_from_channel_0, SETTINGS)),
        (second, evaluate_probs(dataset, halved, other)),
    ):
        assert [r.summary() for r in got] == [r.summary() for r in want]
        assert [[p.volume_dice for p in r.patients] for r in got] == [[p.volume_dice for p in r.patients] for r in want]
    with pytest.raises(ValueError, match="2 kinds of probabilities for 1 settings"):
        evaluate_probs_variants(dataset, both, [SETTINGS])


def test_slices_without_truth_are_refused(dataset_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "P1").mkdir(parents=True)
    for n in (1, 2):
        Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(root / "P1" / f"P1_{n}.png")
    Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(root / "P1" / "P1_1_mask.png")
    with pytest.raises(ValueError, match=r"P1_2\.png has no ground truth"):
        evaluate_probs(open_dataset(root), probs_from_channel_0, SETTINGS[:1])


def test_largest_3d_component_by_hand(dataset_root: Path) -> None:
    plain, volume = evaluate_probs(
        open_dataset(dataset_root), probs_from_channel_0, [(0.5, 0, False, False), (0.5, 0, False, True)]
    )
    assert (plain.volume_keep_largest, volume.volume_keep_largest) == (False, True)
    assert volume.summary()["volume_keep_largest"] is True
    # P1's prediction is three 3-D components: 6 px on slice 1, 3 px on slice 2 (rows apart, so
    # not 26-connected), 1 px on slice 3. Only slice 1's remains: tp 4, fp 2, fn 3 + 3 -> 8 / 16,
    # and the false-positive slice is gone.
    p1 = volume.patients[0]
    assert p1.volume_dice == pytest.approx(8 / 16)
    assert p1.slice_pred_px == [6, 0, 0] and p1.fp_rate == 0.0
    assert [p.volume_dice for p in volume.patients[1:]] == [1.0, 0.0]
    assert volume.fp_rate == 0.0 and plain.fp_rate == pytest.approx(1 / 3)


def test_default_sweep() -> None:
    sweep = default_sweep(0.45)
    assert (0.45, 0, False, False) in sweep and (0.7, 128, False, True) in sweep and (0.2, 16, False, False) in sweep
    assert len(sweep) == 7 * 4 * 2 and len(default_sweep(0.5)) == 6 * 4 * 2
    assert sweep.index((0.3, 0, False, False)) < sweep.index((0.3, 0, False, True))  # simpler first: wins ties


def test_write_report(reports: list[EvaluationReport], tmp_path: Path) -> None:
    out = tmp_path / "report"
    paths = write_report(reports[0], out)
    assert set(paths) == {"json", "csv", "plot"}
    data = json.loads(paths["json"].read_text())
    assert data["summary"]["mean_volume_dice"] == pytest.approx(1.7 / 3)
    assert [p["patient_id"] for p in data["patients"]] == ["P1", "P2", "P3"]
    with paths["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == ["P1", "P2", "P3"]
    assert float(rows[0]["volume_dice"]) == pytest.approx(0.7)
    assert rows[2]["tumour_slice_dice"] == "0.000000" and rows[1]["fp_rate"] == "0.000000"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(paths["plot"]).size[0] >= 600

    before = {name: p.read_bytes() for name, p in paths.items()}
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_report(reports[1], out)
    assert {name: p.read_bytes() for name, p in paths.items()} == before
    write_report(reports[1], out, overwrite=True)
    assert json.loads(paths["json"].read_text())["summary"]["min_component_px"] == 2


def test_groups_from_a_labels_csv_and_their_figures_by_hand(reports: list[EvaluationReport], tmp_path: Path) -> None:
    from dataclasses import replace

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,label_name\nP1.png,1,meningioma\nP2.png,1,meningioma\nP9.png,2,glioma\n")
    group_of = read_groups(labels)
    assert group_of == {"P1": "meningioma", "P2": "meningioma", "P9": "glioma"}
    summary = replace(reports[0], group_of=group_of).summary()
    assert summary["groups"] == {  # P1 0.7, P2 1.0; P3 (0.0) is in no group; glioma has no evaluated patient
        "(no group)": {"patients": 1, "mean_volume_dice": 0.0, "median_volume_dice": 0.0},
        "meningioma": {
            "patients": 2,
            "mean_volume_dice": pytest.approx(0.85),
            "median_volume_dice": pytest.approx(0.85),
        },
    }
    assert "groups" not in reports[0].summary()
    (tmp_path / "ids.csv").write_text("patient_id,group\nP3,x\n")
    assert read_groups(tmp_path / "ids.csv") == {"P3": "x"}
    (tmp_path / "bad.csv").write_text("name,kind\nP1,a\n")
    with pytest.raises(ValueError, match="needs a patient column"):
        read_groups(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="cannot read groups"):
        read_groups(tmp_path / "missing.csv")
