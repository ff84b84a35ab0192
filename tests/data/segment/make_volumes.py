#!/usr/bin/env python3
"""Writes the small NIfTI volumes of tests/data/segment/volumes (standard library only, seeded):
two labelled support volumes and a query volume of a bright ellipsoid (label 1) around a
brighter core (label 2) over a noisy gradient. Run from this folder: python3 make_volumes.py"""
import gzip
import os
import struct


def lcg(seed):
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        yield (state >> 33) / 2**31


def volume(nx, ny, nz, seed):
    rand = lcg(seed)
    image, labels = [], []
    cx, cy, cz = nx * (0.45 + 0.02 * seed), ny * 0.5, nz * 0.5
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                r = ((x - cx) / (nx * 0.3)) ** 2 + ((y - cy) / (ny * 0.25)) ** 2 + ((z - cz) / (nz * 0.6)) ** 2
                label = 2 if r < 0.25 else 1 if r < 1 else 0
                base = (-100 + 3 * x + 2 * y, 400, 800)[label]
                image.append(int(base + 700 * next(rand)))
                labels.append(label)
    return image, labels


def header(nx, ny, nz, datatype, bitpix):
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 0.8, 0.8, 2.5, 0, 0, 0, 0)
    struct.pack_into("<f", h, 108, 352)
    struct.pack_into("<f", h, 112, 1)
    struct.pack_into("<h", h, 254, 1)  # sform_code
    struct.pack_into("<4f", h, 280, 0.8, 0, 0, -10)
    struct.pack_into("<4f", h, 296, 0, 0.8, 0, 5)
    struct.pack_into("<4f", h, 312, 0, 0, 2.5, 7)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0"


def save(path, dims, values, datatype, fmt, bitpix):
    data = header(*dims, datatype, bitpix) + struct.pack("<%d%s" % (len(values), fmt), *values)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)


for name, dims, seed in [("a", (40, 36, 5), 1), ("b", (36, 44, 4), 2)]:
    image, labels = volume(*dims, seed)
    save("volumes/support/images/%s.nii.gz" % name, dims, image, 4, "h", 16)   # int16
    save("volumes/support/labels/%s.nii.gz" % name, dims, labels, 2, "B", 8)   # uint8
image, _ = volume(44, 40, 4, 3)
save("volumes/queries/q.nii.gz", (44, 40, 4), [float(v) for v in image], 16, "f", 32)  # float32
