// universeg/segment/segmenter.hpp - the front door: a Segmenter holds a model and a support (labelled
// examples from a folder or from memory), builds and calibrates its task once, and segments any
// number of queries, 2-D images or volumes slice by slice, returning label maps and probabilities
// at the query's size. How it works: docs/segment.md.
#pragma once

#include "../io/nifti.hpp"
#include "../io/weights.hpp"
#include "calibration.hpp"

#include <functional>
#include <memory>
#include <variant>

namespace universeg {

// The model size when the weights do not say: the official UniverSeg's.
constexpr int64_t kDefaultModelSize = 128;
// The largest model side accepted: beyond it one forward pass takes tens of GB.
constexpr int64_t kMaxModelSide = 4096;

struct ImageSize {
    int64_t height = 0, width = 0;
};

// "N" or "HxW", sides in [1, kMaxModelSide]; errors name `what` (an option, a file's metadata).
inline ImageSize parse_model_size(const std::string& text, const std::string& what) {
    char* end = nullptr;
    ImageSize s;
    s.height = s.width = std::strtoll(text.c_str(), &end, 10);
    if (*end == 'x' || *end == 'X') s.width = std::strtoll(end + 1, &end, 10);
    if (text.empty() || *end || s.height < 1 || s.width < 1 || s.height > kMaxModelSide || s.width > kMaxModelSide)
        throw Error(what + " must be N or HxW with sizes in [1, " + std::to_string(kMaxModelSide) + "], got '" + text + "'");
    return s;
}

// The size the weights were trained at, which they segment best at: the image_size in a
// safetensors file's metadata, else kDefaultModelSize. Errors name the file.
inline ImageSize weights_image_size(const std::string& weights_path) {
    const std::map<std::string, std::string> meta = weights_metadata(weights_path);
    const auto it = meta.find("image_size");
    if (it == meta.end()) return {kDefaultModelSize, kDefaultModelSize};
    return parse_model_size(it->second, weights_path + ": metadata image_size");
}

// Throws unless `model` can work at `size`: both sides multiples of its size multiple (each
// encoder level halves the resolution). Errors name `what`.
inline void check_model_size(const Model& model, ImageSize size, const std::string& what) {
    const std::string s = std::to_string(size.height) + "x" + std::to_string(size.width);
    if (size.height < 1 || size.width < 1 || size.height > kMaxModelSide || size.width > kMaxModelSide)
        throw Error(what + ": model size " + s + " is not in [1, " + std::to_string(kMaxModelSide) + "]");
    const int64_t m = model.config().size_multiple();
    if (size.height % m || size.width % m)
        throw Error(what + ": model size " + s + " is not a multiple of " + std::to_string(m) + ", as these weights need");
}

// SegmenterOptions::tile: windows of the model size where calibration scores them higher than
// whole images (docs/segment.md, "Tiles").
constexpr int64_t kTileAuto = -1;
// Windows are resized to the model size; upsampled more than this they are mostly blur, and a
// large image would take tens of thousands of them.
constexpr int64_t kMaxTileUpsampling = 8;
constexpr int64_t kMinTile = 16;

// The smallest window side for a model size: kMinTile px, and at least 1 / kMaxTileUpsampling of
// the model's larger side.
inline int64_t min_tile(ImageSize model) {
    return std::max(kMinTile, (std::max(model.height, model.width) + kMaxTileUpsampling - 1) / kMaxTileUpsampling);
}

// What a Segmenter adds to a task's options (SegmentOptions: subsets, ensemble, flips, threshold,
// calibration, label values, memory).
struct SegmenterOptions : SegmentOptions {
    ImageSize size{kDefaultModelSize, kDefaultModelSize};  // the model size (weights_image_size)
    double clip_low = 0, clip_high = 100;  // intensity percentiles clipped to before min-max normalising
    int axis = 2;                          // volumes: slices along voxel axis 0, 1 or 2
    int64_t tile = 0;                      // 0: whole images; N >= min_tile: windows of NxN px; kTileAuto
    bool histogram_baseline = false;       // the classical per-task intensity classifier instead of the network
    bool keep_probabilities = true;        // false: label maps only (a volume saves a float volume per label)
};

// Throws unless the options are usable, naming the field at fault.
inline void check_options(const SegmenterOptions& o) {
    auto fail = [](const std::string& m) { throw Error("segmenter options: " + m); };
    if (o.size.height < 1 || o.size.width < 1 || o.size.height > kMaxModelSide || o.size.width > kMaxModelSide)
        fail("size " + std::to_string(o.size.height) + "x" + std::to_string(o.size.width) + " is not in [1, " +
             std::to_string(kMaxModelSide) + "]");
    if (!(o.clip_low >= 0 && o.clip_low < o.clip_high && o.clip_high <= 100))
        fail("clip percentiles must satisfy 0 <= low < high <= 100");
    if (o.axis < 0 || o.axis > 2) fail("axis must be 0, 1 or 2, not " + std::to_string(o.axis));
    if (o.tile != 0 && o.tile != kTileAuto && o.tile < min_tile(o.size))
        fail("tile of " + std::to_string(o.tile) + " px is below the smallest for this model size, " +
             std::to_string(min_tile(o.size)) + " px");
    if (o.support_size < 0 || o.ensemble < 1) fail("support size and ensemble must be positive");
    if (o.flips != 1 && o.flips != 2 && o.flips != 4) fail("flips must be 1, 2 or 4, not " + std::to_string(o.flips));
    if (!(o.threshold >= 0 && o.threshold <= 1)) fail("threshold must be in [0, 1]");
}

// Clip (where asked) and min-max normalise, in place: images whole, volumes whole (so that
// their slices keep one contrast).
// The colour planes are left as recorded: stretched plane by plane, colours of one image would
// shift against another's, and colour evidence is better without (docs/segment.md).
inline void prepare_intensities(std::vector<float>& v, const SegmenterOptions& o) {
    if (o.clip_low > 0 || o.clip_high < 100) clip_percentiles(v.data(), v.size(), o.clip_low, o.clip_high);
    normalize_min_max(v.data(), v.size());
}

// Throws unless the image holds height x width pixels and, if colour, three planes of them.
inline void check_image(const Image& img, const std::string& name) {
    const int64_t n = img.height * img.width;
    if (img.height < 1 || img.width < 1 || int64_t(img.pixels.size()) != n)
        throw Error(name + ": image of " + std::to_string(img.height) + "x" + std::to_string(img.width) + " with " +
                    std::to_string(img.pixels.size()) + " pixels");
    if (!img.colour.empty() && int64_t(img.colour.size()) != 3 * n)
        throw Error(name + ": colour planes of " + std::to_string(img.colour.size()) + " values for an image of " +
                    std::to_string(img.height) + "x" + std::to_string(img.width) + " (3 planes of its pixels, or none)");
}

// The labelled examples that define a task, in the order added: the pairs of folders in the
// nnU-Net layout (DIR/images/NAME.ext with DIR/labels/NAME.ext; 2-D images and NIfTI volumes,
// whose labelled slices become examples) and pairs in memory. Folders are listed and checked
// when added and their files read when the support is prepared, one at a time, so only what the
// task keeps stays in memory.
class Support {
public:
    Support() = default;
    static Support folder(const std::string& dir) {
        Support s;
        s.add_folder(dir);
        return s;
    }

