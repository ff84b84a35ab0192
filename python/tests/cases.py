"""What the Python tests share: the source tree's data, the official golden cases and the CLI.

The tests run with PYTHONPATH=BUILD/python (ctest sets it, UNIVERSEG_SOURCE_DIR, and UNIVERSEG_CLI
where the build has the `universeg` program) and need numpy only.
"""
import json
import os
import sys
import threading

import numpy as np

SOURCE = os.environ.get("UNIVERSEG_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
GOLDEN = os.path.join(SOURCE, "tests", "data", "golden")
BUNDLED = os.path.join(SOURCE, "weights", "universeg_synth_nf32.safetensors")
CELLS = os.path.join(SOURCE, "examples", "data", "cells")  # the bundled example data set
CLI = os.environ.get("UNIVERSEG_CLI")  # the `universeg` program, where the build has it
INPUTS = ("query", "support_images", "support_labels")


class Golden:
    """A golden case of tests/data/golden: the official model's logits for its weights and inputs."""

    def __init__(self, name):
        self.dir = os.path.join(GOLDEN, name)
        self.weights = os.path.join(self.dir, "weights.pt")
        self.arrays = {n: np.load(os.path.join(self.dir, n + ".npy")) for n in INPUTS + ("logits",)}
        with open(os.path.join(self.dir, "config.json")) as f:
            self.config = json.load(f)

    @property
    def inputs(self):
        return tuple(self.arrays[n] for n in INPUTS)

    @property
    def tolerance(self):
        """The project's bound for golden comparisons: 1e-4, relative to logits above 1."""
        return 1e-4 * max(1.0, float(np.abs(self.arrays["logits"]).max()))


def architecture(encoder_blocks):
    """The official model's config string and parameter count for its encoder_blocks argument
    (entries f or [cross_features, conv_features]), counted from its layers."""
    enc = [(e, e) if isinstance(e, int) else tuple(e) for e in encoder_blocks]
    dec = enc[-2::-1]

    def conv(cin, cout, k=3):
        return cin * cout * k * k + cout

    def block(ct, cs, f, g):  # cross conv on the (target, support) pair, then target and support convs
        return conv(ct + cs, f) + 2 * conv(f, g)

    count, ct, cs, skips = 0, 1, 2, []
    for f, g in enc:
        count += block(ct, cs, f, g)
        ct = cs = g
        skips.append(g)
    prev = enc[-1][1]
    for (f, g), skip in zip(dec, skips[-2::-1]):
        count += block(prev + skip, prev + skip, f, g)
        prev = g
    count += conv(prev, 1, 1)

    def entries(blocks):
        return "[" + ",".join(str(f) if f == g else f"[{f},{g}]" for f, g in blocks) + "]"

    return f"encoder {entries(enc)} decoder {entries(dec)}", count


def gil_released(work):
    """Whether another thread runs while `work` runs in a thread: with a switch interval of an
    hour, a thread that holds the GIL keeps it until it blocks or releases it."""
    entered, state = threading.Event(), {}

    def run():
        entered.set()
        work()
        state["returned"] = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(3600)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        entered.wait()
        running = "returned" not in state
    finally:
        sys.setswitchinterval(interval)
        worker.join()
    return running
