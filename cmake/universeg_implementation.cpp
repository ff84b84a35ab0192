// The one translation unit of the project's own programs that compiles the library's heavy
// part (the kernels of every instruction set, the engine); their other sources are compiled
// with UNIVERSEG_API_ONLY. See include/universeg/core/api.hpp.
#define UNIVERSEG_IMPLEMENTATION
#include <universeg/universeg.hpp>
