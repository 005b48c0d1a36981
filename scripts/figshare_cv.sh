#!/usr/bin/env bash
# The 5-fold cross-validation of the figshare model's recipe (fold 0 is the shipped weights/figshare-unet-resnet18).
#
#   bash scripts/figshare_cv.sh [FOLD ...]      # default: folds 0-4; a fold already started is resumed
#   RECIPE=long bash scripts/figshare_cv.sh 0   # the candidate recipe (issue 15), to runs/figshare-long-cv5-f<k>
#
# The folds run with the code of commit 5ba2698 (checked out once into ../train-wt, a git worktree), the
# commit fold 0 was trained with, so every fold uses the same base weights (the LGG model before its per-patient
# normalisation) and the same normalisation target (0.7). Runs go to runs/figshare-norm-cv5-f<k>; one at a time.
# The candidate ``long`` keeps the base weights, split and augmentation and changes two things: 60 epochs instead
# of 25 (the recipe above sees about 1,400 steps, an LGG fold about 3,300) in bf16 autocast, validated every 2
# epochs, and the default model's intensity augmentation (gain, gamma, bias field) on half the crops. It runs
# with the code of commit a2e6341 (../lgg-wt, a git worktree; that commit added --cpu-amp and --val-every) and the
# same base weights (../train-wt/weights/lgg-unet-resnet18).
# Afterwards:
#   python -m brainviewer cv-evaluate ../shared/data/figshare runs/figshare-norm-cv5-f{0,1,2,3,4} \
#       --groups ../shared/data/figshare/labels.csv
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
CODE="$(cd "$ROOT/.." && pwd)/train-wt"  # where folds 0 and 1 ran: their config.json names its weights
[ -d "$CODE" ] || git worktree add "$CODE" 5ba2698
DATA="$(cd "$ROOT/../shared/data/figshare" && pwd)"
BASE="$CODE/weights/lgg-unet-resnet18"
NAME=figshare-norm-cv5
EXTRA=()
if [ "${RECIPE:-}" = long ]; then
  CODE="$(cd "$ROOT/.." && pwd)/lgg-wt"
  [ -d "$CODE" ] || git worktree add "$CODE" a2e6341
  NAME=figshare-long-cv5
  EXTRA=(--epochs 60 --cpu-amp --val-every 2 --early-stop-patience 15 --intensity-augment-prob 0.5)
elif [ -n "${RECIPE:-}" ]; then
  echo "unknown RECIPE=$RECIPE (give long, or nothing for the shipped recipe)" >&2
  exit 2
fi
for k in "${@:-0 1 2 3 4}"; do
  for fold in $k; do
    run="$ROOT/runs/$NAME-f$fold"
    if [ -f "$run/config.json" ]; then
      (cd "$CODE" && python -m brainviewer train --resume "$run")
    else
      (cd "$CODE" && python -m brainviewer train --data "$DATA" --init-weights "$BASE" \
        --intensity-norm percentile --cv-folds 5 --cv-fold "$fold" --split-mode contiguous --split-blocks 8 \
        --crop-size 192 --augment strong --lr 5e-4 --epochs 25 --batch-size 8 --warmup-epochs 1 \
        --min-lr-ratio 0.05 --threads 2 "${EXTRA[@]}" --out-dir "$ROOT/runs" --run-name "$NAME-f$fold")
    fi
  done
done
