#!/usr/bin/env bash
# Data-parallel training on one node (docs/cluster.md): steps per second of `universeg train`
# over MPI with 1, 2, ... ranks of one thread each and, beside them, one rank with as many
# threads as the most ranks, for the half width [32,32,32,32] and the v1 width [64,64,64,64];
# the efficiency (rate with N ranks / (N x rate with 1 rank)); and what the allgather of the
# tasks' gradients costs per step, in training (communication and waiting for the slowest rank,
# as train reports it) and alone (bench_mpi_allgather). Every MPI setting trains the same steps
# (--batch = the most ranks): the same weights, whatever the ranks. A control beside them: as
# many independent processes as the most ranks, each with one task a step (--batch 1, a rank's
# share), at once: the rate the cores this machine has free allow without MPI, which the ranks'
# rate is also compared with. Settings alternate round by round, so the load of a shared
# machine falls on each alike.
#   bench/mpi_scaling.sh [BUILD=build-mpi] [OUT=bench/results-mpi]
# Environment: RANKS ("1 2"), ROUNDS (3), STEPS (12; the first 2 are not timed), SIZE (64),
# SUPPORT (8). Needs a build with -DUNIVERSEG_MPI=ON (universeg_cli, bench_mpi_allgather).
set -euo pipefail
build=$(realpath "${1:-build-mpi}")
out=${2:-bench/results-mpi}
read -r -a ranks <<< "${RANKS:-1 2}"
rounds=${ROUNDS:-3} steps=${STEPS:-12} size=${SIZE:-64} support=${SUPPORT:-8}
most=${ranks[-1]}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--bind-to none --oversubscribe)  # threads of their own; more ranks than cores on small machines
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)

# Steps per second of a run's log, from its elapsed_s after step 2 to the last step: no start-up,
# no first-step allocations.
rate() {
  awk -F, 'NR > 1 && $1 == 2 { a = $2 } NR > 1 { b = $2; s = $1 } END { printf "%.4f", (s - 2) / (b - a) }' "$1"
}

# One training run: prints "steps/s allgather_ms" (allgather "-" for one rank). With a fourth
# argument, RANKS independent processes of one task a step instead, and their mean rate.
train() {  # CONFIG RANKS THREADS [independent]
  local dir="$work/$1-$2x$3${4:+-$4}" k
  rm -rf "$dir" && mkdir -p "$dir"
  local common=(train --config "$1" --size "$size" --support-size "$support" --steps "$steps" --threads "$3" --eval-tasks 0
                --log-every 1 --checkpoint-every 1000000)
  if [ -n "${4:-}" ]; then
    for k in $(seq "$2"); do
      OMP_NUM_THREADS=$3 "$build/universeg" "${common[@]}" --batch 1 --out "$dir/w$k.safetensors" > "$dir/stdout$k" &
    done
    wait
    for k in $(seq "$2"); do rate "$dir/w$k.log.csv"; echo; done | awk '{ s += $1 } END { printf "%.4f -\n", s / NR }'
    return
  fi
  OMP_NUM_THREADS=$3 mpirun -np "$2" "${flags[@]}" "$build/universeg" "${common[@]}" --batch "$most" \
    --out "$dir/w.safetensors" > "$dir/stdout"
  local gather
  gather=$(sed -n 's/^allgather of the tasks. gradients: \([0-9.]*\) ms per step.*/\1/p' "$dir/stdout")
  echo "$(rate "$dir/w.log.csv") ${gather:--}"
}

settings=()
for n in "${ranks[@]}"; do settings+=("$n 1"); done
settings+=("1 $most" "$most 1 independent")
{
  echo "# universeg train over MPI on one node"
  echo
  echo "$(date -u +%F), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Size ${size}x${size}, --batch $most, --support-size $support, steps 3..$steps timed, $rounds rounds alternating."
  echo "Command: bench/mpi_scaling.sh (RANKS=\"${ranks[*]}\" ROUNDS=$rounds STEPS=$steps SIZE=$size SUPPORT=$support)"
  echo
} > "$out/scaling.md"
printf 'config\tranks\tthreads\tround\tsteps_per_s\tallgather_ms\n' > "$out/scaling.tsv"
for config in "[32,32,32,32]" v1; do
  for round in $(seq "$rounds"); do
    for s in "${settings[@]}"; do
      read -r n t independent <<< "$s"
      read -r steps_per_s gather <<< "$(train "$config" "$n" "$t" "$independent")"
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$config" "$n${independent:+ independent}" "$t" "$round" "$steps_per_s" "$gather" |
        tee -a "$out/scaling.tsv"
    done
  done
done

# Medians over rounds; speed-up and efficiency against one rank of one thread.
{
  echo "| config | ranks x threads | steps/s (median; each round) | speed-up | efficiency | allgather ms/step (median) |"
  echo "| --- | --- | --- | --- | --- | --- |"
  awk -F'\t' 'NR > 1 { k = $1 "\t" $2 "\t" $3; if (!(k in n)) order[++m] = k; n[k]++; r[k, n[k]] = $5; g[k, n[k]] = $6 }
    function median(a, k, c,   i, j, t, v) {
      for (i = 1; i <= c; i++) v[i] = a[k, i]
      for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
      return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
    }
    END {
      for (i = 1; i <= m; i++) {
        k = order[i]; split(k, f, "\t"); rate = median(r, k, n[k])
        if (f[2] == 1 && f[3] == 1) base[f[1]] = rate
        each = ""; for (j = 1; j <= n[k]; j++) each = each (j > 1 ? ", " : "") r[k, j]
        gm = g[k, 1] == "-" ? "-" : sprintf("%.1f", median(g, k, n[k]))
        speed = rate / base[f[1]]; cores = (f[2] + 0) * f[3]
        if (f[2] ~ /independent/) { printf "| %s | %s x %s (--batch 1 each) | %.3f (%s) | | | |\n", f[1], f[2], f[3], rate, each; continue }
        printf "| %s | %s x %s | %.3f (%s) | %.2f | %.0f%% | %s |\n", f[1], f[2], f[3], rate, each, speed, 100 * speed / cores, gm
      }
    }' "$out/scaling.tsv"
  echo
  echo "Efficiency: speed-up / cores used (ranks x threads). Independent: the control (see the script's"
  echo "head); ranks reaching its rate lose nothing to MPI. Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "The allgather alone (bench_mpi_allgather, $most ranks, 20 repeats between barriers):"
  echo
  echo '```'
  mpirun -np "$most" "${flags[@]}" "$build/bench/bench_mpi_allgather" 20
  echo '```'
} >> "$out/scaling.md"
cat "$out/scaling.md"
