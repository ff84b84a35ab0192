// Hardening (issues 7 and 38): the caps of io/limits.hpp and the checks that keep hostile files
// from allocating more than they justify or decoding to uninitialised memory, one regression
// test per finding of the audits and of the fuzzers (fuzz/), atomic writes, and the model's edge
// cases: empty support masks, constant images, S = 1, batches, and the largest supported size.
#include <universeg/io/nifti.hpp>
#include <universeg/segment/segment.hpp>
#include <universeg/universeg.hpp>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include <csignal>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

using namespace universeg;
using namespace test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kHostile = std::string(UNIVERSEG_TEST_DATA) + "/hostile/";

// Restores the process-wide limits when a test that lowers them ends.
struct LimitsGuard {
    Limits saved = limits();
    ~LimitsGuard() { limits() = saved; }
};

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

void append(std::vector<uint8_t>& out, const std::string& s) { out.insert(out.end(), s.begin(), s.end()); }

// Pickle protocol 2 pieces, assembled by hand.
std::string binunicode(const std::string& s) {
    std::vector<uint8_t> len;
    detail::append_uint(len, s.size(), 4);
    return "X" + std::string(len.begin(), len.end()) + s;
}
std::string binint(uint32_t v) {
    std::vector<uint8_t> b;
    detail::append_uint(b, v, 4);
    return "J" + std::string(b.begin(), b.end());
}

// A torch checkpoint whose state dict holds `keys` tensors, every one a full view of the same
// float32 storage of `numel` elements (the second onwards through the memo).
std::vector<uint8_t> shared_storage_checkpoint(int keys, uint32_t numel) {
    std::string pkl = "\x80\x02}(";
    for (int k = 0; k < keys; ++k) {
        pkl += binunicode("w" + std::to_string(k));
        if (k == 0) {
            pkl += "ctorch._utils\n_rebuild_tensor_v2\n(";
            pkl += "(" + binunicode("storage") + "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") +
                   binint(numel) + "tQ";
            pkl += std::string("K\x00", 2) + "(" + binint(numel) + "t(K\x01t\x89}tRq\x01";
        } else {
            pkl += "h\x01";
        }
    }
    pkl += "u.";
    detail::ZipWriter w;
    detail::zip_add(w, "archive/data.pkl", reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size());
    const std::vector<uint8_t> storage(size_t(numel) * 4, 0);
    detail::zip_add(w, "archive/data/0", storage.data(), storage.size());
    return detail::zip_finish(w);
}

struct Inputs {
    std::vector<float> query, images, labels;
};

// Uniform images; labels a disc per support (or all zero when `empty_masks`).
Inputs random_inputs(int64_t B, int64_t S, int64_t H, int64_t W, unsigned seed, bool empty_masks = false) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    Inputs in{std::vector<float>(size_t(B * H * W)), std::vector<float>(size_t(B * S * H * W)),
              std::vector<float>(size_t(B * S * H * W), 0.0f)};
    for (float& v : in.query) v = u(rng);
    for (float& v : in.images) v = u(rng);
    if (!empty_masks)
        for (int64_t n = 0; n < B * S; ++n) {
            const float cy = u(rng) * float(H), cx = u(rng) * float(W), r = 0.3f * float(std::min(H, W));
            for (int64_t y = 0; y < H; ++y)
                for (int64_t x = 0; x < W; ++x)
                    in.labels[size_t((n * H + y) * W + x)] =
                        (float(y) - cy) * (float(y) - cy) + (float(x) - cx) * (float(x) - cx) < r * r;
        }
    return in;
}

std::vector<float> forward(const Model& m, const Inputs& in, int64_t B, int64_t S, int64_t H, int64_t W) {
    std::vector<float> out(size_t(B * H * W));
    m.forward(in.query.data(), in.images.data(), in.labels.data(), B, S, H, W, out.data());
    return out;
}

