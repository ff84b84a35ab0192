// universeg/train/train.hpp - training UniverSeg: the backward of core/reference.hpp's forward,
// losses, Adam/AdamW, the learning-rate schedule, gradient clipping, checkpoints.
//
//   TrainState st = init_train_state(parse_config("[32,32,32,32]"), seed);
//   TrainWorkspace ws;
//   StepResult r = train_step(st, batch, options, ws);      // one Adam step on one Batch
//   Model model = make_model(st);                            // evaluate with the inference path
//   save_safetensors(path, checkpoint_dict(st));             // weights + Adam moments + step/seed
//   TrainState back = train_state_from(load_safetensors(path));
//
// Parameters live in one flat float buffer (TrainState::params) laid out by param_layout(), in
// the reference's key names, so Adam, clipping and checkpoints are single loops. The network
// functions are templated on the scalar: float for training, double for the gradient tests.
//
// CrossConv is computed in its split form: with the cross weight W = [W_T | W_V] (target
// channels first), Z_i = W_T*T + b + W_V*V_i and mean_i Z_i = W_T*T + b + mean_i(W_V*V_i), so
// the target's part is convolved once per query instead of once per support, forward and
// backward (its gradient is the sum over supports of dZ_i). Exact in real arithmetic; the
// tests compare its gradients with the materialised concatenation (`split = false`).
// The last CrossBlock's support output feeds nothing, so training never computes it.
//
// Determinism: every op has a fixed decomposition (see ops.hpp), the loss and the gradient
// norm are summed sequentially, and the data for a step is a function of (seed, step): a run
// is reproducible bit for bit, and a resumed run continues exactly. A step of B tasks sums the
// gradients of its tasks, each computed alone, in task order (task_gradient): the same sums
// whether one process computes them all or several share them (distributed.hpp).
#pragma once

#include "../core/api.hpp"
#include "../core/model.hpp"
#include "../core/ops.hpp"
#include "../core/random.hpp"
#include "../core/reference.hpp"
#include "../core/tensor.hpp"
#include "../segment/metrics.hpp"
#include "batch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define UNIVERSEG_HAS_MXCSR 1
#endif

