// Image and volume I/O: every 2-D format and bit depth (fixtures written here by
// stb_image_write, or committed ones made by tests/data/images/make_fixtures.py: PNGs assembled
// byte by byte, JPEGs by PIL, NIfTI files packed field by field),
// grey conversion and resizing against hand-computed values and PIL, PNG writing read back by
// stb, labelled folders, overlays, NIfTI-1 reading/writing and slicing, corrupt files.
#include <universeg/io/weights.hpp>
#include <universeg/io/image.hpp>
#include <universeg/io/nifti.hpp>

#include <stb/stb_image_write.h>

#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>

using namespace universeg;
using namespace test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kImages = std::string(UNIVERSEG_TEST_DATA) + "/images/";

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

Image npy_image(const std::string& path) {
    const Tensor t = load_npy(path);
    return {t.shape[0], t.shape[1], t.data};
}

// Interleaved 8-bit samples with a pattern that differs per channel.
std::vector<uint8_t> pattern(int h, int w, int c) {
    std::vector<uint8_t> p(size_t(h * w * c));
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k) p[size_t((y * w + x) * c + k)] = uint8_t((x * 7 + y * 3 + k * 50) % 256);
    return p;
}

double luma(double r, double g, double b) { return 0.299 * r + 0.587 * g + 0.114 * b; }

}  // namespace

TEST_CASE("8-bit PNG, BMP and TGA in every channel layout, odd sizes", "[image]") {
    TempDir dir("formats");
    const int H = 217, W = 300;
    for (int c = 1; c <= 4; ++c) {
        const std::vector<uint8_t> p = pattern(H, W, c);
        const std::string base = dir / ("img" + std::to_string(c));
        REQUIRE(stbi_write_png((base + ".png").c_str(), W, H, c, p.data(), W * c));
        REQUIRE(stbi_write_bmp((base + ".bmp").c_str(), W, H, c, p.data()));
        REQUIRE(stbi_write_tga((base + ".tga").c_str(), W, H, c, p.data()));
        for (const char* ext : {".png", ".bmp", ".tga"}) {
            INFO("channels " << c << ", " << ext);
            const Image img = load_image(base + ext);
            REQUIRE(img.height == H);
            REQUIRE(img.width == W);
            for (int y : {0, 1, 100, H - 1})
                for (int x : {0, 13, 299}) {
                    const uint8_t* s = &p[size_t((y * W + x) * c)];
                    // BMP has no grey(+alpha) layout: stb_image_write expands grey to RGB, so
                    // luma(g, g, g) = g either way.
                    const double expect = c < 3 ? s[0] / 255.0 : luma(s[0], s[1], s[2]) / 255.0;
                    REQUIRE(img.pixels[size_t(y * W + x)] == Approx(expect).margin(1e-6));
                }
        }
    }
}

