// SqliteDeadLetterStore: a DeadLetterStore kept in one SQLite file (optional: needs SQLite 3).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_SQLITE_DEAD_LETTER_STORE_HPP
#define BULWARK_SQLITE_DEAD_LETTER_STORE_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/dead_letter_index.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/sqlite.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

struct SqliteDeadLetterStoreOptions {
    // Records held at most (counted across every connection to the file). When full, add()
    // evicts the oldest added record that is no longer pending; with none, it throws
    // DeadLetterStoreFullError. >= 1. Default 100000.
    std::size_t max_entries = 100000;
    // Larger payloads are refused with DeadLetterTooLargeError. In [1, 64 MiB]. Default 1 MiB.
    std::size_t max_payload_bytes = std::size_t{1} << 20U;
    // All the other strings of a record together (see InMemoryDeadLetterStoreOptions). In
    // [1, 64 MiB]. Default 64 KiB.
    std::size_t max_text_bytes = std::size_t{64} << 10U;
    // Attempt history kept per record (the newest). >= 1. Default 64.
    std::size_t max_attempts = 64;
    // What a commit waits for (see SqliteSynchronous: full survives a power cut, normal and off
    // trade that for speed). Default full.
    SqliteSynchronous synchronous = SqliteSynchronous::full;
    // How long an operation waits for another connection's write lock (another store object or
    // process on the same file) before it throws SqliteError (SQLITE_BUSY). In [0, 2^31) ms.
    // Default 5 s.
    std::chrono::milliseconds busy_timeout = std::chrono::seconds(5);

    void validate() const {
        constexpr std::size_t max_bytes = std::size_t{64} << 20U;
        if (max_entries == 0) {
            detail::throw_invalid_option("SqliteDeadLetterStoreOptions.max_entries", "must be >= 1",
                                         "0");
        }
        if (max_payload_bytes == 0 || max_payload_bytes > max_bytes) {
            detail::throw_invalid_option("SqliteDeadLetterStoreOptions.max_payload_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_payload_bytes));
        }
        if (max_text_bytes == 0 || max_text_bytes > max_bytes) {
            detail::throw_invalid_option("SqliteDeadLetterStoreOptions.max_text_bytes",
                                         "must be in [1, 67108864]",
                                         std::to_string(max_text_bytes));
        }
        if (max_attempts == 0) {
            detail::throw_invalid_option("SqliteDeadLetterStoreOptions.max_attempts",
                                         "must be >= 1", "0");
        }
        detail::check_enumerator(synchronous, SqliteSynchronous::off,
                                 "SqliteDeadLetterStoreOptions.synchronous", "SqliteSynchronous");
        detail::check_busy_timeout("SqliteDeadLetterStoreOptions.busy_timeout", busy_timeout);
    }
};

namespace detail {

// Schema of the "dead_letters" component, one entry per version (see migrate_schema). Records
// keep their add order in `seq` (AUTOINCREMENT: never reused, so a purged record's place is not
// taken); strings are TEXT holding their bytes as given (compared byte by byte), payloads and
// the attempt history BLOBs; tags have a table of their own, so
// that a tag filter and categorize() are SQL; `records` is kept by triggers, so that a full
// check does not count the table.
inline constexpr const char* sqlite_dead_letter_schema[] = {
    R"sql(
CREATE TABLE bulwark_dead_letters(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  payload BLOB NOT NULL,
  error TEXT NOT NULL,
  reason INTEGER NOT NULL CHECK (reason BETWEEN 0 AND 5),
  category TEXT NOT NULL,
  attempts BLOB NOT NULL,
  created INTEGER NOT NULL,
  last_attempt INTEGER NOT NULL,
  status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 2),
  redrives INTEGER NOT NULL,
  note TEXT NOT NULL);
CREATE INDEX bulwark_dead_letters_type ON bulwark_dead_letters(type);
CREATE INDEX bulwark_dead_letters_created ON bulwark_dead_letters(created);
CREATE INDEX bulwark_dead_letters_pending ON bulwark_dead_letters(seq) WHERE status = 0;
CREATE INDEX bulwark_dead_letters_resolved ON bulwark_dead_letters(seq) WHERE status <> 0;
CREATE TABLE bulwark_dead_letter_tags(
  seq INTEGER NOT NULL REFERENCES bulwark_dead_letters(seq) ON DELETE CASCADE,
  pos INTEGER NOT NULL,
  tag TEXT NOT NULL,
  PRIMARY KEY (seq, pos)) WITHOUT ROWID;
CREATE INDEX bulwark_dead_letter_tags_tag ON bulwark_dead_letter_tags(tag, seq);
CREATE TABLE bulwark_dead_letter_counters(
  one INTEGER PRIMARY KEY CHECK (one = 1),
  records INTEGER NOT NULL,
  added INTEGER NOT NULL,
  evicted INTEGER NOT NULL,
  purged INTEGER NOT NULL,
  resent INTEGER NOT NULL,
  redrive_failures INTEGER NOT NULL);
INSERT INTO bulwark_dead_letter_counters VALUES (1, 0, 0, 0, 0, 0, 0);
CREATE TRIGGER bulwark_dead_letters_inserted AFTER INSERT ON bulwark_dead_letters
BEGIN UPDATE bulwark_dead_letter_counters SET records = records + 1; END;
CREATE TRIGGER bulwark_dead_letters_deleted AFTER DELETE ON bulwark_dead_letters
BEGIN UPDATE bulwark_dead_letter_counters SET records = records - 1; END;
)sql",
};

