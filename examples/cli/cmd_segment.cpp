// universeg segment / eval: few-shot segmentation of image files and volumes with a folder of
// labelled examples, and Dice/IoU of label maps against ground truth.
#include "cli.hpp"

#include <universeg/io/nifti.hpp>
#include <universeg/segment/segment.hpp>
#include <universeg/train/train.hpp>
#include <universeg/universeg.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

namespace fs = std::filesystem;

namespace cli {

namespace {

const char* kSegmentUsage =
    "usage: universeg segment --support DIR --out DIR [options] QUERY...\n"
    "\n"
    "Segments each QUERY (an image, a NIfTI volume, or a folder of them) like the labelled examples\n"
    "in DIR/images/NAME.ext + DIR/labels/NAME.png (matching names; the nnU-Net layout). Every distinct\n"
    "non-zero label value is its own task; the output label map uses the same values.\n"
    "\n"
    "  --support DIR        labelled examples: images/ and labels/ (PNG, JPEG, BMP, TGA, PGM/PPM, or\n"
    "                       NIfTI .nii/.nii.gz volumes whose labelled slices become examples)\n"
    "  --out DIR            writes DIR/NAME.png (label map at the query's size; NIfTI in, NIfTI out)\n"
    "  --weights W          UniverSeg weights (.pt or .safetensors); default: the bundled weights\n"
    "  --size N | HxW       model working size (default: the weights' image_size, else 128)\n"
    "  --threshold T        a pixel gets the most probable label above T, else 0 (default 0.5)\n"
    "  --no-calibration     use the network's probabilities as they are (see Calibration below)\n"
    "  --histogram-baseline segment with the classical per-task intensity-histogram classifier built\n"
    "                       from the same examples instead of the network, for comparison\n"
    "  --label V            segment only label value V\n"
    "  --support-size S     examples per prediction, a seeded random subset (default: all, at most 64)\n"
    "  --ensemble K         average the probabilities over K different subsets (default 1)\n"
    "  --seed N             picks the subsets (default 0)\n"
    "  --flips F            1, 2 or 4: average over the task as is, mirrored left-right (2) and also\n"
    "                       up-down and both (4) (default 4; 1 is a single forward pass per label)\n"
    "  --tile N             large images of small objects: examples and queries in windows of NxN\n"
    "                       pixels, each resized to the model size (examples: up to 16 windows each;\n"
    "                       queries: windows half a window apart, blended), instead of whole images;\n"
    "                       0 (default): whole images; auto: windows of the model size where every\n"
    "                       example is at least twice the model size on each side and calibration\n"
    "                       scores them higher than whole images (see Calibration below)\n"
    "  --clip LOW,HIGH      clip intensities to these percentiles before normalising (e.g. 0.5,99.5 for CT)\n"
    "  --axis A             volumes: slice along voxel axis 0, 1 or 2 (default 2, the last)\n"
    "  --probabilities FMT  also write NAME_prob_V.png (16-bit) or .npy per label (FMT png or npy;\n"
    "                       volumes: float32 NIfTI)\n"
    "  --overlay            also write NAME_overlay.png: the query with coloured labels and contours\n"
    "  --quiet              no progress bar or summary\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --max-memory MB      bound the engine's memory, same masks (see universeg run --help)\n"
    "\n"
    "Images are converted to grey (BT.601), min-max normalised, resized to the model size (bilinear;\n"
    "labels nearest) and the probabilities resized back before thresholding. A query that fails is\n"
    "reported and skipped; the others are still written and the exit code is 1.\n"
    "\n"
    "Calibration (with 4 or more examples and at most 8 labels): each example (up to 16) is\n"
    "segmented from the others, one view each, and every label gets a logit offset and a weight\n"
    "(0 to 64) for its intensity evidence, the log ratio of the intensity histograms of the label and\n"
    "of the rest in the other examples, chosen to maximise the mean Dice of those predictions at\n"
    "0.5, scored as label maps are made: at each example's own size (up to 65,536 pixels of it),\n"
    "from probabilities resized back and histograms of the examples at their own sizes. The\n"
    "probabilities (and what --probabilities writes) are then\n"
    "sigmoid(logit + weight * evidence + offset), and where two saturate at 1 the higher calibrated\n"
    "logit wins. It costs about one forward pass per example, label and --ensemble subset, once per run.\n"
    "Examples cut from one image (windows, volume slices) are held out together when there are others.\n"
    "With --tile auto and large examples both whole images and windows are calibrated, and windows are\n"
    "kept if their mean Dice is higher by more than 0.005 (they cost several times as long).\n";

const char* kEvalUsage =
    "usage: universeg eval --pred DIR --truth DIR [--csv FILE] [--quiet]\n"
    "\n"
    "Dice and IoU of every predicted label map in --pred against the ground truth with the same name\n"
    "in --truth (or --truth/labels), per label value and image, with mean, standard deviation and\n"
    "range per label. Labels absent from both maps of an image are not scored.\n"
    "\n"
    "  --csv FILE   also write the per-image rows as CSV\n"
    "  --quiet      print only the summary lines\n";

// A progress bar on stderr: "[=====     ] 3/10 queries, 1.2/s, 6s left". Silent unless
// stderr is a terminal, so logs and pipes stay clean.
struct Progress {
    bool on = false;
    int64_t total = 0;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last;

