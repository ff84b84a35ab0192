// universeg/ops.hpp - the reference operators of UniverSeg, as plain functions over
// explicit buffers and shapes.
//
// Layout everywhere is PyTorch's: row-major, planar channels (N, C, H, W); a support set is
// (B, S, C, H, W), i.e. B*S images. Every function is templated on the scalar so that the
// same code runs in float (the default) and double (the oracle, see model.hpp).
//
//   conv2d_forward        3x3 (any odd K) convolution, stride 1, zero padding K/2, with bias
//   cross_conv_forward    CrossConv: conv(concat(target, support_i)) for every support i
//   leaky_relu_forward    y = x > 0 ? x : slope * x
//   maxpool2x2_forward    2x2 max pool, stride 2
//   upsample2x_forward    bilinear x2, align_corners=True (PyTorch UpsamplingBilinear2d)
//   concat_channels_forward, mean_supports_forward
//
// Beside each <op>_forward sits <op>_backward (llm.c style): given the gradient of the output
// it ADDS (+=) the gradients of the inputs and parameters into caller buffers, so a tensor used
// twice (a skip connection) just receives two calls. A null gradient pointer skips that part.
// The backward passes are deterministic whatever the thread count: every reduction runs over
// a fixed decomposition (fixed chunks and groups) and is summed in a fixed order.
//
// These are the readable definitions that every fast kernel is tested against. They are not
// slow on purpose: the convolution is im2col + Eigen's GEMM, parallel over images and fixed
// column chunks, so results do not depend on the thread count. The trainer passes a kernels
// Table to the float convolutions to replace Eigen's GEMM by the run-time selected SIMD one: Eigen is
// compiled for the includer's baseline (SSE2 in a portable build), the table for the CPU.
#pragma once

#include "api.hpp"
#include "../cpu/kernels.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace universeg {

constexpr double kLeakySlope = 0.01;  // nn.LeakyReLU default, used by every CrossBlock

// The model's output probability is sigmoid(logit): the losses and the segmentation tool use it.
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

