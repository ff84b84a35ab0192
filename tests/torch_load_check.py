"""Checks `universeg make-case` against PyTorch: torch.load must read the weights.pt that the
project's own zip + pickle writer made (under torch's restricted weights_only unpickler too),
holding bit for bit the tensors of the case's weights.safetensors, and PyTorch's forward of those
weights (bench/universeg_torch.py) must agree with the case's fp64 logits.

  /usr/bin/python3 tests/torch_load_check.py OUT_DIR CLI [ARG...]
CLI [ARG...] runs `universeg` (in a cross build: the emulator, its arguments, the program).
Exit 0: passed; 1: failed; 77 (ctest's SKIP_RETURN_CODE): torch or numpy is not installed.
"""
import collections
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIP: {e} (Debian: apt-get install python3-torch python3-numpy; run with /usr/bin/python3)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
from universeg_torch import UniverSeg  # noqa: E402

CONFIG = [[8, 8], [16, 12], 16]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        assert info["dtype"] == "F32", (key, info["dtype"])
        begin, end = info["data_offsets"]
        out[key] = np.frombuffer(body[begin:end], dtype="<f4").reshape(info["shape"])
    return out


def main():
    out_dir, cli = sys.argv[1], sys.argv[2:]
    subprocess.run(cli + ["make-case", "--config", json.dumps(CONFIG).replace(" ", ""), "--seed", "3", "--batch", "2",
                          "--support-size", "3", "--size", "16x24", "--threads", "1", "--out", out_dir], check=True)
    expected = read_safetensors(os.path.join(out_dir, "weights.safetensors"))
    failures = []
    for weights_only in (True, False):
        sd = torch.load(os.path.join(out_dir, "weights.pt"), map_location="cpu", weights_only=weights_only)
        if not isinstance(sd, collections.OrderedDict):
            failures.append(f"weights_only={weights_only}: torch.load gave a {type(sd).__name__}, not an OrderedDict")
            continue
        if sorted(sd) != sorted(expected):
            failures.append(f"weights_only={weights_only}: keys differ: {sorted(set(sd) ^ set(expected))}")
        for k, v in sd.items():
            e = expected.get(k)
            if e is None:
                continue
            if v.dtype != torch.float32 or tuple(v.shape) != e.shape or not v.is_contiguous():
                failures.append(f"{k}: {v.dtype} {tuple(v.shape)} contiguous={v.is_contiguous()}, expected float32 {e.shape}")
            elif not np.array_equal(v.numpy().view(np.uint32), e.view(np.uint32)):
                failures.append(f"{k}: values differ from weights.safetensors")
    print(f"torch.load read {len(expected)} tensors from weights.pt"
          f"{'' if failures else ', equal bit for bit to weights.safetensors'}")

    # PyTorch's forward of the loaded weights, in float64 and float32, against the fp64 oracle.
    model = UniverSeg(CONFIG)
    model.load_state_dict(torch.load(os.path.join(out_dir, "weights.pt"), weights_only=True))
    arrays = {n: torch.from_numpy(np.load(os.path.join(out_dir, n + ".npy")))
              for n in ("query", "support_images", "support_labels")}
    oracle = torch.from_numpy(np.load(os.path.join(out_dir, "logits.npy")))
    if oracle.dtype != torch.float64:
        failures.append(f"logits.npy is {oracle.dtype}, expected float64")
    scale = max(1.0, oracle.abs().max().item())
    with torch.no_grad():
        for dtype, bound in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
            m = model.to(dtype)
            out = m(*(arrays[n].to(dtype) for n in ("query", "support_images", "support_labels")))
            diff = (out.double() - oracle).abs().max().item()
            ok = diff <= bound * scale
            print(f"PyTorch {dtype} forward vs fp64 oracle: max |diff| = {diff:.3g} (bound {bound * scale:.3g})")
            if not ok:
                failures.append(f"PyTorch {dtype} logits differ from the oracle by {diff:.3g}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
