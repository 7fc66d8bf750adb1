# bulwark::sqlite: the SQLite stores (<bulwark/sqlite_dead_letter_store.hpp>,
# <bulwark/sqlite_queue_store.hpp>) with SQLite 3 linked. Defined only when SQLite 3 is found;
# installed with an export set of its own (bulwarkSqliteTargets.cmake), which
# find_package(bulwark COMPONENTS sqlite) loads after find_dependency(SQLite3).
find_package(SQLite3 QUIET)
if(NOT SQLite3_FOUND)
  message(STATUS "bulwark: SQLite 3 not found (Debian/Ubuntu: apt-get install -y libsqlite3-dev); "
                 "bulwark::sqlite and its tests are skipped")
  return()
endif()

add_library(bulwark_sqlite INTERFACE)
add_library(bulwark::sqlite ALIAS bulwark_sqlite)
set_target_properties(bulwark_sqlite PROPERTIES EXPORT_NAME sqlite)
target_link_libraries(bulwark_sqlite INTERFACE bulwark::bulwark SQLite::SQLite3)

# For a consumer that add_subdirectory()s us and export()s a target linking bulwark::sqlite.
export(TARGETS bulwark_sqlite NAMESPACE bulwark::
       FILE "${PROJECT_BINARY_DIR}/bulwarkSqliteTargets.cmake")

if(BULWARK_INSTALL)
  install(TARGETS bulwark_sqlite EXPORT bulwarkSqliteTargets)
  install(EXPORT bulwarkSqliteTargets NAMESPACE bulwark:: DESTINATION "${BULWARK_CMAKE_DIR}")
endif()