namespace detail {
// Pixels per im2col chunk: fixed, so each output element is computed by the same GEMM shape
// (and the same summation order) whatever the number of threads.
constexpr int64_t kConvChunk = 2048;
// Weight-gradient partial sums: work items are split into at most this many contiguous groups,
// each summed on its own and then added in group order, so the result does not depend on the
// number of threads.
constexpr int64_t kGradGroups = 16;

// im2col of pixels [p0, p0 + np) of one image (Cin, H, W): row (c, ky, kx) of cols (Cin*K*K, np)
// holds the input pixel under that tap for every output pixel, zero outside the image. Copied
// one output-row segment at a time (a shifted slice of an input row).
template <class T>
void im2col(T* cols, const T* src, int64_t Cin, int64_t H, int64_t W, int64_t K, int64_t p0, int64_t np) {
    const int64_t pad = K / 2;
    for (int64_t c = 0; c < Cin; ++c)
        for (int64_t ky = 0; ky < K; ++ky)
            for (int64_t kx = 0; kx < K; ++kx) {
                T* dst = cols + ((c * K + ky) * K + kx) * np;
                for (int64_t j = 0; j < np;) {
                    const int64_t y = (p0 + j) / W, x0 = (p0 + j) % W, len = std::min(W - x0, np - j);
                    const int64_t sy = y + ky - pad, shift = kx - pad;  // source x = x + shift
                    T* d = dst + j;
                    if (sy < 0 || sy >= H) {
                        std::fill(d, d + len, T(0));
                    } else {
                        const T* row = src + (c * H + sy) * W;
                        const int64_t a = std::clamp(-shift - x0, int64_t(0), len);     // first in-image i
                        const int64_t b = std::clamp(W - shift - x0, a, len);          // one past the last
                        std::fill(d, d + a, T(0));
                        std::copy(row + x0 + a + shift, row + x0 + b + shift, d + a);
                        std::fill(d + b, d + len, T(0));
                    }
                    j += len;
                }
            }
}

// C (m x n) (add ? += : =) A (m x k) * B (k x n; stored transposed with b_trans), row-major
// with row strides, by the table's GEMM when there is one and T is float (pack: k * nb
// floats). Returns false when the caller must use Eigen instead.
template <class T>
bool fast_gemm(const kernels::Table* fast, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* B,
               int64_t ldb, bool b_trans, T* C, int64_t ldc, bool add, float* pack) {
    if constexpr (std::is_same_v<T, float>) {
        if (fast) {
            fast->gemm({m, n, k, A, lda, B, ldb, b_trans, C, ldc, add}, pack);
            return true;
        }
    }
    return false;
}

// Floats of GEMM packing space for k, or none when Eigen is used.
template <class T>
std::unique_ptr<float[]> gemm_pack(const kernels::Table* fast, int64_t k) {
    if (!std::is_same_v<T, float> || !fast) return nullptr;
    return std::unique_ptr<float[]>(new float[size_t(k * fast->nb)]);
}

// out (N, Cout, H, W) (+)= conv(in, weight) [+ bias]: the im2col + GEMM shared by the forward
// and by the input gradient (accumulate = true adds into out).
template <class T>
void conv2d_gemm(T* out, const T* in, const T* weight, const T* bias, int64_t N, int64_t Cin, int64_t Cout, int64_t H,
                 int64_t W, int64_t K, bool accumulate, const kernels::Table* fast) {
    using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const int64_t HW = H * W, rows = Cin * K * K;
    const int64_t chunks = (HW + kConvChunk - 1) / kConvChunk;
    Eigen::Map<const RowMat> Wm(weight, Cout, rows);
UNIVERSEG_OMP(parallel)
    {
        // Uninitialised on purpose: im2col writes every element before the GEMM reads it.
        std::unique_ptr<T[]> cols(new T[size_t(rows * std::min(HW, kConvChunk))]);
        const std::unique_ptr<float[]> pack = gemm_pack<T>(fast, rows);
UNIVERSEG_OMP(for schedule(static))
        for (int64_t item = 0; item < N * chunks; ++item) {
            const int64_t n = item / chunks, p0 = (item % chunks) * kConvChunk;
            const int64_t np = std::min(kConvChunk, HW - p0);
            im2col(cols.get(), in + n * Cin * HW, Cin, H, W, K, p0, np);
            Eigen::Map<const RowMat> C(cols.get(), rows, np);
            Eigen::Map<RowMat, 0, Eigen::OuterStride<>> O(out + n * Cout * HW + p0, Cout, np, Eigen::OuterStride<>(HW));
            if (!fast_gemm(fast, Cout, np, rows, weight, rows, C.data(), np, false, O.data(), HW, accumulate, pack.get())) {
                if (accumulate) O.noalias() += Wm * C;
                else O.noalias() = Wm * C;
            }
            if (bias)
                for (int64_t o = 0; o < Cout; ++o) O.row(o).array() += bias[o];
        }
    }
}
}  // namespace detail

// out (N, Cout, H, W) = conv(in (N, Cin, H, W), weight (Cout, Cin, K, K)) + bias (Cout).
// `fast`: see the top of this file.
template <class T>
void conv2d_forward(T* out, const T* in, const T* weight, const T* bias, int64_t N, int64_t Cin, int64_t Cout,
                    int64_t H, int64_t W, int64_t K, const kernels::Table* fast = nullptr) {
    detail::conv2d_gemm(out, in, weight, bias, N, Cin, Cout, H, W, K, false, fast);
}

