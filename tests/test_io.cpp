// The io layer against fixtures made by tests/data/io/make_fixtures.py (torch, numpy and
// hand-rolled files) and the golden checkpoints: every fixture loads with the keys, shapes
// and values torch or numpy saved alongside it; writers round-trip bit-exactly; and damaged,
// hostile or foreign files fail with a universeg::Error that names the file.
#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <limits>

using namespace universeg;
using test::error_of;
using Catch::Matchers::Contains;

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
