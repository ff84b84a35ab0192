// The CUDA backend's host side, on any machine: the shape plan (roles, chunks, GEMM
// dimensions, buffer sizes) against hand-computed values for v1 and the custom config, the
// workspace's growth and reuse, the weight layout, error paths, and the whole forward pass as
// cuda.cuh sequences it (cuda::run_plan) run by a backend of plain loops over the CUDA
// kernels' element functions with cuBLAS's GEMM semantics. That backend starts the workspace
// as NaN and checks that every access stays inside the plan's buffer it points into, so a
// buffer read before it is written, too small or aliased shows up here, without a GPU.
#include "cuda_cases.hpp"

#include <catch2/catch.hpp>
#include <universeg/cuda/ops.hpp>
#include <universeg/universeg.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

using namespace universeg;
using cuda::Plan;
using cuda::View;

namespace {

// cuda::run_plan's backend in plain loops: each CUDA kernel's element function over its whole
// grid, and cublasGemmStridedBatchedEx's column-major semantics (lda = ldc = m, ldb = k).
struct HostBackend {
    const Plan& plan;
    const cuda::WeightLayout& layout;
    std::vector<float> workspace, weights;
    std::vector<uint16_t> weights_bf16;
    int64_t gemms = 0, accesses = 0;
    int64_t im2col_x4 = 0, im2col_x1 = 0;  // images im2col'ed by the 4-pixel and the 1-pixel form

    HostBackend(const Network& net, const Plan& p, const cuda::WeightLayout& l)
        : plan(p), layout(l), workspace(size_t(p.arena_bytes / 4), std::numeric_limits<float>::quiet_NaN()) {
        cuda::pack_weights(net, l, weights, weights_bf16);
        Eigen::setNbThreads(1);  // many small GEMMs: OpenMP's fork and join would cost more than they save
    }

    char* arena() { return reinterpret_cast<char*>(workspace.data()); }
    const float* weight(int64_t offset) const { return weights.data() + offset; }

    // [p, p + bytes) lies inside one buffer of the plan (or outside the workspace: inputs, weights).
    void inside(const void* p, int64_t bytes, const char* what) {
        ++accesses;
        const char* base = reinterpret_cast<const char*>(workspace.data());
        const int64_t at = static_cast<const char*>(p) - base;
        if (at < 0 || at >= plan.arena_bytes) return;
        for (const cuda::Region& r : plan.regions)
            if (at >= r.offset && at < r.offset + std::max<int64_t>(r.bytes, 1)) {
                INFO(what << ": " << bytes << " bytes at offset " << at - r.offset << " of '" << r.name << "' ("
                          << r.bytes << " bytes)");
                REQUIRE(at + bytes <= r.offset + r.bytes);
                return;
            }
        FAIL(what << " points into no buffer of the plan");
    }
    static void disjoint(const void* a, int64_t abytes, const void* b, int64_t bbytes, const char* what) {
        const char *pa = static_cast<const char*>(a), *pb = static_cast<const char*>(b);
        INFO(what);
        REQUIRE((pa + abytes <= pb || pb + bbytes <= pa));
    }

    void pack_pairs(float* v, const float* images, const float* labels, int64_t S, int64_t HW) {
        inside(v, S * 2 * HW * 4, "pack_pairs output");
        for (int64_t i = 0; i < S; ++i)
            for (int64_t p = 0; p < HW; ++p) {
                v[2 * i * HW + p] = images[i * HW + p];
                v[(2 * i + 1) * HW + p] = labels[i * HW + p];
            }
    }

    void im2col(void* col, const float* in, const float* addend, int64_t C, int64_t h, int64_t w, int64_t n, bool bf16) {
        const int64_t HW = h * w, col_bytes = n * 9 * C * HW * (bf16 ? 2 : 4);
        inside(col, col_bytes, "im2col output");
        inside(in, n * C * HW * 4, "im2col input");
        disjoint(col, col_bytes, in, n * C * HW * 4, "im2col output and input");
        if (addend) {
            inside(addend, C * HW * 4, "im2col addend");
            disjoint(col, col_bytes, addend, C * HW * 4, "im2col output and addend");
        }
        auto put = [&](int64_t i, float v) {
            if (bf16) static_cast<uint16_t*>(col)[i] = float_to_bf16(v);
            else static_cast<float*>(col)[i] = v;
        };
        // As the GPU chooses its kernel: the 4-pixel form where w % 4 == 0, else one element at a time.
        for (int64_t img = 0; img < n; ++img) {
            if (w % 4 == 0) {
                ++im2col_x4;
                for (int c = 0; c < C; ++c)
                    for (int q = 0; q < HW / 4; ++q) {
                        float v[3][6];
                        cuda::op::im2col_neighbourhood(in, addend, int(C), int(h), int(w), img, c, q, v);
                        for (int t = 0; t < 9; ++t)
                            for (int j = 0; j < 4; ++j)
                                put(cuda::op::im2col_index(int(C), int(HW), img, c * 9 + t, 4 * q + j), v[t / 3][t % 3 + j]);
                    }
                continue;
            }
            ++im2col_x1;
            for (int row = 0; row < 9 * C; ++row)
                for (int p = 0; p < HW; ++p)
                    put(cuda::op::im2col_index(int(C), int(HW), img, row, p),
                        cuda::op::im2col_value(in, addend, int(C), int(h), int(w), img, row, p));
        }
    }