    // Adds every pair of the folder, or (on an error naming the file) none.
    Support& add_folder(const std::string& dir) {
        const std::vector<LabelledPair> listed = list_labelled_folder(dir);
        for (const LabelledPair& p : listed)
            if (is_volume_path(p.image_path) != is_volume_path(p.label_path))
                throw Error(p.image_path + " and " + p.label_path + ": an image and a volume cannot form a support pair");
        for (const LabelledPair& p : listed) items_.push_back(FilePair{p.image_path, p.label_path});
        origins_.push_back(dir);
        return *this;
    }
    // A 2-D example: an image of any intensity range (prepared as the queries are) and its label
    // map of integer values; `name` is for messages.
    Support& add(Image image, Image labels, std::string name) {
        items_.push_back(ImagePair{std::move(image), std::move(labels), std::move(name)});
        return *this;
    }
    // A volume: its slices along SegmenterOptions::axis that hold a label are examples.
    Support& add(Volume image, Volume labels, std::string name) {
        items_.push_back(VolumePair{std::move(image), std::move(labels), std::move(name)});
        return *this;
    }

    size_t pairs() const { return items_.size(); }
    // The files it reads: images and label maps. A caller that writes files must not write over them.
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        for (const Item& item : items_)
            if (const FilePair* f = std::get_if<FilePair>(&item)) out.insert(out.end(), {f->image, f->labels});
        return out;
    }

private:
    friend class PreparedSupport;
    struct FilePair {
        std::string image, labels;
    };
    struct ImagePair {
        Image image, labels;
        std::string name;
    };
    struct VolumePair {
        Volume image, labels;
        std::string name;
    };
    using Item = std::variant<FilePair, ImagePair, VolumePair>;
    std::vector<Item> items_;
    std::vector<std::string> origins_;  // the folders, for messages
};

