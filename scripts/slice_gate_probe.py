"""Experiment (issue 14, item 3): can a tumour-present gate on the frozen default model hide the false tumours
a slice seen alone shows, without retraining?

The gate is a linear probe (logistic regression, L2) on the default model's deepest encoder features, averaged
over the image (the input of smp's ``aux_params`` classification head), fitted on the slices of the split's
training patients. Its threshold is chosen on the validation patients only, leave-one-patient-out: for each
validation patient, the smallest threshold whose false-positive rate on the other patients' tumour-free slices
is at most ``--max-fp``; the held-out patient is then scored with it. Slices are predicted one at a time, as the
Review page and ``predict`` without ``--volume`` do (no per-patient levels, no 3-D component step).

    python scripts/slice_gate_probe.py ../shared/data/lgg weights/lgg-unet-resnet18 --cache /tmp/gate-cache

About 20 minutes on 2 CPU cores (the features and predictions are cached in ``--cache``). Prints one JSON object:
the ungated and the gated (leave-one-patient-out) false-positive rate per tumour-free slice, the tumour slices
still shown, and the mean per-patient Dice of the stacked single-slice masks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.model.preprocessing import to_input
from brainviewer.model.segmenter import Segmenter


@torch.inference_mode()
def patient_arrays(segmenter: Segmenter, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, C) float32, predicted masks (N, H, W) bool)`` of one patient's slices, each alone."""
    feats = []
    for start in range(0, len(images), 8):
        chunk = images[start : start + 8]
        batch = torch.from_numpy(np.stack([to_input(img, segmenter.prep, None) for img in chunk]))
        feats.append(segmenter.model.encoder(batch)[-1].mean((2, 3)).numpy())
    probs = segmenter.predict_probs_batch(images, 8)
    return np.concatenate(feats), np.stack([p >= segmenter.prep.threshold for p in probs])


def collect(dataset_path: str, weights: str, split_part: str, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Features, masks and truth per patient of one side of the weights' split, cached as ``<part>.npz``."""
    file = cache / f"{split_part}.npz"
    if not file.exists():
        dataset = open_dataset(dataset_path)
        segmenter = Segmenter.from_folder(weights, device="cpu")
        split = Split.load(Path(weights) / "split.json")
        arrays = {}
        for pid in getattr(split, split_part):
            records = dataset.patients[pid]
            images = [dataset.load_image(r) for r in records]
            feats, masks = patient_arrays(segmenter, images)
            arrays[f"{pid}|x"] = feats
            arrays[f"{pid}|pred"] = masks
            arrays[f"{pid}|gt"] = np.stack([dataset.load_mask(r) > 0 for r in records])
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(file, **arrays)
    z = np.load(file)
    pids = sorted({k.split("|")[0] for k in z.files})
    return {p: {k: z[f"{p}|{k}"] for k in ("x", "pred", "gt")} for p in pids}


def fit_probe(x: np.ndarray, y: np.ndarray, weight_decay: float = 1e-2) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression on standardised features, folded back: ``(w (C,), b)``."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300)
    pos_weight = (1 - yt.mean()) / yt.mean()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(xt)[:, 0], yt, pos_weight=pos_weight)
        loss = loss + weight_decay * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = lin.weight.detach().numpy()[0] / sd
    return w, float(lin.bias.detach()) - float((w * mu).sum())


def score(patients: dict, pids: list[str], gate: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """False-positive rate on tumour-free slices, tumour slices shown, mean per-patient Dice, with the gate."""
    fp = negatives = shown = positives = 0
    dices = []
    for p in pids:
        gt, pred = patients[p]["gt"], patients[p]["pred"]
        pred = pred & (gate[p] >= threshold)[:, None, None]
        has_gt, has_pred = gt.reshape(len(gt), -1).any(1), pred.reshape(len(pred), -1).any(1)
        fp += int((has_pred & ~has_gt).sum())
        negatives += int((~has_gt).sum())
        shown += int((has_pred & has_gt).sum())
        positives += int(has_gt.sum())
        total = gt.sum() + pred.sum()
        dices.append(1.0 if total == 0 else 2 * float((gt & pred).sum()) / float(total))
    return {
        "fp_rate": fp / max(negatives, 1),
        "fp": fp,
        "tumour_free_slices": negatives,
        "tumour_slices_shown": shown,
        "tumour_slices": positives,
        "mean_dice": float(np.mean(dices)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("weights")
    parser.add_argument("--cache", type=Path, required=True, help="folder for the cached features and masks")
    parser.add_argument("--max-fp", type=float, default=0.03, help="false-positive rate the threshold must reach")
    args = parser.parse_args()
    train = collect(args.dataset, args.weights, "train", args.cache)
    val = collect(args.dataset, args.weights, "val", args.cache)
    x = np.concatenate([v["x"] for v in train.values()])
    y = np.concatenate([v["gt"].reshape(len(v["gt"]), -1).any(1) for v in train.values()]).astype(np.float32)
    w, b = fit_probe(x, y)
    gate = {p: 1 / (1 + np.exp(-(v["x"] @ w + b))) for p, v in val.items()}
    pids = sorted(val)
    grid = np.round(np.arange(0.0, 0.96, 0.05), 2)
    chosen, fp, negatives, shown, dices = [], 0, 0, 0, []
    for p in pids:
        rest = [q for q in pids if q != p]
        ok = [t for t in grid if score(val, rest, gate, t)["fp_rate"] <= args.max_fp]
        t = float(ok[0] if ok else grid[-1])
        chosen.append(t)
        one = score(val, [p], gate, t)
        fp, negatives, shown = fp + one["fp"], negatives + one["tumour_free_slices"], shown + one["tumour_slices_shown"]
        dices.append(one["mean_dice"])
    print(
        json.dumps(
            {
                "train_patients": len(train),
                "validation_patients": len(pids),
                "ungated": score(val, pids, gate, 0.0),
                "gated_leave_one_patient_out": {
                    "fp_rate": fp / max(negatives, 1),
                    "tumour_slices_shown": shown,
                    "mean_dice": float(np.mean(dices)),
                    "thresholds": chosen,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
