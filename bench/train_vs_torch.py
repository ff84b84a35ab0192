"""A training step of `universeg train` against the same step in PyTorch, in one run.

  /usr/bin/python3 bench/train_vs_torch.py [--universeg build/universeg] [--config 32,32,32,32]
      [--supports 10] [--size 128] [--threads 2] [--steps 30] [--rounds 2] [--out FILE.md]

The step: one task (B = 1) of --supports supports at --size x --size, the forward, the soft
Dice loss, the backward and an AdamW update, on --threads threads.
- PyTorch (bench/universeg_torch.py, the official model's computation; torch.set_num_threads)
  trains on fixed random tensors: images uniform in [0, 1], labels a random disc per image.
  Its time per step is the median over --steps timed steps, after 3 untimed ones.
- `universeg train --synthetic` also draws and augments a new synthetic task every step, inside
  its time. Its time per step is the difference between two runs, of --steps + 10 and of 10
  steps, divided by --steps: process start, loading and the step-0 evaluation cancel out.
Rounds alternate the order of the two; each side's time is the median over rounds. Prints a
markdown table with the ratio and the machine (lscpu). Needs python3-torch and python3-numpy.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import universeg_torch  # noqa: E402
from peers import machine  # noqa: E402


def soft_dice_loss(logits, target):
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    total = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def torch_step_seconds(config, s, size, steps, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = universeg_torch.UniverSeg(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    yy, xx = np.mgrid[0:size, 0:size]

    def disc():
        cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.1, 0.3) * size
        return ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)

    query = torch.from_numpy(rng.uniform(size=(1, 1, size, size)).astype(np.float32))
    target = torch.from_numpy(disc()[None, None])
    images = torch.from_numpy(rng.uniform(size=(1, s, 1, size, size)).astype(np.float32))
    labels = torch.from_numpy(np.stack([disc() for _ in range(s)])[None, :, None])
    times = []
    for k in range(3 + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = soft_dice_loss(model(query, images, labels), target)
        loss.backward()
        opt.step()
        if k >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpp_run_seconds(universeg, config, s, size, threads, steps, work):
    out = os.path.join(work, "w.safetensors")
    cmd = [universeg, "train", "--out", out, "--synthetic", "--config", "[" + ",".join(map(str, config)) + "]",
           "--size", str(size), "--support-min", str(s), "--support-size", str(s), "--batch", "1", "--loss", "dice",
           "--lr", "1e-4", "--threads", str(threads), "--steps", str(steps), "--eval-tasks", "1",
           "--eval-every", "1000000", "--checkpoint-every", "1000000", "--log-every", "1000000", "--seed", "1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--universeg", default=os.path.join(HERE, "..", "build", "universeg"))
    p.add_argument("--config", default="32,32,32,32", help="encoder features per block")
    p.add_argument("--supports", type=int, default=10)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", help="also write the table to this file")
    a = p.parse_args()
    config = [int(c) for c in a.config.split(",")]
    torch.set_num_threads(a.threads)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as work:
        for r in range(a.rounds):
            for side in (("cpp", "torch") if r % 2 == 0 else ("torch", "cpp")):
                if side == "torch":
                    theirs.append(torch_step_seconds(config, a.supports, a.size, a.steps, seed=r))
                    print(f"round {r + 1}: PyTorch {theirs[-1] * 1e3:.1f} ms/step", file=sys.stderr)
                else:
                    long = cpp_run_seconds(a.universeg, config, a.supports, a.size, a.threads, a.steps + 10, work)
                    short = cpp_run_seconds(a.universeg, config, a.supports, a.size, a.threads, 10, work)
                    ours.append((long - short) / a.steps)
                    print(f"round {r + 1}: universeg train {ours[-1] * 1e3:.1f} ms/step", file=sys.stderr)
    o, t = statistics.median(ours), statistics.median(theirs)
    table = "\n".join([
        f"Training step: encoder {config}, {a.supports} supports, {a.size}x{a.size}, batch 1, soft Dice, AdamW, "
        f"{a.threads} threads; {machine()}; torch {torch.__version__}; median of {a.rounds} rounds",
        "",
        "| | ms per step | PyTorch / this |",
        "| --- | --- | --- |",
        f"| `universeg train` (a new synthetic task every step) | {o * 1e3:.1f} | {t / o:.2f}x |",
        f"| PyTorch (fixed tensors) | {t * 1e3:.1f} | 1.00x |",
    ])
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