    void gemm(const cuda::Gemm& g, int64_t batch, const void* col, bool bf16, const cuda::ConvSlot& w, float* c,
              const std::string& block, const char* conv) {
        ++gemms;
        INFO(block << " " << conv);
        REQUIRE(batch >= 1);
        REQUIRE(batch <= g.batch);
        REQUIRE(w.rows == g.n);
        REQUIRE(w.cols == g.k);
        REQUIRE(g.stride_a == int64_t(g.m) * g.k);
        REQUIRE(g.stride_c == int64_t(g.m) * g.n);
        const int64_t esize = bf16 ? 2 : 4;
        inside(col, ((batch - 1) * g.stride_a + int64_t(g.m) * g.k) * esize, "GEMM A");
        inside(c, ((batch - 1) * g.stride_c + int64_t(g.m) * g.n) * 4, "GEMM C");
        disjoint(col, batch * g.stride_a * esize, c, batch * g.stride_c * 4, "GEMM A and C");
        std::vector<float> a(bf16 ? size_t(g.m) * size_t(g.k) : 0), b(size_t(g.k) * size_t(g.n));
        for (size_t j = 0; j < b.size(); ++j)
            b[j] = bf16 ? bf16_to_float(weights_bf16.at(size_t(w.weight_bf16) + j)) : weights.at(size_t(w.weight) + j);
        for (int64_t img = 0; img < batch; ++img) {
            const float* ai = static_cast<const float*>(col) + img * g.stride_a;
            if (bf16) {
                const uint16_t* h = static_cast<const uint16_t*>(col) + img * g.stride_a;
                for (size_t j = 0; j < a.size(); ++j) a[j] = bf16_to_float(h[j]);
                ai = a.data();
            }
            Eigen::Map<Eigen::MatrixXf> C(c + img * g.stride_c, g.m, g.n);
            C.noalias() = Eigen::Map<const Eigen::MatrixXf>(ai, g.m, g.k) * Eigen::Map<const Eigen::MatrixXf>(b.data(), g.k, g.n);
        }
    }

    void bias_act(float* x, const float* bias, int64_t C, int64_t hw, int64_t n, bool leaky) {
        inside(x, n * C * hw * 4, "bias_act");
        for (int64_t img = 0; img < n; ++img)
            for (int64_t c = 0; c < C; ++c)
                for (int64_t p = 0; p < hw; ++p) {
                    float& v = x[(img * C + c) * hw + p];
                    v = cuda::op::bias_act_value(v, bias[c], leaky);
                }
    }

    void maxpool(float* dst, const float* src, int64_t C, int64_t h, int64_t w, int64_t n) {
        inside(src, n * C * h * w * 4, "maxpool input");
        inside(dst, n * C * h * w, "maxpool output");
        disjoint(dst, n * C * h * w, src, n * C * h * w * 4, "maxpool output and input");
        const int64_t hwo = h * w / 4;
        for (int64_t plane = 0; plane < n * C; ++plane)
            for (int p = 0; p < hwo; ++p) dst[plane * hwo + p] = cuda::op::maxpool_value(src, int(h), int(w), plane, p);
    }

    void up_concat(float* dst, const float* low, const float* skip, int64_t c, int64_t cs, int64_t h, int64_t w,
                   int64_t n) {
        const int64_t out = n * (c + cs) * 4 * h * w * 4;
        inside(dst, out, "up_concat output");
        inside(low, n * c * h * w * 4, "up_concat low");
        inside(skip, n * cs * 4 * h * w * 4, "up_concat skip");
        disjoint(dst, out, low, n * c * h * w * 4, "up_concat output and low");
        disjoint(dst, out, skip, n * cs * 4 * h * w * 4, "up_concat output and skip");
        for (int64_t img = 0; img < n; ++img)
            for (int ch = 0; ch < c + cs; ++ch)
                for (int p = 0; p < 4 * h * w; ++p)
                    dst[(img * (c + cs) + ch) * 4 * h * w + p] =
                        cuda::op::up_concat_value(low, skip, int(c), int(cs), int(h), int(w), img, ch, p);
    }