// A parameter of a generated statement: an integer or bytes.
struct SqlParam {
    bool is_int = false;
    std::int64_t i = 0;
    std::string s;
};

inline void bind_params(SqliteStatement& st, int first, const std::vector<SqlParam>& params) {
    int at = first;
    for (const SqlParam& p : params) {
        if (p.is_int) {
            st.bind(at++, p.i);
        } else {
            st.bind(at++, std::string_view(p.s));
        }
    }
}

// A DeadLetterQuery as SQL over `bulwark_dead_letters d`: " AND ..." per filter set (every
// filter is expressible), with its parameters in order.
inline std::string dead_letter_filter(const DeadLetterQuery& q, std::vector<SqlParam>& params) {
    std::string sql;
    const auto text = [&](const char* clause, const std::string& value) {
        sql += clause;
        params.push_back(SqlParam{false, 0, value});
    };
    const auto number = [&](const char* clause, std::int64_t value) {
        sql += clause;
        params.push_back(SqlParam{true, value, {}});
    };
    if (const std::string* id = q.id_filter()) {
        text(" AND d.id = ?", *id);
    }
    if (const std::string* type = q.type_filter()) {
        text(" AND d.type = ?", *type);
    }
    if (const auto status = q.status_filter()) {
        number(" AND d.status = ?", static_cast<std::int64_t>(*status));
    }
    if (const auto reason = q.reason_filter()) {
        number(" AND d.reason = ?", static_cast<std::int64_t>(*reason));
    }
    if (const std::string* category = q.category_filter()) {
        text(" AND d.category = ?", *category);
    }
    if (const auto before = q.created_before_filter()) {
        number(" AND d.created < ?", to_sql(*before));
    }
    if (const auto after = q.created_after_filter()) {
        number(" AND d.created > ?", to_sql(*after));
    }
    for (const std::string& tag : q.tag_filters()) {
        text(
            " AND EXISTS (SELECT 1 FROM bulwark_dead_letter_tags t WHERE t.tag = ? AND t.seq = "
            "d.seq)",
            tag);
    }
    return sql;
}

// The attempt history as one BLOB: per attempt, its time (8 bytes) and its channel and error
// (4-byte length, then the bytes), little-endian.
inline std::string encode_attempts(const std::vector<DeadLetterAttempt>& attempts) {
    std::string out;
    const auto put = [&out](std::uint64_t v, int bytes) {
        for (int i = 0; i < bytes; ++i) {
            out.push_back(static_cast<char>((v >> (8U * static_cast<unsigned>(i))) & 0xffU));
        }
    };
    for (const DeadLetterAttempt& a : attempts) {
        put(static_cast<std::uint64_t>(to_sql(a.at)), 8);
        put(a.channel.size(), 4);
        out += a.channel;
        put(a.error.size(), 4);
        out += a.error;
    }
    return out;
}

