// The `universeg` program end to end, every command's cases in one place:
// - hostile files (issue 7) through `run`, `convert` and `segment`: truncated, empty and foreign
//   files, flipped bytes, missing and short storages, garbage pickles, forbidden globals, absurd
//   safetensors headers, element-count overflows, terabyte .npy headers, wrong dtypes and ranks,
//   sizes the model cannot take, NaN and Inf, image and volume headers built to exhaust memory,
//   and the stb_image bugs the fuzzers found. Every one must end with exit code 1, exactly one
//   line on stderr naming the file, no sanitizer report and no output left behind; in a batch of
//   queries the good ones are still written. The files are made here, from the golden custom
//   checkpoint and the library's own writers; tests/data/hostile/ holds the fuzzers' findings.
// - `run` (--dump, fp64, --max-memory), `compare` and `make-case`;
// - `segment` and `eval` ([segment]: formats, odd sizes, multi-label maps, thresholds, tiles,
//   ensembles, NIfTI volumes, shards, the reference outputs byte for byte, every output planned
//   before anything is computed, errors named before computing, a failed query leaving none of
//   its outputs);
// - `train`, `finetune`, `info`, `bench` and `bench-chart`.
// The small golden custom model at small sizes keeps it fast; [heavy] cases use the bundled
// weights.
#include <universeg/io/nifti.hpp>
#include <universeg/universeg.hpp>

#include <universeg/segment/segment.hpp>
#include <universeg/train/train.hpp>

#include <stb/stb_image_write.h>

#include "segment_cases.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <sys/stat.h>

using namespace universeg;
using namespace test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

// ---- hostile files ----

#ifdef UNIVERSEG_CLI

namespace {

// `universeg ARGS` with one thread (ctest runs programs side by side).
Run run_cli(const TempDir& dir, const std::string& command, const std::string& args) {
    const bool threads = command != "convert" && command != "info";  // the commands that take --threads
    return run_shell(quote(UNIVERSEG_CLI) + " " + command + (threads ? " --threads 1 " : " ") + args, dir);
}

// Files in `dir` (recursively), temporaries included.
std::vector<std::string> files_in(const std::string& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (!e.is_directory()) out.push_back(e.path().string());
    return out;
}

// The contract for one refused file.
void check_refused(const Run& r, const std::string& file, const std::string& out_dir) {
    INFO("file " << file << "\nexit code " << r.rc << "\nstderr: " << r.err << "\nstdout: " << r.out);
    CHECK(r.rc == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.back() == '\n');
    CHECK(r.err.find(file) != std::string::npos);
    for (const char* crash : {"Sanitizer", "runtime error", "terminate", "Aborted", "Segmentation"})
        CHECK(r.err.find(crash) == std::string::npos);
    CHECK(files_in(out_dir).empty());
}

void write(const std::string& path, const std::vector<uint8_t>& bytes) { write_file_atomic(path, bytes); }
void write(const std::string& path, const std::string& text) { write(path, std::vector<uint8_t>(text.begin(), text.end())); }

// The golden checkpoint's zip entries, to rebuild it with one changed (CRCs recomputed).
std::map<std::string, std::vector<uint8_t>> checkpoint_entries() {
    const std::vector<uint8_t> bytes = read_file(kWeights);
    const detail::ZipArchive zip = detail::zip_open(bytes.data(), bytes.size(), kWeights);
    std::map<std::string, std::vector<uint8_t>> out;
    for (const auto& e : zip.entries) {
        const detail::ByteSpan b = detail::zip_read(zip, e.first);
        out[e.first] = std::vector<uint8_t>(b.data, b.data + b.size);
    }
    return out;
}

std::vector<uint8_t> zip_of(const std::map<std::string, std::vector<uint8_t>>& entries) {
    detail::ZipWriter w;
    for (const auto& e : entries) detail::zip_add(w, e.first, e.second.data(), e.second.size());
    return detail::zip_finish(w);
}

std::vector<uint8_t> safetensors_with_header(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> out;
    detail::append_uint(out, header.size(), 8);
    out.insert(out.end(), header.begin(), header.end());
    out.resize(out.size() + data_bytes);
    return out;
}

std::vector<uint8_t> npy_with_header(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    detail::append_uint(out, header.size(), 2);
    out.insert(out.end(), header.begin(), header.end());
    out.resize(out.size() + data_bytes);
    return out;
}

// A PNG whose header declares `w` x `h` pixels, with a few bytes of image data.
std::vector<uint8_t> png_declaring(uint32_t w, uint32_t h) {
    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'}, ihdr;
    for (uint32_t v : {w, h})
        for (int k = 3; k >= 0; --k) ihdr.push_back(uint8_t(v >> (8 * k)));
    ihdr.insert(ihdr.end(), {8, 0, 0, 0, 0});
    detail::png_chunk(out, "IHDR", ihdr);
    detail::png_chunk(out, "IDAT", {0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01});
    detail::png_chunk(out, "IEND", {});
    return out;
}

Tensor filled(std::vector<int64_t> shape, float v) { return Tensor(std::move(shape), v); }

// A string literal with its embedded NUL bytes (pickles are full of them).
template <size_t N>
std::string lit(const char (&s)[N]) {
    return std::string(s, N - 1);
}

}  // namespace

