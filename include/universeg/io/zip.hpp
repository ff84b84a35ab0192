// universeg/io/zip.hpp - the ZIP container as far as PyTorch checkpoints need it: a reader of
// stored (uncompressed) entries over an in-memory buffer, and a small writer.
//
// The reader treats its buffer as untrusted: every offset and size is checked against it,
// each entry's CRC-32 is verified when the entry is read, and compressed or encrypted
// entries are refused with an error naming the entry. ZIP64 records are understood (torch
// always writes them). The writer stores entries with their data aligned to 64 bytes, as
// torch's own writer does.
//
// API (namespace universeg::detail):
//   ZipArchive zip_open(const uint8_t* data, size_t size, const std::string& what);
//   ByteSpan   zip_read(const ZipArchive& zip, const std::string& name);  // CRC-checked contents
//   void       zip_add(ZipWriter& w, const std::string& name, const uint8_t* data, size_t size);
//   std::vector<uint8_t> zip_finish(ZipWriter& w);
//   uint32_t   crc32(const uint8_t* data, size_t size);
#pragma once

#include "bytes.hpp"

#include <array>
#include <cstdio>
#include <map>

namespace universeg {
namespace detail {

inline uint32_t crc32(const uint8_t* data, size_t size) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

struct ZipEntry {
    uint64_t local_offset = 0, compressed_size = 0, size = 0;
    uint32_t crc = 0;
    uint16_t flags = 0, method = 0;
};

struct ZipArchive {
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::string what;                          // file name for error messages
    std::map<std::string, ZipEntry> entries;  // by name
};

inline ZipArchive zip_open(const uint8_t* data, size_t size, const std::string& what) {
    auto u16 = [&](uint64_t at) { return load_uint(data + at, 2); };
    auto u32 = [&](uint64_t at) { return load_uint(data + at, 4); };
    auto u64 = [&](uint64_t at) { return load_uint(data + at, 8); };
    auto corrupt = [&](const std::string& msg) { return Error(what + ": corrupt zip archive: " + msg); };

    // The end-of-central-directory record is the last thing in the file, followed only by
    // its comment; scan back for a signature whose comment length reaches the end exactly.
    const size_t kEocd = 22;
    if (size < kEocd) throw Error(what + ": not a zip archive (only " + std::to_string(size) + " bytes)");
    size_t lowest = size - kEocd > 0xFFFF ? size - kEocd - 0xFFFF : 0, eocd = size;
    for (size_t pos = size - kEocd + 1; pos-- > lowest;) {
        if (u32(pos) == 0x06054b50 && pos + kEocd + u16(pos + 20) == size) {
            eocd = pos;
            break;
        }
    }
    if (eocd == size) throw corrupt("no end of central directory record (truncated file?)");
    if (u16(eocd + 4) != 0 || u16(eocd + 6) != 0) throw Error(what + ": multi-part zip archives are not supported");
    uint64_t count = u16(eocd + 10), cd_size = u32(eocd + 12), cd_offset = u32(eocd + 16);

    // A ZIP64 locator right before the record points to the 64-bit version of these fields.
    if (eocd >= 20 && u32(eocd - 20) == 0x07064b50) {
        uint64_t rec = u64(eocd - 20 + 8);
        if (!fits(rec, 56, eocd - 20) || u32(rec) != 0x06064b50) throw corrupt("bad ZIP64 end of central directory record");
        count = u64(rec + 32);
        cd_size = u64(rec + 40);
        cd_offset = u64(rec + 48);
    }
    if (!fits(cd_offset, cd_size, eocd)) throw corrupt("central directory lies outside the file (truncated file?)");
    if (count > cd_size / 46) throw corrupt("central directory too small for " + std::to_string(count) + " entries");

    ZipArchive zip{data, size, what, {}};
    uint64_t p = cd_offset, end = cd_offset + cd_size;
    for (uint64_t k = 0; k < count; ++k) {
        if (!fits(p, 46, end) || u32(p) != 0x02014b50) throw corrupt("bad central directory entry " + std::to_string(k));
        ZipEntry e;
        e.flags = uint16_t(u16(p + 8));
        e.method = uint16_t(u16(p + 10));
        e.crc = uint32_t(u32(p + 16));
        e.compressed_size = u32(p + 20);
        e.size = u32(p + 24);
        e.local_offset = u32(p + 42);
        uint64_t name_len = u16(p + 28), extra_len = u16(p + 30), comment_len = u16(p + 32);
        if (!fits(p + 46, name_len + extra_len + comment_len, end)) throw corrupt("central directory entry " + std::to_string(k) + " overruns the directory");
        std::string name(reinterpret_cast<const char*>(data + p + 46), size_t(name_len));
        // ZIP64 extended information holds, in this order, only the fields saturated above.
        for (uint64_t q = p + 46 + name_len, qend = q + extra_len; q + 4 <= qend;) {
            uint64_t id = u16(q), len = u16(q + 2), r = q + 4;
            if (!fits(r, len, qend)) throw corrupt("bad extra field in entry " + name);
            if (id == 0x0001) {
                for (uint64_t* field : {&e.size, &e.compressed_size, &e.local_offset}) {
                    if (*field != 0xFFFFFFFFu) continue;
                    if (r + 8 > q + 4 + len) throw corrupt("short ZIP64 extra field in entry " + name);
                    *field = u64(r);
                    r += 8;
                }
            }
            q += 4 + len;
        }
        if (!zip.entries.emplace(name, e).second) throw corrupt("entry " + name + " appears twice");
        p += 46 + name_len + extra_len + comment_len;
    }
    return zip;
}

inline ByteSpan zip_read(const ZipArchive& zip, const std::string& name) {
    auto it = zip.entries.find(name);
    if (it == zip.entries.end()) throw Error(zip.what + ": zip archive has no entry " + name);
    const ZipEntry& e = it->second;
    const std::string where = zip.what + ": zip entry " + name;
    if (e.flags & 1u) throw Error(where + " is encrypted, which is not supported");
    if (e.method != 0)
        throw Error(where + " uses compression method " + std::to_string(e.method) + (e.method == 8 ? " (deflate)" : "") +
                    "; only stored (uncompressed) entries are supported, as torch.save writes them");
    if (e.compressed_size != e.size) throw Error(where + ": stored sizes disagree");
    // The local header repeats the name, but its extra field may differ from the central one.
    uint64_t lo = e.local_offset;
    if (!fits(lo, 30, zip.size) || load_uint(zip.data + lo, 4) != 0x04034b50)
        throw Error(where + ": no local header at offset " + std::to_string(lo) + " (truncated or corrupt file)");
    uint64_t name_len = load_uint(zip.data + lo + 26, 2), extra_len = load_uint(zip.data + lo + 28, 2);
    if (name_len != name.size() || !fits(lo + 30, name_len, zip.size) ||
        std::memcmp(zip.data + lo + 30, name.data(), name.size()) != 0)
        throw Error(where + ": local header names a different entry (corrupt file)");
    uint64_t start = lo + 30 + name_len + extra_len;
    if (!fits(start, e.size, zip.size)) throw Error(where + " runs past the end of the file (truncated file?)");
    // Fuzzing builds skip the check (the usual libFuzzer convention) so that mutated entries
    // reach the parsers behind it.
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    uint32_t crc = crc32(zip.data + start, size_t(e.size));
    if (crc != e.crc) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "stored 0x%08x, computed 0x%08x", unsigned(e.crc), unsigned(crc));
        throw Error(where + " is corrupt: CRC-32 mismatch (" + buf + ")");
    }
#endif
    return {zip.data + start, size_t(e.size)};
}