[[noreturn]] BULWARK_NOINLINE inline void throw_corrupt_record(const char* what) {
    throw SqliteError(
        std::string("bulwark SQLite store: a stored dead letter is damaged (") + what + ")",
        SQLITE_CORRUPT);
}

inline std::vector<DeadLetterAttempt> decode_attempts(std::string_view in) {
    std::vector<DeadLetterAttempt> out;
    std::size_t at = 0;
    const auto get = [&](int bytes) {
        if (in.size() - at < static_cast<std::size_t>(bytes)) {
            throw_corrupt_record("attempt history");
        }
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) {
            v |= std::uint64_t{static_cast<unsigned char>(in[at++])}
                 << (8U * static_cast<unsigned>(i));
        }
        return v;
    };
    const auto text = [&] {
        const auto n = static_cast<std::size_t>(get(4));
        if (in.size() - at < n) {
            throw_corrupt_record("attempt history");
        }
        std::string s(in.substr(at, n));
        at += n;
        return s;
    };
    while (at < in.size()) {
        DeadLetterAttempt a;
        a.at = wall_from_sql(static_cast<std::int64_t>(get(8)));
        a.channel = text();
        a.error = text();
        out.push_back(std::move(a));
    }
    return out;
}

}  // namespace detail

// A DeadLetterStore in one SQLite file (WAL mode): every acknowledged change is committed, and
// with synchronous=full (the default) survives a power cut; the records, their order and the
// "since the store was made" counters (added, evicted, purged, resent, redrive_failures) outlive
// the process. Several store objects, in one process or many, may open the same file: each is a
// connection, they see each other's writes, and writes are serialised by SQLite's lock (see
// busy_timeout). duplicate_adds and the rejected_* counts are this object's, since it was opened.
//   bulwark::SqliteDeadLetterStore dlq("/var/lib/app/dead_letters.db");
//   dlq.add(letter);  dlq.dismiss(bulwark::DeadLetterQuery{}.type("sms"), "provider retired");
// dismiss, categorize and purge are one transaction of set-based statements each; reprocess
// chooses its batch in one query and records each outcome in its own transaction. Thread-safe:
// one mutex serialises this object's connection and is never held while a reprocess handler runs.
// reprocess runs once at a time per store object. Throws SqliteError when SQLite fails (the file
// is not a database, is damaged, holds a newer schema, stays locked past busy_timeout).
// Needs the bulwark::sqlite CMake target (SQLite 3.22+); not included by <bulwark/bulwark.hpp>.
class SqliteDeadLetterStore : public DeadLetterStore {
public:
    // Opens `path`, creating the file and its schema when absent. Throws std::invalid_argument
    // for invalid options, SqliteError when the file cannot be used. The clock must outlive the
    // store.
    explicit SqliteDeadLetterStore(const std::string& path,
                                   const SqliteDeadLetterStoreOptions& options = {},
                                   Clock& clock = default_clock())
        : options_(checked(options)),
          limits_{options.max_entries, options.max_payload_bytes, options.max_attempts,
                  options.max_text_bytes},
          clock_(&clock),
          id_seed_(detail::dead_letter_id_seed(this)),
          db_(path, options.synchronous, options.busy_timeout) {
        detail::LockGuard lock(mutex_);
        detail::migrate_schema(db_, "dead_letters", detail::sqlite_dead_letter_schema);
        db_.exec("CREATE TEMP TABLE IF NOT EXISTS bulwark_matched(seq INTEGER PRIMARY KEY)",
                 "create a temporary table");
    }

    const SqliteDeadLetterStoreOptions& options() const noexcept { return options_; }

