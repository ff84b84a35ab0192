// The io layer against fixtures made by tests/data/io/make_fixtures.py (torch, numpy and
// hand-rolled files) and the golden checkpoints: every fixture loads with the keys, shapes
// and values torch or numpy saved alongside it; writers round-trip bit-exactly; and damaged,
// hostile or foreign files fail with a universeg::Error that names the file.
#include <universeg/core/random.hpp>
#include <universeg/io/image.hpp>
#include <universeg/io/nifti.hpp>
#include <universeg/io/torch_writer.hpp>
#include <universeg/io/weights.hpp>

#include <stb/stb_image_write.h>

#include "test_util.hpp"

#include <cmath>
#include <csignal>
#include <filesystem>
#include <limits>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

using namespace universeg;
using namespace test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(UNIVERSEG_TEST_DATA) + "/io/" + name; }

// A scratch file in the system's temp directory (removed by the caller's next write).
std::string scratch(const std::string& name) {
    auto dir = std::filesystem::temp_directory_path() / "universeg_test_io";
    std::filesystem::create_directories(dir);
    return (dir / name).string();
}

std::string write_scratch(const std::string& name, const std::vector<uint8_t>& bytes) {
    std::string path = scratch(name);
    write_file_atomic(path, bytes);
    return path;
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// numpy's .npz: a zip of .npy files, read with the library's own zip and .npy readers.
StateDict load_npz(const std::string& path) {
    std::vector<uint8_t> bytes = read_file(path);
    detail::ZipArchive zip = detail::zip_open(bytes.data(), bytes.size(), path);
    StateDict out;
    for (const auto& entry : zip.entries) {
        detail::ByteSpan b = detail::zip_read(zip, entry.first);
        out[entry.first.substr(0, entry.first.size() - 4)] = load_npy(b.data, b.size, path + ":" + entry.first);
    }
    return out;
}

void check_equal(const StateDict& got, const StateDict& want) {
    REQUIRE(got.size() == want.size());
    for (const auto& kv : want) {
        INFO("tensor " << kv.first);
        REQUIRE(got.count(kv.first) == 1);
        const Tensor& t = got.at(kv.first);
        CHECK(t.shape == kv.second.shape);
        CHECK(t.data == kv.second.data);
    }
}

bool bit_equal(const Tensor& a, const Tensor& b) {
    return a.shape == b.shape && a.data.size() == b.data.size() &&
           (a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * 4) == 0);
}

// The values make_fixtures.py stores in its .npy fixtures, by flat index.
float npy_value(const std::string& kind, int i) {
    if (kind == "f") return float(i - 10) * 0.25f;
    if (kind == "u1") return float((i * 37) % 256);
    if (kind == "b1") return i % 3 == 0 ? 1.0f : 0.0f;
    if (kind == "i4") return float((i - 12) * 100003);
    return float(i - 12) * std::ldexp(1.0f, 40);
}


const std::string kHostile = std::string(UNIVERSEG_TEST_DATA) + "/hostile/";

// Restores the process-wide limits when a test that lowers them ends.
struct LimitsGuard {
    Limits saved = limits();
    ~LimitsGuard() { limits() = saved; }
};

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

}  // namespace