namespace universeg {

// ---- configuration and parameters ----------------------------------------------------------

// Kaiming-normal weights for LeakyReLU (std = sqrt(2 / (1 + slope^2) / fan_in)), zero biases.
inline std::vector<float> init_params(const std::vector<ParamInfo>& layout, uint64_t seed) {
    std::vector<float> p(size_t(param_count(layout)), 0.0f);
    for (size_t t = 0; t < layout.size(); ++t) {
        const ParamInfo& info = layout[t];
        if (info.shape.size() != 4) continue;
        Rng rng(seed_from({seed, 0x1417ull, t}));
        const double fan_in = double(info.shape[1] * info.shape[2] * info.shape[3]);
        const double std = std::sqrt(2.0 / (1.0 + kLeakySlope * kLeakySlope) / fan_in);
        for (int64_t i = 0; i < info.numel; ++i) p[size_t(info.offset + i)] = float(std * rng.normal());
    }
    return p;
}

// ---- the backward ------------------------------------------------------------------------

namespace detail {

// Adds the block's parameter gradients into `grad` (same layout as the weights) and, when
// dtin / dvin are non-null, the input gradients. dvout is ignored for the last block.
template <class T>
void block_backward(const BlockActivations<T>& a, const BlockWeights<const T*>& wt, const BlockWeights<T*>& gw, const T* dtout,
                    const T* dvout, T* dtin, T* dvin, int64_t B, int64_t S, bool split, const kernels::Table* fast) {
    const int64_t hw = a.h * a.w, f = a.f, g = a.g, cin = a.ct + a.cs;
    std::vector<T> dpre(size_t(B * g * hw), T(0)), dzm(size_t(B * f * hw), T(0)), dz(size_t(B * S * f * hw), T(0));
    leaky_relu_backward(dpre.data(), dtout, a.tout.data(), B * g * hw);
    conv2d_backward(dzm.data(), gw.tw, gw.tb, dpre.data(), a.zm.data(), wt.tw, B, f, g,
                    a.h, a.w, int64_t(3), fast);
    if (a.support_out) {
        dpre.assign(size_t(B * S * g * hw), T(0));
        leaky_relu_backward(dpre.data(), dvout, a.vout.data(), B * S * g * hw);
        conv2d_backward(dz.data(), gw.sw, gw.sb, dpre.data(), a.z.data(), wt.sw, B * S,
                        f, g, a.h, a.w, int64_t(3), fast);
    }
    mean_supports_backward(dz.data(), dzm.data(), B, S, f * hw);  // dZ_i += dZm / S
    if (!split) {
        cross_conv_backward(dtin, dvin, gw.cw, gw.cb, dz.data(), a.tin.data(), a.vin.data(), wt.cw, B, S,
                            a.ct, a.cs, f, a.h, a.w, int64_t(3));
        return;
    }
    // Target part: its input appears in every Z_i, so its gradient is sum_i dZ_i (in support order).
    std::vector<T> dpt(size_t(B * f * hw), T(0));
    const int64_t inner = f * hw;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < S; ++i)
            for (int64_t j = 0; j < inner; ++j) dpt[size_t(b * inner + j)] += dz[size_t((b * S + i) * inner + j)];
    const std::vector<T> wT = weight_columns(wt.cw, f, cin, 0, a.ct), wV = weight_columns(wt.cw, f, cin, a.ct, a.cs);
    std::vector<T> dwT(wT.size(), T(0)), dwV(wV.size(), T(0));
    conv2d_backward(dtin, dwT.data(), gw.cb, dpt.data(), a.tin.data(), wT.data(), B, a.ct, f, a.h, a.w,
                    int64_t(3), fast);
    conv2d_backward(dvin, dwV.data(), static_cast<T*>(nullptr), dz.data(), a.vin.data(), wV.data(), B * S, a.cs, f,
                    a.h, a.w, int64_t(3), fast);
    for (int64_t o = 0; o < f; ++o) {
        for (int64_t j = 0; j < a.ct * 9; ++j) gw.cw[o * cin * 9 + j] += dwT[size_t(o * a.ct * 9 + j)];
        for (int64_t j = 0; j < a.cs * 9; ++j) gw.cw[o * cin * 9 + a.ct * 9 + j] += dwV[size_t(o * a.cs * 9 + j)];
    }
}

}  // namespace detail

// Adds d loss / d params into `grad` (layout as params) given dlogits (B, 1, H, W); `fast` as
// for reference_forward.
template <class T>
void train_backward(const Config& config, const std::vector<ParamInfo>& layout, const T* params,
                    const Activations<T>& act, const T* dlogits, T* grad, bool split = true,
                    const kernels::Table* fast = nullptr) {
    const int64_t L = config.levels(), D = int64_t(config.decoder.size()), B = act.B, S = act.S;
    const size_t nb = size_t(L + D);
    std::vector<std::vector<T>> dt(nb), dv(nb);  // gradients of each block's outputs
    for (size_t k = 0; k < nb; ++k) {
        const BlockActivations<T>& a = act.blocks[k];
        dt[k].assign(a.tout.size(), T(0));
        dv[k].assign(a.vout.size(), T(0));
    }
    const size_t o = size_t(6 * (L + D));
    const BlockActivations<T>& last = act.blocks.back();
    conv2d_backward(dt[nb - 1].data(), grad + layout[o].offset, grad + layout[o + 1].offset, dlogits, last.tout.data(),
                    params + layout[o].offset, B, last.g, int64_t(1), act.H, act.W, int64_t(1), fast);
    for (int64_t j = D - 1; j >= 0; --j) {
        const size_t k = size_t(L + j), kp = size_t(L + j - 1), ks = size_t(L - 2 - j);
        const BlockActivations<T>& a = act.blocks[k];
        const BlockActivations<T>& prev = act.blocks[kp];
        const int64_t hw = a.h * a.w;
        std::vector<T> dtin(a.tin.size(), T(0)), dvin(a.vin.size(), T(0));
        detail::block_backward(a, detail::block_weights(layout, params, k), detail::block_weights(layout, grad, k),
                               dt[k].data(), dv[k].data(), dtin.data(), dvin.data(), B, S, split, fast);
        std::vector<T> dup(size_t(B * S * prev.g * hw), T(0));
        concat_channels_backward(dup.data(), dt[ks].data(), dtin.data(), B, prev.g, a.ct - prev.g, hw);
        upsample2x_backward(dt[kp].data(), dup.data(), B * prev.g, a.h / 2, a.w / 2);
        std::fill(dup.begin(), dup.end(), T(0));
        concat_channels_backward(dup.data(), dv[ks].data(), dvin.data(), B * S, prev.g, a.cs - prev.g, hw);
        upsample2x_backward(dv[kp].data(), dup.data(), B * S * prev.g, a.h / 2, a.w / 2);
    }
    for (int64_t k = L - 1; k >= 0; --k) {
        const BlockActivations<T>& a = act.blocks[size_t(k)];
        std::vector<T> dtin, dvin;
        if (k > 0) dtin.assign(a.tin.size(), T(0)), dvin.assign(a.vin.size(), T(0));
        detail::block_backward(a, detail::block_weights(layout, params, size_t(k)),
                               detail::block_weights(layout, grad, size_t(k)), dt[size_t(k)].data(),
                               dv[size_t(k)].data(), k > 0 ? dtin.data() : nullptr, k > 0 ? dvin.data() : nullptr, B, S,
                               split, fast);
        if (k == 0) break;
        const BlockActivations<T>& p = act.blocks[size_t(k - 1)];
        maxpool2x2_backward(dt[size_t(k - 1)].data(), dtin.data(), p.tout.data(), B * p.g, p.h, p.w);
        maxpool2x2_backward(dv[size_t(k - 1)].data(), dvin.data(), p.vout.data(), B * S * p.g, p.h, p.w);
    }
}

