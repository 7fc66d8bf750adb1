// PostgresDeadLetterStore: a DeadLetterStore in PostgreSQL that many processes share (needs libpq).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_POSTGRES_DEAD_LETTER_STORE_HPP
#define BULWARK_POSTGRES_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/postgres.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

struct PostgresDeadLetterStoreOptions {
    // Connection, schema, pool, durability and retry settings (see PostgresStoreOptions).
    PostgresStoreOptions database{};
    // Records held at most (in the schema, by every instance together). When full, add() evicts
    // the oldest added record that is no longer pending; with none, it throws
    // DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together (as InMemoryDeadLetterStoreOptions). >= 1.
    // Default 64 KiB.
    std::size_t max_text_bytes = std::size_t{64} << 10U;
    // Attempt history kept per record (the newest). >= 1. Default 64.
    std::size_t max_attempts = 64;

    void validate() const {
        database.validate();
        if (max_entries == 0) {
            detail::throw_invalid_option("PostgresDeadLetterStoreOptions.max_entries",
                                         "must be >= 1", "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > (std::size_t{64} << 20U)) {
            detail::throw_invalid_option("PostgresDeadLetterStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_attempts == 0) {
            detail::throw_invalid_option("PostgresDeadLetterStoreOptions.max_attempts",
                                         "must be >= 1", "0");
        }
        if (max_text_bytes == 0) {
            detail::throw_invalid_option("PostgresDeadLetterStoreOptions.max_text_bytes",
                                         "must be >= 1", "0");
        }
    }
};

// A DeadLetterStore in PostgreSQL tables that any number of processes share: every instance on
// one schema sees, queries and decides on the same records. add() returns once the record is
// committed; dismiss(), categorize() and purge() are one set-based statement each, in a
// transaction that also records the call's random operation id and result, so that a retry
// after an ambiguous commit returns the recorded result instead of changing the next records
// (exactly once); reprocess() selects its batch in one statement and records each outcome in its
// own transaction, never holding a connection while the handler runs.
//   bulwark::PostgresDeadLetterStoreOptions o;  o.database.conninfo = "host=db dbname=app";
//   bulwark::PostgresDeadLetterStore store(o);
//   store.add(letter);  store.dismiss(bulwark::DeadLetterQuery{}.type("sms"), "obsolete");
// stats(): the stored counts and added / evicted / purged / resent / redrive_failures are the
// schema's (every instance, ever); duplicate_adds and the rejected_* counts are this object's.
// One reprocess() at a time per store object (two instances may redrive at once; a record's
// outcome is still recorded once per hand-over). Transient failures are retried through a
// RetryPolicy and a CircuitBreaker; an add retried after an ambiguous failure finds its own
// record and returns its id. Thread-safe. Change the tables only through a store (the count
// that max_entries checks is kept in them).
class PostgresDeadLetterStore final : public DeadLetterStore {
public:
    // Connects and creates or migrates the schema (safe when many processes start at once).
    // Throws std::invalid_argument for invalid options. The clock (created times, redrive
    // attempts, retry waits) must outlive the store.
    explicit PostgresDeadLetterStore(PostgresDeadLetterStoreOptions options,
                                     Clock& clock = default_clock())
        : options_((options.validate(), std::move(options))),
          limits_{options_.max_entries, options_.max_payload_bytes, options_.max_attempts,
                  options_.max_text_bytes},
          clock_(&clock),
          db_(options_.database, "dead letters", clock),
          t_(db_.table("dead_letters")),
          counters_(db_.table("dead_letter_counters")),
          ops_(db_.table("dead_letter_ops")),
          id_seed_(detail::dead_letter_id_seed(this)),
          op_key_{random_key(id_seed_), random_key(~id_seed_)} {
        db_.migrate("dead_letters",
                    {{"CREATE TABLE " + t_ +
                          " (seq bigserial PRIMARY KEY, id bytea NOT NULL UNIQUE,"
                          " type bytea NOT NULL, payload bytea NOT NULL, error bytea NOT NULL,"
                          " reason int8 NOT NULL, category bytea NOT NULL, tags bytea[] NOT NULL,"
                          " attempts bytea NOT NULL, created int8 NOT NULL,"
                          " last_attempt int8 NOT NULL, status int8 NOT NULL,"
                          " redrives int8 NOT NULL, note bytea NOT NULL)",
                      "CREATE INDEX dead_letters_status ON " + t_ + " (status, seq)",
                      "CREATE INDEX dead_letters_type ON " + t_ + " (type, seq)",
                      "CREATE INDEX dead_letters_created ON " + t_ + " (created)",
                      "CREATE TABLE " + counters_ +
                          " (one int PRIMARY KEY CHECK (one = 1), total int8 NOT NULL,"
                          " added int8 NOT NULL, evicted int8 NOT NULL, purged int8 NOT NULL,"
                          " resent int8 NOT NULL, redrive_failures int8 NOT NULL)",
                      "INSERT INTO " + counters_ + " VALUES (1, 0, 0, 0, 0, 0, 0)"},
                     // Version 2: the bulk operations' ids and results (see once()).
                     {"CREATE TABLE " + ops_ +
                          " (op_id bytea PRIMARY KEY, result int8 NOT NULL,"
                          " at timestamptz NOT NULL)",
                      "CREATE INDEX dead_letter_ops_at ON " + ops_ + " (at)"}});
    }

    const PostgresDeadLetterStoreOptions& options() const noexcept { return options_; }
    CircuitBreaker& breaker() noexcept { return db_.breaker(); }

protected:
    std::string do_add(DeadLetter letter) override {
        try {
            detail::prepare_dead_letter(letter, limits_, clock_->wall_now());
        } catch (const DeadLetterTooLargeError&) {
            rejected_too_large_.fetch_add(1, std::memory_order_relaxed);
            throw;
        }
        const bool generated = letter.id.empty();
        if (generated) {
            letter.id = next_id();
        }
        const std::string attempts = encode_attempts(letter.attempts);
        return db_.run([&](PGconn* c, bool retried) {
            using detail::pg::exec;
            exec(c, "BEGIN");
            // The counters row is the lock that makes the max_entries check exact.
            detail::pg::Result total = exec(c, "SELECT total FROM " + counters_ + " FOR UPDATE");
            const auto held = static_cast<std::size_t>(detail::pg::i64(total.get(), 0, 0));
            for (;;) {
                detail::pg::Params p;
                p.bytes(letter.id);
                detail::pg::Result dup = exec(c, "SELECT 1 FROM " + t_ + " WHERE id = $1", p);
                if (detail::pg::rows(dup.get()) == 0) {
                    break;
                }
                if (generated && !retried) {
                    letter.id = next_id();  // another store's id: draw again
                    continue;
                }
                exec(c, "COMMIT");
                if (!retried) {
                    duplicate_adds_.fetch_add(1, std::memory_order_relaxed);
                }
                return letter.id;
            }
            const bool full = held >= limits_.max_entries;
            std::int64_t victim = 0;
            if (full) {
                detail::pg::Result r =
                    exec(c, "SELECT seq FROM " + t_ + " WHERE status <> 0 ORDER BY seq LIMIT 1");
                if (detail::pg::rows(r.get()) == 0) {
                    exec(c, "ROLLBACK");
                    rejected_full_.fetch_add(1, std::memory_order_relaxed);
                    detail::throw_store_full(limits_.max_entries);
                }
                victim = detail::pg::i64(r.get(), 0, 0);
            }
            detail::pg::Params p;
            p.bytes(letter.id)
                .bytes(letter.type)
                .bytes(letter.payload)
                .bytes(letter.error)
                .i64(static_cast<std::int64_t>(letter.reason))
                .bytes(letter.category);
            const std::string tags = tag_array(letter.tags, p);
            p.bytes(attempts)
                .i64(detail::pg::ticks(letter.created))
                .i64(detail::pg::ticks(letter.last_attempt))
                .i64(static_cast<std::int64_t>(letter.redrives))
                .bytes(letter.note);
            const std::string n = std::to_string(p.count());
            exec(c,
                 "INSERT INTO " + t_ +
                     " (id, type, payload, error, reason, category, tags, attempts, created,"
                     " last_attempt, status, redrives, note) VALUES ($1, $2, $3, $4, $5::int8,"
                     " $6, " +
                     tags + ", $" + std::to_string(p.count() - 4) + ", $" +
                     std::to_string(p.count() - 3) + "::int8, $" + std::to_string(p.count() - 2) +
                     "::int8, 0, $" + std::to_string(p.count() - 1) + "::int8, $" + n + ")",
                 p);
            if (full) {
                detail::pg::Params v;
                v.i64(victim);
                exec(c, "DELETE FROM " + t_ + " WHERE seq = $1::int8", v);
            }
            exec(c, "UPDATE " + counters_ + " SET total = total + " + (full ? "0" : "1") +
                        ", added = added + 1, evicted = evicted + " + (full ? "1" : "0"));
            exec(c, "COMMIT");
            return letter.id;
        });
    }

    std::optional<DeadLetter> do_get(std::string_view id) const override {
        return db_.run([&](PGconn* c, bool /*retried*/) -> std::optional<DeadLetter> {
            detail::pg::Params p;
            p.bytes(id);
            detail::pg::Result r = detail::pg::exec(c, select_cols() + " WHERE d.id = $1", p);
            if (detail::pg::rows(r.get()) == 0) {
                return std::nullopt;
            }
            return row(r.get(), 0);
        });
    }

    std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const override {
        if (query.max_results() == 0) {
            return {};
        }
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Params p;
            const std::string w = where(query, p);
            std::string sql = select_cols() + " WHERE " + w + " ORDER BY d.seq";
            sql += " LIMIT " + p.next() + "::int8";
            p.i64(clamp(query.max_results()));
            detail::pg::Result r = detail::pg::exec(c, sql, p);
            std::vector<DeadLetter> out;
            out.reserve(detail::pg::rows(r.get()));
            for (std::size_t i = 0; i < detail::pg::rows(r.get()); ++i) {
                out.push_back(row(r.get(), i));
            }
            return out;
        });
    }

    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        if (query.max_results() == 0) {
            return 0;
        }
        return once([&](PGconn* c) {
            detail::pg::Params p;
            p.bytes(note);
            // where() first: it numbers the placeholders that p.next() continues.
            const std::string w = where(query, p);
            std::string sql = "UPDATE " + t_ + " SET status = 2, note = $1 WHERE seq IN (SELECT " +
                              "d.seq FROM " + t_ + " AS d WHERE d.status = 0 AND " + w +
                              " ORDER BY d.seq LIMIT " + p.next() + "::int8 FOR UPDATE)";
            p.i64(clamp(query.max_results()));
            return detail::pg::affected(detail::pg::exec(c, sql, p).get());
        });
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        if (query.max_results() == 0) {
            return 0;
        }
        return once([&](PGconn* c) {
            detail::pg::Params p;
            p.bytes(category);
            const std::string given = tag_array(tags, p);
            const std::string w = where(query, p);
            // The tags a record does not carry yet, each once, in the order given.
            std::string sql =
                "UPDATE " + t_ + " AS r SET category = $1, tags = r.tags || coalesce((SELECT " +
                "array_agg(x.t ORDER BY x.o) FROM (SELECT u.t, min(u.o) AS o FROM unnest(" + given +
                ") WITH ORDINALITY AS u(t, o) GROUP BY u.t) AS x WHERE NOT (x.t = ANY(r.tags))),"
                " '{}'::bytea[]) WHERE r.seq IN (SELECT d.seq FROM " +
                t_ + " AS d WHERE " + w + " ORDER BY d.seq LIMIT " + p.next() +
                "::int8 FOR UPDATE) RETURNING (octet_length(r.category) + coalesce((SELECT "
                "sum(octet_length(t)) FROM unnest(r.tags) AS t), 0))::int8";
            p.i64(clamp(query.max_results()));
            detail::pg::Result r = detail::pg::exec(c, sql, p);
            for (std::size_t i = 0; i < detail::pg::rows(r.get()); ++i) {
                const auto text = static_cast<std::size_t>(detail::pg::i64(r.get(), i, 0));
                if (text > limits_.max_text_bytes) {
                    detail::pg::exec(c, "ROLLBACK");  // refused before anything changed
                    detail::throw_too_large("category and tags", "max_text_bytes", text,
                                            limits_.max_text_bytes);
                }
            }
            return detail::pg::rows(r.get());
        });
    }

    ReprocessResult do_reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                                 const ReprocessOptions& options) override {
        if (!handler) {
            detail::throw_invalid_argument("bulwark::DeadLetterStore::reprocess: empty handler");
        }
        ReprocessResult result;
        if (reprocessing_.exchange(true, std::memory_order_acquire)) {
            result.already_running = true;
            return result;
        }
        struct Running {
            std::atomic<bool>& flag;
            ~Running() { flag.store(false, std::memory_order_release); }
        } running{reprocessing_};

        const std::vector<std::int64_t> batch = select_redrive(query, options, result);
        for (const std::int64_t seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            std::optional<DeadLetter> copy =
                db_.run([&](PGconn* c, bool /*retried*/) -> std::optional<DeadLetter> {
                    detail::pg::Params p;
                    p.i64(seq);
                    detail::pg::Result r = detail::pg::exec(
                        c,
                        select_cols() + " WHERE d.seq = $1::int8 AND d.status = 0 AND " +
                            where(query, p),
                        p);
                    if (detail::pg::rows(r.get()) == 0) {
                        return std::nullopt;
                    }
                    return row(r.get(), 0);
                });
            if (!copy) {
                ++result.skipped_changed;
                continue;
            }
            detail::RedriveOutcome outcome = detail::run_redrive_handler(handler, *copy);
            const bool resent = outcome.resent;
            record_outcome(
                seq, copy->redrives, resent,
                DeadLetterAttempt{clock_->wall_now(), options.channel, std::move(outcome.error)});
            ++(resent ? result.resent : result.failed);
        }
        return result;
    }

    std::size_t do_purge(WallTime older_than) override {
        return once([&](PGconn* c) {
            detail::pg::exec(c, "SELECT 1 FROM " + counters_ + " FOR UPDATE");
            detail::pg::Params p;
            p.i64(detail::pg::ticks(older_than));
            const std::size_t n = detail::pg::affected(
                detail::pg::exec(c, "DELETE FROM " + t_ + " WHERE created < $1::int8", p).get());
            detail::pg::Params u;
            u.i64(static_cast<std::int64_t>(n));
            detail::pg::exec(
                c,
                "UPDATE " + counters_ + " SET total = total - $1::int8, purged = purged + $1::int8",
                u);
            return n;
        });
    }

    DeadLetterStats do_stats() const override {
        DeadLetterStats s = db_.run([&](PGconn* c, bool /*retried*/) {
            DeadLetterStats st;
            detail::pg::exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            detail::pg::Result g =
                detail::pg::exec(c, "SELECT status, reason, type, category, count(*)::int8 FROM " +
                                        t_ + " GROUP BY 1, 2, 3, 4");
            detail::pg::Result k = detail::pg::exec(
                c, "SELECT added, evicted, purged, resent, redrive_failures FROM " + counters_);
            detail::pg::exec(c, "COMMIT");
            for (std::size_t i = 0; i < detail::pg::rows(g.get()); ++i) {
                const auto status = detail::pg::i64(g.get(), i, 0);
                const auto reason = static_cast<DeadLetterReason>(detail::pg::i64(g.get(), i, 1));
                const std::string type = detail::pg::bytes(g.get(), i, 2);
                const auto n = static_cast<std::size_t>(detail::pg::i64(g.get(), i, 4));
                st.total += n;
                (status == 0 ? st.pending : status == 1 ? st.reprocessed : st.dismissed) += n;
                const auto ri = static_cast<std::size_t>(reason);
                if (ri < st.by_reason.size()) {
                    st.by_reason[ri] += n;
                }
                st.by_type[type] += n;
                st.by_category[detail::pg::bytes(g.get(), i, 3)] += n;
                st.by_type_and_reason[{type, reason}] += n;
            }
            st.added = static_cast<std::uint64_t>(detail::pg::i64(k.get(), 0, 0));
            st.evicted = static_cast<std::uint64_t>(detail::pg::i64(k.get(), 0, 1));
            st.purged = static_cast<std::uint64_t>(detail::pg::i64(k.get(), 0, 2));
            st.resent = static_cast<std::uint64_t>(detail::pg::i64(k.get(), 0, 3));
            st.redrive_failures = static_cast<std::uint64_t>(detail::pg::i64(k.get(), 0, 4));
            return st;
        });
        s.duplicate_adds = duplicate_adds_.load(std::memory_order_relaxed);
        s.rejected_full = rejected_full_.load(std::memory_order_relaxed);
        s.rejected_too_large = rejected_too_large_.load(std::memory_order_relaxed);
        return s;
    }

    std::size_t do_size() const override {
        return db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Result r = detail::pg::exec(c, "SELECT total FROM " + counters_);
            return static_cast<std::size_t>(detail::pg::i64(r.get(), 0, 0));
        });
    }

    DeadLetterLimits do_limits() const noexcept override { return limits_; }

