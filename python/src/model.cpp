// universeg.load and universeg.Model: the official model's call on numpy arrays, by the CPU
// engine (core/model.hpp), with the GIL released during the forward pass.
#include "bindings.hpp"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <universeg/segment/segmenter.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>

namespace universeg_python {
namespace {

LoadedModel load(const std::filesystem::path& file) {
    const std::string path = file.string();
    try {
        return LoadedModel{std::make_shared<const universeg::Model>(universeg::load_model(path)), path,
                           universeg::weights_metadata(path)};
    } catch (const universeg::Error& e) {
        raise_file_error(path, e.what());
    }
}

// The metadata's image_size, "N" or "HxW" as `universeg train` writes it, as (H, W); none when
// absent or not a size (the metadata itself stays readable).
std::optional<std::pair<int64_t, int64_t>> image_size(const std::map<std::string, std::string>& metadata) {
    const auto it = metadata.find("image_size");
    if (it == metadata.end()) return std::nullopt;
    try {
        const universeg::ImageSize s = universeg::parse_model_size(it->second, "image_size");
        return std::make_pair(s.height, s.width);
    } catch (const universeg::Error&) {
        return std::nullopt;
    }
}

py::array_t<float> call(const LoadedModel& self, const py::object& query, const py::object& support_images,
                        const py::object& support_labels, const std::string& precision, std::optional<int> threads,
                        std::optional<double> max_memory) {
    universeg::engine::Options options;
    if (precision == "bf16")
        options.precision = universeg::engine::Precision::bf16;
    else if (precision != "fp32")
        throw py::value_error("precision must be 'fp32' or 'bf16', got '" + precision + "'");
    options.max_memory_mb = memory_bound(max_memory);

    const FloatArray q = as_float32(query, "query");
    const FloatArray si = as_float32(support_images, "support_images");
    const FloatArray sl = as_float32(support_labels, "support_labels");
    if (q.ndim() != 4 || q.shape(1) != 1) throw py::value_error("query must be (B,1,H,W), got shape " + shape_of(q));
    const py::ssize_t B = q.shape(0), H = q.shape(2), W = q.shape(3);
    if (si.ndim() != 5 || si.shape(0) != B || si.shape(2) != 1 || si.shape(3) != H || si.shape(4) != W)
        throw py::value_error("support_images must be (B,S,1,H,W) with the query's B, H and W (" + std::to_string(B) +
                              ", S, 1, " + std::to_string(H) + ", " + std::to_string(W) + "), got shape " + shape_of(si));
    if (sl.ndim() != 5 || !std::equal(si.shape(), si.shape() + 5, sl.shape()))
        throw py::value_error("support_labels must have the shape of support_images " + shape_of(si) + ", got shape " +
                              shape_of(sl));

    py::array_t<float> logits({B, py::ssize_t(1), H, W});
    float* out = logits.mutable_data();
    const ThreadCount count(threads);
    {
        // The arrays stay referenced by this frame; Model::forward is const and thread-safe.
        py::gil_scoped_release release;
        self.model->forward(q.data(), si.data(), sl.data(), B, si.shape(1), H, W, out, options);
    }
    return logits;
}

constexpr const char* kModelDoc = R"doc(A UniverSeg model: weights loaded by universeg.load(), run by the C++ engine.

Call it as the official PyTorch model:

    logits = model(query, support_images, support_labels)

query (B,1,H,W), support_images and support_labels (B,S,1,H,W): images in [0,1], labels 0/1.
Returns the logits (B,1,H,W) as a float32 numpy array; probability = sigmoid(logits), in numpy
0.5 + 0.5 * numpy.tanh(0.5 * logits).
A model may be called from several Python threads at once.)doc";

constexpr const char* kCallDoc = R"doc(The logits (B,1,H,W), float32, for a batch of queries and their support sets.

query: (B,1,H,W) images in [0,1].
support_images: (B,S,1,H,W) images in [0,1]; S >= 1.
support_labels: (B,S,1,H,W) labels, 0 or 1.
    Anything numpy.asarray takes: arrays of any float, integer or bool dtype, in C or Fortran
    order or strided (CPU torch tensors too: pass tensor.numpy()). A C-contiguous float32 array
    is read in place; other inputs are converted to one first. H and W must be multiples of
    size_multiple.
precision: "fp32", or "bf16" (bf16-rounded products: faster on CPUs with AVX512_BF16, refused
    elsewhere).
threads: OpenMP threads for this call (None: OpenMP's default, OMP_NUM_THREADS or all cores).
    The logits do not depend on it.
max_memory: a bound in MiB on the packed weights and the call's buffers (None: unbounded);
    supports then go through the network in groups, with identical logits, more slowly.

The GIL is released during the computation. Raises ValueError for bad shapes, values
(NaN, infinity), sizes or options, TypeError for non-numeric arrays.)doc";

constexpr const char* kLoadDoc = R"doc(Loads a UniverSeg model from a weights file.

path: a PyTorch checkpoint of the official state dict (.pt, such as the official
    universeg_v1_nf64_ss64_STA.pt) or a safetensors file; the format is read off the content.
    The architecture is read off the tensor shapes.

Raises FileNotFoundError when the path does not exist and OSError when the file cannot be read
or holds no UniverSeg model, with the library's message naming the file and the cause.)doc";

}  // namespace

void bind_model(py::module_& m) {
    py::class_<LoadedModel>(m, "Model", kModelDoc)
        .def("__call__", &call, kCallDoc, py::arg("query"), py::arg("support_images"), py::arg("support_labels"),
             py::kw_only(), py::arg("precision") = "fp32", py::arg("threads") = py::none(),
             py::arg("max_memory") = py::none())
        .def_property_readonly(
            "config", [](const LoadedModel& s) { return s.model->config().to_string(); },
            "The architecture, e.g. 'encoder [64,64,64,64] decoder [64,64,64]' for the official v1.")
        .def_property_readonly(
            "parameter_count", [](const LoadedModel& s) { return s.model->parameter_count(); },
            "The number of weights and biases.")
        .def_property_readonly(
            "size_multiple", [](const LoadedModel& s) { return s.model->config().size_multiple(); },
            "H and W must be multiples of this (one halving per encoder block but the last).")
        .def_property_readonly(
            "image_size", [](const LoadedModel& s) { return image_size(s.metadata); },
            "(H, W) the weights were trained at, from a safetensors file's metadata; None when it does not say.")
        .def_property_readonly(
            "metadata", [](const LoadedModel& s) { return s.metadata; },
            "A safetensors file's __metadata__ strings (a new dict); empty for PyTorch checkpoints.")
        .def_property_readonly(
            "path", [](const LoadedModel& s) { return fsdecode(s.path); }, "The weights file it was loaded from.")
        .def("__repr__", [](const LoadedModel& s) {
            return "<universeg.Model " + py::repr(fsdecode(s.path)).cast<std::string>() + ": " +
                   s.model->config().to_string() + ", " + std::to_string(s.model->parameter_count()) + " parameters>";
        });
    m.def("load", &load, kLoadDoc, py::arg("path"));
}

}  // namespace universeg_python
