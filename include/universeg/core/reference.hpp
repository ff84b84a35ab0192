// universeg/core/reference.hpp - the readable forward pass, op by op as the reference model
// computes it (core/ops.hpp), over explicit buffers, keeping what the backward pass needs:
// the oracle the fast engines are tested against, and training's forward (train/train.hpp
// runs its backward on these activations).
//
//   Activations<double> act;
//   reference_forward(config, param_layout(config), params, query, images, labels, B, S, H, W, act);
//   act.logits, act.blocks[k].tout / .vout   // every CrossBlock's outputs
#pragma once

#include "api.hpp"
#include "network.hpp"
#include "ops.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace universeg {

// What one CrossBlock keeps for its backward. Inputs tin (B, ct, h, w) and vin (B*S, cs, h, w);
// z = CrossConv outputs (B*S, f), zm = their mean (B, f); outputs after LeakyReLU tout (B, g)
// and vout (B*S, g), vout empty for the last block.
template <class T>
struct BlockActivations {
    int64_t h = 0, w = 0, ct = 0, cs = 0, f = 0, g = 0;
    bool support_out = true;
    std::vector<T> tin, vin, z, zm, tout, vout;
};

template <class T>
struct Activations {
    int64_t B = 0, S = 0, H = 0, W = 0;
    std::vector<BlockActivations<T>> blocks;  // encoder blocks, then decoder blocks
    std::vector<T> logits;                     // (B, 1, H, W)
};

namespace detail {

// The six tensors of CrossBlock k inside a flat buffer: weights (const T*) or gradients (T*).
template <class P>
struct BlockWeights {
    P cw, cb, tw, tb, sw, sb;
};

template <class P>
BlockWeights<P> block_weights(const std::vector<ParamInfo>& layout, P p, size_t k) {
    return {p + layout[6 * k].offset,     p + layout[6 * k + 1].offset, p + layout[6 * k + 2].offset,
            p + layout[6 * k + 3].offset, p + layout[6 * k + 4].offset, p + layout[6 * k + 5].offset};
}

template <class T>
void resize_zero(std::vector<T>& v, int64_t n) {
    v.assign(size_t(n), T(0));
}

// Columns [c0, c0 + c) of the cross weight (f, ct + cs, 3, 3) as a contiguous (f, c, 3, 3).
template <class T>
std::vector<T> weight_columns(const T* cw, int64_t f, int64_t cin, int64_t c0, int64_t c) {
    std::vector<T> out(size_t(f * c * 9));
    for (int64_t o = 0; o < f; ++o) std::copy(cw + (o * cin + c0) * 9, cw + (o * cin + c0 + c) * 9, out.begin() + o * c * 9);
    return out;
}

template <class T>
void block_forward(BlockActivations<T>& a, const BlockWeights<const T*>& wt, int64_t B, int64_t S, bool split,
                   const kernels::Table* fast) {
    const int64_t hw = a.h * a.w, f = a.f, g = a.g, cin = a.ct + a.cs;
    resize_zero(a.z, B * S * f * hw);
    resize_zero(a.zm, B * f * hw);
    if (split) {
        const std::vector<T> wT = weight_columns(wt.cw, f, cin, 0, a.ct), wV = weight_columns(wt.cw, f, cin, a.ct, a.cs);
        const std::vector<T> no_bias(size_t(f), T(0));
        std::vector<T> pt(size_t(B * f * hw));
        conv2d_forward(pt.data(), a.tin.data(), wT.data(), wt.cb, B, a.ct, f, a.h, a.w, int64_t(3), fast);
        conv2d_forward(a.z.data(), a.vin.data(), wV.data(), no_bias.data(), B * S, a.cs, f, a.h, a.w, int64_t(3), fast);
        mean_supports_forward(a.zm.data(), a.z.data(), B, S, f * hw);
        const int64_t inner = f * hw;
UNIVERSEG_OMP(parallel for schedule(static))
        for (int64_t n = 0; n < B * S; ++n)
            for (int64_t j = 0; j < inner; ++j) a.z[size_t(n * inner + j)] += pt[size_t((n / S) * inner + j)];
        for (int64_t j = 0; j < B * inner; ++j) a.zm[size_t(j)] += pt[size_t(j)];
    } else {
        cross_conv_forward(a.z.data(), a.tin.data(), a.vin.data(), wt.cw, wt.cb, B, S, a.ct, a.cs, f, a.h, a.w, int64_t(3));
        mean_supports_forward(a.zm.data(), a.z.data(), B, S, f * hw);
    }
    resize_zero(a.tout, B * g * hw);
    conv2d_forward(a.tout.data(), a.zm.data(), wt.tw, wt.tb, B, f, g, a.h, a.w, int64_t(3), fast);
    leaky_relu_forward(a.tout.data(), a.tout.data(), int64_t(a.tout.size()));
    if (a.support_out) {
        resize_zero(a.vout, B * S * g * hw);
        conv2d_forward(a.vout.data(), a.z.data(), wt.sw, wt.sb, B * S, f, g, a.h, a.w, int64_t(3), fast);
        leaky_relu_forward(a.vout.data(), a.vout.data(), int64_t(a.vout.size()));
    } else {
        a.vout.clear();
    }
}

}  // namespace detail

