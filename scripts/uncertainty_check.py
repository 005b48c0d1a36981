"""Does the "review these first" order find the model's errors? A check on held-out LGG patients.

Usage::

    python scripts/uncertainty_check.py ../shared/data/lgg --weights weights/lgg-unet-resnet18 --patients 4

For the first ``--patients`` validation patients of the weights' ``split.json`` (never trained on), every
slice is predicted as the Patients page does (the patient's intensity levels, the weights' threshold and
post-processing), and each slice gets its summed binary entropy (:mod:`brainviewer.model.uncertainty`) and
its error pixels (false positives + false negatives against the ground truth). Prints one JSON object:
the Spearman correlation of the two over all slices, and the share of all error pixels that lie in the
10% of each patient's slices ranked most uncertain (against 10% for a random order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from scipy.stats import spearmanr

    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import load_split_file
    from brainviewer.model.inference import predict_volume_probs
    from brainviewer.model.segmenter import Segmenter
    from brainviewer.model.uncertainty import rank_slices
    from brainviewer.views.patient import predicted_masks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="an LGG dataset folder (kaggle_3m or its parent)")
    parser.add_argument("--weights", default="weights/lgg-unet-resnet18")
    parser.add_argument("--patients", type=int, default=4, help="how many validation patients (in split order)")
    parser.add_argument("--top", type=float, default=0.1, help="share of each patient's slices ranked first")
    args = parser.parse_args(argv)

    segmenter = Segmenter.from_folder(args.weights, device="cpu")
    prep = segmenter.prep
    split = load_split_file(args.weights)
    dataset = open_dataset(args.data)
    patients = [p for p in split.val if p in dataset.patients][: args.patients]
    if not patients:
        raise SystemExit(f"none of the validation patients of {args.weights} is in {args.data}")
    bits, errors, in_top, total_errors = [], [], 0, 0
    for patient_id in patients:
        records = dataset.patients[patient_id]
        images = [dataset.load_image(r) for r in records]
        truths = [dataset.load_mask(r, shape=img.shape[:2]) for r, img in zip(records, images, strict=True)]
        probs = predict_volume_probs(segmenter, images, batch_size=8)
        masks = predicted_masks(
            probs, prep.threshold, prep.min_component_px, prep.keep_largest, prep.volume_keep_largest
        )
        wrong = [
            int(np.count_nonzero(m != (t if t is not None else False))) for m, t in zip(masks, truths, strict=True)
        ]
        ranked = rank_slices(probs, top=None)
        by_index = {row.index: row.total_bits for row in ranked}
        bits += [by_index.get(i, 0.0) for i in range(len(records))]
        errors += wrong
        first = [row.index for row in ranked[: max(1, round(args.top * len(records)))]]
        in_top += sum(wrong[i] for i in first)
        total_errors += sum(wrong)
    rho = spearmanr(bits, errors)
    print(
        json.dumps(
            {
                "weights": str(args.weights),
                "patients": patients,
                "slices": len(bits),
                "spearman_entropy_vs_error_px": round(float(rho.statistic), 3),
                "spearman_p": float(rho.pvalue),
                "top_share_of_slices": args.top,
                "error_px_in_top_slices": round(in_top / total_errors, 3) if total_errors else None,
                "error_px_total": total_errors,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
