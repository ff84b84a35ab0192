// universeg/cuda/plan.hpp - the CUDA backend's host side, in plain C++ (no CUDA, no Eigen):
// the weight layout on the device and the shape plan of one forward pass (buffers, support
// chunks, GEMM dimensions) for a Network (core/network.hpp). cuda/ops.hpp sequences the pass on
// a plan, cuda/cuda.cuh runs that sequence on the GPU, and tests/test_cuda_plan.cpp checks all
// of it but the kernels' launches and cuBLAS on machines without a GPU.
//
//   const Network& net = model.network();
//   cuda::Plan p = cuda::make_plan(net, {}, B, S, H, W); // throws Error on invalid shapes
//   p.arena_bytes, p.region("col").bytes, p.encoder[0].support.k, ...
//   cuda::Workspace ws; ws.prepare(net, opt, B, S, H, W); // re-plans on a new shape; says how far to grow
//
// The forward pass it plans is cpu/engine.hpp's exact algebra on NCHW images:
//   ZT   = conv(W_T, T) + b                  once per query (target half of the cross conv)
//   ZM   = conv(W_V, mean_i V_i)             the new target's input is ZM + ZT
//   Z_i  = conv(W_V, V_i)                    per support, in chunks; its consumer adds ZT
//   T'   = LeakyReLU(conv_target(ZM + ZT)),  V'_i = LeakyReLU(conv_support(Z_i + ZT))
// with the same per-block roles as the CPU engine: pooled supports and skips are kept only
// where a later block reads them, the level-0 skip and the last block's support inputs only
// as means, and the last block (whose support output nothing reads) runs no support path.
// Every 3x3 convolution is im2col into the "col" buffer plus one cublasGemmStridedBatchedEx
// over a chunk of images: C (m x n) = A (m x k) * B (k x n), column-major, with m = pixels,
// n = output channels, k = 9 x input channels (A: the col matrix; B: the weights).
#pragma once

#include "../core/network.hpp"
#include "../core/tensor.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace universeg {
namespace cuda {

constexpr float kLeakySlope = 0.01f;   // LeakyReLU slope, as ops.hpp
constexpr int64_t kMaxGrid = 65535;    // CUDA's limit on gridDim.y and gridDim.z
constexpr int64_t kAlign = 256;        // byte alignment of every device buffer (cuBLAS wants 256)

// fp32: IEEE products and sums, TF32 off. tf32: every GEMM may round its inputs to TF32.
// bf16: the per-support convolutions take bf16 inputs and weights (fp32 sums); the target
// path stays fp32, as in the CPU engine's bf16 mode.
enum class Precision { fp32, tf32, bf16 };

inline const char* precision_name(Precision p) {
    switch (p) {
        case Precision::fp32: return "fp32";
        case Precision::tf32: return "tf32";
        case Precision::bf16: return "bf16";
    }
    return "?";
}

inline Precision parse_precision(const std::string& s, const std::string& what) {
    if (s == "fp32") return Precision::fp32;
    if (s == "tf32") return Precision::tf32;
    if (s == "bf16") return Precision::bf16;
    throw Error(what + " must be fp32, tf32 or bf16 on the GPU, got '" + s + "'");
}

struct Options {
    Precision precision = Precision::fp32;
    // Budget for the per-chunk buffers of the support path (col, Z, built inputs, outputs):
    // bounds device memory whatever S is. At least one support per chunk.
    int64_t chunk_bytes = int64_t(256) << 20;
    // Handed to cuBLAS (cublasSetWorkspace) so it never allocates during a forward pass.
    int64_t cublas_workspace_bytes = int64_t(32) << 20;
};

// ---- Checked sizes: every byte count of a plan goes through these.

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / 4 / a))
        throw Error(std::string("CUDA plan: ") + what + " is too large (" + std::to_string(a) + " x " +
                    std::to_string(b) + " overflows)");
    return a * b;
}

inline int64_t checked_mul(std::initializer_list<int64_t> factors, const char* what) {
    int64_t n = 1;
    for (int64_t f : factors) n = checked_mul(n, f, what);
    return n;
}

inline int checked_int(int64_t v, const char* what) {
    if (v < 0 || v > INT_MAX)
        throw Error(std::string("CUDA plan: ") + what + " = " + std::to_string(v) + " exceeds cuBLAS's int range");
    return int(v);
}

