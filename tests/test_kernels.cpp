// The fast kernels (kernels.hpp, kernels/simd.hpp) against the reference convolution of
// ops.hpp computed in double, for every instruction set this program carries and this CPU
// runs: odd sizes, row and tile tails, channel counts that are not a multiple of the vector
// width, both epilogues, and every convolution shape of the v1 model; and the trainer's GEMM
// against a double-precision product and inside the im2col convolutions.
#include <catch2/catch.hpp>
#include <universeg/cpu/engine.hpp>
#include <universeg/cpu/kernels.hpp>
#include <universeg/core/ops.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace universeg;
using kernels::ConvArgs;

namespace {

std::vector<float> random_floats(size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

// An image in the kernels' layout (padded NHWC) from a planar (C,H,W) one.
struct Image {
    kernels::Geom g;
    int64_t c = 0, cp = 0;
    std::vector<float> data;
    float* ptr() { return data.data(); }
    float at(int64_t ch, int64_t y, int64_t x) const { return data[size_t(((y + 1) * g.wp + x + 1) * cp + ch)]; }
};

Image to_layout(const std::vector<float>& chw, int64_t c, int64_t cp, int64_t h, int64_t w) {
    Image im{kernels::geom(h, w), c, cp, {}};
    im.data.assign(size_t(im.g.pixels() * cp), 0.0f);
    for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x)
                im.data[size_t(((y + 1) * im.g.wp + x + 1) * cp + ch)] = chw[size_t((ch * h + y) * w + x)];
    return im;
}

struct Problem {
    int64_t cin, cout, h, w;
    std::vector<float> input, weight, bias, addend;  // planar
    std::vector<double> expected;                    // (cout, h, w)
};

Problem make_problem(int64_t cin, int64_t cout, int64_t h, int64_t w, bool with_addend, bool leaky, unsigned seed) {
    Problem p{cin, cout, h, w, random_floats(size_t(cin * h * w), seed),
              random_floats(size_t(cout * cin * 9), seed + 1, float(std::sqrt(2.0 / (9.0 * double(cin))))),
              random_floats(size_t(cout), seed + 2, 0.1f), {}, {}};
    auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    const std::vector<double> in = d(p.input), wt = d(p.weight), b = d(p.bias);
    p.expected.assign(size_t(cout * h * w), 0.0);
    conv2d_forward(p.expected.data(), in.data(), wt.data(), b.data(), int64_t(1), cin, cout, h, w, int64_t(3));
    if (with_addend) {
        p.addend = random_floats(size_t(cout * h * w), seed + 3);
        for (size_t i = 0; i < p.expected.size(); ++i) p.expected[i] += double(p.addend[i]) - double(p.bias[i / size_t(h * w)]);
    }
    if (leaky)
        for (double& v : p.expected) v = v > 0 ? v : double(kernels::kSlope) * v;
    return p;
}

enum class Algo { direct, winograd, winograd_bf16, direct_bf16 };

// bf16 images for the bf16 kernels' in16/out16: the same layout, each value rounded.
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
    return out;
}

