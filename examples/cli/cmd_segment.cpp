// universeg segment / eval: few-shot segmentation of image files and volumes with a folder of
// labelled examples (a command-line layer over universeg::Segmenter), and Dice/IoU of label maps
// against ground truth.
#include "cli.hpp"

#include <universeg/segment/segment.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>

namespace fs = std::filesystem;

namespace cli {

namespace {

const char* kSegmentUsage =
    "usage: universeg segment --support DIR --out DIR [options] QUERY...\n"
    "       universeg segment --support DIR --save-task FILE [options]   (calibrate once, for --task)\n"
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
    "                       N is at least 16 and an eighth of the model size (more would be upsampled\n"
    "                       past blur); 0 (default): whole images; auto: windows of the model size where\n"
    "                       every example is at least twice the model size on each side and calibration\n"
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
    "A cohort in parallel jobs (docs/cluster.md):\n"
    "  --shard K/N          segment only the K-th of N shares of the queries (K from 1 to N; query i,\n"
    "                       counted from 0 in the order given, folders sorted, goes to share i % N + 1):\n"
    "                       N jobs together write exactly what one run writes. Every output is still\n"
    "                       planned and checked for all the queries.\n"
    "  --save-task FILE     write the task's calibration (and what it depends on: the weights, the\n"
    "                       examples, the options below) to FILE; without QUERY, stop there\n"
    "  --task FILE          take the calibration from FILE instead of computing it: refused unless the\n"
    "                       weights, the examples and --size, --clip, --axis, --tile, --support-size,\n"
    "                       --ensemble, --seed, --flips, --label, --no-calibration and\n"
    "                       --histogram-baseline are those FILE was saved with\n"
    "\n"
    "Images are converted to grey (BT.601), min-max normalised, resized to the model size (bilinear;\n"
    "labels nearest) and the probabilities resized back before thresholding. Every output is planned\n"
    "before anything is computed: a name that two outputs share, an output that would overwrite an\n"
    "input (query, example, weights) or a file that is not an output of the same kind, and label values\n"
    "that a PNG label map cannot hold (above 65535) are refused up front. A query that fails is\n"
    "reported and skipped, leaving none of its outputs; the others are still written and the exit\n"
    "code is 1. How segmentation works: docs/segment.md.\n"
    "\n"
    "Calibration (with 4 or more examples and at most 8 labels): each example (up to 16) is\n"
    "segmented from the others, one view each, and every label gets a logit offset and a weight\n"
    "(0 to 64) for its intensity evidence, the log ratio of the intensity histograms of the label and\n"
    "of the rest in the other examples, chosen to maximise the mean Dice of those predictions at\n"
    "0.5, scored as label maps are made: at each example's own size (up to 65,536 pixels of it),\n"
    "from probabilities resized back and histograms of the examples at their own sizes. The\n"
    "probabilities (and what --probabilities writes) are then\n"
    "sigmoid(logit + weight * evidence + offset), and where two saturate at 1 the higher calibrated\n"
    "logit wins. Then, per label, it may keep only the largest region and fill its holes in the label\n"
    "map (as nnU-Net's post-processing), where that raises those predictions' mean Dice by more than\n"
    "0.005 (whole images only, not --tile windows). It costs about one forward pass per example,\n"
    "label and --ensemble subset, once per run.\n"
    "Examples cut from one image (windows, volume slices) are held out together when there are others.\n"
    "With --tile auto and large examples both whole images and windows are calibrated, and windows are\n"
    "kept if their mean Dice is higher by more than 0.005 (they cost several times as long).\n";

const char* kEvalUsage =
    "usage: universeg eval --pred DIR --truth DIR [--csv FILE] [--only-predicted] [--quiet]\n"
    "       universeg eval --merge CSV... [--csv FILE] [--quiet]\n"
    "\n"
    "Dice and IoU of every predicted label map in --pred against the ground truth with the same name\n"
    "in --truth (or --truth/labels), per label value and image, with mean, standard deviation and\n"
    "range per label. Labels absent from both maps of an image are not scored.\n"
    "\n"
    "  --csv FILE         also write the per-image rows as CSV\n"
    "  --only-predicted   score only the ground truths --pred has a prediction for (one shard's output\n"
    "                     folder, say), rather than counting the others as failures\n"
    "  --merge CSV...     the tables that --csv wrote for parts of a cohort (shards), as one: the same\n"
    "                     rows and summary as one eval over all their images\n"
    "  --quiet            print only the summary lines\n";

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

// --shard K/N: 1 <= K <= N.
struct Shard {
    int64_t k = 1, n = 1;
    bool has(size_t query) const { return int64_t(query % size_t(n)) == k - 1; }
};

Shard parse_shard(const std::string& text) {
    Shard s;
    char* end = nullptr;
    s.k = std::strtoll(text.c_str(), &end, 10);
    const bool slash = *end == '/' && std::isdigit(uint8_t(end[1]));  // digits only: no signs or spaces
    if (slash) s.n = std::strtoll(end + 1, &end, 10);
    if (text.empty() || !std::isdigit(uint8_t(text[0])) || !slash || *end || s.n < 1 || s.n > 1000000 || s.k < 1 || s.k > s.n)
        throw Error("--shard must be K/N with 1 <= K <= N <= 1000000 (e.g. 2/8), got '" + text + "'");
    return s;
}

// FNV-1a, 64 bits, of a file's bytes, continuing from `h`: whether two shards were given the same
// weights and examples, wherever each found its copy.
uint64_t fnv1a_file(const std::string& path, uint64_t h) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error(path + ": cannot read: " + std::strerror(errno));
    std::vector<char> buf(size_t(1) << 20);
    while (f) {
        f.read(buf.data(), std::streamsize(buf.size()));
        for (std::streamsize i = 0; i < f.gcount(); ++i) h = (h ^ uint8_t(buf[size_t(i)])) * 0x100000001B3ull;
    }
    if (f.bad()) throw Error(path + ": read error");
    return h;
}

std::string hex64(uint64_t v) {
    char buf[20];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
    return buf;
}

// The support's fingerprint: its files' names (without the folder, which may be another copy) and bytes, in order.
std::string support_fingerprint(const universeg::Support& support) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (const std::string& f : support.files()) {
        for (char c : fs::path(f).filename().string() + '\0') h = (h ^ uint8_t(c)) * 0x100000001B3ull;
        h = fnv1a_file(f, h);
    }
    return hex64(h);
}

