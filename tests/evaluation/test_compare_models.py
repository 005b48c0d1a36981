"""Paired model comparison on synthetic per-patient tables: hand-checked differences, test and interval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainviewer.data.split import Split
from brainviewer.evaluation.compare_models import (
    compare_models,
    compare_pair,
    unique_labels,
    unseen_patients,
    wilcoxon_p,
)

BASE = {"p1": 0.80, "p2": 0.70, "p3": 0.90, "p4": 0.50, "p5": 0.60}
TUNED = {"p1": 0.85, "p2": 0.68, "p3": 0.95, "p4": 0.80, "p5": 0.60}


def test_paired_differences_means_and_counts_by_hand() -> None:
    comparison = compare_models({"base": BASE, "tuned": TUNED})
    (pair,) = comparison.pairs
    # tuned - base per patient: 0.05, -0.02, 0.05, 0.30, 0.00
    assert comparison.patients == ["p1", "p2", "p3", "p4", "p5"]
    assert np.allclose(comparison.differences("tuned"), [0.05, -0.02, 0.05, 0.30, 0.0])
    assert pair.n == 5
    assert pair.mean_difference == pytest.approx(0.38 / 5)
    assert pair.mean_reference == pytest.approx(3.5 / 5)
    assert pair.mean_other == pytest.approx(3.88 / 5)
    assert pair.sd_difference == pytest.approx(np.std([0.05, -0.02, 0.05, 0.30, 0.0], ddof=1))
    assert (pair.other_better, pair.reference_better, pair.ties) == (3, 1, 1)
    assert pair.ci_low <= pair.mean_difference <= pair.ci_high
    # the bootstrap mean of resampled differences never leaves their range
    assert pair.ci_low >= -0.02 and pair.ci_high <= 0.30

    rows = comparison.rows()
    assert rows[3] == {"patient": "p4", "base": 0.50, "tuned": 0.80, "tuned − base": pytest.approx(0.30)}
    worst = comparison.disagreements(2)
    assert [d["patient"] for d in worst] == ["p4", "p1"]  # 0.30, then 0.05 (p1 before p3 by id)
    assert worst[0]["best"] == "tuned" and worst[0]["worst"] == "base"
    assert worst[0]["spread"] == pytest.approx(0.30)


def test_the_wilcoxon_p_value_matches_the_exact_distribution() -> None:
    # five positive differences: the signed-rank statistic is at its extreme, exact two-sided p = 2 / 2**5
    p, note = wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5])
    assert p == pytest.approx(2 / 32) and note == ""
    # ranks 1..4 with the smallest negative: W- = 1; P(W- <= 1) = 2/16 (W- in {0, 1}), two-sided 4/16
    p, _ = wilcoxon_p([-0.1, 0.2, 0.3, 0.4])
    assert p == pytest.approx(4 / 16)
    # zero differences are dropped before ranking (zero_method="wilcox")
    assert wilcoxon_p([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])[0] == pytest.approx(2 / 32)
    p, note = wilcoxon_p([0.0, 0.0, 0.0])
    assert p is None and "every difference is 0" in note


def test_lower_hd95_counts_as_better() -> None:
    pair = compare_pair([3.0, 5.0, 2.0], [2.0, 6.0, 2.0], higher_is_better=False)
    assert (pair["other_better"], pair["reference_better"], pair["ties"]) == (1, 1, 1)
    comparison = compare_models({"a": {"x": 3.0, "y": 5.0}, "b": {"x": 2.0, "y": 9.0}}, metric="hd95")
    top = comparison.disagreements(1)[0]
    assert (top["patient"], top["best"], top["worst"]) == ("y", "a", "b")


def test_the_bootstrap_interval_covers_the_true_mean_difference_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    true_difference, n, trials = 0.03, 40, 300
    covered = 0
    for trial in range(trials):
        base = rng.uniform(0.5, 0.95, n)
        other = base + true_difference + rng.normal(0.0, 0.08, n)
        pair = compare_pair(base, other, resamples=1000, seed=trial)
        covered += pair["ci_low"] <= true_difference <= pair["ci_high"]
    # a percentile bootstrap undercovers slightly at n = 40; 300 trials: binomial SD about 1.3 points
    assert 0.90 <= covered / trials <= 0.985, covered / trials


def test_more_than_two_models_compare_with_the_first_and_leave_out_unscored_patients() -> None:
    third = {"p1": 0.9, "p2": 0.9, "p3": None, "p4": 0.9, "p5": float("nan"), "p9": 0.1}
    comparison = compare_models({"base": BASE, "tuned": TUNED, "third": third})
    assert comparison.patients == ["p1", "p2", "p4"]
    assert [(p.reference, p.other) for p in comparison.pairs] == [("base", "tuned"), ("base", "third")]
    assert comparison.pairs[1].mean_difference == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert comparison.left_out == {"base": ["p3", "p5"], "tuned": ["p3", "p5"], "third": ["p9"]}
    assert list(comparison.rows()[0]) == ["patient", "base", "tuned", "third", "tuned − base", "third − base"]
    # spread over three models: p2 0.70 / 0.68 / 0.90 -> 0.22
    assert comparison.disagreements(3)[1] == {
        "patient": "p2",
        "spread": pytest.approx(0.22),
        "best": "third",
        "worst": "tuned",
        "base": 0.70,
        "tuned": 0.68,
        "third": 0.9,
    }
    data = json.loads(json.dumps(comparison.to_json()))
    assert data["reference"] == "base" and data["n_patients"] == 3 and len(data["pairs"]) == 2
    lines = comparison.to_csv().splitlines()
    assert lines[0] == "patient,base,tuned,third,tuned − base,third − base"
    assert lines[1] == "p1,0.800000,0.850000,0.900000,0.050000,0.100000"


def test_bad_input_says_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match="at least two models"):
        compare_models({"only": BASE})
    with pytest.raises(ValueError, match="no patient has a score from every model"):
        compare_models({"a": {"x": 0.5}, "b": {"y": 0.5}})
    with pytest.raises(ValueError, match="unknown metric"):
        compare_models({"a": BASE, "b": TUNED}, metric="accuracy")
    with pytest.raises(ValueError, match="same patients"):
        compare_pair([0.1, 0.2], [0.1])


def test_unseen_patients_and_unique_labels() -> None:
    a = Split(train=["p1", "p2"], val=["p3"], mode="patient", seed=0)
    b = Split(train=["p3"], val=["p1"], mode="patient", seed=0)
    assert unseen_patients(["p1", "p2", "p3", "p4"], [a, None]) == ["p3", "p4"]
    assert unseen_patients(["p1", "p2", "p3", "p4"], [a, b]) == ["p4"]
    assert unique_labels(["best", "lgg", "best", "best"]) == ["best", "lgg", "best #2", "best #3"]
