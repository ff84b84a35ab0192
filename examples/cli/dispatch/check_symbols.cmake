# Fails if a per-architecture object defines a weak (COMDAT) symbol that is not a template
# instantiated on its own arch tag: such a symbol could also be emitted by baseline code, and
# the linker might keep the AVX-512 copy for everyone (see include/universeg/kernels.hpp).
# Usage: cmake -DNM=nm -DOBJECTS="a.o;b.o" -P check_symbols.cmake
set(bad "")
foreach(obj IN LISTS OBJECTS)
  execute_process(COMMAND ${NM} -C --defined-only ${obj} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${obj}")
  endif()
  string(REPLACE "\n" ";" lines "${out}")
  foreach(line IN LISTS lines)
    if(line MATCHES "^[0-9a-f]+ [WVu] (.*)$")
      set(sym "${CMAKE_MATCH_1}")
      # Allowed: anything mentioning an xsimd arch tag, the function-local static table and its
      # guard, and the exception-personality pointer (data, not code).
      if(NOT sym MATCHES "xsimd::(avx|fma3|sse)|universeg_kernels_|^DW\\.ref\\.__gxx_personality_v0$")
        list(APPEND bad "${obj}: ${sym}")
      endif()
    endif()
  endforeach()
endforeach()
if(bad)
  string(REPLACE ";" "\n  " bad "${bad}")
  message(FATAL_ERROR "per-arch objects define shared weak symbols:\n  ${bad}")
endif()
message(STATUS "per-arch objects define no shared weak symbols")