// The forward pass over a batch, keeping every block's activations in `act` (logits in
// act.logits). `params`: the weights laid out by param_layout(config). split: the cross conv
// computed as the CPU engine's split algebra (training's choice: a third less work) rather
// than as the reference model writes it; all_support_outputs: also the last block's support
// outputs, which the logits never need (for comparing every block with another implementation).
// `fast`: the kernels whose GEMM the float convolutions use (see ops.hpp); null: Eigen's.
template <class T>
void reference_forward(const Config& config, const std::vector<ParamInfo>& layout, const T* params, const float* query,
                   const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H, int64_t W,
                   Activations<T>& act, bool split = true, const kernels::Table* fast = nullptr,
                       bool all_support_outputs = false) {
    const int64_t L = config.levels(), D = int64_t(config.decoder.size()), HW = H * W;
    if (B < 1 || S < 1 || H < 1 || W < 1 || H % config.size_multiple() || W % config.size_multiple())
        throw Error("reference_forward: batch " + std::to_string(B) + " x " + std::to_string(S) + " supports of " +
                    std::to_string(H) + "x" + std::to_string(W) + " does not fit " + config.to_string());
    act.B = B, act.S = S, act.H = H, act.W = W;
    act.blocks.resize(size_t(L + D));
    int64_t h = H, w = W;
    for (int64_t k = 0; k < L; ++k) {
        BlockActivations<T>& a = act.blocks[size_t(k)];
        a.h = h, a.w = w, a.ct = config.encoder_target_in(k), a.cs = config.encoder_support_in(k);
        a.f = config.encoder[size_t(k)].cross, a.g = config.encoder[size_t(k)].conv;
        a.support_out = all_support_outputs || !(k == L - 1 && D == 0);
        if (k == 0) {
            a.tin.assign(query, query + B * HW);
            a.vin.resize(size_t(B * S * 2 * HW));
            for (int64_t n = 0; n < B * S; ++n) {  // support pair = (image, label) on channels
                std::copy(support_images + n * HW, support_images + (n + 1) * HW, a.vin.begin() + n * 2 * HW);
                std::copy(support_labels + n * HW, support_labels + (n + 1) * HW, a.vin.begin() + (n * 2 + 1) * HW);
            }
        } else {
            const BlockActivations<T>& p = act.blocks[size_t(k - 1)];
            a.tin.resize(size_t(B * p.g * h * w));
            a.vin.resize(size_t(B * S * p.g * h * w));
            maxpool2x2_forward(a.tin.data(), p.tout.data(), B * p.g, 2 * h, 2 * w);
            maxpool2x2_forward(a.vin.data(), p.vout.data(), B * S * p.g, 2 * h, 2 * w);
        }
        detail::block_forward(a, detail::block_weights(layout, params, size_t(k)), B, S, split, fast);
        if (k + 1 < L) h /= 2, w /= 2;
    }
    for (int64_t j = 0; j < D; ++j) {
        BlockActivations<T>& a = act.blocks[size_t(L + j)];
        const BlockActivations<T>& prev = act.blocks[size_t(L + j - 1)];
        const BlockActivations<T>& skip = act.blocks[size_t(L - 2 - j)];
        h *= 2, w *= 2;
        a.h = h, a.w = w, a.ct = a.cs = prev.g + skip.g;
        a.f = config.decoder[size_t(j)].cross, a.g = config.decoder[size_t(j)].conv;
        a.support_out = all_support_outputs || j + 1 < D;
        std::vector<T> up(size_t(B * S * prev.g * h * w));
        a.tin.resize(size_t(B * a.ct * h * w));
        upsample2x_forward(up.data(), prev.tout.data(), B * prev.g, h / 2, w / 2);
        concat_channels_forward(a.tin.data(), up.data(), skip.tout.data(), B, prev.g, skip.g, h * w);
        a.vin.resize(size_t(B * S * a.cs * h * w));
        upsample2x_forward(up.data(), prev.vout.data(), B * S * prev.g, h / 2, w / 2);
        concat_channels_forward(a.vin.data(), up.data(), skip.vout.data(), B * S, prev.g, skip.g, h * w);
        detail::block_forward(a, detail::block_weights(layout, params, size_t(L + j)), B, S, split, fast);
    }
    const BlockActivations<T>& last = act.blocks.back();
    const size_t o = size_t(6 * (L + D));
    act.logits.assign(size_t(B * HW), T(0));
    conv2d_forward(act.logits.data(), last.tout.data(), params + layout[o].offset, params + layout[o + 1].offset, B,
                   last.g, int64_t(1), H, W, int64_t(1), fast);
}

}  // namespace universeg
