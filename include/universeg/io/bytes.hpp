// universeg/io/bytes.hpp - what every reader and writer in io/ shares: whole-file reads,
// atomic writes, bounds checks, endian-explicit integer loads and stores, and the element
// types that checkpoints, safetensors and .npy files hold (all read as float32).
//
// Public API (namespace universeg):
//   std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = kMaxInputBytes);
//   void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
// Internals (universeg::detail): ByteSpan, fits, load_uint, append_uint, DType, dtype_size,
// load_float, gather_floats.
#pragma once

#include "../tensor.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <system_error>

namespace universeg {

// Largest file the readers load into memory; it stops endless streams (/dev/zero, a pipe)
// rather than limiting real checkpoints.
constexpr uint64_t kMaxInputBytes = uint64_t(1) << 36;

// The whole file as bytes. Errors name the path and the system's reason.
inline std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = kMaxInputBytes) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
    std::vector<uint8_t> out;
    std::error_code ec;
    uint64_t hint = std::filesystem::file_size(path, ec);
    if (!ec && hint <= max_bytes) out.reserve(size_t(hint));
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
        if (n > max_bytes - out.size())
            throw Error(path + ": file is larger than the limit of " + std::to_string(max_bytes) + " bytes");
        out.insert(out.end(), buf, buf + n);
    }
    if (std::ferror(f.get())) throw Error(path + ": cannot read: " + std::strerror(errno));
    return out;
}

// Writes to a fresh temporary file next to `path`, then renames it over `path`, so readers
// never see a half-written file and a failed write leaves any old file intact.
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    static std::atomic<uint64_t> counter{0};
    std::string tmp = path + ".tmp" +
                      std::to_string(uint64_t(std::chrono::steady_clock::now().time_since_epoch().count())) +
                      "-" + std::to_string(counter++);
    std::FILE* f = std::fopen(tmp.c_str(), "wbx");
    if (!f) throw Error(path + ": cannot create " + tmp + ": " + std::strerror(errno));
    errno = 0;
    bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    ok = std::fflush(f) == 0 && ok;
    int err = errno;
    ok = std::fclose(f) == 0 && ok;
    std::error_code ec;
    if (!ok) {
        std::filesystem::remove(tmp, ec);
        throw Error(path + ": write failed: " + std::strerror(err ? err : errno));
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw Error(path + ": cannot replace the file: " + ec.message());
    }
}

namespace detail {

struct ByteSpan {
    const uint8_t* data = nullptr;
    size_t size = 0;
};

// True when [offset, offset + length) lies inside [0, size), without overflowing.
inline bool fits(uint64_t offset, uint64_t length, uint64_t size) {
    return offset <= size && length <= size - offset;
}

// n-byte unsigned integer (n <= 8) stored little- or big-endian; files are read byte by
// byte so the host's byte order never matters.
inline uint64_t load_uint(const uint8_t* p, int n, bool big_endian = false) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(p[big_endian ? n - 1 - k : k]) << (8 * k);
    return v;
}

inline void append_uint(std::vector<uint8_t>& out, uint64_t v, int n) {
    for (int k = 0; k < n; ++k) out.push_back(uint8_t(v >> (8 * k)));
}

enum class DType : uint8_t { F32, F64, F16, BF16, U8, Bool, I32, I64 };

inline int dtype_size(DType t) {
    switch (t) {
        case DType::F64: case DType::I64: return 8;
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: return 2;
        case DType::U8: case DType::Bool: return 1;
    }
    return 1;
}

inline float load_float(const uint8_t* p, DType t, bool big_endian) {
    switch (t) {
        case DType::F32: {
            uint32_t bits = uint32_t(load_uint(p, 4, big_endian));
            float f;
            std::memcpy(&f, &bits, 4);
            return f;
        }
        case DType::F64: {
            uint64_t bits = load_uint(p, 8, big_endian);
            double d;
            std::memcpy(&d, &bits, 8);
            // Beyond float's range, round as IEEE does (to the largest float up to half an ulp
            // past it, else to infinity) instead of the undefined behaviour of a direct cast.
            const double top = std::numeric_limits<float>::max(), half_ulp = std::ldexp(1.0, 103);
            if (std::fabs(d) > top)
                return std::copysign(std::fabs(d) < top + half_ulp ? std::numeric_limits<float>::max()
                                                                  : std::numeric_limits<float>::infinity(),
                                     float(d > 0 ? 1 : -1));
            return float(d);
        }
        case DType::F16: return half_to_float(uint16_t(load_uint(p, 2, big_endian)));
        case DType::BF16: return bf16_to_float(uint16_t(load_uint(p, 2, big_endian)));
        case DType::U8: return float(p[0]);
        case DType::Bool: return p[0] ? 1.0f : 0.0f;
        case DType::I32: return float(int32_t(uint32_t(load_uint(p, 4, big_endian))));
        case DType::I64: return float(int64_t(load_uint(p, 8, big_endian)));
    }
    return 0.0f;
}

// Reads the numel row-major elements of a strided view (element strides, offset in
// elements) into `out` as float32. Callers have checked that every index lies inside `base`.
inline void gather_floats(const uint8_t* base, DType t, bool big_endian, int64_t offset, int64_t numel,
                          const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, float* out) {
    const int64_t es = dtype_size(t);
    std::vector<int64_t> idx(shape.size(), 0);
    int64_t src = offset;
    for (int64_t n = 0; n < numel; ++n) {
        out[n] = load_float(base + src * es, t, big_endian);
        for (size_t d = shape.size(); d-- > 0;) {  // odometer step over the last dimension first
            if (++idx[d] < shape[d]) {
                src += stride[d];
                break;
            }
            src -= (shape[d] - 1) * stride[d];
            idx[d] = 0;
        }
    }
}

}  // namespace detail
}  // namespace universeg
