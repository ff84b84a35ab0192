"""Makes the small fixtures test_io.cpp reads, so the tests never need torch.

Run from anywhere with a Python that has torch (tested with torch 1.13) and numpy:
    /usr/bin/python3 tests/data/io/make_fixtures.py
Expected values are saved next to each fixture as <name>.expected.npz (float32 arrays,
written by numpy, keyed by tensor name), so the tests compare against data produced
independently of the C++ readers.
"""
import collections
import io
import json
import os
import struct
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "golden")


def path(name):
    return os.path.join(HERE, name)


def expected(name, tensors):
    np.savez(path(name + ".expected.npz"),
             **{k: v.detach().float().contiguous().numpy() for k, v in tensors.items()})


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.fc = torch.nn.Linear(5, 3)
        self.register_buffer("scale", torch.tensor(1.5))


def state_dicts():
    torch.manual_seed(0)
    model = Tiny()
    # Spread values over a range where float16 and bfloat16 rounding differ from float32.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(7.0)
    torch.save(model.state_dict(), path("sd_f32.pt"))
    # Protocol 4 brings FRAME, MEMOIZE, STACK_GLOBAL and SHORT_BINUNICODE.
    torch.save(model.state_dict(), path("sd_f32_proto4.pt"), pickle_protocol=4)
    expected("sd_f32", model.state_dict())
    for name, dtype in [("sd_f16", torch.float16), ("sd_bf16", torch.bfloat16), ("sd_f64", torch.float64)]:
        sd = Tiny().to(dtype)
        sd.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
        torch.save(sd.state_dict(), path(name + ".pt"))
        expected(name, sd.state_dict())

    # A training checkpoint: DataParallel keys under 'state_dict', next to an optimizer.
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.fc(torch.ones(1, 5)).sum().backward()
    opt.step()
    torch.save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items()),
                "epoch": 3, "optimizer": opt.state_dict()}, path("nested.pt"))
    expected("nested", model.state_dict())

    # Deeper: net -> model_state_dict, beside a config of plain Python values.
    torch.save({"config": {"lr": 0.1, "name": "tiny", "betas": (0.9, 0.99), "flags": [True, False, None], "big": 2**40},
                "net": {"model_state_dict": model.state_dict(), "step": -7}}, path("nested2.pt"))
    return model


def views():
    base = torch.arange(24, dtype=torch.float32) * 0.5 - 3.0
    torch.manual_seed(1)
    tensors = {
        "base": base,
        "a": base[4:10].view(2, 3),        # offset 4 into base's storage
        "b": base[2:20:3],                 # offset 2, stride 3
        "c": base.view(4, 6)[1:3, 2:5],    # offset 8, strides (6, 1)
        "t": torch.randn(3, 5).t(),        # own storage, strides (1, 5)
    }
    torch.save(tensors, path("views.pt"))
    expected("views", tensors)


def params():
    torch.manual_seed(2)
    tensors = {"w": torch.nn.Parameter(torch.randn(2, 3)),
               "b": torch.nn.Parameter(torch.full((3,), 0.25), requires_grad=False)}
    torch.save(tensors, path("params.pt"))
    expected("params", tensors)


def write_zip(name, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path(name), "w", compression) as z:
        for entry, data in entries:
            z.writestr(zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0)), data, compression)


def special_checkpoints(model):
    # (its storage keys differ from run to run, so this file changes on every regeneration)
    torch.save(model.state_dict(), path("legacy.pt"), _use_new_zipfile_serialization=False)

    # A pickle that would call os.system('echo pwned') if it were executed.
    evil = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    write_zip("evil_global.pt", [("archive/data.pkl", evil), ("archive/version", b"3\n")])

    # sd_f32.pt rewritten by Python's zipfile with big-endian storages, as torch >= 2.1 on a
    # big-endian machine would record them.
    entries = []
    with zipfile.ZipFile(path("sd_f32.pt")) as z:
        for info in z.infolist():
            data = z.read(info)
            if "/data/" in info.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            entries.append((info.filename, data))
    entries.append(("sd_f32/byteorder", b"big"))
    write_zip("sd_f32_big.pt", entries)

    # Some writers name a storage's type by dtype (torch.float16) instead of torch.HalfStorage;
    # GLOBAL's operands are newline-terminated, so the swap keeps the pickle valid.
    with zipfile.ZipFile(path("sd_f16.pt")) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    entries = [(n, d.replace(b"ctorch\nHalfStorage\n", b"ctorch\nfloat16\n") if n.endswith("data.pkl") else d)
               for n, d in entries]
    assert b"float16" in dict(entries)["sd_f16/data.pkl"]
    write_zip("sd_f16_dtype.pt", entries)