// Runs one algorithm on the problem, split into work items of `item` rows or tiles, and
// returns the largest difference to the double reference relative to the output's scale.
// Also checks that the output's border and padding channels stay zero. The bf16 kernels may
// read their input (in16) and write their output (out16) in bf16.
double run(const kernels::Table& t, Algo algo, const Problem& p, bool leaky, int64_t item, bool in16 = false,
           bool out16 = false, std::vector<float>* result = nullptr) {
    const bool direct = algo == Algo::direct || algo == Algo::direct_bf16;
    const int64_t in_cp = direct && p.cin < 4 ? kernels::round_up(p.cin, algo == Algo::direct_bf16 ? 2 : 1)
                                              : kernels::channel_stride(p.cin);
    const int64_t out_cp = kernels::channel_stride(p.cout);
    Image in = to_layout(p.input, p.cin, in_cp, p.h, p.w);
    Image out = to_layout(std::vector<float>(size_t(p.cout * p.h * p.w), 0.0f), p.cout, out_cp, p.h, p.w);
    Image add;
    std::vector<float> bias(size_t(out_cp), 0.0f);
    std::copy(p.bias.begin(), p.bias.end(), bias.begin());
    if (!p.addend.empty()) add = to_layout(p.addend, p.cout, out_cp, p.h, p.w);
    std::fill(out.data.begin(), out.data.end(), 0.0f);
    std::vector<uint16_t> in_bf16 = to_bf16(in.data), out_bf16(out.data.size(), 0x7fc0);  // NaN: must be overwritten

    ConvArgs a;
    a.in = in.ptr();
    a.in_cp = in_cp;
    a.cin = p.cin;
    a.out = out.ptr();
    a.out_cp = out_cp;
    a.cout = out_cp;
    a.h = p.h;
    a.w = p.w;
    a.wp = in.g.wp;
    a.bias = bias.data();
    a.addend = p.addend.empty() ? nullptr : add.ptr();
    a.leaky = leaky;
    if (in16) a.in16 = in_bf16.data();
    if (out16) a.out16 = out_bf16.data();
    std::vector<float> packed;
    std::vector<uint16_t> packed16;
    if (algo == Algo::direct) {
        packed = kernels::pack_direct(p.weight, p.cout, p.cin, 0, p.cin, out_cp, t.nb);
        a.weight = packed.data();
        for (int64_t y = 0; y < p.h; y += item) t.conv3x3_direct(a, y, std::min(p.h, y + item));
    } else if (algo == Algo::direct_bf16) {
        packed16 = kernels::pack_direct_bf16(p.weight, p.cout, p.cin, 0, p.cin, out_cp, t.nb);
        a.weight_bf16 = packed16.data();
        for (int64_t y = 0; y < p.h; y += item) t.conv3x3_direct_bf16(a, y, std::min(p.h, y + item));
    } else {
        const int64_t tiles = in.g.tiles(), group = std::min<int64_t>(item, t.tile_group);
        std::vector<float> scratch(size_t(kernels::winograd_scratch_floats(group, in_cp, out_cp)));
        if (algo == Algo::winograd) {
            packed = kernels::pack_winograd(p.weight, p.cout, p.cin, 0, p.cin, out_cp, t.nb);
            a.weight = packed.data();
        } else {
            packed16 = kernels::pack_winograd_bf16(p.weight, p.cout, p.cin, 0, p.cin, out_cp, t.nb);
            a.weight_bf16 = packed16.data();
        }
        for (int64_t t0 = 0; t0 < tiles; t0 += group) {
            const int64_t t1 = std::min(tiles, t0 + group);
            (algo == Algo::winograd ? t.conv3x3_winograd : t.conv3x3_winograd_bf16)(a, t0, t1, scratch.data());
        }
    }
    if (out16)
        for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = bf16_to_float(out_bf16[i]);
    if (result) *result = out.data;
    double err = 0, scale = 1e-3;
    for (double v : p.expected) scale = std::max(scale, std::abs(v));
    for (int64_t c = 0; c < out_cp; ++c)
        for (int64_t y = -1; y < out.g.hp - 1; ++y)
            for (int64_t x = -1; x < out.g.wp - 1; ++x) {
                const bool inside = c < p.cout && y >= 0 && y < p.h && x >= 0 && x < p.w;
                const double e = inside ? p.expected[size_t((c * p.h + y) * p.w + x)] : 0.0;
                err = std::max(err, std::abs(double(out.at(c, y, x)) - e));
            }
    return err / scale;
}

std::vector<const kernels::Table*> tables() { return kernels::available_tables(); }

}  // namespace

TEST_CASE("a table is available for this CPU and UNIVERSEG_ARCH caps the choice") {
    const auto all = tables();
    REQUIRE(!all.empty());
    for (size_t i = 1; i < all.size(); ++i) CHECK(all[i - 1]->isa > all[i]->isa);
    for (const kernels::Table* t : all) {
        INFO(t->name);
        CHECK(kernels::cpu_has(kernels::Isa(t->isa)));
        CHECK(&kernels::select(kernels::Isa(t->isa)) == t);
        CHECK(t->conv3x3_direct != nullptr);
        CHECK(t->conv3x3_winograd != nullptr);
    }
    CHECK_THROWS_WITH(kernels::parse_isa("avx9", "test"), Catch::Contains("avx9"));
}

struct OddShape {
    int64_t cin, cout, h, w;
};

