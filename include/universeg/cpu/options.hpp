// universeg/cpu/options.hpp - what a caller may choose about a CPU forward pass: precision,
// instruction set, algorithm, a memory bound. Light on purpose: core/model.hpp includes it.
#pragma once

#include "../core/tensor.hpp"

#include <string>

namespace universeg {
namespace kernels {

// Table::isa values, in order of preference. neon (AArch64's 128-bit SIMD) ranks beside sse2;
// a program has one or the other. amx: the avx512 kernels with the bf16 Winograd products on
// AMX tiles.
enum class Isa : int { scalar = 0, neon = 1, sse2 = 2, avx2 = 3, avx512 = 4, amx = 5 };

// The fp32 products' arithmetic ("bf16": products of bf16-rounded operands, fp32 sums).
enum class Precision { fp32, bf16 };

inline const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::neon: return "neon";
        case Isa::sse2: return "sse2";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
        case Isa::amx: return "amx";
    }
    return "?";
}

inline Isa parse_isa(const std::string& s, const std::string& what) {
    for (Isa isa : {Isa::scalar, Isa::neon, Isa::sse2, Isa::avx2, Isa::avx512, Isa::amx})
        if (s == isa_name(isa)) return isa;
    throw Error(what + ": unknown instruction set '" + s + "' (expected scalar, neon, sse2, avx2, avx512 or amx)");
}

}  // namespace kernels

namespace engine {

using kernels::Precision;

struct Options {
    Precision precision = Precision::fp32;
    kernels::Isa isa = kernels::Isa::amx;  // highest instruction set to use (UNIVERSEG_ARCH caps it too)
    bool winograd = true;                  // false: direct convolution everywhere (for comparisons)
    // > 0: the packed weights and the workspace stay under this many MiB; supports then go
    // through the network in groups (bit-identical logits, more time: see cpu/engine.hpp).
    double max_memory_mb = 0;
};

}  // namespace engine
}  // namespace universeg
