// universeg/io/npy.hpp - NumPy .npy arrays: read versions 1-3 into a float32 Tensor, write
// float32 (and float64) arrays as version 1.
//
// Readable dtypes: f4, f8, f2, u1, b1, i4, i8, little- or big-endian; fortran_order arrays
// come back in row-major order. The header is checked against the file (its length, the
// dict's keys, shape * dtype size equal to the data that follows) before anything is
// allocated: the data must be exactly what the shape needs, at most limits().max_tensor_elements
// elements of at most limits().max_rank dimensions (io/limits.hpp). Writes replace the file
// atomically (write_file_atomic).
//
// API (namespace universeg):
//   Tensor load_npy(const std::string& path);
//   Tensor load_npy(const uint8_t* data, size_t size, const std::string& what);
//   void save_npy(const std::string& path, const Tensor& t);
//   void save_npy_f64(const std::string& path, const std::vector<int64_t>& shape, const double* data);
#pragma once

#include "bytes.hpp"

#include <algorithm>

namespace universeg {
namespace detail {

struct NpyHeader {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
};

// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
inline NpyHeader parse_npy_header(const std::string& h, const std::string& what) {
    size_t pos = 0;
    auto fail = [&](const std::string& msg) { return Error(what + ": bad .npy header: " + msg); };
    auto ws = [&] { while (pos < h.size() && (h[pos] == ' ' || h[pos] == '\n' || h[pos] == '\t')) ++pos; };
    auto at = [&](char c) { ws(); return pos < h.size() && h[pos] == c; };
    auto expect = [&](char c) {
        if (!at(c)) throw fail(std::string("expected '") + c + "'");
        ++pos;
    };
    auto quoted = [&] {
        ws();
        if (pos >= h.size() || (h[pos] != '\'' && h[pos] != '"')) throw fail("expected a string");
        size_t close = h.find(h[pos], pos + 1);
        if (close == std::string::npos) throw fail("unterminated string");
        std::string s = h.substr(pos + 1, close - pos - 1);
        pos = close + 1;
        return s;
    };
    NpyHeader out;
    bool seen[3] = {false, false, false};
    expect('{');
    while (!at('}')) {
        std::string key = quoted();
        expect(':');
        ws();
        if (key == "descr" && !seen[0]) {
            out.descr = quoted();
            seen[0] = true;
        } else if (key == "fortran_order" && !seen[1]) {
            if (h.compare(pos, 4, "True") == 0) out.fortran_order = true, pos += 4;
            else if (h.compare(pos, 5, "False") == 0) pos += 5;
            else throw fail("fortran_order is neither True nor False");
            seen[1] = true;
        } else if (key == "shape" && !seen[2]) {
            expect('(');
            while (!at(')')) {
                ws();
                uint64_t d = 0;
                size_t digits = 0;
                for (; pos < h.size() && h[pos] >= '0' && h[pos] <= '9'; ++pos, ++digits)
                    if (!append_digit(d, h[pos], uint64_t(INT64_MAX))) throw fail("dimension out of range");
                if (!digits) throw fail("shape holds a non-integer");
                if (pos < h.size() && h[pos] == 'L') ++pos;  // Python 2 longs
                out.shape.push_back(int64_t(d));
                if (!at(',')) break;
                ++pos;
            }
            expect(')');
            seen[2] = true;
        } else {
            throw fail("unexpected or repeated key '" + key + "'");
        }
        if (!at(',')) break;
        ++pos;
    }
    expect('}');
    if (!seen[0] || !seen[1] || !seen[2]) throw fail("needs descr, fortran_order and shape");
    return out;
}

inline std::vector<uint8_t> npy_header(const std::vector<int64_t>& shape, const char* descr) {
    std::string h = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_string(shape) + ", }";
    // numpy pads with spaces and a final newline so the data starts 64-byte aligned.
    h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
    if (h.size() > 0xFFFF) throw Error("shape " + shape_string(shape) + " is too long for a .npy v1 header");
    std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    append_uint(out, h.size(), 2);
    out.insert(out.end(), h.begin(), h.end());
    return out;
}

}  // namespace detail

inline Tensor load_npy(const uint8_t* data, size_t size, const std::string& what) {
    using namespace detail;
    if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0) throw Error(what + ": not a .npy file");
    const int major = data[6];
    if (major < 1 || major > 3) throw Error(what + ": .npy version " + std::to_string(major) + " is not supported");
    const size_t len_bytes = major == 1 ? 2 : 4, start = 8 + len_bytes;
    if (size < start) throw Error(what + ": truncated .npy header");
    const uint64_t header_len = load_uint(data + 8, int(len_bytes));
    if (!fits(start, header_len, size)) throw Error(what + ": .npy header runs past the end of the file");
    NpyHeader h = parse_npy_header(std::string(reinterpret_cast<const char*>(data + start), size_t(header_len)), what);

