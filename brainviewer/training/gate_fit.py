"""Fitting the tumour-present gate (:mod:`brainviewer.model.gate`) and choosing its threshold on validation.

Two ways a model gets a gate:

* **Jointly trained** (``train --tumour-head``): the classification head learns with the segmentation; at the
  end of the run :func:`gate_for_validation` chooses its threshold on the validation patients.
* **Fitted to trained weights** (``python -m brainviewer fit-gate``, :func:`fit_gate`): the network stays as
  it is; the head's linear layer is fitted (class-balanced L2 logistic regression) on the deepest encoder
  features, averaged over each slice, of the split's *training* patients; the threshold is chosen on its
  *validation* patients. The segmentation is unchanged, bit for bit.

The threshold is the smallest one (on a grid of 0.01) at which at most ``max_fp`` of the validation patients'
tumour-free slices, each predicted alone, still show a predicted pixel. Its cost is reported beside it: the
tumour slices the gate hides. The figure to trust is the leave-one-patient-out one
(:func:`leave_one_patient_out`): each validation patient scored with the threshold chosen on the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.single_slice import (
    DEFAULT_MAX_FP,
    PatientSlices,
    choose_threshold,
    leave_one_patient_out,
    patient_slices,
    score_gate,
)
from brainviewer.model.gate import GATE_FILE, attach_head, has_head
from brainviewer.model.preprocessing import to_input

logger = logging.getLogger(__name__)


def gate_report(patients: dict[str, PatientSlices], threshold: float | None, max_fp: float, how: str) -> dict:
    """What ``tumour_gate.json`` records: the threshold, the validation figures without and with it, and the
    leave-one-patient-out estimate."""
    return {
        "tumour_gate": threshold,
        "max_fp": max_fp,
        "how": how,
        "validation_patients": sorted(patients),
        "ungated": score_gate(patients, None),
        "gated": score_gate(patients, threshold),
        "gated_leave_one_patient_out": leave_one_patient_out(patients, max_fp),
    }


def gate_card_section(report: dict) -> str:
    """A model card section (markdown) for a ``tumour_gate.json`` report."""
    rows = [("no gate", report["ungated"]), ("gate, leave-one-patient-out", report["gated_leave_one_patient_out"])]
    lines = [
        "## Tumour-present gate for a slice seen alone",
        f"Threshold {report['tumour_gate']} (`tumour_gate` in `preprocessing.json`), chosen for at most "
        f"{report['max_fp']:.1%} false positives on the validation patients' tumour-free slices, each predicted "
        f"alone; {report['how']}. Whole patients are not gated. Full report: `{GATE_FILE}`.",
        "",
        "| each slice predicted alone | tumour-free slices with a predicted pixel | tumour slices shown | mean "
        "per-patient Dice of the stacked slices |",
        "|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['fp_rate']:.1%} ({s['fp']} of {s['tumour_free_slices']}) | "
            f"{s['tumour_slices_shown']} of {s['tumour_slices']} | {s['mean_dice']:.3f} |"
        )
    return "\n".join(lines) + "\n"


# === Predicting the validation slices ==========================================================


def gate_for_validation(segmenter: object, val_set: Dataset, max_fp: float = DEFAULT_MAX_FP) -> dict | None:
    """Choose the gate threshold of a jointly trained head on ``val_set`` and set it in ``segmenter.prep``;
    returns the report for ``tumour_gate.json``, or ``None`` for a model without a head."""
    if not has_head(segmenter.model):  # type: ignore[attr-defined]
        return None
    patients = patient_slices(segmenter, val_set, val_set.patient_ids)
    threshold = choose_threshold(patients, max_fp)
    segmenter.prep.tumour_gate = threshold  # type: ignore[attr-defined]
    return gate_report(patients, threshold, max_fp, "trained jointly; threshold chosen on the validation patients")


# === Fitting a head to trained weights =========================================================


@torch.inference_mode()
def encoder_features(segmenter: object, images: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
    """``(N, C)`` float32: each scan's deepest encoder features averaged over the image (the head's input),
    each scan normalised alone."""
    model, prep, device = segmenter.model, segmenter.prep, segmenter.device  # type: ignore[attr-defined]
    feats = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([to_input(img, prep, None) for img in images[start : start + batch_size]])
        feats.append(model.encoder(torch.from_numpy(batch).to(device))[-1].float().mean((2, 3)).cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, int(model.encoder.out_channels[-1])), np.float32)


def fit_linear_head(x: np.ndarray, y: np.ndarray, weight_decay: float = 1e-2) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression of ``y`` (``(N,)`` 0/1) on ``x`` (``(N, C)``), fitted on
    standardised features with L-BFGS and folded back: ``(w (C,) float32, b)`` so that the tumour-present
    probability is ``sigmoid(x @ w + b)``.

    Raises:
        ValueError: ``y`` holds only one class.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.min() == y.max():
        raise ValueError("The training slices need both tumour and tumour-free slices to fit a gate.")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.from_numpy(y)
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=300)
    pos_weight = (1 - yt.mean()) / yt.mean()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(xt)[:, 0], yt, pos_weight=pos_weight)
        loss = loss + weight_decay * (linear.weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w = linear.weight.detach().numpy()[0] / sd
    return w.astype(np.float32), float(linear.bias.detach()) - float((w * mu).sum())


def fit_gate(
    weights: str | Path,
    dataset: Dataset,
    out: str | Path,
    max_fp: float = DEFAULT_MAX_FP,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Write a copy of ``weights`` with a tumour-present head fitted on its training patients and a threshold
    chosen on its validation patients (both from its ``split.json``). The network is not changed.

    Args:
        weights: a weights folder without a head, with ``split.json``.
        dataset: holds the split's patients.
        out: the new weights folder; it must not exist (nothing is overwritten).
        max_fp: the false-positive rate on tumour-free validation slices the threshold is chosen for.
        progress: called with a line of text per step.

    Returns:
        ``(out, report)``; ``out`` holds every file of ``weights`` plus ``tumour_gate.json`` (the report).

    Raises:
        FileExistsError: ``out`` exists.
        ValueError: no split, patients missing from ``dataset``, or the weights already have a head.
    """
    from brainviewer.data.split import weights_split
    from brainviewer.model.segmenter import Segmenter, save_weights

    weights, out = Path(weights), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --out.")
    split = weights_split(weights)
    if split is None:
        raise ValueError(f"{weights} has no split.json: the gate needs to know its training and validation patients.")
    missing = [p for p in (*split.train, *split.val) if p not in dataset.patients]
    if missing:
        raise ValueError(f"{len(missing)} patients of the split are not in {dataset.root} (e.g. {missing[0]}).")
    say = progress or logger.info
    segmenter = Segmenter.from_folder(weights)
    if has_head(segmenter.model):
        raise ValueError(f"{weights} already has a tumour-present head; its threshold is in preprocessing.json.")
    x, y = [], []
    for i, pid in enumerate(split.train):
        records = dataset.patients[pid]
        x.append(encoder_features(segmenter, [dataset.load_image(r) for r in records]))
        y += [bool(m is not None and m.any()) for m in (dataset.load_mask(r) for r in records)]
        say(f"features of training patient {i + 1}/{len(split.train)}")
    w, b = fit_linear_head(np.concatenate(x), np.asarray(y))
    attach_head(segmenter.model, w, b)
    say(f"predicting the {len(split.val)} validation patients' slices one at a time")
    patients = patient_slices(segmenter, dataset, list(split.val))
    threshold = choose_threshold(patients, max_fp)
    how = (
        f"head fitted on the encoder features of {len(split.train)} training patients ({len(y)} slices) of "
        f"{weights.name}, frozen; threshold chosen on its {len(split.val)} validation patients"
    )
    report = gate_report(patients, threshold, max_fp, how)
    segmenter.prep.tumour_gate = threshold
    extra = {
        f.name: f.read_text()
        for f in weights.iterdir()
        if f.is_file() and f.suffix in (".json", ".md") and f.name not in ("config.json", "preprocessing.json")
    }
    extra[GATE_FILE] = json.dumps(report, indent=2) + "\n"
    card = extra.pop("README.md", f"# {out.name}\n").rstrip("\n") + "\n\n" + gate_card_section(report)
    save_weights(segmenter.model, out, segmenter.prep, card=card, extra_files=extra)
    for folder in (f for f in weights.iterdir() if f.is_dir() and not f.name.startswith(".")):
        shutil.copytree(folder, out / folder.name)  # e.g. evaluation/: the segmentation is unchanged
    return out, report


