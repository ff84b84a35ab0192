// universeg/segment/task.hpp - a task (the supports' subsets and masks, built once) and what it
// predicts for a query: probabilities per label value, whole or window by window, and label maps.
#pragma once

#include "../core/model.hpp"
#include "../core/random.hpp"
#include "support.hpp"

#include <cmath>
#include <numeric>

namespace universeg {

// The support size the model was trained with; more supports cost time and memory for little gain.
constexpr int64_t kMaxSupportSize = 64;
// A label map with more distinct values than this is more likely an image saved as labels.
constexpr int64_t kMaxLabelValues = 255;
// The intensity evidence's histogram bins (intensity_log_ratios).
constexpr int64_t kIntensityBins = 32;

struct SegmentOptions {
    int64_t support_size = 0;  // 0: all supports, at most kMaxSupportSize
    int64_t ensemble = 1;      // number of support subsets whose probabilities are averaged
    uint64_t seed = 0;         // picks the subsets
    double threshold = 0.5;
    std::vector<int64_t> only_values;  // empty: every label value of the supports
    double max_memory_mb = 0;          // > 0: every forward pass under this memory bound (engine::Options)
    int64_t flips = 4;  // 1: as is; 2: also mirrored left-right; 4: also up-down and both. Averaged.
    bool calibrate = true;  // per-label offsets and intensity weights, leave-one-out (calibration.hpp)
    // The examples are whole images, as the queries are: calibration may also choose, per label,
    // to keep its largest region and fill its holes, and to segment each query with the examples
    // of its own type. Off for windows, whose held-out examples are not what queries are.
    bool whole_images = true;
};

// `count` subsets of `size` indices out of [0, n), sorted, drawn without replacement by a
// seeded partial Fisher-Yates shuffle. Draws that repeat an earlier subset are redrawn, so
// fewer than `count` come back only when there are not that many distinct subsets (e.g. size == n).
inline std::vector<std::vector<int64_t>> support_subsets(int64_t n, int64_t size, int64_t count, uint64_t seed) {
    if (n < 1 || size < 1 || size > n || count < 1)
        throw Error("cannot draw " + std::to_string(count) + " subsets of " + std::to_string(size) + " supports out of " +
                    std::to_string(n));
    Rng rng(seed_from({seed, uint64_t(n), uint64_t(size)}));
    std::vector<std::vector<int64_t>> out;
    std::set<std::vector<int64_t>> seen;
    for (int64_t attempt = 0; int64_t(out.size()) < count && attempt < 20 * count; ++attempt) {
        std::vector<int64_t> idx(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = i;
        for (int64_t i = 0; i < size; ++i) std::swap(idx[size_t(i)], idx[size_t(i + rng.below(n - i))]);
        idx.resize(size_t(size));
        std::sort(idx.begin(), idx.end());
        if (seen.insert(idx).second) out.push_back(idx);
    }
    return out;
}

// Everything about the supports that does not depend on the query, built once and used for
// every query: the chosen subsets, their images and one binary mask set per label value.
struct Task {
    const Model* model = nullptr;
    engine::Options engine;  // how each forward pass runs
    int64_t height = 0, width = 0;
    std::vector<int64_t> values;  // label values, ascending
    struct Member {
        int64_t size = 0;
        std::vector<float> images;               // (S, H, W)
        std::vector<std::vector<float>> masks;   // per value: (S, H, W) of 0/1
        std::vector<int64_t> indices;            // into the SupportSet
    };
    std::vector<Member> members;  // one per ensemble subset
    int64_t flips = 4;            // SegmentOptions::flips
    std::vector<std::vector<double>> intensity;  // per value: intensity_log_ratios of all supports (colour: calibration.colour)
    struct Calibration {
        std::vector<double> offsets;  // per value, added to its logit; empty: not calibrated
        std::vector<double> intensity_weights;  // per value, times its intensity evidence
        int64_t images = 0;           // supports segmented from the others
        double dice_before = NAN, dice_after = NAN;  // their mean Dice with offsets 0 and with these
        std::vector<int64_t> regions;  // per value: kKeepLargest | kFillHoles, or 0
        bool colour = false;           // the evidence is of colour bins (chosen where every support is colour)
        bool types = false;            // each query segmented with the examples of its type (example_types)
    };
    Calibration calibration;
    // Where calibration chose example types: per type, its examples (indices into the set, ascending),
    // the mean of their type_feature, and the members and evidence of those examples alone.
    struct Type {
        std::vector<int64_t> examples;
        std::vector<double> centre;
        std::vector<Member> members;
        std::vector<std::vector<double>> intensity;
    };
    std::vector<Type> types;
};

// n images (n, h, w) mirrored left-right (fx) and/or up-down (fy), into out.
inline void flip_images(float* out, const float* in, int64_t n, int64_t h, int64_t w, bool fx, bool fy) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x)
                out[(i * h + y) * w + x] = in[(i * h + (fy ? h - 1 - y : y)) * w + (fx ? w - 1 - x : x)];
}

