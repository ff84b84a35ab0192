// universeg.Support, universeg.Segmenter and universeg.Segmentation: the library's segmentation
// API (segment/segmenter.hpp) on numpy arrays and image files, calibration and segmentation run
// with the GIL released; and the file helpers load_image, load_label_map and save_labels.
//
// Arrays: a 2-D image is (H,W), row-major as an Image holds it; a volume is (X,Y,Z), indexed
// [x, y, z] as nibabel reads a NIfTI file, x fastest (Fortran order) as a Volume holds it. Label
// maps come out as int32 arrays in the same layouts, probabilities as float32 (L,H,W) or (L,X,Y,Z).
#include "bindings.hpp"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <universeg/segment/segment.hpp>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace universeg_python {
namespace {

namespace fs = std::filesystem;
using namespace pybind11::literals;

using Shape = std::vector<py::ssize_t>;

// The byte strides of an array of `shape`: C order for images (2-D), Fortran order for volumes.
Shape strides_of(const Shape& shape, py::ssize_t itemsize) {
    Shape strides(shape.size());
    const bool fortran = shape.size() == 3;
    for (size_t k = 0; k < shape.size(); ++k) {
        const size_t d = fortran ? k : shape.size() - 1 - k;
        strides[d] = itemsize;
        itemsize *= shape[d];
    }
    return strides;
}

Shape shape_vector(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

// "(r, c)" or "(x, y, z)": the index of the element at `offset` in the layout above.
std::string index_of(py::ssize_t offset, const Shape& shape) {
    std::vector<int64_t> index(shape.size());
    const bool fortran = shape.size() == 3;
    for (size_t k = 0; k < shape.size(); ++k) {
        const size_t d = fortran ? k : shape.size() - 1 - k;
        index[d] = offset % shape[d];
        offset /= shape[d];
    }
    return universeg::shape_string(index);
}

// `obj` as an image (2-D) or volume (3-D) array of real numbers; errors name `name`.
py::array image_or_volume(py::handle obj, const std::string& name) {
    py::array a = as_real_array(obj, name.c_str());
    if (a.ndim() != 2 && a.ndim() != 3)
        throw py::value_error(name + " must be a 2-D image (H,W) or a 3-D volume (X,Y,Z), got shape " + shape_of(a));
    return a;
}

// The values of an image or volume array as float32 in its layout, in one copy: numpy converts
// the dtype and order while writing into the vector, whatever the input's were.
std::vector<float> float_values(const py::array& a) {
    std::vector<float> out(size_t(a.size()));
    if (out.empty()) return out;  // the library names the empty shape
    const Shape shape = shape_vector(a);
    const py::array view(py::dtype::of<float>(), shape, strides_of(shape, sizeof(float)), out.data(),
                         py::capsule(out.data(), [](void*) {}));  // borrowed: `out` owns the memory
    py::module_::import("numpy").attr("copyto")(view, a, "casting"_a = "same_kind");
    return out;
}

universeg::Image to_image(const py::array& a) { return {a.shape(0), a.shape(1), float_values(a)}; }

universeg::Volume to_volume(const py::array& a) {
    universeg::Volume v;
    v.nx = a.shape(0), v.ny = a.shape(1), v.nz = a.shape(2);
    v.voxels = float_values(a);
    return v;
}

// Label values (integers held as floats) as an int32 array of `shape`.
py::array label_array(const std::vector<float>& values, const Shape& shape) {
    py::array_t<int32_t> out(shape, strides_of(shape, sizeof(int32_t)));
    std::transform(values.begin(), values.end(), out.mutable_data(), [](float v) { return int32_t(v); });
    return out;
}

// Per-label maps of `shape` stacked into one float32 array (L, *shape); None when there are none.
py::object stack(const std::vector<const std::vector<float>*>& maps, Shape shape) {
    if (maps.empty()) return py::none();
    const py::ssize_t n = std::accumulate(shape.begin(), shape.end(), py::ssize_t(1), std::multiplies<>());
    Shape strides = strides_of(shape, sizeof(float));
    strides.insert(strides.begin(), n * py::ssize_t(sizeof(float)));
    shape.insert(shape.begin(), py::ssize_t(maps.size()));
    py::array_t<float> out(shape, strides);
    for (size_t l = 0; l < maps.size(); ++l) std::copy(maps[l]->begin(), maps[l]->end(), out.mutable_data() + l * size_t(n));
    return out;
}

bool is_path(py::handle obj) {
    return py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj) || py::hasattr(obj, "__fspath__");
}

// Whether `message` is about `file`: the library's messages start with the name of what they
// are about, followed by ':' or ' '.
bool names_file(const std::string& message, const std::string& file) {
    return message.size() > file.size() && message.compare(0, file.size(), file) == 0 &&
           (message[file.size()] == ':' || message[file.size()] == ' ');
}

// Reads or writes a file with the GIL released; the library's errors become OSError carrying
// its message, FileNotFoundError where the file to read (or the folder to write in) is missing.
template <class Work>
auto file_io(const std::string& path, Work work, bool writing = false) {
    try {
        py::gil_scoped_release release;
        return work(path);
    } catch (const universeg::Error& e) {
        raise_file_error(writing ? fs::absolute(path).parent_path().string() : path, e.what());
    }
}

// --- label maps to files ---

// Writes a label map as `universeg segment` does: a 2-D one as a PNG (8-bit, or 16-bit when a
// value exceeds 255), a volume as NIfTI with `header` and the smallest integer type that holds
// `top` (none: the map's largest value). Values must be integers in [0, 65535] for a PNG and in
// [0, 2^24) for NIfTI (the label values the library takes).
void write_labels(const fs::path& file, py::handle labels, const universeg::NiftiHeader& header, std::optional<int64_t> top) {
    const std::string path = file.string();
    const py::array a = image_or_volume(labels, "labels");
    const bool volume = a.ndim() == 3;
    if (volume != universeg::is_volume_path(path) || (!volume && universeg::image_extension(path) != ".png"))
        throw py::value_error(path + (volume ? ": a label volume is saved as NIfTI (.nii or .nii.gz)"
                                             : ": a 2-D label map is saved as PNG (.png)"));
    std::vector<float> values = float_values(a);
    const float limit = volume ? 16777215.0f : 65535.0f;
    const auto bad = std::find_if(values.begin(), values.end(), [&](float v) { return !(v >= 0 && v <= limit) || v != std::floor(v); });
    const Shape shape = shape_vector(a);
    if (bad != values.end())
        throw py::value_error("labels: the value " + std::to_string(*bad) + " at " + index_of(bad - values.begin(), shape) +
                              " is not an integer in [0, " + std::to_string(int64_t(limit)) + "]");
    file_io(path, [&](const std::string& p) {
        if (!volume) return universeg::save_label_png(p, universeg::Image{shape[0], shape[1], std::move(values)});
        const int64_t largest = top ? *top : int64_t(*std::max_element(values.begin(), values.end()));
        const universeg::Volume v{header, shape[0], shape[1], shape[2], std::move(values)};
        universeg::save_nifti(p, v, universeg::label_nifti_type({largest}));
    }, true);
}

// --- Support ---

// universeg.Support. A Segmenter being built reads the pairs with the GIL released, through its
// own reference to them; adding to a support while that reference lives adds to a copy.
struct PySupport {
    std::shared_ptr<universeg::Support> pairs = std::make_shared<universeg::Support>();