    // The schema version this bulwark writes (see bulwark_schema_migrations in the file).
    static constexpr std::int64_t schema_version = 1;

protected:
    std::string do_add(DeadLetter letter) override {
        detail::LockGuard lock(mutex_);
        try {
            detail::prepare_dead_letter(letter, limits_, clock_->wall_now());
        } catch (const DeadLetterTooLargeError&) {
            ++rejected_too_large_;
            throw;
        }
        detail::SqliteTransaction tx(db_, true);
        if (!letter.id.empty() && contains(letter.id)) {
            ++duplicate_adds_;
            return letter.id;  // the transaction only read: its rollback loses nothing
        }
        const bool full = static_cast<std::uint64_t>(records()) >= limits_.max_entries;
        if (full && oldest_resolved() == 0) {
            ++rejected_full_;
            detail::throw_store_full(limits_.max_entries);
        }
        if (letter.id.empty()) {
            do {
                letter.id =
                    detail::format_dead_letter_id(detail::SplitMix64::at(id_seed_, next_id_++));
            } while (contains(letter.id));
        }
        insert(letter);
        std::int64_t evicted = 0;
        if (full) {
            // After the insert, as the in-memory store does: the new record is pending, so it is
            // never the one evicted.
            detail::StatementUse evict(
                db_.statement("DELETE FROM bulwark_dead_letters WHERE seq = (SELECT seq FROM "
                              "bulwark_dead_letters WHERE status <> 0 ORDER BY seq LIMIT 1)"));
            evict->step();
            evicted = db_.changes();
        }
        detail::StatementUse count(
            db_.statement("UPDATE bulwark_dead_letter_counters SET added = added + 1, evicted = "
                          "evicted + ?"));
        count->bind(1, evicted);
        count->step();
        tx.commit();
        return letter.id;
    }

