// PostgresQueueStore: a QueueStore in PostgreSQL that many processes share (needs libpq).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_POSTGRES_QUEUE_STORE_HPP
#define BULWARK_POSTGRES_QUEUE_STORE_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/postgres.hpp>
#include <bulwark/detail/queue_index.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/queue_store.hpp>

namespace bulwark {

struct PostgresQueueStoreOptions {
    // Connection, schema, pool, durability and retry settings (see PostgresStoreOptions).
    PostgresStoreOptions database{};
    // Larger payloads are refused with QueueMessageTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // Longer ids are refused with QueueMessageTooLargeError. In [1, 65536]. Default 1024.
    std::size_t max_id_bytes = 1024;
    // Messages held at most; push() beyond it throws QueueFullError. 0 = no limit (default):
    // the check counts the table, and concurrent pushes from several instances may overshoot it
    // by up to one message per instance.
    std::size_t max_size = 0;
    // push() sends a NOTIFY that wakes wait_for_work() in every instance. Default true; false
    // saves the commit-time notification lock when workers only poll.
    bool notify = true;

    void validate() const {
        database.validate();
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("PostgresQueueStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_id_bytes == 0 || max_id_bytes > 65536) {
            detail::throw_invalid_option("PostgresQueueStoreOptions.max_id_bytes",
                                         "must be in [1, 65536]", std::to_string(max_id_bytes));
        }
    }
};

// A QueueStore in a PostgreSQL table that any number of processes share: claim() leases with
// SELECT ... FOR UPDATE SKIP LOCKED, so each ready message goes to one claimer, and a lease that
// runs out (its process died) makes the message claimable by the others. Every write is one
// committed statement (push_all: one transaction): a call that returned is durable as far as the
// server's synchronous_commit makes it.
//   bulwark::PostgresQueueStoreOptions o;  o.database.conninfo = "host=db dbname=app";
//   bulwark::PostgresQueueStore store(o);  // creates or migrates schema "bulwark" on first use
//   auto batch = store.claim(clock.wall_now(), 50, 30s);
// Transient failures (connection lost, server restarting) are retried through a RetryPolicy and
// a CircuitBreaker (reconnecting); a write retried after an ambiguous failure (the commit may
// have happened) is made idempotent: push() accepts its own earlier row, complete()/remove()
// report true, release() checks the stored state. Thread-safe; each call takes a pooled
// connection. Throws PostgresError for a permanent failure, PostgresTransientError or
// CircuitOpenError once retries are spent.
class PostgresQueueStore final : public QueueStore {
public:
    // Connects and creates or migrates the schema (safe when many processes start at once).
    // The clock paces the retries' waits and must outlive the store.
    explicit PostgresQueueStore(PostgresQueueStoreOptions options, Clock& clock = default_clock())
        : options_((options.validate(), std::move(options))),
          db_(options_.database, "queue", clock),
          q_(db_.table("queue")),
          cols_("id, payload, due, enqueued, attempts, claims, lease, lease_until"),
          channel_("bulwark_" + options_.database.schema + "_queue"),
          claim_sql_("WITH c AS (SELECT id, ready AS r, seq FROM " + q_ +
                     " WHERE ready <= $1::int8 ORDER BY ready, seq LIMIT $2::int8"
                     " FOR UPDATE SKIP LOCKED) UPDATE " +
                     q_ + " AS q SET lease = nextval('" + db_.table("queue_lease") +
                     "'), lease_until = $3::int8, ready = $3::int8, claims = q.claims + 1 FROM c"
                     " WHERE q.id = c.id RETURNING q.id, q.payload, q.due, q.enqueued,"
                     " q.attempts, q.claims, q.lease, q.lease_until, c.r, c.seq"),
          complete_sql_("DELETE FROM " + q_ + " WHERE id = $1 AND lease = $2::int8"),
          release_sql_("UPDATE " + q_ +
                       " SET payload = $3, due = $4::int8, attempts = $5::int8, lease = 0,"
                       " lease_until = 0, ready = $4::int8 WHERE id = $1 AND lease = $2::int8"),
          extend_sql_("UPDATE " + q_ +
                      " SET lease_until = $3::int8, ready = $3::int8 WHERE id = $1 AND lease = "
                      "$2::int8") {
        db_.migrate("queue",
                    {{"CREATE TABLE " + q_ +
                          " (id bytea PRIMARY KEY, seq bigserial NOT NULL, payload bytea NOT NULL,"
                          " due int8 NOT NULL, enqueued int8 NOT NULL, attempts int8 NOT NULL,"
                          " claims int8 NOT NULL DEFAULT 0, lease int8 NOT NULL DEFAULT 0,"
                          " lease_until int8 NOT NULL DEFAULT 0, ready int8 NOT NULL)",
                      "CREATE INDEX queue_ready ON " + q_ + " (ready, seq)",
                      "CREATE SEQUENCE " + db_.table("queue_lease")}});
    }

