// make_synthetic_tasks - writes labelled folders of synthetic tasks, for measuring how
// `universeg segment` and its options do across many kinds of task (bench/segment_tasks.sh).
//
//   universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777] [TILES=1]
//
// OUT_DIR/taskNN_FAMILY/support/{images,labels}/im_NN.png   16 labelled examples
// OUT_DIR/taskNN_FAMILY/queries/{images,labels}/im_NN.png   4 images to segment, with their ground truth
//
// Task k is the trainer's generator (synth.hpp) drawn with seed SEED + k: a recipe, then 20
// images that follow it. The label maps keep every label of the recipe (1, 2, ...), so a task
// is often several binary tasks at once. The trainer draws its tasks from other seeds, so
// these recipes are new to the weights, though of the families they were trained on.
//
// With TILES > 1 every image is a TILES x TILES mosaic of members of the task (128 px each), so
// its objects keep their size in pixels while the image grows: many small objects at high
// resolution, as in microscopy, which the model sees shrunk to 128 px.
#include <universeg/io/image.hpp>
#include <universeg/synth.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
    if (argc < 2 || argc > 5) {
        std::fprintf(stderr, "usage: universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777] [TILES=1]\n");
        return 2;
    }
    const std::string out = argv[1];
    const long count = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 24, seed = argc > 3 ? std::strtol(argv[3], nullptr, 10) : 777,
               tiles = argc > 4 ? std::strtol(argv[4], nullptr, 10) : 1;
    if (count < 1 || count > 1000 || seed < 0 || tiles < 1 || tiles > 16) {
        std::fprintf(stderr, "make_synthetic_tasks: COUNT must be 1..1000, SEED >= 0 and TILES 1..16\n");
        return 2;
    }
    constexpr int64_t kSize = 128, kN = kSize * kSize, kSupports = 16, kQueries = 4;
    const int64_t side = kSize * tiles;
    try {
        for (long k = 0; k < count; ++k) {
            const uint64_t task_seed = uint64_t(seed + k);
            universeg::Rng rng(universeg::seed_from({task_seed, 0x7A5Cull}));
            const universeg::TaskParams t = universeg::sample_task(rng, kSize);
            char name[64];
            std::snprintf(name, sizeof name, "task%02ld_%s", k, universeg::synth_family_name(t.family));
            const std::filesystem::path dir = std::filesystem::path(out) / name;
            for (int64_t i = 0; i < kSupports + kQueries; ++i) {
                universeg::Image image{side, side, std::vector<float>(size_t(side * side))}, labels = image;
                std::vector<float> tile(static_cast<size_t>(kN));
                for (int64_t k = 0; k < tiles * tiles; ++k) {  // one tile keeps the seeds of the single-member form
                    universeg::Rng r(tiles == 1 ? universeg::seed_from({task_seed, 0x1A6Eull, uint64_t(i)})
                                                : universeg::seed_from({task_seed, 0x1A6Eull, uint64_t(i), uint64_t(k)}));
                    const universeg::synth::LabelMap m = universeg::synth::draw_member_labels(t, r);
                    universeg::synth::render(t, m, r, tile.data());
                    const int64_t y0 = k / tiles * kSize, x0 = k % tiles * kSize;
                    for (int64_t y = 0; y < kSize; ++y)
                        for (int64_t x = 0; x < kSize; ++x) {
                            image.pixels[size_t((y0 + y) * side + x0 + x)] = tile[size_t(y * kSize + x)];
                            labels.pixels[size_t((y0 + y) * side + x0 + x)] = float(m.label[size_t(y * kSize + x)]);
                        }
                }
                const std::filesystem::path part = dir / (i < kSupports ? "support" : "queries");
                std::filesystem::create_directories(part / "images");
                std::filesystem::create_directories(part / "labels");
                char file[32];
                std::snprintf(file, sizeof file, "im_%02lld.png", (long long)i);
                universeg::save_image_png((part / "images" / file).string(), image, 8);
                universeg::save_label_png((part / "labels" / file).string(), labels);
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_synthetic_tasks: %s\n", e.what());
        return 1;
    }
    std::printf("wrote %ld tasks to %s\n", count, out.c_str());
    return 0;
}