TEST_CASE("run, convert and segment refuse hostile files: exit 1, one line naming the file, nothing written", "[cli]") {
    TempDir dir;
    const StateDict good = load_state_dict(kWeights);
    const auto entries = checkpoint_entries();
    const std::vector<uint8_t> ckpt = read_file(kWeights);
    std::string pkl_name, storage_name;
    for (const auto& e : entries) {
        if (e.first.size() > 8 && e.first.compare(e.first.size() - 8, 8, "data.pkl") == 0) pkl_name = e.first;
        if (e.first.find("/data/") != std::string::npos && e.second.size() > 1000) storage_name = e.first;
    }
    REQUIRE(!pkl_name.empty());
    REQUIRE(!storage_name.empty());

    // --- weights: each goes through convert and run (and a few through segment) -----------
    std::vector<std::string> weights;
    auto add_weights = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
        write(dir / name, bytes);
        weights.push_back(dir / name);
    };
    add_weights("empty.pt", {});
    add_weights("truncated.pt", std::vector<uint8_t>(ckpt.begin(), ckpt.begin() + long(ckpt.size() / 2)));
    add_weights("wrong_magic.pt", std::vector<uint8_t>{'G', 'I', 'F', '8', '9', 'a', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    {
        std::vector<uint8_t> flipped = ckpt;
        const detail::ZipArchive zip = detail::zip_open(ckpt.data(), ckpt.size(), "x");
        flipped[size_t(detail::zip_read(zip, storage_name).data - ckpt.data()) + 100] ^= 0x40;
        add_weights("crc_flipped.pt", flipped);
    }
    {
        auto e = entries;
        e.erase(storage_name);
        add_weights("missing_storage.pt", zip_of(e));
        e = entries;
        e[storage_name].resize(e[storage_name].size() / 2);
        add_weights("short_storage.pt", zip_of(e));
        e = entries;
        std::vector<uint8_t> garbage(600);
        for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = uint8_t(i * 7919 + 13);
        e[pkl_name] = garbage;
        add_weights("garbage_pickle.pt", zip_of(e));
        e = entries;
        e[pkl_name].resize(e[pkl_name].size() / 2);
        add_weights("truncated_pickle.pt", zip_of(e));
        e = entries;
        const std::string evil = lit("\x80\x02" "cposix\nsystem\n" "X\x05\x00\x00\x00" "touch\x85R.");
        e[pkl_name] = std::vector<uint8_t>(evil.begin(), evil.end());
        add_weights("forbidden_global.pt", zip_of(e));
    }
    add_weights("os_system.pt", read_file(kData + "io/evil_global.pt"));
    add_weights("legacy.pt", read_file(kData + "io/legacy.pt"));
    add_weights("deflated.pt", read_file(kData + "io/deflated.zip"));
    {
        std::vector<uint8_t> absurd = safetensors_with_header("{}", 0);
        absurd[7] = 0x10;  // header length 2^60 + 2
        add_weights("absurd_header.safetensors", absurd);
    }
    add_weights("offsets_past_end.safetensors",
                safetensors_with_header(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,1000000]}})", 16));
    add_weights("numel_overflow.safetensors",
                safetensors_with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", 16));
    add_weights("wrong_dtype.safetensors", safetensors_with_header(R"({"x":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16));
    add_weights("bad_json.safetensors", safetensors_with_header("{\"x\": [1, 2,", 0));
    add_weights("control_chars.safetensors",
                safetensors_with_header("{\"a\\nuniverseg: fake second line\\u001b[31m\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 8));
    auto save_sd = [&](const std::string& name, const StateDict& sd) {
        save_safetensors(dir / name, sd);
        weights.push_back(dir / name);
    };
    StateDict sd = good;
    sd["enc_blocks.1.target.vmapped.conv.weight"].data[3] = NAN;
    save_sd("nan_weights.safetensors", sd);
    sd = good;
    sd["out_conv.conv.bias"].data[0] = -INFINITY;
    save_sd("inf_weights.safetensors", sd);
    sd = good;
    sd.erase("dec_blocks.0.support.vmapped.conv.bias");
    save_sd("missing_tensor.safetensors", sd);
    sd = good;
    sd["enc_blocks.0.cross.cross_conv.weight"].shape[1] = 1;  // 3 input channels claimed as 1 ...
    sd["enc_blocks.0.cross.cross_conv.weight"].shape[0] *= 3;  // ... with the same element count
    save_sd("wrong_shape.safetensors", sd);
    {
        StateDict deep;
        for (const std::string part : {"enc_blocks.", "dec_blocks."})
            for (int k = 0; k < (part[0] == 'e' ? 17 : 16); ++k)
                for (const char* conv : {".cross.cross_conv", ".target.vmapped.conv", ".support.vmapped.conv"}) {
                    const int64_t in = std::string(conv) == ".cross.cross_conv" ? (k == 0 && part[0] == 'e' ? 3 : 2) : 1;
                    deep[part + std::to_string(k) + conv + ".weight"] = filled({1, in, 3, 3}, 0.1f);
                    deep[part + std::to_string(k) + conv + ".bias"] = filled({1}, 0.0f);
                }
        deep["out_conv.conv.weight"] = filled({1, 1, 1, 1}, 1.0f);
        deep["out_conv.conv.bias"] = filled({1}, 0.0f);
        save_sd("too_deep.safetensors", deep);
    }
    {  // 400 views of one 64 KB storage: 25 MB of tensors from a 70 KB file
        auto e = entries;
        std::string views = "\x80\x02}(";
        for (int k = 0; k < 400; ++k) {
            views += lit("X\x04\x00\x00\x00") + char('a' + k / 26 % 26) + char('a' + k % 26) + "zz";
            views += k ? lit("h\x01")
                       : lit("ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
                             "X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuJ\x00\x40\x00\x00tQK\x00J\x00\x40\x00\x00"
                             "\x85K\x01\x85\x89}tRq\x01");
        }
        views += "u.";
        std::map<std::string, std::vector<uint8_t>> v{{"archive/data.pkl", std::vector<uint8_t>(views.begin(), views.end())},
                                                      {"archive/data/0", std::vector<uint8_t>(65536, 0)}};
        add_weights("views_bomb.pt", zip_of(v));
    }
    fs::create_directories(dir.path / "a_folder.pt");
    weights.push_back(dir / "a_folder.pt");
    weights.push_back("/dev/zero");
    weights.push_back(dir / "does_not_exist.pt");
    // A FIFO without a writer: opening it to read would block for ever.
    REQUIRE(mkfifo((dir / "a_pipe.pt").c_str(), 0600) == 0);
    weights.push_back(dir / "a_pipe.pt");

    // Good inputs for run: B=1, S=2, 8x8.
    save_npy(dir / "q.npy", filled({1, 1, 8, 8}, 0.5f));
    save_npy(dir / "si.npy", filled({1, 2, 1, 8, 8}, 0.25f));
    Tensor labels = filled({1, 2, 1, 8, 8}, 0.0f);
    for (size_t i = 0; i < labels.data.size(); i += 3) labels.data[i] = 1.0f;
    save_npy(dir / "sl.npy", labels);
    const std::string out_dir = dir / "out";
    auto run_args = [&](const std::string& w, const std::string& q, const std::string& si, const std::string& sl) {
        return "--weights " + quote(w) + " --query " + quote(q) + " --support-images " + quote(si) + " --support-labels " +
               quote(sl) + " --out " + quote(out_dir + "/logits.npy");
    };
    fs::create_directories(out_dir);
    {
        const Run ok = run_cli(dir, "run", run_args(kWeights, dir / "q.npy", dir / "si.npy", dir / "sl.npy"));
        INFO(ok.err);
        REQUIRE(ok.rc == 0);
        REQUIRE(fs::exists(out_dir + "/logits.npy"));
        fs::remove(out_dir + "/logits.npy");
        for (const std::string& how : {"", "--weights "}) {
            const Run info = run_cli(dir, "info", how + quote(kWeights));
            INFO(info.err);
            CHECK(info.rc == 0);
            CHECK(info.out.find("encoder [") != std::string::npos);
        }
    }

    int kinds = 0;
    for (const std::string& w : weights) {
        check_refused(run_cli(dir, "convert", quote(w) + " " + quote(out_dir + "/w.safetensors")), w, out_dir);
        check_refused(run_cli(dir, "info", quote(w)), w, out_dir);
        check_refused(run_cli(dir, "run", run_args(w, dir / "q.npy", dir / "si.npy", dir / "sl.npy")), w, out_dir);
        ++kinds;
    }

    // --- arrays for run ------------------------------------------------------------------
    struct Array {
        std::string name, role;  // role: which of the three inputs it replaces
        std::vector<uint8_t> bytes;
    };
    auto npy_bytes = [&](const Tensor& t) {
        save_npy(dir / "tmp.npy", t);
        return read_file(dir / "tmp.npy");
    };
    Tensor nan_query = filled({1, 1, 8, 8}, 0.5f), inf_images = filled({1, 2, 1, 8, 8}, 0.25f);
    nan_query.data[17] = NAN;
    inf_images.data[40] = INFINITY;
    std::string rank40 = "(";
    for (int k = 0; k < 40; ++k) rank40 += "1, ";
    rank40 += ")";
    const std::vector<uint8_t> good_query = npy_bytes(filled({1, 1, 8, 8}, 0.5f));
    save_npy(dir / "si6.npy", filled({1, 2, 1, 6, 6}, 0.25f));
    save_npy(dir / "sl6.npy", filled({1, 2, 1, 6, 6}, 1.0f));
    const std::vector<Array> arrays = {
        {"terabytes.npy", "q", npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1048576, 1048576), }\n", 64)},
        {"overflow.npy", "si", npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999), }\n", 0)},
        {"object_dtype.npy", "q", npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1, 1, 8, 8), }\n", 512)},
        {"complex_dtype.npy", "sl", npy_with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 2, 1, 8, 8), }\n", 1024)},
        {"wrong_rank.npy", "q", npy_bytes(filled({64}, 0.5f))},
        {"rank40.npy", "si", npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': " + rank40 + ", }\n", 4)},
        {"truncated.npy", "q", std::vector<uint8_t>(good_query.begin(), good_query.end() - 9)},
        {"bad_magic.npy", "sl", std::vector<uint8_t>{'N', 'U', 'M', 'P', 'Y', 0, 0, 0, 0, 0, 0, 0}},
        {"nan_query.npy", "q", npy_bytes(nan_query)},
        {"inf_images.npy", "si", npy_bytes(inf_images)},
        {"not_multiple.npy", "q6", npy_bytes(filled({1, 1, 6, 6}, 0.5f))},
        {"no_supports.npy", "si", npy_bytes(filled({1, 0, 1, 8, 8}, 0.5f))},
        {"mismatched.npy", "sl", npy_bytes(filled({1, 3, 1, 8, 8}, 0.0f))},
    };
    for (const Array& a : arrays) {
        const std::string path = dir / a.name;
        write(path, a.bytes);
        // q6: a 6x6 problem, consistent but not a multiple of the model's 4.
        const bool six = a.role == "q6";
        const Run r = run_cli(dir, "run", run_args(kWeights, a.role[0] == 'q' ? path : dir / "q.npy",
                                               a.role == "si" ? path : dir / (six ? "si6.npy" : "si.npy"),
                                               a.role == "sl" ? path : dir / (six ? "sl6.npy" : "sl.npy")));
        check_refused(r, path, out_dir);
        ++kinds;
    }

    // --- images and volumes for segment ---------------------------------------------------
    fs::create_directories(dir.path / "support/images");
    fs::create_directories(dir.path / "support/labels");
    std::vector<uint16_t> img(20 * 24), lab(20 * 24, 0);
    for (size_t i = 0; i < img.size(); ++i) img[i] = uint16_t(i % 251), lab[i] = i % 24 > 12 ? 1 : 0;
    for (const char* s : {"s1", "s2"}) {
        save_png(dir / ("support/images/" + std::string(s) + ".png"), img, 20, 24, 1, 8);
        save_png(dir / ("support/labels/" + std::string(s) + ".png"), lab, 20, 24, 1, 8);
    }
    save_png(dir / "good1.png", img, 20, 24, 1, 8);
    save_png(dir / "good2.png", img, 20, 24, 1, 16);
    const std::vector<uint8_t> good_png = read_file(dir / "good1.png");
    Volume vol;
    vol.nx = 12, vol.ny = 8, vol.nz = 3;
    vol.voxels.assign(12 * 8 * 3, 5.0f);
    save_nifti(dir / "vol.nii", vol, kNiftiInt16);
    save_nifti(dir / "vol.nii.gz", vol, kNiftiInt16);
    const std::vector<uint8_t> nii = read_file(dir / "vol.nii"), niigz = read_file(dir / "vol.nii.gz");
    std::vector<uint8_t> bomb = nii, bad_magic = nii, bad_type = nii;
    for (int k : {1, 2, 3}) bomb[size_t(40 + 2 * k)] = 0xFF, bomb[size_t(41 + 2 * k)] = 0x7F;  // 32767^3 voxels
    bad_magic[345] = 'X';
    bad_type[70] = 32;  // complex64
    auto gz = [&](const std::vector<uint8_t>& b) { return detail::gzip(b, "gz"); };
    std::vector<std::pair<std::string, std::vector<uint8_t>>> images = {
        {"empty.png", {}},
        {"truncated.png", std::vector<uint8_t>(good_png.begin(), good_png.begin() + long(good_png.size() / 2))},
        {"text.png", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'}},
        {"huge_dims.png", png_declaring(100000, 100000)},
        {"wide.png", png_declaring(1u << 20, 1)},
        {"jpeg_dht_overflow.jpg", read_file(kData + "hostile/jpeg_dht_overflow.jpg")},
        {"jpeg_dht_overflow_fill.jpg", read_file(kData + "hostile/jpeg_dht_overflow_fill.jpg")},
        {"jpeg_scan_undefined_table.jpg", read_file(kData + "hostile/jpeg_scan_undefined_table.jpg")},
        {"pgm_size_overflow.pgm", read_file(kData + "hostile/pgm_size_overflow.pgm")},
        {"png_empty_idat.png", read_file(kData + "hostile/png_empty_idat.png")},
        {"png_idat_length.png", read_file(kData + "hostile/png_idat_length.png")},
        {"truncated.nii", std::vector<uint8_t>(nii.begin(), nii.end() - 10)},
        {"truncated.nii.gz", std::vector<uint8_t>(niigz.begin(), niigz.begin() + long(niigz.size() / 2))},
        {"bomb.nii.gz", gz(bomb)},
        {"bad_magic.nii", bad_magic},
        {"complex.nii", bad_type},
        {"not_gzip.nii.gz", std::vector<uint8_t>{0x1F, 0x8B, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8}},
    };
    // Issue 38: pixel data missing or short (stb returned uninitialised memory or zeros as the
    // image), colour tables indexed past, sizes below 1, slices the 2-D pipeline cannot take.
    for (const char* name : {"pgm_no_pixels.pgm", "ppm_short_pixels.ppm", "ppm_8192_in_17_bytes.ppm", "tga_header_only.tga",
                             "tga_rle_truncated.tga", "bmp_1000x1000_300_bytes.bmp", "bmp_palette_index.bmp",
                             "jpeg_no_scan.jpg", "jpeg_no_dqt.jpg", "png_invalid_distance.png", "pgm_zero_width.pgm", "nii_slice_16400.nii.gz", "nii_declares_16mb.nii.gz",
                             "nii_gz_20_bytes.nii.gz"})
        images.emplace_back(name, read_file(kData + "hostile/" + name));
    const std::string seg = "--weights " + quote(kWeights) + " --size 24x20 --quiet --support " + quote(dir / "support") +
                            " --out " + quote(out_dir) + " ";
    for (const auto& im : images) {
        const std::string path = dir / im.first;
        write(path, im.second);
        check_refused(run_cli(dir, "segment", seg + quote(path)), path, out_dir);
        ++kinds;
    }
    REQUIRE(mkfifo((dir / "a_pipe.png").c_str(), 0600) == 0);
    check_refused(run_cli(dir, "segment", seg + quote(dir / "a_pipe.png")), dir / "a_pipe.png", out_dir);
    {  // hostile weights through segment
        for (const char* name : {"crc_flipped.pt", "forbidden_global.pt", "nan_weights.safetensors", "views_bomb.pt"})
            check_refused(run_cli(dir, "segment", "--weights " + quote(dir / name) + " --size 24x20 --quiet --support " +
                                                  quote(dir / "support") + " --out " + quote(out_dir) + " " +
                                                  quote(dir / "good1.png")),
                          dir / name, out_dir);
    }
    {  // hostile support files: nothing is segmented
        const std::vector<std::pair<std::string, std::vector<uint8_t>>> supports = {
            {"support/images/s3.png", read_file(kData + "hostile/jpeg_dht_overflow.jpg")},
            {"support/labels/s3.png", png_declaring(100000, 100000)},
            // A label map whose samples are missing: stb made dozens of garbage labels of it.
            {"support/labels/s3.png", read_file(kData + "hostile/pgm_no_pixels.pgm")},
        };
        save_png(dir / "support/images/s3.png", img, 20, 24, 1, 8);
        save_png(dir / "support/labels/s3.png", std::vector<uint16_t>(10 * 10, 1), 10, 10, 1, 8);  // size differs
        check_refused(run_cli(dir, "segment", seg + quote(dir / "good1.png")), dir / "support/labels/s3.png", out_dir);
        for (const auto& s : supports) {
            save_png(dir / "support/images/s3.png", img, 20, 24, 1, 8);
            save_png(dir / "support/labels/s3.png", lab, 20, 24, 1, 8);
            write(dir / s.first, s.second);
            check_refused(run_cli(dir, "segment", seg + quote(dir / "good1.png")), dir / s.first, out_dir);
        }
        fs::remove(dir / "support/labels/s3.png");  // an image without a label map
        check_refused(run_cli(dir, "segment", seg + quote(dir / "good1.png")), dir / "support/images/s3.png", out_dir);
        fs::remove(dir / "support/images/s3.png");
    }
    {  // a batch: the bad queries fail alone, the good ones are written
        write(dir / "bad.png", read_file(kData + "hostile/jpeg_dht_overflow.jpg"));
        write(dir / "bomb.nii.gz", gz(bomb));
        const Run r = run_cli(dir, "segment", seg + quote(dir / "good1.png") + " " + quote(dir / "bad.png") + " " +
                                              quote(dir / "bomb.nii.gz") + " " + quote(dir / "good2.png"));
        INFO("stderr: " << r.err);
        CHECK(r.rc == 1);
        CHECK(r.err.find(dir / "bad.png") != std::string::npos);
        CHECK(r.err.find(dir / "bomb.nii.gz") != std::string::npos);
        CHECK(r.err.find("Sanitizer") == std::string::npos);
        std::vector<std::string> written = files_in(out_dir);
        std::sort(written.begin(), written.end());
        CHECK(written == std::vector<std::string>{out_dir + "/good1.png", out_dir + "/good2.png"});
        CHECK(load_label_map(out_dir + "/good2.png").width == 24);
    }
    {  // a valid top-down BMP (stb refused it) is segmented exactly as its PNG twin
        for (const char* name : {"bmp_top_down.bmp", "bmp_twin.png"}) write(dir / name, read_file(kData + "hostile/" + name));
        const Run r = run_cli(dir, "segment", seg + quote(dir / "bmp_top_down.bmp") + " " + quote(dir / "bmp_twin.png"));
        INFO("stderr: " << r.err);
        REQUIRE(r.rc == 0);
        const Image a = load_label_map(out_dir + "/bmp_top_down.png"), b = load_label_map(out_dir + "/bmp_twin.png");
        CHECK((a.width == 7 && a.height == 5 && a.pixels == b.pixels));
        for (const std::string& f : files_in(out_dir)) fs::remove(f);
    }
    // Number options: digits only, refused before they overflow (2^64 + 32 once wrapped in the
    // readers' parsers), no hex, spaces, "inf" or "nan".
    for (const std::string& option : {"--threads 18446744073709551648", "--threads 0x10", "--threads ' 2'",
                                      "--max-memory 0x1p10", "--max-memory 1e999", "--max-memory nan"}) {
        const Run r = run_cli(dir, "run", option + " " + run_args(kWeights, dir / "q.npy", dir / "si.npy", dir / "sl.npy"));
        INFO(option << "\nstderr: " << r.err);
        CHECK(r.rc == 1);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        CHECK(r.err.find(option.substr(0, option.find(' ')) + " must be") != std::string::npos);
    }
    INFO(kinds << " kinds of hostile files");
    CHECK(kinds > 20);
}

#else

TEST_CASE("hostile files through the CLI (skipped: the universeg program is not part of this build)", "[cli]") {
    WARN("built without the CLI (-DUNIVERSEG_BUILD_CLI=OFF)");
}

#endif

// ---- run, compare, make-case ----

#ifdef UNIVERSEG_CLI
namespace {

// Runs `universeg ARGS`; returns the exit code, stdout + stderr in `output`.
int cli(const std::string& args, std::string& output) {
    TempDir t("oracle_cli");
    const Run r = run_shell(quote(UNIVERSEG_CLI) + " " + args, t);
    output = r.out + r.err;
    return r.rc;
}

std::string golden_args(const std::string& name) {
    const std::string d = kGolden + name + "/";
    return "--weights '" + d + "weights.pt' --query '" + d + "query.npy' --support-images '" + d +
           "support_images.npy' --support-labels '" + d + "support_labels.npy' --threads 2";
}

void write_f64(const std::string& path, std::vector<int64_t> shape, std::vector<double> v) { save_npy_f64(path, shape, v.data()); }

}  // namespace

TEST_CASE("universeg run --dump writes every block's outputs under the reference module names") {
    TempDir t("oracle");
    std::string out;
    const std::string dump = t / "dump";
    REQUIRE(cli("run " + golden_args("custom_b1_s3_48x80") + " --out '" + (t / "l.npy") + "' --dump '" + dump + "'", out) == 0);
    const std::string act = kGolden + "custom_b1_s3_48x80/activations/";
    int files = 0;
    for (const char* part : {"enc", "dec"})
        for (int k = 0; k < 3; ++k)
            for (const char* which : {"target", "support"}) {
                const std::string golden = act + part + "_" + std::to_string(k) + "_" + which + ".npy";
                const std::string ours = dump + "/" + part + "_blocks." + std::to_string(k) + "." + which + ".npy";
                if (!std::filesystem::exists(golden)) continue;
                INFO(ours);
                REQUIRE(std::filesystem::exists(ours));
                const Tensor a = load_npy(ours), b = load_npy(golden);
                CHECK(a.shape == b.shape);
                CHECK(max_diff(a.data, b.data) <= 1e-4 * std::max(1.0, max_abs(b.data)));
                ++files;
            }
    CHECK(files == 10);
    CHECK(std::filesystem::exists(dump + "/dec_blocks.1.target.npy"));  // the last block: its support output too
    const Tensor logits = load_npy(dump + "/out_conv.npy"), golden = load_npy(kGolden + "custom_b1_s3_48x80/logits.npy");
    CHECK(logits.shape == golden.shape);
    CHECK(max_diff(logits.data, golden.data) <= 1e-4 * std::max(1.0, max_abs(golden.data)));
}

TEST_CASE("universeg run --precision fp64 writes the oracle's float64 logits") {
    TempDir t("oracle");
    std::string out;
    const std::string golden = kGolden + "custom_b1_s3_48x80/logits.npy";
    REQUIRE(cli("run " + golden_args("custom_b1_s3_48x80") + " --precision fp64 --out '" + (t / "l.npy") +
                    "' --reference '" + golden + "'",
                out) == 0);
    CHECK_THAT(out, Catch::Contains("PASS"));
    std::ifstream f(t / "l.npy", std::ios::binary);
    std::string head(64, '\0');
    f.read(&head[0], 64);
    CHECK_THAT(head, Catch::Contains("'descr': '<f8'"));
    const GoldenCase c = load_golden("custom_b1_s3_48x80");
    const std::vector<double> oracle =
        c.model.forward_reference<double>(c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W);
    CHECK(cli("compare '" + (t / "l.npy") + "' '" + golden + "' --atol 1e-4", out) == 0);
    const Tensor back = load_npy(t / "l.npy");  // as float32
    CHECK(max_diff(back.data, oracle) <= 1e-6 * std::max(1.0, max_abs(oracle)));
    CHECK(cli("run " + golden_args("custom_b1_s3_48x80") + " --precision fp64 --max-memory 64 --out '" + (t / "m.npy") + "'",
              out) == 1);
    CHECK_THAT(out, Catch::Contains("--max-memory"));
}

TEST_CASE("universeg run --max-memory writes the same logits file") {
    TempDir t("oracle");
    std::string out;
    REQUIRE(cli("run " + golden_args("custom_b1_s3_48x80") + " --out '" + (t / "a.npy") + "'", out) == 0);
    REQUIRE(cli("run " + golden_args("custom_b1_s3_48x80") + " --max-memory 6 --out '" + (t / "b.npy") + "'", out) == 0);
    CHECK_THAT(out, Catch::Contains("memory bound"));
    CHECK(read_file(t / "a.npy") == read_file(t / "b.npy"));
    CHECK(cli("run " + golden_args("custom_b1_s3_48x80") + " --max-memory 1 --out '" + (t / "c.npy") + "'", out) == 1);
    CHECK_THAT(out, Catch::Contains("is below the"));
}

TEST_CASE("universeg compare: errors, mask agreement, the first index beyond tolerance, exit codes") {
    TempDir t("oracle");
    std::string out;
    // Hand-computed: |A-B| = 0, 5e-5, 0.5, 0 and 2 (at (1,1)); masks differ at (1,1) only.
    write_f64(t / "a.npy", {2, 3}, {0, 1, 2, -3, 1, 4});
    write_f64(t / "b.npy", {2, 3}, {0, 1.00005, 2.5, -3, -1, 4});
    CHECK(cli("compare '" + (t / "a.npy") + "' '" + (t / "b.npy") + "'", out) == 1);
    CHECK_THAT(out, Catch::Contains("max |A-B|  = 2 at (1, 1)"));
    CHECK_THAT(out, Catch::Contains("mean |A-B| = 0.41667"));
    CHECK_THAT(out, Catch::Contains("max |A-B|/|B| = 2,"));
    CHECK_THAT(out, Catch::Contains("(1 of 6 elements differ)"));
    CHECK_THAT(out, Catch::Contains("2 of 6 elements, the first at (0, 2) (A = 2, B = 2.5): FAIL"));
    CHECK(cli("compare '" + (t / "a.npy") + "' '" + (t / "b.npy") + "' --atol 2", out) == 0);
    CHECK_THAT(out, Catch::Contains("PASS"));
    // At (1,1) |A-B| = 2 against atol + rtol*|B| = 0.6 + rtol: beyond with rtol 1, within with 1.5.
    CHECK(cli("compare '" + (t / "a.npy") + "' '" + (t / "b.npy") + "' --atol 0.6 --rtol 1", out) == 1);
    CHECK_THAT(out, Catch::Contains("1 of 6 elements, the first at (1, 1)"));
    CHECK(cli("compare '" + (t / "a.npy") + "' '" + (t / "b.npy") + "' --atol 0.6 --rtol 1.5", out) == 0);
    // Shapes: equal up to axes of size 1; otherwise an error (exit 1).
    write_f64(t / "c.npy", {1, 6}, {0, 1, 2, -3, 1, 4});
    CHECK(cli("compare '" + (t / "a.npy") + "' '" + (t / "c.npy") + "'", out) == 1);
    CHECK_THAT(out, Catch::Contains("shapes differ"));
    write_f64(t / "d.npy", {6, 1}, {0, 1, 2, -3, 1, 4});
    CHECK(cli("compare '" + (t / "c.npy") + "' '" + (t / "d.npy") + "' --atol 0", out) == 0);
    // NaN is beyond any tolerance.
    write_f64(t / "e.npy", {1, 6}, {0, 1, 2, -3, std::nan(""), 4});
    CHECK(cli("compare '" + (t / "e.npy") + "' '" + (t / "c.npy") + "' --atol 100", out) == 1);
    CHECK_THAT(out, Catch::Contains("first at (0, 4)"));
}

TEST_CASE("universeg make-case writes a test vector that run reproduces from either weights file") {
    TempDir t("oracle");
    std::string out;
    const std::string d = t / "case";
    REQUIRE(cli("make-case --config '[[8,4],[12,8],16]' --seed 7 --batch 2 --support-size 3 --size 16x24 --threads 2 --out '" +
                    d + "'",
                out) == 0);
    for (const char* f : {"weights.safetensors", "weights.pt", "query.npy", "support_images.npy", "support_labels.npy",
                          "logits.npy", "config.json"})
        CHECK(std::filesystem::exists(d + "/" + f));
    const StateDict a = load_state_dict(d + "/weights.pt"), b = load_state_dict(d + "/weights.safetensors");
    REQUIRE(a.size() == b.size());
    for (const auto& kv : a) {
        REQUIRE(b.count(kv.first));
        CHECK(kv.second.shape == b.at(kv.first).shape);
        CHECK(kv.second.data == b.at(kv.first).data);
    }
    CHECK(Model(a).config().to_string() == "encoder [[8,4],[12,8],16] decoder [[12,8],[8,4]]");
    CHECK(load_npy(d + "/support_images.npy").shape == std::vector<int64_t>{2, 3, 1, 16, 24});
    const Tensor labels = load_npy(d + "/support_labels.npy");
    for (float v : labels.data) CHECK((v == 0.0f || v == 1.0f));
    for (const char* w : {"weights.pt", "weights.safetensors"}) {
        const std::string args = "run --weights '" + d + "/" + w + "' --query '" + d + "/query.npy' --support-images '" + d +
                                 "/support_images.npy' --support-labels '" + d + "/support_labels.npy' --out '" +
                                 (t / "l.npy") + "' --reference '" + d + "/logits.npy'";
        CHECK(cli(args, out) == 0);
        CHECK_THAT(out, Catch::Contains("PASS"));
    }
    CHECK(cli("compare '" + (t / "l.npy") + "' '" + d + "/logits.npy' --atol 1e-5", out) == 0);
    CHECK(cli("make-case --config '[8,8' --out '" + (t / "x") + "'", out) == 1);
    CHECK_THAT(out, Catch::Contains("--config"));
    CHECK(cli("make-case --config '[8,8,8]' --size 18x24 --out '" + (t / "x") + "'", out) == 1);
    CHECK_THAT(out, Catch::Contains("multiples of 4"));
}
#endif  // UNIVERSEG_CLI

// ---- segment, eval, train, finetune, info, bench ----

#ifdef UNIVERSEG_CLI

namespace {

// Committed JPEGs (stb_image_write's JPEG encoder trips the UB sanitizer).
const std::string kImages = kData + "images/";

std::set<std::string> names_in(const std::string& dir) {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(fs::relative(e.path(), dir).string());
    return out;
}

// Float probabilities of a .npy or NIfTI file.
std::vector<float> float_probabilities(const std::string& path) {
    return image_extension(path) == ".npy" ? load_npy(path).data : load_nifti(path).voxels;
}

// Every file of the reference run is in `out` with the same bytes, and nothing else is. Float
// probabilities (.npy, NIfTI) are compared as values: the forward pass of commit 3109229 (the
// engine's one schedule) rounds some logits one float step away from e64b259's, which moves no
// label, 16-bit PNG or overlay, but does move float32 probabilities by about 1e-8.
void check_like_reference(const std::string& name, const std::string& out) {
    const std::string ref = kData + "segment/reference/" + name + "/";
    REQUIRE(names_in(ref) == names_in(out));
    for (const std::string& f : names_in(ref)) {
        INFO(name << ": " << f);
        const std::string e = image_extension(f);
        if (f.find("_prob_") != std::string::npos && e != ".png") {
            REQUIRE(max_diff(float_probabilities(ref + f), float_probabilities(out + "/" + f)) <= 1e-6);
        } else {
            REQUIRE(read_file(ref + f) == read_file(out + "/" + f));
        }
    }
}


// Runs `universeg ARGS` (ARGS already shell-quoted where needed), capturing its output.
// One thread: ctest runs test programs side by side, and busy-waiting OpenMP threads on a
// loaded machine would cost far more than the tiny model's work.
Run cli(const TempDir& dir, std::string args, const std::string& env = "") {
    if (args.rfind("segment ", 0) == 0) args.insert(8, "--threads 1 ");
    const std::string cmd = env + " " + quote(UNIVERSEG_CLI) + " " + args;
    const Run r = run_shell(cmd, dir);
    INFO(cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.rc >= 0);
    return r;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::set<float> values_of(const Image& img) { return std::set<float>(img.pixels.begin(), img.pixels.end()); }

// A support folder of five pairs in five formats and sizes, labels 0/3/7; queries in every
// readable format including 16-bit and an odd 300x217 RGB, plus a corrupt one.
void make_2d_fixture(const TempDir& dir) {
    for (const char* d : {"support/images", "support/labels", "queries"}) fs::create_directories(dir.path / d);
    auto sup = [&](const std::string& name, int h, int w, int seed, const std::string& ext, const std::string& lext) {
        const std::vector<uint8_t> g = grey_pattern(h, w, seed), l = label_pattern(h, w, seed);
        const std::string img = dir / ("support/images/" + name + ext), lab = dir / ("support/labels/" + name + lext);
        if (ext == ".png") REQUIRE(stbi_write_png(img.c_str(), w, h, 1, g.data(), w));
        if (ext == ".jpg") fs::copy_file(kImages + "pattern_rgb.jpg", img);  // 48x64; see make_fixtures.py
        if (ext == ".bmp") REQUIRE(stbi_write_bmp(img.c_str(), w, h, 3, to_rgb(g).data()));
        if (ext == ".tga") REQUIRE(stbi_write_tga(img.c_str(), w, h, 1, g.data()));
        if (lext == ".png") REQUIRE(stbi_write_png(lab.c_str(), w, h, 1, l.data(), w));
        if (lext == ".bmp") REQUIRE(stbi_write_bmp(lab.c_str(), w, h, 1, l.data()));
    };
    sup("s1", 40, 36, 1, ".png", ".png");
    sup("s2", 48, 64, 2, ".jpg", ".png");
    sup("s3", 217, 300, 3, ".bmp", ".bmp");
    sup("s4", 45, 33, 4, ".tga", ".png");
    {  // 16-bit RGB image with a 16-bit label map
        const std::vector<uint8_t> g = grey_pattern(50, 50, 5), l = label_pattern(50, 50, 5);
        std::vector<uint16_t> rgb, lab(l.begin(), l.end());
        for (uint8_t v : to_rgb(g)) rgb.push_back(uint16_t(v * 257));
        save_png(dir / "support/images/s5.png", rgb, 50, 50, 3, 16);
        save_png(dir / "support/labels/s5.png", lab, 50, 50, 1, 16);
    }
    const std::vector<uint8_t> q = grey_pattern(217, 300, 6);
    REQUIRE(stbi_write_png((dir / "queries/q_rgb.png").c_str(), 300, 217, 3, to_rgb(q).data(), 900));
    fs::copy_file(kImages + "pattern_grey.jpg", dir / "queries/q_jpeg.jpg");  // 29x37
    REQUIRE(stbi_write_bmp((dir / "queries/q_bmp.bmp").c_str(), 31, 41, 1, grey_pattern(41, 31, 8).data()));
    REQUIRE(stbi_write_tga((dir / "queries/q_tga.tga").c_str(), 64, 16, 4, std::vector<uint8_t>(64 * 16 * 4, 90).data()));
    std::vector<uint16_t> q16;
    for (uint8_t v : grey_pattern(47, 61, 9)) q16.push_back(uint16_t(v * 200));
    save_png(dir / "queries/q16.png", q16, 47, 61, 1, 16);
    std::ofstream(dir / "queries/bad.png") << "not a png";
    std::ofstream(dir / "queries/notes.txt") << "not an image either";
}

}  // namespace

TEST_CASE("segment: every format, odd sizes, multi-label, one bad query", "[cli][segment]") {
    TempDir dir("cli2d");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' --out '" +
                             dir / "out" + "' ";
    const Run r = cli(dir, base + "--overlay '" + dir / "queries" + "'");
    REQUIRE(r.rc == 1);  // bad.png and notes.txt failed ...
    REQUIRE(contains(r.err, "bad.png"));
    REQUIRE(contains(r.err, "notes.txt: not a supported image"));
    REQUIRE(contains(r.err, "2 of 7 queries failed"));
    REQUIRE(contains(r.out, "labels 3,7"));
    REQUIRE(!fs::exists(dir / "out/bad.png"));
    // ... and the others were written at their original sizes, with the support's label values.
    const std::map<std::string, std::pair<int64_t, int64_t>> sizes = {
        {"q_rgb", {217, 300}}, {"q_jpeg", {29, 37}}, {"q_bmp", {41, 31}}, {"q_tga", {16, 64}}, {"q16", {47, 61}}};
    for (const auto& kv : sizes) {
        INFO(kv.first);
        const Image lab = load_label_map(dir / ("out/" + kv.first + ".png"));
        REQUIRE(lab.height == kv.second.first);
        REQUIRE(lab.width == kv.second.second);
        for (float v : values_of(lab)) REQUIRE((v == 0 || v == 3 || v == 7));
        int w = 0, h = 0, c = 0;
        REQUIRE(stbi_info((dir / ("out/" + kv.first + "_overlay.png")).c_str(), &w, &h, &c));
        REQUIRE((h == kv.second.first && w == kv.second.second && c == 3));
    }
}

// What segment --tile auto printed (at the model size 16) and chose: windows when they
// calibrated higher by more than the tolerance, which the printed support line must agree with.
bool auto_chose_windows(const std::string& out) {
    const size_t at = out.find("--tile auto: calibrated mean Dice ");
    REQUIRE(at != std::string::npos);
    double tiled_dice = 0, whole_dice = 0;
    REQUIRE(std::sscanf(out.c_str() + at, "--tile auto: calibrated mean Dice %lf in 16x16 windows, %lf whole", &tiled_dice,
                        &whole_dice) == 2);
    const bool windows = tiled_dice > whole_dice + kCalibrationTolerance;
    REQUIRE(contains(out, "windows of up to 16x16 px") == windows);
    return windows;
}

TEST_CASE("segment --tile: examples and queries in windows, label maps at the query's size", "[cli][segment]") {
    TempDir dir("clitile");
    make_2d_fixture(dir);
    const Run r = cli(dir, "segment --weights '" + kWeights + "' --size 16 --flips 1 --tile 24 --support '" + dir / "support" +
                               "' --out '" + dir / "out" + "' '" + dir / "queries/q_rgb.png" + "' '" + dir / "queries/q16.png" + "'");
    REQUIRE(r.rc == 0);
    // s1 40x36: 2x2 windows; s2 48x64: 2x3; s3 217x300: 10x13, capped at 16; s4 45x33: 2x2; s5 50x50: 3x3.
    REQUIRE(contains(r.out, "support: 39 examples"));
    REQUIRE(contains(r.out, "windows of up to 24x24 px"));
    for (const auto& [name, size] : std::map<std::string, std::pair<int64_t, int64_t>>{{"q_rgb", {217, 300}}, {"q16", {47, 61}}}) {
        const Image lab = load_label_map(dir / ("out/" + name + ".png"));
        REQUIRE((lab.height == size.first && lab.width == size.second));
        for (float v : values_of(lab)) REQUIRE((v == 0 || v == 3 || v == 7));
    }

    // --tile auto: every example is at least twice the model size of 16 on each
    // side, so whole images and 16x16 windows are both calibrated, the printed Dice decide, and
    // the label maps are those of the chosen --tile given outright.
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    const Run autos = cli(dir, base + "--tile auto --out '" + dir / "auto" + "'" + q);
    REQUIRE(autos.rc == 0);
    const bool windows = auto_chose_windows(autos.out);
    const Run chosen = cli(dir, base + "--tile " + (windows ? "16" : "0") + " --out '" + dir / "chosen" + "'" + q);
    REQUIRE(chosen.rc == 0);
    REQUIRE(!contains(chosen.out, "--tile auto"));
    const Run plain = cli(dir, base + "--out '" + dir / "plain" + "'" + q);  // the default is whole images
    REQUIRE((plain.rc == 0 && !contains(plain.out, "--tile auto") && !contains(plain.out, "windows of up to")));
    REQUIRE(load_label_map(dir / "auto/q16.png").pixels == load_label_map(dir / "chosen/q16.png").pixels);
    // At the model size 32 the 33-px example is too small for windows: whole images, no choice.
    REQUIRE(!contains(cli(dir, "segment --weights '" + kWeights + "' --size 32 --flips 1 --tile auto --support '" + dir / "support" + "' --out '" +
                                   dir / "a32" + "'" + q).out, "--tile auto"));
}

TEST_CASE("segment: thresholds, probabilities, --label", "[cli][segment]") {
    TempDir dir("cliprob");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q_rgb.png" + "'";

    REQUIRE(cli(dir, base + "--quiet --threshold 0 --out '" + dir / "t0" + "'" + q).rc == 0);
    REQUIRE(values_of(load_label_map(dir / "t0/q_rgb.png")).count(0) == 0);  // sigmoid > 0 everywhere
    REQUIRE(cli(dir, base + "--quiet --threshold 1 --out '" + dir / "t1" + "'" + q).rc == 0);
    REQUIRE(values_of(load_label_map(dir / "t1/q_rgb.png")) == std::set<float>{0});

    // Uncalibrated, the label map is the per-pixel argmax of the written probabilities above 0.5.
    // Calibrated (5 supports: by default), the written probabilities are the uncalibrated ones
    // shifted by the printed offsets and weighted intensity evidence (recomputed here from the
    // supports prepared as the CLI prepares them), and the label map their argmax above 0.5.
    const Run raw = cli(dir, base + "--no-calibration --probabilities npy --out '" + dir / "raw" + "'" + q);
    REQUIRE(raw.rc == 0);
    REQUIRE(raw.err.empty());  // stderr is not a terminal: no progress bar
    REQUIRE(raw.out.find("calibrated") == std::string::npos);
    const Tensor r3 = load_npy(dir / "raw/q_rgb_prob_3.npy"), r7 = load_npy(dir / "raw/q_rgb_prob_7.npy");
    REQUIRE(r3.shape == std::vector<int64_t>{217, 300});
    const Image lab = load_label_map(dir / "raw/q_rgb.png");
    for (size_t i = 0; i < lab.pixels.size(); ++i) {
        const float a = r3.data[i], b = r7.data[i];
        REQUIRE((a >= 0 && a <= 1 && b >= 0 && b <= 1));
        REQUIRE(lab.pixels[i] == (std::max(a, b) > 0.5f ? (b > a ? 7.0f : 3.0f) : 0.0f));
    }
    const Run r = cli(dir, base + "--probabilities npy --out '" + dir / "p" + "'" + q);
    REQUIRE(r.rc == 0);
    const size_t at = r.out.find("calibrated on 5 examples");
    REQUIRE(at != std::string::npos);
    double o3 = NAN, o7 = NAN, w3 = NAN, w7 = NAN;
    REQUIRE(std::sscanf(r.out.c_str() + r.out.find("weight ", at), "weight 3:%lf,%lf 7:%lf,%lf", &o3, &w3, &o7, &w7) == 4);
    REQUIRE((o3 != 0 || o7 != 0 || w3 != 0 || w7 != 0));  // this fixture's boxes need calibrating
    SupportSet set;  // the supports prepared as the CLI prepares them: normalised at their own size
    set.height = set.width = 32;
    std::vector<float> all_images, all_labels;  // every support pixel at its own size
    for (const std::string& f : list_image_files(dir / "support/images")) {
        const std::string label = dir / ("support/labels/" + image_stem(f) + (image_stem(f) == "s3" ? ".bmp" : ".png"));
        Image img = load_image(f);
        normalize_min_max(img);
        const Image lab = load_label_map(label);
        REQUIRE(img.pixels.size() <= size_t(kSupportSamples));  // so the evidence sees every pixel
        all_images.insert(all_images.end(), img.pixels.begin(), img.pixels.end());
        all_labels.insert(all_labels.end(), lab.pixels.begin(), lab.pixels.end());
        add_support_resized(set, img, lab, f);
    }
    REQUIRE(set.size() == 5);
    const std::vector<double> e3 = intensity_log_ratios(set, 3), e7 = intensity_log_ratios(set, 7);
    Image query = load_image(dir / "queries/q_rgb.png");
    normalize_min_max(query);
    const Tensor p3 = load_npy(dir / "p/q_rgb_prob_3.npy"), p7 = load_npy(dir / "p/q_rgb_prob_7.npy");
    const Image labc = load_label_map(dir / "p/q_rgb.png");
    for (size_t i = 0; i < labc.pixels.size(); ++i) {
        const size_t bin = size_t(intensity_bin(query.pixels[i]));
        const double a = logit(r3.data[i]) + o3 + w3 * e3[bin], b = logit(r7.data[i]) + o7 + w7 * e7[bin];
        REQUIRE(p3.data[i] == Approx(sigmoid(a)).margin(1e-6));
        REQUIRE(p7.data[i] == Approx(sigmoid(b)).margin(1e-6));
        REQUIRE(labc.pixels[i] == (std::max(a, b) > 0 ? (b > a ? 7.0f : 3.0f) : 0.0f));
    }
    // The classical classifier instead of the network: each label's histogram_baseline on every
    // pixel of the supports at their own size and the normalised query, the lower value first.
    const Run h = cli(dir, base + "--histogram-baseline --out '" + dir / "h" + "'" + q);
    REQUIRE(h.rc == 0);
    REQUIRE(h.out.find("histogram classifier") != std::string::npos);
    const Image labh = load_label_map(dir / "h/q_rgb.png");
    std::vector<float> m3(all_labels.size()), m7(all_labels.size()), c3(query.pixels.size()), c7(query.pixels.size());
    for (size_t i = 0; i < m3.size(); ++i) m3[i] = all_labels[i] == 3, m7[i] = all_labels[i] == 7;
    const int64_t n = int64_t(all_images.size());
    histogram_baseline(all_images.data(), m3.data(), 1, n, query.pixels.data(), int64_t(c3.size()), c3.data());
    histogram_baseline(all_images.data(), m7.data(), 1, n, query.pixels.data(), int64_t(c7.size()), c7.data());
    for (size_t i = 0; i < labh.pixels.size(); ++i) REQUIRE(labh.pixels[i] == (c3[i] > 0 ? 3.0f : c7[i] > 0 ? 7.0f : 0.0f));
    REQUIRE(std::set<float>(labh.pixels.begin(), labh.pixels.end()).size() > 1);
    REQUIRE(cli(dir, base + "--histogram-baseline --probabilities png --out '" + dir / "h2" + "'" + q).rc != 0);

    REQUIRE(cli(dir, base + "--quiet --no-calibration --label 7 --probabilities png --out '" + dir / "l7" + "'" + q).rc == 0);
    for (float v : values_of(load_label_map(dir / "l7/q_rgb.png"))) REQUIRE((v == 0 || v == 7));
    REQUIRE(!fs::exists(dir / "l7/q_rgb_prob_3.png"));
    const std::vector<uint8_t> png16 = read_file(dir / "l7/q_rgb_prob_7.png");
    REQUIRE(stbi_is_16_bit_from_memory(png16.data(), int(png16.size())));
    const Image prob7 = load_image(dir / "l7/q_rgb_prob_7.png");
    for (size_t i = 0; i < prob7.pixels.size(); i += 97) REQUIRE(prob7.pixels[i] == Approx(r7.data[i]).margin(1.0 / 65535));
}

TEST_CASE("segment: at the model size the output is exactly the model's", "[cli][segment]") {
    // Images and labels at 32x32 holding 0 and 255, so normalising and resizing are identities
    // and the probabilities must equal sigmoid(forward) on the decoded pixels.
    TempDir dir("cliexact");
    fs::create_directories(dir.path / "s/images");
    fs::create_directories(dir.path / "s/labels");
    const int H = 32, W = 32, S = 3;
    std::vector<float> images, masks;
    for (int i = 0; i < S; ++i) {
        const std::vector<uint8_t> g = grey_pattern(H, W, i);
        std::vector<uint8_t> l = label_pattern(H, W, i);
        for (uint8_t& v : l) v = v == 7;
        const std::string name = "p" + std::to_string(i) + ".png";
        REQUIRE(stbi_write_png((dir / ("s/images/" + name)).c_str(), W, H, 1, g.data(), W));
        REQUIRE(stbi_write_png((dir / ("s/labels/" + name)).c_str(), W, H, 1, l.data(), W));
        for (uint8_t v : g) images.push_back(float(v / 255.0));
        for (uint8_t v : l) masks.push_back(float(v));
    }
    const std::vector<uint8_t> qg = grey_pattern(H, W, 11);
    REQUIRE(stbi_write_png((dir / "q.png").c_str(), W, H, 1, qg.data(), W));
    std::vector<float> query, logits(size_t(H * W));
    for (uint8_t v : qg) query.push_back(float(v / 255.0));
    model().forward(query.data(), images.data(), masks.data(), 1, S, H, W, logits.data());

    const Run r = cli(dir, "segment --quiet --weights '" + kWeights + "' --size 32x32 --support '" + dir / "s" + "' --out '" +
                               dir / "o" + "' --flips 1 --probabilities npy '" + dir / "q.png" + "'");
    REQUIRE(r.rc == 0);
    const Tensor p = load_npy(dir / "o/q_prob_1.npy");
    REQUIRE(p.numel() == H * W);
    for (int i = 0; i < H * W; ++i) REQUIRE(p.data[size_t(i)] == Approx(sigmoid(logits[size_t(i)])).margin(1e-5));
}

// `after` holds the same tensors as `before` (names and shapes), and training changed some values.
void require_trained_from(const StateDict& before, const StateDict& after) {
    REQUIRE(after.size() == before.size());
    bool changed = false;
    for (const auto& [key, t] : before) {
        REQUIRE(after.count(key));
        REQUIRE(after.at(key).shape == t.shape);
        changed = changed || after.at(key).data != t.data;
    }
    REQUIRE(changed);
}

TEST_CASE("finetune: held-out Dice before and after, weights written whole, clear errors", "[cli]") {
    TempDir dir("clift");
    make_2d_fixture(dir);
    const std::string base = "finetune --threads 1 --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' ";
    Run r = cli(dir, base + "--steps 0");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "held-out Dice before"));
    REQUIRE(contains(r.out, "histogram baseline"));
    // Without --weights, the default weights (here from UNIVERSEG_WEIGHTS), as segment takes them.
    const Run by_default = cli(dir, "finetune --threads 1 --size 32 --support '" + dir / "support" + "' --steps 0",
                               "UNIVERSEG_WEIGHTS='" + kWeights + "'");
    REQUIRE(by_default.rc == 0);
    REQUIRE(by_default.out == r.out);

    r = cli(dir, base + "--steps 3 --out '" + dir / "tuned.safetensors" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "held-out Dice after 3 steps"));
    require_trained_from(load_state_dict(kWeights), load_state_dict(dir / "tuned.safetensors"));
    for (const auto& e : fs::directory_iterator(dir.path)) REQUIRE(e.path().filename().string().find(".tmp") == std::string::npos);

    r = cli(dir, base + "--steps 3");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--out"));
    r = cli(dir, "finetune --weights '" + kWeights + "' --support '" + dir / "nowhere" + "' --steps 0");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "nowhere"));
}

