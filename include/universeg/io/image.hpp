// universeg/io/image.hpp - 2-D images for the segmentation tool: reading (PNG, JPEG, BMP, TGA,
// PGM/PPM; 8- and 16-bit; grey, grey+alpha, RGB, RGBA), grey conversion, resizing, intensity
// normalisation, PNG writing (8/16-bit), overlays and labelled folders.
//
//   struct Image { int64_t height, width; std::vector<float> pixels, colour; };  // row-major grey (+ RGB planes)
//   Image load_image(path);              // grey in [0,1]; colour -> ITU-R BT.601 luma, RGB kept
//   Image load_label_map(path);          // raw integer values, no scaling
//   Image resize_bilinear(img, h, w);    // half-pixel centres; antialiased when shrinking
//   Image resize_nearest(img, h, w);     // for label maps
//   void  normalize_min_max(img);        // to [0,1]; a constant image becomes zeros
//   void  clip_percentiles(img, low, high);  // clamp to the low/high percentiles (0..100)
//   void  save_png(path, samples, h, w, channels, bits);  // atomic; bits 8 or 16
//   std::vector<uint8_t> encode_png(samples, h, w, channels, bits);
//   void  save_image_png(path, img, bits);   // [0,1] -> full scale
//   void  save_label_png(path, labels);      // integer values, 8-bit when they fit, else 16
//   std::vector<uint8_t> overlay_labels(img, labels);  // RGB8: coloured labels + contours
//   std::vector<LabelledPair> list_labelled_folder(dir);  // DIR/images/NAME.* + DIR/labels/NAME.*
//
// Reading is hardened against hostile files: the header's size is checked against limits()
// (io/limits.hpp: max_image_side, max_image_pixels) and against the file's bytes before anything
// is decoded, and no decoded sample is ever memory the file did not set. PGM/PPM, BMP and TGA
// are read by the project's own decoders (io/image_formats.hpp); PNG and JPEG by stb_image,
// with the malformed files that make Debian's stb_image 2.27 write out of bounds, hit undefined
// behaviour or compute pixels from memory nothing set refused or repaired first
// (detail::check_jpeg_markers, check_png_chunks, check_png_image_data, png_with_full_palette;
// found by fuzz/, and by its corpora replayed under valgrind as .ci/memcheck does).
//
// stb_image is compiled once per program: define UNIVERSEG_STB_IMPLEMENTATION in exactly one
// .cpp file before including this header (as with stb itself; cmake/universeg_stb.cpp is that
// file) and compile that file with -fwrapv (stb 2.27's JPEG decoder overflows signed integers
// on hostile files), or link a library that carries stb_image (Debian: -lstb). PNG writing
// deflates with zlib (link -lz), which compresses noisy images far better than
// stb_image_write and, unlike it, can write 16-bit PNGs.
#pragma once

#include "bytes.hpp"
#include "image_formats.hpp"
#include "zip.hpp"

#include <algorithm>
#include <array>
#include <climits>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#ifdef UNIVERSEG_STB_IMPLEMENTATION
#define STB_IMAGE_IMPLEMENTATION
// Only the formats stb decodes here: its GIF, PSD, HDR and PIC decoders are attack surface that
// no medical image needs, and BMP, TGA and PGM/PPM have readers of their own
// (io/image_formats.hpp). stb's own cap on a side (default 2^24) is lowered to 2^16 as a
// second line behind limits().max_image_side.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_MAX_DIMENSIONS (1 << 16)
#endif
#if __has_include(<stb/stb_image.h>)
#include <stb/stb_image.h>
#else
#include <stb_image.h>
#endif
#ifdef UNIVERSEG_STB_IMPLEMENTATION
#undef STB_IMAGE_IMPLEMENTATION
#endif
#include <zlib.h>

namespace universeg {

struct Image {
    int64_t height = 0, width = 0;
    std::vector<float> pixels;  // row-major, height * width
    // A colour image's R, G and B planes (3 * height * width), which the network never sees but
    // the intensity evidence of segment uses; empty for grey. Kept by load_image and crop_image
    // only: resizing and the other transforms make grey images.
    std::vector<float> colour;

