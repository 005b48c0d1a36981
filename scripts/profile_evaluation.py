"""Where an evaluation's time goes, per slice: reading, the model, post-processing and counts, and the
surface metrics (HD95, surface Dice), in CPU seconds of this process (steady on a machine shared with a
training run, unlike wall time), next to the model alone on batches of 16 (what ``benchmark`` times).

    python scripts/profile_evaluation.py ../shared/data/lgg --weights weights/lgg-unet-resnet18 --patients 3
    python scripts/profile_evaluation.py ../shared/data/figshare --weights weights/figshare-unet-resnet18 --patients 32

Runs ``evaluate_probs`` as ``python -m brainviewer evaluate`` does (one model call per patient), then the
same slices with the model only (batches, then one slice a call: what a dataset of one-slice patients
gets), and the bare forward pass on random input as ``benchmark`` times it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from brainviewer.data.datasets import load_arrays, open_dataset
from brainviewer.evaluation import evaluate as evaluate_module
from brainviewer.model.inference import predict_volume_probs
from brainviewer.model.segmenter import Segmenter


def _timed(totals: dict[str, float], name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.process_time() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--patients", type=int, default=3, help="the first N patients (natural order)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    segmenter = Segmenter.from_folder(args.weights, device="cpu")
    dataset = open_dataset(args.dataset)
    dataset = dataset.subset(dataset.patient_ids[: args.patients])
    n_slices = len(dataset)
    setting = (
        segmenter.prep.threshold,
        segmenter.prep.min_component_px,
        segmenter.prep.keep_largest,
        segmenter.prep.volume_keep_largest,
    )

    totals: dict[str, float] = defaultdict(float)
    model_fn = _timed(totals, "model", lambda scans: predict_volume_probs(segmenter, scans, args.batch_size))
    original_load, original_surface = evaluate_module.load_arrays, evaluate_module.surface_scores
    evaluate_module.load_arrays = _timed(totals, "read", original_load)
    evaluate_module.surface_scores = _timed(totals, "surface metrics", original_surface)
    start = time.process_time()
    try:
        evaluate_module.evaluate_probs(dataset, model_fn, [setting])
    finally:
        evaluate_module.load_arrays, evaluate_module.surface_scores = original_load, original_surface
    total = time.process_time() - start
    totals["post-processing and counts"] = total - sum(totals.values())

    scans = [load_arrays(dataset, record)[0] for record in dataset]
    start = time.process_time()
    for first in range(0, n_slices, args.batch_size):
        segmenter.predict_probs_batch(scans[first : first + args.batch_size], args.batch_size)
    model_only = time.process_time() - start
    start = time.process_time()
    for scan in scans:
        segmenter.predict_probs_batch([scan], 1)
    model_one_by_one = time.process_time() - start
    size, channels = segmenter.prep.input_size, segmenter.prep.in_channels
    inputs = torch.randn(args.batch_size, channels, size, size, generator=torch.Generator().manual_seed(0))
    start = time.process_time()
    with torch.inference_mode():
        for _ in range(max(1, n_slices // args.batch_size)):
            segmenter.model(inputs)
    forward = (time.process_time() - start) / (max(1, n_slices // args.batch_size) * args.batch_size)

    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "weights": args.weights,
                "patients": len(dataset.patient_ids),
                "slices": n_slices,
                "tta_flip": bool(segmenter.prep.tta_flip),
                "evaluate_cpu_s_per_slice": round(total / n_slices, 4),
                "stages_cpu_s_per_slice": {k: round(v / n_slices, 4) for k, v in totals.items()},
                f"model_only_batches_of_{args.batch_size}_cpu_s_per_slice": round(model_only / n_slices, 4),
                "model_only_one_slice_a_call_cpu_s_per_slice": round(model_one_by_one / n_slices, 4),
                f"forward_only_batch_of_{args.batch_size}_cpu_s_per_slice (benchmark's row)": round(forward, 4),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