// A Support read and prepared for SegmenterOptions: its examples at the model size (whole, or
// in windows) and sampled at their own size, and the label values the task will segment. A
// Segmenter is built from one; making it first tells a caller the label values before any
// forward pass (to check that an output format holds them, say).
class PreparedSupport {
public:
    PreparedSupport(const Support& support, const SegmenterOptions& options) : options_(options) {
        check_options(options_);
        set_.height = windows_.height = options_.size.height;
        set_.width = windows_.width = options_.size.width;
        // Only calibration can choose windows, so without it none are cut.
        try_windows_ = options_.tile == kTileAuto && options_.calibrate && !options_.histogram_baseline &&
                       options_.size.height == options_.size.width;
        for (const Support::Item& item : support.items_) {
            if (const auto* f = std::get_if<Support::FilePair>(&item)) {
                if (is_volume_path(f->image)) {
                    add_volume(load_nifti(f->image), load_nifti(f->labels), f->image, f->labels);
                } else {
                    add_image(load_image(f->image), load_label_map(f->labels), f->image, f->labels);
                }
            } else if (const auto* i = std::get_if<Support::ImagePair>(&item)) {
                add_image(i->image, i->labels, i->name, i->name);
            } else {
                const auto& v = std::get<Support::VolumePair>(item);
                add_volume(v.image, v.labels, v.name, v.name);
            }
        }
        if (set_.size() == 0) {
            std::string where = "the support";
            for (const std::string& o : support.origins_) where = o;
            if (support.items_.empty()) throw Error(where + ": no labelled examples");
            throw Error(where + ": the support volumes hold no labelled slice along axis " + std::to_string(options_.axis));
        }
        if (!try_windows_) windows_ = SupportSet{};
        values_ = task_values(set_, options_);
    }

    const SegmenterOptions& options() const { return options_; }
    // The label values the task segments, ascending.
    const std::vector<int64_t>& values() const { return values_; }
    // The examples at the model size: whole images or slices, or their windows (SegmenterOptions::tile).
    const SupportSet& examples() const { return set_; }

private:
    friend class Segmenter;

    // A 2-D pair at its own size, checked and prepared; `label_name` names the pair in messages.
    void add_image(Image image, const Image& labels, const std::string& image_name, const std::string& label_name) {
        check_image(image, image_name);
        check_image(labels, label_name);
        if (image.height != labels.height || image.width != labels.width)
            throw Error(label_name + ": label map of " + std::to_string(labels.height) + "x" + std::to_string(labels.width) +
                        " does not match its image " + image_name + " (" + std::to_string(image.height) + "x" +
                        std::to_string(image.width) + ")");
        prepare_intensities(image.pixels, options_);
        add(image, labels, label_name, {-1, -1});
    }

    // A volume pair: its slices along the axis that hold a label, prepared as one.
    void add_volume(Volume image, const Volume& labels, const std::string& image_name, const std::string& label_name) {
        if (image.nx != labels.nx || image.ny != labels.ny || image.nz != labels.nz)
            throw Error(label_name + ": label volume of " + dims(labels) + " does not match its image " + image_name + " (" +
                        dims(image) + ")");
        if (image.nx < 1 || image.ny < 1 || image.nz < 1 || int64_t(image.voxels.size()) != image.nx * image.ny * image.nz ||
            labels.voxels.size() != image.voxels.size())
            throw Error(image_name + ": volume of " + dims(image) + " with " + std::to_string(image.voxels.size()) + " voxels");
        prepare_intensities(image.voxels, options_);
        int64_t h, w, n;
        slice_shape(image, options_.axis, h, w, n);
        // One volume, one source: its slices are held out together in calibration.
        const std::pair<int64_t, int64_t> sources{set_.next_source(), windows_.next_source()};
        for (int64_t k = 0; k < n; ++k) {
            const Image slice_labels = volume_slice(labels, options_.axis, k);
            if (std::all_of(slice_labels.pixels.begin(), slice_labels.pixels.end(), [](float v) { return v == 0; })) continue;
            add(volume_slice(image, options_.axis, k), slice_labels, label_name + " slice " + std::to_string(k), sources);
        }
    }

