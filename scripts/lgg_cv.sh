#!/usr/bin/env bash
# The 5-fold cross-validation by patient of the LGG model's recipe (issue 14), over all 88 patients.
#
#   bash scripts/lgg_cv.sh [FOLD ...]      # default: folds 0-4; a fold already started is resumed
#
# Recipe: from scratch, per-patient 99th-percentile normalisation, the joint tumour-present head,
# intensity augmentation (gain, gamma, bias field) on half the crops, a missing sequence on a fifth,
# 30 epochs, validated every 2 epochs, bf16 autocast on a CPU that has it. Runs go to runs/lgg-cv5-r2-f<k>,
# one at a time; CODE=<a checkout> runs them with that checkout's code (a git worktree at a fixed commit,
# so that editing this one does not change a run half way). Afterwards, the pooled figures:
#   bash scripts/lgg_cv.sh evaluate DIR [--overwrite]   # cv-evaluate --single-slice of the five folds, per
#                                                        # hospital too; report in DIR (scored folds reused)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
CODE="${CODE:-$ROOT}"
DATA="$(cd "$ROOT/../shared/data/lgg" && pwd)"
if [ "${1:-}" = evaluate ]; then
  out="${2:?give the report folder: bash scripts/lgg_cv.sh evaluate DIR}"
  mkdir -p "$out"
  [ -f "$out/lgg_sites.csv" ] || python scripts/lgg_sites.py "$DATA" --out "$out/lgg_sites.csv"
  exec python -m brainviewer cv-evaluate "$DATA" "$ROOT"/runs/lgg-cv5-r2-f{0,1,2,3,4} --single-slice --quiet \
    --groups "$out/lgg_sites.csv" --out "$out" "${@:3}"
fi
for k in "${@:-0 1 2 3 4}"; do
  for fold in $k; do
    run="$ROOT/runs/lgg-cv5-r2-f$fold"
    if [ -f "$run/config.json" ]; then
      (cd "$CODE" && python -m brainviewer train --resume "$run")
    else
      (cd "$CODE" && python -m brainviewer train --data "$DATA" --cv-folds 5 --cv-fold "$fold" \
        --intensity-norm volume_percentile --tumour-head --intensity-augment-prob 0.5 --missing-sequence-prob 0.2 \
        --epochs 30 --val-every 2 --early-stop-patience 8 --cpu-amp --threads 2 \
        --out-dir "$ROOT/runs" --run-name "lgg-cv5-r2-f$fold")
    fi
  done
done
