// universeg/cpu/engine.hpp - the CPU forward pass behind Model::forward: one schedule over one
// memory plan. The same function as the reference forward (core/reference.hpp), computed by the
// split algebra: the cross conv has no activation, so its target half ZT is computed once per
// query and the new target needs only the mean of the supports' half.
//
//   model.forward(query, images, labels, B, S, H, W, logits);            // fp32, best kernels
//   model.forward(..., logits, engine::Options{Precision::bf16});         // or a memory bound
//   engine::Workspace ws;  engine::forward(model, ws, ..., logits, opt);  // per-call state of one's own
//
// Per query, block by block (QueryPass): the block's target path, then its support path with
// the supports in groups of G (all of them unless Options::max_memory_mb asks for less),
// summed into the block's means in support order. make_plan sizes every buffer of that once;
// the logits are bit-identical whatever G and the thread count. The design and the measurements
// behind it: docs/engine.md.
#pragma once

#include "../core/api.hpp"
#include "../core/model.hpp"
#include "../core/ops.hpp"
#include "kernels.hpp"
#include "options.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace universeg {
namespace engine {

using kernels::Geom;

// Uninitialised floats (the engine writes everything it reads). Buffers of 4 MB and more ask
// Linux for transparent huge pages: first-touch page faults cost tens of microseconds per
// 4 KB page in virtual machines, which made a one-shot run at S=64 spend longer faulting
// its workspace in than computing.
class Buffer {
public:
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { std::free(p_); }

    static constexpr size_t kHuge = size_t(2) << 20;

    // What reserve(floats) allocates: huge-page buffers are whole huge pages.
    static size_t allocation_bytes(int64_t floats) {
        const size_t bytes = size_t(floats) * sizeof(float);
#ifdef __linux__
        if (bytes >= 2 * kHuge) return (bytes + kHuge - 1) / kHuge * kHuge;
#endif
        return bytes;
    }

    float* reserve(int64_t floats) {
        if (floats <= n_) return p_;
        std::free(p_);
        p_ = nullptr;
        n_ = 0;
        const size_t bytes = allocation_bytes(floats);
#ifdef __linux__
        if (bytes >= 2 * kHuge) {
            p_ = static_cast<float*>(std::aligned_alloc(kHuge, bytes));
            if (p_) madvise(p_, bytes, MADV_HUGEPAGE);
        }
#endif
        if (!p_) p_ = static_cast<float*>(std::malloc(bytes));
        if (!p_) throw std::bad_alloc();
        n_ = int64_t(bytes / sizeof(float));
        return p_;
    }
    int64_t size() const { return n_; }

private:
    float* p_ = nullptr;
    int64_t n_ = 0;
};


// A buffer of the plan: floats at an offset of the arena.
struct Slot {
    int64_t offset = 0, floats = 0;
};

// Every buffer of one forward pass (see make_plan), in one arena.
struct Plan {
    int64_t G = 0, threads = 1;  // supports per group; threads the per-thread scratch is for
    std::vector<Geom> geoms;     // per level, the full size first
    // The target path and the means over supports (one image each), kept across a query's pass.
    Slot t_in, mean_v0, zm, t_pool, t_cat, mean_v_dec, prev_mean, t_dec[2];
    std::vector<Slot> t_enc, mean_v, skip_mean;  // per encoder level
    std::vector<Slot> zt;                        // per block: encoder blocks, then decoder blocks
    // The current group of supports: its inputs, its outputs for the next block (two, as one
    // block reads while the next writes), its skips.
    Slot g_v, g_pin[2], g_prev[2];
    std::vector<Slot> g_skip;  // per encoder level
    // The support path's chunk of cross-conv outputs, and per-thread scratch.
    Slot chunk_z, band, zband, concat_band, pool_row, scratch;
    int64_t floats = 0;  // the arena

    // What the arena holds (a huge-page allocation's rounding is never touched, so it costs no memory).
    int64_t bytes() const { return floats * int64_t(sizeof(float)); }
};

// The arena of one call, laid out by its plan.
struct Arena {
    const Plan& plan;
    float* base;

