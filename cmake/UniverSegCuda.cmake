# The CUDA backend (include/universeg/cuda/cuda.cuh), opt-in with -DUNIVERSEG_CUDA=ON (needs nvcc
# and cuBLAS; point CMAKE_CUDA_COMPILER at nvcc, e.g. /usr/local/cuda/bin/nvcc).
#
# In every build: the CLI's --device switch (examples/cli/cuda_device.cpp, which explains how
# to get CUDA when it is off); the host-side plan's tests (test_cuda_plan: planning, workspace,
# and the forward pass as the GPU sequences it, emulated on the CPU) are in tests/.
# With UNIVERSEG_CUDA=ON, in addition:
#   universeg::cuda   INTERFACE target for nvcc code: include path, cudart, cuBLAS
#   test_cuda         GPU tests; ctest reports them skipped where no GPU is visible (exit 77),
#                     and test_cuda_nodevice checks the no-GPU error path the other way round
#   universeg --device cuda for run and bench (examples/cli/cuda_device.cu)
#   bench_cuda        forward-pass and per-layer GEMM timings on the GPU
# Architectures: CMAKE_CUDA_ARCHITECTURES, by default 80-real;90 (A100 machine code, H100
# machine code plus PTX that newer GPUs compile when loading).
option(UNIVERSEG_CUDA "Build the CUDA backend's tests, CLI device and benchmark (needs nvcc and cuBLAS)" OFF)

if(TARGET universeg_cli)
  target_sources(universeg_cli PRIVATE ${PROJECT_SOURCE_DIR}/examples/cli/cuda_device.cpp)
endif()
# `universeg run --device cuda` on the v1 golden case: without CUDA in the build, the error that
# says how to get it; with CUDA, parity through the CLI (skipped where no GPU is visible).
if(UNIVERSEG_BUILD_TESTS AND TARGET universeg_cli)
  set(golden ${PROJECT_SOURCE_DIR}/tests/data/golden/v1_b2_s4_128)
  add_test(NAME cli_run_device_cuda COMMAND universeg_cli run --device cuda --weights ${golden}/weights.pt
    --query ${golden}/query.npy --support-images ${golden}/support_images.npy
    --support-labels ${golden}/support_labels.npy --reference ${golden}/logits.npy
    --out ${CMAKE_CURRENT_BINARY_DIR}/cli_run_device_cuda.npy)
  if(UNIVERSEG_CUDA)
    set_tests_properties(cli_run_device_cuda PROPERTIES LABELS cuda PASS_REGULAR_EXPRESSION "PASS"
      SKIP_REGULAR_EXPRESSION "cudaGetDeviceCount|no CUDA device")
  else()
    set_tests_properties(cli_run_device_cuda PROPERTIES
      PASS_REGULAR_EXPRESSION "this build has no CUDA support; configure with -DUNIVERSEG_CUDA=ON")
  endif()
endif()

if(NOT UNIVERSEG_CUDA)
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 80-real 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
message(STATUS "UniverSeg: CUDA ${CMAKE_CUDA_COMPILER_VERSION} (${CMAKE_CUDA_COMPILER}), architectures ${CMAKE_CUDA_ARCHITECTURES}")

add_library(universeg_cuda INTERFACE)
add_library(universeg::cuda ALIAS universeg_cuda)
target_include_directories(universeg_cuda INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>)
target_compile_features(universeg_cuda INTERFACE cxx_std_17)
target_link_libraries(universeg_cuda INTERFACE CUDA::cudart_static CUDA::cublas)
# The host compiler's warnings too (nvcc's own are on by default).
target_compile_options(universeg_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)

if(UNIVERSEG_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
  add_executable(test_cuda tests/test_cuda.cu tests/cuda_cases.cpp)
  target_link_libraries(test_cuda PRIVATE universeg_cuda universeg_implementation Catch2::Catch2)
  target_compile_definitions(test_cuda PRIVATE UNIVERSEG_TEST_DATA="${PROJECT_SOURCE_DIR}/tests/data")
  add_test(NAME test_cuda COMMAND test_cuda)
  add_test(NAME test_cuda_nodevice COMMAND test_cuda --no-device)
  set_tests_properties(test_cuda test_cuda_nodevice PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda)
endif()

if(TARGET universeg_cli)
  # A library of its own: examples/ has no CUDA language enabled, so the program gets only
  # the objects and the link dependencies (cudart, cuBLAS).
  add_library(universeg_cli_cuda STATIC examples/cli/cuda_device.cu)
  target_link_libraries(universeg_cli_cuda PRIVATE universeg_cuda universeg::universeg)
  target_link_libraries(universeg_cli PRIVATE universeg_cli_cuda)
  target_compile_definitions(universeg_cli PRIVATE UNIVERSEG_CUDA=1)
endif()

if(UNIVERSEG_BUILD_BENCH)
  add_executable(bench_cuda bench/bench_cuda.cu)
  target_link_libraries(bench_cuda PRIVATE universeg_cuda)
endif()