// The number printed after `marker` in `text` (the first occurrence), or -1.
double number_after(const std::string& text, const std::string& marker) {
    const size_t at = text.find(marker);
    return at == std::string::npos ? -1.0 : std::atof(text.c_str() + at + marker.size());
}

TEST_CASE("train: checkpoints, log and chart; --init starts a new run from trained weights", "[cli]") {
    TempDir dir("clitrain");
    const std::string common = "train --threads 1 --size 16 --support-size 2 --eval-tasks 2 --eval-support 2 --eval-queries 1 "
                               "--steps 4 --eval-every 2 --checkpoint-every 2 ";
    const std::string a = dir / "a.safetensors";
    // Without a moving average (--ema 0) the shipped weights are the last step's, whose Dice
    // differs from the initial weights': a new run from them must start at that Dice.
    Run r = cli(dir, common + "--config '[8,8]' --seed 3 --ema 0 --out '" + a + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "final checkpoint at step 4"));
    for (const char* f : {"a.safetensors", "a.ckpt.safetensors", "a.log.csv", "a.svg"}) REQUIRE(fs::file_size(dir / f) > 0);
    const double a_dice = number_after(r.out, "step 4 held-out Dice "), a_init = number_after(r.out, "step 0 held-out Dice ");
    REQUIRE(a_dice >= 0);
    REQUIRE(a_dice != Approx(a_init).margin(1e-3));

    // From the weights file or from the checkpoint, the new run's first evaluation (step 0, the
    // same held-out set) gives the Dice that a's last evaluation gave.
    for (const std::string from : {a, dir / "a.ckpt.safetensors"}) {
        const std::string c = dir / "c.safetensors";
        r = cli(dir, common + "--seed 4 --init '" + from + "' --out '" + c + "'");
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "starting from the weights in"));
        REQUIRE(number_after(r.out, "step 0 held-out Dice ") == Approx(a_dice).margin(1e-4));
        require_trained_from(load_state_dict(a), load_state_dict(c));
    }

    // --eval-only: the same evaluation of the weights or of the checkpoint, and nothing written.
    const auto files_in = [&] { return std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()); };
    const auto files_before = files_in();
    const std::string eval_only = "train --threads 1 --size 16 --eval-tasks 2 --eval-support 2 --eval-queries 1 --eval-only ";
    for (const std::string from : {"--init '" + a + "'", "--resume '" + dir / "a.ckpt.safetensors" + "'"}) {
        r = cli(dir, eval_only + from);
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "evaluating"));
        REQUIRE(number_after(r.out, "held-out Dice ") == Approx(a_dice).margin(1e-4));
        REQUIRE(files_in() == files_before);
    }
    r = cli(dir, eval_only);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--init"));
    r = cli(dir, eval_only + "--init '" + a + "' --data '" + dir.path.string() + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "finetune"));

    r = cli(dir, common + "--init '" + a + "' --resume '" + dir / "a.ckpt.safetensors" + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--init"));
    r = cli(dir, common + "--config '[8,8,8]' --init '" + a + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--config"));
    r = cli(dir, common + "--init '" + dir / "missing.safetensors" + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "missing.safetensors"));
    REQUIRE(!fs::exists(dir / "d.safetensors"));
}

