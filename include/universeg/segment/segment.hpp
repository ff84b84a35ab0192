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
// The network's probabilities are not equally well placed for every task (a label nested in
// another, like a nucleus in its cell, often loses the comparison to its container, and both
// are often saturated at 1 there), and where intensity alone defines a label the network can
// trail a classical per-task intensity classifier. So by default make_task calibrates on the
// supports: it segments every support (up to kCalibrationImages of them) from the others and
// keeps, per label, the logit offset and the weight of the intensity evidence (the log ratio of
// the label's and the rest's intensity histograms, from the other supports) that maximise the
// mean Dice of those leave-one-out predictions at the threshold 0.5, scored as a label map is
// made: at the support's own size, from probabilities resized back and intensity histograms of
// the supports at their own sizes (SupportSamples), since shrinking a large image to the model
// size blurs its small objects, and the histograms with them. The calibrated logit is
// logit + weight * evidence + offset; calibrated_probabilities gives its sigmoid, and label_map
// compares the calibrated logits, so saturated labels are still told apart. The supports are
// all the labelled data there is, so they decide, as they do for the classical per-task
// classifiers; a weight of 0 and an offset of 0 leave the network as it is.
//
//   SupportSet set;                                  // at the model size
//   set.height = set.width = 128;
//   normalize_min_max(img);                          // prepared as the queries are, at its size
//   add_support_resized(set, img, labels, name);     // resized, and sampled at its own size
//   Task task = make_task(model, set, options);      // subsets, masks, calibration: once
//   std::vector<Image> p = predict_probabilities(task, prepare_image(query, 128, 128));
//   for (Image& q : p) q = resize_bilinear(q, query.height, query.width);   // back to its size
//   Image normalized = query;                        // prepared as prepare_image does, at its size
//   normalize_min_max(normalized);
//   Image labels = label_map(task, p, normalized, options.threshold);
//   calibrated_probabilities(task, p, normalized);   // what the label map was made of
//   std::map<int64_t, Overlap> o = label_overlaps(truth.pixels.data(), labels.pixels.data(), n);  // Dice, IoU
//
// Large images of small objects, at one scale (tile px of an image to the model size): supports
// with add_support_tiles(set, img, labels, name, tile) and p = predict_tiled(task, normalized,
// tile), already at the query's size; the rest as above. Whether windows pay (large_supports,
// then compare both tasks' calibration.dice_after, as segment --tile auto does): the pairs cut
// from one image share a source and are held out together.
//
// A Task points to its Model, which must outlive it.
#pragma once

#include "../io/image.hpp"
#include "metrics.hpp"
#include "../core/model.hpp"
#include "../core/random.hpp"

#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <utility>

namespace universeg {

// The support size the model was trained with; more supports cost time and memory for little gain.
constexpr int64_t kMaxSupportSize = 64;
// A label map with more distinct values than this is more likely an image saved as labels.
constexpr int64_t kMaxLabelValues = 255;
// Calibration: how many supports are segmented from the others (a seeded subset of larger
// sets), the fewest supports it needs, and the most label values it fits offsets for (the
// search costs labels squared).
constexpr int64_t kCalibrationImages = 16;
constexpr int64_t kMinCalibrationSupports = 4;
constexpr int64_t kMaxCalibrationLabels = 8;
// The calibration's intensity evidence: histogram bins, and the weights it may take. At 16 the
// evidence overrules a confident network (logits reach about +-16); at 64 the network only breaks
// the histograms' ties, so where intensity alone defines a label the calibrated label map can
// become the classical per-task classifier.
constexpr int64_t kIntensityBins = 32;
constexpr double kIntensityWeights[] = {0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0};
// The least gain in leave-one-out mean Dice that moves a label's offset or weight.
constexpr double kCalibrationTolerance = 0.005;

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

// The most pixels of one support that the intensity evidence and the calibration look at; a
// larger support is sampled on a regular grid.
constexpr int64_t kSupportSamples = 65536;

// A support pair as label maps are made, at its own size: label maps are thresholded there, from
// probabilities resized back and the query's own intensities, so the intensity evidence and the
// calibration look at full-size pixels, not at the model size's blur of small objects.
struct SupportSamples {
    int64_t height = 0, width = 0;      // the pair's own size
    int64_t step = 1;                   // every step-th row and column, from step / 2 (sample_pixels)
    std::vector<float> images, labels;  // the samples' prepared intensities and label values, row-major
};

// f(row-major index) for every sampled pixel of s, in order.
template <class F>
void sample_pixels(const SupportSamples& s, F f) {
    for (int64_t y = s.step / 2; y < s.height; y += s.step)
        for (int64_t x = s.step / 2; x < s.width; x += s.step) f(y * s.width + x);
}

// Support pairs at the model size (images prepared, labels holding raw values), and each also
// sampled at its own size.
struct SupportSet {
    int64_t height = 0, width = 0;
    std::vector<float> images, labels;  // (N, H, W) each
    std::vector<std::string> names;     // where each pair came from, for messages
    std::set<int64_t> values;           // distinct non-zero label values
    std::vector<SupportSamples> samples;  // per pair, at its own size
    std::vector<int64_t> sources;       // per pair, the image it came from: the windows of one image share it