    static const std::pair<const char*, DType> types[] = {{"f4", DType::F32}, {"f8", DType::F64}, {"f2", DType::F16},
                                                          {"u1", DType::U8},  {"b1", DType::Bool}, {"i4", DType::I32},
                                                          {"i8", DType::I64}};
    const std::string& d = h.descr;
    DType t = DType::F32;
    bool known = false;
    for (const auto& ty : types) {
        if (d.size() == 3 && d.compare(1, 2, ty.first) == 0) {
            t = ty.second;
            known = true;
        }
    }
    if (!known || !(d[0] == '<' || d[0] == '>' || (d[0] == '|' && dtype_size(t) == 1)))
        throw Error(what + ": .npy dtype '" + d + "' is not supported (f4, f8, f2, u1, b1, i4, i8 are)");

    check_rank(h.shape.size(), what);
    const int64_t numel = checked_numel(h.shape, std::min(INT64_MAX / 8, limits().max_tensor_elements), what);
    const uint64_t data_start = start + header_len, need = uint64_t(numel) * uint64_t(dtype_size(t));
    if (size - data_start != need)
        throw Error(what + ": shape " + shape_string(h.shape) + " of '" + d + "' needs " + std::to_string(need) +
                    " bytes of data, the file holds " + std::to_string(size - data_start));
    // Row-major strides, or column-major ones for fortran_order, read in row-major order.
    Tensor out;
    out.shape = h.shape;
    out.data = allocate<float>(uint64_t(numel), what);
    if (numel == 0) return out;  // (and the stride products below could overflow)
    std::vector<int64_t> stride(h.shape.size());
    int64_t step = 1;
    for (size_t k = 0; k < h.shape.size(); ++k) {
        size_t dim = h.fortran_order ? k : h.shape.size() - 1 - k;
        stride[dim] = step;
        step *= h.shape[dim];
    }
    gather_floats(data + data_start, t, d[0] == '>', 0, numel, h.shape, stride, out.data.data());
    return out;
}

inline Tensor load_npy(const std::string& path) {
    std::vector<uint8_t> bytes = read_file(path);
    return load_npy(bytes.data(), bytes.size(), path);
}

inline void save_npy(const std::string& path, const Tensor& t) {
    if (checked_numel(t.shape, INT64_MAX, path) != t.numel())
        throw Error(path + ": tensor shape " + shape_string(t.shape) + " does not match its " + std::to_string(t.numel()) + " values");
    std::vector<uint8_t> bytes = detail::npy_header(t.shape, "<f4");
    bytes.reserve(bytes.size() + t.data.size() * 4);
    for (float f : t.data) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        detail::append_uint(bytes, bits, 4);
    }
    write_file_atomic(path, bytes);
}

inline void save_npy_f64(const std::string& path, const std::vector<int64_t>& shape, const double* data) {
    const int64_t numel = checked_numel(shape, INT64_MAX / 8, path);
    std::vector<uint8_t> bytes = detail::npy_header(shape, "<f8");
    bytes.reserve(bytes.size() + size_t(numel) * 8);
    for (int64_t n = 0; n < numel; ++n) {
        uint64_t bits;
        std::memcpy(&bits, &data[n], 8);
        detail::append_uint(bytes, bits, 8);
    }
    write_file_atomic(path, bytes);
}

}  // namespace universeg
