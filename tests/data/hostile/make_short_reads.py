# Writes the hostile and edge-case files of issue 38 (see README.md): images whose pixel data is
# missing or short, headers declaring sizes no file of these bytes can hold, colour tables that
# pixels index past, JPEGs whose components no scan decodes, NIfTI headers the 2-D pipeline
# cannot process, and a valid top-down BMP with its bottom-up and PNG twins. Standard library
# only, byte by byte from the formats' specifications. Run: python3 make_short_reads.py
import gzip
import os
import struct
import zlib

here = os.path.dirname(os.path.abspath(__file__))
images = os.path.join(here, "..", "images")


def write(name, payload):
    with open(os.path.join(here, name), "wb") as f:
        f.write(payload)


# --- PGM / PPM ---------------------------------------------------------------------------
write("pgm_no_pixels.pgm", b"P5\n64 64\n255\n")  # 64x64 grey, no sample at all
write("ppm_short_pixels.ppm", b"P6\n8 8\n255\n" + bytes(range(100)))  # 192 bytes needed, 100 given
write("ppm_8192_in_17_bytes.ppm", b"P6\n8192 8192\n255\n")  # 17 bytes claiming 8192x8192 RGB
write("pgm16_short_pixels.pgm", b"P5\n4 4\n65535\n" + bytes(31))  # 16-bit: 32 bytes needed
write("pgm_width_2e64.pgm", b"P5\n18446744073709551648 1\n255\n\x00")  # 2^64 + 32 (wraps to 32)
write("pgm_zero_width.pgm", b"P5\n0 5\n255\n")


# --- TGA ---------------------------------------------------------------------------------
def tga_header(image_type, w, h, depth, map_type=0, map_length=0, map_bits=0, descriptor=0):
    return struct.pack("<BBBHHBHHHHBB", 0, map_type, image_type, 0, map_length, map_bits, 0, 0, w, h, depth, descriptor)


write("tga_header_only.tga", tga_header(3, 64, 64, 8))  # 18 bytes claiming 64x64 grey
# Run-length 64x64 grey: 40 one-pixel raw packets (enough bytes for the 32 packets that could
# cover 4096 pixels), then the file ends.
write("tga_rle_truncated.tga", tga_header(11, 64, 64, 8) + b"".join(bytes([0, 9 * k % 256]) for k in range(40)))
write("tga_zero_width.tga", tga_header(3, 0, 64, 8) + bytes(64))


# --- BMP ---------------------------------------------------------------------------------
def bmp(w, h, bpp, rows, palette=b"", colours_used=0):
    """A BITMAPINFOHEADER BMP; `rows` is the pixel data as stored (padded rows)."""
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(rows), 2835, 2835, colours_used, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


write("bmp_1000x1000_300_bytes.bmp", bmp(1000, 1000, 24, bytes(300)))  # 3 MB of pixels claimed
write("bmp_negative_width.bmp", bmp(-5, 4, 24, bytes(64)))
# 8-bit, a colour table of 2 entries, pixel values 0, 1 and 200: 200 is past the table (stb
# read its colour from uninitialised stack memory).
write("bmp_palette_index.bmp", bmp(4, 2, 8, bytes([0, 1, 200, 1, 1, 0, 0, 1]),
                                   palette=bytes([30, 20, 10, 0, 50, 100, 200, 0]), colours_used=2))

# The twins: one 7x5 RGB image (odd width, so rows are padded), as a top-down BMP (negative
# height), a bottom-up BMP and a PNG.
W, H = 7, 5
pixel = [[((x * 37 + y * 11) % 256, (200 - x * 23 + y * 5) % 256, (y * 53 + x) % 256) for x in range(W)] for y in range(H)]


def bmp_row(y):
    row = b"".join(bytes([b, g, r]) for (r, g, b) in pixel[y])
    return row + bytes(-len(row) % 4)


write("bmp_top_down.bmp", bmp(W, -H, 24, b"".join(bmp_row(y) for y in range(H))))
write("bmp_bottom_up.bmp", bmp(W, H, 24, b"".join(bmp_row(y) for y in reversed(range(H)))))


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(w, h, colour_type, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)  # filter 0 (none) on every row
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw)) +
            png_chunk(b"IEND", b""))