    int64_t size() const { return int64_t(names.size()); }
    // The source of the next image's pairs.
    int64_t next_source() const { return sources.empty() ? 0 : sources.back() + 1; }
};

// Every pixel of a pair of images up to kSupportSamples of them; else the smallest step whose
// regular grid (every step-th row and column, from the middle of the first step) has at most that many.
inline SupportSamples sample_support(const Image& image, const Image& labels) {
    SupportSamples s;
    s.height = image.height, s.width = image.width;
    while (((s.height + s.step - 1) / s.step) * ((s.width + s.step - 1) / s.step) > kSupportSamples) ++s.step;
    sample_pixels(s, [&](int64_t p) { s.images.push_back(image.pixels[size_t(p)]), s.labels.push_back(labels.pixels[size_t(p)]); });
    return s;
}

// Appends a checked pair at the model size (image, labels) that came from the pair at its own
// size (own_image, own_labels; the same pair when it is at the model size) and from image
// `source`: the set's label values are those at its own size, so a label too small to survive
// resizing is still a task.
inline void append_support(SupportSet& set, const Image& image, const Image& labels, const Image& own_image,
                           const Image& own_labels, const std::string& name, int64_t source) {
    set.images.insert(set.images.end(), image.pixels.begin(), image.pixels.end());
    set.labels.insert(set.labels.end(), labels.pixels.begin(), labels.pixels.end());
    set.names.push_back(name);
    set.sources.push_back(source);
    set.samples.push_back(sample_support(own_image, own_labels));
    for (float v : own_labels.pixels)
        if (v != 0) set.values.insert(int64_t(v));
}

// A support pair at the model size.
inline void add_support(SupportSet& set, const Image& image, const Image& labels, const std::string& name) {
    if (set.names.empty() && set.height == 0) set.height = image.height, set.width = image.width;
    if (image.height != set.height || image.width != set.width || labels.height != set.height || labels.width != set.width)
        throw Error(name + ": support pair of " + std::to_string(image.height) + "x" + std::to_string(image.width) + " / " +
                    std::to_string(labels.height) + "x" + std::to_string(labels.width) + ", expected the model size " +
                    std::to_string(set.height) + "x" + std::to_string(set.width));
    check_label_map(labels, name);
    append_support(set, image, labels, image, labels, name, set.next_source());
}

// Throws unless the pair can join the set: the set has a model size, the sizes match, the labels
// are label values.
inline void check_support_pair(const SupportSet& set, const Image& image, const Image& labels, const std::string& name) {
    if (set.height < 1 || set.width < 1) throw Error(name + ": the support set has no model size");
    if (image.height != labels.height || image.width != labels.width)
        throw Error(name + ": label map of " + std::to_string(labels.height) + "x" + std::to_string(labels.width) +
                    " does not match its image (" + std::to_string(image.height) + "x" + std::to_string(image.width) + ")");
    check_label_map(labels, name);  // nearest resizing only picks among these values
}

// Appends a checked pair at its own size, resized to the set's model size (bilinear; labels nearest).
inline void append_support_resized(SupportSet& set, const Image& image, const Image& labels, const std::string& name,
                                   int64_t source) {
    append_support(set, resize_bilinear(image, set.height, set.width), resize_nearest(labels, set.height, set.width), image,
                   labels, name, source);
}

// A support pair at its own size (the image prepared as the queries are, at that size): resized
// to the set's model size (bilinear; labels nearest), and kept at its own size, sampled. Pairs
// cut from one image, such as the slices of a volume, share a `source` (calibration holds them
// out together); -1: an image of its own.
inline void add_support_resized(SupportSet& set, const Image& image, const Image& labels, const std::string& name,
                                int64_t source = -1) {
    check_support_pair(set, image, labels, name);
    append_support_resized(set, image, labels, name, source < 0 ? set.next_source() : source);
}

// Tiles, for large images of small objects (microscopy): shrunk whole to the model size, a cell
// of 20 px in a 2048 px image would be 1 px. Instead a support pair becomes its windows of
// tile x tile pixels, each a support pair of its own (resized to the model size, sampled at its
// own size), and a query is segmented window by window (predict_tiled), so the network sees
// every image at the same scale, tile / model size.

// The most windows one support pair gives: enough for a model's 64 supports from 4 pairs,
// and a bound on the memory a large image takes (each window is two model-size images).
constexpr int64_t kMaxTilesPerSupport = 16;

// Where windows of `tile` pixels start along a side of `length`: every `stride`, the last flush
// with the end; a side no longer than a window is one window, the whole side.
inline std::vector<int64_t> tile_starts(int64_t length, int64_t tile, int64_t stride) {
    if (length < 1 || tile < 1 || stride < 1)
        throw Error("tile_starts: side " + std::to_string(length) + ", window " + std::to_string(tile) + ", stride " +
                    std::to_string(stride));
    std::vector<int64_t> starts{0};
    while (starts.back() + tile < length) starts.push_back(std::min(starts.back() + stride, length - tile));
    return starts;
}

// A support pair at its own size (the image prepared as the queries are) as its windows side by
// side, tile x tile (a shorter side whole), each added as add_support_resized adds a pair (the
// whole pair checked once) and named by its place. At most kMaxTilesPerSupport, spread evenly over the windows that hold a label, then
// over the others: an empty window is still an example (of nothing to find), but labelled ones
// say more. The windows share `source` (-1: a new one, as add_support_resized). Returns how many
// were added.
inline int64_t add_support_tiles(SupportSet& set, const Image& image, const Image& labels, const std::string& name,
                                 int64_t tile, int64_t source = -1) {
    check_support_pair(set, image, labels, name);
    if (tile < 1) throw Error(name + ": tile of " + std::to_string(tile) + " pixels");
    const int64_t th = std::min(tile, image.height), tw = std::min(tile, image.width);
    std::vector<std::pair<int64_t, int64_t>> labelled, empty;  // windows' top-left corners, row-major
    for (int64_t y : tile_starts(image.height, th, th))
        for (int64_t x : tile_starts(image.width, tw, tw)) {
            bool any = false;
            for (int64_t r = y; r < y + th && !any; ++r)
                for (int64_t c = x; c < x + tw && !any; ++c) any = labels.pixels[size_t(r * image.width + c)] != 0;
            (any ? labelled : empty).emplace_back(y, x);
        }
    std::set<std::pair<int64_t, int64_t>> chosen;
    for (const auto* windows : {&labelled, &empty}) {
        const int64_t n = int64_t(windows->size()), want = std::min(n, kMaxTilesPerSupport - int64_t(chosen.size()));
        for (int64_t k = 0; k < want; ++k) chosen.insert((*windows)[size_t(k * n / want)]);
    }
    if (source < 0) source = set.next_source();
    for (const auto& [y, x] : chosen)  // row-major, as std::pair orders
        append_support_resized(set, crop_image(image, y, x, th, tw), crop_image(labels, y, x, th, tw),
                               name + " tile at row " + std::to_string(y) + ", column " + std::to_string(x), source);
    return int64_t(chosen.size());
}

// Windows of the model size are worth trying (segment --tile auto) when every support is at
// least this many times the model size on each side; smaller images lose little shrunk whole.
constexpr int64_t kAutoTileFactor = 2;

inline bool large_support(int64_t height, int64_t width, const SupportSet& set) {
    return std::min(height, width) >= kAutoTileFactor * std::max(set.height, set.width);
}

inline bool large_supports(const SupportSet& set) {
    for (const SupportSamples& s : set.samples)
        if (!large_support(s.height, s.width, set)) return false;
    return !set.samples.empty();
}

struct SegmentOptions {
    int64_t support_size = 0;  // 0: all supports, at most kMaxSupportSize
    int64_t ensemble = 1;      // number of support subsets whose probabilities are averaged
    uint64_t seed = 0;         // picks the subsets
    double threshold = 0.5;
    std::vector<int64_t> only_values;  // empty: every label value of the supports
    double max_memory_mb = 0;          // > 0: every forward pass under this memory bound (engine::Options)
    int64_t flips = 4;  // 1: as is; 2: also mirrored left-right; 4: also up-down and both. Averaged.
    bool calibrate = true;  // per-label offsets and intensity weights, leave-one-out (see above)
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
    std::vector<std::vector<double>> intensity;  // per value: intensity_log_ratios of all supports
    struct Calibration {
        std::vector<double> offsets;  // per value, added to its logit; empty: not calibrated
        std::vector<double> intensity_weights;  // per value, times its intensity evidence
        int64_t images = 0;           // supports segmented from the others
        double dice_before = NAN, dice_after = NAN;  // their mean Dice with offsets 0 and with these
    };
    Calibration calibration;
};

// n images (n, h, w) mirrored left-right (fx) and/or up-down (fy), into out.
inline void flip_images(float* out, const float* in, int64_t n, int64_t h, int64_t w, bool fx, bool fy) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x)
                out[(i * h + y) * w + x] = in[(i * h + (fy ? h - 1 - y : y)) * w + (fx ? w - 1 - x : x)];
}