    void accumulate(float* sum, const float* src, int64_t n, int64_t floats, bool first, int64_t divide_by) {
        inside(sum, floats * 4, "accumulate sum");
        inside(src, n * floats * 4, "accumulate input");
        disjoint(sum, floats * 4, src, n * floats * 4, "accumulate sum and input");
        for (int64_t j = 0; j < floats; ++j)
            sum[j] = cuda::op::accumulate_value(sum, src, int(n), floats, first, float(divide_by), j);
    }

    void conv1x1_out(float* logits, const float* t, const cuda::ConvSlot& w, int64_t C, int64_t HW) {
        inside(t, C * HW * 4, "output conv input");
        REQUIRE(w.cols == C);
        for (int p = 0; p < HW; ++p)
            logits[p] = cuda::op::conv1x1_value(t, weights.data() + w.weight, weights.data() + w.bias, int(C), int(HW), p);
    }
};

std::vector<float> emulate(const CudaCase& c, const cuda::Options& opt, Plan* plan_out = nullptr,
                           std::pair<int64_t, int64_t>* im2col_forms = nullptr) {
    const Plan p = cuda::make_plan(c.net, opt, c.B, c.S, c.H, c.W);
    const cuda::WeightLayout layout = cuda::weight_layout(c.net, opt.precision == cuda::Precision::bf16);
    HostBackend be(c.net, p, layout);
    std::vector<float> logits(size_t(c.B * c.H * c.W), std::numeric_limits<float>::quiet_NaN());
    cuda::run_plan(be, p, layout, c.query.data(), c.images.data(), c.labels.data(), logits.data());
    if (plan_out) *plan_out = p;
    if (im2col_forms) *im2col_forms = {be.im2col_x4, be.im2col_x1};
    return logits;
}

cuda::Options with(cuda::Precision precision, int64_t chunk_bytes = int64_t(256) << 20) {
    cuda::Options o;
    o.precision = precision;
    o.chunk_bytes = chunk_bytes;
    return o;
}

void check_view(const View& v, const std::string& region, int64_t c, int64_t h, int64_t w, int64_t n) {
    INFO("view of '" << v.region << "', expected '" << region << "'");
    CHECK(v.region == region);
    CHECK(v.c == c);
    CHECK(v.h == h);
    CHECK(v.w == w);
    CHECK(v.n == n);
}

void check_gemm(const cuda::Gemm& g, int m, int n, int k, int batch) {
    CHECK(g.m == m);
    CHECK(g.n == n);
    CHECK(g.k == k);
    CHECK(g.batch == batch);
    CHECK(g.stride_a == int64_t(m) * k);
    CHECK(g.stride_c == int64_t(m) * n);
}

// A net with one block per entry of `encoder` (and the decoder it implies), zero weights.
Network shaped_net(const std::vector<std::pair<int64_t, int64_t>>& encoder) {
    std::vector<BlockFeatures> enc;
    for (const auto& e : encoder) enc.push_back({e.first, e.second});
    return Network::shaped(Config::from_encoder(enc));
}

const std::vector<std::pair<int64_t, int64_t>> kV1 = {{64, 64}, {64, 64}, {64, 64}, {64, 64}};

}  // namespace

