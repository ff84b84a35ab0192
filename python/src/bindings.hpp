// What the groups of bindings share: how arrays come in, how errors go out, the per-call
// thread count, the loaded model. module.cpp defines these and the module; each group
// (model.cpp, segment.cpp) adds its classes and functions through its bind_ function.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <universeg/universeg.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace universeg_python {

namespace py = pybind11;

// Input arrays as the library takes them: row-major float32.
using FloatArray = py::array_t<float, py::array::c_style>;

// `obj` (anything numpy.asarray takes: arrays of any real dtype and order, lists, objects with
// __array__ such as CPU torch tensors) as a numpy array, not copied where it already is one.
// Raises TypeError naming `name` for non-real dtypes (complex, strings, objects).
py::array as_real_array(py::handle obj, const char* name);

// The same as a C-order float32 array. An array that already is one comes back as it is,
// without a copy.
FloatArray as_float32(py::handle obj, const char* name);

// "(2, 1, 128, 128)": an array's shape as numpy prints it.
std::string shape_of(const py::array& a);

// A file name as Python spells it (os.fsdecode: undecodable bytes as surrogate escapes).
py::str fsdecode(const std::string& path);

// Raises OSError carrying `message` (FileNotFoundError when `path` does not exist): for errors
// that the library reports while reading a file. Other universeg::Error exceptions reach Python
// as ValueError (the translator registered in module.cpp).
[[noreturn]] void raise_file_error(const std::string& path, const std::string& message);

// The option max_memory (MiB; none: unbounded) as the library's max_memory_mb (0: unbounded);
// raises ValueError unless it is a positive number.
double memory_bound(std::optional<double> max_memory);

// OpenMP's thread count for the calls this thread makes while the guard lives (none: unchanged),
// restored afterwards; raises ValueError for a count below 1.
class ThreadCount {
public:
    explicit ThreadCount(std::optional<int> threads);
    ~ThreadCount();
    ThreadCount(const ThreadCount&) = delete;
    ThreadCount& operator=(const ThreadCount&) = delete;

private:
    int saved_ = 0;  // the count to restore; 0: nothing was changed
};

// universeg.Model: a loaded model and what its file says about it.
struct LoadedModel {
    std::shared_ptr<const universeg::Model> model;  // shared with the Segmenters built on it
    std::string path;
    std::map<std::string, std::string> metadata;  // a safetensors file's __metadata__; empty for .pt
};

void bind_model(py::module_& m);
void bind_segment(py::module_& m);

}  // namespace universeg_python
