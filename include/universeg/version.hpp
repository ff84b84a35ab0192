// universeg/version.hpp - the library's version: the one place it is written. CMake reads it
// (project(UniverSeg VERSION ...)), `universeg --version` prints it, and saved weights carry it.
#pragma once

#define UNIVERSEG_VERSION_MAJOR 0
#define UNIVERSEG_VERSION_MINOR 2
#define UNIVERSEG_VERSION_PATCH 0
#define UNIVERSEG_VERSION_STRING "0.2.0"

namespace universeg {
constexpr const char* kVersion = UNIVERSEG_VERSION_STRING;
}
