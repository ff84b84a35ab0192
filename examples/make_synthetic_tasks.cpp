// make_synthetic_tasks - writes labelled folders of synthetic tasks, for measuring how
// `universeg segment` and its options do across many kinds of task (bench/segment_tasks.sh).
//
//   universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777]
//
// OUT_DIR/taskNN_FAMILY/support/{images,labels}/im_NN.png   16 labelled examples
// OUT_DIR/taskNN_FAMILY/queries/{images,labels}/im_NN.png   4 images to segment, with their ground truth
//
// Task k is the trainer's generator (synth.hpp) drawn with seed SEED + k: a recipe, then 20
// images that follow it. The label maps keep every label of the recipe (1, 2, ...), so a task
// is often several binary tasks at once. The trainer draws its tasks from other seeds, so
// these recipes are new to the weights, though of the families they were trained on.
#include <universeg/io/image.hpp>
#include <universeg/synth.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
    if (argc < 2 || argc > 4) {
        std::fprintf(stderr, "usage: universeg_make_synthetic_tasks OUT_DIR [COUNT=24] [SEED=777]\n");
        return 2;
    }
    const std::string out = argv[1];
    const long count = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 24, seed = argc > 3 ? std::strtol(argv[3], nullptr, 10) : 777;
    if (count < 1 || count > 1000 || seed < 0) {
        std::fprintf(stderr, "make_synthetic_tasks: COUNT must be 1..1000 and SEED >= 0\n");
        return 2;
    }
    constexpr int64_t kSize = 128, kN = kSize * kSize, kSupports = 16, kQueries = 4;
    try {
        for (long k = 0; k < count; ++k) {
            const uint64_t task_seed = uint64_t(seed + k);
            universeg::Rng rng(universeg::seed_from({task_seed, 0x7A5Cull}));
            const universeg::TaskParams t = universeg::sample_task(rng, kSize);
            char name[64];
            std::snprintf(name, sizeof name, "task%02ld_%s", k, universeg::synth_family_name(t.family));
            const std::filesystem::path dir = std::filesystem::path(out) / name;
            for (int64_t i = 0; i < kSupports + kQueries; ++i) {
                universeg::Rng r(universeg::seed_from({task_seed, 0x1A6Eull, uint64_t(i)}));
                const universeg::synth::LabelMap m = universeg::synth::draw_member_labels(t, r);
                universeg::Image image{kSize, kSize, std::vector<float>(size_t(kN))}, labels{kSize, kSize, {}};
                universeg::synth::render(t, m, r, image.pixels.data());
                labels.pixels.assign(m.label.begin(), m.label.end());
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
