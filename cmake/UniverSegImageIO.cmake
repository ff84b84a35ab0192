# universeg::io: image and volume I/O (universeg/io/image.hpp, io/nifti.hpp, segment/). It
# needs zlib (.nii.gz) and the stb headers (Debian: libstb-dev), whose decoder is compiled once,
# here, in a small static library: with -fwrapv, because Debian's stb_image 2.27 lets signed
# integers overflow in its JPEG decoder on hostile files (DC prediction, dequantisation; stb
# issues 1292 and 1533), undefined behaviour that -fwrapv turns into defined wrapping.
find_package(ZLIB REQUIRED)
find_path(UNIVERSEG_STB_INCLUDE_DIR stb/stb_image.h)
if(NOT UNIVERSEG_STB_INCLUDE_DIR)
  message(FATAL_ERROR "stb headers (stb/stb_image.h) not found: install libstb-dev or set UNIVERSEG_STB_INCLUDE_DIR")
endif()

add_library(universeg_io STATIC ${CMAKE_CURRENT_LIST_DIR}/universeg_stb.cpp)
add_library(universeg::io ALIAS universeg_io)
set_target_properties(universeg_io PROPERTIES EXPORT_NAME io POSITION_INDEPENDENT_CODE ON)
target_link_libraries(universeg_io PUBLIC universeg ZLIB::ZLIB)
target_include_directories(universeg_io PUBLIC $<BUILD_INTERFACE:${UNIVERSEG_STB_INCLUDE_DIR}>)
target_compile_options(universeg_io PRIVATE -fwrapv)