TEST_CASE("torch.save state dicts in float32, float16, bfloat16 and float64") {
    // fixture -> the expected values it shares with torch's own save
    const std::pair<const char*, const char*> cases[] = {
        {"sd_f32", "sd_f32"}, {"sd_f16", "sd_f16"}, {"sd_bf16", "sd_bf16"}, {"sd_f64", "sd_f64"},
        {"sd_f32_proto4", "sd_f32"},  // pickle protocol 4
        {"sd_f32_big", "sd_f32"},     // big-endian storages, declared in byteorder
        {"sd_f16_dtype", "sd_f16"}};  // storage type given as torch.float16
    for (const auto& c : cases) {
        INFO(c.first);
        StateDict sd = load_state_dict(fixture(std::string(c.first) + ".pt"));
        check_equal(sd, load_npz(fixture(std::string(c.second) + ".expected.npz")));
        CHECK(sd.at("conv.weight").shape == std::vector<int64_t>{4, 2, 3, 3});
        CHECK(sd.at("scale").shape.empty());
        CHECK(sd.at("scale").data == std::vector<float>{1.5f});
    }
    // Reduced precision really reached the file: the values differ from float32's.
    CHECK(load_state_dict(fixture("sd_f16.pt")).at("conv.weight").data !=
          load_state_dict(fixture("sd_f32.pt")).at("conv.weight").data);
    CHECK(load_torch_checkpoint(fixture("sd_bf16.pt")).at("fc.weight").data !=
          load_torch_checkpoint(fixture("sd_f16.pt")).at("fc.weight").data);
    // The file's element type is remembered (universeg info prints it).
    const std::pair<const char*, const char*> stored[] = {
        {"sd_f32", "float32"}, {"sd_f16", "float16"}, {"sd_bf16", "bfloat16"}, {"sd_f64", "float64"}};
    for (const auto& c : stored)
        CHECK(load_state_dict(fixture(std::string(c.first) + ".pt")).at("conv.weight").stored_dtype == c.second);
}

TEST_CASE("training checkpoints: the state dict is found and module. is stripped") {
    StateDict want = load_npz(fixture("nested.expected.npz"));
    // {'state_dict': {'module.conv.weight': ...}, 'epoch': 3, 'optimizer': Adam's state dict}
    check_equal(load_state_dict(fixture("nested.pt")), want);
    // {'config': {...}, 'net': {'model_state_dict': ..., 'step': -7}}
    check_equal(load_state_dict(fixture("nested2.pt")), want);
}

TEST_CASE("views: storage offsets, strides, transposes and shared storages") {
    StateDict sd = load_state_dict(fixture("views.pt"));
    check_equal(sd, load_npz(fixture("views.expected.npz")));
    CHECK(sd.at("t").shape == std::vector<int64_t>{5, 3});
    CHECK(sd.at("b").data == std::vector<float>{-2.0f, -0.5f, 1.0f, 2.5f, 4.0f, 5.5f});
}

TEST_CASE("nn.Parameter values (torch._utils._rebuild_parameter)") {
    check_equal(load_state_dict(fixture("params.pt")), load_npz(fixture("params.expected.npz")));
}

TEST_CASE("golden checkpoints load with torch's keys, shapes and values") {
    const std::string v1_path = std::string(UNIVERSEG_TEST_DATA) + "/golden/v1_b2_s4_128/weights.pt";
    StateDict v1 = load_state_dict(v1_path);
    std::map<std::string, std::vector<int64_t>> shapes = {{"out_conv.conv.weight", {1, 64, 1, 1}},
                                                          {"out_conv.conv.bias", {1}}};
    for (int b = 0; b < 4; ++b) {
        std::string p = "enc_blocks." + std::to_string(b) + ".";
        shapes[p + "cross.cross_conv.weight"] = {64, b == 0 ? 3 : 128, 3, 3};
        shapes[p + "cross.cross_conv.bias"] = {64};
        for (const char* side : {"target", "support"}) {
            shapes[p + side + ".vmapped.conv.weight"] = {64, 64, 3, 3};
            shapes[p + side + ".vmapped.conv.bias"] = {64};
        }
    }
    for (int b = 0; b < 3; ++b) {
        std::string p = "dec_blocks." + std::to_string(b) + ".";
        shapes[p + "cross.cross_conv.weight"] = {64, 256, 3, 3};
        shapes[p + "cross.cross_conv.bias"] = {64};
        for (const char* side : {"target", "support"}) {
            shapes[p + side + ".vmapped.conv.weight"] = {64, 64, 3, 3};
            shapes[p + side + ".vmapped.conv.bias"] = {64};
        }
    }
    REQUIRE(v1.size() == shapes.size());
    int64_t params = 0;
    for (const auto& kv : shapes) {
        INFO(kv.first);
        REQUIRE(v1.count(kv.first) == 1);
        CHECK(v1.at(kv.first).shape == kv.second);
        params += v1.at(kv.first).numel();
    }
    CHECK(params == 1182785);

    for (const auto& kv : load_npz(fixture("golden_v1.expected.npz"))) CHECK(bit_equal(v1.at(kv.first), kv.second));
    // Every tensor's sum, as torch computed it in float64, in sorted key order.
    Tensor sums = load_npy(fixture("golden_v1_sums.npy"));
    REQUIRE(sums.numel() == int64_t(v1.size()));
    size_t k = 0;
    for (const auto& kv : v1) {
        double s = 0;
        for (float x : kv.second.data) s += x;
        CHECK(s == Approx(sums.data[k++]).epsilon(1e-6).margin(1e-6));
    }

    StateDict custom = load_torch_checkpoint(std::string(UNIVERSEG_TEST_DATA) + "/golden/custom_b1_s3_48x80/weights.pt");
    for (const auto& kv : load_npz(fixture("golden_custom.expected.npz"))) CHECK(bit_equal(custom.at(kv.first), kv.second));
}