// Every table x shape x variant, each problem with its own seed; bit 0 of the variant adds an
// addend, bit 1 applies LeakyReLU, higher bits are the caller's.
template <class Check>
void for_each_odd_problem(const std::vector<OddShape>& shapes, unsigned seed, int variants, Check check) {
    for (const kernels::Table* t : tables())
        for (const OddShape& s : shapes)
            for (int variant = 0; variant < variants; ++variant) {
                const bool addend = variant & 1, leaky = variant & 2;
                const Problem p = make_problem(s.cin, s.cout, s.h, s.w, addend, leaky, seed++);
                INFO(t->name << " cin=" << s.cin << " cout=" << s.cout << " " << s.h << "x" << s.w << " addend=" << addend
                              << " leaky=" << leaky);
                check(*t, p, leaky, variant);
            }
}

TEST_CASE("direct convolution matches the reference on odd sizes, tails and both epilogues") {
    for_each_odd_problem({{1, 16, 5, 7}, {2, 64, 9, 13}, {3, 24, 1, 1}, {17, 16, 3, 17}, {16, 48, 11, 6}, {64, 64, 7, 8}}, 10, 4,
                         [](const kernels::Table& t, const Problem& p, bool leaky, int variant) {
                             CHECK(run(t, Algo::direct, p, leaky, 1 + variant) < 1e-5);
                         });
}

// bf16 operands (2^-9 relative rounding of inputs and weights), exact products, fp32 sums.
TEST_CASE("direct convolution with bf16 products: odd sizes, tails, both epilogues, bf16 input and output") {
    if (!kernels::cpu_has_bf16()) return;
    for_each_odd_problem({{1, 16, 5, 7}, {2, 64, 9, 13}, {3, 24, 1, 1}, {17, 16, 3, 17}, {2, 64, 12, 128}, {64, 64, 7, 8}}, 50, 16,
                         [](const kernels::Table& t, const Problem& p, bool leaky, int variant) {
                             if (!t.conv3x3_direct_bf16) return;
                             const bool out16 = variant & 4, in16 = variant & 8;
                             INFO("in16=" << in16 << " out16=" << out16);
                             const double err = run(t, Algo::direct_bf16, p, leaky, 1 + variant % 8, in16, out16);
                             CHECK(err < 1e-2);
                             CHECK(err > 1e-6);  // the products really are bf16
                         });
}

// The bf16 mode's stored feature maps (engine.hpp, support16) go through to_bf16.
TEST_CASE("to_bf16 rounds to nearest even, as float_to_bf16 does") {
    std::vector<float> v = random_floats(4096, 77, 100.0f);
    std::mt19937 rng(78);
    for (size_t i = 0; i < v.size(); i += 3) {  // exact ties, with even and odd kept mantissas
        uint32_t b = (rng() & 0x3FFF0000u) | 0x8000u | 0x3F000000u;
        std::memcpy(&v[i], &b, 4);
    }
    v[1] = 0.0f;
    v[2] = -1.0f;
    for (const kernels::Table* t : tables()) {
        if (!t->to_bf16 || !kernels::cpu_has_bf16()) continue;
        INFO(t->name);
        std::vector<uint16_t> got(v.size());
        t->to_bf16(got.data(), v.data(), int64_t(v.size()));
        size_t wrong = 0;
        for (size_t i = 0; i < v.size(); ++i) wrong += got[i] != float_to_bf16(v[i]);
        CHECK(wrong == 0);
    }
}

TEST_CASE("Winograd F(4x4,3x3) matches the reference on odd sizes, tile tails and both epilogues") {
    for_each_odd_problem({{16, 16, 5, 7}, {3, 64, 9, 13}, {17, 24, 1, 1}, {32, 48, 6, 17}, {64, 64, 13, 4}, {128, 64, 8, 8}}, 100, 4,
                         [](const kernels::Table& t, const Problem& p, bool leaky, int variant) {
                             // F(4x4,3x3) loses a few bits to its transforms: well inside the model's 1e-4.
                             CHECK(run(t, Algo::winograd, p, leaky, 1 + 5 * variant) < 2e-5);
                             if (!t.conv3x3_winograd_bf16 || !kernels::cpu_has_bf16()) return;
                             for (int io = 0; io < 4; ++io) {
                                 INFO("in16=" << (io & 1) << " out16=" << (io >> 1));
                                 CHECK(run(t, Algo::winograd_bf16, p, leaky, 1 + 5 * variant, io & 1, io & 2) < 6e-2);
                             }
                         });
}

