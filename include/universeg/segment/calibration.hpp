// universeg/segment/calibration.hpp - per-label logit offsets and intensity weights fitted on the
// supports, leave-one-out (docs/segment.md), and make_task, which builds a task and calibrates it.
#pragma once

#include "metrics.hpp"
#include "task.hpp"

#include <algorithm>
#include <iterator>

namespace universeg {

// Calibration: how many supports are segmented from the others (a seeded subset of larger
// sets), the fewest supports it needs, and the most label values it fits offsets for (the
// search costs labels squared).
constexpr int64_t kCalibrationImages = 16;
constexpr int64_t kMinCalibrationSupports = 4;
constexpr int64_t kMaxCalibrationLabels = 8;
// The weights the intensity evidence may take. At 16 the evidence overrules a confident network (logits reach about +-16); at 64 the network only breaks
// the histograms' ties, so where intensity alone defines a label the calibrated label map can
// become the classical per-task classifier.
constexpr double kIntensityWeights[] = {0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0};
// The least gain in leave-one-out mean Dice that moves a label's offset or weight.
constexpr double kCalibrationTolerance = 0.005;

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



// Leave-one-out predictions of n images: per pixel and label (pixels, L) the network's logit
// and the intensity evidence, and per pixel the true label index or -1. Image i holds the
// pixels [start[i], start[i + 1]), rows[i] x cols[i] of them row-major (for regions).
struct CalibrationData {
    int64_t n = 0, L = 0;
    std::vector<int64_t> start{0}, rows, cols;
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
    c.regions.assign(size_t(d.L), 0);
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

// The labels of every pixel of d (-1: none) as label_map makes them with c's weights and offsets,
// before any regions.
inline std::vector<int64_t> calibrated_labels(const CalibrationData& d, const Task::Calibration& c) {
    std::vector<int64_t> labels(size_t(d.start[size_t(d.n)]));
    for (size_t p = 0; p < labels.size(); ++p) {
        double score;
        const size_t l = top_label(&d.logits[p * size_t(d.L)], &d.evidence[p * size_t(d.L)], c.intensity_weights, c.offsets, score);
        labels[p] = score > 0 ? int64_t(l) : -1;
    }
    return labels;
}

// ... then, per label in order, `regions` (values for c.regions) applied image by image.
inline std::vector<int64_t> with_regions(const CalibrationData& d, std::vector<int64_t> labels, const std::vector<int64_t>& regions) {
    for (int64_t i = 0; i < d.n; ++i)
        for (int64_t l = 0; l < d.L; ++l)
            if (regions[size_t(l)])
                clean_regions(&labels[size_t(d.start[size_t(i)])], d.rows[size_t(i)], d.cols[size_t(i)], l, int64_t(-1),
                              regions[size_t(l)]);
    return labels;
}

// Per label, after its weight and offset, what to do to its regions (kKeepLargest, kFillHoles,
// both or neither), label by label: as fit_calibration, a choice must raise the mean Dice by more
// than kCalibrationTolerance, and among equals the simpler (fewer operations) wins.
inline void fit_regions(const CalibrationData& d, Task::Calibration& c) {
    const std::vector<int64_t> before = calibrated_labels(d, c);
    for (int64_t l = 0; l < d.L; ++l) {
        std::vector<int64_t> trial = c.regions;
        double best = -1;
        int64_t choice = 0;
        for (int64_t r : {kKeepLargest, kFillHoles, kKeepLargest | kFillHoles}) {
            trial[size_t(l)] = r;
            const std::vector<int64_t> labels = with_regions(d, before, trial);
            const double dice = mean_dice(d, [&](int64_t p) { return labels[size_t(p)]; });
            if (dice > best) best = dice, choice = r;
        }
        if (best <= c.dice_after + kCalibrationTolerance) continue;
        c.regions[size_t(l)] = choice, c.dice_after = best;
    }
}

// Leave-one-out predictions of the supports `held`, each segmented from the supports from(i)
// with the task's options but one view (four mirrored views move the offsets little and cost
// four times as much), its intensity evidence (and with `colour`, its colour evidence) taken from
// them too. Each is scored as its label map would be made: the probabilities resized to the
// support's own size, at its samples.
template <class From>
CalibrationData leave_one_out(const Task& t, const SupportSet& set, const std::vector<int64_t>& held, const SegmentOptions& opt,
                              From from_of, std::vector<double>* colour) {
    CalibrationData d;
    d.n = int64_t(held.size()), d.L = int64_t(t.values.size());
    for (int64_t i : held) {
        const SupportSamples& s = set.samples[size_t(i)];
        d.start.push_back(d.start.back() + int64_t(s.images.size()));
        d.rows.push_back((s.height - s.step / 2 + s.step - 1) / s.step);  // sample_pixels' grid
        d.cols.push_back((s.width - s.step / 2 + s.step - 1) / s.step);
    }
    const int64_t HW = set.height * set.width, L = d.L;
    d.logits.resize(size_t(d.start.back() * L)), d.evidence.resize(d.logits.size()), d.truth.assign(size_t(d.start.back()), -1);
    if (colour) colour->assign(d.logits.size(), 0.0);
    SegmentOptions one_view = opt;
    one_view.flips = 1;
    for (int64_t k = 0; k < d.n; ++k) {
        const int64_t i = held[size_t(k)];
        const std::vector<int64_t> from = from_of(i);
        Task loo;  // the task's label values even where the other supports lack one: an empty mask
        loo.model = t.model, loo.engine = t.engine, loo.height = t.height, loo.width = t.width;
        loo.values = t.values, loo.flips = 1;
        loo.members = make_members(set, from, t.values, one_view);
        const Image image{set.height, set.width, std::vector<float>(set.images.begin() + i * HW, set.images.begin() + (i + 1) * HW)};
        const SupportSamples& own = set.samples[size_t(i)];
        std::vector<Image> probs = predict_probabilities(loo, image);
        for (int64_t l = 0; l < L; ++l) {
            if (own.height != set.height || own.width != set.width)
                probs[size_t(l)] = resize_bilinear(probs[size_t(l)], own.height, own.width);
            const std::vector<double> ratio = intensity_log_ratios(set, t.values[size_t(l)], from);
            const std::vector<double> colour_ratio =
                colour ? intensity_log_ratios(set, t.values[size_t(l)], from, true) : std::vector<double>{};
            size_t p = 0;  // the sample's index in own
            sample_pixels(own, [&](int64_t pixel) {
                const int64_t q = d.start[size_t(k)] + int64_t(p);  // its row in d
                d.logits[size_t(q * L + l)] = logit(probs[size_t(l)].pixels[size_t(pixel)]);
                d.evidence[size_t(q * L + l)] = ratio[size_t(sample_bin(own, p, false))];
                if (colour) (*colour)[size_t(q * L + l)] = colour_ratio[size_t(sample_bin(own, p, true))];
                if (own.labels[p] == float(t.values[size_t(l)])) d.truth[size_t(q)] = l;
                ++p;
            });
        }
    }
    return d;
}

// Leave-one-out calibration (docs/segment.md) of a task's supports (a seeded subset of larger
// sets): fit_calibration and (opt.whole_images) fit_regions of their leave_one_out predictions;
// where every support is colour, again with colour evidence; and where the supports fall into two
// example types (`types`, example_types of the set; none where it has none or the examples are
// windows), again with each held out from its own type's. Each of these choices is kept only
// where it scores clearly higher.
inline Task::Calibration calibrate(const Task& t, const SupportSet& set, const SegmentOptions& opt,
                                   const std::vector<Task::Type>& types) {
    std::vector<int64_t> held;
    if (set.size() <= kCalibrationImages)
        for (int64_t i = 0; i < set.size(); ++i) held.push_back(i);
    else
        held = support_subsets(set.size(), kCalibrationImages, 1, opt.seed ^ 0xCA11B8A7Eull)[0];
    const bool colour = set.colour();
    auto fit = [&](CalibrationData d, std::vector<double>& colour_evidence) {
        auto one = [&](const CalibrationData& data) {
            Task::Calibration c = fit_calibration(data);
            if (opt.whole_images) fit_regions(data, c);
            return c;
        };
        Task::Calibration c = one(d);
        if (colour) {
            d.evidence = std::move(colour_evidence);
            Task::Calibration by_colour = one(d);
            by_colour.colour = true;
            if (by_colour.dice_after > c.dice_after + kCalibrationTolerance) c = by_colour;
        }
        return c;
    };
    std::vector<double> colour_evidence;
    Task::Calibration c = fit(leave_one_out(t, set, held, opt, [&](int64_t i) { return held_out_rest(set, i); },
                                            colour ? &colour_evidence : nullptr),
                              colour_evidence);
    if (!types.empty()) {
        // Held out from the other examples of its type (all the others where those share its source).
        auto own_type = [&](int64_t i) {
            const std::vector<int64_t> rest = held_out_rest(set, i);
            const std::vector<int64_t>& first = types[0].examples;
            const std::vector<int64_t>& mine = types[std::binary_search(first.begin(), first.end(), i) ? 0 : 1].examples;
            std::vector<int64_t> from;
            std::set_intersection(rest.begin(), rest.end(), mine.begin(), mine.end(), std::back_inserter(from));
            return from.empty() ? rest : from;
        };
        Task::Calibration by_type = fit(leave_one_out(t, set, held, opt, own_type, colour ? &colour_evidence : nullptr), colour_evidence);
        by_type.types = true;
        if (by_type.dice_after > c.dice_after + kCalibrationTolerance) c = by_type;
    }
    return c;
}

// The label values a task of `set` segments, ascending: opt.only_values (each must occur in the
// support label maps), else every non-zero value there is.
inline std::vector<int64_t> task_values(const SupportSet& set, const SegmentOptions& opt) {
    std::vector<int64_t> values;
    if (opt.only_values.empty()) {
        values.assign(set.values.begin(), set.values.end());
    } else {
        for (int64_t v : opt.only_values) {
            if (!set.values.count(v)) throw Error("label value " + std::to_string(v) + " does not occur in the support label maps");
            values.push_back(v);
        }
    }
    if (values.empty()) throw Error("the support label maps are all empty: no label to segment");
    if (int64_t(values.size()) > kMaxLabelValues)
        throw Error("the support label maps hold " + std::to_string(values.size()) +
                    " distinct values (are the labels images?); select one with a label value option");
    return values;
}

// The task of `set` for `model`: subsets, masks, intensity evidence and (opt.calibrate, with at
// least kMinCalibrationSupports supports and at most kMaxCalibrationLabels labels) calibration.
// The task points to `model`, which must outlive it.
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
    t.values = task_values(set, opt);
    if (opt.support_size < 0 || opt.ensemble < 1) throw Error("support size and ensemble must be positive");
    if (opt.flips != 1 && opt.flips != 2 && opt.flips != 4)
        throw Error("flips must be 1, 2 or 4, not " + std::to_string(opt.flips));
    t.flips = opt.flips;
    t.members = make_members(set, all_supports(set), t.values, opt);
    set_evidence(t, set, false);
    if (opt.calibrate && set.size() >= kMinCalibrationSupports && int64_t(t.values.size()) <= kMaxCalibrationLabels) {
        std::vector<Task::Type> types = opt.whole_images ? example_types(set) : std::vector<Task::Type>{};
        t.calibration = calibrate(t, set, opt, types);
        if (t.calibration.types) set_types(t, set, std::move(types), opt);
        if (t.calibration.colour || t.calibration.types) set_evidence(t, set, t.calibration.colour);
    }
    return t;
}

}  // namespace universeg
