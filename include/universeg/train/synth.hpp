// universeg/synth.hpp - synthetic segmentation tasks for training UniverSeg without data.
//
// A task is a random generative recipe (TaskParams): how label maps are drawn (smooth
// regions, nested level sets, cell-like blobs with optional nuclei, organ-like shapes at
// consistent positions, vessel-like thin structures, texture-only regions), how every label
// looks (intensity, texture, rims, per-object variation; for the Cells and Anatomy families
// and fundus-like vessels, the looks of real modalities: fluorescence, stained histology,
// CT, MRI, ultrasound), how images are degraded (bias field, blur, noise, correlated
// speckle, gamma, a round field of view), which labels form the binary target, and the task
// augmentations of the paper (flips, boundaries instead of regions, intensity inversion,
// edge-filtered images). Every image of a task (supports and query alike) follows the same
// recipe with its own random layout and per-image augmentation (affine, elastic,
// intensity, noise), so the query can only be segmented by reading the supports.
//
//   TaskParams t = sample_task(rng, size);                  // one task
//   sample_image(t, rng, image, label);                     // one member: size*size floats each
//   SynthTask task = synthetic_task(seed, n, size);         // n images of one task
//   Batch b = synthetic_batch(seed, step, B, S, size);      // B tasks, S supports + 1 query each
//
// Images are min-max normalised to [0, 1] (as the segmentation tool prepares real images);
// labels are 0/1. Everything is a function of the seed: the same seed gives the same tasks
// on every machine and thread count.
#pragma once

#include "../core/api.hpp"
#include "../core/random.hpp"
#include "../core/tensor.hpp"
#include "batch.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace universeg {

// ---- image primitives (square size x size planes, row-major) ---------------------------------

namespace synth {

constexpr double kPi = 3.141592653589793;

// Smooth random field with features about `scale` pixels apart: Gaussian values on a coarse
// grid, Catmull-Rom interpolated, normalised to mean 0 and standard deviation 1.
inline std::vector<float> smooth_field(Rng& rng, int64_t n, double scale) {
    scale = std::max(scale, 1.0);
    const int64_t g = int64_t(std::ceil(double(n) / scale)) + 4;
    std::vector<double> grid(size_t(g * g));
    for (double& v : grid) v = rng.normal();
    const double oy = rng.uniform(), ox = rng.uniform();
    auto cubic = [](double t, double a, double b, double c, double d) {
        return b + 0.5 * t * (c - a + t * (2 * a - 5 * b + 4 * c - d + t * (3 * (b - c) + d - a)));
    };
    // Interpolate along x for every grid row once per output column, then along y.
    std::vector<double> cols(size_t(g * n));
    for (int64_t x = 0; x < n; ++x) {
        const double fx = double(x) / scale + ox + 1;
        const int64_t ix = int64_t(fx);
        const double tx = fx - double(ix);
        for (int64_t r = 0; r < g; ++r) {
            const double* row = grid.data() + r * g;
            cols[size_t(r * n + x)] = cubic(tx, row[ix - 1], row[ix], row[ix + 1], row[ix + 2]);
        }
    }
    std::vector<float> out(size_t(n * n));
    double sum = 0, sum2 = 0;
    for (int64_t y = 0; y < n; ++y) {
        const double fy = double(y) / scale + oy + 1;
        const int64_t iy = int64_t(fy);
        const double ty = fy - double(iy);
        for (int64_t x = 0; x < n; ++x) {
            const double v = cubic(ty, cols[size_t((iy - 1) * n + x)], cols[size_t(iy * n + x)],
                                   cols[size_t((iy + 1) * n + x)], cols[size_t((iy + 2) * n + x)]);
            out[size_t(y * n + x)] = float(v);
            sum += v, sum2 += v * v;
        }
    }
    const double mean = sum / double(n * n), sd = std::sqrt(std::max(1e-12, sum2 / double(n * n) - mean * mean));
    for (float& v : out) v = float((v - mean) / sd);
    return out;
}

// Separable Gaussian blur with zero-flux (clamped) borders.
inline void blur(std::vector<float>& img, int64_t n, double sigma) {
    if (sigma < 0.3) return;
    const int64_t r = int64_t(std::ceil(3 * sigma));
    std::vector<float> k(size_t(2 * r + 1)), tmp(img.size());
    double s = 0;
    for (int64_t i = -r; i <= r; ++i) s += k[size_t(i + r)] = float(std::exp(-0.5 * double(i * i) / (sigma * sigma)));
    for (float& v : k) v = float(v / s);
    for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x) {
            float a = 0;
            for (int64_t i = -r; i <= r; ++i) a += k[size_t(i + r)] * img[size_t(y * n + std::clamp(x + i, int64_t(0), n - 1))];
            tmp[size_t(y * n + x)] = a;
        }
    for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x) {
            float a = 0;
            for (int64_t i = -r; i <= r; ++i) a += k[size_t(i + r)] * tmp[size_t(std::clamp(y + i, int64_t(0), n - 1) * n + x)];
            img[size_t(y * n + x)] = a;
        }
}

inline void normalize01(std::vector<float>& img) {
    const auto mm = std::minmax_element(img.begin(), img.end());
    const float lo = *mm.first, span = *mm.second - *mm.first;
    for (float& v : img) v = span > 1e-12f ? (v - lo) / span : 0.0f;
}

// Gradient magnitude (Sobel) of an image: the "edge-filtered" task augmentation.
inline std::vector<float> sobel(const std::vector<float>& img, int64_t n) {
    std::vector<float> out(img.size());
    auto at = [&](int64_t y, int64_t x) {
        return img[size_t(std::clamp(y, int64_t(0), n - 1) * n + std::clamp(x, int64_t(0), n - 1))];
    };
    for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x) {
            const float gx = at(y - 1, x + 1) + 2 * at(y, x + 1) + at(y + 1, x + 1) - at(y - 1, x - 1) - 2 * at(y, x - 1) - at(y + 1, x - 1);
            const float gy = at(y + 1, x - 1) + 2 * at(y + 1, x) + at(y + 1, x + 1) - at(y - 1, x - 1) - 2 * at(y - 1, x) - at(y - 1, x + 1);
            out[size_t(y * n + x)] = std::sqrt(gx * gx + gy * gy);
        }
    return out;
}