    universeg::Support& modify() {
        if (pairs.use_count() > 1) pairs = std::make_shared<universeg::Support>(*pairs);
        return *pairs;
    }
};

// Folders are listed with the GIL held: it is quick, and the pairs must not change meanwhile.
void add_folder(PySupport& s, const fs::path& folder) {
    const std::string dir = folder.string();
    try {
        s.modify().add_folder(dir);
    } catch (const universeg::Error& e) {
        raise_file_error(dir, e.what());
    }
}

void add_pair(PySupport& s, py::handle image, py::handle labels, std::optional<std::string> name) {
    const std::string n = name ? *name : "support pair " + std::to_string(s.pairs->pairs());
    const py::array i = image_or_volume(image, n + ": image");
    const py::array l = as_real_array(labels, (n + ": labels").c_str());
    if (shape_vector(l) != shape_vector(i))
        throw py::value_error(n + ": labels must have the image's shape " + shape_of(i) + ", got shape " + shape_of(l));
    if (i.ndim() == 2) {
        s.modify().add(to_image(i), to_image(l), n);
    } else {
        s.modify().add(to_volume(i), to_volume(l), n);
    }
}

PySupport from_arrays(const py::sequence& images, const py::sequence& labels, std::optional<std::vector<std::string>> names) {
    if (images.size() != labels.size() || (names && names->size() != images.size()))
        throw py::value_error("images, labels and names must have one entry per pair, got " + std::to_string(images.size()) +
                              ", " + std::to_string(labels.size()) +
                              (names ? " and " + std::to_string(names->size()) : std::string(" and no names")));
    PySupport s;
    for (size_t k = 0; k < images.size(); ++k)
        add_pair(s, images[k], labels[k], names ? std::optional<std::string>((*names)[k]) : std::nullopt);
    return s;
}

// --- Segmentation ---

// universeg.Segmentation: what a query became.
struct Result {
    py::array labels;             // int32, the query's shape
    std::vector<int64_t> values;  // the label values, ascending
    py::object probabilities;     // float32 (L, *shape), or None
    universeg::NiftiHeader header;  // volumes: the query's, written by save()
};

Result result_of(const universeg::Segmentation& r) {
    const Shape shape{r.labels.height, r.labels.width};
    std::vector<const std::vector<float>*> maps;
    for (const universeg::Image& p : r.probabilities) maps.push_back(&p.pixels);
    return {label_array(r.labels.pixels, shape), r.values, stack(maps, shape), {}};
}

Result result_of(const universeg::VolumeSegmentation& r) {
    const Shape shape{r.labels.nx, r.labels.ny, r.labels.nz};
    std::vector<const std::vector<float>*> maps;
    for (const universeg::Volume& p : r.probabilities) maps.push_back(&p.voxels);
    return {label_array(r.labels.voxels, shape), r.values, stack(maps, shape), r.labels.header};
}

std::string join(const std::vector<int64_t>& values) {
    std::string s;
    for (int64_t v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
    return s;
}

// --- Segmenter ---

// universeg.Segmenter: a calibrated task, shared by the calls that use it.
struct PySegmenter {
    std::shared_ptr<const universeg::Segmenter> seg;
    std::optional<int> threads;  // the calls' default
};

// The size the weights were trained at: their metadata's image_size, else the official 128.
universeg::ImageSize weights_size(const LoadedModel& model) {
    const auto it = model.metadata.find("image_size");
    if (it == model.metadata.end()) return {universeg::kDefaultModelSize, universeg::kDefaultModelSize};
    return universeg::parse_model_size(it->second, model.path + ": metadata image_size");
}

// A Python int as int64, those beyond its range clamped (the options' checks then refuse them);
// none for other types.
std::optional<int64_t> as_int(py::handle obj) {
    if (!py::isinstance<py::int_>(obj)) return std::nullopt;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
    return overflow ? (overflow > 0 ? INT64_MAX : INT64_MIN) : int64_t(v);
}

universeg::ImageSize size_option(const LoadedModel& model, const py::object& size) {
    if (size.is_none()) return weights_size(model);
    if (const std::optional<int64_t> n = as_int(size)) return {*n, *n};
    if (py::isinstance<py::sequence>(size) && !py::isinstance<py::str>(size) && py::len(size) == 2) {
        const py::sequence hw(size);
        const std::optional<int64_t> h = as_int(hw[0]), w = as_int(hw[1]);
        if (h && w) return {*h, *w};
    }
    throw py::type_error("size must be an int or a pair (H, W) of ints, got " + py::repr(size).cast<std::string>());
}

int64_t tile_option(const py::object& tile) {
    if (py::isinstance<py::str>(tile) && tile.cast<std::string>() == "auto") return universeg::kTileAuto;
    const std::optional<int64_t> n = as_int(tile);
    if (!n || *n < 0)
        throw py::value_error("tile must be 0 (whole images), a window side in pixels or 'auto', got " +
                              py::repr(tile).cast<std::string>());
    return *n;
}

PySegmenter make_segmenter(const LoadedModel& model, const py::object& support, const py::object& size, double threshold,
                           bool calibrate, int64_t flips, int64_t ensemble, std::optional<int64_t> support_size,
                           uint64_t seed, const py::object& tile, std::pair<double, double> clip, int axis,
                           std::optional<std::vector<int64_t>> only_values, bool histogram_baseline,
                           bool keep_probabilities, std::optional<double> max_memory, std::optional<int> threads) {
    PySupport folder;
    const PySupport* s = &folder;
    if (py::isinstance<PySupport>(support)) {
        s = &support.cast<const PySupport&>();
    } else if (is_path(support)) {
        add_folder(folder, support.cast<fs::path>());
    } else {
        throw py::type_error("support must be a universeg.Support or a folder (str or os.PathLike), got " +
                             py::repr(support.get_type()).cast<std::string>());
    }
    universeg::SegmenterOptions o;
    o.size = size_option(model, size);
    o.threshold = threshold;
    o.calibrate = calibrate;
    o.flips = flips;
    o.ensemble = ensemble;
    o.support_size = support_size.value_or(0);
    o.seed = seed;
    o.tile = tile_option(tile);
    o.clip_low = clip.first, o.clip_high = clip.second;
    o.axis = axis;
    o.only_values = only_values.value_or(std::vector<int64_t>{});
    o.histogram_baseline = histogram_baseline;
    o.keep_probabilities = keep_probabilities;
    o.max_memory_mb = memory_bound(max_memory);
    // Refused before any file of the support is read.
    universeg::check_options(o);
    universeg::check_model_size(*model.model, o.size, "segmenter options");

    const std::shared_ptr<const universeg::Support> pairs = s->pairs;
    const ThreadCount count(threads);
    try {
        py::gil_scoped_release release;
        return {std::make_shared<const universeg::Segmenter>(model.model, universeg::PreparedSupport(*pairs, o)), threads};
    } catch (const universeg::Error& e) {
        for (const std::string& f : pairs->files())
            if (names_file(e.what(), f)) raise_file_error(f, e.what());
        throw;
    }
}

// Segments an image or a volume with the GIL released.
template <class Query>
Result run(const universeg::Segmenter& seg, const Query& query) {
    const auto r = [&] {
        py::gil_scoped_release release;
        return seg.segment(query);
    }();
    return result_of(r);
}

Result segment(const PySegmenter& self, py::handle query, std::optional<int> threads) {
    const std::shared_ptr<const universeg::Segmenter> seg = self.seg;
    const ThreadCount count(threads ? threads : self.threads);
    if (is_path(query)) {
        const std::string path = query.cast<fs::path>().string();
        if (universeg::is_volume_path(path))
            return run(*seg, file_io(path, [](const std::string& p) { return universeg::load_nifti(p); }));
        return run(*seg, file_io(path, [](const std::string& p) { return universeg::load_image(p); }));
    }
    const py::array a = image_or_volume(query, "query");
    return a.ndim() == 3 ? run(*seg, to_volume(a)) : run(*seg, to_image(a));
}

py::object calibration(const PySegmenter& self) {
    const universeg::Task& task = self.seg->task();
    const universeg::Task::Calibration& c = task.calibration;
    if (c.offsets.empty()) return py::none();
    py::dict offsets, weights, regions;
    for (size_t l = 0; l < task.values.size(); ++l) {
        offsets[py::int_(task.values[l])] = c.offsets[l];
        weights[py::int_(task.values[l])] = c.intensity_weights[l];
        const int64_t r = c.regions[l];
        py::list chosen;
        if (r & universeg::kKeepLargest) chosen.append("largest");
        if (r & universeg::kFillHoles) chosen.append("filled");
        regions[py::int_(task.values[l])] = chosen;
    }
    py::list types;  // per example type, its examples' indices
    for (const universeg::Task::Type& t : task.types) types.append(py::cast(t.examples));
    return py::dict("images"_a = c.images, "dice_before"_a = c.dice_before, "dice_after"_a = c.dice_after,
                    "offsets"_a = offsets, "intensity_weights"_a = weights, "regions"_a = regions, "colour"_a = c.colour,
                    "types"_a = types);
}

std::string segmenter_repr(const PySegmenter& self) {
    const universeg::Segmenter& s = *self.seg;
    const universeg::SegmenterOptions& o = s.options();
    std::string r = "<universeg.Segmenter: labels " + join(s.values()) + ", " + std::to_string(s.support().size()) +
                    " examples at " + std::to_string(o.size.height) + "x" + std::to_string(o.size.width);
    if (s.tile()) r += " in windows of " + std::to_string(s.tile()) + " px";
    if (o.histogram_baseline) return r + ", histogram baseline>";
    return r + (s.task().calibration.offsets.empty() ? ", not calibrated>" : ", calibrated>");
}

constexpr const char* kSupportDoc = R"doc(A support set: the labelled examples that define a task, in the order added.

    support = universeg.Support("support/")                  # a folder in the nnU-Net layout
    support = universeg.Support.from_arrays(images, labels)  # sequences of arrays
    support.add(image, labels, name="case 7")                # one more pair

A folder holds DIR/images/NAME.ext and DIR/labels/NAME.ext with matching names: 2-D images
(PNG, JPEG, BMP, TGA, PGM/PPM) or NIfTI volumes (.nii, .nii.gz), whose slices holding a label
become examples. A folder is listed and checked when added; its files are read when a
Segmenter is built from the support. Arrays are copied when added.)doc";

constexpr const char* kSupportInitDoc = R"doc(An empty support, or the pairs of a folder.

folder: DIR with DIR/images/NAME.ext and DIR/labels/NAME.ext (str, bytes or os.PathLike).

Raises FileNotFoundError when the folder does not exist, OSError when its layout is wrong (an
image without a label map, a file that is not an image), with the library's message.)doc";

constexpr const char* kAddFolderDoc = R"doc(Adds every pair of a folder (DIR/images/NAME.ext with DIR/labels/NAME.ext),
or none (raising FileNotFoundError or OSError, as the constructor). Returns the support.)doc";

