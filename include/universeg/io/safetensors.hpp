// universeg/io/safetensors.hpp - reads and writes the safetensors format: an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, optional
// "__metadata__": {str: str}}, then the raw little-endian tensor data.
//
// Reading accepts F32, F16, BF16 and F64 (converted to float32) and validates the header
// against the file: length (at most 100 MB, and limits().max_header_values JSON values),
// offsets inside the data, no overlaps, shape * dtype size equal to each byte range, and the
// caps of io/limits.hpp on rank and elements. Writing stores float32 ("F32") with keys in
// sorted order and the header padded with spaces to a multiple of 8 bytes.
//
// API (namespace universeg):
//   StateDict load_safetensors(const std::string& path);
//   StateDict load_safetensors(const uint8_t* data, size_t size, const std::string& what);
//   void save_safetensors(const std::string& path, const StateDict& sd,
//                         std::map<std::string, std::string> metadata = {});   // + universeg_version
// The header's JSON parser (detail::parse_json) knows objects, arrays, strings and integers:
// all a safetensors header holds.
#pragma once

#include "../version.hpp"
#include "bytes.hpp"

#include <algorithm>
#include <cstdio>
#include <set>

namespace universeg {
namespace detail {

struct Json {
    enum Kind : uint8_t { Object, Array, String, Int } kind = Int;
    int64_t num = 0;
    std::string str;
    std::vector<std::string> keys;  // Object: keys, parallel to items
    std::vector<Json> items;        // Object values, Array elements
};

inline Json parse_json(const char* text, size_t size, const std::string& what) {
    size_t pos = 0;
    int64_t values = 0;  // parsed so far: a Json costs ~100 bytes, so a header of "[0,0,0,..." is capped
    const int64_t max_values = limits().max_header_values;
    auto fail = [&](const std::string& msg) {
        return Error(what + ": bad safetensors header: " + msg + " at byte " + std::to_string(pos));
    };
    auto ws = [&] {
        while (pos < size && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) ++pos;
    };
    auto expect = [&](char c) {
        ws();
        if (pos >= size || text[pos] != c) throw fail(std::string("expected '") + c + "'");
        ++pos;
    };
    auto hex4 = [&] {
        if (size - pos < 4) throw fail("truncated \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k) {
            char c = text[pos++];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) throw fail("bad \\u escape");
            v = v * 16 + unsigned(d);
        }
        return v;
    };
    auto string = [&] {
        expect('"');
        std::string s;
        for (;;) {
            if (pos >= size) throw fail("unterminated string");
            char c = text[pos++];
            if (c == '"') return s;
            if (static_cast<unsigned char>(c) < 0x20) throw fail("control character in string");
            if (c != '\\') {
                s += c;
                continue;
            }
            if (pos >= size) throw fail("unterminated string");
            switch (char e = text[pos++]) {
                case '"': case '\\': case '/': s += e; break;
                case 'b': s += '\b'; break;
                case 'f': s += '\f'; break;
                case 'n': s += '\n'; break;
                case 'r': s += '\r'; break;
                case 't': s += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xDC00 && cp <= 0xDFFF) throw fail("unpaired surrogate");
                    if (cp >= 0xD800 && cp <= 0xDBFF) {  // UTF-16 pair for a code point above U+FFFF
                        if (size - pos < 2 || text[pos] != '\\' || text[pos + 1] != 'u') throw fail("unpaired surrogate");
                        pos += 2;
                        unsigned lo = hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) throw fail("unpaired surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    if (cp < 0x80) {
                        s += char(cp);
                    } else if (cp < 0x800) {
                        s += char(0xC0 | (cp >> 6));
                        s += char(0x80 | (cp & 0x3F));
                    } else if (cp < 0x10000) {
                        s += char(0xE0 | (cp >> 12));
                        s += char(0x80 | ((cp >> 6) & 0x3F));
                        s += char(0x80 | (cp & 0x3F));
                    } else {
                        s += char(0xF0 | (cp >> 18));
                        s += char(0x80 | ((cp >> 12) & 0x3F));
                        s += char(0x80 | ((cp >> 6) & 0x3F));
                        s += char(0x80 | (cp & 0x3F));
                    }
                    break;
                }
                default: throw fail("bad escape");
            }
        }
    };
    // Recursion depth is capped so a header of nested brackets cannot overflow the stack.
    auto value = [&](auto& self, int depth) -> Json {
        if (depth > 32) throw fail("nesting too deep");
        if (++values > max_values)
            throw fail("more than " + std::to_string(max_values) + " values (universeg::limits().max_header_values)");
        ws();
        if (pos >= size) throw fail("unexpected end");
        Json v;
        char c = text[pos];
        if (c == '"') {
            v.kind = Json::String;
            v.str = string();
        } else if (c == '{' || c == '[') {
            v.kind = c == '{' ? Json::Object : Json::Array;
            const char close = c == '{' ? '}' : ']';
            std::set<std::string> seen;  // object keys so far
            ++pos;
            ws();
            if (pos < size && text[pos] == close) {
                ++pos;
                return v;
            }
            for (;;) {
                if (v.kind == Json::Object) {
                    std::string key = string();
                    if (!seen.insert(key).second) throw fail("duplicate key \"" + key + "\"");
                    v.keys.push_back(std::move(key));
                    expect(':');
                }
                v.items.push_back(self(self, depth + 1));
                ws();
                if (pos < size && text[pos] == ',') {
                    ++pos;
                    continue;
                }
                expect(close);
                return v;
            }
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            bool neg = c == '-';
            if (neg) ++pos;
            if (pos >= size || text[pos] < '0' || text[pos] > '9') throw fail("bad number");
            uint64_t n = 0;
            while (pos < size && text[pos] >= '0' && text[pos] <= '9')
                if (!append_digit(n, text[pos++], uint64_t(INT64_MAX))) throw fail("integer out of range");
            if (pos < size && (text[pos] == '.' || text[pos] == 'e' || text[pos] == 'E')) throw fail("unexpected non-integer number");
            v.num = neg ? -int64_t(n) : int64_t(n);
        } else {
            throw fail(std::string("unexpected character '") + c + "'");
        }
        return v;
    };
    Json root = value(value, 0);
    ws();
    if (pos != size) throw fail("trailing characters");
    return root;
}

