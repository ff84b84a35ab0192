# Cross-compiling for 64-bit ARM Linux (AArch64, NEON kernels) with Debian's
# g++-aarch64-linux-gnu; ctest runs the programs under qemu-user:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#   cmake --build build-arm64 && ctest --test-dir build-arm64
# Packages: g++-aarch64-linux-gnu (brings the AArch64 libc, libstdc++ and libgomp under
# /usr/aarch64-linux-gnu), qemu-user, and zlib1g-dev:arm64 (multiarch: dpkg --add-architecture
# arm64) for the image tool. The header-only dependencies (Eigen, stb, Catch2) do not
# depend on the architecture and are found in the host's /usr.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Libraries from the cross toolchain's root or the host's multiarch directory
# (/usr/lib/aarch64-linux-gnu); headers and CMake packages from either; programs from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# ctest and add_custom_command run target programs through this. -L: the AArch64 dynamic
# loader and libraries; files it lacks (zlib) are found at their host paths.
# LD_LIBRARY_PATH: the C library must come from the same glibc build as that loader. zlib1g:arm64
# brings Debian's libc6:arm64 (a different build) to /lib/aarch64-linux-gnu, which the loader
# searches first; with that pair, programs hang when they start a thread (OpenMP).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib)
