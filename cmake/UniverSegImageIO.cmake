# Image and volume I/O (universeg/io/image.hpp, io/nifti.hpp, segment.hpp) needs the stb
# headers (Debian: libstb-dev; compiled in one .cpp per program, see image.hpp) and zlib
# (.nii.gz). Only the programs that read images use them: the core headers need neither.
find_package(ZLIB REQUIRED)
find_path(UNIVERSEG_STB_INCLUDE_DIR stb/stb_image.h)
if(NOT UNIVERSEG_STB_INCLUDE_DIR)
  message(FATAL_ERROR "stb headers (stb/stb_image.h) not found: install libstb-dev or set UNIVERSEG_STB_INCLUDE_DIR")
endif()

# Each such target compiles stb_image once, in cmake/universeg_stb.cpp, with the target's own
# flags (sanitizers included) plus -fwrapv: Debian's stb_image 2.27 lets signed integers
# overflow in its JPEG decoder on hostile files (DC prediction, dequantisation; stb issues 1292
# and 1533), undefined behaviour that -fwrapv turns into defined wrapping (garbage pixels).
set(UNIVERSEG_STB_SOURCE ${CMAKE_CURRENT_LIST_DIR}/universeg_stb.cpp)
function(universeg_use_image_io target)
  target_include_directories(${target} PRIVATE ${UNIVERSEG_STB_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE ZLIB::ZLIB)
  target_sources(${target} PRIVATE ${UNIVERSEG_STB_SOURCE})
  set_source_files_properties(${UNIVERSEG_STB_SOURCE} PROPERTIES COMPILE_OPTIONS -fwrapv)
endfunction()