inline const Json* json_get(const Json& obj, const std::string& key) {
    for (size_t k = 0; k < obj.keys.size(); ++k)
        if (obj.keys[k] == key) return &obj.items[k];
    return nullptr;
}

inline std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

}  // namespace detail

inline StateDict load_safetensors(const uint8_t* data, size_t size, const std::string& what) {
    using namespace detail;
    const uint64_t kMaxHeader = 100u << 20;
    if (size < 8) throw Error(what + ": too short for a safetensors file");
    const uint64_t header_len = load_uint(data, 8);
    if (header_len > kMaxHeader || header_len > size - 8)
        throw Error(what + ": safetensors header length " + std::to_string(header_len) + " exceeds " +
                    (header_len > kMaxHeader ? "the 100 MB limit" : "the file size"));
    Json header = parse_json(reinterpret_cast<const char*>(data + 8), size_t(header_len), what);
    if (header.kind != Json::Object) throw Error(what + ": safetensors header is not a JSON object");
    const uint8_t* body = data + 8 + header_len;
    const uint64_t body_size = size - 8 - header_len;

    struct Range { uint64_t begin, end; const std::string* key; };
    std::vector<Range> ranges;
    StateDict out;
    for (size_t k = 0; k < header.keys.size(); ++k) {
        const std::string& key = header.keys[k];
        const Json& info = header.items[k];
        const std::string where = what + ": tensor '" + key + "'";
        if (key == "__metadata__") {  // free-form str -> str; checked, not used
            bool ok = info.kind == Json::Object;
            for (const Json& m : info.items) ok = ok && m.kind == Json::String;
            if (!ok) throw Error(what + ": safetensors __metadata__ must map strings to strings");
            continue;
        }
        const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
        if (info.kind == Json::Object) {
            dtype = json_get(info, "dtype");
            shape = json_get(info, "shape");
            offsets = json_get(info, "data_offsets");
        }
        if (!dtype || dtype->kind != Json::String || !shape || shape->kind != Json::Array || !offsets ||
            offsets->kind != Json::Array || offsets->items.size() != 2 || offsets->items[0].kind != Json::Int ||
            offsets->items[1].kind != Json::Int)
            throw Error(where + ": header entry needs dtype, shape and data_offsets [begin, end]");
        DType t;
        if (dtype->str == "F32") t = DType::F32;
        else if (dtype->str == "F16") t = DType::F16;
        else if (dtype->str == "BF16") t = DType::BF16;
        else if (dtype->str == "F64") t = DType::F64;
        else throw Error(where + ": dtype " + dtype->str + " is not supported (only F32, F16, BF16 and F64 are)");
        std::vector<int64_t> dims;
        for (const Json& d : shape->items) {
            if (d.kind != Json::Int) throw Error(where + ": shape holds a non-integer");
            dims.push_back(d.num);
        }
        const int64_t begin = offsets->items[0].num, end = offsets->items[1].num;
        if (begin < 0 || end < begin || uint64_t(end) > body_size)
            throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] lie outside the " + std::to_string(body_size) + " bytes of data");
        // Elements cannot outnumber the data's bytes, which also keeps numel * size from overflowing.
        check_rank(dims.size(), where);
        const int64_t numel = checked_numel(dims, std::min(int64_t(body_size), limits().max_tensor_elements), where);
        if (numel * dtype_size(t) != end - begin)
            throw Error(where + ": shape " + shape_string(dims) + " of " + dtype->str + " needs " +
                        std::to_string(numel * dtype_size(t)) + " bytes, data_offsets give " + std::to_string(end - begin));
        Tensor tensor;
        tensor.shape = dims;
        tensor.stored_dtype = dtype_name(t);
        tensor.data = allocate<float>(uint64_t(numel), where);
        for (int64_t n = 0; n < numel; ++n) tensor.data[size_t(n)] = load_float(body + begin + n * dtype_size(t), t, false);
        out.emplace(key, std::move(tensor));
        ranges.push_back({uint64_t(begin), uint64_t(end), &key});
    }
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
    for (size_t k = 1; k < ranges.size(); ++k)
        if (ranges[k].begin < ranges[k - 1].end)
            throw Error(what + ": tensors '" + *ranges[k - 1].key + "' and '" + *ranges[k].key + "' overlap in the data");
    return out;
}

