// libFuzzer target: safetensors (length, JSON header, offsets, dtypes) and, when it loads,
// the UniverSeg architecture inferred from its tensors.
#include <universeg/core/network.hpp>
#include <universeg/io/checkpoint.hpp>
#include <universeg/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const StateDict sd = load_safetensors(data, size, "fuzz.safetensors");
        (void)Network::from_state_dict(sd);
    } catch (const Error&) {
    }
    return 0;
}