    Image() = default;
    Image(int64_t h, int64_t w, std::vector<float> grey, std::vector<float> rgb = {})
        : height(h), width(w), pixels(std::move(grey)), colour(std::move(rgb)) {}
};

// Largest image the writer and the resizers handle (16384 x 16384). The readers take at most
// limits().max_image_pixels (io/limits.hpp), checked on the header before decoding.
constexpr int64_t kMaxImagePixels = int64_t(1) << 28;

namespace detail {

inline std::string stb_reason() {
    const char* r = stbi_failure_reason();
    return r ? r : "unknown error";
}

inline bool is_jpeg(const uint8_t* d, size_t n) {
    size_t start = 1;  // the start-of-image marker, after any fill bytes (as stb accepts it)
    while (start < n && d[start] == 0xFF) ++start;
    return n >= 2 && d[0] == 0xFF && start < n && d[start] == 0xD8;
}

// stb_image (Debian's 2.27) trusts a JPEG's markers in ways that hostile files break: a DHT
// segment declaring more than 256 codes for one table makes it write past the table while
// reading the header (stbi_info); and it decodes with uninitialised memory, which then becomes
// pixels, when a scan uses a Huffman table or a component a quantisation table that no earlier
// DHT or DQT segment defined, when no scan decodes a component (a file with no scan at all),
// and when a progressive scan refines a component before its first DC scan has set its
// coefficients. This walks the JPEG's markers the way stb does (fill bytes, stuffed 0xFF00 and
// restart markers skipped, every other marker followed by a big-endian length; up to the first
// EOI) and refuses all of these first.
inline void check_jpeg_markers(const uint8_t* d, size_t n, const std::string& path) {
    if (!is_jpeg(d, n)) return;
    size_t start = 1;
    while (d[start] == 0xFF) ++start;
    auto byte = [&](size_t at) -> size_t { return at < n ? d[at] : 0; };  // stb reads 0 past the end
    auto corrupt = [&](const std::string& why) { return Error(path + ": corrupt JPEG: " + why); };
    bool huffman[2][4] = {}, quantisation[4] = {};  // tables defined so far: [DC = 0, AC = 1][id], [id]
    bool progressive = false;
    struct Component {
        size_t id, table;
        bool set;  // whether a scan has set all its coefficients: a sequential scan or a first DC pass
    };
    std::vector<Component> frame;
    std::string problem;  // the first of a scan's problems, refused once the tables have all been checked
    bool ended = false;
    for (size_t p = start + 1; p + 1 < n && !ended;) {
        const uint8_t m = d[p + 1];
        if (d[p] != 0xFF || m == 0xFF) {  // entropy-coded data, or a fill byte before a marker
            ++p;
            continue;
        }
        if (m == 0xD9) {  // end of image: stb stops here
            ended = true;
            continue;
        }
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {  // no length follows
            p += 2;
            continue;
        }
        const size_t end = p + 2 + (byte(p + 2) << 8 | byte(p + 3));
        if (m == 0xC2) progressive = true;
        if ((m == 0xC0 || m == 0xC1 || m == 0xC2) && frame.empty())  // the frame (stb reads the first)
            for (size_t c = 0, count = byte(p + 9); c < count; ++c)
                frame.push_back({byte(p + 10 + 3 * c), byte(p + 12 + 3 * c) & 3, false});
        if (m == 0xDB)
            for (size_t q = p + 4; q < end; q += (byte(q) >> 4) ? 129 : 65)  // precision/id, 64 entries
                quantisation[byte(q) & 3] = true;
        if (m == 0xC4)
            for (size_t q = p + 4; q < end;) {  // tables: class/id, 16 counts, the codes' values
                size_t codes = 0;
                for (size_t k = 1; k <= 16; ++k) codes += byte(q + k);
                if (codes > 256)
                    throw corrupt("a Huffman table declares " + std::to_string(codes) + " codes, more than the 256 possible");
                if ((byte(q) >> 4) <= 1 && (byte(q) & 15) <= 3) huffman[byte(q) >> 4][byte(q) & 15] = true;
                q += 17 + codes;
            }
        if (m == 0xDA) {  // a scan: which tables its components decode with (stb refuses ids > 3)
            const size_t count = byte(p + 4);
            const size_t spectral_start = byte(p + 5 + 2 * count);
            const size_t approx_high = byte(p + 7 + 2 * count) >> 4;
            // Sequential scans use both tables; progressive DC scans the DC table on their first
            // pass only, progressive AC scans the AC table.
            const bool first_pass = !progressive || (spectral_start == 0 && approx_high == 0);
            const bool uses_ac = !progressive || spectral_start > 0;
            for (size_t c = 0; c < count; ++c) {
                const size_t dc = byte(p + 6 + 2 * c) >> 4, ac = byte(p + 6 + 2 * c) & 15;
                if ((first_pass && dc <= 3 && !huffman[0][dc]) || (uses_ac && ac <= 3 && !huffman[1][ac]))
                    throw corrupt("a scan uses a Huffman table that no DHT segment defines");
            }
            for (size_t c = 0; c < count; ++c) {
                const size_t id = byte(p + 5 + 2 * c);
                for (Component& f : frame) {
                    if (f.id != id) continue;
                    if (problem.empty() && !quantisation[f.table])
                        problem = "component " + std::to_string(id) + " uses quantisation table " +
                                  std::to_string(f.table) + ", which no DQT segment before its scan defines";
                    if (problem.empty() && !f.set && !first_pass)
                        problem = "a progressive scan refines component " + std::to_string(id) + " before its first DC scan";
                    f.set = f.set || first_pass;
                }
            }
        }
        p = std::max(end, p + 2);
    }
    if (!problem.empty()) throw corrupt(problem);
    for (const Component& c : frame)
        if (ended && !c.set) throw corrupt("no scan holds the data of component " + std::to_string(c.id));
}

inline bool is_png(const uint8_t* d, size_t n) {
    static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    return n >= 8 && std::memcmp(d, kSignature, 8) == 0;
}

inline void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& body) {
    for (int k = 3; k >= 0; --k) out.push_back(uint8_t(body.size() >> (8 * k)));
    const size_t start = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), body.begin(), body.end());
    const uint32_t crc = crc32(out.data() + start, out.size() - start);
    for (int k = 3; k >= 0; --k) out.push_back(uint8_t(crc >> (8 * k)));
}