    // One prepared pair into the set (whole or in windows), and while every pair is large, into
    // the windows of the model size that kTileAuto compares.
    void add(const Image& image, const Image& labels, const std::string& name, std::pair<int64_t, int64_t> sources) {
        if (options_.tile > 0) {
            add_support_tiles(set_, image, labels, name, options_.tile, sources.first);
        } else {
            add_support_resized(set_, image, labels, name, sources.first);
        }
        if (!try_windows_) return;
        if (large_support(image.height, image.width, set_)) {
            add_support_tiles(windows_, image, labels, name, set_.height, sources.second);
        } else {
            try_windows_ = false;
        }
    }

    static std::string dims(const Volume& v) {
        return std::to_string(v.nx) + "x" + std::to_string(v.ny) + "x" + std::to_string(v.nz);
    }

    SegmenterOptions options_;
    SupportSet set_;       // whole images, or windows of options_.tile
    SupportSet windows_;   // kTileAuto: windows of the model size, while every example is large
    bool try_windows_ = false;
    std::vector<int64_t> values_;
};

// What a query became, at its size.
struct Segmentation {
    Image labels;                       // label values; 0 where no label's probability passes the threshold
    std::vector<int64_t> values;        // the label values, ascending
    std::vector<Image> probabilities;   // per value, calibrated; empty with the histogram baseline or
                                        // without keep_probabilities
};

struct VolumeSegmentation {
    Volume labels;                      // with the query's header
    std::vector<int64_t> values;
    std::vector<Volume> probabilities;  // as in Segmentation
};

// Called after each slice of a volume with the slices done and their count (progress reports).
using SliceProgress = std::function<void(int64_t done, int64_t slices)>;

// --histogram-baseline: the classical per-task intensity-histogram classifier that train and
// finetune report (histogram_baseline), one label value at a time, from the supports at their
// own size (their samples), on a prepared query at its size; a pixel that several values claim
// takes the lowest.
inline Image histogram_label_map(const SupportSet& set, const std::vector<int64_t>& values, const Image& prepared) {
    Image out{prepared.height, prepared.width, std::vector<float>(prepared.pixels.size(), 0.0f)};
    std::vector<float> images, labels, mask, claim(prepared.pixels.size());
    // Where every example is colour, the classifier's "intensities" are colour bins, each the
    // middle of its bin of kColourBins in [0, 1].
    const bool colour = set.colour();
    auto middle = [](int64_t bin) { return (float(bin) + 0.5f) / float(kColourBins); };
    for (const SupportSamples& p : set.samples) {
        for (size_t i = 0; i < p.images.size(); ++i) images.push_back(colour ? middle(p.colour[i]) : p.images[i]);
        labels.insert(labels.end(), p.labels.begin(), p.labels.end());
    }
    std::vector<float> binned;
    if (colour)
        for (size_t i = 0; i < prepared.pixels.size(); ++i) binned.push_back(middle(colour_bin(prepared, i)));
    const std::vector<float>& query = colour ? binned : prepared.pixels;
    mask.resize(labels.size());
    for (int64_t v : values) {
        for (size_t i = 0; i < mask.size(); ++i) mask[i] = labels[i] == float(v) ? 1.0f : 0.0f;
        histogram_baseline(images.data(), mask.data(), 1, int64_t(mask.size()), query.data(), int64_t(claim.size()), claim.data(),
                           int(colour ? kColourBins : kIntensityBins));
        for (size_t i = 0; i < claim.size(); ++i)
            if (claim[i] > 0 && out.pixels[i] == 0) out.pixels[i] = float(v);
    }
    return out;
}

// The smallest NIfTI type that holds every label value (the largest, values.back(), decides).
inline int16_t label_nifti_type(const std::vector<int64_t>& values) {
    const int64_t top = values.empty() ? 0 : values.back();
    return top <= 255 ? kNiftiUint8 : top <= 32767 ? kNiftiInt16 : kNiftiInt32;
}

// Segments queries like the examples of its support. Building one reads and prepares the
// support, builds the task and calibrates it (with kTileAuto, for whole images and for windows,
// keeping the better); after that it does not change: segment() and the other members are const
// and may be called from several threads at once. It shares the model it was given.
class Segmenter {
public:
    // kTileAuto's comparison: the calibrated leave-one-out mean Dice of windows and of whole images.
    struct TileChoice {
        bool compared = false;  // false: not every example was large enough, or no calibration
        double windows_dice = NAN, whole_dice = NAN;
    };
    // What building a Segmenter decides at the cost of forward passes: the calibration and, with
    // kTileAuto, windows or whole images. Given back to a Segmenter of the same model, support
    // and options, it skips that work and segments exactly as the one it came from (the
    // command's --save-task and --task: shards of a cohort calibrate once).
    struct Calibrated {
        Task::Calibration calibration;  // offsets empty: not calibrated
        TileChoice tile_choice;
        bool windows = false;  // kTileAuto chose windows
    };

