// PostgreSQL plumbing for the Postgres stores: RAII libpq handles, parameterised statements,
// SQLSTATE classification, a connection pool and the retry + breaker wrapper. Needs libpq.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_POSTGRES_HPP
#define BULWARK_DETAIL_POSTGRES_HPP

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <libpq-fe.h>
#include <memory>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/retry.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// A statement failed on the server or the connection. sqlstate() is the five-character SQLSTATE
// ("" when the connection itself failed). what() holds the server's message, never a parameter.
class PostgresError : public std::runtime_error {
public:
    PostgresError(const std::string& what, std::string sqlstate)
        : std::runtime_error(what), sqlstate_(std::move(sqlstate)) {}
    const std::string& sqlstate() const noexcept { return sqlstate_; }

private:
    std::string sqlstate_;
};

// A failure that may pass if the statement is tried again: the connection was lost or refused
// (SQLSTATE class 08, or no SQLSTATE at all), the server is shutting down or restarting (57P*),
// too many connections (53300), a serialization failure (40001) or deadlock (40P01). The stores
// retry these through their RetryPolicy and count them in their CircuitBreaker.
class PostgresTransientError : public PostgresError {
public:
    using PostgresError::PostgresError;
};

// Settings every Postgres store shares.
//   bulwark::PostgresStoreOptions o;  o.conninfo = "host=db dbname=app";  o.schema = "bulwark";
struct PostgresStoreOptions {
    // libpq connection string ("host=... port=... dbname=... user=...") or URI. Required.
    std::string conninfo;
    // The schema the store's tables live in (created on first use). Lower-case letters, digits
    // and '_', starting with a letter or '_', at most 48 bytes. Default "bulwark". Stores that
    // share a schema share their messages: that is how many instances share one queue.
    std::string schema = "bulwark";
    // Connections the store opens at most (each operation holds one for its duration). >= 1.
    // Default 4: one per worker thread for a small engine.
    std::size_t pool_size = 4;
    // synchronous_commit for the store's sessions: true ("on", default) acknowledges a write only
    // once its WAL is flushed; false ("off") acknowledges before the flush, so a server crash
    // (not a client crash, not a clean restart) may lose the last ~3 x wal_writer_delay of
    // acknowledged writes.
    bool synchronous_commit = true;
    // The hot statements (a queue's claim, complete, release, extend) are prepared once per
    // connection and then only executed: the server parses and plans them once. Default true;
    // false sends each with its text, as behind a pooler in transaction mode that keeps no
    // prepared statements (PgBouncer before 1.21, or with max_prepared_statements = 0).
    bool prepare_statements = true;
    // Retries of a statement that failed transiently (connection lost, server restarting).
    // >= 0. Default 20, with a backoff from 50 ms to 2 s (about 30 s in all: a server restart).
    int max_retries = 20;
    Duration retry_base_delay = std::chrono::milliseconds(50);
    Duration retry_max_delay = std::chrono::seconds(2);
    // Consecutive transient failures that open the store's breaker, and how long it stays open
    // before one probe; while open, statements fail fast with CircuitOpenError (and are retried).
    std::uint32_t breaker_failure_threshold = 5;
    Duration breaker_break_duration = std::chrono::seconds(1);

    void validate() const {
        if (conninfo.empty()) {
            detail::throw_invalid_option("PostgresStoreOptions.conninfo", "must not be empty",
                                         "\"\"");
        }
        bool ok = !schema.empty() && schema.size() <= 48 && !(schema[0] >= '0' && schema[0] <= '9');
        for (const char c : schema) {
            ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
        }
        if (!ok) {
            detail::throw_invalid_option("PostgresStoreOptions.schema",
                                         "must be 1-48 of [a-z0-9_], not starting with a digit",
                                         "\"" + schema.substr(0, 64) + "\"");
        }
        if (pool_size == 0) {
            detail::throw_invalid_option("PostgresStoreOptions.pool_size", "must be >= 1", "0");
        }
        if (max_retries < 0) {
            detail::throw_invalid_option("PostgresStoreOptions.max_retries", "must be >= 0",
                                         std::to_string(max_retries));
        }
        if (retry_base_delay <= Duration::zero() || retry_max_delay < retry_base_delay) {
            detail::throw_invalid_option("PostgresStoreOptions.retry_base_delay",
                                         "must be > 0 and <= retry_max_delay",
                                         detail::format_duration(retry_base_delay));
        }
        if (breaker_failure_threshold == 0) {
            detail::throw_invalid_option("PostgresStoreOptions.breaker_failure_threshold",
                                         "must be >= 1", "0");
        }
        if (breaker_break_duration <= Duration::zero()) {
            detail::throw_invalid_option("PostgresStoreOptions.breaker_break_duration",
                                         "must be > 0",
                                         detail::format_duration(breaker_break_duration));
        }
    }
};

