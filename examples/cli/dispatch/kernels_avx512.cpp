// The AVX-512 (F, CD, DQ, BW, VL) kernels, plus the AVX512_BF16 ones behind a target
// attribute, found at run time by kernels::select() (see kernels.hpp). Only
// kernels/simd.hpp may be included here: every function it compiles is a template on the arch
// tag, so none is shared with baseline code.
#include <universeg/kernels/simd.hpp>

extern "C" const universeg::kernels::Table* universeg_kernels_avx512() {
#if defined(UNIVERSEG_HAS_XSIMD) && XSIMD_WITH_AVX512BW
    static const universeg::kernels::Table table =
        universeg::kernels::make_table<xsimd::avx512bw>("avx512", universeg::kernels::Isa::avx512);
    return &table;
#else
    return nullptr;
#endif
}