// ---- losses -----------------------------------------------------------------------------------

enum class Loss { Dice, Bce, DiceBce };

inline Loss parse_loss(const std::string& s) {
    if (s == "dice") return Loss::Dice;
    if (s == "bce") return Loss::Bce;
    if (s == "dice+bce") return Loss::DiceBce;
    throw Error("--loss must be dice, bce or dice+bce, got '" + s + "'");
}

// Smoothing of the soft Dice: an empty label with an empty prediction scores 1.
constexpr double kDiceSmooth = 1.0;

// Loss of logits (B, n) against 0/1 labels, averaged over the batch; writes d loss / d logit.
//   soft Dice (the paper's loss): 1 - (2 sum p y + s) / (sum p + sum y + s), p = sigmoid(logit)
//   BCE: mean over pixels of -y log p - (1 - y) log (1 - p), computed stably from the logit
// `mean_over` > 0 divides by it instead of B: the share of these B tasks in a larger batch's mean.
template <class T>
double loss_and_grad(const T* logits, const float* labels, int64_t B, int64_t n, Loss loss, T* dlogits,
                     int64_t mean_over = 0) {
    const int64_t M = mean_over > 0 ? mean_over : B;
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
        const T* x = logits + b * n;
        const float* y = labels + b * n;
        T* d = dlogits + b * n;
        std::fill(d, d + n, T(0));
        if (loss != Loss::Bce) {
            double inter = 0, sp = 0, sy = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double p = sigmoid(double(x[i]));
                inter += p * y[i], sp += p, sy += y[i];
            }
            const double num = 2 * inter + kDiceSmooth, den = sp + sy + kDiceSmooth;
            total += 1.0 - num / den;
            for (int64_t i = 0; i < n; ++i) {
                const double p = sigmoid(double(x[i]));
                const double dD_dp = (2.0 * y[i] * den - num) / (den * den);
                d[i] += T(-dD_dp * p * (1 - p) / double(M));
            }
        }
        if (loss != Loss::Dice) {
            double s = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double xi = double(x[i]), p = sigmoid(xi);
                s += std::max(xi, 0.0) - xi * y[i] + std::log1p(std::exp(-std::abs(xi)));
                d[i] += T((p - y[i]) / double(n * M));
            }
            total += s / double(n);
        }
    }
    return total / double(M);
}

// ---- optimiser ------------------------------------------------------------------------------

struct TrainOptions {
    int64_t steps = 10000, warmup = 500;
    double lr = 1e-3, min_lr_ratio = 0.05;  // cosine from lr down to lr * min_lr_ratio
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double weight_decay = 0.0;  // AdamW's decoupled decay, applied to conv weights only
    double clip = 1.0;          // global gradient-norm bound; 0 = off
    double ema_decay = 0.0;     // > 0: keep an exponential moving average of the weights
    Loss loss = Loss::DiceBce;
};

