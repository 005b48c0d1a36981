"""Rebuild the data of the figshare experiments the model card lists as tried and dropped.

    python scripts/figshare_experiments.py build OUT [--figshare ../shared/data/figshare] [--lgg ../shared/data/lgg]
    python scripts/figshare_experiments.py groups RUN_DIR [--figshare ../shared/data/figshare]

``build`` writes two images/ + masks/ datasets under OUT (outside the project; figshare files are
symlinked, not copied) and prints the training command of each run:

* ``fs_lgg``: figshare plus the post-contrast (T1-CE) channel of every second LGG tumour slice, from the
  patients whose post-contrast channel is real (not a copy of FLAIR); all LGG patients train.
* ``fs_glioma_x2``: figshare with each training glioma listed twice (one patient, two files).

Both keep the shipped figshare model's split, so validation is the same 60 held-out images.
``groups`` prints a run's validation Dice per tumour type for every epoch (from its metrics.jsonl).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brainviewer.data.datasets import load_arrays, open_dataset  # noqa: E402
from brainviewer.data.split import Split  # noqa: E402

BASE = ROOT / "weights" / "figshare-unet-resnet18"
COMMON = f"--init-weights {BASE} --crop-size 192 --augment strong --loss bce_dice --batch-size 8 --seed 42 --threads 1"


def labels(figshare: Path) -> dict[str, str]:
    with (figshare / "labels.csv").open(newline="") as handle:
        return {Path(row["file"]).stem: row["label_name"] for row in csv.DictReader(handle)}


def link_figshare(figshare: Path, out: Path, extra: dict[str, str]) -> list[tuple[str, str]]:
    """Symlink figshare's pairs into ``out`` (plus ``extra``: new name -> figshare stem); the patients.csv rows."""
    rows = []
    names = {p.name: p.stem for p in sorted((figshare / "images").glob("*.png"))}
    names.update({new: stem for new, stem in extra.items()})
    for name, stem in names.items():
        for sub in ("images", "masks"):
            link = out / sub / name
            if not link.exists():
                os.symlink(figshare / sub / f"{stem}.png", link)
        rows.append((name, stem))
    return rows


def write(out: Path, rows: list[tuple[str, str]], split: Split) -> Path:
    with (out / "patients.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("file", "patient_id"), *rows])
    return split.save(out / "split.json")


def build(out: Path, figshare: Path, lgg: Path) -> None:
    if out.resolve().is_relative_to(ROOT):
        raise SystemExit(f"{out} is inside the project: write derived data elsewhere")
    base_split = Split.load(BASE / "split.json")
    kinds = labels(figshare)

    joint = out / "fs_lgg"
    for sub in ("images", "masks"):
        (joint / sub).mkdir(parents=True, exist_ok=True)
    rows = link_figshare(figshare, joint, {})
    dataset, lgg_patients = open_dataset(lgg), []
    for patient, records in dataset.patients.items():
        tumour = [(r, *load_arrays(dataset, r)) for r in records]
        tumour = [(r, image, mask) for r, image, mask in tumour if mask is not None and mask.any()]
        if not tumour or all(np.array_equal(image[..., 1], image[..., 2]) for _, image, _ in tumour):
            continue  # no tumour, or no real post-contrast channel
        lgg_patients.append(patient)
        for r, image, mask in tumour[::2]:
            name = f"lgg_{patient}_{r.index:03d}.png"
            Image.fromarray(image[..., 2].astype(np.uint8)).save(joint / "images" / name)
            Image.fromarray((mask > 0).astype(np.uint8) * 255).save(joint / "masks" / name)
            rows.append((name, patient))
    split = write(joint, rows, Split([*base_split.train, *lgg_patients], base_split.val, "contiguous", 42))
    print(f"python -m brainviewer train --data {joint} --split-file {split} {COMMON} --epochs 12 --lr 3e-4")

    twice = out / "fs_glioma_x2"
    for sub in ("images", "masks"):
        (twice / sub).mkdir(parents=True, exist_ok=True)
    train = set(base_split.train)
    extra = {f"{s}_dup2.png": s for s, kind in kinds.items() if kind == "glioma" and s in train}
    rows = link_figshare(figshare, twice, extra)
    split = write(twice, rows, base_split)
    print(
        f"python -m brainviewer train --data {twice} --split-file {split} {COMMON} --epochs 20 --lr 2e-4 "
        "--early-stop-patience 0"
    )
    print(f"python -m brainviewer train --data {figshare} --split-file {BASE} {COMMON} --epochs 40 --lr 3e-4")


def groups(run_dir: Path, figshare: Path) -> None:
    kinds = labels(figshare)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("type") != "val":
            continue
        by_kind: dict[str, list[float]] = {}
        for patient, dice in record["val_dice_per_patient"].items():
            by_kind.setdefault(kinds.get(patient, "?"), []).append(dice)
        means = ", ".join(f"{kind} {np.mean(values):.3f}" for kind, values in sorted(by_kind.items()))
        print(f"epoch {record['epoch'] + 1}: mean {record['val_dice_mean']:.4f} ({means})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("out", type=Path)
    b.add_argument("--figshare", type=Path, default=ROOT.parent / "shared" / "data" / "figshare")
    b.add_argument("--lgg", type=Path, default=ROOT.parent / "shared" / "data" / "lgg")
    g = sub.add_parser("groups")
    g.add_argument("run_dir", type=Path)
    g.add_argument("--figshare", type=Path, default=ROOT.parent / "shared" / "data" / "figshare")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.figshare.resolve(), args.lgg.resolve())
    else:
        groups(args.run_dir, args.figshare)


if __name__ == "__main__":
    main()
