// Few-shot segmentation (universeg/segment/): the pipeline's pieces, the Segmenter API, and the
// `universeg segment` / `universeg eval` commands end to end: formats, odd sizes, multi-label
// maps, thresholds, ensembles, NIfTI volumes, bad inputs. The outputs of segment before the API
// (tests/data/segment/reference, written by commit e64b259's program; see its README) are
// reproduced by the Segmenter and by today's command. The segment side of issue 38: every output
// planned before anything is computed, errors that name their cause before computing, a failed
// query leaving none of its outputs, --tile's lower bound. Uses the small golden custom model
// (tests/data/golden/custom_b1_s3_48x80, sizes multiples of 4) at small sizes to stay fast; the
// bundled weights on examples/data/cells are the [heavy] cases.
#include <universeg/io/nifti.hpp>
#include <universeg/segment/segment.hpp>
#include <universeg/train/train.hpp>
#include <universeg/universeg.hpp>

#include <stb/stb_image_write.h>

#include "test_util.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace universeg;
using namespace test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kWeights = std::string(UNIVERSEG_TEST_DATA) + "/golden/custom_b1_s3_48x80/weights.pt";
// Committed JPEGs (stb_image_write's JPEG encoder trips the UB sanitizer).
const std::string kImages = std::string(UNIVERSEG_TEST_DATA) + "/images/";

const Model& model() {
    static const Model m = load_model(kWeights);
    return m;
}

// A grey test image: smooth gradient plus a bright disc, values spanning 0..255.
std::vector<uint8_t> grey_pattern(int h, int w, int seed) {
    std::vector<uint8_t> p(size_t(h * w));
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            const double dx = x - w * (0.3 + 0.1 * (seed % 4)), dy = y - h * 0.5;
            const bool disc = dx * dx + dy * dy < 0.05 * w * h;
            p[size_t(y * w + x)] = uint8_t(disc ? 255 : (x * 97 + y * 31 + seed * 13) % 200);
        }
    p[0] = 0;
    p[1] = 255;
    return p;
}

// Labels: 3 inside a left box, 7 inside a right box, 0 elsewhere.
std::vector<uint8_t> label_pattern(int h, int w, int seed) {
    std::vector<uint8_t> p(size_t(h * w), 0);
    for (int y = h / 4; y < 3 * h / 4; ++y)
        for (int x = 0; x < w; ++x) {
            if (x >= w / 8 + seed % 3 && x < w / 3) p[size_t(y * w + x)] = 3;
            if (x >= w / 2 && x < 7 * w / 8 - seed % 2) p[size_t(y * w + x)] = 7;
        }
    return p;
}

std::vector<uint8_t> to_rgb(const std::vector<uint8_t>& g) {
    std::vector<uint8_t> c;
    for (size_t i = 0; i < g.size(); ++i) c.insert(c.end(), {g[i], uint8_t(255 - g[i]), uint8_t(g[i] / 2)});
    return c;
}

// A support set at the model size from the patterns above, labels binary for value 1.
SupportSet tiny_set(int n, int64_t H, int64_t W) {
    SupportSet set;
    set.height = H;
    set.width = W;
    for (int i = 0; i < n; ++i) {
        const std::vector<uint8_t> g = grey_pattern(int(H), int(W), i), l = label_pattern(int(H), int(W), i);
        Image img{H, W, {}}, lab{H, W, {}};
        for (uint8_t v : g) img.pixels.push_back(v / 255.0f);
        for (uint8_t v : l) lab.pixels.push_back(float(v));
        add_support(set, img, lab, "pair " + std::to_string(i));
    }
    return set;
}

Image pattern_image(int64_t H, int64_t W, int seed) {
    Image img{H, W, {}};
    for (uint8_t v : grey_pattern(int(H), int(W), seed)) img.pixels.push_back(v / 255.0f);
    return img;
}

// (h, w) image mirrored left-right and/or up-down, written here independently of segment.hpp.
std::vector<float> mirrored(const float* img, int64_t h, int64_t w, bool lr, bool ud) {
    std::vector<float> out;
    for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) out.push_back(img[(ud ? h - 1 - y : y) * w + (lr ? w - 1 - x : x)]);
    return out;
}

}  // namespace

TEST_CASE("support subsets: seeded, sorted, distinct, within range", "[segment]") {
    const auto a = support_subsets(10, 4, 3, 42), b = support_subsets(10, 4, 3, 42), c = support_subsets(10, 4, 3, 43);
    REQUIRE(a == b);
    REQUIRE(a != c);
    REQUIRE(a.size() == 3);
    for (const auto& s : a) {
        REQUIRE(s.size() == 4);
        REQUIRE(std::is_sorted(s.begin(), s.end()));
        REQUIRE(std::adjacent_find(s.begin(), s.end()) == s.end());
        REQUIRE((s.front() >= 0 && s.back() < 10));
    }
    REQUIRE(a[0] != a[1]);
    // Only one subset of size n exists: asking for 5 gives 1.
    REQUIRE(support_subsets(6, 6, 5, 0) == std::vector<std::vector<int64_t>>{{0, 1, 2, 3, 4, 5}});
    // C(4, 2) = 6 distinct subsets at most.
    REQUIRE(support_subsets(4, 2, 10, 1).size() == 6);
    REQUIRE(!error_of([] { support_subsets(3, 4, 1, 0); }).empty());
}

TEST_CASE("label map: most probable label above the threshold", "[segment]") {
    const std::vector<Image> probs = {{1, 5, {0.6f, 0.6f, 0.4f, 0.9f, 0.55f}}, {1, 5, {0.7f, 0.2f, 0.3f, 0.1f, 0.55f}}};
    REQUIRE(label_map(probs, {3, 7}, 0.5).pixels == std::vector<float>{7, 3, 0, 3, 3});
    REQUIRE(label_map(probs, {3, 7}, 0.65).pixels == std::vector<float>{7, 0, 0, 3, 0});
    REQUIRE(label_map(probs, {3, 7}, 0.0).pixels == std::vector<float>{7, 3, 3, 3, 3});
    REQUIRE(!error_of([&] { label_map(probs, {3}, 0.5); }).empty());
}

TEST_CASE("label map: calibrated logits", "[segment]") {
    // Raw probabilities of labels 3 and 7; the last pixel has both saturated at 1.
    const std::vector<Image> probs = {{1, 5, {0.7f, 0.7f, 0.2f, 0.3f, 1.0f}}, {1, 5, {0.6f, 0.1f, 0.4f, 0.2f, 1.0f}}};
    const Image query{1, 5, {0.0f, 0.0f, 0.0f, 0.0f, 0.99f}};  // intensity bins 0, 0, 0, 0, 31
    Task t;
    t.values = {3, 7};
    t.intensity = {std::vector<double>(kIntensityBins, 0.0), std::vector<double>(kIntensityBins, 0.0)};
    t.intensity[0][0] = 2, t.intensity[0][31] = -1;  // label 3's intensity evidence
    REQUIRE(label_map(t, probs, query, 0.5).pixels == std::vector<float>{3, 3, 0, 0, 3});  // uncalibrated: the plain rule
    // logit(0.7) = 0.847 < logit(0.6) + 1 = 1.405: 7; logit(0.1) + 1 = -1.197: 3;
    // logit(0.4) + 1 = 0.595 > logit(0.2): 7; logit(0.2) + 1 = -0.386 and logit(0.3) < 0: 0;
    // saturated: the same clamped logit, + 1 wins.
    t.calibration.offsets = {0.0, 1.0};
    t.calibration.intensity_weights = {0.0, 0.0};
    REQUIRE(label_map(t, probs, query, 0.5).pixels == std::vector<float>{7, 3, 7, 0, 7});
    // sigmoid(1.405) = 0.803, sigmoid(0.847) = 0.700 and sigmoid(0.595) = 0.644: 0.65 drops the last.
    REQUIRE(label_map(t, probs, query, 0.65).pixels == std::vector<float>{7, 3, 0, 0, 7});
    REQUIRE(label_map(t, probs, query, 0.0).pixels == std::vector<float>{7, 3, 7, 7, 7});  // -0.386 > logit(0.3)
    REQUIRE(label_map(t, probs, query, 1.0).pixels == std::vector<float>(5, 0.0f));
    // Label 3's intensity evidence at weight 0.5: +1 on the first four pixels, -0.5 on the last.
    // 1.847 > 1.405: 3; 1.847 > -1.197: 3; logit(0.2) + 1 = -0.386 < 0.595: 7;
    // logit(0.3) + 1 = 0.153 > -0.386: 3; saturated: 7 by 1.5.
    t.calibration.intensity_weights = {0.5, 0.0};
    REQUIRE(label_map(t, probs, query, 0.5).pixels == std::vector<float>{3, 3, 7, 3, 7});
    for (size_t p = 0; p < 5; ++p) {
        const double z[2] = {logit(probs[0].pixels[p]), logit(probs[1].pixels[p])};
        const double e[2] = {t.intensity[0][size_t(intensity_bin(query.pixels[p]))], 0.0};
        double score;
        const size_t l = top_label(z, e, t.calibration.intensity_weights, t.calibration.offsets, score);
        REQUIRE(label_map(t, probs, query, 0.5).pixels[p] == (score <= 0 ? 0.0f : l == 0 ? 3.0f : 7.0f));
    }
    std::vector<Image> calibrated = probs;
    calibrated_probabilities(t, calibrated, query);
    REQUIRE(calibrated[0].pixels[0] == Approx(sigmoid(logit(0.7) + 1)));
    REQUIRE(calibrated[0].pixels[4] == Approx(sigmoid(logit(1.0) - 0.5)));
    REQUIRE(calibrated[1].pixels[0] == Approx(sigmoid(logit(0.6) + 1)));
    REQUIRE(!error_of([&] { label_map(t, probs, Image{1, 4, std::vector<float>(4)}, 0.5); }).empty());
    REQUIRE(!error_of([&] { calibrated_probabilities(t, calibrated, Image{1, 4, std::vector<float>(4)}); }).empty());
    REQUIRE(std::isfinite(logit(1.0)));
    REQUIRE(logit(0.5) == 0);
}

TEST_CASE("intensity evidence: log ratio of the label's and the rest's histograms", "[segment]") {
    // Two 1x4 supports; label 5 on intensities 0.9 (bin 28) and 0.95 (bin 30), the rest at 0.1 (bin 3).
    SupportSet set;
    add_support(set, {1, 4, {0.9f, 0.1f, 0.1f, 0.1f}}, {1, 4, {5, 0, 0, 0}}, "a");
    add_support(set, {1, 4, {0.95f, 0.9f, 0.1f, 0.1f}}, {1, 4, {5, 0, 0, 0}}, "b");
    REQUIRE(intensity_bin(0.0) == 0);
    REQUIRE(intensity_bin(1.0) == kIntensityBins - 1);
    REQUIRE(intensity_bin(0.9) == 28);
    REQUIRE(intensity_bin(-0.5) == 0);
    REQUIRE(intensity_bin(NAN) == 0);
    REQUIRE(intensity_bin(INFINITY) == kIntensityBins - 1);
    // Inside: 2 pixels + 32 pseudo-counts; outside: 6 + 32. Bin 28: 1 + 1 inside, 1 + 1 outside.
    const std::vector<double> r = intensity_log_ratios(set, 5);
    REQUIRE(r.size() == size_t(kIntensityBins));
    REQUIRE(r[28] == Approx(std::log(2.0 / 34) - std::log(2.0 / 38)));
    REQUIRE(r[30] == Approx(std::log(2.0 / 34) - std::log(1.0 / 38)));
    REQUIRE(r[3] == Approx(std::log(1.0 / 34) - std::log(6.0 / 38)));
    REQUIRE(r[10] == Approx(std::log(1.0 / 34) - std::log(1.0 / 38)));
    // Of support 0 alone: inside 1 + 32, outside 3 + 32; bin 30 unseen.
    const std::vector<double> s = intensity_log_ratios(set, 5, {0});
    REQUIRE(s[28] == Approx(std::log(2.0 / 33) - std::log(1.0 / 35)));
    REQUIRE(s[30] == Approx(std::log(1.0 / 33) - std::log(1.0 / 35)));
}

namespace {
CalibrationData calibration_data(int64_t n, int64_t HW, int64_t L, std::vector<double> logits, std::vector<int64_t> truth,
                                 std::vector<double> evidence = {}) {
    CalibrationData d;
    d.n = n, d.L = L;
    for (int64_t i = 1; i <= n; ++i) d.start.push_back(i * HW);
    if (evidence.empty()) evidence.assign(logits.size(), 0.0);
    d.logits = std::move(logits), d.truth = std::move(truth), d.evidence = std::move(evidence);
    return d;
}
}  // namespace