// The fast forward against the readable reference forward in double (the bound of issue 2).
void check_against_reference(const Model& m, const Inputs& in, int64_t B, int64_t S, int64_t H, int64_t W) {
    const std::vector<float> fast = forward(m, in, B, S, H, W);
    const std::vector<double> ref =
        m.forward_reference<double>(in.query.data(), in.images.data(), in.labels.data(), B, S, H, W);
    double diff = 0, top = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        diff = std::max(diff, std::isfinite(fast[i]) ? std::abs(double(fast[i]) - ref[i]) : INFINITY);
        top = std::max(top, std::abs(ref[i]));
    }
    INFO("B=" << B << " S=" << S << " " << H << "x" << W << " max diff " << diff);
    CHECK(diff <= 1e-4 * std::max(1.0, top));
}

}  // namespace

TEST_CASE("read_file refuses devices, directories and files over the cap", "[hardening]") {
    CHECK_THAT(error_of([] { read_file("/dev/zero"); }), Contains("/dev/zero: is a device"));
    TempDir dir("read");
    CHECK_THAT(error_of([&] { load_state_dict(dir.path.string()); }), Contains(dir.path.string() + ": is a directory"));
    const std::string pipe = dir / "pipe.pt";
    REQUIRE(mkfifo(pipe.c_str(), 0600) == 0);
    CHECK_THAT(error_of([&] { load_state_dict(pipe); }), Contains(pipe + ": is a pipe or socket"));
    const std::string big = dir / "big.bin";
    write_file_atomic(big, std::vector<uint8_t>(5000, 7));
    LimitsGuard guard;
    limits().max_file_bytes = 4096;
    CHECK_THAT(error_of([&] { read_file(big); }), Contains(big) && Contains("max_file_bytes"));
    limits().max_file_bytes = 5000;
    CHECK(read_file(big).size() == 5000);
}

TEST_CASE(".npy: more dimensions than max_rank, more elements than max_tensor_elements", "[hardening]") {
    auto npy = [](const std::string& shape, size_t data_bytes) {
        const std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }\n";
        std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        detail::append_uint(out, h.size(), 2);
        append(out, h);
        out.resize(out.size() + data_bytes);
        return out;
    };
    // 40 ones and a last dimension of 1000: before the cap every element stepped through 40 indices.
    std::string shape = "(";
    for (int k = 0; k < 40; ++k) shape += "1, ";
    const std::vector<uint8_t> deep = npy(shape + "1000)", 4000);
    CHECK_THAT(error_of([&] { load_npy(deep.data(), deep.size(), "deep.npy"); }),
               Contains("deep.npy") && Contains("41 dimensions"));
    const std::vector<uint8_t> wide = npy("(1000,)", 4000);
    CHECK(load_npy(wide.data(), wide.size(), "wide.npy").numel() == 1000);
    LimitsGuard guard;
    limits().max_tensor_elements = 999;
    CHECK_THAT(error_of([&] { load_npy(wide.data(), wide.size(), "wide.npy"); }), Contains("wide.npy") && Contains("limit"));
}

TEST_CASE("safetensors: a header of many tiny JSON values, deep shapes, big tensors", "[hardening]") {
    auto file = [](const std::string& header, size_t data_bytes) {
        std::vector<uint8_t> out;
        detail::append_uint(out, header.size(), 8);
        append(out, header);
        out.resize(out.size() + data_bytes);
        return out;
    };
    // Each 0 costs 2 header bytes but ~100 bytes parsed: the 100 MB header limit alone allowed 5 GB.
    std::string zeros = "[";
    for (int k = 0; k < 3000; ++k) zeros += k ? ",0" : "0";
    const std::vector<uint8_t> many = file(R"({"x":{"dtype":"F32","shape":)" + zeros + R"(],"data_offsets":[0,0]}})", 0);
    {
        LimitsGuard guard;
        limits().max_header_values = 1000;
        CHECK_THAT(error_of([&] { load_safetensors(many.data(), many.size(), "many.safetensors"); }),
                   Contains("many.safetensors") && Contains("max_header_values"));
    }
    CHECK_THAT(error_of([&] { load_safetensors(many.data(), many.size(), "many.safetensors"); }),
               Contains("3000 dimensions"));
    const std::vector<uint8_t> ok = file(R"({"x":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}})", 64);
    CHECK(load_safetensors(ok.data(), ok.size(), "ok").at("x").numel() == 16);
    LimitsGuard guard;
    limits().max_tensor_elements = 15;
    CHECK_THAT(error_of([&] { load_safetensors(ok.data(), ok.size(), "ok.safetensors"); }),
               Contains("ok.safetensors: tensor 'x'") && Contains("limit"));
}

