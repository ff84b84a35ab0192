// universeg/io/checkpoint.hpp - the tensors of a PyTorch checkpoint (torch.save's zip format,
// PyTorch >= 1.6) as a StateDict of float32 tensors.
//
// The state dict is the top-level dict if its values are all tensors, else the first such
// dict found under "state_dict", "model", "model_state_dict" or "net" (a few levels deep),
// so training checkpoints ({"state_dict": ..., "epoch": ..., "optimizer": ...}) load too. A
// leading "module." (DataParallel) is stripped from keys. float16, bfloat16 and float64
// tensors are converted; views (storage offset, arbitrary strides, shared storages) are
// resolved against their storage, which must hold every element they reach. All tensors
// together hold at most as many elements as the file has bytes, each at most
// limits().max_tensor_elements (io/limits.hpp).
//
// API (namespace universeg):
//   StateDict load_torch_checkpoint(const std::string& path);
//   StateDict load_torch_checkpoint(const uint8_t* data, size_t size, const std::string& what);
#pragma once

#include "pickle.hpp"
#include "zip.hpp"

namespace universeg {
namespace detail {

// Pre-1.6 torch.save output (and _use_new_zipfile_serialization=False) is a bare pickle
// stream, which starts with a PROTO opcode.
inline bool is_bare_pickle(const uint8_t* data, size_t size) {
    return size >= 2 && data[0] == 0x80 && data[1] <= 5;
}

inline bool is_tensor_dict(const Pickle& pk, const PyValue& v) {
    if (v.kind != PyKind::Dict) return false;
    for (size_t k = 0; k < v.items.size(); k += 2) {
        const PyValue &key = pk.values[v.items[k]], &value = pk.values[v.items[k + 1]];
        if (key.kind != PyKind::String || (value.kind != PyKind::Tensor && key.s != "_metadata")) return false;
    }
    return true;
}

inline size_t find_state_dict(const Pickle& pk, size_t idx, int depth) {
    const PyValue& v = pk.values[idx];
    if (is_tensor_dict(pk, v)) return idx;
    if (v.kind != PyKind::Dict || depth >= 3) return npos;
    for (const char* key : {"state_dict", "model", "model_state_dict", "net"}) {
        size_t child = dict_get(pk, v, key);
        if (child == npos) continue;
        size_t found = find_state_dict(pk, child, depth + 1);
        if (found != npos) return found;
    }
    return npos;
}

inline Tensor checkpoint_tensor(const PyTensor& t, ByteSpan storage, bool big_endian, const std::string& what) {
    const int64_t es = dtype_size(t.dtype);
    if (storage.size % size_t(es)) throw Error(what + ": storage size is not a whole number of elements");
    const int64_t elems = int64_t(storage.size / size_t(es));
    const int64_t numel = checked_numel(t.size, limits().max_tensor_elements, what);
    if (numel > 0) {
        int64_t last = t.offset;  // the highest element the view reaches
        for (size_t d = 0; d < t.size.size(); ++d) {
            if (t.stride[d] && t.size[d] - 1 > (INT64_MAX - last) / t.stride[d]) last = INT64_MAX;
            else last += (t.size[d] - 1) * t.stride[d];
        }
        if (last >= elems)
            throw Error(what + ": view of size " + shape_string(t.size) + ", stride " + shape_string(t.stride) +
                        " at offset " + std::to_string(t.offset) + " reaches past its storage of " +
                        std::to_string(elems) + " elements");
    }
    // Only stride-0 (expanded) views hold more elements than their storage; refusing them
    // keeps the allocation bounded by the file size.
    if (numel > elems)
        throw Error(what + ": has " + std::to_string(numel) + " elements but its storage only " +
                    std::to_string(elems) + " (expanded views are not supported)");
    Tensor out;
    out.shape = t.size;
    out.stored_dtype = dtype_name(t.dtype);
    out.data = allocate<float>(uint64_t(numel), what);
    gather_floats(storage.data, t.dtype, big_endian, t.offset, numel, t.size, t.stride, out.data.data());
    return out;
}

}  // namespace detail

inline StateDict load_torch_checkpoint(const uint8_t* data, size_t size, const std::string& what) {
    using namespace detail;
    if (is_bare_pickle(data, size))
        throw Error(what + ": legacy PyTorch checkpoint format (PyTorch < 1.6, or saved with "
                           "_use_new_zipfile_serialization=False) is not supported; re-save it with a current torch.save");
    ZipArchive zip = zip_open(data, size, what);
    // torch names the top-level folder after the file it first saved to: accept any name.
    std::string prefix;
    for (const auto& entry : zip.entries) {
        const std::string& name = entry.first;
        size_t slash = name.find('/');
        if (slash == std::string::npos || name.compare(slash, std::string::npos, "/data.pkl") != 0) continue;
        if (!prefix.empty()) throw Error(what + ": zip archive holds more than one data.pkl");
        prefix = name.substr(0, slash + 1);
    }
    if (prefix.empty()) throw Error(what + ": not a PyTorch checkpoint (its zip archive has no <folder>/data.pkl)");

    bool big_endian = false;  // torch >= 2.1 records the byte order; older versions wrote little-endian
    if (zip.entries.count(prefix + "byteorder")) {
        ByteSpan b = zip_read(zip, prefix + "byteorder");
        std::string order(reinterpret_cast<const char*>(b.data), b.size);
        if (order != "little" && order != "big") throw Error(what + ": unknown byte order \"" + order + "\"");
        big_endian = order == "big";
    }

    ByteSpan pkl = zip_read(zip, prefix + "data.pkl");
    Pickle pk = unpickle(pkl.data, pkl.size, what);
    size_t sd = find_state_dict(pk, pk.root, 0);
    if (sd == npos) {
        std::string found = "a " + std::string(pk.values[pk.root].kind == PyKind::Dict ? "dict" : "non-dict value");
        if (pk.values[pk.root].kind == PyKind::Dict) {
            found += " with keys";
            const auto& items = pk.values[pk.root].items;
            for (size_t k = 0; k < items.size() && k < 20; k += 2)
                if (pk.values[items[k]].kind == PyKind::String) found += " '" + pk.values[items[k]].s + "'";
        }
        throw Error(what + ": no state dict found: expected a dict of tensors, at the top level or under "
                           "'state_dict', 'model', 'model_state_dict' or 'net', but the top level is " + found);
    }

    StateDict out;
    std::map<std::string, ByteSpan> storages;  // each storage CRC-checked once, however many views share it
    // Views of one storage may repeat its elements (tied weights), but never so often that the
    // tensors outgrow the file: a few bytes of pickle must not expand into gigabytes.
    uint64_t total = 0;
    const auto& items = pk.values[sd].items;
    for (size_t k = 0; k < items.size(); k += 2) {
        const PyValue& value = pk.values[items[k + 1]];
        if (value.kind != PyKind::Tensor) continue;  // _metadata
        std::string key = pk.values[items[k]].s;
        if (key.compare(0, 7, "module.") == 0) key.erase(0, 7);
        const PyTensor& t = pk.tensors[size_t(value.i)];
        auto it = storages.find(t.storage);
        if (it == storages.end()) {
            std::string entry = prefix + "data/" + t.storage;
            if (!zip.entries.count(entry))
                throw Error(what + ": tensor '" + key + "' refers to storage " + t.storage + ", which the archive lacks");
            it = storages.emplace(t.storage, zip_read(zip, entry)).first;
        }
        total += uint64_t(checked_numel(t.size, limits().max_tensor_elements, what + ": tensor '" + key + "'"));
        if (total > size)
            throw Error(what + ": its tensors hold more elements than the file has bytes (views repeating one storage)");
        Tensor tensor = checkpoint_tensor(t, it->second, big_endian, what + ": tensor '" + key + "'");
        if (!out.emplace(key, std::move(tensor)).second)
            throw Error(what + ": key '" + key + "' appears twice (with and without a 'module.' prefix?)");
    }
    return out;
}

inline StateDict load_torch_checkpoint(const std::string& path) {
    std::vector<uint8_t> bytes = read_file(path);
    return load_torch_checkpoint(bytes.data(), bytes.size(), path);
}

}  // namespace universeg
