// universeg/model.hpp - the UniverSeg architecture, built from a state dict.
//
//   universeg::Model model(state_dict);          // architecture inferred from tensor shapes
//   model.forward(query, support_images, support_labels, B, S, H, W, logits);
//
// Inputs (row-major, PyTorch layout): query (B,1,H,W), support images and labels (B,S,1,H,W),
// images in [0,1], labels 0/1. Output: logits (B,1,H,W); probability = sigmoid(logit).
//
// The network (Butoi et al., ICCV 2023): a U-Net whose every stage is a CrossBlock acting on
// a target T (the query's features) and a support set V (one feature map per support pair).
//   CrossBlock: Z_i = CrossConv(T, V_i) = conv(concat(T, V_i))          (no activation)
//               T'  = LeakyReLU(conv_target(mean_i Z_i))
//               V'_i = LeakyReLU(conv_support(Z_i))
//   encoder: block, keep (T,V) as skip, 2x2 max pool ... (no pool after the last block)
//   decoder: up x2 both, concat the skip (upsampled channels first), block ...
//   output:  1x1 conv on T.
// Config describes the shapes; Model owns the weights. Both are shared with other backends
// (see cuda.cuh), which is why the weights are stored in PyTorch's layout.
#pragma once

#include "ops.hpp"
#include "tensor.hpp"

#include <unsupported/Eigen/CXX11/Tensor>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace universeg {

class Model;
// The fast forward pass (engine.hpp, included at the end of this header).
namespace engine {
struct Options;
class State;
inline std::shared_ptr<State> make_state();
inline void forward(const Model& m, State& state, const float* query, const float* support_images,
                    const float* support_labels, int64_t B, int64_t S, int64_t H, int64_t W, float* logits,
                    const Options& opt);
}  // namespace engine

// A CrossBlock's feature counts: the cross conv's outputs and the target/support convs' outputs.
struct BlockFeatures {
    int64_t cross = 0, conv = 0;
    bool operator==(const BlockFeatures& o) const { return cross == o.cross && conv == o.conv; }
};

struct Config {
    std::vector<BlockFeatures> encoder, decoder;
    int64_t target_in = 1, support_in = 2;  // query image; support image + label

    // v1 of the paper: encoder [64,64,64,64], decoder [64,64,64].
    static Config v1() { return from_encoder({{64, 64}, {64, 64}, {64, 64}, {64, 64}}); }

    // The decoder mirrors the encoder without its last entry (enc[-2::-1]).
    static Config from_encoder(std::vector<BlockFeatures> enc) {
        Config c;
        c.encoder = std::move(enc);
        for (int64_t k = int64_t(c.encoder.size()) - 2; k >= 0; --k) c.decoder.push_back(c.encoder[size_t(k)]);
        return c;
    }

    int64_t levels() const { return int64_t(encoder.size()); }
    // H and W must be multiples of this: one halving per encoder block but the last.
    int64_t size_multiple() const { return int64_t(1) << (levels() - 1); }

    // Input channels (target, support) of encoder block k.
    int64_t encoder_target_in(int64_t k) const { return k == 0 ? target_in : encoder[size_t(k - 1)].conv; }
    int64_t encoder_support_in(int64_t k) const { return k == 0 ? support_in : encoder[size_t(k - 1)].conv; }
    // Input channels of decoder block k, the same for target and support: upsampled + skip.
    int64_t decoder_in(int64_t k) const {
        const int64_t prev = k == 0 ? encoder.back().conv : decoder[size_t(k - 1)].conv;
        return prev + encoder[size_t(levels() - 2 - k)].conv;
    }
    int64_t output_in() const { return decoder.empty() ? encoder.back().conv : decoder.back().conv; }

    // "[[16,8],[24,16],32]" style, as the reference's encoder_blocks.
    std::string to_string() const {
        auto list = [](const std::vector<BlockFeatures>& v) {
            std::string s = "[";
            for (size_t i = 0; i < v.size(); ++i) {
                s += i ? "," : "";
                s += v[i].cross == v[i].conv ? std::to_string(v[i].cross)
                                             : "[" + std::to_string(v[i].cross) + "," + std::to_string(v[i].conv) + "]";
            }
            return s + "]";
        };
        return "encoder " + list(encoder) + " decoder " + list(decoder);
    }
};