// Every support of the set: indices 0 to size - 1.
inline std::vector<int64_t> all_supports(const SupportSet& set) {
    std::vector<int64_t> all(size_t(set.size()));
    std::iota(all.begin(), all.end(), int64_t(0));
    return all;
}

// Example types. A task's examples may be images of two kinds (fluorescence and brightfield
// nuclei: light on dark, dark on light), and a query of the minority kind is then segmented as
// the majority's images are. Told by its intensity distribution, an image's kind is its
// type_feature: kTypeQuantiles quantiles of its prepared pixels at the model size.
constexpr int64_t kTypeQuantiles = 15;
// Two groups of examples are types when each holds at least kMinTypeExamples (calibration
// holds one out and needs a few left) and the split's mean silhouette reaches kTypeSeparation
// (well apart). Examples of one modality can pass by their contrast alone (hippocampus MRI
// does); calibration then decides whether the split helps.
constexpr int64_t kMinTypeExamples = 4;
constexpr double kTypeSeparation = 0.5;

inline std::vector<double> type_feature(const float* pixels, int64_t n) {
    std::vector<float> v(pixels, pixels + n);
    std::sort(v.begin(), v.end());
    std::vector<double> q(static_cast<size_t>(kTypeQuantiles));
    for (int64_t k = 0; k < kTypeQuantiles; ++k) q[size_t(k)] = v[size_t((k + 1) * (n - 1) / (kTypeQuantiles + 1))];
    return q;
}

inline double feature_distance(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t k = 0; k < a.size(); ++k) s += (a[k] - b[k]) * (a[k] - b[k]);
    return std::sqrt(s);
}

