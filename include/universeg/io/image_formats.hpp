// universeg/io/image_formats.hpp - the project's own readers of PGM/PPM (binary P5/P6), BMP and
// TGA, the simple formats whose stb_image 2.27 decoders cannot be given hostile files: they
// ignore short reads (heap garbage became the image), trust the header's size (a 17-byte PPM
// claiming 8192x8192 allocated 1.4 GB), read colour-table entries the file never set, and
// refuse valid top-down BMPs. Here the header's size is checked against the limits and then
// against the bytes before anything is allocated, every sample comes from the file, and a file
// that ends early is refused with a message naming it. io/image.hpp picks the reader.
//
//   bool is_pnm(data, size), is_bmp(data, size), is_tga(data, size)  // by signature / header
//   DecodedImage decode_pnm(data, size, path)     // likewise decode_bmp, decode_tga
//   void check_image_size(width, height, path)    // >= 1 and within limits() (io/limits.hpp)
//
// Samples as stb_image returned them for these formats: PGM 1 channel and PPM 3, 8 bits when
// the maximum value is below 256, else 16, values as stored (not rescaled to the maximum);
// BMP 3 (RGB; alpha ignored); TGA 1 (grey), 2 (grey+alpha), 3 (RGB, also 15/16-bit and
// colour-mapped) or 4 (RGBA). Formats from their specifications: Netpbm's pgm(5)/ppm(5),
// Microsoft's BITMAPINFOHEADER to BITMAPV5HEADER, Truevision's TGA 2.0.
#pragma once

#include "bytes.hpp"

