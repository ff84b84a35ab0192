// universeg/kernels.hpp - the fast kernels' public side: instruction-set selection at run
// time, weight packing, and the image layout they work on.
//
//   const kernels::Table& t = kernels::select(kernels::Isa::avx512);  // best available <= avx512
//   kernels::pack_winograd(weight, cout, cin_total, ci0, cin, cout_p, t.nb)   // once per conv
//   t.conv3x3_winograd(args, t0, t1, scratch)                        // see kernels/simd.hpp
//
// Dispatch. The header always carries one table compiled with the includer's own flags
// (xsimd's default arch: SSE2 for a plain x86-64 build, AVX-512 under -march=native, scalar
// without xsimd), so a program that just includes the header is correct everywhere it runs.
// A program may also link the per-architecture translation units under
// examples/cli/dispatch/ (compiled with -mavx2 -mfma, or -mavx512*); each defines one extern "C"
// function returning its table, declared weak here: linked in, it is found; left out, its
// address is null. select() then picks the best table the CPU supports, capped by the
// UNIVERSEG_ARCH environment variable (scalar|sse2|avx2|avx512|amx) or by the caller. The "amx"
// table is the AVX-512 one with its bf16 Winograd products on AMX tiles (kernels_avx512.cpp).
//
// Why this is safe from the multiple-compilation ODR trap: an inline function compiled in
// both a baseline and an AVX-512 translation unit is emitted twice and the linker keeps one
// copy, possibly the AVX-512 one, which then crashes baseline callers on an AVX2 machine.
// The per-arch units therefore include only kernels/simd.hpp, where every function is a
// template on the arch tag (Kernels<xsimd::avx512bw> and Kernels<xsimd::sse2> are different
// symbols) and nothing else is called but xsimd templates on that same tag and intrinsics.
// The bf16 kernels use a GCC/Clang target attribute inside the AVX-512 unit rather than a
// unit of their own, so no AVX-512 function is ever compiled twice with different flags.
// examples/cli/dispatch/check_symbols.cmake verifies after each build that the per-arch
// objects define no shared weak symbol outside these templates.
#pragma once

#include "simd.hpp"
#include "../core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#if defined(__GNUC__) && defined(__ELF__) && (defined(__x86_64__) || defined(__i386__))
#define UNIVERSEG_RUNTIME_DISPATCH 1
extern "C" const universeg::kernels::Table* universeg_kernels_avx2() __attribute__((weak));
extern "C" const universeg::kernels::Table* universeg_kernels_avx512() __attribute__((weak));
extern "C" const universeg::kernels::Table* universeg_kernels_amx() __attribute__((weak));
#endif

#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace universeg {
namespace kernels {

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

// AMX tiles need the CPU's AMX-TILE and AMX-BF16 and the kernel's consent: Linux saves the
// 8 KB of tile state only for a process that asked for it (ARCH_REQ_XCOMP_PERM, Linux 5.16+).
// Asked once; the permission is process-wide, for every thread. The features are read from
// CPUID leaf 7 (EDX bit 24 AMX-TILE, bit 22 AMX-BF16) rather than __builtin_cpu_supports,
// whose "amx-*" names clang 14 does not know.
inline bool amx_usable() {
#if defined(__linux__) && defined(__x86_64__) && defined(__GNUC__)
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
#if defined(__aarch64__)
        case Isa::neon: return true;  // part of every AArch64 CPU
#endif
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        case Isa::sse2: return __builtin_cpu_supports("sse2");
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
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    return cpu_has(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

// The table compiled with the includer's flags.
inline const Table& builtin_table() {
#if defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_AVX512BW
    static const Table t = make_table<xsimd::avx512bw>("avx512", Isa::avx512);
#elif defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_FMA3_AVX2
    static const Table t = make_table<xsimd::fma3<xsimd::avx2>>("avx2", Isa::avx2);
#elif defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_SSE2
    static const Table t = make_table<xsimd::sse2>("sse2", Isa::sse2);
#elif defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_NEON64
    static const Table t = make_table<xsimd::neon64>("neon", Isa::neon);
#else
    static const Table t = make_table<scalar_arch>("scalar", Isa::scalar);
#endif
    return t;
}

// Every table this program carries that this CPU can run, best first.
inline std::vector<const Table*> available_tables() {
    std::vector<const Table*> out;
#ifdef UNIVERSEG_RUNTIME_DISPATCH
    if (universeg_kernels_amx && cpu_has(Isa::amx) && universeg_kernels_amx()) out.push_back(universeg_kernels_amx());
    if (universeg_kernels_avx512 && cpu_has(Isa::avx512)) out.push_back(universeg_kernels_avx512());
    if (universeg_kernels_avx2 && cpu_has(Isa::avx2)) out.push_back(universeg_kernels_avx2());
#endif
    const Table& b = builtin_table();
    bool have = false;
    for (const Table* t : out) have |= t->isa == b.isa;
    if (!have) {
        out.push_back(&b);
        for (size_t i = out.size() - 1; i > 0 && out[i]->isa > out[i - 1]->isa; --i) std::swap(out[i], out[i - 1]);
    }
    return out;
}

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
    for (const Table* t : available_tables())
        if (t->isa <= int(cap)) return *t;
    throw Error(std::string("no kernels at or below instruction set '") + isa_name(cap) +
                "' in this build (it carries '" + builtin_table().name + "' and up)");
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
