// SQLite plumbing for the SQLite stores: connection, statements, transactions, schema, errors.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_SQLITE_HPP
#define BULWARK_DETAIL_SQLITE_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <sqlite3.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <bulwark/config.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>
#include <bulwark/version.hpp>

namespace bulwark {

// What SQLite's `synchronous` setting a SQLite store commits with (the database is always in WAL
// mode). What each loses:
//   full   (default): a commit returns once the write-ahead log is on disk: an acknowledged
//          change survives a process crash, an OS crash and a power cut.
//   normal: the log is synced only at checkpoints: a process crash loses nothing, but an OS
//          crash or a power cut may roll back the last transactions acknowledged before it
//          (the file stays consistent).
//   off:   nothing is synced: a process crash loses nothing, but an OS crash or a power cut may
//          lose acknowledged changes and may corrupt the database.
enum class SqliteSynchronous : std::uint8_t { full, normal, off };

inline const char* to_string(SqliteSynchronous s) noexcept {
    switch (s) {
        case SqliteSynchronous::full:
            return "full";
        case SqliteSynchronous::normal:
            return "normal";
        case SqliteSynchronous::off:
            return "off";
    }
    return "unknown";
}

// SQLite refused or failed an operation of a SQLite store: the file is not a database or is
// corrupt, it holds a schema newer than this bulwark, it stayed locked past the busy timeout, the
// disk is full... code() is SQLite's extended result code (SQLITE_NOTADB, SQLITE_CORRUPT,
// SQLITE_BUSY, ...); SQLITE_ERROR for a schema this bulwark cannot use. When a store operation
// throws it, the operation's transaction was rolled back: nothing of it is stored.
class SqliteError : public std::runtime_error {
public:
    SqliteError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}

    int code() const noexcept { return code_; }

private:
    int code_;
};

namespace detail {

[[noreturn]] BULWARK_NOINLINE inline void throw_sqlite(sqlite3* db, int rc, std::string_view what) {
    std::string message = "bulwark SQLite store: ";
    message.append(what);
    message += ": ";
    const int extended = db != nullptr ? sqlite3_extended_errcode(db) : rc;
    const int code = (extended & 0xff) == (rc & 0xff) ? extended : rc;
    message +=
        db != nullptr && (extended & 0xff) == (rc & 0xff) ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
        message += " (the file is not a bulwark SQLite store, or it is damaged)";
    }
    message += " [SQLite code " + std::to_string(code) + "]";
    throw SqliteError(message, code);
}

// A prepared statement: bound, stepped, then reset by a StatementUse so that it can be reused.
// Not thread-safe: used under its connection's owner's lock.
class SqliteStatement {
public:
    SqliteStatement(sqlite3* db, std::string_view sql) : db_(db) {
        const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                          SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
        if (rc != SQLITE_OK) {
            sqlite3_finalize(stmt_);
            throw_sqlite(db, rc, "prepare");
        }
    }
    SqliteStatement(const SqliteStatement&) = delete;
    SqliteStatement& operator=(const SqliteStatement&) = delete;
    ~SqliteStatement() { sqlite3_finalize(stmt_); }

    // Parameters count from 1, as in SQLite.
    void bind(int i, std::int64_t value) { check(sqlite3_bind_int64(stmt_, i, value), "bind"); }
    // Text: the bytes as they are (SQLite checks no encoding), compared byte by byte, and what
    // an operator's `WHERE type = 'sms'` matches.
    void bind(int i, std::string_view text) {
        check(sqlite3_bind_text64(stmt_, i, text.empty() ? "" : text.data(),
                                  static_cast<sqlite3_uint64>(text.size()), SQLITE_TRANSIENT,
                                  SQLITE_UTF8),
              "bind");
    }
    // Opaque bytes (payloads).
    void bind_blob(int i, std::string_view bytes) {
        static const char empty = 0;
        check(sqlite3_bind_blob64(stmt_, i, bytes.empty() ? &empty : bytes.data(),
                                  static_cast<sqlite3_uint64>(bytes.size()), SQLITE_TRANSIENT),
              "bind");
    }
    void bind_null(int i) { check(sqlite3_bind_null(stmt_, i), "bind"); }