TEST_CASE("safetensors: hand-written file with F32, F16, BF16, F64, metadata and an escaped key") {
    StateDict sd = load_state_dict(fixture("mixed.safetensors"));
    check_equal(sd, load_npz(fixture("mixed.expected.npz")));
    CHECK(sd.count("caf\xc3\xa9 \xf0\x9f\x98\x80 \"q\"\\") == 1);
    CHECK(sd.at("empty").shape == std::vector<int64_t>{0, 3});
    CHECK(sd.at("w16").stored_dtype == "float16");
    CHECK(sd.at("wbf").stored_dtype == "bfloat16");
    CHECK(sd.at("w64").stored_dtype == "float64");
}

TEST_CASE("safetensors write -> read is bit exact") {
    StateDict sd = load_state_dict(std::string(UNIVERSEG_TEST_DATA) + "/golden/custom_b1_s3_48x80/weights.pt");
    Tensor odd({2, 3});
    odd.data = {-0.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max(), 1.0f};
    sd["odd \"name\"\n"] = odd;
    sd["scalar"] = Tensor(std::vector<int64_t>{}, 2.5f);
    sd["empty"] = Tensor({0, 4});
    std::string path = scratch("roundtrip.safetensors");
    save_safetensors(path, sd, {{"format", "pt"}, {"quote\"d", "tab\there"}});

    std::vector<uint8_t> bytes = read_file(path);
    uint64_t header_len = detail::load_uint(bytes.data(), 8);
    CHECK((8 + header_len) % 8 == 0);
    std::string header(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(header_len));
    CHECK_THAT(header, Contains("\"__metadata__\":{\"format\":\"pt\",\"quote\\\"d\":\"tab\\u0009here\",\"universeg_version\":\"" +
                               std::string(kVersion) + "\"}"));

    StateDict back = load_state_dict(path);
    REQUIRE(back.size() == sd.size());
    for (const auto& kv : sd) {
        INFO(kv.first);
        CHECK(bit_equal(back.at(kv.first), kv.second));
    }
    std::filesystem::remove(path);
}

TEST_CASE(".npy in every supported dtype, byte order, layout and version") {
    for (const char* name : {"le_f4", "le_f8", "le_f2", "na_u1", "na_b1", "le_i4", "le_i8", "be_f4", "be_f8", "be_f2",
                             "be_i4", "be_i8", "fortran_f4", "fortran_be_f8", "v2_f4", "v3_f4"}) {
        INFO(name);
        std::string n = name, type = n.substr(n.size() - 2);
        Tensor t = load_npy(fixture("npy_" + n + ".npy"));
        REQUIRE(t.shape == std::vector<int64_t>{2, 3, 4});
        for (int i = 0; i < 24; ++i) CHECK(t.data[size_t(i)] == npy_value(type[0] == 'f' ? "f" : type, i));
    }
    Tensor scalar = load_npy(fixture("npy_scalar_f8.npy"));
    CHECK(scalar.shape.empty());
    CHECK(scalar.data == std::vector<float>{-2.5f});
    CHECK(load_npy(fixture("npy_empty_f4.npy")).shape == std::vector<int64_t>{0, 3});
}