// The AMX kernel multiplies the same bf16 operands as the AVX512_BF16 one and sums in fp32:
// only the order of the sums differs, so their outputs agree far inside the 6e-2 that both
// keep from the exact result. Whole 32s of input channels (1, 2, 3 and 4 of them) run on the
// tiles, the others (48) on the fallback; output widths of 1 to 5 column blocks; tile tails.
TEST_CASE("the AMX Winograd kernel computes the AVX512_BF16 kernel's products") {
    const auto all = tables();
    const auto find = [&](kernels::Isa isa) -> const kernels::Table* {
        for (const kernels::Table* t : all)
            if (t->isa == int(isa)) return t;
        return nullptr;
    };
    const kernels::Table *amx = find(kernels::Isa::amx), *avx512 = find(kernels::Isa::avx512);
    if (!amx || !avx512) return;  // no AMX here: the kernel is covered where it runs
    CHECK(amx->conv3x3_winograd_bf16 != avx512->conv3x3_winograd_bf16);
    unsigned seed = 300;
    for (const OddShape& s : std::vector<OddShape>{{32, 16, 9, 13}, {64, 48, 6, 17}, {96, 64, 8, 8}, {128, 80, 5, 21}, {48, 64, 7, 7}})
        for (int io = 0; io < 4; ++io) {
            INFO("cin=" << s.cin << " cout=" << s.cout << " " << s.h << "x" << s.w << " in16=" << (io & 1) << " out16=" << (io >> 1));
            const Problem p = make_problem(s.cin, s.cout, s.h, s.w, io == 1, io == 2, seed++);
            std::vector<float> a, b;
            const double err = run(*amx, Algo::winograd_bf16, p, io == 2, amx->tile_group, io & 1, io & 2, &a);
            CHECK(err < 6e-2);
            run(*avx512, Algo::winograd_bf16, p, io == 2, avx512->tile_group, io & 1, io & 2, &b);
            REQUIRE(a.size() == b.size());
            double scale = 1e-3, diff = 0;
            for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, double(std::abs(b[i])));
            for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double(std::abs(a[i] - b[i])));
            // out16 rounds both to bf16: a last-bit difference in the sum may round them one bf16
            // step apart, up to 2^-7 of the value.
            CHECK(diff / scale < (io & 2 ? 8e-3 : 1e-5));
        }
}

TEST_CASE("every convolution shape of the v1 model, at its real size") {
    struct Shape {
        int64_t cin, cout, h;
    };
    // enc 0 cross (target, support halves), enc support/target convs at each level, enc k>0
    // cross halves, dec cross halves (up + skip = 128 channels).
    const Shape shapes[] = {{1, 64, 128}, {2, 64, 128}, {64, 64, 128}, {64, 64, 64}, {64, 64, 32},
                            {64, 64, 16}, {128, 64, 32},  {128, 64, 64}, {128, 64, 128}};
    unsigned seed = 1000;
    for (const Shape& s : shapes) {
        const Problem p = make_problem(s.cin, s.cout, s.h, s.h, true, false, seed++);
        for (const kernels::Table* t : tables()) {
            INFO(t->name << " cin=" << s.cin << " cout=" << s.cout << " size=" << s.h);
            if (s.cin < 16) {
                CHECK(run(*t, Algo::direct, p, false, 8) < 1e-5);
                if (t->conv3x3_direct_bf16 && kernels::cpu_has_bf16()) CHECK(run(*t, Algo::direct_bf16, p, false, 8, true) < 1e-2);
                continue;
            }
            CHECK(run(*t, Algo::winograd, p, false, t->tile_group) < 2e-5);
            if (t->conv3x3_winograd_bf16 && kernels::cpu_has_bf16()) {
                CHECK(run(*t, Algo::winograd_bf16, p, false, t->tile_group) < 6e-2);
                CHECK(run(*t, Algo::winograd_bf16, p, false, t->tile_group, true, true) < 6e-2);
            }
        }
    }
}