#ifndef UNIVERSEG_MPIEXEC
// Started by mpirun or srun as one of several processes, a build without MPI would train N
// times over, each process writing the same files: it refuses (tests/test_mpi.cpp: the MPI build).
TEST_CASE("train and finetune refuse to run as one of several processes in a build without MPI", "[cli]") {
    TempDir dir("clinompi");
    for (const char* env : {"OMPI_COMM_WORLD_SIZE=2", "PMI_SIZE=4"}) {
        const Run r = cli(dir, "train --threads 1 --size 16 --steps 2 --out '" + dir / "a.safetensors" + "'", env);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "this build has no MPI support"));
        REQUIRE(contains(r.err, "-DUNIVERSEG_MPI=ON"));
        REQUIRE(cli(dir, "finetune --weights '" + kWeights + "' --support '" + dir.path.string() + "' --steps 0", env).rc == 1);
    }
    REQUIRE(!fs::exists(dir / "a.safetensors"));
    // One process is one process.
    REQUIRE(cli(dir, "train --threads 1 --size 16 --config '[8,8]' --support-size 2 --eval-tasks 0 --steps 2 --out '" +
                         dir / "a.safetensors" + "'", "OMPI_COMM_WORLD_SIZE=1").rc == 0);
}
#endif

TEST_CASE("info, bench and bench-chart", "[cli]") {
    TempDir dir("cliinfo");
    // The architectures and v1's parameter count as the reference model and the paper give them.
    Run r = cli(dir, "info '" + std::string(UNIVERSEG_TEST_DATA) + "/golden/v1_b2_s4_128/weights.pt'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "encoder [64,64,64,64] decoder [64,64,64]"));
    REQUIRE(contains(r.out, "parameters:    1182785"));
    REQUIRE(contains(r.out, "multiples of 8"));
    r = cli(dir, "info '" + kWeights + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "encoder [[16,8],[24,16],32] decoder [[24,16],[16,8]]"));  // the case's config.json
    REQUIRE(contains(r.out, "multiples of 4"));

    const std::string bench = "bench --threads 1 --weights '" + kWeights + "' --support-size 2 --size 32 --repeats 2 ";
    r = cli(dir, bench);
    REQUIRE(r.rc == 0);
    const double median = number_after(r.out, "median_ms="), fastest = number_after(r.out, "min_ms=");
    REQUIRE(median > 0);
    REQUIRE(fastest > 0);
    REQUIRE(fastest <= median);
    REQUIRE(number_after(r.out, "peak_rss_mb=") > 0);
    REQUIRE(contains(r.out, "S=2 B=1 size=32 threads=1 precision=fp32"));
    r = cli(dir, bench + "--json");
    REQUIRE(r.rc == 0);
    REQUIRE(number_after(r.out, "\"median_ms\": ") > 0);
    REQUIRE(contains(r.out, "\"support_size\": 2"));
    r = cli(dir, bench + "--support-size 0");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--support-size"));
    r = cli(dir, "bench --weights '" + kWeights + "' --size 30 --repeats 1");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "30x30"));

    {
        std::ofstream t(dir / "r.tsv");
        t << "engine\tsupport_size\tmedian_ms\nuniverseg\t1\t20\nuniverseg\t8\t60\nPyTorch\t1\t1300\nPyTorch\t8\t2400\n";
    }
    r = cli(dir, "bench-chart --in '" + dir / "r.tsv" + "' --out '" + dir / "c.svg" + "'");
    REQUIRE(r.rc == 0);
    const std::string svg = slurp(dir / "c.svg");
    REQUIRE(svg.rfind("<svg", 0) == 0);
    size_t lines = 0;
    for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++lines;
    REQUIRE(lines == 2);  // one per engine
    REQUIRE(contains(svg, "PyTorch"));
    {
        std::ofstream t(dir / "bad.tsv");
        t << "engine\tS\n";
    }
    r = cli(dir, "bench-chart --in '" + dir / "bad.tsv" + "' --out '" + dir / "d.svg" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "bad.tsv"));
    REQUIRE(!fs::exists(dir / "d.svg"));
}

