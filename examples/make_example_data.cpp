// make_example_data - writes the bundled example data set: synthetic microscopy-like images
// of cells with nuclei and their label maps (0 background, 1 cytoplasm, 2 nucleus).
//
//   universeg_make_example_data [OUT_DIR]     (default: examples/data/cells)
//
// OUT_DIR/support/{images,labels}/cell_NN.png   16 labelled examples
// OUT_DIR/queries/{images,labels}/query_NN.png  4 images to segment, with their ground truth
//
// Every image has its own size (120-160 px a side), illumination, cell count, shapes and
// noise, so the set exercises resizing and normalisation. The output is a pure function of
// the fixed seed (universeg::Rng is identical on every platform).
#include <universeg/io/image.hpp>
#include <universeg/core/random.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>

namespace {

struct Cell {
    double cx, cy, r, aspect, angle, nucleus, nx, ny;  // nucleus: radius fraction; nx, ny: its offset
    double wobble[3], phase[3];
    double brightness;
};

// Radius of a cell's boundary in direction t: an ellipse with a wobbly outline.
double boundary(const Cell& c, double t, double scale) {
    double r = c.r * scale;
    for (int k = 0; k < 3; ++k) r *= 1.0 + c.wobble[k] * std::sin((k + 2) * t + c.phase[k]);
    return r;
}

// Where pixel (x, y) lies relative to the cell: < 1 inside the scaled outline.
double inside(const Cell& c, double x, double y, double scale, double ox, double oy) {
    const double dx = x - c.cx - ox, dy = y - c.cy - oy;
    const double ca = std::cos(c.angle), sa = std::sin(c.angle);
    const double u = dx * ca + dy * sa, v = (-dx * sa + dy * ca) * c.aspect;
    return std::hypot(u, v) / boundary(c, std::atan2(v, u), scale);
}

void make_image(universeg::Rng& rng, int64_t H, int64_t W, universeg::Image& img, universeg::Image& labels) {
    std::vector<Cell> cells;
    const int want = int(rng.between(4, 8));
    for (int attempt = 0; attempt < 400 && int(cells.size()) < want; ++attempt) {
        Cell c;
        c.r = rng.uniform(13, 22);
        c.cx = rng.uniform(c.r, double(W) - c.r);
        c.cy = rng.uniform(c.r, double(H) - c.r);
        bool free = true;
        for (const Cell& o : cells) free &= std::hypot(c.cx - o.cx, c.cy - o.cy) > 1.15 * (c.r + o.r);
        if (!free) continue;
        c.aspect = rng.uniform(1.0, 1.6);
        c.angle = rng.uniform(0, 3.14159265);
        c.nucleus = rng.uniform(0.35, 0.5);
        c.nx = rng.uniform(-0.2, 0.2) * c.r;
        c.ny = rng.uniform(-0.2, 0.2) * c.r;
        for (int k = 0; k < 3; ++k) c.wobble[k] = rng.uniform(0, 0.07), c.phase[k] = rng.uniform(0, 6.2831853);
        c.brightness = rng.uniform(0.85, 1.15);
        cells.push_back(c);
    }
    const double bg = rng.uniform(0.08, 0.2), gx = rng.uniform(-0.1, 0.1), gy = rng.uniform(-0.1, 0.1);
    const double cyto = rng.uniform(0.4, 0.55), nuc = rng.uniform(0.75, 0.9), noise = 0.008;
    std::vector<double> raw(size_t(H * W));
    labels = {H, W, std::vector<float>(size_t(H * W), 0.0f)};
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            double v = bg + gx * (double(x) / double(W) - 0.5) + gy * (double(y) / double(H) - 0.5);
            float lab = 0;
            for (const Cell& c : cells) {
                const double d = inside(c, double(x), double(y), 1.0, 0, 0);
                if (d >= 1.0) continue;
                const double texture = 0.04 * std::sin(0.7 * double(x) + c.phase[0]) * std::sin(0.6 * double(y) + c.phase[1]);
                v = c.brightness * (cyto + texture - 0.1 * d * d);  // dimmer towards the rim
                lab = 1;
                if (inside(c, double(x), double(y), c.nucleus, c.nx, c.ny) < 1.0) v = c.brightness * nuc, lab = 2;
            }
            raw[size_t(y * W + x)] = v;
            labels.pixels[size_t(y * W + x)] = lab;
        }
    // A 3x3 box blur softens the edges the way optics do, then sensor noise.
    img = {H, W, std::vector<float>(size_t(H * W))};
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            double s = 0;
            int n = 0;
            for (int64_t yy = std::max<int64_t>(0, y - 1); yy <= std::min(H - 1, y + 1); ++yy)
                for (int64_t xx = std::max<int64_t>(0, x - 1); xx <= std::min(W - 1, x + 1); ++xx) s += raw[size_t(yy * W + xx)], ++n;
            img.pixels[size_t(y * W + x)] = float(std::clamp(s / n + noise * rng.normal(), 0.0, 1.0));
        }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::filesystem::path out = argc > 1 ? argv[1] : "examples/data/cells";
        universeg::Rng rng(20230601);
        const struct { const char* part; const char* prefix; int count; } sets[] = {{"support", "cell", 16}, {"queries", "query", 4}};
        for (const auto& set : sets)
            for (const char* sub : {"images", "labels"}) std::filesystem::create_directories(out / set.part / sub);
        for (const auto& set : sets)
            for (int i = 0; i < set.count; ++i) {
                const int64_t H = 8 * rng.between(15, 20), W = 8 * rng.between(15, 20);
                universeg::Image img, labels;
                make_image(rng, H, W, img, labels);
                char name[64];
                std::snprintf(name, sizeof name, "%s_%02d.png", set.prefix, i);
                universeg::save_image_png((out / set.part / "images" / name).string(), img, 8);
                universeg::save_label_png((out / set.part / "labels" / name).string(), labels);
            }
        std::printf("wrote %s\n", out.string().c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_example_data: error: %s\n", e.what());
        return 1;
    }
}
