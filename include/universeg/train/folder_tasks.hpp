// universeg/folder_tasks.hpp - training tasks from labelled image folders (DIR/images/NAME.ext
// with DIR/labels/NAME.png), one folder per data set. Every step draws a task as the UniverSeg
// paper does: a data set (uniformly over folders, so a folder with many labels or images does
// not crowd out the others), then one of its label values or, where it has several, their
// union, then a query and supports among the images showing it. Images of one source (the
// slices of one volume, named by DIR/sources.csv) never support a query of that source.
// Tasks get the same augmentations as synthetic ones: task augmentation shared by all images
// of a task (flips, boundaries instead of regions, intensity inversion, edge-filtered images,
// blur) and per-image augmentation (affine, elastic, gamma, noise).
//
//   FolderTasks data = load_folder_tasks({"data/a", "data/b"}, 128);
//   FolderDraw t = draw_folder_task(data, rng, S);                  // which images, which labels
//   Batch b = folder_batch(data, seed, step, B, S);                 // pure function of (seed, step)
//   Batch e = folder_split_batch(data, value, supports, query);      // no augmentation (evaluation)
//
// Needs io/image.hpp, so a program using it compiles stb once (UNIVERSEG_STB_IMPLEMENTATION).
#pragma once

#include "../io/image.hpp"
#include "synth.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace universeg {

struct FolderTask {
    std::string folder;
    int64_t value = 0;               // the label value that is foreground
    std::vector<int64_t> images;     // indices (into FolderTasks) of images that show it, ascending
};

struct FolderTasks {
    int64_t size = 0;
    std::vector<std::string> names;             // "folder/NAME"
    std::vector<std::vector<float>> images;     // size*size, min-max normalised to [0,1]
    std::vector<std::vector<float>> labels;     // size*size raw label values
    std::vector<int64_t> sources;               // per image: its source; the slices of a volume share one
    std::vector<FolderTask> tasks;
};

// DIR/sources.csv, when present: "id,source[,note]" per pair after a header line; pairs with
// the same source (the slices of one volume) are one source. Returns id -> source.
inline std::map<std::string, std::string> read_sources_csv(const std::string& dir) {
    std::map<std::string, std::string> out;
    std::ifstream in(std::filesystem::path(dir) / "sources.csv");
    std::string line;
    for (bool header = true; std::getline(in, line); header = false) {
        const size_t a = line.find(',');
        if (header || a == std::string::npos) continue;
        const size_t b = line.find(',', a + 1);
        out[line.substr(0, a)] = line.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    }
    return out;
}

// Whether `images` come from two or more sources: what a task needs to pair a query with
// supports from other sources.
inline bool spans_two_sources(const FolderTasks& d, const std::vector<int64_t>& images) {
    for (int64_t i : images)
        if (d.sources[size_t(i)] != d.sources[size_t(images[0])]) return true;
    return false;
}

// Loads every pair of every folder at size x size (images normalised then resized bilinearly,
// label maps resized by nearest neighbour). A label value shown by images of fewer than two
// sources cannot make a support/query pair and is skipped.
inline FolderTasks load_folder_tasks(const std::vector<std::string>& dirs, int64_t size) {
    FolderTasks d;
    d.size = size;
    std::map<std::string, int64_t> source_ids;  // "dir|source" -> index
    for (const std::string& dir : dirs) {
        const std::map<std::string, std::string> csv = read_sources_csv(dir);
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
            const auto it = csv.find(p.name);
            const std::string key = dir + "|" + (it == csv.end() ? "pair " + p.name : it->second);
            d.sources.push_back(source_ids.emplace(key, int64_t(source_ids.size())).first->second);
            std::map<int64_t, bool> seen;
            for (float v : d.labels.back())
                if (v > 0) seen[int64_t(v)] = true;
            for (const auto& kv : seen) by_value[kv.first].push_back(index);
        }
        for (const auto& kv : by_value)
            if (spans_two_sources(d, kv.second)) d.tasks.push_back({dir, kv.first, kv.second});
    }
    if (d.tasks.empty())
        throw Error("--data: no label value appears in images of two or more sources of the folders given, so there is no task");
    return d;
}

// One training task's draw: the label values that are foreground, a query and S supports
// (indices into FolderTasks).
struct FolderDraw {
    std::vector<int64_t> values;
    int64_t query = 0;
    std::vector<int64_t> supports;
};

