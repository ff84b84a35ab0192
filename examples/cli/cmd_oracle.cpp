// universeg compare, universeg make-case: the reference oracle's tools. compare measures how far
// one array is from another (an implementation's output against the oracle's); make-case writes
// test vectors: random weights and inputs with the logits of the fp64 reference forward.
#include "cli.hpp"

#include <universeg/io/torch_writer.hpp>
#include <universeg/core/random.hpp>
#include <universeg/train/train.hpp>
#include <universeg/universeg.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace cli {

namespace {

const char* kCompareUsage =
    "usage: universeg compare A.npy B.npy [--atol X] [--rtol Y]\n"
    "\n"
    "Compares array A (an implementation's output) with B (the reference) element by element:\n"
    "shapes, max and mean absolute error, max and mean relative error |A-B|/|B| (over B != 0),\n"
    "agreement of the masks A > 0 and B > 0 (logits at 0 = probability 0.5), and the first\n"
    "element beyond the tolerance |A-B| <= atol + rtol*|B| (NaN is beyond any tolerance).\n"
    "float64 arrays are compared in float64. Shapes must be equal up to axes of size 1.\n"
    "Exit code 0 within tolerance, 1 beyond it or on mismatched shapes.\n"
    "\n"
    "  --atol X             absolute tolerance (default 1e-4, the project's parity bound)\n"
    "  --rtol Y             relative tolerance (default 0)\n";

const char* kMakeCaseUsage =
    "usage: universeg make-case --out DIR [--config LIST] [--seed N] [--batch B] [--support-size S]\n"
    "                           [--size HxW] [--threads N]\n"
    "\n"
    "Writes a test vector any UniverSeg implementation can be checked against: random weights and\n"
    "inputs, and the logits of this project's fp64 reference forward (the oracle). DIR gets\n"
    "  weights.safetensors, weights.pt   the same weights (weights.pt: torch.load reads it)\n"
    "  query.npy                         (B,1,H,W) float32 in [0,1]\n"
    "  support_images.npy                (B,S,1,H,W) float32 in [0,1]\n"
    "  support_labels.npy                (B,S,1,H,W) float32, 0 or 1\n"
    "  logits.npy                        (B,1,H,W) float64: the expected logits\n"
    "  config.json                       the arguments above\n"
    "Weights: Kaiming-normal (std sqrt(2 / fan_in)), biases N(0, 0.05^2). Images: a bright disc\n"
    "on a darker background with noise, the disc being the label.\n"
    "\n"
    "  --config LIST        encoder blocks as in the reference, e.g. '[64,64,64,64]' (v1, the\n"
    "                       default) or '[[16,8],[24,16],32]' (pairs: cross, conv features)\n"
    "  --seed N             random seed (default 0)\n"
    "  --batch B            queries (default 1)\n"
    "  --support-size S     supports per query (default 4)\n"
    "  --size HxW           image size (default 128x128; a multiple of 2^(blocks-1))\n"
    "  --threads N          OpenMP threads (default: all cores)\n";

// An array as float64: float64 .npy files exactly, any other dtype load_npy reads through float32.
struct Array {
    std::vector<int64_t> shape;
    std::vector<double> v;
    std::string dtype;
};

Array load_array_f64(const std::string& path) {
    const std::vector<uint8_t> bytes = universeg::read_file(path);
    const universeg::Tensor t = universeg::load_npy(bytes.data(), bytes.size(), path);  // validates
    Array a{t.shape, std::vector<double>(t.data.begin(), t.data.end()), "float32"};
    const size_t header_len = bytes[6] == 1 ? universeg::detail::load_uint(bytes.data() + 8, 2)
                                            : universeg::detail::load_uint(bytes.data() + 8, 4);
    const size_t start = bytes[6] == 1 ? 10 : 12;
    const universeg::detail::NpyHeader h = universeg::detail::parse_npy_header(
        std::string(reinterpret_cast<const char*>(bytes.data() + start), header_len), path);
    if (h.descr.size() == 3 && h.descr.compare(1, 2, "f8") == 0 && !h.fortran_order) {
        const uint8_t* data = bytes.data() + bytes.size() - a.v.size() * 8;  // load_npy checked the size
        for (size_t i = 0; i < a.v.size(); ++i) {
            const uint64_t bits = universeg::detail::load_uint(data + 8 * i, 8, h.descr[0] == '>');
            std::memcpy(&a.v[i], &bits, 8);
        }
        a.dtype = "float64";
    } else if (h.descr.compare(1, 2, "f4") != 0) {
        a.dtype = h.descr + " (as float32)";
    }
    return a;
}

std::vector<int64_t> squeezed(const std::vector<int64_t>& shape) {
    std::vector<int64_t> out;
    for (int64_t d : shape)
        if (d != 1) out.push_back(d);
    return out;
}

std::string index_string(int64_t flat, const std::vector<int64_t>& shape) {
    std::vector<int64_t> idx(shape.size());
    for (size_t d = shape.size(); d-- > 0;) {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    return universeg::shape_string(idx);
}

// A state dict of Config c with random weights, under the reference's key names.
universeg::StateDict random_weights(const universeg::Config& c, uint64_t seed) {
    universeg::StateDict sd;
    uint64_t stream = 0;
    auto conv = [&](const std::string& name, int64_t out, int64_t in, int64_t k) {
        universeg::Rng rng(universeg::seed_from({seed, 1, stream++}));
        universeg::Tensor w({out, in, k, k}), b({out});
        const double std = std::sqrt(2.0 / double(in * k * k));
        for (float& v : w.data) v = float(std * rng.normal());
        for (float& v : b.data) v = float(0.05 * rng.normal());
        sd[name + ".weight"] = std::move(w);
        sd[name + ".bias"] = std::move(b);
    };
    auto block = [&](const std::string& p, int64_t target_in, int64_t support_in, const universeg::BlockFeatures& f) {
        conv(p + ".cross.cross_conv", f.cross, target_in + support_in, 3);
        conv(p + ".target.vmapped.conv", f.conv, f.cross, 3);
        conv(p + ".support.vmapped.conv", f.conv, f.cross, 3);
    };
    for (int64_t k = 0; k < c.levels(); ++k)
        block("enc_blocks." + std::to_string(k), c.encoder_target_in(k), c.encoder_support_in(k), c.encoder[size_t(k)]);
    for (int64_t k = 0; k < int64_t(c.decoder.size()); ++k)
        block("dec_blocks." + std::to_string(k), c.decoder_in(k), c.decoder_in(k), c.decoder[size_t(k)]);
    conv("out_conv.conv", 1, c.output_in(), 1);
    return sd;
}

// Image n of a case: a disc of random centre and radius, brighter than the background, plus
// noise, clipped to [0,1]; the label is the disc.
void random_image(uint64_t seed, uint64_t n, int64_t H, int64_t W, float* image, float* label) {
    universeg::Rng rng(universeg::seed_from({seed, 2, n}));
    const double cy = rng.uniform(0.25, 0.75) * double(H), cx = rng.uniform(0.25, 0.75) * double(W);
    const double r = rng.uniform(0.1, 0.3) * double(std::min(H, W));
    const double bg = rng.uniform(0.1, 0.4), fg = rng.uniform(0.6, 0.9);
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            const bool in = (double(y) - cy) * (double(y) - cy) + (double(x) - cx) * (double(x) - cx) <= r * r;
            const double v = (in ? fg : bg) + 0.1 * rng.normal();
            image[y * W + x] = float(std::clamp(v, 0.0, 1.0));
            if (label) label[y * W + x] = in ? 1.0f : 0.0f;
        }
}

}  // namespace