namespace detail {
namespace pg {

struct ConnDeleter {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
struct ResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// Whether a SQLSTATE names a failure that a retry may get past.
inline bool transient_sqlstate(std::string_view s) noexcept {
    return s.empty() || s.substr(0, 2) == "08" || s.substr(0, 3) == "57P" || s == "40001" ||
           s == "40P01" || s == "53300" || s == "53000";
}

[[noreturn]] BULWARK_NOINLINE inline void throw_error(PGconn* conn, const PGresult* res,
                                                      const char* what) {
    const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = state != nullptr ? state : "";
    const char* message = res != nullptr ? PQresultErrorMessage(res) : "";
    if ((message == nullptr || *message == '\0') && conn != nullptr) {
        message = PQerrorMessage(conn);
    }
    std::string text =
        std::string("bulwark postgres: ") + what + ": " + (message != nullptr ? message : "");
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    // A lost connection is transient whatever the result says.
    if (transient_sqlstate(sqlstate) || (conn != nullptr && PQstatus(conn) == CONNECTION_BAD)) {
        throw PostgresTransientError(text, std::move(sqlstate));
    }
    throw PostgresError(text, std::move(sqlstate));
}

// The parameters of one statement. Integers are sent as text, bytes as binary (bytea): nothing
// a message holds is ever part of the SQL text.
class Params {
public:
    Params& i64(std::int64_t v) {
        owned_.push_back(std::to_string(v));
        return add_owned(0);
    }
    Params& text(std::string v) {
        owned_.push_back(std::move(v));
        return add_owned(0);
    }
    // Bytes that outlive the statement (the caller's string): not copied.
    Params& bytes(std::string_view v) {
        // A non-null pointer even for zero bytes: libpq reads a null value as SQL NULL.
        values_.push_back(v.data() != nullptr ? v.data() : "");
        lengths_.push_back(static_cast<int>(v.size()));
        formats_.push_back(1);
        owned_index_.push_back(-1);
        return *this;
    }
    int count() const noexcept { return static_cast<int>(values_.size()); }
    // The placeholder of the next parameter ("$3").
    std::string next() const { return "$" + std::to_string(values_.size() + 1); }

    const char* const* values() {
        // owned_ may have reallocated since a value was added: point at its strings now.
        for (std::size_t i = 0; i < values_.size(); ++i) {
            if (owned_index_[i] >= 0) {
                values_[i] = owned_[static_cast<std::size_t>(owned_index_[i])].c_str();
            }
        }
        return values_.data();
    }
    const int* lengths() const noexcept { return lengths_.data(); }
    const int* formats() const noexcept { return formats_.data(); }

private:
    Params& add_owned(int format) {
        values_.push_back(nullptr);
        lengths_.push_back(0);
        formats_.push_back(format);
        owned_index_.push_back(static_cast<int>(owned_.size() - 1));
        return *this;
    }

