// Model::forward is const and safe to call from several threads at once (issue 2), fast engine
// included: threads share one Model (and copies of it, which share its packed weights and
// workspace pool), start together so that the weights are packed while they race, mix problem
// sizes so that pooled workspaces change hands between shapes, and must get exactly the
// logits a serial run of a separate model gives. Run under ThreadSanitizer by .ci/run.
#include "test_util.hpp"

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

using namespace universeg;
using test::random_state_dict;

namespace {

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