TEST_CASE("pickle: the number of objects is capped", "[hardening]") {
    const std::string nones = "\x80\x02" + std::string(5000, 'N') + "(l.";
    const auto* p = reinterpret_cast<const uint8_t*>(nones.data());
    CHECK(detail::unpickle(p, nones.size(), "ok.pkl").values.size() == 5001);
    LimitsGuard guard;
    limits().max_pickle_values = 4000;
    CHECK_THAT(error_of([&] { detail::unpickle(p, nones.size(), "many.pkl"); }),
               Contains("many.pkl") && Contains("max_pickle_values"));
    // Memo entries count too: BINPUT of one value under 4000 keys.
    std::vector<uint8_t> memo = bytes_of("\x80\x02N");
    for (uint32_t k = 0; k < 4000; ++k) {
        memo.push_back('r');  // LONG_BINPUT k
        detail::append_uint(memo, k, 4);
    }
    memo.push_back('.');
    CHECK_THAT(error_of([&] { detail::unpickle(memo.data(), memo.size(), "memo.pkl"); }),
               Contains("memo.pkl") && Contains("max_pickle_values"));
}

TEST_CASE("checkpoint: views repeating one storage cannot outgrow the file", "[hardening]") {
    // Found in the audit: every view was checked against its storage alone, so a 16 KB storage
    // viewed 100 times (a few bytes of pickle each) became 1.6 MB of tensors, 1000 views 16 MB...
    const std::vector<uint8_t> bomb = shared_storage_checkpoint(100, 4096);
    CHECK_THAT(error_of([&] { load_torch_checkpoint(bomb.data(), bomb.size(), "bomb.pt"); }),
               Contains("bomb.pt") && Contains("more elements than the file has bytes"));
    // Two views of one storage (tied weights) still load.
    const std::vector<uint8_t> tied = shared_storage_checkpoint(2, 4096);
    const StateDict sd = load_torch_checkpoint(tied.data(), tied.size(), "tied.pt");
    REQUIRE(sd.size() == 2);
    CHECK(sd.at("w1").numel() == 4096);
    LimitsGuard guard;
    limits().max_tensor_elements = 4095;
    CHECK_THAT(error_of([&] { load_torch_checkpoint(tied.data(), tied.size(), "tied.pt"); }),
               Contains("tied.pt: tensor 'w0'") && Contains("limit"));
}

TEST_CASE("NIfTI: the voxel cap, and a gzip header declaring more than max_file_bytes", "[hardening]") {
    TempDir dir("nifti");
    Volume v;
    v.nx = 20, v.ny = 20, v.nz = 20;
    v.voxels.assign(8000, 1.0f);
    save_nifti(dir / "v.nii.gz", v, kNiftiUint8);
    save_nifti(dir / "v.nii", v, kNiftiUint8);
    CHECK(load_nifti(dir / "v.nii.gz").voxels.size() == 8000);
    LimitsGuard guard;
    limits().max_volume_voxels = 7999;
    CHECK_THAT(error_of([&] { load_nifti(dir / "v.nii"); }), Contains(dir / "v.nii") && Contains("limit"));
    limits().max_volume_voxels = int64_t(1) << 30;
    // A .nii.gz is inflated only as far as its header says, and that must be under the cap.
    limits().max_file_bytes = 8000;
    CHECK_THAT(error_of([&] { load_nifti(dir / "v.nii.gz"); }), Contains(dir / "v.nii.gz") && Contains("max_file_bytes"));
}