def zips():
    # ZIP64 everywhere: saturated central directory fields with a ZIP64 extra field, ZIP64
    # end records, a local header whose extra field differs, and an archive comment.
    name, data = b"dir/hello.txt", b"hello, zip64\n"
    crc = zipfile.crc32(data)
    local = struct.pack("<IHHHHHIIIHH", 0x04034b50, 45, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 4)
    local += name + struct.pack("<HH", 0xCAFE, 0) + data
    extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                          len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    cd_offset, zip64_offset = len(local), len(local) + len(central)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064b50, 44, 45, 45, 0, 0, 1, 1, len(central), cd_offset)
    locator = struct.pack("<IIQI", 0x07064b50, 0, zip64_offset, 1)

    def archive(comment):
        end = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment))
        return local + central + zip64_end + locator + end + comment

    with zipfile.ZipFile(io.BytesIO(archive(b"plain comment"))) as z:  # Python agrees with the layout
        assert z.read("dir/hello.txt") == data
    # The comment holds a decoy end record signature (which fools Python's zipfile).
    with open(path("zip64.zip"), "wb") as f:
        f.write(archive(b"PK\x05\x06 a comment that looks like a record"))

    write_zip("deflated.zip", [("archive/data.pkl", b"x" * 100)], zipfile.ZIP_DEFLATED)

    # Stored, but flagged as encrypted (general purpose bit 0) in both headers.
    write_zip("encrypted.zip", [("secret.bin", b"not really encrypted")])
    raw = bytearray(open(path("encrypted.zip"), "rb").read())
    raw[6] |= 1
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 8] |= 1
    open(path("encrypted.zip"), "wb").write(bytes(raw))


def npys():
    # 24 values whose formulas the tests repeat; every one is exact in the stored dtype and in float32.
    i = np.arange(24)
    values = {"f": (i - 10) * 0.25, "u1": (i * 37) % 256, "b1": i % 3 == 0,
              "i4": (i - 12) * 100003, "i8": (i - 12) * 2**40}
    for descr in ["<f4", "<f8", "<f2", "|u1", "|b1", "<i4", "<i8", ">f4", ">f8", ">f2", ">i4", ">i8"]:
        kind = "f" if descr[1] == "f" else descr[1:]
        a = values[kind].astype(descr).reshape(2, 3, 4)
        tag = {"<": "le", ">": "be", "|": "na"}[descr[0]]
        np.save(path("npy_%s_%s.npy" % (tag, descr[1:])), a)
    np.save(path("npy_fortran_f4.npy"), np.asfortranarray(values["f"].astype("<f4").reshape(2, 3, 4)))
    np.save(path("npy_fortran_be_f8.npy"), np.asfortranarray(values["f"].astype(">f8").reshape(2, 3, 4)))
    with open(path("npy_v2_f4.npy"), "wb") as f:
        np.lib.format.write_array(f, values["f"].astype("<f4").reshape(2, 3, 4), version=(2, 0))
    with open(path("npy_v3_f4.npy"), "wb") as f:
        np.lib.format.write_array(f, values["f"].astype("<f4").reshape(2, 3, 4), version=(3, 0))
    np.save(path("npy_scalar_f8.npy"), np.float64(-2.5))
    np.save(path("npy_empty_f4.npy"), np.zeros((0, 3), "<f4"))


def safetensors():
    # Hand-rolled the way the format is specified, with data laid out in a different order
    # than the header lists it.
    rng = np.random.default_rng(3)
    tensors = {
        "w32": ("F32", rng.standard_normal((2, 3)).astype("<f4")),
        "w16": ("F16", rng.standard_normal(4).astype("<f2")),
        "wbf": ("BF16", rng.standard_normal((2, 2)).astype("<f4")),
        "w64": ("F64", rng.standard_normal(3).astype("<f8")),
        "empty": ("F32", np.zeros((0, 3), "<f4")),
        'caf\u00e9 \U0001F600 "q"\\': ("F32", np.array([7.0], "<f4")),
    }
    header, blobs, offset, expect = {"__metadata__": {"format": "pt", "note": "line\nbreak"}}, [], 0, {}
    for key in reversed(list(tensors)):
        dtype, a = tensors[key]
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            blob = (a.view("<u4") >> 16).astype("<u2").tobytes()
            expect[key] = ((a.view("<u4") >> 16) << 16).astype("<u4").view("<f4")
        else:
            blob = a.tobytes()
            expect[key] = a.astype("<f4")
        header[key] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()  # ensure_ascii: the odd key travels as \u escapes
    with open(path("mixed.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    np.savez(path("mixed.expected.npz"), **expect)


def golden():
    # A few tensors of the golden checkpoints, exported by torch, plus the float64 sum of
    # every v1 tensor in sorted key order.
    v1 = torch.load(os.path.join(GOLDEN, "v1_b2_s4_128", "weights.pt"))
    expected("golden_v1", {k: v1[k] for k in ["enc_blocks.0.cross.cross_conv.weight", "out_conv.conv.weight",
                                              "dec_blocks.2.support.vmapped.conv.bias"]})
    np.save(path("golden_v1_sums.npy"), np.array([v1[k].double().sum().item() for k in sorted(v1)]))
    custom = torch.load(os.path.join(GOLDEN, "custom_b1_s3_48x80", "weights.pt"))
    expected("golden_custom", {k: custom[k] for k in ["enc_blocks.0.cross.cross_conv.weight", "out_conv.conv.bias"]})


if __name__ == "__main__":
    model = state_dicts()
    views()
    params()
    special_checkpoints(model)
    zips()
    npys()
    safetensors()
    golden()