// Gradients of conv2d_forward. dout (N, Cout, H, W); in, weight as in the forward.
//   din (N, Cin, H, W)   += conv(dout, weight transposed and flipped)   (the transposed conv)
//   dweight (Cout, Cin, K, K) += sum_n,p dout (x) im2col(in),  dbias (Cout) += sum_n,p dout
template <class T>
void conv2d_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight, int64_t N,
                     int64_t Cin, int64_t Cout, int64_t H, int64_t W, int64_t K, const kernels::Table* fast = nullptr) {
    using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const int64_t HW = H * W, rows = Cin * K * K, KK = K * K;
    if (din) {
        // d in[c, y, x] = sum_{o, ky, kx} w[o, c, ky, kx] dout[o, y - ky + pad, x - kx + pad]: a forward
        // convolution of dout with weight'[c, o, K-1-ky, K-1-kx] and no bias.
        std::vector<T> wt(size_t(Cin * Cout * KK));
        for (int64_t o = 0; o < Cout; ++o)
            for (int64_t c = 0; c < Cin; ++c)
                for (int64_t k = 0; k < KK; ++k) wt[size_t((c * Cout + o) * KK + (KK - 1 - k))] = weight[(o * Cin + c) * KK + k];
        detail::conv2d_gemm(din, dout, wt.data(), static_cast<const T*>(nullptr), N, Cout, Cin, H, W, K, true, fast);
    }
    if (!dweight && !dbias) return;
    const int64_t chunks = (HW + detail::kConvChunk - 1) / detail::kConvChunk, items = N * chunks;
    const int64_t groups = std::min(items, detail::kGradGroups), per_group = (items + groups - 1) / groups;
    const int64_t stride = Cout * rows + Cout;  // one group's partial: weight then bias
    std::vector<T> partial(size_t(groups * stride), T(0));
UNIVERSEG_OMP(parallel)
    {
        std::unique_ptr<T[]> cols(new T[size_t(rows * std::min(HW, detail::kConvChunk))]);
        const std::unique_ptr<float[]> pack = detail::gemm_pack<T>(fast, std::min(HW, detail::kConvChunk));
UNIVERSEG_OMP(for schedule(static))
        for (int64_t g = 0; g < groups; ++g) {
            Eigen::Map<RowMat> dW(partial.data() + g * stride, Cout, rows);
            T* db = partial.data() + g * stride + Cout * rows;
            for (int64_t item = g * per_group; item < std::min(items, (g + 1) * per_group); ++item) {
                const int64_t n = item / chunks, p0 = (item % chunks) * detail::kConvChunk;
                const int64_t np = std::min(detail::kConvChunk, HW - p0);
                Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> dO(dout + n * Cout * HW + p0, Cout, np,
                                                                     Eigen::OuterStride<>(HW));
                if (dweight) {
                    detail::im2col(cols.get(), in + n * Cin * HW, Cin, H, W, K, p0, np);
                    Eigen::Map<const RowMat> C(cols.get(), rows, np);
                    // dW += dO * C^T: C, stored (rows x np), is the transposed operand
                    if (!detail::fast_gemm(fast, Cout, rows, np, dO.data(), HW, C.data(), np, true, dW.data(), rows,
                                           true, pack.get()))
                        dW.noalias() += dO * C.transpose();
                }
                // A plain loop: Eigen's vectorised sum peels by address, so its rounding would
                // depend on where the buffer happens to be allocated.
                for (int64_t o = 0; o < Cout; ++o) {
                    const T* row = dout + (n * Cout + o) * HW + p0;
                    T s = T(0);
                    for (int64_t j = 0; j < np; ++j) s += row[j];
                    db[o] += s;
                }
            }
        }
    }
    // Groups are added in order; parallel over parameters, each a fixed sequential sum.
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t j = 0; j < stride; ++j) {
        T s = T(0);
        for (int64_t g = 0; g < groups; ++g) s += partial[size_t(g * stride + j)];
        if (j < Cout * rows) {
            if (dweight) dweight[j] += s;
        } else if (dbias) {
            dbias[j - Cout * rows] += s;
        }
    }
}

// out (B, S, Cout, H, W): for every support i, conv(concat(target_b, support_bi)) with the
// target's channels first. target (B, Ct, H, W), support (B, S, Cs, H, W),
// weight (Cout, Ct + Cs, K, K). The concatenation is materialised: this is the definition.
template <class T>
void cross_conv_forward(T* out, const T* target, const T* support, const T* weight, const T* bias, int64_t B,
                        int64_t S, int64_t Ct, int64_t Cs, int64_t Cout, int64_t H, int64_t W, int64_t K) {
    const int64_t HW = H * W;
    std::vector<T> pair(size_t(S * (Ct + Cs) * HW));
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < S; ++i) {
            T* dst = pair.data() + i * (Ct + Cs) * HW;
            std::copy(target + b * Ct * HW, target + (b + 1) * Ct * HW, dst);
            std::copy(support + (b * S + i) * Cs * HW, support + (b * S + i + 1) * Cs * HW, dst + Ct * HW);
        }
        conv2d_forward(out + b * S * Cout * HW, pair.data(), weight, bias, S, Ct + Cs, Cout, H, W, K);
    }
}

