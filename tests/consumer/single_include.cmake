# Two translation units that include only the single header, linked together: the single
# header works alone, and links without ODR violations (every function in it is inline).
file(MAKE_DIRECTORY "${BINARY_DIR}")
execute_process(
  COMMAND "${CXX}" -std=c++17 -Wall -Wextra -Wpedantic -Werror -I "${INCLUDE_DIR}"
          "${SOURCE_DIR}/../consumer.cpp" "${SOURCE_DIR}/other_tu.cpp" -pthread -o "${BINARY_DIR}/consumer"
  RESULT_VARIABLE compiled)
if(NOT compiled EQUAL 0)
  message(FATAL_ERROR "the single-header consumer did not compile")
endif()
execute_process(COMMAND "${BINARY_DIR}/consumer" RESULT_VARIABLE ran)
if(NOT ran EQUAL 0)
  message(FATAL_ERROR "the single-header consumer failed: ${ran}")
endif()