TEST_CASE("images: size caps checked on the header; stb's JPEG and PGM header bugs refused", "[hardening]") {
    TempDir dir("images");
    save_png(dir / "wide.png", std::vector<uint16_t>(100 * 10, 9), 10, 100, 1, 8);
    CHECK(load_image(dir / "wide.png").width == 100);
    {
        LimitsGuard guard;
        limits().max_image_side = 99;
        CHECK_THAT(error_of([&] { load_image(dir / "wide.png"); }), Contains(dir / "wide.png") && Contains("limits"));
        limits().max_image_side = 100;
        limits().max_image_pixels = 999;
        CHECK_THAT(error_of([&] { load_label_map(dir / "wide.png"); }), Contains(dir / "wide.png") && Contains("limits"));
    }
    // Found by fuzz_image: a DHT segment declaring more than 256 codes made stb_image write past
    // its Huffman tables (while reading the header), with or without fill bytes before the SOI.
    for (const char* name : {"jpeg_dht_overflow.jpg", "jpeg_dht_overflow_fill.jpg"})
        CHECK_THAT(error_of([&] { load_image(kHostile + name); }), Contains(kHostile + name) && Contains("Huffman table"));
    // Found by fuzz_image (CI, 2026-11-25): a progressive AC scan naming an AC table no DHT
    // segment defined made stb_image decode with uninitialised Huffman tables.
    CHECK_THAT(error_of([&] { load_image(kHostile + "jpeg_scan_undefined_table.jpg"); }),
               Contains(kHostile + "jpeg_scan_undefined_table.jpg") && Contains("Huffman table that no DHT"));
    // A valid JPEG whose DC times its quantisation step overflows an int inside stb: decoded
    // (the stb translation unit wraps, -fwrapv), not refused.
    CHECK(load_image(kHostile + "jpeg_dc_overflow.jpg").width == 16);
    // Found by fuzz_image: "P5 7 255555555..." overflowed stb's int parsing of the PGM header.
    CHECK_THAT(error_of([&] { load_image(kHostile + "pgm_size_overflow.pgm"); }),
               Contains(kHostile + "pgm_size_overflow.pgm") && Contains("PGM/PPM header"));
    // Found by fuzz_image: an empty first IDAT chunk made stb memcpy into a null buffer.
    CHECK_THAT(error_of([&] { load_image(kHostile + "png_empty_idat.png"); }),
               Contains(kHostile + "png_empty_idat.png") && Contains("IDAT"));
    // Found by fuzz_image: an IDAT chunk declaring 1.3 GB in an 82-byte file made stb allocate 2 GB.
    CHECK_THAT(error_of([&] { load_image(kHostile + "png_idat_length.png"); }),
               Contains(kHostile + "png_idat_length.png") && Contains("more than the"));
    // The JPEG check walks markers as stb does: the bundled JPEGs still load.
    for (const char* name : {"grey100.jpg", "colour.jpg", "pattern_rgb.jpg"})
        CHECK(load_image(std::string(UNIVERSEG_TEST_DATA) + "/images/" + name).width > 0);
    std::vector<uint8_t> pgm = bytes_of("P5\n# a comment\n3 2\n255\n");
    pgm.resize(pgm.size() + 6, 128);
    write_file_atomic(dir / "ok.pgm", pgm);
    CHECK(load_image(dir / "ok.pgm").pixels.size() == 6);
    const std::string empty = dir / "empty.png";
    write_file_atomic(empty, {});
    CHECK_THAT(error_of([&] { load_image(empty); }), Contains(empty) && Contains("empty"));
}

