// Few-shot segmentation through the library (universeg/segment/): the pipeline's pieces
// (support subsets, label maps, calibration, evidence, tiles, flips, ensembles) and the Segmenter
// API, which reproduces the outputs of segment before the API (tests/data/segment/reference,
// written by commit e64b259's program; see its README) byte for byte. The `segment` command
// itself is test_cli.cpp's. Uses the small golden custom model (tests/data/golden/
// custom_b1_s3_48x80, sizes multiples of 4) at small sizes to stay fast; the bundled weights on
// examples/data/cells are the [heavy] cases.
#include <universeg/io/nifti.hpp>
#include <universeg/segment/segment.hpp>
#include <universeg/universeg.hpp>


#include "segment_cases.hpp"

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

TEST_CASE("clean_regions keeps a label's largest region and fills its holes, and nothing else", "[segment]") {
    // Label 1: a ring of 8 around a hole (row 1, column 1) with a diagonal neighbour (row 3,
    // column 3: 8-connected, so part of it), a second ring of 8 around label 2 (row 1, column 6:
    // no hole of label 1's), a separate pair and two single pixels in row 4; the gaps of row 4
    // touch the border, so they are no holes either.
    const std::vector<float> map = {
        1, 1, 1, 0, 0, 1, 1, 1,  //
        1, 0, 1, 0, 0, 1, 2, 1,  //
        1, 1, 1, 0, 0, 1, 1, 1,  //
        0, 0, 0, 1, 0, 0, 0, 0,  //
        1, 1, 0, 0, 0, 1, 0, 1};
    std::vector<float> m = map;
    clean_regions(m.data(), 5, 8, 1.0f, 0.0f, kKeepLargest);
    const std::vector<float> largest = {
        1, 1, 1, 0, 0, 0, 0, 0,  //
        1, 0, 1, 0, 0, 0, 2, 0,  //
        1, 1, 1, 0, 0, 0, 0, 0,  //
        0, 0, 0, 1, 0, 0, 0, 0,  //
        0, 0, 0, 0, 0, 0, 0, 0};
    REQUIRE(m == largest);
    m = map;
    clean_regions(m.data(), 5, 8, 1.0f, 0.0f, kFillHoles);
    std::vector<float> filled = map;
    filled[1 * 8 + 1] = 1;
    REQUIRE(m == filled);
    m = map;
    clean_regions(m.data(), 5, 8, 1.0f, 0.0f, kKeepLargest | kFillHoles);
    std::vector<float> both = largest;
    both[1 * 8 + 1] = 1;
    REQUIRE(m == both);
    // Label index maps with -1 for none, as calibration scores them; an absent label changes nothing.
    std::vector<int64_t> idx = {-1, 0, -1, 0, -1, 0};
    clean_regions(idx.data(), 2, 3, int64_t(1), int64_t(-1), kKeepLargest | kFillHoles);
    REQUIRE(idx == std::vector<int64_t>{-1, 0, -1, 0, -1, 0});
}

TEST_CASE("calibration: regions chosen where they clearly raise the leave-one-out Dice", "[segment]") {
    // Two 4x4 images, one label, the true 2x2 block at the top left of each. The network finds
    // image 0's and a stray pixel at the far corner, and image 1's but for a corner (at the
    // border: no hole to fill). Offsets cannot move logits of +-5.
    std::vector<double> z(32, -5.0);
    std::vector<int64_t> y(32, -1);
    for (int64_t i = 0; i < 2; ++i)
        for (int64_t p : {0, 1, 4, 5}) y[size_t(i * 16 + p)] = 0, z[size_t(i * 16 + p)] = 5;
    z[15] = 5, z[16] = -5;
    CalibrationData d;
    d.n = 2, d.L = 1, d.start = {0, 16, 32}, d.rows = {4, 4}, d.cols = {4, 4};
    d.logits = z, d.truth = y, d.evidence.assign(32, 0.0);
    Task::Calibration c = fit_calibration(d);
    REQUIRE(c.offsets == std::vector<double>{0});
    const double before = c.dice_after;
    fit_regions(d, c);
    REQUIRE(c.regions == std::vector<int64_t>{kKeepLargest});  // filling adds nothing here
    REQUIRE(c.dice_after == Approx((1.0 + 6.0 / 7) / 2));
    REQUIRE(c.dice_after > before + kCalibrationTolerance);
    // A 3x3 ring with its centre missing in both images: filling its hole wins, the largest
    // region alone changes nothing, so kFillHoles (the simplest of the best) is chosen.
    std::fill(z.begin(), z.end(), -5.0), std::fill(y.begin(), y.end(), -1);
    for (int64_t i = 0; i < 2; ++i)
        for (int64_t p : {0, 1, 2, 4, 5, 6, 8, 9, 10}) y[size_t(i * 16 + p)] = 0, z[size_t(i * 16 + p)] = p == 5 ? -5 : 5;
    d.logits = z, d.truth = y;
    c = fit_calibration(d);
    fit_regions(d, c);
    REQUIRE(c.regions == std::vector<int64_t>{kFillHoles});
    REQUIRE(c.dice_after == 1);
    // Truth of two regions per image: keeping the largest would lose one, so nothing is chosen.
    std::fill(z.begin(), z.end(), -5.0), std::fill(y.begin(), y.end(), -1);
    for (int64_t i = 0; i < 2; ++i)
        for (int64_t p : {0, 15}) y[size_t(i * 16 + p)] = 0, z[size_t(i * 16 + p)] = 5;
    d.logits = z, d.truth = y;
    c = fit_calibration(d);
    fit_regions(d, c);
    REQUIRE(c.regions == std::vector<int64_t>{0});
    REQUIRE(c.dice_after == 1);
}

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

