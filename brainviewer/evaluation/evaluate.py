"""Scoring a model on a dataset, patient by patient (Buda et al. 2019 protocol).

For each patient all slices are stacked into one volume:

* ``volume_dice``: Dice of the stacked prediction against the stacked truth;
* ``tumour_slice_dice``: mean Dice over the slices whose truth has tumour;
* ``fp_rate``: fraction of tumour-free slices on which anything is predicted.

Dataset summaries are the mean and median of per-patient volume Dice, micro Dice
(all pixels of all patients pooled), and the pooled false-positive slice rate.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainviewer.data.datasets import Dataset, load_arrays
from brainviewer.evaluation.metrics import Counts, counts, dice_from_counts
from brainviewer.model.postprocess import postprocess_volume
from brainviewer.model.preprocessing import volume_levels

if TYPE_CHECKING:
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import Segmenter

logger = logging.getLogger(__name__)

ProbsFn = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class PatientResult:
    """Scores of one patient volume."""

    patient_id: str
    n_slices: int
    n_tumour_slices: int
    volume_dice: float
    tumour_slice_dice: float | None
    fp_rate: float | None
    truth_voxels: int
    pred_voxels: int
    slice_dice: list[float] = field(default_factory=list)
    slice_truth_px: list[int] = field(default_factory=list)
    slice_pred_px: list[int] = field(default_factory=list)
    slice_max_prob: list[float] = field(default_factory=list)


@dataclass
class EvaluationReport:
    """Per-patient results and dataset summaries for one threshold / post-processing."""

    threshold: float
    min_component_px: int
    keep_largest: bool
    patients: list[PatientResult]
    micro_dice: float
    fp_slices: int
    empty_slices: int
    tta_flip: bool = False
    """Whether the probabilities were averaged with the mirrored scan's (set by the caller, which made them)."""
    volume_keep_largest: bool = False
    """Whether only the largest 3-D component of each patient's stacked prediction was kept."""
    group_of: dict[str, str] = field(default_factory=dict)
    """Patient id -> group (e.g. tumour type, see :func:`read_groups`); with it, the summary has per-group figures."""

    @property
    def dice_values(self) -> list[float]:
        return [p.volume_dice for p in self.patients]

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice_values)) if self.patients else math.nan

    @property
    def median_dice(self) -> float:
        return float(np.median(self.dice_values)) if self.patients else math.nan

    @property
    def fp_rate(self) -> float | None:
        return self.fp_slices / self.empty_slices if self.empty_slices else None

    def summary(self) -> dict:
        tumour = [p.tumour_slice_dice for p in self.patients if p.tumour_slice_dice is not None]
        return {
            "patients": len(self.patients),
            "slices": sum(p.n_slices for p in self.patients),
            "threshold": self.threshold,
            "min_component_px": self.min_component_px,
            "keep_largest": self.keep_largest,
            "volume_keep_largest": self.volume_keep_largest,
            "tta_flip": self.tta_flip,
            "mean_volume_dice": self.mean_dice,
            "median_volume_dice": self.median_dice,
            "micro_dice": self.micro_dice,
            "mean_tumour_slice_dice": float(np.mean(tumour)) if tumour else None,
            "fp_rate_empty_slices": self.fp_rate,
            "fp_slices": self.fp_slices,
            "empty_slices": self.empty_slices,
            **({"groups": group_summaries(self.patients, self.group_of)} if self.group_of else {}),
        }

    def to_json(self) -> dict:
        return {"summary": self.summary(), "patients": [asdict(p) for p in self.patients]}


