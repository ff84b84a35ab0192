// The test program's main, and the one translation unit that compiles stb_image_write (the
// tests write images with it).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