// Linear warmup from lr/warmup to lr over `warmup` steps, then a half cosine down to
// lr * min_lr_ratio at `steps`; constant after. `step` counts from 0.
inline double learning_rate(const TrainOptions& o, int64_t step) {
    if (step < o.warmup) return o.lr * double(step + 1) / double(o.warmup);
    const double span = double(std::max<int64_t>(1, o.steps - o.warmup));
    const double t = std::min(1.0, double(step - o.warmup) / span);
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + std::cos(3.141592653589793 * t)));
}

// Scales g so that its L2 norm is at most max_norm (0 = no bound); returns the norm before.
inline double clip_grad_norm(std::vector<float>& g, double max_norm) {
    double ss = 0;
    for (float v : g) ss += double(v) * double(v);
    const double norm = std::sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = float(max_norm / (norm + 1e-12));
        for (float& v : g) v *= scale;
    }
    return norm;
}

// Everything a run needs to continue exactly: weights, Adam moments, step, data seed.
struct TrainState {
    Config config;
    std::vector<ParamInfo> layout;
    std::vector<float> params, m, v;
    // Moving average of params (empty until the first step with ema_decay > 0). With batches of
    // one task the raw weights wander from step to step; the average is what gets evaluated
    // and shipped. It never feeds back into training.
    std::vector<float> ema;
    int64_t step = 0;   // steps taken so far
    uint64_t seed = 0;  // the run's seed: data for step t comes from (seed, t)
};

inline TrainState init_train_state(const Config& config, uint64_t seed) {
    TrainState s;
    s.config = config;
    s.layout = param_layout(config);
    s.params = init_params(s.layout, seed);
    s.m.assign(s.params.size(), 0.0f);
    s.v.assign(s.params.size(), 0.0f);
    s.seed = seed;
    return s;
}

// One AdamW update with gradient g (already clipped) at learning rate lr.
inline void adam_update(TrainState& s, const std::vector<float>& g, const TrainOptions& o, double lr) {
    const double t = double(s.step + 1);
    const double c1 = 1 - std::pow(o.beta1, t), c2 = 1 - std::pow(o.beta2, t);
    for (const ParamInfo& info : s.layout) {
        const double decay = info.shape.size() == 4 ? o.weight_decay : 0.0;
        for (int64_t i = info.offset; i < info.offset + info.numel; ++i) {
            const size_t k = size_t(i);
            s.m[k] = float(o.beta1 * s.m[k] + (1 - o.beta1) * g[k]);
            s.v[k] = float(o.beta2 * s.v[k] + (1 - o.beta2) * double(g[k]) * g[k]);
            const double update = (s.m[k] / c1) / (std::sqrt(s.v[k] / c2) + o.eps) + decay * s.params[k];
            s.params[k] = float(s.params[k] - lr * update);
        }
    }
}

// Flushes subnormal floats to zero (x86 MXCSR FTZ + DAZ) on the calling thread and on every
// thread of the OpenMP team while it lives; on destruction they all get the caller's previous
// setting back (threads inherit it when the team is created). Trained weights drive some
// backward-pass products into the subnormal range, and Intel cores take a microcode assist
// for every such operand (AMD's handle them in hardware; docs/training.md has the cost).
// Values below 1.2e-38 change nothing a float training run can see. AArch64 cores handle
// subnormals in hardware: there it does nothing.
class FlushSubnormals {
public:
    FlushSubnormals() {
#ifdef UNIVERSEG_HAS_MXCSR
        previous_ = _mm_getcsr() & kFlushBits;
        set_everywhere(kFlushBits);
#endif
    }
    ~FlushSubnormals() {
#ifdef UNIVERSEG_HAS_MXCSR
        set_everywhere(previous_);
#endif
    }
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;

private:
#ifdef UNIVERSEG_HAS_MXCSR
    static constexpr unsigned kFlushBits = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
    static void set_everywhere(unsigned bits) {
UNIVERSEG_OMP(parallel)
        _mm_setcsr((_mm_getcsr() & ~kFlushBits) | bits);
        _mm_setcsr((_mm_getcsr() & ~kFlushBits) | bits);
    }
    unsigned previous_ = 0;
#endif
};

