// The AVX-512 (F, CD, DQ, BW, VL) kernels, plus the AVX512_BF16 ones behind a target
// attribute, found at run time by kernels::select() (see kernels.hpp); and the same table with
// its bf16 Winograd products on AMX tiles (also behind a target attribute), which select()
// offers only where the CPU and the OS allow AMX. Only kernels/simd.hpp may be included here:
// every function it compiles is a template on the arch tag, so none is shared with baseline code.
#include <universeg/cpu/simd.hpp>

extern "C" const universeg::kernels::Table* universeg_kernels_avx512() {
#if defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_AVX512BW
    static const universeg::kernels::Table table =
        universeg::kernels::make_table<xsimd::avx512bw>("avx512", universeg::kernels::Isa::avx512);
    return &table;
#else
    return nullptr;
#endif
}

extern "C" const universeg::kernels::Table* universeg_kernels_amx() {
#if defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_AVX512BW && defined(UNIVERSEG_HAS_BF16_KERNELS)
    static const universeg::kernels::Table table =
        universeg::kernels::make_table<xsimd::avx512bw>("amx", universeg::kernels::Isa::amx);
    return &table;
#else
    return nullptr;
#endif
}
