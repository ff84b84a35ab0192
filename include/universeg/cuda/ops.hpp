// universeg/cuda_ops.hpp - the CUDA backend's forward pass, written once for any executor, in
// plain C++ (nvcc and host compilers alike):
//
//   cuda::run_plan(backend, plan, layout, query, images, labels, logits);
//
// run_plan walks a cuda::Plan (cuda_plan.hpp) block by block and calls the backend's
// operations on the plan's buffers. cuda.cuh's CudaModel is the backend that launches CUDA
// kernels and cuBLAS GEMMs; tests/test_cuda_plan.cpp has one made of plain loops, so the
// plan's every role, view and chunk, and the kernels' index arithmetic (the op:: element
// functions below, which the CUDA kernels call per thread) are checked on machines without a GPU.
//
// A backend provides:
//   char* arena();                                        the workspace (plan.arena_bytes)
//   const float* weight(int64_t offset);                  the packed fp32 weights (WeightLayout)
//   void pack_pairs(float* v, const float* images, const float* labels, int64_t S, int64_t HW);
//   void im2col(void* col, const float* in, const float* addend, int64_t C, int64_t h, int64_t w,
//               int64_t n, bool bf16);                    col as float, or bf16 bits when bf16
//   void gemm(const Gemm& g, int64_t batch, const void* col, bool bf16, const ConvSlot& weights,
//             float* c, const std::string& block, const char* conv);
//   void bias_act(float* x, const float* bias, int64_t C, int64_t hw, int64_t n, bool leaky);
//   void maxpool(float* dst, const float* src, int64_t C, int64_t h, int64_t w, int64_t n);
//   void up_concat(float* dst, const float* low, const float* skip, int64_t c, int64_t cs,
//                  int64_t h, int64_t w, int64_t n);          low (n,c,h,w), skip (n,cs,2h,2w)
//   void accumulate(float* sum, const float* src, int64_t n, int64_t floats, bool first, int64_t divide_by);
//   void conv1x1_out(float* logits, const float* t, const ConvSlot& w, int64_t C, int64_t HW);
// with the semantics of the op:: functions, which compute one output element each.
#pragma once

#include "plan.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)
#define UNIVERSEG_HD __host__ __device__ inline
#else
#define UNIVERSEG_HD inline
#endif