// Pixels of a 0/1 mask with a 4-neighbour outside it, dilated inwards to `width` pixels.
inline std::vector<float> boundary(const std::vector<float>& mask, int64_t n, int width) {
    std::vector<float> cur = mask, out(mask.size(), 0.0f);
    for (int it = 0; it < width; ++it) {
        std::vector<float> next = cur;
        for (int64_t y = 0; y < n; ++y)
            for (int64_t x = 0; x < n; ++x) {
                const size_t i = size_t(y * n + x);
                if (cur[i] < 0.5f) continue;
                const bool edge = (y > 0 && cur[i - size_t(n)] < 0.5f) || (y + 1 < n && cur[i + size_t(n)] < 0.5f) ||
                                  (x > 0 && cur[i - 1] < 0.5f) || (x + 1 < n && cur[i + 1] < 0.5f);
                if (edge) out[i] = 1.0f, next[i] = 0.0f;
            }
        cur.swap(next);
    }
    return out;
}

// A closed star-shaped outline: radius factor 1 + sum_k a_k cos(k theta + phi_k).
struct Shape {
    double cy = 0, cx = 0, ry = 1, rx = 1, angle = 0;
    std::array<double, 4> amp{}, phase{};
};

inline Shape random_shape(Rng& rng, double cy, double cx, double r, double ecc, double irregular) {
    Shape s;
    s.cy = cy, s.cx = cx;
    const double e = rng.uniform(1.0, ecc);
    s.ry = r * std::sqrt(e), s.rx = r / std::sqrt(e);
    s.angle = rng.uniform(0, kPi);
    for (size_t k = 0; k < 4; ++k) {
        s.amp[k] = irregular * rng.uniform(0, 1) / double(k + 1);
        s.phase[k] = rng.uniform(0, 2 * kPi);
    }
    return s;
}

// Calls f(pixel index) for every pixel inside the shape.
template <class F>
void for_shape(const Shape& s, int64_t n, F&& f) {
    double total = 1;
    for (double a : s.amp) total += a;
    const double reach = std::max(s.ry, s.rx) * total + 1;
    const int64_t y0 = std::max<int64_t>(0, int64_t(s.cy - reach)), y1 = std::min<int64_t>(n - 1, int64_t(s.cy + reach) + 1);
    const int64_t x0 = std::max<int64_t>(0, int64_t(s.cx - reach)), x1 = std::min<int64_t>(n - 1, int64_t(s.cx + reach) + 1);
    const double c = std::cos(s.angle), sn = std::sin(s.angle);
    for (int64_t y = y0; y <= y1; ++y)
        for (int64_t x = x0; x <= x1; ++x) {
            const double dy = double(y) - s.cy, dx = double(x) - s.cx;
            const double u = (c * dx + sn * dy) / s.rx, v = (-sn * dx + c * dy) / s.ry;
            const double rho = std::sqrt(u * u + v * v);
            double lim = 1;
            if (rho > 1e-9) {
                const double th = std::atan2(v, u);
                for (size_t k = 0; k < 4; ++k) lim += s.amp[k] * std::cos(double(k + 1) * th + s.phase[k]);
            }
            if (rho < lim) f(y * n + x);
        }
}

}  // namespace synth

// ---- the task recipe ---------------------------------------------------------------------------

// The first six are abstract shapes with random looks; Cells (fluorescence or stained
// histology) and Anatomy (CT / MRI / ultrasound / X-ray) give those geometries the looks of
// real modalities: intensity-ordered nested structures, low-contrast neighbours, speckle.
enum class SynthFamily { Regions, Levels, Blobs, Organs, Thin, Texture, Cells, Anatomy };
constexpr int kSynthFamilies = 8;
inline const char* synth_family_name(SynthFamily f) {
    static const char* names[] = {"regions", "levels", "blobs", "organs", "thin", "texture", "cells", "anatomy"};
    return names[int(f)];
}
// How often each family is drawn (relative): the modality-like families most, texture-only
// tasks least (often too ambiguous for 16 supports to define).
constexpr double kSynthFamilyWeight[kSynthFamilies] = {1.0, 1.0, 1.0, 0.7, 1.3, 0.5, 2.2, 1.6};

// How one label looks.
struct LabelLook {
    double mean = 0.5;       // base intensity
    double tex_amp = 0;      // texture amplitude
    double tex_scale = 1;    // texture feature size in pixels
    int tex_kind = 0;        // 0 smooth noise, 1 stripes, 2 spots
    double tex_angle = 0;    // stripe orientation
    double object_sd = 0;    // per-object intensity spread (blobs)
    double rim = 0;          // intensity added on the label's outline (membranes, halos)
};

struct TaskParams {
    SynthFamily family = SynthFamily::Regions;
    int64_t size = 64;
    int n_labels = 2;          // label values 0 .. n_labels-1
    uint32_t target = 2;       // bit l set: label l belongs to the target
    // Regions / Levels / Texture geometry
    double scale = 16;         // feature size in pixels
    int fields = 3;            // Regions: number of competing fields
    std::array<double, 3> levels{};  // Levels: increasing thresholds (nested labels)
    // Blobs
    double count = 10, radius = 6, radius_spread = 0.3, ecc = 1.5, irregular = 0.1;
    bool packed = false;       // cells touch (placed by rejection on overlap otherwise)
    bool second_kind = false;  // label 2: another kind of object (other size and look)
    double second_radius = 4;
    bool nucleus = false;      // label n-1: an inner object in every cell
    double nucleus_ratio = 0.5;
    // Organs: a body (label 1) holding organs (labels 2..) at fixed places
    synth::Shape body;
    std::vector<synth::Shape> organs;
    double jitter = 0.03;      // per-image position jitter, fraction of the size
    // Thin structures (label 1 = vessels, label 2 = optional blobs)
    double thickness = 2;
    bool tree = true;          // branching random walks, else ridges of a smooth field
    int curves = 4;
    bool thin_blobs = false;
    std::vector<LabelLook> looks;
    // degradation
    double blur = 0, noise = 0, speckle = 0, bias = 0, bias_scale = 32, gamma = 1, clutter = 0;
    double speckle_grain = 0;  // blur of the speckle field: ultrasound-like correlated grains
    double fov = 0;            // > 0: a circular field of view of this radius (fraction of size), dark outside
    // task augmentation (identical for every image of the task)
    bool flip_y = false, flip_x = false, transpose = false, invert = false, edges = false, outline = false;
    int outline_width = 1;
    // per-image augmentation
    double rotate = 0, zoom = 0, shift = 0, elastic = 0, elastic_scale = 16, intensity_jitter = 0;
};