    std::optional<DeadLetter> do_get(std::string_view id) const override {
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, false);  // one snapshot for the record and its tags
        detail::StatementUse q(db_.statement(get_sql));
        q->bind(1, id);
        if (!q->step()) {
            return std::nullopt;
        }
        DeadLetter d = read_record(*q);
        tx.commit();
        return d;
    }

    std::vector<DeadLetter> do_list(const DeadLetterQuery& query) const override {
        std::vector<DeadLetter> out;
        if (query.max_results() == 0) {
            return out;
        }
        std::vector<detail::SqlParam> params;
        const std::string sql = std::string(select_columns) + " WHERE 1" +
                                detail::dead_letter_filter(query, params) +
                                " ORDER BY d.seq LIMIT ?";
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, false);
        detail::StatementUse q(db_.statement(sql));
        detail::bind_params(*q, 1, params);
        q->bind(static_cast<int>(params.size()) + 1, detail::sql_limit(query.max_results()));
        while (q->step()) {
            out.push_back(read_record(*q));
        }
        tx.commit();
        return out;
    }

    std::size_t do_dismiss(const DeadLetterQuery& query, std::string_view note) override {
        if (query.max_results() == 0) {
            return 0;
        }
        std::vector<detail::SqlParam> params;
        const std::string sql =
            "UPDATE bulwark_dead_letters SET status = 2, note = ? WHERE seq IN (SELECT d.seq FROM "
            "bulwark_dead_letters d WHERE d.status = 0" +
            detail::dead_letter_filter(query, params) + " ORDER BY d.seq LIMIT ?)";
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, true);
        detail::StatementUse u(db_.statement(sql));
        u->bind(1, note);
        detail::bind_params(*u, 2, params);
        u->bind(static_cast<int>(params.size()) + 2, detail::sql_limit(query.max_results()));
        u->step();
        const auto changed = static_cast<std::size_t>(db_.changes());
        tx.commit();
        return changed;
    }

    std::size_t do_categorize(const DeadLetterQuery& query, std::string_view category,
                              const std::vector<std::string>& tags) override {
        if (query.max_results() == 0) {
            return 0;
        }
        std::vector<detail::SqlParam> params;
        const std::string select =
            "INSERT INTO temp.bulwark_matched SELECT d.seq FROM "
            "bulwark_dead_letters d WHERE 1" +
            detail::dead_letter_filter(query, params) + " ORDER BY d.seq LIMIT ?";
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, true);
        // The matches are fixed first: once recategorized, some may no longer match the query.
        db_.exec("DELETE FROM temp.bulwark_matched", "clear the matches");
        {
            detail::StatementUse s(db_.statement(select));
            detail::bind_params(*s, 1, params);
            s->bind(static_cast<int>(params.size()) + 1, detail::sql_limit(query.max_results()));
            s->step();
        }
        const auto matched = static_cast<std::size_t>(db_.changes());
        check_categorized_size(category, tags);
        {
            detail::StatementUse u(
                db_.statement("UPDATE bulwark_dead_letters SET category = ? WHERE seq IN (SELECT "
                              "seq FROM temp.bulwark_matched)"));
            u->bind(1, category);
            u->step();
        }
        // One statement per new tag, over every match: appended after the record's last tag
        // unless it already carries it.
        for (auto tag = tags.begin(); tag != tags.end(); ++tag) {
            if (std::find(tags.begin(), tag, *tag) != tag) {
                continue;  // given twice: added once
            }
            detail::StatementUse add(db_.statement(
                "INSERT INTO bulwark_dead_letter_tags(seq, pos, tag) SELECT m.seq, (SELECT "
                "COALESCE(MAX(t.pos) + 1, 0) FROM bulwark_dead_letter_tags t WHERE t.seq = "
                "m.seq), ?1 FROM temp.bulwark_matched m WHERE NOT EXISTS (SELECT 1 FROM "
                "bulwark_dead_letter_tags t WHERE t.seq = m.seq AND t.tag = ?1)"));
            add->bind(1, std::string_view(*tag));
            add->step();
        }
        tx.commit();
        return matched;
    }

    ReprocessResult do_reprocess(const DeadLetterQuery& query, const DeadLetterHandler& handler,
                                 const ReprocessOptions& options) override {
        if (!handler) {
            detail::throw_invalid_argument("bulwark::DeadLetterStore::reprocess: empty handler");
        }
        ReprocessResult result;
        std::vector<std::int64_t> batch;
        std::vector<detail::SqlParam> params;
        const std::string filter = detail::dead_letter_filter(query, params);
        {
            detail::LockGuard lock(mutex_);
            if (reprocessing_) {
                result.already_running = true;
                return result;
            }
            batch = select_redrive(query, filter, params, options.max_redrives, result);
            reprocessing_ = true;
        }
        // Clears the flag however the loop ends.
        struct Running {
            SqliteDeadLetterStore* self;
            ~Running() {
                detail::LockGuard lock(self->mutex_);
                self->reprocessing_ = false;
            }
        } running{this};

        const std::string find =
            std::string(select_columns) + " WHERE d.seq = ? AND d.status = 0" + filter;
        for (const std::int64_t seq : batch) {
            if (options.cancel != nullptr && options.cancel->cancelled()) {
                result.cancelled = true;
                break;
            }
            std::optional<DeadLetter> copy;
            {
                detail::LockGuard lock(mutex_);
                detail::SqliteTransaction tx(db_, false);
                detail::StatementUse q(db_.statement(find));
                q->bind(1, seq);
                detail::bind_params(*q, 2, params);
                if (q->step()) {
                    copy = read_record(*q);
                }
                tx.commit();
            }
            if (!copy) {
                ++result.skipped_changed;  // dismissed, recategorized or removed meanwhile
                continue;
            }
            detail::RedriveOutcome outcome = detail::run_redrive_handler(handler, *copy);
            const bool resent = outcome.resent;
            DeadLetterAttempt attempt{clock_->wall_now(), options.channel,
                                      std::move(outcome.error)};
            {
                detail::LockGuard lock(mutex_);
                record_outcome(seq, resent, attempt);
            }
            ++(resent ? result.resent : result.failed);
        }
        return result;
    }

    std::size_t do_purge(WallTime older_than) override {
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, true);
        {
            detail::StatementUse d(
                db_.statement("DELETE FROM bulwark_dead_letters WHERE created < ?"));
            d->bind(1, detail::to_sql(older_than));
            d->step();
        }
        const std::int64_t removed = db_.changes();
        {
            detail::StatementUse c(
                db_.statement("UPDATE bulwark_dead_letter_counters SET purged = purged + ?"));
            c->bind(1, removed);
            c->step();
        }
        tx.commit();
        return static_cast<std::size_t>(removed);
    }

    DeadLetterStats do_stats() const override {
        DeadLetterStats s;
        detail::LockGuard lock(mutex_);
        detail::SqliteTransaction tx(db_, false);  // one snapshot for the counts and counters
        {
            detail::StatementUse q(
                db_.statement("SELECT status, reason, type, category, COUNT(*) FROM "
                              "bulwark_dead_letters GROUP BY status, reason, type, category"));
            while (q->step()) {
                const std::int64_t status = q->int64(0);
                const std::int64_t reason = q->int64(1);
                if (status < 0 || status >= static_cast<std::int64_t>(dead_letter_status_count) ||
                    reason < 0 || reason >= static_cast<std::int64_t>(dead_letter_reason_count)) {
                    detail::throw_corrupt_record("status or reason out of range");
                }
                const auto n = static_cast<std::size_t>(q->int64(4));
                const std::string type = q->bytes(2);
                s.total += n;
                (status == 0 ? s.pending : status == 1 ? s.reprocessed : s.dismissed) += n;
                s.by_reason[static_cast<std::size_t>(reason)] += n;
                s.by_type[type] += n;
                s.by_category[q->bytes(3)] += n;
                s.by_type_and_reason[{type, static_cast<DeadLetterReason>(reason)}] += n;
            }
        }
        {
            detail::StatementUse c(
                db_.statement("SELECT added, evicted, purged, resent, redrive_failures FROM "
                              "bulwark_dead_letter_counters"));
            if (c->step()) {
                s.added = static_cast<std::uint64_t>(c->int64(0));
                s.evicted = static_cast<std::uint64_t>(c->int64(1));
                s.purged = static_cast<std::uint64_t>(c->int64(2));
                s.resent = static_cast<std::uint64_t>(c->int64(3));
                s.redrive_failures = static_cast<std::uint64_t>(c->int64(4));
            }
        }
        tx.commit();
        s.duplicate_adds = duplicate_adds_;
        s.rejected_full = rejected_full_;
        s.rejected_too_large = rejected_too_large_;
        return s;
    }

    std::size_t do_size() const override {
        detail::LockGuard lock(mutex_);
        return static_cast<std::size_t>(records());
    }

    DeadLetterLimits do_limits() const noexcept override { return limits_; }

