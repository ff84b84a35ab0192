# Image and volume I/O (universeg/io/image.hpp, io/nifti.hpp, segment.hpp) needs the stb
# headers (Debian: libstb-dev; compiled in one .cpp per program, see image.hpp) and zlib
# (.nii.gz). Only the programs that read images use them: the core headers need neither.
find_package(ZLIB REQUIRED)
find_path(UNIVERSEG_STB_INCLUDE_DIR stb/stb_image.h)
if(NOT UNIVERSEG_STB_INCLUDE_DIR)
  message(FATAL_ERROR "stb headers (stb/stb_image.h) not found: install libstb-dev or set UNIVERSEG_STB_INCLUDE_DIR")
endif()

function(universeg_use_image_io target)
  target_include_directories(${target} PRIVATE ${UNIVERSEG_STB_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE ZLIB::ZLIB)
endfunction()
