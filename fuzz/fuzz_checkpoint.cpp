// libFuzzer target: a whole PyTorch checkpoint (zip + data.pkl + storages; CRCs are not
// checked in fuzzing builds, see zip.hpp) and, when it loads, the UniverSeg architecture
// inferred from its tensors.
#include <universeg/core/network.hpp>
#include <universeg/io/checkpoint.hpp>
#include <universeg/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const StateDict sd = load_torch_checkpoint(data, size, "fuzz.pt");
        (void)Network::from_state_dict(sd);
    } catch (const Error&) {
    }
    return 0;
}
