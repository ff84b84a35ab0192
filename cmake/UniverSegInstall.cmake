# Install rules, in two components:
#   dev  the headers, universeg::io's library, the CMake package (find_package(UniverSeg):
#        universeg::universeg and universeg::io), pkg-config files, LICENSE and README
#   cli  the universeg program and the bundled weights (added by examples/CMakeLists.txt)
#   cmake --install BUILD --prefix P --component dev    # needs only universeg_io built
include(CMakePackageConfigHelpers)
set(UNIVERSEG_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/UniverSeg)

install(DIRECTORY include/universeg DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)
install(TARGETS universeg universeg_io EXPORT UniverSegTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT UniverSegTargets NAMESPACE universeg:: DESTINATION ${UNIVERSEG_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/UniverSegConfig.cmake.in ${PROJECT_BINARY_DIR}/UniverSegConfig.cmake
  INSTALL_DESTINATION ${UNIVERSEG_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/UniverSegConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/UniverSegConfig.cmake ${PROJECT_BINARY_DIR}/UniverSegConfigVersion.cmake
  DESTINATION ${UNIVERSEG_CMAKE_DIR} COMPONENT dev)

# pkg-config: universeg (headers, Eigen, OpenMP) and universeg-io (plus the stb unit and zlib).
set(UNIVERSEG_PC_CFLAGS "")
set(UNIVERSEG_PC_LIBS "")
if(OpenMP_CXX_FOUND)
  set(UNIVERSEG_PC_CFLAGS "${OpenMP_CXX_FLAGS}")
  set(UNIVERSEG_PC_LIBS "${OpenMP_CXX_FLAGS}")
endif()
file(RELATIVE_PATH UNIVERSEG_PC_PREFIX_FROM_PCDIR ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(cmake/universeg.pc.in ${PROJECT_BINARY_DIR}/universeg.pc @ONLY)
configure_file(cmake/universeg-io.pc.in ${PROJECT_BINARY_DIR}/universeg-io.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/universeg.pc ${PROJECT_BINARY_DIR}/universeg-io.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
install(FILES LICENSE README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT dev)
