// SqliteQueueStore: a QueueStore kept in one SQLite file (optional: needs SQLite 3).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_SQLITE_QUEUE_STORE_HPP
#define BULWARK_SQLITE_QUEUE_STORE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/queue_index.hpp>
#include <bulwark/detail/sqlite.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/queue_store.hpp>

namespace bulwark {

struct SqliteQueueStoreOptions {
    // Messages held at most, leased or not, counted across every connection to the file: push()
    // beyond it throws QueueFullError. >= 1. Default 10000000.
    std::size_t max_size = 10000000;
    // Larger payloads are refused with QueueMessageTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // Longer ids are refused with QueueMessageTooLargeError. In [1, 65536]. Default 1024.
    std::size_t max_id_bytes = 1024;
    // What a commit waits for (see SqliteSynchronous: full survives a power cut, normal and off
    // trade that for speed). Default full.
    SqliteSynchronous synchronous = SqliteSynchronous::full;
    // How long an operation waits for another connection's write lock before it throws
    // SqliteError (SQLITE_BUSY). In [0, 2^31) ms. Default 5 s.
    std::chrono::milliseconds busy_timeout = std::chrono::seconds(5);

    void validate() const {
        if (max_size == 0) {
            detail::throw_invalid_option("SqliteQueueStoreOptions.max_size", "must be >= 1", "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("SqliteQueueStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_id_bytes == 0 || max_id_bytes > 65536) {
            detail::throw_invalid_option("SqliteQueueStoreOptions.max_id_bytes",
                                         "must be in [1, 65536]", std::to_string(max_id_bytes));
        }
        detail::check_enumerator(synchronous, SqliteSynchronous::off,
                                 "SqliteQueueStoreOptions.synchronous", "SqliteSynchronous");
        detail::check_busy_timeout("SqliteQueueStoreOptions.busy_timeout", busy_timeout);
    }
};

namespace detail {

// Schema of the "queue" component, one entry per version (see migrate_schema). `seq` is the push
// order (AUTOINCREMENT: never reused); `ready` is when claim() may take the message (due, or the
// end of its lease) and is indexed with seq in claim order; `size` is kept by triggers and
// `last_lease` is the last token handed out, so that no token is ever handed out twice.
inline constexpr const char* sqlite_queue_schema[] = {
    R"sql(
CREATE TABLE bulwark_queue(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  payload BLOB NOT NULL,
  due INTEGER NOT NULL,
  enqueued INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  claims INTEGER NOT NULL,
  lease INTEGER NOT NULL,
  lease_until INTEGER NOT NULL,
  ready INTEGER NOT NULL);
CREATE INDEX bulwark_queue_ready ON bulwark_queue(ready, seq);
CREATE INDEX bulwark_queue_leased ON bulwark_queue(lease) WHERE lease <> 0;
CREATE TABLE bulwark_queue_state(
  one INTEGER PRIMARY KEY CHECK (one = 1),
  size INTEGER NOT NULL,
  last_lease INTEGER NOT NULL);
INSERT INTO bulwark_queue_state VALUES (1, 0, 0);
CREATE TRIGGER bulwark_queue_inserted AFTER INSERT ON bulwark_queue
BEGIN UPDATE bulwark_queue_state SET size = size + 1; END;
CREATE TRIGGER bulwark_queue_deleted AFTER DELETE ON bulwark_queue
BEGIN UPDATE bulwark_queue_state SET size = size - 1; END;
)sql",
};

}  // namespace detail

// A QueueStore in one SQLite file (WAL mode): push, complete, release and remove return once
// committed, and with synchronous=full (the default) what they acknowledged survives a power cut.
// Several store objects, in one process or many, may open the same file (each is a connection):
// claim() is one BEGIN IMMEDIATE transaction, so a message is leased to one claimer at a time
// across all of them, and lease tokens are unique across them and across restarts.
//   bulwark::SqliteQueueStore store("/var/lib/app/queue.db");
//   store.push({"m-1", bytes, now});  auto batch = store.claim(now, 50, 30s);
// push is O(log n); claim is one indexed range read plus one update per message leased; complete,
// release, extend and remove are one statement each. push_all is all or nothing: one transaction.
// Thread-safe: one mutex serialises this object's connection. Throws SqliteError when SQLite
// fails (the file is not a database, is damaged, holds a newer schema, stays locked past
// busy_timeout). Needs the bulwark::sqlite CMake target; not included by <bulwark/bulwark.hpp>.
class SqliteQueueStore : public QueueStore {
public:
    // Opens `path`, creating the file and its schema when absent. Throws std::invalid_argument
    // for invalid options, SqliteError when the file cannot be used.
    explicit SqliteQueueStore(const std::string& path, const SqliteQueueStoreOptions& options = {})
        : options_(checked(options)), db_(path, options.synchronous, options.busy_timeout) {
        detail::LockGuard lock(mutex_);
        detail::migrate_schema(db_, "queue", detail::sqlite_queue_schema);
    }