    Segmenter(const Model& model, const Support& support, const SegmenterOptions& options = {})
        : Segmenter(std::make_shared<const Model>(model), PreparedSupport(support, options)) {}
    Segmenter(const Model& model, PreparedSupport support) : Segmenter(std::make_shared<const Model>(model), std::move(support)) {}
    Segmenter(std::shared_ptr<const Model> model, PreparedSupport support)
        : model_(std::move(model)), options_(support.options_), set_(std::move(support.set_)) {
        build(support, nullptr);
    }
    // With what another Segmenter's calibrated() says instead of calibrating; throws when it
    // cannot be that of this support and options (label count, calibration or windows where
    // there can be none).
    Segmenter(std::shared_ptr<const Model> model, PreparedSupport support, const Calibrated& saved)
        : model_(std::move(model)), options_(support.options_), set_(std::move(support.set_)) {
        build(support, &saved);
    }
    Segmenter(const Model& model, PreparedSupport support, const Calibrated& saved)
        : Segmenter(std::make_shared<const Model>(model), std::move(support), saved) {}

    // A 2-D query of any size and intensity range (prepared here as the supports were).
    Segmentation segment(const Image& query) const {
        check_image(query, "query");
        Segmentation out;
        out.values = task_.values;
        out.labels = segment_prepared(prepare(query), out.probabilities);
        if (!options_.keep_probabilities) out.probabilities.clear();
        return out;
    }
    // The same of a row-major height x width array.
    Segmentation segment(const float* pixels, int64_t height, int64_t width) const {
        if (!pixels || height < 1 || width < 1 || height > limits().max_image_side || width > limits().max_image_side)
            throw Error("query: array of " + std::to_string(height) + "x" + std::to_string(width) + " pixels");
        return segment(Image{height, width, std::vector<float>(pixels, pixels + height * width)});
    }
    // A volume, slice by slice along SegmenterOptions::axis, its intensities prepared whole.
    VolumeSegmentation segment(const Volume& query, const SliceProgress& progress = {}) const {
        if (query.nx < 1 || query.ny < 1 || query.nz < 1 || int64_t(query.voxels.size()) != query.nx * query.ny * query.nz)
            throw Error("query: volume of " + std::to_string(query.nx) + "x" + std::to_string(query.ny) + "x" +
                        std::to_string(query.nz) + " with " + std::to_string(query.voxels.size()) + " voxels");
        const Volume prepared = prepare(query);
        VolumeSegmentation out;
        out.values = task_.values;
        out.labels = query;
        const bool keep = options_.keep_probabilities && !options_.histogram_baseline;
        out.probabilities.assign(keep ? task_.values.size() : 0, query);
        int64_t h, w, n;
        slice_shape(query, options_.axis, h, w, n);
        for (int64_t k = 0; k < n; ++k) {
            std::vector<Image> probs;
            set_volume_slice(out.labels, options_.axis, k, segment_prepared(volume_slice(prepared, options_.axis, k), probs));
            for (size_t l = 0; l < out.probabilities.size(); ++l) set_volume_slice(out.probabilities[l], options_.axis, k, probs[l]);
            if (progress) progress(k + 1, n);
        }
        return out;
    }

    // A query as the network and the intensity evidence see it: clipped and min-max normalised at
    // its size (a volume whole). For overlays.
    Image prepare(Image query) const {
        prepare_intensities(query.pixels, options_);
        return query;
    }
    Volume prepare(Volume query) const {
        prepare_intensities(query.voxels, options_);
        return query;
    }

    const SegmenterOptions& options() const { return options_; }
    const Model& model() const { return *model_; }
    // The label values segmented, ascending.
    const std::vector<int64_t>& values() const { return task_.values; }
    // The window side the queries are segmented in (as kTileAuto chose); 0: whole images.
    int64_t tile() const { return tile_; }
    // The examples the task was built from (whole, or windows) and the task: subsets, calibration.
    const SupportSet& support() const { return set_; }
    const Task& task() const { return task_; }