constexpr const char* kAddDoc = R"doc(Adds one labelled example; returns the support.

image: a 2-D image (H,W) of any real dtype and intensity range (it is clipped and min-max
    normalised as the queries are), or a volume (X,Y,Z) indexed [x, y, z] as nibabel reads NIfTI
    files, whose slices along the Segmenter's axis holding a label become examples.
labels: the label map, of the image's shape: non-negative integer label values (any integer
    dtype, or floats holding integers); each distinct non-zero value is its own task.
name: names the pair in error messages (default: "support pair N", N counted from 0).

Raises ValueError for a shape that is not 2-D or 3-D or labels of another shape, TypeError for
arrays that are not real numbers. Label values are checked when a Segmenter is built.)doc";

constexpr const char* kFromArraysDoc = R"doc(A support of the pairs (images[k], labels[k]), as add() adds them.

images, labels: sequences of the same length (lists of arrays, or stacked arrays (N,H,W)).
names: one name per pair for error messages (default: "support pair K").)doc";

constexpr const char* kSegmenterDoc = R"doc(Segments images and volumes like the examples of a support set.

    seg = universeg.Segmenter(model, "support/", flips=1)   # reads the support, calibrates once
    result = seg.segment("query.png")                       # or a 2-D array, a volume, a .nii.gz
    result.labels                                           # int32 label map, the query's shape