    std::vector<std::string> owned_;
    std::vector<const char*> values_;
    std::vector<int> lengths_;
    std::vector<int> formats_;
    std::vector<int> owned_index_;
};

// Test seam, null outside tests: while set, exec() asks it about every statement, and for one
// it returns true for, lets the server answer (so the statement has run, and a COMMIT has
// committed) and then swaps the connection's socket for one whose peer is closed before libpq
// reads the answer. libpq then reports the connection lost, exactly as when the network fails
// after a COMMIT went out: the ambiguous commit the stores' retries must survive. Set it only
// while no statement runs (tests arm it between operations).
using FaultAfterSend = bool (*)(const char* sql);
inline std::atomic<FaultAfterSend> test_fault_after_send{nullptr};

// exec() while test_fault_after_send is set: the asynchronous calls PQexecParams is made of,
// with the fault between the send and the read.
BULWARK_NOINLINE inline PGresult* exec_with_test_fault(PGconn* conn, const std::string& sql,
                                                       Params& params, FaultAfterSend fault) {
    if (PQsendQueryParams(conn, sql.c_str(), params.count(), nullptr, params.values(),
                          params.lengths(), params.formats(), 1) == 0) {
        return nullptr;
    }
    if (fault(sql.c_str())) {
        while (PQflush(conn) > 0) {
        }
        const int fd = PQsocket(conn);
        // The server answers only once the statement has run (a COMMIT: once it is durable).
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0) {
            ::close(pair[1]);
            ::dup2(pair[0], fd);  // closes the server's socket; reads now see end of file
            ::close(pair[0]);
        }
    }
    // As PQexecParams: the first error result, else the last result.
    PGresult* kept = nullptr;
    for (PGresult* r = PQgetResult(conn); r != nullptr; r = PQgetResult(conn)) {
        if (kept != nullptr && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        PQclear(kept);
        kept = r;
    }
    return kept;
}

// Runs one parameterised statement with binary results; throws PostgresTransientError or
// PostgresError on failure.
inline Result exec(PGconn* conn, const std::string& sql, Params& params) {
    // acquire: pairs with the test's store of the hook (free on the platforms we build for).
    const FaultAfterSend fault = test_fault_after_send.load(std::memory_order_acquire);
    Result res(fault == nullptr
                   ? PQexecParams(conn, sql.c_str(), params.count(), nullptr, params.values(),
                                  params.lengths(), params.formats(), 1)
                   : exec_with_test_fault(conn, sql, params, fault));
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        throw_error(conn, res.get(), "statement failed");
    }
    return res;
}

inline Result exec(PGconn* conn, const std::string& sql) {
    Params none;
    return exec(conn, sql, none);
}

// Runs the statement prepared on this connection as `name`, preparing it from `sql` first when
// the connection has not got it (a new connection, or one a pooler switched): the server parses
// and plans it once per connection instead of once per call. `name` must stand for the same
// `sql` on every connection of the pool. Only outside a transaction block: the first try on a
// connection fails (SQLSTATE 26000), which would abort the transaction.
inline Result exec_prepared(PGconn* conn, const char* name, const std::string& sql,
                            Params& params) {
    for (bool prepared = false;; prepared = true) {
        Result res(PQexecPrepared(conn, name, params.count(), params.values(), params.lengths(),
                                  params.formats(), 1));
        const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            return res;
        }
        const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
        if (prepared || state == nullptr || std::string_view(state) != "26000") {
            throw_error(conn, res.get(), "statement failed");
        }
        Result prep(PQprepare(conn, name, sql.c_str(), params.count(), nullptr));
        if (!prep || PQresultStatus(prep.get()) != PGRES_COMMAND_OK) {
            const char* pstate = prep ? PQresultErrorField(prep.get(), PG_DIAG_SQLSTATE) : nullptr;
            // 42P05: prepared meanwhile under this name (the same statement): run it.
            if (pstate == nullptr || std::string_view(pstate) != "42P05") {
                throw_error(conn, prep.get(), "prepare failed");
            }
        }
    }
}

inline std::size_t rows(const PGresult* r) noexcept {
    return static_cast<std::size_t>(PQntuples(r));
}

// Rows a command changed (UPDATE, DELETE, INSERT).
inline std::size_t affected(const PGresult* r) {
    const char* n = PQcmdTuples(const_cast<PGresult*>(r));  // NOLINT: libpq's old signature
    return n != nullptr && *n != '\0' ? static_cast<std::size_t>(std::stoull(n)) : 0;
}

inline bool is_null(const PGresult* r, std::size_t row, int col) noexcept {
    return PQgetisnull(r, static_cast<int>(row), col) != 0;
}

// A binary bigint (int8) column; 0 for NULL.
inline std::int64_t i64(const PGresult* r, std::size_t row, int col) {
    if (is_null(r, row, col)) {
        return 0;
    }
    if (PQgetlength(r, static_cast<int>(row), col) != 8) {
        throw PostgresError("bulwark postgres: a column is not int8", "");
    }
    const auto* p =
        reinterpret_cast<const unsigned char*>(PQgetvalue(r, static_cast<int>(row), col));
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
        v = (v << 8U) | p[i];
    }
    return static_cast<std::int64_t>(v);
}

// A binary bytea (or text) column.
inline std::string bytes(const PGresult* r, std::size_t row, int col) {
    if (is_null(r, row, col)) {
        return {};
    }
    return std::string(PQgetvalue(r, static_cast<int>(row), col),
                       static_cast<std::size_t>(PQgetlength(r, static_cast<int>(row), col)));
}

// A length-prefixed list of byte strings (4-byte big-endian length, then the bytes), the form
// the stores keep tags and attempts in.
inline void put_u32(std::string& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>((v >> static_cast<unsigned>(shift)) & 0xFFU));
    }
}
inline void put_chunk(std::string& out, std::string_view s) {
    put_u32(out, static_cast<std::uint32_t>(s.size()));
    out.append(s.data(), s.size());
}
inline std::uint32_t get_u32(std::string_view in, std::size_t& at) {
    if (in.size() - at < 4 || at > in.size()) {
        throw PostgresError("bulwark postgres: a stored list is truncated", "");
    }
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
        v = (v << 8U) | static_cast<unsigned char>(in[at++]);
    }
    return v;
}
inline std::string get_chunk(std::string_view in, std::size_t& at) {
    const std::size_t n = get_u32(in, at);
    if (in.size() - at < n) {
        throw PostgresError("bulwark postgres: a stored list is truncated", "");
    }
    std::string s(in.substr(at, n));
    at += n;
    return s;
}

