# Runtime CPU dispatch (see include/universeg/kernels.hpp): the per-architecture kernel units,
# compiled once into the OBJECT library universeg_dispatch with their own -m flags. A target
# links it to carry AVX2 and AVX-512 kernels beside its baseline ones:
#   universeg_link_dispatch(my_program)
# Only for GCC/Clang on x86-64 with xsimd; elsewhere the function does nothing and programs
# run the kernels compiled with their own flags.
function(universeg_link_dispatch target)
  if(NOT UNIVERSEG_XSIMD OR NOT UNIVERSEG_XSIMD_INCLUDE_DIR OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang"
     OR NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    return()
  endif()
  if(NOT TARGET universeg_dispatch)
    set(dir ${PROJECT_SOURCE_DIR}/examples/cli/dispatch)
    add_library(universeg_dispatch OBJECT ${dir}/kernels_avx2.cpp ${dir}/kernels_avx512.cpp)
    target_link_libraries(universeg_dispatch PRIVATE universeg::universeg)
    set_source_files_properties(${dir}/kernels_avx2.cpp PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma")
    set_source_files_properties(${dir}/kernels_avx512.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx512f;-mavx512cd;-mavx512dq;-mavx512bw;-mavx512vl;-mfma")
  endif()
  target_link_libraries(${target} PRIVATE universeg_dispatch)
endfunction()

# A ctest entry guarding the design: the per-arch objects must define no weak symbol that
# baseline code could share (anything not instantiated on an xsimd arch tag).
function(universeg_add_dispatch_symbol_test)
  if(TARGET universeg_dispatch AND CMAKE_NM)
    add_test(NAME dispatch_symbols COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM}
      "-DOBJECTS=$<TARGET_OBJECTS:universeg_dispatch>" -P ${PROJECT_SOURCE_DIR}/examples/cli/dispatch/check_symbols.cmake)
  endif()
endfunction()
