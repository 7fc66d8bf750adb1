# bulwark::postgres: the PostgreSQL stores (include/bulwark/postgres_*.hpp), header-only like the
# rest, plus libpq. Defined only when libpq is found (Debian: libpq-dev); the core library never
# needs it. Installed with its own export file, which find_package(bulwark COMPONENTS postgres)
# loads (cmake/bulwarkConfig.cmake.in).
find_package(PostgreSQL QUIET)
if(PostgreSQL_FOUND)
  add_library(bulwark_postgres INTERFACE)
  add_library(bulwark::postgres ALIAS bulwark_postgres)
  set_target_properties(bulwark_postgres PROPERTIES EXPORT_NAME postgres)
  target_link_libraries(bulwark_postgres INTERFACE bulwark PostgreSQL::PostgreSQL)
  export(TARGETS bulwark_postgres NAMESPACE bulwark::
         FILE "${PROJECT_BINARY_DIR}/bulwarkPostgresTargets.cmake")
  if(BULWARK_INSTALL)
    install(TARGETS bulwark_postgres EXPORT bulwarkPostgresTargets)
    install(EXPORT bulwarkPostgresTargets NAMESPACE bulwark:: DESTINATION "${BULWARK_CMAKE_DIR}")
  endif()
else()
  message(STATUS "bulwark: libpq not found (Debian: apt-get install libpq-dev): "
                 "bulwark::postgres and its tests are not built")
endif()