Building one reads and prepares the support, builds the task and calibrates it, with the GIL
released; after that it does not change, and segment() may be called from several Python
threads at once. How it works: docs/segment.md in the source tree.)doc";

constexpr const char* kSegmenterInitDoc = R"doc(Reads and prepares the support, builds the task and calibrates it.

model: a universeg.Model (universeg.load()); the Segmenter shares its weights.
support: a universeg.Support, or a folder in its layout (str or os.PathLike).
size: the model size, an int N or (H, W); None: the weights' metadata image_size, else 128.
threshold: a pixel takes the most probable label above it, else 0.
calibrate: per-label logit offsets and intensity weights chosen on the support, leave-one-out
    (with 4 or more examples and at most 8 labels).
flips: 1, 2 or 4 mirrored views of the task averaged (4: as is, left-right, up-down, both;
    1 is four times faster).
ensemble: the number of seeded support subsets whose probabilities are averaged.
support_size: examples per prediction, a seeded random subset (None: all, at most 64).
seed: picks the subsets.
tile: 0: whole images; N: images in windows of NxN pixels (N at least 16 and an eighth of the
    model size); "auto": windows of the model size where calibration scores them higher.
clip: (low, high) intensity percentiles clipped to before min-max normalising ((0.5, 99.5) suits CT).
axis: volumes are segmented slice by slice along this voxel axis (0, 1 or 2).
only_values: segment only these label values (None: every value of the support).
histogram_baseline: segment with the classical intensity-histogram classifier instead of the
    network (label maps only).
