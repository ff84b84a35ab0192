// The one translation unit of a program that compiles stb_image (see universeg/io/image.hpp);
// universeg_use_image_io() (UniverSegImageIO.cmake) adds it to every image-reading target.
#define UNIVERSEG_STB_IMPLEMENTATION
#include <universeg/io/image.hpp>