// A PLTE chunk that stb_image 2.27 takes (whole entries, at most 256) but that holds fewer
// entries than a palette image of `depth` bits can index: stb looks pixels up without checking
// the index against the entries read, and its palette lives in uninitialised stack memory.
inline bool png_palette_short(uint64_t len, uint64_t colour_type, uint64_t depth) {
    return colour_type == 3 && depth <= 8 && len % 3 == 0 && len / 3 < (uint64_t(1) << depth);
}

// The bytes of filtered scanlines that a PNG with this header inflates to (PNG spec 7.2, 8.2:
// a filter byte per row, and each of the seven Adam7 passes has its own rows); 0 for a colour
// type or depth that stb refuses anyway.
inline uint64_t png_raw_size(uint64_t w, uint64_t h, uint64_t depth, uint64_t colour_type, bool interlaced) {
    static const uint64_t kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type
    if (colour_type > 6 || kChannels[colour_type] == 0 || depth == 0 || depth > 16) return 0;
    const uint64_t bits = kChannels[colour_type] * depth;
    auto rows = [&](uint64_t pw, uint64_t ph) { return pw && ph ? ph * (1 + (pw * bits + 7) / 8) : 0; };
    if (!interlaced) return rows(w, h);
    static const uint64_t kAdam7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                          {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};  // x0, y0, dx, dy
    uint64_t total = 0;
    for (const auto& a : kAdam7)
        total += rows(w > a[0] ? (w - a[0] + a[2] - 1) / a[2] : 0, h > a[1] ? (h - a[1] + a[3] - 1) / a[3] : 0);
    return total;
}

// stb_image's own inflater copies from before the start of its output when a stream uses one of
// deflate's two invalid distance codes, so such a PNG decodes to uninitialised memory; and it
// grows its output to whatever the stream inflates to, however small the image. The IDAT data
// (after the 2-byte zlib header, which stb checks) is inflated here first by zlib into a scratch
// buffer, never past the `need` bytes the image's size calls for: a stream that zlib finds
// invalid, or that holds more than that, is refused. One that ends early is left to stb.
inline void check_png_image_data(const uint8_t* d, size_t n, uint64_t need, const std::string& path) {
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw Error(path + ": zlib initialisation failed");
    struct End {
        z_stream& z;
        ~End() { inflateEnd(&z); }
    } end{z};
    uint8_t scratch[1 << 15];
    uint64_t inflated = 0, header = 2;
    int rc = Z_OK;
    for (uint64_t p = 8; rc != Z_STREAM_END && p + 8 <= n && std::memcmp(d + p + 4, "IEND", 4) != 0;
         p += 12 + load_uint(d + p, 4, true)) {
        if (std::memcmp(d + p + 4, "IDAT", 4) != 0) continue;
        const uint64_t len = load_uint(d + p, 4, true), skip = std::min(header, len);
        header -= skip;
        z.next_in = const_cast<Bytef*>(d + p + 8 + skip);
        z.avail_in = uInt(len - skip);
        while (z.avail_in > 0 && rc != Z_STREAM_END) {
            z.next_out = scratch;
            z.avail_out = sizeof scratch;
            rc = inflate(&z, Z_NO_FLUSH);
            inflated += sizeof scratch - z.avail_out;
            if (rc != Z_OK && rc != Z_STREAM_END)
                throw Error(path + ": corrupt PNG: its image data is not a valid deflate stream (" +
                            (z.msg ? z.msg : "zlib error " + std::to_string(rc)) + ")");
            if (inflated > need)
                throw Error(path + ": corrupt PNG: its image data inflates to more than the " + std::to_string(need) +
                            " bytes its size needs");
        }
    }
}

// stb_image trusts a PNG's chunk lengths: it copies an empty first IDAT chunk into a buffer it
// has not allocated yet (memcpy to null: undefined behaviour, even for 0 bytes), and grows its
// IDAT buffer to a chunk's declared length before reading it (gigabytes from a file of a few
// bytes). Chunks are walked as stb walks them (8-byte signature, then length, type, data, CRC,
// up to IEND) and such files refused; then the header's size is checked against the limits and
// the image data (check_png_image_data). True when a PLTE chunk is short (png_palette_short).
inline bool check_png_chunks(const uint8_t* d, size_t n, const std::string& path) {
    if (!is_png(d, n)) return false;
    bool first_idat = true, short_palette = false, header = false;
    uint64_t w = 0, h = 0, colour_type = 0, depth = 0, interlaced = 0;
    for (uint64_t p = 8; p + 8 <= n;) {
        const uint64_t len = load_uint(d + p, 4, true);
        const bool idat = std::memcmp(d + p + 4, "IDAT", 4) == 0;
        if (idat && first_idat && len == 0) throw Error(path + ": corrupt PNG: its first IDAT chunk is empty");
        if (p + 8 + len > n)
            throw Error(path + ": corrupt PNG: a chunk declares " + std::to_string(len) + " bytes, more than the " +
                        std::to_string(n - p - 8) + " left in the file");
        if (p == 8 && std::memcmp(d + p + 4, "IHDR", 4) == 0 && len >= 13) {
            header = true;
            w = load_uint(d + p + 8, 4, true), h = load_uint(d + p + 12, 4, true);
            depth = d[p + 16], colour_type = d[p + 17], interlaced = d[p + 20];
        }
        if (std::memcmp(d + p + 4, "PLTE", 4) == 0) short_palette |= png_palette_short(len, colour_type, depth);
        if (std::memcmp(d + p + 4, "IEND", 4) == 0) break;
        first_idat = first_idat && !idat;
        p += 12 + len;
    }
    if (header) {
        check_image_size(int64_t(w), int64_t(h), path);
        if (const uint64_t need = png_raw_size(w, h, depth, colour_type, interlaced != 0))
            check_png_image_data(d, n, need, path);
    }
    return short_palette;
}

