#!/usr/bin/env bash
# The 5-fold cross-validation of the figshare model's recipe (fold 0 is the shipped weights/figshare-unet-resnet18).
#
#   bash scripts/figshare_cv.sh [FOLD ...]      # default: folds 0-4; a fold already started is resumed
#
# The folds run with the code of commit 5ba2698 (checked out once into ../train-wt, a git worktree), the
# commit fold 0 was trained with, so every fold uses the same base weights (the LGG model before its per-patient
# normalisation) and the same normalisation target (0.7). Runs go to runs/figshare-norm-cv5-f<k>; one at a time.
# Afterwards:
#   python -m brainviewer cv-evaluate ../shared/data/figshare runs/figshare-norm-cv5-f{0,1,2,3,4} \
#       --groups ../shared/data/figshare/labels.csv
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
CODE="$(cd "$ROOT/.." && pwd)/train-wt"  # where folds 0 and 1 ran: their config.json names its weights
[ -d "$CODE" ] || git worktree add "$CODE" 5ba2698
DATA="$(cd "$ROOT/../shared/data/figshare" && pwd)"
for k in "${@:-0 1 2 3 4}"; do
  for fold in $k; do
    run="$ROOT/runs/figshare-norm-cv5-f$fold"
    if [ -f "$run/config.json" ]; then
      (cd "$CODE" && python -m brainviewer train --resume "$run")
    else
      (cd "$CODE" && python -m brainviewer train --data "$DATA" --init-weights "$CODE/weights/lgg-unet-resnet18" \
        --intensity-norm percentile --cv-folds 5 --cv-fold "$fold" --split-mode contiguous --split-blocks 8 \
        --crop-size 192 --augment strong --lr 5e-4 --epochs 25 --batch-size 8 --warmup-epochs 1 \
        --min-lr-ratio 0.05 --threads 2 --out-dir "$ROOT/runs" --run-name "figshare-norm-cv5-f$fold")
    fi
  done
done
