// universeg/segment.hpp - few-shot segmentation of whole images with a Model: images of any
// size and label maps with any integer values in, label maps at the query's size out.
//
// UniverSeg is binary, so every distinct non-zero value of the support label maps is its own
// task (support labels = "pixel has this value"); a pixel gets the most probable value whose
// probability exceeds the threshold, else 0. Ensembles average the probabilities over several
// random support subsets, and by default over the task mirrored (query and supports together)
// left-right and up-down, as nnU-Net mirrors by default: the model saw flipped tasks in
// training, and the average of the four views is free of any left/right or up/down bias.
//
//   SupportSet set;                                  // images prepared at the model size
//   add_support(set, prepare_image(img, 128, 128), resize_nearest(labels, 128, 128), name);
//   Task task = make_task(model, set, options);      // subsets and per-label masks, built once
//   std::vector<Image> p = predict_probabilities(task, prepare_image(query, 128, 128));
//   for (Image& q : p) q = resize_bilinear(q, query.height, query.width);   // back to its size
//   Image labels = label_map(p, task.values, options.threshold);
//   std::map<int64_t, Overlap> o = label_overlaps(truth.pixels.data(), labels.pixels.data(), n);  // Dice, IoU
//
// A Task points to its Model, which must outlive it.
#pragma once

#include "io/image.hpp"
#include "model.hpp"
#include "random.hpp"

#include <cmath>
#include <map>
#include <set>

namespace universeg {

// The support size the model was trained with; more supports cost time and memory for little gain.
constexpr int64_t kMaxSupportSize = 64;
// A label map with more distinct values than this is more likely an image saved as labels.
constexpr int64_t kMaxLabelValues = 255;

// Clip (optional), min-max normalise, then resize bilinearly to the model size. Normalising
// first keeps the percentiles of the full-resolution image.
inline Image prepare_image(Image img, int64_t height, int64_t width, double clip_low = 0, double clip_high = 100) {
    if (clip_low > 0 || clip_high < 100) clip_percentiles(img, clip_low, clip_high);
    normalize_min_max(img);
    return resize_bilinear(img, height, width);
}

// Throws unless every value is a non-negative integer small enough to be a label.
inline void check_label_map(const Image& labels, const std::string& what) {
    for (size_t i = 0; i < labels.pixels.size(); ++i) {
        const float v = labels.pixels[i];
        if (!(v >= 0 && v < 16777216.0f) || v != std::floor(v))
            throw Error(what + ": label value " + std::to_string(v) + " at row " + std::to_string(int64_t(i) / labels.width) +
                        ", column " + std::to_string(int64_t(i) % labels.width) +
                        " is not a non-negative integer; label maps hold integer label values");
    }
}

// Support pairs at the model size: images prepared, labels holding raw values.
struct SupportSet {
    int64_t height = 0, width = 0;
    std::vector<float> images, labels;  // (N, H, W) each
    std::vector<std::string> names;     // where each pair came from, for messages
    std::set<int64_t> values;           // distinct non-zero label values

    int64_t size() const { return int64_t(names.size()); }
};

inline void add_support(SupportSet& set, const Image& image, const Image& labels, const std::string& name) {
    if (set.names.empty() && set.height == 0) set.height = image.height, set.width = image.width;
    if (image.height != set.height || image.width != set.width || labels.height != set.height || labels.width != set.width)
        throw Error(name + ": support pair of " + std::to_string(image.height) + "x" + std::to_string(image.width) + " / " +
                    std::to_string(labels.height) + "x" + std::to_string(labels.width) + ", expected the model size " +
                    std::to_string(set.height) + "x" + std::to_string(set.width));
    check_label_map(labels, name);
    set.images.insert(set.images.end(), image.pixels.begin(), image.pixels.end());
    set.labels.insert(set.labels.end(), labels.pixels.begin(), labels.pixels.end());
    set.names.push_back(name);
    for (float v : labels.pixels)
        if (v != 0) set.values.insert(int64_t(v));
}

struct SegmentOptions {
    int64_t support_size = 0;  // 0: all supports, at most kMaxSupportSize
    int64_t ensemble = 1;      // number of support subsets whose probabilities are averaged
    uint64_t seed = 0;         // picks the subsets
    double threshold = 0.5;
    std::vector<int64_t> only_values;  // empty: every label value of the supports
    double max_memory_mb = 0;          // > 0: every forward pass under this memory bound (engine::Options)
    int64_t flips = 4;  // 1: as is; 2: also mirrored left-right; 4: also up-down and both. Averaged.
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
};

// n images (n, h, w) mirrored left-right (fx) and/or up-down (fy), into out.
inline void flip_images(float* out, const float* in, int64_t n, int64_t h, int64_t w, bool fx, bool fy) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x)
                out[(i * h + y) * w + x] = in[(i * h + (fy ? h - 1 - y : y)) * w + (fx ? w - 1 - x : x)];
}