TEST_CASE("segment: ensembles and support subsets", "[cli][segment]") {
    TempDir dir("cliens");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 16x24 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    const Run a = cli(dir, base + "--ensemble 3 --support-size 2 --seed 4 --probabilities npy --out '" + dir / "a" + "'" + q);
    REQUIRE(a.rc == 0);
    REQUIRE(contains(a.out, "2 per prediction, ensemble of 3"));
    const Run b = cli(dir, base + "--ensemble 3 --support-size 2 --seed 4 --probabilities npy --out '" + dir / "b" + "'" + q);
    REQUIRE(b.rc == 0);
    REQUIRE(load_npy(dir / "a/q16_prob_3.npy").data == load_npy(dir / "b/q16_prob_3.npy").data);  // seeded
    const Run c = cli(dir, base + "--ensemble 3 --support-size 2 --seed 5 --probabilities npy --out '" + dir / "c" + "'" + q);
    REQUIRE(c.rc == 0);
    REQUIRE(load_npy(dir / "a/q16_prob_3.npy").data != load_npy(dir / "c/q16_prob_3.npy").data);
    // All five supports leave a single subset to draw.
    const Run d = cli(dir, base + "--ensemble 4 --out '" + dir / "d" + "'" + q);
    REQUIRE(d.rc == 0);
    REQUIRE(contains(d.out, "ensemble of 4 asked for but only 1 distinct subset(s) exist"));
}

