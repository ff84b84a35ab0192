// universeg/core/network.hpp - the one description of the UniverSeg network: its architecture
// (Config), the list of its convolutions with their state-dict names and shapes (conv_specs),
// and its weights (Network). The CPU engine, the reference forward, training and the CUDA
// backend all read it; nothing here needs Eigen or a compiled kernel.
//
// The network (Butoi et al., ICCV 2023): a U-Net whose every stage is a CrossBlock acting on a
// target T (the query's features) and a support set V (one feature map per support pair).
//   CrossBlock: Z_i = CrossConv(T, V_i) = conv(concat(T, V_i))          (no activation)
//               T'  = LeakyReLU(conv_target(mean_i Z_i))
//               V'_i = LeakyReLU(conv_support(Z_i))
//   encoder: block, keep (T,V) as skip, 2x2 max pool ... (no pool after the last block)
//   decoder: up x2 both, concat the skip (upsampled channels first), block ...
//   output:  1x1 conv on T.
#pragma once

#include "tensor.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace universeg {

// A CrossBlock's feature counts: the cross conv's outputs and the target/support convs' outputs.
struct BlockFeatures {
    int64_t cross = 0, conv = 0;
    bool operator==(const BlockFeatures& o) const { return cross == o.cross && conv == o.conv; }
    bool operator!=(const BlockFeatures& o) const { return !(*this == o); }
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

    // "encoder [32,32,32,32] decoder [32,32,32]"; entries [cross,conv] where the two differ.
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

// "[32,32,32,32]", "[[16,8],[24,16],32]" (entries n or [cross, conv]: the encoder, which the
// decoder mirrors), or "v1". Errors name `what` (an option, a file).
inline Config parse_config(const std::string& text, const std::string& what = "configuration") {
    if (text == "v1") return Config::v1();
    auto fail = [&](const std::string& why) -> Error {
        return Error(what + " '" + text + "': " + why + " (expected e.g. [32,32,32,32] or [[16,8],[24,16],32])");
    };
    std::vector<BlockFeatures> enc;
    size_t i = 0;
    auto skip = [&] { while (i < text.size() && text[i] == ' ') ++i; };
    auto number = [&]() -> int64_t {
        skip();
        size_t j = i;
        while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
        if (j == i || j - i > 6) throw fail("expected a feature count at position " + std::to_string(i));
        const int64_t v = std::stoll(text.substr(i, j - i));
        if (v < 1 || v > 4096) throw fail("feature counts must be in [1, 4096]");
        i = j;
        return v;
    };
    auto expect = [&](char c) {
        skip();
        if (i >= text.size() || text[i] != c) throw fail(std::string("expected '") + c + "' at position " + std::to_string(i));
        ++i;
    };
    expect('[');
    for (;;) {
        skip();
        if (i < text.size() && text[i] == '[') {
            ++i;
            const int64_t a = number();
            expect(',');
            const int64_t b = number();
            expect(']');
            enc.push_back({a, b});
        } else {
            const int64_t a = number();
            enc.push_back({a, a});
        }
        skip();
        if (i < text.size() && text[i] == ',') {
            ++i;
            continue;
        }
        expect(']');
        break;
    }
    skip();
    if (i != text.size()) throw fail("trailing characters");
    if (enc.size() > 8) throw fail("at most 8 encoder blocks");
    return Config::from_encoder(enc);
}

// One convolution of the network: its state-dict name (the reference model's module path) and
// its weight's shape (out, in, k, k); the bias is (out).
struct ConvSpec {
    std::string name;
    int64_t out = 0, in = 0, k = 0;
    int64_t weights() const { return out * in * k * k; }
};

// Every convolution of a network of this configuration, in its one fixed order: per CrossBlock
// (encoder blocks, then decoder blocks) the cross conv, the target conv and the support conv,
// then the 1x1 output conv. Loading, saving, training's flat parameters and the CUDA weight
// layout all follow it.
inline std::vector<ConvSpec> conv_specs(const Config& c) {
    std::vector<ConvSpec> out;
    auto block = [&out](const std::string& p, int64_t ct, int64_t cs, BlockFeatures f) {
        out.push_back({p + ".cross.cross_conv", f.cross, ct + cs, 3});
        out.push_back({p + ".target.vmapped.conv", f.conv, f.cross, 3});
        out.push_back({p + ".support.vmapped.conv", f.conv, f.cross, 3});
    };
    for (int64_t k = 0; k < c.levels(); ++k)
        block("enc_blocks." + std::to_string(k), c.encoder_target_in(k), c.encoder_support_in(k), c.encoder[size_t(k)]);
    for (size_t k = 0; k < c.decoder.size(); ++k)
        block("dec_blocks." + std::to_string(k), c.decoder_in(int64_t(k)), c.decoder_in(int64_t(k)), c.decoder[k]);
    out.push_back({"out_conv.conv", 1, c.output_in(), 1});
    return out;
}

// Where each parameter tensor sits in a flat buffer of all of them (training, the reference).
struct ParamInfo {
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0, numel = 0;
};

// Every parameter tensor in one flat buffer: conv_specs order, each conv's weight then bias.
inline std::vector<ParamInfo> param_layout(const Config& c) {
    std::vector<ParamInfo> out;
    int64_t offset = 0;
    for (const ConvSpec& s : conv_specs(c)) {
        out.push_back({s.name + ".weight", {s.out, s.in, s.k, s.k}, offset, s.weights()});
        offset += s.weights();
        out.push_back({s.name + ".bias", {s.out}, offset, s.out});
        offset += s.out;
    }
    return out;
}

inline int64_t param_count(const std::vector<ParamInfo>& layout) {
    return layout.empty() ? 0 : layout.back().offset + layout.back().numel;
}


inline int64_t parameter_count(const Config& c) {
    int64_t n = 0;
    for (const ConvSpec& s : conv_specs(c)) n += s.weights() + s.out;
    return n;
}

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

// The weights of a whole network, in the order and shapes of conv_specs(config).
struct Network {
    Config config;
    std::vector<CrossBlock> encoder, decoder;
    Conv out;