// The set's examples as two types (each its examples and centre, example 0's type first; members
// and evidence not yet made), or none where they do not clearly fall into two: 2-means on their type_feature from the
// two examples farthest apart, kept when both groups are large enough and well apart.
inline std::vector<Task::Type> example_types(const SupportSet& set) {
    const int64_t n = set.size(), HW = set.height * set.width;
    if (n < 2 * kMinTypeExamples) return {};
    std::vector<std::vector<double>> f;
    for (int64_t i = 0; i < n; ++i) f.push_back(type_feature(&set.images[size_t(i * HW)], HW));
    std::vector<double> dist(size_t(n * n));  // between examples, for the farthest pair and the silhouette
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) dist[size_t(i * n + j)] = feature_distance(f[size_t(i)], f[size_t(j)]);
    int64_t a = 0, b = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j)
            if (dist[size_t(i * n + j)] > dist[size_t(a * n + b)]) a = i, b = j;
    std::vector<std::vector<double>> centre{f[size_t(a)], f[size_t(b)]};
    std::vector<int64_t> of(size_t(n), -1);
    for (bool moved = true; moved;) {  // each pass lowers the within-group distances, so it ends
        moved = false;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t g = feature_distance(f[size_t(i)], centre[1]) < feature_distance(f[size_t(i)], centre[0]) ? 1 : 0;
            if (g != of[size_t(i)]) of[size_t(i)] = g, moved = true;
        }
        for (int64_t g = 0; g < 2; ++g) {
            std::vector<double> sum(static_cast<size_t>(kTypeQuantiles), 0.0);
            int64_t count = 0;
            for (int64_t i = 0; i < n; ++i) {
                if (of[size_t(i)] != g) continue;
                for (int64_t k = 0; k < kTypeQuantiles; ++k) sum[size_t(k)] += f[size_t(i)][size_t(k)];
                ++count;
            }
            if (count == 0) return {};
            for (double& x : sum) x /= double(count);
            centre[size_t(g)] = sum;
        }
    }
    std::vector<Task::Type> types(2);
    for (int64_t i = 0; i < n; ++i) types[size_t(of[size_t(i)])].examples.push_back(i);
    for (const Task::Type& t : types)
        if (int64_t(t.examples.size()) < kMinTypeExamples) return {};
    double silhouette = 0;  // per example (b - a) / max(a, b): a, b its mean distance to its own other examples, to the others
    for (int64_t i = 0; i < n; ++i) {
        double mean[2] = {0, 0};
        for (int64_t j = 0; j < n; ++j) mean[of[size_t(j)]] += dist[size_t(i * n + j)];
        const int64_t own = of[size_t(i)];
        const double in = mean[own] / double(types[size_t(own)].examples.size() - 1),
                     out = mean[1 - own] / double(types[size_t(1 - own)].examples.size());
        silhouette += std::max(in, out) > 0 ? (out - in) / std::max(in, out) : 0.0;
    }
    if (silhouette / double(n) < kTypeSeparation) return {};
    for (int64_t g = 0; g < 2; ++g) types[size_t(g)].centre = centre[size_t(g)];
    if (types[0].examples[0] != 0) std::swap(types[0], types[1]);  // example 0's type first
    return types;
}

// The type a prepared query (any size: resized to the model size as the network sees it) is
// closest to; null without types.
inline const Task::Type* query_type(const Task& t, const Image& query) {
    if (t.types.empty()) return nullptr;
    const bool at_size = query.height == t.height && query.width == t.width;
    const Image resized = at_size ? Image{} : resize_bilinear(query, t.height, t.width);
    const Image& q = at_size ? query : resized;
    const std::vector<double> f = type_feature(q.pixels.data(), int64_t(q.pixels.size()));
    const Task::Type* best = &t.types[0];
    for (const Task::Type& type : t.types)
        if (feature_distance(f, type.centre) < feature_distance(f, best->centre)) best = &type;
    return best;
}

// The ensemble's members drawn from the supports `from` (indices into `set`): per subset, the
// images and one mask set per label value of `values`.
inline std::vector<Task::Member> make_members(const SupportSet& set, const std::vector<int64_t>& from,
                                              const std::vector<int64_t>& values, const SegmentOptions& opt) {
    const int64_t n = int64_t(from.size()), size = std::min(opt.support_size > 0 ? opt.support_size : kMaxSupportSize, n);
    const int64_t HW = set.height * set.width;
    std::vector<Task::Member> members;
    for (const std::vector<int64_t>& subset : support_subsets(n, size, opt.ensemble, opt.seed)) {
        Task::Member mem;
        mem.size = size;
        for (int64_t k : subset) mem.indices.push_back(from[size_t(k)]);
        for (int64_t i : mem.indices)
            mem.images.insert(mem.images.end(), set.images.begin() + i * HW, set.images.begin() + (i + 1) * HW);
        for (int64_t v : values) {
            std::vector<float> mask(size_t(size * HW));
            for (int64_t s = 0; s < size; ++s)
                for (int64_t p = 0; p < HW; ++p)
                    mask[size_t(s * HW + p)] = set.labels[size_t(mem.indices[size_t(s)] * HW + p)] == float(v) ? 1.0f : 0.0f;
            mem.masks.push_back(std::move(mask));
        }
        members.push_back(std::move(mem));
    }
    return members;
}