int cmd_compare(int argc, char** argv) {
    Args a("compare", kCompareUsage, argc, argv, {"--atol", "--rtol"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (a.positional().size() != 2) throw Error("expected two arrays, A.npy and B.npy (see universeg compare --help)");
    const double atol = a.get_double("--atol", 1e-4, 0, 1e300), rtol = a.get_double("--rtol", 0, 0, 1e300);
    const std::string pa = a.positional()[0], pb = a.positional()[1];
    const Array A = load_array_f64(pa), B = load_array_f64(pb);
    std::printf("A: %s %s %s\nB: %s %s %s\n", pa.c_str(), universeg::shape_string(A.shape).c_str(), A.dtype.c_str(),
                pb.c_str(), universeg::shape_string(B.shape).c_str(), B.dtype.c_str());
    if (squeezed(A.shape) != squeezed(B.shape))
        throw Error("shapes differ: " + pa + " " + universeg::shape_string(A.shape) + ", " + pb + " " +
                    universeg::shape_string(B.shape));
    const int64_t n = int64_t(A.v.size());
    double max_abs = 0, sum_abs = 0, max_rel = 0, sum_rel = 0;
    int64_t at_max = -1, rel_count = 0, mask_same = 0, beyond = 0, first = -1, nan = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double x = A.v[size_t(i)], y = B.v[size_t(i)], e = std::fabs(x - y);
        mask_same += (x > 0) == (y > 0);
        if (std::isnan(e)) {
            ++nan;
        } else {
            if (at_max < 0 || e > max_abs) {
                max_abs = e;
                at_max = i;
            }
            sum_abs += e;
            if (y != 0) {
                max_rel = std::max(max_rel, e / std::fabs(y));
                sum_rel += e / std::fabs(y);
                ++rel_count;
            }
        }
        if (!(e <= atol + rtol * std::fabs(y)) && !(x == y)) {  // x == y: equal infinities
            if (first < 0) first = i;
            ++beyond;
        }
    }
    const std::vector<int64_t>& shape = B.shape;
    std::printf("max |A-B|  = %.6g", max_abs);
    if (at_max >= 0) std::printf(" at %s", index_string(at_max, shape).c_str());
    std::printf("\nmean |A-B| = %.6g\n", n - nan ? sum_abs / double(n - nan) : 0.0);
    std::printf("max |A-B|/|B| = %.6g, mean %.6g (over %lld elements with B != 0)\n", max_rel,
                rel_count ? sum_rel / double(rel_count) : 0.0, (long long)rel_count);
    std::printf("mask agreement at 0: %.4f%% (%lld of %lld elements differ)\n", n ? 100.0 * double(mask_same) / double(n) : 100.0,
                (long long)(n - mask_same), (long long)n);
    if (nan) std::printf("NaN differences: %lld\n", (long long)nan);
    if (beyond == 0) {
        std::printf("within tolerance (|A-B| <= %g + %g*|B|): PASS\n", atol, rtol);
        return 0;
    }
    std::printf("beyond tolerance (|A-B| <= %g + %g*|B|): %lld of %lld elements, the first at %s (A = %.9g, B = %.9g): FAIL\n",
                atol, rtol, (long long)beyond, (long long)n, index_string(first, shape).c_str(), A.v[size_t(first)],
                B.v[size_t(first)]);
    return 1;
}

int cmd_make_case(int argc, char** argv) {
    Args a("make-case", kMakeCaseUsage, argc, argv,
           {"--out", "--config", "--seed", "--batch", "--support-size", "--size", "--threads"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const std::string out = a.get("--out"), config_text = a.get("--config", "[64,64,64,64]");
    const universeg::Config config = universeg::parse_config(config_text, "--config");
    const uint64_t seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
    const int64_t B = a.get_int("--batch", 1, 1, 1024), S = a.get_int("--support-size", 4, 1, 4096);
    const std::string size = a.get("--size", "128x128");
    auto side = [&size](const std::string& text) {
        int64_t v = 0;
        bool digits = !text.empty();
        for (char ch : text) {
            digits &= ch >= '0' && ch <= '9';
            if (digits && v <= 8192) v = v * 10 + (ch - '0');
        }
        if (!digits || v < 1 || v > 8192)
            throw Error("--size must be HxW (or H for a square) with sides in [1, 8192], got '" + size + "'");
        return v;
    };
    const size_t x = size.find('x');
    const int64_t H = side(size.substr(0, x)), W = x == std::string::npos ? H : side(size.substr(x + 1));
    const int64_t m = config.size_multiple();
    if (H % m || W % m)
        throw Error("--size " + size + ": both sides must be multiples of " + std::to_string(m) + " for " +
                    std::to_string(config.levels()) + " encoder blocks");

    const universeg::StateDict sd = random_weights(config, seed);
    const universeg::Model model(sd);
    universeg::Tensor q({B, 1, H, W}), si({B, S, 1, H, W}), sl({B, S, 1, H, W});
    for (int64_t b = 0; b < B; ++b) {
        random_image(seed, uint64_t(b * (S + 1)), H, W, q.ptr() + b * H * W, nullptr);
        for (int64_t i = 0; i < S; ++i)
            random_image(seed, uint64_t(b * (S + 1) + 1 + i), H, W, si.ptr() + (b * S + i) * H * W,
                         sl.ptr() + (b * S + i) * H * W);
    }
    const std::vector<double> logits = model.forward_reference<double>(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W);

    std::filesystem::create_directories(out);
    const std::string dir = out + "/";
    universeg::save_safetensors(dir + "weights.safetensors", sd, {{"format", "pt"}, {"encoder_blocks", config_text}});
    universeg::save_torch_checkpoint(dir + "weights.pt", sd);
    universeg::save_npy(dir + "query.npy", q);
    universeg::save_npy(dir + "support_images.npy", si);
    universeg::save_npy(dir + "support_labels.npy", sl);
    universeg::save_npy_f64(dir + "logits.npy", {B, 1, H, W}, logits.data());
    char json[512];
    std::snprintf(json, sizeof json,
                  "{\"encoder_blocks\": %s, \"seed\": %llu, \"B\": %lld, \"S\": %lld, \"H\": %lld, \"W\": %lld, "
                  "\"logits\": \"fp64 reference forward of universeg make-case\"}\n",
                  config_text.c_str(), (unsigned long long)seed, (long long)B, (long long)S, (long long)H, (long long)W);
    universeg::write_file_atomic(dir + "config.json", std::vector<uint8_t>(json, json + std::strlen(json)));

    double max_abs = 0;
    int64_t positive = 0;
    for (double v : logits) max_abs = std::max(max_abs, std::fabs(v)), positive += v > 0;
    std::printf("wrote %s: %s, %lld parameters, B=%lld S=%lld %lldx%lld; fp64 logits max |logit| %.4g, %.2f%% > 0\n",
                out.c_str(), config.to_string().c_str(), (long long)model.parameter_count(), (long long)B, (long long)S,
                (long long)H, (long long)W, max_abs, 100.0 * double(positive) / double(logits.size()));
    return 0;
}

}  // namespace cli
