// universeg/tensor.hpp - the few types every layer shares: Error, Tensor, StateDict,
// and the float conversions that checkpoints need (fp16, bf16).
//
// Tensor is deliberately plain: a row-major float32 buffer with a dynamic shape, the
// exchange format between the io layer (checkpoints, .npy, safetensors) and the model.
// The math itself runs on raw pointers with explicit shapes (see ops.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace universeg {

// Every failure the library reports on bad input is an Error with a message meant for a
// person: it names the file, tensor or argument at fault.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Refuses element counts that overflow or exceed `cap` (malicious headers declare
// terabytes; nothing is allocated before this check passes).
inline int64_t checked_numel(const std::vector<int64_t>& shape, int64_t cap, const std::string& what) {
    int64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) throw Error(what + ": negative dimension " + std::to_string(d));
        if (d != 0 && n > cap / d) throw Error(what + ": element count exceeds the limit of " + std::to_string(cap));
        n *= d;
    }
    return n;
}

inline std::string shape_string(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;  // row-major, size == numel()
    // The element type in the file it was read from ("float16", ...; `universeg info` shows it):
    // the loaders convert every floating type to float32.
    std::string stored_dtype = "float32";

    Tensor() = default;
    explicit Tensor(std::vector<int64_t> s, float fill = 0.0f)
        : shape(std::move(s)), data(size_t(checked_numel(shape, INT64_MAX, "tensor")), fill) {}

    int64_t numel() const { return int64_t(data.size()); }
    int64_t dim() const { return int64_t(shape.size()); }
    int64_t size(int i) const { return shape.at(size_t(i < 0 ? i + dim() : i)); }
    float* ptr() { return data.data(); }
    const float* ptr() const { return data.data(); }
};

// Parameter name -> tensor, e.g. "enc_blocks.0.cross.cross_conv.weight".
using StateDict = std::map<std::string, Tensor>;

inline const Tensor& require_tensor(const StateDict& sd, const std::string& key) {
    auto it = sd.find(key);
    if (it == sd.end()) throw Error("state dict has no tensor '" + key + "'");
    return it->second;
}

// IEEE binary16 <-> float32, exact for every half value; rounding to nearest even on the way back.
inline float half_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal half: renormalise
        int e = -1;
        do { ++e; mant <<= 1; } while (!(mant & 0x400u));
        bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, absx = x & 0x7FFFFFFFu;
    if (absx >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (absx > 0x7F800000u ? 0x200u : 0u));
    if (absx >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // rounds to >= 65520: overflow to inf
    if (absx < 0x38800000u) {                                   // result is subnormal or zero
        if (absx < 0x33000000u) return uint16_t(sign);
        uint32_t e = absx >> 23, m = (absx & 0x7FFFFFu) | 0x800000u, shift = 126 - e;
        uint32_t half_m = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half_m & 1u))) ++half_m;
        return uint16_t(sign | half_m);
    }
    uint32_t r = absx + 0xFFFu + ((absx >> 13) & 1u);  // round to nearest even on the dropped 13 bits
    return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

inline float bf16_to_float(uint16_t b) {
    uint32_t bits = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t float_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((x >> 16) | 0x40u);  // keep NaN a NaN
    return uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace universeg