// log(p / (1 - p)), finite: probabilities of exactly 0 or 1 (float sigmoid saturates) are clamped.
inline double logit(double p) {
    p = std::min(std::max(p, 1e-7), 1.0 - 1e-7);
    return std::log(p / (1.0 - p));
}

// Per label value, the probability (sigmoid of the logits, averaged over the ensemble and the
// mirrored views) of every pixel of the prepared query, at the model size; not calibrated. With
// example types, from the members of the query's type.
inline std::vector<Image> predict_probabilities(const Task& t, const Image& query) {
    if (query.height != t.height || query.width != t.width)
        throw Error("query of " + std::to_string(query.height) + "x" + std::to_string(query.width) +
                    " is not at the model size " + std::to_string(t.height) + "x" + std::to_string(t.width));
    const int64_t HW = t.height * t.width;
    std::vector<Image> probs(t.values.size(), Image{t.height, t.width, std::vector<float>(size_t(HW), 0.0f)});
    std::vector<float> logits(static_cast<size_t>(HW)), flipped(static_cast<size_t>(HW));
    std::vector<float> q(static_cast<size_t>(HW)), images, masks;
    const Task::Type* type = query_type(t, query);
    const std::vector<Task::Member>& members = type ? type->members : t.members;
    const double share = 1.0 / double(members.size() * size_t(t.flips));
    for (int64_t f = 0; f < t.flips; ++f) {
        const bool fx = f % 2 == 1, fy = f >= 2;
        flip_images(q.data(), query.pixels.data(), 1, t.height, t.width, fx, fy);
        for (const Task::Member& mem : members) {
            images.resize(mem.images.size());
            flip_images(images.data(), mem.images.data(), mem.size, t.height, t.width, fx, fy);
            for (size_t l = 0; l < t.values.size(); ++l) {
                masks.resize(mem.masks[l].size());
                flip_images(masks.data(), mem.masks[l].data(), mem.size, t.height, t.width, fx, fy);
                t.model->forward(q.data(), images.data(), masks.data(), 1, mem.size, t.height, t.width, flipped.data(),
                                 t.engine);
                flip_images(logits.data(), flipped.data(), 1, t.height, t.width, fx, fy);  // back to the query's frame
                for (int64_t p = 0; p < HW; ++p)
                    probs[l].pixels[size_t(p)] += float(sigmoid(logits[size_t(p)]) * share);
            }
        }
    }
    return probs;
}

