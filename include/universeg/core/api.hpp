// universeg/core/api.hpp - how the library's compiled part reaches a program.
//
// By default everything is inline: include <universeg/universeg.hpp> and compile, nothing else.
// A program of many translation units can compile the heavy part (the CPU kernels for every
// instruction set and the forward schedule) once instead of in each of them:
//
//   #define UNIVERSEG_IMPLEMENTATION   // in exactly one .cpp, before including universeg.hpp
//   #define UNIVERSEG_API_ONLY         // in every other .cpp (or -DUNIVERSEG_API_ONLY)
//
// UNIVERSEG_API marks the functions at that boundary: inline by default, ordinary external
// functions in the two modes. UNIVERSEG_WITH_IMPLEMENTATION is 1 where their bodies are compiled.
#pragma once

#if defined(UNIVERSEG_IMPLEMENTATION) && defined(UNIVERSEG_API_ONLY)
#error "define UNIVERSEG_IMPLEMENTATION in one translation unit and UNIVERSEG_API_ONLY in the others, not both"
#endif

#if defined(UNIVERSEG_IMPLEMENTATION) || defined(UNIVERSEG_API_ONLY)
#define UNIVERSEG_API
#else
#define UNIVERSEG_API inline
#endif

// OpenMP pragmas that vanish without -fopenmp, so that GCC's -Wall has no unknown pragma to
// report: UNIVERSEG_OMP(parallel for) is `#pragma omp parallel for` under OpenMP.
#ifdef _OPENMP
#define UNIVERSEG_PRAGMA(x) _Pragma(#x)
#define UNIVERSEG_OMP(x) UNIVERSEG_PRAGMA(omp x)
#else
#define UNIVERSEG_OMP(x)
#endif

#ifdef UNIVERSEG_API_ONLY
#define UNIVERSEG_WITH_IMPLEMENTATION 0
#else
#define UNIVERSEG_WITH_IMPLEMENTATION 1
#endif