struct TrainWorkspace {
    Activations<float> act;
    std::vector<float> grad, dlogits;
    std::vector<float> task_grad;  // one task's gradient, or this rank's tasks' (distributed.hpp)
    std::vector<float> gathered;   // every rank's tasks' gradients (distributed.hpp)
    // The convolutions' GEMM: the best kernels this CPU runs (UNIVERSEG_ARCH caps them).
    const kernels::Table* gemm_kernels = &kernels::select();
};

struct StepResult {
    double loss = 0, grad_norm = 0, lr = 0;
};

// Task t of `batch` alone (a forward and a backward with B = 1): its gradient into `grad`
// (s.params.size() floats, overwritten) and its loss returned, both divided by B, the step's
// batch size, whose mean loss is the sum of these. A step's gradient is the sum over its tasks,
// in task order, of these: it depends on nothing but the task, whichever process computes it,
// so that data-parallel training (distributed.hpp) repeats one process bit for bit.
inline double task_gradient(const TrainState& s, const Batch& batch, int64_t t, int64_t B, const TrainOptions& o,
                            TrainWorkspace& ws, float* grad) {
    const int64_t HW = batch.H * batch.W, S = batch.S;
    reference_forward(s.config, s.layout, s.params.data(), batch.query.data() + t * HW,
                      batch.support_images.data() + t * S * HW, batch.support_labels.data() + t * S * HW, 1, S,
                      batch.H, batch.W, ws.act, true, ws.gemm_kernels);
    ws.dlogits.resize(ws.act.logits.size());
    const double loss =
        loss_and_grad(ws.act.logits.data(), batch.query_labels.data() + t * HW, 1, HW, o.loss, ws.dlogits.data(), B);
    std::fill(grad, grad + s.params.size(), 0.0f);
    train_backward(s.config, s.layout, s.params.data(), ws.act, ws.dlogits.data(), grad, true, ws.gemm_kernels);
    return loss;
}

// Clipping, one Adam step and the moving average, given the step's gradient (the sum of its
// tasks') and loss; advances s.step. The caller holds a FlushSubnormals.
inline StepResult apply_gradient(TrainState& s, std::vector<float>& grad, double loss, const TrainOptions& o) {
    StepResult r;
    r.loss = loss;
    r.grad_norm = clip_grad_norm(grad, o.clip);
    r.lr = learning_rate(o, s.step);
    if (std::isfinite(r.grad_norm)) adam_update(s, grad, o, r.lr);  // a non-finite step is skipped
    if (o.ema_decay > 0) {
        const float d = float(o.ema_decay);
        if (s.ema.size() != s.params.size()) s.ema = s.params;  // starts at the current weights
        else
            for (size_t i = 0; i < s.ema.size(); ++i) s.ema[i] = d * s.ema[i] + (1.0f - d) * s.params[i];
    }
    ++s.step;
    return r;
}

// One step on `batch`: the sum of its tasks' gradients (task_gradient, in task order), then
// clipping and one Adam step; advances s.step.
inline StepResult train_step(TrainState& s, const Batch& batch, const TrainOptions& o, TrainWorkspace& ws) {
    if (batch.B < 1) throw Error("train_step: a batch of " + std::to_string(batch.B) + " tasks");
    const FlushSubnormals flush;
    ws.grad.resize(s.params.size());
    double loss = task_gradient(s, batch, 0, batch.B, o, ws, ws.grad.data());
    if (batch.B > 1) ws.task_grad.resize(s.params.size());
    for (int64_t t = 1; t < batch.B; ++t) {
        loss += task_gradient(s, batch, t, batch.B, o, ws, ws.task_grad.data());
        for (size_t i = 0; i < ws.grad.size(); ++i) ws.grad[i] += ws.task_grad[i];
    }
    return apply_gradient(s, ws.grad, loss, o);
}

// ---- weights and checkpoints ------------------------------------------------------------------

// The weights under the reference's key names (what Model and save_safetensors take): the
// moving average when `ema` is true and the state has one, else the raw weights.
inline StateDict weights_dict(const TrainState& s, bool ema = false) {
    const std::vector<float>& w = ema && !s.ema.empty() ? s.ema : s.params;
    StateDict sd;
    for (const ParamInfo& info : s.layout) {
        Tensor t(info.shape);
        std::copy(w.begin() + info.offset, w.begin() + info.offset + info.numel, t.data.begin());
        sd[info.name] = std::move(t);
    }
    return sd;
}

