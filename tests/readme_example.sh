#!/bin/sh
# The README's example (examples/segment_image.cpp) writes the label map that `universeg segment`
# writes for the same query, byte for byte.
#   readme_example.sh SEGMENT_IMAGE UNIVERSEG WEIGHTS CELLS_DIR WORK_DIR
set -eu
api=$1 cli=$2 weights=$3 cells=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
"$api" "$weights" "$cells/support" "$cells/queries/images/query_00.png" "$work/api.png"
"$cli" segment --quiet --weights "$weights" --support "$cells/support" --out "$work/cli" "$cells/queries/images/query_00.png"
cmp "$work/api.png" "$work/cli/query_00.png"
echo "the API's label map equals the CLI's"