// Gradients of cross_conv_forward through the materialised concatenation (the definition):
// dtarget (B, Ct, H, W) += sum_i dpair_i[:Ct], dsupport (B, S, Cs, H, W) += dpair_i[Ct:].
template <class T>
void cross_conv_backward(T* dtarget, T* dsupport, T* dweight, T* dbias, const T* dout, const T* target,
                         const T* support, const T* weight, int64_t B, int64_t S, int64_t Ct, int64_t Cs, int64_t Cout,
                         int64_t H, int64_t W, int64_t K) {
    const int64_t HW = H * W, C = Ct + Cs;
    std::vector<T> pair(size_t(S * C * HW)), dpair(size_t(S * C * HW));
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < S; ++i) {
            T* dst = pair.data() + i * C * HW;
            std::copy(target + b * Ct * HW, target + (b + 1) * Ct * HW, dst);
            std::copy(support + (b * S + i) * Cs * HW, support + (b * S + i + 1) * Cs * HW, dst + Ct * HW);
        }
        std::fill(dpair.begin(), dpair.end(), T(0));
        conv2d_backward(dtarget || dsupport ? dpair.data() : nullptr, dweight, dbias, dout + b * S * Cout * HW,
                        pair.data(), weight, S, C, Cout, H, W, K);
        for (int64_t i = 0; i < S; ++i) {
            const T* src = dpair.data() + i * C * HW;
            if (dtarget)
                for (int64_t j = 0; j < Ct * HW; ++j) dtarget[b * Ct * HW + j] += src[j];
            if (dsupport)
                for (int64_t j = 0; j < Cs * HW; ++j) dsupport[(b * S + i) * Cs * HW + j] += src[Ct * HW + j];
        }
    }
}

template <class T>
void leaky_relu_forward(T* out, const T* in, int64_t n, T slope = T(kLeakySlope)) {
    for (int64_t i = 0; i < n; ++i) out[i] = in[i] > T(0) ? in[i] : slope * in[i];
}

// din += dout * (x > 0 ? 1 : slope). `x` may be the forward's input or its output: with a
// positive slope both have the same sign (an in-place forward keeps only the output).
template <class T>
void leaky_relu_backward(T* din, const T* dout, const T* x, int64_t n, T slope = T(kLeakySlope)) {
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t i = 0; i < n; ++i) din[i] += x[i] > T(0) ? dout[i] : slope * dout[i];
}

// out (N, H/2, W/2) from in (N, H, W); N counts images times channels. H and W even.
template <class T>
void maxpool2x2_forward(T* out, const T* in, int64_t N, int64_t H, int64_t W) {
    const int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t n = 0; n < N; ++n)
        for (int64_t y = 0; y < Ho; ++y)
            for (int64_t x = 0; x < Wo; ++x) {
                const T* p = in + (n * H + 2 * y) * W + 2 * x;
                out[(n * Ho + y) * Wo + x] = std::max(std::max(p[0], p[1]), std::max(p[W], p[W + 1]));
            }
}

// din (N, H, W) += dout routed to the maximum of each window: the first of the four in the
// order the forward compares them (top-left, top-right, bottom-left, bottom-right) on ties.
template <class T>
void maxpool2x2_backward(T* din, const T* dout, const T* in, int64_t N, int64_t H, int64_t W) {
    const int64_t Ho = H / 2, Wo = W / 2;
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t n = 0; n < N; ++n)
        for (int64_t y = 0; y < Ho; ++y)
            for (int64_t x = 0; x < Wo; ++x) {
                const int64_t base = (n * H + 2 * y) * W + 2 * x;
                const int64_t a = in[base + 1] > in[base] ? base + 1 : base;
                const int64_t b = in[base + W + 1] > in[base + W] ? base + W + 1 : base + W;
                din[in[b] > in[a] ? b : a] += dout[(n * Ho + y) * Wo + x];
            }
}

// Source coordinate of output index `o` for align_corners=True: o * (in - 1) / (out - 1),
// with the scale rounded to T first as PyTorch does.
template <class T>
struct LinearTap {
    int64_t i0, i1;
    T w0, w1;
};

template <class T>
LinearTap<T> upsample2x_tap(int64_t o, int64_t in) {
    const int64_t out = 2 * in;
    const T scale = out > 1 ? T(in - 1) / T(out - 1) : T(0);
    const T src = scale * T(o);
    const int64_t i0 = std::min(int64_t(src), in - 1);
    const T w1 = src - T(i0);
    return {i0, i0 + (i0 < in - 1 ? 1 : 0), T(1) - w1, w1};
}