TEST_CASE("images: pixels checked against the bytes before decoding; sizes below 1 named as such (issue 38)",
          "[hardening]") {
    // Each decoded with exit 0 before: stb_image 2.27 ignored its short reads and returned the
    // uninitialised memory its pixels were allocated in (or zeros for pixels the file never
    // held), allocated what the header claimed (1.4 GB for the 17-byte PPM, 2 MB for a 1x1
    // PNG), or computed pixels from tables, coefficients or inflated bytes nothing had set.
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"pgm_no_pixels.pgm", "truncated PGM/PPM: 64x64 pixels need 4096 bytes of pixel data, the file has 0"},
        {"ppm_short_pixels.ppm", "truncated PGM/PPM: 8x8 pixels need 192 bytes of pixel data, the file has 100"},
        {"pgm16_short_pixels.pgm", "truncated PGM/PPM: 4x4 pixels need 32 bytes of pixel data, the file has 31"},
        {"ppm_8192_in_17_bytes.ppm", "truncated PGM/PPM: 8192x8192 pixels need 201326592 bytes of pixel data"},
        {"tga_header_only.tga", "truncated TGA: 64x64 pixels need 4096 bytes of pixel data, the file has 0"},
        {"tga_rle_truncated.tga", "truncated TGA: the run-length data ends after 40 of 4096 pixels"},
        {"bmp_1000x1000_300_bytes.bmp", "truncated BMP: 1000x1000 pixels need 3000000 bytes of pixel data, the file has 300"},
        {"bmp_palette_index.bmp", "corrupt BMP: pixel value 200 is past its colour table of 2 entries"},
        {"jpeg_no_scan.jpg", "corrupt JPEG: no scan holds the data of component 1"},
        {"jpeg_progressive_no_scan.jpg", "corrupt JPEG: no scan holds the data of component 1"},
        {"jpeg_no_dqt.jpg", "corrupt JPEG: component 1 uses quantisation table 0, which no DQT segment before its scan defines"},
        {"jpeg_refine_before_dc.jpg", "corrupt JPEG: a progressive scan refines component 1 before its first DC scan"},
        {"png_invalid_distance.png", "corrupt PNG: its image data is not a valid deflate stream (invalid distance code)"},
        {"png_inflates_2mb.png", "corrupt PNG: its image data inflates to more than the 2 bytes its size needs"},
        {"pgm_width_2e64.pgm", "corrupt PGM/PPM header: width larger than 2147483647"},
    };
    for (const auto& c : cases) {
        const std::string path = kHostile + c.first;
        CHECK_THAT(error_of([&] { load_image(path); }), Contains(path + ": " + c.second));
        if (image_extension(path) != ".jpg")  // (a JPEG label map is refused for being lossy first)
            CHECK_THAT(error_of([&] { load_label_map(path); }), Contains(path + ": " + c.second));
    }
    // Zero and negative sizes were reported as exceeding the limits.
    for (const std::string name : {"pgm_zero_width.pgm", "tga_zero_width.tga", "bmp_negative_width.bmp"}) {
        const std::string e = error_of([&] { load_image(kHostile + name); });
        CHECK_THAT(e, Contains(kHostile + name + ": corrupt image: its header declares ") &&
                          Contains("pixels (width and height must be at least 1)") && !Contains("limits"));
    }
}

