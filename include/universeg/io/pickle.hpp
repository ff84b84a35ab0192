// universeg/io/pickle.hpp - a restricted unpickler for the data.pkl inside PyTorch checkpoints.
//
// It builds a small value tree (None, bool, int, float, str, bytes, list, tuple, dict,
// globals, tensor storages and tensor references) and never executes anything. The only
// globals it accepts are those torch.save writes for state dicts: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter, and the float32/float16/bfloat16/
// float64 storage types and dtypes. Any other global, or an opcode outside what protocols
// 2-5 use for such data, is an Error naming it. Memory use is bounded by the input: every
// value, memo entry and stack slot costs at least one input byte, their number is capped by
// limits().max_pickle_values, and string lengths are checked against the bytes left before
// anything is allocated.
//
// API (namespace universeg::detail):
//   Pickle unpickle(const uint8_t* data, size_t size, const std::string& what);
//   size_t dict_get(const Pickle& pk, const PyValue& dict, const std::string& key);  // or npos
// Values live in Pickle::values and refer to each other by index, so shared (memoized) and
// even self-containing containers need no ownership bookkeeping.
#pragma once

#include "bytes.hpp"

#include <algorithm>
#include <cstdio>
#include <unordered_map>

namespace universeg {
namespace detail {

enum class PyKind : uint8_t { None, Bool, Int, Float, String, Bytes, List, Tuple, Dict, Global, Storage, Tensor };

struct PyValue {
    PyKind kind = PyKind::None;
    DType dtype = DType::F32;   // Storage, Global naming a storage type or dtype
    int64_t i = 0;              // Bool, Int; Tensor: index into Pickle::tensors
    double f = 0;               // Float
    std::string s;              // String, Bytes; Global: "module.name"; Storage: its key under data/
    std::vector<size_t> items;  // List, Tuple; Dict: key0, value0, key1, value1, ... in insertion order
};

// What torch._utils._rebuild_tensor_v2 would build: a strided view into a storage.
struct PyTensor {
    std::string storage;  // key of the storage: zip entry <prefix>/data/<key>
    DType dtype = DType::F32;
    int64_t offset = 0;   // in elements
    std::vector<int64_t> size, stride;
};

struct Pickle {
    std::vector<PyValue> values;
    std::vector<PyTensor> tensors;
    size_t root = 0;
};

constexpr size_t npos = size_t(-1);

// The value stored under a string key; duplicate keys resolve to the last, as in Python.
inline size_t dict_get(const Pickle& pk, const PyValue& dict, const std::string& key) {
    for (size_t k = dict.items.size(); k >= 2; k -= 2) {
        const PyValue& kv = pk.values[dict.items[k - 2]];
        if (kv.kind == PyKind::String && kv.s == key) return dict.items[k - 1];
    }
    return npos;
}

// Storage types (torch.FloatStorage, as torch.save writes) and dtypes (torch.float32, which
// some writers use in their place) that name a tensor's element type.
inline bool torch_element_type(const std::string& name, DType& out) {
    static const std::pair<const char*, DType> known[] = {
        {"torch.FloatStorage", DType::F32},     {"torch.float32", DType::F32},
        {"torch.HalfStorage", DType::F16},      {"torch.float16", DType::F16},
        {"torch.BFloat16Storage", DType::BF16}, {"torch.bfloat16", DType::BF16},
        {"torch.DoubleStorage", DType::F64},    {"torch.float64", DType::F64}};
    for (const auto& k : known)
        if (name == k.first) return out = k.second, true;
    return false;
}

inline std::string pickle_opcode_name(uint8_t op) {
    static const std::pair<uint8_t, const char*> names[] = {
        {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"}, {'F', "FLOAT"},
        {'I', "INT"}, {'J', "BININT"}, {'K', "BININT1"}, {'L', "LONG"}, {'M', "BININT2"}, {'N', "NONE"},
        {'P', "PERSID"}, {'Q', "BINPERSID"}, {'R', "REDUCE"}, {'S', "STRING"}, {'T', "BINSTRING"},
        {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"}, {'X', "BINUNICODE"}, {'a', "APPEND"}, {'b', "BUILD"},
        {'c', "GLOBAL"}, {'d', "DICT"}, {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"},
        {'i', "INST"}, {'j', "LONG_BINGET"}, {'l', "LIST"}, {']', "EMPTY_LIST"}, {'o', "OBJ"}, {'p', "PUT"},
        {'q', "BINPUT"}, {'r', "LONG_BINPUT"}, {'s', "SETITEM"}, {'t', "TUPLE"}, {')', "EMPTY_TUPLE"},
        {'u', "SETITEMS"}, {'G', "BINFLOAT"}, {'B', "BINBYTES"}, {'C', "SHORT_BINBYTES"}, {0x80, "PROTO"},
        {0x81, "NEWOBJ"}, {0x82, "EXT1"}, {0x83, "EXT2"}, {0x84, "EXT4"}, {0x85, "TUPLE1"}, {0x86, "TUPLE2"},
        {0x87, "TUPLE3"}, {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"}, {0x8a, "LONG1"}, {0x8b, "LONG4"},
        {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"}, {0x8f, "EMPTY_SET"},
        {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"}, {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"},
        {0x95, "FRAME"}, {0x96, "BYTEARRAY8"}, {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"}};
    for (const auto& n : names)
        if (n.first == op) return n.second;
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", unsigned(op));
    return buf;
}

// The unpickler's state and its opcodes, grouped by what they build, in the order a
// checkpoint's pickle uses them: framing and the memo, containers, scalars, then the objects
// (globals, tensors, storages) that only the allowed constructors may build.
class Unpickler {
public:
    Unpickler(const uint8_t* data, size_t size, const std::string& what) : data_(data), size_(size), what_(what) {}

    Pickle run() {
        const size_t max_values = size_t(std::max<int64_t>(0, limits().max_pickle_values));
        for (;;) {
            op_pos_ = pos_;
            if (pk_.values.size() + memo_.size() + stack_.size() > max_values)
                throw Error(what_ + ": pickle holds more than " + std::to_string(max_values) +
                            " objects (universeg::limits().max_pickle_values)");
            const uint8_t op = *take(1);
            if (op == '.') {  // STOP
                pk_.root = top();
                return std::move(pk_);
            }
            if (!framing_or_memo(op) && !container(op) && !scalar(op) && !object(op))
                throw Error(what_ + ": pickle opcode " + pickle_opcode_name(op) + " at byte " + std::to_string(op_pos_) +
                            " is not supported in a checkpoint");
        }
    }

private:
    // ---- reading operands ----
    Error corrupt(const std::string& msg) const {
        return Error(what_ + ": corrupt pickle at byte " + std::to_string(op_pos_) + ": " + msg);
    }
    const uint8_t* take(uint64_t n) {
        if (n > size_ - pos_) throw corrupt("truncated");
        const uint8_t* p = data_ + pos_;
        pos_ += size_t(n);
        return p;
    }
    uint64_t arg(int n) { return load_uint(take(uint64_t(n)), n); }
    std::string text(uint64_t n) {
        const uint8_t* p = take(n);
        return std::string(reinterpret_cast<const char*>(p), size_t(n));
    }
    std::string line() {  // GLOBAL's newline-terminated operands
        const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
        if (!nl) throw corrupt("truncated");
        std::string s = text(uint64_t(static_cast<const uint8_t*>(nl) - (data_ + pos_)));
        ++pos_;
        return s;
    }

    // ---- the value stack ----
    const PyValue& val(size_t i) const { return pk_.values[i]; }
    static PyValue make(PyKind kind, int64_t i = 0) {
        PyValue v;
        v.kind = kind;
        v.i = i;
        return v;
    }
    void push(PyValue v) {
        pk_.values.push_back(std::move(v));
        stack_.push_back(pk_.values.size() - 1);
    }
    size_t top() const {
        if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) throw corrupt("stack underflow");
        return stack_.back();
    }
    size_t pop() {
        size_t v = top();
        stack_.pop_back();
        return v;
    }
    std::vector<size_t> pop_mark() {
        if (marks_.empty()) throw corrupt("no MARK to pop to");
        std::vector<size_t> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
        stack_.resize(marks_.back());
        marks_.pop_back();
        return items;
    }
    void push_container(PyKind kind, std::vector<size_t> items) {
        PyValue v = make(kind);
        v.items = std::move(items);
        push(std::move(v));
    }
    void append_to(size_t target, const std::vector<size_t>& items, PyKind kind, const char* opcode) {
        if (val(target).kind != kind)
            throw corrupt(std::string(opcode) + " on something that is not a " + (kind == PyKind::List ? "list" : "dict"));
        if (kind == PyKind::Dict && items.size() % 2) throw corrupt("SETITEMS with an odd number of items");
        auto& dst = pk_.values[target].items;
        dst.insert(dst.end(), items.begin(), items.end());
    }

    // ---- opcodes; each group returns false for an opcode that is not its own ----
    bool framing_or_memo(uint8_t op) {
        switch (op) {
            case 0x80:  // PROTO
                if (int v = int(arg(1)); v > 5) throw Error(what_ + ": pickle protocol " + std::to_string(v) + " is not supported");
                return true;
            case 0x95: {  // FRAME: framing only groups opcodes; its length must still fit
                uint64_t frame = arg(8);
                if (frame > size_ - pos_) throw corrupt("frame runs past the end");
                return true;
            }
            case '(': marks_.push_back(stack_.size()); return true;
            case 'q': memo_[arg(1)] = top(); return true;  // BINPUT
            case 'r': memo_[arg(4)] = top(); return true;  // LONG_BINPUT
            case 0x94: {                                   // MEMOIZE
                size_t v = top();
                memo_[memo_.size()] = v;
                return true;
            }
            case 'h': case 'j': {  // BINGET, LONG_BINGET
                uint64_t key = arg(op == 'h' ? 1 : 4);
                auto it = memo_.find(key);
                if (it == memo_.end()) throw corrupt("memo key " + std::to_string(key) + " was never stored");
                stack_.push_back(it->second);
                return true;
            }
            default: return false;
        }
    }

    bool container(uint8_t op) {
        switch (op) {
            case '}': push(make(PyKind::Dict)); return true;
            case ']': push(make(PyKind::List)); return true;
            case ')': push(make(PyKind::Tuple)); return true;
            case 't': push_container(PyKind::Tuple, pop_mark()); return true;
            case 'l': push_container(PyKind::List, pop_mark()); return true;
            case 'd': {
                std::vector<size_t> items = pop_mark();
                if (items.size() % 2) throw corrupt("DICT with an odd number of items");
                push_container(PyKind::Dict, std::move(items));
                return true;
            }
            case 0x85: case 0x86: case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
                std::vector<size_t> items(size_t(op - 0x84));
                for (size_t k = items.size(); k-- > 0;) items[k] = pop();
                push_container(PyKind::Tuple, std::move(items));
                return true;
            }
            case 'a': {  // APPEND
                size_t v = pop();
                append_to(top(), {v}, PyKind::List, "APPEND");
                return true;
            }
            case 'e': {  // APPENDS
                std::vector<size_t> items = pop_mark();
                append_to(top(), items, PyKind::List, "APPENDS");
                return true;
            }
            case 's': {  // SETITEM
                size_t v = pop(), k = pop();
                append_to(top(), {k, v}, PyKind::Dict, "SETITEM");
                return true;
            }
            case 'u': {  // SETITEMS
                std::vector<size_t> items = pop_mark();
                append_to(top(), items, PyKind::Dict, "SETITEMS");
                return true;
            }
            default: return false;
        }
    }
    bool scalar(uint8_t op) {
        switch (op) {
            case 'J': push(make(PyKind::Int, int64_t(int32_t(uint32_t(arg(4)))))); return true;  // BININT
            case 'K': push(make(PyKind::Int, int64_t(arg(1)))); return true;                      // BININT1
            case 'M': push(make(PyKind::Int, int64_t(arg(2)))); return true;                      // BININT2
            case 0x8a: {                                                                          // LONG1
                int n = int(arg(1));
                if (n > 8) throw Error(what_ + ": pickle holds an integer wider than 64 bits");
                uint64_t v = n ? load_uint(take(uint64_t(n)), n) : 0;
                if (n && n < 8 && (v >> (8 * n - 1)) & 1u) v |= ~uint64_t(0) << (8 * n);  // sign-extend
                push(make(PyKind::Int, int64_t(v)));
                return true;
            }
            case 'G': {  // BINFLOAT, big-endian
                PyValue v = make(PyKind::Float);
                uint64_t bits = load_uint(take(8), 8, true);
                std::memcpy(&v.f, &bits, 8);
                push(std::move(v));
                return true;
            }
            case 'X': case 0x8c: case 0x8d: case 'C': case 'B': case 0x8e: {  // str and bytes
                const bool is_text = op == 'X' || op == 0x8c || op == 0x8d;
                const int width = (op == 0x8c || op == 'C') ? 1 : (op == 'X' || op == 'B') ? 4 : 8;
                PyValue v = make(is_text ? PyKind::String : PyKind::Bytes);
                v.s = text(arg(width));
                push(std::move(v));
                return true;
            }
            case 'N': push(make(PyKind::None)); return true;
            case 0x88: push(make(PyKind::Bool, 1)); return true;  // NEWTRUE
            case 0x89: push(make(PyKind::Bool, 0)); return true;  // NEWFALSE
            default: return false;
        }
    }

    bool object(uint8_t op) {
        switch (op) {
            case 'c': {  // GLOBAL
                std::string module = line();
                global(module, line());
                return true;
            }
            case 0x93: {  // STACK_GLOBAL
                size_t name = pop(), module = pop();
                if (val(name).kind != PyKind::String || val(module).kind != PyKind::String)
                    throw corrupt("STACK_GLOBAL needs two strings");
                global(val(module).s, val(name).s);
                return true;
            }
            case 'R': reduce(); return true;
            case 'b': {  // BUILD: attribute state; OrderedDict's (e.g. _metadata) is ignored
                const PyValue& state = val(pop());
                const PyValue& obj = val(top());
                bool empty_state = state.kind == PyKind::None || (state.kind == PyKind::Dict && state.items.empty());
                if (!(obj.kind == PyKind::Dict && (empty_state || state.kind == PyKind::Dict)) &&
                    !(obj.kind == PyKind::Tensor && empty_state))
                    throw corrupt("BUILD of something other than an OrderedDict or tensor");
                return true;
            }
            case 'Q': persistent_id(); return true;
            default: return false;
        }
    }

    void global(const std::string& module, const std::string& name) {
        std::string full = module + "." + name;
        PyValue v = make(PyKind::Global);
        if (!torch_element_type(full, v.dtype) && full != "collections.OrderedDict" &&
            full != "torch._utils._rebuild_tensor_v2" && full != "torch._utils._rebuild_parameter") {
            if (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0)
                throw Error(what_ + ": tensor storage type " + full +
                            " is not supported (only float32, float16, bfloat16 and float64 tensors are)");
            throw Error(what_ + ": pickle refers to " + full + ", which is not allowed: nothing in a checkpoint is ever executed");
        }
        v.s = std::move(full);
        push(std::move(v));
    }

    // REDUCE: only the allowed constructors.
    void reduce() {
        size_t args = pop(), fn = pop();
        if (val(fn).kind != PyKind::Global || val(args).kind != PyKind::Tuple)
            throw corrupt("REDUCE needs a global and an argument tuple");
        const std::string name = val(fn).s;
        const std::vector<size_t> a = val(args).items;
        if (name == "collections.OrderedDict" && a.empty()) {
            push(make(PyKind::Dict));
        } else if (name == "torch._utils._rebuild_tensor_v2") {
            rebuild_tensor(a);
        } else if (name == "torch._utils._rebuild_parameter" && a.size() == 3 && val(a[0]).kind == PyKind::Tensor) {
            stack_.push_back(a[0]);  // a Parameter is its tensor; requires_grad and hooks do not matter here
        } else {
            throw Error(what_ + ": pickle calls " + name + " in a way checkpoints never do");
        }
    }

    std::vector<int64_t> ints(size_t idx, const char* field) const {
        const PyValue& t = val(idx);
        if (t.kind != PyKind::Tuple) throw corrupt(std::string("tensor ") + field + " is not a tuple");
        std::vector<int64_t> out;
        for (size_t k : t.items) {
            if (val(k).kind != PyKind::Int || val(k).i < 0) throw corrupt(std::string("bad tensor ") + field);
            out.push_back(val(k).i);
        }
        return out;
    }

    void rebuild_tensor(const std::vector<size_t>& a) {
        if (a.size() != 6 && a.size() != 7)
            throw corrupt("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
        const PyValue& storage = val(a[0]);
        if (storage.kind != PyKind::Storage) throw corrupt("_rebuild_tensor_v2 without a storage");
        if (val(a[1]).kind != PyKind::Int || val(a[1]).i < 0) throw corrupt("bad tensor storage offset");
        if (val(a[4]).kind != PyKind::Bool || val(a[5]).kind != PyKind::Dict ||
            (a.size() == 7 && val(a[6]).kind != PyKind::Dict && val(a[6]).kind != PyKind::None))
            throw corrupt("bad _rebuild_tensor_v2 arguments");
        PyTensor t;
        t.storage = storage.s;
        t.dtype = storage.dtype;
        t.offset = val(a[1]).i;
        if (val(a[2]).kind == PyKind::Tuple) check_rank(val(a[2]).items.size(), what_ + ": tensor");
        t.size = ints(a[2], "size");
        t.stride = ints(a[3], "stride");
        if (t.size.size() != t.stride.size()) throw corrupt("tensor size and stride differ in length");
        pk_.tensors.push_back(std::move(t));
        push(make(PyKind::Tensor, int64_t(pk_.tensors.size() - 1)));
    }

    // BINPERSID: ('storage', storage type, key, location, numel).
    void persistent_id() {
        const PyValue& pid = val(pop());
        const auto& t = pid.items;
        if (pid.kind != PyKind::Tuple || t.size() != 5 || val(t[0]).kind != PyKind::String || val(t[0]).s != "storage" ||
            val(t[1]).kind != PyKind::Global || val(t[2]).kind != PyKind::String || val(t[3]).kind != PyKind::String ||
            val(t[4]).kind != PyKind::Int)
            throw corrupt("unsupported persistent id");
        PyValue v = make(PyKind::Storage);
        if (!torch_element_type(val(t[1]).s, v.dtype)) throw corrupt(val(t[1]).s + " is not a storage type");
        v.s = val(t[2]).s;
        push(std::move(v));
    }

    const uint8_t* data_;
    size_t size_;
    const std::string& what_;
    Pickle pk_;
    std::vector<size_t> stack_, marks_;            // marks: stack heights at each MARK
    std::unordered_map<uint64_t, size_t> memo_;  // memo key -> value index
    size_t pos_ = 0, op_pos_ = 0;
};

inline Pickle unpickle(const uint8_t* data, size_t size, const std::string& what) { return Unpickler(data, size, what).run(); }

}  // namespace detail
}  // namespace universeg