TEST_CASE("CUDA plan, v1 at S=64, 128x128: block roles, chunks and GEMMs") {
    const Network net = shaped_net(kV1);
    const Plan p = cuda::make_plan(net, {}, 1, 64, 128, 128);
    REQUIRE(p.encoder.size() == 4);
    REQUIRE(p.decoder.size() == 3);
    const int64_t budget = int64_t(256) << 20;

    // Encoder block 0: inputs (image, label) pairs; outputs pooled for block 1, kept as a mean
    // (the level-0 skip). Per support: col (64 x 9 rows) + Z + the unkept output.
    const cuda::BlockPlan& e0 = p.encoder[0];
    check_view(e0.v_in, "v_in", 2, 128, 128, 64);
    check_view(e0.mean_in, "mean_v", 2, 128, 128, 1);
    check_view(e0.t_out, "t_enc0", 64, 128, 128, 1);
    check_view(e0.pooled, "pin1", 64, 64, 64, 64);
    check_view(e0.mean, "skip0_mean", 64, 128, 128, 1);
    CHECK_FALSE(e0.store);
    CHECK(e0.chunk == budget / ((576 + 64 + 64) * 16384 * 4));
    CHECK(e0.chunk == 5);
    check_gemm(e0.cross_t, 16384, 64, 9, 1);
    check_gemm(e0.cross_mean, 16384, 64, 18, 1);
    check_gemm(e0.target, 16384, 64, 576, 1);
    check_gemm(e0.cross_v, 16384, 64, 18, 5);
    check_gemm(e0.support, 16384, 64, 576, 5);

    // Blocks 1 and 2 keep their outputs (skips of levels 1, 2) and pool them for the next.
    const cuda::BlockPlan& e1 = p.encoder[1];
    check_view(e1.t_in, "t_pool", 64, 64, 64, 1);
    check_view(e1.v_in, "pin1", 64, 64, 64, 64);
    check_view(e1.store, "skip1", 64, 64, 64, 64);
    check_view(e1.pooled, "pin0", 64, 32, 32, 64);
    CHECK(e1.chunk == budget / ((576 + 64) * 4096 * 4));
    CHECK(e1.chunk == 25);
    check_gemm(e1.cross_v, 4096, 64, 576, 25);
    check_view(p.encoder[2].store, "skip2", 64, 32, 32, 64);
    check_view(p.encoder[2].pooled, "pin1", 64, 16, 16, 64);
    CHECK(p.encoder[2].chunk == 64);  // all supports fit the budget

    // The last encoder block keeps its outputs for decoder block 0.
    const cuda::BlockPlan& e3 = p.encoder[3];
    check_view(e3.store, "enc_last", 64, 16, 16, 64);
    CHECK_FALSE(e3.pooled);
    CHECK_FALSE(e3.mean);

    // Decoder block 0 (level 2) builds its support inputs from enc_last and skip2 per chunk.
    const cuda::BlockPlan& d0 = p.decoder[0];
    CHECK(d0.level == 2);
    check_view(d0.t_low, "t_enc3", 64, 16, 16, 1);
    check_view(d0.t_skip, "t_enc2", 64, 32, 32, 1);
    check_view(d0.t_in, "t_cat", 128, 32, 32, 1);
    check_view(d0.low, "enc_last", 64, 16, 16, 64);
    check_view(d0.skip, "skip2", 64, 32, 32, 64);
    check_view(d0.mean_low, "mean_low", 64, 16, 16, 1);
    check_view(d0.mean_skip, "mean_skip", 64, 32, 32, 1);
    check_view(d0.mean_in, "mean_v", 128, 32, 32, 1);
    check_view(d0.store, "dec0", 64, 32, 32, 64);
    CHECK(d0.chunk == budget / ((1152 + 64 + 128) * 1024 * 4));
    CHECK(d0.chunk == 48);
    check_gemm(d0.cross_t, 1024, 64, 1152, 1);
    check_gemm(d0.cross_v, 1024, 64, 1152, 48);

    // Decoder block 1 (level 1): only the mean of its outputs is read (by the last block).
    const cuda::BlockPlan& d1 = p.decoder[1];
    check_view(d1.low, "dec0", 64, 32, 32, 64);
    check_view(d1.skip, "skip1", 64, 64, 64, 64);
    check_view(d1.mean, "prev_mean", 64, 64, 64, 1);
    CHECK_FALSE(d1.store);
    CHECK(d1.chunk == budget / ((1152 + 64 + 128 + 64) * 4096 * 4));
    CHECK(d1.chunk == 11);

    // The last block runs no support path: its support input is needed only as a mean.
    const cuda::BlockPlan& d2 = p.decoder[2];
    CHECK_FALSE(d2.support_path());
    CHECK(d2.chunk == 0);
    check_view(d2.mean_low, "prev_mean", 64, 64, 64, 1);
    check_view(d2.mean_skip, "skip0_mean", 64, 128, 128, 1);
    check_view(d2.t_out, "t_dec0", 64, 128, 128, 1);
    check_view(p.output, "t_dec0", 64, 128, 128, 1);
}