    // A network of this configuration with every weight and bias zero (to fill in by hand).
    static Network shaped(const Config& c) {
        Network net;
        net.config = c;
        const std::vector<ConvSpec> specs = conv_specs(c);
        auto conv = [&specs](size_t i) {
            const ConvSpec& s = specs[i];
            return Conv{s.out, s.in, s.k, std::vector<float>(size_t(s.weights())), std::vector<float>(size_t(s.out))};
        };
        const int64_t L = c.levels(), blocks = L + int64_t(c.decoder.size());
        for (int64_t k = 0; k < blocks; ++k) {
            CrossBlock b;
            b.cross = conv(size_t(3 * k)), b.target = conv(size_t(3 * k + 1)), b.support = conv(size_t(3 * k + 2));
            b.features = k < L ? c.encoder[size_t(k)] : c.decoder[size_t(k - L)];
            b.target_in = k < L ? c.encoder_target_in(k) : c.decoder_in(k - L);
            b.support_in = k < L ? c.encoder_support_in(k) : b.target_in;
            (k < L ? net.encoder : net.decoder).push_back(std::move(b));
        }
        net.out = conv(specs.size() - 1);
        return net;
    }

    // The convolutions in conv_specs order.
    std::vector<const Conv*> convs() const {
        std::vector<const Conv*> v;
        for (const auto* blocks : {&encoder, &decoder})
            for (const CrossBlock& b : *blocks) v.insert(v.end(), {&b.cross, &b.target, &b.support});
        v.push_back(&out);
        return v;
    }
    std::vector<Conv*> convs() {
        std::vector<Conv*> v;
        for (auto* blocks : {&encoder, &decoder})
            for (CrossBlock& b : *blocks) v.insert(v.end(), {&b.cross, &b.target, &b.support});
        v.push_back(&out);
        return v;
    }