namespace universeg {
namespace cuda {
namespace op {

// col (n, 9C, H*W) of in (n, C, H, W), plus addend (C, H, W) when given (the same for every
// image): row c*9 + ky*3 + kx is channel c shifted by (ky-1, kx-1), zero outside (padding 1).
UNIVERSEG_HD float im2col_value(const float* in, const float* addend, int C, int H, int W, int64_t img, int row, int p) {
    const int c = row / 9, ky = row % 9 / 3, kx = row % 3;
    const int y = p / W + ky - 1, x = p % W + kx - 1;
    if (y < 0 || y >= H || x < 0 || x >= W) return 0.0f;
    const int64_t at = int64_t(c) * H * W + int64_t(y) * W + x;
    const float v = in[img * C * H * W + at];
    return addend ? v + addend[at] : v;
}
UNIVERSEG_HD int64_t im2col_index(int C, int HW, int64_t img, int row, int p) { return (img * 9 * C + row) * HW + p; }

// The 4-pixel form used where W % 4 == 0: pixels 4q..4q+3 of channel c lie in one row, and
// v[dy][dx] = in (+ addend) at (y + dy - 1, x0 + dx - 1), zero outside; tap ky*3 + kx of pixel
// 4q + j is then v[ky][kx + j], the value im2col_value gives.
UNIVERSEG_HD void im2col_neighbourhood(const float* in, const float* addend, int C, int H, int W, int64_t img, int c, int q,
                                       float v[3][6]) {
    const int HW = H * W, y = 4 * q / W, x0 = 4 * q - y * W;
    const float* src = in + (img * C + c) * int64_t(HW);
    const float* add = addend ? addend + int64_t(c) * HW : nullptr;
    for (int dy = 0; dy < 3; ++dy) {
        const int yy = y + dy - 1;
        for (int dx = 0; dx < 6; ++dx) {
            const int xx = x0 + dx - 1, at = yy * W + xx;
            const bool inside = yy >= 0 && yy < H && xx >= 0 && xx < W;
            v[dy][dx] = inside ? (add ? src[at] + add[at] : src[at]) : 0.0f;
        }
    }
}

// x + bias, then LeakyReLU when `leaky` (as ops.hpp: x > 0 ? x : slope * x).
UNIVERSEG_HD float bias_act_value(float x, float bias, bool leaky) {
    const float t = x + bias;
    return !leaky || t > 0.0f ? t : kLeakySlope * t;
}

UNIVERSEG_HD float max2(float a, float b) { return a < b ? b : a; }  // std::max

// Output pixel p of plane `plane` of a 2x2 max pool (stride 2) of src (planes, H, W).
UNIVERSEG_HD float maxpool_value(const float* src, int H, int W, int64_t plane, int p) {
    const int Wo = W / 2, y = p / Wo, x = p % Wo;
    const float* s = src + plane * H * W + int64_t(2 * y) * W + 2 * x;
    return max2(max2(s[0], s[1]), max2(s[W], s[W + 1]));
}

struct Tap {
    int i0, i1;
    float w0, w1;
};

// ops.hpp's upsample2x_tap: output coordinate o of 2*in, align_corners=True.
UNIVERSEG_HD Tap upsample2x_tap(int o, int in) {
    const int out = 2 * in;
    const float scale = out > 1 ? float(in - 1) / float(out - 1) : 0.0f;
    const float src = scale * float(o);
    const int i0 = int(src) < in - 1 ? int(src) : in - 1;
    const float w1 = src - float(i0);
    return {i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - w1, w1};
}

// Pixel p of channel ch of image img of concat(bilinear x2 of low (n, c, h, w), skip
// (n, cs, 2h, 2w)) on channels, the upsampled channels first.
UNIVERSEG_HD float up_concat_value(const float* low, const float* skip, int c, int cs, int h, int w, int64_t img, int ch,
                                   int p) {
    const int Wo = 2 * w;
    if (ch >= c) return skip[(img * cs + (ch - c)) * 4 * h * w + p];
    const Tap ty = upsample2x_tap(p / Wo, h), tx = upsample2x_tap(p % Wo, w);
    const float* l = low + (img * c + ch) * h * w;
    const float *r0 = l + int64_t(ty.i0) * w, *r1 = l + int64_t(ty.i1) * w;
    return ty.w0 * (tx.w0 * r0[tx.i0] + tx.w1 * r0[tx.i1]) + ty.w1 * (tx.w0 * r1[tx.i0] + tx.w1 * r1[tx.i1]);
}

// Element j of (first ? 0 : sum[j]) + src_0[j] + ... + src_{n-1}[j], added in image order,
// divided by divide_by when it is non-zero (the mean over supports, also across chunks).
UNIVERSEG_HD float accumulate_value(const float* sum, const float* src, int n, int64_t floats, bool first,
                                    float divide_by, int64_t j) {
    float s = first ? 0.0f : sum[j];
    for (int i = 0; i < n; ++i) s += src[i * floats + j];
    return divide_by != 0.0f ? s / divide_by : s;
}

// Pixel p of the 1x1 output conv: sum_c w[c] * t (C, HW) in channel order, + bias.
UNIVERSEG_HD float conv1x1_value(const float* t, const float* w, const float* bias, int C, int HW, int p) {
    float s = 0.0f;
    for (int c = 0; c < C; ++c) s += w[c] * t[int64_t(c) * HW + p];
    return s + bias[0];
}

}  // namespace op

namespace detail {

template <class Backend>
float* at(Backend& be, const Plan& p, const View& v, int64_t image = 0) {
    return reinterpret_cast<float*>(be.arena() + p.region(v.region).offset) + image * v.floats();
}

template <class Backend>
float* at(Backend& be, const Plan& p, const char* region) {
    return reinterpret_cast<float*>(be.arena() + p.region(region).offset);
}

template <class Backend>
void mean(Backend& be, const Plan& p, const View& dst, const View& src) {
    be.accumulate(at(be, p, dst), at(be, p, src), src.n, src.floats(), true, src.n);
}

// dst (n images) = concat(up(low), skip) from image i0 of low and skip.
template <class Backend>
void up_concat(Backend& be, const Plan& p, float* dst, const View& low, const View& skip, int64_t i0, int64_t n) {
    be.up_concat(dst, at(be, p, low, i0), at(be, p, skip, i0), low.c, skip.c, low.h, low.w, n);
}

// One CrossBlock: the target path once, then the supports chunk by chunk into the sinks.
template <class Backend>
void cross_block(Backend& be, const Plan& p, const BlockPlan& b, const BlockSlots& w, const float* T) {
    const int64_t hw = b.h * b.w, f = b.cross, g = b.conv, cs = b.support_in;
    float *zt = at(be, p, "zt"), *zm = at(be, p, "zm"), *tout = at(be, p, b.t_out);
    void* col = at(be, p, "col");
    be.im2col(col, T, nullptr, b.target_in, b.h, b.w, 1, false);
    be.gemm(b.cross_t, 1, col, false, w.cross_t, zt, b.name, "cross conv, target half");
    be.bias_act(zt, be.weight(w.cross_t.bias), f, hw, 1, false);  // ZT = W_T * T + b
    be.im2col(col, at(be, p, b.mean_in), nullptr, cs, b.h, b.w, 1, false);
    be.gemm(b.cross_mean, 1, col, false, w.cross_v, zm, b.name, "cross conv, mean of the supports");
    be.im2col(col, zm, zt, f, b.h, b.w, 1, false);  // mean_i Z_i = ZM + ZT
    be.gemm(b.target, 1, col, false, w.target, tout, b.name, "target conv");
    be.bias_act(tout, be.weight(w.target.bias), g, hw, 1, true);
    if (!b.support_path()) return;

    const bool low = p.precision == Precision::bf16;
    float *z = at(be, p, "chunk_z"), *built = b.built_inputs() ? at(be, p, "chunk_in") : nullptr;
    for (int64_t i0 = 0; i0 < p.S; i0 += b.chunk) {
        const int64_t n = std::min(b.chunk, p.S - i0);
        if (built) up_concat(be, p, built, b.low, b.skip, i0, n);
        be.im2col(col, built ? built : at(be, p, b.v_in, i0), nullptr, cs, b.h, b.w, n, low);
        be.gemm(b.cross_v, n, col, low, w.cross_v, z, b.name, "cross conv, support half");
        be.im2col(col, z, zt, f, b.h, b.w, n, low);  // Z_i = W_V * V_i + ZT
        float* v = b.store ? at(be, p, b.store, i0) : at(be, p, "chunk_out");
        be.gemm(b.support, n, col, low, w.support, v, b.name, "support conv");
        be.bias_act(v, be.weight(w.support.bias), g, hw, n, true);
        if (b.mean) be.accumulate(at(be, p, b.mean), v, n, b.mean.floats(), i0 == 0, i0 + n == p.S ? p.S : 0);
        if (b.pooled) be.maxpool(at(be, p, b.pooled, i0), v, g, b.h, b.w, n);
    }
}

}  // namespace detail

// logits (B,1,H,W) for query (B,1,H,W) and supports (B,S,1,H,W), all in the backend's memory.
template <class Backend>
void run_plan(Backend& be, const Plan& p, const WeightLayout& layout, const float* query, const float* support_images,
              const float* support_labels, float* logits) {
    const int64_t HW = p.H * p.W;
    for (int64_t q = 0; q < p.B; ++q) {
        const BlockPlan& e0 = p.encoder.front();
        be.pack_pairs(detail::at(be, p, e0.v_in), support_images + q * p.S * HW, support_labels + q * p.S * HW, p.S, HW);
        detail::mean(be, p, e0.mean_in, e0.v_in);
        for (size_t k = 0; k < p.encoder.size(); ++k) {
            const BlockPlan& b = p.encoder[k];
            const float* T = query + q * HW;
            if (k > 0) {
                const View& prev = p.encoder[k - 1].t_out;
                be.maxpool(detail::at(be, p, b.t_in), detail::at(be, p, prev), prev.c, prev.h, prev.w, 1);
                detail::mean(be, p, b.mean_in, b.v_in);
                T = detail::at(be, p, b.t_in);
            }
            detail::cross_block(be, p, b, layout.encoder[k], T);
        }
        for (size_t d = 0; d < p.decoder.size(); ++d) {
            const BlockPlan& b = p.decoder[d];
            detail::up_concat(be, p, detail::at(be, p, b.t_in), b.t_low, b.t_skip, 0, 1);
            if (b.built_inputs()) {
                detail::mean(be, p, b.mean_low, b.low);
                detail::mean(be, p, b.mean_skip, b.skip);
            }
            detail::up_concat(be, p, detail::at(be, p, b.mean_in), b.mean_low, b.mean_skip, 0, 1);
            detail::cross_block(be, p, b, layout.decoder[d], detail::at(be, p, b.t_in));
        }
        be.conv1x1_out(logits + q * HW, detail::at(be, p, p.output), layout.out, p.output.c, HW);
    }
}

}  // namespace cuda
}  // namespace universeg
