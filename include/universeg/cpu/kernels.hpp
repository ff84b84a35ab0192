// universeg/cpu/kernels.hpp - the CPU kernels' public side: the Table of kernels of one
// instruction set, the choice of table at run time, the image layout and weight packing.
//
//   const kernels::Table& t = kernels::select();          // the best table this CPU runs
//   kernels::pack_winograd(weight, cout, cin_total, ci0, cin, cout_p, t.nb)   // once per conv
//   t.conv3x3_winograd(args, t0, t1, scratch)              // see cpu/simd.hpp
//
// Every program that includes the headers carries the kernels of every instruction set its
// CPU family has (x86-64: SSE2, AVX2 + FMA, AVX-512 with AVX512_BF16 and AMX; AArch64: NEON;
// elsewhere, or with a compiler other than GCC/Clang: scalar), each compiled under a target
// pragma in a namespace of its own, whatever flags the program is compiled with. select()
// picks the best one that the CPU supports at run time, capped by the environment variable
// UNIVERSEG_ARCH (scalar|sse2|avx2|avx512|amx) or by the caller. So one portable binary built
// with plain -O2 runs AVX-512 kernels where the CPU has them.
#pragma once

#include "../core/api.hpp"
#include "../core/tensor.hpp"
#include "options.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#define UNIVERSEG_X86_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__GNUC__) && defined(__aarch64__)
#define UNIVERSEG_NEON_KERNELS 1
#include <arm_neon.h>
#endif

