"""Report files of an evaluation: ``evaluation.json``, ``per_patient.csv`` and ``per_patient_dice.png``.

The per-patient columns carry Dice, the count metrics (sensitivity, precision, volume similarity)
and the boundary metrics (HD95 and surface Dice, with their ``distance_unit``, ``mm`` or ``px``);
see :mod:`brainviewer.evaluation.evaluate` for their definitions and empty-mask conventions.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brainviewer.evaluation.evaluate import EvaluationReport, PatientResult


REPORT_PATIENT_COLUMNS = (
    "patient_id",
    "n_slices",
    "n_tumour_slices",
    "volume_dice",
    "tumour_slice_dice",
    "fp_rate",
    "truth_voxels",
    "pred_voxels",
    "sensitivity",
    "precision",
    "volume_similarity",
    "hd95",
    "surface_dice",
    "distance_unit",
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