TEST_CASE("segment: NIfTI volumes slice by slice, with the query's header", "[cli][segment][nifti]") {
    TempDir dir("clinii");
    fs::create_directories(dir.path / "s/images");
    fs::create_directories(dir.path / "s/labels");
    auto volume = [](int64_t nx, int64_t ny, int64_t nz, bool labels) {
        Volume v;
        v.nx = nx, v.ny = ny, v.nz = nz;
        v.header.pixdim = {1, 0.8f, 0.8f, 2.5f, 0, 0, 0, 0};
        v.header.sform_code = 1;
        v.header.srow_x = {0.8f, 0, 0, -10};
        v.header.srow_y = {0, 0.8f, 0, 5};
        v.header.srow_z = {0, 0, 2.5f, 7};
        for (int64_t z = 0; z < nz; ++z)
            for (int64_t y = 0; y < ny; ++y)
                for (int64_t x = 0; x < nx; ++x) {
                    const bool in = (x - nx / 2) * (x - nx / 2) + (y - ny / 2) * (y - ny / 2) < nx * ny / 8 && z > 0;
                    v.voxels.push_back(labels ? (in ? 2.0f : 0.0f) : float(in ? 900 : -100 + x + y));
                }
        return v;
    };
    save_nifti(dir / "s/images/a.nii.gz", volume(20, 24, 5, false), kNiftiInt16);
    save_nifti(dir / "s/labels/a.nii.gz", volume(20, 24, 5, true), kNiftiUint8);
    Volume q = volume(28, 20, 3, false);
    q.header.descrip = "query volume";
    save_nifti(dir / "q.nii", q, kNiftiFloat32);

    const Run r = cli(dir, "segment --weights '" + kWeights + "' --size 16 --clip 1,99 --overlay --support '" + dir / "s" +
                               "' --out '" + dir / "o" + "' '" + dir / "q.nii" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "4 examples"));  // the labelled slices z = 1..4
    const Volume out = load_nifti(dir / "o/q.nii");
    REQUIRE((out.nx == 28 && out.ny == 20 && out.nz == 3));
    REQUIRE(out.header.datatype == kNiftiUint8);
    REQUIRE(nifti_affine(out.header) == nifti_affine(q.header));
    REQUIRE(out.header.descrip == "query volume");
    for (float v : out.voxels) REQUIRE((v == 0 || v == 2));
    REQUIRE(fs::exists(dir / "o/q_overlay.png"));

    // Along another axis, with probabilities as float32 volumes.
    const Run r0 = cli(dir, "segment --quiet --weights '" + kWeights + "' --size 16 --axis 0 --probabilities npy --support '" +
                                dir / "s" + "' --out '" + dir / "o0" + "' '" + dir / "q.nii" + "'");
    REQUIRE(r0.rc == 0);
    const Volume p = load_nifti(dir / "o0/q_prob_2.nii");
    REQUIRE(p.header.datatype == kNiftiFloat32);
    REQUIRE((p.nx == 28 && p.ny == 20 && p.nz == 3));
    for (float v : p.voxels) REQUIRE((v >= 0 && v <= 1));

    // --tile auto on volumes: slices of 36x40 and 40x36 are at least twice the model size, so
    // windows are calibrated too (a volume's slices and windows held out together), and the
    // label volume is that of the chosen --tile given outright.
    fs::create_directories(dir.path / "t/images");
    fs::create_directories(dir.path / "t/labels");
    save_nifti(dir / "t/images/a.nii.gz", volume(36, 40, 4, false), kNiftiInt16);
    save_nifti(dir / "t/labels/a.nii.gz", volume(36, 40, 4, true), kNiftiUint8);
    save_nifti(dir / "t/images/b.nii", volume(40, 36, 4, false), kNiftiInt16);
    save_nifti(dir / "t/labels/b.nii", volume(40, 36, 4, true), kNiftiUint8);
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "t" + "' ";
    const Run autos = cli(dir, base + "--tile auto --out '" + dir / "ta" + "' '" + dir / "q.nii" + "'");
    REQUIRE(autos.rc == 0);
    REQUIRE(contains(autos.out, "calibrated on 6 examples"));  // the labelled slices z = 1..3 of each
    const bool windows = auto_chose_windows(autos.out);
    const Run chosen = cli(dir, base + "--tile " + (windows ? "16" : "0") + " --out '" + dir / "tc" + "' '" + dir / "q.nii" + "'");
    REQUIRE(chosen.rc == 0);
    REQUIRE(load_nifti(dir / "ta/q.nii").voxels == load_nifti(dir / "tc/q.nii").voxels);
}

TEST_CASE("segment: clear errors naming the file or option", "[cli][segment]") {
    TempDir dir("clierr");
    make_2d_fixture(dir);
    const std::string w = "--weights '" + kWeights + "' --size 32 ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    Run r = cli(dir, "segment " + w + "--support '" + dir / "nowhere" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "nowhere"));

    fs::copy_file(dir / "queries/q_bmp.bmp", dir / "support/images/s9.bmp");  // image without label
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "s9.bmp"));
    fs::copy_file(dir / "support/labels/s1.png", dir / "support/labels/s9.png");  // label of the wrong size
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "s9.png"));
    REQUIRE(contains(r.err, "does not match"));
    fs::remove(dir / "support/images/s9.bmp");
    fs::remove(dir / "support/labels/s9.png");

    r = cli(dir, "segment --weights '" + dir / "missing.pt" + "' --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "missing.pt"));
    r = cli(dir, "segment --weights '" + kWeights + "' --size 30 --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "multiple of 4"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --clip 9,2" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--clip"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --tile -1" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--tile"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --tile whole" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--tile"));
    for (const char* flips : {"3", "8", "0"}) {
        r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --flips " + flips + q);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "--flips"));
    }
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "QUERY"));
    // The default weights can come from UNIVERSEG_WEIGHTS.
    r = cli(dir, "segment --quiet --size 32 --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q,
            "UNIVERSEG_WEIGHTS='" + kWeights + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(fs::exists(dir / "o/q16.png"));
}

