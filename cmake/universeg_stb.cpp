// The translation unit that compiles stb_image for universeg::io (see universeg/io/image.hpp
// and UniverSegImageIO.cmake, which compiles it with -fwrapv).
#define UNIVERSEG_STB_IMPLEMENTATION
#include <universeg/io/image.hpp>
