// universeg/segment/support.hpp - support sets: labelled examples prepared as the queries are,
// resized to the model size and sampled at their own size; large examples cut into windows.
#pragma once

#include "../io/image.hpp"

#include <set>
#include <utility>

namespace universeg {

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

// Colour evidence (where every example is colour): the joint histogram of R, G and B, each in
// kColourLevels levels, 64 bins; finer levels leave most bins empty in 16 examples.
constexpr int64_t kColourLevels = 4, kColourBins = kColourLevels * kColourLevels * kColourLevels;

inline int64_t colour_bin(double r, double g, double b) {
    auto level = [](double v) { return v > 0 ? (v < 1 ? int64_t(v * kColourLevels) : kColourLevels - 1) : int64_t(0); };
    return (level(r) * kColourLevels + level(g)) * kColourLevels + level(b);
}

// ... of pixel p of an image: from its colour planes, or for a grey image R = G = B.
inline int64_t colour_bin(const Image& img, size_t p) {
    const size_t n = img.pixels.size();
    if (img.colour.size() != 3 * n) return colour_bin(img.pixels[p], img.pixels[p], img.pixels[p]);
    return colour_bin(img.colour[p], img.colour[n + p], img.colour[2 * n + p]);
}

// A support pair as label maps are made, at its own size: label maps are thresholded there, from
// probabilities resized back and the query's own intensities, so the intensity evidence and the
// calibration look at full-size pixels, not at the model size's blur of small objects.
struct SupportSamples {
    int64_t height = 0, width = 0;      // the pair's own size
    int64_t step = 1;                   // every step-th row and column, from step / 2 (sample_pixels)
    std::vector<float> images, labels;  // the samples' prepared intensities and label values, row-major
    std::vector<int32_t> colour;        // their colour_bin; empty for a grey pair
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
    // Every pair is colour: the intensity evidence is a colour histogram.
    bool colour() const {
        for (const SupportSamples& s : samples)
            if (s.colour.empty()) return false;
        return !samples.empty();
    }
    // The source of the next image's pairs.
    int64_t next_source() const { return sources.empty() ? 0 : sources.back() + 1; }
};

// Every pixel of a pair of images up to kSupportSamples of them; else the smallest step whose
// regular grid (every step-th row and column, from the middle of the first step) has at most that many.
inline SupportSamples sample_support(const Image& image, const Image& labels) {
    SupportSamples s;
    s.height = image.height, s.width = image.width;
    while (((s.height + s.step - 1) / s.step) * ((s.width + s.step - 1) / s.step) > kSupportSamples) ++s.step;
    const bool colour = image.colour.size() == 3 * image.pixels.size();
    sample_pixels(s, [&](int64_t p) {
        s.images.push_back(image.pixels[size_t(p)]), s.labels.push_back(labels.pixels[size_t(p)]);
        if (colour) s.colour.push_back(int32_t(colour_bin(image, size_t(p))));
    });
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

}  // namespace universeg