    const PostgresQueueStoreOptions& options() const noexcept { return options_; }
    // The breaker every statement goes through (its stats show the outages).
    CircuitBreaker& breaker() noexcept { return db_.breaker(); }

    void push(const QueuedMessage& message) override {
        check(message);
        db_.run([&](PGconn* c, bool retried) {
            insert(c, message, retried);
            return 0;
        });
    }

    // All or nothing: one transaction.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        if (messages.empty()) {
            return;
        }
        std::unordered_set<std::string_view> ids;
        for (const QueuedMessage& m : messages) {
            check(m);
            if (!ids.insert(m.id).second) {
                detail::throw_already_queued(call, m.id);  // named twice in the batch
            }
        }
        db_.run([&](PGconn* c, bool retried) {
            detail::pg::exec(c, "BEGIN");
            if (options_.max_size != 0) {
                for (const QueuedMessage& m : messages) {
                    insert(c, m, retried);  // counts the table before each message
                }
            } else {
                for (std::size_t first = 0; first < messages.size(); first += rows_per_insert) {
                    insert_rows(c, messages, first,
                                std::min(messages.size(), first + rows_per_insert), retried);
                }
                if (options_.notify) {
                    detail::pg::Params p;
                    p.text(channel_);
                    detail::pg::exec(c, "SELECT pg_notify($1::text, '')", p);
                }
            }
            detail::pg::exec(c, "COMMIT");
            return 0;
        });
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until =
            detail::lease_end("bulwark::PostgresQueueStore::claim", now, lease_for);
        if (max == 0) {
            return {};
        }
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Params p;
            p.i64(detail::pg::ticks(now)).i64(clamp(max)).i64(detail::pg::ticks(until));
            // A lost reply leaves these leased to no one until `until`: they come back then.
            detail::pg::Result r = hot(c, "bulwark_queue_claim", claim_sql_, p);
            const std::size_t n = detail::pg::rows(r.get());
            std::vector<std::tuple<std::int64_t, std::int64_t, std::size_t>> order;
            order.reserve(n);
            for (std::size_t i = 0; i < n; ++i) {
                order.emplace_back(detail::pg::i64(r.get(), i, 8), detail::pg::i64(r.get(), i, 9),
                                   i);
            }
            std::sort(order.begin(), order.end());
            std::vector<QueuedMessage> out;
            out.reserve(n);
            for (const auto& o : order) {
                out.push_back(row(r.get(), std::get<2>(o)));
            }
            return out;
        });
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        if (lease == 0) {
            return false;
        }
        return db_.run([&](PGconn* c, bool retried) {
            detail::pg::Params p;
            p.bytes(id).i64(static_cast<std::int64_t>(lease));
            detail::pg::Result r = hot(c, "bulwark_queue_complete", complete_sql_, p);
            // Retried after an ambiguous failure: the earlier try may have deleted it.
            return detail::pg::affected(r.get()) == 1 || retried;
        });
    }

    bool release(const QueuedMessage& message) override {
        if (message.lease == 0) {
            return false;
        }
        if (message.payload.size() > options_.max_payload_bytes) {
            too_large("payload", "max_payload_bytes", message.payload.size(),
                      options_.max_payload_bytes);
        }
        return db_.run([&](PGconn* c, bool retried) {
            detail::pg::Params p;
            p.bytes(message.id)
                .i64(static_cast<std::int64_t>(message.lease))
                .bytes(message.payload)
                .i64(detail::pg::ticks(message.due))
                .i64(static_cast<std::int64_t>(message.attempts));
            detail::pg::Result r = hot(c, "bulwark_queue_release", release_sql_, p);
            if (detail::pg::affected(r.get()) == 1) {
                return true;
            }
            if (!retried) {
                return false;
            }
            const std::optional<QueuedMessage> now = get_on(c, message.id);
            return now && now->lease == 0 && now->payload == message.payload &&
                   now->due == message.due && now->attempts == message.attempts;
        });
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        if (lease == 0) {
            return false;
        }
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Params p;
            p.bytes(id).i64(static_cast<std::int64_t>(lease)).i64(detail::pg::ticks(until));
            detail::pg::Result r = hot(c, "bulwark_queue_extend", extend_sql_, p);
            return detail::pg::affected(r.get()) == 1;
        });
    }

    bool remove(std::string_view id) override {
        return db_.run([&](PGconn* c, bool retried) {
            detail::pg::Params p;
            p.bytes(id);
            detail::pg::Result r = detail::pg::exec(c, "DELETE FROM " + q_ + " WHERE id = $1", p);
            return detail::pg::affected(r.get()) == 1 || retried;
        });
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        return db_.run([&](PGconn* c, bool /*retried*/) { return get_on(c, id); });
    }

    std::size_t size() const override {
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Result r = detail::pg::exec(c, "SELECT count(*)::int8 FROM " + q_);
            return static_cast<std::size_t>(detail::pg::i64(r.get(), 0, 0));
        });
    }

    std::optional<WallTime> next_ready() const override {
        return db_.run([&](PGconn* c, bool /*retried*/) -> std::optional<WallTime> {
            detail::pg::Result r = detail::pg::exec(c, "SELECT min(ready)::int8 FROM " + q_);
            if (detail::pg::is_null(r.get(), 0, 0)) {
                return std::nullopt;
            }
            return detail::pg::wall(detail::pg::i64(r.get(), 0, 0));
        });
    }

    std::vector<QueuedMessage> list(std::size_t limit) const override {
        if (limit == 0) {
            return {};
        }
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Params p;
            p.i64(clamp(limit));
            detail::pg::Result r = detail::pg::exec(
                c, "SELECT " + cols_ + " FROM " + q_ + " ORDER BY ready, seq LIMIT $1::int8", p);
            std::vector<QueuedMessage> out;
            for (std::size_t i = 0; i < detail::pg::rows(r.get()); ++i) {
                out.push_back(row(r.get(), i));
            }
            return out;
        });
    }

    QueueStoreStats stats() const override {
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Result r = detail::pg::exec(
                c, "SELECT count(*)::int8, (count(*) FILTER (WHERE lease <> 0))::int8 FROM " + q_);
            return QueueStoreStats{static_cast<std::size_t>(detail::pg::i64(r.get(), 0, 0)),
                                   static_cast<std::size_t>(detail::pg::i64(r.get(), 0, 1))};
        });
    }

    // Blocks until a push() in any instance notifies, or `timeout` passes (a real wait on the
    // listening connection's socket); true when notified. A worker calls it when claim() came
    // back empty, with a timeout no longer than the time to next_ready() (a lease that runs out
    // sends no notification). Calls are served one at a time; thread-safe.
    bool wait_for_work(Duration timeout) {
        detail::LockGuard lock(listen_mutex_);
        try {
            if (!listener_) {
                listener_ = detail::pg::connect(options_.database);
                detail::pg::exec(listener_.get(), "LISTEN \"" + channel_ + "\"");
            }
            return detail::pg::wait_notify(listener_.get(), timeout);
        } catch (const PostgresTransientError&) {
            listener_.reset();  // reconnected (and listening again) by the next call
            return false;
        }
    }

    // Deletes every message (tests, operators). One statement.
    void clear() {
        db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::exec(c, "DELETE FROM " + q_);
            return 0;
        });
    }

