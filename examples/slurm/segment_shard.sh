#!/bin/bash
# One shard of a cohort (a Slurm job array; examples/slurm/segment_cohort.sh submits it after
# saving the task): the array's k-th job segments the k-th of its jobs' shares of the queries
# with the saved calibration, into OUT/shard-k, and with TRUTH evaluates them into OUT/eval-k.csv.
# Environment (exported by segment_cohort.sh): SUPPORT, QUERIES, OUT, SHARDS, TRUTH, SEGMENT_OPTIONS,
# UNIVERSEG.
#SBATCH --job-name=universeg-shard
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=logs/shard-%A-%a.out
set -euo pipefail
: "${SUPPORT:?}" "${QUERIES:?}" "${OUT:?}" "${SHARDS:?}" "${UNIVERSEG:?}"
# Shard k of SHARDS: the array's index, 1 to SHARDS (a rerun of one shard: --array=K).
k=$SLURM_ARRAY_TASK_ID
read -r -a queries <<< "$QUERIES"
read -r -a options <<< "${SEGMENT_OPTIONS:-}"
status=0
"$UNIVERSEG" segment --threads "$SLURM_CPUS_PER_TASK" --support "$SUPPORT" "${options[@]}" --task "$OUT/task.txt" \
  --shard "$k/$SHARDS" --out "$OUT/shard-$k" "${queries[@]}" || status=$?
if [ -n "${TRUTH:-}" ] && [ -d "$OUT/shard-$k" ]; then
  "$UNIVERSEG" eval --only-predicted --pred "$OUT/shard-$k" --truth "$TRUTH" --csv "$OUT/eval-$k.csv" --quiet || status=1
fi
exit "$status"