inline StateDict load_safetensors(const std::string& path) {
    std::vector<uint8_t> bytes = read_file(path);
    return load_safetensors(bytes.data(), bytes.size(), path);
}

// The metadata gains "universeg_version" (this library's version) unless it has one.
inline void save_safetensors(const std::string& path, const StateDict& sd,
                             std::map<std::string, std::string> metadata = {}) {
    using namespace detail;
    metadata.emplace("universeg_version", kVersion);
    std::string header = "{\"__metadata__\":{";
    for (const auto& m : metadata) header += json_quote(m.first) + ":" + json_quote(m.second) + ",";
    header.back() = '}';
    header += ",";
    uint64_t offset = 0;
    for (const auto& entry : sd) {
        const std::string& key = entry.first;
        const Tensor& t = entry.second;
        if (key == "__metadata__") throw Error(path + ": a tensor cannot be named __metadata__ in safetensors");
        if (checked_numel(t.shape, INT64_MAX, path + ": tensor '" + key + "'") != t.numel())
            throw Error(path + ": tensor '" + key + "' has shape " + shape_string(t.shape) + " but " +
                        std::to_string(t.numel()) + " values");
        std::string dims;
        for (int64_t d : t.shape) dims += (dims.empty() ? "" : ",") + std::to_string(d);
        const uint64_t end = offset + uint64_t(t.numel()) * 4;
        header += json_quote(key) + ":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[" +
                  std::to_string(offset) + "," + std::to_string(end) + "]},";
        offset = end;
    }
    if (header.size() > 1) header.pop_back();
    header += "}";
    // Pad with spaces (valid JSON whitespace) so the data starts 8-byte aligned.
    header.append((8 - header.size() % 8) % 8, ' ');

    std::vector<uint8_t> bytes;
    bytes.reserve(8 + header.size() + size_t(offset));
    append_uint(bytes, header.size(), 8);
    bytes.insert(bytes.end(), header.begin(), header.end());
    for (const auto& entry : sd) {
        for (float f : entry.second.data) {
            uint32_t bits;
            std::memcpy(&bits, &f, 4);
            append_uint(bytes, bits, 4);
        }
    }
    write_file_atomic(path, bytes);
}

}  // namespace universeg
