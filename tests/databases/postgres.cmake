# The postgres.* tests: PostgresQueueStore and PostgresDeadLetterStore on a real server that a
# CTest fixture starts (postgres_fixture.sh: initdb into the build tree, pg_ctl start on
# 127.0.0.1 at a free port, fsync on) and stops. The tests read its connection string from the
# file BULWARK_PG_CONNINFO_FILE names. Built when bulwark::postgres is (libpq found) and the
# server binaries (initdb, pg_ctl) are installed.
if(NOT TARGET bulwark::postgres)
  return()
endif()
find_program(BULWARK_PG_INITDB initdb
             HINTS /usr/lib/postgresql/17/bin /usr/lib/postgresql/16/bin
                   /usr/lib/postgresql/15/bin /usr/lib/postgresql/14/bin /usr/lib/postgresql/13/bin)
if(NOT BULWARK_PG_INITDB)
  message(STATUS "bulwark: PostgreSQL server (initdb) not found: the postgres.* tests are skipped")
  return()
endif()

set(_pg_dir "${CMAKE_CURRENT_SOURCE_DIR}/databases")
set(_pg_server "${CMAKE_CURRENT_BINARY_DIR}/postgres_server")
set(_pg_env "BULWARK_PG_CONNINFO_FILE=${_pg_server}/conninfo")
# For the benchmark's smoke run (benchmarks/CMakeLists.txt), which uses the same server.
set_property(GLOBAL PROPERTY BULWARK_POSTGRES_SERVER_DIR "${_pg_server}")

# Every PostgreSQL header compiles on its own (the generic header check leaves them out).
file(GLOB _pg_headers CONFIGURE_DEPENDS RELATIVE "${PROJECT_SOURCE_DIR}/include"
     "${PROJECT_SOURCE_DIR}/include/bulwark/postgres_*.hpp"
     "${PROJECT_SOURCE_DIR}/include/bulwark/detail/postgres.hpp")
set(_pg_header_tus "")
foreach(_header IN LISTS _pg_headers)
  string(MAKE_C_IDENTIFIER "${_header}" _id)
  set(_tu "${PROJECT_BINARY_DIR}/header_check/${_id}.cpp")
  file(CONFIGURE OUTPUT "${_tu}" CONTENT "#include <${_header}>\n#include <${_header}>\n")
  list(APPEND _pg_header_tus "${_tu}")
endforeach()
add_library(bulwark_postgres_header_check OBJECT ${_pg_header_tus})
target_link_libraries(bulwark_postgres_header_check PRIVATE bulwark::postgres bulwark_warnings)

add_test(NAME postgres.server.start
         COMMAND sh "${_pg_dir}/postgres_fixture.sh" setup "${_pg_server}")
set_tests_properties(postgres.server.start PROPERTIES FIXTURES_SETUP bulwark_postgres TIMEOUT 120)
add_test(NAME postgres.server.stop
         COMMAND sh "${_pg_dir}/postgres_fixture.sh" cleanup "${_pg_server}")
set_tests_properties(postgres.server.stop PROPERTIES FIXTURES_CLEANUP bulwark_postgres)

add_executable(bulwark_postgres_tests ${_pg_dir}/postgres_queue_store_test.cpp
                                      ${_pg_dir}/postgres_dead_letter_store_test.cpp)
target_link_libraries(bulwark_postgres_tests
                      PRIVATE bulwark::postgres bulwark_warnings Catch2::Catch2WithMain)
target_include_directories(bulwark_postgres_tests PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}")
catch_discover_tests(bulwark_postgres_tests TEST_PREFIX "postgres." DISCOVERY_TIMEOUT 60
                     PROPERTIES FIXTURES_REQUIRED bulwark_postgres ENVIRONMENT "${_pg_env}")

# Many instances (postgres_instances_test.cpp): 4 pg_worker processes on one queue; "kill"
# SIGKILLs one mid-run, "restart" restarts the server mid-run (alone: it would disturb the other
# tests' connections). BULWARK_PG_MESSAGES sets the scale: issue 16's 100000 for the kill run
# (about 20 s on the 2-core CI machine: see docs/databases.md), less under the sanitizers and for
# the restart run. The kill run uses synchronous_commit=off (it tests leases, not the server's
# durability); the restart run keeps it on.
add_executable(bulwark_pg_worker ${_pg_dir}/pg_worker.cpp)
target_link_libraries(bulwark_pg_worker PRIVATE bulwark::postgres bulwark_warnings)
add_executable(bulwark_postgres_instances ${_pg_dir}/postgres_instances_test.cpp)
target_link_libraries(bulwark_postgres_instances PRIVATE bulwark::postgres bulwark_warnings)
if(CMAKE_CXX_FLAGS MATCHES "sanitize")
  set(_pg_kill_messages 4000)
  set(_pg_restart_messages 2000)
else()
  set(_pg_kill_messages 100000)
  set(_pg_restart_messages 5000)
endif()
foreach(_mode kill restart)
  add_test(NAME postgres.instances.${_mode}
           COMMAND bulwark_postgres_instances ${_mode} $<TARGET_FILE:bulwark_pg_worker>
                   "${_pg_dir}/postgres_fixture.sh" "${_pg_server}"
           WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}")
  set_tests_properties(postgres.instances.${_mode} PROPERTIES
    FIXTURES_REQUIRED bulwark_postgres TIMEOUT 600 LABELS postgres)
endforeach()
set_tests_properties(postgres.instances.kill PROPERTIES ENVIRONMENT
  "${_pg_env};BULWARK_PG_MESSAGES=${_pg_kill_messages};BULWARK_PG_SYNCHRONOUS_COMMIT=off")
set_tests_properties(postgres.instances.restart PROPERTIES RUN_SERIAL ON ENVIRONMENT
  "${_pg_env};BULWARK_PG_MESSAGES=${_pg_restart_messages}")