namespace universeg {
namespace kernels {

// One 3x3 convolution (stride 1, zero padding 1, bias) between two images of the same size in
// the layout above: out = conv(in) + (addend ? addend : bias), then LeakyReLU if `leaky`.
struct ConvArgs {
    const float* in = nullptr;
    int64_t in_cp = 0, cin = 0;     // channel stride and channels read
    int64_t in_row0 = 0;            // the padded row `in` points at (0: a whole image; else a band of rows)
    float* out = nullptr;
    int64_t out_cp = 0, cout = 0;   // channel stride and channels written (a multiple of 16)
    int64_t out_row0 = 0;           // the padded row `out` points at (0: a whole image; else a band of rows)
    int64_t h = 0, w = 0, wp = 0;   // image size, padded row length in pixels
    const float* weight = nullptr;  // packed: pack_direct or pack_winograd
    const uint16_t* weight_bf16 = nullptr;  // pack_winograd_bf16 or pack_direct_bf16
    const float* bias = nullptr;    // (cout), used when addend is null
    const float* addend = nullptr;  // an image with out_cp channels, same geometry as out
    bool leaky = false;
    // bf16 kernels only: read `in16` instead of `in`, write `out16` instead of `out` (the same
    // layout with bf16 values; strides in elements). Sums and the addend stay fp32.
    const uint16_t* in16 = nullptr;
    uint16_t* out16 = nullptr;
};

// C (m x n, row stride ldc) (add ? += : =) A (m x k, row stride lda) * B, where B is (k x n,
// row stride ldb), or with b_trans its transpose is stored (n x k, row stride ldb). Row-major,
// single-threaded: the trainer's im2col convolutions (ops.hpp) call one per work item.
struct GemmArgs {
    int64_t m = 0, n = 0, k = 0;
    const float* A = nullptr;
    int64_t lda = 0;
    const float* B = nullptr;
    int64_t ldb = 0;
    bool b_trans = false;
    float* C = nullptr;
    int64_t ldc = 0;
    bool add = false;
};

// One interior row of concat(up(low), skip) on channels, up = bilinear x2 (the decoder's
// input, engine.hpp): out pixel x, channel k < c:
//   wy[0] * (xs[x].w0 * low[0][xs[x].i0] + xs[x].w1 * low[0][xs[x].i1]) + wy[1] * (the same on low[1]),
// channels c .. c+cs the skip's pixel x, the rest zero. low[0], low[1]: the two low-resolution
// rows (pixel 0), fp32 or bf16 (low16); skip likewise (skip16), cs channels. The padding
// channels of low and skip must be zero (as the kernels leave them).
struct UpTap {
    int64_t i0, i1;
    float w0, w1;
};
struct UpConcatArgs {
    float* out = nullptr;
    int64_t out_cp = 0, w = 0;
    const void* low[2] = {nullptr, nullptr};
    bool low16 = false;
    int64_t low_cp = 0, c = 0;
    float wy[2] = {0, 0};
    const UpTap* xs = nullptr;
    const void* skip = nullptr;
    bool skip16 = false;
    int64_t skip_cp = 0, cs = 0;
};

// The kernels of one architecture. Function pointers, so that a table built in a translation
// unit compiled for AVX-512 can be called from baseline code.
struct Table {
    const char* name;
    int isa;         // kernels::Isa
    int nb;          // output channels per packed weight block
    int tile_group;  // most Winograd tiles per call
    void (*conv3x3_direct)(const ConvArgs&, int64_t y0, int64_t y1);
    // scratch: winograd_scratch_floats(tile_group, in_cp, out_cp) floats, private to the call
    void (*conv3x3_winograd)(const ConvArgs&, int64_t t0, int64_t t1, float* scratch);
    void (*conv3x3_winograd_bf16)(const ConvArgs&, int64_t t0, int64_t t1, float* scratch);  // null if absent
    // Element-wise helpers for the engine's fused passes (n and cp multiples of 16):
    void (*accumulate)(float* sum, const float* x, int64_t n, bool first);  // sum (first ? = : +=) x
    void (*maxpool_row)(float* out, const float* row0, const float* row1, int64_t w_out, int64_t cp);  // 2x2 max
    double (*fma_probe)(int64_t iters);  // for benchmarks: flops of a pure-FMA loop (the machine's peak)
    // bf16 products (pack_direct_bf16 weights; input in16, or fp32 with in_cp even); null if absent
    void (*conv3x3_direct_bf16)(const ConvArgs&, int64_t y0, int64_t y1);
    void (*gemm)(const GemmArgs&, float* pack);  // pack: k * nb floats, private to the call
    void (*to_bf16)(uint16_t* out, const float* in, int64_t n);  // rounded to nearest even; null if absent
    void (*up_concat_row)(const UpConcatArgs&);
};

constexpr int64_t kWinogradTile = 4;         // F(4x4,3x3): 4x4 outputs from 6x6 inputs
constexpr int64_t kWinogradPoints = 36;      // transformed tile
constexpr float kSlope = 0.01f;              // LeakyReLU slope, float(kLeakySlope)

// AMX tiles need the CPU's AMX-TILE and AMX-BF16 and the kernel's consent: Linux saves the
// 8 KB of tile state only for a process that asked for it (ARCH_REQ_XCOMP_PERM, Linux 5.16+).
// Asked once; the permission is process-wide, for every thread. The features are read from
// CPUID leaf 7 (EDX bit 24 AMX-TILE, bit 22 AMX-BF16) rather than __builtin_cpu_supports,
// whose "amx-*" names clang 14 does not know.
inline bool amx_usable() {
#if defined(UNIVERSEG_X86_KERNELS) && defined(__linux__)
    static const bool ok = [] {
        unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
        if (!(edx & (1u << 24)) || !(edx & (1u << 22))) return false;
        constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
    }();
    return ok;
#else
    return false;
#endif
}

inline bool cpu_has_bf16();

// What the CPU (and the OS, which must save the wide registers) supports.
inline bool cpu_has(Isa isa) {
    switch (isa) {
        case Isa::scalar: return true;
#ifdef UNIVERSEG_NEON_KERNELS
        case Isa::neon: return true;  // part of every AArch64 CPU
#endif
#ifdef UNIVERSEG_X86_KERNELS
        case Isa::sse2: return true;  // part of every x86-64 CPU
        case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd") &&
                   __builtin_cpu_supports("avx512vl");
        case Isa::amx: return cpu_has_bf16() && amx_usable();
#endif
        default: return false;
    }
}

inline bool cpu_has_bf16() {
#ifdef UNIVERSEG_X86_KERNELS
    return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

// Every table this program carries that this CPU can run, best first.
UNIVERSEG_API std::vector<const Table*> available_tables();

// UNIVERSEG_ARCH, read once: the highest instruction set the kernels may use.
inline Isa env_isa_cap() {
    static const Isa cap = [] {
        const char* e = std::getenv("UNIVERSEG_ARCH");
        return e && *e && std::string(e) != "auto" ? parse_isa(e, "UNIVERSEG_ARCH") : Isa::amx;
    }();
    return cap;
}

// The best table at or below `cap` (and the UNIVERSEG_ARCH cap).
inline const Table& select(Isa cap = Isa::amx) {
    if (env_isa_cap() < cap) cap = env_isa_cap();
    const std::vector<const Table*> tables = available_tables();
    for (const Table* t : tables)
        if (t->isa <= int(cap)) return *t;
    throw Error(std::string("no kernels at or below instruction set '") + isa_name(cap) + "' in this program (it carries '" +
                tables.back()->name + "' and up)");
}

// ---- the layout ----

constexpr int64_t kChannelAlign = 16;  // feature maps store channels with a stride multiple of this

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
inline int64_t channel_stride(int64_t c) { return round_up(c, kChannelAlign); }

// Padded geometry of an h x w image (see kernels/simd.hpp).
struct Geom {
    int64_t h = 0, w = 0, hp = 0, wp = 0;
    int64_t pixels() const { return hp * wp; }
    int64_t tiles() const { return (h + 3) / 4 * ((w + 3) / 4); }
};
inline Geom geom(int64_t h, int64_t w) { return {h, w, round_up(h, 4) + 2, round_up(w, 4) + 2}; }

// Floats of Winograd scratch for one call on up to `tiles` tiles.
inline int64_t winograd_scratch_floats(int64_t tiles, int64_t in_cp, int64_t out_cp) {
    return kWinogradPoints * tiles * (in_cp + out_cp);
}

// ---- weight packing (weights in PyTorch's layout (cout_total, cin_total, 3, 3)) ----
// Input channels [ci0, ci0 + cin) are packed, output channels padded with zeros to cout_p,
// in blocks of min(nb, remaining) output channels, each block contiguous.

// Direct: block at c0 holds [tap][ci][width].
inline std::vector<float> pack_direct(const std::vector<float>& w, int64_t cout, int64_t cin_total, int64_t ci0,
                                      int64_t cin, int64_t cout_p, int64_t nb) {
    std::vector<float> out(size_t(9 * cin * cout_p), 0.0f);
    for (int64_t c0 = 0; c0 < cout_p; c0 += std::min(nb, cout_p - c0)) {
        const int64_t width = std::min(nb, cout_p - c0);
        for (int64_t tap = 0; tap < 9; ++tap)
            for (int64_t ci = 0; ci < cin; ++ci)
                for (int64_t j = 0; j < width && c0 + j < cout; ++j)
                    out[size_t(c0 * 9 * cin + (tap * cin + ci) * width + j)] =
                        w[size_t(((c0 + j) * cin_total + ci0 + ci) * 9 + tap)];
    }
    return out;
}

// Direct with bf16 products: input channels in pairs, block at c0 holds [tap][ci/2][width][2].
inline std::vector<uint16_t> pack_direct_bf16(const std::vector<float>& w, int64_t cout, int64_t cin_total, int64_t ci0,
                                              int64_t cin, int64_t cout_p, int64_t nb) {
    const int64_t cin2 = round_up(cin, 2);
    std::vector<uint16_t> out(size_t(9 * cin2 * cout_p), 0);
    for (int64_t c0 = 0; c0 < cout_p; c0 += std::min(nb, cout_p - c0)) {
        const int64_t width = std::min(nb, cout_p - c0);
        for (int64_t tap = 0; tap < 9; ++tap)
            for (int64_t ci = 0; ci < cin; ++ci)
                for (int64_t j = 0; j < width && c0 + j < cout; ++j)
                    out[size_t(c0 * 9 * cin2 + ((tap * cin2 / 2 + ci / 2) * width + j) * 2 + ci % 2)] =
                        float_to_bf16(w[size_t(((c0 + j) * cin_total + ci0 + ci) * 9 + tap)]);
    }
    return out;
}

// Winograd F(4x4,3x3) weights G g G^T (computed in double), [36][cin][cout_p] with the cout
// axis in blocks as above: point p, block c0 at p*cin*cout_p + c0*cin, [ci][width].
inline std::vector<double> winograd_weights(const std::vector<float>& w, int64_t cout, int64_t cin_total, int64_t ci0,
                                            int64_t cin) {
    // Points 0, 1, -1, 1/2, -2, infinity (see kernels/simd.hpp).
    static const double G[6][3] = {{1, 0, 0},
                                   {1.0 / 3, 1.0 / 3, 1.0 / 3},
                                   {-1.0 / 3, 1.0 / 3, -1.0 / 3},
                                   {-16.0 / 15, -8.0 / 15, -4.0 / 15},
                                   {1.0 / 15, -2.0 / 15, 4.0 / 15},
                                   {0, 0, 1}};
    std::vector<double> out(size_t(36 * cin * cout));  // [co][ci][36]
    for (int64_t co = 0; co < cout; ++co)
        for (int64_t ci = 0; ci < cin; ++ci) {
            const float* g = &w[size_t((co * cin_total + ci0 + ci) * 9)];
            double gg[6][3];
            for (int i = 0; i < 6; ++i)
                for (int k = 0; k < 3; ++k) gg[i][k] = G[i][0] * g[k] + G[i][1] * g[3 + k] + G[i][2] * g[6 + k];
            for (int i = 0; i < 6; ++i)
                for (int j = 0; j < 6; ++j)
                    out[size_t((co * cin + ci) * 36 + i * 6 + j)] = gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2];
        }
    return out;
}

inline std::vector<float> pack_winograd(const std::vector<float>& w, int64_t cout, int64_t cin_total, int64_t ci0,
                                        int64_t cin, int64_t cout_p, int64_t nb) {
    const std::vector<double> t = winograd_weights(w, cout, cin_total, ci0, cin);
    std::vector<float> out(size_t(36 * cin * cout_p), 0.0f);
    for (int64_t c0 = 0; c0 < cout_p; c0 += std::min(nb, cout_p - c0)) {
        const int64_t width = std::min(nb, cout_p - c0);
        for (int64_t p = 0; p < 36; ++p)
            for (int64_t ci = 0; ci < cin; ++ci)
                for (int64_t j = 0; j < width && c0 + j < cout; ++j)
                    out[size_t(p * cin * cout_p + c0 * cin + ci * width + j)] = float(t[size_t(((c0 + j) * cin + ci) * 36 + p)]);
    }
    return out;
}

// bf16 Winograd weights: input channels in pairs, [36][cin/2][cout_p][2] with the cout axis in
// blocks of nb (the AVX-512 kernels' 64): block c0 at p*cin2*cout_p + c0*cin2, [pair][width][2].
inline std::vector<uint16_t> pack_winograd_bf16(const std::vector<float>& w, int64_t cout, int64_t cin_total, int64_t ci0,
                                                int64_t cin, int64_t cout_p, int64_t nb) {
    const std::vector<double> t = winograd_weights(w, cout, cin_total, ci0, cin);
    const int64_t cin2 = round_up(cin, 2);
    std::vector<uint16_t> out(size_t(36 * cin2 * cout_p), 0);
    for (int64_t c0 = 0; c0 < cout_p; c0 += std::min(nb, cout_p - c0)) {
        const int64_t width = std::min(nb, cout_p - c0);
        for (int64_t p = 0; p < 36; ++p)
            for (int64_t ci = 0; ci < cin; ++ci)
                for (int64_t j = 0; j < width && c0 + j < cout; ++j)
                    out[size_t(p * cin2 * cout_p + c0 * cin2 + ((ci / 2) * width + j) * 2 + ci % 2)] =
                        float_to_bf16(float(t[size_t(((c0 + j) * cin + ci) * 36 + p)]));
    }
    return out;
}

}  // namespace kernels
}  // namespace universeg

