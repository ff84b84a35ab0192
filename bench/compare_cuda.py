"""UniverSeg's CUDA backend against PyTorch on the same GPU, in the same run.

  python3 bench/compare_cuda.py --universeg build-cuda/universeg --weights W \\
      [--sizes 1,2,4,8,16,32,64,128,256] [--image-size 128] [--rounds 3] [--repeats 10] [--out bench/results-cuda]

Needs `universeg` from a -DUNIVERSEG_CUDA=ON build (`universeg run|bench --device cuda`) and a
PyTorch with CUDA. First a parity check: `universeg run --device cuda` against PyTorch (TF32 off)
on the same GPU and inputs (S=8). Then, for every support size, the engines run in turn, the
order rotating from round to round; an engine's time is the median of its per-round medians.
Every engine times one forward pass (B=1) with its inputs already on the GPU, with CUDA events,
after a warm-up:
  pytorch          bench/universeg_torch.py (the official computation: every support pair runs
                   the cross conv) with PyTorch's defaults, under which cuDNN may use TF32 for
                   convolutions (torch.backends.cudnn.allow_tf32 is True by default)
  pytorch fp32     the same with TF32 off everywhere and cudnn.benchmark on (its best fp32)
  universeg fp32   `universeg bench --device cuda --precision fp32` (TF32 off; the default)
  universeg tf32   ... --precision tf32
  universeg bf16   ... --precision bf16 (bf16 inputs for the per-support convolutions)
Writes OUT/results.tsv (engine, support_size, median_ms, device_mb), OUT/results.md (the table,
with ratios to universeg fp32) and OUT/latency.svg (drawn by `universeg bench-chart`).
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import universeg_torch  # noqa: E402


def inputs(s, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(1, 1, size, size, generator=g)
    si = torch.rand(1, s, 1, size, size, generator=g)
    sl = (torch.rand(1, s, 1, size, size, generator=g) < 0.3).float()
    return q, si, sl


@contextlib.contextmanager
def strict_fp32(on):
    """TF32 off (and cudnn.benchmark on) inside, when `on`; PyTorch's settings restored after."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)
    if on:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def time_torch(model, s, size, repeats, tf32_default):
    """Median ms of one forward pass and peak device MB, PyTorch on the GPU."""
    with strict_fp32(not tf32_default):
        q, si, sl = (t.cuda() for t in inputs(s, size))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        with torch.inference_mode():
            model(q, si, sl)  # warm-up (cudnn.benchmark picks its algorithms here)
            torch.cuda.synchronize()
            for _ in range(repeats):
                start.record()
                model(q, si, sl)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        mb = torch.cuda.max_memory_allocated() / 2**20
        del q, si, sl
        torch.cuda.empty_cache()  # leave the GPU's memory to the next engine
        return {"median_ms": statistics.median(times), "device_mb": mb}