namespace synth {

inline LabelLook plain_look(double mean) {
    LabelLook k;
    k.mean = std::clamp(mean, 0.0, 1.0);
    return k;
}

inline void add_texture(LabelLook& k, Rng& rng, double amp_lo, double amp_hi, double scale_lo, double scale_hi, int kind) {
    k.tex_amp = rng.log_uniform(amp_lo, amp_hi);
    k.tex_scale = rng.log_uniform(scale_lo, scale_hi);
    k.tex_kind = kind;
    k.tex_angle = rng.uniform(0, kPi);
}

// Microscopy: fluorescence (dark background, bright cells, brighter nuclei; sometimes only
// the nuclei are stained) or stained histology in grey (light fibrous stroma, paler cytoplasm,
// dark granular nuclei). Objects vary in brightness; out-of-focus haze, blur, shot-like noise.
inline void cell_looks(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    const int nucleus = t.nucleus ? t.n_labels - 1 : -1;
    std::vector<LabelLook> k(size_t(t.n_labels));
    if (rng.chance(0.55)) {  // fluorescence
        k[0] = plain_look(rng.uniform(0, 0.12));
        if (rng.chance(0.5)) add_texture(k[0], rng, 0.005, 0.04, 2, n / 8, 0);
        const bool nuclear_stain = t.nucleus && rng.chance(0.3);
        k[1] = plain_look(nuclear_stain ? k[0].mean + rng.uniform(0, 0.06) : rng.uniform(0.25, 0.6));
        k[1].object_sd = nuclear_stain ? 0.01 : rng.uniform(0.03, 0.18);
        if (!nuclear_stain && rng.chance(0.5)) add_texture(k[1], rng, 0.02, 0.1, 0.7, n / 32, int(rng.below(3)));
        if (!nuclear_stain && rng.chance(0.15)) k[1].rim = rng.uniform(0.1, 0.3);
        if (nuclear_stain) t.target = 1u << nucleus;
        if (t.second_kind) k[2] = plain_look(k[1].mean + (rng.chance(0.5) ? 1 : -1) * rng.uniform(0.12, 0.3)),
                           k[2].object_sd = rng.uniform(0.02, 0.1);
        if (nucleus > 0) {
            k[size_t(nucleus)] = plain_look(std::max(k[1].mean, 0.3) + rng.uniform(0.15, 0.45));
            k[size_t(nucleus)].object_sd = rng.uniform(0.03, 0.15);
            if (rng.chance(0.3)) add_texture(k[size_t(nucleus)], rng, 0.02, 0.1, 0.7, 3, 2);
        }
        t.clutter = rng.chance(0.4) ? rng.uniform(0, 0.1) : 0.0;
    } else {  // histology, grey
        k[0] = plain_look(rng.uniform(0.6, 0.95));
        add_texture(k[0], rng, 0.03, 0.15, 2, n / 10, rng.chance(0.3) ? 1 : 0);
        k[1] = plain_look(t.nucleus ? k[0].mean - rng.uniform(0.08, 0.3) : rng.uniform(0.1, 0.45));
        add_texture(k[1], rng, 0.02, 0.12, 0.7, 3, int(rng.below(3)));
        k[1].object_sd = rng.uniform(0.02, 0.1);
        if (t.second_kind) k[2] = plain_look(k[1].mean + (rng.chance(0.5) ? 1 : -1) * rng.uniform(0.12, 0.3)),
                           add_texture(k[2], rng, 0.02, 0.1, 0.7, 3, 0);
        if (nucleus > 0) {
            k[size_t(nucleus)] = plain_look(k[1].mean - rng.uniform(0.2, 0.45));
            add_texture(k[size_t(nucleus)], rng, 0.03, 0.15, 0.7, 2.5, rng.chance(0.5) ? 2 : 0);
            k[size_t(nucleus)].object_sd = rng.uniform(0.02, 0.12);
            if (k[size_t(nucleus)].mean < 0.02) k[size_t(nucleus)].mean = 0.02;
        }
        t.clutter = 0;
    }
    t.looks = k;
    t.blur = rng.chance(0.6) ? rng.uniform(0, 1.2) * n / 64.0 : 0.0;
    t.noise = rng.log_uniform(0.005, 0.08);
    t.speckle = 0;
    t.bias = rng.chance(0.5) ? rng.uniform(0, 0.5) : 0.0;
    t.gamma = rng.log_uniform(0.6, 1.6);
}

// Radiology: CT / X-ray (dark air outside the body, organs a little brighter or darker than
// their surroundings), MRI (strong bias field) or ultrasound (correlated speckle, mostly
// darker cysts and organs), partial-volume blur, sometimes a round field of view.
inline void anatomy_looks(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    const double style = rng.uniform();
    const bool ultrasound = style < 0.25, mri = style >= 0.25 && style < 0.55;
    std::vector<LabelLook> k(size_t(t.n_labels));
    k[0] = plain_look(ultrasound ? rng.uniform(0.05, 0.3) : rng.uniform(0, 0.1));
    k[1] = plain_look(rng.uniform(0.3, 0.7));
    add_texture(k[1], rng, 0.01, 0.06, 2, n / 16, 0);
    for (int l = 2; l < t.n_labels; ++l) {
        const double sign = ultrasound ? (rng.chance(0.7) ? -1 : 1) : (rng.chance(0.5) ? -1 : 1);
        k[size_t(l)] = plain_look(k[1].mean + sign * (ultrasound ? rng.uniform(0.12, 0.35) : rng.uniform(0.04, 0.3)));
        if (k[size_t(l)].mean < 0.02) k[size_t(l)].mean = k[1].mean + rng.uniform(0.04, 0.3);
        if (rng.chance(0.5)) add_texture(k[size_t(l)], rng, 0.005, 0.05, 1, n / 16, 0);
        if (rng.chance(0.1)) k[size_t(l)].rim = rng.uniform(-0.2, 0.2);
    }
    t.looks = k;
    t.blur = rng.uniform(0.3, 1.5) * n / 64.0;
    t.noise = rng.log_uniform(0.005, 0.06);
    t.speckle = ultrasound ? rng.uniform(0.2, 0.5) : 0.0;
    t.speckle_grain = ultrasound ? rng.uniform(0.6, 1.6) * n / 64.0 : 0.0;
    t.bias = mri ? rng.uniform(0.2, 0.7) : ultrasound ? rng.uniform(0, 0.4) : 0.0;
    t.bias_scale = n * rng.uniform(0.4, 1.0);
    t.gamma = rng.log_uniform(0.7, 1.4);
    t.clutter = 0;
    t.fov = rng.chance(ultrasound ? 0.5 : 0.25) ? rng.uniform(0.42, 0.5) : 0.0;
}

// Vessels must stay visible: at least 0.25 from the background and not blurred away;
// sometimes fundus-like (dark vessels on a lit textured disc, vignetting, round field of view).
inline void vessel_looks(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    t.blur = std::min(t.blur, 0.6 * t.thickness);
    if (rng.chance(0.4)) {
        t.looks[0] = plain_look(rng.uniform(0.4, 0.8));
        add_texture(t.looks[0], rng, 0.02, 0.08, 3, n / 8, 0);
        t.looks[1] = plain_look(t.looks[0].mean - rng.uniform(0.2, 0.4));
        t.fov = rng.uniform(0.42, 0.49);
        t.bias = rng.uniform(0.2, 0.5);
        t.bias_scale = n * rng.uniform(0.5, 1.0);
        t.speckle = 0;
        return;
    }
    for (int tries = 0; tries < 20 && std::abs(t.looks[1].mean - t.looks[0].mean) < 0.25; ++tries)
        t.looks[1].mean = rng.uniform(0, 1);
}

}  // namespace synth