// The file with each short PLTE chunk (png_palette_short) padded to 256 black entries, so that
// a pixel whose index is past the palette the file wrote decodes as black instead of as stack
// garbage. `d` has passed check_png_chunks.
inline std::vector<uint8_t> png_with_full_palette(const uint8_t* d, size_t n) {
    std::vector<uint8_t> out(d, d + 8);
    uint64_t colour_type = 0, depth = 0, p = 8;
    for (; p + 8 <= n && std::memcmp(d + p + 4, "IEND", 4) != 0; p += 12 + load_uint(d + p, 4, true)) {
        const uint64_t len = load_uint(d + p, 4, true);
        if (std::memcmp(d + p + 4, "IHDR", 4) == 0 && len >= 13) depth = d[p + 16], colour_type = d[p + 17];
        if (std::memcmp(d + p + 4, "PLTE", 4) == 0 && png_palette_short(len, colour_type, depth)) {
            std::vector<uint8_t> entries(d + p + 8, d + p + 8 + len);
            entries.resize(3 * 256, 0);
            png_chunk(out, "PLTE", entries);
        } else {
            out.insert(out.end(), d + p, d + std::min<uint64_t>(p + 12 + len, n));
        }
    }
    if (p < n) out.insert(out.end(), d + p, d + n);  // IEND and anything after it, as stb sees it
    return out;
}

// PNG and JPEG, through stb_image once the checks above have passed.
inline DecodedImage decode_with_stb(const uint8_t* data, size_t size, const std::string& path) {
    if (size > size_t(INT_MAX)) throw Error(path + ": image file of " + std::to_string(size) + " bytes is too large");
    check_jpeg_markers(data, size, path);
    std::vector<uint8_t> padded;
    if (check_png_chunks(data, size, path)) {
        padded = png_with_full_palette(data, size);
        data = padded.data(), size = padded.size();
    }
    const int len = int(size);
    int w = 0, h = 0, c = 0;
    if (!stbi_info_from_memory(data, len, &w, &h, &c))
        throw Error(path + ": not a readable image (PNG, JPEG, BMP, TGA, PGM/PPM): " + stb_reason());
    check_image_size(w, h, path);
    const bool deep = stbi_is_16_bit_from_memory(data, len);
    std::unique_ptr<void, void (*)(void*)> p(deep ? static_cast<void*>(stbi_load_16_from_memory(data, len, &w, &h, &c, 0))
                                                  : static_cast<void*>(stbi_load_from_memory(data, len, &w, &h, &c, 0)),
                                             &stbi_image_free);
    if (!p) throw Error(path + ": cannot decode " + (deep ? "16-bit " : "") + "image: " + stb_reason());
    if (c < 1 || c > 4) throw Error(path + ": image with " + std::to_string(c) + " channels");
    DecodedImage img = new_image(w, h, c, deep ? 16 : 8, path);
    if (deep)
        std::copy_n(static_cast<const stbi_us*>(p.get()), img.samples.size(), img.samples.begin());
    else
        std::copy_n(static_cast<const stbi_uc*>(p.get()), img.samples.size(), img.samples.begin());
    return img;
}

// `path` only names the image in errors. The format is told by its signature (TGA, which has
// none, by a plausible header); each decoder checks the header's size against the limits and
// the bytes before allocating anything for the pixels.
inline DecodedImage decode_image(const uint8_t* data, size_t size, const std::string& path) {
    if (size == 0) throw Error(path + ": not a readable image: the file is empty");
    if (is_png(data, size) || is_jpeg(data, size)) return decode_with_stb(data, size, path);
    if (is_bmp(data, size)) return decode_bmp(data, size, path);
    if (is_pnm(data, size)) return decode_pnm(data, size, path);
    if (is_tga(data, size)) return decode_tga(data, size, path);
    throw Error(path + ": not a readable image (PNG, JPEG, BMP, TGA, PGM/PPM): unknown format");
}

inline DecodedImage decode_image(const std::string& path) {
    const std::vector<uint8_t> bytes = read_file(path, uint64_t(INT_MAX));
    return decode_image(bytes.data(), bytes.size(), path);
}

