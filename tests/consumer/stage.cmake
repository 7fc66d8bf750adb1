# Installs the build tree into a fresh prefix: a real install tree, so a missing install() rule
# fails the consumers.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${result}")
endif()
foreach(expected include/bulwark/bulwark.hpp share/cmake/bulwark/bulwarkConfig.cmake
                 share/cmake/bulwark/bulwarkConfigVersion.cmake
                 share/cmake/bulwark/bulwarkTargets.cmake share/pkgconfig/bulwark.pc)
  if(NOT EXISTS "${PREFIX}/${expected}")
    message(FATAL_ERROR "the install tree lacks ${expected}")
  endif()
endforeach()