TEST_CASE("images: a PNG palette indexed past its end reads black, a top-down BMP as its twins (issue 38)",
          "[hardening]") {
    // Entries (10, 20, 30) and (200, 100, 50); pixels 0 1 200 1 / 1 0 0 200, where stb looked
    // index 200 up in uninitialised stack memory.
    const Image p = load_image(kHostile + "png_short_palette.png");
    const float a = float((0.299 * 10 + 0.587 * 20 + 0.114 * 30) / 255), b = float((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255);
    REQUIRE((p.width == 4 && p.height == 2));
    CHECK_THAT(p.pixels, Catch::Matchers::Approx(std::vector<float>{a, b, 0, b, b, a, a, 0}).margin(1e-6));
    // One 7x5 image as a top-down BMP (stb refused it: "7x-5 pixels exceeds the limits"), a
    // bottom-up BMP and a PNG (decoded by stb): the same samples, pixel (x, y) being
    // ((37x + 11y) % 256, (200 - 23x + 5y) % 256, (53y + x) % 256) (make_short_reads.py).
    const detail::DecodedImage top = detail::decode_image(kHostile + "bmp_top_down.bmp");
    REQUIRE((top.width == 7 && top.height == 5 && top.channels == 3));
    CHECK(detail::decode_image(kHostile + "bmp_bottom_up.bmp").samples == top.samples);
    CHECK(detail::decode_image(kHostile + "bmp_twin.png").samples == top.samples);
    auto rgb = [&](int x, int y) {
        const uint16_t* s = &top.samples[size_t((y * 7 + x) * 3)];
        return std::vector<int>{s[0], s[1], s[2]};
    };
    CHECK(rgb(0, 0) == std::vector<int>{0, 200, 0});
    CHECK(rgb(3, 1) == std::vector<int>{122, 136, 56});
    CHECK(rgb(6, 4) == std::vector<int>{10, 82, 218});
}

TEST_CASE("NIfTI: slices under the image limits, gzip sizes checked before inflating, true messages (issue 38)",
          "[hardening]") {
    // The header of one 16400x16400 slice: the issue's 0.3 MB file inflated 269 MB and peaked at
    // 4.3 GB before the 2-D pipeline failed; the header alone is refused now.
    const std::string slice = kHostile + "nii_slice_16400.nii.gz";
    CHECK_THAT(error_of([&] { load_nifti(slice); }),
               Contains(slice + ": a volume of 16400x16400x1 voxels, whose slices along axis 2 (16400x16400 pixels) "
                                "exceed the image limits"));
    const std::string declares = kHostile + "nii_declares_16mb.nii.gz";
    CHECK_THAT(error_of([&] { load_nifti(declares); }),
               Contains(declares + ": truncated: the header declares 16777568 bytes, more than its 54 bytes of gzip "
                                   "data can hold"));
    const std::string twenty = kHostile + "nii_gz_20_bytes.nii.gz";
    CHECK_THAT(error_of([&] { load_nifti(twenty); }),
               Contains(twenty + ": too short for a NIfTI-1 header of 348 bytes: its 20 bytes of gzip data inflate to 0"));
    // Slices along every axis, since the pipeline may take any: 20x30x5 voxels have slices of
    // 30x5 (axis 0), 20x5 (axis 1) and 20x30 (axis 2) pixels.
    TempDir dir("slices");
    Volume v;
    v.nx = 20, v.ny = 30, v.nz = 5;
    v.voxels.assign(3000, 1.0f);
    save_nifti(dir / "v.nii", v, kNiftiUint8);
    LimitsGuard guard;
    limits().max_image_pixels = 600;
    CHECK(load_nifti(dir / "v.nii").voxels.size() == 3000);
    limits().max_image_pixels = 599;
    CHECK_THAT(error_of([&] { load_nifti(dir / "v.nii"); }), Contains("slices along axis 2 (20x30 pixels)"));
    limits().max_image_pixels = 149;
    CHECK_THAT(error_of([&] { load_nifti(dir / "v.nii"); }), Contains(dir / "v.nii") && Contains("axis 0 (30x5 pixels)"));
}

TEST_CASE("readers report running out of memory with the file and the size asked (issue 38)", "[hardening]") {
    // More elements than std::vector can hold: refused by its length check.
    CHECK_THAT(error_of([] { detail::allocate<float>(uint64_t(1) << 61, "huge.nii"); }),
               Contains("huge.nii: out of memory: cannot allocate 9223372036854775808 bytes"));
#if defined(__SANITIZE_ADDRESS__)
    WARN("AddressSanitizer aborts on allocations beyond its maximum instead of failing them: skipped");
#else
    // 128 TiB, more than a 47-bit address space holds: operator new throws std::bad_alloc.
    CHECK_THAT(error_of([] { detail::allocate<float>(uint64_t(1) << 45, "big.png"); }),
               Contains("big.png: out of memory: cannot allocate 140737488355328 bytes"));
#endif
}

TEST_CASE("atomic writes: a writer killed mid-write leaves no temporary and the old file whole (issue 38)",
          "[hardening]") {
    TempDir dir("killed");
    const int probe = ::open(dir.path.c_str(), O_TMPFILE | O_WRONLY, 0600);
    if (probe < 0) {
        WARN("no O_TMPFILE in " << dir.path << ": skipped (named temporaries are removed on signals only)");
        return;
    }
    ::close(probe);
    write_file_atomic(dir / "kept.bin", bytes_of("old"));
    for (const std::string name : {"new.bin", "kept.bin"}) {
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // SIGXFSZ kills the writer once the file passes 64 KB: a kill mid-write at a point set
            // by the file's size, not by a timer. No core dump.
            const rlimit no_core{0, 0}, small{1 << 16, 1 << 16};
            setrlimit(RLIMIT_CORE, &no_core);
            setrlimit(RLIMIT_FSIZE, &small);
            std::signal(SIGXFSZ, SIG_DFL);
            write_file_atomic(dir / name, std::vector<uint8_t>(1 << 20, 7));
            _exit(0);
        }
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ));
    }
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{"kept.bin"});
    CHECK(read_file(dir / "kept.bin") == bytes_of("old"));
}

