// universeg/io/weights.hpp - weights and arrays in and out: the one header to include for them.
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
//   std::map<std::string, std::string> weights_metadata(path);   // a safetensors file's __metadata__
//   Limits& limits();   // caps on what the readers accept from a file (io/limits.hpp)
// The loaders also take an in-memory buffer: (const uint8_t* data, size_t size, const std::string& what).
#pragma once

#include "../cpu/engine.hpp"
#include "bytes.hpp"
#include "checkpoint.hpp"
#include "npy.hpp"
#include "safetensors.hpp"

#include <cstdio>
#include <map>
#include <memory>
#include <string>

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

// A safetensors file's __metadata__ strings (the weights' image_size, configuration, version),
// read without its tensors; empty for other formats and for files without metadata.
inline std::map<std::string, std::string> weights_metadata(const std::string& path) {
    std::map<std::string, std::string> out;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    uint8_t len[8];
    if (!f || std::fread(len, 1, 8, f.get()) != 8) return out;
    const uint64_t n = detail::load_uint(len, 8);
    if (n < 2 || n > (100u << 20)) return out;
    std::string header(size_t(n), '\0');
    if (std::fread(&header[0], 1, header.size(), f.get()) != header.size() || header[0] != '{') return out;
    const detail::Json root = detail::parse_json(header.data(), header.size(), path);
    if (const detail::Json* meta = detail::json_get(root, "__metadata__"))
        for (size_t k = 0; k < meta->keys.size(); ++k)
            if (meta->items[k].kind == detail::Json::String) out[meta->keys[k]] = meta->items[k].str;
    return out;
}

}  // namespace universeg
