// universeg/io/bytes.hpp - what every reader and writer in io/ shares: whole-file reads,
// atomic writes, bounds checks, endian-explicit integer loads and stores, and the element
// types that checkpoints, safetensors and .npy files hold (all read as float32).
//
// Public API (namespace universeg):
//   std::vector<uint8_t> read_file(const std::string& path, uint64_t max_bytes = limits().max_file_bytes);
//   void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);
//   void remove_pending_temporaries();   // for signal handlers: see write_file_atomic
// Internals (universeg::detail): ByteSpan, fits, append_digit, allocate, load_uint, append_uint,
// DType, dtype_size, load_float, gather_floats, check_rank.
#pragma once

#include "../core/tensor.hpp"
#include "limits.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <system_error>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace universeg {
namespace detail {

// What a reader reports when memory runs out (the caps of io/limits.hpp allow more than a small
// machine has): the file and the size asked, not a bare std::bad_alloc.
inline Error out_of_memory(const std::string& what, uint64_t bytes) {
    return Error(what + ": out of memory: cannot allocate " + std::to_string(bytes) + " bytes");
}

}  // namespace detail

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
    try {
        if (!ec) out.reserve(size_t(hint));
    } catch (const std::bad_alloc&) {
        throw detail::out_of_memory(path, hint);
    }
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

namespace detail {

// A hidden name next to `path` for its temporary (".NAME.tmpCLOCK-COUNT"), so that folder
// listings never take it for an output.
inline std::string temporary_name(const std::string& path) {
    static std::atomic<uint64_t> counter{0};
    const std::filesystem::path target(path);
    return (target.parent_path() /
            ("." + target.filename().string() + ".tmp" +
             std::to_string(uint64_t(std::chrono::steady_clock::now().time_since_epoch().count())) + "-" +
             std::to_string(counter++)))
        .string();
}

// A named temporary registered for remove_pending_temporaries while it exists.
struct PendingName {
    std::string path;
    int slot;
    explicit PendingName(std::string p) : path(std::move(p)), slot(register_temporary(path)) {}
    PendingName(const PendingName&) = delete;
    PendingName& operator=(const PendingName&) = delete;
    ~PendingName() { release_temporary(slot); }
};

// Renames the complete temporary over `path`; on failure removes it and throws.
inline void rename_over(const std::string& tmp, const std::string& path) {
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw Error(path + ": cannot replace the file: " + ec.message());
    }
}

#if defined(__unix__) || defined(__APPLE__)
// Every byte to `fd` (write(2) may take fewer than asked), then fsync(2), so that the data is on
// disk before the file gets its name. 0, or the errno of the failure.
inline int write_and_sync(int fd, const std::vector<uint8_t>& bytes) {
    for (size_t done = 0; done < bytes.size();) {
        const ssize_t n = ::write(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, size_t(1) << 30));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? errno : EIO;
        done += size_t(n);
    }
    return ::fsync(fd) == 0 ? 0 : errno;
}

// Makes a new name in the folder of `path` durable. Best effort: some file systems refuse
// fsync on a folder, and by then the file itself is complete, synced and in place.
inline void sync_parent_folder(const std::string& path) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    ::fsync(fd);
    ::close(fd);
}
#endif

#ifdef O_TMPFILE
// Linux: the data goes to an unnamed file (O_TMPFILE) that vanishes with the process however it
// dies, and gets a name only once complete and synced. Linux cannot link over an existing name,
// so a replaced file is linked to a temporary name first and renamed over it at once: a kill
// between those two calls is the only way a (complete) temporary can be left behind.
// False when the folder's file system has no O_TMPFILE (or /proc is not mounted): nothing was
// written, and the caller writes a named temporary instead.
inline bool write_unnamed_then_link(const std::string& path, const std::vector<uint8_t>& bytes) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) return false;
    struct Close {
        int fd;
        ~Close() { ::close(fd); }
    } close_fd{fd};
    if (const int err = write_and_sync(fd, bytes)) throw Error(path + ": write failed: " + std::strerror(err));
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        if (errno != EEXIST) return false;
        const PendingName tmp(temporary_name(path));
        if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, tmp.path.c_str(), AT_SYMLINK_FOLLOW) != 0)
            throw Error(path + ": cannot create " + tmp.path + ": " + std::strerror(errno));
        rename_over(tmp.path, path);
    }
    sync_parent_folder(path);
    return true;
}
#endif

}  // namespace detail

// Replaces `path` atomically: readers see the old file or the complete new one, never part of
// it, and a failed write leaves any old file intact. The data is written to a temporary next to
// `path` (unnamed on Linux, see detail::write_unnamed_then_link; else a hidden ".NAME.tmp..."
// file that remove_pending_temporaries removes when a signal interrupts the write), synced to
// disk, renamed over `path`, and the folder synced.
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
#ifdef O_TMPFILE
    if (detail::write_unnamed_then_link(path, bytes)) return;
#endif
    const detail::PendingName tmp(detail::temporary_name(path));
#if defined(__unix__) || defined(__APPLE__)
    const int fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) throw Error(path + ": cannot create " + tmp.path + ": " + std::strerror(errno));
    int err = detail::write_and_sync(fd, bytes);
    if (::close(fd) != 0 && !err) err = errno;
#else
    std::FILE* f = std::fopen(tmp.path.c_str(), "wbx");
    if (!f) throw Error(path + ": cannot create " + tmp.path + ": " + std::strerror(errno));
    errno = 0;
    bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    ok = std::fflush(f) == 0 && ok;
    int err = ok ? 0 : errno ? errno : EIO;
    if (std::fclose(f) != 0 && !err) err = errno ? errno : EIO;
#endif
    if (err) {
        std::error_code ignored;
        std::filesystem::remove(tmp.path, ignored);
        throw Error(path + ": write failed: " + std::strerror(err));
    }
    detail::rename_over(tmp.path, path);
#if defined(__unix__) || defined(__APPLE__)
    detail::sync_parent_folder(path);
#endif
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

// n * 10 + the decimal digit c, unless that would exceed `max`: then false, n unchanged. The
// check comes before the multiplication, so no number wraps around (2^64 + 32 is never 32).
inline bool append_digit(uint64_t& n, char c, uint64_t max) {
    const uint64_t d = uint64_t(c - '0');
    if (d > max || n > (max - d) / 10) return false;
    n = n * 10 + d;
    return true;
}

// A vector of n value-initialised elements for reading `what`; out of memory is an Error
// (out_of_memory), and so is a count beyond what a vector can hold.
template <class T>
std::vector<T> allocate(uint64_t n, const std::string& what) {
    try {
        if (n <= SIZE_MAX / sizeof(T)) return std::vector<T>(size_t(n));
    } catch (const std::bad_alloc&) {
    } catch (const std::length_error&) {
    }
    throw out_of_memory(what, n <= UINT64_MAX / sizeof(T) ? n * sizeof(T) : UINT64_MAX);
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

// n <= 8, as load_uint.
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