inline std::int64_t ticks(WallTime t) noexcept {
    return static_cast<std::int64_t>(t.time_since_epoch().count());
}
inline WallTime wall(std::int64_t ticks) noexcept {
    return WallTime{Duration{ticks}};
}

// Opens a connection and sets the session up; throws PostgresTransientError when it cannot.
inline Conn connect(const PostgresStoreOptions& options) {
    Conn conn(PQconnectdb(options.conninfo.c_str()));
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
        std::string msg = conn ? PQerrorMessage(conn.get()) : "out of memory";
        while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) {
            msg.pop_back();
        }
        throw PostgresTransientError("bulwark postgres: cannot connect: " + msg, "08001");
    }
    exec(conn.get(), options.synchronous_commit ? "SET synchronous_commit = on"
                                                : "SET synchronous_commit = off");
    exec(conn.get(), "SET client_min_messages = warning");
    return conn;
}

// Up to pool_size connections, opened on demand; a connection that failed is closed, not
// returned. Thread-safe.
class Pool {
public:
    explicit Pool(const PostgresStoreOptions& options) : options_(options) {}

    class Lease {
    public:
        Lease(Pool* pool, Conn conn) : pool_(pool), conn_(std::move(conn)) {}
        Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {
            other.pool_ = nullptr;  // the slot is this lease's now
        }
        Lease& operator=(Lease&&) = delete;
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        ~Lease() {
            if (pool_ != nullptr) {
                pool_->give_back(std::move(conn_));
            }
        }
        PGconn* get() const noexcept { return conn_.get(); }
        // The connection failed: close it instead of giving it back.
        void discard() noexcept { conn_.reset(); }

    private:
        Pool* pool_;
        Conn conn_;
    };

    Lease acquire() {
        {
            UniqueLock lock(mutex_);
            idle_.native().wait(lock.native(), [&]() BULWARK_NO_THREAD_SAFETY_ANALYSIS {
                return !free_.empty() || open_ < options_.pool_size;
            });
            if (!free_.empty()) {
                Conn c = std::move(free_.back());
                free_.pop_back();
                return Lease(this, std::move(c));
            }
            ++open_;  // a slot for the connection opened below, without the lock
        }
        try {
            return Lease(this, connect(options_));
        } catch (...) {
            give_back(nullptr);
            throw;
        }
    }

private:
    struct Cond {
        std::condition_variable& native() noexcept { return cv; }
        std::condition_variable cv;
    };

    void give_back(Conn conn) noexcept {
        {
            LockGuard lock(mutex_);
            if (conn && PQstatus(conn.get()) == CONNECTION_OK &&
                PQtransactionStatus(conn.get()) == PQTRANS_IDLE) {
                free_.push_back(std::move(conn));
            } else {
                --open_;
            }
        }
        idle_.native().notify_one();
    }

    const PostgresStoreOptions& options_;
    Mutex mutex_;
    Cond idle_;
    std::vector<Conn> free_ BULWARK_GUARDED_BY(mutex_);
    std::size_t open_ BULWARK_GUARDED_BY(mutex_) = 0;
};

inline RetryOptions retry_options(const PostgresStoreOptions& o) {
    RetryOptions r;
    r.max_retries = o.max_retries;
    r.backoff =
        Backoff::exponential(o.retry_base_delay).max_delay(o.retry_max_delay).jitter(Jitter::full);
    r.retry_on<PostgresTransientError>();
    r.retry_on<CircuitOpenError>();
    r.count_calls = false;
    return r;
}

inline CircuitBreakerOptions breaker_options(const PostgresStoreOptions& o) {
    CircuitBreakerOptions b;
    b.failure_threshold = o.breaker_failure_threshold;
    b.break_duration = o.breaker_break_duration;
    b.handle<PostgresTransientError>();
    return b;
}