TEST_CASE("calibration: the smallest weights and offsets that clearly maximise the mean Dice", "[segment]") {
    // One label: truth on the first two pixels, whose logits (-1) are below 0, the others' at -3.
    // Offsets in (1, 3) are perfect; 1.25 is the smallest on the grid; no intensity needed.
    Task::Calibration c = fit_calibration(calibration_data(1, 4, 1, {-1, -1, -3, -3}, {0, 0, -1, -1}));
    REQUIRE(c.offsets == std::vector<double>{1.25});
    REQUIRE(c.intensity_weights == std::vector<double>{0});
    REQUIRE(c.dice_before == 0);
    REQUIRE(c.dice_after == 1);
    REQUIRE(c.images == 1);
    // Label 0 contains label 1 (a cell and its nucleus) and wins the comparison on the nucleus:
    // the container's offset must fall below -0.5 (ties go to the lower index), so -0.75.
    // Before: label 0 Dice 2/4, label 1 Dice 0.
    c = fit_calibration(calibration_data(1, 4, 2, {2, -2, 2, 1.5, 1.5, 1, -2, -2}, {0, 1, 1, -1}));
    REQUIRE(c.offsets == std::vector<double>{-0.75, 0});
    REQUIRE(c.dice_before == Approx(0.25));
    REQUIRE(c.dice_after == 1);
    // Logits that cannot tell the pixels apart, intensity evidence that can (+1 on the label,
    // -1 off it). Weight 0 at best marks everything (offset 1.25: Dice 2/3); weight 0.5 with an
    // offset in (0.5, 1.5) is perfect, 0.75 the first on the grid; weight 1 only ties.
    c = fit_calibration(calibration_data(1, 4, 1, {-1, -1, -1, -1}, {0, 0, -1, -1}, {1, 1, -1, -1}));
    REQUIRE(c.intensity_weights == std::vector<double>{0.5});
    REQUIRE(c.offsets == std::vector<double>{0.75});
    REQUIRE(c.dice_after == 1);
    // A confident network, wrong on two pixels (logits +-12), against evidence that is right
    // (+1 on the label, -1 off it): the evidence overrules only if w + g > 12 and w - g > 12,
    // so weights up to 8 cannot (Dice 1/2 before) and 16 with the offset 0 is perfect.
    c = fit_calibration(calibration_data(1, 4, 1, {12, -12, 12, -12}, {0, 0, -1, -1}, {1, 1, -1, -1}));
    REQUIRE(c.dice_before == 0.5);
    REQUIRE(c.intensity_weights == std::vector<double>{16});
    REQUIRE(c.offsets == std::vector<double>{0});
    REQUIRE(c.dice_after == 1);
    // A gain of at most kCalibrationTolerance moves nothing: one missed pixel of 200 (Dice
    // 398/399) that an offset of 0.25 would win.
    std::vector<double> z1(400, -3.0);
    std::vector<int64_t> y1(400, -1);
    for (size_t p = 0; p < 200; ++p) z1[p] = p == 0 ? -0.2 : 1.0, y1[p] = 0;
    c = fit_calibration(calibration_data(1, 400, 1, z1, y1));
    REQUIRE(c.dice_before == Approx(398.0 / 399));
    REQUIRE(398.0 / 399 + kCalibrationTolerance > 1.0);
    REQUIRE(c.offsets == std::vector<double>{0});
    REQUIRE(c.dice_after == c.dice_before);
    z1[1] = z1[2] = -0.2;  // three missed: 394/397 + the tolerance < 1, so it moves
    c = fit_calibration(calibration_data(1, 400, 1, z1, y1));
    REQUIRE(c.offsets == std::vector<double>{0.25});
    REQUIRE(c.dice_after == 1);
    // Three labels, random logits, evidence and truth: the search's fast scoring (one label
    // moving, the others fixed) agrees with scoring every label afresh.
    Rng rng(7);
    std::vector<double> z(3 * 200 * 3), e(z.size());
    std::vector<int64_t> y(3 * 200);
    for (double& v : z) v = 4 * rng.uniform() - 2.5;
    for (double& v : e) v = 2 * rng.uniform() - 1;
    for (int64_t& v : y) v = int64_t(rng.below(4)) - 1;
    const CalibrationData random = calibration_data(3, 200, 3, z, y, e);
    c = fit_calibration(random);
    REQUIRE(c.dice_after > c.dice_before);
    REQUIRE(c.dice_after == Approx(mean_dice(random, c.intensity_weights, c.offsets)));
    // The mean over images, each the mean over the labels it or its prediction holds: 2/3, 0,
    // and the third (neither) skipped.
    REQUIRE(mean_dice(calibration_data(3, 2, 1, {1, -1, -1, -1, -1, -1}, {0, 0, 0, -1, -1, -1}), {0.0}, {0.0}) ==
            Approx((2.0 / 3 + 0) / 2));
}

TEST_CASE("Dice and IoU per label value", "[segment]") {
    // truth: label 1 on 4 pixels, label 2 on 2; prediction: label 1 on 6 (3 shared), label 5 on 1.
    const std::vector<float> t = {1, 1, 1, 1, 2, 2, 0, 0, 0, 0};
    const std::vector<float> p = {1, 1, 1, 0, 1, 1, 1, 0, 5, 0};
    const auto o = label_overlaps(t.data(), p.data(), t.size());
    REQUIRE(o.size() == 3);
    REQUIRE(o.at(1).dice() == Approx(2.0 * 3 / 10));
    REQUIRE(o.at(1).iou() == Approx(3.0 / 7));
    REQUIRE(o.at(2).dice() == 0);
    REQUIRE(o.at(5).iou() == 0);
    REQUIRE(std::isnan(Overlap{}.dice()));
}

TEST_CASE("preparing images: clip, normalise, resize", "[segment]") {
    // 75th percentile of {0, 10, 20, 1000}: rank 2.25 -> 20 + 0.25 * 980 = 265.
    const Image p = prepare_image({1, 4, {0, 10, 20, 1000}}, 1, 4, 0, 75);
    REQUIRE(p.pixels[1] == Approx(10.0 / 265));
    REQUIRE(p.pixels[3] == Approx(1.0));
    const Image q = prepare_image({2, 2, {5, 5, 5, 5}}, 4, 4);
    REQUIRE(q.pixels == std::vector<float>(16, 0.0f));
    REQUIRE(!error_of([] { check_label_map({1, 2, {0, 0.5f}}, "x.png"); }).empty());
    REQUIRE(error_of([] { check_label_map({1, 2, {0, -1}}, "x.png"); }).find("x.png") != std::string::npos);
}

TEST_CASE("tasks: one binary mask set per label value, support size capped", "[segment]") {
    const SupportSet set = tiny_set(5, 16, 16);
    REQUIRE(set.values == std::set<int64_t>{3, 7});
    SegmentOptions opt;
    const Task t = make_task(model(), set, opt);
    REQUIRE(t.values == std::vector<int64_t>{3, 7});
    REQUIRE(t.members.size() == 1);
    REQUIRE(t.members[0].size == 5);
    for (size_t v = 0; v < 2; ++v)
        for (size_t i = 0; i < set.labels.size(); ++i)
            REQUIRE(t.members[0].masks[v][i] == (set.labels[i] == float(t.values[v]) ? 1.0f : 0.0f));

    opt.only_values = {7};
    REQUIRE(make_task(model(), set, opt).values == std::vector<int64_t>{7});
    opt.only_values = {4};
    REQUIRE(error_of([&] { make_task(model(), set, opt); }).find("label value 4") != std::string::npos);

    const SupportSet many = tiny_set(kMaxSupportSize + 3, 4, 4);
    REQUIRE(make_task(model(), many, SegmentOptions{}).members[0].size == kMaxSupportSize);

    SupportSet empty;
    empty.height = empty.width = 8;
    add_support(empty, {8, 8, std::vector<float>(64)}, {8, 8, std::vector<float>(64)}, "blank");
    REQUIRE(error_of([&] { make_task(model(), empty, SegmentOptions{}); }).find("empty") != std::string::npos);
    SupportSet odd = tiny_set(2, 18, 18);  // not a multiple of 4
    REQUIRE(error_of([&] { make_task(model(), odd, SegmentOptions{}); }).find("multiple of 4") != std::string::npos);
    REQUIRE(!error_of([&] { add_support(odd, {8, 8, std::vector<float>(64)}, {8, 8, std::vector<float>(64)}, "small"); }).empty());
}

TEST_CASE("tasks calibrate on their supports, leave-one-out", "[segment]") {
    const int64_t H = 16, W = 16;
    for (bool paired : {false, true}) {
        SupportSet set = tiny_set(6, H, W);
        // As six images, then as three images of two pairs each (windows or slices), held out together.
        if (paired) set.sources = {0, 0, 1, 1, 2, 2};
        const Task t = make_task(model(), set, SegmentOptions{});
        const Task::Calibration& c = t.calibration;
        REQUIRE(c.images == 6);
        REQUIRE(c.offsets.size() == 2);
        for (size_t l = 0; l < 2; ++l) {  // offsets on the grid of [-3, 3] in steps of 0.25, times weights above 1
            const double w = c.intensity_weights[l], step = c.offsets[l] / std::max(1.0, w) / 0.25;
            REQUIRE(std::count(std::begin(kIntensityWeights), std::end(kIntensityWeights), w) == 1);
            REQUIRE(step == std::round(step));
            REQUIRE(std::abs(step) <= 12);
        }
        REQUIRE(c.dice_after >= c.dice_before);

        // Independently: segment each support from the rest, the other five or the pairs of the
        // other images (one view, fixed threshold), score Dice per image and label with
        // label_overlaps, then again with the offsets.
        double before = 0, after = 0;
        for (int i = 0; i < 6; ++i) {
            SupportSet rest;
            rest.height = H, rest.width = W;
            for (int j = 0; j < 6; ++j)
                if (j != i && (!paired || set.sources[size_t(j)] != set.sources[size_t(i)]))
                    add_support(rest, {H, W, std::vector<float>(set.images.begin() + j * H * W, set.images.begin() + (j + 1) * H * W)},
                                {H, W, std::vector<float>(set.labels.begin() + j * H * W, set.labels.begin() + (j + 1) * H * W)}, "x");
            SegmentOptions one;
            one.flips = 1;
            one.calibrate = false;
            Task r = make_task(model(), rest, one);
            REQUIRE(r.calibration.offsets.empty());
            const std::vector<Image> probs =
                predict_probabilities(r, {H, W, std::vector<float>(set.images.begin() + i * H * W, set.images.begin() + (i + 1) * H * W)});
            REQUIRE(held_out_rest(set, i).size() == (paired ? 4 : 5));
            for (size_t v = 0; v < 2; ++v) REQUIRE(r.intensity[v] == intensity_log_ratios(set, r.values[v], held_out_rest(set, i)));
            const float* truth = set.labels.data() + i * H * W;
            auto mean_over_labels = [&](const Image& pred) {
                double sum = 0;
                int n = 0;
                for (const auto& kv : label_overlaps(truth, pred.pixels.data(), size_t(H * W))) sum += kv.second.dice(), ++n;
                return sum / n;
            };
            const Image image{H, W, std::vector<float>(set.images.begin() + i * H * W, set.images.begin() + (i + 1) * H * W)};
            before += mean_over_labels(label_map(probs, r.values, 0.5)) / 6;
            r.calibration = c;  // with the intensity evidence of the rest, as make_task(rest) built it
            after += mean_over_labels(label_map(r, probs, image, 0.5)) / 6;
        }
        REQUIRE(c.dice_before == Approx(before));
        REQUIRE(c.dice_after == Approx(after));
    }

    SegmentOptions off;
    off.calibrate = false;
    REQUIRE(make_task(model(), tiny_set(6, H, W), off).calibration.offsets.empty());
    REQUIRE(make_task(model(), tiny_set(kMinCalibrationSupports - 1, H, W), SegmentOptions{}).calibration.offsets.empty());
    REQUIRE(make_task(model(), tiny_set(kCalibrationImages + 4, 8, 8), SegmentOptions{}).calibration.images == kCalibrationImages);
}

TEST_CASE("supports at their own size: sampled for the evidence and the calibration", "[segment]") {
    // Up to kSupportSamples pixels, all of them; 300x300 (90,000) is sampled every second row
    // and column from (1, 1): 150 x 150.
    Image small{3, 5, {}}, small_labels{3, 5, std::vector<float>(15, 0.0f)};
    for (int i = 0; i < 15; ++i) small.pixels.push_back(float(i) / 15);
    const SupportSamples a = sample_support(small, small_labels);
    REQUIRE(a.height == 3);
    REQUIRE(a.width == 5);
    REQUIRE(a.step == 1);
    REQUIRE(a.images == small.pixels);
    Image big{300, 300, std::vector<float>(90000)}, big_labels{300, 300, std::vector<float>(90000)};
    for (size_t p = 0; p < big.pixels.size(); ++p) big.pixels[p] = float(p % 7) / 7, big_labels.pixels[p] = float(p % 3);
    const SupportSamples b = sample_support(big, big_labels);
    REQUIRE(b.step == 2);
    REQUIRE(b.images.size() == 150 * 150);
    std::vector<int64_t> at;
    sample_pixels(b, [&](int64_t p) { at.push_back(p); });
    REQUIRE(at.size() == 150 * 150);
    REQUIRE(at[0] == 300 + 1);
    REQUIRE(at[1] == 300 + 3);
    REQUIRE(at[150] == 3 * 300 + 1);
    REQUIRE(b.images[0] == big.pixels[300 + 1]);
    REQUIRE(b.images[151] == big.pixels[3 * 300 + 3]);
    REQUIRE(b.labels[151] == big_labels.pixels[3 * 300 + 3]);

    // A 2x8 support at a model size of 2x4: the model sees the resized pair, the intensity
    // evidence the pixels at the pair's own size. Label 5 on the two pixels at 0.9 (bin 28);
    // resized, the four columns average pairs, so no model-size pixel is in bin 28.
    SupportSet set;
    set.height = 2, set.width = 4;
    const Image image{2, 8, {0.9f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.9f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f}};
    const Image labels{2, 8, {5, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0}};
    add_support_resized(set, image, labels, "wide");
    REQUIRE(set.size() == 1);
    REQUIRE(set.images == resize_bilinear(image, 2, 4).pixels);
    REQUIRE(set.labels == resize_nearest(labels, 2, 4).pixels);
    REQUIRE(set.values == std::set<int64_t>{5});  // of the labels at their own size: resized, none is left
    REQUIRE(std::count(set.labels.begin(), set.labels.end(), 5.0f) == 0);
    REQUIRE(std::count(set.images.begin(), set.images.end(), 0.9f) == 0);
    const std::vector<double> r = intensity_log_ratios(set, 5);  // inside: 2 + 32; outside 14 + 32
    REQUIRE(r[28] == Approx(std::log(3.0 / 34) - std::log(1.0 / 46)));
    REQUIRE(r[3] == Approx(std::log(1.0 / 34) - std::log(15.0 / 46)));
    REQUIRE(error_of([&] { add_support_resized(set, image, Image{2, 7, std::vector<float>(14)}, "bad.png"); }).find("bad.png") !=
            std::string::npos);
    SupportSet unsized;
    REQUIRE(!error_of([&] { add_support_resized(unsized, image, labels, "x"); }).empty());
    SupportSet by_hand = set;  // pairs pushed without their samples
    by_hand.samples.clear();
    REQUIRE(error_of([&] { make_task(model(), by_hand, SegmentOptions{}); }).find("add_support") != std::string::npos);
}