// One convolution's parameters, PyTorch layout: weight (out, in, k, k), bias (out).
struct Conv {
    int64_t out = 0, in = 0, k = 0;
    std::vector<float> weight, bias;
};

struct CrossBlock {
    int64_t target_in = 0, support_in = 0;
    BlockFeatures features;
    Conv cross;    // (cross, target_in + support_in, 3, 3): target channels first
    Conv target;   // (conv, cross, 3, 3)
    Conv support;  // (conv, cross, 3, 3)
};

// Called by the reference forward after every CrossBlock with its outputs, named after the
// reference model's modules ("enc_blocks.0", ..., "dec_blocks.2"): target (B,1,C,H,W) and
// support (B,S,C,H,W). For finding the first layer where two implementations depart.
using BlockObserver = std::function<void(const std::string& module, const Tensor& target, const Tensor& support)>;

namespace detail {

inline const Tensor& require(const StateDict& sd, const std::string& key) {
    auto it = sd.find(key);
    if (it == sd.end()) throw Error("state dict has no tensor '" + key + "'");
    return it->second;
}

inline Conv conv_from(const StateDict& sd, const std::string& prefix) {
    const Tensor& w = require(sd, prefix + ".weight");
    const Tensor& b = require(sd, prefix + ".bias");
    if (w.dim() != 4 || w.shape[2] != w.shape[3] || w.shape[2] % 2 == 0 || w.shape[0] < 1 || w.shape[1] < 1)
        throw Error("'" + prefix + ".weight' has shape " + shape_string(w.shape) +
                    ", expected (out, in, k, k) with odd k");
    if (b.dim() != 1 || b.shape[0] != w.shape[0])
        throw Error("'" + prefix + ".bias' has shape " + shape_string(b.shape) + ", expected (" +
                    std::to_string(w.shape[0]) + ",)");
    for (const Tensor* t : {&w, &b})
        for (float v : t->data)
            if (!std::isfinite(v)) throw Error("'" + prefix + "' holds a non-finite value");
    return {w.shape[0], w.shape[1], w.shape[2], w.data, b.data};
}

inline void expect_shape(const Conv& c, int64_t out, int64_t in, int64_t k, const std::string& name) {
    if (c.out != out || c.in != in || c.k != k)
        throw Error("'" + name + ".weight' has shape " + shape_string({c.out, c.in, c.k, c.k}) + ", expected " +
                    shape_string({out, in, k, k}));
}

inline int64_t count_blocks(const StateDict& sd, const std::string& prefix) {
    int64_t n = 0;
    while (sd.count(prefix + std::to_string(n) + ".cross.cross_conv.weight")) ++n;
    return n;
}

inline CrossBlock block_from(const StateDict& sd, const std::string& prefix, int64_t target_in, int64_t support_in) {
    CrossBlock b;
    b.target_in = target_in;
    b.support_in = support_in;
    b.cross = conv_from(sd, prefix + ".cross.cross_conv");
    b.target = conv_from(sd, prefix + ".target.vmapped.conv");
    b.support = conv_from(sd, prefix + ".support.vmapped.conv");
    b.features = {b.cross.out, b.target.out};
    expect_shape(b.cross, b.features.cross, target_in + support_in, 3, prefix + ".cross.cross_conv");
    expect_shape(b.target, b.features.conv, b.features.cross, 3, prefix + ".target.vmapped.conv");
    expect_shape(b.support, b.features.conv, b.features.cross, 3, prefix + ".support.vmapped.conv");
    return b;
}

}  // namespace detail

class Model {
public:
    using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;
    using Tensor5 = Eigen::Tensor<float, 5, Eigen::RowMajor>;