def run_json(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip() or p.stdout.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def parity(a, model, s=8):
    """`universeg run --device cuda` against PyTorch fp32 on the same inputs; True when within bound."""
    q, si, sl = inputs(s, a.image_size, seed=2)
    with strict_fp32(True), torch.inference_mode():
        ref = model(q.cuda(), si.cuda(), sl.cuda()).float().cpu().numpy()
    with tempfile.TemporaryDirectory(prefix="universeg-cuda-") as d:
        for name, t in (("q", q), ("si", si), ("sl", sl), ("ref", torch.from_numpy(ref))):
            np.save(os.path.join(d, name + ".npy"), t.numpy())
        ok = True
        for precision in ("fp32", "tf32", "bf16"):
            out = os.path.join(d, f"out_{precision}.npy")
            p = subprocess.run([a.universeg, "run", "--device", "cuda", "--precision", precision, "--weights", a.weights,
                                "--query", os.path.join(d, "q.npy"), "--support-images", os.path.join(d, "si.npy"),
                                "--support-labels", os.path.join(d, "sl.npy"), "--out", out],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"universeg run --device cuda failed: {p.stderr.strip()}")
            got = np.load(out)
            diff = float(np.abs(got - ref).max())
            bound = 1e-4 * max(1.0, float(np.abs(ref).max()))
            agree = float(((got > 0) == (ref > 0)).mean())
            verdict = ("PASS" if diff <= bound else "FAIL") if precision == "fp32" else "measured"
            print(f"parity S={s}: universeg {precision} vs pytorch fp32 on {torch.cuda.get_device_name()}: "
                  f"max |diff| {diff:.3g} (fp32 bound {bound:.3g}), mask agreement {100 * agree:.3f}%: {verdict}")
            ok = ok and (precision != "fp32" or diff <= bound)
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--universeg", required=True, help="the universeg binary of a -DUNIVERSEG_CUDA=ON build")
    p.add_argument("--weights", required=True, help="a UniverSeg checkpoint (.pt)")
    p.add_argument("--sizes", default="1,2,4,8,16,32,64,128,256", help="support sizes")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=os.path.join(HERE, "results-cuda"))
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("compare_cuda: this PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    sizes = [int(s) for s in a.sizes.split(",")]
    os.makedirs(a.out, exist_ok=True)
    gpu = torch.cuda.get_device_name()
    model = universeg_torch.load(a.weights).cuda()
    parity_ok = parity(a, model)

    def ours(precision):
        cmd = [a.universeg, "bench", "--device", "cuda", "--precision", precision, "--weights", a.weights, "--size",
               str(a.image_size), "--repeats", str(a.repeats), "--json"]
        return lambda s: run_json(cmd + ["--support-size", str(s)])

    engines = {
        "universeg fp32": ours("fp32"),
        "universeg tf32": ours("tf32"),
        "universeg bf16": ours("bf16"),
        "pytorch": lambda s: time_torch(model, s, a.image_size, a.repeats, True),
        "pytorch fp32": lambda s: time_torch(model, s, a.image_size, a.repeats, False),
    }
    names = list(engines)
    results = {}
    for s in sizes:
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                try:
                    res = engines[name](s)
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                    print(f"S={s} {name}: failed ({str(e).splitlines()[0]})", file=sys.stderr)
                    torch.cuda.empty_cache()
                    continue
                results.setdefault((name, s), []).append(res)
                print(f"S={s:3d} round {r + 1}: {name:15s} {res['median_ms']:9.2f} ms  {res.get('device_mb', 0):8.0f} MB",
                      flush=True)

    def summary(name, s):
        rs = results.get((name, s))
        if not rs:
            return None, None
        return statistics.median(x["median_ms"] for x in rs), max(x.get("device_mb", 0.0) for x in rs)

    with open(os.path.join(a.out, "results.tsv"), "w") as f:
        f.write("engine\tsupport_size\tmedian_ms\tdevice_mb\n")
        for name in names:
            for s in sizes:
                ms, mb = summary(name, s)
                if ms is not None:
                    f.write(f"{name}\t{s}\t{ms:.3f}\t{mb:.0f}\n")
    others = [n for n in names if n != "universeg fp32"]
    lines = [f"{gpu}, PyTorch {torch.__version__}, one {a.image_size}x{a.image_size} query, ms per forward pass "
             "(device MB)", "",
             "| S | " + " | ".join(names) + " | " + " | ".join(f"{n} / universeg fp32" for n in others) + " |",
             "|" + "---|" * (1 + len(names) + len(others))]
    for s in sizes:
        base = summary("universeg fp32", s)[0]
        cells = [f"{ms:.2f} ({mb:.0f})" if ms is not None else "-" for ms, mb in (summary(n, s) for n in names)]
        ratios = [f"{summary(n, s)[0] / base:.2f}x" if base and summary(n, s)[0] else "-" for n in others]
        lines.append(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    subprocess.run([a.universeg, "bench-chart", "--in", os.path.join(a.out, "results.tsv"), "--out",
                    os.path.join(a.out, "latency.svg"), "--title", f"UniverSeg forward on {gpu}, one query"], check=True)
    return 0 if parity_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