TEST_CASE("calibration scores the supports at their own size", "[segment]") {
    // Six supports of 24x20 and 20x28 at a model size of 16x16. Independently of calibrate():
    // segment each from the other five at the model size, resize the probabilities to the
    // support's own size and make its label map there, as segment does for a query.
    const int64_t H = 16, W = 16;
    SupportSet set;
    set.height = H, set.width = W;
    std::vector<Image> images, labels;
    for (int i = 0; i < 6; ++i) {
        const int64_t h = i % 2 ? 20 : 24, w = i % 2 ? 28 : 20;
        images.push_back(pattern_image(h, w, i));
        Image lab{h, w, {}};
        for (uint8_t v : label_pattern(int(h), int(w), i)) lab.pixels.push_back(float(v));
        labels.push_back(lab);
        add_support_resized(set, images.back(), lab, "pair " + std::to_string(i));
    }
    const Task t = make_task(model(), set, SegmentOptions{});
    const Task::Calibration& c = t.calibration;
    REQUIRE(c.images == 6);
    double before = 0, after = 0;
    for (int i = 0; i < 6; ++i) {
        SupportSet rest;
        rest.height = H, rest.width = W;
        for (int j = 0; j < 6; ++j)
            if (j != i) add_support_resized(rest, images[size_t(j)], labels[size_t(j)], "x");
        SegmentOptions one;
        one.flips = 1;
        one.calibrate = false;
        Task r = make_task(model(), rest, one);
        std::vector<Image> probs = predict_probabilities(r, resize_bilinear(images[size_t(i)], H, W));
        for (Image& p : probs) p = resize_bilinear(p, images[size_t(i)].height, images[size_t(i)].width);
        const size_t n = images[size_t(i)].pixels.size();
        auto mean_over_labels = [&](const Image& pred) {
            double sum = 0;
            int k = 0;
            for (const auto& kv : label_overlaps(labels[size_t(i)].pixels.data(), pred.pixels.data(), n)) sum += kv.second.dice(), ++k;
            return sum / k;
        };
        before += mean_over_labels(label_map(probs, r.values, 0.5)) / 6;
        r.calibration = c;
        after += mean_over_labels(label_map(r, probs, images[size_t(i)], 0.5)) / 6;
    }
    REQUIRE(c.dice_before == Approx(before));
    REQUIRE(c.dice_after == Approx(after));
}

TEST_CASE("tiles: supports and queries in windows, blended", "[segment]") {
    REQUIRE(tile_starts(384, 128, 128) == std::vector<int64_t>{0, 128, 256});
    REQUIRE(tile_starts(384, 128, 64) == std::vector<int64_t>{0, 64, 128, 192, 256});
    REQUIRE(tile_starts(130, 128, 64) == std::vector<int64_t>{0, 2});  // the last flush with the end
    REQUIRE(tile_starts(100, 100, 50) == std::vector<int64_t>{0});
    REQUIRE(!error_of([] { tile_starts(10, 0, 1); }).empty());

    const Image img = pattern_image(40, 56, 3);
    const Image c = crop_image(img, 8, 16, 4, 5);
    REQUIRE((c.height == 4 && c.width == 5));
    for (int64_t y = 0; y < 4; ++y)
        for (int64_t x = 0; x < 5; ++x) REQUIRE(c.pixels[size_t(y * 5 + x)] == img.pixels[size_t((8 + y) * 56 + 16 + x)]);
    REQUIRE(!error_of([&] { crop_image(img, 37, 0, 4, 4); }).empty());

    // A 40x56 pair in windows of 16 at a model size of 16x16: rows from 0, 16, 24, columns from
    // 0, 16, 32, 40; twelve windows, row-major, label 2 in one of them only.
    Image lab{40, 56, std::vector<float>(40 * 56, 0.0f)};
    lab.pixels[size_t(20 * 56 + 35)] = 2;
    SupportSet set;
    set.height = set.width = 16;
    REQUIRE(add_support_tiles(set, img, lab, "p", 16) == 12);
    REQUIRE(set.names[0] == "p tile at row 0, column 0");
    REQUIRE(set.names[6] == "p tile at row 16, column 32");
    REQUIRE(set.names[11] == "p tile at row 24, column 40");
    REQUIRE(std::vector<float>(set.images.begin() + 5 * 256, set.images.begin() + 6 * 256) ==
            resize_bilinear(crop_image(img, 16, 16, 16, 16), 16, 16).pixels);
    REQUIRE(set.values == std::set<int64_t>{2});
    for (int64_t k = 0; k < 12; ++k) REQUIRE(std::count(set.labels.begin() + k * 256, set.labels.begin() + (k + 1) * 256, 2.0f) == (k == 6));
    REQUIRE(set.samples[6].images == crop_image(img, 16, 32, 16, 16).pixels);
    REQUIRE(error_of([&] { add_support_tiles(set, img, Image{40, 55, std::vector<float>(40 * 55)}, "bad.png", 16); })
                .find("bad.png") != std::string::npos);

    // At most kMaxTilesPerSupport windows: a 16x320 strip has 20, labelled in every fourth. All
    // five labelled ones are kept, and 11 of the 15 others, spread evenly over them.
    Image strip_labels{16, 320, std::vector<float>(16 * 320, 0.0f)};
    for (int w : {0, 4, 8, 12, 16}) strip_labels.pixels[size_t(3 * 320 + w * 16 + 5)] = 1;
    SupportSet strip;
    strip.height = strip.width = 16;
    REQUIRE(add_support_tiles(strip, pattern_image(16, 320, 4), strip_labels, "s", 16) == kMaxTilesPerSupport);
    std::vector<std::string> expect;
    for (int col : {0, 16, 32, 48, 64, 96, 112, 128, 144, 176, 192, 208, 224, 256, 272, 288})
        expect.push_back("s tile at row 0, column " + std::to_string(col));
    REQUIRE(strip.names == expect);

    // Sources: the windows of one image share one, and calibration holds them out together;
    // a set of one image falls back to the other pairs.
    REQUIRE(set.sources == std::vector<int64_t>(12, 0));
    REQUIRE(held_out_rest(set, 3).size() == 11);
    REQUIRE(!large_supports(strip));  // 16 px high: not twice the model size
    SupportSet mixed = set;
    add_support_tiles(mixed, pattern_image(32, 32, 7), Image{32, 32, std::vector<float>(32 * 32, 2.0f)}, "q", 16);
    add_support_resized(mixed, pattern_image(20, 20, 8), Image{20, 20, std::vector<float>(400, 2.0f)}, "r");
    add_support_resized(mixed, pattern_image(20, 20, 9), Image{20, 20, std::vector<float>(400, 2.0f)}, "r slice", 2);
    REQUIRE(mixed.sources == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2});
    REQUIRE(held_out_rest(mixed, 3) == std::vector<int64_t>{12, 13, 14, 15, 16, 17});
    REQUIRE(held_out_rest(mixed, 13) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17});
    REQUIRE(held_out_rest(mixed, 16) == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
    REQUIRE(!large_supports(mixed));  // the 20x20 pairs
    SupportSet large;
    large.height = large.width = 16;
    add_support_resized(large, pattern_image(40, 32, 1), Image{40, 32, std::vector<float>(40 * 32, 1.0f)}, "a");
    REQUIRE(large_supports(large));
    add_support_resized(large, pattern_image(31, 64, 1), Image{31, 64, std::vector<float>(31 * 64, 1.0f)}, "b");
    REQUIRE(!large_supports(large));

    // Probabilities window by window, checked pixel by pixel against the blend written out here:
    // windows of 16 half a window apart (rows from 0 and 8, columns from 0, 8, 16 and 24), each
    // weighted by min(i + 1, 16 - i) along each side.
    SegmentOptions opt;
    opt.flips = 1;
    opt.calibrate = false;
    const Task t = make_task(model(), set, opt);
    const Image query = pattern_image(24, 40, 5);
    const std::vector<Image> tiled = predict_tiled(t, query, 16);
    REQUIRE(tiled.size() == 1);
    REQUIRE((tiled[0].height == 24 && tiled[0].width == 40));
    std::map<std::pair<int64_t, int64_t>, Image> window;
    for (int64_t y0 : {0, 8})
        for (int64_t x0 : {0, 8, 16, 24}) window[{y0, x0}] = predict_probabilities(t, crop_image(query, y0, x0, 16, 16))[0];
    auto tent = [](int64_t i) { return double(std::min<int64_t>(i + 1, 16 - i)); };
    for (int64_t y = 0; y < 24; ++y)
        for (int64_t x = 0; x < 40; ++x) {
            double sum = 0, weight = 0;
            for (const auto& [at, p] : window)
                if (y >= at.first && y < at.first + 16 && x >= at.second && x < at.second + 16) {
                    const double w = tent(y - at.first) * tent(x - at.second);
                    sum += w * p.pixels[size_t((y - at.first) * 16 + x - at.second)], weight += w;
                }
            REQUIRE(tiled[0].pixels[size_t(y * 40 + x)] == Approx(sum / weight).margin(1e-6));
        }
    REQUIRE(tiled[0].pixels[0] == window[{0, 0}].pixels[0]);  // one window covers the corner
    // A query no larger than a window: the untiled path, resized there and back.
    const Image small = pattern_image(12, 10, 6);
    const std::vector<Image> one = predict_tiled(t, small, 16);
    REQUIRE(one[0].pixels == resize_bilinear(predict_probabilities(t, resize_bilinear(small, 16, 16))[0], 12, 10).pixels);
}

TEST_CASE("probabilities are the model's sigmoid, averaged over the ensemble", "[segment]") {
    const int64_t H = 16, W = 20, HW = H * W;
    const SupportSet set = tiny_set(6, H, W);
    const Image query = pattern_image(H, W, 9);

    SegmentOptions opt;
    opt.support_size = 3;
    opt.ensemble = 3;
    opt.seed = 5;
    opt.flips = 1;
    opt.calibrate = false;
    Task t = make_task(model(), set, opt);
    REQUIRE(t.members.size() == 3);
    const std::vector<Image> probs = predict_probabilities(t, query);
    REQUIRE(probs.size() == 2);

    // Independently: for each subset, gather its images and the binary masks of each value
    // from the support set, run the model directly and average the sigmoids.
    for (size_t v = 0; v < 2; ++v) {
        std::vector<double> expect(size_t(HW), 0.0);
        for (const Task::Member& m : t.members) {
            std::vector<float> images, masks, logits(static_cast<size_t>(HW));
            for (int64_t i : m.indices)
                for (int64_t p = 0; p < HW; ++p) {
                    images.push_back(set.images[size_t(i * HW + p)]);
                    masks.push_back(set.labels[size_t(i * HW + p)] == float(t.values[v]) ? 1.0f : 0.0f);
                }
            model().forward(query.pixels.data(), images.data(), masks.data(), 1, 3, H, W, logits.data());
            for (int64_t p = 0; p < HW; ++p) expect[size_t(p)] += sigmoid(logits[size_t(p)]) / 3;
        }
        for (int64_t p = 0; p < HW; ++p) REQUIRE(probs[v].pixels[size_t(p)] == Approx(expect[size_t(p)]).margin(1e-6));
    }
    // Calibrated: each label's logit shifted by its offset and its weighted intensity evidence.
    t.calibration.offsets = {0.5, -1.25};
    t.calibration.intensity_weights = {1.0, 0.5};
    REQUIRE(predict_probabilities(t, query)[0].pixels == probs[0].pixels);  // raw, whatever the calibration
    std::vector<Image> shifted = probs;
    calibrated_probabilities(t, shifted, query);
    for (size_t v = 0; v < 2; ++v) {
        const std::vector<double> ratio = intensity_log_ratios(set, t.values[v]);
        for (int64_t p = 0; p < HW; ++p) {
            const double e = ratio[size_t(intensity_bin(query.pixels[size_t(p)]))];
            REQUIRE(shifted[v].pixels[size_t(p)] ==
                    Approx(sigmoid(logit(probs[v].pixels[size_t(p)]) + t.calibration.offsets[v] +
                                   t.calibration.intensity_weights[v] * e)).margin(1e-6));
        }
    }
    REQUIRE(!error_of([&] { predict_probabilities(t, Image{8, 8, std::vector<float>(64)}); }).empty());
}

TEST_CASE("flips: the default averages the four mirrored tasks and is mirror-equivariant", "[segment]") {
    const int64_t H = 16, W = 20, HW = H * W;
    const SupportSet set = tiny_set(4, H, W);
    const Image query = pattern_image(H, W, 9);
    SegmentOptions opt;
    REQUIRE(opt.flips == 4);
    opt.calibrate = false;  // the raw probabilities
    const Task t = make_task(model(), set, opt);
    const std::vector<Image> probs = predict_probabilities(t, query);

    const Task::Member& m = t.members[0];
    for (size_t v = 0; v < t.values.size(); ++v) {
        std::vector<double> expect(size_t(HW), 0.0);
        for (bool lr : {false, true})
            for (bool ud : {false, true}) {
                std::vector<float> q = mirrored(query.pixels.data(), H, W, lr, ud), images, masks;
                for (int64_t i : m.indices) {
                    const std::vector<float> im = mirrored(set.images.data() + i * HW, H, W, lr, ud);
                    const std::vector<float> lab = mirrored(set.labels.data() + i * HW, H, W, lr, ud);
                    images.insert(images.end(), im.begin(), im.end());
                    for (float x : lab) masks.push_back(x == float(t.values[v]) ? 1.0f : 0.0f);
                }
                std::vector<float> logits(static_cast<size_t>(HW));
                model().forward(q.data(), images.data(), masks.data(), 1, m.size, H, W, logits.data());
                const std::vector<float> back = mirrored(logits.data(), H, W, lr, ud);
                for (int64_t p = 0; p < HW; ++p) expect[size_t(p)] += sigmoid(back[size_t(p)]) / 4;
            }
        for (int64_t p = 0; p < HW; ++p) REQUIRE(probs[v].pixels[size_t(p)] == Approx(expect[size_t(p)]).margin(1e-6));
    }

    // The same task mirrored left-right gives the mirrored probabilities.
    SupportSet flipped;
    flipped.height = H, flipped.width = W;
    for (int64_t i = 0; i < set.size(); ++i)
        add_support(flipped, {H, W, mirrored(set.images.data() + i * HW, H, W, true, false)},
                    {H, W, mirrored(set.labels.data() + i * HW, H, W, true, false)}, "mirrored");
    const std::vector<Image> pf =
        predict_probabilities(make_task(model(), flipped, opt), Image{H, W, mirrored(query.pixels.data(), H, W, true, false)});
    for (size_t v = 0; v < probs.size(); ++v) {
        const std::vector<float> back = mirrored(pf[v].pixels.data(), H, W, true, false);
        for (int64_t p = 0; p < HW; ++p) REQUIRE(back[size_t(p)] == Approx(probs[v].pixels[size_t(p)]).margin(1e-6));
    }

    opt.flips = 3;
    REQUIRE(error_of([&] { make_task(model(), set, opt); }).find("flips must be 1, 2 or 4") != std::string::npos);
}