TEST_CASE(".npy write -> read") {
    Tensor t({2, 1, 3});
    t.data = {1.0f, -0.0f, 3.25f, std::numeric_limits<float>::infinity(), 1e-40f, -7.0f};
    std::string path = scratch("roundtrip.npy");
    save_npy(path, t);
    std::vector<uint8_t> bytes = read_file(path);
    CHECK((10 + detail::load_uint(bytes.data() + 8, 2)) % 64 == 0);  // data aligned as numpy aligns it
    CHECK(bit_equal(load_npy(path), t));

    save_npy(path, Tensor(std::vector<int64_t>{}, 4.0f));
    CHECK(load_npy(path).shape.empty());

    const double d[3] = {0.5, -1e300, 3.0};
    save_npy_f64(path, {3}, d);
    bytes = read_file(path);
    CHECK_THAT(std::string(bytes.begin(), bytes.begin() + 40), Contains("'<f8'"));
    CHECK(load_npy(path).data == std::vector<float>{0.5f, -std::numeric_limits<float>::infinity(), 3.0f});
    std::filesystem::remove(path);

    const std::string unwritable = scratch("no_such_dir") + "/x.npy";
    CHECK_THAT(error_of([&] { save_npy(unwritable, t); }), Contains(unwritable) && Contains("cannot create"));
}

TEST_CASE("zip reader: ZIP64 records, differing local extra field, a decoy signature in the comment") {
    std::vector<uint8_t> bytes = read_file(fixture("zip64.zip"));
    detail::ZipArchive zip = detail::zip_open(bytes.data(), bytes.size(), "zip64.zip");
    REQUIRE(zip.entries.size() == 1);
    detail::ByteSpan b = detail::zip_read(zip, "dir/hello.txt");
    CHECK(std::string(reinterpret_cast<const char*>(b.data), b.size) == "hello, zip64\n");
    CHECK_THAT(error_of([&] { detail::zip_read(zip, "missing"); }), Contains("zip64.zip") && Contains("missing"));

    std::vector<uint8_t> deflated = read_file(fixture("deflated.zip"));
    detail::ZipArchive dz = detail::zip_open(deflated.data(), deflated.size(), "deflated.zip");
    CHECK_THAT(error_of([&] { detail::zip_read(dz, "archive/data.pkl"); }),
               Contains("deflated.zip") && Contains("archive/data.pkl") && Contains("method 8"));
    std::vector<uint8_t> encrypted = read_file(fixture("encrypted.zip"));
    detail::ZipArchive ez = detail::zip_open(encrypted.data(), encrypted.size(), "encrypted.zip");
    CHECK_THAT(error_of([&] { detail::zip_read(ez, "secret.bin"); }), Contains("secret.bin") && Contains("encrypted"));
}

TEST_CASE("zip writer: a checkpoint rewritten entry by entry loads the same, data 64-byte aligned") {
    std::vector<uint8_t> original = read_file(fixture("sd_f32.pt"));
    detail::ZipArchive in = detail::zip_open(original.data(), original.size(), "sd_f32.pt");
    detail::ZipWriter w;
    for (const auto& entry : in.entries) {
        detail::ByteSpan b = detail::zip_read(in, entry.first);
        detail::zip_add(w, entry.first, b.data, b.size);
    }
    std::vector<uint8_t> rewritten = detail::zip_finish(w);
    detail::ZipArchive out = detail::zip_open(rewritten.data(), rewritten.size(), "rewritten");
    REQUIRE(out.entries.size() == in.entries.size());
    for (const auto& entry : out.entries) CHECK((detail::zip_read(out, entry.first).data - rewritten.data()) % 64 == 0);
    check_equal(load_torch_checkpoint(rewritten.data(), rewritten.size(), "rewritten"),
                load_npz(fixture("sd_f32.expected.npz")));
}