namespace {

// Little-endian fields, as BMP and TGA store them.
std::vector<uint8_t> le(std::initializer_list<std::pair<uint64_t, int>> fields) {
    std::vector<uint8_t> out;
    for (const auto& f : fields) detail::append_uint(out, f.first, f.second);
    return out;
}

std::vector<uint8_t> cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// A BMP with a 40-byte info header; `extra` (masks, colour table) sits between it and `rows`.
std::vector<uint8_t> bmp(int32_t w, int32_t h, int bpp, uint32_t compression, const std::vector<uint8_t>& extra,
                         const std::vector<uint8_t>& rows) {
    const uint64_t offset = 14 + 40 + extra.size();
    return cat(cat(le({{'B' | 'M' << 8, 2}, {offset + rows.size(), 4}, {0, 4}, {offset, 4}, {40, 4}, {uint32_t(w), 4},
                       {uint32_t(h), 4}, {1, 2}, {uint64_t(bpp), 2}, {compression, 4}, {rows.size(), 4}, {0, 16}}),
                   extra),
               rows);
}

std::vector<uint8_t> tga(int type, int w, int h, int depth, int descriptor, const std::vector<uint8_t>& body,
                         int map_first = 0, int map_length = 0, int map_bits = 0) {
    return cat(le({{0, 1}, {map_length ? 1u : 0u, 1}, {uint64_t(type), 1}, {uint64_t(map_first), 2},
                   {uint64_t(map_length), 2}, {uint64_t(map_bits), 1}, {0, 4}, {uint64_t(w), 2}, {uint64_t(h), 2},
                   {uint64_t(depth), 1}, {uint64_t(descriptor), 1}}),
               body);
}

std::vector<uint8_t> text(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

detail::DecodedImage decode(const std::vector<uint8_t>& b) { return detail::decode_image(b.data(), b.size(), "t.img"); }

std::string decode_error(const std::vector<uint8_t>& b) { return error_of([&] { decode(b); }); }

}  // namespace

// Expected samples worked out by hand from the specifications (Netpbm pgm(5), Microsoft's
// BITMAPINFOHEADER, Truevision TGA 2.0), for the layouts stb_image_write does not produce.
TEST_CASE("the project's own PGM/PPM and BMP and TGA decoders: layouts stb_image_write does not write", "[image]") {
    using V = std::vector<uint16_t>;
    SECTION("PGM/PPM: 16-bit big-endian, maximum below 255 kept raw, comments") {
        // stb_image 2.27 read 16-bit samples in the host's byte order: 0x3412 here.
        detail::DecodedImage d = decode(cat(text("P5\n# a comment\n2 1\n65535\n"), {0x12, 0x34, 0xAB, 0xCD}));
        CHECK((d.bits == 16 && d.channels == 1 && d.samples == V{0x1234, 0xABCD}));
        d = decode(cat(text("P5 2\t1 15 "), {3, 15}));
        CHECK((d.bits == 8 && d.samples == V{3, 15}));
        d = decode(cat(text("P6\n1 1\n255\n"), {10, 20, 30}));
        CHECK((d.channels == 3 && d.samples == V{10, 20, 30}));
        CHECK_THAT(decode_error(text("P2\n1 1\n255\n7\n")), Contains("t.img") && Contains("P2 is not supported"));
    }
    SECTION("BMP: 1- and 4-bit colour tables, 16-bit 5-5-5 and 5-6-5, 32-bit, core header") {
        const std::vector<uint8_t> black_white = {0, 0, 0, 0, 255, 255, 255, 0};
        detail::DecodedImage d = decode(bmp(10, 1, 1, 0, black_white, {0xAA, 0x80, 0, 0}));  // 1010101010
        REQUIRE((d.width == 10 && d.channels == 3));
        for (int x = 0; x < 10; ++x) CHECK(d.samples[size_t(3 * x)] == (x % 2 ? 0 : 255));
        // 4-bit: entries stored B, G, R, 0; pixels 1, 2, 0 in the high then low nibbles.
        d = decode(bmp(3, 1, 4, 0, {0, 0, 0, 0, 10, 20, 30, 0, 1, 2, 3, 0}, {0x12, 0x00, 0, 0}));
        CHECK(d.samples == V{30, 20, 10, 3, 2, 1, 0, 0, 0});
        // 16-bit without masks: 5-5-5; 16 of 31 becomes round(16 * 255 / 31) = 132.
        d = decode(bmp(3, 1, 16, 0, {}, le({{0x7C00, 2}, {0x03E0, 2}, {0x0010, 2}, {0, 2}})));
        CHECK(d.samples == V{255, 0, 0, 0, 255, 0, 0, 0, 132});
        // BITFIELDS 5-6-5 (masks after the 40-byte header); 1 of 31 is round(255 / 31) = 8.
        d = decode(bmp(3, 1, 16, 3, le({{0xF800, 4}, {0x07E0, 4}, {0x001F, 4}}),
                       le({{0xF800, 2}, {0x07E0, 2}, {0x0001, 2}, {0, 2}})));
        CHECK(d.samples == V{255, 0, 0, 0, 255, 0, 0, 0, 8});
        // 32-bit without masks: B, G, R and an unused byte; two rows, bottom-up.
        d = decode(bmp(1, 2, 32, 0, {}, {1, 2, 3, 4, 5, 6, 7, 8}));
        CHECK(d.samples == V{7, 6, 5, 3, 2, 1});
        // OS/2 core header: 16-bit sizes, 24-bit pixels, rows padded to 4 bytes.
        const std::vector<uint8_t> core = cat(le({{'B' | 'M' << 8, 2}, {34, 4}, {0, 4}, {26, 4}, {12, 4}, {1, 2}, {2, 2},
                                                  {1, 2}, {24, 2}}),
                                              {1, 2, 3, 0, 4, 5, 6, 0});
        CHECK(decode(core).samples == V{6, 5, 4, 3, 2, 1});
        CHECK_THAT(decode_error(bmp(2, 1, 8, 1, {0, 0, 0, 0}, {0, 2, 0, 0})), Contains("t.img") && Contains("run-length"));
        CHECK_THAT(decode_error(bmp(2, 1, 16, 3, le({{0xF0F0, 4}, {0x0F00, 4}, {0x000F, 4}}), {0, 0, 0, 0})),
                   Contains("one run of bits"));
    }
    SECTION("TGA: colour-mapped, 16-bit, grey+alpha, orientation, run-length packets across rows") {
        // Entries 2 and 3 of a colour map of B, G, R; the top-down and right-to-left bits set,
        // so file order is top row first, each row from its right end.
        detail::DecodedImage d = decode(tga(1, 2, 1, 8, 0x30, {10, 20, 30, 40, 50, 60, 2, 3}, 2, 2, 24));
        CHECK(d.samples == V{60, 50, 40, 30, 20, 10});
        CHECK_THAT(decode_error(tga(1, 2, 1, 8, 0, {10, 20, 30, 40, 50, 60, 2, 4}, 2, 2, 24)),
                   Contains("t.img") && Contains("pixel value 4 is outside its colour map"));
        d = decode(tga(2, 2, 1, 16, 0, le({{0x7C00, 2}, {0x001F, 2}})));
        CHECK((d.channels == 3 && d.samples == V{255, 0, 0, 0, 0, 255}));
        d = decode(tga(3, 1, 1, 16, 0, {77, 200}));
        CHECK((d.channels == 2 && d.samples == V{77, 200}));
        // 3x2 grey, bottom-up: a run of 4 x 9 (the bottom row and one pixel above), then a raw
        // packet of 1 and 2.
        d = decode(tga(11, 3, 2, 8, 0, {0x83, 9, 0x01, 1, 2}));
        CHECK(d.samples == V{9, 1, 2, 9, 9, 9});
    }
}

TEST_CASE("BT.601 luma of hand-picked colours", "[image]") {
    TempDir dir("luma");
    const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30};
    REQUIRE(stbi_write_png((dir / "c.png").c_str(), 4, 1, 3, rgb, 12));
    const Image img = load_image(dir / "c.png");
    REQUIRE(img.pixels[0] == Approx(0.299).margin(1e-6));
    REQUIRE(img.pixels[1] == Approx(0.587).margin(1e-6));
    REQUIRE(img.pixels[2] == Approx(0.114).margin(1e-6));
    // (0.299 * 10 + 0.587 * 200 + 0.114 * 30) / 255 = 123.81 / 255
    REQUIRE(img.pixels[3] == Approx(123.81 / 255).margin(1e-6));
}