// The ensemble's subsets of `set` and, for each, the images and one mask set per t.values.
inline void add_members(Task& t, const SupportSet& set, const SegmentOptions& opt) {
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
}

// log(p / (1 - p)), finite: probabilities of exactly 0 or 1 (float sigmoid saturates) are clamped.
inline double logit(double p) {
    p = std::min(std::max(p, 1e-7), 1.0 - 1e-7);
    return std::log(p / (1.0 - p));
}

// Per label value, the probability (sigmoid of the logits, averaged over the ensemble and the
// mirrored views) of every pixel of the prepared query, at the model size; not calibrated.
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

// For one label value, per intensity bin of the prepared support images at their own size (their
// samples, in [0, 1]): the log of how much more often the bin occurs under the label than
// elsewhere (both histograms normalised, one pseudo-count per bin, so unseen bins say little).
// Of the supports `from` (indices into the set).
inline std::vector<double> intensity_log_ratios(const SupportSet& set, int64_t value, const std::vector<int64_t>& from) {
    std::vector<double> inside(size_t(kIntensityBins), 1.0), outside(size_t(kIntensityBins), 1.0);
    for (int64_t i : from) {
        const SupportSamples& s = set.samples[size_t(i)];
        for (size_t p = 0; p < s.images.size(); ++p)
            (s.labels[p] == float(value) ? inside : outside)[size_t(intensity_bin(s.images[p]))] += 1;
    }
    const double n_in = std::accumulate(inside.begin(), inside.end(), 0.0), n_out = std::accumulate(outside.begin(), outside.end(), 0.0);
    std::vector<double> ratio(inside.size());
    for (size_t b = 0; b < ratio.size(); ++b) ratio[b] = std::log(inside[b] / n_in) - std::log(outside[b] / n_out);
    return ratio;
}