// What every Postgres store is made of: its options, a pool, and the retry policy and breaker
// each statement goes through. run(f) calls f(conn, retried) on a pooled connection, where
// `retried` says an earlier try of this same operation failed transiently (so its effect may
// already be committed: a store uses it to make the retry idempotent).
class Database {
public:
    Database(PostgresStoreOptions options, const char* what, Clock& clock)
        : options_((options.validate(), std::move(options))),
          pool_(options_),
          retry_(retry_options(options_), clock),
          breaker_(std::string("bulwark postgres ") + what + " " + options_.schema,
                   breaker_options(options_)) {}

    const PostgresStoreOptions& options() const noexcept { return options_; }
    CircuitBreaker& breaker() noexcept { return breaker_; }
    RetryPolicy& retry() noexcept { return retry_; }

    // A qualified, quoted table name in the store's schema (the schema was validated).
    std::string table(const char* name) const { return "\"" + options_.schema + "\"." + name; }

    template <class F>
    auto run(F&& f) {
        bool retried = false;
        return retry_.execute([&] {
            return breaker_.execute([&] {
                Pool::Lease conn = pool_.acquire();
                try {
                    const bool again = retried;
                    retried = true;  // a later try follows a failure of this one
                    auto result = f(conn.get(), again);
                    retried = false;
                    return result;
                } catch (const PostgresTransientError&) {
                    conn.discard();
                    throw;
                } catch (...) {
                    retried = false;
                    // A permanent error inside a transaction leaves it aborted: roll it back.
                    if (PQtransactionStatus(conn.get()) != PQTRANS_IDLE) {
                        PQclear(PQexec(conn.get(), "ROLLBACK"));
                    }
                    throw;
                }
            });
        });
    }

    // Creates the schema and its version table and applies `migrations[v]` for every version v
    // past the stored one (each a list of statements), in one transaction under an advisory
    // lock, so that many processes starting at once migrate once.
    void migrate(const char* component, const std::vector<std::vector<std::string>>& migrations) {
        run([&](PGconn* c, bool /*retried*/) {
            exec(c, "BEGIN");
            Params key;
            key.text(options_.schema);
            exec(c, "SELECT pg_advisory_xact_lock(1651205218, hashtext($1::text))", key);
            exec(c, "CREATE SCHEMA IF NOT EXISTS \"" + options_.schema + "\"");
            exec(c, "CREATE TABLE IF NOT EXISTS " + table("schema_version") +
                        " (component text PRIMARY KEY, version bigint NOT NULL)");
            Params p;
            p.text(component);
            Result r = exec(c,
                            "SELECT version::int8 FROM " + table("schema_version") +
                                " WHERE component = $1::text",
                            p);
            const std::int64_t have = rows(r.get()) == 1 ? i64(r.get(), 0, 0) : 0;
            for (std::size_t v = static_cast<std::size_t>(have); v < migrations.size(); ++v) {
                for (const std::string& sql : migrations[v]) {
                    exec(c, sql);
                }
            }
            Params up;
            up.text(component).i64(static_cast<std::int64_t>(migrations.size()));
            exec(c,
                 "INSERT INTO " + table("schema_version") +
                     " VALUES ($1::text, $2::int8) ON CONFLICT (component) DO UPDATE SET "
                     "version = EXCLUDED.version",
                 up);
            exec(c, "COMMIT");
            return 0;
        });
    }

private:
    const PostgresStoreOptions options_;
    Pool pool_;
    RetryPolicy retry_;
    CircuitBreaker breaker_;
};

// Waits up to `timeout` for a notification on a LISTENing connection; true when one came.
inline bool wait_notify(PGconn* conn, Duration timeout) {
    PQconsumeInput(conn);
    bool got = false;
    for (PGnotify* n = PQnotifies(conn); n != nullptr; n = PQnotifies(conn)) {
        PQfreemem(n);
        got = true;
    }
    if (got) {
        return true;
    }
    const int fd = PQsocket(conn);
    if (fd < 0) {
        throw PostgresTransientError("bulwark postgres: the listening connection is closed", "");
    }
    // poll(), not select(): a descriptor above FD_SETSIZE is fine.
    pollfd p{fd, POLLIN, 0};
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    const int ready = ::poll(&p, 1, static_cast<int>(std::clamp<long long>(ms, 0, 1000LL * 3600)));
    if (ready < 0 && errno != EINTR) {
        throw PostgresTransientError("bulwark postgres: poll failed on the listening connection",
                                     "");
    }
    if (ready > 0) {
        if (PQconsumeInput(conn) == 0) {
            throw PostgresTransientError("bulwark postgres: the listening connection failed", "");
        }
        for (PGnotify* n = PQnotifies(conn); n != nullptr; n = PQnotifies(conn)) {
            PQfreemem(n);
            got = true;
        }
    }
    return got;
}

}  // namespace pg
}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_POSTGRES_HPP