write("bmp_twin.png", png(W, H, 2, [b"".join(bytes(p) for p in pixel[y]) for y in range(H)]))
# A 1x1 grey PNG whose image data inflates to 2 MB instead of its 2 bytes (stb grew its buffer to
# whatever the stream held).
write("png_inflates_2mb.png", png(1, 1, 0, [bytes(1)]).replace(
    png_chunk(b"IDAT", zlib.compress(b"\x00\x00")), png_chunk(b"IDAT", zlib.compress(bytes(2 << 20), 9))))
# A palette PNG whose PLTE chunk holds 2 entries while pixels use index 200 (stb looked it up in
# uninitialised stack memory); it now decodes as black.
write("png_short_palette.png", png(4, 2, 3, [bytes([0, 1, 200, 1]), bytes([1, 0, 0, 200])],
                                   extra=png_chunk(b"PLTE", bytes([10, 20, 30, 200, 100, 50]))))


# --- JPEG --------------------------------------------------------------------------------
def jpeg_parts(data):
    """(marker, bytes) pieces of a JPEG: each marker segment with its entropy-coded data."""
    parts, p = [], 2
    while p < len(data):
        marker = data[p + 1]
        if marker == 0xD9:
            break
        end = p + 2 + struct.unpack(">H", data[p + 2:p + 4])[0]
        if marker == 0xDA:  # the scan's data runs to the next marker that is not a stuffed 0 or a restart
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        parts.append((marker, data[p:end]))
        p = end
    return parts


with open(os.path.join(images, "grey100.jpg"), "rb") as f:
    baseline = jpeg_parts(f.read())
write("jpeg_no_scan.jpg", b"\xff\xd8" + b"".join(b for m, b in baseline if m != 0xDA) + b"\xff\xd9")
with open(os.path.join(images, "progressive_rgb.jpg"), "rb") as f:
    progressive = jpeg_parts(f.read())


write("jpeg_progressive_no_scan.jpg", b"\xff\xd8" + b"".join(b for m, b in progressive if m != 0xDA) + b"\xff\xd9")


def first_dc_scan(part):  # Ss = 0 and Ah = 0: the scan that sets every coefficient of its components
    marker, segment = part
    n = segment[4] if marker == 0xDA else 0
    return marker == 0xDA and segment[5 + 2 * n] == 0 and segment[7 + 2 * n] >> 4 == 0


# The progressive scans with the first DC scans moved last: the AC scans refine coefficients that
# nothing has set yet.
write("jpeg_refine_before_dc.jpg", b"\xff\xd8" + b"".join(b for m, b in progressive if not first_dc_scan((m, b))) +
      b"".join(b for m, b in progressive if first_dc_scan((m, b))) + b"\xff\xd9")
# grey100.jpg without its quantisation table (DQT): stb dequantised with uninitialised memory.
write("jpeg_no_dqt.jpg", b"\xff\xd8" + b"".join(b for m, b in baseline if m != 0xDB) + b"\xff\xd9")


# --- NIfTI -------------------------------------------------------------------------------
def nifti_header(nx, ny, nz, datatype=2, bitpix=8):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    h[344:348] = b"n+1\x00"
    return bytes(h)


# One 16400x16400 slice (269 MB of uint8): the header alone, which is all it takes to refuse it.
write("nii_slice_16400.nii.gz", gzip.compress(nifti_header(16400, 16400, 1), mtime=0))
# 256^3 uint8 (16 MB) declared by a file of ~100 bytes, which cannot inflate to that much.
write("nii_declares_16mb.nii.gz", gzip.compress(nifti_header(256, 256, 256) + bytes(64), mtime=0))
# 20 bytes of gzip that inflate to nothing: a header naming "scan.nii" (FNAME), then the file ends
# one byte into the deflate stream.
write("nii_gz_20_bytes.nii.gz", b"\x1f\x8b\x08\x08" + bytes(4) + b"\x00\x03scan.nii\x00" + b"\xed")