    Progress(int64_t n, bool quiet) : on(!quiet && isatty(2)), total(n) {}

    void show(double done, bool force = false) {
        if (!on) return;
        const auto now = std::chrono::steady_clock::now();
        if (!force && now - last < std::chrono::milliseconds(100)) return;
        last = now;
        const double secs = std::chrono::duration<double>(now - start).count();
        const int width = 30, filled = int(width * std::min(1.0, done / double(std::max<int64_t>(total, 1))));
        std::string bar = std::string(size_t(filled), '=') + std::string(size_t(width - filled), ' ');
        std::fprintf(stderr, "\r[%s] %.0f/%lld queries", bar.c_str(), std::floor(done), (long long)total);
        if (done > 0 && secs > 0) {
            std::fprintf(stderr, ", %.2f/s", done / secs);
            if (done < double(total)) std::fprintf(stderr, ", %.0fs left", secs / done * (double(total) - done));
        }
        std::fprintf(stderr, "\033[K");
        std::fflush(stderr);
    }
    // Clears the bar so a message can take the line.
    void clear() {
        if (on) std::fprintf(stderr, "\r\033[K");
    }
    void finish() {
        if (on) std::fprintf(stderr, "\n");
    }
};

// "N" or "HxW".
void parse_size(const std::string& s, int64_t& h, int64_t& w, const std::string& what) {
    char* end = nullptr;
    h = std::strtoll(s.c_str(), &end, 10);
    w = h;
    if (*end == 'x' || *end == 'X') w = std::strtoll(end + 1, &end, 10);
    if (s.empty() || *end || h < 1 || w < 1 || h > 4096 || w > 4096)
        throw Error(what + " must be N or HxW with sizes in [1, 4096], got '" + s + "'");
}

// The safetensors header's __metadata__ (empty for other formats), read without the tensors.
std::map<std::string, std::string> weights_metadata(const std::string& path) {
    std::map<std::string, std::string> out;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    uint8_t len[8];
    if (!f || std::fread(len, 1, 8, f.get()) != 8) return out;
    const uint64_t n = universeg::detail::load_uint(len, 8);
    if (n < 2 || n > (100u << 20)) return out;
    std::string header(size_t(n), '\0');
    if (std::fread(&header[0], 1, header.size(), f.get()) != header.size() || header[0] != '{') return out;
    const universeg::detail::Json root = universeg::detail::parse_json(header.data(), header.size(), path);
    const universeg::detail::Json* meta = universeg::detail::json_get(root, "__metadata__");
    if (meta)
        for (size_t k = 0; k < meta->keys.size(); ++k)
            if (meta->items[k].kind == universeg::detail::Json::String) out[meta->keys[k]] = meta->items[k].str;
    return out;
}

struct Settings {
    int64_t height = 128, width = 128;
    double clip_low = 0, clip_high = 100;
    int axis = 2;
    std::string probabilities;  // "", "png" or "npy"
    bool overlay = false;
    double threshold = 0.5;
    int64_t tile = 0;  // --tile: windows of tile x tile pixels; 0: whole images (as --tile auto decided)
    const universeg::SupportSet* histogram_baseline = nullptr;  // --histogram-baseline: these supports' classifier
};

// Clip and min-max normalise in place (a whole volume at once, so slices keep their contrast).
void normalize(std::vector<float>& v, const Settings& s) {
    if (s.clip_low > 0 || s.clip_high < 100) universeg::clip_percentiles(v.data(), v.size(), s.clip_low, s.clip_high);
    universeg::normalize_min_max(v.data(), v.size());
}

// The support folder as support pairs at the model size: 2-D pairs as they are, volumes as
// their slices (along the axis) that hold any label; with --tile, their windows. With `windows`
// (--tile auto), each pair also goes into *windows as its windows of the model size while every
// pair is large (large_support), and *windows ends empty otherwise: each file is decoded once.
struct SupportLoader {
    const Settings& s;
    universeg::SupportSet set;
    universeg::SupportSet* windows;