# === Command line ==============================================================================


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``fit-gate`` command."""
    parser = sub.add_parser(
        "fit-gate",
        help="give trained weights a tumour-present gate for slices seen alone",
        description="Writes a copy of WEIGHTS with smp's classification head fitted on the encoder features of "
        "its training patients (split.json) and a threshold chosen on its validation patients, so that at most "
        "--max-fp of their tumour-free slices, each predicted alone, show a predicted pixel. The segmentation "
        "is unchanged. Prints the report also saved as tumour_gate.json.",
    )
    parser.add_argument("weights", help="weights folder with split.json and no head")
    parser.add_argument("dataset", help="dataset holding the split's patients")
    parser.add_argument("--out", required=True, help="the new weights folder (must not exist)")
    parser.add_argument("--max-fp", type=float, default=DEFAULT_MAX_FP, help="target false-positive rate")
    parser.set_defaults(func=_cmd_fit_gate)


def _cmd_fit_gate(args: argparse.Namespace) -> int:
    from brainviewer.data.datasets import open_dataset

    if not 0.0 <= args.max_fp < 1.0:
        raise ValueError(f"--max-fp must be in [0, 1), e.g. 0.03; got {args.max_fp}")
    dataset = open_dataset(args.dataset)
    out, report = fit_gate(args.weights, dataset, args.out, args.max_fp)
    summary = {k: v for k, v in report.items() if k != "validation_patients"}
    print(json.dumps(summary, indent=2))
    print(out)
    return 0
