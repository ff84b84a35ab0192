// universeg/io/bytes.hpp - what every reader and writer in io/ shares: whole-file reads,
// atomic writes, bounds checks, endian-explicit integer loads and stores, and the element
// types that checkpoints, safetensors and .npy files hold (all read as float32).
//
// Public API (namespace universeg):
//   std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = limits().max_file_bytes);
//   void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
//   void remove_pending_temporaries();   // for signal handlers: see write_file_atomic
// Internals (universeg::detail): ByteSpan, fits, load_uint, append_uint, DType, dtype_size,
// load_float, gather_floats, check_rank.
#pragma once

#include "../core/tensor.hpp"
#include "limits.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <system_error>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace universeg {

// The whole file as bytes. Errors name the path and the system's reason. Only regular files
// are read: a device (/dev/zero) never ends, and opening a FIFO or socket without a writer
// blocks forever; a weights file or image is never one.
inline std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = limits().max_file_bytes) {
    using std::filesystem::file_type;
    std::error_code ec;
    const file_type type = std::filesystem::status(path, ec).type();
    if (!ec && (type == file_type::character || type == file_type::block)) throw Error(path + ": is a device, not a file");
    if (!ec && type == file_type::directory) throw Error(path + ": is a directory, not a file");
    if (!ec && (type == file_type::fifo || type == file_type::socket))
        throw Error(path + ": is a pipe or socket, not a file");
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
    std::vector<uint8_t> out;
    const uint64_t hint = std::filesystem::file_size(path, ec);
    if (!ec && hint > max_bytes)
        throw Error(path + ": file of " + std::to_string(hint) + " bytes is larger than the limit of " +
                    std::to_string(max_bytes) + " bytes (universeg::limits().max_file_bytes)");
    if (!ec) out.reserve(size_t(hint));
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
        if (n > max_bytes - out.size())
            throw Error(path + ": file is larger than the limit of " + std::to_string(max_bytes) +
                        " bytes (universeg::limits().max_file_bytes)");
        out.insert(out.end(), buf, buf + n);
    }
    if (std::ferror(f.get())) throw Error(path + ": cannot read: " + std::strerror(errno));
    return out;
}

namespace detail {

// The temporary files write_file_atomic is writing, so that a signal handler can remove them
// (remove_pending_temporaries) and an interrupted run leaves neither a partial output nor a
// stray temporary. Fixed slots of fixed size, because a handler may not allocate or lock:
// state 0 free, 1 being filled, 2 holds a path.
struct PendingTemporary {
    std::atomic<int> state{0};
    char path[4096];
};
constexpr int kPendingSlots = 16;
inline PendingTemporary* pending_temporaries() {
    static PendingTemporary slots[kPendingSlots];
    return slots;
}

// Registers `path` in a free slot; -1 when none is free or the path is too long (then an
// interruption may leave the temporary behind, which is all that is lost).
inline int register_temporary(const std::string& path) {
    if (path.size() >= sizeof(PendingTemporary::path)) return -1;
    PendingTemporary* slots = pending_temporaries();
    for (int i = 0; i < kPendingSlots; ++i) {
        int expected = 0;
        if (!slots[i].state.compare_exchange_strong(expected, 1)) continue;
        std::memcpy(slots[i].path, path.c_str(), path.size() + 1);
        slots[i].state.store(2);
        return i;
    }
    return -1;
}

inline void release_temporary(int slot) {
    if (slot >= 0) pending_temporaries()[slot].state.store(0);
}

}  // namespace detail

// Removes the temporaries of writes in progress. Async-signal-safe: meant for a SIGINT/SIGTERM
// handler, which then ends the process (the writes it interrupted never complete).
inline void remove_pending_temporaries() {
    detail::PendingTemporary* slots = detail::pending_temporaries();
    for (int i = 0; i < detail::kPendingSlots; ++i) {
        if (slots[i].state.load() != 2) continue;
#if defined(__unix__) || defined(__APPLE__)
        ::unlink(slots[i].path);
#else
        std::remove(slots[i].path);
#endif
    }
}

// Writes to a fresh temporary file next to `path`, then renames it over `path`, so readers
// never see a half-written file and a failed write leaves any old file intact. The temporary
// is hidden (".NAME.tmp...") so that folder listings never take it for an output.
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    static std::atomic<uint64_t> counter{0};
    const std::filesystem::path target(path);
    const std::string tmp =
        (target.parent_path() / ("." + target.filename().string() + ".tmp" +
                                 std::to_string(uint64_t(std::chrono::steady_clock::now().time_since_epoch().count())) +
                                 "-" + std::to_string(counter++)))
            .string();
    const int slot = detail::register_temporary(tmp);
    struct Release {
        int slot;
        ~Release() { detail::release_temporary(slot); }
    } release{slot};
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

// Refuses tensors of more than limits().max_rank dimensions (a header of thousands of 1s
// would otherwise make every element's index step walk them all).
inline void check_rank(size_t rank, const std::string& what) {
    if (rank > size_t(limits().max_rank))
        throw Error(what + ": " + std::to_string(rank) + " dimensions, more than the limit of " +
                    std::to_string(limits().max_rank));
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

// PyTorch's names, as `universeg info` prints them.
inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "float32";
        case DType::F64: return "float64";
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        case DType::U8: return "uint8";
        case DType::Bool: return "bool";
        case DType::I32: return "int32";
        case DType::I64: return "int64";
    }
    return "unknown";
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
