"""The Python module (universeg) against the official PyTorch computation, in one process.

  cmake -B build -DUNIVERSEG_PYTHON=ON -DPython_EXECUTABLE=/usr/bin/python3 && cmake --build build --target universeg_python
  PYTHONPATH=build/python /usr/bin/python3 bench/python_vs_torch.py [--weights W] [--sizes 1,2,4,8,16,32,64]
      [--image-size 128] [--rounds 3] [--repeats 3] [--threads 2] [--out FILE.md]

The notebook's call, model(query, support_images, support_labels) with B=1, on the same inputs
(the random distribution of `universeg bench`) for both: the module gets the torch tensors'
numpy() views. PyTorch runs bench/universeg_torch.py (the official model's computation, under
inference_mode) with torch.set_num_threads(--threads); the module runs with threads=--threads.
Default weights: tests/data/golden/v1_b2_s4_128/weights.pt (the official v1 architecture).

Every size is first run once by each engine (packing, allocation; the largest |logit
difference| between the two is reported). Then, round after round, every size runs --repeats
calls of one engine and then of the other, the order alternating between rounds so that neither
always meets a warmer or quieter machine. An engine's time at a size is the median over rounds
of its per-round median. Prints a markdown table with the ratios and the machine (lscpu).
Needs numpy and torch (Debian: python3-numpy python3-torch).

Both engines use the same OpenMP runtime (libgomp) in this process, so OpenMP's environment
applies to both alike; the table names OMP_WAIT_POLICY when it is set. On a machine whose cores
other programs keep busy, OMP_WAIT_POLICY=passive (threads sleep at once instead of spinning
at the end of each parallel loop) spares the engine with the more, shorter parallel loops the
CPU time that spinning takes from the work.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import universeg_torch  # noqa: E402
from peers import inputs, machine  # noqa: E402  (the inputs of `universeg bench` and compare.py's PyTorch runs)

import universeg  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=os.path.join(HERE, "..", "tests", "data", "golden", "v1_b2_s4_128", "weights.pt"))
    p.add_argument("--sizes", default="1,2,4,8,16,32,64", help="support sizes S")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per engine, size and round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also write the table to this file")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]

    torch.set_num_threads(a.threads)
    official = universeg_torch.load(a.weights)
    model = universeg.load(a.weights)
    data = {s: inputs(1, s, a.image_size) for s in sizes}

    def run_torch(s):
        with torch.inference_mode():
            return official(*data[s])

    def run_module(s):
        return model(*(t.numpy() for t in data[s]), threads=a.threads)

    engines = {"pytorch": run_torch, "universeg": run_module}
    diff = 0.0
    for s in sizes:
        diff = max(diff, float(np.abs(run_torch(s).numpy() - run_module(s)).max()))
    print(f"max |logit difference| = {diff:.3g} over S = {a.sizes}", file=sys.stderr)

    # Per-round medians in ms of the wall time and of the process's CPU time (all threads: the
    # work done, and any spinning, while the wall time also counts waiting for a busy core).
    wall = {(name, s): [] for name in engines for s in sizes}
    cpu = {(name, s): [] for name in engines for s in sizes}
    for r in range(a.rounds):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for s in sizes:
            for name in order:
                calls = []
                for _ in range(a.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    engines[name](s)
                    calls.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
                wall[name, s].append(statistics.median(w for w, _ in calls))
                cpu[name, s].append(statistics.median(c for _, c in calls))
            print(f"round {r + 1}/{a.rounds} S={s}: " + ", ".join(f"{n} {wall[n, s][-1]:.1f} ms" for n in engines),
                  file=sys.stderr)

    policy = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; " if "OMP_WAIT_POLICY" in os.environ else ""
    lines = [f"Machine: {machine()}; {a.threads} threads; {policy}torch {torch.__version__}; universeg {universeg.__version__}; "
             f"{model.config}, B=1, {a.image_size}x{a.image_size}; median of {a.rounds} rounds x {a.repeats} calls; "
             f"max |logit difference| {diff:.3g}.", "",
             "| S | pytorch ms | universeg ms | pytorch / universeg | pytorch CPU ms | universeg CPU ms | CPU ratio |",
             "|---|---|---|---|---|---|---|"]
    for s in sizes:
        t, u = (statistics.median(wall[n, s]) for n in ("pytorch", "universeg"))
        tc, uc = (statistics.median(cpu[n, s]) for n in ("pytorch", "universeg"))
        lines.append(f"| {s} | {t:.1f} | {u:.1f} | {t / u:.1f}x | {tc:.0f} | {uc:.0f} | {tc / uc:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
