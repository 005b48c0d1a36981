"""Time whole-patient segmentation: one 40-slice 256x256 patient through ``predict_volume``.

Usage::

    python scripts/bench_patient.py                       # default model class (Unet, resnet18), untrained
    python scripts/bench_patient.py --weights weights/lgg-unet-resnet18 --threads 2 --batch-sizes 8 16

Untrained weights take exactly as long as trained ones (same architecture and input size). The
patient is a synthetic phantom (not a real scan). Prints one JSON object per batch size: the
median and best of ``--repeats`` timed runs of ``predict_volume`` after one warm-up run, and the
median of the whole Patients-page computation (inference, masks at 0.5, summary, montage).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights folder (default: an untrained Unet/resnet18, 256 px)")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--channels-last", action="store_true", help="also time the model in channels_last memory format (CPU)"
    )
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from brainviewer.data.phantom import phantom_slice
    from brainviewer.data.volumes import Volume
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import Segmenter, build_model
    from brainviewer.views.patient import montage, predict_volume, predicted_masks, summarise_patient

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        segmenter = Segmenter.from_folder(args.weights, device="cpu")
    else:
        torch.manual_seed(0)
        model = build_model("Unet", "resnet18", in_channels=3).eval()
        segmenter = Segmenter(model, Preprocessing(input_size=256), torch.device("cpu"), name="untrained Unet/resnet18")
    slices, masks = zip(
        *(
            phantom_slice(seed=k, size=args.size, tumour=0.25 < k / args.slices < 0.75, position=k / args.slices)
            for k in range(args.slices)
        ),
        strict=True,
    )
    volume = Volume("phantom-benchmark", list(slices), masks=list(masks), source_kind="kaggle_3m")
    variants = [("contiguous", segmenter)]
    if args.channels_last:
        from dataclasses import replace

        variants.append(
            ("channels_last", replace(segmenter, model=segmenter.model.to(memory_format=torch.channels_last)))
        )
    for layout, seg in variants:
        for batch_size in args.batch_sizes:
            predict_volume(seg, volume, batch_size=batch_size)  # warm-up
            times, flow = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                probs = predict_volume(seg, volume, batch_size=batch_size)
                times.append(time.perf_counter() - start)
                masks_pred = predicted_masks(probs, 0.5)
                summary = summarise_patient(volume, masks_pred, probs, 0.5)
                tumour = summary.tumour_slices or [0]
                montage(
                    [volume.display_image(i) for i in tumour],
                    [volume.mask(i) for i in tumour],
                    [masks_pred[i] for i in tumour],
                )
                flow.append(time.perf_counter() - start)
            assert len(probs) == args.slices and probs[0].shape == (args.size, args.size)
            print(
                json.dumps(
                    {
                        "benchmark": "patient",
                        "model": seg.name,
                        "layout": layout,
                        "input_size": seg.prep.input_size,
                        "slices": args.slices,
                        "slice_size": args.size,
                        "batch_size": batch_size,
                        "threads": torch.get_num_threads(),
                        "predict_volume_median_s": round(statistics.median(times), 3),
                        "predict_volume_best_s": round(min(times), 3),
                        "with_summary_and_montage_median_s": round(statistics.median(flow), 3),
                        "per_slice_ms": round(1000 * statistics.median(times) / args.slices, 1),
                        "cpu": platform.processor() or platform.machine(),
                        "torch": torch.__version__,
                        "mean_prob": round(float(np.mean([p.mean() for p in probs])), 4),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
