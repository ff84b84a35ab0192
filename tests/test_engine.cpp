// The fast forward (engine.hpp) against the official golden logits and against the
// reference forward in double, for every instruction set this program carries and this CPU
// runs: both golden cases, other configs (one, two and three levels, uneven feature counts),
// odd support sizes, batches, bit-identical results for 1 and 2 threads, concurrent callers,
// and the bf16 mode's mask agreement.
#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace universeg;
using namespace test;

namespace {

std::vector<float> run(const GoldenCase& c, const engine::Options& o) {
    std::vector<float> out(size_t(c.B * c.H * c.W));
    c.model.forward(c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, out.data(), o);
    return out;
}

template <class A>
double bound(const A& ref) {
    return 1e-4 * std::max(1.0, max_abs(ref));
}

template <class A, class B>
double agreement(const A& a, const B& b) {
    size_t same = 0;
    for (size_t i = 0; i < a.size(); ++i) same += (a[i] > 0) == (b[i] > 0);
    return double(same) / double(a.size());
}

// Winograd on every instruction set available, and the direct kernels on the best one.
std::vector<engine::Options> fp32_options() {
    std::vector<engine::Options> out;
    for (const kernels::Table* t : kernels::available_tables()) {
        engine::Options o;
        o.isa = kernels::Isa(t->isa);
        out.push_back(o);
        if (out.size() == 1) {
            o.winograd = false;
            out.push_back(o);
        }
    }
    return out;
}

std::string describe(const engine::Options& o) {
    return std::string(kernels::isa_name(o.isa)) + (o.winograd ? " winograd" : " direct") +
           (o.precision == kernels::Precision::bf16 ? " bf16" : "");
}

GoldenCase random_case(const std::vector<BlockFeatures>& enc, int64_t B, int64_t S, int64_t H, int64_t W, unsigned seed) {
    Model m(random_state_dict(enc, seed));
    std::mt19937 rng(seed + 1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    Tensor q({B, 1, H, W}), si({B, S, 1, H, W}), sl({B, S, 1, H, W});
    for (float& v : q.data) v = u(rng);
    for (float& v : si.data) v = u(rng);
    // Labels: a blob per support, so that the support set defines a task.
    for (int64_t n = 0; n < B * S; ++n) {
        const float cy = u(rng) * float(H), cx = u(rng) * float(W), r = (0.2f + 0.3f * u(rng)) * float(std::min(H, W));
        for (int64_t y = 0; y < H; ++y)
            for (int64_t x = 0; x < W; ++x)
                sl.data[size_t((n * H + y) * W + x)] = (float(y) - cy) * (float(y) - cy) + (float(x) - cx) * (float(x) - cx) < r * r;
    }
    GoldenCase c{m, q, si, sl, Tensor(), B, S, H, W};
    const auto ref = m.forward_reference<double>(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W);
    c.logits = Tensor({B, 1, H, W});
    std::copy(ref.begin(), ref.end(), c.logits.data.begin());
    return c;
}

}  // namespace

// The v1 case runs on the best instruction set here; test_engine_sse2 / _avx2 (ctest) run it
// on the others through UNIVERSEG_ARCH.
TEST_CASE("fast forward: both golden cases, every instruction set, Winograd and direct") {
    for (const char* name : {"v1_b2_s4_128", "custom_b1_s3_48x80"}) {
        const GoldenCase c = load_golden(name);
        const auto options = fp32_options();
        for (size_t k = 0; k < options.size(); ++k) {
            if (name[0] == 'v' && k >= 2) break;
            INFO(name << " " << describe(options[k]));
            const auto out = run(c, options[k]);
            CHECK(max_diff(out, c.logits.data) <= bound(c.logits.data));
        }
    }
}

TEST_CASE("fast forward: the default Model::forward is the fast path and matches the golden case") {
    const GoldenCase c = load_golden("custom_b1_s3_48x80");
    std::vector<float> out(size_t(c.B * c.H * c.W));
    c.model.forward(c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, out.data());
    CHECK(out == run(c, engine::Options{}));
    CHECK(max_diff(out, c.logits.data) <= bound(c.logits.data));
}

TEST_CASE("fast forward: other configs, support sizes and batches against the fp64 reference") {
    struct Setup {
        std::vector<BlockFeatures> enc;
        int64_t B, S, H, W;
    };
    const Setup setups[] = {
        {{{8, 8}}, 1, 2, 9, 7},                                  // one block: no decoder, no support path
        {{{16, 8}, {24, 16}}, 2, 1, 10, 6},                      // two levels, S = 1, odd half sizes
        {{{16, 8}, {24, 16}, {32, 32}}, 1, 5, 20, 12},           // the golden custom config, odd S
        {{{5, 3}, {7, 9}, {4, 4}, {6, 2}}, 1, 3, 24, 8},         // feature counts below the vector width
        {{{64, 64}, {64, 64}, {64, 64}, {64, 64}}, 1, 7, 32, 16}, // v1 shapes, 7 supports (chunk tails)
    };
    unsigned seed = 7;
    for (const Setup& s : setups) {
        const GoldenCase c = random_case(s.enc, s.B, s.S, s.H, s.W, seed++);
        for (const engine::Options& o : fp32_options()) {
            INFO(c.model.config().to_string() << " B=" << s.B << " S=" << s.S << " " << s.H << "x" << s.W << " "
                                              << describe(o));
            CHECK(max_diff(run(c, o), c.logits.data) <= bound(c.logits.data));
        }
    }
}

TEST_CASE("fast forward: bit-identical logits with 1 and 2 threads, and for concurrent callers") {
#ifdef _OPENMP
    const GoldenCase c = random_case({{64, 64}, {64, 64}, {64, 64}}, 1, 9, 36, 20, 42);
    const int threads = omp_get_max_threads();
    const auto options = fp32_options();  // the best instruction set (Winograd, direct) and the lowest
    std::vector<engine::Options> some{options[0], options[1], options.back()};
    if (kernels::cpu_has_bf16()) {
        some.push_back(options[0]);
        some.back().precision = kernels::Precision::bf16;
    }
    for (engine::Options o : some) {
        INFO(describe(o));
        omp_set_num_threads(1);
        const auto one = run(c, o);
        omp_set_num_threads(2);
        const auto two = run(c, o);
        omp_set_num_threads(3);
        const auto three = run(c, o);
        CHECK(one == two);
        CHECK(one == three);
    }
    omp_set_num_threads(threads);
#endif
    const GoldenCase g = load_golden("custom_b1_s3_48x80");
    const auto expected = run(g, engine::Options{});
    std::vector<std::vector<float>> results(3);
    std::vector<std::thread> pool;
    for (auto& r : results) pool.emplace_back([&g, &r] { r = run(g, engine::Options{}); });
    for (auto& t : pool) t.join();
    for (const auto& r : results) CHECK(r == expected);
}

// Run again by ctest under UNIVERSEG_ARCH=sse2 and =avx2 (tests/CMakeLists.txt).
TEST_CASE("UNIVERSEG_ARCH caps the kernels that Model::forward uses", "[arch]") {
    const char* env = std::getenv("UNIVERSEG_ARCH");
    const kernels::Table& t = kernels::select();
    if (env) CHECK(t.isa <= int(kernels::parse_isa(env, "UNIVERSEG_ARCH")));
    INFO("kernels: " << t.name);
    for (const char* name : {"v1_b2_s4_128", "custom_b1_s3_48x80"}) {
        const GoldenCase c = load_golden(name);
        std::vector<float> out(size_t(c.B * c.H * c.W));
        c.model.forward(c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, out.data());
        CHECK(max_diff(out, c.logits.data) <= bound(c.logits.data));
    }
}

TEST_CASE("bf16 mode: agrees with the fp32 mask on >= 99.5% of pixels, or is refused clearly") {
    engine::Options bf16;
    bf16.precision = kernels::Precision::bf16;
    const GoldenCase c = load_golden("custom_b1_s3_48x80");
    if (!kernels::cpu_has_bf16()) {
        CHECK_THROWS_WITH(run(c, bf16), Catch::Contains("AVX512_BF16"));
        return;
    }
    for (const char* name : {"v1_b2_s4_128", "custom_b1_s3_48x80"}) {
        const GoldenCase g = load_golden(name);
        const auto fp32 = run(g, engine::Options{}), low = run(g, bf16);
        INFO(name << " max |bf16 - fp32| = " << max_diff(low, fp32));
        CHECK(agreement(low, fp32) >= 0.995);
        CHECK(agreement(low, g.logits.data) >= 0.995);
    }
    engine::Options sse = bf16;
    sse.isa = kernels::Isa::sse2;
    if (kernels::select(kernels::Isa::sse2).isa <= int(kernels::Isa::sse2))
        CHECK_THROWS_WITH(run(c, sse), Catch::Contains("bf16"));
}
