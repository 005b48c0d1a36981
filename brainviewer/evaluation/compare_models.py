"""Two or more models scored on the same patients: paired differences, their interval and test.

No Streamlit and no model here: the input is each model's per-patient score (e.g. the volume Dice of
an :class:`~brainviewer.evaluation.evaluate.EvaluationReport`), the output the figures the Evaluation
page's compare view and ``python -m brainviewer compare-models`` show::

    scores = {"base": {"p1": 0.80, "p2": 0.70}, "tuned": {"p1": 0.85, "p2": 0.69}}
    comparison = compare_models(scores)              # the first model is the reference
    comparison.pairs[0].mean_difference              # mean over patients of tuned - base: 0.02
    comparison.rows()                                # per patient: each model's score, the differences
    comparison.disagreements(5)                      # patients where the models' scores spread most

The patient is the unit. A difference is always ``other - reference`` on the same patient; its 95%
interval is the percentile bootstrap of the mean difference, resampling patients
(:func:`brainviewer.evaluation.stats.bootstrap_mean_ci` on the paired differences, so each resample
keeps a patient's scores together), and the p-value is the two-sided Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`, zero differences dropped).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from brainviewer.data.split import Split
from brainviewer.evaluation.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, bootstrap_mean_ci

#: Per-patient scores that can be compared (attributes of ``PatientResult``), and whether higher is better.
METRICS: dict[str, bool] = {
    "volume_dice": True,
    "sensitivity": True,
    "precision": True,
    "volume_similarity": True,
    "hd95": False,
    "surface_dice": True,
}

TEST_NAME = "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon, zero differences dropped)"


@dataclass(frozen=True)
class PairComparison:
    """One model against the reference on the patients both were scored on.

    Attributes:
        reference, other: model labels; every difference is ``other - reference``.
        metric: the compared score (a key of :data:`METRICS`).
        n: patients compared.
        mean_reference, mean_other: each model's mean score over those patients.
        mean_difference: mean over patients of ``other - reference``.
        sd_difference: sample SD of the differences (``None`` for one patient).
        ci_low, ci_high: bootstrap interval of ``mean_difference`` (:attr:`ModelComparison.confidence`).
        wilcoxon_p: two-sided Wilcoxon signed-rank p-value, or ``None`` (see ``wilcoxon_note``).
        wilcoxon_note: why there is no p-value (``""`` when there is one).
        other_better, reference_better, ties: patients on which each model scores better (by the metric's
            direction: lower HD95 is better), and those with equal scores.
    """

    reference: str
    other: str
    metric: str
    n: int
    mean_reference: float
    mean_other: float
    mean_difference: float
    sd_difference: float | None
    ci_low: float
    ci_high: float
    wilcoxon_p: float | None
    wilcoxon_note: str
    other_better: int
    reference_better: int
    ties: int


@dataclass
class ModelComparison:
    """Every model's score on the common patients and each model's comparison with the reference.

    Attributes:
        metric: the compared score.
        models: model labels; ``models[0]`` is the reference.
        patients: the patients every model has a finite score for, sorted.
        scores: model -> its scores on ``patients``, in that order.
        pairs: one :class:`PairComparison` per model after the reference.
        left_out: model -> patients it has a score for that were left out (another model lacks them).
        resamples, seed, confidence: the bootstrap's settings.
    """

    metric: str
    models: list[str]
    patients: list[str]
    scores: dict[str, list[float]]
    pairs: list[PairComparison]
    left_out: dict[str, list[str]] = field(default_factory=dict)
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED
    confidence: float = CONFIDENCE

    @property
    def reference(self) -> str:
        return self.models[0]

    def differences(self, other: str) -> np.ndarray:
        """``(n_patients,)`` float64 ``other - reference`` per patient, in :attr:`patients` order."""
        return np.asarray(self.scores[other], dtype=np.float64) - np.asarray(self.scores[self.reference])

    def rows(self) -> list[dict]:
        """One dict per patient: ``patient``, each model's score (keyed by its label) and, for each other
        model, ``"<other> − <reference>"`` (see :func:`difference_column`)."""
        diffs = {other: self.differences(other) for other in self.models[1:]}
        return [
            {
                "patient": patient,
                **{model: self.scores[model][i] for model in self.models},
                **{difference_column(other, self.reference): float(d[i]) for other, d in diffs.items()},
            }
            for i, patient in enumerate(self.patients)
        ]

    def disagreements(self, n: int = 10) -> list[dict]:
        """The ``n`` patients whose scores spread most across the models (largest minus smallest; for two
        models the absolute difference), widest first, ties by patient id. Each: ``patient``, ``spread``,
        ``best`` and ``worst`` (model labels, by the metric's direction) and every model's score."""
        higher_better = METRICS[self.metric]
        table = np.asarray([self.scores[m] for m in self.models], dtype=np.float64)  # (models, patients)
        spread = table.max(axis=0) - table.min(axis=0)
        order = sorted(range(len(self.patients)), key=lambda i: (-spread[i], self.patients[i]))[: max(n, 0)]
        best = table.argmax(axis=0) if higher_better else table.argmin(axis=0)
        worst = table.argmin(axis=0) if higher_better else table.argmax(axis=0)
        return [
            {
                "patient": self.patients[i],
                "spread": float(spread[i]),
                "best": self.models[best[i]],
                "worst": self.models[worst[i]],
                **{model: float(table[k, i]) for k, model in enumerate(self.models)},
            }
            for i in order
        ]

    def to_json(self) -> dict:
        """Everything as JSON-ready builtins: settings, ``pairs``, per-patient ``rows`` and ``left_out``."""
        return {
            "metric": self.metric,
            "higher_is_better": METRICS[self.metric],
            "reference": self.reference,
            "models": self.models,
            "n_patients": len(self.patients),
            "difference": "other - reference, per patient",
            "test": TEST_NAME,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "confidence": self.confidence},
            "pairs": [asdict(pair) for pair in self.pairs],
            "patients": self.rows(),
            "left_out": self.left_out,
        }

    def to_csv(self) -> str:
        """:meth:`rows` as CSV text (scores with 6 decimals)."""
        rows = self.rows()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        header = ["patient", *self.models, *(difference_column(o, self.reference) for o in self.models[1:])]
        writer.writerow(header)
        for row in rows:
            writer.writerow([row["patient"], *(f"{row[c]:.6f}" for c in header[1:])])
        return out.getvalue()


def difference_column(other: str, reference: str) -> str:
    """The title of the per-patient difference ``other - reference``."""
    return f"{other} − {reference}"


def common_scores(
    per_model: Mapping[str, Mapping[str, float | None]],
) -> tuple[list[str], dict[str, list[float]], dict[str, list[str]]]:
    """The patients every model has a finite score for, and each model's scores on them.

    Args:
        per_model: model label -> {patient id -> score (``None`` or NaN: not scored)}, at least two models.

    Returns:
        ``(patients sorted, {model: scores in that order}, {model: its scored patients left out})``.

    Raises:
        ValueError: fewer than two models, or no patient scored by every model.
    """
    if len(per_model) < 2:
        raise ValueError(f"comparing needs at least two models, got {len(per_model)}: choose another one.")
    scored = {
        model: {p: float(v) for p, v in values.items() if v is not None and math.isfinite(float(v))}
        for model, values in per_model.items()
    }
    patients = sorted(set.intersection(*(set(values) for values in scored.values())))
    if not patients:
        raise ValueError(
            "no patient has a score from every model: compare the models on a dataset they were all scored on."
        )
    left_out = {model: sorted(set(values) - set(patients)) for model, values in scored.items()}
    return patients, {m: [values[p] for p in patients] for m, values in scored.items()}, left_out


def compare_pair(
    reference: Sequence[float],
    other: Sequence[float],
    higher_is_better: bool = True,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict:
    """Paired comparison of two models' scores on the same patients (same order).

    Returns:
        The numeric fields of :class:`PairComparison`: ``n, mean_reference, mean_other, mean_difference,
        sd_difference, ci_low, ci_high, wilcoxon_p, wilcoxon_note, other_better, reference_better, ties``.

    Raises:
        ValueError: different lengths, no patients, or non-finite scores.
    """
    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    if ref.shape != oth.shape or ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"need the same patients for both models, got {ref.size} and {oth.size} scores.")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(oth))):
        raise ValueError("scores must be finite: leave out the patients a model was not scored on.")
    diff = oth - ref
    low, high = bootstrap_mean_ci(diff, resamples, seed, confidence)
    p_value, note = wilcoxon_p(diff)
    better = diff > 0 if higher_is_better else diff < 0
    worse = diff < 0 if higher_is_better else diff > 0
    return {
        "n": int(diff.size),
        "mean_reference": float(ref.mean()),
        "mean_other": float(oth.mean()),
        "mean_difference": float(diff.mean()),
        "sd_difference": float(diff.std(ddof=1)) if diff.size > 1 else None,
        "ci_low": low,
        "ci_high": high,
        "wilcoxon_p": p_value,
        "wilcoxon_note": note,
        "other_better": int(better.sum()),
        "reference_better": int(worse.sum()),
        "ties": int((diff == 0).sum()),
    }


def wilcoxon_p(differences: Sequence[float]) -> tuple[float | None, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (:func:`scipy.stats.wilcoxon`, zero
    differences dropped; exact for small samples without ties, else the normal approximation).

    Returns:
        ``(p, "")``, or ``(None, why)`` when every difference is zero.
    """
    from scipy.stats import wilcoxon

    diff = np.asarray(differences, dtype=np.float64)
    if not np.any(diff != 0):
        return None, "every difference is 0: the models score each patient the same"
    with warnings.catch_warnings():  # scipy warns that few non-zero differences make the test weak: p says so
        warnings.simplefilter("ignore", UserWarning)
        result = wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(result.pvalue), ""


def compare_models(
    per_model: Mapping[str, Mapping[str, float | None]],
    metric: str = "volume_dice",
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> ModelComparison:
    """Compare every model with the first one (the reference) on the patients all of them were scored on.

    Args:
        per_model: model label -> {patient id -> score}, in order (the first is the reference).
        metric: which score the values are (a key of :data:`METRICS`; says which direction is better).
        resamples, seed, confidence: the bootstrap of each mean difference.

    Raises:
        ValueError: an unknown metric, fewer than two models, or no common patient.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}.")
    patients, scores, left_out = common_scores(per_model)
    models = list(per_model)
    reference = models[0]
    pairs = [
        PairComparison(
            reference=reference,
            other=other,
            metric=metric,
            **compare_pair(scores[reference], scores[other], METRICS[metric], resamples, seed, confidence),
        )
        for other in models[1:]
    ]
    return ModelComparison(
        metric, models, patients, scores, pairs, {m: p for m, p in left_out.items() if p}, resamples, seed, confidence
    )


def unseen_patients(patient_ids: Sequence[str], splits: Sequence[Split | None]) -> list[str]:
    """The patients none of the models trained on: those no split (a model's ``split.json``, or ``None`` when
    unknown) puts on its training side, its base model's included (:meth:`Split.side_of`)."""
    return [p for p in patient_ids if not any(s is not None and s.side_of(p) == "train" for s in splits)]


def unique_labels(names: Sequence[str]) -> list[str]:
    """``names`` with repeats told apart by a ``#2``, ``#3``... suffix (two run folders both called ``best``)."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return labels