TEST_CASE("16-bit PNGs written independently: grey, RGB, RGBA, grey+alpha", "[image]") {
    Image g = load_image(kImages + "grey16.png");
    REQUIRE(g.height == 2);
    REQUIRE(g.width == 3);
    const double v[] = {0, 1, 256, 32768, 65534, 65535};
    for (int i = 0; i < 6; ++i) REQUIRE(g.pixels[size_t(i)] == Approx(v[i] / 65535).margin(1e-7));

    Image c = load_image(kImages + "rgb16.png");
    REQUIRE(c.width == 2);
    REQUIRE(c.pixels[0] == Approx(0.299).margin(1e-7));
    REQUIRE(c.pixels[1] == Approx(0.299 + 0.587 * 32768 / 65535).margin(1e-7));

    Image a = load_image(kImages + "rgba16.png");  // (0, 65535, 0, alpha 1000): alpha ignored
    REQUIRE(a.pixels[0] == Approx(0.587).margin(1e-7));

    Image ga = load_image(kImages + "grey_alpha8.png");  // (10, 255), (200, 0)
    REQUIRE(ga.pixels[0] == Approx(10 / 255.0).margin(1e-7));
    REQUIRE(ga.pixels[1] == Approx(200 / 255.0).margin(1e-7));
}

TEST_CASE("JPEG, grey and colour, within the codec's error", "[image]") {
    const Image g = load_image(kImages + "grey100.jpg"), c = load_image(kImages + "colour.jpg");
    REQUIRE((g.width == 16 && g.height == 16 && c.width == 16));
    for (float p : g.pixels) REQUIRE(p == Approx(100 / 255.0).margin(2.0 / 255));
    for (float p : c.pixels) REQUIRE(p == Approx(luma(200, 100, 50) / 255).margin(3.0 / 255));
    const Image r = load_image(kImages + "pattern_rgb.jpg");
    REQUIRE((r.height == 48 && r.width == 64));
    // The same pattern, progressive (make_fixtures.py): the same quantised coefficients, so the
    // same pixels; its first scan names an AC table defined only later, which is legal.
    const Image p = load_image(kImages + "progressive_rgb.jpg");
    REQUIRE((p.height == 48 && p.width == 64));
    for (size_t i = 0; i < r.pixels.size(); ++i) REQUIRE(p.pixels[i] == Approx(r.pixels[i]).margin(1.0 / 255));
}

