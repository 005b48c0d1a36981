"""Command line: ``python -m brainviewer {train,evaluate,cv-evaluate,average,predict,benchmark,export-onnx,push}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

logger = logging.getLogger("brainviewer")


def _cmd_train(args: argparse.Namespace) -> int:
    from brainviewer.training.config import config_from_args
    from brainviewer.training.loop import train

    run_dir = train(resume=args.resume) if args.resume else train(config_from_args(args))
    print(run_dir)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import Split
    from brainviewer.evaluation.evaluate import evaluate_probs, read_groups, write_report
    from brainviewer.model.inference import predict_volume_probs
    from brainviewer.model.weights import resolve_segmenter

    group_of = read_groups(args.groups) if args.groups else {}  # a bad CSV fails before the long part
    segmenter = resolve_segmenter(args.weights, device=args.device, revision=args.revision)
    if args.tta is not None:
        segmenter.prep = replace(segmenter.prep, tta_flip=args.tta)
    if args.volume_largest is not None:
        segmenter.prep = replace(segmenter.prep, volume_keep_largest=args.volume_largest)
    dataset = open_dataset(args.dataset)
    if args.split:
        split = Split.load(args.split)
        dataset = dataset.subset(split.val if args.side == "val" else split.train)
        if not len(dataset):
            raise SystemExit(f"none of the {args.side} patients of {args.split} are in {args.dataset}")
    threshold = segmenter.prep.threshold if args.threshold is None else args.threshold
    min_px = segmenter.prep.min_component_px if args.min_component_px is None else args.min_component_px
    setting = (threshold, min_px, segmenter.prep.keep_largest, segmenter.prep.volume_keep_largest)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} patients", end="", file=sys.stderr, flush=True)

    report = evaluate_probs(
        dataset, lambda s: predict_volume_probs(segmenter, s, args.batch_size), [setting], progress
    )[0]
    report.tta_flip = segmenter.prep.tta_flip
    report.group_of = group_of
    print(file=sys.stderr)
    if args.out:
        paths = write_report(report, args.out, overwrite=args.overwrite)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    rows = [
        f"{p.patient_id:32s} dice {p.volume_dice:.4f}  slices {p.n_slices:3d}  tumour slices {p.n_tumour_slices:3d}"
        f"  fp_rate {'n/a' if p.fp_rate is None else f'{p.fp_rate:.3f}'}"
        for p in report.patients
    ]
    if not args.quiet:
        print("\n".join(rows))
    print(json.dumps(report.summary(), indent=2))
    _print_scores(report.scores())
    return 0


def _print_scores(scores: dict) -> None:
    """Per-patient score summaries (mean ± SD, median [IQR], bootstrap CI) on stderr: stdout stays one JSON."""
    from brainviewer.evaluation.stats import format_summary

    unit = scores.get("distance_unit") or ""
    for name, summary in scores["per_patient_scores"].items():
        if summary is not None:
            print(f"{name:18s} {format_summary(summary, unit=unit if name == 'hd95' else '')}", file=sys.stderr)
    if scores.get("surface_dice_tolerance") is not None:
        print(f"surface_dice tolerance {scores['surface_dice_tolerance']:g} {unit}", file=sys.stderr)


def _cmd_cv_evaluate(args: argparse.Namespace) -> int:
    import torch

    from brainviewer.data.datasets import open_dataset
    from brainviewer.evaluation.crossval import evaluate_folds, pooled_summary, report_paths, write_cv_report
    from brainviewer.evaluation.fold_cache import FOLDS_DIR
    from brainviewer.evaluation.groups import read_groups
    from brainviewer.model.segmenter import Segmenter, default_device

    group_of = read_groups(args.groups) if args.groups else {}  # a bad CSV fails before the long part
    if args.out:
        report_paths(args.out, args.overwrite)  # so does a report that would be refused
    dataset = open_dataset(args.dataset)

    def progress(fold: str, done: int, total: int) -> None:
        print(f"\r{fold}: {done}/{total} patients", end="", file=sys.stderr, flush=True)

    results = evaluate_folds(
        dataset,
        args.folds,
        lambda folder: Segmenter.from_folder(folder, device=args.device),
        args.batch_size,
        progress,
        single_slice=args.single_slice,
        cache_dir=Path(args.out) / FOLDS_DIR if args.out else None,
        device_type=torch.device(args.device).type if args.device else default_device().type,
    )
    print(file=sys.stderr)
    if args.out:
        paths = write_cv_report(results, args.out, len(dataset.patient_ids), args.overwrite, group_of)
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if not args.quiet:
        for result in results:
            for p in result.report.patients:
                print(f"{result.name:24s} {p.patient_id:32s} dice {p.volume_dice:.4f}")
    pooled = pooled_summary(results, len(dataset.patient_ids), group_of)
    print(json.dumps(pooled, indent=2))
    _print_scores(pooled["scores"])
    for name, figures in pooled.get("single_slice", {}).items():
        if name != "gates":
            print(
                f"single slice, {name}: {figures['fp']}/{figures['tumour_free_slices']} tumour-free slices "
                f"show a tumour ({figures['fp_rate']:.1%}); {figures['tumour_slices_shown']}/"
                f"{figures['tumour_slices']} tumour slices shown",
                file=sys.stderr,
            )
    return 0


def _cmd_average(args: argparse.Namespace) -> int:
    from brainviewer.training.average import write_average

    folder, summary = write_average(args.weights, args.out, args.data, overwrite=args.overwrite, device=args.device)
    if summary is not None:
        print(json.dumps(summary, indent=2))
    print(folder)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from brainviewer.evaluation.predict import predict_paths
    from brainviewer.model.weights import resolve_segmenter

    segmenter = resolve_segmenter(args.weights, device=args.device, revision=args.revision)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} scans", end="", file=sys.stderr, flush=True)

    written, failed = predict_paths(
        segmenter,
        args.inputs,
        Path(args.out),
        args.threshold,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        progress=progress,
        volume=args.volume,
    )
    print(file=sys.stderr)
    for path, error in failed:
        print(f"skipped {path}: {error}", file=sys.stderr)
    print(f"wrote {len(written)} masks to {args.out}" + (f"; {len(failed)} files failed" if failed else ""))
    return 1 if failed and not written else 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from brainviewer.evaluation.benchmark import main as bench_main

    return bench_main(args)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from brainviewer.model.weights import resolve_weights_folder

    try:
        from brainviewer.model.onnx_backend import check_against_torch, export_onnx

        folder = resolve_weights_folder(args.weights, args.revision)
        dynamo = None if args.exporter == "auto" else args.exporter == "dynamo"
        out = export_onnx(folder, args.out, opset=args.opset, dynamo=dynamo, overwrite=args.overwrite)
        diff = check_against_torch(folder, out)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}; max |PyTorch - ONNX Runtime| logit difference: {diff:.3g}")
    if diff > args.tolerance:
        print(f"error: the difference exceeds --tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from brainviewer.model.hub import push_weights

    url = push_weights(args.weights, args.repo_id, private=not args.public, commit_message=args.message)
    print(url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from brainviewer.training.config import add_config_arguments

    parser = argparse.ArgumentParser(prog="python -m brainviewer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train or fine-tune a model", argument_default=None)
    train.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its last checkpoint")
    add_config_arguments(train)
    train.set_defaults(func=_cmd_train)

    def weights_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--weights", default=None, help="weights folder or Hugging Face Hub repo id (default: the app's model)"
        )
        p.add_argument(
            "--revision", default=None, help="Hub revision (branch, tag or commit) when --weights is a repo id"
        )
        p.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if available)")
        p.add_argument("--batch-size", type=int, default=16)

    ev = sub.add_parser("evaluate", help="score a model per patient on a dataset")
    ev.add_argument("dataset", help="dataset folder, data_mask.csv or COCO json")
    weights_args(ev)
    ev.add_argument("--split", help="a run's split.json: evaluate only its patients of --side")
    ev.add_argument("--side", choices=("val", "train"), default="val")
    ev.add_argument("--threshold", type=float, default=None, help="probability cut (default: the model's)")
    ev.add_argument("--min-component-px", type=int, default=None, help="drop smaller predicted components")
    ev.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the left-right mirrored scan (--tta) or not (--no-tta); default: the weights' setting",
    )
    ev.add_argument(
        "--volume-largest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep only the largest 3-D component of each patient's prediction, or not; default: the weights'",
    )
    ev.add_argument(
        "--groups",
        help="CSV of patient (or file) and group, e.g. figshare's labels.csv: adds per-group mean and median Dice",
    )
    ev.add_argument("--out", help="folder for evaluation.json, per_patient.csv and per_patient_dice.png")
    ev.add_argument("--overwrite", action="store_true", help="replace existing report files in --out")
    ev.add_argument("--quiet", action="store_true", help="print only the summary")
    ev.set_defaults(func=_cmd_evaluate)

    cv = sub.add_parser(
        "cv-evaluate",
        help="pool the held-out patients of cross-validation folds into one score",
        description="Each fold's best weights score that fold's validation patients with their own "
        "post-processing; the patients of all folds are then pooled. Train the folds with "
        "`train --cv-folds K --cv-fold k` (k = 0..K-1, same --seed and --split-mode).",
    )
    cv.add_argument("dataset", help="the dataset the folds were trained on")
    cv.add_argument("folds", nargs="+", help="run folders (their best/ weights) or weights folders with split.json")
    cv.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if available)")
    cv.add_argument("--batch-size", type=int, default=16)
    cv.add_argument(
        "--out",
        help="folder for cv_evaluation.json, cv_per_patient.csv and cv_summary.md; each scored fold is kept in its "
        "folds/ and reused by a later run with the same --out while the fold's weights, patients' files, options, "
        "device kind and brainviewer's scoring code are unchanged",
    )
    cv.add_argument("--overwrite", action="store_true", help="replace existing report files in --out")
    cv.add_argument(
        "--groups",
        help="CSV of patient id (or file name) and group, e.g. figshare's labels.csv: scores per group as well",
    )
    cv.add_argument("--quiet", action="store_true", help="print only the summary")
    cv.add_argument(
        "--single-slice",
        action="store_true",
        help="also predict every slice alone, as the Review page does: false positives on tumour-free slices "
        "without a gate, with each fold's gate, and with the gate chosen leave-one-patient-out",
    )
    cv.set_defaults(func=_cmd_cv_evaluate)

    from brainviewer.evaluation import compare_run

    compare_run.add_parser(sub)  # compare-models

    from brainviewer.training import gate_fit

    gate_fit.add_parser(sub)  # fit-gate

    av = sub.add_parser(
        "average",
        help="average the weights of models fine-tuned from one another (a model soup)",
        description="Writes the uniform average of two or more weights folders of one architecture and input "
        "as a new weights folder with a model card listing the sources. With --data, its threshold and "
        "post-processing are chosen on the validation patients of the sources' common split.json.",
    )
    av.add_argument("weights", nargs="+", help="weights folders (two or more), e.g. runs/a/best runs/b/best")
    av.add_argument("--out", required=True, help="the new weights folder, e.g. weights/my-soup")
    av.add_argument("--data", help="dataset holding the validation patients of the sources' split")
    av.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if available)")
    av.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    av.set_defaults(func=_cmd_average)

    pr = sub.add_parser("predict", help="write predicted masks for files or folders")
    pr.add_argument("inputs", nargs="+", help="scan files or folders (searched recursively; *_mask files skipped)")
    weights_args(pr)
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--threshold", type=float, default=None, help="probability cut (default: the model's)")
    pr.add_argument("--overwrite", action="store_true", help="replace existing prediction files")
    pr.add_argument(
        "--volume",
        action="store_true",
        help="each folder holds one patient's slices: keep only the largest 3-D component of its prediction",
    )
    pr.set_defaults(func=_cmd_predict)

    be = sub.add_parser("benchmark", help="time inference, the review flow and training steps")
    be.add_argument("--weights", default=None)
    be.add_argument("--device", default=None)
    be.add_argument("--repeats", type=int, default=10)
    be.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    be.add_argument("--skip-training", action="store_true")
    be.add_argument("--json", metavar="PATH", help="also write the results to this JSON file (must not exist)")
    be.set_defaults(func=_cmd_benchmark)

    ex = sub.add_parser("export-onnx", help="export a model to ONNX and check it against PyTorch")
    ex.add_argument("weights", help="weights folder or Hugging Face Hub repo id")
    ex.add_argument("--revision", default=None, help="Hub revision when weights is a repo id")
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    ex.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="torch exporter (auto: dynamo when onnxscript is installed)",
    )
    ex.add_argument("--tolerance", type=float, default=1e-3, help="fail when the logit difference is larger")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ex.set_defaults(func=_cmd_export_onnx)

    pu = sub.add_parser(
        "push",
        help="upload a weights folder and its model card to the Hugging Face Hub",
        description="Token: $HF_TOKEN, else the one saved by `hf auth login` (write access needed).",
    )
    pu.add_argument("weights", help="weights folder")
    pu.add_argument("repo_id", help="user/model or org/model (created if needed)")
    pu.add_argument("--public", action="store_true", help="create the repo public (default private)")
    pu.add_argument("--message", default="Upload brainviewer weights", help="commit message")
    pu.set_defaults(func=_cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