namespace universeg {
namespace detail {

// An image as stored: interleaved samples, 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA)
// channels of `bits` (8 or 16) each.
struct DecodedImage {
    int64_t height = 0, width = 0;
    int channels = 0, bits = 8;
    std::vector<uint16_t> samples;
};

inline void check_image_size(int64_t w, int64_t h, const std::string& path) {
    if (w < 1 || h < 1)
        throw Error(path + ": corrupt image: its header declares " + std::to_string(w) + "x" + std::to_string(h) +
                    " pixels (width and height must be at least 1)");
    const Limits& lim = limits();
    if (w > lim.max_image_side || h > lim.max_image_side || w * h > lim.max_image_pixels)
        throw Error(path + ": image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels exceeds the limits of " +
                    std::to_string(lim.max_image_side) + " per side and " + std::to_string(lim.max_image_pixels) +
                    " pixels (universeg::limits())");
}

// The refusal of a file too short for what its header declares, before anything is allocated.
inline Error truncated_image(const std::string& path, const char* format, int64_t w, int64_t h, uint64_t need,
                             uint64_t have) {
    return Error(path + ": truncated " + format + ": " + std::to_string(w) + "x" + std::to_string(h) + " pixels need " +
                 std::to_string(need) + " bytes of pixel data, the file has " + std::to_string(have));
}

inline DecodedImage new_image(int64_t w, int64_t h, int channels, int bits, const std::string& path) {
    DecodedImage img;
    img.width = w, img.height = h, img.channels = channels, img.bits = bits;
    img.samples = allocate<uint16_t>(uint64_t(w * h) * uint64_t(channels), path);
    return img;
}

// --- PGM / PPM ----------------------------------------------------------------------------

inline bool is_pnm(const uint8_t* d, size_t n) { return n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7'; }

inline bool pnm_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// "P5" (grey) or "P6" (RGB), then width, height and maximum value in ASCII decimal, separated
// by whitespace and # comments (to the end of the line), one whitespace byte, then the samples,
// big-endian when the maximum exceeds 255.
inline DecodedImage decode_pnm(const uint8_t* d, size_t n, const std::string& path) {
    if (d[1] != '5' && d[1] != '6')
        throw Error(path + ": PNM type P" + char(d[1]) + " is not supported (only binary PGM, P5, and PPM, P6)");
    size_t p = 2;
    auto number = [&](const char* what, uint64_t max) {
        for (;;) {
            while (p < n && pnm_space(d[p])) ++p;
            if (p >= n || d[p] != '#') break;
            while (p < n && d[p] != '\n' && d[p] != '\r') ++p;
        }
        if (p >= n || d[p] < '0' || d[p] > '9')
            throw Error(path + ": corrupt PGM/PPM header: no " + what + (p >= n ? " before the end of the file" : ""));
        uint64_t v = 0;
        for (; p < n && d[p] >= '0' && d[p] <= '9'; ++p)
            if (!append_digit(v, char(d[p]), max))
                throw Error(path + ": corrupt PGM/PPM header: " + what + " larger than " + std::to_string(max));
        return v;
    };
    const uint64_t w = number("width", INT32_MAX), h = number("height", INT32_MAX);
    const uint64_t maxval = number("maximum value", 65535);
    if (maxval == 0) throw Error(path + ": corrupt PGM/PPM header: maximum value 0");
    check_image_size(int64_t(w), int64_t(h), path);
    if (p < n && !pnm_space(d[p])) throw Error(path + ": corrupt PGM/PPM header: no whitespace after the maximum value");
    p += p < n;
    const int channels = d[1] == '5' ? 1 : 3, bytes = maxval > 255 ? 2 : 1;
    const uint64_t count = w * h * uint64_t(channels);
    if (n - p < count * uint64_t(bytes))
        throw truncated_image(path, "PGM/PPM", int64_t(w), int64_t(h), count * uint64_t(bytes), n - p);
    DecodedImage img = new_image(int64_t(w), int64_t(h), channels, 8 * bytes, path);
    const uint8_t* s = d + p;
    for (uint64_t i = 0; i < count; ++i)
        img.samples[i] = bytes == 1 ? s[i] : uint16_t(s[2 * i] << 8 | s[2 * i + 1]);
    return img;
}

// --- BMP ----------------------------------------------------------------------------------

inline bool is_bmp(const uint8_t* d, size_t n) { return n >= 2 && d[0] == 'B' && d[1] == 'M'; }

// One colour channel of a BITFIELDS pixel: the bits under `mask` scaled to 0..255.
struct BmpMask {
    uint32_t mask = 0;
    int shift = 0;
    uint64_t top = 0;  // the largest value under the mask
    uint16_t operator()(uint32_t v) const { return uint16_t((uint64_t((v & mask) >> shift) * 255 + top / 2) / top); }
};

inline BmpMask bmp_mask(uint32_t mask, const std::string& path) {
    BmpMask m;
    m.mask = mask;
    while (m.shift < 32 && !(mask >> m.shift & 1)) ++m.shift;
    m.top = m.shift < 32 ? uint64_t(mask >> m.shift) : 0;
    if (m.top == 0 || (m.top & (m.top + 1)) != 0)
        throw Error(path + ": corrupt BMP: colour mask " + std::to_string(mask) + " is not one run of bits");
    return m;
}

// A 14-byte file header ("BM", size, reserved, offset of the pixel rows), an info header of
// 12 (OS/2 core: 16-bit sizes, 3-byte colour table entries), 40, 52, 56, 108 or 124 bytes,
// channel masks (after a 40-byte header, inside the longer ones), the colour table, then rows
// padded to 4 bytes, bottom-up unless the height is negative. Uncompressed or BITFIELDS;
// run-length and embedded JPEG/PNG compression are refused.
inline DecodedImage decode_bmp(const uint8_t* d, size_t n, const std::string& path) {
    auto corrupt = [&](const std::string& why) { return Error(path + ": corrupt BMP: " + why); };
    if (n < 18) throw Error(path + ": truncated BMP: the file ends inside its header");
    const uint64_t offset = load_uint(d + 10, 4), info = load_uint(d + 14, 4);
    if (info != 12 && info != 40 && info != 52 && info != 56 && info != 108 && info != 124)
        throw Error(path + ": unsupported BMP: an info header of " + std::to_string(info) + " bytes");
    uint64_t headers = 14 + info;
    if (n < headers) throw Error(path + ": truncated BMP: the file ends inside its header");
    const bool core = info == 12;
    const int64_t w = core ? int64_t(load_uint(d + 18, 2)) : int64_t(int32_t(uint32_t(load_uint(d + 18, 4))));
    const int64_t h_stored = core ? int64_t(load_uint(d + 20, 2)) : int64_t(int32_t(uint32_t(load_uint(d + 22, 4))));
    const uint64_t planes = load_uint(d + (core ? 22 : 26), 2), bpp = load_uint(d + (core ? 24 : 28), 2);
    const uint64_t compression = core ? 0 : load_uint(d + 30, 4);
    const bool top_down = h_stored < 0;  // a negative height: rows stored top row first
    const int64_t h = top_down ? -h_stored : h_stored;
    check_image_size(w, h, path);
    if (planes != 1) throw corrupt(std::to_string(planes) + " colour planes (must be 1)");
    if (compression == 1 || compression == 2)
        throw Error(path + ": unsupported BMP: run-length compressed (save it uncompressed or as PNG)");
    const bool bitfields = compression == 3 || compression == 6;
    if (compression != 0 && !bitfields)
        throw Error(path + ": unsupported BMP: compression method " + std::to_string(compression));
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        throw Error(path + ": unsupported BMP: " + std::to_string(bpp) + " bits per pixel");
    if (bitfields && bpp != 16 && bpp != 32) throw corrupt("channel masks with " + std::to_string(bpp) + " bits per pixel");

    uint32_t masks[3] = {0xFF0000, 0xFF00, 0xFF};
    if (bpp == 16) masks[0] = 0x7C00, masks[1] = 0x3E0, masks[2] = 0x1F;
    if (bitfields) {  // R, G, B (and A, unused) right after the 40 bytes of the basic header
        if (info == 40) headers += compression == 6 ? 16 : 12;
        if (n < headers) throw Error(path + ": truncated BMP: the file ends inside its channel masks");
        for (int c = 0; c < 3; ++c) masks[c] = uint32_t(load_uint(d + 54 + 4 * c, 4));
    }
    const BmpMask mask[3] = {bmp_mask(masks[0], path), bmp_mask(masks[1], path), bmp_mask(masks[2], path)};

    if (offset < headers || offset > n)
        throw corrupt("its pixel data offset " + std::to_string(offset) + " is not between the end of its headers (" +
                      std::to_string(headers) + ") and the end of the file (" + std::to_string(n) + ")");
    // The colour table: the count the header gives (all 2^bpp when 0), no more than fits
    // between the headers and the pixel data.
    const uint64_t entry = core ? 3 : 4;
    uint64_t colours = 0;
    if (bpp <= 8) {
        const uint64_t used = core ? 0 : load_uint(d + 46, 4);
        colours = std::min({used ? used : uint64_t(1) << bpp, uint64_t(1) << bpp, (offset - headers) / entry});
        if (colours == 0) throw corrupt(std::to_string(bpp) + " bits per pixel without a colour table");
    }
    const uint64_t stride = (uint64_t(w) * bpp + 31) / 32 * 4, last_row = (uint64_t(w) * bpp + 7) / 8;
    const uint64_t need = stride * uint64_t(h - 1) + last_row;  // the last row's padding may be missing
    if (n - offset < need) throw truncated_image(path, "BMP", w, h, need, n - offset);

    DecodedImage img = new_image(w, h, 3, 8, path);
    const uint8_t* table = d + headers;
    for (int64_t r = 0; r < h; ++r) {
        const uint8_t* row = d + offset + uint64_t(r) * stride;
        uint16_t* out = &img.samples[size_t((top_down ? r : h - 1 - r) * w * 3)];
        for (int64_t x = 0; x < w; ++x, out += 3) {
            if (bpp <= 8) {
                const uint64_t bit = uint64_t(x) * bpp;  // pixels fill each byte from its high bits
                const uint64_t index = uint64_t(row[bit / 8] >> (8 - bpp - bit % 8)) & ((uint64_t(1) << bpp) - 1);
                if (index >= colours)
                    throw corrupt("pixel value " + std::to_string(index) + " is past its colour table of " +
                                  std::to_string(colours) + " entries");
                const uint8_t* c = table + index * entry;
                out[0] = c[2], out[1] = c[1], out[2] = c[0];
            } else if (bpp == 24) {
                const uint8_t* c = row + 3 * x;
                out[0] = c[2], out[1] = c[1], out[2] = c[0];
            } else {
                const uint32_t v = uint32_t(load_uint(row + uint64_t(x) * (bpp / 8), int(bpp / 8)));
                for (int c = 0; c < 3; ++c) out[c] = mask[c](v);
            }
        }
    }
    return img;
}

// --- TGA ----------------------------------------------------------------------------------

// TGA has no signature: an 18-byte header whose colour-map type (0 or 1) and image type
// (1 colour-mapped, 2 true-colour, 3 grey; 9, 10, 11 the same run-length encoded) are
// possible. Text never passes (its second byte is printable), nor PNG, JPEG, BMP or PNM.
inline bool is_tga(const uint8_t* d, size_t n) {
    const unsigned type = n >= 18 ? d[2] & ~8u : 0;
    return n >= 18 && d[1] <= 1 && d[2] < 12 && type >= 1 && type <= 3;
}

// Header, image ID, colour map, pixels; rows bottom-up unless bit 5 of the descriptor is set,
// right-to-left when bit 4 is. Run-length packets (a count byte, then one pixel repeated or
// that many raw pixels) may cross rows.
inline DecodedImage decode_tga(const uint8_t* d, size_t n, const std::string& path) {
    auto corrupt = [&](const std::string& why) { return Error(path + ": corrupt TGA: " + why); };
    const unsigned id_length = d[0], map_type = d[1], type = d[2] & ~8u, map_bits = d[7], depth = d[16];
    const bool rle = (d[2] & 8) != 0, mapped = type == 1, grey = type == 3;
    const uint64_t map_first = load_uint(d + 3, 2), map_length = load_uint(d + 5, 2);
    const int64_t w = int64_t(load_uint(d + 12, 2)), h = int64_t(load_uint(d + 14, 2));
    check_image_size(w, h, path);
    // The bits of one colour: a colour-map entry, or the pixel itself.
    const unsigned colour_bits = mapped ? map_bits : depth;
    if (mapped && (map_type != 1 || map_length == 0)) throw corrupt("colour-mapped without a colour map");
    if (mapped && depth != 8 && depth != 16) throw corrupt(std::to_string(depth) + "-bit colour-map indices");
    if (grey ? depth != 8 && depth != 16
             : colour_bits != 15 && colour_bits != 16 && colour_bits != 24 && colour_bits != 32 && !(mapped && colour_bits == 8))
        throw Error(path + ": unsupported TGA: " + std::to_string(colour_bits) + "-bit " + (grey ? "grey" : "colour") +
                    " pixels");
    const int channels = grey ? int(depth / 8) : colour_bits == 8 ? 1 : colour_bits == 32 ? 4 : 3;
    const uint64_t pixel_bytes = (depth + 7) / 8, entry_bytes = (map_bits + 7) / 8;
    const uint64_t map_at = 18 + id_length, data_at = map_at + (map_type == 1 ? map_length * entry_bytes : 0);
    if (data_at > n) throw Error(path + ": truncated TGA: the file ends inside its colour map");
    // Raw: every pixel stored. Run-length: at least a count byte and one pixel per 128 pixels.
    const uint64_t pixels = uint64_t(w * h), have = n - data_at;
    const uint64_t need = rle ? (pixels + 127) / 128 * (1 + pixel_bytes) : pixels * pixel_bytes;
    if (have < need) throw truncated_image(path, "TGA", w, h, need, have);

    DecodedImage img = new_image(w, h, channels, 8, path);
    const bool top_down = (d[17] & 0x20) != 0, right_to_left = (d[17] & 0x10) != 0;
    // Pixel k of the file, whose stored value starts at p, into its place in the image.
    auto put = [&](uint64_t k, const uint8_t* p) {
        const int64_t row = int64_t(k / uint64_t(w)), col = int64_t(k % uint64_t(w));
        uint16_t* out = &img.samples[size_t(((top_down ? row : h - 1 - row) * w + (right_to_left ? w - 1 - col : col)) * channels)];
        if (mapped) {
            const uint64_t index = load_uint(p, int(pixel_bytes));
            if (index < map_first || index - map_first >= map_length)
                throw corrupt("pixel value " + std::to_string(index) + " is outside its colour map (entries " +
                              std::to_string(map_first) + " to " + std::to_string(map_first + map_length - 1) + ")");
            p = d + map_at + (index - map_first) * entry_bytes;
        }
        if (grey || colour_bits == 8) {
            for (int c = 0; c < channels; ++c) out[c] = p[c];
        } else if (colour_bits <= 16) {  // 5 bits each of R, G, B (the top bit is not alpha)
            const unsigned v = unsigned(load_uint(p, 2));
            for (int c = 0; c < 3; ++c) out[c] = uint16_t(((v >> (10 - 5 * c) & 31) * 255 + 15) / 31);
        } else {  // B, G, R (, A)
            out[0] = p[2], out[1] = p[1], out[2] = p[0];
            if (channels == 4) out[3] = p[3];
        }
    };
    const uint8_t* q = d + data_at;
    const uint8_t* end = d + n;
    if (!rle)
        for (uint64_t k = 0; k < pixels; ++k) put(k, q + k * pixel_bytes);
    for (uint64_t k = 0; rle && k < pixels;) {
        if (q == end)
            throw Error(path + ": truncated TGA: the run-length data ends after " + std::to_string(k) + " of " +
                        std::to_string(pixels) + " pixels");
        const bool run = (*q & 128) != 0;
        const uint64_t count = std::min<uint64_t>((*q++ & 127) + 1, pixels - k);  // a last packet may overshoot
        if (uint64_t(end - q) < (run ? 1 : count) * pixel_bytes)
            throw Error(path + ": truncated TGA: the run-length data ends inside a packet at pixel " + std::to_string(k) +
                        " of " + std::to_string(pixels));
        for (uint64_t i = 0; i < count; ++i) put(k++, run ? q : q + i * pixel_bytes);
        q += (run ? 1 : count) * pixel_bytes;
    }
    return img;
}

}  // namespace detail
}  // namespace universeg