TEST_CASE("CUDA plan, v1 at S=64, 128x128: buffer sizes and the workspace layout") {
    const Plan p = cuda::make_plan(shaped_net(kV1), {}, 1, 64, 128, 128);
    auto bytes = [&p](const char* name) { return p.region(name).bytes; };
    CHECK(bytes("query") == 128 * 128 * 4);
    CHECK(bytes("support_images") == 64 * 128 * 128 * 4);
    CHECK(bytes("cublas") == int64_t(32) << 20);
    CHECK(bytes("v_in") == 64 * 2 * 16384 * 4);
    CHECK(bytes("pin1") == 64 * 64 * 4096 * 4);  // block 0's pooled outputs (block 2's are smaller)
    CHECK(bytes("pin0") == 64 * 64 * 1024 * 4);
    CHECK(bytes("skip1") == 64 * 64 * 4096 * 4);
    CHECK(bytes("skip2") == 64 * 64 * 1024 * 4);
    CHECK(bytes("enc_last") == 64 * 64 * 256 * 4);
    CHECK(bytes("dec0") == 64 * 64 * 1024 * 4);
    CHECK_FALSE(p.has("dec1"));  // only decoders before the last two keep their outputs
    CHECK(bytes("mean_v") == 128 * 16384 * 4);  // the last block's (128, 128x128) support mean
    CHECK(bytes("col") == 25 * 576 * 4096 * 4);  // block 1's chunk of 25
    CHECK(bytes("chunk_z") == 25 * 64 * 4096 * 4);
    CHECK(bytes("chunk_in") == 48 * 128 * 1024 * 4);
    CHECK(bytes("chunk_out") == 5 * 64 * 16384 * 4);
    // Buffers are 256-byte aligned, in order, and do not overlap.
    int64_t end = 0;
    for (const cuda::Region& r : p.regions) {
        INFO(r.name);
        CHECK(r.offset % 256 == 0);
        CHECK(r.offset >= end);
        end = r.offset + r.bytes;
    }
    CHECK(p.arena_bytes >= end);
    CHECK(p.arena_bytes < end + 256);
    // Under 1 GB at S=64 (the S-fold buffers: v_in, pin0/1, skip1/2, enc_last, dec0).
    CHECK(p.arena_bytes < int64_t(1) << 30);

    // bf16 halves the col matrix: bigger chunks in the same budget.
    const Plan h = cuda::make_plan(shaped_net(kV1), with(cuda::Precision::bf16), 1, 64, 128, 128);
    CHECK(h.encoder[0].chunk == (int64_t(256) << 20) / ((576 * 2 + 64 * 4 + 64 * 4) * 16384));
    CHECK(h.encoder[0].chunk == 9);
}

TEST_CASE("CUDA plan: GEMM work is the exact algebra's, well under the official graph's") {
    const Network net = shaped_net(kV1);
    const Plan p = cuda::make_plan(net, {}, 1, 64, 128, 128);
    // Per block: target path 2*9*hw*(f*ct + f*cs + g*f) once; per support 2*9*hw*(f*cs + g*f).
    double flops = 2.0 * 128 * 128 * 64;  // output conv
    auto add = [&](const CrossBlock& b, double hw, bool supports) {
        const double f = double(b.features.cross), g = double(b.features.conv);
        flops += 2.0 * 9 * hw * (f * double(b.target_in) + f * double(b.support_in) + g * f);
        if (supports) flops += 64 * 2.0 * 9 * hw * (f * double(b.support_in) + g * f);
    };
    for (int k = 0; k < 4; ++k) add(net.encoder[size_t(k)], 16384.0 / double(1 << (2 * k)), true);
    for (int d = 0; d < 3; ++d) add(net.decoder[size_t(d)], 16384.0 / double(1 << (2 * (2 - d))), d < 2);
    CHECK(p.gemm_flops == Approx(flops).epsilon(1e-12));
    CHECK(p.gemm_flops < 0.4 * 667.6e9);  // the official graph: 667.6 GFLOP (cmd_bench.cpp)
}

TEST_CASE("CUDA plan, custom config [[16,8],[24,16],32] at 48x80, S=3") {
    const Network net = shaped_net({{16, 8}, {24, 16}, {32, 32}});
    const Plan p = cuda::make_plan(net, {}, 1, 3, 48, 80);
    REQUIRE(p.encoder.size() == 3);
    REQUIRE(p.decoder.size() == 2);
    check_view(p.encoder[0].pooled, "pin1", 8, 24, 40, 3);
    check_view(p.encoder[0].mean, "skip0_mean", 8, 48, 80, 1);
    check_gemm(p.encoder[0].support, 3840, 8, 144, 3);
    check_view(p.encoder[1].store, "skip1", 16, 24, 40, 3);
    check_view(p.encoder[1].pooled, "pin0", 16, 12, 20, 3);
    check_gemm(p.encoder[1].cross_t, 960, 24, 72, 1);
    check_view(p.encoder[2].store, "enc_last", 32, 12, 20, 3);
    // Two decoder blocks: the first builds inputs (32 up + 16 skip) and keeps only their mean.
    const cuda::BlockPlan& d0 = p.decoder[0];
    CHECK(d0.level == 1);
    CHECK(d0.target_in == 48);
    check_view(d0.low, "enc_last", 32, 12, 20, 3);
    check_view(d0.skip, "skip1", 16, 24, 40, 3);
    check_view(d0.mean, "prev_mean", 16, 24, 40, 1);
    check_gemm(d0.cross_v, 960, 24, 432, 3);
    const cuda::BlockPlan& d1 = p.decoder[1];
    CHECK(d1.target_in == 24);
    CHECK_FALSE(d1.support_path());
    check_view(d1.mean_low, "prev_mean", 16, 24, 40, 1);
    check_view(d1.mean_skip, "skip0_mean", 8, 48, 80, 1);
    check_view(p.output, "t_dec1", 8, 48, 80, 1);
}

