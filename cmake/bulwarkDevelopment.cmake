# Everything only bulwark's own developers need: warnings, tests, examples, benchmarks and the
# single-header tooling. Included only when bulwark is the top-level project.

include(CTest)

option(BULWARK_CONSUMER_TESTS "Test find_package, FetchContent, pkg-config and the single header" ON)
option(BULWARK_BENCHMARK_SMOKE "Smoke-run each benchmark binary from ctest" ON)
option(BULWARK_STRESS_TESTS "Register the hidden [stress] test cases with ctest" ON)

add_library(bulwark_warnings INTERFACE)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(bulwark_warnings INTERFACE
    -Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Wundef -Wcast-qual -Wdouble-promotion
    -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(bulwark_warnings INTERFACE -Wextra-semi)
  endif()
  if(BULWARK_WERROR)
    target_compile_options(bulwark_warnings INTERFACE -Werror)
  endif()
endif()

find_package(Python3 COMPONENTS Interpreter)

# The single header: regenerate with `cmake --build <dir> --target bulwark_amalgamate`.
if(Python3_Interpreter_FOUND)
  add_custom_target(bulwark_amalgamate
    COMMAND Python3::Interpreter "${PROJECT_SOURCE_DIR}/cmake/amalgamate.py"
    WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
    COMMENT "Regenerating single_include/bulwark/bulwark.hpp")
endif()

if(BULWARK_BUILD_TESTS)
  add_subdirectory(tests)
endif()
if(BULWARK_BUILD_EXAMPLES)
  add_subdirectory(examples)
endif()
if(BULWARK_BUILD_BENCHMARKS)
  add_subdirectory(benchmarks)
endif()
