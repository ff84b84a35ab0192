// make_synthetic_tasks - writes labelled folders of synthetic tasks, for measuring how
// `universeg segment` and its options do across many kinds of task (bench/segment_tasks.sh).
//
//   universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777] [TILES=1] [LAYOUT=mosaic]
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
// resolution, as in microscopy, which the model sees shrunk to 128 px. LAYOUT wide: instead,
// every image is one continuous field TILES times the side with TILES x TILES times the objects
// (their size in pixels kept), as a microscope's larger field of view; only the families where
// that is what a larger image means are drawn (cells and blobs: task k is then the k-th such
// recipe from seed SEED on).
#include <universeg/io/image.hpp>
#include <universeg/train/synth.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
    if (argc < 2 || argc > 6) {
        std::fprintf(stderr, "usage: universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777] [TILES=1] [LAYOUT=mosaic|wide]\n");
        return 2;
    }
    const std::string layout = argc > 5 ? argv[5] : "mosaic";
    const std::string out = argv[1];
    const long count = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 24, seed = argc > 3 ? std::strtol(argv[3], nullptr, 10) : 777,
               tiles = argc > 4 ? std::strtol(argv[4], nullptr, 10) : 1;
    if (count < 1 || count > 1000 || seed < 0 || tiles < 1 || tiles > 16 || (layout != "mosaic" && layout != "wide")) {
        std::fprintf(stderr, "make_synthetic_tasks: COUNT must be 1..1000, SEED >= 0, TILES 1..16 and LAYOUT mosaic or wide\n");
        return 2;
    }
    const bool wide = layout == "wide";
    constexpr int64_t kSize = 128, kSupports = 16, kQueries = 4;
    const int64_t side = kSize * tiles;
    try {
        for (long k = 0, next = seed; k < count; ++k) {
            uint64_t task_seed;
            universeg::TaskParams t;
            do {
                task_seed = uint64_t(next++);
                universeg::Rng rng(universeg::seed_from({task_seed, 0x7A5Cull}));
                t = universeg::sample_task(rng, kSize);
            } while (wide && t.family != universeg::SynthFamily::Cells && t.family != universeg::SynthFamily::Blobs);
            universeg::TaskParams field = t;  // wide: the recipe over a TILES times larger field
            field.size = side;
            field.count = t.count * double(tiles * tiles);
            const universeg::TaskParams& recipe = wide ? field : t;
            const int64_t member = wide ? side : kSize, per_side = wide ? 1 : tiles;  // members: per_side x per_side
            char name[64];
            std::snprintf(name, sizeof name, "task%02ld_%s", k, universeg::synth_family_name(t.family));
            const std::filesystem::path dir = std::filesystem::path(out) / name;
            for (int64_t i = 0; i < kSupports + kQueries; ++i) {
                universeg::Image image{side, side, std::vector<float>(size_t(side * side))}, labels = image;
                std::vector<float> tile(static_cast<size_t>(member * member));
                for (int64_t k = 0; k < per_side * per_side; ++k) {  // one member keeps the seeds of the 128-px form
                    universeg::Rng r(per_side == 1 ? universeg::seed_from({task_seed, 0x1A6Eull, uint64_t(i)})
                                                   : universeg::seed_from({task_seed, 0x1A6Eull, uint64_t(i), uint64_t(k)}));
                    const universeg::synth::LabelMap m = universeg::synth::draw_member_labels(recipe, r);
                    universeg::synth::render(recipe, m, r, tile.data());
                    const int64_t y0 = k / per_side * member, x0 = k % per_side * member;
                    for (int64_t y = 0; y < member; ++y)
                        for (int64_t x = 0; x < member; ++x) {
                            image.pixels[size_t((y0 + y) * side + x0 + x)] = tile[size_t(y * member + x)];
                            labels.pixels[size_t((y0 + y) * side + x0 + x)] = float(m.label[size_t(y * member + x)]);
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