class _Accumulator:
    """Accumulates counts for one (threshold, min_component_px, keep_largest, volume_keep_largest) setting."""

    def __init__(
        self, threshold: float, min_component_px: int, keep_largest: bool, volume_keep_largest: bool = False
    ) -> None:
        self.threshold = threshold
        self.min_component_px = min_component_px
        self.keep_largest = keep_largest
        self.volume_keep_largest = volume_keep_largest
        self.patients: list[PatientResult] = []
        self.total = Counts(0, 0, 0, 0)
        self.fp_slices = 0
        self.empty_slices = 0

    def add_patient(self, patient_id: str, probs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> None:
        volume = Counts(0, 0, 0, 0)
        slice_dice, tumour_dice, truth_px, pred_px, max_prob = [], [], [], [], []
        fp = empty = 0
        preds = postprocess_volume(
            [prob >= self.threshold for prob in probs],
            self.min_component_px,
            self.keep_largest,
            self.volume_keep_largest,
        )
        for prob, pred, truth in zip(probs, preds, truths, strict=True):
            c = counts(pred, truth)
            volume = volume + c
            d = dice_from_counts(c)
            slice_dice.append(d)
            truth_px.append(c.tp + c.fn)
            pred_px.append(c.tp + c.fp)
            max_prob.append(float(np.max(prob)) if prob.size else 0.0)
            if truth.any():
                tumour_dice.append(d)
            else:
                empty += 1
                fp += int(pred.any())
        self.total = self.total + volume
        self.fp_slices += fp
        self.empty_slices += empty
        self.patients.append(
            PatientResult(
                patient_id=patient_id,
                n_slices=len(truths),
                n_tumour_slices=len(tumour_dice),
                volume_dice=dice_from_counts(volume),
                tumour_slice_dice=float(np.mean(tumour_dice)) if tumour_dice else None,
                fp_rate=fp / empty if empty else None,
                truth_voxels=volume.tp + volume.fn,
                pred_voxels=volume.tp + volume.fp,
                slice_dice=slice_dice,
                slice_truth_px=truth_px,
                slice_pred_px=pred_px,
                slice_max_prob=max_prob,
            )
        )

    def report(self) -> EvaluationReport:
        return EvaluationReport(
            self.threshold,
            self.min_component_px,
            self.keep_largest,
            self.patients,
            dice_from_counts(self.total),
            self.fp_slices,
            self.empty_slices,
            volume_keep_largest=self.volume_keep_largest,
        )


def evaluate_probs(
    dataset: Dataset,
    probs_fn: ProbsFn,
    settings: Sequence[tuple[float, int, bool] | tuple[float, int, bool, bool]],
    progress: Callable[[int, int], None] | None = None,
) -> list[EvaluationReport]:
    """Score ``dataset`` for several post-processing settings with one pass of inference.

    Args:
        dataset: slices grouped by patient; every slice needs ground truth.
        probs_fn: maps a list of scans to their ``(H, W)`` float32 probabilities.
        settings: ``(threshold, min_component_px, keep_largest[, volume_keep_largest])`` tuples to score
            (see :mod:`brainviewer.model.postprocess`).
        progress: called with ``(patients done, patients total)``.

    Returns:
        One :class:`EvaluationReport` per setting, in the same order.
    """
    return evaluate_probs_variants(dataset, lambda scans: (probs_fn(scans),), [settings], progress)[0]


def evaluate_probs_variants(
    dataset: Dataset,
    variants_fn: Callable[[list[np.ndarray]], Sequence[list[np.ndarray]]],
    settings: Sequence[Sequence[tuple[float, int, bool] | tuple[float, int, bool, bool]]],
    progress: Callable[[int, int], None] | None = None,
) -> list[list[EvaluationReport]]:
    """:func:`evaluate_probs` for several kinds of probabilities from one pass over the data.

    For example a model's plain probabilities and its flip-averaged ones, which one batched
    forward pass of the scans and their mirrors gives together
    (:meth:`brainviewer.model.segmenter.Segmenter.predict_probs_plain_and_flip`).

    Args:
        dataset: slices grouped by patient; every slice needs ground truth.
        variants_fn: maps a list of scans to one list of ``(H, W)`` probabilities per variant.
        settings: for each variant, the post-processing settings to score.
        progress: called with ``(patients done, patients total)``.

    Returns:
        For each variant, one :class:`EvaluationReport` per setting, in the same order.
    """
    accumulators = [[_Accumulator(*setting) for setting in variant] for variant in settings]
    patients = dataset.patients
    for done, (pid, records) in enumerate(patients.items(), start=1):
        scans, truths = [], []
        for record in records:
            image, truth = load_arrays(dataset, record)
            if truth is None:
                raise ValueError(f"{record.image_path} has no ground truth; evaluation needs masks for every slice.")
            scans.append(image)
            truths.append(truth)
        variants = variants_fn(scans)
        if len(variants) != len(accumulators):
            raise ValueError(f"variants_fn gave {len(variants)} kinds of probabilities for {len(settings)} settings")
        for probs, variant_accumulators in zip(variants, accumulators, strict=True):
            for acc in variant_accumulators:
                acc.add_patient(pid, probs, truths)
        if progress:
            progress(done, len(patients))
    return [[acc.report() for acc in variant] for variant in accumulators]


def default_sweep(base_threshold: float = 0.5) -> list[tuple[float, int, bool, bool]]:
    """Threshold x small-component x largest-3-D-component settings used to choose
    post-processing on validation data (the simpler setting first, so it wins a tie)."""
    thresholds = sorted({round(t, 2) for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, base_threshold)})
    return [(t, m, False, v) for v in (False, True) for t in thresholds for m in (0, 16, 64, 128)]