namespace {

const std::string kData = std::string(UNIVERSEG_TEST_DATA) + "/";
const std::string kRoot = kData + "../../";  // the repository: cases.txt's paths start there
const std::string kCells = kRoot + "examples/data/cells/";
const std::string kVolumes = kData + "segment/volumes/";

// One OpenMP thread while it lives: these tests run thousands of forward passes at 16 to 32 px,
// where starting and waiting for threads costs more than the work (on a loaded machine, far more).
struct OneThread {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
#endif
};

// tests/data/segment/cases.txt: a name and segment's arguments per line.
struct ReferenceCase {
    std::string name;
    std::vector<std::string> args;
};

std::vector<ReferenceCase> reference_cases() {
    std::ifstream f(kData + "segment/cases.txt");
    std::vector<ReferenceCase> cases;
    for (std::string line; std::getline(f, line);) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream words(line);
        ReferenceCase c;
        words >> c.name;
        for (std::string w; words >> w;) c.args.push_back(w);
        cases.push_back(c);
    }
    REQUIRE(cases.size() >= 8);
    return cases;
}

// A case's arguments read as the API's terms, independently of the command's own parsing.
struct ApiCase {
    std::string weights, support;
    std::vector<std::string> queries;
    SegmenterOptions options;
    bool size_given = false;
};

ApiCase api_case(const ReferenceCase& c) {
    ApiCase a;
    for (size_t i = 0; i < c.args.size(); ++i) {
        const std::string& k = c.args[i];
        auto value = [&] { return c.args.at(++i); };
        if (k == "--weights") a.weights = kRoot + value();
        else if (k == "--support") a.support = kRoot + value();
        else if (k == "--size") a.options.size = parse_model_size(value(), k), a.size_given = true;
        else if (k == "--tile") { const std::string v = value(); a.options.tile = v == "auto" ? kTileAuto : std::stoll(v); }
        else if (k == "--label") a.options.only_values = {std::stoll(value())};
        else if (k == "--ensemble") a.options.ensemble = std::stoll(value());
        else if (k == "--support-size") a.options.support_size = std::stoll(value());
        else if (k == "--seed") a.options.seed = std::stoull(value());
        else if (k == "--flips") a.options.flips = std::stoll(value());
        else if (k == "--threshold") a.options.threshold = std::stod(value());
        else if (k == "--axis") a.options.axis = std::stoi(value());
        else if (k == "--clip") REQUIRE(std::sscanf(value().c_str(), "%lf,%lf", &a.options.clip_low, &a.options.clip_high) == 2);
        else if (k == "--probabilities") value();  // the CLI's file format; the API returns them all
        else if (k == "--histogram-baseline") a.options.histogram_baseline = true;
        else if (k == "--no-calibration") a.options.calibrate = false;
        else if (k == "--overlay") continue;
        else if (fs::is_directory(kRoot + k)) {
            for (const std::string& f : list_image_files(kRoot + k)) a.queries.push_back(f);
        } else {
            a.queries.push_back(kRoot + k);
        }
    }
    if (!a.size_given) a.options.size = weights_image_size(a.weights);
    return a;
}

std::set<std::string> names_in(const std::string& dir) {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(fs::relative(e.path(), dir).string());
    return out;
}

// Float probabilities of a .npy or NIfTI file.
std::vector<float> float_probabilities(const std::string& path) {
    return image_extension(path) == ".npy" ? load_npy(path).data : load_nifti(path).voxels;
}

// Every file of the reference run is in `out` with the same bytes, and nothing else is. Float
// probabilities (.npy, NIfTI) are compared as values: the forward pass of commit 3109229 (the
// engine's one schedule) rounds some logits one float step away from e64b259's, which moves no
// label, 16-bit PNG or overlay, but does move float32 probabilities by about 1e-8.
void check_like_reference(const std::string& name, const std::string& out) {
    const std::string ref = kData + "segment/reference/" + name + "/";
    REQUIRE(names_in(ref) == names_in(out));
    for (const std::string& f : names_in(ref)) {
        INFO(name << ": " << f);
        const std::string e = image_extension(f);
        if (f.find("_prob_") != std::string::npos && e != ".png") {
            REQUIRE(max_diff(float_probabilities(ref + f), float_probabilities(out + "/" + f)) <= 1e-6);
        } else {
            REQUIRE(read_file(ref + f) == read_file(out + "/" + f));
        }
    }
}

// The case through the API: label maps and 16-bit probability PNGs as segment saves them, against
// the reference files byte for byte, float probabilities as values.
void check_api_case(const ReferenceCase& c, const TempDir& dir) {
    const ApiCase a = api_case(c);
    const Segmenter seg(load_model(a.weights), Support::folder(a.support), a.options);
    const std::string ref = kData + "segment/reference/" + c.name + "/";
    REQUIRE(!a.queries.empty());
    for (const std::string& q : a.queries) {
        INFO(c.name << ": " << q);
        const std::string stem = image_stem(q), saved = dir / (c.name + "_" + stem);
        if (is_volume_path(q)) {
            const std::string ext = image_extension(q);
            const VolumeSegmentation v = seg.segment(load_nifti(q));
            save_nifti(saved + ext, v.labels, label_nifti_type(v.values));
            REQUIRE(read_file(saved + ext) == read_file(ref + stem + ext));
            for (size_t l = 0; l < v.values.size(); ++l) {
                const std::string p = ref + stem + "_prob_" + std::to_string(v.values[l]) + ext;
                if (fs::exists(p)) REQUIRE(max_diff(load_nifti(p).voxels, v.probabilities[l].voxels) <= 1e-6);
            }
        } else {
            const Segmentation s = seg.segment(load_image(q));
            save_label_png(saved + ".png", s.labels);
            REQUIRE(read_file(saved + ".png") == read_file(ref + stem + ".png"));
            for (size_t l = 0; l < s.values.size(); ++l) {
                const std::string p = ref + stem + "_prob_" + std::to_string(s.values[l]) + ".png";
                if (!fs::exists(p)) continue;
                save_image_png(saved + "_prob.png", s.probabilities[l], 16);
                REQUIRE(read_file(saved + "_prob.png") == read_file(p));
            }
        }
    }
}

}  // namespace

TEST_CASE("Segmenter reproduces segment's reference label maps byte for byte", "[segment]") {
    const OneThread one;
    TempDir dir("segref_api");
    for (const ReferenceCase& c : reference_cases())
        if (c.name != "cells") check_api_case(c, dir);
}

TEST_CASE("Segmenter: the cells example with the bundled weights, byte for byte", "[segment][heavy]") {
    TempDir dir("segref_cells");
    for (const ReferenceCase& c : reference_cases())
        if (c.name == "cells") check_api_case(c, dir);
}

TEST_CASE("Segmenter: supports in memory as from folders, arrays, one Segmenter shared by threads", "[segment]") {
    const OneThread one;
    SegmenterOptions opt;
    opt.size = {16, 16};
    opt.flips = 1;
    Support folder = Support::folder(kCells + "support"), memory;
    for (const std::string& f : list_image_files(kCells + "support/images"))
        memory.add(load_image(f), load_label_map(kCells + "support/labels/" + image_stem(f) + ".png"), f);
    REQUIRE(folder.pairs() == 16);
    REQUIRE(folder.files().size() == 32);
    REQUIRE(memory.files().empty());  // nothing to read
    const Segmenter a(model(), folder, opt), b(model(), memory, opt);
    REQUIRE(a.values() == std::vector<int64_t>{1, 2});
    REQUIRE(a.task().calibration.offsets.size() == 2);  // 16 examples: calibrated

    const std::vector<std::string> queries = list_image_files(kCells + "queries/images");
    std::vector<Segmentation> serial;
    for (const std::string& q : queries) {
        const Image img = load_image(q);
        serial.push_back(a.segment(img));
        const Segmentation& s = serial.back();
        REQUIRE((s.labels.height == img.height && s.labels.width == img.width));
        REQUIRE(s.values == a.values());
        REQUIRE(s.probabilities.size() == 2);
        REQUIRE(b.segment(img).labels.pixels == s.labels.pixels);
        REQUIRE(b.segment(img).probabilities[1].pixels == s.probabilities[1].pixels);
        REQUIRE(a.segment(img.pixels.data(), img.height, img.width).labels.pixels == s.labels.pixels);
    }
    // segment() is const and thread-safe: the same label maps from threads sharing one Segmenter.
    std::vector<Segmentation> parallel(queries.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < queries.size(); ++i)
        threads.emplace_back([&, i] { parallel[i] = a.segment(load_image(queries[i])); });
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < queries.size(); ++i) REQUIRE(parallel[i].labels.pixels == serial[i].labels.pixels);

    // A Segmenter keeps its model: built from one that is gone, moved, it still segments the same.
    opt.keep_probabilities = false;
    Segmenter moved = [&] {
        const Model gone = load_model(kWeights);
        Segmenter s(gone, memory, opt);
        return s;
    }();
    const Segmentation m = moved.segment(load_image(queries[0]));
    REQUIRE(m.labels.pixels == serial[0].labels.pixels);
    REQUIRE(m.probabilities.empty());

    // Volumes in memory as from the folder; their labelled slices are the examples.
    SegmenterOptions vopt;
    vopt.size = {16, 16};
    vopt.clip_low = 1, vopt.clip_high = 99;
    Support volumes;
    for (const char* n : {"a", "b"})
        volumes.add(load_nifti(kVolumes + "support/images/" + n + ".nii.gz"), load_nifti(kVolumes + "support/labels/" + n + ".nii.gz"), n);
    const Segmenter va(model(), Support::folder(kVolumes + "support"), vopt), vb(model(), volumes, vopt);
    REQUIRE(va.support().size() == 9);  // slices z = 1..3 of a, 1..4 of b... as labelled
    const Volume q = load_nifti(kVolumes + "queries/q.nii.gz");
    int64_t reported = 0;
    const VolumeSegmentation sa = va.segment(q, [&](int64_t done, int64_t slices) {
        reported = done;
        CHECK(slices == 4);
    });
    REQUIRE(reported == 4);
    REQUIRE(sa.labels.voxels == vb.segment(q).labels.voxels);
    REQUIRE(nifti_affine(sa.labels.header) == nifti_affine(q.header));
    REQUIRE(sa.probabilities.size() == 2);
    REQUIRE(sa.probabilities[0].voxels.size() == q.voxels.size());
}

TEST_CASE("Segmenter: what calibration decided, given back, segments alike without calibrating", "[segment]") {
    const OneThread one;
    // Five examples, every one at least twice the model size: --tile auto compares windows.
    Support support;
    for (int i = 0; i < 5; ++i) {
        Image lab{40 + 4 * i, 48, {}};
        for (uint8_t v : label_pattern(40 + 4 * i, 48, i)) lab.pixels.push_back(float(v));
        support.add(pattern_image(40 + 4 * i, 48, i), lab, "pair " + std::to_string(i));
    }
    SegmenterOptions opt;
    opt.size = {16, 16};
    opt.flips = 1;
    opt.tile = kTileAuto;
    const auto shared = std::make_shared<const Model>(model());
    const Segmenter a(shared, PreparedSupport(support, opt));
    const Segmenter::Calibrated c = a.calibrated();
    REQUIRE(c.calibration.offsets.size() == 2);
    REQUIRE(c.tile_choice.compared);
    REQUIRE(c.windows == (a.tile() > 0));
    const Segmenter b(shared, PreparedSupport(support, opt), c);
    REQUIRE(b.tile() == a.tile());
    REQUIRE(b.task().calibration.offsets == c.calibration.offsets);
    const Image q = pattern_image(37, 45, 9);
    const Segmentation sa = a.segment(q), sb = b.segment(q);
    REQUIRE(sb.labels.pixels == sa.labels.pixels);
    REQUIRE(sb.probabilities[1].pixels == sa.probabilities[1].pixels);
    // The record decides: the other choice of windows is taken as given.
    Segmenter::Calibrated other = c;
    other.windows = !c.windows;
    REQUIRE(Segmenter(shared, PreparedSupport(support, opt), other).tile() == (c.windows ? 0 : 16));

    // Records that cannot be of this support and options.
    Segmenter::Calibrated wrong = c;
    wrong.calibration.offsets.push_back(0), wrong.calibration.intensity_weights.push_back(0);
    CHECK_THAT(error_of([&] { Segmenter(shared, PreparedSupport(support, opt), wrong); }), Contains("3 label offsets for 2 labels"));
    CHECK_THAT(error_of([&] { Segmenter(shared, PreparedSupport(support, opt), Segmenter::Calibrated{}); }),
               Contains("it holds no calibration, and this task calibrates"));
    SegmenterOptions whole = opt;
    whole.tile = 0;
    Segmenter::Calibrated windows = c;
    windows.windows = true;
    CHECK_THAT(error_of([&] { Segmenter(shared, PreparedSupport(support, whole), windows); }), Contains("it chose windows"));
    whole.calibrate = false;
    CHECK_THAT(error_of([&] { Segmenter(shared, PreparedSupport(support, whole), c); }), Contains("this task has none"));
}

TEST_CASE("Segmenter: the model size from the weights, options and supports checked with clear errors", "[segment]") {
    TempDir dir("segapi_err");
    save_safetensors(dir / "w.safetensors", model().state_dict(), {{"image_size", "24x20"}});
    save_safetensors(dir / "bad.safetensors", model().state_dict(), {{"image_size", "0x20"}});
    REQUIRE((weights_image_size(dir / "w.safetensors").height == 24 && weights_image_size(dir / "w.safetensors").width == 20));
    REQUIRE(weights_image_size(kWeights).height == kDefaultModelSize);  // a .pt carries no metadata
    CHECK_THAT(error_of([&] { weights_image_size(dir / "bad.safetensors"); }), Contains(dir / "bad.safetensors"));
    CHECK_THAT(error_of([&] { check_model_size(model(), {30, 32}, "--size"); }), Contains("--size: model size 30x32 is not a multiple of 4"));

    SegmenterOptions opt;
    opt.size = {32, 32};
    const Support support = Support::folder(kCells + "support");
    opt.tile = 8;  // below 16
    CHECK_THAT(error_of([&] { PreparedSupport(support, opt); }), Contains("tile of 8 px is below the smallest"));
    opt.size = {256, 256}, opt.tile = 24;  // below 256 / 8
    CHECK_THAT(error_of([&] { PreparedSupport(support, opt); }), Contains("smallest for this model size, 32 px"));
    opt.size = {32, 32}, opt.tile = 16;
    REQUIRE(PreparedSupport(support, opt).examples().height == 32);
    opt.tile = 0, opt.axis = 3;
    CHECK_THAT(error_of([&] { PreparedSupport(support, opt); }), Contains("axis must be 0, 1 or 2"));
    opt.axis = 2, opt.clip_low = 50, opt.clip_high = 10;
    CHECK_THAT(error_of([&] { PreparedSupport(support, opt); }), Contains("clip"));
    opt.clip_low = 0, opt.clip_high = 100;

    // The label values are known before anything is computed.
    opt.only_values = {2};
    REQUIRE(PreparedSupport(support, opt).values() == std::vector<int64_t>{2});
    opt.only_values = {5};
    CHECK_THAT(error_of([&] { PreparedSupport(support, opt); }), Contains("label value 5 does not occur"));
    opt.only_values = {};
    CHECK_THAT(error_of([&] { PreparedSupport(Support(), opt); }), Contains("no labelled examples"));
    Support bad;
    bad.add(Image{2, 2, {0, 1, 2, 3}}, Image{2, 3, std::vector<float>(6, 1.0f)}, "pair x");
    CHECK_THAT(error_of([&] { PreparedSupport(bad, opt); }), Contains("pair x: label map of 2x3 does not match"));
    opt.size = {30, 30};
    CHECK_THAT(error_of([&] { Segmenter(model(), support, opt); }), Contains("not a multiple of 4"));
    opt.size = {16, 16};
    const Segmenter seg(model(), support, opt);
    CHECK_THAT(error_of([&] { seg.segment(Image{3, 3, {1.0f}}); }), Contains("query: image of 3x3 with 1 pixels"));
}

