"""Boundary metrics (HD95, surface Dice), count metrics (sensitivity, precision, volume similarity)
and the dataset summaries (mean ± SD, median [IQR], bootstrap interval), checked by hand.

The sphere cases are exact by construction: a mask shifted by one voxel along the axis with the
smallest spacing ``s`` has every surface voxel either on the other surface (distance 0) or one
shift away from it (the shifted voxel is on the other surface, so the distance is at most ``s``,
and any non-zero distance is at least ``s``): distances are only ``0`` and ``s``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from test_evaluate import dataset_root, probs_from_channel_0  # noqa: F401  (dataset_root is a fixture)

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.evaluation.crossval import FoldResult, pooled_summary
from brainviewer.evaluation.evaluate import SUMMARY_SCORES, evaluate_probs, report_patients_csv
from brainviewer.evaluation.metrics import (
    counts,
    precision_from_counts,
    sensitivity_from_counts,
    volume_similarity_from_counts,
)
from brainviewer.evaluation.stats import bootstrap_mean_ci, describe, format_summary
from brainviewer.evaluation.surface import extent_diagonal, stack_spacing, surface_scores


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by definition: those a one-voxel face-connected erosion removes."""
    return mask & ~ndimage.binary_erosion(mask)


SHAPE = (24, 30, 30)
SPHERE = ball(SHAPE, (12, 14, 15), 7.5)
SHIFTED = np.roll(SPHERE, 1, axis=1)  # one voxel along rows


def test_sphere_against_shifted_sphere_with_anisotropic_spacing() -> None:
    edges_a, edges_b = surface(SPHERE), surface(SHIFTED)
    shared = int(np.count_nonzero(edges_a & edges_b))
    total = int(edges_a.sum() + edges_b.sum())
    assert 0.1 < 1 - 2 * shared / total < 0.9  # well over 5% of each surface moved: the 95th percentile is s
    expected_nsd = 2 * shared / total  # only the shared surface is within a tolerance below s

    # (row, col, slice) = (0.5, 0.8, 3.0) mm: the stack's axes are (slice, row, col) = (3.0, 0.5, 0.8)
    spacing = stack_spacing((0.5, 0.8, 3.0))
    assert spacing == (3.0, 0.5, 0.8)
    tight = surface_scores(SHIFTED, SPHERE, spacing, tolerance=0.4)
    assert (tight.unit, tight.tolerance, tight.worst_case) == ("mm", 0.4, False)
    assert tight.hd95 == pytest.approx(0.5)
    assert tight.surface_dice == pytest.approx(expected_nsd, abs=1e-6)
    assert surface_scores(SHIFTED, SPHERE, spacing, tolerance=0.5).surface_dice == pytest.approx(1.0)

    pixels = surface_scores(SHIFTED, SPHERE, tolerance=0.9)  # no spacing: one voxel step is 1 px
    assert (pixels.unit, pixels.hd95) == ("px", pytest.approx(1.0))
    assert pixels.surface_dice == pytest.approx(expected_nsd, abs=1e-6)
    assert surface_scores(SPHERE, SHIFTED, spacing).hd95 == pytest.approx(0.5)  # symmetric


def test_square_and_cube_against_themselves() -> None:
    square = np.zeros((32, 32), bool)
    square[8:20, 10:22] = True
    same = surface_scores(square, square.astype(np.uint8) * 255)
    assert (same.hd95, same.surface_dice, same.unit) == (0.0, 1.0, "px")
    assert surface_scores(SPHERE, SPHERE, (2.0, 1.0, 1.0), tolerance=0.0).surface_dice == 1.0
    # a lone slice is scored as a 2-D image, with its (row, col) spacing
    one = surface_scores(square[None], np.roll(square, 1, axis=0)[None], (5.0, 0.7, 0.9), tolerance=0.5)
    assert one.hd95 == pytest.approx(0.7) and 0 < one.surface_dice < 1