#if UNIVERSEG_WITH_IMPLEMENTATION
// The kernels of each target (cpu/simd.hpp), each in its namespace under its target pragma.
// GCC attaches `#pragma GCC target` to every function defined in the region, clang's
// `attribute push` to every function declaration; the bf16 and AMX kernels inside the AVX-512
// region carry their own, wider target attribute.
#define UNIVERSEG_TARGET_BF16 \
    __attribute__((target("avx512f,avx512cd,avx512dq,avx512bw,avx512vl,fma,avx512bf16")))
#define UNIVERSEG_TARGET_AMX \
    __attribute__((target("avx512f,avx512cd,avx512dq,avx512bw,avx512vl,fma,avx512bf16,amx-tile,amx-bf16")))
// A target region: every function defined between PUSH and POP is compiled for `t`.
#define UNIVERSEG_PRAGMA_STRING(x) _Pragma(#x)
#if defined(__clang__)
#define UNIVERSEG_TARGET_PUSH(t) UNIVERSEG_PRAGMA_STRING(clang attribute push(__attribute__((target(t))), apply_to = function))
#define UNIVERSEG_TARGET_POP _Pragma("clang attribute pop")
#else
#define UNIVERSEG_TARGET_PUSH(t) _Pragma("GCC push_options") UNIVERSEG_PRAGMA_STRING(GCC target(t))
#define UNIVERSEG_TARGET_POP _Pragma("GCC pop_options")
#endif