private:
    static constexpr const char* call = "bulwark::PostgresQueueStore::push";
    // Messages per INSERT in push_all (5 parameters each; a statement takes at most 65535).
    static constexpr std::size_t rows_per_insert = 1000;

    static std::int64_t clamp(std::size_t n) noexcept {
        constexpr auto top = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
        return static_cast<std::int64_t>(std::min(n, top));
    }

    [[noreturn]] static void too_large(const char* what, const char* limit_name, std::size_t size,
                                       std::size_t limit) {
        throw QueueMessageTooLargeError(std::string("bulwark::PostgresQueueStore: message ") +
                                            what + " of " + std::to_string(size) +
                                            " bytes exceeds " + limit_name + " (" +
                                            std::to_string(limit) + ")",
                                        limit_name, size, limit);
    }

    void check(const QueuedMessage& m) const {
        detail::check_push_id(call, m, false);
        if (m.id.size() > options_.max_id_bytes) {
            too_large("id", "max_id_bytes", m.id.size(), options_.max_id_bytes);
        }
        if (m.payload.size() > options_.max_payload_bytes) {
            too_large("payload", "max_payload_bytes", m.payload.size(), options_.max_payload_bytes);
        }
    }

    // Inserts one message (with a NOTIFY when enabled); a held id throws unless this is a retry
    // and the held row is this message, unleased (the earlier try's commit went through).
    void insert(PGconn* c, const QueuedMessage& m, bool retried) const {
        detail::pg::Params p;
        p.bytes(m.id)
            .bytes(m.payload)
            .i64(detail::pg::ticks(m.due))
            .i64(detail::pg::ticks(m.enqueued))
            .i64(static_cast<std::int64_t>(m.attempts));
        std::string sql = "WITH ins AS (INSERT INTO " + q_ +
                          " (id, payload, due, enqueued, attempts, ready) SELECT $1, $2, $3::int8,"
                          " $4::int8, $5::int8, $3::int8";
        if (options_.max_size != 0) {
            sql += " WHERE (SELECT count(*) FROM " + q_ + ") < " + p.next() + "::int8";
            p.i64(clamp(options_.max_size));
        }
        sql += " ON CONFLICT (id) DO NOTHING RETURNING 1) SELECT (SELECT count(*) FROM ins)::int8";
        if (options_.notify) {
            sql += ", pg_notify(" + p.next() + "::text, '')";
            p.text(channel_);
        }
        detail::pg::Result r = detail::pg::exec(c, sql, p);
        if (detail::pg::i64(r.get(), 0, 0) == 1) {
            return;
        }
        const std::optional<QueuedMessage> held = get_on(c, m.id);
        if (!held) {
            throw QueueFullError("bulwark::PostgresQueueStore is full (max_size " +
                                 std::to_string(options_.max_size) + ")");
        }
        if (retried && held->lease == 0 && held->payload == m.payload && held->due == m.due &&
            held->claims == 0) {
            return;
        }
        detail::throw_already_queued(call, m.id);
    }

    // Inserts messages[first, last) in one statement (their ids are distinct); a held id throws
    // (the caller's transaction is rolled back) unless it is this message, stored by an earlier
    // try whose commit went through.
    void insert_rows(PGconn* c, const std::vector<QueuedMessage>& messages, std::size_t first,
                     std::size_t last, bool retried) const {
        detail::pg::Params p;
        std::string sql =
            "INSERT INTO " + q_ + " (id, payload, due, enqueued, attempts, ready) VALUES ";
        for (std::size_t i = first; i < last; ++i) {
            const QueuedMessage& m = messages[i];
            const std::string id = p.next();
            p.bytes(m.id);
            const std::string payload = p.next();
            p.bytes(m.payload);
            const std::string due = p.next();
            p.i64(detail::pg::ticks(m.due));
            const std::string enqueued = p.next();
            p.i64(detail::pg::ticks(m.enqueued));
            const std::string attempts = p.next();
            p.i64(static_cast<std::int64_t>(m.attempts));
            sql += (i == first ? "(" : ", (") + id + ", " + payload + ", " + due + "::int8, " +
                   enqueued + "::int8, " + attempts + "::int8, " + due + "::int8)";
        }
        sql += " ON CONFLICT (id) DO NOTHING RETURNING id";
        detail::pg::Result r = detail::pg::exec(c, sql, p);
        if (detail::pg::rows(r.get()) == last - first) {
            return;
        }
        std::unordered_set<std::string> stored;
        for (std::size_t i = 0; i < detail::pg::rows(r.get()); ++i) {
            stored.insert(detail::pg::bytes(r.get(), i, 0));
        }
        for (std::size_t i = first; i < last; ++i) {
            const QueuedMessage& m = messages[i];
            if (stored.count(m.id) != 0) {
                continue;
            }
            const std::optional<QueuedMessage> held = get_on(c, m.id);
            if (!(retried && held && held->lease == 0 && held->payload == m.payload &&
                  held->due == m.due && held->claims == 0)) {
                detail::throw_already_queued(call, m.id);
            }
        }
    }

    // One of the hot statements: prepared once per connection unless the options say not.
    detail::pg::Result hot(PGconn* c, const char* name, const std::string& sql,
                           detail::pg::Params& p) const {
        return options_.database.prepare_statements ? detail::pg::exec_prepared(c, name, sql, p)
                                                    : detail::pg::exec(c, sql, p);
    }

    std::optional<QueuedMessage> get_on(PGconn* c, std::string_view id) const {
        detail::pg::Params p;
        p.bytes(id);
        detail::pg::Result r =
            detail::pg::exec(c, "SELECT " + cols_ + " FROM " + q_ + " WHERE id = $1", p);
        if (detail::pg::rows(r.get()) == 0) {
            return std::nullopt;
        }
        return row(r.get(), 0);
    }

    static QueuedMessage row(const PGresult* r, std::size_t i) {
        QueuedMessage m;
        m.id = detail::pg::bytes(r, i, 0);
        m.payload = detail::pg::bytes(r, i, 1);
        m.due = detail::pg::wall(detail::pg::i64(r, i, 2));
        m.enqueued = detail::pg::wall(detail::pg::i64(r, i, 3));
        m.attempts = static_cast<std::uint32_t>(detail::pg::i64(r, i, 4));
        m.claims = static_cast<std::uint32_t>(detail::pg::i64(r, i, 5));
        m.lease = static_cast<std::uint64_t>(detail::pg::i64(r, i, 6));
        m.lease_until = m.lease != 0 ? detail::pg::wall(detail::pg::i64(r, i, 7)) : WallTime{};
        return m;
    }

    const PostgresQueueStoreOptions options_;
    mutable detail::pg::Database db_;
    const std::string q_;
    const std::string cols_;
    const std::string channel_;
    // The hot statements, prepared once per connection (detail::pg::exec_prepared).
    const std::string claim_sql_;
    const std::string complete_sql_;
    const std::string release_sql_;
    const std::string extend_sql_;
    detail::Mutex listen_mutex_;
    detail::pg::Conn listener_ BULWARK_GUARDED_BY(listen_mutex_);
};

}  // namespace bulwark

#endif  // BULWARK_POSTGRES_QUEUE_STORE_HPP