    // Builds the model from a state dict with the reference's key names; the architecture is
    // read off the tensor shapes. Throws Error naming the first missing or mis-shaped tensor.
    explicit Model(const StateDict& sd) {
        const int64_t n_enc = detail::count_blocks(sd, "enc_blocks."), n_dec = detail::count_blocks(sd, "dec_blocks.");
        if (n_enc == 0) throw Error("state dict has no 'enc_blocks.0.cross.cross_conv.weight': not a UniverSeg model");
        // Each block but the last halves the resolution: beyond 16 no image could pass (and
        // size_multiple() would overflow).
        if (n_enc > 16) throw Error("state dict has " + std::to_string(n_enc) + " encoder blocks, more than the 16 supported");
        if (n_dec != n_enc - 1)
            throw Error("state dict has " + std::to_string(n_enc) + " encoder blocks and " + std::to_string(n_dec) +
                        " decoder blocks; UniverSeg has one decoder block fewer than encoder blocks");
        // Feature counts first (they fix every block's input channels), then full shape checks.
        auto features = [&sd](const std::string& p) {
            const Tensor& cross = detail::require(sd, p + ".cross.cross_conv.weight");
            const Tensor& conv = detail::require(sd, p + ".target.vmapped.conv.weight");
            if (cross.dim() < 1 || conv.dim() < 1) throw Error("'" + p + "' has a scalar weight");
            return BlockFeatures{cross.shape[0], conv.shape[0]};
        };
        for (int64_t k = 0; k < n_enc; ++k) config_.encoder.push_back(features("enc_blocks." + std::to_string(k)));
        for (int64_t k = 0; k < n_dec; ++k) config_.decoder.push_back(features("dec_blocks." + std::to_string(k)));
        for (int64_t k = 0; k < n_enc; ++k)
            encoder_.push_back(detail::block_from(sd, "enc_blocks." + std::to_string(k), config_.encoder_target_in(k),
                                                  config_.encoder_support_in(k)));
        for (int64_t k = 0; k < n_dec; ++k)
            decoder_.push_back(detail::block_from(sd, "dec_blocks." + std::to_string(k), config_.decoder_in(k),
                                                  config_.decoder_in(k)));
        out_ = detail::conv_from(sd, "out_conv.conv");
        detail::expect_shape(out_, 1, config_.output_in(), 1, "out_conv.conv");
        const size_t expected = 6 * size_t(n_enc + n_dec) + 2;
        size_t used = 0;
        for (const auto& kv : sd) used += kv.first.rfind("enc_blocks.", 0) == 0 || kv.first.rfind("dec_blocks.", 0) == 0 ||
                                          kv.first.rfind("out_conv.", 0) == 0;
        if (used != expected)
            throw Error("state dict has " + std::to_string(used) + " UniverSeg tensors, expected " +
                        std::to_string(expected) + " for " + config_.to_string());
    }

    const Config& config() const { return config_; }
    const std::vector<CrossBlock>& encoder() const { return encoder_; }
    const std::vector<CrossBlock>& decoder() const { return decoder_; }
    const Conv& out_conv() const { return out_; }

    int64_t parameter_count() const {
        int64_t n = int64_t(out_.weight.size() + out_.bias.size());
        for (const auto* blocks : {&encoder_, &decoder_})
            for (const CrossBlock& b : *blocks)
                for (const Conv* c : {&b.cross, &b.target, &b.support}) n += int64_t(c->weight.size() + c->bias.size());
        return n;
    }

    // The weights under the reference's key names (for writing safetensors).
    StateDict state_dict() const {
        StateDict sd;
        auto put = [&sd](const std::string& name, const Conv& c) {
            sd[name + ".weight"] = Tensor({c.out, c.in, c.k, c.k});
            sd[name + ".weight"].data = c.weight;
            sd[name + ".bias"] = Tensor({c.out});
            sd[name + ".bias"].data = c.bias;
        };
        for (const char* part : {"enc_blocks.", "dec_blocks."}) {
            const auto& blocks = part[0] == 'e' ? encoder_ : decoder_;
            for (size_t k = 0; k < blocks.size(); ++k) {
                const std::string p = part + std::to_string(k);
                put(p + ".cross.cross_conv", blocks[k].cross);
                put(p + ".target.vmapped.conv", blocks[k].target);
                put(p + ".support.vmapped.conv", blocks[k].support);
            }
        }
        put("out_conv.conv", out_);
        return sd;
    }

