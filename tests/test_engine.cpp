// The CPU engine (cpu/engine.hpp) against the official golden logits and against the
// reference forward in double, for every instruction set this program carries and this CPU
// runs: both golden cases, other configs (one, two and three levels, uneven feature counts),
// odd support sizes, batches, bit-identical results for 1 and 2 threads, concurrent callers,
// the bf16 mode's mask agreement; the memory bound (bit-identical logits, the engine within
// the bound); edge cases (empty masks, constant images, S = 1, the largest supported size).
#include <universeg/core/random.hpp>
#include <universeg/segment/segment.hpp>

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
using Catch::Matchers::Contains;

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


std::vector<float> fast_forward(const Model& m, const float* q, const float* si, const float* sl, int64_t B, int64_t S,
                                int64_t H, int64_t W, const engine::Options& opt = {}) {
    std::vector<float> out(size_t(B * H * W));
    m.forward(q, si, sl, B, S, H, W, out.data(), opt);
    return out;
}

// A model of the given encoder config with random weights, and random inputs.
struct Random {
    Model model;
    std::vector<float> q, si, sl;
    int64_t B, S, H, W;
};

Random random_problem(const std::vector<BlockFeatures>& enc, int64_t B, int64_t S, int64_t H, int64_t W, uint64_t seed) {
    Rng rng(seed);
    const StateDict sd = random_state_dict(enc, unsigned(seed));
    Random r{Model(sd), std::vector<float>(size_t(B * H * W)), std::vector<float>(size_t(B * S * H * W)),
             std::vector<float>(size_t(B * S * H * W)), B, S, H, W};
    for (float& v : r.q) v = float(rng.uniform());
    for (float& v : r.si) v = float(rng.uniform());
    for (float& v : r.sl) v = rng.chance(0.4) ? 1.0f : 0.0f;
    return r;
}

// Packed weights + workspace that a bounded call with groups of G supports may use.
int64_t bounded_need(const Model& m, int64_t H, int64_t W, int64_t G, bool bf16 = false) {
    engine::Options opt;
    if (bf16) opt.precision = kernels::Precision::bf16;
    const engine::Memory need = engine::memory(m, G, H, W, opt, G);
    return need.packed_bytes + need.workspace_bytes;
}

// The bounded forward with a workspace of the test's own, to measure it.
std::vector<float> bounded_forward(const Model& m, const float* q, const float* si, const float* sl, int64_t B, int64_t S,
                                   int64_t H, int64_t W, double mb, int64_t* workspace_bytes, int64_t* packed_bytes,
                                   bool bf16 = false) {
    engine::Workspace ws;
    engine::Options opt;
    opt.max_memory_mb = mb;
    if (bf16) opt.precision = kernels::Precision::bf16;
    std::vector<float> out(size_t(B * H * W));
    engine::forward(m, ws, q, si, sl, B, S, H, W, out.data(), opt);
    *workspace_bytes = ws.bytes();
    *packed_bytes = engine::memory(m, S, H, W, opt).packed_bytes;
    return out;
}

// The bounded forward with groups of G supports: bit-identical to `ref`, the unbounded logits,
// and the engine's memory (packed weights plus workspace) within the bound it was given.
void check_bounded(const Model& m, const float* q, const float* si, const float* sl, int64_t B, int64_t S, int64_t H,
                   int64_t W, int64_t G, const std::vector<float>& ref) {
    INFO("group of " << G);
    const double mb = double(bounded_need(m, H, W, G)) / double(1 << 20);
    int64_t ws = 0, packed = 0;
    CHECK(same_bits(bounded_forward(m, q, si, sl, B, S, H, W, mb, &ws, &packed), ref));
    CHECK(double(ws + packed) <= mb * double(1 << 20));
}

struct Inputs {
    std::vector<float> query, images, labels;
};

// Uniform images; labels a disc per support (or all zero when `empty_masks`).
Inputs random_inputs(int64_t B, int64_t S, int64_t H, int64_t W, unsigned seed, bool empty_masks = false) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    Inputs in{std::vector<float>(size_t(B * H * W)), std::vector<float>(size_t(B * S * H * W)),
              std::vector<float>(size_t(B * S * H * W), 0.0f)};
    for (float& v : in.query) v = u(rng);
    for (float& v : in.images) v = u(rng);
    if (!empty_masks)
        for (int64_t n = 0; n < B * S; ++n) {
            const float cy = u(rng) * float(H), cx = u(rng) * float(W), r = 0.3f * float(std::min(H, W));
            for (int64_t y = 0; y < H; ++y)
                for (int64_t x = 0; x < W; ++x)
                    in.labels[size_t((n * H + y) * W + x)] =
                        (float(y) - cy) * (float(y) - cy) + (float(x) - cx) * (float(x) - cx) < r * r;
        }
    return in;
}