def choose_setting(reports: Sequence[EvaluationReport], max_fp_rate: float = 0.05) -> EvaluationReport:
    """The report with the best mean volume Dice whose FP rate is within ``max_fp_rate``
    (or, if none is, the one with the lowest FP rate)."""
    ok = [r for r in reports if (r.fp_rate or 0.0) <= max_fp_rate]
    if ok:
        return max(ok, key=lambda r: (round(r.mean_dice, 4), -r.min_component_px))
    return min(reports, key=lambda r: (r.fp_rate or 0.0, -r.mean_dice))


GROUP_ID_COLUMNS = ("patient_id", "patient", "file")
"""Columns of a groups CSV that can name the patient (the first one present is used)."""
GROUP_COLUMNS = ("label_name", "group", "label")
"""Columns of a groups CSV that can name the group (the first one present is used)."""
NO_GROUP = "(no group)"


def read_groups(path: str | Path) -> dict[str, str]:
    """Patient id -> group from a CSV such as figshare's ``labels.csv`` (``file,label,label_name``).

    The patient column is the first of :data:`GROUP_ID_COLUMNS` present, the group column the first
    of :data:`GROUP_COLUMNS`. A ``file`` value counts by its stem (``12.png`` is patient ``12``, as
    in image/mask folder datasets).

    Raises:
        ValueError: unreadable file, or no patient or group column.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"cannot read groups from {path}: {err}") from None
    columns = list(rows[0]) if rows else []
    id_column = next((c for c in GROUP_ID_COLUMNS if c in columns), None)
    group_column = next((c for c in GROUP_COLUMNS if c in columns), None)
    if id_column is None or group_column is None:
        raise ValueError(
            f"{path} needs a patient column ({' or '.join(GROUP_ID_COLUMNS)}) and a group column "
            f"({' or '.join(GROUP_COLUMNS)}); it has {columns or 'no rows'}"
        )
    groups = {}
    for row in rows:
        patient = (row[id_column] or "").strip()
        if id_column == "file":
            patient = Path(patient).stem
        if patient:
            groups[patient] = (row[group_column] or "").strip() or NO_GROUP
    return groups


def group_summaries(patients: Sequence[PatientResult], group_of: dict[str, str]) -> dict[str, dict]:
    """Per group (sorted by name; patients the mapping lacks under ``"(no group)"``): the number of
    patients and their mean and median volume Dice."""
    dice: dict[str, list[float]] = {}
    for patient in patients:
        dice.setdefault(group_of.get(patient.patient_id, NO_GROUP), []).append(patient.volume_dice)
    return {
        name: {
            "patients": len(values),
            "mean_volume_dice": float(np.mean(values)),
            "median_volume_dice": float(np.median(values)),
        }
        for name, values in sorted(dice.items())
    }


def choose_postprocessing(
    segmenter: Segmenter, dataset: Dataset, batch_size: int = 16
) -> tuple[EvaluationReport, list[EvaluationReport]]:
    """Choose threshold, post-processing and flip TTA for ``segmenter`` on validation data.

    One pass over ``dataset``'s scans and their mirrors scores every setting of
    :func:`default_sweep`, without and with flip TTA; :func:`choose_setting` picks one.

    Returns:
        ``(chosen report, every report scored)``; apply the choice with :func:`with_setting`.
    """
    sweep = default_sweep(segmenter.prep.threshold)

    def both(scans: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return segmenter.predict_probs_plain_and_flip(scans, batch_size, volume_levels(scans, segmenter.prep))

    plain, flipped = evaluate_probs_variants(dataset, both, [sweep, sweep])
    for report in flipped:
        report.tta_flip = True
    candidates = plain + flipped  # plain first: on a tie the cheaper setting wins
    return choose_setting(candidates), candidates


def with_setting(prep: Preprocessing, report: EvaluationReport) -> Preprocessing:
    """``prep`` with the threshold, post-processing and TTA of ``report``."""
    return replace(
        prep,
        threshold=report.threshold,
        min_component_px=report.min_component_px,
        keep_largest=report.keep_largest,
        volume_keep_largest=report.volume_keep_largest,
        tta_flip=report.tta_flip,
    )


REPORT_PATIENT_COLUMNS = (
    "patient_id",
    "n_slices",
    "n_tumour_slices",
    "volume_dice",
    "tumour_slice_dice",
    "fp_rate",
    "truth_voxels",
    "pred_voxels",
)


def patient_csv_cells(patient: PatientResult) -> list:
    """The :data:`REPORT_PATIENT_COLUMNS` of one patient: rates with 6 decimals, missing values empty."""
    values = asdict(patient)
    return [
        "" if values[c] is None else f"{values[c]:.6f}" if isinstance(values[c], float) else values[c]
        for c in REPORT_PATIENT_COLUMNS
    ]


def report_patients_csv(report: EvaluationReport) -> str:
    """One CSV row per patient (:data:`REPORT_PATIENT_COLUMNS`, see :func:`patient_csv_cells`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_PATIENT_COLUMNS)
    for patient in report.patients:
        writer.writerow(patient_csv_cells(patient))
    return out.getvalue()