TEST_CASE("the trainer's GEMM matches a double product: strides, transposed B, accumulation, ragged tails") {
    struct Case {
        int64_t m, n, k;
    };
    unsigned seed = 2000;
    for (Case c : {Case{1, 1, 1}, Case{7, 17, 9}, Case{13, 64, 33}, Case{6, 130, 5}, Case{32, 70, 288}}) {
        for (bool trans : {false, true})
            for (bool add : {false, true}) {
                const int64_t lda = c.k + 3, ldb = (trans ? c.k : c.n) + 5, ldc = c.n + 2;
                const auto A = random_floats(size_t(c.m * lda), seed++);
                const auto B = random_floats(size_t((trans ? c.n : c.k) * ldb), seed++);
                const auto C0 = random_floats(size_t(c.m * ldc), seed++);
                for (const kernels::Table* t : tables()) {
                    INFO(t->name << " m=" << c.m << " n=" << c.n << " k=" << c.k << " trans=" << trans << " add=" << add);
                    std::vector<float> C = C0, pack(size_t(c.k * t->nb));
                    t->gemm({c.m, c.n, c.k, A.data(), lda, B.data(), ldb, trans, C.data(), ldc, add}, pack.data());
                    double worst = 0;
                    for (int64_t i = 0; i < c.m; ++i)
                        for (int64_t j = 0; j < ldc; ++j) {
                            const float got = C[size_t(i * ldc + j)], was = C0[size_t(i * ldc + j)];
                            if (j >= c.n) {  // the padding between rows is never written
                                REQUIRE(got == was);
                                continue;
                            }
                            double s = add ? double(was) : 0.0;
                            for (int64_t q = 0; q < c.k; ++q)
                                s += double(A[size_t(i * lda + q)]) *
                                     double(trans ? B[size_t(j * ldb + q)] : B[size_t(q * ldb + j)]);
                            worst = std::max(worst, std::abs(double(got) - s));
                        }
                    CHECK(worst < 1e-5 * double(c.k + 1));
                }
            }
    }
}

TEST_CASE("float convolutions and their gradients agree with Eigen's GEMM and the kernels' one") {
    // 45x50 crosses the im2col chunk; Cin*9 and Cout are not multiples of the vector width.
    const int64_t N = 2, Cin = 3, Cout = 5, H = 45, W = 50, K = 3, HW = H * W;
    const auto in = random_floats(size_t(N * Cin * HW), 3000), w = random_floats(size_t(Cout * Cin * K * K), 3001);
    const auto b = random_floats(size_t(Cout), 3002), dout = random_floats(size_t(N * Cout * HW), 3003);
    std::vector<float> out_ref(size_t(N * Cout * HW)), din_ref(in.size()), dw_ref(w.size()), db_ref(b.size());
    conv2d_forward(out_ref.data(), in.data(), w.data(), b.data(), N, Cin, Cout, H, W, K);
    conv2d_backward(din_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), in.data(), w.data(), N, Cin, Cout, H, W, K);
    auto close = [](const std::vector<float>& a, const std::vector<float>& r, double tol) {
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(r[i])) / (1 + std::abs(double(r[i]))));
        return worst < tol;
    };
    for (const kernels::Table* t : tables()) {
        INFO(t->name);
        std::vector<float> out(out_ref.size()), din(in.size()), dw(w.size()), db(b.size());
        conv2d_forward(out.data(), in.data(), w.data(), b.data(), N, Cin, Cout, H, W, K, t);
        conv2d_backward(din.data(), dw.data(), db.data(), dout.data(), in.data(), w.data(), N, Cin, Cout, H, W, K, t);
        CHECK(close(out, out_ref, 1e-5));
        CHECK(close(din, din_ref, 1e-5));
        CHECK(close(dw, dw_ref, 1e-4));  // sums over 4,500 products
        CHECK(db == db_ref);             // the bias gradient does not use the GEMM
    }
}

#if defined(__aarch64__)
TEST_CASE("on AArch64 the NEON kernels are chosen") {
    CHECK(std::string(kernels::select().name) == "neon");
    CHECK(kernels::select().isa == int(kernels::Isa::neon));
    CHECK(std::string(engine::table_for({}).name) == "neon");
}
#endif
