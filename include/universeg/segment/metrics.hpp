// universeg/segment/metrics.hpp - how segmentations are scored, in one place: Dice and IoU of
// label maps (Overlap, label_overlaps), the Dice of a binary prediction from logits
// (dice_score), and the classical per-task intensity-histogram classifier that a few-shot model
// must beat (histogram_baseline).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

namespace universeg {

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

// Dice of the hard mask (logit > 0) against a 0/1 label; 1 when both are empty.
inline double dice_score(const float* logits, const float* labels, int64_t n) {
    int64_t inter = 0, pred = 0, truth = 0;
    for (int64_t i = 0; i < n; ++i) {
        const bool p = logits[i] > 0, t = labels[i] > 0.5f;
        inter += p && t, pred += p, truth += t;
    }
    return pred + truth == 0 ? 1.0 : 2.0 * double(inter) / double(pred + truth);
}

// The classical baseline a few-shot model must beat: a per-task intensity-histogram
// classifier. From the S supports (images in [0,1], labels 0/1) it counts foreground and
// background pixels per intensity bin; a query pixel is foreground where its bin's foreground
// share reaches a threshold, and the threshold is the one that maximises the Dice of this
// rule on the supports themselves (so small targets are not lost to the background prior).
// Writes +1 / -1 "logits" so dice_score applies.
inline void histogram_baseline(const float* support_images, const float* support_labels, int64_t S, int64_t n_pixels,
                               const float* query, int64_t n_query, float* out, int bins = 32) {
    std::vector<double> fg(size_t(bins), 0), bg(size_t(bins), 0);
    auto bin = [bins](float v) { return std::min(bins - 1, std::max(0, int(v * float(bins)))); };
    for (int64_t i = 0; i < S * n_pixels; ++i) (support_labels[i] > 0.5f ? fg : bg)[size_t(bin(support_images[i]))] += 1;
    std::vector<int> order(static_cast<size_t>(bins));
    std::vector<double> share(static_cast<size_t>(bins));
    double total_fg = 0;
    for (int b = 0; b < bins; ++b) {
        order[size_t(b)] = b;
        share[size_t(b)] = fg[size_t(b)] + bg[size_t(b)] > 0 ? fg[size_t(b)] / (fg[size_t(b)] + bg[size_t(b)]) : 0.0;
        total_fg += fg[size_t(b)];
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return share[size_t(a)] > share[size_t(b)]; });
    // Taking bins in decreasing foreground share, keep the prefix with the best support Dice.
    double tp = 0, fp = 0, best = -1, threshold = 2;  // 2: nothing is foreground
    for (size_t k = 0; k < order.size(); ++k) {
        const int b = order[k];
        if (fg[size_t(b)] == 0) break;
        tp += fg[size_t(b)], fp += bg[size_t(b)];
        const double dice = 2 * tp / (2 * tp + fp + (total_fg - tp));
        if (dice > best) best = dice, threshold = share[size_t(b)];
    }
    for (int64_t i = 0; i < n_query; ++i) out[i] = share[size_t(bin(query[i]))] >= threshold ? 1.0f : -1.0f;
}

}  // namespace universeg
