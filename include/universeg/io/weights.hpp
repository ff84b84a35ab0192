// universeg/io.hpp - weights and arrays in and out: the one header to include for io.
//
// API (namespace universeg):
//   StateDict load_state_dict(const std::string& path);  // PyTorch checkpoint or safetensors, by content
//   StateDict load_torch_checkpoint(const std::string& path);                         (io/checkpoint.hpp)
//   StateDict load_safetensors(const std::string& path);                              (io/safetensors.hpp)
//   void save_safetensors(const std::string& path, const StateDict& sd,
//                         const std::map<std::string, std::string>& metadata = {});  (io/safetensors.hpp)
//   Tensor load_npy(const std::string& path);                                         (io/npy.hpp)
//   void save_npy(const std::string& path, const Tensor& t);                          (io/npy.hpp)
//   void save_npy_f64(const std::string& path, const std::vector<int64_t>& shape, const double* data);
//   std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes);      (io/bytes.hpp)
//   void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
//   Model load_model(const std::string& path);            // load_state_dict + Model, errors name the file
//   Model load_model(const StateDict& sd, const std::string& path);  // the same from a dict already read
//   Limits& limits();   // caps on what the readers accept from a file (io/limits.hpp)
// The loaders also take an in-memory buffer: (const uint8_t* data, size_t size, const std::string& what).
#pragma once

#include "../core/model.hpp"
#include "bytes.hpp"
#include "checkpoint.hpp"
#include "npy.hpp"
#include "safetensors.hpp"

namespace universeg {

// Decides by content, not by file name: a zip archive is a PyTorch checkpoint, a bare pickle
// is the legacy checkpoint format (refused with an explanation), and a JSON object after an
// 8-byte length is safetensors.
inline StateDict load_state_dict(const std::string& path) {
    std::vector<uint8_t> bytes = read_file(path);
    const uint8_t* data = bytes.data();
    const size_t size = bytes.size();
    if ((size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) || detail::is_bare_pickle(data, size))
        return load_torch_checkpoint(data, size, path);
    if (size >= 9 && data[8] == '{') return load_safetensors(data, size, path);
    throw Error(path + ": not a PyTorch checkpoint or safetensors file" + (size ? "" : " (the file is empty)"));
}

// The model in a weights file (read as `sd`); an architecture error is reported against the file.
inline Model load_model(const StateDict& sd, const std::string& path) {
    try {
        return Model(sd);
    } catch (const Error& e) {
        throw Error(path + ": " + e.what());
    }
}

inline Model load_model(const std::string& path) { return load_model(load_state_dict(path), path); }

}  // namespace universeg