namespace synth {

// sample_task's parts, in the order it draws from the generator (the order is the data: the
// bundled weights were trained on what it draws, test_train locks it).

inline SynthFamily pick_family(Rng& rng) {
    double total_weight = 0;
    for (double w : kSynthFamilyWeight) total_weight += w;
    double pick = rng.uniform(0, total_weight);
    for (int f = 0; f < kSynthFamilies; ++f) {
        if (pick < kSynthFamilyWeight[f]) return SynthFamily(f);
        pick -= kSynthFamilyWeight[f];
    }
    return SynthFamily(kSynthFamilies - 1);
}

// How the family's label maps are drawn: fields, levels, blobs, cells, organs, vessels.
inline void sample_layout(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    switch (t.family) {
        case SynthFamily::Regions:
        case SynthFamily::Texture:
            t.fields = int(rng.between(2, 5));
            t.n_labels = t.fields;
            t.scale = n * rng.log_uniform(0.08, 0.5);
            break;
        case SynthFamily::Levels: {
            t.scale = n * rng.log_uniform(0.08, 0.5);
            t.n_labels = int(rng.between(2, 4));
            double lv = rng.uniform(-1.2, 0.8);
            for (int l = 0; l + 1 < t.n_labels; ++l) {
                t.levels[size_t(l)] = lv;
                lv += rng.uniform(0.3, 1.0);
            }
            break;
        }
        case SynthFamily::Blobs:
            t.radius = n * rng.log_uniform(0.02, 0.15);
            t.count = std::min(150.0, rng.uniform(0.15, 0.7) * n * n / (kPi * t.radius * t.radius) * rng.uniform(0.2, 1));
            t.count = std::max(t.count, 1.0);
            t.radius_spread = rng.uniform(0, 0.4);
            t.ecc = rng.uniform(1, 2.5);
            t.irregular = rng.uniform(0, 0.25);
            t.packed = rng.chance(0.3);
            t.n_labels = 2;
            if (rng.chance(0.3)) {
                t.second_kind = true;
                t.second_radius = t.radius * rng.log_uniform(0.4, 2.5);
                t.n_labels = 3;
            }
            if (rng.chance(0.3)) {
                t.nucleus = true;
                t.nucleus_ratio = rng.uniform(0.3, 0.65);
                t.n_labels += 1;
            }
            break;
        case SynthFamily::Cells:
            t.radius = n * rng.log_uniform(0.025, 0.12);
            t.count = std::min(200.0, rng.uniform(0.1, 0.6) * n * n / (kPi * t.radius * t.radius));
            t.count = std::max(t.count, 2.0);
            t.radius_spread = rng.uniform(0.05, 0.35);
            t.ecc = rng.uniform(1, 1.8);
            t.irregular = rng.uniform(0, 0.2);
            t.packed = rng.chance(0.5);
            t.n_labels = 2;
            if (rng.chance(0.15)) {
                t.second_kind = true;
                t.second_radius = t.radius * rng.log_uniform(0.5, 2.0);
                t.n_labels = 3;
            }
            if (rng.chance(0.6)) {
                t.nucleus = true;
                t.nucleus_ratio = rng.uniform(0.35, 0.7);
                t.n_labels += 1;
            }
            break;
        case SynthFamily::Organs:
        case SynthFamily::Anatomy: {
            t.body = random_shape(rng, n * rng.uniform(0.45, 0.55), n * rng.uniform(0.45, 0.55), n * rng.uniform(0.3, 0.5), 1.4,
                                  0.1);
            const int count = int(rng.between(1, 5));
            for (int k = 0; k < count; ++k) {
                const double r = std::min(t.body.rx, t.body.ry) * rng.log_uniform(0.12, 0.55);
                const double a = rng.uniform(0, 2 * kPi), d = rng.uniform(0, 0.6);
                t.organs.push_back(random_shape(rng, t.body.cy + d * t.body.ry * std::sin(a), t.body.cx + d * t.body.rx * std::cos(a),
                                                r, 2.2, 0.25));
            }
            t.jitter = rng.uniform(0.0, 0.06);
            t.n_labels = 2 + count;
            break;
        }
        case SynthFamily::Thin:
            t.thickness = std::max(1.0, n / 128.0 * rng.log_uniform(1.0, 5.0));
            t.tree = rng.chance(0.6);
            t.curves = int(rng.between(1, 8));
            t.scale = n * rng.log_uniform(0.1, 0.4);
            t.thin_blobs = rng.chance(0.3);
            t.n_labels = t.thin_blobs ? 3 : 2;
            break;
    }
}

// The binary target: usually one non-background label, sometimes two, rarely the background.
inline void sample_target(TaskParams& t, Rng& rng) {
    const int pick = int(rng.between(1, t.n_labels - 1));
    t.target = 1u << pick;
    if (t.family == SynthFamily::Regions || t.family == SynthFamily::Texture) t.target = 1u << rng.below(t.n_labels);
    if (t.n_labels > 2 && rng.chance(0.2)) t.target |= 1u << rng.between(1, t.n_labels - 1);
    if (t.family == SynthFamily::Blobs && t.nucleus && rng.chance(0.5)) t.target = 1u << (t.n_labels - 1);
    if (t.family == SynthFamily::Thin) t.target = 2u;
    if (t.family == SynthFamily::Cells) {  // nuclei, whole cells, or cytoplasm alone
        const uint32_t nucleus = t.nucleus ? 1u << (t.n_labels - 1) : 0u;
        const double r = rng.uniform();
        t.target = 2u | nucleus;
        if (t.nucleus && r < 0.5) t.target = nucleus;
        else if (t.nucleus && r < 0.62) t.target = 2u;
        if (t.second_kind && rng.chance(0.3)) t.target = 4u;
    }
    if (t.family == SynthFamily::Anatomy) {  // one organ, sometimes the whole body
        t.target = 1u << rng.between(2, t.n_labels - 1);
        if (rng.chance(0.12)) t.target = ((1u << t.n_labels) - 1u) & ~1u;
    }
}

// Every label's look. Texture tasks give every label about the same mean, and every other
// label a texture that differs clearly from the target's in kind, feature size or amplitude:
// only texture tells them apart. Elsewhere most targets are kept visible by intensity.
inline void sample_looks(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    const double common = rng.uniform(0.2, 0.8);
    for (int l = 0; l < t.n_labels; ++l) {
        LabelLook k;
        k.mean = rng.uniform(0, 1);
        if (t.family == SynthFamily::Texture) k.mean = common + rng.uniform(-0.05, 0.05);
        k.tex_kind = int(rng.below(3));
        k.tex_amp = rng.chance(0.4) ? 0.0 : rng.log_uniform(0.01, 0.3);
        if (t.family == SynthFamily::Texture) k.tex_amp = rng.log_uniform(0.05, 0.4);
        k.tex_scale = rng.log_uniform(0.7, n / 16.0);
        k.tex_angle = rng.uniform(0, kPi);
        k.object_sd = rng.chance(0.5) ? rng.uniform(0, 0.15) : 0.0;
        k.rim = rng.chance(0.2) ? rng.uniform(-0.4, 0.4) : 0.0;
        t.looks.push_back(k);
    }
    if (t.family == SynthFamily::Texture) {
        const int tl = int(std::log2(double(t.target & (~t.target + 1u))));  // lowest target label
        const LabelLook& ref = t.looks[size_t(tl)];
        for (int l = 0; l < t.n_labels; ++l) {
            LabelLook& k = t.looks[size_t(l)];
            for (int tries = 0; tries < 20 && !(t.target >> l & 1u); ++tries) {
                if (k.tex_kind != ref.tex_kind || std::abs(std::log(k.tex_scale / ref.tex_scale)) > 0.8 ||
                    std::abs(std::log(k.tex_amp / ref.tex_amp)) > 0.8)
                    break;
                k.tex_kind = int(rng.below(3));
                k.tex_scale = rng.log_uniform(0.7, n / 16.0);
                k.tex_amp = rng.log_uniform(0.05, 0.4);
            }
        }
    }
    if (t.family != SynthFamily::Texture && rng.chance(0.95)) {
        for (int tries = 0; tries < 20; ++tries) {
            double closest = 1;
            for (int l = 0; l < t.n_labels; ++l)
                for (int m = 0; m < t.n_labels; ++m)
                    if ((t.target >> l & 1u) && !(t.target >> m & 1u))
                        closest = std::min(closest, std::abs(t.looks[size_t(l)].mean - t.looks[size_t(m)].mean));
            if (closest >= 0.15) break;
            for (int l = 0; l < t.n_labels; ++l)
                if (t.target >> l & 1u) t.looks[size_t(l)].mean = rng.uniform(0, 1);
        }
    }
}

// How images are degraded (blur, noise, speckle, bias field, gamma, clutter), the task
// augmentations of the paper shared by every image of the task (flips, inversion, edges,
// outlines), and the range of each image's own warp.
inline void sample_degradation_and_augmentation(TaskParams& t, Rng& rng) {
    const double n = double(t.size);
    t.blur = rng.chance(0.5) ? rng.uniform(0, 1.5) * n / 128.0 * 2 : 0.0;
    t.noise = rng.chance(0.8) ? rng.log_uniform(0.005, 0.15) : 0.0;
    t.speckle = rng.chance(0.15) ? rng.uniform(0.1, 0.5) : 0.0;
    t.bias = rng.chance(0.6) ? rng.uniform(0, 0.6) : 0.0;
    t.bias_scale = n * rng.uniform(0.3, 1.0);
    t.gamma = rng.log_uniform(0.5, 2.0);
    t.clutter = rng.chance(0.3) ? rng.uniform(0, 0.15) : 0.0;

    t.flip_y = rng.chance(0.5), t.flip_x = rng.chance(0.5), t.transpose = rng.chance(0.5);
    t.invert = rng.chance(0.25);
    t.edges = rng.chance(0.05);
    t.outline = t.family != SynthFamily::Thin && rng.chance(0.05);
    t.outline_width = int(rng.between(1, 2));

    const bool placed = t.family == SynthFamily::Organs || t.family == SynthFamily::Anatomy;  // keeps its orientation
    t.rotate = placed ? rng.uniform(0, 0.25) : (rng.chance(0.5) ? kPi : rng.uniform(0, 0.5));
    t.zoom = rng.uniform(0, placed ? 0.12 : 0.25);
    t.shift = placed ? rng.uniform(0, 0.05) : 0.0;
    t.elastic = rng.chance(0.5) ? rng.uniform(0, 3.0) * n / 128.0 : 0.0;
    t.elastic_scale = n * rng.uniform(0.1, 0.3);
    t.intensity_jitter = rng.uniform(0, 0.06);
}

}  // namespace synth

