#!/usr/bin/env bash
# Mean Dice of `segment` (default options, 16 examples) on the data sets of ../shared/data that
# training holds out (docs/training.md says which and why), for several weights files side by
# side and the histogram classifier (--histogram-baseline) on the same tasks: the tasks are
# fixed (bench/real_heldout.py: seeded by name, a query's own volume never among its examples).
#   bench/real_heldout.sh [UNIVERSEG=build/universeg] [DATA=../shared/data] [WORK=/tmp/universeg-heldout] WEIGHTS...
# Environment: DATASETS (comma-separated; default the two held-out ones), DRAWS (tasks per target,
# 3), QUERIES (8), THREADS (segment's --threads, 1), COLOUR (1: colour images where a data set has them),
# INVERT (N: every N-th example and query inverted, a task of two image types). Prints one row per task and the means per
# data set and over data sets; WORK/scores.txt keeps the rows.
set -euo pipefail
cli=$(realpath "${1:-build/universeg}")
data=${2:-../shared/data}
work=${3:-/tmp/universeg-heldout}
shift $(($# < 3 ? $# : 3))
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../.ci/deps" python3-numpy python3-pil
/usr/bin/python3 "$here/real_heldout.py" "$data" "$work/tasks" \
  "${DATASETS:-msd_hippocampus_mri,bbbc010_celegans_brightfield}" "${DRAWS:-3}" "${QUERIES:-8}" 16
dice() { "$cli" eval --quiet --pred "$1" --truth "$2" | awk '/^mean over/ { print $6 }' | tr -d ,; }
{
  printf '%-44s' task
  for w in "$@"; do printf ' %12.12s' "$(basename "$w" .safetensors)"; done
  printf ' %12s\n' histogram
} | tee "$work/scores.txt"
for t in "$work"/tasks/*/; do
  name=$(basename "$t")
  row=$(printf '%-44s' "$name")
  for w in "$@" histogram; do
    out="$work/out/$name/$(basename "$w" .safetensors)"
    rm -rf "$out"
    if [ "$w" = histogram ]; then opt=(--histogram-baseline); else opt=(--weights "$w"); fi
    "$cli" segment --quiet --threads "${THREADS:-1}" "${opt[@]}" --support "$t/support" --out "$out" "$t/queries/images"
    row+=$(printf ' %12s' "$(dice "$out" "$t/queries")")
  done
  echo "$row"
done | tee -a "$work/scores.txt"
# Means per data set (the task name's prefix before "__") and the mean of those.
awk 'NR == 1 { cols = NF; next }
     { split($1, p, "__"); d = p[1]; if (!(d in n)) order[++nd] = d; n[d]++
       for (i = 2; i <= cols; i++) s[d, i] += $i }
     END { for (k = 1; k <= nd; k++) { d = order[k]; printf "%-44s", "mean " d
             for (i = 2; i <= cols; i++) { printf " %12.4f", s[d, i] / n[d]; m[i] += s[d, i] / n[d] }
             printf "\n" }
           printf "%-44s", "mean over data sets"
           for (i = 2; i <= cols; i++) printf " %12.4f", m[i] / nd
           printf "\n" }' "$work/scores.txt"