    // Throws Error unless the inputs are a valid problem for this model: S >= 1, B >= 1,
    // H and W positive multiples of config().size_multiple(), all values finite.
    void check_inputs(const float* query, const float* support_images, const float* support_labels, int64_t B,
                      int64_t S, int64_t H, int64_t W) const {
        const int64_t m = config_.size_multiple();
        if (B < 1) throw Error("batch size must be at least 1, got " + std::to_string(B));
        if (S < 1) throw Error("support size must be at least 1, got " + std::to_string(S));
        if (H < 1 || W < 1 || H % m || W % m)
            throw Error("image size " + std::to_string(H) + "x" + std::to_string(W) + " is not a positive multiple of " +
                        std::to_string(m) + " (this model halves the resolution " + std::to_string(config_.levels() - 1) +
                        " times)");
        auto finite = [](const float* p, int64_t n, const char* what) {
            for (int64_t i = 0; i < n; ++i)
                if (!std::isfinite(p[i])) throw Error(std::string(what) + " holds a non-finite value at index " + std::to_string(i));
        };
        finite(query, B * H * W, "query");
        finite(support_images, B * S * H * W, "support images");
        finite(support_labels, B * S * H * W, "support labels");
    }

    // logits (B,1,H,W) for query (B,1,H,W) and supports (B,S,1,H,W). Const and thread-safe.
    // Runs the fast engine (engine.hpp): fp32, the best kernels this CPU supports.
    void forward(const float* query, const float* support_images, const float* support_labels, int64_t B, int64_t S,
                 int64_t H, int64_t W, float* logits) const;

    // The same with options: precision (fp32, or bf16 on AVX512_BF16 CPUs), instruction-set cap.
    void forward(const float* query, const float* support_images, const float* support_labels, int64_t B, int64_t S,
                 int64_t H, int64_t W, float* logits, const engine::Options& options) const {
        check_inputs(query, support_images, support_labels, B, S, H, W);
        engine::forward(*this, *engine_, query, support_images, support_labels, B, S, H, W, logits, options);
    }

    // The same on Eigen tensors (row-major, PyTorch shapes).
    Tensor4 forward(const Tensor4& query, const Tensor5& support_images, const Tensor5& support_labels) const {
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
        forward(query.data(), support_images.data(), support_labels.data(), q[0], si[1], q[2], q[3], out.data());
        return out;
    }

    // The readable forward pass, op by op as in the reference model, in scalar type T
    // (double is the oracle). Optionally reports every CrossBlock's outputs.
    template <class T>
    std::vector<T> forward_reference(const float* query, const float* support_images, const float* support_labels,
                                     int64_t B, int64_t S, int64_t H, int64_t W,
                                     const BlockObserver& observe = nullptr) const {
        const int64_t HW = H * W;
        std::vector<T> target(query, query + B * HW), support(size_t(B * S * 2 * HW));
        for (int64_t n = 0; n < B * S; ++n) {  // support pair = (image, label) on channels
            std::copy(support_images + n * HW, support_images + (n + 1) * HW, support.begin() + n * 2 * HW);
            std::copy(support_labels + n * HW, support_labels + (n + 1) * HW, support.begin() + (n * 2 + 1) * HW);
        }
        struct Skip {
            std::vector<T> target, support;
            int64_t channels;
        };
        std::vector<Skip> skips;
        int64_t h = H, w = W;
        for (size_t k = 0; k < encoder_.size(); ++k) {
            cross_block_reference(encoder_[k], target, support, B, S, h, w);
            const int64_t c = encoder_[k].features.conv;
            if (observe) observe("enc_blocks." + std::to_string(k), to_tensor(target, {B, 1, c, h, w}), to_tensor(support, {B, S, c, h, w}));
            if (k + 1 == encoder_.size()) break;
            skips.push_back({target, support, c});
            std::vector<T> t(size_t(B * c * h * w / 4)), v(size_t(B * S * c * h * w / 4));
            maxpool2x2_forward(t.data(), target.data(), B * c, h, w);
            maxpool2x2_forward(v.data(), support.data(), B * S * c, h, w);
            target.swap(t);
            support.swap(v);
            h /= 2;
            w /= 2;
        }
        int64_t c = encoder_.back().features.conv;
        for (size_t k = 0; k < decoder_.size(); ++k) {
            const Skip& skip = skips.back();
            target = upsample_concat(target, skip.target, B, c, skip.channels, h, w);
            support = upsample_concat(support, skip.support, B * S, c, skip.channels, h, w);
            h *= 2;
            w *= 2;
            skips.pop_back();
            cross_block_reference(decoder_[k], target, support, B, S, h, w);
            c = decoder_[k].features.conv;
            if (observe) observe("dec_blocks." + std::to_string(k), to_tensor(target, {B, 1, c, h, w}), to_tensor(support, {B, S, c, h, w}));
        }
        std::vector<T> logits(size_t(B * HW));
        const std::vector<T> ow(out_.weight.begin(), out_.weight.end()), ob(out_.bias.begin(), out_.bias.end());
        conv2d_forward(logits.data(), target.data(), ow.data(), ob.data(), B, c, int64_t(1), H, W, int64_t(1));
        return logits;
    }

private:
    template <class T>
    static Tensor to_tensor(const std::vector<T>& v, std::vector<int64_t> shape) {
        Tensor t(std::move(shape));
        std::copy(v.begin(), v.end(), t.data.begin());
        return t;
    }

