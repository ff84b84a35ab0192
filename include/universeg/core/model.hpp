// universeg/core/model.hpp - a UniverSeg model: its weights (a Network) and the CPU forward pass.
//
//   universeg::Model model(state_dict);          // architecture read off the tensor shapes
//   model.forward(query, support_images, support_labels, B, S, H, W, logits);
//
// Inputs (row-major, PyTorch layout): query (B,1,H,W), support images and labels (B,S,1,H,W),
// images in [0,1], labels 0/1. Output: logits (B,1,H,W); probability = sigmoid(logit).
//
// forward() runs the CPU engine (cpu/engine.hpp: the split algebra, SIMD kernels chosen at run
// time); forward_reference() the readable op-by-op forward (core/reference.hpp), in float or
// double. A Model is the context that calls share: its weights and the engine's packed
// weights; each call takes its own per-call buffers (a Workspace) from a small pool, so
// forward() is const and may be called from several threads at once.
#pragma once

#include "../cpu/options.hpp"
#include "api.hpp"
#include "network.hpp"
#include "reference.hpp"
#include "tensor.hpp"

#include <unsupported/Eigen/CXX11/Tensor>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace universeg {

namespace engine {
class Cache;  // packed weights and a pool of workspaces (cpu/engine.hpp)
UNIVERSEG_API std::shared_ptr<Cache> make_cache();
}  // namespace engine

// Called by the reference forward after every CrossBlock with its outputs, named after the
// reference model's modules ("enc_blocks.0", ..., "dec_blocks.2"): target (B,1,C,H,W) and
// support (B,S,C,H,W). For finding the first layer where two implementations depart.
using BlockObserver = std::function<void(const std::string& module, const Tensor& target, const Tensor& support)>;

class Model {
public:
    using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;
    using Tensor5 = Eigen::Tensor<float, 5, Eigen::RowMajor>;

    // Builds the model from a state dict with the reference's key names; the architecture is
    // read off the tensor shapes. Throws Error naming the first missing or mis-shaped tensor.
    explicit Model(const StateDict& sd) : Model(Network::from_state_dict(sd)) {}
    explicit Model(Network net) : net_(std::move(net)), engine_(engine::make_cache()) {}

    const Network& network() const { return net_; }
    const Config& config() const { return net_.config; }
    const std::vector<CrossBlock>& encoder() const { return net_.encoder; }
    const std::vector<CrossBlock>& decoder() const { return net_.decoder; }
    const Conv& out_conv() const { return net_.out; }
    int64_t parameter_count() const { return net_.parameter_count(); }
    StateDict state_dict() const { return net_.state_dict(); }

    // Throws Error unless the inputs are a valid problem for this model: S >= 1, B >= 1,
    // H and W positive multiples of config().size_multiple(), all values finite.
    void check_inputs(const float* query, const float* support_images, const float* support_labels, int64_t B,
                      int64_t S, int64_t H, int64_t W) const {
        const int64_t m = config().size_multiple();
        if (B < 1) throw Error("batch size must be at least 1, got " + std::to_string(B));
        if (S < 1) throw Error("support size must be at least 1, got " + std::to_string(S));
        if (H < 1 || W < 1 || H % m || W % m)
            throw Error("image size " + std::to_string(H) + "x" + std::to_string(W) + " is not a positive multiple of " +
                        std::to_string(m) + " (this model halves the resolution " + std::to_string(config().levels() - 1) +
                        " times)");
        auto finite = [](const float* p, int64_t n, const char* what) {
            for (int64_t i = 0; i < n; ++i)
                if (!std::isfinite(p[i])) throw Error(std::string(what) + " holds a non-finite value at index " + std::to_string(i));
        };
        finite(query, B * H * W, "query");
        finite(support_images, B * S * H * W, "support images");
        finite(support_labels, B * S * H * W, "support labels");
    }