TEST_CASE("segment: the weights' image_size metadata sets the model size", "[cli][segment]") {
    TempDir dir("climeta");
    make_2d_fixture(dir);
    save_safetensors(dir / "w.safetensors", model().state_dict(), {{"image_size", "24x20"}});
    const std::string base = "segment --weights '" + dir / "w.safetensors" + "' --support '" + dir / "support" + "' --out '" +
                             dir / "o" + "' '" + dir / "queries/q16.png" + "'";
    Run r = cli(dir, base);
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "model size 24x20"));
    r = cli(dir, base + " --size 16");  // the option wins
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "model size 16x16"));
}

TEST_CASE("eval: Dice and IoU per label and image, CSV", "[cli][segment]") {
    TempDir dir("clieval");
    fs::create_directories(dir.path / "truth/labels");
    fs::create_directories(dir.path / "pred");
    // a: label 1 truth 4 px, pred 6 px, 3 shared -> Dice 0.6, IoU 3/7; label 2 truth 2, pred 0 -> 0.
    const uint8_t ta[] = {1, 1, 1, 1, 2, 2, 0, 0, 0, 0}, pa[] = {1, 1, 1, 0, 1, 1, 1, 0, 0, 0};
    // b: label 1 exact (2 px) -> 1; label 2 absent from both -> not scored.
    const uint8_t tb[] = {1, 1, 0, 0}, pb[] = {1, 1, 0, 0};
    REQUIRE(stbi_write_png((dir / "truth/labels/a.png").c_str(), 5, 2, 1, ta, 5));
    REQUIRE(stbi_write_png((dir / "pred/a.png").c_str(), 5, 2, 1, pa, 5));
    REQUIRE(stbi_write_png((dir / "truth/labels/b.png").c_str(), 2, 2, 1, tb, 2));
    REQUIRE(stbi_write_png((dir / "pred/b.png").c_str(), 2, 2, 1, pb, 2));
    REQUIRE(stbi_write_png((dir / "pred/b_overlay.png").c_str(), 2, 2, 1, pb, 2));  // ignored
    const Run r = cli(dir, "eval --pred '" + dir / "pred" + "' --truth '" + dir / "truth" + "' --csv '" + dir / "e.csv" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(slurp(dir / "e.csv") ==
            "image,label,dice,iou,truth_pixels,pred_pixels,overlap_pixels\n"
            "a,1,0.6000,0.4286,4,6,3\n"
            "a,2,0.0000,0.0000,2,0,0\n"
            "b,1,1.0000,1.0000,2,2,2\n");
    // label 1 over a and b: mean (0.6 + 1) / 2 = 0.8, sample sd sqrt(0.08) = 0.2828
    REQUIRE(contains(r.out, "label 1: dice 0.8000 +- 0.2828 (min 0.6000, max 1.0000)"));
    REQUIRE(contains(r.out, "mean over 2 labels: dice 0.4000"));

    REQUIRE(stbi_write_png((dir / "truth/labels/c.png").c_str(), 2, 2, 1, tb, 2));  // no prediction
    REQUIRE(stbi_write_png((dir / "truth/labels/d.png").c_str(), 2, 2, 1, tb, 2));
    REQUIRE(stbi_write_png((dir / "pred/d.png").c_str(), 1, 4, 1, tb, 1));  // wrong size
    const Run bad = cli(dir, "eval --pred '" + dir / "pred" + "' --truth '" + dir / "truth" + "'");
    REQUIRE(bad.rc == 1);
    REQUIRE(contains(bad.err, "c.png"));
    REQUIRE(contains(bad.err, "d.png"));
    REQUIRE(contains(bad.out, "label 1: dice 0.8000"));  // the others are still scored
}

TEST_CASE("segment in shards with a saved task writes what one run writes, byte for byte; eval --merge", "[cli][segment]") {
    TempDir dir("clishard");
    make_2d_fixture(dir);
    fs::remove(dir / "queries/bad.png");
    fs::remove(dir / "queries/notes.txt");
    // Ten queries: five images and the five examples, whose label maps are the ground truth. (A
    // saved --tile auto choice: "Segmenter: what calibration decided...", without the cost of
    // windows here.)
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries" + "' '" + dir / "support/images" + "'";
    const std::string outputs = "--overlay --probabilities png ";
    REQUIRE(cli(dir, base + outputs + "--out '" + dir / "one" + "'" + q).rc == 0);

    const std::string task = dir / "task.txt";
    Run r = cli(dir, base + "--save-task '" + task + "'");  // no queries, no --out: calibrate, save, stop
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "saved the task's calibration to"));
    REQUIRE(slurp(task).rfind("universeg task 1\n", 0) == 0);
    std::set<std::string> all;
    for (int k = 1; k <= 3; ++k) {
        const std::string out = dir / ("shard" + std::to_string(k));
        r = cli(dir, base + outputs + "--task '" + task + "' --shard " + std::to_string(k) + "/3 --out '" + out + "'" + q);
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "as saved in " + task));
        REQUIRE(contains(r.out, "of shard " + std::to_string(k) + "/3 (10 in all)"));
        for (const std::string& f : names_in(out)) {
            REQUIRE(all.insert(f).second);  // no query in two shards
            REQUIRE(read_file(out + "/" + f) == read_file(dir / ("one/" + f)));
        }
    }
    REQUIRE(all == names_in(dir / "one"));
    // Shards with nothing to do: more shards than queries.
    r = cli(dir, base + "--task '" + task + "' --shard 12/12 --out '" + dir / "empty" + "'" + q);
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "shard 12/12: none of the 10 queries"));
    REQUIRE(!fs::exists(dir / "empty"));

    // The shards' tables, merged, are the table and the summary of one eval over everything.
    const std::string truth = " --truth '" + dir / "support" + "' ";
    const Run whole = cli(dir, "eval --pred '" + dir / "one" + "'" + truth + "--csv '" + dir / "one.csv" + "'");
    REQUIRE(whole.rc == 0);
    std::string tables;
    for (int k = 1; k <= 3; ++k) {
        const std::string csv = dir / ("e" + std::to_string(k) + ".csv");
        r = cli(dir, "eval --only-predicted --pred '" + dir / ("shard" + std::to_string(k)) + "'" + truth + "--csv '" + csv + "'");
        REQUIRE(r.rc == 0);
        tables += " '" + csv + "'";
    }
    REQUIRE(cli(dir, "eval --pred '" + dir / "shard1" + "'" + truth).rc == 1);  // without --only-predicted: the others missing
    const Run merged = cli(dir, "eval --merge" + tables + " --csv '" + dir / "merged.csv" + "'");
    REQUIRE(merged.rc == 0);
    REQUIRE(merged.out == whole.out);
    REQUIRE(slurp(dir / "merged.csv") == slurp(dir / "one.csv"));
    r = cli(dir, "eval --merge '" + dir / "e1.csv" + "' '" + dir / "e1.csv" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "the tables overlap"));
    r = cli(dir, "eval --merge '" + task + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, task + ": not a table of universeg eval --csv"));

    // A task file is refused unless the weights, the examples and the options are its own: by name,
    // before anything is written.
    auto refused = [&](const std::string& args, const std::string& why) {
        const Run bad = cli(dir, args + " --task '" + task + "' --out '" + dir / "refused" + "'" + q);
        CHECK(bad.rc == 1);
        CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
        CHECK_THAT(bad.err, Contains(why));
        CHECK(!fs::exists(dir / "refused"));
    };
    refused(base + "--seed 1", "--task " + task + " was saved with --seed 0, and this run has --seed 1");
    refused(base + "--clip 1,99", "was saved with --clip 0,100, and this run has --clip 1,99");
    refused(base + "--tile auto", "was saved with --tile 0, and this run has --tile auto");
    refused(base + "--no-calibration", "--no-calibration");
    const std::string converted = dir / "w.safetensors";
    REQUIRE(cli(dir, "convert '" + kWeights + "' '" + converted + "'").rc == 0);  // the same weights, other bytes
    refused("segment --weights '" + converted + "' --size 16 --flips 1 --support '" + dir / "support" + "'",
            "was saved with other weights");
    fs::copy(dir / "support", dir / "support2", fs::copy_options::recursive);
    fs::copy_file(dir / "support/labels/s1.png", dir / "support2/labels/s5.png", fs::copy_options::overwrite_existing);
    refused("segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support2" + "'",
            "was saved from other examples");
    std::ofstream(dir / "not_a_task.txt") << "hello\n";
    r = cli(dir, base + "--task '" + dir / "not_a_task.txt" + "' --out '" + dir / "refused" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, dir / "not_a_task.txt" + ": not a task file"));
    // Choices by hand: the saved file with `line` (its value one character) set to `value` is
    // refused with `message`, and nothing written. A region choice that is none of 0 to 3;
    // example types where these examples are one type. A file without regions (saved before
    // calibration chose them) is taken as choosing none.
    const std::string saved = slurp(task);
    auto refused_edit = [&](const std::string& line, char value, const std::string& message) {
        const size_t found = saved.find("\n" + line + " ");
        REQUIRE(found != std::string::npos);
        std::string edited = saved;
        edited[found + line.size() + 2] = value;
        std::ofstream(dir / "edited.txt") << edited;
        r = cli(dir, base + "--task '" + dir / "edited.txt" + "' --out '" + dir / "refused" + "'" + q);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, message));
        REQUIRE(!fs::exists(dir / "refused"));
    };
    refused_edit("regions", '9', "region choice 9 is none of 0 to 3");
    REQUIRE(contains(saved, "\nexample-types 0\n"));
    refused_edit("example-types", '1', "it chose example types, and these examples do not fall into two");
    const size_t at = saved.find("\nregions ");
    std::ofstream(dir / "older.txt") << saved.substr(0, at + 1) + saved.substr(saved.find('\n', at + 1) + 1);
    r = cli(dir, base + outputs + "--task '" + dir / "older.txt" + "' --out '" + dir / "older" + "'" + q);
    REQUIRE(r.rc == 0);
    REQUIRE(names_in(dir / "older") == names_in(dir / "one"));
    r = cli(dir, base + "--save-task '" + dir / "support/images/s1.png" + "'");  // not over a file that is not a task
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "is not a task file"));
    for (const char* shard : {"0/3", "4/3", "1/0", "x", "1/3/", "-1/3", "1/+3", "2"}) {
        r = cli(dir, base + "--shard " + shard + " --out '" + dir / "refused" + "'" + q);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "--shard must be K/N"));
    }
    REQUIRE(!fs::exists(dir / "refused"));
}

namespace {

// `universeg segment ARGS` from the repository root, where cases.txt's paths start; `shell`:
// settings before it.
Run segment(const TempDir& dir, const std::string& args, const std::string& shell = "") {
    return cli(dir, "segment " + args, "cd " + quote(kRoot) + " && " + shell);
}

std::string joined(const std::vector<std::string>& words) {
    std::string s;
    for (const std::string& w : words) s += quote(w) + " ";
    return s;
}

// Five labelled cells in DIR/support, and the command's fixed arguments for them.
std::string small_task(const TempDir& dir) {
    for (const char* d : {"support/images", "support/labels"}) fs::create_directories(dir.path / d);
    for (int i = 0; i < 5; ++i) {
        const std::string n = "cell_0" + std::to_string(i) + ".png";
        fs::copy_file(kCells + "support/images/" + n, dir / ("support/images/" + n));
        fs::copy_file(kCells + "support/labels/" + n, dir / ("support/labels/" + n));
    }
    return "--weights " + quote(kWeights) + " --size 16 --flips 1 --support " + quote(dir / "support") + " ";
}

}  // namespace