TEST_CASE("label maps keep raw integer values", "[image]") {
    TempDir dir("labels");
    const uint8_t lab[] = {0, 1, 2, 255, 7, 0};
    REQUIRE(stbi_write_png((dir / "l.png").c_str(), 3, 2, 1, lab, 3));
    Image l = load_label_map(dir / "l.png");
    for (int i = 0; i < 6; ++i) REQUIRE(l.pixels[size_t(i)] == float(lab[i]));

    Image l16 = load_label_map(kImages + "labels16.png");
    REQUIRE(l16.pixels == std::vector<float>{0, 300, 1000, 65535});

    const uint8_t grey_rgb[] = {3, 3, 3, 0, 0, 0};  // grey stored as RGB: accepted
    REQUIRE(stbi_write_png((dir / "rgb.png").c_str(), 2, 1, 3, grey_rgb, 6));
    REQUIRE(load_label_map(dir / "rgb.png").pixels == std::vector<float>{3, 0});

    const uint8_t colour[] = {3, 3, 3, 0, 9, 0};
    REQUIRE(stbi_write_png((dir / "colour.png").c_str(), 2, 1, 3, colour, 6));
    const std::string e = error_of([&] { load_label_map(dir / "colour.png"); });
    REQUIRE(e.find("colour.png") != std::string::npos);
    REQUIRE(e.find("column 1") != std::string::npos);

    REQUIRE(error_of([&] { load_label_map(kImages + "grey100.jpg"); }).find("JPEG") != std::string::npos);
}