// predict_probabilities of a prepared query at its own size, window by window: windows of
// tile x tile (a shorter side whole), half a window apart and the last flush with the far edge,
// each resized to the model size and its probabilities resized back. Where windows overlap they
// are blended, weighted by distance from the window's edge (1 at the edge, tile / 2 at the
// centre): near its edge a window saw little of a pixel's surroundings. A query no larger than
// a window gives what predict_probabilities of the query resized and resized back gives.
inline std::vector<Image> predict_tiled(const Task& t, const Image& query, int64_t tile) {
    if (tile < 1) throw Error("predict_tiled: tile of " + std::to_string(tile) + " pixels");
    const int64_t H = query.height, W = query.width, th = std::min(tile, H), tw = std::min(tile, W);
    std::vector<double> wy(static_cast<size_t>(th)), wx(static_cast<size_t>(tw));
    for (int64_t i = 0; i < th; ++i) wy[size_t(i)] = double(std::min(i + 1, th - i));
    for (int64_t i = 0; i < tw; ++i) wx[size_t(i)] = double(std::min(i + 1, tw - i));
    std::vector<std::vector<double>> sum(t.values.size(), std::vector<double>(size_t(H * W), 0.0));
    std::vector<double> weight(size_t(H * W), 0.0);
    for (int64_t y0 : tile_starts(H, th, std::max<int64_t>(1, th / 2)))
        for (int64_t x0 : tile_starts(W, tw, std::max<int64_t>(1, tw / 2))) {
            const std::vector<Image> probs =
                predict_probabilities(t, resize_bilinear(crop_image(query, y0, x0, th, tw), t.height, t.width));
            for (size_t l = 0; l < probs.size(); ++l) {
                const Image p = resize_bilinear(probs[l], th, tw);
                for (int64_t y = 0; y < th; ++y)
                    for (int64_t x = 0; x < tw; ++x)
                        sum[l][size_t((y0 + y) * W + x0 + x)] += wy[size_t(y)] * wx[size_t(x)] * p.pixels[size_t(y * tw + x)];
            }
            for (int64_t y = 0; y < th; ++y)
                for (int64_t x = 0; x < tw; ++x) weight[size_t((y0 + y) * W + x0 + x)] += wy[size_t(y)] * wx[size_t(x)];
        }
    std::vector<Image> out(t.values.size(), Image{H, W, std::vector<float>(size_t(H * W))});
    for (size_t l = 0; l < out.size(); ++l)
        for (size_t p = 0; p < weight.size(); ++p) out[l].pixels[p] = float(sum[l][p] / weight[p]);
    return out;
}

// Each pixel takes the value whose probability is highest, if it exceeds `threshold`; else 0.
inline Image label_map(const std::vector<Image>& probs, const std::vector<int64_t>& values, double threshold) {
    if (probs.empty() || probs.size() != values.size()) throw Error("label_map: probabilities and label values differ in count");
    Image out{probs[0].height, probs[0].width, std::vector<float>(probs[0].pixels.size(), 0.0f)};
    for (size_t p = 0; p < out.pixels.size(); ++p) {
        double best = threshold;
        for (size_t l = 0; l < values.size(); ++l)
            if (probs[l].pixels[p] > best) best = probs[l].pixels[p], out.pixels[p] = float(values[l]);
    }
    return out;
}

// Intensity evidence: the classical per-task classifier's view, a pixel's intensity alone.
inline int64_t intensity_bin(double v) { return v > 0 ? (v < 1 ? int64_t(v * kIntensityBins) : kIntensityBins - 1) : 0; }

// The evidence bin of sample p of a support pair: its colour bin in a colour task, else its
// intensity bin.
inline int64_t sample_bin(const SupportSamples& s, size_t p, bool colour) {
    return colour ? s.colour[p] : intensity_bin(s.images[p]);
}

// ... of pixel p of a prepared query: a grey query in a colour task is R = G = B.
inline int64_t evidence_bin(const Image& query, size_t p, bool colour) {
    return colour ? colour_bin(query, p) : intensity_bin(query.pixels[p]);
}

// For one label value, per evidence bin of the prepared support images at their own size (their
// samples; intensity bins, or with `colour` colour bins): the log of how much more often the bin
// occurs under the label than elsewhere (both histograms normalised, one pseudo-count per bin, so
// unseen bins say little). Of the supports `from` (indices into the set).
inline std::vector<double> intensity_log_ratios(const SupportSet& set, int64_t value, const std::vector<int64_t>& from,
                                                bool colour = false) {
    if (colour && !set.colour()) throw Error("colour evidence: not every support is colour");
    const size_t bins = size_t(colour ? kColourBins : kIntensityBins);
    std::vector<double> inside(bins, 1.0), outside(bins, 1.0);
    for (int64_t i : from) {
        const SupportSamples& s = set.samples[size_t(i)];
        for (size_t p = 0; p < s.images.size(); ++p) (s.labels[p] == float(value) ? inside : outside)[size_t(sample_bin(s, p, colour))] += 1;
    }
    const double n_in = std::accumulate(inside.begin(), inside.end(), 0.0), n_out = std::accumulate(outside.begin(), outside.end(), 0.0);
    std::vector<double> ratio(inside.size());
    for (size_t b = 0; b < ratio.size(); ++b) ratio[b] = std::log(inside[b] / n_in) - std::log(outside[b] / n_out);
    return ratio;
}

