// libFuzzer target: a whole PyTorch checkpoint (zip + data.pkl + storages; CRCs are not
// checked in fuzzing builds, see zip.hpp) and, when it loads, the UniverSeg architecture
// inferred from its tensors.
#include <universeg/io/weights.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const StateDict sd = load_torch_checkpoint(data, size, "fuzz.pt");
        const Model model(sd);
        (void)model.parameter_count();
    } catch (const Error&) {
    }
    return 0;
}