TEST_CASE("damaged checkpoints fail with errors naming the file") {
    std::vector<uint8_t> good = read_file(fixture("sd_f32.pt"));

    std::string truncated = write_scratch("truncated.pt", std::vector<uint8_t>(good.begin(), good.begin() + 1000));
    CHECK_THAT(error_of([&] { load_state_dict(truncated); }), Contains(truncated));

    // A flipped byte inside a storage: the CRC catches it.
    detail::ZipArchive zip = detail::zip_open(good.data(), good.size(), "sd_f32.pt");
    std::vector<uint8_t> flipped = good;
    flipped[size_t(detail::zip_read(zip, "sd_f32/data/1").data - good.data()) + 5] ^= 0x10;
    std::string flipped_path = write_scratch("flipped.pt", flipped);
    CHECK_THAT(error_of([&] { load_state_dict(flipped_path); }),
               Contains(flipped_path) && Contains("sd_f32/data/1") && Contains("CRC-32 mismatch"));

    std::string legacy = fixture("legacy.pt");
    CHECK_THAT(error_of([&] { load_state_dict(legacy); }), Contains(legacy) && Contains("legacy"));
    std::string evil = fixture("evil_global.pt");
    CHECK_THAT(error_of([&] { load_state_dict(evil); }),
               Contains(evil + ": pickle refers to os.system, which is not allowed: nothing in a checkpoint is ever executed"));
    CHECK_THAT(error_of([&] { load_torch_checkpoint(fixture("zip64.zip")); }), Contains("no <folder>/data.pkl"));

    std::string empty = write_scratch("empty.pt", {});
    CHECK_THAT(error_of([&] { load_state_dict(empty); }), Contains(empty) && Contains("empty"));
    std::string garbage = write_scratch("garbage.bin", bytes_of("this is not a checkpoint at all"));
    CHECK_THAT(error_of([&] { load_state_dict(garbage); }),
               Contains(garbage + ": not a PyTorch checkpoint or safetensors file"));
    std::string missing = scratch("does_not_exist.pt");
    CHECK_THAT(error_of([&] { load_state_dict(missing); }), Contains(missing) && Contains("cannot open"));
    for (const auto& p : {truncated, flipped_path, empty, garbage}) std::filesystem::remove(p);
}

TEST_CASE("damaged safetensors fail with errors naming the file") {
    auto file = [](const std::string& header, size_t data_bytes) {
        std::vector<uint8_t> out;
        detail::append_uint(out, header.size(), 8);
        out.insert(out.end(), header.begin(), header.end());
        out.resize(out.size() + data_bytes);
        return out;
    };
    auto error = [](const std::vector<uint8_t>& bytes) {
        return error_of([&] { load_safetensors(bytes.data(), bytes.size(), "bad.safetensors"); });
    };
    std::vector<uint8_t> absurd = file("{}", 0);
    absurd[5] = 0x10;  // header length 2^44 + 2
    std::string absurd_path = write_scratch("absurd.safetensors", absurd);
    CHECK_THAT(error_of([&] { load_state_dict(absurd_path); }), Contains(absurd_path) && Contains("header length"));

    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)),
               Contains("bad.safetensors") && Contains("outside"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16)), Contains("needs 12 bytes"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 16)),
               Contains("overlap"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8)), Contains("I64"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[100000,100000,100000],"data_offsets":[0,8]}})", 8)),
               Contains("bad.safetensors"));
    CHECK_THAT(error(file(R"({"x":1,"x":2})", 0)), Contains("duplicate key"));
    CHECK_THAT(error(file(R"({"x":"unterminated)", 0)), Contains("unterminated"));
    CHECK_THAT(error(file(R"({"x":"\ud800"})", 0)), Contains("surrogate"));
    CHECK_THAT(error(file(std::string(100, '[') + std::string(100, ']'), 0)), Contains("nesting"));
    CHECK_THAT(error(file(R"({"__metadata__":{"a":1}})", 0)), Contains("__metadata__"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}})", 8)), Contains("non-integer"));
    // Issue 38: 2^64 + 32 wrapped to 32 (the check ran after n * 10 + d) and this file loaded.
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[18446744073709551648],"data_offsets":[0,128]}})", 128)),
               Contains("bad.safetensors") && Contains("integer out of range"));
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,128]}})", 128)),
               Contains("integer out of range"));
    // INT64_MAX itself parses (and is then refused by the element cap, not as an overflow).
    CHECK_THAT(error(file(R"({"x":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,128]}})", 128)),
               !Contains("out of range") && Contains("limit"));
    std::filesystem::remove(absurd_path);
}