    // `floats` of slot s; the plan sized s for every request of the schedule.
    float* get(const Slot& s, int64_t floats) const {
        if (floats > s.floats) throw std::logic_error("universeg engine: a buffer outgrew its plan");
        return base + s.offset;
    }
};

// n images (n >= 1) of one geometry in the kernels' layout, contiguous.
struct Images {
    float* p = nullptr;
    Geom g;
    int64_t c = 0, cp = 0, n = 1;
    bool bf16 = false;  // values stored as bf16 (at16); only the bf16 kernels read or write these
    int64_t floats() const { return g.pixels() * cp / (bf16 ? 2 : 1); }  // per image
    float* at(int64_t i) const { return p + i * floats(); }
    uint16_t* at16(int64_t i) const { return reinterpret_cast<uint16_t*>(at(i)); }
};

inline Images images(const Arena& ar, const Slot& s, Geom g, int64_t c, int64_t n, int64_t cp = 0, bool bf16 = false) {
    Images im{nullptr, g, c, cp ? cp : kernels::channel_stride(c), n, bf16};
    im.p = ar.get(s, n * im.floats());
    return im;
}

// One convolution packed for one kernel table.
struct PackedConv {
    int64_t cin = 0, cout = 0, cout_p = 0;
    bool winograd = false;
    std::vector<float> w, bias;  // w: pack_direct or pack_winograd; bias padded to cout_p
    std::vector<uint16_t> w16;   // pack_winograd_bf16
};

// The arguments every call of `pc` shares: channel counts and strides, image size, packed weights.
inline kernels::ConvArgs conv_args(const PackedConv& pc, int64_t in_cp, int64_t out_cp, Geom g) {
    kernels::ConvArgs a;
    a.in_cp = in_cp;
    a.cin = pc.cin;
    a.out_cp = out_cp;
    a.cout = pc.cout_p;
    a.h = g.h;
    a.w = g.w;
    a.wp = g.wp;
    a.weight = pc.w.data();
    a.weight_bf16 = pc.w16.data();
    return a;
}

struct PackedBlock {
    PackedConv cross_t, cross_v, target, support;  // cross_t: target half of the cross conv (with the bias)
    bool first = false;  // the first block: 2-channel support inputs, a direct cross conv fused per band
};

struct Packed {
    const kernels::Table* table = nullptr;
    bool bf16 = false;
    std::vector<PackedBlock> enc, dec;
};

inline PackedConv pack_conv(const kernels::Table& t, bool bf16, bool winograd, const Conv& c, int64_t ci0, int64_t cin,
                            bool with_bias) {
    PackedConv p;
    p.cin = cin;
    p.cout = c.out;
    p.cout_p = kernels::channel_stride(c.out);
    p.winograd = winograd;
    p.bias.assign(size_t(p.cout_p), 0.0f);
    if (with_bias) std::copy(c.bias.begin(), c.bias.end(), p.bias.begin());
    p.w = winograd ? kernels::pack_winograd(c.weight, c.out, c.in, ci0, cin, p.cout_p, t.nb)
                   : kernels::pack_direct(c.weight, c.out, c.in, ci0, cin, p.cout_p, t.nb);
    if (winograd && bf16) p.w16 = kernels::pack_winograd_bf16(c.weight, c.out, c.in, ci0, cin, p.cout_p, t.nb);
    if (!winograd && bf16) p.w16 = kernels::pack_direct_bf16(c.weight, c.out, c.in, ci0, cin, p.cout_p, t.nb);
    return p;
}

// Winograd needs feature maps (channel stride a multiple of 16); the raw inputs of the first
// block (1 and 2 channels) go through the direct kernel.
//
// bf16 mode: only the support path's convolutions with at least 64 input and output channels
// get bf16 weights. Those carry the cost (S of them per query), and on narrower ones the
// transforms dominate, so bf16 gains little for the same rounding error (docs/engine.md). The
// target path (once per query) stays fp32: its errors would reach every pixel of the output,
// while support-path errors are averaged over the supports.
//
// Where both convolutions of a support path (cross_v, then support) run in bf16, Z between
// them is stored in bf16 too (half the memory traffic, ~0.4% rounding next to Winograd's
// ~1.6%). In the first block that makes the 2-channel cross conv a direct bf16 one: a pixel
// (image, label) is one bf16 pair, one vdpbf16ps per tap instead of two FMAs.
inline PackedBlock pack_block(const kernels::Table& t, bool bf16, bool winograd, const CrossBlock& b, bool first) {
    auto low = [bf16](int64_t cin, int64_t cout) { return bf16 && cin >= 64 && cout >= 64; };
    const bool first16 = first && winograd && low(b.support.in, b.support.out) && t.conv3x3_direct_bf16;
    PackedBlock p;
    p.cross_t = pack_conv(t, low(b.target_in, b.cross.out), winograd && !first, b.cross, 0, b.target_in, true);
    p.cross_v = pack_conv(t, first ? first16 : low(b.support_in, b.cross.out), winograd && !first, b.cross, b.target_in,
                          b.support_in, false);
    p.target = pack_conv(t, low(b.target.in, b.target.out), winograd, b.target, 0, b.target.in, true);
    p.support = pack_conv(t, low(b.support.in, b.support.out), winograd, b.support, 0, b.support.in, true);
    p.first = first;
    return p;
}

// bf16 mode: a block whose support path runs in bf16 (both of its convolutions, see pack_block)
// keeps Z in bf16 and also takes its per-support inputs in bf16: the pooled outputs and skips
// that the previous blocks store for it are rounded once when written (the means over supports,
// which feed the target path, are summed from the unrounded values). That halves the traffic
// of the S-fold feature maps, which at S=64 is the largest memory traffic of the forward.
inline bool support16(const Packed& pk, const PackedBlock& pb) {
    return pk.bf16 && !pb.cross_v.w16.empty() && !pb.support.w16.empty();
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// f(item, thread) for item in [0, n): any thread may take any item.
template <class F>
void parallel_for(int64_t n, const F& f) {
UNIVERSEG_OMP(parallel for schedule(dynamic, 1) if (n > 1))
    for (int64_t i = 0; i < n; ++i) f(i, thread_id());
}

// Whether encoder level k's per-support skips are stored in bf16: as their reader, the decoder
// block at that level, takes them (support16).
inline bool skip_bf16(const Packed& pk, int64_t L, int64_t k) {
    const int64_t d = L - 2 - k;
    return d >= 0 && d < int64_t(pk.dec.size()) && support16(pk, pk.dec[size_t(d)]);
}

// Zeroes the border and the padding rows/columns of every image (the kernels read them).
inline void clear_borders(const Images& im) {
    const Geom& g = im.g;
    const size_t px = size_t(im.cp) * (im.bf16 ? 2 : 4);  // bytes per pixel; 0.0 is all zero bits in both
    for (int64_t i = 0; i < im.n; ++i) {
        char* p = reinterpret_cast<char*>(im.at(i));
        std::memset(p, 0, size_t(g.wp) * px);
        std::memset(p + size_t((g.h + 1) * g.wp) * px, 0, size_t((g.hp - g.h - 1) * g.wp) * px);
        for (int64_t y = 1; y <= g.h; ++y) {
            char* row = p + size_t(y * g.wp) * px;
            std::memset(row, 0, px);
            std::memset(row + size_t(g.w + 1) * px, 0, size_t(g.wp - g.w - 1) * px);
        }
    }
}

// Where a block's per-support outputs V'_i go (any combination; an Images with p == nullptr is
// not wanted). Means are summed in support order and divided by S at the end of the block.
struct Sinks {
    Images store;        // all S outputs, kept (n = S)
    Images mean;         // the mean of the outputs (one image)
    Images pooled;       // all S outputs max-pooled (n = S, half size)
    Images pooled_mean;  // the mean of the pooled outputs: the next block's mean support input
};

// The engine's per-call context: kernels, packed weights, buffers, scratch.
struct Run {
    const Packed& pk;
    Arena& ar;
    int64_t S;                 // supports in this call's group (all of them but under a memory bound)
    int64_t s0 = 0, total = 0;  // the group's first support; all supports (means divide by this)

    // out[i] = conv(in[i]) + (addend ? addend[i * addend_step] : bias), LeakyReLU if asked;
    // with bf16 products if `low` and the weights have them.
    void conv(const PackedConv& pc, const Images& in, const Images& out, const Images* addend, int64_t addend_step,
              bool leaky, bool low = false) {
        const kernels::Table& t = *pk.table;
        kernels::ConvArgs base = conv_args(pc, in.cp, out.cp, in.g);
        base.bias = pc.bias.data();
        base.leaky = leaky;
        clear_borders(out);
        if (pc.winograd) {
            const int64_t tiles = in.g.tiles(), group = t.tile_group, groups = (tiles + group - 1) / group;
            const int64_t scratch_floats = kernels::winograd_scratch_floats(group, in.cp, out.cp);
            float* scratch = ar.get(ar.plan.scratch, scratch_floats * ar.plan.threads);
            auto fn = low && !pc.w16.empty() ? t.conv3x3_winograd_bf16 : t.conv3x3_winograd;
            if (in.bf16 || out.bf16) fn = t.conv3x3_winograd_bf16;  // pack_block made sure the weights exist
            parallel_for(in.n * groups, [&](int64_t item, int thread) {
                const int64_t i = item / groups, t0 = item % groups * group;
                kernels::ConvArgs a = base;
                if (in.bf16) a.in16 = in.at16(i);
                else a.in = in.at(i);
                if (out.bf16) a.out16 = out.at16(i);
                else a.out = out.at(i);
                a.addend = addend ? addend->at(i * addend_step) : nullptr;
                fn(a, t0, std::min(tiles, t0 + group), scratch + thread * scratch_floats);
            });
        } else {
            const int64_t rows = 4, groups = (in.g.h + rows - 1) / rows;
            parallel_for(in.n * groups, [&](int64_t item, int) {
                const int64_t i = item / groups, y0 = item % groups * rows;
                kernels::ConvArgs a = base;
                a.in = in.at(i);
                a.out = out.at(i);
                a.addend = addend ? addend->at(i * addend_step) : nullptr;
                t.conv3x3_direct(a, y0, std::min(in.g.h, y0 + rows));
            });
        }
    }

    // The support convolution of a chunk of supports i0 .. i0+z.n-1, V'_i = LeakyReLU(conv(Z_i)),
    // with each band of four output rows sent to the sinks while it is in cache: kept in
    // sinks.store, max-pooled into sinks.pooled, summed into sinks.mean (in support order: a
    // work item is a band, looping over the chunk's supports). Without a store the band lives
    // in a per-thread buffer, so no image of V' is ever written out.
    //
    // With `cross` (a direct convolution: the first block's 2-channel cross conv), Z_i is not
    // read from z but computed band by band from the support inputs `v` (z.n images from i0)
    // plus `zt`, into a per-thread buffer of the six rows the band needs: the cheap cross conv
    // redoes its two halo rows (1.5x its work) so that full-size Z_i never reaches memory.
    // With z.bf16 (bf16 mode, see pack_block), Z_i is kept in bf16, made by the bf16 kernels.
    // A bf16 store or pooled sink gets its values rounded from the fp32 band (support16).
    void support_conv(const PackedConv& pc, const Images& z, const Sinks& sinks, int64_t i0, bool low,
                      const PackedConv* cross = nullptr, const Images* v = nullptr, const Images* zt = nullptr) {
        const kernels::Table& t = *pk.table;
        const Geom g = z.g;
        // Bands of four rows (one row of Winograd tiles); eight when the cross conv is redone per
        // band, so that its halo costs 1.25x rather than 1.5x.
        const int64_t bh = cross ? 8 : 4, bands = (g.h + bh - 1) / bh, ntx = (g.w + 3) / 4, tiles = g.tiles();
        const int64_t cp = kernels::channel_stride(pc.cout);
        const int64_t band_floats = bh * g.wp * cp, zband_floats = (bh + 2) * g.wp * z.cp / (z.bf16 ? 2 : 1);
        const int64_t scratch_floats = kernels::winograd_scratch_floats(t.tile_group, z.cp, cp);
        const bool direct_store = sinks.store.p && !sinks.store.bf16;  // the kernel writes V' into the store
        float* band_buf = direct_store ? nullptr : ar.get(ar.plan.band, band_floats * ar.plan.threads);
        const int64_t pool_floats = sinks.pooled.g.w * cp;
        float* pool_buf = sinks.pooled.bf16 ? ar.get(ar.plan.pool_row, pool_floats * ar.plan.threads) : nullptr;
        float* zband_buf = cross ? ar.get(ar.plan.zband, zband_floats * ar.plan.threads) : nullptr;
        if (cross) std::fill(zband_buf, zband_buf + zband_floats * ar.plan.threads, 0.0f);  // border columns stay 0
        kernels::ConvArgs cbase;
        if (cross) {
            cbase = conv_args(*cross, v->cp, z.cp, g);
            cbase.addend = zt->p;
        }
        float* scratch = pc.winograd ? ar.get(ar.plan.scratch, scratch_floats * ar.plan.threads) : nullptr;
        auto fn = (low && !pc.w16.empty()) || z.bf16 ? t.conv3x3_winograd_bf16 : t.conv3x3_winograd;
        kernels::ConvArgs base = conv_args(pc, z.cp, cp, g);
        base.bias = pc.bias.data();
        base.leaky = true;
        for (const Images* im : {&sinks.store, &sinks.pooled})
            if (im->p) {
                Images part = *im;
                part.p = im->at(i0);
                part.n = z.n;
                clear_borders(part);
            }
        for (const Images* im : {&sinks.mean, &sinks.pooled_mean})
            if (im->p && s0 + i0 == 0) clear_borders(*im);
        parallel_for(bands, [&](int64_t band, int thread) {
            const int64_t y0 = bh * band, rows = std::min(bh, g.h - y0);
            for (int64_t i = 0; i < z.n; ++i) {
                kernels::ConvArgs a = base;
                if (!cross && z.bf16) a.in16 = z.at16(i);
                else if (!cross) a.in = z.at(i);
                if (cross) {  // Z_i's padded rows y0 .. y0+bh+1, zero outside the image
                    kernels::ConvArgs c = cbase;
                    float* zb = zband_buf + thread * zband_floats;
                    c.in = v->at(i0 + i);
                    c.out_row0 = y0;
                    const int64_t lo = std::max<int64_t>(0, y0 - 1), hi = std::min(g.h, y0 + bh + 1);
                    const size_t row_bytes = size_t(g.wp * z.cp) * (z.bf16 ? 2 : 4);
                    if (z.bf16) {
                        c.out16 = reinterpret_cast<uint16_t*>(zb);
                        t.conv3x3_direct_bf16(c, lo, hi);
                        a.in16 = c.out16;
                    } else {
                        c.out = zb;
                        t.conv3x3_direct(c, lo, hi);
                        a.in = zb;
                    }
                    for (int64_t r = 0; r < bh + 2; ++r)
                        if (y0 + r - 1 < lo || y0 + r - 1 >= hi) std::memset(reinterpret_cast<char*>(zb) + size_t(r) * row_bytes, 0, row_bytes);
                    a.in_row0 = y0;
                }
                if (direct_store) {
                    a.out = sinks.store.at(i0 + i);
                } else {
                    a.out = band_buf + thread * band_floats;
                    a.out_row0 = y0 + 1;
                }
                if (pc.winograd)
                    for (int64_t t0 = y0 / 4 * ntx, t1 = std::min(tiles, (y0 + bh) / 4 * ntx); t0 < t1; t0 += t.tile_group)
                        fn(a, t0, std::min(t1, t0 + t.tile_group), scratch + thread * scratch_floats);
                else
                    t.conv3x3_direct(a, y0, y0 + rows);
                // Row r of the band (padded row y0 + 1 + r), interior pixel x at column x + 1.
                auto row = [&](int64_t r) { return a.out + ((y0 + 1 + r - a.out_row0) * g.wp + 1) * cp; };
                const bool first = s0 + i0 == 0 && i == 0;
                if (sinks.store.bf16)
                    for (int64_t r = 0; r < rows; ++r)
                        t.to_bf16(sinks.store.at16(i0 + i) + ((y0 + 1 + r) * g.wp + 1) * cp, row(r), g.w * cp);
                if (sinks.mean.p)
                    for (int64_t r = 0; r < rows; ++r)
                        t.accumulate(sinks.mean.p + ((y0 + 1 + r) * g.wp + 1) * cp, row(r), g.w * cp, first);
                if (sinks.pooled.p) {
                    const Images& pd = sinks.pooled;
                    for (int64_t r = 0; r + 1 < rows; r += 2) {
                        const int64_t offset = ((y0 / 2 + r / 2 + 1) * pd.g.wp + 1) * cp;
                        float* d = pd.bf16 ? pool_buf + thread * pool_floats : pd.at(i0 + i) + offset;
                        t.maxpool_row(d, row(r), row(r + 1), pd.g.w, cp);
                        if (sinks.pooled_mean.p) t.accumulate(sinks.pooled_mean.p + offset, d, pd.g.w * cp, first);
                        if (pd.bf16) t.to_bf16(pd.at16(i0 + i) + offset, d, pd.g.w * cp);
                    }
                }
            }
        });
    }

    // sum (one image) += each of `src`'s images in order; `first` starts the sum at zero.
    void accumulate(const Images& sum, const Images& src, bool first) {
        const int64_t n = src.floats(), block = 4096, items = (n + block - 1) / block;
        parallel_for(items, [&](int64_t item, int) {
            const int64_t j0 = item * block, j1 = std::min(n, j0 + block);
            float* d = sum.p;
            if (first) std::fill(d + j0, d + j1, 0.0f);
            for (int64_t i = 0; i < src.n; ++i) {
                const float* s = src.at(i);
                for (int64_t j = j0; j < j1; ++j) d[j] += s[j];
            }
        });
    }

    void divide(const Images& im, float by) {
        float* d = im.p;
        for (int64_t j = 0; j < im.floats(); ++j) d[j] /= by;
    }

    // mean over the images of `src` into `dst` (one image), summed in order.
    void mean(const Images& dst, const Images& src) {
        accumulate(dst, src, true);
        divide(dst, float(src.n));
    }

    // dst[i] = 2x2 max pool of src[i] (dst at half size).
    void maxpool(const Images& dst, const Images& src) {
        clear_borders(dst);
        const int64_t cp = src.cp;
        parallel_for(src.n * dst.g.h, [&](int64_t item, int) {
            const int64_t i = item / dst.g.h, y = item % dst.g.h;
            const float* r0 = src.at(i) + ((2 * y + 1) * src.g.wp + 1) * cp;
            const float* r1 = r0 + src.g.wp * cp;
            float* d = dst.at(i) + ((y + 1) * dst.g.wp + 1) * cp;
            for (int64_t x = 0; x < dst.g.w; ++x)
                for (int64_t c = 0; c < cp; ++c) {
                    const int64_t a = 2 * x * cp + c, b = a + cp;
                    d[x * cp + c] = std::max(std::max(r0[a], r0[b]), std::max(r1[a], r1[b]));
                }
        });
    }

    // Interior row y of concat(up(low[li]), skip[si]) on channels (images fp32 or bf16), written
    // at `d` (pixel 0 of the row), channel stride cp, padding channels zeroed. up = bilinear x2
    // with align_corners=True, the reference's formula (ops.hpp), by the kernels.
    void up_concat_row(float* d, int64_t cp, int64_t y, const Images& low, int64_t li, const Images& skip, int64_t si,
                       const std::vector<kernels::UpTap>& xs) const {
        const LinearTap<float> ty = upsample2x_tap<float>(y, low.g.h);
        kernels::UpConcatArgs a;
        a.out = d;
        a.out_cp = cp;
        a.w = int64_t(xs.size());
        a.low16 = low.bf16;
        a.low_cp = low.cp;
        a.c = low.c;
        for (int r = 0; r < 2; ++r) {
            const int64_t px = ((r == 0 ? ty.i0 : ty.i1) + 1) * low.g.wp + 1;
            a.low[r] = low.bf16 ? static_cast<const void*>(low.at16(li) + px * low.cp) : low.at(li) + px * low.cp;
        }
        a.wy[0] = ty.w0;
        a.wy[1] = ty.w1;
        a.xs = xs.data();
        const int64_t px = (y + 1) * skip.g.wp + 1;
        a.skip = skip.bf16 ? static_cast<const void*>(skip.at16(si) + px * skip.cp) : skip.at(si) + px * skip.cp;
        a.skip16 = skip.bf16;
        a.skip_cp = skip.cp;
        a.cs = skip.c;
        pk.table->up_concat_row(a);
    }

    static std::vector<kernels::UpTap> x_taps(int64_t w, int64_t low_w) {
        std::vector<kernels::UpTap> xs(static_cast<size_t>(w));
        for (int64_t x = 0; x < w; ++x) {
            const LinearTap<float> t = upsample2x_tap<float>(x, low_w);
            xs[size_t(x)] = {t.i0, t.i1, t.w0, t.w1};
        }
        return xs;
    }

    // dst = concat(up(low), skip) on channels (one image each).
    void up_concat(const Images& dst, const Images& low, const Images& skip) {
        clear_borders(dst);
        const Geom& g = dst.g;
        const std::vector<kernels::UpTap> xs = x_taps(g.w, low.g.w);
        parallel_for(g.h, [&](int64_t y, int) { up_concat_row(dst.p + ((y + 1) * g.wp + 1) * dst.cp, dst.cp, y, low, 0, skip, 0, xs); });
    }

    // z[i] = conv(concat(up(low[i0 + i]), skip[i0 + i])) + zt for the chunk's supports, a band of
    // four output rows at a time: the band's six input rows are built in a per-thread buffer
    // (its two halo rows twice), so the concatenated full-size input never reaches memory.
    void cross_conv_concat(const PackedConv& pc, const Images& low, const Images& skip, int64_t i0, const Images& z,
                           const Images& zt, bool low_prec) {
        const kernels::Table& t = *pk.table;
        const Geom g = z.g;
        const int64_t in_cp = kernels::channel_stride(low.c + skip.c), bands = (g.h + 3) / 4, ntx = (g.w + 3) / 4;
        const int64_t band_floats = 6 * g.wp * in_cp;
        const int64_t scratch_floats = kernels::winograd_scratch_floats(t.tile_group, in_cp, z.cp);
        float* band_buf = ar.get(ar.plan.concat_band, band_floats * ar.plan.threads);
        std::fill(band_buf, band_buf + band_floats * ar.plan.threads, 0.0f);  // border columns stay 0
        float* scratch = pc.winograd ? ar.get(ar.plan.scratch, scratch_floats * ar.plan.threads) : nullptr;
        auto fn = (low_prec && !pc.w16.empty()) || z.bf16 ? t.conv3x3_winograd_bf16 : t.conv3x3_winograd;
        const std::vector<kernels::UpTap> xs = x_taps(g.w, low.g.w);
        clear_borders(z);
        parallel_for(z.n * bands, [&](int64_t item, int thread) {
            const int64_t i = item / bands, band = item % bands, y0 = 4 * band;
            float* buf = band_buf + thread * band_floats;
            for (int64_t r = 0; r < 6; ++r) {  // padded rows y0 .. y0+5 = interior rows y0-1 .. y0+4
                float* row = buf + r * g.wp * in_cp;
                const int64_t y = y0 + r - 1;
                if (y >= 0 && y < g.h) up_concat_row(row + in_cp, in_cp, y, low, i0 + i, skip, i0 + i, xs);
                else std::fill(row, row + g.wp * in_cp, 0.0f);
            }
            kernels::ConvArgs a = conv_args(pc, in_cp, z.cp, g);
            a.in = buf;
            a.in_row0 = y0;
            if (z.bf16) a.out16 = z.at16(i);
            else a.out = z.at(i);
            a.addend = zt.p;
            if (pc.winograd)
                for (int64_t t0 = band * ntx; t0 < (band + 1) * ntx; t0 += t.tile_group)
                    fn(a, t0, std::min((band + 1) * ntx, t0 + t.tile_group), scratch + thread * scratch_floats);
            else
                t.conv3x3_direct(a, y0, std::min(g.h, y0 + 4));
        });
    }
};

// Bytes of a chunk's cross-conv outputs: about 12 MB whatever the thread count.
constexpr int64_t kChunkBytes = int64_t(12) << 20;

// Supports per chunk in a block whose cross conv has f outputs at geometry g (at most n).
inline int64_t chunk_supports(const PackedBlock& pb, Geom g, int64_t f, int64_t n) {
    const int64_t per_support = pb.first ? 0 : g.pixels() * 4 * kernels::channel_stride(f);
    return per_support ? std::max<int64_t>(1, std::min<int64_t>(n, kChunkBytes / per_support)) : n;
}

// A CrossBlock's support path for the call's (group of) supports, given the target half of its
// cross conv zt: per-support inputs are either `stored` (r.S images) or concat(up(low[i]),
// skip[i]) built per chunk; the outputs go to the sinks.
inline void block_supports(Run& r, const PackedBlock& pb, const Images& zt, const Images* stored, const Images* low,
                           const Images* skip, const Sinks& sinks) {
    const Geom g = zt.g;
    const int64_t f = pb.cross_v.cout, chunk = chunk_supports(pb, g, f, r.S);
    const bool z16 = support16(r.pk, pb);
    for (int64_t i0 = 0; i0 < r.S; i0 += chunk) {
        const int64_t n = std::min(chunk, r.S - i0);
        Images in;
        if (stored) {
            in = *stored;
            in.p = stored->at(i0);
            in.n = n;
        }
        Images z{nullptr, g, f, kernels::channel_stride(f), n, z16};
        if (pb.first) {
            r.support_conv(pb.support, z, sinks, i0, r.pk.bf16, &pb.cross_v, &in, &zt);
            continue;
        }
        z = images(r.ar, r.ar.plan.chunk_z, g, f, n, 0, z16);
        if (stored) r.conv(pb.cross_v, in, z, &zt, 0, false, r.pk.bf16);
        else r.cross_conv_concat(pb.cross_v, *low, *skip, i0, z, zt, r.pk.bf16);
        r.support_conv(pb.support, z, sinks, i0, r.pk.bf16);
    }
    if (r.s0 + r.S == r.total)
        for (const Images* im : {&sinks.mean, &sinks.pooled_mean})
            if (im->p) r.divide(*im, float(r.total));
}

// ---- the plan ----

// Sizes every buffer the schedule below takes for a network packed as `pk`, images of H x W and
// groups of G supports: each slot as large as its largest use. The one count of the engine's
// memory: forward() allocates it, the memory bound checks it.
inline Plan make_plan(const Model& m, const Packed& pk, int64_t H, int64_t W, int64_t G) {
    const Config& cfg = m.config();
    const int64_t L = cfg.levels(), D = int64_t(cfg.decoder.size());
    Plan p;
    p.G = G;
    p.threads = max_threads();
    for (int64_t k = 0, h = H, w = W; k < L; ++k, h /= 2, w /= 2) p.geoms.push_back(kernels::geom(h, w));
    p.t_enc.resize(size_t(L)), p.mean_v.resize(size_t(L)), p.skip_mean.resize(size_t(L)), p.g_skip.resize(size_t(L));
    p.zt.resize(size_t(L + D));
    auto floats = [](Slot& s, int64_t n) { s.floats = std::max(s.floats, n); };
    auto ask = [&](Slot& s, const Geom& g, int64_t c, int64_t n, int64_t cp = 0, bool bf16 = false) {
        floats(s, n * g.pixels() * (cp ? cp : kernels::channel_stride(c)) / (bf16 ? 2 : 1));
    };
    int64_t max_cp = kernels::channel_stride(cfg.support_in);
    auto support_path = [&](const PackedBlock& pb, const Geom& g, int64_t f, int64_t c, int64_t cin, bool concat) {
        max_cp = std::max({max_cp, kernels::channel_stride(f), kernels::channel_stride(c), kernels::channel_stride(cin)});
        if (!pb.first) ask(p.chunk_z, g, f, chunk_supports(pb, g, f, G), 0, support16(pk, pb));
        const int64_t bh = pb.first ? 8 : 4;
        floats(p.band, bh * g.wp * kernels::channel_stride(c) * p.threads);
        if (pb.first) floats(p.zband, (bh + 2) * g.wp * kernels::channel_stride(f) * p.threads);
        if (concat) floats(p.concat_band, 6 * g.wp * kernels::channel_stride(cin) * p.threads);
    };
    ask(p.t_in, p.geoms[0], 1, 1, 1);
    ask(p.mean_v0, p.geoms[0], 2, 1, 2);
    ask(p.g_v, p.geoms[0], 2, G, 2);
    for (int64_t k = 0; k < L; ++k) {
        const CrossBlock& blk = m.encoder()[size_t(k)];
        const int64_t f = blk.features.cross, c = blk.features.conv;
        const Geom& gk = p.geoms[size_t(k)];
        ask(p.t_enc[size_t(k)], gk, c, 1);
        ask(p.zt[size_t(k)], gk, f, 1);
        ask(p.zm, gk, f, 1);
        if (k > 0) ask(p.t_pool, gk, m.encoder()[size_t(k - 1)].features.conv, 1);
        if (k + 1 < L) {
            const Geom& next = p.geoms[size_t(k + 1)];
            ask(p.mean_v[size_t(k + 1)], next, c, 1);
            ask(p.skip_mean[size_t(k)], gk, c, 1);
            const bool pin16 = support16(pk, pk.enc[size_t(k + 1)]);
            ask(p.g_pin[(k + 1) % 2], next, c, G, 0, pin16);
            if (pin16) floats(p.pool_row, next.w * kernels::channel_stride(c) * p.threads);
            if (k > 0) ask(p.g_skip[size_t(k)], gk, c, G, 0, skip_bf16(pk, L, k));
        } else if (D >= 1) {
            ask(p.prev_mean, gk, c, 1);
            if (D >= 2) ask(p.g_prev[0], gk, c, G, 0, support16(pk, pk.dec[0]));
        }
        if (k + 1 < L || D >= 1) support_path(pk.enc[size_t(k)], gk, f, c, blk.support_in, false);
    }
    for (int64_t d = 0; d < D; ++d) {
        const CrossBlock& blk = m.decoder()[size_t(d)];
        const int64_t f = blk.features.cross, c = blk.features.conv, cin = blk.support_in;
        const Geom& gl = p.geoms[size_t(L - 2 - d)];
        ask(p.t_cat, gl, blk.target_in, 1);
        ask(p.mean_v_dec, gl, cin, 1);
        ask(p.zt[size_t(L + d)], gl, f, 1);
        ask(p.zm, gl, f, 1);
        ask(p.t_dec[d % 2], gl, c, 1);
        max_cp = std::max(max_cp, kernels::channel_stride(blk.target_in));
        if (d + 1 < D) {
            ask(p.prev_mean, gl, c, 1);
            if (d + 2 < D) ask(p.g_prev[(d + 1) % 2], gl, c, G, 0, support16(pk, pk.dec[size_t(d + 1)]));
            support_path(pk.dec[size_t(d)], gl, f, c, cin, true);
        }
    }
    floats(p.scratch, kernels::winograd_scratch_floats(pk.table->tile_group, max_cp, max_cp) * p.threads);
    // Offsets: every slot on a 64-byte boundary.
    std::vector<Slot*> all{&p.t_in, &p.mean_v0, &p.zm, &p.t_pool, &p.t_cat, &p.mean_v_dec, &p.prev_mean, &p.t_dec[0],
                           &p.t_dec[1], &p.g_v, &p.g_pin[0], &p.g_pin[1], &p.g_prev[0], &p.g_prev[1], &p.chunk_z, &p.band,
                           &p.zband, &p.concat_band, &p.pool_row, &p.scratch};
    for (auto* v : {&p.t_enc, &p.mean_v, &p.skip_mean, &p.zt, &p.g_skip})
        for (Slot& s : *v) all.push_back(&s);
    for (Slot* s : all) {
        s->offset = p.floats;
        p.floats += kernels::round_up(s->floats, 16);
    }
    return p;
}

inline int64_t packed_bytes(const Packed& pk) {
    int64_t n = 0;
    for (const auto* blocks : {&pk.enc, &pk.dec})
        for (const PackedBlock& b : *blocks)
            for (const PackedConv* c : {&b.cross_t, &b.cross_v, &b.target, &b.support})
                n += int64_t((c->w.size() + c->bias.size()) * sizeof(float) + c->w16.size() * sizeof(uint16_t));
    return n;
}

// Supports per group under a bound of max_memory_mb (at most S): the largest G whose plan and
// packed weights fit. Error if one support at a time does not.
inline int64_t support_group(const Model& m, const Packed& pk, int64_t H, int64_t W, int64_t S, double max_memory_mb) {
    const double bound = max_memory_mb * double(1 << 20);
    auto need = [&](int64_t G) { return double(packed_bytes(pk) + make_plan(m, pk, H, W, G).bytes()); };
    if (need(1) > bound) {
        char msg[200];
        std::snprintf(msg, sizeof msg, "a memory bound of %.1f MB is below the %.1f MB that this model needs at %lldx%lld "
                      "(packed weights and one support at a time)", max_memory_mb, need(1) / double(1 << 20),
                      (long long)H, (long long)W);
        throw Error(msg);
    }
    int64_t lo = 1, hi = S;  // need(lo) fits; find the largest G that does
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (need(mid) <= bound) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// The kernel table a call with these options uses; throws Error when bf16 is asked for on a
// CPU or build without AVX512_BF16 (no silent fallback: the caller asked for a speed/accuracy
// trade that this machine cannot make).
inline const kernels::Table& table_for(const Options& o) {
    const kernels::Table& t = kernels::select(o.isa);
    if (o.precision == Precision::bf16 && (!t.conv3x3_winograd_bf16 || !kernels::cpu_has_bf16() || !o.winograd))
        throw Error(std::string("bf16 precision needs the AVX512_BF16 instruction set and the Winograd kernels; ") +
                    (kernels::cpu_has_bf16() ? "the selected kernels ('" + std::string(t.name) + "') lack them"
                                             : "this CPU lacks AVX512_BF16") +
                    " (use fp32)");
    return t;
}

// The query (H, W) as the target input T (one image, one channel).
inline void load_target(const Images& T, const float* query) {
    clear_borders(T);
    for (int64_t y = 0; y < T.g.h; ++y)
        for (int64_t x = 0; x < T.g.w; ++x) T.p[(y + 1) * T.g.wp + x + 1] = query[y * T.g.w + x];
}

// V.n supports (image, label) as two-channel images; the arrays point at the first support's (H, W).
inline void load_supports(const Images& V, const float* support_images, const float* support_labels) {
    clear_borders(V);
    const Geom& g = V.g;
    parallel_for(V.n, [&](int64_t i, int) {
        const float* im = support_images + i * g.h * g.w;
        const float* lb = support_labels + i * g.h * g.w;
        float* d = V.at(i);
        for (int64_t y = 0; y < g.h; ++y)
            for (int64_t x = 0; x < g.w; ++x) {
                float* px = d + ((y + 1) * g.wp + x + 1) * 2;
                px[0] = im[y * g.w + x];
                px[1] = lb[y * g.w + x];
            }
    });
}

// Output: logits (H, W) = the 1x1 convolution of the final target T.
inline void output_conv(const Conv& oc, const Images& T, float* out) {
    for (int64_t y = 0; y < T.g.h; ++y)
        for (int64_t x = 0; x < T.g.w; ++x) {
            const float* px = T.p + ((y + 1) * T.g.wp + x + 1) * T.cp;
            float s = 0.0f;
            for (int64_t c = 0; c < T.c; ++c) s += oc.weight[size_t(c)] * px[c];
            out[y * T.g.w + x] = s + oc.bias[0];
        }
}

// ---- the schedule ----

// One query's pass through the network, block by block (see the top of this file).
struct QueryPass {
    const Model& m;
    const Packed& pk;
    Arena& ar;
    const float* images;  // the query's S supports, (S, H, W) each
    const float* labels;
    int64_t S, L, D, HW;
    // Kept across the blocks: the blocks' target outputs, their ZT, the support means.
    std::vector<Images> t_out, zt, mean_in, skip_mean;
    Images prev_mean;
    // The current group's state: its inputs to the next encoder block, its per-support skips,
    // its outputs of the previous block (the decoder's inputs).
    Images group_in, group_prev;
    std::vector<Images> group_skip;

    QueryPass(const Model& model, const Packed& packed, Arena& arena, const float* support_images,
              const float* support_labels, int64_t supports)
        : m(model), pk(packed), ar(arena), images(support_images), labels(support_labels), S(supports),
          L(model.config().levels()), D(int64_t(model.config().decoder.size())),
          HW(arena.plan.geoms[0].h * arena.plan.geoms[0].w), t_out(size_t(L + D)), zt(size_t(L + D)),
          mean_in(size_t(L)), skip_mean(size_t(L)), group_skip(size_t(L)) {}

    const Plan& plan() const { return ar.plan; }

    void load_group(int64_t s0, int64_t n) {
        group_in = engine::images(ar, plan().g_v, plan().geoms[0], 2, n, 2);
        load_supports(group_in, images + s0 * HW, labels + s0 * HW);
    }

    // T for block 0 (the query) and the mean of its support inputs, summed group by group.
    Images load(Images& mean_v, const float* query) {
        Run r{pk, ar, S, 0, S};
        Images T = engine::images(ar, plan().t_in, plan().geoms[0], 1, 1, 1);
        mean_v = engine::images(ar, plan().mean_v0, plan().geoms[0], 2, 1, 2);
        load_target(T, query);
        for (int64_t s0 = 0; s0 < S; s0 += plan().G) {
            load_group(s0, std::min(plan().G, S - s0));
            r.accumulate(mean_v, group_in, s0 == 0);
        }
        r.divide(mean_v, float(S));
        return T;
    }

    // Block j's target path: its input T and mean support input (pooled, or upsampled and
    // concatenated with the skips, from the previous blocks), then its three convolutions.
    // Returns the block's new target.
    Images target_path(int64_t j, Images T, Images mean_v) {
        Run r{pk, ar, S, 0, S};
        const bool dec = j >= L;
        const int64_t d = j - L, level = dec ? L - 2 - d : j;
        const CrossBlock& blk = dec ? m.decoder()[size_t(d)] : m.encoder()[size_t(j)];
        const PackedBlock& pb = dec ? pk.dec[size_t(d)] : pk.enc[size_t(j)];
        const Geom& g = plan().geoms[size_t(level)];
        if (!dec && j > 0) {
            T = engine::images(ar, plan().t_pool, g, t_out[size_t(j - 1)].c, 1);
            r.maxpool(T, t_out[size_t(j - 1)]);
            mean_v = mean_in[size_t(j)];
        } else if (dec) {
            const Images& tsk = t_out[size_t(level)];
            const Images tin = engine::images(ar, plan().t_cat, g, T.c + tsk.c, 1);
            r.up_concat(tin, T, tsk);
            T = tin;
            // mean_i concat(up(prev_i), skip_i) = concat(up(mean_i prev_i), mean_i skip_i): up is linear.
            mean_v = engine::images(ar, plan().mean_v_dec, g, blk.support_in, 1);
            r.up_concat(mean_v, prev_mean, skip_mean[size_t(level)]);
        }
        const int64_t f = blk.features.cross, c = blk.features.conv;
        zt[size_t(j)] = engine::images(ar, plan().zt[size_t(j)], g, f, 1);
        const Images zm = engine::images(ar, plan().zm, g, f, 1);
        t_out[size_t(j)] = engine::images(ar, dec ? plan().t_dec[d % 2] : plan().t_enc[size_t(j)], g, c, 1);
        r.conv(pb.cross_t, T, zt[size_t(j)], nullptr, 0, false, pk.bf16);
        r.conv(pb.cross_v, mean_v, zm, &zt[size_t(j)], 0, false, pk.bf16);
        r.conv(pb.target, zm, t_out[size_t(j)], nullptr, 0, true, pk.bf16);
        return t_out[size_t(j)];
    }

    // Block j's support path for the group of run g, from the group's state; with `means` its
    // outputs are added to the block's means (the pass of block j), else only kept (recomputing).
    void group_block(Run& g, int64_t j, bool means) {
        Sinks sinks;
        if (j < L) {
            const int64_t c = m.encoder()[size_t(j)].features.conv;
            const Geom& gk = plan().geoms[size_t(j)];
            if (j + 1 < L) {
                sinks.pooled = engine::images(ar, plan().g_pin[(j + 1) % 2], plan().geoms[size_t(j + 1)], c, g.S, 0,
                                              support16(pk, pk.enc[size_t(j + 1)]));
                if (j > 0)
                    group_skip[size_t(j)] = sinks.store =
                        engine::images(ar, plan().g_skip[size_t(j)], gk, c, g.S, 0, skip_bf16(pk, L, j));
                if (means) {
                    sinks.pooled_mean = mean_in[size_t(j + 1)];
                    sinks.mean = skip_mean[size_t(j)];
                }
            } else {
                if (D >= 2) group_prev = sinks.store = engine::images(ar, plan().g_prev[0], gk, c, g.S, 0, support16(pk, pk.dec[0]));
                if (means) sinks.mean = prev_mean;
            }
            block_supports(g, pk.enc[size_t(j)], zt[size_t(j)], &group_in, nullptr, nullptr, sinks);
            if (sinks.pooled.p) group_in = sinks.pooled;
        } else {
            const int64_t d = j - L, level = L - 2 - d, c = m.decoder()[size_t(d)].features.conv;
            if (d + 2 < D)
                sinks.store = engine::images(ar, plan().g_prev[(d + 1) % 2], plan().geoms[size_t(level)], c, g.S, 0,
                                             support16(pk, pk.dec[size_t(d + 1)]));
            if (means) sinks.mean = prev_mean;
            block_supports(g, pk.dec[size_t(d)], zt[size_t(j)], nullptr, &group_prev, &group_skip[size_t(level)], sinks);
            if (sinks.store.p) group_prev = sinks.store;
        }
    }

    // Block j's support path for all supports, group by group, into the block's means. A group
    // that is not all the supports first recomputes its inputs through blocks 0 .. j-1.
    void support_path(int64_t j) {
        const bool dec = j >= L;
        const int64_t level = dec ? L - 2 - (j - L) : j;
        const int64_t c = dec ? m.decoder()[size_t(j - L)].features.conv : m.encoder()[size_t(j)].features.conv;
        const Geom& g = plan().geoms[size_t(level)];
        if (!dec && j + 1 < L) {
            mean_in[size_t(j + 1)] = engine::images(ar, plan().mean_v[size_t(j + 1)], plan().geoms[size_t(j + 1)], c, 1);
            skip_mean[size_t(j)] = engine::images(ar, plan().skip_mean[size_t(j)], g, c, 1);
        } else {
            prev_mean = engine::images(ar, plan().prev_mean, g, c, 1);
        }
        const int64_t G = plan().G;
        for (int64_t s0 = 0; s0 < S; s0 += G) {
            Run group{pk, ar, std::min(G, S - s0), s0, S};
            if (G < S) {
                load_group(s0, group.S);
                for (int64_t i = 0; i < j; ++i) group_block(group, i, false);
            }
            group_block(group, j, true);
        }
    }
};

// The per-call state: the arena that a call's plan lays out, grown to the largest plan it served.
class Workspace {
public:
    float* reserve(int64_t floats) {
        largest_ = std::max(largest_, floats);
        return arena_.reserve(floats);
    }
    // The largest plan this workspace has served, in bytes (as Plan::bytes counts them).
    int64_t bytes() const { return largest_ * int64_t(sizeof(float)); }

private:
    Buffer arena_;
    int64_t largest_ = 0;
};

// The packed weights of every kernel table and precision a model has been run with, and a
// pool of workspaces for concurrent callers: shared by all copies of a Model.
class Cache {
public:
    std::shared_ptr<const Packed> packed(const Model& m, const kernels::Table& t, bool bf16, bool winograd) {
        std::lock_guard<std::mutex> lock(mu_);
        std::shared_ptr<const Packed>& p = packed_[{t.isa, int(bf16) + 2 * int(winograd)}];
        if (!p) {
            auto q = std::make_shared<Packed>();
            q->table = &t;
            q->bf16 = bf16;
            for (size_t k = 0; k < m.encoder().size(); ++k) q->enc.push_back(pack_block(t, bf16, winograd, m.encoder()[k], k == 0));
            for (const CrossBlock& b : m.decoder()) q->dec.push_back(pack_block(t, bf16, winograd, b, false));
            p = q;
        }
        return p;
    }
    std::unique_ptr<Workspace> take() {
        std::lock_guard<std::mutex> lock(mu_);
        if (free_.empty()) return std::make_unique<Workspace>();
        std::unique_ptr<Workspace> w = std::move(free_.back());
        free_.pop_back();
        return w;
    }
    void give(std::unique_ptr<Workspace> w) {
        std::lock_guard<std::mutex> lock(mu_);
        free_.push_back(std::move(w));
    }

private:
    std::mutex mu_;
    std::map<std::pair<int, int>, std::shared_ptr<const Packed>> packed_;
    std::vector<std::unique_ptr<Workspace>> free_;
};

// What a call needs: the packed weights and the arena of its plan, with groups of `group`
// supports (0: as the options decide, all S unless bounded).
struct Memory {
    int64_t packed_bytes = 0, workspace_bytes = 0, group = 0;
};
UNIVERSEG_API Memory memory(const Model& m, int64_t S, int64_t H, int64_t W, const Options& opt, int64_t group = 0);

// logits (B,1,H,W); inputs as in Model::forward, unchecked; the per-call buffers in `ws`.
UNIVERSEG_API void forward(const Model& m, Workspace& ws, const float* query, const float* support_images,
                           const float* support_labels, int64_t B, int64_t S, int64_t H, int64_t W, float* logits,
                           const Options& opt);

#if UNIVERSEG_WITH_IMPLEMENTATION

UNIVERSEG_API std::shared_ptr<Cache> make_cache() { return std::make_shared<Cache>(); }

UNIVERSEG_API Memory memory(const Model& m, int64_t S, int64_t H, int64_t W, const Options& opt, int64_t group) {
    const std::shared_ptr<const Packed> pk =
        engine_cache(m)->packed(m, table_for(opt), opt.precision == Precision::bf16, opt.winograd);
    Memory out;
    out.group = group > 0 ? group : opt.max_memory_mb > 0 ? support_group(m, *pk, H, W, S, opt.max_memory_mb) : S;
    out.packed_bytes = packed_bytes(*pk);
    out.workspace_bytes = make_plan(m, *pk, H, W, out.group).bytes();
    return out;
}

UNIVERSEG_API void forward(const Model& m, Workspace& ws, const float* query, const float* support_images,
                           const float* support_labels, int64_t B, int64_t S, int64_t H, int64_t W, float* logits,
                           const Options& opt) {
    const kernels::Table& table = table_for(opt);
    const std::shared_ptr<const Packed> pk =
        engine_cache(m)->packed(m, table, opt.precision == Precision::bf16, opt.winograd);
    const int64_t G = opt.max_memory_mb > 0 ? support_group(m, *pk, H, W, S, opt.max_memory_mb) : S;
    const Plan plan = make_plan(m, *pk, H, W, G);
    Arena ar{plan, ws.reserve(plan.floats)};
    const int64_t HW = H * W, J = m.config().levels() + int64_t(m.config().decoder.size());
    for (int64_t b = 0; b < B; ++b) {
        QueryPass pass(m, *pk, ar, support_images + b * S * HW, support_labels + b * S * HW, S);
        Images mean_v;
        Images T = pass.load(mean_v, query + b * HW);
        for (int64_t j = 0; j < J; ++j) {
            T = pass.target_path(j, T, mean_v);
            if (j + 1 < J) pass.support_path(j);  // the last block's support outputs are never used
        }
        output_conv(m.out_conv(), T, logits + b * HW);
    }
}

}  // namespace engine

// A workspace from the model's pool; under a memory bound a fresh one, so that nothing an
// earlier call left behind counts against the bound.
UNIVERSEG_API void Model::forward(const float* query, const float* support_images, const float* support_labels,
                                  int64_t B, int64_t S, int64_t H, int64_t W, float* logits,
                                  const engine::Options& options) const {
    check_inputs(query, support_images, support_labels, B, S, H, W);
    if (options.max_memory_mb > 0) {
        engine::Workspace own;
        return engine::forward(*this, own, query, support_images, support_labels, B, S, H, W, logits, options);
    }
    std::unique_ptr<engine::Workspace> ws = engine_->take();
    struct Return {
        engine::Cache& cache;
        std::unique_ptr<engine::Workspace>& w;
        ~Return() { cache.give(std::move(w)); }
    } back{*engine_, ws};
    engine::forward(*this, *ws, query, support_images, support_labels, B, S, H, W, logits, options);
}

namespace engine {
#endif  // UNIVERSEG_WITH_IMPLEMENTATION

}  // namespace engine
}  // namespace universeg
