#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time from its committed seeds:
#   fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET (default 25)] [TARGET...]
# BUILD_DIR is a -DUNIVERSEG_FUZZ=ON build (clang). New inputs go to a scratch corpus, never
# into fuzz/corpus/; a crash, leak, sanitizer report, timeout or allocation beyond the RSS
# limit fails the run and leaves the input under BUILD_DIR/fuzz-artifacts/ (printed, with a
# hex dump, so CI logs carry it). Prints each target's final coverage line. UNIVERSEG_FUZZ_JOBS
# targets run side by side (default 1; each target still gets SECONDS of its own).
set -euo pipefail
build=$(cd "$1" && pwd)
seconds=${2:-25}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(zip pickle checkpoint safetensors npy image nifti)
jobs=${UNIVERSEG_FUZZ_JOBS:-1}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"

# One target; its report, $work/$t.report, begins with the verdict ("ok," or "FAILED") read below.
fuzz_one() {
  local t=$1 dict=() log="$work/$1.log" report="$work/$1.report"
  mkdir -p "$work/$t"
  [ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
  # -rss_limit_mb: no input of a few KB may need 2 GB; -timeout: nor seconds of work.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
     "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=16384 \
       -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "${dict[@]}" "$work/$t" "$here/corpus/$t" >"$log" 2>&1; then
    local cov runs
    cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 || true)
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    echo "fuzz_$t: ok, ${runs:-?} runs in ${seconds}s: ${cov}" >"$report"
    return
  fi
  {
    echo "fuzz_$t: FAILED ($(grep -m1 '^INFO: Seed:' "$log" || echo 'seed not printed'); rerun with -seed=N)"
    tail -60 "$log"
    for f in "$artifacts/$t-"*; do
      [ -f "$f" ] || continue
      echo "input $f:"
      od -A x -t x1z -v "$f" | head -40
    done
  } >"$report"
}

for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait
status=0
for t in "${targets[@]}"; do
  cat "$work/$t.report" 2>/dev/null || echo "fuzz_$t: FAILED (no report)"
  grep -q "^fuzz_$t: ok," "$work/$t.report" 2>/dev/null || status=1
done
exit $status
