// universeg/folder_tasks.hpp - training tasks from labelled image folders (DIR/images/NAME.ext
// with DIR/labels/NAME.png): every non-zero label value of a folder is a binary task, and
// several folders pool their tasks. Tasks get the same augmentations as synthetic ones: task
// augmentation shared by all images of a task (flips, boundaries instead of regions,
// intensity inversion, edge-filtered images) and per-image augmentation (affine, elastic,
// gamma, noise).
//
//   FolderTasks data = load_folder_tasks({"data/a", "data/b"}, 128);
//   Batch b = folder_batch(data, seed, step, B, S);                 // pure function of (seed, step)
//   Batch e = folder_split_batch(data, task, supports, query);       // no augmentation (evaluation)
//
// Needs io/image.hpp, so a program using it compiles stb once (UNIVERSEG_STB_IMPLEMENTATION).
#pragma once

#include "../io/image.hpp"
#include "synth.hpp"

#include <map>
#include <string>
#include <vector>

namespace universeg {

struct FolderTask {
    std::string folder;
    int64_t value = 0;               // the label value that is foreground
    std::vector<int64_t> images;     // indices (into FolderTasks) of images that show it
};

struct FolderTasks {
    int64_t size = 0;
    std::vector<std::string> names;             // "folder/NAME"
    std::vector<std::vector<float>> images;     // size*size, min-max normalised to [0,1]
    std::vector<std::vector<float>> labels;     // size*size raw label values
    std::vector<FolderTask> tasks;
};

// Loads every pair of every folder at size x size (images normalised then resized bilinearly,
// label maps resized by nearest neighbour). A label value present in fewer than two images
// cannot make a support/query pair and is skipped.
inline FolderTasks load_folder_tasks(const std::vector<std::string>& dirs, int64_t size) {
    FolderTasks d;
    d.size = size;
    for (const std::string& dir : dirs) {
        std::map<int64_t, std::vector<int64_t>> by_value;
        for (const LabelledPair& p : list_labelled_folder(dir)) {
            Image img = load_image(p.image_path);
            const Image lab = load_label_map(p.label_path);
            if (img.height != lab.height || img.width != lab.width)
                throw Error(p.label_path + ": label map is " + std::to_string(lab.height) + "x" + std::to_string(lab.width) +
                            " but its image is " + std::to_string(img.height) + "x" + std::to_string(img.width));
            normalize_min_max(img);
            const int64_t index = int64_t(d.images.size());
            d.names.push_back(dir + "/" + p.name);
            d.images.push_back(resize_bilinear(img, size, size).pixels);
            d.labels.push_back(resize_nearest(lab, size, size).pixels);
            std::map<int64_t, bool> seen;
            for (float v : d.labels.back())
                if (v > 0) seen[int64_t(v)] = true;
            for (const auto& kv : seen) by_value[kv.first].push_back(index);
        }
        for (const auto& kv : by_value)
            if (kv.second.size() >= 2) d.tasks.push_back({dir, kv.first, kv.second});
    }
    if (d.tasks.empty())
        throw Error("--data: no label value appears in two or more images of the folders given, so there is no task");
    return d;
}

namespace detail {

// Fills image/label slot `i` of a batch from folder image `index`, foreground = `value`.
inline void folder_sample(const FolderTasks& d, int64_t index, int64_t value, const TaskParams* aug, Rng* rng,
                          float* image, float* label) {
    const int64_t n = d.size, N = n * n;
    std::vector<float> img = d.images[size_t(index)], lab(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) lab[size_t(i)] = d.labels[size_t(index)][size_t(i)] == float(value) ? 1.0f : 0.0f;
    if (aug) {
        const TaskParams& t = *aug;
        const synth::Warp w = synth::sample_warp(*rng, n, t.flip_y, t.flip_x, t.transpose, t.rotate, t.zoom, t.shift,
                                                 t.elastic, t.elastic_scale);
        img = synth::warp_bilinear(img, w);
        lab = synth::warp_nearest(lab, w);
        const double gamma = std::exp(rng->uniform(-0.3, 0.3)), noise = t.noise * rng->uniform(0.5, 1.5);
        for (float& v : img) v = float(std::pow(double(std::max(0.0f, v)), gamma) + noise * rng->normal());
        if (t.edges) img = synth::sobel(img, n);
        synth::normalize01(img);
        if (t.invert)
            for (float& v : img) v = 1 - v;
        if (t.outline) lab = synth::boundary(lab, n, t.outline_width);
    }
    std::copy(img.begin(), img.end(), image);
    std::copy(lab.begin(), lab.end(), label);
}

}  // namespace detail

// B tasks drawn from the folders, each one query and S supports from the images that show
// the task's label (repeats allowed when there are too few; augmentation makes them differ).
// With task_augmentation false (fine-tuning to the folder's own tasks) only mild per-image
// geometry and intensity changes are applied, no flips, inversion, edges or outlines.
inline Batch folder_batch(const FolderTasks& d, uint64_t seed, int64_t step, int64_t B, int64_t S,
                          bool task_augmentation = true) {
    const int64_t n = d.size, N = n * n;
    Batch b = Batch::zeros(B, S, n, n);
    for (int64_t t = 0; t < B; ++t) {
        Rng rng(seed_from({seed, uint64_t(step), uint64_t(t), 0xF01Dull}));
        const FolderTask& task = d.tasks[size_t(rng.below(int64_t(d.tasks.size())))];
        TaskParams aug = sample_task(rng, n);  // its task augmentations, milder geometry and noise
        aug.rotate = std::min(aug.rotate, 0.3), aug.zoom = std::min(aug.zoom, 0.15), aug.shift = 0.03;
        aug.noise = std::min(aug.noise, 0.03);
        if (!task_augmentation) {
            aug.flip_y = aug.flip_x = aug.transpose = aug.invert = aug.edges = aug.outline = false;
            aug.rotate = std::min(aug.rotate, 0.15);
        }
        // The query first, then supports without repeats while the pool lasts.
        std::vector<int64_t> pool = task.images;
        const int64_t m = int64_t(pool.size());
        for (int64_t i = 0; i <= S; ++i) {
            int64_t index;
            if (i < m) {
                std::swap(pool[size_t(i)], pool[size_t(i + rng.below(m - i))]);
                index = pool[size_t(i)];
            } else {
                index = pool[size_t(1 + rng.below(m - 1))];  // never the query's image
            }
            float* img = i == 0 ? b.query.data() + t * N : b.support_images.data() + (t * S + i - 1) * N;
            float* lab = i == 0 ? b.query_labels.data() + t * N : b.support_labels.data() + (t * S + i - 1) * N;
            detail::folder_sample(d, index, task.value, &aug, &rng, img, lab);
        }
    }
    return b;
}

// One evaluation problem without augmentation: the given support images and query images
// (indices into d) for label `value`; B = number of queries, every query sees the same supports.
inline Batch folder_split_batch(const FolderTasks& d, int64_t value, const std::vector<int64_t>& supports,
                                const std::vector<int64_t>& queries) {
    const int64_t n = d.size, N = n * n, S = int64_t(supports.size()), B = int64_t(queries.size());
    Batch b = Batch::zeros(B, S, n, n);
    for (int64_t q = 0; q < B; ++q) {
        detail::folder_sample(d, queries[size_t(q)], value, nullptr, nullptr, b.query.data() + q * N,
                              b.query_labels.data() + q * N);
        for (int64_t i = 0; i < S; ++i)
            detail::folder_sample(d, supports[size_t(i)], value, nullptr, nullptr, b.support_images.data() + (q * S + i) * N,
                                  b.support_labels.data() + (q * S + i) * N);
    }
    return b;
}

}  // namespace universeg