TEST_CASE("model: more encoder blocks than any image could pass, non-finite weights", "[hardening]") {
    // Found in the audit: 64 one-channel blocks made size_multiple() shift by 63 and overflow.
    std::vector<BlockFeatures> deep(17, BlockFeatures{1, 1});
    CHECK_THAT(error_of([&] { Model m(random_state_dict(deep, 1)); }), Contains("17 encoder blocks"));
    deep.resize(16);
    CHECK(Model(random_state_dict(deep, 1)).config().size_multiple() == 32768);
    StateDict sd = random_state_dict({{2, 2}, {2, 2}}, 2);
    sd["dec_blocks.0.support.vmapped.conv.bias"].data[1] = INFINITY;
    CHECK_THAT(error_of([&] { Model m(sd); }), Contains("dec_blocks.0.support.vmapped.conv") && Contains("non-finite"));
    sd = random_state_dict({{2, 2}, {2, 2}}, 2);
    sd["enc_blocks.1.cross.cross_conv.weight"].data[0] = NAN;
    CHECK_THAT(error_of([&] { Model m(sd); }), Contains("enc_blocks.1.cross.cross_conv") && Contains("non-finite"));
}

TEST_CASE("atomic writes: hidden temporaries, nothing left behind on failure or interruption", "[hardening]") {
    TempDir dir("atomic");
    auto listing = [&] {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(dir.path)) names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        return names;
    };
    write_file_atomic(dir / "a.bin", bytes_of("first"));
    write_file_atomic(dir / "a.bin", bytes_of("second"));
    CHECK(read_file(dir / "a.bin") == bytes_of("second"));
    // Renaming over a non-empty folder fails: the error names the path, the temporary is gone.
    fs::create_directories(dir.path / "taken" / "inside");
    CHECK_THAT(error_of([&] { write_file_atomic(dir / "taken", bytes_of("x")); }), Contains(dir / "taken"));
    CHECK(listing() == std::vector<std::string>{"a.bin", "taken"});
    CHECK_THAT(error_of([&] { save_npy(dir / "missing/x.npy", Tensor({2})); }), Contains(dir / "missing/x.npy"));
    // A signal handler removes the temporaries of writes in progress.
    const std::string tmp = dir / ".b.bin.tmp1-1";
    write_file_atomic(tmp, bytes_of("partial"));
    const int slot = detail::register_temporary(tmp);
    REQUIRE(slot >= 0);
    remove_pending_temporaries();
    detail::release_temporary(slot);
    CHECK(!fs::exists(tmp));
    remove_pending_temporaries();  // released slots are left alone
    CHECK(fs::exists(dir / "a.bin"));
}

