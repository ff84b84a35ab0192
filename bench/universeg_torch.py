"""UniverSeg in PyTorch, computed the way the official implementation computes it.

The comparison peer for bench/compare.py (PyTorch itself, and ONNX Runtime through an ONNX
export of this module). Written from the architecture in the project's issue 2, with the
official state-dict key names, so the official weights and the golden cases load as they are:

  every support runs the cross conv on the concatenated (target, support) pair, the new
  target is LeakyReLU(conv(mean_i Z_i)), every support runs the support conv; 2x2 max pool
  between encoder blocks; bilinear x2 (align_corners=True) and skip concatenation in the
  decoder; a 1x1 output conv on the target.

  python3 bench/universeg_torch.py --check tests/data/golden/v1_b2_s4_128
checks the module against a golden case (max |logit difference|).
"""
import argparse
import os

import numpy as np
import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)


class Vmapped(nn.Module):
    """Applies a conv to every image of a (B, N, C, H, W) set, as the official vmap wrapper."""

    def __init__(self, cin, cout):
        super().__init__()
        self.vmapped = Conv(cin, cout)

    def forward(self, x):
        b, n = x.shape[:2]
        y = self.vmapped.conv(x.reshape(b * n, *x.shape[2:]))
        return y.reshape(b, n, *y.shape[1:])


class CrossConv(nn.Module):
    def __init__(self, ct, cs, cout):
        super().__init__()
        self.cross_conv = nn.Conv2d(ct + cs, cout, 3, padding=1)

    def forward(self, t, v):
        # t (B, 1, Ct, H, W), v (B, S, Cs, H, W) -> (B, S, Cout, H, W): every pair, target first.
        b, s = v.shape[:2]
        pairs = torch.cat([t.expand(b, s, *t.shape[2:]), v], dim=2)
        z = self.cross_conv(pairs.reshape(b * s, *pairs.shape[2:]))
        return z.reshape(b, s, *z.shape[1:])


class CrossBlock(nn.Module):
    def __init__(self, ct, cs, f, g):
        super().__init__()
        self.cross = CrossConv(ct, cs, f)
        self.target = Vmapped(f, g)
        self.support = Vmapped(f, g)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, t, v):
        z = self.cross(t, v)
        t = self.act(self.target(z.mean(dim=1, keepdim=True)))
        v = self.act(self.support(z))
        return t, v


def features(entry):
    return (entry, entry) if isinstance(entry, int) else tuple(entry)


class UniverSeg(nn.Module):
    def __init__(self, encoder_blocks=(64, 64, 64, 64)):
        super().__init__()
        enc = [features(e) for e in encoder_blocks]
        dec = enc[-2::-1]
        self.enc_blocks = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        ct, cs = 1, 2
        skips = []
        for f, g in enc:
            self.enc_blocks.append(CrossBlock(ct, cs, f, g))
            ct = cs = g
            skips.append(g)
        prev = enc[-1][1]
        for (f, g), skip in zip(dec, skips[-2::-1]):
            self.dec_blocks.append(CrossBlock(prev + skip, prev + skip, f, g))
            prev = g
        self.out_conv = Conv(prev, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)

    def _sets(self, fn, x):
        b, n = x.shape[:2]
        y = fn(x.reshape(b * n, *x.shape[2:]))
        return y.reshape(b, n, *y.shape[1:])

    def forward(self, query, support_images, support_labels):
        t = query.unsqueeze(1)  # (B, 1, 1, H, W)
        v = torch.cat([support_images, support_labels], dim=2)
        skips = []
        for k, block in enumerate(self.enc_blocks):
            t, v = block(t, v)
            if k + 1 < len(self.enc_blocks):
                skips.append((t, v))
                t, v = self._sets(self.pool, t), self._sets(self.pool, v)
        for block in self.dec_blocks:
            ts, vs = skips.pop()
            t = torch.cat([self._sets(self.up, t), ts], dim=2)
            v = torch.cat([self._sets(self.up, v), vs], dim=2)
            t, v = block(t, v)
        return self.out_conv.conv(t.squeeze(1))


def load(weights):
    """The module for a state dict, with the architecture read off the tensor shapes."""
    sd = torch.load(weights, map_location="cpu")
    n = sum(1 for k in sd if k.startswith("enc_blocks.") and k.endswith(".cross.cross_conv.weight"))
    enc = []
    for k in range(n):
        f = sd[f"enc_blocks.{k}.cross.cross_conv.weight"].shape[0]
        g = sd[f"enc_blocks.{k}.target.vmapped.conv.weight"].shape[0]
        enc.append(f if f == g else [f, g])
    model = UniverSeg(enc)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", required=True, help="golden case folder (weights.pt, inputs, logits.npy)")
    a = p.parse_args()
    model = load(os.path.join(a.check, "weights.pt"))
    arr = {n: torch.from_numpy(np.load(os.path.join(a.check, n + ".npy")))
           for n in ("query", "support_images", "support_labels", "logits")}
    with torch.no_grad():
        out = model(arr["query"], arr["support_images"], arr["support_labels"])
    diff = (out - arr["logits"]).abs().max().item()
    bound = 1e-4 * max(1.0, arr["logits"].abs().max().item())
    print(f"max |logit - golden| = {diff:.3g} (bound {bound:.3g}): {'PASS' if diff <= bound else 'FAIL'}")
    return 0 if diff <= bound else 1


if __name__ == "__main__":
    raise SystemExit(main())
