// Test support for the postgres.* tests: the fixture server's connection string and fresh schemas.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_TESTS_DATABASES_POSTGRES_SUPPORT_HPP
#define BULWARK_TESTS_DATABASES_POSTGRES_SUPPORT_HPP

#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include <bulwark/detail/postgres.hpp>

namespace bulwark_test {
namespace pg {

// BULWARK_PG_DSN, else the first line of the file BULWARK_PG_CONNINFO_FILE names (the CTest
// fixture writes it). Empty when neither is set.
inline std::string conninfo() {
    if (const char* dsn = std::getenv("BULWARK_PG_DSN")) {
        return dsn;
    }
    if (const char* file = std::getenv("BULWARK_PG_CONNINFO_FILE")) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line);
        return line;
    }
    return {};
}

// A schema name no other test (or process) uses: each store made with it starts empty.
inline std::string fresh_schema(const char* prefix) {
    static int n = 0;
    return std::string(prefix) + "_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
}

inline bulwark::PostgresStoreOptions options(const std::string& schema) {
    bulwark::PostgresStoreOptions o;
    o.conninfo = conninfo();
    if (o.conninfo.empty()) {
        throw std::runtime_error(
            "no PostgreSQL server: set BULWARK_PG_DSN or BULWARK_PG_CONNINFO_FILE");
    }
    o.schema = schema;
    o.max_retries = 3;
    return o;
}

}  // namespace pg
}  // namespace bulwark_test

#endif  // BULWARK_TESTS_DATABASES_POSTGRES_SUPPORT_HPP
