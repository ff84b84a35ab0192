// Runs a fuzz target's LLVMFuzzerTestOneInput once on each file named on the command line,
// without libFuzzer: what fuzz/CMakeLists.txt builds for compilers other than clang, and what
// .ci/memcheck runs under valgrind on the seed corpora and tests/data/hostile/.
#include <universeg/io/bytes.hpp>

#include <cstdio>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::vector<uint8_t> bytes = universeg::read_file(argv[i]);
        LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    }
    std::printf("%d inputs replayed\n", argc - 1);
    return 0;
}
