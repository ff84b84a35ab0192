// universeg/cpu/simd.hpp - the CPU kernels, written once over a vector type V and compiled once
// per instruction set. Not a header to include: cpu/kernels.hpp includes it once per target,
// each time inside that target's namespace (sse2, avx2, avx512, neon or scalar) and under a
// GCC/Clang target pragma, so every function here is compiled for that target only and is a
// distinct symbol per target (no inline function is ever shared between targets).
//
//   Kernels::conv3x3_direct(args, y0, y1)              output rows [y0, y1)
//   Kernels::conv3x3_winograd(args, t0, t1, scratch)   Winograd F(4x4,3x3), 4x4 tiles [t0, t1)
//   Kernels::conv3x3_winograd_bf16(...)                the same with bf16 products (AVX512_BF16)
//   Kernels::gemm(args, pack)                          row-major fp32 GEMM (training's convolutions)
//   make_table(name, isa)                              the above as a Table of function pointers
//
// Layout (chosen for these kernels): an image is NHWC, channels innermost with a stride `cp`
// (a multiple of 16 for feature maps), padded with a zero border to
// (round_up(h,4)+2) x (round_up(w,4)+2) pixels, so that neither the direct 3x3 taps nor the
// 6x6 Winograd windows need bounds checks. Interior pixel (y, x) sits at padded (y+1, x+1).
//
// Both algorithms are register-blocked GEMMs: MR output pixels (or tiles) x NB output channels
// of accumulators, one broadcast input value times NB/VW weight vectors per step. Weights are
// packed by kernels.hpp in blocks of NB output channels.
//
// Keep this file self-contained: it includes nothing and calls nothing but compiler intrinsics
// and what it defines, so that no code compiled for one target can be reached from another.

// UNIVERSEG_SIMD_KIND: 0 scalar, 1 NEON, 2 SSE2, 3 AVX2 + FMA, 4 AVX-512 (with AVX512_BF16 and
// AMX kernels behind function-level target attributes).
namespace universeg {
namespace kernels {
namespace UNIVERSEG_SIMD_NS {

// The vector type and the five operations the kernels need; + - * are the compilers' vector
// arithmetic.
#if UNIVERSEG_SIMD_KIND == 4
using V = __m512;
struct S {
    static constexpr int width = 16;
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    // The masked form: GCC 12's _mm512_max_ps passes _mm512_undefined_ps() and warns.
    static V max(V a, V b) { return _mm512_mask_max_ps(a, __mmask16(0xFFFF), a, b); }
};
#elif UNIVERSEG_SIMD_KIND == 3
using V = __m256;
struct S {
    static constexpr int width = 8;
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
};
#elif UNIVERSEG_SIMD_KIND == 2
using V = __m128;
struct S {
    static constexpr int width = 4;
    static V load(const float* p) { return _mm_loadu_ps(p); }
    static void store(float* p, V v) { _mm_storeu_ps(p, v); }
    static V set1(float x) { return _mm_set1_ps(x); }
    static V fma(V a, V b, V c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }  // SSE2 has no FMA
    static V max(V a, V b) { return _mm_max_ps(a, b); }
};
#elif UNIVERSEG_SIMD_KIND == 1
using V = float32x4_t;
struct S {
    static constexpr int width = 4;
    static V load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, V v) { vst1q_f32(p, v); }
    static V set1(float x) { return vdupq_n_f32(x); }
    static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
    static V max(V a, V b) { return vmaxq_f32(a, b); }
};
#else
using V = float;
struct S {
    static constexpr int width = 1;
    static V load(const float* p) { return *p; }
    static void store(float* p, V v) { *p = v; }
    static V set1(float x) { return x; }
    static V fma(V a, V b, V c) { return a * b + c; }
    static V max(V a, V b) { return a > b ? a : b; }
};
#endif

struct Kernels {
    static constexpr int VW = S::width;
    // Accumulator block MR x NV vectors: 24 of AVX-512's 32 registers, 12 of AVX2's/SSE's 16.
    static constexpr int NV = VW >= 16 ? 4 : VW == 1 ? 4 : 2;
    static constexpr int NB = NV * VW;
    static constexpr int MR = VW == 1 ? 4 : 6;
    static constexpr int TG = 2 * MR;  // Winograd tiles per call: U and M stay close to L1

    static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

    // VW bf16 values <-> fp32: bf16 is the top half of an fp32, rounded to nearest even (as
    // vcvtneps2bf16). AVX-512F code, so that the bf16 kernels can inline it into any helper.
    static V load_bf16(const uint16_t* p) {
#if UNIVERSEG_SIMD_KIND == 4
        // maskz forms throughout: GCC 12's unmasked ones pass _mm512_undefined_*() and warn.
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xFFFF), _mm512_maskz_cvtepu16_epi32(__mmask16(0xFFFF), h), 16));
#else
        float f[VW];
        for (int i = 0; i < VW; ++i) f[i] = scalar(p[i]);
        return S::load(f);
#endif
    }
    template <class T>
    static V load_any(const T* p) {
        if constexpr (sizeof(T) == 2) return load_bf16(p);
        else return S::load(p);
    }
    // One value as fp32 (not tensor.hpp's bf16_to_float: see the top of this file).
    static float scalar(float v) { return v; }
    static float scalar(uint16_t v) {
        const uint32_t b = uint32_t(v) << 16;
        float f;
        __builtin_memcpy(&f, &b, 4);
        return f;
    }
    // The bf16 kernels' stores: vcvtneps2bf16. AVX512_BF16 code can be inlined only into
    // callers compiled for it, so the bf16 kernels are `flatten`: their whole call tree,
    // store_tile or output_tile included, is inlined into them. Without AVX-512, the same
    // rounding in integer arithmetic.
