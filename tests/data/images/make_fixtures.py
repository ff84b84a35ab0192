#!/usr/bin/python3
"""Writes the image and volume fixtures of tests/test_io.cpp, independently of the C++ code:
PNGs assembled byte by byte (zlib + struct, not our encoder), NIfTI-1 files packed field by
field from the nifti1.h layout, and resampling references computed by PIL.

Run from anywhere with Debian's python3 (numpy, PIL): /usr/bin/python3 tests/data/images/make_fixtures.py
Every value below is spelled out here and in the test, so a reader can check both by hand.
"""
import gzip
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def png(path, samples, bits, colour_type):
    """samples: (H, W, C) integers. Filter type 0 on every row."""
    h, w, c = samples.shape
    dtype = ">u2" if bits == 16 else "u1"
    rows = b"".join(b"\x00" + samples[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour_type, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(os.path.join(HERE, path), "wb") as f:
        f.write(data)


def nifti(path, vol, code, endian, slope=0.0, inter=0.0, qform=None, sform=None, pixdim=(1, 1, 1, 1), gz=False):
    """vol: numpy array indexed [x, y, z]; written x fastest (Fortran order)."""
    e = endian
    dims = [vol.ndim] + list(vol.shape) + [1] * (7 - vol.ndim)
    bitpix = vol.dtype.itemsize * 8
    qcode, (qb, qc, qd, qx, qy, qz) = (0, (0,) * 6) if qform is None else (1, qform)
    scode, srows = (0, [[0] * 4] * 3) if sform is None else (2, sform)
    hdr = struct.pack(e + "i10s18sihcb", 348, b"", b"", 0, 0, b"r", 0)
    hdr += struct.pack(e + "8h", *dims)
    hdr += struct.pack(e + "3fhhhh", 0, 0, 0, 0, code, bitpix, 0)
    hdr += struct.pack(e + "8f", *([pixdim[0]] + list(pixdim[1:]) + [0] * (8 - len(pixdim))))
    hdr += struct.pack(e + "3fhbb", 352.0, slope, inter, 0, 0, 10)  # xyzt_units: mm + s
    hdr += struct.pack(e + "4f2i", 0, 0, 0, 0, 0, 0)
    hdr += struct.pack("80s24s", b"fixture volume", b"")
    hdr += struct.pack(e + "2h6f", qcode, scode, qb, qc, qd, qx, qy, qz)
    for r in srows:
        hdr += struct.pack(e + "4f", *r)
    hdr += struct.pack("16s4s", b"", b"n+1\x00")
    assert len(hdr) == 348
    body = hdr + b"\x00" * 4 + vol.astype(vol.dtype.newbyteorder(e)).tobytes(order="F")
    full = os.path.join(HERE, path)
    if gz:
        with gzip.open(full, "wb") as f:
            f.write(body)
    else:
        with open(full, "wb") as f:
            f.write(body)


# 16-bit grey, 3 wide x 2 high.
png("grey16.png", np.array([[0, 1, 256], [32768, 65534, 65535]]).reshape(2, 3, 1), 16, 0)
# 16-bit RGB, 2x1: pure red; (65535, 32768, 0).
png("rgb16.png", np.array([[[65535, 0, 0], [65535, 32768, 0]]]), 16, 2)
# 16-bit RGBA, 1x1: (0, 65535, 0, 1000).
png("rgba16.png", np.array([[[0, 65535, 0, 1000]]]), 16, 6)
# 8-bit grey+alpha, 2x1: (10, 255), (200, 0).
png("grey_alpha8.png", np.array([[[10, 255], [200, 0]]]), 8, 4)
# 16-bit label map, 2x2: 0, 300, 1000, 65535.
png("labels16.png", np.array([[0, 300], [1000, 65535]]).reshape(2, 2, 1), 16, 0)

# Little-endian int16, 4x3x2, value(x,y,z) = x + 10 y + 100 z, stored scaled: 2 * v + 1.
v = np.fromfunction(lambda x, y, z: x + 10 * y + 100 * z, (4, 3, 2), dtype=int).astype("<i2")
nifti("vol_le_i16.nii", v, 4, "<", slope=2.0, inter=1.0, pixdim=(1, 0.5, 0.75, 2.0),
      sform=[[0, -0.75, 0, 10], [0.5, 0, 0, -20], [0, 0, 2, 30]])
# Big-endian float32, gzip, 3x2x2, value = x - y + 0.5 z; qform: 90 degrees about z, offsets (1, 2, 3).
f = np.fromfunction(lambda x, y, z: x - y + 0.5 * z, (3, 2, 2)).astype(">f4")
s = float(np.sqrt(0.5))
nifti("vol_be_f32.nii.gz", f, 16, ">", qform=(0, 0, s, 1, 2, 3), pixdim=(1, 2, 3, 4), gz=True)
# uint8 label volume, 5x4x3: label 1 in the slab z = 1 at x >= 2; label 2 at (0, 0, 2).
lab = np.zeros((5, 4, 3), dtype="u1")
lab[2:, :, 1] = 1
lab[0, 0, 2] = 2
nifti("labels_u8.nii.gz", lab, 2, "<", pixdim=(-1, 1.5, 1.5, 3), gz=True)

# Resampling references: a 7 wide x 5 high float image through PIL's BILINEAR (a triangle
# filter widened when shrinking) and NEAREST, stored as float32 .npy (rows, columns).
src = np.array([[((x * 7 + y * 13) % 11) / 10.0 + 0.05 * x for x in range(7)] for y in range(5)], dtype=np.float32)
np.save(os.path.join(HERE, "resize_src.npy"), src)
img = Image.fromarray(src, mode="F")
for w, h in [(11, 3), (4, 12), (3, 2), (7, 5)]:
    np.save(os.path.join(HERE, "resize_bilinear_%dx%d.npy" % (h, w)),
            np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32))
    np.save(os.path.join(HERE, "resize_nearest_%dx%d.npy" % (h, w)),
            np.asarray(img.resize((w, h), Image.NEAREST), dtype=np.float32))

# JPEGs (written by PIL's libjpeg: stb_image_write's JPEG encoder shifts negative values, which
# the sanitizer builds reject). Constant images for exact expectations, patterns for shapes.
Image.fromarray(np.full((16, 16), 100, np.uint8), "L").save(os.path.join(HERE, "grey100.jpg"), quality=95)
Image.fromarray(np.tile(np.array([200, 100, 50], np.uint8), (16, 16, 1)), "RGB").save(
    os.path.join(HERE, "colour.jpg"), quality=95)
yy, xx = np.mgrid[0:48, 0:64]
rgb = np.stack([(xx * 4) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], axis=2).astype(np.uint8)
Image.fromarray(rgb, "RGB").save(os.path.join(HERE, "pattern_rgb.jpg"), quality=90)
# The same pattern as a progressive JPEG with optimised Huffman tables: its first (DC) scan
# names an AC table that the file defines only later, which the hostile-JPEG check must allow.
Image.fromarray(rgb, "RGB").save(os.path.join(HERE, "progressive_rgb.jpg"), quality=90, progressive=True, optimize=True)
yy, xx = np.mgrid[0:29, 0:37]
Image.fromarray(((xx * 7 + yy * 5) % 256).astype(np.uint8), "L").save(os.path.join(HERE, "pattern_grey.jpg"), quality=90)