private:
    static std::int64_t clamp(std::size_t n) noexcept {
        constexpr auto top = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
        return static_cast<std::int64_t>(std::min(n, top));
    }

    // Runs `change` (statements that return how many records they changed) exactly once per
    // call, even when the commit was ambiguous (sent, then the connection lost before the
    // answer) and the retry wrapper tries again: the transaction that runs it also records a
    // fresh operation id and the result in dead_letter_ops. A retry first claims the id; when
    // an earlier try committed it (a try still committing makes the claim wait for it), the
    // retry returns the recorded result and runs nothing. Ids older than a day are deleted by
    // every 64th call of this object (a call's retries last seconds, not a day).
    template <class Change>
    std::size_t once(Change&& change) {
        const std::uint64_t k = ops_started_.fetch_add(1, std::memory_order_relaxed);
        std::string op;
        op.reserve(16);
        detail::pg::put_u32(op, static_cast<std::uint32_t>(op_key_[0] >> 32U));
        detail::pg::put_u32(op, static_cast<std::uint32_t>(op_key_[0] & 0xFFFFFFFFU));
        // SplitMix64::at is a bijection of k for one seed: distinct calls, distinct ids.
        const std::uint64_t low = detail::SplitMix64::at(op_key_[1], k);
        detail::pg::put_u32(op, static_cast<std::uint32_t>(low >> 32U));
        detail::pg::put_u32(op, static_cast<std::uint32_t>(low & 0xFFFFFFFFU));
        const bool sweep = k % 64 == 0;
        return db_.run([&](PGconn* c, bool retried) -> std::size_t {
            using detail::pg::exec;
            exec(c, "BEGIN");
            if (retried) {
                detail::pg::Params id;
                id.bytes(op);
                const detail::pg::Result claim =
                    exec(c,
                         "INSERT INTO " + ops_ +
                             " (op_id, result, at) VALUES ($1, -1, now())"
                             " ON CONFLICT (op_id) DO NOTHING",
                         id);
                if (detail::pg::affected(claim.get()) == 0) {
                    const detail::pg::Result r =
                        exec(c, "SELECT result FROM " + ops_ + " WHERE op_id = $1", id);
                    exec(c, "COMMIT");
                    return static_cast<std::size_t>(detail::pg::i64(r.get(), 0, 0));
                }
            }
            const std::size_t n = change(c);
            detail::pg::Params rec;
            rec.bytes(op).i64(clamp(n));
            exec(c,
                 "INSERT INTO " + ops_ +
                     " (op_id, result, at) VALUES ($1, $2::int8, now())"
                     " ON CONFLICT (op_id) DO UPDATE SET result = EXCLUDED.result",
                 rec);
            if (sweep) {
                exec(c, "DELETE FROM " + ops_ + " WHERE at < now() - interval '1 day'");
            }
            exec(c, "COMMIT");
            return n;
        });
    }

    // 64 bits from /dev/urandom (mixed with `fallback`, which stands in when it cannot be
    // read). Two make the 128-bit key once() derives its operation ids from: unique across
    // calls, processes and hosts.
    static std::uint64_t random_key(std::uint64_t fallback) noexcept {
        std::uint64_t key = 0;
        int fd = -1;
        do {
            fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0) {
            auto* bytes = reinterpret_cast<unsigned char*>(&key);
            std::size_t got = 0;
            while (got < sizeof key) {
                const ssize_t r = ::read(fd, bytes + got, sizeof key - got);
                if (r < 0 && errno == EINTR) {
                    continue;
                }
                if (r <= 0) {
                    break;
                }
                got += static_cast<std::size_t>(r);
            }
            ::close(fd);
        }
        return detail::SplitMix64::at(key ^ fallback, 0);
    }

    std::string next_id() {
        return detail::format_dead_letter_id(
            detail::SplitMix64::at(id_seed_, next_id_.fetch_add(1, std::memory_order_relaxed)));
    }

    // An ARRAY[...] of bytea parameters (appended to `p`) holding `tags`.
    static std::string tag_array(const std::vector<std::string>& tags, detail::pg::Params& p) {
        if (tags.empty()) {
            return "'{}'::bytea[]";
        }
        std::string sql = "ARRAY[";
        for (std::size_t i = 0; i < tags.size(); ++i) {
            sql += (i == 0 ? "" : ", ") + p.next() + "::bytea";
            p.bytes(tags[i]);
        }
        return sql + "]";
    }

    // The conditions `query` sets on a record `d`, its values appended to `p`.
    static std::string where(const DeadLetterQuery& q, detail::pg::Params& p) {
        std::string w = "TRUE";
        const auto add_bytes = [&](const char* column, const std::string* value) {
            if (value != nullptr) {
                w += std::string(" AND d.") + column + " = " + p.next();
                p.bytes(*value);
            }
        };
        add_bytes("id", q.id_filter());
        add_bytes("type", q.type_filter());
        add_bytes("category", q.category_filter());
        if (const auto s = q.status_filter()) {
            w += " AND d.status = " + p.next() + "::int8";
            p.i64(static_cast<std::int64_t>(*s));
        }
        if (const auto r = q.reason_filter()) {
            w += " AND d.reason = " + p.next() + "::int8";
            p.i64(static_cast<std::int64_t>(*r));
        }
        for (const std::string& tag : q.tag_filters()) {
            w += " AND d.tags @> ARRAY[" + p.next() + "::bytea]";
            p.bytes(tag);
        }
        if (const auto t = q.created_before_filter()) {
            w += " AND d.created < " + p.next() + "::int8";
            p.i64(detail::pg::ticks(*t));
        }
        if (const auto t = q.created_after_filter()) {
            w += " AND d.created > " + p.next() + "::int8";
            p.i64(detail::pg::ticks(*t));
        }
        return w;
    }

    std::string select_cols() const {
        return "SELECT d.id, d.type, d.payload, d.error, d.reason, d.category, (SELECT "
               "coalesce(string_agg(int4send(octet_length(u.t)) || u.t, ''::bytea ORDER BY u.o),"
               " ''::bytea) FROM unnest(d.tags) WITH ORDINALITY AS u(t, o)), d.attempts,"
               " d.created, d.last_attempt, d.status, d.redrives, d.note FROM " +
               t_ + " AS d";
    }

    static DeadLetter row(const PGresult* r, std::size_t i) {
        namespace pg = detail::pg;
        DeadLetter d;
        d.id = pg::bytes(r, i, 0);
        d.type = pg::bytes(r, i, 1);
        d.payload = pg::bytes(r, i, 2);
        d.error = pg::bytes(r, i, 3);
        d.reason = static_cast<DeadLetterReason>(pg::i64(r, i, 4));
        d.category = pg::bytes(r, i, 5);
        const std::string tags = pg::bytes(r, i, 6);
        for (std::size_t at = 0; at < tags.size();) {
            d.tags.push_back(pg::get_chunk(tags, at));
        }
        d.attempts = decode_attempts(pg::bytes(r, i, 7));
        d.created = pg::wall(pg::i64(r, i, 8));
        d.last_attempt = pg::wall(pg::i64(r, i, 9));
        d.status = static_cast<DeadLetterStatus>(pg::i64(r, i, 10));
        d.redrives = static_cast<std::uint32_t>(pg::i64(r, i, 11));
        d.note = pg::bytes(r, i, 12);
        return d;
    }

    static std::string encode_attempts(const std::vector<DeadLetterAttempt>& attempts) {
        std::string out;
        for (const DeadLetterAttempt& a : attempts) {
            const auto at = static_cast<std::uint64_t>(detail::pg::ticks(a.at));
            detail::pg::put_u32(out, static_cast<std::uint32_t>(at >> 32U));
            detail::pg::put_u32(out, static_cast<std::uint32_t>(at & 0xFFFFFFFFU));
            detail::pg::put_chunk(out, a.channel);
            detail::pg::put_chunk(out, a.error);
        }
        return out;
    }

    static std::vector<DeadLetterAttempt> decode_attempts(std::string_view in) {
        std::vector<DeadLetterAttempt> out;
        for (std::size_t at = 0; at < in.size();) {
            DeadLetterAttempt a;
            const std::uint64_t hi = detail::pg::get_u32(in, at);
            const std::uint64_t lo = detail::pg::get_u32(in, at);
            a.at = detail::pg::wall(static_cast<std::int64_t>((hi << 32U) | lo));
            a.channel = detail::pg::get_chunk(in, at);
            a.error = detail::pg::get_chunk(in, at);
            out.push_back(std::move(a));
        }
        return out;
    }

    // The pending matches a reprocess hands over (at most the query's limit), as
    // DeadLetterIndex::select_redrive counts them; one statement.
    std::vector<std::int64_t> select_redrive(const DeadLetterQuery& query,
                                             const ReprocessOptions& options,
                                             ReprocessResult& result) const {
        std::vector<std::int64_t> batch;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return batch;
        }
        detail::pg::Result r = db_.run([&](PGconn* c, bool /*retried*/) {
            detail::pg::Params p;
            return detail::pg::exec(c,
                                    "SELECT d.seq, d.redrives FROM " + t_ +
                                        " AS d WHERE d.status = 0 AND " + where(query, p) +
                                        " ORDER BY d.seq",
                                    p);
        });
        for (std::size_t i = 0; i < detail::pg::rows(r.get()) && batch.size() < limit; ++i) {
            ++result.matched;
            if (options.max_redrives != 0 &&
                detail::pg::i64(r.get(), i, 1) >= static_cast<std::int64_t>(options.max_redrives)) {
                ++result.skipped_limit;
                continue;
            }
            batch.push_back(detail::pg::i64(r.get(), i, 0));
        }
        return batch;
    }

    // Records one hand-over of record `seq` (redriven `redrives` times when it was handed
    // over): a success wins over a dismiss made meanwhile; the history keeps the newest
    // max_attempts. A retry after an ambiguous commit finds redrives moved on and stops.
    void record_outcome(std::int64_t seq, std::uint32_t redrives, bool resent,
                        DeadLetterAttempt attempt) {
        db_.run([&](PGconn* c, bool retried) {
            using detail::pg::exec;
            exec(c, "BEGIN");
            detail::pg::Params p;
            p.i64(seq);
            detail::pg::Result r = exec(
                c, "SELECT attempts, redrives FROM " + t_ + " WHERE seq = $1::int8 FOR UPDATE", p);
            const bool here = detail::pg::rows(r.get()) == 1;
            if (retried && (!here || detail::pg::i64(r.get(), 0, 1) != redrives)) {
                exec(c, "COMMIT");
                return 0;
            }
            if (here) {
                std::vector<DeadLetterAttempt> history =
                    decode_attempts(detail::pg::bytes(r.get(), 0, 0));
                history.push_back(attempt);
                detail::trim_attempts(history, limits_.max_attempts);
                const std::string blob = encode_attempts(history);
                detail::pg::Params u;
                u.i64(seq).bytes(blob).i64(detail::pg::ticks(attempt.at));
                exec(c,
                     "UPDATE " + t_ + " SET status = " + (resent ? "1" : "status") +
                         ", redrives = redrives + 1, attempts = $2, last_attempt = $3::int8"
                         " WHERE seq = $1::int8",
                     u);
            }
            exec(c,
                 "UPDATE " + counters_ + " SET " +
                     (resent ? "resent = resent + 1" : "redrive_failures = redrive_failures + 1"));
            exec(c, "COMMIT");
            return 0;
        });
    }

    const PostgresDeadLetterStoreOptions options_;
    const DeadLetterLimits limits_;
    Clock* const clock_;
    mutable detail::pg::Database db_;
    const std::string t_;
    const std::string counters_;
    const std::string ops_;
    const std::uint64_t id_seed_;
    const std::array<std::uint64_t, 2> op_key_;
    std::atomic<std::uint64_t> ops_started_{0};
    std::atomic<std::uint64_t> next_id_{0};
    std::atomic<bool> reprocessing_{false};
    std::atomic<std::uint64_t> duplicate_adds_{0};
    std::atomic<std::uint64_t> rejected_full_{0};
    std::atomic<std::uint64_t> rejected_too_large_{0};
};

}  // namespace bulwark

#endif  // BULWARK_POSTGRES_DEAD_LETTER_STORE_HPP
