// The one translation unit of the `universeg` program that compiles stb_image
// (see universeg/io/image.hpp).
#define UNIVERSEG_STB_IMPLEMENTATION
#include <universeg/io/image.hpp>