private:
    static const SqliteDeadLetterStoreOptions& checked(const SqliteDeadLetterStoreOptions& o) {
        o.validate();
        return o;
    }

    // Columns 0..12 in read_record's order, over `bulwark_dead_letters d`.
    static constexpr const char* select_columns =
        "SELECT d.seq, d.id, d.type, d.payload, d.error, d.reason, d.category, d.attempts, "
        "d.created, d.last_attempt, d.status, d.redrives, d.note FROM bulwark_dead_letters d";
    static constexpr const char* get_sql =
        "SELECT d.seq, d.id, d.type, d.payload, d.error, d.reason, d.category, d.attempts, "
        "d.created, d.last_attempt, d.status, d.redrives, d.note FROM bulwark_dead_letters d "
        "WHERE d.id = ?";

    // The current row of a select_columns statement, with its tags.
    DeadLetter read_record(detail::SqliteStatement& q) const BULWARK_REQUIRES(mutex_) {
        DeadLetter d;
        const std::int64_t seq = q.int64(0);
        d.id = q.bytes(1);
        d.type = q.bytes(2);
        d.payload = q.bytes(3);
        d.error = q.bytes(4);
        const std::int64_t reason = q.int64(5);
        const std::int64_t status = q.int64(10);
        if (reason < 0 || reason >= static_cast<std::int64_t>(dead_letter_reason_count) ||
            status < 0 || status >= static_cast<std::int64_t>(dead_letter_status_count)) {
            detail::throw_corrupt_record("status or reason out of range");
        }
        d.reason = static_cast<DeadLetterReason>(reason);
        d.category = q.bytes(6);
        d.attempts = detail::decode_attempts(q.bytes(7));
        d.created = detail::wall_from_sql(q.int64(8));
        d.last_attempt = detail::wall_from_sql(q.int64(9));
        d.status = static_cast<DeadLetterStatus>(status);
        d.redrives = static_cast<std::uint32_t>(q.int64(11));
        d.note = q.bytes(12);
        detail::StatementUse t(
            db_.statement("SELECT tag FROM bulwark_dead_letter_tags WHERE seq = ? ORDER BY pos"));
        t->bind(1, seq);
        while (t->step()) {
            d.tags.push_back(t->bytes(0));
        }
        return d;
    }

    bool contains(std::string_view id) const BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(db_.statement("SELECT 1 FROM bulwark_dead_letters WHERE id = ?"));
        q->bind(1, id);
        return q->step();
    }

    std::int64_t records() const BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(db_.statement("SELECT records FROM bulwark_dead_letter_counters"));
        return q->step() ? q->int64(0) : 0;
    }

    // The seq of the oldest resolved record (the next to evict), or 0 (seqs start at 1).
    std::int64_t oldest_resolved() const BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(db_.statement(
            "SELECT seq FROM bulwark_dead_letters WHERE status <> 0 ORDER BY seq LIMIT 1"));
        return q->step() ? q->int64(0) : 0;
    }

    void insert(const DeadLetter& d) BULWARK_REQUIRES(mutex_) {
        std::int64_t seq = 0;
        {
            detail::StatementUse q(db_.statement(
                "INSERT INTO bulwark_dead_letters(id, type, payload, error, reason, category, "
                "attempts, created, last_attempt, status, redrives, note) VALUES (?, ?, ?, ?, ?, "
                "?, ?, ?, ?, 0, ?, ?)"));
            q->bind(1, std::string_view(d.id));
            q->bind(2, std::string_view(d.type));
            q->bind_blob(3, d.payload);
            q->bind(4, std::string_view(d.error));
            q->bind(5, static_cast<std::int64_t>(d.reason));
            q->bind(6, std::string_view(d.category));
            q->bind_blob(7, detail::encode_attempts(d.attempts));
            q->bind(8, detail::to_sql(d.created));
            q->bind(9, detail::to_sql(d.last_attempt));
            q->bind(10, static_cast<std::int64_t>(d.redrives));
            q->bind(11, std::string_view(d.note));
            q->step();
            seq = sqlite3_last_insert_rowid(db_.handle());
        }
        std::int64_t pos = 0;
        for (const std::string& tag : d.tags) {
            detail::StatementUse t(db_.statement(
                "INSERT INTO bulwark_dead_letter_tags(seq, pos, tag) VALUES (?, ?, ?)"));
            t->bind(1, seq);
            t->bind(2, pos++);
            t->bind(3, std::string_view(tag));
            t->step();
        }
    }

    // Refuses (throwing, before anything is written) a categorize that would take a match's
    // category and tags over max_text_bytes. Reads every match's tags in one query.
    void check_categorized_size(std::string_view category, const std::vector<std::string>& tags)
        BULWARK_REQUIRES(mutex_) {
        detail::StatementUse q(
            db_.statement("SELECT m.seq, t.tag FROM temp.bulwark_matched m LEFT JOIN "
                          "bulwark_dead_letter_tags t ON t.seq = m.seq ORDER BY m.seq, t.pos"));
        std::int64_t current = -1;
        std::vector<std::string> held;
        const auto check = [&] {
            const std::size_t text = detail::categorized_text_bytes(category, held, tags);
            if (text > limits_.max_text_bytes) {
                detail::throw_too_large("category and tags", "max_text_bytes", text,
                                        limits_.max_text_bytes);
            }
        };
        bool any = false;
        while (q->step()) {
            const std::int64_t seq = q->int64(0);
            if (any && seq != current) {
                check();
                held.clear();
            }
            any = true;
            current = seq;
            if (!q->is_null(1)) {
                held.push_back(q->bytes(1));
            }
        }
        if (any) {
            check();
        }
    }

    // The pending matches a reprocess hands over (see DeadLetterIndex::select_redrive): one
    // query, read in add order until the batch is full.
    std::vector<std::int64_t> select_redrive(const DeadLetterQuery& query,
                                             const std::string& filter,
                                             const std::vector<detail::SqlParam>& params,
                                             std::uint32_t max_redrives, ReprocessResult& result)
        BULWARK_REQUIRES(mutex_) {
        std::vector<std::int64_t> batch;
        const std::size_t limit = query.max_results();
        if (limit == 0) {
            return batch;
        }
        detail::SqliteTransaction tx(db_, false);
        detail::StatementUse q(
            db_.statement("SELECT d.seq, d.redrives FROM bulwark_dead_letters d WHERE d.status = "
                          "0" +
                          filter + " ORDER BY d.seq"));
        detail::bind_params(*q, 1, params);
        while (batch.size() < limit && q->step()) {
            ++result.matched;
            if (max_redrives != 0 && q->int64(1) >= static_cast<std::int64_t>(max_redrives)) {
                ++result.skipped_limit;
                continue;
            }
            batch.push_back(q->int64(0));
        }
        tx.commit();
        return batch;
    }

    // Records a handler's verdict on record `seq` (if it is still stored: a success wins over a
    // dismiss made meanwhile, as in the in-memory store) and counts it, in one transaction.
    void record_outcome(std::int64_t seq, bool resent, const DeadLetterAttempt& attempt)
        BULWARK_REQUIRES(mutex_) {
        detail::SqliteTransaction tx(db_, true);
        std::optional<std::string> history;
        {
            detail::StatementUse q(
                db_.statement("SELECT attempts FROM bulwark_dead_letters WHERE seq = ?"));
            q->bind(1, seq);
            if (q->step()) {
                history = q->bytes(0);
            }
        }
        if (history) {
            std::vector<DeadLetterAttempt> attempts = detail::decode_attempts(*history);
            attempts.push_back(attempt);
            detail::trim_attempts(attempts, limits_.max_attempts);
            detail::StatementUse u(db_.statement(
                "UPDATE bulwark_dead_letters SET status = CASE WHEN ? THEN 1 ELSE status END, "
                "redrives = redrives + 1, last_attempt = ?, attempts = ? WHERE seq = ?"));
            u->bind(1, std::int64_t{resent ? 1 : 0});
            u->bind(2, detail::to_sql(attempt.at));
            u->bind_blob(3, detail::encode_attempts(attempts));
            u->bind(4, seq);
            u->step();
        }
        detail::StatementUse c(
            db_.statement(resent ? "UPDATE bulwark_dead_letter_counters SET resent = resent + 1"
                                 : "UPDATE bulwark_dead_letter_counters SET redrive_failures = "
                                   "redrive_failures + 1"));
        c->step();
        tx.commit();
    }

    const SqliteDeadLetterStoreOptions options_;
    const DeadLetterLimits limits_;
    Clock* const clock_;
    const std::uint64_t id_seed_;

    mutable detail::Mutex mutex_;
    // The connection: its statements and transactions are this object's, one call at a time.
    mutable detail::SqliteConnection db_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t next_id_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t duplicate_adds_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_full_ BULWARK_GUARDED_BY(mutex_) = 0;
    std::uint64_t rejected_too_large_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool reprocessing_ BULWARK_GUARDED_BY(mutex_) = false;
};

}  // namespace bulwark

#endif  // BULWARK_SQLITE_DEAD_LETTER_STORE_HPP