TEST_CASE("damaged .npy files fail with errors naming the file") {
    auto npy = [](const std::string& header, size_t data_bytes) {
        std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        detail::append_uint(out, header.size(), 2);
        out.insert(out.end(), header.begin(), header.end());
        out.resize(out.size() + data_bytes);
        return out;
    };
    auto error = [](const std::vector<uint8_t>& bytes) {
        return error_of([&] { load_npy(bytes.data(), bytes.size(), "bad.npy"); });
    };
    std::string huge = write_scratch("huge.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }\n", 16));
    CHECK_THAT(error_of([&] { load_npy(huge); }), Contains(huge) && Contains("exceeds the limit"));
    std::string big = write_scratch("big.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000), }\n", 16));
    CHECK_THAT(error_of([&] { load_npy(big); }), Contains(big) && Contains("needs 4000000 bytes"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", 0)),
               Contains("bad.npy") && Contains("limit"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12)), Contains("needs 8 bytes"));
    // Issue 38: dimensions are refused before they overflow, however many digits they have.
    for (const char* dim : {"18446744073709551648", "9223372036854775808", "99999999999999999999999999999"})
        CHECK_THAT(error(npy(std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (") + dim + ",), }", 4)),
                   Contains("bad.npy") && Contains("dimension out of range"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807,), }", 4)),
               !Contains("out of range") && Contains("limit"));
    CHECK_THAT(error(npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8)), Contains("'|O'"));
    CHECK_THAT(error(npy("{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }", 4)), Contains("not supported"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'shape': (1,), }", 4)), Contains("fortran_order"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 4)), Contains("'x'"));
    CHECK_THAT(error(npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", 4)), Contains("fortran_order"));
    std::vector<uint8_t> past = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4);
    past[8] = 0xFF;
    CHECK_THAT(error(past), Contains("past the end"));
    CHECK_THAT(error(bytes_of("not numpy at all")), Contains("bad.npy: not a .npy file"));
    std::filesystem::remove(huge);
}

TEST_CASE("the unpickler refuses what checkpoints never contain") {
    auto error = [](const std::string& pickle) {
        return error_of([&] {
            detail::unpickle(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), "ckpt.pt");
        });
    };
    // STACK_GLOBAL (protocol 4) form of the forbidden reference
    CHECK_THAT(error(std::string("\x80\x04\x8c\x02os\x8c\x06system\x93.", 16)),
               Contains("ckpt.pt: pickle refers to os.system, which is not allowed"));
    CHECK_THAT(error("\x80\x02" "cbuiltins\neval\n."), Contains("builtins.eval"));
    CHECK_THAT(error("\x80\x02" "ctorch\nLongStorage\n."), Contains("torch.LongStorage is not supported"));
    CHECK_THAT(error("\x80\x02(S'x'\n."), Contains("STRING"));
    CHECK_THAT(error("\x80\x02(ios\nsystem\n."), Contains("INST"));
    CHECK_THAT(error("\x80\x02" "ccollections\nOrderedDict\n(K\x01tR."), Contains("collections.OrderedDict"));
    CHECK_THAT(error("\x80\x09."), Contains("protocol 9"));
    CHECK_THAT(error("\x80\x02]"), Contains("truncated"));
    CHECK_THAT(error("\x80\x02X\xff\xff\xff\x7f" "abc."), Contains("truncated"));
    CHECK_THAT(error("\x80\x02" "a."), Contains("stack underflow"));
    CHECK_THAT(error("\x80\x02(."), Contains("stack underflow"));
    CHECK_THAT(error("\x80\x02h\x05."), Contains("memo key 5"));
    CHECK_THAT(error("\x80\x02}K\x01" "a."), Contains("APPEND"));
    CHECK_THAT(error("\x80\x02]N}b."), Contains("BUILD"));
    CHECK_THAT(error("\x80\x02\xff"), Contains("0xff"));
}