keep_probabilities: False: label maps only (probabilities None), less memory for volumes.
max_memory: a bound in MiB on every forward pass's memory (None: unbounded); same results.
threads: OpenMP threads for calibration and, unless a call says otherwise, for segment().

Raises ValueError for options out of range (with the library's message naming the option) and
for supports it cannot use (label values that are not integers, maps of another size, no
label), FileNotFoundError or OSError for support files that are missing or unreadable.)doc";

constexpr const char* kSegmentDoc = R"doc(Segments one query; returns a universeg.Segmentation at the query's size.

query: a 2-D image (H,W) or a volume (X,Y,Z) indexed [x, y, z], of any real dtype and intensity
    range (clipped and min-max normalised here, a volume as a whole), segmented slice by slice
    along the axis; or a file: an image (PNG, JPEG, BMP, TGA, PGM/PPM; colour becomes grey) or
    a NIfTI volume (.nii, .nii.gz), by its name (str, bytes or os.PathLike). An array is read
    once into a float32 copy in the library's layout; non-finite values count as the lowest.
threads: OpenMP threads for this call (None: the Segmenter's).

The GIL is released while it segments. Raises FileNotFoundError or OSError for a file that
cannot be read, ValueError for an array that is not 2-D or 3-D.)doc";

constexpr const char* kSegmentationDoc = R"doc(What a query became, at its size (Segmenter.segment()).