inline std::vector<double> intensity_log_ratios(const SupportSet& set, int64_t value) {
    return intensity_log_ratios(set, value, all_supports(set));
}

// The task's evidence: per label, intensity_log_ratios of all supports and of each type's, of
// colour bins or not (as t.calibration.colour says).
inline void set_evidence(Task& t, const SupportSet& set, bool colour) {
    t.intensity.clear();
    for (int64_t v : t.values) t.intensity.push_back(intensity_log_ratios(set, v, all_supports(set), colour));
    for (Task::Type& type : t.types) {
        type.intensity.clear();
        for (int64_t v : t.values) type.intensity.push_back(intensity_log_ratios(set, v, type.examples, colour));
    }
}

// The task's example types (example_types of `set`), each with its members.
inline void set_types(Task& t, const SupportSet& set, std::vector<Task::Type> types, const SegmentOptions& opt) {
    t.types = std::move(types);
    for (Task::Type& type : t.types) type.members = make_members(set, type.examples, t.values, opt);
}

// The evidence a prepared query (any size) is scored with: its type's, or all supports'.
inline const std::vector<std::vector<double>>& query_evidence(const Task& t, const Image& query) {
    const Task::Type* type = query_type(t, query);
    return type ? type->intensity : t.intensity;
}

// The label index whose calibrated logit (logit + weight * evidence + offset) is highest, and
// that logit in `score`. All arrays hold one value per label.
inline size_t top_label(const double* logits, const double* evidence, const std::vector<double>& weights,
                        const std::vector<double>& offsets, double& score) {
    size_t best = 0;
    score = -INFINITY;
    for (size_t l = 0; l < offsets.size(); ++l) {
        const double z = logits[l] + weights[l] * evidence[l] + offsets[l];
        if (z > score) score = z, best = l;
    }
    return best;
}

// What calibration may choose to do to a label's region in the label map, as nnU-Net's
// post-processing does: keep only its largest 8-connected region (one lesion, one organ: the
// rest are look-alikes elsewhere), and fill its holes, regions of no label (4-connected, the
// complement of 8-connected) that touch neither the border nor another label.
constexpr int64_t kKeepLargest = 1, kFillHoles = 2;

// Applies `regions` (kKeepLargest | kFillHoles) to `label` in an h x w label map where `none`
// marks no label. Removed pixels become `none`.
template <class T>
void clean_regions(T* map, int64_t h, int64_t w, T label, T none, int64_t regions) {
    std::vector<int32_t> id(size_t(h * w), -1);
    std::vector<int64_t> stack;
    // Labels the component of `seed` (pixels where `in` holds) `k`; returns its size, and in
    // `enclosed` whether it touches neither the border nor a pixel outside it that fails `wall`.
    auto fill = [&](int64_t seed, int32_t k, bool eight, auto in, auto wall, bool& enclosed) {
        int64_t size = 0;
        enclosed = true;
        stack.assign(1, seed), id[size_t(seed)] = k;
        while (!stack.empty()) {
            const int64_t p = stack.back(), y = p / w, x = p % w;
            stack.pop_back(), ++size;
            for (int64_t dy = -1; dy <= 1; ++dy)
                for (int64_t dx = -1; dx <= 1; ++dx) {
                    if ((dy == 0 && dx == 0) || (!eight && dy != 0 && dx != 0)) continue;
                    const int64_t yy = y + dy, xx = x + dx, q = yy * w + xx;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) {
                        enclosed = false;
                    } else if (in(map[q])) {
                        if (id[size_t(q)] < 0) id[size_t(q)] = k, stack.push_back(q);
                    } else if (!wall(map[q])) {
                        enclosed = false;
                    }
                }
        }
        return size;
    };
    auto mine = [&](T v) { return v == label; };
    auto empty = [&](T v) { return v == none; };
    bool enclosed;
    if (regions & kKeepLargest) {
        std::vector<int64_t> sizes;
        for (int64_t p = 0; p < h * w; ++p)
            if (mine(map[p]) && id[size_t(p)] < 0) sizes.push_back(fill(p, int32_t(sizes.size()), true, mine, mine, enclosed));
        const int32_t keep = int32_t(std::max_element(sizes.begin(), sizes.end()) - sizes.begin());
        for (int64_t p = 0; p < h * w; ++p)
            if (mine(map[p]) && id[size_t(p)] != keep) map[p] = none;
        std::fill(id.begin(), id.end(), -1);
    }
    if (regions & kFillHoles) {
        std::vector<char> hole;  // per region of no label: a hole of the label's
        for (int64_t p = 0; p < h * w; ++p)
            if (empty(map[p]) && id[size_t(p)] < 0) {
                fill(p, int32_t(hole.size()), false, empty, mine, enclosed);
                hole.push_back(enclosed);
            }
        for (int64_t p = 0; p < h * w; ++p)
            if (id[size_t(p)] >= 0 && hole[size_t(id[size_t(p)])]) map[p] = label;
    }
}