// PNG scanline filters (PNG spec 9.2): the predictor of byte x from a (left), b (up), c (up-left).
inline uint8_t png_paeth(int a, int b, int c) {
    const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
    return uint8_t(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

}  // namespace detail

// A PNG file: `samples` interleaved, `channels` 1-4 (grey, grey+alpha, RGB, RGBA), `bits` 8 or
// 16 (16-bit samples are stored big-endian, as PNG requires). Each row gets the filter with
// the smallest sum of absolute residuals (the heuristic of the PNG spec), then zlib deflate.
inline std::vector<uint8_t> encode_png(const uint16_t* samples, int64_t height, int64_t width, int channels, int bits) {
    if (channels < 1 || channels > 4 || (bits != 8 && bits != 16) || height < 1 || width < 1 ||
        height * width > kMaxImagePixels)
        throw Error("encode_png: unsupported image " + std::to_string(height) + "x" + std::to_string(width) + ", " +
                    std::to_string(channels) + " channels of " + std::to_string(bits) + " bits");
    const int bpp = channels * bits / 8;
    const size_t row = size_t(width) * size_t(bpp);
    std::vector<uint8_t> raw(row * size_t(height)), filtered((row + 1) * size_t(height));
    for (size_t i = 0, n = size_t(height * width * channels); i < n; ++i) {
        if (bits == 8) {
            raw[i] = uint8_t(samples[i]);
        } else {
            raw[2 * i] = uint8_t(samples[i] >> 8);
            raw[2 * i + 1] = uint8_t(samples[i]);
        }
    }
    std::vector<uint8_t> trial(row);
    for (size_t y = 0; y < size_t(height); ++y) {
        const uint8_t* cur = &raw[y * row];
        const uint8_t* up = y ? &raw[(y - 1) * row] : nullptr;
        uint8_t* dst = &filtered[y * (row + 1)];
        uint64_t best_cost = UINT64_MAX;
        for (int f = 0; f < 5; ++f) {
            uint64_t cost = 0;
            for (size_t x = 0; x < row; ++x) {
                const int a = x >= size_t(bpp) ? cur[x - size_t(bpp)] : 0, b = up ? up[x] : 0,
                          c = up && x >= size_t(bpp) ? up[x - size_t(bpp)] : 0;
                const int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : detail::png_paeth(a, b, c);
                trial[x] = uint8_t(cur[x] - pred);
                cost += uint64_t(std::abs(int(int8_t(trial[x]))));
            }
            if (cost < best_cost) {
                best_cost = cost;
                dst[0] = uint8_t(f);
                std::copy(trial.begin(), trial.end(), dst + 1);
            }
        }
    }
    uLongf zlen = compressBound(uLong(filtered.size()));
    std::vector<uint8_t> z(zlen);
    if (compress2(z.data(), &zlen, filtered.data(), uLong(filtered.size()), 9) != Z_OK)
        throw Error("encode_png: compression failed");
    z.resize(zlen);
    static const int kColourType[5] = {0, 0, 4, 2, 6};  // grey, grey+alpha, RGB, RGBA
    std::vector<uint8_t> ihdr;
    for (uint64_t v : {uint64_t(width), uint64_t(height)})
        for (int k = 3; k >= 0; --k) ihdr.push_back(uint8_t(v >> (8 * k)));
    ihdr.insert(ihdr.end(), {uint8_t(bits), uint8_t(kColourType[channels]), 0, 0, 0});
    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    detail::png_chunk(out, "IHDR", ihdr);
    detail::png_chunk(out, "IDAT", z);
    detail::png_chunk(out, "IEND", {});
    return out;
}

// Writes a PNG atomically (a temporary file renamed over `path`).
inline void save_png(const std::string& path, const std::vector<uint16_t>& samples, int64_t height, int64_t width,
                     int channels, int bits) {
    if (int64_t(samples.size()) != height * width * channels)
        throw Error(path + ": " + std::to_string(samples.size()) + " samples for a " + std::to_string(height) + "x" +
                    std::to_string(width) + "x" + std::to_string(channels) + " image");
    write_file_atomic(path, encode_png(samples.data(), height, width, channels, bits));
}

// A grey image in [0,1] (values outside are clamped) as an 8- or 16-bit PNG.
inline void save_image_png(const std::string& path, const Image& img, int bits = 8) {
    const double top = bits == 16 ? 65535.0 : 255.0;
    std::vector<uint16_t> s(img.pixels.size());
    for (size_t i = 0; i < s.size(); ++i) {
        const double v = std::isfinite(img.pixels[i]) ? std::clamp(double(img.pixels[i]), 0.0, 1.0) : 0.0;
        s[i] = uint16_t(std::lround(v * top));
    }
    save_png(path, s, img.height, img.width, 1, bits);
}

// A label map of integer values in [0, 65535]: 8-bit PNG when every value fits, else 16-bit.
inline void save_label_png(const std::string& path, const Image& labels) {
    std::vector<uint16_t> s(labels.pixels.size());
    int bits = 8;
    for (size_t i = 0; i < s.size(); ++i) {
        const float v = labels.pixels[i];
        if (!(v >= 0.0f && v <= 65535.0f) || v != std::floor(v))
            throw Error(path + ": label value " + std::to_string(v) + " is not an integer in [0, 65535]");
        s[i] = uint16_t(v);
        if (v > 255.0f) bits = 16;
    }
    save_png(path, s, labels.height, labels.width, 1, bits);
}

// Grey in [0,1]: samples / (2^bits - 1); colour by ITU-R BT.601 luma 0.299 R + 0.587 G +
// 0.114 B, with the R, G, B planes kept in `colour` on the same scale. Alpha is ignored
// (medical images carry none; a transparent pixel keeps its value).
inline Image load_image(const std::string& path) {
    const detail::DecodedImage d = detail::decode_image(path);
    const double scale = 1.0 / (d.bits == 16 ? 65535.0 : 255.0);
    const size_t n = size_t(d.height * d.width);
    Image img{d.height, d.width, detail::allocate<float>(uint64_t(n), path), {}};
    if (d.channels >= 3) img.colour = detail::allocate<float>(uint64_t(3 * n), path);
    for (size_t i = 0; i < n; ++i) {
        const uint16_t* p = &d.samples[i * size_t(d.channels)];
        const double v = d.channels < 3 ? double(p[0]) : 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        img.pixels[i] = float(v * scale);
        if (d.channels >= 3)
            for (size_t c = 0; c < 3; ++c) img.colour[c * n + i] = float(p[c] * scale);
    }
    return img;
}

// Raw integer label values (0..255 or 0..65535). Label maps must be lossless and grey: an RGB(A)
// file is accepted only when R == G == B everywhere (grey saved as colour); JPEG is refused.
inline Image load_label_map(const std::string& path) {
    std::string ext = std::filesystem::path(path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (ext == ".jpg" || ext == ".jpeg")
        throw Error(path + ": label maps must be stored losslessly (PNG, BMP, TGA, PGM), not as JPEG");
    const detail::DecodedImage d = detail::decode_image(path);
    Image img{d.height, d.width, detail::allocate<float>(uint64_t(d.height * d.width), path)};
    for (size_t i = 0; i < img.pixels.size(); ++i) {
        const uint16_t* p = &d.samples[i * size_t(d.channels)];
        if (d.channels >= 3 && (p[1] != p[0] || p[2] != p[0]))
            throw Error(path + ": label map has a colour pixel at row " + std::to_string(int64_t(i) / d.width) +
                        ", column " + std::to_string(int64_t(i) % d.width) +
                        "; label maps must be grey images of integer label values");
        img.pixels[i] = float(p[0]);
    }
    return img;
}

namespace detail {

// One output sample of a 1-D resampling: sum_k weights[k] * in[first + k].
struct ResizeTap {
    int64_t first = 0;
    std::vector<double> weights;
};

// Triangle-filter taps for resampling `in` samples to `out`, pixel centres aligned (source
// coordinate of output i is (i + 0.5) * in / out - 0.5). When enlarging this is exactly
// bilinear interpolation with edge clamping (PyTorch's align_corners=False); when shrinking
// the triangle widens by the factor so every input pixel contributes (antialiasing, as in
// PIL's BILINEAR and PyTorch's antialias=True), instead of sampling a few and aliasing.
inline std::vector<ResizeTap> triangle_taps(int64_t in, int64_t out) {
    const double scale = double(in) / double(out), support = std::max(scale, 1.0);
    std::vector<ResizeTap> taps(static_cast<size_t>(out));
    for (int64_t i = 0; i < out; ++i) {
        const double centre = (double(i) + 0.5) * scale;  // in input pixel units, edges at integers
        const int64_t lo = std::max<int64_t>(0, int64_t(std::floor(centre - support)));
        const int64_t hi = std::min<int64_t>(in, int64_t(std::ceil(centre + support)));
        ResizeTap& t = taps[size_t(i)];
        t.first = lo;
        double sum = 0;
        for (int64_t j = lo; j < hi; ++j) {
            const double w = std::max(0.0, 1.0 - std::fabs((double(j) + 0.5 - centre) / support));
            t.weights.push_back(w);
            sum += w;
        }
        for (double& w : t.weights) w /= sum;  // renormalise where the edge cut taps off
    }
    return taps;
}

inline void check_resize(const Image& img, int64_t h, int64_t w) {
    if (img.height < 1 || img.width < 1 || int64_t(img.pixels.size()) != img.height * img.width)
        throw Error("resize: image of " + std::to_string(img.height) + "x" + std::to_string(img.width) + " with " +
                    std::to_string(img.pixels.size()) + " pixels");
    if (h < 1 || w < 1 || h * w > kMaxImagePixels)
        throw Error("resize: target size " + std::to_string(h) + "x" + std::to_string(w) + " out of range");
}

}  // namespace detail

// Separable: rows first (to width w), then columns (to height h).
inline Image resize_bilinear(const Image& img, int64_t h, int64_t w) {
    detail::check_resize(img, h, w);
    const std::vector<detail::ResizeTap> tx = detail::triangle_taps(img.width, w), ty = detail::triangle_taps(img.height, h);
    std::vector<double> rows(size_t(img.height * w));
    for (int64_t y = 0; y < img.height; ++y)
        for (int64_t x = 0; x < w; ++x) {
            const detail::ResizeTap& t = tx[size_t(x)];
            const float* src = &img.pixels[size_t(y * img.width + t.first)];
            double acc = 0;
            for (size_t k = 0; k < t.weights.size(); ++k) acc += t.weights[k] * src[k];
            rows[size_t(y * w + x)] = acc;
        }
    Image out{h, w, std::vector<float>(size_t(h * w))};
    for (int64_t y = 0; y < h; ++y) {
        const detail::ResizeTap& t = ty[size_t(y)];
        for (int64_t x = 0; x < w; ++x) {
            double acc = 0;
            for (size_t k = 0; k < t.weights.size(); ++k) acc += t.weights[k] * rows[size_t((t.first + int64_t(k)) * w + x)];
            out.pixels[size_t(y * w + x)] = float(acc);
        }
    }
    return out;
}

// Output pixel i takes input pixel floor((i + 0.5) * in / out): the one under its centre
// (PyTorch's "nearest-exact"), computed in integers so no rounding can pick a neighbour.
inline Image resize_nearest(const Image& img, int64_t h, int64_t w) {
    detail::check_resize(img, h, w);
    Image out{h, w, std::vector<float>(size_t(h * w))};
    for (int64_t y = 0; y < h; ++y) {
        const int64_t sy = std::min(img.height - 1, (2 * y + 1) * img.height / (2 * h));
        for (int64_t x = 0; x < w; ++x) {
            const int64_t sx = std::min(img.width - 1, (2 * x + 1) * img.width / (2 * w));
            out.pixels[size_t(y * w + x)] = img.pixels[size_t(sy * img.width + sx)];
        }
    }
    return out;
}

// The h x w window of img whose top-left pixel is (y, x); it must lie inside img.
inline Image crop_image(const Image& img, int64_t y, int64_t x, int64_t h, int64_t w) {
    if (h < 1 || w < 1 || y < 0 || x < 0 || y + h > img.height || x + w > img.width)
        throw Error("crop: window of " + std::to_string(h) + "x" + std::to_string(w) + " at row " + std::to_string(y) +
                    ", column " + std::to_string(x) + " is not inside the image of " + std::to_string(img.height) + "x" +
                    std::to_string(img.width));
    Image out{h, w, {}, {}};
    out.pixels.reserve(size_t(h * w));
    for (int64_t r = y; r < y + h; ++r)
        out.pixels.insert(out.pixels.end(), img.pixels.begin() + (r * img.width + x), img.pixels.begin() + (r * img.width + x + w));
    if (int64_t(img.colour.size()) == 3 * img.height * img.width)
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t r = y; r < y + h; ++r) {
                const auto row = img.colour.begin() + ((c * img.height + r) * img.width + x);
                out.colour.insert(out.colour.end(), row, row + w);
            }
    return out;
}

// (v - min) / (max - min) over the finite values; a constant image becomes zeros (no division
// by zero) and non-finite values become 0.
inline void normalize_min_max(float* v, size_t n) {
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; ++i)
        if (std::isfinite(v[i])) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
    const double range = double(hi) - double(lo);
    for (size_t i = 0; i < n; ++i)
        v[i] = std::isfinite(v[i]) && range > 0 ? float((double(v[i]) - lo) / range) : 0.0f;
}
inline void normalize_min_max(Image& img) { normalize_min_max(img.pixels.data(), img.pixels.size()); }