// --save-task / --task: a task's calibration and what it was computed from. A text file of
// "key value" lines: the weights' and examples' fingerprints, the options calibration depends
// on under their names, and Segmenter::Calibrated (doubles to 17 digits, which read back exactly).
const char* kTaskMagic = "universeg task 1";

using TaskKey = std::vector<std::pair<std::string, std::string>>;  // in the order checked

std::string number(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

std::string join_numbers(const std::vector<double>& v) {
    std::string s;
    for (double x : v) s += (s.empty() ? "" : ",") + number(x);
    return s;
}

// The options calibration depends on, as their command-line names and values.
TaskKey task_options(const universeg::SegmenterOptions& o) {
    return {{"--size", std::to_string(o.size.height) + "x" + std::to_string(o.size.width)},
            {"--clip", number(o.clip_low) + "," + number(o.clip_high)},
            {"--axis", std::to_string(o.axis)},
            {"--tile", o.tile == universeg::kTileAuto ? "auto" : std::to_string(o.tile)},
            {"--support-size", o.support_size ? std::to_string(o.support_size) : "all"},
            {"--ensemble", std::to_string(o.ensemble)},
            {"--seed", std::to_string(o.seed)},
            {"--flips", std::to_string(o.flips)},
            {"--label", o.only_values.empty() ? "all" : join_values(o.only_values)},
            {"--no-calibration", o.calibrate ? "no" : "yes"},
            {"--histogram-baseline", o.histogram_baseline ? "yes" : "no"}};
}

void save_task(const std::string& path, const TaskKey& key, const universeg::Segmenter& seg) {
    const universeg::Segmenter::Calibrated c = seg.calibrated();
    std::string text = std::string(kTaskMagic) + "\n# universeg segment --save-task: the calibration of a task, for --task\n";
    for (const auto& kv : key) text += kv.first + " " + kv.second + "\n";
    text += "values " + join_values(seg.values()) + "\n";
    text += "windows " + std::string(c.windows ? "1" : "0") + "\n";
    text += "tile-compared " + std::string(c.tile_choice.compared ? "1" : "0") + "\n";
    text += "windows-dice " + number(c.tile_choice.windows_dice) + "\n";
    text += "whole-dice " + number(c.tile_choice.whole_dice) + "\n";
    text += "calibrated-images " + std::to_string(c.calibration.images) + "\n";
    text += "dice-before " + number(c.calibration.dice_before) + "\n";
    text += "dice-after " + number(c.calibration.dice_after) + "\n";
    text += "offsets " + join_numbers(c.calibration.offsets) + "\n";
    text += "intensity-weights " + join_numbers(c.calibration.intensity_weights) + "\n";
    text += "regions " + join_values(c.calibration.regions) + "\n";
    text += "colour-evidence " + std::string(c.calibration.colour ? "1" : "0") + "\n";
    text += "example-types " + std::string(c.calibration.types ? "1" : "0") + "\n";
    universeg::write_file_atomic(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// A saved task, checked against this run's key (every entry, by name) and label values.
struct SavedTask {
    std::map<std::string, std::string> fields;
    std::string path;

    explicit SavedTask(const std::string& file) : path(file) {
        const std::vector<uint8_t> bytes = universeg::read_file(file, 1 << 20);
        std::stringstream in(std::string(bytes.begin(), bytes.end()));
        std::string line;
        if (!std::getline(in, line) || line != kTaskMagic)
            throw Error(file + ": not a task file of universeg segment --save-task (no '" + kTaskMagic + "' line)");
        while (std::getline(in, line)) {
            if (line.empty() || line[0] == '#') continue;
            const size_t space = line.find(' ');
            fields[line.substr(0, space)] = space == std::string::npos ? "" : line.substr(space + 1);
        }
    }
    const std::string& get(const std::string& key) const {
        const auto it = fields.find(key);
        if (it == fields.end()) throw Error(path + ": task file without '" + key + "'");
        return it->second;
    }
    void check(const TaskKey& key) const {
        for (const auto& kv : key) {
            if (get(kv.first) == kv.second) continue;
            if (kv.first == "weights")
                throw Error("--task " + path + " was saved with other weights (their bytes differ from this run's)");
            if (kv.first == "support")
                throw Error("--task " + path + " was saved from other examples (the support files' names or bytes differ)");
            if (kv.second == "yes" || kv.second == "no")  // a switch
                throw Error("--task " + path + " was saved " + (kv.second == "yes" ? "without " : "with ") + kv.first +
                            ", and this run has " + (kv.second == "yes" ? "it" : "not"));
            throw Error("--task " + path + " was saved with " + kv.first + " " + get(kv.first) + ", and this run has " + kv.first +
                        " " + kv.second);
        }
    }
    double real(const std::string& key) const {
        const std::string& v = get(key);
        char* end = nullptr;
        const double d = std::strtod(v.c_str(), &end);
        if (v.empty() || *end) throw Error(path + ": " + key + " '" + v + "' is not a number");
        return d;
    }
    std::vector<double> reals(const std::string& key) const {
        std::vector<double> out;
        std::stringstream ss(get(key));
        for (std::string part; std::getline(ss, part, ',');) {
            char* end = nullptr;
            out.push_back(std::strtod(part.c_str(), &end));
            if (part.empty() || *end) throw Error(path + ": " + key + " holds '" + part + "', not a number");
        }
        return out;
    }
    universeg::Segmenter::Calibrated calibrated(const std::vector<int64_t>& values) const {
        if (get("values") != join_values(values))
            throw Error("--task " + path + " segments labels " + get("values") + ", and this run's examples labels " +
                        join_values(values));
        universeg::Segmenter::Calibrated c;
        c.windows = real("windows") != 0;
        c.tile_choice.compared = real("tile-compared") != 0;
        c.tile_choice.windows_dice = real("windows-dice");
        c.tile_choice.whole_dice = real("whole-dice");
        c.calibration.images = int64_t(real("calibrated-images"));
        c.calibration.dice_before = real("dice-before");
        c.calibration.dice_after = real("dice-after");
        c.calibration.offsets = reals("offsets");
        c.calibration.intensity_weights = reals("intensity-weights");
        // Files saved before calibration chose regions, colour evidence and example types have none.
        if (fields.count("regions"))
            for (double r : reals("regions")) c.calibration.regions.push_back(int64_t(r));
        c.calibration.colour = fields.count("colour-evidence") && real("colour-evidence") != 0;
        c.calibration.types = fields.count("example-types") && real("example-types") != 0;
        return c;
    }
};

// What the command writes, beside the Segmenter's options.
struct Settings {
    std::string out_dir;
    std::string probabilities;  // "", "png" or "npy"
    bool overlay = false;
};

// One file the run writes.
struct Output {
    enum Kind { Labels, Probabilities, Overlay } kind;
    size_t label;      // Probabilities: the index of its label value
    std::string path;  // in --out
    std::string what;  // "the label map of QUERY", for messages
};

// The outputs of one query in the order they are written; none for a file that is not an image
// (it fails on its own).
std::vector<Output> plan_query(const std::string& query, const std::vector<int64_t>& values, const Settings& s) {
    std::vector<Output> out;
    if (!universeg::is_image_path(query)) return out;
    const bool volume = universeg::is_volume_path(query);
    const std::string stem = universeg::image_stem(query), ext = volume ? universeg::image_extension(query) : ".png";
    auto path = [&](const std::string& name) { return (fs::path(s.out_dir) / name).string(); };
    out.push_back({Output::Labels, 0, path(stem + ext), "the label map of " + query});
    for (size_t l = 0; l < values.size() && !s.probabilities.empty(); ++l) {
        const std::string v = std::to_string(values[l]);
        out.push_back({Output::Probabilities, l, path(stem + "_prob_" + v + (volume ? ext : "." + s.probabilities)),
                       "the probabilities of label " + v + " of " + query});
    }
    if (s.overlay) out.push_back({Output::Overlay, 0, path(stem + "_overlay.png"), "the overlay of " + query});
    return out;
}

// "" when the existing file at o.path is what an earlier run wrote there (by its format: a label
// map is a grey PNG, an overlay an 8-bit colour PNG, probabilities a 16-bit grey PNG or .npy,
// volumes NIfTI), else what o would have to be written over.
std::string foreign_file(const Output& o) {
    struct stat st;
    if (::stat(o.path.c_str(), &st) != 0) return "";
    if (!S_ISREG(st.st_mode)) return "something that is not a file";
    std::ifstream f(o.path, std::ios::binary);
    std::string head(352, '\0');
    f.read(&head[0], std::streamsize(head.size()));
    head.resize(size_t(f.gcount()));
    const std::string ext = universeg::image_extension(o.path);
    if (ext == ".nii") return head.size() >= 348 && head.compare(344, 4, std::string("n+1\0", 4)) == 0 ? "" : "a file that is not NIfTI";
    if (ext == ".nii.gz") return head.compare(0, 2, "\x1F\x8B") == 0 ? "" : "a file that is not gzip-compressed";
    if (ext == ".npy") return head.compare(0, 6, "\x93NUMPY") == 0 ? "" : "a file that is not .npy";
    if (head.size() < 26 || head.compare(0, 8, "\x89PNG\r\n\x1A\n") != 0 || head.compare(12, 4, "IHDR") != 0)
        return "a file that is not a PNG";
    const int depth = uint8_t(head[24]), colour = uint8_t(head[25]);
    const bool fits = o.kind == Output::Overlay         ? colour == 2 && depth == 8
                      : o.kind == Output::Probabilities ? colour == 0 && depth == 16
                                                        : colour == 0;
    return fits ? "" : "a PNG of another kind (" + std::to_string(depth) + "-bit, " + (colour == 0 ? "grey" : "colour") + ")";
}

// Refuses, before anything is computed, a plan that would write one file twice, over an input
// (`inputs`: path and what it is), or over a file that is not an earlier output of the same kind.
void check_plan(const std::vector<std::vector<Output>>& plan, const std::vector<std::pair<std::string, std::string>>& inputs) {
    std::map<std::pair<dev_t, ino_t>, std::string> input_ids;  // by file identity: links and other spellings too
    struct stat st;
    for (const auto& in : inputs)
        if (::stat(in.first.c_str(), &st) == 0) input_ids.emplace(std::make_pair(st.st_dev, st.st_ino), in.second);
    std::map<std::string, const Output*> names;  // every output is in --out: by file name
    for (const std::vector<Output>& outputs : plan)
        for (const Output& o : outputs) {
            const auto ins = names.emplace(fs::path(o.path).filename().string(), &o);
            if (!ins.second) throw Error(o.path + ": both " + ins.first->second->what + " and " + o.what + " would be written here");
            if (::stat(o.path.c_str(), &st) != 0) continue;
            const auto in = input_ids.find({st.st_dev, st.st_ino});
            if (in != input_ids.end()) throw Error(o.path + ": " + o.what + " would overwrite " + in->second);
            const std::string foreign = foreign_file(o);
            if (!foreign.empty())
                throw Error(o.path + ": " + o.what + " would overwrite " + foreign +
                            " that universeg segment did not write there; move it or choose another --out");
        }
}

// --out must be a folder this run can write in, or one it can create: checked before the weights
// are loaded, created only when the run is about to write.
void check_out_dir(const std::string& dir) {
    std::error_code ec;
    fs::path existing = dir;
    while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
    if (existing.empty()) existing = ".";
    if (!fs::is_directory(existing, ec))
        throw Error(dir + ": --out must be a folder, and " + existing.string() + " is a file");
    if (::access(existing.c_str(), W_OK | X_OK) != 0)
        throw Error(dir + ": --out is not writable" + (existing == fs::path(dir) ? "" : " (in " + existing.string() + ")") +
                    ": " + std::strerror(errno));
}

// Writes a query's planned outputs in order; a failed write removes those already written, so a
// failed query leaves none of them.
template <class Write>
void write_outputs(const std::vector<Output>& outputs, Write write) {
    size_t done = 0;
    try {
        for (; done < outputs.size(); ++done) write(outputs[done]);
    } catch (...) {
        std::error_code ec;
        for (size_t i = 0; i < done; ++i) fs::remove(outputs[i].path, ec);
        throw;
    }
}

void save_overlay(const std::string& path, const universeg::Image& prepared, const universeg::Image& labels) {
    const std::vector<uint8_t> rgb = universeg::overlay_labels(prepared, labels);
    universeg::save_png(path, std::vector<uint16_t>(rgb.begin(), rgb.end()), labels.height, labels.width, 3, 8);
}

// One 2-D query: everything computed, then written. `size` says what was loaded, for messages.
void segment_image(const universeg::Segmenter& seg, const std::string& query, const std::vector<Output>& outputs,
                   std::string& size) {
    const universeg::Image img = universeg::load_image(query);
    size = "an image of " + std::to_string(img.height) + "x" + std::to_string(img.width) + " pixels";
    const universeg::Segmentation r = seg.segment(img);
    const bool overlay = std::any_of(outputs.begin(), outputs.end(), [](const Output& o) { return o.kind == Output::Overlay; });
    const universeg::Image prepared = overlay ? seg.prepare(img) : universeg::Image{};
    write_outputs(outputs, [&](const Output& o) {
        if (o.kind == Output::Labels) {
            universeg::save_label_png(o.path, r.labels);
        } else if (o.kind == Output::Overlay) {
            save_overlay(o.path, prepared, r.labels);
        } else if (universeg::image_extension(o.path) == ".npy") {
            universeg::Tensor t({r.labels.height, r.labels.width});
            t.data = r.probabilities[o.label].pixels;
            universeg::save_npy(o.path, t);
        } else {
            universeg::save_image_png(o.path, r.probabilities[o.label], 16);
        }
    });
}

// One volume: every slice along the axis, NAME.nii[.gz] with the query's header; its overlay is
// the slice with the most labelled pixels.
void segment_volume(const universeg::Segmenter& seg, const std::string& query, const std::vector<Output>& outputs,
                    std::string& size, Progress& progress, int64_t done) {
    const universeg::Volume vol = universeg::load_nifti(query);
    size = "a volume of " + std::to_string(vol.nx) + "x" + std::to_string(vol.ny) + "x" + std::to_string(vol.nz) + " voxels";
    const universeg::VolumeSegmentation r =
        seg.segment(vol, [&](int64_t k, int64_t n) { progress.show(double(done) + double(k) / double(n)); });
    const int axis = seg.options().axis;
    universeg::Image best_image, best_labels;
    if (std::any_of(outputs.begin(), outputs.end(), [](const Output& o) { return o.kind == Output::Overlay; })) {
        int64_t h, w, n, best = 0, best_area = -1;
        universeg::slice_shape(vol, axis, h, w, n);
        for (int64_t k = 0; k < n; ++k) {
            const universeg::Image lab = universeg::volume_slice(r.labels, axis, k);
            const int64_t area = std::count_if(lab.pixels.begin(), lab.pixels.end(), [](float v) { return v != 0; });
            if (area > best_area) best_area = area, best = k;
        }
        // The slice as the whole volume was prepared: clipped and normalised over the volume.
        best_image = universeg::volume_slice(seg.prepare(vol), axis, best);
        best_labels = universeg::volume_slice(r.labels, axis, best);
    }
    write_outputs(outputs, [&](const Output& o) {
        if (o.kind == Output::Labels) {
            universeg::save_nifti(o.path, r.labels, universeg::label_nifti_type(r.values));
        } else if (o.kind == Output::Overlay) {
            save_overlay(o.path, best_image, best_labels);
        } else {
            universeg::save_nifti(o.path, r.probabilities[o.label], universeg::kNiftiFloat32);
        }
    });
}

void print_summary(const universeg::Segmenter& seg, const std::string& weights, const std::string& support_dir,
                   const std::string& task_file) {
    const universeg::SegmenterOptions& o = seg.options();
    const universeg::Task& task = seg.task();
    std::printf("weights %s, model size %lldx%lld\n", weights.c_str(), (long long)o.size.height, (long long)o.size.width);
    std::printf("support: %lld examples from %s", (long long)seg.support().size(), support_dir.c_str());
    if (seg.tile()) std::printf(" (windows of up to %lldx%lld px)", (long long)seg.tile(), (long long)seg.tile());
    std::printf(", labels %s; %lld per prediction", join_values(seg.values()).c_str(), (long long)task.members[0].size);
    if (int64_t(task.members.size()) < o.ensemble)
        std::printf(", ensemble of %lld asked for but only %lld distinct subset(s) exist", (long long)o.ensemble,
                    (long long)task.members.size());
    else if (o.ensemble > 1)
        std::printf(", ensemble of %lld", (long long)o.ensemble);
    if (o.flips > 1 && !o.histogram_baseline) std::printf(", averaged over %lld mirrored views", (long long)o.flips);
    std::printf("\n");
    if (o.histogram_baseline) std::printf("segmenting with the per-task intensity-histogram classifier, not the network\n");
    const universeg::Task::Calibration& c = task.calibration;
    const bool calibrate = o.calibrate && !o.histogram_baseline;
    if (!c.offsets.empty()) {
        std::printf("calibrated on %lld examples segmented from the others: mean Dice %.3f -> %.3f; per label logit offset, "
                    "intensity weight",
                    (long long)c.images, c.dice_before, c.dice_after);
        for (size_t l = 0; l < c.offsets.size(); ++l) {
            const int64_t r = c.regions[l];
            std::printf(" %lld:%+.2f,%.1f%s%s", (long long)task.values[l], c.offsets[l], c.intensity_weights[l],
                        r & universeg::kKeepLargest ? ",largest" : "", r & universeg::kFillHoles ? ",filled" : "");
        }
        if (c.colour) std::printf("; colour evidence");
        if (c.types)
            std::printf("; examples in two types (%lld and %lld), each query segmented with its own",
                        (long long)task.types[0].examples.size(), (long long)task.types[1].examples.size());
        const universeg::Segmenter::TileChoice& t = seg.tile_choice();
        if (t.compared)
            std::printf("; --tile auto: calibrated mean Dice %.3f in %lldx%lld windows, %.3f whole", t.windows_dice,
                        (long long)o.size.height, (long long)o.size.height, t.whole_dice);
        if (!task_file.empty()) std::printf(" (as saved in %s)", task_file.c_str());
        std::printf("\n");
    } else if (calibrate && seg.support().size() < universeg::kMinCalibrationSupports) {
        std::printf("not calibrated: fewer than %lld examples\n", (long long)universeg::kMinCalibrationSupports);
    } else if (calibrate) {
        std::printf("not calibrated: more than %lld labels\n", (long long)universeg::kMaxCalibrationLabels);
    }
    std::fflush(stdout);
}

}  // namespace

int cmd_segment(int argc, char** argv) {
    Args a("segment", kSegmentUsage, argc, argv,
           {"--support", "--out", "--weights", "--size", "--threshold", "--label", "--support-size", "--ensemble", "--seed", "--flips",
            "--clip", "--axis", "--probabilities", "--threads", "--max-memory", "--tile", "--shard", "--save-task", "--task"},
           {"--overlay", "--quiet", "--no-calibration", "--histogram-baseline"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    const std::string task_file = a.get("--task", ""), save_task_file = a.get("--save-task", "");
    if (!task_file.empty() && !save_task_file.empty())
        throw Error("--task and --save-task exclude each other: --task reuses a saved calibration, --save-task makes one");
    const bool has_queries = !a.positional().empty();
    if (!has_queries && save_task_file.empty()) throw Error("no QUERY given (see universeg segment --help)");
    const Shard shard = a.has("--shard") ? parse_shard(a.get("--shard")) : Shard{};
    if (!save_task_file.empty() && fs::exists(save_task_file)) {
        std::ifstream f(save_task_file, std::ios::binary);
        std::string head(std::strlen(kTaskMagic), '\0');
        f.read(&head[0], std::streamsize(head.size()));
        if (head != kTaskMagic)
            throw Error(save_task_file + ": --save-task would overwrite a file that is not a task file; move it or choose another name");
    }
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const bool quiet = a.has("--quiet");
    Settings s;
    s.overlay = a.has("--overlay");
    s.probabilities = a.get("--probabilities", "");
    if (!s.probabilities.empty() && s.probabilities != "png" && s.probabilities != "npy")
        throw Error("--probabilities must be png or npy, got '" + s.probabilities + "'");
    universeg::SegmenterOptions opt;
    opt.threshold = a.get_double("--threshold", 0.5, 0.0, 1.0);
    opt.axis = int(a.get_int("--axis", 2, 0, 2));
    const bool tile_auto = a.get("--tile", "0") == "auto";
    opt.tile = tile_auto ? universeg::kTileAuto : a.get_int("--tile", 0, 0, universeg::limits().max_image_side);
    if (a.has("--clip")) {
        const std::string c = a.get("--clip");
        char* end = nullptr;
        opt.clip_low = std::strtod(c.c_str(), &end);
        const bool comma = *end == ',';
        if (comma) opt.clip_high = std::strtod(end + 1, &end);
        if (!comma || *end || !(opt.clip_low >= 0 && opt.clip_low < opt.clip_high && opt.clip_high <= 100))
            throw Error("--clip must be LOW,HIGH percentiles with 0 <= LOW < HIGH <= 100, got '" + c + "'");
    }
    opt.support_size = a.get_int("--support-size", 0, 1, 100000);
    opt.ensemble = a.get_int("--ensemble", 1, 1, 1000);
    opt.seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
    opt.flips = a.get_int("--flips", 4, 1, 4);
    if (opt.flips == 3) throw Error("--flips: expected 1, 2 or 4, got 3");
    opt.calibrate = !a.has("--no-calibration");
    opt.histogram_baseline = a.has("--histogram-baseline");
    if (opt.histogram_baseline && !s.probabilities.empty())
        throw Error("--histogram-baseline makes label maps only, not --probabilities");
    opt.keep_probabilities = !s.probabilities.empty();
    if (a.has("--label")) opt.only_values = {a.get_int("--label", 0, 1, 16777215)};
    opt.max_memory_mb = a.get_double("--max-memory", 0, 1, 1e9);
    const std::string support_dir = a.get("--support");
    s.out_dir = has_queries ? a.get("--out") : a.get("--out", "");
    const std::vector<std::string> queries = expand_queries(a.positional());
    if (has_queries) check_out_dir(s.out_dir);

    const std::string weights = weights_option(a);
    const std::string size_source = a.has("--size") ? "--size" : weights + ": metadata image_size";
    opt.size = a.has("--size") ? universeg::parse_model_size(a.get("--size"), "--size") : universeg::weights_image_size(weights);
    if (opt.tile > 0 && opt.tile < universeg::min_tile(opt.size))
        throw Error("--tile " + std::to_string(opt.tile) + ": windows are at least " + std::to_string(universeg::min_tile(opt.size)) +
                    " px at the model size " + std::to_string(opt.size.height) + "x" + std::to_string(opt.size.width) +
                    " (16, and an eighth of the model size: smaller ones are upsampled past blur); 0 segments whole images");
    const universeg::Support support = universeg::Support::folder(support_dir);
    const universeg::Model model = universeg::load_model(weights);
    universeg::check_model_size(model, opt.size, size_source);
    // A saved task: its options checked first (by name), then the files' fingerprints.
    const TaskKey options_key = task_options(opt);
    std::unique_ptr<SavedTask> saved;
    if (!task_file.empty()) saved = std::make_unique<SavedTask>(task_file), saved->check(options_key);
    TaskKey files_key;
    if (saved || !save_task_file.empty())
        files_key = {{"weights", hex64(fnv1a_file(weights, 0xCBF29CE484222325ull))}, {"support", support_fingerprint(support)}};
    if (saved) saved->check(files_key);

    // Every output planned, and its names, inputs and formats checked, before any forward pass.
    universeg::PreparedSupport prepared(support, opt);
    const std::vector<int64_t> values = prepared.values();
    std::vector<std::vector<Output>> plan;
    for (const std::string& q : queries) plan.push_back(plan_query(q, values, s));
    std::vector<std::pair<std::string, std::string>> inputs{{weights, "the weights " + weights}};
    for (const std::string& q : queries) inputs.emplace_back(q, "the query " + q);
    for (const std::string& f : support.files()) inputs.emplace_back(f, "the support file " + f);
    check_plan(plan, inputs);
    for (size_t q = 0; q < queries.size(); ++q)
        if (!plan[q].empty() && !universeg::is_volume_path(queries[q]) && values.back() > 65535)
            throw Error(support_dir + ": label value " + std::to_string(values.back()) +
                        " cannot be saved in a PNG label map (values 0 to 65535), as " + plan[q][0].what +
                        " would be; choose other values with --label, or segment volumes");

    std::vector<size_t> mine;  // this shard's queries
    for (size_t q = 0; q < queries.size(); ++q)
        if (shard.has(q)) mine.push_back(q);
    if (has_queries && mine.empty() && save_task_file.empty()) {
        if (!quiet)
            std::printf("shard %lld/%lld: none of the %zu queries\n", (long long)shard.k, (long long)shard.n, queries.size());
        return 0;
    }

    const universeg::Segmenter seg = saved ? universeg::Segmenter(model, std::move(prepared), saved->calibrated(values))
                                           : universeg::Segmenter(model, std::move(prepared));
    if (!quiet) print_summary(seg, weights, support_dir, task_file);
    if (!save_task_file.empty()) {
        TaskKey key = options_key;
        key.insert(key.end(), files_key.begin(), files_key.end());
        save_task(save_task_file, key, seg);
        if (!quiet) std::printf("saved the task's calibration to %s\n", save_task_file.c_str());
        if (!has_queries) return 0;
    }

    std::error_code ec;
    fs::create_directories(s.out_dir, ec);
    if (!fs::is_directory(s.out_dir)) throw Error(s.out_dir + ": cannot create the output folder" + (ec ? ": " + ec.message() : ""));
    Progress progress(int64_t(mine.size()), quiet);
    int64_t failed = 0;
    for (size_t m = 0; m < mine.size(); ++m) {
        const size_t q = mine[m];
        const std::string& query = queries[q];
        progress.show(double(m), true);
        std::string size;  // what was loaded, for an out-of-memory message
        std::string error;
        try {
            if (plan[q].empty()) throw Error("not a supported image (PNG, JPEG, BMP, TGA, PGM/PPM, NIfTI .nii/.nii.gz)");
            if (universeg::is_volume_path(query)) {
                segment_volume(seg, query, plan[q], size, progress, int64_t(m));
            } else {
                segment_image(seg, query, plan[q], size);
            }
        } catch (const std::bad_alloc&) {
            error = "out of memory " + (size.empty() ? std::string("reading it") : "segmenting " + size);
        } catch (const std::exception& e) {
            error = e.what();
        }
        if (error.empty()) continue;
        progress.clear();
        // Most errors already start with the file's name; the rest get it.
        std::fprintf(stderr, "universeg segment: error: %s\n",
                     one_line(error.rfind(query, 0) == 0 ? error : query + ": " + error).c_str());
        ++failed;
    }
    progress.show(double(mine.size()), true);
    progress.finish();
    const std::string of_shard = shard.n > 1 ? " of shard " + std::to_string(shard.k) + "/" + std::to_string(shard.n) + " (" +
                                                   std::to_string(queries.size()) + " in all)"
                                             : "";
    if (!quiet)
        std::printf("segmented %lld of %zu queries%s into %s\n", (long long)(int64_t(mine.size()) - failed), mine.size(),
                    of_shard.c_str(), s.out_dir.c_str());
    // A lone query's failure is its one error line; a batch also gets the count.
    if (failed && mine.size() > 1)
        std::fprintf(stderr, "universeg segment: %lld of %zu queries%s failed\n", (long long)failed, mine.size(), of_shard.c_str());
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

// RFC 4180 records of a CSV text: fields split at commas, "quoted" fields may hold commas,
// doubled quotes and line breaks. Errors name `path` and the line.
std::vector<std::vector<std::string>> read_csv(const std::string& text, const std::string& path) {
    std::vector<std::vector<std::string>> records;
    std::vector<std::string> record;
    std::string field;
    bool quoted = false, was_quoted = false;
    int64_t line = 1;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
            else if (c == '"') quoted = false;
            else field += c, line += c == '\n';
        } else if (c == '"' && field.empty() && !was_quoted) {
            quoted = was_quoted = true;
        } else if (c == ',' || c == '\n') {
            record.push_back(field), field.clear(), was_quoted = false;
            if (c == '\n') records.push_back(record), record.clear(), ++line;
        } else if (c != '\r') {
            if (was_quoted) throw Error(path + ": line " + std::to_string(line) + ": text after a closing quote");
            field += c;
        }
    }
    if (quoted) throw Error(path + ": a quoted field is not closed");
    if (!field.empty() || !record.empty()) record.push_back(field), records.push_back(record);
    return records;
}

const char* kEvalCsvHeader = "image,label,dice,iou,truth_pixels,pred_pixels,overlap_pixels";

// The rows of tables that eval --csv wrote, in the order one eval over all of them has: by image,
// then label. Dice and IoU are recomputed from the pixel counts, as eval computes them.
std::vector<EvalRow> merge_tables(const std::vector<std::string>& paths) {
    std::map<std::pair<std::string, int64_t>, std::pair<EvalRow, std::string>> rows;  // with the file it came from
    for (const std::string& path : paths) {
        const std::vector<uint8_t> bytes = universeg::read_file(path);
        const std::vector<std::vector<std::string>> records = read_csv(std::string(bytes.begin(), bytes.end()), path);
        std::string header;
        for (const std::string& f : records.empty() ? std::vector<std::string>{} : records[0]) header += (header.empty() ? "" : ",") + f;
        if (header != kEvalCsvHeader)
            throw Error(path + ": not a table of universeg eval --csv (its first line is not " + kEvalCsvHeader + ")");
        for (size_t r = 1; r < records.size(); ++r) {
            const std::vector<std::string>& f = records[r];
            const std::string where = path + ": row " + std::to_string(r + 1);
            if (f.size() != 7) throw Error(where + ": " + std::to_string(f.size()) + " fields, not 7");
            auto count = [&](const std::string& v, const char* what) {
                uint64_t n = 0;
                bool ok = !v.empty();
                for (char c : v) ok = ok && c >= '0' && c <= '9' && universeg::detail::append_digit(n, c, uint64_t(INT64_MAX));
                if (!ok) throw Error(where + ": " + what + " '" + v + "' is not a count");
                return int64_t(n);
            };
            EvalRow row{f[0], count(f[1], "label"), {}};
            row.o.truth = count(f[4], "truth_pixels"), row.o.pred = count(f[5], "pred_pixels"), row.o.both = count(f[6], "overlap_pixels");
            if (row.o.both > std::min(row.o.truth, row.o.pred)) throw Error(where + ": more overlap pixels than truth or prediction pixels");
            const auto ins = rows.emplace(std::make_pair(row.image, row.label), std::make_pair(row, path));
            if (!ins.second)
                throw Error(path + ": image " + row.image + ", label " + f[1] + " is also in " + ins.first->second.second +
                            ": the tables overlap");
        }
    }
    std::vector<EvalRow> out;
    for (const auto& kv : rows) out.push_back(kv.second.first);
    return out;
}

int cmd_eval(int argc, char** argv) {
    Args a("eval", kEvalUsage, argc, argv, {"--pred", "--truth", "--csv"}, {"--quiet", "--only-predicted", "--merge"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    const bool quiet = a.has("--quiet");
    std::vector<EvalRow> rows;
    int64_t failed = 0;
    size_t truth_count = 0;
    if (a.has("--merge")) {
        for (const char* o : {"--pred", "--truth", "--only-predicted"})
            if (a.has(o)) throw Error(std::string("--merge takes tables only, not ") + o);
        if (a.positional().empty()) throw Error("--merge needs the tables (CSV files that eval --csv wrote)");
        rows = merge_tables(a.positional());
    } else {
        if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
        std::string truth_dir = a.get("--truth");
        std::error_code ec;
        if (fs::is_directory(fs::path(truth_dir) / "labels", ec)) truth_dir = (fs::path(truth_dir) / "labels").string();
        const std::map<std::string, std::string> truths = label_files(truth_dir), preds = label_files(a.get("--pred"));
        if (truths.empty()) throw Error(truth_dir + ": no label maps");
        truth_count = truths.size();
        for (const auto& kv : truths) {
            try {
                auto it = preds.find(kv.first);
                if (it == preds.end() && a.has("--only-predicted")) continue;
                if (it == preds.end()) throw Error(kv.second + ": no prediction named " + kv.first + " in " + a.get("--pred"));
                std::vector<float> t, p;
                load_pair(kv.second, it->second, t, p);
                for (const auto& lo : universeg::label_overlaps(t.data(), p.data(), t.size())) rows.push_back({kv.first, lo.first, lo.second});
            } catch (const std::exception& e) {
                std::fprintf(stderr, "universeg eval: error: %s\n", one_line(e.what()).c_str());
                ++failed;
            }
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
    if (failed) std::fprintf(stderr, "universeg eval: %lld of %zu ground-truth maps could not be scored\n", (long long)failed, truth_count);
    return failed ? 1 : 0;
}

}  // namespace cli