#if UNIVERSEG_SIMD_KIND == 4
    UNIVERSEG_TARGET_BF16 static void store_bf16(uint16_t* p, const V& v) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
    }
#else
    static void store_bf16(uint16_t* p, const V& v) {
        float f[VW];
        S::store(f, v);
        for (int i = 0; i < VW; ++i) {
            uint32_t b;
            __builtin_memcpy(&b, &f[i], 4);
            p[i] = uint16_t((b + 0x7fff + ((b >> 16) & 1)) >> 16);
        }
    }
#endif

    // out pixels (y, x .. x+M-1), channels [c0, c0 + N*VW): acc + bias/addend, LeakyReLU;
    // into out16 (bf16) if kOut16. The fields of `a` are read once, before any store: a bf16
    // store goes through a vector type that may alias anything, after which GCC reloads them.
    template <int M, int N, bool kOut16 = false>
    static void store_tile(const ConvArgs& a, int64_t y, int64_t x, int64_t c0, V (&acc)[M][N]) {
        const V slope = S::set1(kSlope);
        const bool leaky = a.leaky;
        const int64_t ocp = a.out_cp, px0 = (y + 1) * a.wp + x + 1, o0 = (px0 - a.out_row0 * a.wp) * ocp + c0;
        const float* add = a.addend ? a.addend + px0 * ocp + c0 : nullptr;
        const float* bias = a.bias + c0;
        float* out = kOut16 ? nullptr : a.out + o0;
        uint16_t* out16 = kOut16 ? a.out16 + o0 : nullptr;
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m) {
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) {
                V r = acc[m][n] + S::load(add ? add + m * ocp + n * VW : bias + n * VW);
                if (leaky) r = S::max(r, r * slope);
                if constexpr (kOut16) store_bf16(out16 + m * ocp + n * VW, r);
                else S::store(out + m * ocp + n * VW, r);
            }
        }
    }

    // ---- direct convolution: the 9 taps x cin inputs are the GEMM's K dimension ----

    template <int M, int N>
    static void direct_tile(const ConvArgs& a, int64_t y, int64_t x, int64_t c0) {
        V acc[M][N];
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) acc[m][n] = S::set1(0.0f);
        const int64_t K = a.cin, cp = a.in_cp;
        const float* wblock = a.weight + c0 * 9 * K;  // [tap][ci][N*VW]
        for (int tap = 0; tap < 9; ++tap) {
            const float* src = a.in + ((y + tap / 3 - a.in_row0) * a.wp + x + tap % 3) * cp;
            const float* wk = wblock + tap * K * (N * VW);
            for (int64_t k = 0; k < K; ++k) {
                V b[N];
#pragma GCC unroll 4
                for (int n = 0; n < N; ++n) b[n] = S::load(wk + k * (N * VW) + n * VW);
#pragma GCC unroll 8
                for (int m = 0; m < M; ++m) {
                    const V v = S::set1(src[m * cp + k]);
#pragma GCC unroll 4
                    for (int n = 0; n < N; ++n) acc[m][n] = S::fma(v, b[n], acc[m][n]);
                }
            }
        }
        store_tile<M, N>(a, y, x, c0, acc);
    }

    template <int M, int N>
    static void direct_tail(const ConvArgs& a, int64_t y, int64_t x, int64_t c0, int64_t rem) {
        if constexpr (M >= 1) {
            if (rem == M) direct_tile<M, N>(a, y, x, c0);
            else direct_tail<M - 1, N>(a, y, x, c0, rem);
        }
    }

    template <int N>
    static void direct_rows(const ConvArgs& a, int64_t y0, int64_t y1, int64_t c0) {
        for (int64_t y = y0; y < y1; ++y) {
            int64_t x = 0;
            for (; x + MR <= a.w; x += MR) direct_tile<MR, N>(a, y, x, c0);
            if (x < a.w) direct_tail<MR - 1, N>(a, y, x, c0, a.w - x);
        }
    }

    template <int N>
    static void direct_rows_n(const ConvArgs& a, int64_t y0, int64_t y1, int64_t c0, int n) {
        if constexpr (N >= 1) {
            if (n == N) direct_rows<N>(a, y0, y1, c0);
            else direct_rows_n<N - 1>(a, y0, y1, c0, n);
        }
    }

    static void conv3x3_direct(const ConvArgs& a, int64_t y0, int64_t y1) {
        for (int64_t c0 = 0; c0 < a.cout;) {
            const int n = int(imin(NV, (a.cout - c0) / VW));
            direct_rows_n<NV>(a, y0, y1, c0, n);
            c0 += n * VW;
        }
    }

    // ---- Winograd F(4x4, 3x3): out = A^T [ (G g G^T) . (B^T d B) ] A ----
    // Interpolation points 0, 1, -1, 1/2, -2 and infinity rather than Lavin & Gray's
    // 0, +-1, +-2: about 1.6x less rounding error (in fp32 and in bf16) for a few more
    // operations in the transforms (Barabasz et al., "Error analysis and improving the
    // accuracy of Winograd convolution", 2020). G is in kernels.hpp.

    // B^T applied to six values along one axis.
    static void bt6(const V (&d)[6], V (&t)[6]) {
        const V c2 = S::set1(2.0f), m2 = S::set1(-2.0f), h = S::set1(0.5f), mh = S::set1(-0.5f);
        const V c15 = S::set1(1.5f), c25 = S::set1(2.5f), m25 = S::set1(-2.5f);
        const V e = d[3] - d[1], f = d[4] - d[2];
        t[0] = S::fma(c15, e, S::fma(m2, d[2], d[0] + d[4]));
        t[1] = S::fma(c25, d[3], S::fma(h, d[2], d[4] - d[1]));
        t[2] = S::fma(h, d[3], S::fma(m25, d[2], d[4] + d[1]));
        t[3] = S::fma(c2, e, f);
        t[4] = S::fma(mh, e, f);
        t[5] = S::fma(c15, f, S::fma(m2, d[3], d[1] + d[5]));
    }

    // A^T applied to six values: four outputs.
    static void at6(const V (&m)[6], V (&o)[4]) {
        const V c4 = S::set1(4.0f), m2 = S::set1(-2.0f), m8 = S::set1(-8.0f);
        const V h = S::set1(0.5f), q = S::set1(0.25f), e = S::set1(0.125f);
        const V s12 = m[1] + m[2], d12 = m[1] - m[2];
        o[0] = (m[0] + s12) + (m[3] + m[4]);
        o[1] = S::fma(h, m[3], S::fma(m2, m[4], d12));
        o[2] = S::fma(q, m[3], S::fma(c4, m[4], s12));
        o[3] = S::fma(e, m[3], S::fma(m8, m[4], d12)) + m[5];
    }

    // The 36 transformed values of one 6x6 window for VW channels. The transforms' loops are
    // unrolled by hand-placed pragmas: left to -O2 they stay loops that copy every value
    // through the stack (docs/engine.md has the cost).
    // load(o, d) reads the six pixels of the window row at element offset o from the window's
    // corner into d.
    template <class Load>
    static void input_tile(const Load& load, int64_t wp, int64_t cp, V (&u)[36]) {
        V rows[6][6];
#pragma GCC unroll 6
        for (int r = 0; r < 6; ++r) {
            V d[6];
            load(r * wp * cp, d);
            bt6(d, rows[r]);
        }
#pragma GCC unroll 6
        for (int c = 0; c < 6; ++c) {
            V d[6], t[6];
#pragma GCC unroll 6
            for (int r = 0; r < 6; ++r) d[r] = rows[r][c];
            bt6(d, t);
#pragma GCC unroll 6
            for (int r = 0; r < 6; ++r) u[r * 6 + c] = t[r];
        }
    }

    // input_tile's load for a window with its corner at p (fp32 or bf16 values). Each row's
    // address is hidden from the optimiser: otherwise GCC hoists all 36 addresses out of the
    // callers' channel loop, keeps them on the stack and reloads one per load.
    // (A functor, not a lambda: clang's target pragma does not reach lambdas.)
    template <class T>
    struct Window {
        const T* p;
        int64_t cp;
        void operator()(int64_t o, V (&d)[6]) const {
            const T* q = p + o;
            __asm__("" : "+r"(q));
#pragma GCC unroll 6
            for (int k = 0; k < 6; ++k) d[k] = load_any(q + k * cp);
        }
    };
    template <class T>
    static Window<T> window(const T* p, int64_t cp) {
        return {p, cp};
    }

    // M: [n][36][out_cp] transformed products -> 4x4 output tiles of tiles [t0, t0+n), into
    // out16 (bf16) if kOut16.
    template <bool kOut16 = false>
    static void winograd_output(const ConvArgs& a, int64_t t0, int64_t n, const float* M) {
        const int64_t ntx = (a.w + 3) / 4;
        for (int64_t j = 0; j < n; ++j) {
            const int64_t ty = (t0 + j) / ntx, tx = (t0 + j) % ntx;
            const int64_t rows = imin(4, a.h - 4 * ty), cols = imin(4, a.w - 4 * tx);
            if (rows == 4 && cols == 4) output_tile<kOut16, true>(a, ty, tx, 4, 4, M + j * 36 * a.out_cp);
            else output_tile<kOut16, false>(a, ty, tx, rows, cols, M + j * 36 * a.out_cp);
        }
    }

    // One tile of winograd_output. Whole tiles (kFull) get loops of constant length, so only
    // edge tiles pay for run-time bounds and per-store addressing. The fields of `a` are read
    // once, as in store_tile.
    template <bool kOut16, bool kFull>
    static void output_tile(const ConvArgs& a, int64_t ty, int64_t tx, int64_t rows, int64_t cols, const float* src) {
        const V slope = S::set1(kSlope);
        const bool leaky = a.leaky;
        const int64_t px0 = (4 * ty + 1) * a.wp + 4 * tx + 1, ocp = a.out_cp, cout = a.cout;
        const int64_t at0 = (px0 - a.out_row0 * a.wp) * ocp, row_step = a.wp * ocp;
        const float* addend = a.addend ? a.addend + px0 * ocp : nullptr;
        const float* bias = a.bias;
        float* out = kOut16 ? nullptr : a.out + at0;
        uint16_t* out16 = kOut16 ? a.out16 + at0 : nullptr;
        for (int64_t c = 0; c < cout; c += VW) {
            V tmp[6][4];
#pragma GCC unroll 6
            for (int r = 0; r < 6; ++r) {
                V m[6];
#pragma GCC unroll 6
                for (int q = 0; q < 6; ++q) m[q] = S::load(src + (r * 6 + q) * ocp + c);
                at6(m, tmp[r]);
            }
            const V b = addend ? S::set1(0.0f) : S::load(bias + c);
#pragma GCC unroll 4
            for (int q = 0; q < 4; ++q) {
                if (!kFull && q >= cols) break;
                V m[6], o[4];
#pragma GCC unroll 6
                for (int r = 0; r < 6; ++r) m[r] = tmp[r][q];
                at6(m, o);
#pragma GCC unroll 4
                for (int r = 0; r < 4; ++r) {
                    if (!kFull && r >= rows) break;
                    const int64_t off = r * row_step + q * ocp + c;
                    V v = o[r] + (addend ? S::load(addend + off) : b);
                    if (leaky) v = S::max(v, v * slope);
                    if constexpr (kOut16) store_bf16(out16 + off, v);
                    else S::store(out + off, v);
                }
            }
        }
    }

    // C (M x N*VW, row stride ldc) (add ? += : =) A (M x K, row stride lda) * B (K x N*VW, packed).
    template <int M, int N>
    static void gemm_tile(const float* A, int64_t lda, const float* B, int64_t K, float* C, int64_t ldc,
                          bool add = false) {
        V acc[M][N];
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) acc[m][n] = add ? S::load(C + m * ldc + n * VW) : S::set1(0.0f);
        for (int64_t k = 0; k < K; ++k) {
            V b[N];
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) b[n] = S::load(B + k * (N * VW) + n * VW);
#pragma GCC unroll 8
            for (int m = 0; m < M; ++m) {
                const V v = S::set1(A[m * lda + k]);
#pragma GCC unroll 4
                for (int n = 0; n < N; ++n) acc[m][n] = S::fma(v, b[n], acc[m][n]);
            }
        }
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) S::store(C + m * ldc + n * VW, acc[m][n]);
    }

    template <int M, int N>
    static void gemm_rows(const float* A, int64_t lda, const float* B, int64_t K, float* C, int64_t ldc, int64_t rows,
                          bool add) {
        int64_t m = 0;
        for (; m + M <= rows; m += M) gemm_tile<M, N>(A + m * lda, lda, B, K, C + m * ldc, ldc, add);
        gemm_tail<M - 1, N>(A + m * lda, lda, B, K, C + m * ldc, ldc, rows - m, add);
    }

    template <int M, int N>
    static void gemm_tail(const float* A, int64_t lda, const float* B, int64_t K, float* C, int64_t ldc, int64_t rem,
                          bool add) {
        if constexpr (M >= 1) {
            if (rem == M) gemm_tile<M, N>(A, lda, B, K, C, ldc, add);
            else gemm_tail<M - 1, N>(A, lda, B, K, C, ldc, rem, add);
        }
    }

    template <int N>
    static void gemm_rows_n(const float* A, int64_t lda, const float* B, int64_t K, float* C, int64_t ldc, int64_t rows,
                            int n, bool add = false) {
        if constexpr (N >= 1) {
            if (n == N) gemm_rows<MR, N>(A, lda, B, K, C, ldc, rows, add);
            else gemm_rows_n<N - 1>(A, lda, B, K, C, ldc, rows, n, add);
        }
    }

    // The trainer's GEMM (see GemmArgs): B is packed NB columns at a time, zero-padded, into
    // `pack` (k * NB floats); a ragged last panel goes through a stack tile. Every element of C
    // is one sequential sum over k, so the result does not depend on how callers split work.
    static void gemm(const GemmArgs& g, float* pack) {
        for (int64_t j0 = 0; j0 < g.n; j0 += NB) {
            const int64_t nc = imin(NB, g.n - j0);
            if (g.b_trans) {  // a transpose, in blocks of 16 k so that the written rows stay in L1
                for (int64_t k0 = 0; k0 < g.k; k0 += 16)
                    for (int64_t j = 0; j < nc; ++j)
                        for (int64_t k = k0; k < imin(k0 + 16, g.k); ++k) pack[k * NB + j] = g.B[(j0 + j) * g.ldb + k];
            } else {
                for (int64_t k = 0; k < g.k; ++k)
                    for (int64_t j = 0; j < nc; ++j) pack[k * NB + j] = g.B[k * g.ldb + j0 + j];
            }
            if (nc < NB)
                for (int64_t k = 0; k < g.k; ++k)
                    for (int64_t j = nc; j < NB; ++j) pack[k * NB + j] = 0.0f;
            if (nc == NB) {
                gemm_rows<MR, NV>(g.A, g.lda, pack, g.k, g.C + j0, g.ldc, g.m, g.add);
                continue;
            }
            float tile[MR * NB];
            for (int64_t m0 = 0; m0 < g.m; m0 += MR) {
                const int64_t mc = imin(MR, g.m - m0);
                for (int64_t i = 0; i < mc; ++i)
                    for (int64_t j = 0; j < NB; ++j)
                        tile[i * NB + j] = g.add && j < nc ? g.C[(m0 + i) * g.ldc + j0 + j] : 0.0f;
                gemm_rows<MR, NV>(g.A + m0 * g.lda, g.lda, pack, g.k, tile, NB, mc, true);
                for (int64_t i = 0; i < mc; ++i)
                    for (int64_t j = 0; j < nc; ++j) g.C[(m0 + i) * g.ldc + j0 + j] = tile[i * NB + j];
            }
        }
    }

    static void conv3x3_winograd(const ConvArgs& a, int64_t t0, int64_t t1, float* scratch) {
        const int64_t n = t1 - t0, ntx = (a.w + 3) / 4, cin_v = (a.cin + VW - 1) / VW * VW;
        // Tile-major scratch: each tile's 36 transformed points are contiguous, so the
        // transforms stream through memory (point-major costs 2x in write misses).
        float* U = scratch;                          // [n][36][in_cp]
        float* M = scratch + 36 * n * a.in_cp;      // [n][36][out_cp]
        for (int64_t j = 0; j < n; ++j) {
            const int64_t ty = (t0 + j) / ntx, tx = (t0 + j) % ntx;
            const float* base = a.in + ((4 * ty - a.in_row0) * a.wp + 4 * tx) * a.in_cp;
            for (int64_t c = 0; c < cin_v; c += VW) {
                V u[36];
                input_tile(window(base + c, a.in_cp), a.wp, a.in_cp, u);
#pragma GCC unroll 36
                for (int p = 0; p < 36; ++p) S::store(U + (j * 36 + p) * a.in_cp + c, u[p]);
            }
        }
        for (int p = 0; p < 36; ++p) {
            const float* B = a.weight + p * a.cin * a.cout;
            for (int64_t c0 = 0; c0 < a.cout;) {
                const int nv = int(imin(NV, (a.cout - c0) / VW));
                gemm_rows_n<NV>(U + p * a.in_cp, 36 * a.in_cp, B + c0 * a.cin, a.cin, M + p * a.out_cp + c0,
                                36 * a.out_cp, n, nv);
                c0 += nv * VW;
            }
        }
        winograd_output(a, t0, n, M);
    }

    static void accumulate(float* sum, const float* x, int64_t n, bool first) {
        if (first)
            for (int64_t j = 0; j < n; j += VW) S::store(sum + j, S::load(x + j));
        else
            for (int64_t j = 0; j < n; j += VW) S::store(sum + j, S::load(sum + j) + S::load(x + j));
    }

    template <class TL, class TS>
    static void up_concat_row_t(const UpConcatArgs& a) {
        const TL* r0 = static_cast<const TL*>(a.low[0]);
        const TL* r1 = static_cast<const TL*>(a.low[1]);
        const TS* skip = static_cast<const TS*>(a.skip);
        const V wy0 = S::set1(a.wy[0]), wy1 = S::set1(a.wy[1]), zero = S::set1(0.0f);
        const int64_t lcp = a.low_cp, scp = a.skip_cp, ocp = a.out_cp, c = a.c;
        for (int64_t x = 0; x < a.w; ++x) {
            const UpTap t = a.xs[x];
            const V wx0 = S::set1(t.w0), wx1 = S::set1(t.w1);
            float* o = a.out + x * ocp;
            for (int64_t k = 0; k < lcp; k += VW) {
                const V top = wx0 * load_any(r0 + t.i0 * lcp + k) + wx1 * load_any(r0 + t.i1 * lcp + k);
                const V bottom = wx0 * load_any(r1 + t.i0 * lcp + k) + wx1 * load_any(r1 + t.i1 * lcp + k);
                S::store(o + k, wy0 * top + wy1 * bottom);
            }
            if (c + scp <= ocp) {  // the skip's padded vectors fit (c a multiple of 16)
                for (int64_t k = 0; k < scp; k += VW) S::store(o + c + k, load_any(skip + x * scp + k));
                for (int64_t k = c + scp; k < ocp; k += VW) S::store(o + k, zero);
            } else {
                for (int64_t k = 0; k < a.cs; ++k) o[c + k] = scalar(skip[x * scp + k]);
                for (int64_t k = c + a.cs; k < ocp; ++k) o[k] = 0.0f;
            }
        }
    }

    static void up_concat_row(const UpConcatArgs& a) {
        if (a.low16 && a.skip16) up_concat_row_t<uint16_t, uint16_t>(a);
        else if (a.low16) up_concat_row_t<uint16_t, float>(a);
        else if (a.skip16) up_concat_row_t<float, uint16_t>(a);
        else up_concat_row_t<float, float>(a);
    }

    // out pixel x = max(max(row0[2x], row0[2x+1]), max(row1[2x], row1[2x+1])), as ops.hpp.
    static void maxpool_row(float* out, const float* row0, const float* row1, int64_t w_out, int64_t cp) {
        for (int64_t x = 0; x < w_out; ++x)
            for (int64_t c = 0; c < cp; c += VW) {
                const int64_t a = 2 * x * cp + c, b = a + cp;
                S::store(out + x * cp + c, S::max(S::max(S::load(row0 + a), S::load(row0 + b)),
                                                  S::max(S::load(row1 + a), S::load(row1 + b))));
            }
    }

    // The FMA throughput this arch can reach: `iters` steps of 12 independent vector FMAs.
    // Returns the flops done (with a data dependence so that nothing is optimised away).
    static double fma_probe(int64_t iters) {
        V acc[12];
        for (int i = 0; i < 12; ++i) acc[i] = S::set1(float(i) * 1e-3f);
        const V m = S::set1(0.999f), c = S::set1(1e-4f);
        for (int64_t k = 0; k < iters; ++k)
#pragma GCC unroll 12
            for (int i = 0; i < 12; ++i) acc[i] = S::fma(acc[i], m, c);
        float sink[VW];
        V total = acc[0];
        for (int i = 1; i < 12; ++i) total = total + acc[i];
        S::store(sink, total);
        return double(iters) * 12 * 2 * VW + (sink[0] == 12345.0f ? 1 : 0);
    }