TEST_CASE("corrupt, empty and missing image files name the file", "[image]") {
    TempDir dir("corrupt");
    write_bytes(dir / "empty.png", {});
    write_bytes(dir / "garbage.png", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
    const std::vector<uint8_t> p = pattern(40, 50, 3);
    std::vector<uint8_t> good = encode_png(std::vector<uint16_t>(p.begin(), p.end()).data(), 40, 50, 3, 8);
    write_bytes(dir / "truncated.png", std::vector<uint8_t>(good.begin(), good.begin() + ptrdiff_t(good.size() / 2)));
    std::vector<uint8_t> bad_header = good;
    bad_header[16] = 0xFF;  // width = 0xFF000032: far beyond any limit
    write_bytes(dir / "huge.png", bad_header);
    for (const char* name : {"empty.png", "garbage.png", "truncated.png", "huge.png", "missing.png"}) {
        INFO(name);
        const std::string e = error_of([&] { load_image(dir / name); });
        REQUIRE(e.find(name) != std::string::npos);
        REQUIRE(error_of([&] { load_label_map(dir / name); }).find(name) != std::string::npos);
    }
}

TEST_CASE("bilinear resize: hand-computed 1-D cases", "[image]") {
    // Enlarging 2 -> 4: centres at 0.25, 0.75, 1.25, 1.75 in input pixels; edges clamp.
    REQUIRE(resize_bilinear({1, 2, {0, 1}}, 1, 4).pixels == std::vector<float>{0, 0.25f, 0.75f, 1});
    // Shrinking 4 -> 2: the triangle widens to radius 2 around centres 1 and 3, so output 0
    // weighs inputs 0, 1, 2 by 0.75, 0.75, 0.25 (normalised by 1.75) and output 1 weighs
    // inputs 1, 2, 3 by 0.25, 0.75, 0.75.
    const Image d = resize_bilinear({1, 4, {1, 2, 3, 4}}, 1, 2);
    REQUIRE(d.pixels[0] == Approx((0.75 * 1 + 0.75 * 2 + 0.25 * 3) / 1.75));
    REQUIRE(d.pixels[1] == Approx((0.25 * 2 + 0.75 * 3 + 0.75 * 4) / 1.75));
    // Vertical: 2 rows -> 3 rows, centres at 1/3, 1, 5/3: weights (1), (0.5, 0.5), (1).
    const Image v = resize_bilinear({2, 1, {2, 8}}, 3, 1);
    REQUIRE(v.pixels[0] == Approx(2));
    REQUIRE(v.pixels[1] == Approx(5));
    REQUIRE(v.pixels[2] == Approx(8));
    // Same size is the identity; a constant image stays constant at any size.
    const Image src = npy_image(kImages + "resize_src.npy");
    REQUIRE(resize_bilinear(src, 5, 7).pixels == src.pixels);
    for (float x : resize_bilinear({3, 3, std::vector<float>(9, 0.3f)}, 7, 2).pixels) REQUIRE(x == Approx(0.3f));
}

TEST_CASE("bilinear and nearest resize match PIL on a 7x5 image", "[image]") {
    const Image src = npy_image(kImages + "resize_src.npy");
    REQUIRE(src.height == 5);
    REQUIRE(src.width == 7);
    for (auto hw : {std::pair<int, int>{3, 11}, {12, 4}, {2, 3}, {5, 7}}) {
        const std::string size = std::to_string(hw.first) + "x" + std::to_string(hw.second);
        INFO(size);
        const Image b = resize_bilinear(src, hw.first, hw.second), bref = npy_image(kImages + "resize_bilinear_" + size + ".npy");
        const Image n = resize_nearest(src, hw.first, hw.second), nref = npy_image(kImages + "resize_nearest_" + size + ".npy");
        REQUIRE(b.pixels.size() == bref.pixels.size());
        for (size_t i = 0; i < b.pixels.size(); ++i) REQUIRE(b.pixels[i] == Approx(bref.pixels[i]).margin(1e-5));
        REQUIRE(n.pixels == nref.pixels);
    }
}

TEST_CASE("nearest resize picks the pixel under each centre", "[image]") {
    // 3 -> 7: centres (i + 0.5) * 3/7 = 0.21, 0.64, 1.07, 1.5, 1.93, 2.36, 2.79
    REQUIRE(resize_nearest({1, 3, {10, 20, 30}}, 1, 7).pixels == std::vector<float>{10, 10, 20, 20, 20, 30, 30});
    // 5 -> 2: centres 1.25, 3.75
    REQUIRE(resize_nearest({5, 1, {1, 2, 3, 4, 5}}, 2, 1).pixels == std::vector<float>{2, 4});
    REQUIRE(!error_of([] { resize_nearest({0, 0, {}}, 2, 2); }).empty());
    REQUIRE(!error_of([] { resize_bilinear({1, 1, {1}}, 0, 2); }).empty());
}

TEST_CASE("min-max normalisation and percentile clipping", "[image]") {
    Image a{1, 3, {2, 4, 6}};
    normalize_min_max(a);
    REQUIRE(a.pixels == std::vector<float>{0, 0.5f, 1});
    Image c{2, 2, std::vector<float>(4, 7.0f)};
    normalize_min_max(c);
    REQUIRE(c.pixels == std::vector<float>(4, 0.0f));
    Image n{1, 3, {NAN, 1, 3}};
    normalize_min_max(n);
    REQUIRE(n.pixels == std::vector<float>{0, 0, 1});

    // 0..10: numpy.percentile gives 1.0 at 10 and 9.5 at 95 (rank 0.95 * 10 = 9.5).
    std::vector<float> v;
    for (int i = 10; i >= 0; --i) v.push_back(float(i));
    REQUIRE(percentile(v.data(), v.size(), 10) == Approx(1.0));
    REQUIRE(percentile(v.data(), v.size(), 95) == Approx(9.5));
    Image p{1, 11, v};
    clip_percentiles(p, 10, 95);
    REQUIRE(p.pixels.front() == 9.5f);
    REQUIRE(p.pixels.back() == 1.0f);
    REQUIRE(p.pixels[5] == 5.0f);
    REQUIRE(!error_of([&] { clip_percentiles(p, 50, 40); }).empty());
}

TEST_CASE("PNG writer: 8 and 16 bits, 1-4 channels, read back by stb", "[image]") {
    TempDir dir("png");
    for (int bits : {8, 16})
        for (int c = 1; c <= 4; ++c) {
            INFO(bits << " bits, " << c << " channels");
            const int H = 217, W = 300;
            std::vector<uint16_t> s(size_t(H * W * c));
            for (size_t i = 0; i < s.size(); ++i) s[i] = uint16_t((i * 2654435761u >> 7) % (bits == 16 ? 65536 : 256));
            const std::string path = dir / "w.png";
            save_png(path, s, H, W, c, bits);
            int w = 0, h = 0, n = 0;
            const std::vector<uint8_t> bytes = read_file(path);
            REQUIRE(stbi_is_16_bit_from_memory(bytes.data(), int(bytes.size())) == (bits == 16));
            if (bits == 16) {
                stbi_us* d = stbi_load_16_from_memory(bytes.data(), int(bytes.size()), &w, &h, &n, 0);
                REQUIRE(d);
                REQUIRE(std::vector<uint16_t>(d, d + s.size()) == s);
                stbi_image_free(d);
            } else {
                stbi_uc* d = stbi_load_from_memory(bytes.data(), int(bytes.size()), &w, &h, &n, 0);
                REQUIRE(d);
                REQUIRE(std::vector<uint16_t>(d, d + s.size()) == s);
                stbi_image_free(d);
            }
            REQUIRE((w == W && h == H && n == c));
        }
    // Only the written file remains: the temporary was renamed, not left behind.
    REQUIRE(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
    REQUIRE(error_of([&] { save_png(dir / "no/such/dir/x.png", {0}, 1, 1, 1, 8); }).find("x.png") != std::string::npos);
}

TEST_CASE("grey images and label maps as PNG", "[image]") {
    TempDir dir("save");
    save_image_png(dir / "g8.png", {1, 4, {0, 0.5f, 1, 2}}, 8);  // 127.5 rounds to 128; 2 clamps to 1
    save_image_png(dir / "g16.png", {1, 4, {0, 0.5f, 1, -1}}, 16);
    const Image g8 = load_image(dir / "g8.png"), g16 = load_image(dir / "g16.png");
    REQUIRE(g8.pixels == std::vector<float>{0, float(128 / 255.0), 1, 1});
    REQUIRE(g16.pixels == std::vector<float>{0, float(32768 / 65535.0), 1, 0});

    save_label_png(dir / "l8.png", {1, 3, {0, 2, 255}});
    save_label_png(dir / "l16.png", {1, 3, {0, 2, 256}});
    const std::vector<uint8_t> b8 = read_file(dir / "l8.png"), b16 = read_file(dir / "l16.png");
    REQUIRE(!stbi_is_16_bit_from_memory(b8.data(), int(b8.size())));
    REQUIRE(stbi_is_16_bit_from_memory(b16.data(), int(b16.size())));
    REQUIRE(load_label_map(dir / "l16.png").pixels == std::vector<float>{0, 2, 256});
    REQUIRE(error_of([&] { save_label_png(dir / "bad.png", {1, 1, {0.5f}}); }).find("bad.png") != std::string::npos);
    REQUIRE(!error_of([&] { save_label_png(dir / "bad.png", {1, 1, {70000}}); }).empty());
}

TEST_CASE("overlay: tinted regions, full-colour contours, grey elsewhere", "[image]") {
    // A 3x3 label-1 block missing its bottom-right corner: the centre is interior.
    const Image img{3, 3, std::vector<float>(9, 0.5f)};
    const Image lab{3, 3, {1, 1, 1, 1, 1, 1, 1, 1, 0}};
    const std::vector<uint8_t> rgb = overlay_labels(img, lab, 0.25);
    const std::array<uint8_t, 3> c1 = label_colour(1);
    for (int k = 0; k < 3; ++k) {
        // centre (1,1): all 4 neighbours are 1 -> interior: 0.75 * 127.5 + 0.25 * colour
        REQUIRE(int(rgb[size_t(4 * 3 + k)]) == int(std::lround(0.75 * 127.5 + 0.25 * c1[size_t(k)])));
        // (1,2): neighbour (2,2) is 0 -> contour in full colour
        REQUIRE(int(rgb[size_t(5 * 3 + k)]) == int(c1[size_t(k)]));
        // (2,2): background keeps the grey value
        REQUIRE(int(rgb[size_t(8 * 3 + k)]) == 128);
    }
    REQUIRE(label_colour(1) != label_colour(2));
    REQUIRE(!error_of([&] { overlay_labels(img, Image{2, 2, std::vector<float>(4)}); }).empty());
}

TEST_CASE("labelled folders: pairs by stem, clear errors", "[image]") {
    TempDir dir("folder");
    const uint8_t px[] = {0, 1, 0, 1};
    auto put = [&](const std::string& rel) {
        fs::create_directories((dir.path / rel).parent_path());
        REQUIRE(stbi_write_png((dir / rel).c_str(), 2, 2, 1, px, 2));
    };
    put("images/b.png");
    put("images/a_0000.png");  // nnU-Net channel suffix
    put("labels/a.png");
    put("labels/b.png");
    write_bytes(dir / "images/.hidden", {1});
    std::vector<LabelledPair> pairs = list_labelled_folder(dir.path.string());
    REQUIRE(pairs.size() == 2);
    REQUIRE(pairs[0].name == "a");
    REQUIRE(pairs[0].image_path == dir / "images/a_0000.png");
    REQUIRE(pairs[0].label_path == dir / "labels/a.png");
    REQUIRE(pairs[1].name == "b");

    put("images/c.png");  // no label
    std::string e = error_of([&] { list_labelled_folder(dir.path.string()); });
    REQUIRE(e.find("c.png") != std::string::npos);
    REQUIRE(e.find("no label map") != std::string::npos);
    fs::remove(dir / "images/c.png");

    put("labels/d.png");  // no image
    REQUIRE(error_of([&] { list_labelled_folder(dir.path.string()); }).find("d.png") != std::string::npos);
    fs::remove(dir / "labels/d.png");

    write_bytes(dir / "images/notes.txt", {1});
    REQUIRE(error_of([&] { list_labelled_folder(dir.path.string()); }).find("notes.txt") != std::string::npos);
    fs::remove(dir / "images/notes.txt");

    REQUIRE(error_of([&] { list_labelled_folder(dir / "missing"); }).find("missing") != std::string::npos);
    TempDir empty("folder_empty");
    fs::create_directories(empty.path / "images");
    fs::create_directories(empty.path / "labels");
    REQUIRE(error_of([&] { list_labelled_folder(empty.path.string()); }).find("no support images") != std::string::npos);
    fs::remove_all(empty.path / "labels");
    REQUIRE(error_of([&] { list_labelled_folder(empty.path.string()); }).find("labels") != std::string::npos);

    REQUIRE(image_stem("x/case_1.nii.gz") == "case_1");
    REQUIRE(image_extension("x/A.PNG") == ".png");
    REQUIRE(is_volume_path("a.nii"));
    REQUIRE(!is_volume_path("a.png"));
}

TEST_CASE("NIfTI: little-endian int16 with scaling and an sform", "[nifti]") {
    const Volume v = load_nifti(kImages + "vol_le_i16.nii");
    REQUIRE((v.nx == 4 && v.ny == 3 && v.nz == 2));
    for (int z = 0; z < 2; ++z)
        for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 4; ++x)  // stored x + 10 y + 100 z, scl_slope 2, scl_inter 1
                REQUIRE(v.voxels[size_t(x + 4 * (y + 3 * z))] == float(2 * (x + 10 * y + 100 * z) + 1));
    const std::array<double, 16> a = nifti_affine(v.header);
    const std::array<double, 16> expect = {0, -0.75, 0, 10, 0.5, 0, 0, -20, 0, 0, 2, 30, 0, 0, 0, 1};
    for (size_t i = 0; i < 16; ++i) REQUIRE(a[i] == Approx(expect[i]));
    REQUIRE(v.header.descrip == "fixture volume");
    REQUIRE(v.header.xyzt_units == 10);
}

TEST_CASE("NIfTI: big-endian float32, gzip, qform rotation", "[nifti]") {
    const Volume v = load_nifti(kImages + "vol_be_f32.nii.gz");
    REQUIRE((v.nx == 3 && v.ny == 2 && v.nz == 2));
    for (int z = 0; z < 2; ++z)
        for (int y = 0; y < 2; ++y)
            for (int x = 0; x < 3; ++x) REQUIRE(v.voxels[size_t(x + 3 * (y + 2 * z))] == float(x - y + 0.5 * z));
    // quaternion (b, c, d) = (0, 0, sqrt(1/2)): 90 degrees about z, R = [[0,-1,0],[1,0,0],[0,0,1]],
    // times voxel sizes (2, 3, 4), offsets (1, 2, 3).
    const std::array<double, 16> a = nifti_affine(v.header);
    const std::array<double, 16> expect = {0, -3, 0, 1, 2, 0, 0, 2, 0, 0, 4, 3, 0, 0, 0, 1};
    for (size_t i = 0; i < 16; ++i) REQUIRE(a[i] == Approx(expect[i]).margin(1e-6));
    // No qform or sform: the voxel sizes alone.
    const std::array<double, 16> d = nifti_affine(load_nifti(kImages + "labels_u8.nii.gz").header);
    REQUIRE((d[0] == 1.5 && d[5] == 1.5 && d[10] == 3 && d[1] == 0 && d[3] == 0));
}

TEST_CASE("NIfTI: write and read back (.nii and .nii.gz) with the source header", "[nifti]") {
    TempDir dir("nifti");
    Volume v = load_nifti(kImages + "vol_le_i16.nii");
    for (const char* name : {"out.nii", "out.nii.gz"})
        for (int16_t type : {kNiftiUint8, kNiftiInt16, kNiftiUint16, kNiftiInt32, kNiftiFloat32, kNiftiFloat64}) {
            INFO(name << " datatype " << type);
            Volume w = v;
            for (size_t i = 0; i < w.voxels.size(); ++i) w.voxels[i] = float(i % 200);
            save_nifti(dir / name, w, type);
            const Volume r = load_nifti(dir / name);
            REQUIRE((r.nx == 4 && r.ny == 3 && r.nz == 2));
            REQUIRE(r.voxels == w.voxels);
            REQUIRE(r.header.datatype == type);
            REQUIRE(nifti_affine(r.header) == nifti_affine(v.header));
            REQUIRE(r.header.pixdim == v.header.pixdim);
            REQUIRE(r.header.descrip == v.header.descrip);
        }
    const std::vector<uint8_t> gz = read_file(dir / "out.nii.gz");
    REQUIRE((gz[0] == 0x1F && gz[1] == 0x8B));
    REQUIRE(read_file(dir / "out.nii")[0] == 92);  // sizeof_hdr 348, little-endian

    Volume neg = v;
    neg.voxels[0] = -1;
    REQUIRE(error_of([&] { save_nifti(dir / "neg.nii", neg, kNiftiUint8); }).find("neg.nii") != std::string::npos);
    Volume big = v;
    big.voxels[0] = 300;
    REQUIRE(!error_of([&] { save_nifti(dir / "big.nii", big, kNiftiUint8); }).empty());
}

TEST_CASE("NIfTI: slices along each axis", "[nifti]") {
    Volume v = load_nifti(kImages + "vol_le_i16.nii");  // 4 x 3 x 2, value 2 (x + 10 y + 100 z) + 1
    auto at = [](int x, int y, int z) { return float(2 * (x + 10 * y + 100 * z) + 1); };
    const Image z1 = volume_slice(v, 2, 1);  // rows y, columns x
    REQUIRE((z1.height == 3 && z1.width == 4));
    REQUIRE(z1.pixels[size_t(2 * 4 + 3)] == at(3, 2, 1));
    const Image x2 = volume_slice(v, 0, 2);  // rows z, columns y
    REQUIRE((x2.height == 2 && x2.width == 3));
    REQUIRE(x2.pixels[size_t(1 * 3 + 2)] == at(2, 2, 1));
    const Image y0 = volume_slice(v, 1, 0);  // rows z, columns x
    REQUIRE((y0.height == 2 && y0.width == 4));
    REQUIRE(y0.pixels[size_t(1 * 4 + 1)] == at(1, 0, 1));
    Image blank{2, 3, std::vector<float>(6, -5)};
    set_volume_slice(v, 0, 2, blank);
    REQUIRE(v.voxels[size_t(2 + 4 * (1 + 3 * 1))] == -5);
    REQUIRE(v.voxels[size_t(1 + 4 * (1 + 3 * 1))] == at(1, 1, 1));
    REQUIRE(!error_of([&] { volume_slice(v, 2, 2); }).empty());
    REQUIRE(!error_of([&] { volume_slice(v, 3, 0); }).empty());
    REQUIRE(!error_of([&] { set_volume_slice(v, 2, 0, blank); }).empty());
}

TEST_CASE("NIfTI: corrupt and unsupported files name the file", "[nifti]") {
    TempDir dir("nifti_bad");
    const std::vector<uint8_t> good = read_file(kImages + "vol_le_i16.nii");
    auto variant = [&](const std::string& name, size_t off, std::vector<uint8_t> bytes_at, size_t keep = SIZE_MAX) {
        std::vector<uint8_t> b(good.begin(), good.begin() + ptrdiff_t(std::min(keep, good.size())));
        std::copy(bytes_at.begin(), bytes_at.end(), b.begin() + ptrdiff_t(off));
        write_bytes(dir / name, b);
        return error_of([&] { load_nifti(dir / name); });
    };
    REQUIRE(variant("truncated.nii", 0, {}, good.size() - 5).find("truncated") != std::string::npos);
    REQUIRE(variant("magic.nii", 344, {'x', 'y', 'z', 0}).find("magic") != std::string::npos);
    REQUIRE(variant("pair.nii", 344, {'n', 'i', '1', 0}).find(".hdr/.img") != std::string::npos);
    REQUIRE(variant("nifti2.nii", 0, {28, 2, 0, 0}).find("NIfTI-2") != std::string::npos);
    REQUIRE(variant("rgb.nii", 70, {128, 0}).find("datatype 128") != std::string::npos);
    REQUIRE(variant("4d.nii", 40, {4, 0, 4, 0, 3, 0, 2, 0, 5, 0}).find("4-D") != std::string::npos);
    REQUIRE(variant("short.nii", 0, {}, 100).find("too short") != std::string::npos);

    std::vector<uint8_t> gz = read_file(kImages + "vol_be_f32.nii.gz");
    write_bytes(dir / "cut.nii.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + ptrdiff_t(gz.size() / 2)));
    REQUIRE(error_of([&] { load_nifti(dir / "cut.nii.gz"); }).find("cut.nii.gz") != std::string::npos);
    for (size_t i = 20; i < gz.size(); i += 3) gz[i] ^= 0x5A;
    write_bytes(dir / "corrupt.nii.gz", gz);
    REQUIRE(error_of([&] { load_nifti(dir / "corrupt.nii.gz"); }).find("corrupt.nii.gz") != std::string::npos);
    REQUIRE(error_of([&] { load_nifti(dir / "none.nii"); }).find("none.nii") != std::string::npos);
}
