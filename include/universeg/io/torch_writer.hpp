// universeg/io/torch_writer.hpp - a state dict of float32 tensors written as a PyTorch
// checkpoint that torch.load (and load_torch_checkpoint) reads, without Python.
//
// Restricted to what state dicts need, laid out as torch.save writes them: a zip archive of
// stored entries (io/zip.hpp) holding
//   archive/data.pkl    pickle protocol 2 of an OrderedDict name -> tensor, every tensor
//                       torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
//                       OrderedDict()) on persistent id ('storage', torch.FloatStorage, key,
//                       'cpu', numel): contiguous, one storage per tensor
//   archive/byteorder   "little" (torch >= 2.1 writes it; older versions ignore it)
//   archive/data/<key>  the storage: numel float32, little-endian
//   archive/version     "3\n"
// Keys come in the StateDict's (sorted) order; torch's load_state_dict does not care.
//
// API (namespace universeg):
//   std::vector<uint8_t> torch_checkpoint_bytes(const StateDict& sd);
//   void save_torch_checkpoint(const std::string& path, const StateDict& sd);
#pragma once

#include "bytes.hpp"
#include "zip.hpp"

namespace universeg {
namespace detail {

// The few pickle opcodes a state dict needs, protocol 2.
struct PickleWriter {
    std::vector<uint8_t> out{0x80, 2};  // PROTO 2
    uint32_t next_memo = 0;

    void op(uint8_t c) { out.push_back(c); }
    void global(const char* module, const char* name) {
        op('c');
        for (const char* s : {module, name}) {
            out.insert(out.end(), s, s + std::strlen(s));
            out.push_back('\n');
        }
    }
    void string(const std::string& s) {  // BINUNICODE (names here are UTF-8 already)
        op('X');
        append_uint(out, s.size(), 4);
        out.insert(out.end(), s.begin(), s.end());
    }
    void integer(int64_t v) {
        if (v >= 0 && v < 256) {
            op('K');  // BININT1
            append_uint(out, uint64_t(v), 1);
        } else if (v >= 0 && v < 65536) {
            op('M');  // BININT2
            append_uint(out, uint64_t(v), 2);
        } else if (v >= INT32_MIN && v <= INT32_MAX) {
            op('J');  // BININT, signed
            append_uint(out, uint64_t(uint32_t(int32_t(v))), 4);
        } else {
            op(0x8a);  // LONG1: little-endian two's complement, as few bytes as keep the sign
            int n = 1;
            while (n < 8 && (v < -(int64_t(1) << (8 * n - 1)) || v >= (int64_t(1) << (8 * n - 1)))) ++n;
            append_uint(out, uint64_t(n), 1);
            append_uint(out, uint64_t(v), n);
        }
    }
    void tuple(const std::vector<int64_t>& v) {
        if (v.empty()) return op(')');  // EMPTY_TUPLE
        if (v.size() > 3) op('(');      // MARK
        for (int64_t x : v) integer(x);
        op(v.size() > 3 ? 't' : uint8_t(0x84 + v.size()));  // TUPLE or TUPLE1..3
    }
    uint32_t put() {  // memoizes the top of the stack
        if (next_memo < 256) {
            op('q');  // BINPUT
            append_uint(out, next_memo, 1);
        } else {
            op('r');  // LONG_BINPUT
            append_uint(out, next_memo, 4);
        }
        return next_memo++;
    }
    void get(uint32_t id) {
        op(id < 256 ? 'h' : 'j');  // BINGET, LONG_BINGET
        append_uint(out, id, id < 256 ? 1 : 4);
    }
};

}  // namespace detail

inline std::vector<uint8_t> torch_checkpoint_bytes(const StateDict& sd) {
    detail::PickleWriter p;
    p.global("collections", "OrderedDict");
    const uint32_t ordered_dict = p.put();
    p.op(')');
    p.op('R');  // OrderedDict()
    p.put();
    uint32_t rebuild = 0, storage = 0, float_storage = 0, cpu = 0;
    size_t n = 0;
    for (const auto& kv : sd) {
        const Tensor& t = kv.second;
        if (checked_numel(t.shape, INT64_MAX, kv.first) != t.numel())
            throw Error("tensor '" + kv.first + "': shape " + shape_string(t.shape) + " does not match its " +
                        std::to_string(t.numel()) + " values");
        if (n % 1000 == 0) p.op('(');  // SETITEMS batches of 1000, as Python's pickler makes them
        p.string(kv.first);
        if (n == 0) {
            p.global("torch._utils", "_rebuild_tensor_v2");
            rebuild = p.put();
        } else {
            p.get(rebuild);
        }
        p.op('(');
        p.op('(');  // the persistent id
        if (n == 0) {
            p.string("storage");
            storage = p.put();
            p.global("torch", "FloatStorage");
            float_storage = p.put();
        } else {
            p.get(storage);
            p.get(float_storage);
        }
        p.string(std::to_string(n));
        if (n == 0) {
            p.string("cpu");
            cpu = p.put();
        } else {
            p.get(cpu);
        }
        p.integer(t.numel());
        p.op('t');
        p.op('Q');  // BINPERSID
        p.integer(0);  // storage offset
        std::vector<int64_t> stride(t.shape.size());
        int64_t step = 1;
        for (size_t d = t.shape.size(); d-- > 0;) {
            stride[d] = step;
            step *= std::max<int64_t>(t.shape[d], 1);
        }
        p.tuple(t.shape);
        p.tuple(stride);
        p.op(0x89);  // requires_grad = False
        p.get(ordered_dict);
        p.op(')');
        p.op('R');  // backward_hooks = OrderedDict()
        p.op('t');
        p.op('R');  // _rebuild_tensor_v2(...)
        ++n;
        if (n % 1000 == 0 || n == sd.size()) p.op('u');  // SETITEMS
    }
    p.op('.');

    detail::ZipWriter zip;
    detail::zip_add(zip, "archive/data.pkl", p.out.data(), p.out.size());
    const std::string order = "little";
    detail::zip_add(zip, "archive/byteorder", reinterpret_cast<const uint8_t*>(order.data()), order.size());
    n = 0;
    for (const auto& kv : sd) {
        std::vector<uint8_t> bytes;
        bytes.reserve(kv.second.data.size() * 4);
        for (float f : kv.second.data) {
            uint32_t bits;
            std::memcpy(&bits, &f, 4);
            detail::append_uint(bytes, bits, 4);
        }
        detail::zip_add(zip, "archive/data/" + std::to_string(n++), bytes.data(), bytes.size());
    }
    const std::string version = "3\n";
    detail::zip_add(zip, "archive/version", reinterpret_cast<const uint8_t*>(version.data()), version.size());
    return detail::zip_finish(zip);
}

inline void save_torch_checkpoint(const std::string& path, const StateDict& sd) {
    write_file_atomic(path, torch_checkpoint_bytes(sd));
}

}  // namespace universeg
