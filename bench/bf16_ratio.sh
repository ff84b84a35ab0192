#!/usr/bin/env bash
# The bf16 mode's speed-up over fp32, read per round: each round times `universeg bench` with
# --precision fp32 and then bf16 (S=64, 128x128, 2 threads) and prints both medians and their
# ratio, so that a machine whose speed drifts between minutes still gives comparable pairs.
#   bench/bf16_ratio.sh [ROUNDS=5] [UNIVERSEG=build/universeg] [WEIGHTS=the v1 golden weights]
set -euo pipefail
rounds=${1:-5}
cli=${2:-build/universeg}
weights=${3:-tests/data/golden/v1_b2_s4_128/weights.pt}
median() { "$cli" bench --weights "$weights" --support-size 64 --repeats 5 --threads 2 --precision "$1" |
  grep -o 'median_ms=[0-9.]*' | cut -d= -f2; }
for i in $(seq "$rounds"); do
  f=$(median fp32)
  b=$(median bf16)
  awk -v i="$i" -v f="$f" -v b="$b" 'BEGIN { printf "round %d: fp32 %.1f ms, bf16 %.1f ms, ratio %.3f\n", i, f, b, f / b }'
done