    // [up(x) (N, c, 2h, 2w), skip (N, cs, 2h, 2w)] on channels.
    template <class T>
    static std::vector<T> upsample_concat(const std::vector<T>& x, const std::vector<T>& skip, int64_t N, int64_t c,
                                          int64_t cs, int64_t h, int64_t w) {
        std::vector<T> up(size_t(N * c * 4 * h * w)), out(size_t(N * (c + cs) * 4 * h * w));
        upsample2x_forward(up.data(), x.data(), N * c, h, w);
        concat_channels_forward(out.data(), up.data(), skip.data(), N, c, cs, 4 * h * w);
        return out;
    }

    // One CrossBlock, in place: target (B, ct, h, w) -> (B, g, h, w), support (B,S,cs,h,w) -> (B,S,g,h,w).
    template <class T>
    static void cross_block_reference(const CrossBlock& blk, std::vector<T>& target, std::vector<T>& support, int64_t B,
                                      int64_t S, int64_t h, int64_t w) {
        const int64_t HW = h * w, f = blk.features.cross, g = blk.features.conv;
        auto cast = [](const std::vector<float>& v) { return std::vector<T>(v.begin(), v.end()); };
        const std::vector<T> cw = cast(blk.cross.weight), cb = cast(blk.cross.bias), tw = cast(blk.target.weight),
                             tb = cast(blk.target.bias), sw = cast(blk.support.weight), sb = cast(blk.support.bias);
        std::vector<T> z(size_t(B * S * f * HW)), zmean(size_t(B * f * HW));
        cross_conv_forward(z.data(), target.data(), support.data(), cw.data(), cb.data(), B, S, blk.target_in,
                           blk.support_in, f, h, w, int64_t(3));
        mean_supports_forward(zmean.data(), z.data(), B, S, f * HW);
        target.assign(size_t(B * g * HW), T(0));
        support.assign(size_t(B * S * g * HW), T(0));
        conv2d_forward(target.data(), zmean.data(), tw.data(), tb.data(), B, f, g, h, w, int64_t(3));
        conv2d_forward(support.data(), z.data(), sw.data(), sb.data(), B * S, f, g, h, w, int64_t(3));
        leaky_relu_forward(target.data(), target.data(), int64_t(target.size()));
        leaky_relu_forward(support.data(), support.data(), int64_t(support.size()));
    }

    Config config_;
    std::vector<CrossBlock> encoder_, decoder_;
    Conv out_;
    // Packed weights and reusable workspaces of the fast forward, shared by copies of the model.
    std::shared_ptr<engine::State> engine_ = engine::make_state();
};

}  // namespace universeg

#include "../cpu/engine.hpp"

namespace universeg {

inline void Model::forward(const float* query, const float* support_images, const float* support_labels, int64_t B,
                           int64_t S, int64_t H, int64_t W, float* logits) const {
    forward(query, support_images, support_labels, B, S, H, W, logits, engine::Options{});
}

}  // namespace universeg