// The p-th percentile (0..100) of the finite values, linearly interpolated between order
// statistics (numpy's default). NaN when there are none.
inline double percentile(const float* v, size_t n, double p) {
    std::vector<float> s;
    s.reserve(n);
    for (size_t i = 0; i < n; ++i)
        if (std::isfinite(v[i])) s.push_back(v[i]);
    if (s.empty()) return NAN;
    const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(s.size() - 1);
    const size_t k = size_t(rank);
    std::nth_element(s.begin(), s.begin() + ptrdiff_t(k), s.end());
    const double a = s[k];
    if (k + 1 >= s.size()) return a;
    const double b = *std::min_element(s.begin() + ptrdiff_t(k) + 1, s.end());
    return a + (rank - double(k)) * (b - a);
}

// Clamps to [percentile(low), percentile(high)]: CT-like data whose extreme values (air,
// metal) would otherwise squeeze the tissue into a sliver of [0,1] after min-max.
inline void clip_percentiles(float* v, size_t n, double low, double high) {
    if (!(low >= 0 && low < high && high <= 100))
        throw Error("percentile clipping needs 0 <= low < high <= 100, got " + std::to_string(low) + "," +
                    std::to_string(high));
    const double lo = percentile(v, n, low), hi = percentile(v, n, high);
    if (std::isnan(lo)) return;
    for (size_t i = 0; i < n; ++i)
        if (std::isfinite(v[i])) v[i] = float(std::clamp(double(v[i]), lo, hi));
}
inline void clip_percentiles(Image& img, double low, double high) {
    clip_percentiles(img.pixels.data(), img.pixels.size(), low, high);
}