#ifdef UNIVERSEG_CLI

namespace {

// Runs `universeg ARGS` (ARGS already shell-quoted where needed), capturing its output.
// One thread: ctest runs test programs side by side, and busy-waiting OpenMP threads on a
// loaded machine would cost far more than the tiny model's work.
Run cli(const TempDir& dir, std::string args, const std::string& env = "") {
    if (args.rfind("segment ", 0) == 0) args.insert(8, "--threads 1 ");
    const std::string cmd = env + " " + quote(UNIVERSEG_CLI) + " " + args;
    const Run r = run_shell(cmd, dir);
    INFO(cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.rc >= 0);
    return r;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::set<float> values_of(const Image& img) { return std::set<float>(img.pixels.begin(), img.pixels.end()); }

// A support folder of five pairs in five formats and sizes, labels 0/3/7; queries in every
// readable format including 16-bit and an odd 300x217 RGB, plus a corrupt one.
void make_2d_fixture(const TempDir& dir) {
    for (const char* d : {"support/images", "support/labels", "queries"}) fs::create_directories(dir.path / d);
    auto sup = [&](const std::string& name, int h, int w, int seed, const std::string& ext, const std::string& lext) {
        const std::vector<uint8_t> g = grey_pattern(h, w, seed), l = label_pattern(h, w, seed);
        const std::string img = dir / ("support/images/" + name + ext), lab = dir / ("support/labels/" + name + lext);
        if (ext == ".png") REQUIRE(stbi_write_png(img.c_str(), w, h, 1, g.data(), w));
        if (ext == ".jpg") fs::copy_file(kImages + "pattern_rgb.jpg", img);  // 48x64; see make_fixtures.py
        if (ext == ".bmp") REQUIRE(stbi_write_bmp(img.c_str(), w, h, 3, to_rgb(g).data()));
        if (ext == ".tga") REQUIRE(stbi_write_tga(img.c_str(), w, h, 1, g.data()));
        if (lext == ".png") REQUIRE(stbi_write_png(lab.c_str(), w, h, 1, l.data(), w));
        if (lext == ".bmp") REQUIRE(stbi_write_bmp(lab.c_str(), w, h, 1, l.data()));
    };
    sup("s1", 40, 36, 1, ".png", ".png");
    sup("s2", 48, 64, 2, ".jpg", ".png");
    sup("s3", 217, 300, 3, ".bmp", ".bmp");
    sup("s4", 45, 33, 4, ".tga", ".png");
    {  // 16-bit RGB image with a 16-bit label map
        const std::vector<uint8_t> g = grey_pattern(50, 50, 5), l = label_pattern(50, 50, 5);
        std::vector<uint16_t> rgb, lab(l.begin(), l.end());
        for (uint8_t v : to_rgb(g)) rgb.push_back(uint16_t(v * 257));
        save_png(dir / "support/images/s5.png", rgb, 50, 50, 3, 16);
        save_png(dir / "support/labels/s5.png", lab, 50, 50, 1, 16);
    }
    const std::vector<uint8_t> q = grey_pattern(217, 300, 6);
    REQUIRE(stbi_write_png((dir / "queries/q_rgb.png").c_str(), 300, 217, 3, to_rgb(q).data(), 900));
    fs::copy_file(kImages + "pattern_grey.jpg", dir / "queries/q_jpeg.jpg");  // 29x37
    REQUIRE(stbi_write_bmp((dir / "queries/q_bmp.bmp").c_str(), 31, 41, 1, grey_pattern(41, 31, 8).data()));
    REQUIRE(stbi_write_tga((dir / "queries/q_tga.tga").c_str(), 64, 16, 4, std::vector<uint8_t>(64 * 16 * 4, 90).data()));
    std::vector<uint16_t> q16;
    for (uint8_t v : grey_pattern(47, 61, 9)) q16.push_back(uint16_t(v * 200));
    save_png(dir / "queries/q16.png", q16, 47, 61, 1, 16);
    std::ofstream(dir / "queries/bad.png") << "not a png";
    std::ofstream(dir / "queries/notes.txt") << "not an image either";
}

}  // namespace

TEST_CASE("segment: every format, odd sizes, multi-label, one bad query", "[cli]") {
    TempDir dir("cli2d");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' --out '" +
                             dir / "out" + "' ";
    const Run r = cli(dir, base + "--overlay '" + dir / "queries" + "'");
    REQUIRE(r.rc == 1);  // bad.png and notes.txt failed ...
    REQUIRE(contains(r.err, "bad.png"));
    REQUIRE(contains(r.err, "notes.txt: not a supported image"));
    REQUIRE(contains(r.err, "2 of 7 queries failed"));
    REQUIRE(contains(r.out, "labels 3,7"));
    REQUIRE(!fs::exists(dir / "out/bad.png"));
    // ... and the others were written at their original sizes, with the support's label values.
    const std::map<std::string, std::pair<int64_t, int64_t>> sizes = {
        {"q_rgb", {217, 300}}, {"q_jpeg", {29, 37}}, {"q_bmp", {41, 31}}, {"q_tga", {16, 64}}, {"q16", {47, 61}}};
    for (const auto& kv : sizes) {
        INFO(kv.first);
        const Image lab = load_label_map(dir / ("out/" + kv.first + ".png"));
        REQUIRE(lab.height == kv.second.first);
        REQUIRE(lab.width == kv.second.second);
        for (float v : values_of(lab)) REQUIRE((v == 0 || v == 3 || v == 7));
        int w = 0, h = 0, c = 0;
        REQUIRE(stbi_info((dir / ("out/" + kv.first + "_overlay.png")).c_str(), &w, &h, &c));
        REQUIRE((h == kv.second.first && w == kv.second.second && c == 3));
    }
}

// What segment --tile auto printed (at the model size 16) and chose: windows when they
// calibrated higher by more than the tolerance, which the printed support line must agree with.
bool auto_chose_windows(const std::string& out) {
    const size_t at = out.find("--tile auto: calibrated mean Dice ");
    REQUIRE(at != std::string::npos);
    double tiled_dice = 0, whole_dice = 0;
    REQUIRE(std::sscanf(out.c_str() + at, "--tile auto: calibrated mean Dice %lf in 16x16 windows, %lf whole", &tiled_dice,
                        &whole_dice) == 2);
    const bool windows = tiled_dice > whole_dice + kCalibrationTolerance;
    REQUIRE(contains(out, "windows of up to 16x16 px") == windows);
    return windows;
}

TEST_CASE("segment --tile: examples and queries in windows, label maps at the query's size", "[cli]") {
    TempDir dir("clitile");
    make_2d_fixture(dir);
    const Run r = cli(dir, "segment --weights '" + kWeights + "' --size 16 --tile 24 --support '" + dir / "support" +
                               "' --out '" + dir / "out" + "' '" + dir / "queries/q_rgb.png" + "' '" + dir / "queries/q16.png" + "'");
    REQUIRE(r.rc == 0);
    // s1 40x36: 2x2 windows; s2 48x64: 2x3; s3 217x300: 10x13, capped at 16; s4 45x33: 2x2; s5 50x50: 3x3.
    REQUIRE(contains(r.out, "support: 39 examples"));
    REQUIRE(contains(r.out, "windows of up to 24x24 px"));
    for (const auto& [name, size] : std::map<std::string, std::pair<int64_t, int64_t>>{{"q_rgb", {217, 300}}, {"q16", {47, 61}}}) {
        const Image lab = load_label_map(dir / ("out/" + name + ".png"));
        REQUIRE((lab.height == size.first && lab.width == size.second));
        for (float v : values_of(lab)) REQUIRE((v == 0 || v == 3 || v == 7));
    }

    // --tile auto: every example is at least twice the model size of 16 on each
    // side, so whole images and 16x16 windows are both calibrated, the printed Dice decide, and
    // the label maps are those of the chosen --tile given outright.
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    const Run autos = cli(dir, base + "--tile auto --out '" + dir / "auto" + "'" + q);
    REQUIRE(autos.rc == 0);
    const bool windows = auto_chose_windows(autos.out);
    const Run chosen = cli(dir, base + "--tile " + (windows ? "16" : "0") + " --out '" + dir / "chosen" + "'" + q);
    REQUIRE(chosen.rc == 0);
    REQUIRE(!contains(chosen.out, "--tile auto"));
    const Run plain = cli(dir, base + "--out '" + dir / "plain" + "'" + q);  // the default is whole images
    REQUIRE((plain.rc == 0 && !contains(plain.out, "--tile auto") && !contains(plain.out, "windows of up to")));
    REQUIRE(load_label_map(dir / "auto/q16.png").pixels == load_label_map(dir / "chosen/q16.png").pixels);
    // At the model size 32 the 33-px example is too small for windows: whole images, no choice.
    REQUIRE(!contains(cli(dir, "segment --weights '" + kWeights + "' --size 32 --flips 1 --tile auto --support '" + dir / "support" + "' --out '" +
                                   dir / "a32" + "'" + q).out, "--tile auto"));
}

TEST_CASE("segment: thresholds, probabilities, --label", "[cli]") {
    TempDir dir("cliprob");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q_rgb.png" + "'";

    REQUIRE(cli(dir, base + "--quiet --threshold 0 --out '" + dir / "t0" + "'" + q).rc == 0);
    REQUIRE(values_of(load_label_map(dir / "t0/q_rgb.png")).count(0) == 0);  // sigmoid > 0 everywhere
    REQUIRE(cli(dir, base + "--quiet --threshold 1 --out '" + dir / "t1" + "'" + q).rc == 0);
    REQUIRE(values_of(load_label_map(dir / "t1/q_rgb.png")) == std::set<float>{0});

    // Uncalibrated, the label map is the per-pixel argmax of the written probabilities above 0.5.
    // Calibrated (5 supports: by default), the written probabilities are the uncalibrated ones
    // shifted by the printed offsets and weighted intensity evidence (recomputed here from the
    // supports prepared as the CLI prepares them), and the label map their argmax above 0.5.
    const Run raw = cli(dir, base + "--no-calibration --probabilities npy --out '" + dir / "raw" + "'" + q);
    REQUIRE(raw.rc == 0);
    REQUIRE(raw.err.empty());  // stderr is not a terminal: no progress bar
    REQUIRE(raw.out.find("calibrated") == std::string::npos);
    const Tensor r3 = load_npy(dir / "raw/q_rgb_prob_3.npy"), r7 = load_npy(dir / "raw/q_rgb_prob_7.npy");
    REQUIRE(r3.shape == std::vector<int64_t>{217, 300});
    const Image lab = load_label_map(dir / "raw/q_rgb.png");
    for (size_t i = 0; i < lab.pixels.size(); ++i) {
        const float a = r3.data[i], b = r7.data[i];
        REQUIRE((a >= 0 && a <= 1 && b >= 0 && b <= 1));
        REQUIRE(lab.pixels[i] == (std::max(a, b) > 0.5f ? (b > a ? 7.0f : 3.0f) : 0.0f));
    }
    const Run r = cli(dir, base + "--probabilities npy --out '" + dir / "p" + "'" + q);
    REQUIRE(r.rc == 0);
    const size_t at = r.out.find("calibrated on 5 examples");
    REQUIRE(at != std::string::npos);
    double o3 = NAN, o7 = NAN, w3 = NAN, w7 = NAN;
    REQUIRE(std::sscanf(r.out.c_str() + r.out.find("weight ", at), "weight 3:%lf,%lf 7:%lf,%lf", &o3, &w3, &o7, &w7) == 4);
    REQUIRE((o3 != 0 || o7 != 0 || w3 != 0 || w7 != 0));  // this fixture's boxes need calibrating
    SupportSet set;  // the supports prepared as the CLI prepares them: normalised at their own size
    set.height = set.width = 32;
    std::vector<float> all_images, all_labels;  // every support pixel at its own size
    for (const std::string& f : list_image_files(dir / "support/images")) {
        const std::string label = dir / ("support/labels/" + image_stem(f) + (image_stem(f) == "s3" ? ".bmp" : ".png"));
        Image img = load_image(f);
        normalize_min_max(img);
        const Image lab = load_label_map(label);
        REQUIRE(img.pixels.size() <= size_t(kSupportSamples));  // so the evidence sees every pixel
        all_images.insert(all_images.end(), img.pixels.begin(), img.pixels.end());
        all_labels.insert(all_labels.end(), lab.pixels.begin(), lab.pixels.end());
        add_support_resized(set, img, lab, f);
    }
    REQUIRE(set.size() == 5);
    const std::vector<double> e3 = intensity_log_ratios(set, 3), e7 = intensity_log_ratios(set, 7);
    Image query = load_image(dir / "queries/q_rgb.png");
    normalize_min_max(query);
    const Tensor p3 = load_npy(dir / "p/q_rgb_prob_3.npy"), p7 = load_npy(dir / "p/q_rgb_prob_7.npy");
    const Image labc = load_label_map(dir / "p/q_rgb.png");
    for (size_t i = 0; i < labc.pixels.size(); ++i) {
        const size_t bin = size_t(intensity_bin(query.pixels[i]));
        const double a = logit(r3.data[i]) + o3 + w3 * e3[bin], b = logit(r7.data[i]) + o7 + w7 * e7[bin];
        REQUIRE(p3.data[i] == Approx(sigmoid(a)).margin(1e-6));
        REQUIRE(p7.data[i] == Approx(sigmoid(b)).margin(1e-6));
        REQUIRE(labc.pixels[i] == (std::max(a, b) > 0 ? (b > a ? 7.0f : 3.0f) : 0.0f));
    }
    // The classical classifier instead of the network: each label's histogram_baseline on every
    // pixel of the supports at their own size and the normalised query, the lower value first.
    const Run h = cli(dir, base + "--histogram-baseline --out '" + dir / "h" + "'" + q);
    REQUIRE(h.rc == 0);
    REQUIRE(h.out.find("histogram classifier") != std::string::npos);
    const Image labh = load_label_map(dir / "h/q_rgb.png");
    std::vector<float> m3(all_labels.size()), m7(all_labels.size()), c3(query.pixels.size()), c7(query.pixels.size());
    for (size_t i = 0; i < m3.size(); ++i) m3[i] = all_labels[i] == 3, m7[i] = all_labels[i] == 7;
    const int64_t n = int64_t(all_images.size());
    histogram_baseline(all_images.data(), m3.data(), 1, n, query.pixels.data(), int64_t(c3.size()), c3.data());
    histogram_baseline(all_images.data(), m7.data(), 1, n, query.pixels.data(), int64_t(c7.size()), c7.data());
    for (size_t i = 0; i < labh.pixels.size(); ++i) REQUIRE(labh.pixels[i] == (c3[i] > 0 ? 3.0f : c7[i] > 0 ? 7.0f : 0.0f));
    REQUIRE(std::set<float>(labh.pixels.begin(), labh.pixels.end()).size() > 1);
    REQUIRE(cli(dir, base + "--histogram-baseline --probabilities png --out '" + dir / "h2" + "'" + q).rc != 0);

    REQUIRE(cli(dir, base + "--quiet --no-calibration --label 7 --probabilities png --out '" + dir / "l7" + "'" + q).rc == 0);
    for (float v : values_of(load_label_map(dir / "l7/q_rgb.png"))) REQUIRE((v == 0 || v == 7));
    REQUIRE(!fs::exists(dir / "l7/q_rgb_prob_3.png"));
    const std::vector<uint8_t> png16 = read_file(dir / "l7/q_rgb_prob_7.png");
    REQUIRE(stbi_is_16_bit_from_memory(png16.data(), int(png16.size())));
    const Image prob7 = load_image(dir / "l7/q_rgb_prob_7.png");
    for (size_t i = 0; i < prob7.pixels.size(); i += 97) REQUIRE(prob7.pixels[i] == Approx(r7.data[i]).margin(1.0 / 65535));
}

TEST_CASE("segment: at the model size the output is exactly the model's", "[cli]") {
    // Images and labels at 32x32 holding 0 and 255, so normalising and resizing are identities
    // and the probabilities must equal sigmoid(forward) on the decoded pixels.
    TempDir dir("cliexact");
    fs::create_directories(dir.path / "s/images");
    fs::create_directories(dir.path / "s/labels");
    const int H = 32, W = 32, S = 3;
    std::vector<float> images, masks;
    for (int i = 0; i < S; ++i) {
        const std::vector<uint8_t> g = grey_pattern(H, W, i);
        std::vector<uint8_t> l = label_pattern(H, W, i);
        for (uint8_t& v : l) v = v == 7;
        const std::string name = "p" + std::to_string(i) + ".png";
        REQUIRE(stbi_write_png((dir / ("s/images/" + name)).c_str(), W, H, 1, g.data(), W));
        REQUIRE(stbi_write_png((dir / ("s/labels/" + name)).c_str(), W, H, 1, l.data(), W));
        for (uint8_t v : g) images.push_back(float(v / 255.0));
        for (uint8_t v : l) masks.push_back(float(v));
    }
    const std::vector<uint8_t> qg = grey_pattern(H, W, 11);
    REQUIRE(stbi_write_png((dir / "q.png").c_str(), W, H, 1, qg.data(), W));
    std::vector<float> query, logits(size_t(H * W));
    for (uint8_t v : qg) query.push_back(float(v / 255.0));
    model().forward(query.data(), images.data(), masks.data(), 1, S, H, W, logits.data());

    const Run r = cli(dir, "segment --quiet --weights '" + kWeights + "' --size 32x32 --support '" + dir / "s" + "' --out '" +
                               dir / "o" + "' --flips 1 --probabilities npy '" + dir / "q.png" + "'");
    REQUIRE(r.rc == 0);
    const Tensor p = load_npy(dir / "o/q_prob_1.npy");
    REQUIRE(p.numel() == H * W);
    for (int i = 0; i < H * W; ++i) REQUIRE(p.data[size_t(i)] == Approx(sigmoid(logits[size_t(i)])).margin(1e-5));
}

// `after` holds the same tensors as `before` (names and shapes), and training changed some values.
void require_trained_from(const StateDict& before, const StateDict& after) {
    REQUIRE(after.size() == before.size());
    bool changed = false;
    for (const auto& [key, t] : before) {
        REQUIRE(after.count(key));
        REQUIRE(after.at(key).shape == t.shape);
        changed = changed || after.at(key).data != t.data;
    }
    REQUIRE(changed);
}

TEST_CASE("finetune: held-out Dice before and after, weights written whole, clear errors", "[cli]") {
    TempDir dir("clift");
    make_2d_fixture(dir);
    const std::string base = "finetune --threads 1 --weights '" + kWeights + "' --size 32 --support '" + dir / "support" + "' ";
    Run r = cli(dir, base + "--steps 0");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "held-out Dice before"));
    REQUIRE(contains(r.out, "histogram baseline"));
    // Without --weights, the default weights (here from UNIVERSEG_WEIGHTS), as segment takes them.
    const Run by_default = cli(dir, "finetune --threads 1 --size 32 --support '" + dir / "support" + "' --steps 0",
                               "UNIVERSEG_WEIGHTS='" + kWeights + "'");
    REQUIRE(by_default.rc == 0);
    REQUIRE(by_default.out == r.out);

    r = cli(dir, base + "--steps 3 --out '" + dir / "tuned.safetensors" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "held-out Dice after 3 steps"));
    require_trained_from(load_state_dict(kWeights), load_state_dict(dir / "tuned.safetensors"));
    for (const auto& e : fs::directory_iterator(dir.path)) REQUIRE(e.path().filename().string().find(".tmp") == std::string::npos);

    r = cli(dir, base + "--steps 3");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--out"));
    r = cli(dir, "finetune --weights '" + kWeights + "' --support '" + dir / "nowhere" + "' --steps 0");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "nowhere"));
}