std::vector<float> forward(const Model& m, const Inputs& in, int64_t B, int64_t S, int64_t H, int64_t W) {
    std::vector<float> out(size_t(B * H * W));
    m.forward(in.query.data(), in.images.data(), in.labels.data(), B, S, H, W, out.data());
    return out;
}

// The fast forward against the readable reference forward in double (the bound of issue 2).
void check_against_reference(const Model& m, const Inputs& in, int64_t B, int64_t S, int64_t H, int64_t W) {
    const std::vector<float> fast = forward(m, in, B, S, H, W);
    const std::vector<double> ref =
        m.forward_reference<double>(in.query.data(), in.images.data(), in.labels.data(), B, S, H, W);
    double diff = 0, top = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        diff = std::max(diff, std::isfinite(fast[i]) ? std::abs(double(fast[i]) - ref[i]) : INFINITY);
        top = std::max(top, std::abs(ref[i]));
    }
    INFO("B=" << B << " S=" << S << " " << H << "x" << W << " max diff " << diff);
    CHECK(diff <= 1e-4 * std::max(1.0, top));
}

}  // namespace

// The v1 case runs on the best instruction set here; test_engine_sse2 / _avx2 (ctest) run it
// on the others through UNIVERSEG_ARCH. [large]: minutes under qemu, where test_model's golden
// v1 case (the default path) and test_kernels' v1 convolution shapes (both paths) cover it.
TEST_CASE("fast forward: the v1 golden case on the best instruction set, Winograd and direct", "[large]") {
    const GoldenCase c = load_golden("v1_b2_s4_128");
    const auto options = fp32_options();
    for (size_t k = 0; k < 2; ++k) {
        INFO(describe(options[k]));
        CHECK(max_diff(run(c, options[k]), c.logits.data) <= bound(c.logits.data));
    }
}