TEST_CASE("segment reproduces its reference outputs byte for byte", "[cli][segment]") {
    TempDir dir("segref_cli");
    for (const ReferenceCase& c : reference_cases()) {
        if (c.name == "cells") continue;
        REQUIRE(segment(dir, "--quiet " + joined(c.args) + "--out " + quote(dir / c.name)).rc == 0);
        check_like_reference(c.name, dir / c.name);
    }
}

TEST_CASE("segment: the cells example with the bundled weights, byte for byte", "[cli][segment][heavy]") {
    TempDir dir("segref_cells_cli");
    for (const ReferenceCase& c : reference_cases()) {
        if (c.name != "cells") continue;
        REQUIRE(segment(dir, "--quiet " + joined(c.args) + "--out " + quote(dir / c.name)).rc == 0);
        check_like_reference(c.name, dir / c.name);
    }
}

TEST_CASE("segment plans every output first: none written twice, over an input or over a foreign file", "[cli][segment]") {
    TempDir dir("segplan");
    const std::string task = small_task(dir);
    fs::create_directories(dir.path / "q");
    fs::create_directories(dir.path / "out");
    const std::string query = kCells + "queries/images/query_00.png", out = " --out " + quote(dir / "out") + " ";
    fs::copy_file(query, dir / "q/a.png");
    fs::copy_file(query, dir / "q/a_overlay.png");
    fs::copy_file(query, dir / "q/a_prob_2.png");
    auto refused = [&](const Run& r, const std::vector<std::string>& named) {
        CHECK(r.rc == 1);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        for (const std::string& n : named) CHECK_THAT(r.err, Contains(n));
        CHECK(r.out.empty());  // refused before the summary, which calibration precedes
        CHECK(names_in(dir / "out").empty());
    };
    // a's overlay and a_overlay's label map; a's probabilities of label 2 and a_prob_2's label map.
    refused(segment(dir, task + "--overlay" + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a_overlay.png")),
            {dir / "out/a_overlay.png", "the overlay of " + dir / "q/a.png", "the label map of " + dir / "q/a_overlay.png"});
    refused(segment(dir, task + "--probabilities png" + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a_prob_2.png")),
            {dir / "out/a_prob_2.png", "the probabilities of label 2 of " + dir / "q/a.png"});
    // The same query twice.
    refused(segment(dir, task + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a.png")), {"both the label map of"});

    // A query that lives in --out, which another query's overlay would replace.
    fs::copy_file(query, dir / "out/b_overlay.png");
    const std::vector<uint8_t> kept = read_file(dir / "out/b_overlay.png");
    fs::copy_file(query, dir / "q/b.png");
    const Run r = segment(dir, task + "--overlay" + out + quote(dir / "q/b.png") + " " + quote(dir / "out/b_overlay.png"));
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains("the overlay of " + dir / "q/b.png" + " would overwrite the query " + dir / "out/b_overlay.png"));
    CHECK(read_file(dir / "out/b_overlay.png") == kept);
    CHECK(names_in(dir / "out") == std::set<std::string>{"b_overlay.png"});
    fs::remove(dir / "out/b_overlay.png");

    // --out in the support's labels/: a query named like an example would replace its label map.
    fs::copy_file(query, dir / "q/cell_01.png");
    const std::vector<uint8_t> label = read_file(dir / "support/labels/cell_01.png");
    const Run s = segment(dir, task + "--out " + quote(dir / "support/labels") + " " + quote(dir / "q/cell_01.png"));
    CHECK(s.rc == 1);
    CHECK_THAT(s.err, Contains(dir / "support/labels/cell_01.png" + ": the label map of " + dir / "q/cell_01.png" +
                               " would overwrite the support file " + dir / "support/labels/cell_01.png"));
    CHECK(read_file(dir / "support/labels/cell_01.png") == label);

    // The weights, saved where a probability file would go.
    fs::copy_file(kWeights, dir / "out/a_prob_1.npy");
    const Run w = segment(dir, "--weights " + quote(dir / "out/a_prob_1.npy") + " --size 16 --support " + quote(dir / "support") +
                                   " --probabilities npy" + out + quote(dir / "q/a.png"));
    CHECK(w.rc == 1);
    CHECK_THAT(w.err, Contains("would overwrite the weights " + dir / "out/a_prob_1.npy"));
    CHECK(read_file(dir / "out/a_prob_1.npy") == read_file(kWeights));
    fs::remove(dir / "out/a_prob_1.npy");

    // A file in --out that segment did not write: a colour PNG where a label map would go, a
    // directory where an overlay would.
    const std::vector<uint8_t> rgb(3 * 4 * 4, 200);
    save_png(dir / "out/a.png", std::vector<uint16_t>(rgb.begin(), rgb.end()), 4, 4, 3, 8);
    const std::vector<uint8_t> mine = read_file(dir / "out/a.png");
    const Run f = segment(dir, task + out + quote(dir / "q/a.png"));
    CHECK(f.rc == 1);
    CHECK_THAT(f.err, Contains(dir / "out/a.png: the label map of " + dir / "q/a.png" + " would overwrite a PNG of another kind"));
    CHECK(read_file(dir / "out/a.png") == mine);
    fs::remove(dir / "out/a.png");
    fs::create_directories(dir.path / "out/a_overlay.png");
    CHECK_THAT(segment(dir, task + "--overlay" + out + quote(dir / "q/a.png")).err, Contains("something that is not a file"));
    fs::remove(dir / "out/a_overlay.png");

    // Earlier outputs of the same names are replaced: a run repeated, then with probabilities added.
    REQUIRE(segment(dir, task + "--quiet --overlay" + out + quote(dir / "q/a.png")).rc == 0);
    REQUIRE(segment(dir, task + "--quiet --overlay --probabilities png" + out + quote(dir / "q/a.png")).rc == 0);
    CHECK(names_in(dir / "out") == std::set<std::string>{"a.png", "a_overlay.png", "a_prob_1.png", "a_prob_2.png"});

    // --out is checked before the weights are loaded (these do not exist).
    std::ofstream(dir / "file") << "x";
    for (const std::string& bad : {dir / "file", dir / "file/sub"}) {
        const Run o = segment(dir, "--weights " + quote(dir / "missing.pt") + " --size 16 --support " + quote(dir / "support") +
                                       " --out " + quote(bad) + " " + quote(dir / "q/a.png"));
        CHECK(o.rc == 1);
        CHECK_THAT(o.err, Contains(bad + ": --out must be a folder, and " + dir / "file" + " is a file"));
    }
}

TEST_CASE("segment names the cause before computing: label values a PNG cannot hold, --tile's lower bound", "[cli][segment]") {
    TempDir dir("segearly");
    for (const char* d : {"s/images", "s/labels"}) fs::create_directories(dir.path / d);
    for (const char* n : {"a", "b"}) {  // labels 70000 in the middle of the last slices
        Volume img = load_nifti(kVolumes + "support/images/" + std::string(n) + ".nii.gz"), lab = img;
        for (size_t i = 0; i < lab.voxels.size(); ++i) lab.voxels[i] = i % size_t(lab.nx) > 10 && i > lab.voxels.size() / 2 ? 70000.0f : 0.0f;
        save_nifti(dir / ("s/images/" + std::string(n) + ".nii.gz"), img, kNiftiInt16);
        save_nifti(dir / ("s/labels/" + std::string(n) + ".nii.gz"), lab, kNiftiInt32);
    }
    const std::string base = "--weights " + quote(kWeights) + " --size 16 --flips 1 --support " + quote(dir / "s") + " --out " + quote(dir / "out") + " ";
    const Run r = segment(dir, base + quote(kCells + "queries/images/query_00.png"));
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains("label value 70000 cannot be saved in a PNG label map"));
    CHECK_THAT(r.err, Contains("query_00.png"));
    CHECK(r.out.empty());  // before calibrating, which the summary follows
    CHECK(!fs::exists(dir / "out"));
    // A volume's label map holds it.
    REQUIRE(segment(dir, base + "--quiet " + quote(kVolumes + "queries/q.nii.gz")).rc == 0);
    CHECK(load_nifti(dir / "out/q.nii.gz").header.datatype == kNiftiInt32);

    // --tile: at least 16 px, and an eighth of the model size; checked before the weights are read.
    const std::string q = quote(kCells + "queries/images/query_00.png");
    const std::string rest = " --weights " + quote(dir / "missing.pt") + " --support " + quote(kCells + "support") + " --out " + quote(dir / "o") + " " + q;
    const Run t = segment(dir, "--size 32 --tile 15" + rest);
    CHECK(t.rc == 1);
    CHECK_THAT(t.err, Contains("--tile 15: windows are at least 16 px at the model size 32x32"));
    CHECK_THAT(segment(dir, "--size 256 --tile 31" + rest).err, Contains("--tile 31: windows are at least 32 px"));
    CHECK_THAT(segment(dir, "--size 32 --tile 16" + rest).err, Contains("missing.pt"));  // allowed: on to the weights
}

TEST_CASE("segment: a query that fails leaves none of its outputs, the others are written", "[cli][segment]") {
    // A file-size limit (ulimit -f, 512-byte blocks in dash, 1024 in bash; SIGXFSZ ignored so the
    // write fails instead) that a 4x4 query's outputs fit and a 256x256 noisy query's overlay does
    // not, while its label map does: the label map written first must be removed again.
    TempDir dir("segfail");
    const std::string task = small_task(dir);
    std::vector<uint16_t> noise(256 * 256);
    uint32_t x = 1;
    for (uint16_t& v : noise) x = x * 1664525u + 1013904223u, v = uint16_t(x >> 24);
    save_png(dir / "big.png", noise, 256, 256, 1, 8);
    save_png(dir / "small.png", std::vector<uint16_t>(noise.begin(), noise.begin() + 16), 4, 4, 1, 8);
    const std::string args = task + "--quiet --overlay --out " + quote(dir / "out") + " " + quote(dir / "big.png") + " " + quote(dir / "small.png");
    REQUIRE(segment(dir, args).rc == 0);  // without the limit, the sizes the test relies on
    REQUIRE(fs::file_size(dir / "out/big.png") < 20000);
    REQUIRE(fs::file_size(dir / "out/big_overlay.png") > 41000);
    REQUIRE(fs::file_size(dir / "out/small_overlay.png") < 20000);
    fs::remove_all(dir / "out");

    const Run r = segment(dir, args, "trap '' XFSZ; ulimit -f 40; ");
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains(dir / "big.png"));
    CHECK_THAT(r.err, Contains("1 of 2 queries failed"));
    CHECK(names_in(dir / "out") == std::set<std::string>{"small.png", "small_overlay.png"});  // no temporaries either
}

// Out of memory: a virtual-memory limit that the program and its support fit and an 8192x8192
// query does not. Not under the address sanitizer (its shadow memory needs terabytes of address
// space) or qemu (a guest's address space is reserved up front).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST_CASE("segment: out of memory is reported as such, naming the query and its size", "[cli][segment]") {
    TempDir dir("segoom");
    const std::string task = small_task(dir);
    std::vector<uint16_t> big(size_t(8192) * 8192);
    for (size_t i = 0; i < big.size(); ++i) big[i] = uint16_t((i % 8192) * 7 % 256);
    save_png(dir / "huge.png", big, 8192, 8192, 1, 8);
    big = {};
    const Run r = segment(dir, task + "--quiet --out " + quote(dir / "out") + " " + quote(dir / "huge.png"), "ulimit -v 700000; ");
    CHECK(r.rc == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    // Reading the image fits (where the limit strikes depends on the decoder and the allocator).
    CHECK_THAT(r.err, Contains("universeg segment: error: " + dir / "huge.png" + ": out of memory segmenting an image of 8192x8192"));
    CHECK(r.err.find("bad_alloc") == std::string::npos);
    CHECK(names_in(dir / "out").empty());
}
#endif

#endif  // UNIVERSEG_CLI