// One OpenMP thread while it lives: these tests run thousands of forward passes at 16 to 32 px,
// where starting and waiting for threads costs more than the work (on a loaded machine, far more).
struct OneThread {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
#endif
};


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

// Examples whose label is told from the rest by colour alone: label 1 is (1, 0, 0.5), the rest
// (0, 0.5, 0.5), and the grey is one value (their luma differ by 0.006, which min-max
// normalising would stretch apart), so grey evidence sees one intensity.
namespace {
Image colour_example(const std::vector<uint8_t>& labels, int64_t h, int64_t w) {
    Image img{h, w, std::vector<float>(size_t(h * w), 0.35f)};
    const float a[3] = {1.0f, 0.0f, 0.5f}, b[3] = {0.0f, 0.5f, 0.5f};
    for (int64_t c = 0; c < 3; ++c)
        for (int64_t p = 0; p < h * w; ++p) img.colour.push_back(labels[size_t(p)] ? a[c] : b[c]);
    return img;
}
}  // namespace

TEST_CASE("colour evidence: chosen where the examples are colour and it tells the label apart", "[segment]") {
    const OneThread one;
    Support support, grey;
    for (int i = 0; i < 5; ++i) {
        std::vector<uint8_t> lab = label_pattern(24, 24, i);
        for (uint8_t& v : lab) v = v != 0;
        Image labels{24, 24, std::vector<float>(lab.begin(), lab.end())};
        Image image = colour_example(lab, 24, 24);
        grey.add(Image{24, 24, image.pixels}, labels, "grey " + std::to_string(i));
        support.add(std::move(image), std::move(labels), "colour " + std::to_string(i));
    }
    std::vector<uint8_t> truth = label_pattern(24, 24, 9);
    for (uint8_t& v : truth) v = v != 0;
    const Image query = colour_example(truth, 24, 24);
    SegmenterOptions opt;
    opt.size = {16, 16};
    opt.flips = 1;
    // The classical classifier: colour bins where every example is colour, and it is exact.
    opt.histogram_baseline = true;
    const Segmentation h = Segmenter(model(), support, opt).segment(query);
    for (size_t p = 0; p < truth.size(); ++p) REQUIRE(h.labels.pixels[p] == float(truth[p]));
    opt.histogram_baseline = false;
    const Segmenter seg(model(), support, opt);
    REQUIRE(seg.task().calibration.colour);
    REQUIRE(seg.task().intensity[0].size() == size_t(kColourBins));
    REQUIRE(seg.task().calibration.dice_after > 0.99);
    const Segmentation s = seg.segment(query);
    for (size_t p = 0; p < truth.size(); ++p) REQUIRE(s.labels.pixels[p] == float(truth[p]));
    // A grey query in a colour task is R = G = B: still segmented, by its grey as colour.
    REQUIRE(seg.segment(Image{24, 24, query.pixels}).labels.pixels.size() == truth.size());
    // The same examples grey: no colour, and the record of a colour choice is refused there.
    const Segmenter without(model(), grey, opt);
    REQUIRE(!without.task().calibration.colour);
    REQUIRE(without.task().intensity[0].size() == size_t(kIntensityBins));
    CHECK_THAT(error_of([&] { Segmenter(model(), PreparedSupport(grey, opt), seg.calibrated()); }),
               Contains("it chose colour evidence, and these examples are not all colour"));
    // Colour planes that are not three of the image's size.
    Image bad = query;
    bad.colour.resize(10);
    CHECK_THAT(error_of([&] { seg.segment(bad); }), Contains("query: colour planes of 10 values for an image of 24x24"));
}

