// libFuzzer target: the restricted unpickler on its own (a checkpoint's data.pkl without the
// zip around it, so mutations are not stopped by CRCs), then the state-dict search over the
// value tree it builds.
#include <universeg/io/checkpoint.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const detail::Pickle pk = detail::unpickle(data, size, "fuzz.pkl");
        const size_t sd = detail::find_state_dict(pk, pk.root, 0);
        if (sd != detail::npos) (void)detail::dict_get(pk, pk.values[sd], "out_conv.conv.weight");
    } catch (const Error&) {
    }
    return 0;
}