def write_report(report: EvaluationReport, out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``evaluation.json``, ``per_patient.csv`` and ``per_patient_dice.png`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "evaluation.json",
        "csv": out_dir / "per_patient.csv",
        "plot": out_dir / "per_patient_dice.png",
    }
    if not overwrite:
        clash = [str(p) for p in paths.values() if p.exists()]
        if clash:
            raise FileExistsError(f"{', '.join(clash)} already exist; choose another --out or pass --overwrite.")
    paths["json"].write_text(json.dumps(report.to_json(), indent=2) + "\n")
    paths["csv"].write_text(report_patients_csv(report))
    _plot(report, paths["plot"])
    return paths


def _plot(report: EvaluationReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(report.patients, key=lambda p: p.volume_dice)
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(ordered) + 2), 4), dpi=100)
    ax.bar(range(len(ordered)), [p.volume_dice for p in ordered], color="#3b7dd8")
    ax.axhline(report.mean_dice, color="#d62728", lw=1.5, label=f"mean {report.mean_dice:.3f}")
    ax.axhline(report.median_dice, color="#2ca02c", lw=1.5, ls="--", label=f"median {report.median_dice:.3f}")
    ax.set_xticks(range(len(ordered)))
    ax.set_xticklabels([p.patient_id for p in ordered], rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("per-volume Dice")
    ax.set_title(f"{len(ordered)} patients, threshold {report.threshold:.2f}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