// out (N, 2H, 2W) from in (N, H, W), bilinear with align_corners=True.
template <class T>
void upsample2x_forward(T* out, const T* in, int64_t N, int64_t H, int64_t W) {
    const int64_t Ho = 2 * H, Wo = 2 * W;
    std::vector<LinearTap<T>> xs(static_cast<size_t>(Wo));
    for (int64_t x = 0; x < Wo; ++x) xs[size_t(x)] = upsample2x_tap<T>(x, W);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t y = 0; y < Ho; ++y) {
            const LinearTap<T> ty = upsample2x_tap<T>(y, H);
            const T* r0 = in + (n * H + ty.i0) * W;
            const T* r1 = in + (n * H + ty.i1) * W;
            T* dst = out + (n * Ho + y) * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
                const LinearTap<T>& tx = xs[size_t(x)];
                dst[x] = ty.w0 * (tx.w0 * r0[tx.i0] + tx.w1 * r0[tx.i1]) + ty.w1 * (tx.w0 * r1[tx.i0] + tx.w1 * r1[tx.i1]);
            }
        }
}

// din (N, H, W) += the transpose of upsample2x_forward applied to dout (N, 2H, 2W).
template <class T>
void upsample2x_backward(T* din, const T* dout, int64_t N, int64_t H, int64_t W) {
    const int64_t Ho = 2 * H, Wo = 2 * W;
    std::vector<LinearTap<T>> xs(static_cast<size_t>(Wo));
    for (int64_t x = 0; x < Wo; ++x) xs[size_t(x)] = upsample2x_tap<T>(x, W);
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t n = 0; n < N; ++n)
        for (int64_t y = 0; y < Ho; ++y) {
            const LinearTap<T> ty = upsample2x_tap<T>(y, H);
            T* r0 = din + (n * H + ty.i0) * W;
            T* r1 = din + (n * H + ty.i1) * W;
            const T* src = dout + (n * Ho + y) * Wo;
            for (int64_t x = 0; x < Wo; ++x) {
                const LinearTap<T>& tx = xs[size_t(x)];
                r0[tx.i0] += ty.w0 * tx.w0 * src[x];
                r0[tx.i1] += ty.w0 * tx.w1 * src[x];
                r1[tx.i0] += ty.w1 * tx.w0 * src[x];
                r1[tx.i1] += ty.w1 * tx.w1 * src[x];
            }
        }
}

// out (N, Ca + Cb, HW) = [a (N, Ca, HW), b (N, Cb, HW)].
template <class T>
void concat_channels_forward(T* out, const T* a, const T* b, int64_t N, int64_t Ca, int64_t Cb, int64_t HW) {
    for (int64_t n = 0; n < N; ++n) {
        std::copy(a + n * Ca * HW, a + (n + 1) * Ca * HW, out + n * (Ca + Cb) * HW);
        std::copy(b + n * Cb * HW, b + (n + 1) * Cb * HW, out + n * (Ca + Cb) * HW + Ca * HW);
    }
}

// da (N, Ca, HW) += dout[:, :Ca], db (N, Cb, HW) += dout[:, Ca:]; either may be null.
template <class T>
void concat_channels_backward(T* da, T* db, const T* dout, int64_t N, int64_t Ca, int64_t Cb, int64_t HW) {
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t n = 0; n < N; ++n) {
        const T* src = dout + n * (Ca + Cb) * HW;
        if (da)
            for (int64_t j = 0; j < Ca * HW; ++j) da[n * Ca * HW + j] += src[j];
        if (db)
            for (int64_t j = 0; j < Cb * HW; ++j) db[n * Cb * HW + j] += src[Ca * HW + j];
    }
}

// out (B, inner) = mean over S of in (B, S, inner); summed in support order.
template <class T>
void mean_supports_forward(T* out, const T* in, int64_t B, int64_t S, int64_t inner) {
    for (int64_t b = 0; b < B; ++b) {
        T* dst = out + b * inner;
        std::fill(dst, dst + inner, T(0));
        for (int64_t i = 0; i < S; ++i) {
            const T* src = in + (b * S + i) * inner;
            for (int64_t j = 0; j < inner; ++j) dst[j] += src[j];
        }
        for (int64_t j = 0; j < inner; ++j) dst[j] /= T(S);
    }
}

// din (B, S, inner) += dout (B, inner) / S for every support.
template <class T>
void mean_supports_backward(T* din, const T* dout, int64_t B, int64_t S, int64_t inner) {
UNIVERSEG_OMP(parallel for schedule(static))
    for (int64_t n = 0; n < B * S; ++n) {
        const T* src = dout + (n / S) * inner;
        for (int64_t j = 0; j < inner; ++j) din[n * inner + j] += src[j] / T(S);
    }
}

}  // namespace universeg