TEST_CASE("CUDA plan: one- and two-level models") {
    const Plan one = cuda::make_plan(shaped_net({{8, 4}}), {}, 2, 5, 6, 10);
    REQUIRE(one.encoder.size() == 1);
    CHECK(one.decoder.empty());
    CHECK_FALSE(one.encoder[0].support_path());  // nothing reads the only block's support output
    check_view(one.output, "t_enc0", 4, 6, 10, 1);

    const Plan two = cuda::make_plan(shaped_net({{8, 4}, {6, 6}}), {}, 1, 2, 4, 4);
    REQUIRE(two.decoder.size() == 1);
    check_view(two.encoder[1].mean, "prev_mean", 6, 2, 2, 1);
    CHECK_FALSE(two.encoder[1].store);
    check_view(two.decoder[0].mean_low, "prev_mean", 6, 2, 2, 1);
    check_view(two.decoder[0].mean_skip, "skip0_mean", 4, 4, 4, 1);
    CHECK_FALSE(two.decoder[0].support_path());
}

TEST_CASE("CUDA workspace: re-planned on a new shape, grown only when a plan needs more") {
    const Network net = shaped_net(kV1);
    cuda::Workspace ws;
    const cuda::Options opt;
    const int64_t first = ws.prepare(net, opt, 1, 16, 128, 128);
    CHECK(first == ws.plan.arena_bytes);
    CHECK(ws.plans == 1);
    ws.capacity = first;
    CHECK(ws.prepare(net, opt, 1, 16, 128, 128) == 0);  // same shape: same plan, nothing to grow
    CHECK(ws.plans == 1);
    CHECK(ws.prepare(net, opt, 1, 4, 128, 128) == 0);  // smaller: re-planned, fits
    CHECK(ws.plans == 2);
    CHECK(ws.plan.S == 4);
    CHECK(ws.plan.arena_bytes < first);
    const int64_t more = ws.prepare(net, opt, 1, 17, 128, 128);  // one more support: grows
    CHECK(more == ws.plan.arena_bytes);
    CHECK(more > first);
    ws.capacity = more;
    CHECK(ws.prepare(net, opt, 1, 8, 64, 64) == 0);
    CHECK(ws.prepare(net, opt, 2, 17, 128, 128) > more);  // a second query grows the input staging
    CHECK(ws.prepare(net, opt, 1, 17, 128, 136) > more);

    // More supports never need a smaller arena (chunks grow up to the budget, S-fold buffers with S).
    int64_t last = 0;
    for (int64_t S = 1; S <= 96; ++S) {
        const int64_t b = cuda::make_plan(net, opt, 1, S, 64, 64).arena_bytes;
        CHECK(b >= last);
        last = b;
    }
    // Whatever the image size, a block's per-chunk buffers stay within the budget (or hold
    // one support when a single one needs more).
    for (int64_t H = 8; H <= 512; H += 8) {
        const Plan p = cuda::make_plan(net, opt, 1, 64, H, 64);
        for (const auto* blocks : {&p.encoder, &p.decoder})
            for (const cuda::BlockPlan& b : *blocks) {
                if (!b.support_path()) continue;
                const int64_t hw = b.h * b.w, cs = b.support_in, f = b.cross, g = b.conv;
                const int64_t per_support = std::max(cs, f) * 9 * hw * 4 + f * hw * 4 + (b.built_inputs() ? cs * hw * 4 : 0) +
                                            (b.store ? 0 : g * hw * 4);
                INFO(b.name << " at " << H << "x64");
                CHECK(b.chunk * per_support <= std::max(opt.chunk_bytes, per_support));
                CHECK((b.chunk == 64 || (b.chunk + 1) * per_support > opt.chunk_bytes));  // as large as fits
            }
    }
    // A tiny chunk budget gives one support per chunk, and a plan that is still valid.
    const Plan tiny = cuda::make_plan(net, with(cuda::Precision::fp32, 1), 1, 8, 64, 64);
    for (const auto* blocks : {&tiny.encoder, &tiny.decoder})
        for (const cuda::BlockPlan& b : *blocks) CHECK(b.chunk == (b.support_path() ? 1 : 0));
}