// Draws a folder uniformly among those with tasks; then, where it has several label values,
// their union half the time and else one value uniformly (the union teaches "everything
// labelled": the whole hippocampus, any lesion whatever its diagnosis); then a query among the
// images showing it and S supports among those of other sources, without repeats while they
// last.
inline FolderDraw draw_folder_task(const FolderTasks& d, Rng& rng, int64_t S) {
    std::vector<std::string> folders;
    for (const FolderTask& t : d.tasks)
        if (std::find(folders.begin(), folders.end(), t.folder) == folders.end()) folders.push_back(t.folder);
    const std::string& folder = folders[size_t(rng.below(int64_t(folders.size())))];
    std::vector<const FolderTask*> own;
    for (const FolderTask& t : d.tasks)
        if (t.folder == folder) own.push_back(&t);
    FolderDraw draw;
    std::vector<int64_t> images;
    if (own.size() > 1 && rng.chance(0.5)) {
        std::set<int64_t> all;
        for (const FolderTask* t : own) {
            draw.values.push_back(t->value);
            all.insert(t->images.begin(), t->images.end());
        }
        images.assign(all.begin(), all.end());
    } else {
        const FolderTask& t = *own[size_t(rng.below(int64_t(own.size())))];
        draw.values = {t.value};
        images = t.images;
    }
    draw.query = images[size_t(rng.below(int64_t(images.size())))];
    std::vector<int64_t> pool;
    for (int64_t i : images)
        if (d.sources[size_t(i)] != d.sources[size_t(draw.query)]) pool.push_back(i);
    const int64_t m = int64_t(pool.size());  // >= 1: every task spans two sources
    for (int64_t i = 0; i < S; ++i) {
        if (i < m) std::swap(pool[size_t(i)], pool[size_t(i + rng.below(m - i))]);
        draw.supports.push_back(pool[size_t(i < m ? i : rng.below(m))]);
    }
    return draw;
}

namespace detail {

// Fills image/label slot `i` of a batch from folder image `index`, foreground = any of `values`.
inline void folder_sample(const FolderTasks& d, int64_t index, const std::vector<int64_t>& values, const TaskParams* aug,
                          Rng* rng, float* image, float* label) {
    const int64_t n = d.size, N = n * n;
    std::vector<float> img = d.images[size_t(index)], lab(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) {
        const int64_t v = int64_t(d.labels[size_t(index)][size_t(i)]);
        lab[size_t(i)] = v > 0 && std::find(values.begin(), values.end(), v) != values.end() ? 1.0f : 0.0f;
    }
    if (aug) {
        const TaskParams& t = *aug;
        const synth::Warp w = synth::sample_warp(*rng, n, t.flip_y, t.flip_x, t.transpose, t.rotate, t.zoom, t.shift,
                                                 t.elastic, t.elastic_scale);
        img = synth::warp_bilinear(img, w);
        lab = synth::warp_nearest(lab, w);
        const double gamma = std::exp(rng->uniform(-0.3, 0.3)), noise = t.noise * rng->uniform(0.5, 1.5);
        if (t.blur > 0) synth::blur(img, n, t.blur);
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

// B tasks drawn from the folders (draw_folder_task); repeated supports, where a task has too
// few images, differ by their augmentation. With task_augmentation false (fine-tuning to the
// folder's own tasks) only mild per-image geometry and intensity changes are applied, no
// flips, inversion, edges or outlines. Task t depends on (seed, step, t) alone: the batch holds
// tasks first .. first + B - 1 of the step (a process's share of it, train/distributed.hpp).
inline Batch folder_batch(const FolderTasks& d, uint64_t seed, int64_t step, int64_t B, int64_t S,
                          bool task_augmentation = true, int64_t first = 0) {
    const int64_t n = d.size, N = n * n;
    Batch b = Batch::zeros(B, S, n, n);
    for (int64_t t = 0; t < B; ++t) {
        Rng rng(seed_from({seed, uint64_t(step), uint64_t(first + t), 0xF01Dull}));
        const FolderDraw draw = draw_folder_task(d, rng, S);
        TaskParams aug = sample_task(rng, n);  // its task augmentations, milder geometry and noise
        aug.rotate = std::min(aug.rotate, 0.3), aug.zoom = std::min(aug.zoom, 0.15), aug.shift = 0.03;
        aug.noise = std::min(aug.noise, 0.03);
        aug.blur = rng.chance(0.2) ? rng.uniform(0.3, 1.0) : 0.0;  // pixels; more would erase one-pixel vessels
        if (!task_augmentation) {
            aug.flip_y = aug.flip_x = aug.transpose = aug.invert = aug.edges = aug.outline = false;
            aug.rotate = std::min(aug.rotate, 0.15), aug.blur = 0;
        }
        detail::folder_sample(d, draw.query, draw.values, &aug, &rng, b.query.data() + t * N, b.query_labels.data() + t * N);
        for (int64_t i = 0; i < S; ++i)
            detail::folder_sample(d, draw.supports[size_t(i)], draw.values, &aug, &rng,
                                  b.support_images.data() + (t * S + i) * N, b.support_labels.data() + (t * S + i) * N);
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
        detail::folder_sample(d, queries[size_t(q)], {value}, nullptr, nullptr, b.query.data() + q * N,
                              b.query_labels.data() + q * N);
        for (int64_t i = 0; i < S; ++i)
            detail::folder_sample(d, supports[size_t(i)], {value}, nullptr, nullptr, b.support_images.data() + (q * S + i) * N,
                                  b.support_labels.data() + (q * S + i) * N);
    }
    return b;
}

}  // namespace universeg
