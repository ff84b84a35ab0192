# Data-parallel training over MPI (docs/cluster.md): option UNIVERSEG_MPI (default OFF; needs an
# MPI, e.g. Debian's libopenmpi-dev and openmpi-bin). The library stays MPI-free
# (train/distributed.hpp takes the collective as a function); only the CLI links MPI.
#
# In every build: the CLI's process layer (examples/cli/cluster.cpp), which without MPI refuses
# to run as one of several processes started by mpirun or srun.
# With UNIVERSEG_MPI=ON, in addition:
#   universeg train / finetune   the ranks of an mpirun or srun job share each step's tasks
#   test_mpi                     2 ranks under mpirun train the weights 1 process trains, bit for bit
#   bench_mpi_allgather          the per-step allgather alone (bench/mpi_scaling.sh runs it)
option(UNIVERSEG_MPI "Train over MPI: universeg train/finetune under mpirun (needs an MPI implementation)" OFF)

if(TARGET universeg_cli)
  target_sources(universeg_cli PRIVATE ${PROJECT_SOURCE_DIR}/examples/cli/cluster.cpp)
endif()
if(NOT UNIVERSEG_MPI)
  return()
endif()

find_package(MPI REQUIRED COMPONENTS CXX)
message(STATUS "UniverSeg: MPI ${MPI_CXX_VERSION} (${MPIEXEC_EXECUTABLE})")
if(TARGET universeg_cli)
  target_link_libraries(universeg_cli PRIVATE MPI::MPI_CXX)
  target_compile_definitions(universeg_cli PRIVATE UNIVERSEG_WITH_MPI)
endif()

if(UNIVERSEG_BUILD_TESTS AND TARGET universeg_cli)
  # Part of universeg_tests only here, with an entry of its own (the [mpi] cases).
  target_sources(universeg_tests PRIVATE ${PROJECT_SOURCE_DIR}/tests/test_mpi.cpp)
  # Open MPI refuses root (CI containers) and more ranks than cores unless told; the flags change
  # nothing for other users. MPICH allows both.
  set(mpiexec_flags ${MPIEXEC_PREFLAGS})
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE mpiexec_version ERROR_VARIABLE mpiexec_version)
  if(mpiexec_version MATCHES "Open MPI|OpenRTE")
    list(APPEND mpiexec_flags --oversubscribe --allow-run-as-root)
  endif()
  string(REPLACE ";" " " mpiexec_flags "${mpiexec_flags}")
  target_compile_definitions(universeg_tests PRIVATE
    UNIVERSEG_MPIEXEC="${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 ${mpiexec_flags}")
  add_test(NAME test_mpi COMMAND universeg_tests "[mpi]")
  set_tests_properties(test_mpi PROPERTIES LABELS mpi TIMEOUT 600)  # a rank left waiting would hang, not fail
endif()

if(UNIVERSEG_BUILD_BENCH)
  add_executable(bench_mpi_allgather ${PROJECT_SOURCE_DIR}/bench/mpi_allgather.cpp)
  target_link_libraries(bench_mpi_allgather PRIVATE universeg::universeg MPI::MPI_CXX)
  set_target_properties(bench_mpi_allgather PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
endif()
