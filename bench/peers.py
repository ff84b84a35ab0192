"""The peers' side of bench/compare.py: time the PyTorch module, or export it to ONNX.

  python3 bench/peers.py torch --weights W --support-size 64 [--size 128] [--batch 1] [--repeats 3] [--threads 2]
  python3 bench/peers.py export --weights W --support-size 64 --out model.onnx [--size 128] [--batch 1]

`torch` prints one JSON line {"median_ms", "min_ms", "peak_rss_mb", ...} after one warm-up run,
with the same random input distribution as `universeg bench`.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import universeg_torch  # noqa: E402


def peak_rss_mb():
    """VmHWM: this program's own peak (ru_maxrss survives exec and may report the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine():
    """lscpu's model name and CPU count: the table names the machine it was measured on."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields['Model name'].strip()}, {fields['CPU(s)'].strip()} CPUs"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def inputs(b, s, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(b, 1, size, size, generator=g)
    si = torch.rand(b, s, 1, size, size, generator=g)
    sl = (torch.rand(b, s, 1, size, size, generator=g) < 0.3).float()
    return q, si, sl


def cmd_torch(a):
    torch.set_num_threads(a.threads)
    model = universeg_torch.load(a.weights)
    q, si, sl = inputs(a.batch, a.support_size, a.size)
    times = []
    with torch.inference_mode():
        model(q, si, sl)
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model(q, si, sl)
            times.append((time.perf_counter() - t0) * 1e3)
    rss = peak_rss_mb()
    print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times), "peak_rss_mb": rss,
                      "support_size": a.support_size, "threads": torch.get_num_threads(), "torch": torch.__version__}))


def cmd_export(a):
    model = universeg_torch.load(a.weights)
    q, si, sl = inputs(a.batch, a.support_size, a.size)
    with torch.no_grad():
        torch.onnx.export(model, (q, si, sl), a.out, opset_version=16,
                          input_names=["query", "support_images", "support_labels"], output_names=["logits"])
    print(a.out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("torch", "export"):
        s = sub.add_parser(name)
        s.add_argument("--weights", required=True)
        s.add_argument("--support-size", type=int, default=64)
        s.add_argument("--size", type=int, default=128)
        s.add_argument("--batch", type=int, default=1)
        if name == "torch":
            s.add_argument("--repeats", type=int, default=3)
            s.add_argument("--threads", type=int, default=2)
        else:
            s.add_argument("--out", required=True)
    a = p.parse_args()
    (cmd_torch if a.cmd == "torch" else cmd_export)(a)


if __name__ == "__main__":
    main()