    // One step: true when a row is available, false when done.
    bool step() {
        const int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) {
            return true;
        }
        if (rc == SQLITE_DONE) {
            return false;
        }
        throw_sqlite(db_, rc, "step");
    }

    std::int64_t int64(int col) const noexcept { return sqlite3_column_int64(stmt_, col); }
    bool is_null(int col) const noexcept { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    // A TEXT or BLOB column's bytes, unconverted.
    std::string bytes(int col) const {
        const void* data = sqlite3_column_blob(stmt_, col);
        const int n = sqlite3_column_bytes(stmt_, col);
        if (data == nullptr || n <= 0) {
            if (sqlite3_errcode(db_) == SQLITE_NOMEM) {
                throw std::bad_alloc();
            }
            return {};
        }
        return {static_cast<const char*>(data), static_cast<std::size_t>(n)};
    }

    void reset() noexcept {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
    }

private:
    void check(int rc, const char* what) const {
        if (rc != SQLITE_OK) {
            throw_sqlite(db_, rc, what);
        }
    }

    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

// Resets a statement when the scope ends, however it ends.
class StatementUse {
public:
    // Shares the statement, so that a cache trimmed meanwhile cannot finalize it in use.
    explicit StatementUse(std::shared_ptr<SqliteStatement> s) noexcept : s_(std::move(s)) {}
    StatementUse(const StatementUse&) = delete;
    StatementUse& operator=(const StatementUse&) = delete;
    ~StatementUse() { s_->reset(); }

    SqliteStatement* operator->() const noexcept { return s_.get(); }
    SqliteStatement& operator*() const noexcept { return *s_; }

private:
    std::shared_ptr<SqliteStatement> s_;
};

// One connection with its cache of prepared statements (keyed by their SQL). Not thread-safe:
// a store guards it with its mutex.
class SqliteConnection {
public:
    // Opens (creating) `path` in WAL mode with `synchronous`, a busy timeout and foreign keys on.
    // Throws SqliteError (a file that is not a database included) or std::bad_alloc.
    SqliteConnection(const std::string& path, SqliteSynchronous synchronous,
                     std::chrono::milliseconds busy_timeout) {
        const int rc = sqlite3_open_v2(
            path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
            nullptr);
        if (rc != SQLITE_OK) {
            if (db_ == nullptr) {
                throw std::bad_alloc();
            }
            const std::string what = "open '" + path + "'";
            Handle closing{db_};
            db_ = nullptr;
            throw_sqlite(closing.db, rc, what);
        }
        try {
            sqlite3_extended_result_codes(db_, 1);
            sqlite3_busy_timeout(db_, static_cast<int>(std::min<std::chrono::milliseconds::rep>(
                                          busy_timeout.count(), std::numeric_limits<int>::max())));
            // Any read of a file that is not a database fails here, with SQLITE_NOTADB.
            exec("PRAGMA journal_mode=WAL", "set journal_mode=WAL on '" + path + "'");
            exec(std::string("PRAGMA synchronous=") + to_string(synchronous), "set synchronous");
            exec("PRAGMA foreign_keys=ON", "set foreign_keys");
        } catch (...) {
            sqlite3_close_v2(db_);
            throw;
        }
    }
    SqliteConnection(const SqliteConnection&) = delete;
    SqliteConnection& operator=(const SqliteConnection&) = delete;
    ~SqliteConnection() {
        cache_.clear();  // statements first: a connection closes once they are finalized
        sqlite3_close_v2(db_);
    }

    sqlite3* handle() const noexcept { return db_; }

    // Runs SQL without parameters (DDL, pragmas, transaction control); rows are discarded.
    void exec(const std::string& sql, std::string_view what) {
        char* error = nullptr;
        const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
        sqlite3_free(error);
        if (rc != SQLITE_OK) {
            throw_sqlite(db_, rc, what);
        }
    }

    // The cached statement for `sql`, prepared on first use. The cache is bounded: a store whose
    // queries vary (filters, tag counts) cannot grow it without limit.
    std::shared_ptr<SqliteStatement> statement(std::string_view sql) {
        const auto it = cache_.find(sql);
        if (it != cache_.end()) {
            return it->second;
        }
        auto made = std::make_shared<SqliteStatement>(db_, sql);
        if (cache_.size() >= max_cached) {
            cache_.clear();  // statements in use are shared: they outlive the cache entry
        }
        cache_.emplace(std::string(sql), made);
        return made;
    }

    // Runs a statement without parameters or rows through the cache (BEGIN, COMMIT, pragmas
    // run often): no parse per call, unlike exec().
    void run(std::string_view sql) {
        std::shared_ptr<SqliteStatement> s = statement(sql);
        StatementUse use(std::move(s));
        while (use->step()) {
        }
    }

    // Rows changed by the last INSERT, UPDATE or DELETE.
    std::int64_t changes() const noexcept { return sqlite3_changes(db_); }

    static constexpr std::size_t max_cached = 128;

private:
    struct Handle {
        sqlite3* db;
        ~Handle() { sqlite3_close_v2(db); }
    };

    sqlite3* db_ = nullptr;
    std::map<std::string, std::shared_ptr<SqliteStatement>, std::less<>> cache_;
};

// A transaction that rolls back unless committed. immediate: BEGIN IMMEDIATE, which takes the
// database's write lock at once (waiting up to the busy timeout), so that what the transaction
// reads cannot change before it writes.
class SqliteTransaction {
public:
    SqliteTransaction(SqliteConnection& db, bool immediate) : db_(&db) {
        db.run(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
    }
    SqliteTransaction(const SqliteTransaction&) = delete;
    SqliteTransaction& operator=(const SqliteTransaction&) = delete;
    ~SqliteTransaction() {
        if (!done_) {
            // A rollback cannot usefully fail; if it does, the next BEGIN reports the state.
            sqlite3_exec(db_->handle(), "ROLLBACK", nullptr, nullptr, nullptr);
        }
    }

    void commit() {
        db_->run("COMMIT");
        done_ = true;
    }

private:
    SqliteConnection* db_;
    bool done_ = false;
};

// Creates or migrates a component's schema in one transaction. `migrations[v - 1]` takes the
// schema from version v - 1 to v; the versions applied are recorded in bulwark_schema_migrations
// (component, version, library version). A file whose component is at a version newer than
// `migrations.size()` is refused with SqliteError (it was written by a newer bulwark).
template <std::size_t N>
void migrate_schema(SqliteConnection& db, const char* component,
                    const char* const (&migrations)[N]) {
    SqliteTransaction tx(db, true);
    db.exec(
        "CREATE TABLE IF NOT EXISTS bulwark_schema_migrations("
        "component TEXT NOT NULL, version INTEGER NOT NULL, bulwark_version TEXT NOT NULL, "
        "PRIMARY KEY(component, version))",
        "create bulwark_schema_migrations");
    std::int64_t version = 0;
    {
        StatementUse q(db.statement(
            "SELECT COALESCE(MAX(version), 0) FROM bulwark_schema_migrations WHERE component = ?"));
        q->bind(1, std::string_view(component));
        if (q->step()) {
            version = q->int64(0);
        }
    }
    if (version > static_cast<std::int64_t>(N)) {
        throw SqliteError(std::string("bulwark SQLite store: the file holds schema version ") +
                              std::to_string(version) + " of '" + component +
                              "', newer than this bulwark (" BULWARK_VERSION_STRING ") knows (" +
                              std::to_string(N) + "): open it with a newer bulwark",
                          SQLITE_ERROR);
    }
    for (auto v = static_cast<std::size_t>(version); v < N; ++v) {
        db.exec(migrations[v], std::string("migrate '") + component + "' to schema version " +
                                   std::to_string(v + 1));
        StatementUse record(
            db.statement("INSERT INTO bulwark_schema_migrations(component, version, "
                         "bulwark_version) VALUES (?, ?, ?)"));
        record->bind(1, std::string_view(component));
        record->bind(2, static_cast<std::int64_t>(v + 1));
        record->bind(3, std::string_view(BULWARK_VERSION_STRING));
        record->step();
    }
    tx.commit();
}

// Wall times are stored as nanoseconds since the epoch (SQLite INTEGER: 64 bits).
inline std::int64_t to_sql(WallTime t) noexcept {
    return static_cast<std::int64_t>(t.time_since_epoch().count());
}
inline WallTime wall_from_sql(std::int64_t ns) noexcept {
    return WallTime{Duration{ns}};
}

// A size_t count as a LIMIT (SQLite's LIMIT is a signed 64-bit integer; -1 means none).
inline std::int64_t sql_limit(std::size_t n) noexcept {
    return n > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())
               ? -1
               : static_cast<std::int64_t>(n);
}

inline void check_busy_timeout(const char* field, std::chrono::milliseconds t) {
    if (t < std::chrono::milliseconds::zero() || t.count() > std::numeric_limits<int>::max()) {
        throw_invalid_option(field, "must be in [0, 2147483647] ms",
                             std::to_string(t.count()) + " ms");
    }
}

}  // namespace detail

}  // namespace bulwark

#endif  // BULWARK_DETAIL_SQLITE_HPP