// A task's recipe: family, layout, target, looks, degradation and augmentation, and for the
// Cells, Anatomy and vessel families the looks of real modalities.
inline TaskParams sample_task(Rng& rng, int64_t size) {
    TaskParams t;
    t.size = size;
    t.family = synth::pick_family(rng);
    synth::sample_layout(t, rng);
    synth::sample_target(t, rng);
    synth::sample_looks(t, rng);
    synth::sample_degradation_and_augmentation(t, rng);
    if (t.family == SynthFamily::Cells) synth::cell_looks(t, rng);
    if (t.family == SynthFamily::Anatomy) synth::anatomy_looks(t, rng);
    if (t.family == SynthFamily::Thin) synth::vessel_looks(t, rng);
    return t;
}

namespace synth {

// Label map (values 0..n_labels-1) and object ids (distinct per blob, for per-object looks).
struct LabelMap {
    std::vector<int> label, object;
};

inline void draw_disc(std::vector<int>& lab, int64_t n, double cy, double cx, double r, int value) {
    const int64_t y0 = std::max<int64_t>(0, int64_t(cy - r - 1)), y1 = std::min<int64_t>(n - 1, int64_t(cy + r + 1));
    const int64_t x0 = std::max<int64_t>(0, int64_t(cx - r - 1)), x1 = std::min<int64_t>(n - 1, int64_t(cx + r + 1));
    for (int64_t y = y0; y <= y1; ++y)
        for (int64_t x = x0; x <= x1; ++x)
            if ((double(y) - cy) * (double(y) - cy) + (double(x) - cx) * (double(x) - cx) <= r * r) lab[size_t(y * n + x)] = value;
}

// Branching random walks from the border inwards, `thickness` wide, thinning as they branch.
inline void draw_tree(std::vector<int>& lab, int64_t n, Rng& rng, int curves, double thickness, int value) {
    struct Walker { double y, x, dir, r; int64_t steps; };
    std::vector<Walker> todo;
    for (int c = 0; c < curves; ++c) {
        const int side = int(rng.below(4));
        const double p = rng.uniform(0, double(n));
        Walker w{side == 0 ? 0.0 : side == 1 ? double(n - 1) : p, side == 2 ? 0.0 : side == 3 ? double(n - 1) : p, 0,
                 thickness / 2, 0};
        w.dir = std::atan2(double(n) / 2 - w.y, double(n) / 2 - w.x) + rng.uniform(-0.8, 0.8);
        w.steps = int64_t(double(n) * rng.uniform(0.5, 1.5));
        todo.push_back(w);
    }
    int64_t budget = 40 * n;
    while (!todo.empty() && budget > 0) {
        Walker w = todo.back();
        todo.pop_back();
        double turn = 0;
        for (int64_t s = 0; s < w.steps && budget > 0; ++s, --budget) {
            draw_disc(lab, n, w.y, w.x, std::max(0.5, w.r), value);
            turn = 0.8 * turn + rng.normal() * 0.08;
            w.dir += turn;
            w.y += std::sin(w.dir), w.x += std::cos(w.dir);
            if (w.y < -2 || w.x < -2 || w.y > double(n) + 1 || w.x > double(n) + 1) break;
            if (rng.chance(0.015) && todo.size() < 64) {
                Walker b = w;
                b.dir += (rng.chance(0.5) ? 1 : -1) * rng.uniform(0.4, 1.2);
                b.r = std::max(0.5, w.r * rng.uniform(0.6, 0.9));
                b.steps = int64_t(double(w.steps - s) * rng.uniform(0.3, 0.9));
                todo.push_back(b);
            }
        }
    }
}

inline void place_blobs(LabelMap& m, int64_t n, Rng& rng, const TaskParams& t, int& next_object) {
    const double nd = double(n);
    const int64_t count = std::max<int64_t>(1, int64_t(t.count * rng.uniform(0.6, 1.4) + 0.5));
    std::vector<uint8_t> taken(size_t(n * n), 0);
    const int nucleus_label = t.n_labels - 1;
    for (int64_t k = 0; k < count; ++k) {
        const bool second = t.second_kind && rng.chance(0.4);
        const double r0 = second ? t.second_radius : t.radius;
        const double r = std::max(1.0, r0 * std::exp(t.radius_spread * rng.normal()));
        for (int attempt = 0; attempt < 6; ++attempt) {
            const Shape s = random_shape(rng, rng.uniform(-r, nd + r), rng.uniform(-r, nd + r), r, t.ecc, t.irregular);
            std::vector<int64_t> pix;
            bool overlap = false;
            for_shape(s, n, [&](int64_t i) {
                pix.push_back(i);
                overlap = overlap || taken[size_t(i)];
            });
            if (overlap && !t.packed && attempt < 5) continue;
            const int value = second ? 2 : 1, id = next_object++;
            for (int64_t i : pix) m.label[size_t(i)] = value, m.object[size_t(i)] = id, taken[size_t(i)] = 1;
            if (t.nucleus && !second) {
                Shape inner = s;
                inner.rx *= t.nucleus_ratio, inner.ry *= t.nucleus_ratio;
                inner.cy += rng.uniform(-0.2, 0.2) * s.ry, inner.cx += rng.uniform(-0.2, 0.2) * s.rx;
                for (double& a : inner.amp) a *= 0.5;
                for_shape(inner, n, [&](int64_t i) {
                    if (m.object[size_t(i)] == id) m.label[size_t(i)] = nucleus_label;
                });
            }
            break;
        }
    }
}

inline LabelMap draw_labels(const TaskParams& t, Rng& rng) {
    const int64_t n = t.size;
    const double nd = double(n);
    LabelMap m;
    m.label.assign(size_t(n * n), 0);
    m.object.assign(size_t(n * n), 0);
    int next_object = 1;
    switch (t.family) {
        case SynthFamily::Regions:
        case SynthFamily::Texture: {
            std::vector<std::vector<float>> f;
            for (int k = 0; k < t.fields; ++k) f.push_back(smooth_field(rng, n, t.scale * rng.uniform(0.8, 1.25)));
            for (size_t i = 0; i < m.label.size(); ++i) {
                int best = 0;
                for (int k = 1; k < t.fields; ++k)
                    if (f[size_t(k)][i] > f[size_t(best)][i]) best = k;
                m.label[i] = best;
            }
            break;
        }
        case SynthFamily::Levels: {
            const std::vector<float> f = smooth_field(rng, n, t.scale);
            for (size_t i = 0; i < m.label.size(); ++i)
                for (int l = 0; l + 1 < t.n_labels; ++l)
                    if (f[i] > t.levels[size_t(l)]) m.label[i] = l + 1;
            break;
        }
        case SynthFamily::Blobs:
        case SynthFamily::Cells:
            place_blobs(m, n, rng, t, next_object);
            break;
        case SynthFamily::Organs:
        case SynthFamily::Anatomy: {
            auto jittered = [&](Shape s) {
                s.cy += rng.normal() * t.jitter * nd, s.cx += rng.normal() * t.jitter * nd;
                const double z = std::exp(0.08 * rng.normal());
                s.ry *= z, s.rx *= z, s.angle += 0.1 * rng.normal();
                for (double& a : s.amp) a *= std::exp(0.2 * rng.normal());
                return s;
            };
            for_shape(jittered(t.body), n, [&](int64_t i) { m.label[size_t(i)] = 1; });
            for (size_t k = 0; k < t.organs.size(); ++k)
                for_shape(jittered(t.organs[k]), n, [&](int64_t i) { m.label[size_t(i)] = int(k) + 2; });
            break;
        }
        case SynthFamily::Thin: {
            if (t.thin_blobs) {
                TaskParams b = t;
                b.radius = nd * 0.06, b.count = 6, b.packed = false, b.second_kind = false, b.nucleus = false;
                place_blobs(m, n, rng, b, next_object);
                for (int& v : m.label) v = v ? 2 : 0;
            }
            if (t.tree) {
                draw_tree(m.label, n, rng, t.curves, t.thickness, 1);
            } else {
                // Ridges: pixels within thickness/2 of the zero level set of a smooth field.
                const std::vector<float> f = smooth_field(rng, n, t.scale);
                for (int64_t y = 1; y + 1 < n; ++y)
                    for (int64_t x = 1; x + 1 < n; ++x) {
                        const size_t i = size_t(y * n + x);
                        const double gy = 0.5 * (f[i + size_t(n)] - f[i - size_t(n)]), gx = 0.5 * (f[i + 1] - f[i - 1]);
                        if (std::abs(f[i]) < 0.5 * t.thickness * std::sqrt(gy * gy + gx * gx)) m.label[i] = 1;
                    }
            }
            break;
        }
    }
    return m;
}

// A geometric augmentation: the task's flips/transpose, then a random rotation, zoom, shift
// and elastic displacement (smooth fields, `elastic` pixels at most about 2 sigma).
struct Warp {
    int64_t n = 0;
    bool flip_y = false, flip_x = false, transpose = false;
    double cos_a = 1, sin_a = 0, sy = 0, sx = 0, elastic = 0;
    std::vector<float> ey, ex;

