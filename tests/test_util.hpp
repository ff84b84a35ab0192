// Helpers shared by the test programs: scratch directories, expected errors, running the CLI,
// random UniverSeg weights and the golden cases.
#pragma once

#include <catch2/catch.hpp>
#include <universeg/universeg.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace test {

// A fresh directory, removed with everything in it when the test ends.
struct TempDir {
    std::filesystem::path path;
    explicit TempDir(const std::string& name = "tmp") {
        static int count = 0;  // several per test and per process
        path = std::filesystem::temp_directory_path() /
               ("universeg_" + name + "_" + std::to_string(getpid()) + "_" + std::to_string(count++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string operator/(const std::string& f) const { return (path / f).string(); }
};

// The message of the universeg::Error that f throws; "" (which no expected message matches)
// when it throws none.
template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const universeg::Error& e) {
        return e.what();
    }
    return "";
}

inline std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

// The same floats, bit for bit.
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    // Empty vectors may have null data, which memcmp must not be given.
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

struct Run {
    int rc;
    std::string out, err;
};

// Runs a shell command with stdout and stderr captured through files in `dir`.
inline Run run_shell(const std::string& command, const TempDir& dir) {
    const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
    const int status = std::system((command + " >" + quote(out) + " 2>" + quote(err)).c_str());
    return Run{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

template <class A>
double max_abs(const A& v) {
    double m = 0;
    for (auto x : v) m = std::max(m, std::abs(double(x)));
    return m;
}

template <class A, class B>
double max_diff(const A& a, const B& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

// A UniverSeg state dict for encoder blocks `enc`: Kaiming-normal weights and small biases, the
// scale of the golden cases' (and of trained) weights.
inline universeg::StateDict random_state_dict(const std::vector<universeg::BlockFeatures>& enc, unsigned seed) {
    using universeg::Tensor;
    const universeg::Config cfg = universeg::Config::from_encoder(enc);
    std::mt19937 rng(seed);
    universeg::StateDict sd;
    auto conv = [&](const std::string& name, int64_t out, int64_t in, int64_t k) {
        std::normal_distribution<float> w(0.0f, float(std::sqrt(2.0 / double(in * k * k)))), b(0.0f, 0.05f);
        Tensor wt({out, in, k, k}), bt({out});
        for (float& v : wt.data) v = w(rng);
        for (float& v : bt.data) v = b(rng);
        sd[name + ".weight"] = wt;
        sd[name + ".bias"] = bt;
    };
    auto block = [&](const std::string& p, int64_t ct, int64_t cs, universeg::BlockFeatures f) {
        conv(p + ".cross.cross_conv", f.cross, ct + cs, 3);
        conv(p + ".target.vmapped.conv", f.conv, f.cross, 3);
        conv(p + ".support.vmapped.conv", f.conv, f.cross, 3);
    };
    for (int64_t k = 0; k < cfg.levels(); ++k)
        block("enc_blocks." + std::to_string(k), cfg.encoder_target_in(k), cfg.encoder_support_in(k), cfg.encoder[size_t(k)]);
    for (size_t k = 0; k < cfg.decoder.size(); ++k)
        block("dec_blocks." + std::to_string(k), cfg.decoder_in(int64_t(k)), cfg.decoder_in(int64_t(k)), cfg.decoder[k]);
    conv("out_conv.conv", 1, cfg.output_in(), 1);
    return sd;
}

// tests/data/golden/NAME: the official implementation's weights, inputs and logits.
const std::string kGolden = std::string(UNIVERSEG_TEST_DATA) + "/golden/";

struct GoldenCase {
    universeg::Model model;
    universeg::Tensor query, images, labels, logits;
    int64_t B, S, H, W;
};

inline GoldenCase load_golden(const std::string& name) {
    const std::string dir = kGolden + name + "/";
    universeg::Tensor q = universeg::load_npy(dir + "query.npy"), si = universeg::load_npy(dir + "support_images.npy");
    return GoldenCase{universeg::load_model(dir + "weights.pt"), q, si, universeg::load_npy(dir + "support_labels.npy"),
                      universeg::load_npy(dir + "logits.npy"), si.shape[0], si.shape[1], si.shape[3], si.shape[4]};
}

}  // namespace test