#if UNIVERSEG_SIMD_KIND == 4
    // bf16 products, fp32 sums (vdpbf16ps): U is stored as bf16 pairs of input channels,
    // the weights as [36][ci/2][NB][2] bf16 blocks (pack_winograd_bf16).
    template <int M, int N>
    UNIVERSEG_TARGET_BF16 static void gemm_tile_bf16(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t K2,
                                                      float* C, int64_t ldc) {
        __m512 acc[M][N];
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) acc[m][n] = _mm512_setzero_ps();
        for (int64_t k = 0; k < K2; ++k) {
            __m512i b[N];
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) b[n] = _mm512_loadu_si512(B + (k * (N * 16) + n * 16) * 2);
#pragma GCC unroll 8
            for (int m = 0; m < M; ++m) {
                int32_t pair;
                __builtin_memcpy(&pair, A + m * lda + 2 * k, 4);
                const __m512i v = _mm512_set1_epi32(pair);
#pragma GCC unroll 4
                for (int n = 0; n < N; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)v, (__m512bh)b[n]);
            }
        }
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) _mm512_storeu_ps(C + m * ldc + n * 16, acc[m][n]);
    }

    template <int M, int N>
    UNIVERSEG_TARGET_BF16 static void gemm_tail_bf16(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t K2,
                                                      float* C, int64_t ldc, int64_t rem) {
        if constexpr (M >= 1) {
            if (rem == M) gemm_tile_bf16<M, N>(A, lda, B, K2, C, ldc);
            else gemm_tail_bf16<M - 1, N>(A, lda, B, K2, C, ldc, rem);
        }
    }

    template <int N>
    UNIVERSEG_TARGET_BF16 static void gemm_rows_bf16(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t K2,
                                                      float* C, int64_t ldc, int64_t rows, int n) {
        if constexpr (N >= 1) {
            if (n != N) return gemm_rows_bf16<N - 1>(A, lda, B, K2, C, ldc, rows, n);
            int64_t m = 0;
            for (; m + MR <= rows; m += MR) gemm_tile_bf16<MR, N>(A + m * lda, lda, B, K2, C + m * ldc, ldc);
            gemm_tail_bf16<MR - 1, N>(A + m * lda, lda, B, K2, C + m * ldc, ldc, rows - m);
        }
    }

    // The bf16 Winograd kernels' scratch: U, the transformed input tiles as bf16 [n][36][in_cp],
    // then M, the products before the output transform, fp32 [n][36][out_cp].
    static uint16_t* winograd_u16(float* scratch) { return reinterpret_cast<uint16_t*>(scratch); }
    static float* winograd_m(const ConvArgs& a, int64_t n, float* scratch) { return scratch + 36 * n * a.in_cp; }

    // U for tiles [t0, t0 + n) from in16 or in (fp32).
    UNIVERSEG_TARGET_BF16 static void winograd_input_bf16(const ConvArgs& a, int64_t t0, int64_t n, uint16_t* U) {
        const int64_t ntx = (a.w + 3) / 4, cin_v = (a.cin + 15) / 16 * 16;
        // Fields in locals: the stores below may alias anything (see store_tile).
        const int64_t cp = a.in_cp, wp = a.wp;
        const uint16_t* in16 = a.in16;
        const float* in = a.in;
        for (int64_t j = 0; j < n; ++j) {
            const int64_t ty = (t0 + j) / ntx, tx = (t0 + j) % ntx;
            const int64_t base = ((4 * ty - a.in_row0) * wp + 4 * tx) * cp;
            for (int64_t c = 0; c < cin_v; c += 16) {
                V u[36];
                if (in16) input_tile(window(in16 + base + c, cp), wp, cp, u);
                else input_tile(window(in + base + c, cp), wp, cp, u);
                uint16_t* d = U + j * 36 * cp + c;
#pragma GCC unroll 36
                for (int p = 0; p < 36; ++p, d += cp)
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), (__m256i)_mm512_cvtneps_pbh(u[p]));
            }
        }
    }

    // in16 or in (fp32) -> out16 or out: the input transform reads either, the output
    // transform writes either (kOut16), the products are bf16 either way.
    template <bool kOut16>
    UNIVERSEG_TARGET_BF16 __attribute__((flatten)) static void winograd_bf16(const ConvArgs& a, int64_t t0, int64_t t1, float* scratch) {
        const int64_t n = t1 - t0, K2 = (a.cin + 1) / 2;
        uint16_t* U = winograd_u16(scratch);
        float* M = winograd_m(a, n, scratch);
        winograd_input_bf16(a, t0, n, U);
        for (int p = 0; p < 36; ++p) {
            const uint16_t* B = a.weight_bf16 + p * (2 * K2) * a.cout;
            for (int64_t c0 = 0; c0 < a.cout;) {
                const int nv = int(imin(4, (a.cout - c0) / 16));
                gemm_rows_bf16<4>(U + p * a.in_cp, 36 * a.in_cp, B + c0 * 2 * K2, K2, M + p * a.out_cp + c0,
                                  36 * a.out_cp, n, nv);
                c0 += nv * 16;
            }
        }
        winograd_output<kOut16>(a, t0, n, M);
    }

    UNIVERSEG_TARGET_BF16 static void conv3x3_winograd_bf16(const ConvArgs& a, int64_t t0, int64_t t1, float* scratch) {
        if (a.out16) winograd_bf16<true>(a, t0, t1, scratch);
        else winograd_bf16<false>(a, t0, t1, scratch);
    }

    // The same products on AMX tiles: per Winograd point, M (n x cout) = U (n x cin) * weights
    // (cin x cout), TDPBF16PS on 16-row tiles, bf16 pairs in, fp32 sums out. The packed weights
    // [pair][width][2] are already AMX's pair-interleaved layout for the right operand, so the
    // packing, the transforms and the scratch are the bf16 kernel's. Tiles: 0-3 the product's
    // column blocks of 16, 4 the U rows for 32 input channels, 5 and 6 the weights for them
    // (alternating, so that a load need not wait for the product before it). Input channels in
    // whole 32s only (v1's 64 and 128); others take the AVX512_BF16 kernel. The "amx" table's
    // calls carry kAmxTileGroup tiles, one full tile of rows (fewer leave the tiles part empty;
    // docs/engine.md). The caller's thread must have AMX permission (kernels.hpp, amx_usable()).
    static constexpr int kAmxTileGroup = 16;

    struct AmxConfig {
        uint8_t palette = 1, start_row = 0, reserved[14] = {};
        uint16_t colsb[16] = {};
        uint8_t rows[16] = {};
    };

    // One 32-channel step into the nv column blocks. GCC's tile intrinsics paste the register
    // number into the assembly: literals only.
    UNIVERSEG_TARGET_AMX static void amx_step(const uint16_t* A, int64_t a_stride, const uint16_t* B, int64_t b_stride, int nv) {
        _tile_loadd(4, A, a_stride);
        _tile_loadd(5, B, b_stride);
        _tile_dpbf16ps(0, 4, 5);
        if (nv < 2) return;
        _tile_loadd(6, B + 32, b_stride);
        _tile_dpbf16ps(1, 4, 6);
        if (nv < 3) return;
        _tile_loadd(5, B + 64, b_stride);
        _tile_dpbf16ps(2, 4, 5);
        if (nv < 4) return;
        _tile_loadd(6, B + 96, b_stride);
        _tile_dpbf16ps(3, 4, 6);
    }
    UNIVERSEG_TARGET_AMX static void amx_zero(int nv) {
        _tile_zero(0);
        if (nv > 1) _tile_zero(1);
        if (nv > 2) _tile_zero(2);
        if (nv > 3) _tile_zero(3);
    }
    UNIVERSEG_TARGET_AMX static void amx_store(float* C, int64_t c_stride, int nv) {
        _tile_stored(0, C, c_stride);
        if (nv > 1) _tile_stored(1, C + 16, c_stride);
        if (nv > 2) _tile_stored(2, C + 32, c_stride);
        if (nv > 3) _tile_stored(3, C + 48, c_stride);
    }

    template <bool kOut16>
    UNIVERSEG_TARGET_AMX __attribute__((flatten)) static void winograd_amx(const ConvArgs& a, int64_t t0, int64_t t1, float* scratch) {
        const int64_t n = t1 - t0, K2 = (a.cin + 1) / 2;
        uint16_t* U = winograd_u16(scratch);
        float* M = winograd_m(a, n, scratch);
        winograd_input_bf16(a, t0, n, U);
        const int64_t a_stride = 36 * a.in_cp * 2, c_stride = 36 * a.out_cp * 4;  // bytes per tile
        for (int64_t r0 = 0; r0 < n; r0 += 16) {
            const uint8_t rows = uint8_t(imin(16, n - r0));
            AmxConfig cfg;
            for (int q = 0; q < 5; ++q) cfg.rows[q] = rows, cfg.colsb[q] = 64;
            cfg.rows[5] = cfg.rows[6] = 16, cfg.colsb[5] = cfg.colsb[6] = 64;
            _tile_loadconfig(&cfg);
            for (int p = 0; p < 36; ++p) {
                const uint16_t* A = U + (r0 * 36 + p) * a.in_cp;
                const uint16_t* Bp = a.weight_bf16 + p * (2 * K2) * a.cout;
                float* C = M + (r0 * 36 + p) * a.out_cp;
                for (int64_t c0 = 0; c0 < a.cout;) {
                    const int nv = int(imin(4, (a.cout - c0) / 16));
                    const uint16_t* B = Bp + c0 * 2 * K2;  // [pair][nv * 16][2]
                    amx_zero(nv);
                    for (int64_t k = 0; k < K2; k += 16) amx_step(A + 2 * k, a_stride, B + k * nv * 32, nv * 64, nv);
                    amx_store(C + c0, c_stride, nv);
                    c0 += nv * 16;
                }
            }
            _tile_release();
        }
        winograd_output<kOut16>(a, t0, n, M);
    }

    UNIVERSEG_TARGET_AMX static void conv3x3_winograd_amx(const ConvArgs& a, int64_t t0, int64_t t1, float* scratch) {
        if ((a.cin + 1) / 2 % 16) conv3x3_winograd_bf16(a, t0, t1, scratch);
        else if (a.out16) winograd_amx<true>(a, t0, t1, scratch);
        else winograd_amx<false>(a, t0, t1, scratch);
    }

    // Direct convolution with bf16 products: the K dimension is 9 taps x input-channel pairs,
    // one vdpbf16ps per pair. For the first block's 2-channel (image, label) support inputs,
    // where a pixel is one pair: half the instructions of the fp32 kernel. The input is in16,
    // or fp32 pairs (`in`, in_cp even) rounded to bf16 as they are read.
    template <int M, int N, bool kIn16, bool kOut16>
    UNIVERSEG_TARGET_BF16 static void direct_tile_bf16(const ConvArgs& a, int64_t y, int64_t x, int64_t c0) {
        __m512 acc[M][N];
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) acc[m][n] = _mm512_setzero_ps();
        const int64_t K2 = (a.cin + 1) / 2, cp = a.in_cp;
        const uint16_t* wblock = a.weight_bf16 + c0 * 9 * K2 * 2;  // [tap][pair][N*16][2]
        for (int tap = 0; tap < 9; ++tap) {
            const int64_t px = ((y + tap / 3 - a.in_row0) * a.wp + x + tap % 3) * cp;
            const uint16_t* wk = wblock + tap * K2 * (N * 16) * 2;
            for (int64_t k = 0; k < K2; ++k) {
                __m512i b[N];
#pragma GCC unroll 4
                for (int n = 0; n < N; ++n) b[n] = _mm512_loadu_si512(wk + (k * (N * 16) + n * 16) * 2);
#pragma GCC unroll 8
                for (int m = 0; m < M; ++m) {
                    __m512i v;
                    if constexpr (kIn16) {
                        int32_t pair;
                        __builtin_memcpy(&pair, a.in16 + px + m * cp + 2 * k, 4);
                        v = _mm512_set1_epi32(pair);
                    } else {
                        const __m128 f = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(a.in + px + m * cp + 2 * k)));
                        v = _mm512_maskz_broadcastd_epi32(__mmask16(0xFFFF), (__m128i)_mm_cvtneps_pbh(f));
                    }
#pragma GCC unroll 4
                    for (int n = 0; n < N; ++n) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], (__m512bh)v, (__m512bh)b[n]);
                }
            }
        }
        V out[M][N];