    SupportLoader(const Settings& settings, universeg::SupportSet* w) : s(settings), windows(w) {
        set.height = s.height, set.width = s.width;
        if (windows) *windows = set;
    }
    // The sources of the next image's pairs in set and in *windows.
    std::pair<int64_t, int64_t> next_sources() const { return {set.next_source(), windows ? windows->next_source() : -1}; }
    void add(const universeg::Image& img, const universeg::Image& labels, const std::string& name,
             std::pair<int64_t, int64_t> sources = {-1, -1}) {
        if (s.tile) {
            universeg::add_support_tiles(set, img, labels, name, s.tile, sources.first);
        } else {
            universeg::add_support_resized(set, img, labels, name, sources.first);
        }
        if (!windows) return;
        if (universeg::large_support(img.height, img.width, set)) {
            universeg::add_support_tiles(*windows, img, labels, name, s.height, sources.second);
        } else {
            *windows = universeg::SupportSet{};
            windows = nullptr;
        }
    }
};

universeg::SupportSet load_supports(const std::string& dir, const Settings& s, universeg::SupportSet* windows = nullptr) {
    SupportLoader loader(s, windows);
    for (const universeg::LabelledPair& p : universeg::list_labelled_folder(dir)) {
        if (universeg::is_volume_path(p.image_path) != universeg::is_volume_path(p.label_path))
            throw Error(p.image_path + " and " + p.label_path + ": an image and a volume cannot form a support pair");
        if (universeg::is_volume_path(p.image_path)) {
            universeg::Volume img = universeg::load_nifti(p.image_path);
            const universeg::Volume lab = universeg::load_nifti(p.label_path);
            if (img.nx != lab.nx || img.ny != lab.ny || img.nz != lab.nz)
                throw Error(p.label_path + ": label volume of " + std::to_string(lab.nx) + "x" + std::to_string(lab.ny) + "x" +
                            std::to_string(lab.nz) + " does not match its image " + p.image_path + " (" +
                            std::to_string(img.nx) + "x" + std::to_string(img.ny) + "x" + std::to_string(img.nz) + ")");
            normalize(img.voxels, s);
            int64_t h, w, n;
            universeg::slice_shape(img, s.axis, h, w, n);
            const auto sources = loader.next_sources();  // one volume: its slices are held out together
            for (int64_t k = 0; k < n; ++k) {
                const universeg::Image labels = universeg::volume_slice(lab, s.axis, k);
                if (std::all_of(labels.pixels.begin(), labels.pixels.end(), [](float v) { return v == 0; })) continue;
                loader.add(universeg::volume_slice(img, s.axis, k), labels, p.label_path + " slice " + std::to_string(k), sources);
            }
        } else {
            universeg::Image img = universeg::load_image(p.image_path);
            const universeg::Image labels = universeg::load_label_map(p.label_path);
            if (img.height != labels.height || img.width != labels.width)
                throw Error(p.label_path + ": label map of " + std::to_string(labels.height) + "x" +
                            std::to_string(labels.width) + " does not match its image " + p.image_path + " (" +
                            std::to_string(img.height) + "x" + std::to_string(img.width) + ")");
            normalize(img.pixels, s);
            loader.add(img, labels, p.label_path);
        }
    }
    if (loader.set.size() == 0) throw Error(dir + ": the support volumes hold no labelled slice along axis " + std::to_string(s.axis));
    return std::move(loader.set);
}

// --histogram-baseline: the classical per-task intensity-histogram classifier that train and
// finetune report (histogram_baseline), one label value at a time, on the query at its size; a
// pixel that several values claim takes the lowest.
universeg::Image histogram_label_map(const universeg::SupportSet& set, const std::vector<int64_t>& values,
                                     const universeg::Image& normalized) {
    universeg::Image out{normalized.height, normalized.width, std::vector<float>(normalized.pixels.size(), 0.0f)};
    std::vector<float> images, labels, mask, claim(normalized.pixels.size());
    for (const universeg::SupportSamples& p : set.samples) {  // the supports at their own size
        images.insert(images.end(), p.images.begin(), p.images.end());
        labels.insert(labels.end(), p.labels.begin(), p.labels.end());
    }
    mask.resize(labels.size());
    for (int64_t v : values) {
        for (size_t i = 0; i < mask.size(); ++i) mask[i] = labels[i] == float(v) ? 1.0f : 0.0f;
        universeg::histogram_baseline(images.data(), mask.data(), 1, int64_t(mask.size()), normalized.pixels.data(),
                                      int64_t(claim.size()), claim.data());
        for (size_t i = 0; i < claim.size(); ++i)
            if (claim[i] > 0 && out.pixels[i] == 0) out.pixels[i] = float(v);
    }
    return out;
}

// Per label: the probabilities at the model size resized to the query's (with --tile, window by
// window), then the label map; probs comes back calibrated (and empty with --histogram-baseline).
universeg::Image segment_slice(const universeg::Task& task, const universeg::Image& normalized, const Settings& s,
                               std::vector<universeg::Image>& probs) {
    if (s.histogram_baseline) return histogram_label_map(*s.histogram_baseline, task.values, normalized);
    if (s.tile) {
        probs = universeg::predict_tiled(task, normalized, s.tile);
    } else {
        probs = universeg::predict_probabilities(task, universeg::resize_bilinear(normalized, s.height, s.width));
        for (universeg::Image& p : probs) p = universeg::resize_bilinear(p, normalized.height, normalized.width);
    }
    const universeg::Image labels = universeg::label_map(task, probs, normalized, s.threshold);
    universeg::calibrated_probabilities(task, probs, normalized);
    return labels;
}

std::string out_path(const std::string& out_dir, const std::string& name) { return (fs::path(out_dir) / name).string(); }

void write_overlay(const std::string& path, const universeg::Image& normalized, const universeg::Image& labels) {
    const std::vector<uint8_t> rgb = universeg::overlay_labels(normalized, labels);
    universeg::save_png(path, std::vector<uint16_t>(rgb.begin(), rgb.end()), labels.height, labels.width, 3, 8);
}

// One 2-D query: NAME.png (+ probabilities, overlay). Returns the label map.
universeg::Image segment_image(const universeg::Task& task, const std::string& query, const std::string& out_dir,
                               const Settings& s) {
    universeg::Image img = universeg::load_image(query);
    normalize(img.pixels, s);
    std::vector<universeg::Image> probs;
    const universeg::Image labels = segment_slice(task, img, s, probs);
    const std::string stem = universeg::image_stem(query);
    universeg::save_label_png(out_path(out_dir, stem + ".png"), labels);
    for (size_t l = 0; l < probs.size() && !s.probabilities.empty(); ++l) {
        const std::string base = out_path(out_dir, stem + "_prob_" + std::to_string(task.values[l]));
        if (s.probabilities == "png") {
            universeg::save_image_png(base + ".png", probs[l], 16);
        } else {
            universeg::Tensor t({probs[l].height, probs[l].width});
            t.data = probs[l].pixels;
            universeg::save_npy(base + ".npy", t);
        }
    }
    if (s.overlay) write_overlay(out_path(out_dir, stem + "_overlay.png"), img, labels);
    return labels;
}

// One volume: every slice along the axis segmented, NAME.nii[.gz] with the query's header.
void segment_volume(const universeg::Task& task, const std::string& query, const std::string& out_dir, const Settings& s,
                    Progress& progress, int64_t done) {
    const universeg::Volume vol = universeg::load_nifti(query);
    universeg::Volume normalized = vol, labels = vol;
    normalize(normalized.voxels, s);
    std::vector<universeg::Volume> prob_vols(s.probabilities.empty() ? 0 : task.values.size(), vol);
    int64_t h, w, n;
    universeg::slice_shape(vol, s.axis, h, w, n);
    int64_t best_slice = 0, best_area = -1;
    for (int64_t k = 0; k < n; ++k) {
        std::vector<universeg::Image> probs;
        const universeg::Image lab = segment_slice(task, universeg::volume_slice(normalized, s.axis, k), s, probs);
        universeg::set_volume_slice(labels, s.axis, k, lab);
        for (size_t l = 0; l < prob_vols.size(); ++l) universeg::set_volume_slice(prob_vols[l], s.axis, k, probs[l]);
        const int64_t area = std::count_if(lab.pixels.begin(), lab.pixels.end(), [](float v) { return v != 0; });
        if (area > best_area) best_area = area, best_slice = k;
        progress.show(double(done) + double(k + 1) / double(n));
    }
    const std::string ext = universeg::image_extension(query), stem = universeg::image_stem(query);
    const int64_t top = task.values.back();
    universeg::save_nifti(out_path(out_dir, stem + ext), labels,
                          top <= 255 ? universeg::kNiftiUint8 : top <= 32767 ? universeg::kNiftiInt16 : universeg::kNiftiInt32);
    for (size_t l = 0; l < prob_vols.size(); ++l)
        universeg::save_nifti(out_path(out_dir, stem + "_prob_" + std::to_string(task.values[l]) + ext), prob_vols[l],
                              universeg::kNiftiFloat32);
    if (s.overlay)  // the slice with the most labelled pixels
        write_overlay(out_path(out_dir, stem + "_overlay.png"), universeg::volume_slice(normalized, s.axis, best_slice),
                      universeg::volume_slice(labels, s.axis, best_slice));
}

// Files given directly, and the files inside given folders (sorted; hidden files and
// subfolders skipped). A file that is not an image fails alone, like any other bad query.
std::vector<std::string> expand_queries(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    for (const std::string& a : args) {
        std::error_code ec;
        if (!fs::is_directory(a, ec)) {
            out.push_back(a);
            continue;
        }
        std::vector<std::string> files;
        for (fs::directory_iterator it(a, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (!name.empty() && name[0] != '.' && !it->is_directory(ec)) files.push_back(it->path().string());
        }
        if (ec) throw Error(a + ": cannot list: " + ec.message());
        if (files.empty()) throw Error(a + ": no images in this folder");
        std::sort(files.begin(), files.end());
        out.insert(out.end(), files.begin(), files.end());
    }
    return out;
}

std::string join_values(const std::vector<int64_t>& v) {
    std::string s;
    for (int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
    return s;
}

}  // namespace

int cmd_segment(int argc, char** argv) {
    Args a("segment", kSegmentUsage, argc, argv,
           {"--support", "--out", "--weights", "--size", "--threshold", "--label", "--support-size", "--ensemble", "--seed", "--flips",
            "--clip", "--axis", "--probabilities", "--threads", "--max-memory", "--tile"},
           {"--overlay", "--quiet", "--no-calibration", "--histogram-baseline"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (a.positional().empty()) throw Error("no QUERY given (see universeg segment --help)");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const bool quiet = a.has("--quiet");
    Settings s;
    s.threshold = a.get_double("--threshold", 0.5, 0.0, 1.0);
    s.axis = int(a.get_int("--axis", 2, 0, 2));
    s.overlay = a.has("--overlay");
    const bool tile_auto = a.get("--tile", "0") == "auto";
    if (!tile_auto) s.tile = a.get_int("--tile", 0, 0, universeg::limits().max_image_side);
    s.probabilities = a.get("--probabilities", "");
    if (!s.probabilities.empty() && s.probabilities != "png" && s.probabilities != "npy")
        throw Error("--probabilities must be png or npy, got '" + s.probabilities + "'");
    if (a.has("--clip")) {
        const std::string c = a.get("--clip");
        char* end = nullptr;
        s.clip_low = std::strtod(c.c_str(), &end);
        const bool comma = *end == ',';
        if (comma) s.clip_high = std::strtod(end + 1, &end);
        if (!comma || *end || !(s.clip_low >= 0 && s.clip_low < s.clip_high && s.clip_high <= 100))
            throw Error("--clip must be LOW,HIGH percentiles with 0 <= LOW < HIGH <= 100, got '" + c + "'");
    }
    universeg::SegmentOptions opt;
    opt.support_size = a.get_int("--support-size", 0, 1, 100000);
    opt.ensemble = a.get_int("--ensemble", 1, 1, 1000);
    opt.seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
    opt.flips = a.get_int("--flips", 4, 1, 4);
    if (opt.flips == 3) throw Error("--flips: expected 1, 2 or 4, got 3");
    opt.threshold = s.threshold;
    opt.calibrate = !a.has("--no-calibration") && !a.has("--histogram-baseline");
    if (a.has("--histogram-baseline") && !s.probabilities.empty())
        throw Error("--histogram-baseline makes label maps only, not --probabilities");
    if (a.has("--label")) opt.only_values = {a.get_int("--label", 0, 1, 16777215)};
    opt.max_memory_mb = a.get_double("--max-memory", 0, 1, 1e9);
    const std::string support_dir = a.get("--support"), out_dir = a.get("--out");
    const std::vector<std::string> queries = expand_queries(a.positional());

    const std::string weights = weights_option(a);
    const universeg::Model model = universeg::load_model(weights);
    if (a.has("--size")) {
        parse_size(a.get("--size"), s.height, s.width, "--size");
    } else {
        const auto meta = weights_metadata(weights);
        auto it = meta.find("image_size");
        if (it != meta.end()) parse_size(it->second, s.height, s.width, weights + ": metadata image_size");
    }
    const int64_t m = model.config().size_multiple();
    if (s.height % m || s.width % m)
        throw Error("model size " + std::to_string(s.height) + "x" + std::to_string(s.width) + " is not a multiple of " +
                    std::to_string(m) + ", as " + weights + " needs (--size)");

    // Only calibration can choose windows, so without it (--no-calibration, --histogram-baseline) none are cut.
    const bool try_windows = tile_auto && opt.calibrate && s.height == s.width;
    universeg::SupportSet tiled_set;
    universeg::SupportSet set = load_supports(support_dir, s, try_windows ? &tiled_set : nullptr);
    universeg::Task task = universeg::make_task(model, set, opt);
    std::string scale;  // how --tile auto chose
    if (try_windows && tiled_set.size() > 0 && !task.calibration.offsets.empty()) {
        universeg::Task tiled = universeg::make_task(model, tiled_set, opt);
        const double whole_dice = task.calibration.dice_after, tiled_dice = tiled.calibration.dice_after;
        const bool keep = tiled_dice > whole_dice + universeg::kCalibrationTolerance;
        char buf[160];
        std::snprintf(buf, sizeof buf, "; --tile auto: calibrated mean Dice %.3f in %lldx%lld windows, %.3f whole", tiled_dice,
                      (long long)s.height, (long long)s.height, whole_dice);
        scale = buf;
        if (keep) set = std::move(tiled_set), task = std::move(tiled), s.tile = s.height;
    }
    if (a.has("--histogram-baseline")) s.histogram_baseline = &set;
    if (!quiet) {
        std::printf("weights %s, model size %lldx%lld\n", weights.c_str(), (long long)s.height, (long long)s.width);
        std::printf("support: %lld examples from %s", (long long)set.size(), support_dir.c_str());
        if (s.tile) std::printf(" (windows of up to %lldx%lld px)", (long long)s.tile, (long long)s.tile);
        std::printf(", labels %s; %lld per prediction", join_values(task.values).c_str(), (long long)task.members[0].size);
        if (int64_t(task.members.size()) < opt.ensemble)
            std::printf(", ensemble of %lld asked for but only %lld distinct subset(s) exist", (long long)opt.ensemble,
                        (long long)task.members.size());
        else if (opt.ensemble > 1)
            std::printf(", ensemble of %lld", (long long)opt.ensemble);
        if (opt.flips > 1 && !s.histogram_baseline) std::printf(", averaged over %lld mirrored views", (long long)opt.flips);
        std::printf("\n");
        if (s.histogram_baseline) std::printf("segmenting with the per-task intensity-histogram classifier, not the network\n");
        const universeg::Task::Calibration& c = task.calibration;
        if (!c.offsets.empty()) {
            std::printf("calibrated on %lld examples segmented from the others: mean Dice %.3f -> %.3f; per label logit offset, "
                        "intensity weight",
                        (long long)c.images, c.dice_before, c.dice_after);
            for (size_t l = 0; l < c.offsets.size(); ++l)
                std::printf(" %lld:%+.2f,%.1f", (long long)task.values[l], c.offsets[l], c.intensity_weights[l]);
            std::printf("%s\n", scale.c_str());
        } else if (opt.calibrate && set.size() < universeg::kMinCalibrationSupports) {
            std::printf("not calibrated: fewer than %lld examples\n", (long long)universeg::kMinCalibrationSupports);
        } else if (opt.calibrate) {
            std::printf("not calibrated: more than %lld labels\n", (long long)universeg::kMaxCalibrationLabels);
        }
        std::fflush(stdout);
    }

    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (!fs::is_directory(out_dir)) throw Error(out_dir + ": cannot create the output folder" + (ec ? ": " + ec.message() : ""));
    Progress progress(int64_t(queries.size()), quiet);
    std::map<std::string, std::string> written;  // output stem -> query, to refuse overwriting one with another
    int64_t failed = 0;
    for (size_t q = 0; q < queries.size(); ++q) {
        const std::string& query = queries[q];
        progress.show(double(q), true);
        try {
            const std::string stem = universeg::image_stem(query);
            auto ins = written.emplace(stem, query);
            if (!ins.second) throw Error("its output name " + stem + " clashes with the query " + ins.first->second);
            const std::string out = out_path(out_dir, stem + (universeg::is_volume_path(query) ? universeg::image_extension(query) : ".png"));
            if (fs::exists(out, ec) && fs::equivalent(out, query, ec)) throw Error("the output would overwrite the query itself");
            if (universeg::is_volume_path(query)) {
                segment_volume(task, query, out_dir, s, progress, int64_t(q));
            } else {
                if (!universeg::is_image_path(query))
                    throw Error("not a supported image (PNG, JPEG, BMP, TGA, PGM/PPM, NIfTI .nii/.nii.gz)");
                segment_image(task, query, out_dir, s);
            }
        } catch (const std::exception& e) {
            progress.clear();
            const std::string msg = e.what();
            // Most errors already start with the file's name; the rest get it.
            std::fprintf(stderr, "universeg segment: error: %s\n",
                         one_line(msg.rfind(query, 0) == 0 ? msg : query + ": " + msg).c_str());
            ++failed;
        }
    }
    progress.show(double(queries.size()), true);
    progress.finish();
    if (!quiet)
        std::printf("segmented %lld of %zu queries into %s\n", (long long)(int64_t(queries.size()) - failed), queries.size(),
                    out_dir.c_str());
    // A lone query's failure is its one error line; a batch also gets the count.
    if (failed && queries.size() > 1)
        std::fprintf(stderr, "universeg segment: %lld of %zu queries failed\n", (long long)failed, queries.size());
    return failed ? 1 : 0;
}

namespace {

struct EvalRow {
    std::string image;
    int64_t label;
    universeg::Overlap o;
};

// Label map files by stem: 2-D images and volumes; other files (overlays are images too, but
// their stems match no truth) are left alone.
std::map<std::string, std::string> label_files(const std::string& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(dir + ": not a directory");
    std::map<std::string, std::string> out;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string path = it->path().string(), name = it->path().filename().string();
        if (name.empty() || name[0] == '.' || !universeg::is_image_path(path) || it->is_directory(ec)) continue;
        auto ins = out.emplace(universeg::image_stem(path), path);
        if (!ins.second) throw Error(path + ": name clashes with " + ins.first->second);
    }
    return out;
}

// Both maps as flat label values of the same shape.
void load_pair(const std::string& truth, const std::string& pred, std::vector<float>& t, std::vector<float>& p) {
    if (universeg::is_volume_path(truth) != universeg::is_volume_path(pred))
        throw Error(pred + ": cannot compare a volume with a 2-D image (" + truth + ")");
    std::string ts, ps;
    if (universeg::is_volume_path(truth)) {
        universeg::Volume a = universeg::load_nifti(truth), b = universeg::load_nifti(pred);
        ts = std::to_string(a.nx) + "x" + std::to_string(a.ny) + "x" + std::to_string(a.nz);
        ps = std::to_string(b.nx) + "x" + std::to_string(b.ny) + "x" + std::to_string(b.nz);
        t = std::move(a.voxels), p = std::move(b.voxels);
        if (ts == ps) {
            universeg::check_label_map({1, int64_t(t.size()), t}, truth);
            universeg::check_label_map({1, int64_t(p.size()), p}, pred);
        }
    } else {
        universeg::Image a = universeg::load_label_map(truth), b = universeg::load_label_map(pred);
        ts = std::to_string(a.height) + "x" + std::to_string(a.width);
        ps = std::to_string(b.height) + "x" + std::to_string(b.width);
        t = std::move(a.pixels), p = std::move(b.pixels);
    }
    if (ts != ps) throw Error(pred + ": prediction of " + ps + " does not match the ground truth " + truth + " (" + ts + ")");
}

// mean, sample standard deviation, min, max of the finite values; count in n.
void stats(const std::vector<double>& v, double& mean, double& sd, double& lo, double& hi, size_t& n) {
    mean = sd = 0, lo = INFINITY, hi = -INFINITY, n = 0;
    for (double x : v)
        if (std::isfinite(x)) mean += x, lo = std::min(lo, x), hi = std::max(hi, x), ++n;
    if (!n) return;
    mean /= double(n);
    for (double x : v)
        if (std::isfinite(x)) sd += (x - mean) * (x - mean);
    sd = n > 1 ? std::sqrt(sd / double(n - 1)) : 0;
}

std::string fmt(double v) {
    if (!std::isfinite(v)) return "n/a";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return buf;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
    Args a("eval", kEvalUsage, argc, argv, {"--pred", "--truth", "--csv"}, {"--quiet"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    const bool quiet = a.has("--quiet");
    std::string truth_dir = a.get("--truth");
    std::error_code ec;
    if (fs::is_directory(fs::path(truth_dir) / "labels", ec)) truth_dir = (fs::path(truth_dir) / "labels").string();
    const std::map<std::string, std::string> truths = label_files(truth_dir), preds = label_files(a.get("--pred"));
    if (truths.empty()) throw Error(truth_dir + ": no label maps");

    std::vector<EvalRow> rows;
    int64_t failed = 0;
    for (const auto& kv : truths) {
        try {
            auto it = preds.find(kv.first);
            if (it == preds.end()) throw Error(kv.second + ": no prediction named " + kv.first + " in " + a.get("--pred"));
            std::vector<float> t, p;
            load_pair(kv.second, it->second, t, p);
            for (const auto& lo : universeg::label_overlaps(t.data(), p.data(), t.size())) rows.push_back({kv.first, lo.first, lo.second});
        } catch (const std::exception& e) {
            std::fprintf(stderr, "universeg eval: error: %s\n", one_line(e.what()).c_str());
            ++failed;
        }
    }

    size_t name_w = 5;
    for (const EvalRow& r : rows) name_w = std::max(name_w, r.image.size());
    if (!quiet) {
        std::printf("%-*s %6s %8s %8s %10s %10s\n", int(name_w), "image", "label", "dice", "iou", "truth_px", "pred_px");
        for (const EvalRow& r : rows)
            std::printf("%-*s %6lld %8s %8s %10lld %10lld\n", int(name_w), r.image.c_str(), (long long)r.label,
                        fmt(r.o.dice()).c_str(), fmt(r.o.iou()).c_str(), (long long)r.o.truth, (long long)r.o.pred);
        std::printf("\n");
    }
    std::map<int64_t, std::pair<std::vector<double>, std::vector<double>>> per_label;
    for (const EvalRow& r : rows) per_label[r.label].first.push_back(r.o.dice()), per_label[r.label].second.push_back(r.o.iou());
    std::vector<double> label_dice, label_iou;
    for (const auto& kv : per_label) {
        double dm, ds, dlo, dhi, im, is, ilo, ihi;
        size_t n;
        stats(kv.second.first, dm, ds, dlo, dhi, n);
        stats(kv.second.second, im, is, ilo, ihi, n);
        std::printf("label %lld: dice %s +- %s (min %s, max %s), iou %s +- %s over %zu images\n", (long long)kv.first,
                    fmt(n ? dm : NAN).c_str(), fmt(n ? ds : NAN).c_str(), fmt(dlo).c_str(), fmt(dhi).c_str(),
                    fmt(n ? im : NAN).c_str(), fmt(n ? is : NAN).c_str(), n);
        if (n) label_dice.push_back(dm), label_iou.push_back(im);
    }
    if (!label_dice.empty()) {
        double dm, ds, lo, hi, im, is;
        size_t n;
        stats(label_dice, dm, ds, lo, hi, n);
        stats(label_iou, im, is, lo, hi, n);
        std::printf("mean over %zu labels: dice %s, iou %s\n", n, fmt(dm).c_str(), fmt(im).c_str());
    }
    if (a.has("--csv")) {
        std::string csv = "image,label,dice,iou,truth_pixels,pred_pixels,overlap_pixels\n";
        for (const EvalRow& r : rows) {
            std::string name = r.image;
            if (name.find_first_of(",\"\n") != std::string::npos) {  // RFC 4180 quoting
                std::string q = "\"";
                for (char c : name) q += c == '"' ? std::string("\"\"") : std::string(1, c);
                name = q + "\"";
            }
            csv += name + "," + std::to_string(r.label) + "," + (std::isfinite(r.o.dice()) ? fmt(r.o.dice()) : "") + "," +
                   (std::isfinite(r.o.iou()) ? fmt(r.o.iou()) : "") + "," + std::to_string(r.o.truth) + "," +
                   std::to_string(r.o.pred) + "," + std::to_string(r.o.both) + "\n";
        }
        universeg::write_file_atomic(a.get("--csv"), std::vector<uint8_t>(csv.begin(), csv.end()));
    }
    if (failed) std::fprintf(stderr, "universeg eval: %lld of %zu ground-truth maps could not be scored\n", (long long)failed, truths.size());
    return failed ? 1 : 0;
}

}  // namespace cli