inline int64_t align_up(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// ---- Weights on the device: one fp32 buffer (and one bf16 buffer in bf16 mode) holding every
// convolution as a row-major (out, 9 x in) matrix, the cross conv split into its target half
// (with the bias) and its support half. Offsets in elements, each aligned to kAlign bytes.

struct ConvSlot {
    int64_t rows = 0, cols = 0;        // out, k*k*in
    int64_t weight = 0, bias = -1;     // fp32 offsets; bias -1: none
    int64_t weight_bf16 = -1;          // bf16 offset; -1: none
    // Source: columns [col0, col0 + cols) of the PyTorch weight (out, in_total*k*k).
    int64_t col0 = 0, src_cols = 0;
};

struct BlockSlots {
    ConvSlot cross_t, cross_v, target, support;  // cross_t carries the cross conv's bias
};

struct WeightLayout {
    std::vector<BlockSlots> encoder, decoder;
    ConvSlot out;
    int64_t floats = 0, halves = 0;
};

inline WeightLayout weight_layout(const Network& net, bool bf16) {
    WeightLayout l;
    auto slot = [&l](const Conv& c, int64_t ci0, int64_t cin, bool bias, bool half) {
        ConvSlot s;
        s.rows = c.out;
        s.cols = cin * c.k * c.k;
        s.col0 = ci0 * c.k * c.k;
        s.src_cols = c.in * c.k * c.k;
        s.weight = l.floats;
        l.floats += align_up(s.rows * s.cols * 4) / 4;
        if (bias) {
            s.bias = l.floats;
            l.floats += align_up(s.rows * 4) / 4;
        }
        if (half) {
            s.weight_bf16 = l.halves;
            l.halves += align_up(s.rows * s.cols * 2) / 2;
        }
        return s;
    };
    auto block = [&](const CrossBlock& b) {
        BlockSlots s;
        s.cross_t = slot(b.cross, 0, b.target_in, true, false);
        s.cross_v = slot(b.cross, b.target_in, b.support_in, false, bf16);
        s.target = slot(b.target, 0, b.target.in, true, false);
        s.support = slot(b.support, 0, b.support.in, true, bf16);
        return s;
    };
    for (const CrossBlock& b : net.encoder) l.encoder.push_back(block(b));
    for (const CrossBlock& b : net.decoder) l.decoder.push_back(block(b));
    l.out = slot(net.out, 0, net.out.in, true, false);
    return l;
}

// The device buffers' contents for `layout` (halves: bf16 bits, rounded to nearest even).
inline void pack_weights(const Network& net, const WeightLayout& layout, std::vector<float>& floats,
                         std::vector<uint16_t>& halves) {
    floats.assign(size_t(layout.floats), 0.0f);
    halves.assign(size_t(layout.halves), 0);
    auto put = [&](const Conv& c, const ConvSlot& s) {
        for (int64_t o = 0; o < s.rows; ++o)
            for (int64_t j = 0; j < s.cols; ++j) {
                const float v = c.weight[size_t(o * s.src_cols + s.col0 + j)];
                floats[size_t(s.weight + o * s.cols + j)] = v;
                if (s.weight_bf16 >= 0) halves[size_t(s.weight_bf16 + o * s.cols + j)] = float_to_bf16(v);
            }
        if (s.bias >= 0) std::copy(c.bias.begin(), c.bias.end(), floats.begin() + s.bias);
    };
    auto block = [&](const CrossBlock& b, const BlockSlots& s) {
        put(b.cross, s.cross_t);
        put(b.cross, s.cross_v);
        put(b.target, s.target);
        put(b.support, s.support);
    };
    for (size_t k = 0; k < net.encoder.size(); ++k) block(net.encoder[k], layout.encoder[k]);
    for (size_t k = 0; k < net.decoder.size(); ++k) block(net.decoder[k], layout.decoder[k]);
    put(net.out, layout.out);
}

// ---- The shape plan.

// n images of c x h x w floats, contiguous, in a named region of the workspace arena.
struct View {
    std::string region;  // "" when unused
    int64_t c = 0, h = 0, w = 0, n = 0;
    int64_t floats() const { return c * h * w; }  // per image
    explicit operator bool() const { return !region.empty(); }
};

// One strided-batched GEMM, column-major: C (m x n) = A (m x k) * B (k x n) for `batch` images;
// lda = ldc = m, ldb = k; A and C advance by stride_a and stride_c elements per image.
struct Gemm {
    int m = 0, n = 0, k = 0, batch = 0;
    long long stride_a = 0, stride_c = 0;
    double flops() const { return 2.0 * m * n * k * batch; }
};

inline Gemm make_gemm(int64_t pixels, int64_t cout, int64_t cin, int64_t batch) {
    Gemm g;
    g.m = checked_int(pixels, "pixels per image (GEMM m)");
    g.n = checked_int(cout, "output channels (GEMM n)");
    g.k = checked_int(checked_mul(cin, 9, "9 x input channels"), "9 x input channels (GEMM k)");
    g.batch = checked_int(batch, "GEMM batch");
    g.stride_a = checked_mul(g.k, pixels, "col matrix");
    g.stride_c = checked_mul(cout, pixels, "GEMM output");
    return g;
}

struct BlockPlan {
    std::string name;  // "enc_blocks.0" ... "dec_blocks.2", as the reference's modules
    int64_t level = 0, h = 0, w = 0;
    int64_t target_in = 0, support_in = 0, cross = 0, conv = 0;

    View t_in, t_out;         // target in / out (encoder 0: t_in is the query)
    View t_low, t_skip;       // decoder: t_in = concat(up(t_low), t_skip)
    View mean_in;             // mean of the support inputs
    View mean_low, mean_skip; // decoder: mean_in = concat(up(mean_low), mean_skip)
    View v_in;                // encoder: the S support inputs, stored
    View low, skip;           // decoder: support input i = concat(up(low_i), skip_i), built per chunk
    View store, mean, pooled; // where the S support outputs go (none: no support path)

    int64_t chunk = 0;              // supports per chunk; 0 without a support path
    Gemm cross_t, cross_mean, target;  // once per query
    Gemm cross_v, support;             // per chunk (the last chunk's batch may be smaller)

    bool support_path() const { return bool(store) || bool(mean) || bool(pooled); }
    bool built_inputs() const { return bool(low); }
};

struct Region {
    std::string name;
    int64_t offset = 0, bytes = 0;
};

struct Plan {
    int64_t B = 0, S = 0, H = 0, W = 0;
    Precision precision = Precision::fp32;
    std::vector<BlockPlan> encoder, decoder;
    View output;                   // the final target, input of the 1x1 output conv
    std::vector<Region> regions;   // the workspace arena, in order
    int64_t arena_bytes = 0;
    double gemm_flops = 0;         // per forward pass, all B queries

    const Region& region(const std::string& name) const {
        for (const Region& r : regions)
            if (r.name == name) return r;
        throw Error("CUDA plan has no buffer '" + name + "'");
    }
    bool has(const std::string& name) const {
        for (const Region& r : regions)
            if (r.name == name) return true;
        return false;
    }
};

// Throws Error unless (B, S, H, W) is a valid problem for `net` on the GPU. The messages
// follow Model::check_inputs.
inline void check_shape(const Network& net, int64_t B, int64_t S, int64_t H, int64_t W) {
    const int64_t m = net.config.size_multiple();
    if (B < 1) throw Error("batch size must be at least 1, got " + std::to_string(B));
    if (S < 1) throw Error("support size must be at least 1, got " + std::to_string(S));
    if (S > kMaxGrid)
        throw Error("support size " + std::to_string(S) + " exceeds the CUDA backend's limit of " + std::to_string(kMaxGrid));
    if (H < 1 || W < 1 || H % m || W % m)
        throw Error("image size " + std::to_string(H) + "x" + std::to_string(W) + " is not a positive multiple of " +
                    std::to_string(m) + " (this model halves the resolution " + std::to_string(net.config.levels() - 1) +
                    " times)");
}

namespace detail {

struct Planner {
    const Options& opt;
    Plan& p;

    View view(const std::string& name, int64_t c, int64_t level, int64_t n) {
        View v{name, c, p.H >> level, p.W >> level, n};
        need(name, checked_mul({v.c, v.h, v.w, v.n, 4}, name.c_str()));
        return v;
    }
    void need(const std::string& name, int64_t bytes) {
        for (Region& r : p.regions)
            if (r.name == name) {
                r.bytes = std::max(r.bytes, bytes);
                return;
            }
        p.regions.push_back({name, 0, bytes});
    }

    // Chunk size, GEMMs and scratch buffers of a block whose views are set.
    void finish(BlockPlan& b) {
        const int64_t hw = checked_mul(b.h, b.w, "pixels"), f = b.cross, g = b.conv;
        const int64_t ct = b.target_in, cs = b.support_in;
        for (int64_t c : {ct, cs, f, g})
            if (c * 9 > kMaxGrid)
                throw Error("CUDA plan: " + b.name + " has " + std::to_string(c) + " channels; the CUDA kernels take at most " +
                            std::to_string(kMaxGrid / 9));
        b.cross_t = make_gemm(hw, f, ct, 1);
        b.cross_mean = make_gemm(hw, f, cs, 1);
        b.target = make_gemm(hw, g, f, 1);
        need("zt", checked_mul({f, hw, 4}, "zt"));
        need("zm", checked_mul({f, hw, 4}, "zm"));
        need("col", checked_mul({std::max({ct, cs, f}), 9, hw, 4}, "col"));
        p.gemm_flops += double(p.B) * (b.cross_t.flops() + b.cross_mean.flops() + b.target.flops());
        if (!b.support_path()) return;

        const int64_t esize = p.precision == Precision::bf16 ? 2 : 4;
        const int64_t col = checked_mul({std::max(cs, f), 9, hw, esize}, "col");
        const int64_t per_support = col + checked_mul({f, hw, 4}, "z") +
                                    (b.built_inputs() ? checked_mul({cs, hw, 4}, "chunk inputs") : 0) +
                                    (b.store ? 0 : checked_mul({g, hw, 4}, "chunk outputs"));
        b.chunk = std::max<int64_t>(1, std::min({p.S, kMaxGrid, opt.chunk_bytes / per_support}));
        b.cross_v = make_gemm(hw, f, cs, b.chunk);
        b.support = make_gemm(hw, g, f, b.chunk);
        need("col", checked_mul(b.chunk, col, "col"));
        need("chunk_z", checked_mul({b.chunk, f, hw, 4}, "chunk_z"));
        if (b.built_inputs()) need("chunk_in", checked_mul({b.chunk, cs, hw, 4}, "chunk_in"));
        if (!b.store) need("chunk_out", checked_mul({b.chunk, g, hw, 4}, "chunk_out"));
        p.gemm_flops += double(p.B) * double(p.S) * (make_gemm(hw, f, cs, 1).flops() + make_gemm(hw, g, f, 1).flops());
    }

    BlockPlan block(const CrossBlock& w, const std::string& name, int64_t level) {
        BlockPlan b;
        b.name = name;
        b.level = level;
        b.h = p.H >> level;
        b.w = p.W >> level;
        b.target_in = w.target_in;
        b.support_in = w.support_in;
        b.cross = w.features.cross;
        b.conv = w.features.conv;
        return b;
    }
};

}  // namespace detail

// The plan of one forward pass of `net` on B queries with S supports of H x W each. The
// roles mirror engine.hpp's forward (see the top of this header); buffer names:
//   query, support_images, support_labels, logits   host-array staging (all B)
//   cublas                                          cuBLAS's workspace
//   v_in, pin0, pin1                                S-fold support inputs of the encoder blocks
//   skip<k>, enc_last, dec0, dec1                   S-fold outputs kept for the decoder
//   skip0_mean, prev_mean, mean_v, mean_low, mean_skip   means over the supports
//   t_enc<k>, t_pool, t_cat, t_dec0, t_dec1         the target
//   zt, zm, col, chunk_z, chunk_in, chunk_out        per-block scratch
inline Plan make_plan(const Network& net, const Options& opt, int64_t B, int64_t S, int64_t H, int64_t W) {
    check_network(net);
    check_shape(net, B, S, H, W);
    if (opt.chunk_bytes < 0 || opt.cublas_workspace_bytes < 0) throw Error("CUDA options: negative buffer size");
    Plan p;
    p.B = B;
    p.S = S;
    p.H = H;
    p.W = W;
    p.precision = opt.precision;
    detail::Planner pl{opt, p};
    const int64_t L = net.config.levels(), D = int64_t(net.decoder.size());
    const int64_t HW = checked_mul(H, W, "image size");
    checked_int(HW, "pixels per image");
    pl.need("query", checked_mul({B, HW, 4}, "query"));
    pl.need("support_images", checked_mul({B, S, HW, 4}, "support images"));
    pl.need("support_labels", checked_mul({B, S, HW, 4}, "support labels"));
    pl.need("logits", checked_mul({B, HW, 4}, "logits"));
    pl.need("cublas", opt.cublas_workspace_bytes);

    View T{"query", 1, H, W, 1};
    View V = pl.view("v_in", 2, 0, S);
    View mv = pl.view("mean_v", 2, 0, 1);
    std::vector<View> t_skip, v_skip = std::vector<View>(size_t(L));
    View skip0_mean, prev_mean, prev;
    for (int64_t k = 0; k < L; ++k) {
        const CrossBlock& w = net.encoder[size_t(k)];
        const int64_t g = w.features.conv;
        BlockPlan b = pl.block(w, "enc_blocks." + std::to_string(k), k);
        b.t_in = T;
        b.v_in = V;
        b.mean_in = mv;
        b.t_out = pl.view("t_enc" + std::to_string(k), g, k, 1);
        if (k + 1 < L) {
            b.pooled = pl.view("pin" + std::to_string((k + 1) % 2), g, k + 1, S);
            if (k == 0) skip0_mean = b.mean = pl.view("skip0_mean", g, 0, 1);
            else v_skip[size_t(k)] = b.store = pl.view("skip" + std::to_string(k), g, k, S);
        } else if (D >= 2) {
            prev = b.store = pl.view("enc_last", g, k, S);
        } else if (D == 1) {
            prev_mean = b.mean = pl.view("prev_mean", g, k, 1);
        }
        pl.finish(b);
        p.encoder.push_back(b);
        if (k + 1 == L) {
            T = b.t_out;
            break;
        }
        t_skip.push_back(b.t_out);
        T = pl.view("t_pool", g, k + 1, 1);
        V = b.pooled;
        mv = pl.view("mean_v", g, k + 1, 1);
    }
    for (int64_t d = 0; d < D; ++d) {
        const int64_t level = L - 2 - d;
        const CrossBlock& w = net.decoder[size_t(d)];
        const int64_t g = w.features.conv;
        const bool last = d + 1 == D;
        BlockPlan b = pl.block(w, "dec_blocks." + std::to_string(d), level);
        b.t_low = T;
        b.t_skip = t_skip[size_t(level)];
        b.t_in = pl.view("t_cat", T.c + b.t_skip.c, level, 1);
        b.mean_in = pl.view("mean_v", w.support_in, level, 1);
        if (last) {
            b.mean_low = prev_mean;
            b.mean_skip = skip0_mean;
        } else {
            b.low = prev;
            b.skip = v_skip[size_t(level)];
            b.mean_low = pl.view("mean_low", prev.c, level + 1, 1);
            b.mean_skip = pl.view("mean_skip", b.skip.c, level, 1);
            if (d + 2 == D) prev_mean = b.mean = pl.view("prev_mean", g, level, 1);
            else b.store = pl.view("dec" + std::to_string(d % 2), g, level, S);
        }
        b.t_out = pl.view("t_dec" + std::to_string(d % 2), g, level, 1);
        pl.finish(b);
        p.decoder.push_back(b);
        if (b.store) prev = b.store;
        T = b.t_out;
    }
    p.output = T;
    p.gemm_flops += 2.0 * double(B) * double(HW) * double(T.c);

    int64_t offset = 0;
    for (Region& r : p.regions) {
        r.offset = offset;
        offset = align_up(r.bytes) + offset;
        if (offset < 0 || offset > INT64_MAX / 4) throw Error("CUDA plan: workspace size overflows");
    }
    p.arena_bytes = offset;
    return p;
}

// The device workspace's policy: a call with the last call's shape reuses its plan; another
// shape is re-planned (host arithmetic only); the arena grows to the largest plan seen and
// never shrinks, so after a warm-up no call allocates.
struct Workspace {
    Plan plan;
    Options options;  // the plan's
    bool planned = false;
    int64_t capacity = 0;  // bytes the device arena holds
    int64_t plans = 0;     // plans made so far

    // Returns the bytes the arena must grow to before running `plan`, or 0 when it fits. The
    // caller sets `capacity` once it has allocated them.
    int64_t prepare(const Network& net, const Options& opt, int64_t B, int64_t S, int64_t H, int64_t W) {
        const bool same_options = options.precision == opt.precision && options.chunk_bytes == opt.chunk_bytes &&
                                  options.cublas_workspace_bytes == opt.cublas_workspace_bytes;
        if (!planned || !same_options || plan.B != B || plan.S != S || plan.H != H || plan.W != W) {
            planned = false;
            plan = make_plan(net, opt, B, S, H, W);
            options = opt;
            planned = true;
            ++plans;
        }
        return plan.arena_bytes > capacity ? plan.arena_bytes : 0;
    }
};

// Throws Error naming `what` and the index of the first non-finite value.
inline void check_finite(const float* p, int64_t n, const char* what) {
    for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(p[i])) throw Error(std::string(what) + " holds a non-finite value at index " + std::to_string(i));
}

}  // namespace cuda
}  // namespace universeg