TEST_CASE("the unpickler builds the value tree") {
    // {'a': [1, -2, 3.5, True, None], 'b': ('x', b'yz', 2**40), 7: {'c': <the same list>}},
    // assembled by hand; the list is shared through the memo.
    static const char raw[] =
        "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x88Ne"
        "X\x01\x00\x00\x00" "bq\x03X\x01\x00\x00\x00xq\x04" "C\x02yzq\x05\x8a\x06\x00\x00\x00\x00\x00\x01\x87q\x06"
        "K\x07}q\x07X\x01\x00\x00\x00" "ch\x02su.";
    const std::string p(raw, sizeof raw - 1);
    detail::Pickle pk = detail::unpickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "test");
    const detail::PyValue& root = pk.values[pk.root];
    REQUIRE(root.kind == detail::PyKind::Dict);
    REQUIRE(root.items.size() == 6);
    const detail::PyValue& a = pk.values[detail::dict_get(pk, root, "a")];
    REQUIRE(a.kind == detail::PyKind::List);
    REQUIRE(a.items.size() == 5);
    CHECK(pk.values[a.items[0]].i == 1);
    CHECK(pk.values[a.items[1]].i == -2);
    CHECK(pk.values[a.items[2]].f == 3.5);
    CHECK(pk.values[a.items[3]].kind == detail::PyKind::Bool);
    CHECK(pk.values[a.items[4]].kind == detail::PyKind::None);
    const detail::PyValue& b = pk.values[detail::dict_get(pk, root, "b")];
    REQUIRE(b.kind == detail::PyKind::Tuple);
    CHECK(pk.values[b.items[0]].s == "x");
    CHECK(pk.values[b.items[1]].kind == detail::PyKind::Bytes);
    CHECK(pk.values[b.items[1]].s == "yz");
    CHECK(pk.values[b.items[2]].i == (int64_t(1) << 40));
    CHECK(pk.values[root.items[4]].i == 7);
    const detail::PyValue& inner = pk.values[root.items[5]];
    CHECK(detail::dict_get(pk, inner, "c") == detail::dict_get(pk, root, "a"));  // the memo shares, not copies
}

// ---- images and volumes ----

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
                       {uint32_t(h), 4}, {1, 2}, {uint64_t(bpp), 2}, {compression, 4}, {rows.size(), 4}, {0, 8}, {0, 8}}),
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

TEST_CASE("colour images keep their R, G, B planes, which crop_image crops and resizing drops", "[image]") {
    TempDir dir("planes");
    // 2x2: red, green / blue, (10, 200, 30).
    const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30};
    REQUIRE(stbi_write_png((dir / "c.png").c_str(), 2, 2, 3, rgb, 6));
    const Image img = load_image(dir / "c.png");
    const std::vector<float> planes = {1, 0, 0, 10 / 255.0f, 0, 1, 0, 200 / 255.0f, 0, 0, 1, 30 / 255.0f};
    REQUIRE(img.colour.size() == planes.size());
    for (size_t i = 0; i < planes.size(); ++i) REQUIRE(img.colour[i] == Approx(planes[i]).margin(1e-7));
    const Image right = crop_image(img, 0, 1, 2, 1);  // green, (10, 200, 30)
    const std::vector<float> cropped = {0, 10 / 255.0f, 1, 200 / 255.0f, 0, 30 / 255.0f};
    REQUIRE(right.colour.size() == cropped.size());
    for (size_t i = 0; i < cropped.size(); ++i) REQUIRE(right.colour[i] == Approx(cropped[i]).margin(1e-7));
    REQUIRE(resize_bilinear(img, 4, 4).colour.empty());
    REQUIRE(load_image(kImages + "grey16.png").colour.empty());
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

// ---- hostile files ----

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