    const SqliteQueueStoreOptions& options() const noexcept { return options_; }

    // The schema version this bulwark writes (see bulwark_schema_migrations in the file).
    static constexpr std::int64_t schema_version = 1;

    void push(const QueuedMessage& message) override {
        check_new(message, push_call);
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, true);
        check_held(message, push_call);
        if (size_locked() >= options_.max_size) {
            full();
        }
        insert(message);
        tx.commit();
    }

    // All or nothing, in one transaction: a batch that does not fit, or holds a bad id (a
    // duplicate within it too), stores none of its messages.
    void push_all(const std::vector<QueuedMessage>& messages) override {
        if (messages.empty()) {
            return;
        }
        for (const QueuedMessage& m : messages) {
            check_new(m, push_all_call);
        }
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, true);
        if (messages.size() > options_.max_size ||
            size_locked() > options_.max_size - messages.size()) {
            full();
        }
        for (const QueuedMessage& m : messages) {
            check_held(m, push_all_call);  // sees the batch's earlier messages too
            insert(m);
        }
        tx.commit();
    }

    std::vector<QueuedMessage> claim(WallTime now, std::size_t max, Duration lease_for) override {
        const WallTime until =
            detail::lease_end("bulwark::SqliteQueueStore::claim", now, lease_for);
        std::vector<QueuedMessage> out;
        if (max == 0) {
            return out;
        }
        std::vector<std::int64_t> seqs;
        detail::LockGuard lock(mutex_);
        const RelaxedSync relaxed(*this);
        // IMMEDIATE: the write lock before the read, so that no other connection can lease what
        // this one is about to lease.
        detail::SqliteTransaction tx(db_, true);
        {
            detail::StatementUse q(db_.statement(
                "SELECT seq, id, payload, due, enqueued, attempts, claims, lease, lease_until FROM "
                "bulwark_queue WHERE ready <= ? ORDER BY ready, seq LIMIT ?"));
            q->bind(1, detail::to_sql(now));
            q->bind(2, detail::sql_limit(max));
            while (q->step()) {
                seqs.push_back(q->int64(0));
                out.push_back(read_message(*q));
            }
        }
        if (out.empty()) {
            return out;  // only read: the rollback loses nothing
        }
        std::int64_t last_lease = 0;
        {
            detail::StatementUse q(db_.statement("SELECT last_lease FROM bulwark_queue_state"));
            if (q->step()) {
                last_lease = q->int64(0);
            }
        }
        for (std::size_t i = 0; i < out.size(); ++i) {
            detail::StatementUse u(db_.statement(
                "UPDATE bulwark_queue SET lease = ?, lease_until = ?, ready = ?, claims = claims "
                "+ 1 WHERE seq = ?"));
            u->bind(1, ++last_lease);
            u->bind(2, detail::to_sql(until));
            u->bind(3, detail::to_sql(until));
            u->bind(4, seqs[i]);
            u->step();
            out[i].lease = static_cast<std::uint64_t>(last_lease);
            out[i].lease_until = until;
            ++out[i].claims;
        }
        {
            detail::StatementUse u(db_.statement("UPDATE bulwark_queue_state SET last_lease = ?"));
            u->bind(1, last_lease);
            u->step();
        }
        tx.commit();
        return out;
    }

    bool complete(std::string_view id, std::uint64_t lease) override {
        if (lease == 0 || lease > max_token) {
            return false;
        }
        detail::LockGuard lock(mutex_);
        detail::StatementUse d(
            db_.statement("DELETE FROM bulwark_queue WHERE id = ? AND lease = ? AND lease <> 0"));
        d->bind(1, id);
        d->bind(2, static_cast<std::int64_t>(lease));
        d->step();
        return db_.changes() == 1;
    }

    // Also throws QueueMessageTooLargeError (the lease stays) for a payload over the limit.
    bool release(const QueuedMessage& message) override {
        if (message.lease == 0 || message.lease > max_token) {
            return false;
        }
        if (message.payload.size() > options_.max_payload_bytes) {
            too_large("release", "payload", "max_payload_bytes", message.payload.size(),
                      options_.max_payload_bytes);
        }
        detail::LockGuard lock(mutex_);
        detail::StatementUse u(db_.statement(
            "UPDATE bulwark_queue SET payload = ?, due = ?, attempts = ?, lease = 0, lease_until "
            "= 0, ready = ? WHERE id = ? AND lease = ? AND lease <> 0"));
        u->bind_blob(1, message.payload);
        u->bind(2, detail::to_sql(message.due));
        u->bind(3, static_cast<std::int64_t>(message.attempts));
        u->bind(4, detail::to_sql(message.due));
        u->bind(5, std::string_view(message.id));
        u->bind(6, static_cast<std::int64_t>(message.lease));
        u->step();
        return db_.changes() == 1;
    }

    bool extend(std::string_view id, std::uint64_t lease, WallTime until) override {
        if (lease == 0 || lease > max_token) {
            return false;
        }
        detail::LockGuard lock(mutex_);
        const RelaxedSync relaxed(*this);
        detail::StatementUse u(
            db_.statement("UPDATE bulwark_queue SET lease_until = ?, ready = ? WHERE id = ? AND "
                          "lease = ? AND lease <> 0"));
        u->bind(1, detail::to_sql(until));
        u->bind(2, detail::to_sql(until));
        u->bind(3, id);
        u->bind(4, static_cast<std::int64_t>(lease));
        u->step();
        return db_.changes() == 1;
    }

    bool remove(std::string_view id) override {
        detail::LockGuard lock(mutex_);
        detail::StatementUse d(db_.statement("DELETE FROM bulwark_queue WHERE id = ?"));
        d->bind(1, id);
        d->step();
        return db_.changes() == 1;
    }

    std::optional<QueuedMessage> get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        detail::StatementUse q(db_.statement(
            "SELECT seq, id, payload, due, enqueued, attempts, claims, lease, lease_until FROM "
            "bulwark_queue WHERE id = ?"));
        q->bind(1, id);
        if (!q->step()) {
            return std::nullopt;
        }
        return read_message(*q);
    }

    std::size_t size() const override {
        detail::LockGuard lock(mutex_);
        return size_locked();
    }

    std::optional<WallTime> next_ready() const override {
        detail::LockGuard lock(mutex_);
        detail::StatementUse q(db_.statement("SELECT MIN(ready) FROM bulwark_queue"));
        if (!q->step() || q->is_null(0)) {
            return std::nullopt;
        }
        return detail::wall_from_sql(q->int64(0));
    }

    std::vector<QueuedMessage> list(
        std::size_t limit = std::numeric_limits<std::size_t>::max()) const override {
        std::vector<QueuedMessage> out;
        if (limit == 0) {
            return out;
        }
        detail::LockGuard lock(mutex_);
        detail::StatementUse q(db_.statement(
            "SELECT seq, id, payload, due, enqueued, attempts, claims, lease, lease_until FROM "
            "bulwark_queue ORDER BY ready, seq LIMIT ?"));
        q->bind(1, detail::sql_limit(limit));
        while (q->step()) {
            out.push_back(read_message(*q));
        }
        return out;
    }

    QueueStoreStats stats() const override {
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, false);  // one snapshot for both counts
        QueueStoreStats s;
        s.size = size_locked();
        {
            detail::StatementUse q(
                db_.statement("SELECT COUNT(*) FROM bulwark_queue WHERE lease <> 0"));
            if (q->step()) {
                s.leased = static_cast<std::size_t>(q->int64(0));
            }
        }
        tx.commit();
        return s;
    }

