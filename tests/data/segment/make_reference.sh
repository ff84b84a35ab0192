#!/bin/sh
# Writes reference/NAME/ for every case of cases.txt with the given `universeg` program, which
# was one built from commit e64b259 (the segment command before the Segmenter API). From the
# repository root: sh tests/data/segment/make_reference.sh PATH/TO/universeg
set -eu
grep -v '^#' tests/data/segment/cases.txt | while read -r name args; do
    rm -rf "tests/data/segment/reference/$name"
    # shellcheck disable=SC2086  # the arguments are words
    "$1" segment --quiet $args --out "tests/data/segment/reference/$name"
done