    // The source position of output pixel (y, x).
    void source(int64_t y, int64_t x, double& py, double& px) const {
        int64_t yy = transpose ? x : y, xx = transpose ? y : x;
        if (flip_y) yy = n - 1 - yy;
        if (flip_x) xx = n - 1 - xx;
        const double c = (double(n) - 1) / 2;
        double dy = double(yy) - c, dx = double(xx) - c;
        if (elastic > 0) dy += elastic * ey[size_t(y * n + x)], dx += elastic * ex[size_t(y * n + x)];
        py = c + cos_a * dy - sin_a * dx + sy;
        px = c + sin_a * dy + cos_a * dx + sx;
    }
};

inline Warp sample_warp(Rng& rng, int64_t n, bool flip_y, bool flip_x, bool transpose, double rotate, double zoom,
                        double shift, double elastic, double elastic_scale) {
    Warp w;
    w.n = n, w.flip_y = flip_y, w.flip_x = flip_x, w.transpose = transpose;
    const double angle = rng.uniform(-rotate, rotate), z = std::exp(rng.uniform(-zoom, zoom));
    w.cos_a = std::cos(angle) / z, w.sin_a = std::sin(angle) / z;
    w.sy = rng.uniform(-shift, shift) * double(n), w.sx = rng.uniform(-shift, shift) * double(n);
    w.elastic = elastic;
    if (elastic > 0) {
        w.ey = smooth_field(rng, n, elastic_scale);
        w.ex = smooth_field(rng, n, elastic_scale);
    }
    return w;
}

// Index into [0, n) by mirroring at the borders (no streaks from repeated edge pixels).
inline int64_t mirror(int64_t i, int64_t n) {
    const int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

// Nearest-neighbour resampling (label maps, object ids).
template <class V>
std::vector<V> warp_nearest(const std::vector<V>& src, const Warp& w) {
    std::vector<V> out(src.size());
    for (int64_t y = 0; y < w.n; ++y)
        for (int64_t x = 0; x < w.n; ++x) {
            double py, px;
            w.source(y, x, py, px);
            out[size_t(y * w.n + x)] = src[size_t(mirror(std::lround(py), w.n) * w.n + mirror(std::lround(px), w.n))];
        }
    return out;
}

// Bilinear resampling (images).
inline std::vector<float> warp_bilinear(const std::vector<float>& src, const Warp& w) {
    std::vector<float> out(src.size());
    const int64_t n = w.n;
    for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x) {
            double py, px;
            w.source(y, x, py, px);
            const double fy = std::floor(py), fx = std::floor(px), ty = py - fy, tx = px - fx;
            const int64_t y0 = mirror(int64_t(fy), n), y1 = mirror(int64_t(fy) + 1, n);
            const int64_t x0 = mirror(int64_t(fx), n), x1 = mirror(int64_t(fx) + 1, n);
            out[size_t(y * n + x)] = float((1 - ty) * ((1 - tx) * src[size_t(y0 * n + x0)] + tx * src[size_t(y0 * n + x1)]) +
                                           ty * ((1 - tx) * src[size_t(y1 * n + x0)] + tx * src[size_t(y1 * n + x1)]));
        }
    return out;
}

inline void warp_labels(LabelMap& m, const TaskParams& t, Rng& rng) {
    const Warp w = sample_warp(rng, t.size, t.flip_y, t.flip_x, t.transpose, t.rotate, t.zoom, t.shift, t.elastic,
                               t.elastic_scale);
    m.label = warp_nearest(m.label, w);
    m.object = warp_nearest(m.object, w);
}

// Inside the task's circular field of view (always, without one).
inline bool in_fov(const TaskParams& t, int64_t y, int64_t x) {
    if (t.fov <= 0) return true;
    const double c = (double(t.size) - 1) / 2, r = t.fov * double(t.size);
    return (double(y) - c) * (double(y) - c) + (double(x) - c) * (double(x) - c) <= r * r;
}

// One member's label map: the layout, its warp, and nothing outside the field of view.
inline LabelMap draw_member_labels(const TaskParams& t, Rng& rng) {
    LabelMap m = draw_labels(t, rng);
    warp_labels(m, t, rng);
    for (int64_t i = 0; i < t.size * t.size && t.fov > 0; ++i)
        if (!in_fov(t, i / t.size, i % t.size)) m.label[size_t(i)] = 0, m.object[size_t(i)] = 0;
    return m;
}

inline std::vector<float> texture(const LabelLook& k, int64_t n, Rng& rng) {
    std::vector<float> f;
    if (k.tex_kind == 1) {  // stripes, wavy
        f.resize(size_t(n * n));
        const std::vector<float> warp = smooth_field(rng, n, double(n) / 4);
        const double w = 2 * kPi / std::max(2.5, 2 * k.tex_scale), c = std::cos(k.tex_angle), s = std::sin(k.tex_angle);
        const double ph = rng.uniform(0, 2 * kPi);
        for (int64_t y = 0; y < n; ++y)
            for (int64_t x = 0; x < n; ++x)
                f[size_t(y * n + x)] = float(std::sin(w * (c * double(x) + s * double(y)) + ph + 1.5 * warp[size_t(y * n + x)]));
    } else if (k.tex_kind == 2) {  // sparse bright spots (granules)
        f = smooth_field(rng, n, std::max(1.0, k.tex_scale));
        for (float& v : f) v = v > 1.2f ? 2.0f * (v - 1.2f) : 0.0f;
    } else if (k.tex_scale < 1.5) {  // fine grain: white noise, lightly blurred
        f.resize(size_t(n * n));
        for (float& v : f) v = float(rng.normal());
        blur(f, n, k.tex_scale * 0.5);
    } else {
        f = smooth_field(rng, n, k.tex_scale);
    }
    return f;
}

inline void render(const TaskParams& t, const LabelMap& m, Rng& rng, float* image) {
    const int64_t n = t.size, N = n * n;
    std::vector<float> img(size_t(N), 0.0f);
    // Per-image intensity jitter of every label's mean, per-object offsets.
    std::vector<double> mean(t.looks.size());
    for (size_t l = 0; l < mean.size(); ++l) mean[l] = t.looks[l].mean + t.intensity_jitter * rng.normal();
    int max_object = 0;
    for (int o : m.object) max_object = std::max(max_object, o);
    std::vector<double> object_offset(size_t(max_object + 1));
    for (double& o : object_offset) o = rng.normal();
    for (size_t l = 0; l < t.looks.size(); ++l) {
        const LabelLook& k = t.looks[l];
        bool present = false;
        for (int64_t i = 0; i < N && !present; ++i) present = m.label[size_t(i)] == int(l);
        if (!present) continue;
        std::vector<float> tex;
        if (k.tex_amp > 0) tex = texture(k, n, rng);
        for (int64_t i = 0; i < N; ++i) {
            if (m.label[size_t(i)] != int(l)) continue;
            double v = mean[l];
            if (!tex.empty()) v += k.tex_amp * tex[size_t(i)];
            if (m.object[size_t(i)] > 0) v += k.object_sd * object_offset[size_t(m.object[size_t(i)])];
            img[size_t(i)] = float(v);
        }
        if (k.rim != 0) {  // outline of the label's regions (and of every object)
            for (int64_t y = 0; y < n; ++y)
                for (int64_t x = 0; x < n; ++x) {
                    const size_t i = size_t(y * n + x);
                    if (m.label[i] != int(l)) continue;
                    bool edge = false;
                    for (int64_t d : {-n, n, int64_t(-1), int64_t(1)}) {
                        const int64_t j = int64_t(i) + d;
                        if ((d == -1 && x == 0) || (d == 1 && x == n - 1) || j < 0 || j >= N) continue;
                        edge = edge || m.label[size_t(j)] != int(l) || m.object[size_t(j)] != m.object[i];
                    }
                    if (edge) img[i] += float(k.rim);
                }
        }
    }
    if (t.clutter > 0) {
        const std::vector<float> c = smooth_field(rng, n, double(n) / 8);
        for (int64_t i = 0; i < N; ++i) img[size_t(i)] += float(t.clutter * c[size_t(i)]);
    }
    synth::blur(img, n, t.blur * rng.uniform(0.7, 1.3));
    if (t.bias > 0) {
        const std::vector<float> b = smooth_field(rng, n, t.bias_scale);
        for (int64_t i = 0; i < N; ++i) img[size_t(i)] *= float(std::exp(t.bias * 0.5 * b[size_t(i)]));
    }
    normalize01(img);
    for (float& v : img) v = float(std::pow(double(v), t.gamma));
    if (t.fov > 0)
        for (int64_t i = 0; i < N; ++i)
            if (!in_fov(t, i / n, i % n)) img[size_t(i)] = 0.0f;
    if (t.speckle > 0) {  // multiplicative, unit variance after blurring into grains
        std::vector<float> sp(static_cast<size_t>(N));
        for (float& v : sp) v = float(rng.normal());
        if (t.speckle_grain > 0.3) {
            blur(sp, n, t.speckle_grain);
            double ss = 0;
            for (float v : sp) ss += double(v) * v;
            const float scale = float(1.0 / std::sqrt(std::max(1e-12, ss / double(N))));
            for (float& v : sp) v *= scale;
        }
        for (int64_t i = 0; i < N; ++i) img[size_t(i)] *= float(std::max(0.0, 1 + t.speckle * sp[size_t(i)]));
    }
    const double noise = t.noise * rng.uniform(0.6, 1.4);
    if (noise > 0)
        for (float& v : img) v += float(noise * rng.normal());
    if (t.edges) img = sobel(img, n);
    normalize01(img);
    if (t.invert)
        for (float& v : img) v = 1 - v;
    std::copy(img.begin(), img.end(), image);
}

}  // namespace synth