private:
    static constexpr const char* push_call = "bulwark::SqliteQueueStore::push";
    static constexpr const char* push_all_call = "bulwark::SqliteQueueStore::push_all";
    // Tokens are positive SQLite integers; a larger one was never handed out.
    static constexpr std::uint64_t max_token =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

    // claim() and extend() commit without waiting for the disk under synchronous=full, as the
    // file store does not wait for them: a lease lost to a power cut only delivers its message
    // again (the worker that held it died with the machine), and the next durable commit syncs
    // it. Restores full when the scope ends. Under the store's mutex.
    class RelaxedSync {
    public:
        explicit RelaxedSync(SqliteQueueStore& store) BULWARK_REQUIRES(store.mutex_)
            : store_(store.options_.synchronous == SqliteSynchronous::full ? &store : nullptr) {
            if (store_ != nullptr) {
                store_->db_.run("PRAGMA synchronous=NORMAL");
            }
        }
        RelaxedSync(const RelaxedSync&) = delete;
        RelaxedSync& operator=(const RelaxedSync&) = delete;
        ~RelaxedSync() BULWARK_NO_THREAD_SAFETY_ANALYSIS {  // (within the same lock scope)
            if (store_ != nullptr) {
                // Setting a pragma does not fail once the connection is open; if it did, the
                // next open would set full again.
                sqlite3_exec(store_->db_.handle(), "PRAGMA synchronous=FULL", nullptr, nullptr,
                             nullptr);
            }
        }

    private:
        SqliteQueueStore* store_;
    };

    static const SqliteQueueStoreOptions& checked(const SqliteQueueStoreOptions& o) {
        o.validate();
        return o;
    }

    // The current row of a `SELECT seq, id, payload, due, enqueued, attempts, claims, lease,
    // lease_until`.
    static QueuedMessage read_message(detail::SqliteStatement& q) {
        QueuedMessage m;
        m.id = q.bytes(1);
        m.payload = q.bytes(2);
        m.due = detail::wall_from_sql(q.int64(3));
        m.enqueued = detail::wall_from_sql(q.int64(4));
        m.attempts = static_cast<std::uint32_t>(q.int64(5));
        m.claims = static_cast<std::uint32_t>(q.int64(6));
        m.lease = static_cast<std::uint64_t>(q.int64(7));
        m.lease_until = detail::wall_from_sql(q.int64(8));
        return m;
    }

    [[noreturn]] BULWARK_NOINLINE void full() const {
        throw QueueFullError("bulwark::SqliteQueueStore is full (max_size " +
                             std::to_string(options_.max_size) + ")");
    }

    [[noreturn]] BULWARK_NOINLINE static void too_large(const char* call, const char* what,
                                                        const char* limit_name, std::size_t size,
                                                        std::size_t limit) {
        throw QueueMessageTooLargeError(std::string("bulwark::SqliteQueueStore::") + call + ": " +
                                            what + " of " + std::to_string(size) +
                                            " bytes exceeds " + limit_name + " (" +
                                            std::to_string(limit) + ")",
                                        limit_name, size, limit);
    }

    // The checks that need no database: an id, and sizes within the limits.
    void check_new(const QueuedMessage& m, const char* call) const {
        if (m.id.empty()) {
            detail::check_push_id(call, m, false);
        }
        const char* name = call == push_call ? "push" : "push_all";
        if (m.id.size() > options_.max_id_bytes) {
            too_large(name, "id", "max_id_bytes", m.id.size(), options_.max_id_bytes);
        }
        if (m.payload.size() > options_.max_payload_bytes) {
            too_large(name, "payload", "max_payload_bytes", m.payload.size(),
                      options_.max_payload_bytes);
        }
    }

    void check_held(const QueuedMessage& m, const char* call) const BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(db_.statement("SELECT 1 FROM bulwark_queue WHERE id = ?"));
        q->bind(1, std::string_view(m.id));
        if (q->step()) {
            detail::throw_already_queued(call, m.id);
        }
    }

    std::size_t size_locked() const BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(db_.statement("SELECT size FROM bulwark_queue_state"));
        return q->step() ? static_cast<std::size_t>(q->int64(0)) : 0;
    }

    // A pushed message: without claims or lease, ready at its due time.
    void insert(const QueuedMessage& m) BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(
            db_.statement("INSERT INTO bulwark_queue(id, payload, due, enqueued, attempts, "
                          "claims, lease, lease_until, ready) VALUES (?, ?, ?, ?, ?, 0, 0, 0, ?)"));
        q->bind(1, std::string_view(m.id));
        q->bind_blob(2, m.payload);
        q->bind(3, detail::to_sql(m.due));
        q->bind(4, detail::to_sql(m.enqueued));
        q->bind(5, static_cast<std::int64_t>(m.attempts));
        q->bind(6, detail::to_sql(m.due));
        q->step();
    }

    const SqliteQueueStoreOptions options_;
    mutable detail::Mutex mutex_;
    // The connection: its statements and transactions are this object's, one call at a time.
    mutable detail::SqliteConnection db_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark

#endif  // BULWARK_SQLITE_QUEUE_STORE_HPP