TEST_CASE("fast forward: the custom golden case, every instruction set, Winograd and direct") {
    const GoldenCase c = load_golden("custom_b1_s3_48x80");
    for (const engine::Options& o : fp32_options()) {
        INFO(describe(o));
        CHECK(max_diff(run(c, o), c.logits.data) <= bound(c.logits.data));
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

// ---- the memory bound ----

TEST_CASE("under a memory bound the logits are bit-identical and the engine stays under it", "[bound]") {
    // Edge architectures (one block: no decoder; two blocks: a decoder block without a support
    // path) and a deeper one, with every group size.
    const std::vector<std::vector<BlockFeatures>> configs = {
        {{8, 8}}, {{8, 8}, {8, 8}}, {{8, 4}, {8, 8}, {16, 8}, {8, 8}}};
    for (const auto& enc : configs) {
        const Random r = random_problem(enc, 2, 5, 16, 24, 11);
        INFO(r.model.config().to_string());
        const std::vector<float> ref = fast_forward(r.model, r.q.data(), r.si.data(), r.sl.data(), r.B, r.S, r.H, r.W);
        for (int64_t G = 1; G <= r.S; ++G)
            check_bounded(r.model, r.q.data(), r.si.data(), r.sl.data(), r.B, r.S, r.H, r.W, G, ref);
    }
}

// One support at a time and groups of S - 1 (1 + (S - 1)), and through Model::forward (a
// workspace of its own).
static void check_bounded_golden(const char* name) {
    const GoldenCase c = load_golden(name);
    INFO(name);
    const std::vector<float> ref = fast_forward(c.model, c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W);
    for (int64_t G : {int64_t(1), c.S - 1})
        check_bounded(c.model, c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, G, ref);
    engine::Options opt;
    opt.max_memory_mb = double(bounded_need(c.model, c.H, c.W, 1)) / double(1 << 20);
    CHECK(same_bits(fast_forward(c.model, c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, opt), ref));
}

TEST_CASE("the custom golden case under a memory bound: the same logits, bit for bit", "[bound]") {
    check_bounded_golden("custom_b1_s3_48x80");
}

TEST_CASE("the v1 golden case (128x128, B=2, S=4) under a memory bound: the same logits, bit for bit", "[bound][heavy]") {
    check_bounded_golden("v1_b2_s4_128");
}

TEST_CASE("a memory bound below one support at a time is refused, naming the minimum", "[bound]") {
    const GoldenCase c = load_golden("custom_b1_s3_48x80");
    engine::Options opt;
    opt.max_memory_mb = 0.5;
    std::vector<float> out(size_t(c.H * c.W));
    CHECK_THROWS_WITH(c.model.forward(c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, out.data(), opt),
                      Catch::Contains("memory bound of 0.5 MB is below") && Catch::Contains("48x80"));
}

TEST_CASE("bf16 under a memory bound gives the bf16 logits, bit for bit", "[bound]") {
    if (!kernels::cpu_has_bf16()) return;  // the bf16 kernels need AVX512_BF16
    // v1 (every support path in bf16, its stored features too) with one support at a time and
    // with all of them in one group; the custom case has no layer wide enough for bf16.
    for (const char* name : {"v1_b2_s4_128", "custom_b1_s3_48x80"}) {
        INFO(name);
        const GoldenCase c = load_golden(name);
        engine::Options bf16;
        bf16.precision = kernels::Precision::bf16;
        const std::vector<float> ref =
            fast_forward(c.model, c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S, c.H, c.W, bf16);
        for (int64_t G : {int64_t(1), c.S}) {
            INFO("group of " << G);
            const double mb = double(bounded_need(c.model, c.H, c.W, G, true)) / double(1 << 20);
            int64_t ws = 0, packed = 0;
            const std::vector<float> out = bounded_forward(c.model, c.query.ptr(), c.images.ptr(), c.labels.ptr(), c.B, c.S,
                                                           c.H, c.W, mb, &ws, &packed, true);
            CHECK(same_bits(out, ref));
            CHECK(double(ws + packed) <= mb * double(1 << 20));
        }
    }
}

// ---- edge cases ----

TEST_CASE("edge cases: empty support masks, constant images, S = 1, batches", "[hardening]") {
    const Model m(random_state_dict({{8, 8}, {8, 8}, {8, 8}}, 3));
    const int64_t H = 16, W = 12;
    SECTION("every support mask empty") {
        check_against_reference(m, random_inputs(1, 3, H, W, 4, true), 1, 3, H, W);
    }
    SECTION("constant query and supports") {
        for (float c : {0.0f, 1.0f}) {
            Inputs in = random_inputs(1, 2, H, W, 5);
            std::fill(in.query.begin(), in.query.end(), c);
            std::fill(in.images.begin(), in.images.end(), 1.0f - c);
            check_against_reference(m, in, 1, 2, H, W);
        }
        // Normalising a constant image must not divide by zero: it becomes zeros.
        const Image flat = prepare_image(Image{5, 7, std::vector<float>(35, 42.0f)}, H, W, 1, 99);
        CHECK(flat.pixels == std::vector<float>(size_t(H * W), 0.0f));
    }
    SECTION("S = 1, and B = 3 equals three single queries") {
        const int64_t B = 3, S = 1;
        const Inputs in = random_inputs(B, S, H, W, 6);
        check_against_reference(m, in, B, S, H, W);
        const std::vector<float> batch = forward(m, in, B, S, H, W);
        for (int64_t b = 0; b < B; ++b) {
            const size_t HW = size_t(H * W);
            Inputs one{std::vector<float>(in.query.begin() + long(b * HW), in.query.begin() + long((b + 1) * HW)),
                       std::vector<float>(in.images.begin() + long(b * HW), in.images.begin() + long((b + 1) * HW)),
                       std::vector<float>(in.labels.begin() + long(b * HW), in.labels.begin() + long((b + 1) * HW))};
            CHECK(forward(m, one, 1, S, H, W) == std::vector<float>(batch.begin() + long(b * HW), batch.begin() + long((b + 1) * HW)));
        }
    }
    SECTION("a support set where only some masks hold the label, and one where none does") {
        SupportSet set;
        set.height = H;
        set.width = W;
        Image lab{H, W, std::vector<float>(size_t(H * W), 0.0f)};
        add_support(set, Image{H, W, std::vector<float>(size_t(H * W), 0.5f)}, lab, "empty");
        CHECK_THAT(error_of([&] { make_task(m, set, SegmentOptions{}); }), Contains("all empty"));
        lab.pixels[5] = 2;
        add_support(set, Image{H, W, std::vector<float>(size_t(H * W), 0.25f)}, lab, "one pixel");
        const Task task = make_task(m, set, SegmentOptions{});
        const std::vector<Image> probs = predict_probabilities(task, Image{H, W, std::vector<float>(size_t(H * W), 0.0f)});
        REQUIRE(probs.size() == 1);
        CHECK(std::all_of(probs[0].pixels.begin(), probs[0].pixels.end(), [](float p) { return p >= 0.0f && p <= 1.0f; }));
    }
}

// The largest size this project supports is 1024 x 1024 (S = 1) for the v1 architecture, at
// about 3 GB of memory; `universeg segment --size` accepts up to 4096 for smaller models.
TEST_CASE("largest supported size: 1024 x 1024, a tiny model against the reference (no index overflows)",
          "[hardening][large]") {
    const int64_t H = 1024, W = 1024;
    const Model tiny(random_state_dict({{2, 2}, {2, 2}}, 8));
    check_against_reference(tiny, random_inputs(1, 1, H, W, 9), 1, 1, H, W);
}

// [heavy]: its own ctest entry, left out of the sanitizer and emulator runs (see tests/CMakeLists.txt).
TEST_CASE("largest supported size: 1024 x 1024 at S = 1 for v1", "[hardening][large][heavy]") {
    const int64_t H = 1024, W = 1024;
    const Model v1(random_state_dict({{64, 64}, {64, 64}, {64, 64}, {64, 64}}, 10));
    const std::vector<float> logits = forward(v1, random_inputs(1, 1, H, W, 11), 1, 1, H, W);
    CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
}