struct ZipWriter {
    std::vector<uint8_t> out;      // local headers and data so far
    std::vector<uint8_t> central;  // central directory entries so far
    uint64_t count = 0;
};

// Appends a stored entry. No ZIP64: entries and archive stay under 4 GiB, ample for the
// checkpoints written here.
inline void zip_add(ZipWriter& w, const std::string& name, const uint8_t* data, size_t size) {
    const uint64_t offset = w.out.size();
    if (uint64_t(size) >= 0xFFFFFFFFu || offset + size + name.size() + 94 >= 0xFFFFFFFFu || name.size() > 0xFFFF ||
        w.count >= 0xFFFF)
        throw Error(name + ": too large for a zip archive without ZIP64");
    const uint32_t crc = crc32(data, size);
    // An extra field of padding (torch uses id "FB") puts the data on a 64-byte boundary.
    const size_t pad = (64 - (offset + 30 + name.size() + 4) % 64) % 64;
    auto header = [&](std::vector<uint8_t>& o, bool central) {
        append_uint(o, central ? 0x02014b50 : 0x04034b50, 4);
        if (central) append_uint(o, 20, 2);  // version made by
        append_uint(o, 20, 2);               // version needed
        append_uint(o, 0x0800, 2);           // flags: names are UTF-8
        append_uint(o, 0, 2);                // method: stored
        append_uint(o, 0, 2);                // time
        append_uint(o, 0x21, 2);             // date: 1980-01-01
        append_uint(o, crc, 4);
        append_uint(o, size, 4);
        append_uint(o, size, 4);
        append_uint(o, name.size(), 2);
        append_uint(o, central ? 0 : 4 + pad, 2);
        if (central) {
            append_uint(o, 0, 2);  // comment length
            append_uint(o, 0, 2);  // disk
            append_uint(o, 0, 2);  // internal attributes
            append_uint(o, 0, 4);  // external attributes
            append_uint(o, offset, 4);
        }
        o.insert(o.end(), name.begin(), name.end());
    };
    header(w.out, false);
    append_uint(w.out, 0x4246, 2);  // "FB"
    append_uint(w.out, pad, 2);
    w.out.insert(w.out.end(), pad, uint8_t('Z'));
    w.out.insert(w.out.end(), data, data + size);
    header(w.central, true);
    ++w.count;
}

// The finished archive; the writer is left empty.
inline std::vector<uint8_t> zip_finish(ZipWriter& w) {
    std::vector<uint8_t> out = std::move(w.out);
    const uint64_t cd_offset = out.size();
    if (cd_offset + w.central.size() >= 0xFFFFFFFFu) throw Error("zip archive too large without ZIP64");
    out.insert(out.end(), w.central.begin(), w.central.end());
    append_uint(out, 0x06054b50, 4);
    append_uint(out, 0, 4);  // disk numbers
    append_uint(out, w.count, 2);
    append_uint(out, w.count, 2);
    append_uint(out, w.central.size(), 4);
    append_uint(out, cd_offset, 4);
    append_uint(out, 0, 2);  // comment length
    w = ZipWriter{};
    return out;
}

}  // namespace detail
}  // namespace universeg