// One image of task `t` and its binary target: size*size floats each. Redraws the layout (up
// to a few times) when the target would cover fewer than 0.2% of the pixels, so that supports
// and query almost always show the target.
inline void sample_image(const TaskParams& t, Rng& rng, float* image, float* label) {
    const int64_t N = t.size * t.size;
    synth::LabelMap m;
    std::vector<float> target(static_cast<size_t>(N));
    for (int attempt = 0; attempt < 8; ++attempt) {
        m = synth::draw_member_labels(t, rng);
        int64_t area = 0;
        for (int64_t i = 0; i < N; ++i) area += target[size_t(i)] = float((t.target >> m.label[size_t(i)]) & 1u);
        if (area >= std::max<int64_t>(4, N / 500)) break;
    }
    if (t.outline) target = synth::boundary(target, t.size, t.outline_width);
    synth::render(t, m, rng, image);
    std::copy(target.begin(), target.end(), label);
}

// n images of one task (n, size, size), all from `seed`.
struct SynthTask {
    TaskParams params;
    int64_t n = 0, size = 0;
    std::vector<float> images, labels;
};

inline SynthTask synthetic_task(uint64_t seed, int64_t n, int64_t size) {
    SynthTask task;
    Rng rng(seed_from({seed, 0x7A5Cull}));
    task.params = sample_task(rng, size);
    task.n = n, task.size = size;
    task.images.resize(size_t(n * size * size));
    task.labels.resize(size_t(n * size * size));
UNIVERSEG_OMP(parallel for schedule(dynamic))
    for (int64_t i = 0; i < n; ++i) {
        Rng r(seed_from({seed, 0x1A6Eull, uint64_t(i)}));
        sample_image(task.params, r, task.images.data() + i * size * size, task.labels.data() + i * size * size);
    }
    return task;
}