def test_empty_masks() -> None:
    empty = np.zeros(SHAPE, bool)
    missed = surface_scores(empty, SPHERE, (3.0, 0.5, 0.8))
    diagonal = math.sqrt((24 * 3.0) ** 2 + (30 * 0.5) ** 2 + (30 * 0.8) ** 2)
    assert (missed.hd95, missed.surface_dice, missed.worst_case) == (pytest.approx(diagonal), 0.0, True)
    assert extent_diagonal(SHAPE) == pytest.approx(math.sqrt(24**2 + 2 * 30**2))
    assert surface_scores(SPHERE, empty).hd95 == pytest.approx(extent_diagonal(SHAPE))  # false alarm, in px
    both = surface_scores(empty, empty)
    assert (both.hd95, both.surface_dice, both.worst_case) == (0.0, 1.0, False)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        surface_scores(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        surface_scores(SPHERE, SPHERE, (1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        surface_scores(SPHERE, SPHERE, tolerance=-1.0)
    with pytest.raises(ValueError, match="positive"):
        stack_spacing((1.0, 0.0, 1.0))
    assert stack_spacing(None) is None


def test_sensitivity_precision_volume_similarity_by_hand() -> None:
    truth = np.zeros((4, 5), bool)
    truth[0:2, :] = True  # 10 px
    pred = np.zeros((4, 5), bool)
    pred[1:3, 0:4] = True  # 8 px: 4 in the truth's second row, 4 below it
    pred[0, 0:2] = True  # 2 more inside the truth: 10 px predicted
    c = counts(pred, truth)
    assert (c.tp, c.fp, c.fn) == (6, 4, 4)
    assert sensitivity_from_counts(c) == pytest.approx(6 / 10)
    assert precision_from_counts(c) == pytest.approx(6 / 10)
    assert volume_similarity_from_counts(c) == pytest.approx(1.0)  # same size, partly elsewhere
    inside = np.zeros_like(truth)
    inside[0, 0:4] = True  # 4 px, all inside the 10 px truth: tp 4, fp 0, fn 6
    smaller = counts(inside, truth)
    assert sensitivity_from_counts(smaller) == pytest.approx(0.4) and precision_from_counts(smaller) == 1.0
    assert volume_similarity_from_counts(smaller) == pytest.approx(1 - 6 / 14)  # 1 - |4 - 10| / (4 + 10)
    nothing = np.zeros_like(truth)
    missed, alarm, none = counts(nothing, truth), counts(truth, nothing), counts(nothing, nothing)
    assert (sensitivity_from_counts(missed), precision_from_counts(missed), volume_similarity_from_counts(missed)) == (
        0.0,
        1.0,
        0.0,
    )
    assert (sensitivity_from_counts(alarm), precision_from_counts(alarm), volume_similarity_from_counts(alarm)) == (
        1.0,
        0.0,
        0.0,
    )
    assert (sensitivity_from_counts(none), precision_from_counts(none), volume_similarity_from_counts(none)) == (
        1.0,
        1.0,
        1.0,
    )


def test_describe_and_bootstrap() -> None:
    values = [0.9, 0.1, 0.7, 0.8, 0.95, 0.6, 0.85, 0.3, 0.75, 0.88]
    summary = describe([*values, None, math.nan])  # missing scores are left out
    assert summary is not None and summary["n"] == 10
    assert summary["mean"] == pytest.approx(np.mean(values))
    assert summary["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (summary["median"], summary["q1"], summary["q3"]) == pytest.approx(
        (np.median(values), *np.quantile(values, [0.25, 0.75]))
    )
    assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
    assert bootstrap_mean_ci(values) == bootstrap_mean_ci(values, seed=0)  # seeded: reproducible
    assert (summary["ci_low"], summary["ci_high"]) == bootstrap_mean_ci(values)
    assert bootstrap_mean_ci(values, seed=1) != bootstrap_mean_ci(values)
    low90, high90 = bootstrap_mean_ci(values, confidence=0.9)
    assert summary["ci_low"] <= low90 < high90 <= summary["ci_high"]
    hand = describe([1, 2, 3, 4], resamples=50)
    assert hand is not None
    assert (hand["mean"], hand["median"], hand["q1"], hand["q3"]) == (2.5, 2.5, 1.75, 3.25)
    assert hand["sd"] == pytest.approx(math.sqrt(5 / 3))
    assert describe([0.5])["sd"] is None and describe([None]) is None
    assert "median 2.500 [1.750, 3.250]" in format_summary(hand)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_evaluate_carries_the_new_scores(dataset_root: Path) -> None:  # noqa: F811
    dataset = open_dataset(dataset_root)
    (report,) = evaluate_probs(dataset, probs_from_channel_0, [(0.5, 0, False)])
    p1, p2, p3 = report.patients
    # P1: tp 7, fp 3, fn 3 over its 3 slices
    assert (p1.sensitivity, p1.precision, p1.volume_similarity) == pytest.approx((0.7, 0.7, 1.0))
    assert p1.hd95 > 0 and 0 < p1.surface_dice < 1 and p1.distance_unit == "px"
    # P2: predicted exactly
    assert (p2.sensitivity, p2.precision, p2.volume_similarity, p2.hd95, p2.surface_dice) == (1.0, 1.0, 1.0, 0.0, 1.0)
    # P3: nothing predicted at 0.5: worst-case HD95 = the diagonal of its 2 x 10 x 10 px stack
    assert (p3.sensitivity, p3.precision, p3.volume_similarity, p3.surface_dice) == (0.0, 1.0, 0.0, 0.0)
    assert p3.hd95 == pytest.approx(math.sqrt(2**2 + 10**2 + 10**2)) and p3.hd95_worst_case

    assert report.summary()["mean_volume_dice"] == pytest.approx(1.7 / 3)  # unchanged
    summary = report.scores()
    assert report.to_json()["scores"] == summary
    assert set(summary["per_patient_scores"]) == set(SUMMARY_SCORES)
    assert summary["per_patient_scores"]["volume_dice"]["mean"] == pytest.approx(1.7 / 3)
    assert summary["per_patient_scores"]["sensitivity"]["median"] == pytest.approx(0.7)
    assert (summary["distance_unit"], summary["surface_dice_tolerance"], summary["hd95_worst_case_patients"]) == (
        "px",
        2.0,
        1,
    )
    assert summary["bootstrap"] == {"resamples": 2000, "seed": 0, "confidence": 0.95}

    rows = list(csv.DictReader(io.StringIO(report_patients_csv(report))))
    assert rows[1]["hd95"] == "0.000000" and rows[1]["surface_dice"] == "1.000000" and rows[1]["distance_unit"] == "px"
    assert rows[0]["sensitivity"] == "0.700000" and rows[2]["volume_similarity"] == "0.000000"

    # with the patients' spacing, distances are in mm: 2 mm isotropic voxels double every distance
    (in_mm,) = evaluate_probs(
        dataset, probs_from_channel_0, [(0.5, 0, False)], spacing_mm={p: (2.0, 2.0, 2.0) for p in ("P1", "P2", "P3")}
    )
    assert [p.distance_unit for p in in_mm.patients] == ["mm"] * 3
    assert [p.hd95 for p in in_mm.patients] == pytest.approx([2 * p.hd95 for p in report.patients])
    assert in_mm.scores()["distance_unit"] == "mm"

    # skipped on request (as for the post-processing sweep): the counts and Dice stay
    (quick,) = evaluate_probs(dataset, probs_from_channel_0, [(0.5, 0, False)], surface_tolerance=None)
    assert [p.hd95 for p in quick.patients] == [None] * 3 and quick.scores()["per_patient_scores"]["hd95"] is None
    assert [p.volume_dice for p in quick.patients] == [p.volume_dice for p in report.patients]
    assert quick.scores()["distance_unit"] is None

    split = Split(train=[], val=["P1", "P2", "P3"], mode="random", seed=1, folds=2, fold=0)
    pooled = pooled_summary([FoldResult("f", Path("w"), split, report)])["scores"]
    assert pooled["per_patient_scores"]["hd95"]["n"] == 3 and pooled["surface_dice_tolerance"] == 2.0


@pytest.mark.data
def test_real_lgg_patient_dice_unchanged_and_distances_fast(lgg_root: Path) -> None:
    """Dice on a real kaggle_3m patient is what the code gave before boundary metrics were added
    (FLAIR intensity as a crude 'probability'), and the boundary metrics add well under a second."""
    dataset = open_dataset(lgg_root).subset(["TCGA_CS_4944_20010208"])
    if not len(dataset):
        pytest.skip("patient TCGA_CS_4944_20010208 not in this copy of the data")

    def flair(scans: list[np.ndarray]) -> list[np.ndarray]:
        return [scan[..., 1].astype(np.float32) / 255.0 for scan in scans]

    settings = [(0.5, 0, False), (0.5, 64, False, True)]
    evaluate_probs(dataset, flair, settings[:1])  # warm up: imports, file cache
    t0 = time.perf_counter()
    plain = evaluate_probs(dataset, flair, settings, surface_tolerance=None)
    t1 = time.perf_counter()
    full = evaluate_probs(dataset, flair, settings)
    t2 = time.perf_counter()
    for before, after in zip(plain, full, strict=True):
        assert after.patients[0].volume_dice == before.patients[0].volume_dice
        assert after.micro_dice == before.micro_dice
    patient = full[0].patients[0]
    assert patient.volume_dice == pytest.approx(0.39223077745695645, abs=1e-12)  # value before this change
    assert (patient.truth_voxels, patient.pred_voxels, patient.n_slices) == (28110, 46698, 20)
    assert full[1].patients[0].volume_dice == 0.0
    assert patient.distance_unit == "px"  # kaggle_3m slices record no spacing
    assert patient.hd95 > 0 and 0 < patient.surface_dice < 1
    per_setting = ((t2 - t1) - (t1 - t0)) / len(settings)
    assert per_setting < 2.0  # typically 0.05-0.3 s on one CPU thread; generous for a loaded machine