    const TileChoice& tile_choice() const { return choice_; }
    Calibrated calibrated() const { return {task_.calibration, choice_, options_.tile == kTileAuto && tile_ > 0}; }

private:
    // The task, calibrated here or (`saved`) as saved; `support` has given up its set_ already.
    void build(PreparedSupport& support, const Calibrated* saved) {
        if (!model_) throw Error("Segmenter: no model");
        check_model_size(*model_, options_.size, "segmenter options");
        SegmentOptions task_options = options_;
        task_options.calibrate = options_.calibrate && !options_.histogram_baseline && !saved;
        task_options.whole_images = options_.whole_images && options_.tile <= 0;
        if (!saved) {
            task_ = make_task(*model_, set_, task_options);
            tile_ = std::max<int64_t>(options_.tile, 0);
            if (support.windows_.size() > 0 && !task_.calibration.offsets.empty()) {
                SegmentOptions window_options = task_options;
                window_options.whole_images = false;
                Task tiled = make_task(*model_, support.windows_, window_options);
                choice_ = {true, tiled.calibration.dice_after, task_.calibration.dice_after};
                if (choice_.windows_dice > choice_.whole_dice + kCalibrationTolerance)
                    set_ = std::move(support.windows_), task_ = std::move(tiled), tile_ = set_.height;
            }
            return;
        }
        auto refuse = [](const std::string& why) { throw Error("the saved calibration is not of this support and options: " + why); };
        if (saved->windows && support.windows_.size() == 0) refuse("it chose windows, and these examples have none to choose");
        if (saved->windows) set_ = std::move(support.windows_);
        task_ = make_task(*model_, set_, task_options);
        tile_ = saved->windows ? set_.height : std::max<int64_t>(options_.tile, 0);
        choice_ = saved->tile_choice;
        const Task::Calibration& c = saved->calibration;
        const bool calibrates = options_.calibrate && !options_.histogram_baseline && set_.size() >= kMinCalibrationSupports &&
                                int64_t(task_.values.size()) <= kMaxCalibrationLabels;
        if (calibrates != !c.offsets.empty())
            refuse(calibrates ? "it holds no calibration, and this task calibrates" : "it holds a calibration, and this task has none");
        if (c.offsets.size() != c.intensity_weights.size() || (calibrates && c.offsets.size() != task_.values.size()))
            refuse(std::to_string(c.offsets.size()) + " label offsets for " + std::to_string(task_.values.size()) + " labels");
        if (!c.regions.empty() && c.regions.size() != c.offsets.size())
            refuse(std::to_string(c.regions.size()) + " label region choices for " + std::to_string(c.offsets.size()) + " labels");
        for (int64_t r : c.regions)
            if (r < 0 || r > (kKeepLargest | kFillHoles)) refuse("region choice " + std::to_string(r) + " is none of 0 to 3");
        if (tile_ > 0 && std::count(c.regions.begin(), c.regions.end(), 0) != int64_t(c.regions.size()))
            refuse("it chose regions for windows, which never choose them");
        if (c.colour && !set_.colour()) refuse("it chose colour evidence, and these examples are not all colour");
        if (c.types && tile_ > 0) refuse("it chose example types for windows, which never choose them");
        std::vector<Task::Type> types = c.types ? example_types(set_) : std::vector<Task::Type>{};
        if (c.types && types.empty()) refuse("it chose example types, and these examples do not fall into two");
        task_.calibration = c;
        task_.calibration.regions.resize(c.offsets.size(), 0);  // a record from before regions chose none
        if (c.types) set_types(task_, set_, std::move(types), task_options);
        if (c.colour || c.types) set_evidence(task_, set_, c.colour);
    }

    // The label map of a prepared query, and in probs its calibrated probabilities (none with the
    // histogram baseline), both at its size.
    Image segment_prepared(const Image& prepared, std::vector<Image>& probs) const {
        if (options_.histogram_baseline) return histogram_label_map(set_, task_.values, prepared);
        if (tile_) {
            probs = predict_tiled(task_, prepared, tile_);
        } else {
            probs = predict_probabilities(task_, resize_bilinear(prepared, task_.height, task_.width));
            for (Image& p : probs) p = resize_bilinear(p, prepared.height, prepared.width);
        }
        Image labels = label_map(task_, probs, prepared, options_.threshold);
        calibrated_probabilities(task_, probs, prepared);
        return labels;
    }

    std::shared_ptr<const Model> model_;
    SegmenterOptions options_;
    SupportSet set_;
    Task task_;
    int64_t tile_ = 0;
    TileChoice choice_;
};

}  // namespace universeg