inline Task make_task(const Model& model, const SupportSet& set, const SegmentOptions& opt) {
    if (set.size() == 0) throw Error("no support pairs");
    const int64_t m = model.config().size_multiple();
    if (set.height % m || set.width % m)
        throw Error("model size " + std::to_string(set.height) + "x" + std::to_string(set.width) +
                    " is not a multiple of " + std::to_string(m) + ", as these weights need");
    Task t;
    t.model = &model;
    t.engine.max_memory_mb = opt.max_memory_mb;
    t.height = set.height;
    t.width = set.width;
    if (opt.only_values.empty()) {
        t.values.assign(set.values.begin(), set.values.end());
    } else {
        for (int64_t v : opt.only_values) {
            if (!set.values.count(v)) throw Error("label value " + std::to_string(v) + " does not occur in the support label maps");
            t.values.push_back(v);
        }
    }
    if (t.values.empty()) throw Error("the support label maps are all empty: no label to segment");
    if (int64_t(t.values.size()) > kMaxLabelValues)
        throw Error("the support label maps hold " + std::to_string(t.values.size()) +
                    " distinct values (are the labels images?); select one with a label value option");
    if (opt.support_size < 0 || opt.ensemble < 1) throw Error("support size and ensemble must be positive");
    if (opt.flips != 1 && opt.flips != 2 && opt.flips != 4)
        throw Error("flips must be 1, 2 or 4, not " + std::to_string(opt.flips));
    t.flips = opt.flips;
    const int64_t size = std::min(opt.support_size > 0 ? opt.support_size : kMaxSupportSize, set.size());
    const int64_t HW = set.height * set.width;
    for (const std::vector<int64_t>& subset : support_subsets(set.size(), size, opt.ensemble, opt.seed)) {
        Task::Member mem;
        mem.size = size;
        mem.indices = subset;
        for (int64_t i : subset)
            mem.images.insert(mem.images.end(), set.images.begin() + i * HW, set.images.begin() + (i + 1) * HW);
        for (int64_t v : t.values) {
            std::vector<float> mask(size_t(size * HW));
            for (int64_t s = 0; s < size; ++s)
                for (int64_t p = 0; p < HW; ++p)
                    mask[size_t(s * HW + p)] = set.labels[size_t(subset[size_t(s)] * HW + p)] == float(v) ? 1.0f : 0.0f;
            mem.masks.push_back(std::move(mask));
        }
        t.members.push_back(std::move(mem));
    }
    return t;
}

// Per label value, the probability (sigmoid of the logits, averaged over the ensemble and the
// mirrored views) of every pixel of the prepared query, at the model size.
inline std::vector<Image> predict_probabilities(const Task& t, const Image& query) {
    if (query.height != t.height || query.width != t.width)
        throw Error("query of " + std::to_string(query.height) + "x" + std::to_string(query.width) +
                    " is not at the model size " + std::to_string(t.height) + "x" + std::to_string(t.width));
    const int64_t HW = t.height * t.width;
    std::vector<Image> probs(t.values.size(), Image{t.height, t.width, std::vector<float>(size_t(HW), 0.0f)});
    std::vector<float> logits(static_cast<size_t>(HW)), flipped(static_cast<size_t>(HW));
    std::vector<float> q(static_cast<size_t>(HW)), images, masks;
    const double share = 1.0 / double(t.members.size() * size_t(t.flips));
    for (int64_t f = 0; f < t.flips; ++f) {
        const bool fx = f % 2 == 1, fy = f >= 2;
        flip_images(q.data(), query.pixels.data(), 1, t.height, t.width, fx, fy);
        for (const Task::Member& mem : t.members) {
            images.resize(mem.images.size());
            flip_images(images.data(), mem.images.data(), mem.size, t.height, t.width, fx, fy);
            for (size_t l = 0; l < t.values.size(); ++l) {
                masks.resize(mem.masks[l].size());
                flip_images(masks.data(), mem.masks[l].data(), mem.size, t.height, t.width, fx, fy);
                t.model->forward(q.data(), images.data(), masks.data(), 1, mem.size, t.height, t.width, flipped.data(),
                                 t.engine);
                flip_images(logits.data(), flipped.data(), 1, t.height, t.width, fx, fy);  // back to the query's frame
                for (int64_t p = 0; p < HW; ++p)
                    probs[l].pixels[size_t(p)] += float(1.0 / (1.0 + std::exp(-double(logits[size_t(p)]))) * share);
            }
        }
    }
    return probs;
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

// Pixel counts of one label value in a ground truth and a prediction.
struct Overlap {
    int64_t truth = 0, pred = 0, both = 0;
    // NaN when the value is absent from both: nothing to score, rather than a perfect 1.
    double dice() const { return truth + pred ? 2.0 * double(both) / double(truth + pred) : NAN; }
    double iou() const { return truth + pred ? double(both) / double(truth + pred - both) : NAN; }
};

// Every non-zero value of either map.
inline std::map<int64_t, Overlap> label_overlaps(const float* truth, const float* pred, size_t n) {
    std::map<int64_t, Overlap> o;
    for (size_t i = 0; i < n; ++i) {
        const int64_t t = int64_t(truth[i]), p = int64_t(pred[i]);
        if (t) ++o[t].truth;
        if (p) ++o[p].pred;
        if (t && t == p) ++o[t].both;
    }
    return o;
}

}  // namespace universeg
