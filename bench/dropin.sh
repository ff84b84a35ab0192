#!/usr/bin/env bash
# A drop-in program against the CLI, in one run: bench/dropin.cpp compiled as the README says
# (plain g++ -O2 -fopenmp, include paths only, no -march) and `universeg bench`, alternating,
# ROUNDS rounds of REPEATS timed runs each at S supports (v1 weights, 128x128, B=1).
#   bench/dropin.sh [BUILD=build] [S=64] [ROUNDS=5] [REPEATS=5] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build} S=${2:-64} rounds=${3:-5} repeats=${4:-5} threads=${5:-2}
weights=tests/data/golden/v1_b2_s4_128/weights.pt
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
g++ -std=c++17 -O2 -fopenmp -Iinclude -I/usr/include/eigen3 bench/dropin.cpp -o "$out/dropin"
export OMP_NUM_THREADS=$threads
for r in $(seq "$rounds"); do
  "$out/dropin" "$weights" "$S" "$repeats" | sed 's/^/dropin /'
  "$build/universeg" bench --weights "$weights" --support-size "$S" --repeats "$repeats" --threads "$threads" | tail -1 | sed 's/^/cli /'
done | tee "$out/log"
# Median of the per-round medians, and their ratio.
awk 'function med(a, k,   i, j, t) { for (i = 1; i <= k; ++i) for (j = i + 1; j <= k; ++j) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
     { for (i = 2; i <= NF; ++i) if ($i ~ /^median_ms=/) { split($i, v, "="); if ($1 == "dropin") d[++nd] = v[2]; else c[++nc] = v[2] } }
     END { x = med(d, nd); y = med(c, nc); printf "drop-in %.1f ms, CLI %.1f ms (medians of %d rounds): drop-in / CLI = %.3f\n", x, y, nd, x / y }' "$out/log"
