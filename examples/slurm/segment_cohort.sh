#!/bin/bash
# Segmenting a cohort on a Slurm cluster (docs/cluster.md), from a login node:
#   1. one job calibrates the task once and saves it (universeg segment --save-task);
#   2. a job array of SHARDS jobs segments the queries, shard k of SHARDS each
#      (examples/slurm/segment_shard.sh: --task, --shard), after job 1 succeeded;
#   3. with ground truth (TRUTH), one job merges the shards' evaluations (universeg eval --merge)
#      after every shard succeeded.
# Together the shards write exactly what one `universeg segment` of the cohort writes, one
# folder per shard (OUT/shard-K; `mv OUT/shard-*/* OUT/` gathers them: no two outputs share a
# name, which every shard checked for the whole cohort).
#
#   SUPPORT=examples/ QUERIES=cohort/ OUT=results/ SHARDS=32 examples/slurm/segment_cohort.sh
#
# Environment: SUPPORT, QUERIES (folders or files, space-separated), OUT (required); SHARDS (8);
# TRUTH (a folder of ground-truth label maps, optional); WEIGHTS (default: the bundled weights);
# SEGMENT_OPTIONS (more options for segment, the same for every job, e.g. "--tile auto --clip 0.5,99.5");
# UNIVERSEG (the program, default `universeg` on PATH); SBATCH_OPTIONS (e.g. "--partition=cpu
# --account=lab"). A shard that fails (one of its queries failed: exit code 1) can be rerun alone:
#   sbatch --array=K --export=ALL,... examples/slurm/segment_shard.sh
set -euo pipefail
: "${SUPPORT:?set SUPPORT to the folder of labelled examples}" "${QUERIES:?set QUERIES}" "${OUT:?set OUT}"
export SUPPORT QUERIES OUT SHARDS=${SHARDS:-8} TRUTH=${TRUTH:-} UNIVERSEG=${UNIVERSEG:-universeg}
export SEGMENT_OPTIONS=${SEGMENT_OPTIONS:-}
[ -n "${WEIGHTS:-}" ] && export SEGMENT_OPTIONS="--weights $WEIGHTS $SEGMENT_OPTIONS"
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT" logs
read -r -a extra <<< "${SBATCH_OPTIONS:-}"

# shellcheck disable=SC2086  # SEGMENT_OPTIONS is a list of options
calibrate=$(sbatch --parsable "${extra[@]}" --job-name=universeg-task --cpus-per-task=8 --time=01:00:00 \
  --output=logs/task-%j.out --wrap "$UNIVERSEG segment --threads 8 --support '$SUPPORT' $SEGMENT_OPTIONS --save-task '$OUT/task.txt'")
shards=$(sbatch --parsable "${extra[@]}" --dependency=afterok:"$calibrate" --array=1-"$SHARDS" "$here/segment_shard.sh")
echo "calibration: job $calibrate; shards: job array $shards (1-$SHARDS)"
if [ -n "$TRUTH" ]; then
  merge=$(sbatch --parsable "${extra[@]}" --dependency=afterok:"$shards" --job-name=universeg-eval --time=00:10:00 \
    --output=logs/eval-%j.out --wrap "$UNIVERSEG eval --merge '$OUT'/eval-*.csv --csv '$OUT/eval.csv'")
  echo "evaluation: job $merge (summary in logs/eval-$merge.out, table in $OUT/eval.csv)"
fi
