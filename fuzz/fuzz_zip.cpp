// libFuzzer target: the zip reader (end of central directory search, ZIP64 records, central
// and local headers) and reading every entry it lists. Any exception other than
// universeg::Error, any sanitizer report or any allocation beyond -rss_limit_mb is a finding.
#include <universeg/io/zip.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const detail::ZipArchive zip = detail::zip_open(data, size, "fuzz.zip");
        for (const auto& entry : zip.entries) {
            try {
                const detail::ByteSpan b = detail::zip_read(zip, entry.first);
                if (b.size) {
                    volatile uint8_t last = b.data[b.size - 1];  // the span must lie inside the input
                    (void)last;
                }
            } catch (const Error&) {
            }
        }
    } catch (const Error&) {
    }
    return 0;
}