TEST_CASE("readers report running out of memory with the file and the size asked (issue 38)", "[hardening][oom]") {
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

// ---- the PyTorch checkpoint writer ----

TEST_CASE("the pickle writer encodes integers and tuples as the pickle spec says") {
    auto bytes = [](auto f) {
        detail::PickleWriter p;
        p.out.clear();
        f(p);
        return p.out;
    };
    using B = std::vector<uint8_t>;
    CHECK(bytes([](auto& p) { p.integer(7); }) == B{'K', 7});
    CHECK(bytes([](auto& p) { p.integer(300); }) == B{'M', 0x2c, 0x01});
    CHECK(bytes([](auto& p) { p.integer(70000); }) == B{'J', 0x70, 0x11, 0x01, 0x00});
    CHECK(bytes([](auto& p) { p.integer(-1); }) == B{'J', 0xff, 0xff, 0xff, 0xff});
    CHECK(bytes([](auto& p) { p.integer(int64_t(1) << 40); }) == B{0x8a, 6, 0, 0, 0, 0, 0, 1});
    CHECK(bytes([](auto& p) { p.integer(int64_t(1) << 31); }) == B{0x8a, 5, 0, 0, 0, 0x80, 0});  // sign byte
    CHECK(bytes([](auto& p) { p.integer(-(int64_t(1) << 40)); }) == B{0x8a, 6, 0, 0, 0, 0, 0, 0xff});
    CHECK(bytes([](auto& p) { p.tuple({}); }) == B{')'});
    CHECK(bytes([](auto& p) { p.tuple({2, 3}); }) == B{'K', 2, 'K', 3, 0x86});
    CHECK(bytes([](auto& p) { p.tuple({1, 2, 3, 4}); }) == B{'(', 'K', 1, 'K', 2, 'K', 3, 'K', 4, 't'});
}

TEST_CASE("a checkpoint from the torch writer reads back exactly, laid out as torch.save lays it out") {
    StateDict sd;
    Rng rng(5);
    auto fill = [&](std::vector<int64_t> shape) {
        Tensor t(std::move(shape));
        for (float& v : t.data) v = float(rng.normal());
        return t;
    };
    sd["conv.weight"] = fill({8, 3, 3, 3});
    sd["conv.bias"] = fill({8});
    sd["scalar"] = fill({});
    sd["empty"] = fill({0, 3});
    sd["big"] = fill({300, 301});  // numel beyond BININT2
    sd["five.dims"] = fill({2, 1, 3, 1, 2});
    sd["special"] = Tensor({4});
    sd["special"].data = {-0.0f, 1e-45f, 3.4e38f, -1.5f};
    for (int i = 0; i < 1005; ++i) sd["many." + std::to_string(i)] = fill({1});  // two SETITEMS batches

    const std::vector<uint8_t> bytes = torch_checkpoint_bytes(sd);
    const StateDict back = load_torch_checkpoint(bytes.data(), bytes.size(), "written");
    REQUIRE(back.size() == sd.size());
    for (const auto& kv : sd) {
        INFO(kv.first);
        REQUIRE(back.count(kv.first));
        const Tensor& t = back.at(kv.first);
        CHECK(t.shape == kv.second.shape);
        CHECK(same_bits(t.data, kv.second.data));
    }

    const detail::ZipArchive zip = detail::zip_open(bytes.data(), bytes.size(), "written");
    auto text = [&](const std::string& name) {
        const detail::ByteSpan s = detail::zip_read(zip, name);
        return std::string(reinterpret_cast<const char*>(s.data), s.size);
    };
    CHECK(text("archive/version") == "3\n");
    CHECK(text("archive/byteorder") == "little");
    CHECK(zip.entries.size() == sd.size() + 3);  // data.pkl, byteorder, version and one storage each
    const detail::ByteSpan pkl = detail::zip_read(zip, "archive/data.pkl");
    REQUIRE(pkl.size > 2);
    CHECK(pkl.data[0] == 0x80);
    CHECK(pkl.data[1] == 2);  // protocol 2, as torch.save
    CHECK(pkl.data[pkl.size - 1] == '.');
    // Storages start on 64-byte boundaries, as torch's writer puts them.
    for (const auto& e : zip.entries) {
        if (e.first.rfind("archive/data/", 0) != 0) continue;
        const uint64_t lo = e.second.local_offset;
        const uint64_t start = lo + 30 + detail::load_uint(bytes.data() + lo + 26, 2) + detail::load_uint(bytes.data() + lo + 28, 2);
        CHECK(start % 64 == 0);
    }
}

TEST_CASE("the torch writer refuses a tensor whose shape does not match its data") {
    StateDict sd;
    sd["bad"] = Tensor({2, 2});
    sd["bad"].data.resize(3);
    CHECK_THROWS_WITH(torch_checkpoint_bytes(sd), Catch::Contains("bad"));
}