    // logits (B,1,H,W) for query (B,1,H,W) and supports (B,S,1,H,W), by the CPU engine; options:
    // precision (fp32, or bf16 on AVX512_BF16 CPUs), instruction-set cap, memory bound.
    // Const and thread-safe; the result does not depend on the thread count.
    void forward(const float* query, const float* support_images, const float* support_labels, int64_t B, int64_t S,
                 int64_t H, int64_t W, float* logits, const engine::Options& options = {}) const;

    // The same on Eigen tensors (row-major, PyTorch shapes).
    Tensor4 forward(const Tensor4& query, const Tensor5& support_images, const Tensor5& support_labels,
                    const engine::Options& options = {}) const {
        const auto& q = query.dimensions();
        const auto& si = support_images.dimensions();
        const auto& sl = support_labels.dimensions();
        if (q[1] != 1) throw Error("query must be (B,1,H,W), got channel count " + std::to_string(q[1]));
        for (const auto* d : {&si, &sl})
            if ((*d)[0] != q[0] || (*d)[2] != 1 || (*d)[3] != q[2] || (*d)[4] != q[3])
                throw Error("supports must be (B,S,1,H,W) matching the query (" + std::to_string(q[0]) + ",1," +
                            std::to_string(q[2]) + "," + std::to_string(q[3]) + "), got (" + std::to_string((*d)[0]) +
                            "," + std::to_string((*d)[1]) + "," + std::to_string((*d)[2]) + "," +
                            std::to_string((*d)[3]) + "," + std::to_string((*d)[4]) + ")");
        if (si[1] != sl[1]) throw Error("support images and labels differ in support size");
        Tensor4 out(q[0], 1, q[2], q[3]);
        forward(query.data(), support_images.data(), support_labels.data(), q[0], si[1], q[2], q[3], out.data(), options);
        return out;
    }

    // The readable forward pass, op by op as in the reference model (core/reference.hpp), in
    // scalar type T (double is the oracle). Optionally reports every CrossBlock's outputs.
    template <class T>
    std::vector<T> forward_reference(const float* query, const float* support_images, const float* support_labels,
                                     int64_t B, int64_t S, int64_t H, int64_t W,
                                     const BlockObserver& observe = nullptr) const {
        check_inputs(query, support_images, support_labels, B, S, H, W);
        const std::vector<ParamInfo> layout = param_layout(config());
        std::vector<T> params;
        params.reserve(size_t(parameter_count()));
        for (const Conv* c : net_.convs()) {
            params.insert(params.end(), c->weight.begin(), c->weight.end());
            params.insert(params.end(), c->bias.begin(), c->bias.end());
        }
        Activations<T> act;
        reference_forward(config(), layout, params.data(), query, support_images, support_labels, B, S, H, W, act,
                          /*split=*/false, /*fast=*/nullptr, /*all_support_outputs=*/bool(observe));
        if (observe) {
            const int64_t L = config().levels();
            for (size_t k = 0; k < act.blocks.size(); ++k) {
                const BlockActivations<T>& a = act.blocks[k];
                const std::string module = int64_t(k) < L ? "enc_blocks." + std::to_string(k)
                                                          : "dec_blocks." + std::to_string(int64_t(k) - L);
                observe(module, to_tensor(a.tout, {B, 1, a.g, a.h, a.w}), to_tensor(a.vout, {B, S, a.g, a.h, a.w}));
            }
        }
        return std::move(act.logits);
    }

private:
    template <class T>
    static Tensor to_tensor(const std::vector<T>& v, std::vector<int64_t> shape) {
        Tensor t(std::move(shape));
        std::copy(v.begin(), v.end(), t.data.begin());
        return t;
    }

    Network net_;
    // The engine's packed weights and per-call workspaces, shared by copies of the model.
    std::shared_ptr<engine::Cache> engine_;

    friend class engine::Cache;
    friend const std::shared_ptr<engine::Cache>& engine_cache(const Model& m);
};

// The engine's cache of `m` (cpu/engine.hpp).
inline const std::shared_ptr<engine::Cache>& engine_cache(const Model& m) { return m.engine_; }

}  // namespace universeg