// Examples of two types whose label is told by intensity, oppositely: light on dark (type 0),
// dark on light (type 1). Pooled, the intensity evidence cannot tell the label; per type it can.
namespace {
Image typed_example(const std::vector<uint8_t>& labels, int64_t h, int64_t w, bool dark_on_light) {
    Image img{h, w, {}};
    for (uint8_t v : labels) img.pixels.push_back((v != 0) != dark_on_light ? 0.9f : 0.1f);
    return img;
}
}  // namespace

TEST_CASE("example types: two kinds of image told apart, each query segmented with its own kind", "[segment]") {
    const OneThread one;
    auto binary = [](int seed) {
        std::vector<uint8_t> lab = label_pattern(24, 24, seed);
        for (uint8_t& v : lab) v = v != 0;
        return lab;
    };
    auto add = [&](Support& s, int i, bool dark) {
        const std::vector<uint8_t> lab = binary(i);
        s.add(typed_example(lab, 24, 24, dark), Image{24, 24, std::vector<float>(lab.begin(), lab.end())}, "pair " + std::to_string(i));
    };
    Support support, one_kind, few;
    for (int i = 0; i < 10; ++i) add(support, i, i % 5 >= 3);  // pairs 3, 4, 8, 9 dark on light
    for (int i = 0; i < 10; ++i) add(one_kind, i, false);
    for (int i = 0; i < 10; ++i) add(few, i, i == 3 || i == 4 || i == 8);
    SegmenterOptions opt;
    opt.size = {16, 16};
    opt.flips = 1;
    // Split only where each kind has kMinTypeExamples examples and the kinds are well apart.
    const std::vector<Task::Type> types = example_types(PreparedSupport(support, opt).examples());
    REQUIRE(types.size() == 2);
    REQUIRE(types[0].examples == std::vector<int64_t>{0, 1, 2, 5, 6, 7});
    REQUIRE(types[1].examples == std::vector<int64_t>{3, 4, 8, 9});
    REQUIRE(example_types(PreparedSupport(one_kind, opt).examples()).empty());
    REQUIRE(example_types(PreparedSupport(few, opt).examples()).empty());

    const Segmenter seg(model(), support, opt);
    const Task& t = seg.task();
    REQUIRE(t.calibration.types);
    REQUIRE(t.calibration.dice_after > 0.99);
    REQUIRE(t.types.size() == 2);
    REQUIRE(t.types[1].members[0].indices == std::vector<int64_t>{3, 4, 8, 9});
    for (bool dark : {false, true}) {
        const std::vector<uint8_t> truth = binary(11);
        const Image query = typed_example(truth, 24, 24, dark);
        REQUIRE(query_type(t, query) == &t.types[dark ? 1 : 0]);
        const Segmentation s = seg.segment(query);
        for (size_t p = 0; p < truth.size(); ++p) REQUIRE(s.labels.pixels[p] == float(truth[p]));
    }
    // Windows never choose types (a window's intensities are not its image's).
    SegmenterOptions windows = opt;
    windows.tile = 16;
    REQUIRE(!Segmenter(model(), support, windows).task().calibration.types);
    // One kind: nothing to choose, and the record of the choice is refused there.
    REQUIRE(!Segmenter(model(), one_kind, opt).task().calibration.types);
    CHECK_THAT(error_of([&] { Segmenter(model(), PreparedSupport(one_kind, opt), seg.calibrated()); }),
               Contains("it chose example types, and these examples do not fall into two"));
    // The record given back segments alike.
    const Segmenter again(model(), PreparedSupport(support, opt), seg.calibrated());
    REQUIRE(again.task().types.size() == 2);
    const Image query = typed_example(binary(12), 24, 24, true);
    REQUIRE(again.segment(query).labels.pixels == seg.segment(query).labels.pixels);
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