    int64_t parameter_count() const { return universeg::parameter_count(config); }

    // The weights under the reference's key names (for writing safetensors).
    StateDict state_dict() const {
        StateDict sd;
        const std::vector<ConvSpec> specs = conv_specs(config);
        const std::vector<const Conv*> cs = convs();
        for (size_t i = 0; i < specs.size(); ++i) {
            Tensor w({cs[i]->out, cs[i]->in, cs[i]->k, cs[i]->k}), b({cs[i]->out});
            w.data = cs[i]->weight;
            b.data = cs[i]->bias;
            sd[specs[i].name + ".weight"] = std::move(w);
            sd[specs[i].name + ".bias"] = std::move(b);
        }
        return sd;
    }

    // Builds the network from a state dict with the reference's key names; the architecture is
    // read off the tensor shapes. Throws Error naming the first missing or mis-shaped tensor.
    static Network from_state_dict(const StateDict& sd) {
        const int64_t n_enc = count_blocks(sd, "enc_blocks."), n_dec = count_blocks(sd, "dec_blocks.");
        if (n_enc == 0) throw Error("state dict has no 'enc_blocks.0.cross.cross_conv.weight': not a UniverSeg model");
        // Each block but the last halves the resolution: beyond 16 no image could pass (and
        // size_multiple() would overflow).
        if (n_enc > 16) throw Error("state dict has " + std::to_string(n_enc) + " encoder blocks, more than the 16 supported");
        if (n_dec != n_enc - 1)
            throw Error("state dict has " + std::to_string(n_enc) + " encoder blocks and " + std::to_string(n_dec) +
                        " decoder blocks; UniverSeg has one decoder block fewer than encoder blocks");
        // Feature counts first (they fix every block's input channels), then every shape.
        Network net;
        auto features = [&sd](const std::string& p) {
            const Tensor& cross = require_tensor(sd, p + ".cross.cross_conv.weight");
            const Tensor& conv = require_tensor(sd, p + ".target.vmapped.conv.weight");
            if (cross.dim() < 1 || conv.dim() < 1) throw Error("'" + p + "' has a scalar weight");
            return BlockFeatures{cross.shape[0], conv.shape[0]};
        };
        for (int64_t k = 0; k < n_enc; ++k) net.config.encoder.push_back(features("enc_blocks." + std::to_string(k)));
        for (int64_t k = 0; k < n_dec; ++k) net.config.decoder.push_back(features("dec_blocks." + std::to_string(k)));
        const std::vector<ConvSpec> specs = conv_specs(net.config);
        std::vector<Conv> convs;
        for (const ConvSpec& s : specs) convs.push_back(conv_from(sd, s));
        for (int64_t k = 0; k < n_enc + n_dec; ++k) {
            CrossBlock b;
            b.cross = std::move(convs[size_t(3 * k)]);
            b.target = std::move(convs[size_t(3 * k + 1)]);
            b.support = std::move(convs[size_t(3 * k + 2)]);
            b.features = {b.cross.out, b.target.out};
            const int64_t d = k - n_enc;
            b.target_in = k < n_enc ? net.config.encoder_target_in(k) : net.config.decoder_in(d);
            b.support_in = k < n_enc ? net.config.encoder_support_in(k) : net.config.decoder_in(d);
            (k < n_enc ? net.encoder : net.decoder).push_back(std::move(b));
        }
        net.out = std::move(convs.back());
        size_t used = 0;
        for (const auto& kv : sd)
            used += kv.first.rfind("enc_blocks.", 0) == 0 || kv.first.rfind("dec_blocks.", 0) == 0 ||
                    kv.first.rfind("out_conv.", 0) == 0;
        if (used != 2 * specs.size())
            throw Error("state dict has " + std::to_string(used) + " UniverSeg tensors, expected " +
                        std::to_string(2 * specs.size()) + " for " + net.config.to_string());
        return net;
    }

private:
    static int64_t count_blocks(const StateDict& sd, const std::string& prefix) {
        int64_t n = 0;
        while (sd.count(prefix + std::to_string(n) + ".cross.cross_conv.weight")) ++n;
        return n;
    }

