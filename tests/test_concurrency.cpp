// Model::forward is const and safe to call from several threads at once (issue 2), fast engine
// included: threads share one Model (and copies of it, which share its packed weights and
// workspace pool), start together so that the weights are packed while they race, mix problem
// sizes so that pooled workspaces change hands between shapes, and must get exactly the
// logits a serial run of a separate model gives. Run under ThreadSanitizer by .ci/run.
#include <catch2/catch.hpp>
#include <universeg/universeg.hpp>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

using namespace universeg;

namespace {

StateDict random_state_dict(const std::vector<BlockFeatures>& enc, unsigned seed) {
    const Config cfg = Config::from_encoder(enc);
    std::mt19937 rng(seed);
    StateDict sd;
    auto conv = [&](const std::string& name, int64_t out, int64_t in, int64_t k) {
        std::normal_distribution<float> w(0.0f, float(std::sqrt(2.0 / double(in * k * k)))), b(0.0f, 0.05f);
        Tensor wt({out, in, k, k}), bt({out});
        for (float& v : wt.data) v = w(rng);
        for (float& v : bt.data) v = b(rng);
        sd[name + ".weight"] = wt;
        sd[name + ".bias"] = bt;
    };
    auto block = [&](const std::string& p, int64_t ct, int64_t cs, BlockFeatures f) {
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

struct Problem {
    int64_t B, S, H, W;
    std::vector<float> query, images, labels, expected;
};

Problem make_problem(int64_t B, int64_t S, int64_t H, int64_t W, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    Problem p{B, S, H, W, std::vector<float>(size_t(B * H * W)), std::vector<float>(size_t(B * S * H * W)),
              std::vector<float>(size_t(B * S * H * W)), {}};
    for (float& v : p.query) v = u(rng);
    for (float& v : p.images) v = u(rng);
    for (float& v : p.labels) v = u(rng) < 0.3f ? 1.0f : 0.0f;
    return p;
}

std::vector<float> run(const Model& m, const Problem& p) {
    std::vector<float> out(size_t(p.B * p.H * p.W));
    m.forward(p.query.data(), p.images.data(), p.labels.data(), p.B, p.S, p.H, p.W, out.data());
    return out;
}

}  // namespace

TEST_CASE("concurrent forward calls on one shared model give the serial results", "[concurrency]") {
    const StateDict sd = random_state_dict({{16, 8}, {16, 16}, {24, 16}}, 1);
    std::vector<Problem> problems;
    problems.push_back(make_problem(1, 3, 16, 16, 2));
    problems.push_back(make_problem(2, 1, 24, 8, 3));
    problems.push_back(make_problem(1, 5, 8, 32, 4));
    {
        const Model serial(sd);  // a separate model: the shared one starts with nothing packed
        for (Problem& p : problems) p.expected = run(serial, p);
    }

    const Model shared(sd);
    const Model copy = shared;  // shares the packed weights and the workspace pool
    const int kThreads = 4, kRounds = 3;
    std::atomic<int> ready{0}, mismatches{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            const Model& m = t % 2 ? copy : shared;
            ++ready;
            while (ready.load() < kThreads) std::this_thread::yield();  // all start together
            try {
                for (int r = 0; r < kRounds; ++r)
                    for (size_t k = 0; k < problems.size(); ++k) {
                        const Problem& p = problems[(k + size_t(t)) % problems.size()];
                        if (run(m, p) != p.expected) ++mismatches;
                    }
            } catch (...) {
                ++errors;
            }
        });
    for (std::thread& t : threads) t.join();
    CHECK(errors == 0);
    CHECK(mismatches == 0);
    for (const Problem& p : problems) CHECK(run(shared, p) == p.expected);
}
