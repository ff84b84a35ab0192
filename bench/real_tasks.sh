#!/usr/bin/env bash
# Real MRI tasks the weights never saw, from Debian's packages: Colin27's T1 with the AAL atlas
# and its skull-stripped brain (mricron-data), and a second subject's T1 with its brain mask
# (insighttoolkit5-examples). Builds the tasks (bench/real_tasks.py: 16 supports, 8 queries
# each), segments the queries with `segment` (default options) and with --histogram-baseline,
# and prints the mean Dice of each per task. Evaluation only: nothing here is trained on.
#   bench/real_tasks.sh [UNIVERSEG=build/universeg] [WORK=/tmp/universeg-real] [segment options...]
set -euo pipefail
cli=$(realpath "${1:-build/universeg}")
work=${2:-/tmp/universeg-real}
shift $(($# < 2 ? $# : 2))
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../.ci/deps" python3-numpy python3-pil python3-nibabel
mkdir -p "$work/pkgs"
for pkg in mricron-data insighttoolkit5-examples; do
  if [ ! -d "$work/pkgs/$pkg" ]; then
    (cd "$work/pkgs" && apt-get download -o APT::Sandbox::User=root "$pkg" >/dev/null && dpkg-deb -x "$pkg"_*.deb "$pkg")
  fi
done
/usr/bin/python3 "$here/real_tasks.py" "$work/pkgs" "$work/tasks"
dice() { "$cli" eval --quiet --pred "$1" --truth "$2" | awk '/^mean over/ { print $6 }' | tr -d ,; }
printf '%-26s %8s %10s\n' task segment histogram
for t in "$work"/tasks/*/; do
  name=$(basename "$t")
  out="$work/out/$name"
  rm -rf "$out"
  "$cli" segment --quiet "$@" --support "$t/support" --out "$out/net" "$t/queries/images"
  "$cli" segment --quiet --histogram-baseline --support "$t/support" --out "$out/hist" "$t/queries/images"
  printf '%-26s %8s %10s\n' "$name" "$(dice "$out/net" "$t/queries")" "$(dice "$out/hist" "$t/queries")"
done | tee "$work/scores.txt"
awk '{ n++; a += $2; b += $3 } END { printf "%-26s %8.4f %10.4f\n", "mean", a / n, b / n }' "$work/scores.txt"
