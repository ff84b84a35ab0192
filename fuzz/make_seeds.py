#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid files of
every kind each parser reads, so the fuzzers start from deep inside the formats. Some are
copies of test fixtures (tests/data), the rest are made here with torch, numpy and PIL:
  /usr/bin/python3 fuzz/make_seeds.py"""
import io, json, os, shutil, struct, zipfile

import numpy as np
import torch
from PIL import Image

root = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(root, "..", "tests", "data")
corpus = os.path.join(root, "corpus")


def out(target, name, payload):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(payload)


def copy(target, src):
    with open(os.path.join(data, src), "rb") as f:
        out(target, os.path.basename(src), f.read())


# A tiny UniverSeg: encoder [[2,1],[1,2]] -> decoder [[2,1]], every tensor a few floats.
def tiny_universeg():
    g = torch.Generator().manual_seed(0)
    sd = {}

    def conv(name, o, i, k):
        sd[name + ".weight"] = torch.randn(o, i, k, k, generator=g)
        sd[name + ".bias"] = torch.randn(o, generator=g)

    def block(p, ct, cs, f, c):
        conv(p + ".cross.cross_conv", f, ct + cs, 3)
        conv(p + ".target.vmapped.conv", c, f, 3)
        conv(p + ".support.vmapped.conv", c, f, 3)

    block("enc_blocks.0", 1, 2, 2, 1)
    block("enc_blocks.1", 1, 1, 1, 2)
    block("dec_blocks.0", 3, 3, 2, 1)
    conv("out_conv.conv", 1, 1, 1)
    return sd


def safetensors(sd):
    header, blobs, offset = {}, [], 0
    for k in sorted(sd):
        b = sd[k].numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(sd[k].shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


sd = tiny_universeg()
buf = io.BytesIO()
torch.save(sd, buf)
tiny_pt = buf.getvalue()
out("checkpoint", "tiny_universeg.pt", tiny_pt)
half = io.BytesIO()
torch.save({"state_dict": {"module." + k: v.half() for k, v in sd.items()}}, half)
out("checkpoint", "tiny_universeg_nested_f16.pt", half.getvalue())
out("safetensors", "tiny_universeg.safetensors", safetensors(sd))
out("zip", "tiny_universeg.pt", tiny_pt)
for name in ["sd_f16.pt", "views.pt", "params.pt", "sd_f32_proto4.pt"]:
    copy("checkpoint", "io/" + name)
for name in ["zip64.zip", "deflated.zip", "views.pt"]:
    copy("zip", "io/" + name)
copy("safetensors", "io/mixed.safetensors")

# data.pkl of several checkpoints, and a hand-made pickle of every container kind.
for name in ["tiny_universeg.pt", "views.pt", "params.pt", "sd_f32_proto4.pt", "nested.pt"]:
    src = tiny_pt if name == "tiny_universeg.pt" else open(os.path.join(data, "io", name), "rb").read()
    with zipfile.ZipFile(io.BytesIO(src)) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        out("pickle", name.replace(".pt", ".pkl"), z.read(pkl))
out("pickle", "value_tree.pkl",
    b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x88Ne"
    b"X\x01\x00\x00\x00bq\x03X\x01\x00\x00\x00xq\x04C\x02yzq\x05\x8a\x06\x00\x00\x00\x00\x00\x01\x87q\x06"
    b"K\x07}q\x07X\x01\x00\x00\x00ch\x02su.")

for name in ["npy_le_f4.npy", "npy_be_f8.npy", "npy_le_f2.npy", "npy_na_u1.npy", "npy_na_b1.npy", "npy_be_i4.npy",
             "npy_le_i8.npy", "npy_fortran_f4.npy", "npy_v2_f4.npy", "npy_v3_f4.npy", "npy_scalar_f8.npy",
             "npy_empty_f4.npy"]:
    copy("npy", "io/" + name)

rng = np.random.default_rng(0)
grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def pil(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


out("image", "grey.bmp", pil(Image.fromarray(grey), "BMP"))
out("image", "rgb.bmp", pil(Image.fromarray(rgb), "BMP"))
out("image", "rgb_rle.tga", pil(Image.fromarray(rgb), "TGA", compression="tga_rle"))
out("image", "grey.tga", pil(Image.fromarray(grey), "TGA"))
out("image", "grey.pgm", pil(Image.fromarray(grey), "PPM"))
out("image", "rgb.ppm", pil(Image.fromarray(rgb), "PPM"))
out("image", "palette.png", pil(Image.fromarray(rgb).convert("P"), "PNG"))
out("image", "progressive.jpg", pil(Image.fromarray(rgb), "JPEG", progressive=True, quality=50))
for name in ["grey16.png", "rgba16.png", "grey_alpha8.png", "labels16.png", "grey100.jpg"]:
    copy("image", "images/" + name)
# Layouts of the project's own BMP, TGA and PGM/PPM decoders (io/image_formats.hpp) beyond the
# ones above, and the short reads, oversized headers and colour tables indexed past of issue 38.
rng38 = np.random.default_rng(38)
small = Image.fromarray(rng38.integers(0, 256, (5, 7, 3), dtype=np.uint8))
out("image", "bw.bmp", pil(small.convert("1"), "BMP"))
out("image", "palette.bmp", pil(small.convert("P"), "BMP"))
out("image", "rgba.bmp", pil(small.convert("RGBA"), "BMP"))
out("image", "palette_rle.tga", pil(small.convert("P"), "TGA", compression="tga_rle"))
out("image", "grey_alpha_top_down.tga", pil(small.convert("LA"), "TGA", orientation=1))
out("image", "grey16.pgm", pil(Image.fromarray(rng38.integers(0, 65536, (5, 7), dtype=np.int32)), "PPM"))
for name in ["pgm_no_pixels.pgm", "ppm_short_pixels.ppm", "pgm16_short_pixels.pgm", "tga_header_only.tga",
             "tga_rle_truncated.tga", "bmp_1000x1000_300_bytes.bmp", "bmp_palette_index.bmp", "bmp_top_down.bmp",
             "png_short_palette.png", "jpeg_no_scan.jpg", "jpeg_progressive_no_scan.jpg", "jpeg_no_dqt.jpg",
             "jpeg_refine_before_dc.jpg", "png_invalid_distance.png", "png_inflates_2mb.png"]:
    copy("image", "hostile/" + name)

for name in ["vol_le_i16.nii", "vol_be_f32.nii.gz", "labels_u8.nii.gz"]:
    copy("nifti", "images/" + name)
for name in ["nii_slice_16400.nii.gz", "nii_declares_16mb.nii.gz", "nii_gz_20_bytes.nii.gz"]:
    copy("nifti", "hostile/" + name)
