"""Per-channel intensity targets for ``intensity_norm: volume_percentile``, measured on training patients.

For each training patient of a split, the 99th percentile of the head voxels of each channel (over all its
slices, as :func:`brainviewer.model.preprocessing.volume_levels` takes it); the target of a channel is the
median over patients. Moving every patient's level to these targets makes new scanners look like the
training data, with no retraining.

    python scripts/norm_targets.py ../shared/data/lgg --split weights/lgg-unet-resnet18/split.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.model.preprocessing import Preprocessing, volume_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", required=True, help="split.json whose training patients are measured")
    parser.add_argument("--percentile", type=float, default=99.0)
    parser.add_argument("--in-channels", type=int, default=3)
    args = parser.parse_args()
    dataset = open_dataset(args.dataset)
    train = Split.load(args.split).train
    prep = Preprocessing(
        in_channels=args.in_channels, intensity_norm="volume_percentile", norm_percentile=args.percentile
    )
    levels = []
    for pid in train:
        records = dataset.patients.get(pid)
        if records:
            levels.append(volume_levels([dataset.load_image(r) for r in records], prep))
    table = np.stack(levels)
    print(
        json.dumps(
            {
                "patients": len(levels),
                "norm_percentile": args.percentile,
                "norm_target": np.round(np.median(table, axis=0), 4).tolist(),
                "iqr": np.round(np.percentile(table, [25, 75], axis=0), 4).tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