// The number printed after `marker` in `text` (the first occurrence), or -1.
double number_after(const std::string& text, const std::string& marker) {
    const size_t at = text.find(marker);
    return at == std::string::npos ? -1.0 : std::atof(text.c_str() + at + marker.size());
}

TEST_CASE("train: checkpoints, log and chart; --init starts a new run from trained weights", "[cli]") {
    TempDir dir("clitrain");
    const std::string common = "train --threads 1 --size 16 --support-size 2 --eval-tasks 2 --eval-support 2 --eval-queries 1 "
                               "--steps 4 --eval-every 2 --checkpoint-every 2 ";
    const std::string a = dir / "a.safetensors";
    // Without a moving average (--ema 0) the shipped weights are the last step's, whose Dice
    // differs from the initial weights': a new run from them must start at that Dice.
    Run r = cli(dir, common + "--config '[8,8]' --seed 3 --ema 0 --out '" + a + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "final checkpoint at step 4"));
    for (const char* f : {"a.safetensors", "a.ckpt.safetensors", "a.log.csv", "a.svg"}) REQUIRE(fs::file_size(dir / f) > 0);
    const double a_dice = number_after(r.out, "step 4 held-out Dice "), a_init = number_after(r.out, "step 0 held-out Dice ");
    REQUIRE(a_dice >= 0);
    REQUIRE(a_dice != Approx(a_init).margin(1e-3));

    // From the weights file or from the checkpoint, the new run's first evaluation (step 0, the
    // same held-out set) gives the Dice that a's last evaluation gave.
    for (const std::string from : {a, dir / "a.ckpt.safetensors"}) {
        const std::string c = dir / "c.safetensors";
        r = cli(dir, common + "--seed 4 --init '" + from + "' --out '" + c + "'");
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "starting from the weights in"));
        REQUIRE(number_after(r.out, "step 0 held-out Dice ") == Approx(a_dice).margin(1e-4));
        require_trained_from(load_state_dict(a), load_state_dict(c));
    }

    // --eval-only: the same evaluation of the weights or of the checkpoint, and nothing written.
    const auto files_in = [&] { return std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()); };
    const auto files_before = files_in();
    const std::string eval_only = "train --threads 1 --size 16 --eval-tasks 2 --eval-support 2 --eval-queries 1 --eval-only ";
    for (const std::string from : {"--init '" + a + "'", "--resume '" + dir / "a.ckpt.safetensors" + "'"}) {
        r = cli(dir, eval_only + from);
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "evaluating"));
        REQUIRE(number_after(r.out, "held-out Dice ") == Approx(a_dice).margin(1e-4));
        REQUIRE(files_in() == files_before);
    }
    r = cli(dir, eval_only);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--init"));
    r = cli(dir, eval_only + "--init '" + a + "' --data '" + dir.path.string() + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "finetune"));

    r = cli(dir, common + "--init '" + a + "' --resume '" + dir / "a.ckpt.safetensors" + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--init"));
    r = cli(dir, common + "--config '[8,8,8]' --init '" + a + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--config"));
    r = cli(dir, common + "--init '" + dir / "missing.safetensors" + "' --out '" + dir / "d.safetensors" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "missing.safetensors"));
    REQUIRE(!fs::exists(dir / "d.safetensors"));
}

#ifndef UNIVERSEG_MPIEXEC
// Started by mpirun or srun as one of several processes, a build without MPI would train N
// times over, each process writing the same files: it refuses (tests/test_mpi.cpp: the MPI build).
TEST_CASE("train and finetune refuse to run as one of several processes in a build without MPI", "[cli]") {
    TempDir dir("clinompi");
    for (const char* env : {"OMPI_COMM_WORLD_SIZE=2", "PMI_SIZE=4"}) {
        const Run r = cli(dir, "train --threads 1 --size 16 --steps 2 --out '" + dir / "a.safetensors" + "'", env);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "this build has no MPI support"));
        REQUIRE(contains(r.err, "-DUNIVERSEG_MPI=ON"));
        REQUIRE(cli(dir, "finetune --weights '" + kWeights + "' --support '" + dir.path.string() + "' --steps 0", env).rc == 1);
    }
    REQUIRE(!fs::exists(dir / "a.safetensors"));
    // One process is one process.
    REQUIRE(cli(dir, "train --threads 1 --size 16 --config '[8,8]' --support-size 2 --eval-tasks 0 --steps 2 --out '" +
                         dir / "a.safetensors" + "'", "OMPI_COMM_WORLD_SIZE=1").rc == 0);
}
#endif

TEST_CASE("info, bench and bench-chart", "[cli]") {
    TempDir dir("cliinfo");
    // The architectures and v1's parameter count as the reference model and the paper give them.
    Run r = cli(dir, "info '" + std::string(UNIVERSEG_TEST_DATA) + "/golden/v1_b2_s4_128/weights.pt'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "encoder [64,64,64,64] decoder [64,64,64]"));
    REQUIRE(contains(r.out, "parameters:    1182785"));
    REQUIRE(contains(r.out, "multiples of 8"));
    r = cli(dir, "info '" + kWeights + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "encoder [[16,8],[24,16],32] decoder [[24,16],[16,8]]"));  // the case's config.json
    REQUIRE(contains(r.out, "multiples of 4"));

    const std::string bench = "bench --threads 1 --weights '" + kWeights + "' --support-size 2 --size 32 --repeats 2 ";
    r = cli(dir, bench);
    REQUIRE(r.rc == 0);
    const double median = number_after(r.out, "median_ms="), fastest = number_after(r.out, "min_ms=");
    REQUIRE(median > 0);
    REQUIRE(fastest > 0);
    REQUIRE(fastest <= median);
    REQUIRE(number_after(r.out, "peak_rss_mb=") > 0);
    REQUIRE(contains(r.out, "S=2 B=1 size=32 threads=1 precision=fp32"));
    r = cli(dir, bench + "--json");
    REQUIRE(r.rc == 0);
    REQUIRE(number_after(r.out, "\"median_ms\": ") > 0);
    REQUIRE(contains(r.out, "\"support_size\": 2"));
    r = cli(dir, bench + "--support-size 0");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--support-size"));
    r = cli(dir, "bench --weights '" + kWeights + "' --size 30 --repeats 1");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "30x30"));

    {
        std::ofstream t(dir / "r.tsv");
        t << "engine\tsupport_size\tmedian_ms\nuniverseg\t1\t20\nuniverseg\t8\t60\nPyTorch\t1\t1300\nPyTorch\t8\t2400\n";
    }
    r = cli(dir, "bench-chart --in '" + dir / "r.tsv" + "' --out '" + dir / "c.svg" + "'");
    REQUIRE(r.rc == 0);
    const std::string svg = slurp(dir / "c.svg");
    REQUIRE(svg.rfind("<svg", 0) == 0);
    size_t lines = 0;
    for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++lines;
    REQUIRE(lines == 2);  // one per engine
    REQUIRE(contains(svg, "PyTorch"));
    {
        std::ofstream t(dir / "bad.tsv");
        t << "engine\tS\n";
    }
    r = cli(dir, "bench-chart --in '" + dir / "bad.tsv" + "' --out '" + dir / "d.svg" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "bad.tsv"));
    REQUIRE(!fs::exists(dir / "d.svg"));
}

TEST_CASE("segment: ensembles and support subsets", "[cli]") {
    TempDir dir("cliens");
    make_2d_fixture(dir);
    const std::string base = "segment --weights '" + kWeights + "' --size 16x24 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    const Run a = cli(dir, base + "--ensemble 3 --support-size 2 --seed 4 --probabilities npy --out '" + dir / "a" + "'" + q);
    REQUIRE(a.rc == 0);
    REQUIRE(contains(a.out, "2 per prediction, ensemble of 3"));
    const Run b = cli(dir, base + "--ensemble 3 --support-size 2 --seed 4 --probabilities npy --out '" + dir / "b" + "'" + q);
    REQUIRE(b.rc == 0);
    REQUIRE(load_npy(dir / "a/q16_prob_3.npy").data == load_npy(dir / "b/q16_prob_3.npy").data);  // seeded
    const Run c = cli(dir, base + "--ensemble 3 --support-size 2 --seed 5 --probabilities npy --out '" + dir / "c" + "'" + q);
    REQUIRE(c.rc == 0);
    REQUIRE(load_npy(dir / "a/q16_prob_3.npy").data != load_npy(dir / "c/q16_prob_3.npy").data);
    // All five supports leave a single subset to draw.
    const Run d = cli(dir, base + "--ensemble 4 --out '" + dir / "d" + "'" + q);
    REQUIRE(d.rc == 0);
    REQUIRE(contains(d.out, "ensemble of 4 asked for but only 1 distinct subset(s) exist"));
}

