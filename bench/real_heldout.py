#!/usr/bin/python3
"""Few-shot tasks from data sets of ../shared/data that training holds out (evaluation only).

usage: real_heldout.py DATA OUT DATASET[,DATASET...] [DRAWS=3] [QUERIES=8] [SUPPORTS=16]

Each data set (DATA/NAME/{images,labels,sources.csv}, the layout of ../shared/data) gives one
binary target per label value and, where it has several, their union (e.g. the whole
hippocampus beside its anterior and posterior parts). Each target gets DRAWS tasks: QUERIES
query images and SUPPORTS examples, every one from a different source (sources.csv: the two
slices of one volume are one source, so a query's own volume never supplies its examples),
drawn among the images that show the target by a generator seeded with the task's name: the
same tasks on every run and machine. A target with too few sources is skipped, with a note.

Output: OUT/DATASET__TARGET__K/{support,queries}/{images,labels}/NAME.png: images linked (with
COLOUR=1 in the environment, from images_rgb/ where a data set has it), label maps written 0/1.
With INVERT=N, every N-th example and query (the first, the N+1-th, ...) is written inverted
instead: a task that mixes two image types. Needs python3-numpy and python3-pil.
"""
import csv
import os
import random
import shutil
import sys

import numpy as np
from PIL import Image

if not 4 <= len(sys.argv) <= 7:
    sys.exit(__doc__)
DATA, OUT, NAMES = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
DRAWS, QUERIES, SUPPORTS = (int(a) for a in (sys.argv[4:] + ["3", "8", "16"][len(sys.argv) - 4:]))
INVERT = int(os.environ.get("INVERT", "0"))

shutil.rmtree(OUT, ignore_errors=True)
for name in NAMES:
    root = os.path.join(DATA, name)
    rgb = os.environ.get("COLOUR") == "1" and os.path.isdir(os.path.join(root, "images_rgb"))
    stems = sorted(f[:-4] for f in os.listdir(os.path.join(root, "images")) if f.endswith(".png"))
    source = {s: s for s in stems}
    if os.path.exists(os.path.join(root, "sources.csv")):
        with open(os.path.join(root, "sources.csv"), newline="") as f:
            for row in csv.DictReader(f):
                source[row["id"]] = row["source"]
    labels = {s: np.array(Image.open(os.path.join(root, "labels", s + ".png"))) for s in stems}
    values = sorted({int(v) for a in labels.values() for v in np.unique(a) if v > 0})
    targets = [(str(v), [v]) for v in values] + ([("union", values)] if len(values) > 1 else [])
    for target, vals in targets:
        showing = [s for s in stems if np.isin(labels[s], vals).any()]
        by_source = {}
        for s in showing:
            by_source.setdefault(source[s], []).append(s)
        keys = sorted(by_source)
        if len(keys) < QUERIES + SUPPORTS:
            print(f"{name} target {target}: {len(keys)} sources, fewer than {QUERIES + SUPPORTS}: skipped", file=sys.stderr)
            continue
        for k in range(DRAWS):
            rng = random.Random(f"{name}/{target}/{k}")
            picked = [rng.choice(by_source[key]) for key in rng.sample(keys, QUERIES + SUPPORTS)]
            task = os.path.join(OUT, f"{name}__{target}__{k}")
            for part, members in (("queries", picked[:QUERIES]), ("support", picked[QUERIES:])):
                for sub in ("images", "labels"):
                    os.makedirs(os.path.join(task, part, sub))
                for m, s in enumerate(members):
                    image = os.path.abspath(os.path.join(root, "images_rgb" if rgb else "images", s + ".png"))
                    if INVERT and m % INVERT == 0:
                        inverted = 255 - np.array(Image.open(image).convert("RGB" if rgb else "L"))
                        Image.fromarray(inverted).save(os.path.join(task, part, "images", s + ".png"))
                    else:
                        os.symlink(image, os.path.join(task, part, "images", s + ".png"))
                    binary = np.isin(labels[s], vals).astype(np.uint8)
                    Image.fromarray(binary).save(os.path.join(task, part, "labels", s + ".png"))
print(f"{len(os.listdir(OUT))} tasks in {OUT}")
