#!/bin/bash
# segment_tasks.sh - `universeg segment` across many synthetic tasks: the default (calibrated),
# --no-calibration, and the classical per-task intensity-histogram classifier
# (--histogram-baseline), each scored by `universeg eval` (mean Dice over the labels).
#
#   bench/segment_tasks.sh [COUNT=24] [BUILD=build] [WEIGHTS=bundled] [WORK=/tmp/universeg-segment-tasks] [SEED=777] [TILES=1]
#                          [LAYOUT=mosaic] [segment options...]
#
# TILES > 1: every image a TILES x TILES mosaic of the task's 128-px members (many small objects
# at high resolution), or with LAYOUT wide one continuous field of cells or blobs TILES times
# the side (see examples/make_synthetic_tasks.cpp). Segment options (e.g. --tile 128 --flips 1)
# go to all three modes.
#
# Prints one row per task and the means, and on how many tasks each mode is ahead of the
# classifier and behind it.
set -euo pipefail
COUNT=${1:-24}; BUILD=${2:-build}; WEIGHTS=${3:-}; WORK=${4:-/tmp/universeg-segment-tasks}; SEED=${5:-777}; TILES=${6:-1}
LAYOUT=${7:-mosaic}; shift $(($# < 7 ? $# : 7))
U=$BUILD/universeg
W=(); [ -n "$WEIGHTS" ] && W=(--weights "$WEIGHTS")
rm -rf "$WORK" && mkdir -p "$WORK"
"$BUILD/examples/universeg_make_synthetic_tasks" "$WORK/tasks" "$COUNT" "$SEED" "$TILES" "$LAYOUT" > /dev/null
dice() { "$U" eval --quiet --pred "$1" --truth "$2" | sed -n 's/^mean over .* dice \([0-9.]*\).*/\1/p'; }
printf "%-22s %10s %15s %10s\n" task calibrated no-calibration histogram
for d in "$WORK"/tasks/*/; do
  t=$(basename "$d")
  "$U" segment --quiet "${W[@]}" "$@" --support "$d/support" --out "$WORK/$t/cal" "$d/queries/images"
  "$U" segment --quiet "${W[@]}" "$@" --no-calibration --support "$d/support" --out "$WORK/$t/raw" "$d/queries/images"
  "$U" segment --quiet "${W[@]}" "$@" --histogram-baseline --support "$d/support" --out "$WORK/$t/hist" "$d/queries/images"
  printf "%-22s %10s %15s %10s\n" "$t" "$(dice "$WORK/$t/cal" "$d/queries")" "$(dice "$WORK/$t/raw" "$d/queries")" \
    "$(dice "$WORK/$t/hist" "$d/queries")"
done | tee "$WORK/table.txt"
awk '{ c += $2; r += $3; h += $4; n++; cw += $2 > $4; rw += $3 > $4; cb += $2 < $4; rb += $3 < $4 }
     END { printf "%-22s %10.4f %15.4f %10.4f\n", "mean", c / n, r / n, h / n;
           printf "ahead of the histogram classifier on %d (calibrated) and %d (no calibration) of %d tasks\n", cw, rw, n;
           printf "behind it on %d (calibrated) and %d (no calibration)\n", cb, rb }' "$WORK/table.txt"
