// libFuzzer target: .npy files (magic, version, header dict, dtypes, shapes, fortran order).
#include <universeg/io/npy.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const Tensor t = load_npy(data, size, "fuzz.npy");
        if (checked_numel(t.shape, INT64_MAX, "fuzz.npy") != t.numel()) __builtin_trap();
    } catch (const Error&) {
    }
    return 0;
}