TEST_CASE("segment: NIfTI volumes slice by slice, with the query's header", "[cli][nifti]") {
    TempDir dir("clinii");
    fs::create_directories(dir.path / "s/images");
    fs::create_directories(dir.path / "s/labels");
    auto volume = [](int64_t nx, int64_t ny, int64_t nz, bool labels) {
        Volume v;
        v.nx = nx, v.ny = ny, v.nz = nz;
        v.header.pixdim = {1, 0.8f, 0.8f, 2.5f, 0, 0, 0, 0};
        v.header.sform_code = 1;
        v.header.srow_x = {0.8f, 0, 0, -10};
        v.header.srow_y = {0, 0.8f, 0, 5};
        v.header.srow_z = {0, 0, 2.5f, 7};
        for (int64_t z = 0; z < nz; ++z)
            for (int64_t y = 0; y < ny; ++y)
                for (int64_t x = 0; x < nx; ++x) {
                    const bool in = (x - nx / 2) * (x - nx / 2) + (y - ny / 2) * (y - ny / 2) < nx * ny / 8 && z > 0;
                    v.voxels.push_back(labels ? (in ? 2.0f : 0.0f) : float(in ? 900 : -100 + x + y));
                }
        return v;
    };
    save_nifti(dir / "s/images/a.nii.gz", volume(20, 24, 5, false), kNiftiInt16);
    save_nifti(dir / "s/labels/a.nii.gz", volume(20, 24, 5, true), kNiftiUint8);
    Volume q = volume(28, 20, 3, false);
    q.header.descrip = "query volume";
    save_nifti(dir / "q.nii", q, kNiftiFloat32);

    const Run r = cli(dir, "segment --weights '" + kWeights + "' --size 16 --clip 1,99 --overlay --support '" + dir / "s" +
                               "' --out '" + dir / "o" + "' '" + dir / "q.nii" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "4 examples"));  // the labelled slices z = 1..4
    const Volume out = load_nifti(dir / "o/q.nii");
    REQUIRE((out.nx == 28 && out.ny == 20 && out.nz == 3));
    REQUIRE(out.header.datatype == kNiftiUint8);
    REQUIRE(nifti_affine(out.header) == nifti_affine(q.header));
    REQUIRE(out.header.descrip == "query volume");
    for (float v : out.voxels) REQUIRE((v == 0 || v == 2));
    REQUIRE(fs::exists(dir / "o/q_overlay.png"));

    // Along another axis, with probabilities as float32 volumes.
    const Run r0 = cli(dir, "segment --quiet --weights '" + kWeights + "' --size 16 --axis 0 --probabilities npy --support '" +
                                dir / "s" + "' --out '" + dir / "o0" + "' '" + dir / "q.nii" + "'");
    REQUIRE(r0.rc == 0);
    const Volume p = load_nifti(dir / "o0/q_prob_2.nii");
    REQUIRE(p.header.datatype == kNiftiFloat32);
    REQUIRE((p.nx == 28 && p.ny == 20 && p.nz == 3));
    for (float v : p.voxels) REQUIRE((v >= 0 && v <= 1));

    // --tile auto on volumes: slices of 36x40 and 40x36 are at least twice the model size, so
    // windows are calibrated too (a volume's slices and windows held out together), and the
    // label volume is that of the chosen --tile given outright.
    fs::create_directories(dir.path / "t/images");
    fs::create_directories(dir.path / "t/labels");
    save_nifti(dir / "t/images/a.nii.gz", volume(36, 40, 4, false), kNiftiInt16);
    save_nifti(dir / "t/labels/a.nii.gz", volume(36, 40, 4, true), kNiftiUint8);
    save_nifti(dir / "t/images/b.nii", volume(40, 36, 4, false), kNiftiInt16);
    save_nifti(dir / "t/labels/b.nii", volume(40, 36, 4, true), kNiftiUint8);
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "t" + "' ";
    const Run autos = cli(dir, base + "--tile auto --out '" + dir / "ta" + "' '" + dir / "q.nii" + "'");
    REQUIRE(autos.rc == 0);
    REQUIRE(contains(autos.out, "calibrated on 6 examples"));  // the labelled slices z = 1..3 of each
    const bool windows = auto_chose_windows(autos.out);
    const Run chosen = cli(dir, base + "--tile " + (windows ? "16" : "0") + " --out '" + dir / "tc" + "' '" + dir / "q.nii" + "'");
    REQUIRE(chosen.rc == 0);
    REQUIRE(load_nifti(dir / "ta/q.nii").voxels == load_nifti(dir / "tc/q.nii").voxels);
}

TEST_CASE("segment: clear errors naming the file or option", "[cli]") {
    TempDir dir("clierr");
    make_2d_fixture(dir);
    const std::string w = "--weights '" + kWeights + "' --size 32 ";
    const std::string q = " '" + dir / "queries/q16.png" + "'";
    Run r = cli(dir, "segment " + w + "--support '" + dir / "nowhere" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "nowhere"));

    fs::copy_file(dir / "queries/q_bmp.bmp", dir / "support/images/s9.bmp");  // image without label
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "s9.bmp"));
    fs::copy_file(dir / "support/labels/s1.png", dir / "support/labels/s9.png");  // label of the wrong size
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "s9.png"));
    REQUIRE(contains(r.err, "does not match"));
    fs::remove(dir / "support/images/s9.bmp");
    fs::remove(dir / "support/labels/s9.png");

    r = cli(dir, "segment --weights '" + dir / "missing.pt" + "' --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "missing.pt"));
    r = cli(dir, "segment --weights '" + kWeights + "' --size 30 --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "multiple of 4"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --clip 9,2" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--clip"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --tile -1" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--tile"));
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --tile whole" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "--tile"));
    for (const char* flips : {"3", "8", "0"}) {
        r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "' --flips " + flips + q);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "--flips"));
    }
    r = cli(dir, "segment " + w + "--support '" + dir / "support" + "' --out '" + dir / "o" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "QUERY"));
    // The default weights can come from UNIVERSEG_WEIGHTS.
    r = cli(dir, "segment --quiet --size 32 --support '" + dir / "support" + "' --out '" + dir / "o" + "'" + q,
            "UNIVERSEG_WEIGHTS='" + kWeights + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(fs::exists(dir / "o/q16.png"));
}

TEST_CASE("segment: the weights' image_size metadata sets the model size", "[cli]") {
    TempDir dir("climeta");
    make_2d_fixture(dir);
    save_safetensors(dir / "w.safetensors", model().state_dict(), {{"image_size", "24x20"}});
    const std::string base = "segment --weights '" + dir / "w.safetensors" + "' --support '" + dir / "support" + "' --out '" +
                             dir / "o" + "' '" + dir / "queries/q16.png" + "'";
    Run r = cli(dir, base);
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "model size 24x20"));
    r = cli(dir, base + " --size 16");  // the option wins
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "model size 16x16"));
}

TEST_CASE("eval: Dice and IoU per label and image, CSV", "[cli]") {
    TempDir dir("clieval");
    fs::create_directories(dir.path / "truth/labels");
    fs::create_directories(dir.path / "pred");
    // a: label 1 truth 4 px, pred 6 px, 3 shared -> Dice 0.6, IoU 3/7; label 2 truth 2, pred 0 -> 0.
    const uint8_t ta[] = {1, 1, 1, 1, 2, 2, 0, 0, 0, 0}, pa[] = {1, 1, 1, 0, 1, 1, 1, 0, 0, 0};
    // b: label 1 exact (2 px) -> 1; label 2 absent from both -> not scored.
    const uint8_t tb[] = {1, 1, 0, 0}, pb[] = {1, 1, 0, 0};
    REQUIRE(stbi_write_png((dir / "truth/labels/a.png").c_str(), 5, 2, 1, ta, 5));
    REQUIRE(stbi_write_png((dir / "pred/a.png").c_str(), 5, 2, 1, pa, 5));
    REQUIRE(stbi_write_png((dir / "truth/labels/b.png").c_str(), 2, 2, 1, tb, 2));
    REQUIRE(stbi_write_png((dir / "pred/b.png").c_str(), 2, 2, 1, pb, 2));
    REQUIRE(stbi_write_png((dir / "pred/b_overlay.png").c_str(), 2, 2, 1, pb, 2));  // ignored
    const Run r = cli(dir, "eval --pred '" + dir / "pred" + "' --truth '" + dir / "truth" + "' --csv '" + dir / "e.csv" + "'");
    REQUIRE(r.rc == 0);
    REQUIRE(slurp(dir / "e.csv") ==
            "image,label,dice,iou,truth_pixels,pred_pixels,overlap_pixels\n"
            "a,1,0.6000,0.4286,4,6,3\n"
            "a,2,0.0000,0.0000,2,0,0\n"
            "b,1,1.0000,1.0000,2,2,2\n");
    // label 1 over a and b: mean (0.6 + 1) / 2 = 0.8, sample sd sqrt(0.08) = 0.2828
    REQUIRE(contains(r.out, "label 1: dice 0.8000 +- 0.2828 (min 0.6000, max 1.0000)"));
    REQUIRE(contains(r.out, "mean over 2 labels: dice 0.4000"));

    REQUIRE(stbi_write_png((dir / "truth/labels/c.png").c_str(), 2, 2, 1, tb, 2));  // no prediction
    REQUIRE(stbi_write_png((dir / "truth/labels/d.png").c_str(), 2, 2, 1, tb, 2));
    REQUIRE(stbi_write_png((dir / "pred/d.png").c_str(), 1, 4, 1, tb, 1));  // wrong size
    const Run bad = cli(dir, "eval --pred '" + dir / "pred" + "' --truth '" + dir / "truth" + "'");
    REQUIRE(bad.rc == 1);
    REQUIRE(contains(bad.err, "c.png"));
    REQUIRE(contains(bad.err, "d.png"));
    REQUIRE(contains(bad.out, "label 1: dice 0.8000"));  // the others are still scored
}

TEST_CASE("segment in shards with a saved task writes what one run writes, byte for byte; eval --merge", "[cli]") {
    TempDir dir("clishard");
    make_2d_fixture(dir);
    fs::remove(dir / "queries/bad.png");
    fs::remove(dir / "queries/notes.txt");
    // Ten queries: five images and the five examples, whose label maps are the ground truth. (A
    // saved --tile auto choice: "Segmenter: what calibration decided...", without the cost of
    // windows here.)
    const std::string base = "segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support" + "' ";
    const std::string q = " '" + dir / "queries" + "' '" + dir / "support/images" + "'";
    const std::string outputs = "--overlay --probabilities png ";
    REQUIRE(cli(dir, base + outputs + "--out '" + dir / "one" + "'" + q).rc == 0);

    const std::string task = dir / "task.txt";
    Run r = cli(dir, base + "--save-task '" + task + "'");  // no queries, no --out: calibrate, save, stop
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "saved the task's calibration to"));
    REQUIRE(slurp(task).rfind("universeg task 1\n", 0) == 0);
    std::set<std::string> all;
    for (int k = 1; k <= 3; ++k) {
        const std::string out = dir / ("shard" + std::to_string(k));
        r = cli(dir, base + outputs + "--task '" + task + "' --shard " + std::to_string(k) + "/3 --out '" + out + "'" + q);
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "as saved in " + task));
        REQUIRE(contains(r.out, "of shard " + std::to_string(k) + "/3 (10 in all)"));
        for (const std::string& f : names_in(out)) {
            REQUIRE(all.insert(f).second);  // no query in two shards
            REQUIRE(read_file(out + "/" + f) == read_file(dir / ("one/" + f)));
        }
    }
    REQUIRE(all == names_in(dir / "one"));
    // Shards with nothing to do: more shards than queries.
    r = cli(dir, base + "--task '" + task + "' --shard 12/12 --out '" + dir / "empty" + "'" + q);
    REQUIRE(r.rc == 0);
    REQUIRE(contains(r.out, "shard 12/12: none of the 10 queries"));
    REQUIRE(!fs::exists(dir / "empty"));

    // The shards' tables, merged, are the table and the summary of one eval over everything.
    const std::string truth = " --truth '" + dir / "support" + "' ";
    const Run whole = cli(dir, "eval --pred '" + dir / "one" + "'" + truth + "--csv '" + dir / "one.csv" + "'");
    REQUIRE(whole.rc == 0);
    std::string tables;
    for (int k = 1; k <= 3; ++k) {
        const std::string csv = dir / ("e" + std::to_string(k) + ".csv");
        r = cli(dir, "eval --only-predicted --pred '" + dir / ("shard" + std::to_string(k)) + "'" + truth + "--csv '" + csv + "'");
        REQUIRE(r.rc == 0);
        tables += " '" + csv + "'";
    }
    REQUIRE(cli(dir, "eval --pred '" + dir / "shard1" + "'" + truth).rc == 1);  // without --only-predicted: the others missing
    const Run merged = cli(dir, "eval --merge" + tables + " --csv '" + dir / "merged.csv" + "'");
    REQUIRE(merged.rc == 0);
    REQUIRE(merged.out == whole.out);
    REQUIRE(slurp(dir / "merged.csv") == slurp(dir / "one.csv"));
    r = cli(dir, "eval --merge '" + dir / "e1.csv" + "' '" + dir / "e1.csv" + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "the tables overlap"));
    r = cli(dir, "eval --merge '" + task + "'");
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, task + ": not a table of universeg eval --csv"));

    // A task file is refused unless the weights, the examples and the options are its own: by name,
    // before anything is written.
    auto refused = [&](const std::string& args, const std::string& why) {
        const Run bad = cli(dir, args + " --task '" + task + "' --out '" + dir / "refused" + "'" + q);
        CHECK(bad.rc == 1);
        CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
        CHECK_THAT(bad.err, Contains(why));
        CHECK(!fs::exists(dir / "refused"));
    };
    refused(base + "--seed 1", "--task " + task + " was saved with --seed 0, and this run has --seed 1");
    refused(base + "--clip 1,99", "was saved with --clip 0,100, and this run has --clip 1,99");
    refused(base + "--tile auto", "was saved with --tile 0, and this run has --tile auto");
    refused(base + "--no-calibration", "--no-calibration");
    const std::string converted = dir / "w.safetensors";
    REQUIRE(cli(dir, "convert '" + kWeights + "' '" + converted + "'").rc == 0);  // the same weights, other bytes
    refused("segment --weights '" + converted + "' --size 16 --flips 1 --support '" + dir / "support" + "'",
            "was saved with other weights");
    fs::copy(dir / "support", dir / "support2", fs::copy_options::recursive);
    fs::copy_file(dir / "support/labels/s1.png", dir / "support2/labels/s5.png", fs::copy_options::overwrite_existing);
    refused("segment --weights '" + kWeights + "' --size 16 --flips 1 --support '" + dir / "support2" + "'",
            "was saved from other examples");
    std::ofstream(dir / "not_a_task.txt") << "hello\n";
    r = cli(dir, base + "--task '" + dir / "not_a_task.txt" + "' --out '" + dir / "refused" + "'" + q);
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, dir / "not_a_task.txt" + ": not a task file"));
    r = cli(dir, base + "--save-task '" + dir / "support/images/s1.png" + "'");  // not over a file that is not a task
    REQUIRE(r.rc == 1);
    REQUIRE(contains(r.err, "is not a task file"));
    for (const char* shard : {"0/3", "4/3", "1/0", "x", "1/3/", "-1/3", "1/+3", "2"}) {
        r = cli(dir, base + "--shard " + shard + " --out '" + dir / "refused" + "'" + q);
        REQUIRE(r.rc == 1);
        REQUIRE(contains(r.err, "--shard must be K/N"));
    }
    REQUIRE(!fs::exists(dir / "refused"));
}

