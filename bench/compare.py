"""UniverSeg in C++ against PyTorch and ONNX Runtime, in the same run.

  /usr/bin/python3 bench/compare.py --universeg build/universeg --weights W \\
      [--sizes 1,8,16,32,64] [--rounds 3] [--repeats 3] [--threads 2] [--ort node_modules] [--out bench/results]

For every support size, the engines run in turn (one process each: a warm-up run, then
--repeats timed runs), the order rotating from round to round so that none always runs on a
warmer or quieter machine; an engine's time is the median of its per-round medians, its memory
the largest peak RSS. Engines:
  universeg        `universeg bench` (fp32), and `universeg bf16` where the CPU has AVX512_BF16
  pytorch          bench/universeg_torch.py under this Python (skipped when torch is missing)
  onnxruntime      the same module exported with torch.onnx, run by onnxruntime-node
                   (skipped unless --ort points at a node_modules holding onnxruntime-node;
                   install: npm install --ignore-scripts onnxruntime-node@1.30.0)
Writes OUT/results.tsv, OUT/results.md (the table below with ratios) and OUT/latency.svg
(drawn by `universeg bench-chart`).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr.strip() or p.stdout.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--universeg", required=True, help="the universeg binary")
    p.add_argument("--weights", required=True, help="a UniverSeg checkpoint (.pt)")
    p.add_argument("--sizes", default="1,8,16,32,64", help="support sizes")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ort", help="node_modules folder with onnxruntime-node")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    os.makedirs(a.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="universeg-compare-")  # ONNX exports (a few MB each)

    engines = {}  # name -> function(S) -> dict
    bench = [a.universeg, "bench", "--weights", a.weights, "--size", str(a.image_size), "--repeats", str(a.repeats),
             "--threads", str(a.threads), "--json"]
    engines["universeg"] = lambda s: run_json(bench + ["--support-size", str(s)])
    try:
        run_json(bench + ["--support-size", "1", "--repeats", "1", "--precision", "bf16"])
        engines["universeg bf16"] = lambda s: run_json(bench + ["--support-size", str(s), "--precision", "bf16"])
    except RuntimeError as e:
        print(f"universeg bf16: skipped ({e})", file=sys.stderr)
    # torch is checked in a child: importing it here would grow this process, whose peak
    # memory some kernels hand down to the children it starts.
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        peers = [sys.executable, os.path.join(HERE, "peers.py")]
        engines["pytorch"] = lambda s: run_json(peers + ["torch", "--weights", a.weights, "--support-size", str(s),
                                                         "--size", str(a.image_size), "--repeats", str(a.repeats),
                                                         "--threads", str(a.threads)])
        if a.ort and os.path.isdir(os.path.join(a.ort, "onnxruntime-node")) and shutil.which("node"):
            env = dict(os.environ, NODE_PATH=os.path.abspath(a.ort))

            def ort(s):
                model = os.path.join(scratch, f"universeg_s{s}.onnx")
                if not os.path.exists(model):
                    subprocess.run(peers + ["export", "--weights", a.weights, "--support-size", str(s), "--size",
                                            str(a.image_size), "--out", model], check=True, capture_output=True)
                return run_json(["node", os.path.join(HERE, "ort_bench.js"), model, str(s), str(a.image_size), "1",
                                 str(a.repeats), str(a.threads)], env=env)
            engines["onnxruntime"] = ort
        else:
            print("onnxruntime: skipped (no --ort node_modules with onnxruntime-node, or no node)", file=sys.stderr)
    else:
        print("pytorch, onnxruntime: skipped (this Python has no torch)", file=sys.stderr)

    names = list(engines)
    results = {}  # (name, S) -> list of per-round results
    for s in sizes:
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                res = engines[name](s)
                results.setdefault((name, s), []).append(res)
                print(f"S={s:3d} round {r + 1}: {name:15s} {res['median_ms']:10.1f} ms  {res['peak_rss_mb']:7.1f} MB",
                      flush=True)

    def summary(name, s):
        rs = results[(name, s)]
        return statistics.median(x["median_ms"] for x in rs), max(x["peak_rss_mb"] for x in rs)

    with open(os.path.join(a.out, "results.tsv"), "w") as f:
        f.write("engine\tsupport_size\tmedian_ms\tpeak_rss_mb\n")
        for name in names:
            for s in sizes:
                ms, rss = summary(name, s)
                f.write(f"{name}\t{s}\t{ms:.2f}\t{rss:.1f}\n")
    header = "| S | " + " | ".join(f"{n} ms (peak MB)" for n in names) + " | " + \
             " | ".join(f"{n} / universeg" for n in names if n != "universeg") + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(names) - 1)]
    for s in sizes:
        base = summary("universeg", s)[0]
        cells = [f"{summary(n, s)[0]:.1f} ({summary(n, s)[1]:.0f})" for n in names]
        ratios = [f"{summary(n, s)[0] / base:.2f}x" for n in names if n != "universeg"]
        lines.append(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    chart = os.path.join(a.out, "latency.svg")
    subprocess.run([a.universeg, "bench-chart", "--in", os.path.join(a.out, "results.tsv"), "--out", chart], check=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