// RGB colour of label value v (> 0): a fixed palette of distinct hues, so a value keeps its
// colour across images.
inline std::array<uint8_t, 3> label_colour(int64_t v) {
    static const uint8_t kPalette[10][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                            {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                            {210, 245, 60}, {250, 190, 212}};
    const uint8_t* c = kPalette[size_t(std::max<int64_t>(v, 1) - 1) % 10];
    return {c[0], c[1], c[2]};
}

// The grey image (in [0,1]) as RGB8 with every labelled pixel tinted by its label's colour
// (opacity `alpha`) and each region's boundary (a labelled pixel with a 4-neighbour of another
// value) drawn in full colour, so both the region and the image under it stay visible.
inline std::vector<uint8_t> overlay_labels(const Image& img, const Image& labels, double alpha = 0.4) {
    if (img.height != labels.height || img.width != labels.width || img.pixels.size() != labels.pixels.size())
        throw Error("overlay: image " + std::to_string(img.height) + "x" + std::to_string(img.width) +
                    " and label map " + std::to_string(labels.height) + "x" + std::to_string(labels.width) + " differ");
    const int64_t H = img.height, W = img.width;
    std::vector<uint8_t> rgb(size_t(H * W * 3));
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            const size_t i = size_t(y * W + x);
            const double g = std::isfinite(img.pixels[i]) ? std::clamp(double(img.pixels[i]), 0.0, 1.0) * 255.0 : 0.0;
            const float v = labels.pixels[i];
            double a = 0;
            std::array<uint8_t, 3> c{0, 0, 0};
            if (v > 0) {
                c = label_colour(int64_t(v));
                bool edge = false;
                for (const auto& d : {std::array<int64_t, 2>{-1, 0}, {1, 0}, {0, -1}, {0, 1}}) {
                    const int64_t yy = y + d[0], xx = x + d[1];
                    edge |= yy >= 0 && yy < H && xx >= 0 && xx < W && labels.pixels[size_t(yy * W + xx)] != v;
                }
                a = edge ? 1.0 : alpha;
            }
            for (int k = 0; k < 3; ++k) rgb[i * 3 + size_t(k)] = uint8_t(std::lround((1 - a) * g + a * c[size_t(k)]));
        }
    return rgb;
}

