// The CUDA tests' problems: golden cases and random models, with the CPU reference's logits.
#include "cuda_cases.hpp"

#include <universeg/universeg.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

using namespace universeg;

namespace {

// The readable reference forward in double: an oracle independent of both fast engines.
std::vector<float> cpu_logits(const Model& m, const CudaCase& c) {
    const std::vector<double> out =
        m.forward_reference<double>(c.query.data(), c.images.data(), c.labels.data(), c.B, c.S, c.H, c.W);
    return std::vector<float>(out.begin(), out.end());
}

}  // namespace

CudaCase golden_case(const std::string& name) {
    const std::string dir = std::string(UNIVERSEG_TEST_DATA) + "/golden/" + name + "/";
    const Model model = load_model(dir + "weights.pt");
    const Tensor si = load_npy(dir + "support_images.npy");
    CudaCase c;
    c.name = name;
    c.net = model.network();
    c.query = load_npy(dir + "query.npy").data;
    c.images = si.data;
    c.labels = load_npy(dir + "support_labels.npy").data;
    c.golden = load_npy(dir + "logits.npy").data;
    c.B = si.shape[0];
    c.S = si.shape[1];
    c.H = si.shape[3];
    c.W = si.shape[4];
    c.cpu = cpu_logits(model, c);
    return c;
}

CudaCase random_case(const std::vector<std::pair<int64_t, int64_t>>& encoder, int64_t B, int64_t S, int64_t H, int64_t W,
                     uint32_t seed) {
    std::vector<BlockFeatures> enc;
    for (const auto& e : encoder) enc.push_back({e.first, e.second});
    const Config cfg = Config::from_encoder(enc);
    std::mt19937 rng(seed);
    StateDict sd;
    auto conv = [&](const std::string& name, int64_t out, int64_t in, int64_t k) {
        // Kaiming-like scale keeps the activations O(1) through the network.
        std::normal_distribution<float> w(0.0f, std::sqrt(2.0f / float(in * k * k))), b(0.0f, 0.05f);
        Tensor wt({out, in, k, k}), bt({out});
        for (float& v : wt.data) v = w(rng);
        for (float& v : bt.data) v = b(rng);
        sd[name + ".weight"] = wt;
        sd[name + ".bias"] = bt;
    };
    auto block = [&](const std::string& p, BlockFeatures f, int64_t ti, int64_t si) {
        conv(p + ".cross.cross_conv", f.cross, ti + si, 3);
        conv(p + ".target.vmapped.conv", f.conv, f.cross, 3);
        conv(p + ".support.vmapped.conv", f.conv, f.cross, 3);
    };
    for (int64_t k = 0; k < cfg.levels(); ++k)
        block("enc_blocks." + std::to_string(k), cfg.encoder[size_t(k)], cfg.encoder_target_in(k), cfg.encoder_support_in(k));
    for (size_t d = 0; d < cfg.decoder.size(); ++d)
        block("dec_blocks." + std::to_string(d), cfg.decoder[d], cfg.decoder_in(int64_t(d)), cfg.decoder_in(int64_t(d)));
    conv("out_conv.conv", 1, cfg.output_in(), 1);
    const Model model(sd);

    CudaCase c;
    c.name = "random " + cfg.to_string() + " B=" + std::to_string(B) + " S=" + std::to_string(S) + " " +
             std::to_string(H) + "x" + std::to_string(W);
    c.net = model.network();
    c.B = B;
    c.S = S;
    c.H = H;
    c.W = W;
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    c.query.resize(size_t(B * H * W));
    c.images.resize(size_t(B * S * H * W));
    c.labels.resize(c.images.size());
    for (float& v : c.query) v = u(rng);
    for (float& v : c.images) v = u(rng);
    for (float& v : c.labels) v = u(rng) < 0.4f ? 1.0f : 0.0f;
    c.cpu = cpu_logits(model, c);
    return c;
}

double parity_bound(const std::vector<float>& reference) {
    double m = 1.0;
    for (float v : reference) m = std::max(m, double(std::abs(v)));
    return 1e-4 * m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) throw std::runtime_error("max_abs_diff: sizes differ");
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

double mask_agreement(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size() || a.empty()) throw std::runtime_error("mask_agreement: sizes differ");
    size_t same = 0;
    for (size_t i = 0; i < a.size(); ++i) same += (a[i] > 0.0f) == (b[i] > 0.0f);
    return double(same) / double(a.size());
}
