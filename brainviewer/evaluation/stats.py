"""Dataset summaries of per-patient scores: mean ± SD, median [IQR] and a bootstrap 95% interval.

The patient is the unit: the bootstrap resamples patients with replacement (each resample has as
many patients as the data) and takes the 2.5th and 97.5th percentiles of the resampled means (a
percentile interval). It is seeded, so the same scores give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
_CHUNK = 1_000_000
"""Resampled values drawn at a time (bounds the memory of a bootstrap over many patients)."""


def bootstrap_mean_ci(
    values: Iterable[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (resampling them with replacement).

    Args:
        values: one score per patient (finite floats).
        resamples: number of bootstrap resamples.
        seed: seed of the ``numpy.random.default_rng`` that draws them.
        confidence: coverage of the interval, e.g. 0.95 for the 2.5th-97.5th percentiles.

    Returns:
        ``(low, high)``, in the unit of ``values``.

    Raises:
        ValueError: no values, a non-finite value, ``resamples < 1`` or ``confidence`` not in (0, 1).
    """
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        raise ValueError("a bootstrap needs at least one value")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap values must be finite")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    rng = np.random.default_rng(seed)
    n = data.size
    per_chunk = max(1, _CHUNK // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, per_chunk):
        stop = min(resamples, start + per_chunk)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def describe(
    values: Iterable[float | None],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, float | int | None] | None:
    """Summary of one per-patient score over a dataset.

    ``None`` and NaN values (a score not computed for that patient) are left out, and ``n`` says
    how many were used.

    Returns:
        ``None`` when no value is left; otherwise ``{"n", "mean", "sd", "median", "q1", "q3",
        "ci_low", "ci_high"}``: mean, sample standard deviation (``ddof=1``; ``None`` for one
        value), median and quartiles (the interquartile range is ``[q1, q3]``, linear
        interpolation) and the bootstrap interval of :func:`bootstrap_mean_ci`, all in the unit
        of the values.
    """
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if data.size == 0:
        return None
    q1, median, q3 = np.quantile(data, [0.25, 0.5, 0.75])
    low, high = bootstrap_mean_ci(data, resamples, seed, confidence)
    return {
        "n": int(data.size),
        "mean": float(data.mean()),
        "sd": float(data.std(ddof=1)) if data.size > 1 else None,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "ci_low": low,
        "ci_high": high,
    }


def format_summary(summary: dict | None, digits: int = 3, unit: str = "", confidence: float = CONFIDENCE) -> str:
    """``"mean ± SD unit, median [q1, q3], 95% CI [low, high] (n=...)"`` text of a :func:`describe` result."""
    if summary is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    suffix = f" {unit}" if unit else ""
    sd = "" if summary["sd"] is None else " ± " + f.format(summary["sd"])
    return (
        f"{f.format(summary['mean'])}{sd}{suffix}, median {f.format(summary['median'])} "
        f"[{f.format(summary['q1'])}, {f.format(summary['q3'])}], "
        f"{round(confidence * 100)}% CI [{f.format(summary['ci_low'])}, {f.format(summary['ci_high'])}] "
        f"(n={summary['n']})"
    )