// Training data for one step: B synthetic tasks, each S supports and one query, a pure
// function of (seed, step). Task t depends on (seed, step, t) alone: the batch holds tasks
// first .. first + B - 1 of the step (a process's share of it, train/distributed.hpp).
inline Batch synthetic_batch(uint64_t seed, int64_t step, int64_t B, int64_t S, int64_t size, int64_t first = 0) {
    Batch b = Batch::zeros(B, S, size, size);
    const int64_t N = size * size;
    std::vector<TaskParams> tasks(static_cast<size_t>(B));
    for (int64_t t = 0; t < B; ++t) {
        Rng rng(seed_from({seed, uint64_t(step), uint64_t(first + t), 0x7A5Cull}));
        tasks[size_t(t)] = sample_task(rng, size);
    }
UNIVERSEG_OMP(parallel for schedule(dynamic))
    for (int64_t k = 0; k < B * (S + 1); ++k) {
        const int64_t t = k / (S + 1), i = k % (S + 1);
        Rng rng(seed_from({seed, uint64_t(step), uint64_t(first + t), uint64_t(i)}));
        float* img = i == S ? b.query.data() + t * N : b.support_images.data() + (t * S + i) * N;
        float* lab = i == S ? b.query_labels.data() + t * N : b.support_labels.data() + (t * S + i) * N;
        sample_image(tasks[size_t(t)], rng, img, lab);
    }
    return b;
}

}  // namespace universeg