labels: int32 label map of the query's shape: the support's label values, 0 where no label's
    probability passes the threshold.
values: the label values segmented, ascending.
probabilities: float32 (L,H,W) for an image, (L,X,Y,Z) for a volume: probabilities[i] is the
    calibrated probability of values[i]; None with keep_probabilities=False or the histogram
    baseline.)doc";

constexpr const char* kSaveDoc = R"doc(Writes the label map as `universeg segment` does: an image's as a PNG (8-bit, or 16-bit
when a value exceeds 255), a volume's as NIfTI (.nii or .nii.gz) with the query's header
(geometry, affine) and the smallest integer type that holds the label values.)doc";

constexpr const char* kLoadImageDoc = R"doc(An image file as a float32 array (H,W) in [0, 1], as the library reads queries and examples.

PNG, JPEG, BMP, TGA, PGM/PPM, 8 or 16 bits: samples divided by 255 or 65535; colour becomes
grey (ITU-R BT.601 luma). Raises FileNotFoundError or OSError with the library's message.)doc";

constexpr const char* kLoadLabelMapDoc = R"doc(A label map file as an int32 array (H,W) of its raw values (0..255 or 0..65535).

Lossless grey files only (PNG, BMP, TGA, PGM; colour files whose pixels are all grey); JPEG is
refused. Raises FileNotFoundError or OSError with the library's message.)doc";

constexpr const char* kSaveLabelsDoc = R"doc(Writes a label map of integer values: a 2-D one (H,W) as a PNG (.png; 8-bit, or 16-bit when a
value exceeds 255; values up to 65535), a volume (X,Y,Z) as NIfTI (.nii or .nii.gz; unit
voxels, the smallest integer type that holds its largest value). The file is replaced
atomically. Raises ValueError for values that are not non-negative integers or a name whose
extension does not fit, OSError when the file cannot be written.)doc";

}  // namespace