inline Model make_model(const TrainState& s, bool ema = false) { return Model(weights_dict(s, ema)); }

namespace detail {
// A 64-bit integer as four exact 16-bit pieces in float32 (safetensors stores tensors only).
inline Tensor u64_tensor(uint64_t v) {
    Tensor t({4});
    for (int i = 0; i < 4; ++i) t.data[size_t(i)] = float((v >> (16 * i)) & 0xFFFFu);
    return t;
}
inline uint64_t u64_from(const StateDict& sd, const std::string& key) {
    const Tensor& t = require_tensor(sd, key);
    uint64_t v = 0;
    if (t.numel() != 4) throw Error("checkpoint tensor '" + key + "' must hold 4 values");
    for (int i = 0; i < 4; ++i) {
        const float f = t.data[size_t(i)];
        if (!(f >= 0 && f <= 65535 && f == std::floor(f))) throw Error("checkpoint tensor '" + key + "' is corrupt");
        v |= uint64_t(f) << (16 * i);
    }
    return v;
}
}  // namespace detail

// Weights plus "adam.m.<name>", "adam.v.<name>", "ema.<name>" (when kept), "train.step" and
// "train.seed". Model and load_model read such a file as the raw weights (they ignore the
// extra tensors).
inline StateDict checkpoint_dict(const TrainState& s) {
    StateDict sd = weights_dict(s);
    for (const ParamInfo& info : s.layout) {
        Tensor m(info.shape), v(info.shape);
        std::copy(s.m.begin() + info.offset, s.m.begin() + info.offset + info.numel, m.data.begin());
        std::copy(s.v.begin() + info.offset, s.v.begin() + info.offset + info.numel, v.data.begin());
        sd["adam.m." + info.name] = std::move(m);
        sd["adam.v." + info.name] = std::move(v);
        if (!s.ema.empty()) {
            Tensor e(info.shape);
            std::copy(s.ema.begin() + info.offset, s.ema.begin() + info.offset + info.numel, e.data.begin());
            sd["ema." + info.name] = std::move(e);
        }
    }
    sd["train.step"] = detail::u64_tensor(uint64_t(s.step));
    sd["train.seed"] = detail::u64_tensor(s.seed);
    return sd;
}

// From a checkpoint_dict (exact resume) or from plain weights (fresh optimiser, step 0: for
// fine-tuning; `seed` then seeds the data). The architecture is read off the shapes.
inline TrainState train_state_from(const StateDict& sd, uint64_t seed = 0) {
    TrainState s;
    s.config = Network::from_state_dict(sd).config;  // validates every tensor
    s.layout = param_layout(s.config);
    const int64_t n = param_count(s.layout);
    s.params.resize(size_t(n));
    s.m.assign(size_t(n), 0.0f);
    s.v.assign(size_t(n), 0.0f);
    const bool resume = sd.count("train.step") > 0;
    if (resume && sd.count("ema." + s.layout[0].name)) s.ema.assign(size_t(n), 0.0f);
    for (const ParamInfo& info : s.layout) {
        std::copy(require_tensor(sd, info.name).data.begin(), require_tensor(sd, info.name).data.end(),
                  s.params.begin() + info.offset);
        if (!resume) continue;
        for (const char* part : {"adam.m.", "adam.v.", "ema."}) {
            std::vector<float>& dst = part[0] == 'e' ? s.ema : part[5] == 'm' ? s.m : s.v;
            if (dst.empty()) continue;
            const Tensor& t = require_tensor(sd, part + info.name);
            if (t.numel() != info.numel) throw Error("checkpoint tensor '" + std::string(part) + info.name + "' has the wrong size");
            std::copy(t.data.begin(), t.data.end(), dst.begin() + info.offset);
        }
    }
    s.step = resume ? int64_t(detail::u64_from(sd, "train.step")) : 0;
    s.seed = resume ? detail::u64_from(sd, "train.seed") : seed;
    return s;
}

// ---- evaluation ---------------------------------------------------------------------------------

}  // namespace universeg
