// Shared by test_segment.cpp (the Segmenter API) and test_cli.cpp (the segment command): the
// paths of the test data, the synthetic image and label patterns, and the reference cases of
// tests/data/segment/cases.txt.
#pragma once

#include "test_util.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace test {

inline const std::string kData = std::string(UNIVERSEG_TEST_DATA) + "/";
// The golden custom model: three encoder blocks, so sizes must be multiples of 4.
inline const std::string kWeights = kData + "golden/custom_b1_s3_48x80/weights.pt";
inline const std::string kRoot = kData + "../../";  // the repository: cases.txt's paths start there
inline const std::string kCells = kRoot + "examples/data/cells/";
inline const std::string kVolumes = kData + "segment/volumes/";

inline const universeg::Model& model() {
    static const universeg::Model m = universeg::load_model(kWeights);
    return m;
}

// A grey test image: smooth gradient plus a bright disc, values spanning 0..255.
inline std::vector<uint8_t> grey_pattern(int h, int w, int seed) {
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
inline std::vector<uint8_t> label_pattern(int h, int w, int seed) {
    std::vector<uint8_t> p(size_t(h * w), 0);
    for (int y = h / 4; y < 3 * h / 4; ++y)
        for (int x = 0; x < w; ++x) {
            if (x >= w / 8 + seed % 3 && x < w / 3) p[size_t(y * w + x)] = 3;
            if (x >= w / 2 && x < 7 * w / 8 - seed % 2) p[size_t(y * w + x)] = 7;
        }
    return p;
}

inline std::vector<uint8_t> to_rgb(const std::vector<uint8_t>& g) {
    std::vector<uint8_t> c;
    for (size_t i = 0; i < g.size(); ++i) c.insert(c.end(), {g[i], uint8_t(255 - g[i]), uint8_t(g[i] / 2)});
    return c;
}

// tests/data/segment/cases.txt: a name and segment's arguments per line.
struct ReferenceCase {
    std::string name;
    std::vector<std::string> args;
};

inline std::vector<ReferenceCase> reference_cases() {
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

}  // namespace test