// ... of all the supports.
inline std::vector<double> intensity_log_ratios(const SupportSet& set, int64_t value) {
    std::vector<int64_t> all(size_t(set.size()));
    std::iota(all.begin(), all.end(), int64_t(0));
    return intensity_log_ratios(set, value, all);
}

// The supports that calibration segments held-out support i from: those from other images, as
// a query's own image is never among the supports (the other windows of i's image would tell it
// too much), or the others when all came from one image.
inline std::vector<int64_t> held_out_rest(const SupportSet& set, int64_t i) {
    std::vector<int64_t> rest, others;
    for (int64_t j = 0; j < set.size(); ++j) {
        if (set.sources[size_t(j)] != set.sources[size_t(i)]) rest.push_back(j);
        if (j != i) others.push_back(j);
    }
    return rest.empty() ? others : rest;
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

// The task's label map of probabilities from predict_probabilities (any size) and the prepared
// (normalised) query at the same size, whose intensities are the evidence: each pixel takes the
// value with the highest calibrated logit, if its calibrated probability exceeds `threshold`;
// else 0. Without calibration, label_map(probs, values, threshold).
inline Image label_map(const Task& t, const std::vector<Image>& probs, const Image& query, double threshold) {
    const Task::Calibration& c = t.calibration;
    if (c.offsets.empty()) return label_map(probs, t.values, threshold);
    if (probs.size() != t.values.size()) throw Error("label_map: probabilities and label values differ in count");
    if (query.pixels.size() != probs[0].pixels.size()) throw Error("label_map: the query and the probabilities differ in size");
    Image out{probs[0].height, probs[0].width, std::vector<float>(probs[0].pixels.size(), 0.0f)};
    std::vector<double> z(probs.size()), e(probs.size());
    for (size_t p = 0; p < out.pixels.size(); ++p) {
        for (size_t l = 0; l < z.size(); ++l)
            z[l] = logit(probs[l].pixels[p]), e[l] = t.intensity[l][size_t(intensity_bin(query.pixels[p]))];
        double score;
        const size_t best = top_label(z.data(), e.data(), c.intensity_weights, c.offsets, score);
        if (sigmoid(score) > threshold) out.pixels[p] = float(t.values[best]);
    }
    return out;
}

// sigmoid of the calibrated logit per label, in place: the probabilities label_map(t, ...) thresholds.
inline void calibrated_probabilities(const Task& t, std::vector<Image>& probs, const Image& query) {
    const Task::Calibration& c = t.calibration;
    for (const Image& p : probs)
        if (p.pixels.size() != query.pixels.size())
            throw Error("calibrated_probabilities: the query and the probabilities differ in size");
    for (size_t l = 0; l < c.offsets.size() && l < probs.size(); ++l)
        for (size_t p = 0; p < probs[l].pixels.size(); ++p)
            probs[l].pixels[p] = float(sigmoid(logit(probs[l].pixels[p]) + c.offsets[l] +
                                               c.intensity_weights[l] * t.intensity[l][size_t(intensity_bin(query.pixels[p]))]));
}


// Leave-one-out predictions of n images: per pixel and label (pixels, L) the network's logit
// and the intensity evidence, and per pixel the true label index or -1. Image i holds the
// pixels [start[i], start[i + 1]).
struct CalibrationData {
    int64_t n = 0, L = 0;
    std::vector<int64_t> start{0};
    std::vector<double> logits, evidence;
    std::vector<int64_t> truth;
};

// Mean Dice over images (each the mean over the labels it or its prediction holds; images
// with neither are skipped) of the labels pick(p) gives pixel p (-1: none).
template <class Pick>
double mean_dice(const CalibrationData& d, Pick pick) {
    double total = 0;
    int64_t scored = 0;
    std::vector<Overlap> o(size_t(d.L));
    for (int64_t i = 0; i < d.n; ++i) {
        std::fill(o.begin(), o.end(), Overlap{});
        for (int64_t p = d.start[size_t(i)]; p < d.start[size_t(i + 1)]; ++p) {
            const int64_t y = d.truth[size_t(p)], l = pick(p);
            if (y >= 0) ++o[size_t(y)].truth;
            if (l >= 0) ++o[size_t(l)].pred, o[size_t(l)].both += y == l;
        }
        double sum = 0;
        int64_t labels = 0;
        for (const Overlap& x : o)
            if (x.truth + x.pred) sum += x.dice(), ++labels;
        if (labels) total += sum / double(labels), ++scored;
    }
    return scored ? total / double(scored) : 0.0;
}

// ... of the labels picked with these weights and offsets at the threshold 0.5 (a positive
// calibrated logit).
inline double mean_dice(const CalibrationData& d, const std::vector<double>& weights, const std::vector<double>& offsets) {
    return mean_dice(d, [&](int64_t p) {
        double score;
        const size_t l = top_label(&d.logits[size_t(p * d.L)], &d.evidence[size_t(p * d.L)], weights, offsets, score);
        return score > 0 ? int64_t(l) : int64_t(-1);
    });
}

// Per label, an intensity weight from kIntensityWeights and an offset from a grid of [-3, 3]
// logit units (times the weight, where above 1), searched label by label, twice over. A move
// must raise the mean Dice by more than kCalibrationTolerance, and among equals the smaller
// weight and offset win, so without a clear gain the network's logits stay as they are.
inline Task::Calibration fit_calibration(const CalibrationData& d) {
    std::vector<double> grid{0.0};
    for (int step = 1; step <= 12; ++step) grid.push_back(0.25 * step), grid.push_back(-0.25 * step);
    Task::Calibration c;
    c.images = d.n;
    c.offsets.assign(size_t(d.L), 0.0);
    c.intensity_weights.assign(size_t(d.L), 0.0);
    c.dice_before = c.dice_after = mean_dice(d, c.intensity_weights, c.offsets);
    const int64_t N = d.start[size_t(d.n)];
    std::vector<double> rest(static_cast<size_t>(N));
    std::vector<int64_t> rest_label(static_cast<size_t>(N));
    for (int sweep = 0; sweep < 2; ++sweep)
        for (int64_t l = 0; l < d.L; ++l) {
            // While label l moves, every pixel's best other label and its score stay as they are:
            // top_label with label l's offset at -infinity (with one label, rest is -infinity).
            std::vector<double> others = c.offsets;
            others[size_t(l)] = -INFINITY;
            for (int64_t p = 0; p < N; ++p)
                rest_label[size_t(p)] = int64_t(top_label(&d.logits[size_t(p * d.L)], &d.evidence[size_t(p * d.L)],
                                                          c.intensity_weights, others, rest[size_t(p)]));
            // Every weight and offset for label l, simplest first (smaller weights, then offsets).
            std::vector<double> dice, weight, offset;
            for (double w : kIntensityWeights)
                for (double step : grid) {
                    const double g = step * std::max(1.0, w);  // the offset on the evidence's scale
                    dice.push_back(mean_dice(d, [&](int64_t p) {
                        const size_t at = size_t(p * d.L + l);
                        const double z = d.logits[at] + w * d.evidence[at] + g, r = rest[size_t(p)];
                        // top_label's order: ties go to the lower index
                        const bool mine = z > r || (z == r && l < rest_label[size_t(p)]);
                        return (mine ? z : r) > 0 ? (mine ? l : rest_label[size_t(p)]) : int64_t(-1);
                    }));
                    weight.push_back(w), offset.push_back(g);
                }
            // The best, the simplest of equals; but a move must gain more than
            // kCalibrationTolerance: a few leave-one-out images cannot tell smaller gains from chance.
            const size_t k = size_t(std::max_element(dice.begin(), dice.end()) - dice.begin());
            if (dice[k] <= c.dice_after + kCalibrationTolerance) continue;
            c.dice_after = dice[k], c.offsets[size_t(l)] = offset[k], c.intensity_weights[size_t(l)] = weight[k];
        }
    return c;
}

// Leave-one-out calibration (see the top of this file): each held-out support is segmented
// from the other supports with the task's options but one view (four mirrored views move the
// offsets little and cost four times as much), its intensity evidence taken from the other
// supports too. It is scored as its label map would be made: the probabilities resized to the
// support's own size, at its samples. Then fit_calibration.
inline Task::Calibration calibrate(const Task& t, const SupportSet& set, const SegmentOptions& opt) {
    std::vector<int64_t> held;
    if (set.size() <= kCalibrationImages)
        for (int64_t i = 0; i < set.size(); ++i) held.push_back(i);
    else
        held = support_subsets(set.size(), kCalibrationImages, 1, opt.seed ^ 0xCA11B8A7Eull)[0];
    CalibrationData d;
    d.n = int64_t(held.size()), d.L = int64_t(t.values.size());
    for (int64_t i : held) d.start.push_back(d.start.back() + int64_t(set.samples[size_t(i)].images.size()));
    const int64_t HW = set.height * set.width, L = d.L;
    d.logits.resize(size_t(d.start.back() * L)), d.evidence.resize(d.logits.size()), d.truth.assign(size_t(d.start.back()), -1);
    SegmentOptions one_view = opt;
    one_view.flips = 1;
    for (int64_t k = 0; k < d.n; ++k) {
        const int64_t i = held[size_t(k)];
        const std::vector<int64_t> from = held_out_rest(set, i);
        SupportSet rest;
        rest.height = set.height, rest.width = set.width;
        for (int64_t j : from) {
            rest.images.insert(rest.images.end(), set.images.begin() + j * HW, set.images.begin() + (j + 1) * HW);
            rest.labels.insert(rest.labels.end(), set.labels.begin() + j * HW, set.labels.begin() + (j + 1) * HW);
            rest.names.emplace_back();  // only counted
        }
        Task loo;  // the task's label values even where the other supports lack one: an empty mask
        loo.model = t.model, loo.engine = t.engine, loo.height = t.height, loo.width = t.width;
        loo.values = t.values, loo.flips = 1;
        add_members(loo, rest, one_view);
        const Image image{set.height, set.width, std::vector<float>(set.images.begin() + i * HW, set.images.begin() + (i + 1) * HW)};
        const SupportSamples& own = set.samples[size_t(i)];
        std::vector<Image> probs = predict_probabilities(loo, image);
        for (int64_t l = 0; l < L; ++l) {
            if (own.height != set.height || own.width != set.width)
                probs[size_t(l)] = resize_bilinear(probs[size_t(l)], own.height, own.width);
            const std::vector<double> ratio = intensity_log_ratios(set, t.values[size_t(l)], from);
            size_t p = 0;  // the sample's index in own
            sample_pixels(own, [&](int64_t pixel) {
                const int64_t q = d.start[size_t(k)] + int64_t(p);  // its row in d
                d.logits[size_t(q * L + l)] = logit(probs[size_t(l)].pixels[size_t(pixel)]);
                d.evidence[size_t(q * L + l)] = ratio[size_t(intensity_bin(own.images[p]))];
                if (own.labels[p] == float(t.values[size_t(l)])) d.truth[size_t(q)] = l;
                ++p;
            });
        }
    }
    return fit_calibration(d);
}

inline Task make_task(const Model& model, const SupportSet& set, const SegmentOptions& opt) {
    if (set.size() == 0) throw Error("no support pairs");
    if (int64_t(set.samples.size()) != set.size() || int64_t(set.sources.size()) != set.size() ||
        int64_t(set.images.size()) != set.size() * set.height * set.width)
        throw Error("support set: its pairs were not all added with add_support or add_support_resized");
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
    add_members(t, set, opt);
    for (int64_t v : t.values) t.intensity.push_back(intensity_log_ratios(set, v));
    if (opt.calibrate && set.size() >= kMinCalibrationSupports && int64_t(t.values.size()) <= kMaxCalibrationLabels)
        t.calibration = calibrate(t, set, opt);
    return t;
}


}  // namespace universeg