    // The weight's shape is checked against the spec first, so a mis-shaped weight is named as
    // such rather than through its bias.
    static Conv conv_from(const StateDict& sd, const ConvSpec& s) {
        const Tensor& w = require_tensor(sd, s.name + ".weight");
        const Tensor& b = require_tensor(sd, s.name + ".bias");
        const std::vector<int64_t> expected{s.out, s.in, s.k, s.k};
        if (w.shape != expected)
            throw Error("'" + s.name + ".weight' has shape " + shape_string(w.shape) + ", expected " + shape_string(expected));
        if (b.shape != std::vector<int64_t>{s.out})
            throw Error("'" + s.name + ".bias' has shape " + shape_string(b.shape) + ", expected (" + std::to_string(s.out) + ",)");
        for (const Tensor* t : {&w, &b})
            for (float v : t->data)
                if (!std::isfinite(v)) throw Error("'" + s.name + "' holds a non-finite value");
        return {s.out, s.in, s.k, w.data, b.data};
    }
};

// Throws Error unless `net` is a complete UniverSeg whose blocks match its config: the channel
// chain of the encoder, the decoder (one block fewer, skips concatenated after the upsampled
// features) and the output conv, every weight and bias of its shape and finite. For networks
// built by hand; from_state_dict() checks as it reads.
inline void check_network(const Network& net) {
    const Config& c = net.config;
    const int64_t L = c.levels();
    if (L < 1) throw Error("the network has no encoder blocks");
    if (int64_t(net.encoder.size()) != L || net.decoder.size() != c.decoder.size() || int64_t(c.decoder.size()) != L - 1)
        throw Error("the network has " + std::to_string(net.encoder.size()) + " encoder and " +
                    std::to_string(net.decoder.size()) + " decoder blocks; its configuration (" + c.to_string() + ") needs " +
                    std::to_string(L) + " and " + std::to_string(L - 1));
    const std::vector<ConvSpec> specs = conv_specs(c);
    const std::vector<const Conv*> convs = net.convs();
    for (size_t i = 0; i < specs.size(); ++i) {
        const ConvSpec& s = specs[i];
        const Conv& v = *convs[i];
        if (v.out != s.out || v.in != s.in || v.k != s.k)
            throw Error(s.name + " has shape " + shape_string({v.out, v.in, v.k, v.k}) + ", expected " +
                        shape_string({s.out, s.in, s.k, s.k}));
        if (int64_t(v.weight.size()) != s.weights() || int64_t(v.bias.size()) != s.out)
            throw Error(s.name + " holds " + std::to_string(v.weight.size()) + " weights and " + std::to_string(v.bias.size()) +
                        " biases for shape " + shape_string({s.out, s.in, s.k, s.k}));
        for (const std::vector<float>* w : {&v.weight, &v.bias})
            for (float x : *w)
                if (!std::isfinite(x)) throw Error(s.name + " holds a non-finite value");
    }
    for (int64_t k = 0; k < L + int64_t(c.decoder.size()); ++k) {
        const CrossBlock& b = k < L ? net.encoder[size_t(k)] : net.decoder[size_t(k - L)];
        const int64_t ti = k < L ? c.encoder_target_in(k) : c.decoder_in(k - L), si = k < L ? c.encoder_support_in(k) : ti;
        const BlockFeatures f = k < L ? c.encoder[size_t(k)] : c.decoder[size_t(k - L)];
        if (b.target_in != ti || b.support_in != si || b.features != f)
            throw Error((k < L ? "enc_blocks." + std::to_string(k) : "dec_blocks." + std::to_string(k - L)) +
                        ": the block takes (" + std::to_string(b.target_in) + ", " +
                        std::to_string(b.support_in) + ") input channels, expected (" + std::to_string(ti) + ", " +
                        std::to_string(si) + ")");
    }
}

}  // namespace universeg