// simd.hpp undefines UNIVERSEG_SIMD_NS and UNIVERSEG_SIMD_KIND at its end.
#if defined(UNIVERSEG_X86_KERNELS)
#define UNIVERSEG_SIMD_NS sse2
#define UNIVERSEG_SIMD_KIND 2
#include "simd.hpp"

UNIVERSEG_TARGET_PUSH("avx2,fma")
#define UNIVERSEG_SIMD_NS avx2
#define UNIVERSEG_SIMD_KIND 3
#include "simd.hpp"
UNIVERSEG_TARGET_POP

UNIVERSEG_TARGET_PUSH("avx512f,avx512cd,avx512dq,avx512bw,avx512vl,fma")
#define UNIVERSEG_SIMD_NS avx512
#define UNIVERSEG_SIMD_KIND 4
#include "simd.hpp"
UNIVERSEG_TARGET_POP

#elif defined(UNIVERSEG_NEON_KERNELS)
#define UNIVERSEG_SIMD_NS neon
#define UNIVERSEG_SIMD_KIND 1
#include "simd.hpp"
#else
#define UNIVERSEG_SIMD_NS scalar
#define UNIVERSEG_SIMD_KIND 0
#include "simd.hpp"
#endif
#undef UNIVERSEG_TARGET_PUSH
#undef UNIVERSEG_TARGET_POP
#undef UNIVERSEG_PRAGMA_STRING
#undef UNIVERSEG_TARGET_BF16
#undef UNIVERSEG_TARGET_AMX

namespace universeg {
namespace kernels {

UNIVERSEG_API std::vector<const Table*> available_tables() {
    std::vector<const Table*> out;
#if defined(UNIVERSEG_X86_KERNELS)
    static const Table amx_table = avx512::make_table("amx", Isa::amx), avx512_table = avx512::make_table("avx512", Isa::avx512),
                       avx2_table = avx2::make_table("avx2", Isa::avx2), sse2_table = sse2::make_table("sse2", Isa::sse2);
    for (const Table* t : {&amx_table, &avx512_table, &avx2_table, &sse2_table})
        if (cpu_has(Isa(t->isa))) out.push_back(t);
#elif defined(UNIVERSEG_NEON_KERNELS)
    static const Table neon_table = neon::make_table("neon", Isa::neon);
    out.push_back(&neon_table);
#else
    static const Table scalar_table = scalar::make_table("scalar", Isa::scalar);
    out.push_back(&scalar_table);
#endif
    return out;
}

}  // namespace kernels
}  // namespace universeg
#endif