// The task's label map of probabilities from predict_probabilities (any size) and the prepared
// (normalised) query at the same size, whose intensities are the evidence: each pixel takes the
// value with the highest calibrated logit, if its calibrated probability exceeds `threshold`;
// else 0; then the regions calibration chose (clean_regions), label by label. Without
// calibration, label_map(probs, values, threshold).
inline Image label_map(const Task& t, const std::vector<Image>& probs, const Image& query, double threshold) {
    const Task::Calibration& c = t.calibration;
    if (c.offsets.empty()) return label_map(probs, t.values, threshold);
    if (probs.size() != t.values.size()) throw Error("label_map: probabilities and label values differ in count");
    if (query.pixels.size() != probs[0].pixels.size()) throw Error("label_map: the query and the probabilities differ in size");
    Image out{probs[0].height, probs[0].width, std::vector<float>(probs[0].pixels.size(), 0.0f)};
    const std::vector<std::vector<double>>& intensity = query_evidence(t, query);
    std::vector<double> z(probs.size()), e(probs.size());
    for (size_t p = 0; p < out.pixels.size(); ++p) {
        for (size_t l = 0; l < z.size(); ++l)
            z[l] = logit(probs[l].pixels[p]), e[l] = intensity[l][size_t(evidence_bin(query, p, c.colour))];
        double score;
        const size_t best = top_label(z.data(), e.data(), c.intensity_weights, c.offsets, score);
        if (sigmoid(score) > threshold) out.pixels[p] = float(t.values[best]);
    }
    for (size_t l = 0; l < c.regions.size(); ++l)
        if (c.regions[l]) clean_regions(out.pixels.data(), out.height, out.width, float(t.values[l]), 0.0f, c.regions[l]);
    return out;
}

// sigmoid of the calibrated logit per label, in place: the probabilities label_map(t, ...) thresholds.
inline void calibrated_probabilities(const Task& t, std::vector<Image>& probs, const Image& query) {
    const Task::Calibration& c = t.calibration;
    for (const Image& p : probs)
        if (p.pixels.size() != query.pixels.size())
            throw Error("calibrated_probabilities: the query and the probabilities differ in size");
    const std::vector<std::vector<double>>& intensity = query_evidence(t, query);
    for (size_t l = 0; l < c.offsets.size() && l < probs.size(); ++l)
        for (size_t p = 0; p < probs[l].pixels.size(); ++p)
            probs[l].pixels[p] = float(sigmoid(logit(probs[l].pixels[p]) + c.offsets[l] +
                                               c.intensity_weights[l] * intensity[l][size_t(evidence_bin(query, p, c.colour))]));
}

}  // namespace universeg
