// The AVX2 + FMA kernels, compiled with -mavx2 -mfma and found at run time by
// kernels::select() (see kernels.hpp). Only kernels/simd.hpp may be included here: every
// function it compiles is a template on the arch tag, so none is shared with baseline code.
#include <universeg/cpu/simd.hpp>

extern "C" const universeg::kernels::Table* universeg_kernels_avx2() {
#if defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_FMA3_AVX2
    static const universeg::kernels::Table table =
        universeg::kernels::make_table<xsimd::fma3<xsimd::avx2>>("avx2", universeg::kernels::Isa::avx2);
    return &table;
#else
    return nullptr;
#endif
}