#pragma GCC unroll 8
        for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
            for (int n = 0; n < N; ++n) out[m][n] = acc[m][n];
        store_tile<M, N, kOut16>(a, y, x, c0, out);
    }

    template <int M, int N, bool kIn16, bool kOut16>
    UNIVERSEG_TARGET_BF16 static void direct_tail_bf16(const ConvArgs& a, int64_t y, int64_t x, int64_t c0, int64_t rem) {
        if constexpr (M >= 1) {
            if (rem == M) direct_tile_bf16<M, N, kIn16, kOut16>(a, y, x, c0);
            else direct_tail_bf16<M - 1, N, kIn16, kOut16>(a, y, x, c0, rem);
        }
    }

    template <int N, bool kIn16, bool kOut16>
    UNIVERSEG_TARGET_BF16 static void direct_rows_bf16(const ConvArgs& a, int64_t y0, int64_t y1, int64_t c0, int n) {
        if constexpr (N >= 1) {
            if (n != N) return direct_rows_bf16<N - 1, kIn16, kOut16>(a, y0, y1, c0, n);
            for (int64_t y = y0; y < y1; ++y) {
                int64_t x = 0;
                for (; x + MR <= a.w; x += MR) direct_tile_bf16<MR, N, kIn16, kOut16>(a, y, x, c0);
                if (x < a.w) direct_tail_bf16<MR - 1, N, kIn16, kOut16>(a, y, x, c0, a.w - x);
            }
        }
    }

    UNIVERSEG_TARGET_BF16 __attribute__((flatten)) static void to_bf16(uint16_t* out, const float* in, int64_t n) {
        for (int64_t j = 0; j < n; j += 16) store_bf16(out + j, S::load(in + j));
    }

    UNIVERSEG_TARGET_BF16 __attribute__((flatten)) static void conv3x3_direct_bf16(const ConvArgs& a, int64_t y0, int64_t y1) {
        for (int64_t c0 = 0; c0 < a.cout;) {
            const int n = int(imin(4, (a.cout - c0) / 16));
            if (a.in16 && a.out16) direct_rows_bf16<4, true, true>(a, y0, y1, c0, n);
            else if (a.in16) direct_rows_bf16<4, true, false>(a, y0, y1, c0, n);
            else if (a.out16) direct_rows_bf16<4, false, true>(a, y0, y1, c0, n);
            else direct_rows_bf16<4, false, false>(a, y0, y1, c0, n);
            c0 += n * 16;
        }
    }
#endif
};

inline Table make_table(const char* name, Isa isa) {
    using K = Kernels;
    Table t{name,    int(isa),        K::NB,           K::TG,        &K::conv3x3_direct, &K::conv3x3_winograd,
            nullptr, &K::accumulate, &K::maxpool_row, &K::fma_probe, nullptr,     &K::gemm,
            nullptr, &K::up_concat_row};
#if UNIVERSEG_SIMD_KIND == 4
    t.conv3x3_winograd_bf16 = &K::conv3x3_winograd_bf16;
    t.conv3x3_direct_bf16 = &K::conv3x3_direct_bf16;
    t.to_bf16 = &K::to_bf16;
    if (isa == Isa::amx) {
        t.tile_group = K::kAmxTileGroup;
        t.conv3x3_winograd_bf16 = &K::conv3x3_winograd_amx;
    }
#endif
    return t;
}

}  // namespace UNIVERSEG_SIMD_NS
}  // namespace kernels
}  // namespace universeg

#undef UNIVERSEG_SIMD_NS
#undef UNIVERSEG_SIMD_KIND