namespace {

// `universeg segment ARGS` from the repository root, where cases.txt's paths start; `shell`:
// settings before it.
Run segment(const TempDir& dir, const std::string& args, const std::string& shell = "") {
    return cli(dir, "segment " + args, "cd " + quote(kRoot) + " && " + shell);
}

std::string joined(const std::vector<std::string>& words) {
    std::string s;
    for (const std::string& w : words) s += quote(w) + " ";
    return s;
}

// Five labelled cells in DIR/support, and the command's fixed arguments for them.
std::string small_task(const TempDir& dir) {
    for (const char* d : {"support/images", "support/labels"}) fs::create_directories(dir.path / d);
    for (int i = 0; i < 5; ++i) {
        const std::string n = "cell_0" + std::to_string(i) + ".png";
        fs::copy_file(kCells + "support/images/" + n, dir / ("support/images/" + n));
        fs::copy_file(kCells + "support/labels/" + n, dir / ("support/labels/" + n));
    }
    return "--weights " + quote(kWeights) + " --size 16 --flips 1 --support " + quote(dir / "support") + " ";
}

}  // namespace

TEST_CASE("segment reproduces its reference outputs byte for byte", "[cli]") {
    TempDir dir("segref_cli");
    for (const ReferenceCase& c : reference_cases()) {
        if (c.name == "cells") continue;
        REQUIRE(segment(dir, "--quiet " + joined(c.args) + "--out " + quote(dir / c.name)).rc == 0);
        check_like_reference(c.name, dir / c.name);
    }
}

TEST_CASE("segment: the cells example with the bundled weights, byte for byte", "[cli][heavy]") {
    TempDir dir("segref_cells_cli");
    for (const ReferenceCase& c : reference_cases()) {
        if (c.name != "cells") continue;
        REQUIRE(segment(dir, "--quiet " + joined(c.args) + "--out " + quote(dir / c.name)).rc == 0);
        check_like_reference(c.name, dir / c.name);
    }
}

TEST_CASE("segment plans every output first: none written twice, over an input or over a foreign file", "[cli]") {
    TempDir dir("segplan");
    const std::string task = small_task(dir);
    fs::create_directories(dir.path / "q");
    fs::create_directories(dir.path / "out");
    const std::string query = kCells + "queries/images/query_00.png", out = " --out " + quote(dir / "out") + " ";
    fs::copy_file(query, dir / "q/a.png");
    fs::copy_file(query, dir / "q/a_overlay.png");
    fs::copy_file(query, dir / "q/a_prob_2.png");
    auto refused = [&](const Run& r, const std::vector<std::string>& named) {
        CHECK(r.rc == 1);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        for (const std::string& n : named) CHECK_THAT(r.err, Contains(n));
        CHECK(r.out.empty());  // refused before the summary, which calibration precedes
        CHECK(names_in(dir / "out").empty());
    };
    // a's overlay and a_overlay's label map; a's probabilities of label 2 and a_prob_2's label map.
    refused(segment(dir, task + "--overlay" + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a_overlay.png")),
            {dir / "out/a_overlay.png", "the overlay of " + dir / "q/a.png", "the label map of " + dir / "q/a_overlay.png"});
    refused(segment(dir, task + "--probabilities png" + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a_prob_2.png")),
            {dir / "out/a_prob_2.png", "the probabilities of label 2 of " + dir / "q/a.png"});
    // The same query twice.
    refused(segment(dir, task + out + quote(dir / "q/a.png") + " " + quote(dir / "q/a.png")), {"both the label map of"});

    // A query that lives in --out, which another query's overlay would replace.
    fs::copy_file(query, dir / "out/b_overlay.png");
    const std::vector<uint8_t> kept = read_file(dir / "out/b_overlay.png");
    fs::copy_file(query, dir / "q/b.png");
    const Run r = segment(dir, task + "--overlay" + out + quote(dir / "q/b.png") + " " + quote(dir / "out/b_overlay.png"));
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains("the overlay of " + dir / "q/b.png" + " would overwrite the query " + dir / "out/b_overlay.png"));
    CHECK(read_file(dir / "out/b_overlay.png") == kept);
    CHECK(names_in(dir / "out") == std::set<std::string>{"b_overlay.png"});
    fs::remove(dir / "out/b_overlay.png");

    // --out in the support's labels/: a query named like an example would replace its label map.
    fs::copy_file(query, dir / "q/cell_01.png");
    const std::vector<uint8_t> label = read_file(dir / "support/labels/cell_01.png");
    const Run s = segment(dir, task + "--out " + quote(dir / "support/labels") + " " + quote(dir / "q/cell_01.png"));
    CHECK(s.rc == 1);
    CHECK_THAT(s.err, Contains(dir / "support/labels/cell_01.png" + ": the label map of " + dir / "q/cell_01.png" +
                               " would overwrite the support file " + dir / "support/labels/cell_01.png"));
    CHECK(read_file(dir / "support/labels/cell_01.png") == label);

    // The weights, saved where a probability file would go.
    fs::copy_file(kWeights, dir / "out/a_prob_1.npy");
    const Run w = segment(dir, "--weights " + quote(dir / "out/a_prob_1.npy") + " --size 16 --support " + quote(dir / "support") +
                                   " --probabilities npy" + out + quote(dir / "q/a.png"));
    CHECK(w.rc == 1);
    CHECK_THAT(w.err, Contains("would overwrite the weights " + dir / "out/a_prob_1.npy"));
    CHECK(read_file(dir / "out/a_prob_1.npy") == read_file(kWeights));
    fs::remove(dir / "out/a_prob_1.npy");

    // A file in --out that segment did not write: a colour PNG where a label map would go, a
    // directory where an overlay would.
    const std::vector<uint8_t> rgb(3 * 4 * 4, 200);
    save_png(dir / "out/a.png", std::vector<uint16_t>(rgb.begin(), rgb.end()), 4, 4, 3, 8);
    const std::vector<uint8_t> mine = read_file(dir / "out/a.png");
    const Run f = segment(dir, task + out + quote(dir / "q/a.png"));
    CHECK(f.rc == 1);
    CHECK_THAT(f.err, Contains(dir / "out/a.png: the label map of " + dir / "q/a.png" + " would overwrite a PNG of another kind"));
    CHECK(read_file(dir / "out/a.png") == mine);
    fs::remove(dir / "out/a.png");
    fs::create_directories(dir.path / "out/a_overlay.png");
    CHECK_THAT(segment(dir, task + "--overlay" + out + quote(dir / "q/a.png")).err, Contains("something that is not a file"));
    fs::remove(dir / "out/a_overlay.png");

    // Earlier outputs of the same names are replaced: a run repeated, then with probabilities added.
    REQUIRE(segment(dir, task + "--quiet --overlay" + out + quote(dir / "q/a.png")).rc == 0);
    REQUIRE(segment(dir, task + "--quiet --overlay --probabilities png" + out + quote(dir / "q/a.png")).rc == 0);
    CHECK(names_in(dir / "out") == std::set<std::string>{"a.png", "a_overlay.png", "a_prob_1.png", "a_prob_2.png"});

    // --out is checked before the weights are loaded (these do not exist).
    std::ofstream(dir / "file") << "x";
    for (const std::string& bad : {dir / "file", dir / "file/sub"}) {
        const Run o = segment(dir, "--weights " + quote(dir / "missing.pt") + " --size 16 --support " + quote(dir / "support") +
                                       " --out " + quote(bad) + " " + quote(dir / "q/a.png"));
        CHECK(o.rc == 1);
        CHECK_THAT(o.err, Contains(bad + ": --out must be a folder, and " + dir / "file" + " is a file"));
    }
}

TEST_CASE("segment names the cause before computing: label values a PNG cannot hold, --tile's lower bound", "[cli]") {
    TempDir dir("segearly");
    for (const char* d : {"s/images", "s/labels"}) fs::create_directories(dir.path / d);
    for (const char* n : {"a", "b"}) {  // labels 70000 in the middle of the last slices
        Volume img = load_nifti(kVolumes + "support/images/" + std::string(n) + ".nii.gz"), lab = img;
        for (size_t i = 0; i < lab.voxels.size(); ++i) lab.voxels[i] = i % size_t(lab.nx) > 10 && i > lab.voxels.size() / 2 ? 70000.0f : 0.0f;
        save_nifti(dir / ("s/images/" + std::string(n) + ".nii.gz"), img, kNiftiInt16);
        save_nifti(dir / ("s/labels/" + std::string(n) + ".nii.gz"), lab, kNiftiInt32);
    }
    const std::string base = "--weights " + quote(kWeights) + " --size 16 --flips 1 --support " + quote(dir / "s") + " --out " + quote(dir / "out") + " ";
    const Run r = segment(dir, base + quote(kCells + "queries/images/query_00.png"));
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains("label value 70000 cannot be saved in a PNG label map"));
    CHECK_THAT(r.err, Contains("query_00.png"));
    CHECK(r.out.empty());  // before calibrating, which the summary follows
    CHECK(!fs::exists(dir / "out"));
    // A volume's label map holds it.
    REQUIRE(segment(dir, base + "--quiet " + quote(kVolumes + "queries/q.nii.gz")).rc == 0);
    CHECK(load_nifti(dir / "out/q.nii.gz").header.datatype == kNiftiInt32);

    // --tile: at least 16 px, and an eighth of the model size; checked before the weights are read.
    const std::string q = quote(kCells + "queries/images/query_00.png");
    const std::string rest = " --weights " + quote(dir / "missing.pt") + " --support " + quote(kCells + "support") + " --out " + quote(dir / "o") + " " + q;
    const Run t = segment(dir, "--size 32 --tile 15" + rest);
    CHECK(t.rc == 1);
    CHECK_THAT(t.err, Contains("--tile 15: windows are at least 16 px at the model size 32x32"));
    CHECK_THAT(segment(dir, "--size 256 --tile 31" + rest).err, Contains("--tile 31: windows are at least 32 px"));
    CHECK_THAT(segment(dir, "--size 32 --tile 16" + rest).err, Contains("missing.pt"));  // allowed: on to the weights
}

TEST_CASE("segment: a query that fails leaves none of its outputs, the others are written", "[cli]") {
    // A file-size limit (ulimit -f, 512-byte blocks in dash, 1024 in bash; SIGXFSZ ignored so the
    // write fails instead) that a 4x4 query's outputs fit and a 256x256 noisy query's overlay does
    // not, while its label map does: the label map written first must be removed again.
    TempDir dir("segfail");
    const std::string task = small_task(dir);
    std::vector<uint16_t> noise(256 * 256);
    uint32_t x = 1;
    for (uint16_t& v : noise) x = x * 1664525u + 1013904223u, v = uint16_t(x >> 24);
    save_png(dir / "big.png", noise, 256, 256, 1, 8);
    save_png(dir / "small.png", std::vector<uint16_t>(noise.begin(), noise.begin() + 16), 4, 4, 1, 8);
    const std::string args = task + "--quiet --overlay --out " + quote(dir / "out") + " " + quote(dir / "big.png") + " " + quote(dir / "small.png");
    REQUIRE(segment(dir, args).rc == 0);  // without the limit, the sizes the test relies on
    REQUIRE(fs::file_size(dir / "out/big.png") < 20000);
    REQUIRE(fs::file_size(dir / "out/big_overlay.png") > 41000);
    REQUIRE(fs::file_size(dir / "out/small_overlay.png") < 20000);
    fs::remove_all(dir / "out");

    const Run r = segment(dir, args, "trap '' XFSZ; ulimit -f 40; ");
    CHECK(r.rc == 1);
    CHECK_THAT(r.err, Contains(dir / "big.png"));
    CHECK_THAT(r.err, Contains("1 of 2 queries failed"));
    CHECK(names_in(dir / "out") == std::set<std::string>{"small.png", "small_overlay.png"});  // no temporaries either
}

// Out of memory: a virtual-memory limit that the program and its support fit and an 8192x8192
// query does not. Not under the address sanitizer (its shadow memory needs terabytes of address
// space) or qemu (a guest's address space is reserved up front).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
TEST_CASE("segment: out of memory is reported as such, naming the query and its size", "[cli]") {
    TempDir dir("segoom");
    const std::string task = small_task(dir);
    std::vector<uint16_t> big(size_t(8192) * 8192);
    for (size_t i = 0; i < big.size(); ++i) big[i] = uint16_t((i % 8192) * 7 % 256);
    save_png(dir / "huge.png", big, 8192, 8192, 1, 8);
    big = {};
    const Run r = segment(dir, task + "--quiet --out " + quote(dir / "out") + " " + quote(dir / "huge.png"), "ulimit -v 700000; ");
    CHECK(r.rc == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    // Reading the image fits (where the limit strikes depends on the decoder and the allocator).
    CHECK_THAT(r.err, Contains("universeg segment: error: " + dir / "huge.png" + ": out of memory segmenting an image of 8192x8192"));
    CHECK(r.err.find("bad_alloc") == std::string::npos);
    CHECK(names_in(dir / "out").empty());
}
#endif

#endif  // UNIVERSEG_CLI
