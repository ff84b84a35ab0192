// A program that drops the headers in, as the README tells a user to: one file, compiled with
// plain `g++ -std=c++17 -O2 -fopenmp` and include paths only (bench/dropin.sh). It times
// Model::forward the way `universeg bench` does (random inputs, one warm-up run, then N timed
// runs) and prints the same median_ms=... line, so the two can be compared in one run.
#include <universeg/universeg.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: dropin WEIGHTS SUPPORTS REPEATS\n");
        return 2;
    }
    const universeg::Model model = universeg::load_model(argv[1]);
    const int64_t S = std::atoll(argv[2]), repeats = std::atoll(argv[3]), H = 128, W = 128;
    std::mt19937 rng(0);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> q(size_t(H * W)), si(size_t(S * H * W)), sl(size_t(S * H * W)), logits(size_t(H * W));
    for (float& v : q) v = u(rng);
    for (float& v : si) v = u(rng);
    for (float& v : sl) v = u(rng) < 0.4f ? 1.0f : 0.0f;
    std::vector<double> ms;
    for (int64_t r = 0; r <= repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        model.forward(q.data(), si.data(), sl.data(), 1, S, H, W, logits.data());
        const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) ms.push_back(t);  // the first run is the warm-up
    }
    std::sort(ms.begin(), ms.end());
    std::printf("median_ms=%.3f min_ms=%.3f S=%lld kernels=%s\n", ms[ms.size() / 2], ms[0], (long long)S,
                universeg::kernels::select().name);
    return 0;
}