TEST_CASE("edge cases: empty support masks, constant images, S = 1, batches", "[hardening]") {
    const Model m(random_state_dict({{8, 8}, {8, 8}, {8, 8}}, 3));
    const int64_t H = 16, W = 12;
    SECTION("every support mask empty") {
        check_against_reference(m, random_inputs(1, 3, H, W, 4, true), 1, 3, H, W);
    }
    SECTION("constant query and supports") {
        for (float c : {0.0f, 1.0f}) {
            Inputs in = random_inputs(1, 2, H, W, 5);
            std::fill(in.query.begin(), in.query.end(), c);
            std::fill(in.images.begin(), in.images.end(), 1.0f - c);
            check_against_reference(m, in, 1, 2, H, W);
        }
        // Normalising a constant image must not divide by zero: it becomes zeros.
        const Image flat = prepare_image(Image{5, 7, std::vector<float>(35, 42.0f)}, H, W, 1, 99);
        CHECK(flat.pixels == std::vector<float>(size_t(H * W), 0.0f));
    }
    SECTION("S = 1, and B = 3 equals three single queries") {
        const int64_t B = 3, S = 1;
        const Inputs in = random_inputs(B, S, H, W, 6);
        check_against_reference(m, in, B, S, H, W);
        const std::vector<float> batch = forward(m, in, B, S, H, W);
        for (int64_t b = 0; b < B; ++b) {
            const size_t HW = size_t(H * W);
            Inputs one{std::vector<float>(in.query.begin() + long(b * HW), in.query.begin() + long((b + 1) * HW)),
                       std::vector<float>(in.images.begin() + long(b * HW), in.images.begin() + long((b + 1) * HW)),
                       std::vector<float>(in.labels.begin() + long(b * HW), in.labels.begin() + long((b + 1) * HW))};
            CHECK(forward(m, one, 1, S, H, W) == std::vector<float>(batch.begin() + long(b * HW), batch.begin() + long((b + 1) * HW)));
        }
    }
    SECTION("a support set where only some masks hold the label, and one where none does") {
        SupportSet set;
        set.height = H;
        set.width = W;
        Image lab{H, W, std::vector<float>(size_t(H * W), 0.0f)};
        add_support(set, Image{H, W, std::vector<float>(size_t(H * W), 0.5f)}, lab, "empty");
        CHECK_THAT(error_of([&] { make_task(m, set, SegmentOptions{}); }), Contains("all empty"));
        lab.pixels[5] = 2;
        add_support(set, Image{H, W, std::vector<float>(size_t(H * W), 0.25f)}, lab, "one pixel");
        const Task task = make_task(m, set, SegmentOptions{});
        const std::vector<Image> probs = predict_probabilities(task, Image{H, W, std::vector<float>(size_t(H * W), 0.0f)});
        REQUIRE(probs.size() == 1);
        CHECK(std::all_of(probs[0].pixels.begin(), probs[0].pixels.end(), [](float p) { return p >= 0.0f && p <= 1.0f; }));
    }
}

// The largest size this project supports is 1024 x 1024 (S = 1) for the v1 architecture, at
// about 3 GB of memory; `universeg segment --size` accepts up to 4096 for smaller models.
TEST_CASE("largest supported size: 1024 x 1024, a tiny model against the reference (no index overflows)",
          "[hardening][large]") {
    const int64_t H = 1024, W = 1024;
    const Model tiny(random_state_dict({{2, 2}, {2, 2}}, 8));
    check_against_reference(tiny, random_inputs(1, 1, H, W, 9), 1, 1, H, W);
}

// [heavy]: its own ctest entry, left out of the sanitizer and emulator runs (see tests/CMakeLists.txt).
TEST_CASE("largest supported size: 1024 x 1024 at S = 1 for v1", "[hardening][large][heavy]") {
    const int64_t H = 1024, W = 1024;
    const Model v1(random_state_dict({{64, 64}, {64, 64}, {64, 64}, {64, 64}}, 10));
    const std::vector<float> logits = forward(v1, random_inputs(1, 1, H, W, 11), 1, 1, H, W);
    CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
}