// --- file naming and labelled folders -------------------------------------------------------

// Lower-case extension, with ".nii.gz" kept whole.
inline std::string image_extension(const std::string& path) {
    std::string name = std::filesystem::path(path).filename().string();
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".nii.gz") == 0) return ".nii.gz";
    const size_t dot = name.rfind('.');
    return dot == std::string::npos || dot == 0 ? "" : name.substr(dot);
}

// File name without directory and extension ("a/case_1.nii.gz" -> "case_1").
inline std::string image_stem(const std::string& path) {
    const std::string name = std::filesystem::path(path).filename().string();
    return name.substr(0, name.size() - image_extension(path).size());
}

inline bool is_volume_path(const std::string& path) {
    const std::string e = image_extension(path);
    return e == ".nii" || e == ".nii.gz";
}

inline bool is_image_path(const std::string& path) {
    static const char* kExt[] = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".pgm", ".ppm", ".pnm", ".nii", ".nii.gz"};
    const std::string e = image_extension(path);
    for (const char* k : kExt)
        if (e == k) return true;
    return false;
}

// The image files (2-D formats and NIfTI volumes) directly inside `dir`, sorted by name.
// Hidden files are skipped; any other file is an error naming it, so a typo'd format is not
// silently ignored.
inline std::vector<std::string> list_image_files(const std::string& dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) throw Error(dir + ": not a directory");
    std::vector<std::string> files;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.empty() || name[0] == '.' || it->is_directory(ec)) continue;
        if (!is_image_path(name))
            throw Error(it->path().string() +
                        ": not a supported image (PNG, JPEG, BMP, TGA, PGM/PPM, NIfTI .nii/.nii.gz)");
        files.push_back(it->path().string());
    }
    if (ec) throw Error(dir + ": cannot list: " + ec.message());
    std::sort(files.begin(), files.end());
    return files;
}

struct LabelledPair {
    std::string name, image_path, label_path;
};

// The nnU-Net convention: DIR/images/NAME.ext with its label map DIR/labels/NAME.ext, matched by
// stem (an image stem ending in the nnU-Net channel suffix "_0000" also matches NAME). Every
// image needs exactly one label map and every label map an image; errors name the file.
inline std::vector<LabelledPair> list_labelled_folder(const std::string& dir) {
    const std::string images_dir = (std::filesystem::path(dir) / "images").string();
    const std::string labels_dir = (std::filesystem::path(dir) / "labels").string();
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) throw Error(dir + ": support folder not found");
    for (const std::string& d : {images_dir, labels_dir})
        if (!std::filesystem::is_directory(d, ec))
            throw Error(dir + ": expected the subfolders images/ and labels/ (images/NAME.png with labels/NAME.png); " +
                        d + " is missing");
    std::map<std::string, std::string> labels;
    for (const std::string& path : list_image_files(labels_dir)) {
        const std::string e = image_extension(path);
        if (e == ".jpg" || e == ".jpeg") throw Error(path + ": label maps must be lossless (PNG, BMP, TGA, PGM, NIfTI), not JPEG");
        auto ins = labels.emplace(image_stem(path), path);
        if (!ins.second) throw Error(path + ": label map name clashes with " + ins.first->second);
    }
    std::vector<LabelledPair> pairs;
    std::map<std::string, std::string> used;  // label path -> image path
    for (const std::string& path : list_image_files(images_dir)) {
        std::string stem = image_stem(path);
        auto it = labels.find(stem);
        if (it == labels.end() && stem.size() > 5 && stem.compare(stem.size() - 5, 5, "_0000") == 0)
            it = labels.find(stem.substr(0, stem.size() - 5));
        if (it == labels.end())
            throw Error(path + ": support image has no label map (expected " +
                        (std::filesystem::path(labels_dir) / (stem + ".png")).string() + ")");
        auto ins = used.emplace(it->second, path);
        if (!ins.second) throw Error(path + " and " + ins.first->second + " both match the label map " + it->second);
        pairs.push_back({it->first, path, it->second});
    }
    for (const auto& kv : labels)
        if (!used.count(kv.second)) throw Error(kv.second + ": label map has no image in " + images_dir);
    if (pairs.empty()) throw Error(dir + ": no support images in " + images_dir);
    return pairs;
}

}  // namespace universeg