TEST_CASE("CUDA plan: invalid shapes and sizes are errors naming the problem") {
    const Network net = shaped_net(kV1);
    const cuda::Options opt;
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 1, 4, 100, 128), Catch::Contains("not a positive multiple of 8"));
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 1, 4, 0, 128), Catch::Contains("not a positive multiple of 8"));
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 1, 0, 128, 128), Catch::Contains("support size must be at least 1"));
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 0, 4, 128, 128), Catch::Contains("batch size must be at least 1"));
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 1, 70000, 128, 128), Catch::Contains("limit of 65535"));
    // 65536 x 65536 pixels: more than cuBLAS's int m.
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, 1, 1, 65536, 65536), Catch::Contains("exceeds cuBLAS's int range"));
    // Sizes that overflow 64-bit byte counts.
    CHECK_THROWS_WITH(cuda::make_plan(net, opt, int64_t(1) << 40, 60000, 32768, 32768), Catch::Contains("too large"));
    cuda::Options negative;
    negative.chunk_bytes = -1;
    CHECK_THROWS_WITH(cuda::make_plan(net, negative, 1, 4, 128, 128), Catch::Contains("negative"));
    // More channels than a CUDA grid dimension can index (9 x channels rows of im2col).
    CHECK_THROWS_WITH(cuda::make_plan(shaped_net({{7282, 1}}), opt, 1, 1, 8, 8), Catch::Contains("at most 7281"));
    CHECK_NOTHROW(cuda::make_plan(shaped_net({{7281, 1}}), opt, 1, 1, 8, 8));
    CHECK_THROWS_WITH(cuda::parse_precision("fp16", "--precision"), Catch::Contains("fp32, tf32 or bf16"));
    CHECK(cuda::parse_precision("tf32", "--precision") == cuda::Precision::tf32);

    std::vector<float> x = {0.0f, 1.0f, std::numeric_limits<float>::infinity()};
    CHECK_THROWS_WITH(cuda::check_finite(x.data(), 3, "support labels"),
                      Catch::Contains("support labels") && Catch::Contains("index 2"));
}

TEST_CASE("CUDA model description: validation of hand-built nets") {
    Network net = shaped_net(kV1);
    CHECK_NOTHROW(check_network(net));
    Network no_dec = net;
    no_dec.decoder.pop_back();
    CHECK_THROWS_WITH(check_network(no_dec), Catch::Contains("needs 4 and 3"));
    Network wrong_in = net;
    wrong_in.decoder[1].target_in = 64;
    CHECK_THROWS_WITH(check_network(wrong_in), Catch::Contains("dec_blocks.1: the block takes (64, 128)"));
    Network short_w = net;
    short_w.encoder[2].support.weight.pop_back();
    CHECK_THROWS_WITH(check_network(short_w), Catch::Contains("enc_blocks.2.support.vmapped.conv holds"));
    Network nan_w = net;
    nan_w.out.bias[0] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(check_network(nan_w), Catch::Contains("out_conv.conv holds a non-finite value"));
    CHECK_THROWS_WITH(cuda::make_plan(Network{}, {}, 1, 1, 8, 8), Catch::Contains("no encoder blocks"));
}

TEST_CASE("CUDA weight layout: the v1 checkpoint split and packed for the GEMMs") {
    const Model model = load_model(std::string(UNIVERSEG_TEST_DATA) + "/golden/v1_b2_s4_128/weights.pt");
    const Network& net = model.network();
    CHECK(net.parameter_count() == 1182785);
    const cuda::WeightLayout l = cuda::weight_layout(net, true);
    // Every slot 256-byte aligned; the cross conv split in its target and support halves.
    const cuda::BlockSlots& e0 = l.encoder[0];
    CHECK(e0.cross_t.rows == 64);
    CHECK(e0.cross_t.cols == 9);
    CHECK(e0.cross_v.cols == 18);
    CHECK(e0.cross_v.bias == -1);
    CHECK(e0.cross_v.weight_bf16 >= 0);
    CHECK(e0.cross_t.weight_bf16 == -1);  // the target path stays fp32
    CHECK(l.decoder[0].cross_t.cols == 128 * 9);
    for (const auto* blocks : {&l.encoder, &l.decoder})
        for (const cuda::BlockSlots& b : *blocks)
            for (const cuda::ConvSlot* s : {&b.cross_t, &b.cross_v, &b.target, &b.support}) {
                CHECK(s->weight % 64 == 0);
                CHECK(s->bias % 64 == (s->bias < 0 ? -1 : 0));
            }
    CHECK(l.floats >= net.parameter_count());
    CHECK(l.floats < net.parameter_count() + 64 * 52);  // 51 slots, each padded by under 64 floats

    std::vector<float> f;
    std::vector<uint16_t> h;
    cuda::pack_weights(net, l, f, h);
    const Conv& cross = model.encoder()[0].cross;  // (64, 3, 3, 3): channel 0 target, 1-2 support
    for (int64_t o : {0, 17, 63})
        for (int64_t j = 0; j < 9; ++j) {
            CHECK(f[size_t(e0.cross_t.weight + o * 9 + j)] == cross.weight[size_t(o * 27 + j)]);
            CHECK(f[size_t(e0.cross_v.weight + o * 18 + j)] == cross.weight[size_t(o * 27 + 9 + j)]);
            CHECK(f[size_t(e0.cross_v.weight + o * 18 + 9 + j)] == cross.weight[size_t(o * 27 + 18 + j)]);
            CHECK(h[size_t(e0.cross_v.weight_bf16 + o * 18 + j)] == float_to_bf16(cross.weight[size_t(o * 27 + 9 + j)]));
        }
    CHECK(f[size_t(e0.cross_t.bias + 5)] == cross.bias[5]);
    const Conv& sup = model.decoder()[2].support;
    CHECK(f[size_t(l.decoder[2].support.weight + 7 * 576 + 300)] == sup.weight[size_t(7 * 576 + 300)]);
    CHECK(f[size_t(l.out.weight + 63)] == model.out_conv().weight[63]);
    CHECK(f[size_t(l.out.bias)] == model.out_conv().bias[0]);
}

