// The native module universeg._native: the package's version, how the library's errors reach
// Python, and the helpers that the groups of bindings share (bindings.hpp).
#include "bindings.hpp"

#include <universeg/version.hpp>

#include <cmath>
#include <filesystem>
#include <system_error>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace universeg_python {
namespace {

// Sets a Python exception of `type` with the library's message. Messages may carry a file name
// that is not UTF-8: those bytes are shown escaped rather than lost to a UnicodeDecodeError.
void set_error(PyObject* type, const std::string& message) {
    const py::str text = py::reinterpret_steal<py::str>(
        PyUnicode_DecodeUTF8(message.data(), py::ssize_t(message.size()), "backslashreplace"));
    PyErr_SetObject(type, text.ptr());
}

}  // namespace

py::array as_real_array(py::handle obj, const char* name) {
    const py::module_ numpy = py::module_::import("numpy");
    py::array a;
    try {
        a = numpy.attr("asarray")(obj);
    } catch (py::error_already_set& e) {
        // numpy's own message (a ragged list, a string) does not say which argument it was.
        if (!e.matches(PyExc_ValueError) && !e.matches(PyExc_TypeError)) throw;
        py::raise_from(e, e.type().ptr(), (std::string(name) + ": " + py::str(e.value()).cast<std::string>()).c_str());
        throw py::error_already_set();
    }
    const char kind = a.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        throw py::type_error(std::string(name) + " must hold real numbers (a float, integer or bool array), got dtype " +
                             py::str(a.dtype()).cast<std::string>());
    return a;
}

FloatArray as_float32(py::handle obj, const char* name) {
    // ascontiguousarray returns the array itself when it already is C-order float32.
    return py::module_::import("numpy").attr("ascontiguousarray")(as_real_array(obj, name), "float32").cast<FloatArray>();
}

std::string shape_of(const py::array& a) {
    return universeg::shape_string(std::vector<int64_t>(a.shape(), a.shape() + a.ndim()));
}

py::str fsdecode(const std::string& path) {
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeFSDefaultAndSize(path.data(), py::ssize_t(path.size())));
}

void raise_file_error(const std::string& path, const std::string& message) {
    std::error_code ec;
    const bool missing = !std::filesystem::exists(path, ec) && !ec;
    set_error(missing ? PyExc_FileNotFoundError : PyExc_OSError, message);
    throw py::error_already_set();
}

double memory_bound(std::optional<double> max_memory) {
    if (!max_memory) return 0;
    if (!(*max_memory > 0) || !std::isfinite(*max_memory))
        throw py::value_error("max_memory must be a positive number of MiB, got " + std::to_string(*max_memory));
    return *max_memory;
}

ThreadCount::ThreadCount(std::optional<int> threads) {
    if (!threads) return;
    if (*threads < 1) throw py::value_error("threads must be at least 1, got " + std::to_string(*threads));
#ifdef _OPENMP
    // OpenMP keeps this count per calling thread: other Python threads' calls keep theirs.
    saved_ = omp_get_max_threads();
    omp_set_num_threads(*threads);
#endif
}

ThreadCount::~ThreadCount() {
#ifdef _OPENMP
    if (saved_) omp_set_num_threads(saved_);
#endif
}

}  // namespace universeg_python

PYBIND11_MODULE(_native, m) {
    namespace py = pybind11;
    m.doc() = "The compiled part of the universeg package (import universeg instead).";
    m.attr("__version__") = universeg::kVersion;
    // The library reports bad input as universeg::Error with a message naming the argument at
    // fault: ValueError in Python. Errors about files are raised as OSError where they occur.
    py::register_local_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const universeg::Error& e) {
            universeg_python::set_error(PyExc_ValueError, e.what());
        }
    });
    universeg_python::bind_model(m);
    universeg_python::bind_segment(m);
}
