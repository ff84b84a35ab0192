// libFuzzer target: safetensors (length, JSON header, offsets, dtypes) and, when it loads,
// the UniverSeg architecture inferred from its tensors.
#include <universeg/io/weights.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const StateDict sd = load_safetensors(data, size, "fuzz.safetensors");
        const Model model(sd);
        (void)model.parameter_count();
    } catch (const Error&) {
    }
    return 0;
}
