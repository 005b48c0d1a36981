"""``python -m brainviewer compare-models DATA W1 W2 ...``: score each model as ``evaluate`` does, then compare.

Each model is evaluated on the same patients with its own threshold, post-processing and flip TTA
(from its ``preprocessing.json``), its patients' slices normalised together where its weights ask for it
(:func:`brainviewer.model.inference.predict_volume_probs`), so each model's figures equal those of
``evaluate``. The per-patient scores then go through
:func:`brainviewer.evaluation.compare_models.compare_models` (the first model is the reference).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.compare_models import METRICS, ModelComparison, compare_models, unseen_patients
from brainviewer.evaluation.evaluate import EvaluationReport, evaluate_probs


def report_scores(report: EvaluationReport, metric: str) -> dict[str, float | None]:
    """``patient id -> score`` of one evaluation (``metric``: a key of :data:`METRICS`)."""
    return {p.patient_id: getattr(p, metric) for p in report.patients}


def evaluate_weights(
    dataset: Dataset,
    segmenter: object,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """``evaluate``'s report of one model on ``dataset`` with the weights' own setting (``segmenter.prep``)."""
    from brainviewer.model.inference import predict_volume_probs

    prep = segmenter.prep  # type: ignore[attr-defined]
    setting = (prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest)
    report = evaluate_probs(dataset, lambda s: predict_volume_probs(segmenter, s, batch_size), [setting], progress)[0]
    report.tta_flip = prep.tta_flip
    return report


def comparison_json(comparison: ModelComparison, reports: dict[str, EvaluationReport], extra: dict) -> dict:
    """The comparison (:meth:`ModelComparison.to_json`), each model's settings and dataset summary, and
    ``extra`` (e.g. the dataset and which weights)."""
    evaluations = {
        label: {key: value for key, value in report.summary().items() if key != "groups"}
        for label, report in reports.items()
    }
    return {**extra, **comparison.to_json(), "evaluations": evaluations}


def run(args: argparse.Namespace) -> int:
    """The ``compare-models`` command (see :func:`add_parser`)."""
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import Split, weights_split
    from brainviewer.evaluation.compare_models import unique_labels
    from brainviewer.model.weights import resolve_segmenter, resolve_weights_folder

    out = Path(args.out) if args.out else None
    for path, flag in ((out, "--out"), (Path(args.csv) if args.csv else None, "--csv")):
        if path is not None and path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} already exists; choose another {flag} or pass --overwrite.")
    if len(args.weights) < 2:
        raise ValueError("compare-models needs at least two weights folders (or Hub ids) after the dataset.")
    dataset = open_dataset(args.dataset)
    if args.split:
        split = Split.load(args.split)
        dataset = dataset.subset(split.val if args.side == "val" else split.train)
    folders = [resolve_weights_folder(spec) for spec in args.weights]
    if args.unseen:
        dataset = dataset.subset(unseen_patients(dataset.patient_ids, [weights_split(f) for f in folders]))
    if not len(dataset):
        raise ValueError(f"no patient of {args.dataset} is left to compare on: drop --split or --unseen.")
    segmenters = [resolve_segmenter(spec, device=args.device) for spec in args.weights]
    labels = unique_labels([s.name for s in segmenters])
    reports: dict[str, EvaluationReport] = {}
    for label, segmenter in zip(labels, segmenters, strict=True):

        def progress(done: int, total: int, label: str = label) -> None:
            print(f"\r{label}: {done}/{total} patients", end="", file=sys.stderr, flush=True)

        reports[label] = evaluate_weights(dataset, segmenter, args.batch_size, progress)
        print(file=sys.stderr)
    comparison = compare_models({label: report_scores(r, args.metric) for label, r in reports.items()}, args.metric)
    extra = {
        "dataset": str(args.dataset),
        "weights": {label: str(folder) for label, folder in zip(labels, folders, strict=True)},
        "patients_from": f"{args.side} of {args.split}" if args.split else "all patients",
        "unseen_only": bool(args.unseen),
    }
    data = comparison_json(comparison, reports, extra)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    if args.csv:
        Path(args.csv).write_text(comparison.to_csv())
    for pair in comparison.pairs:
        p = "n/a" if pair.wilcoxon_p is None else f"{pair.wilcoxon_p:.4g}"
        print(
            f"{pair.other} - {pair.reference} ({args.metric}, {pair.n} patients): mean {pair.mean_difference:+.4f}, "
            f"95% CI [{pair.ci_low:+.4f}, {pair.ci_high:+.4f}], Wilcoxon p {p}; "
            f"better on {pair.other_better}, worse on {pair.reference_better}, equal on {pair.ties}"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``compare-models`` to the CLI's subcommands."""
    cm = sub.add_parser(
        "compare-models",
        help="score two or more models on the same patients and compare them (paired)",
        description="Each model is scored per patient as `evaluate` does (its own threshold and post-processing), "
        "then every model is compared with the first: per-patient differences, a bootstrap 95% interval of the "
        "mean difference (2,000 resamples of patients, seed 0) and a Wilcoxon signed-rank p-value.",
    )
    cm.add_argument("dataset", help="dataset folder, data_mask.csv or COCO json")
    cm.add_argument("weights", nargs="+", help="weights folders or Hub ids, two or more; the first is the reference")
    cm.add_argument("--metric", choices=tuple(METRICS), default="volume_dice", help="the per-patient score compared")
    cm.add_argument("--split", help="a run's split.json: only its patients of --side")
    cm.add_argument("--side", choices=("val", "train"), default="val")
    cm.add_argument("--unseen", action="store_true", help="only the patients no model's split.json trained on")
    cm.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if available)")
    cm.add_argument("--batch-size", type=int, default=16)
    cm.add_argument("--out", help="JSON file of the comparison (never overwritten without --overwrite)")
    cm.add_argument("--csv", help="also write the per-patient table to this CSV file")
    cm.add_argument("--overwrite", action="store_true", help="replace existing --out and --csv files")
    cm.set_defaults(func=run)