void bind_segment(py::module_& m) {
    py::class_<PySupport>(m, "Support", kSupportDoc)
        .def(py::init([](const std::optional<fs::path>& folder) {
                 PySupport s;
                 if (folder) add_folder(s, *folder);
                 return s;
             }),
             kSupportInitDoc, py::arg("folder") = py::none())
        .def_static("from_arrays", &from_arrays, kFromArraysDoc, py::arg("images"), py::arg("labels"),
                    py::arg("names") = py::none())
        .def(
            "add_folder",
            [](PySupport& s, const fs::path& folder) -> PySupport& {
                add_folder(s, folder);
                return s;
            },
            kAddFolderDoc, py::arg("folder"), py::return_value_policy::reference_internal)
        .def(
            "add",
            [](PySupport& s, py::handle image, py::handle labels, std::optional<std::string> name) -> PySupport& {
                add_pair(s, image, labels, std::move(name));
                return s;
            },
            kAddDoc, py::arg("image"), py::arg("labels"), py::arg("name") = py::none(),
            py::return_value_policy::reference_internal)
        .def("__len__", [](const PySupport& s) { return s.pairs->pairs(); }, "The number of pairs.")
        .def_property_readonly(
            "files",
            [](const PySupport& s) {
                py::list out;
                for (const std::string& f : s.pairs->files()) out.append(fsdecode(f));
                return out;
            },
            "The files it reads, images and label maps, of the folders added (a new list).")
        .def("__repr__", [](const PySupport& s) { return "<universeg.Support: " + std::to_string(s.pairs->pairs()) + " pairs>"; });

    const universeg::SegmenterOptions d;  // the library's defaults, as `universeg segment` has them
    py::class_<PySegmenter>(m, "Segmenter", kSegmenterDoc)
        .def(py::init(&make_segmenter), kSegmenterInitDoc, py::arg("model"), py::arg("support"), py::kw_only(),
             py::arg("size") = py::none(), py::arg("threshold") = d.threshold, py::arg("calibrate") = d.calibrate,
             py::arg("flips") = d.flips, py::arg("ensemble") = d.ensemble, py::arg("support_size") = py::none(),
             py::arg("seed") = d.seed, py::arg("tile") = d.tile, py::arg("clip") = std::make_pair(d.clip_low, d.clip_high),
             py::arg("axis") = d.axis, py::arg("only_values") = py::none(),
             py::arg("histogram_baseline") = d.histogram_baseline, py::arg("keep_probabilities") = d.keep_probabilities,
             py::arg("max_memory") = py::none(), py::arg("threads") = py::none())
        .def("segment", &segment, kSegmentDoc, py::arg("query"), py::kw_only(), py::arg("threads") = py::none())
        .def_property_readonly(
            "values", [](const PySegmenter& s) { return s.seg->values(); }, "The label values segmented, ascending.")
        .def_property_readonly(
            "size",
            [](const PySegmenter& s) { return std::make_pair(s.seg->options().size.height, s.seg->options().size.width); },
            "The model size (H, W) the examples and queries are resized to.")
        .def_property_readonly(
            "tile", [](const PySegmenter& s) { return s.seg->tile(); },
            "The window side queries are segmented in (as tile='auto' chose); 0: whole images.")
        .def_property_readonly(
            "examples", [](const PySegmenter& s) { return s.seg->support().size(); },
            "The examples the task was built from: images, labelled volume slices, or their windows.")
        .def_property_readonly("calibration", &calibration,
                               "What calibration chose: a dict of images (examples segmented from the others), "
                               "dice_before, dice_after (their mean Dice), offsets, intensity_weights and regions (per label "
                               "value; regions a list of 'largest', 'filled'), colour (whether the evidence is of colour) and types (the "
                               "examples' indices per example type, empty when all are one); None when not "
                               "calibrated.")
        .def("__repr__", &segmenter_repr);

    py::class_<Result>(m, "Segmentation", kSegmentationDoc)
        .def_readonly("labels", &Result::labels, "The int32 label map, the query's shape.")
        .def_readonly("values", &Result::values, "The label values segmented, ascending.")
        .def_readonly("probabilities", &Result::probabilities,
                      "float32 (L, *labels.shape): probabilities[i] of values[i]; None without probabilities.")
        .def(
            "save",
            [](const Result& r, const fs::path& path) {
                write_labels(path, r.labels, r.header, r.values.empty() ? 0 : r.values.back());
            },
            kSaveDoc, py::arg("path"))
        .def("__repr__", [](const Result& r) {
            return "<universeg.Segmentation: labels " + join(r.values) + " in " + shape_of(r.labels) + ">";
        });

    m.def(
        "load_image",
        [](const fs::path& path) {
            const universeg::Image img = file_io(path.string(), [](const std::string& p) { return universeg::load_image(p); });
            FloatArray out({img.height, img.width});
            std::copy(img.pixels.begin(), img.pixels.end(), out.mutable_data());
            return out;
        },
        kLoadImageDoc, py::arg("path"));
    m.def(
        "load_label_map",
        [](const fs::path& path) {
            const universeg::Image img =
                file_io(path.string(), [](const std::string& p) { return universeg::load_label_map(p); });
            return label_array(img.pixels, {img.height, img.width});
        },
        kLoadLabelMapDoc, py::arg("path"));
    m.def(
        "save_labels", [](const fs::path& path, py::handle labels) { write_labels(path, labels, {}, std::nullopt); },
        kSaveLabelsDoc, py::arg("path"), py::arg("labels"));
}

}  // namespace universeg_python