// The custom golden case; v1 (whose golden case is 128x128) with random weights at 16x16:
// the emulation's loops are slow under the sanitizers, and test_cuda runs v1's golden case.
TEST_CASE("CUDA forward as sequenced for the GPU, emulated on the CPU: golden case and v1") {
    const CudaCase c = golden_case("custom_b1_s3_48x80");
    std::pair<int64_t, int64_t> forms;
    const std::vector<float> out = emulate(c, {}, nullptr, &forms);
    CHECK(max_abs_diff(out, c.golden) <= parity_bound(c.golden));
    CHECK(forms.first > 0);  // widths 80, 40, 20: the 4-pixel im2col
    CHECK(max_abs_diff(out, c.cpu) <= parity_bound(c.cpu));

    const CudaCase v1 = random_case(kV1, 1, 4, 16, 16, 3);
    CHECK(max_abs_diff(emulate(v1, {}), v1.cpu) <= parity_bound(v1.cpu));
}

TEST_CASE("CUDA forward emulated: chunking, batches, support sizes and 1- to 3-level models") {
    struct Shape {
        std::vector<std::pair<int64_t, int64_t>> enc;
        int64_t B, S, H, W;
    };
    const std::vector<Shape> shapes = {
        {{{8, 4}}, 2, 3, 6, 10},                      // one block: no decoder, no support path
        {{{8, 4}, {6, 6}}, 1, 5, 8, 12},              // two levels: the last encoder block keeps a mean
        {{{16, 8}, {24, 16}, {32, 32}}, 3, 7, 16, 24},  // the custom config, odd S, B > 1
        {{{4, 4}, {4, 6}, {5, 4}, {4, 4}}, 1, 1, 16, 8},  // four levels, S = 1
    };
    uint32_t seed = 7;
    std::pair<int64_t, int64_t> forms_seen{0, 0};
    for (const Shape& s : shapes) {
        const CudaCase c = random_case(s.enc, s.B, s.S, s.H, s.W, seed++);
        INFO(c.name);
        for (int64_t budget : {int64_t(256) << 20, int64_t(1)}) {  // all supports at once, one per chunk
            INFO("chunk budget " << budget);
            Plan p;
            std::pair<int64_t, int64_t> forms;
            const std::vector<float> out = emulate(c, with(cuda::Precision::fp32, budget), &p, &forms);
            forms_seen.first += forms.first, forms_seen.second += forms.second;
            CHECK(max_abs_diff(out, c.cpu) <= parity_bound(c.cpu));
            if (budget == 1)
                for (const cuda::BlockPlan& b : p.encoder) CHECK(b.chunk == (b.support_path() ? 1 : 0));
        }
    }
    CHECK(forms_seen.first > 0);   // widths 12, 24, 16, 8: the 4-pixel im2col
    CHECK(forms_seen.second > 0);  // widths 10 and 6: one pixel at a time
}

// (The v1 golden case, emulated the same way, agrees on every pixel with max |logit - golden|
// 0.0047; test_cuda measures both reduced precisions on the GPU.)
TEST_CASE("CUDA forward emulated in bf16: agreement with the fp32 mask on the custom golden case") {
    const CudaCase c = golden_case("custom_b1_s3_48x80");
    const std::vector<float> out = emulate(c, with(cuda::Precision::bf16));
    const double agree = mask_agreement(out, c.golden), diff = max_abs_diff(out, c.golden);
    INFO(c.name << ": bf16 mask agreement " << agree << ", max |logit - golden| " << diff);
    CHECK(agree >= 0.995);                                 // 0.9971 here
    CHECK(diff > parity_bound(c.golden));                  // the support path really ran in bf16
    CHECK(diff < 0.05 * parity_bound(c.golden) / 1e-4);    // 0.0034 here
}
