// Failed-message fixers: FixStrategy, FixRegistry, FixOrchestrator (bulk fix, log, alerts).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FIX_STRATEGY_HPP
#define BULWARK_FIX_STRATEGY_HPP

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/config.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/error_classifier.hpp>
#include <bulwark/events.hpp>
#include <bulwark/metrics.hpp>
#include <bulwark/metrics_writer.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// What one fix did. success: the cause is dealt with (redriven if the result asks for it);
// partial: part of it is, the letter may be redriven and still need an operator; failed: the
// fixer could not fix it (or threw, or its redrive was refused); skipped: the fixer decided the
// letter is not its business.
enum class FixOutcome : std::uint8_t { success, partial, failed, skipped };

inline constexpr std::size_t fix_outcome_count = 4;

inline const char* to_string(FixOutcome outcome) noexcept {
    switch (outcome) {
        case FixOutcome::success:
            return "success";
        case FixOutcome::partial:
            return "partial";
        case FixOutcome::failed:
            return "failed";
        case FixOutcome::skipped:
            return "skipped";
    }
    return "unknown";
}

// What a fixer returns: the outcome, a message for operators, and what should happen next.
//   return bulwark::FixResult::success("template fixed").via({"email"}).after(5s);
//   return bulwark::FixResult::annotate("needs a new API key", {"needs-credentials"});
// A new payload is not a field: fix() edits the DeadLetter it is given, and the orchestrator
// hands that edited copy to the redrive (see FixOrchestrator::Redrive). A plain value
// (thread-compatible).
struct FixResult {
    FixOutcome outcome = FixOutcome::success;
    std::string message;
    // Forced channels for the redrive; empty = the letter's original route.
    std::vector<std::string> route;
    // How long to wait before the redrive (the orchestrator waits on its clock). Default none.
    Duration delay{0};
    // Whether a success or partial is redriven; false = annotate only (tags, log entry).
    bool redrive = true;
    // Labels added to the stored letter (DeadLetterStore::categorize, keeping its category).
    std::vector<std::string> tags;
    // Set by the orchestrator, whatever the fixer wrote: whether fix() changed the payload.
    bool payload_changed = false;

    static FixResult success(std::string message = {}) {
        return make(FixOutcome::success, std::move(message));
    }
    static FixResult partial(std::string message = {}) {
        return make(FixOutcome::partial, std::move(message));
    }
    static FixResult failed(std::string message = {}) {
        return make(FixOutcome::failed, std::move(message));
    }
    static FixResult skipped(std::string message = {}) {
        return make(FixOutcome::skipped, std::move(message));
    }
    // A success that only annotates the letter: no redrive.
    static FixResult annotate(std::string message, std::vector<std::string> tags = {}) {
        FixResult r = make(FixOutcome::success, std::move(message));
        r.redrive = false;
        r.tags = std::move(tags);
        return r;
    }

    FixResult& via(std::vector<std::string> channels) & {
        route = std::move(channels);
        return *this;
    }
    FixResult via(std::vector<std::string> channels) && {
        return std::move(via(std::move(channels)));
    }
    FixResult& after(Duration d) & {
        delay = d;
        return *this;
    }
    FixResult after(Duration d) && { return std::move(after(d)); }
    FixResult& tag(std::string label) & {
        tags.push_back(std::move(label));
        return *this;
    }
    FixResult tag(std::string label) && { return std::move(tag(std::move(label))); }

private:
    static FixResult make(FixOutcome outcome, std::string message) {
        FixResult r;
        r.outcome = outcome;
        r.message = std::move(message);
        return r;
    }
};

// What a fixer is told about the letter it fixes and the run it is part of.
struct FixContext {
    std::string operator_name;      // who asked for the bulk fix
    Classification classification;  // the letter's error class (ErrorClassifier)
    WallTime at{};                  // when the fix started, on the orchestrator's clock
};

// A fix for one kind of failure: registered in a FixRegistry for the error classes it fixes.
//   class RenewToken : public bulwark::FixStrategy {
//       std::string id() const override { return "renew-token"; }
//       bulwark::FixResult fix(bulwark::DeadLetter& d, const bulwark::FixContext&) override {...}
//   };
// fix() gets a copy of the letter: it may edit the payload (the redrive receives the edited
// copy) and returns what to do. It may throw: the orchestrator records a failed outcome with the
// exception's text. Thread-safety: one orchestrator calls a fixer from one thread at a time;
// a fixer shared by several orchestrators must be thread-safe.
class FixStrategy {
public:
    virtual ~FixStrategy() = default;

    // A stable name: the registry refuses two fixer objects with one id; logs and alerts use it.
    virtual std::string id() const = 0;

    // Whether this fixer takes a letter of this classification. The registry offers a fixer
    // only letters of the error classes it was registered for; the default accepts all of them.
    // Override to narrow (a severity, a channel); a refusal counts as skipped.
    virtual bool handles(const Classification& classification) const {
        static_cast<void>(classification);
        return true;
    }

    virtual FixResult fix(DeadLetter& letter, const FixContext& context) = 0;

protected:
    FixStrategy() = default;
    FixStrategy(const FixStrategy&) = default;
    FixStrategy(FixStrategy&&) = default;
    FixStrategy& operator=(const FixStrategy&) = default;
    FixStrategy& operator=(FixStrategy&&) = default;
};

// Which fixer fixes which error class: several classes per fixer, one fixer per class.
//   bulwark::FixRegistry registry;
//   registry.add(std::make_shared<RenewToken>(), {"expired_token", "invalid_token"});
//   std::shared_ptr<bulwark::FixStrategy> f = registry.find(classification);
// Thread-safe: add() and find() may run concurrently; find() returns a shared_ptr, so a fixer
// stays alive while it runs whatever the registry does.
class FixRegistry {
public:
    FixRegistry() = default;
    FixRegistry(const FixRegistry&) = delete;
    FixRegistry& operator=(const FixRegistry&) = delete;

    // Registers `fixer` for `classes`. Throws std::invalid_argument, and changes nothing, for a
    // null fixer, an empty id, no class or an empty class name, a class that already has a fixer
    // (naming the class and both fixer ids), or another fixer object already registered with
    // the same id.
    FixRegistry& add(const std::shared_ptr<FixStrategy>& fixer,
                     const std::vector<std::string>& classes) {
        if (!fixer) {
            detail::throw_invalid_argument("bulwark::FixRegistry::add: the fixer is null");
        }
        const std::string id = fixer->id();
        if (id.empty()) {
            detail::throw_invalid_argument("bulwark::FixRegistry::add: the fixer's id() is empty");
        }
        if (classes.empty()) {
            detail::throw_invalid_argument("bulwark::FixRegistry::add: fixer \"" + id +
                                           "\" is registered for no error class");
        }
        detail::LockGuard<detail::Mutex> lock(mutex_);
        for (const auto& [name, other] : by_class_) {
            if (other.fixer != fixer && other.id == id) {
                std::string message = "bulwark::FixRegistry::add: another fixer with id \"";
                message.append(id).append("\" is already registered (for \"");
                message.append(name).append("\")");
                detail::throw_invalid_argument(message);
            }
        }
        for (auto c = classes.begin(); c != classes.end(); ++c) {
            if (c->empty()) {
                detail::throw_invalid_argument("bulwark::FixRegistry::add: fixer \"" + id +
                                               "\" names an empty error class");
            }
            const auto it = by_class_.find(*c);
            if (it != by_class_.end() || std::find(classes.begin(), c, *c) != c) {
                std::string message = "bulwark::FixRegistry::add: error class \"";
                message.append(*c).append("\" already has the fixer \"");
                message.append(it != by_class_.end() ? it->second.id : id);
                message.append("\"; refusing \"").append(id).append("\"");
                detail::throw_invalid_argument(message);
            }
        }
        for (const std::string& c : classes) {
            by_class_.emplace(c, Entry{fixer, id});
        }
        return *this;
    }

    // The fixer registered for the classification's class that handles() it, or null.
    std::shared_ptr<FixStrategy> find(const Classification& classification) const {
        std::shared_ptr<FixStrategy> fixer = fixer_for(classification.error_class.name);
        if (fixer && !fixer->handles(classification)) {
            return nullptr;
        }
        return fixer;
    }

    // The fixer registered for the class `name`, or null.
    std::shared_ptr<FixStrategy> fixer_for(std::string_view name) const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        const auto it = by_class_.find(name);
        return it != by_class_.end() ? it->second.fixer : nullptr;
    }

    // Every registered class and the id of its fixer.
    std::map<std::string, std::string> assignments() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        std::map<std::string, std::string> out;
        for (const auto& [name, entry] : by_class_) {
            out.emplace(name, entry.id);
        }
        return out;
    }

private:
    // The id is read once, at add(): no fixer code runs under the registry's lock.
    struct Entry {
        std::shared_ptr<FixStrategy> fixer;
        std::string id;
    };

    mutable detail::Mutex mutex_;
    std::map<std::string, Entry, std::less<>> by_class_ BULWARK_GUARDED_BY(mutex_);
};

// One fixer execution, as the log keeps it.
struct FixExecution {
    std::string fixer_id;
    WallTime at{};  // when it started (the orchestrator's Clock::wall_now())
    std::string operator_name;
    std::string dead_letter_id;
    std::string message_id;  // the letter's "message:<id>" tag (DeliveryEngine's), else empty
    FixOutcome outcome = FixOutcome::success;
    Duration duration{0};  // fix() alone, on the orchestrator's clock (not the redrive)
    std::string note;      // the result's message, or the exception's text
};

// Selects log entries: every filter set must hold.
//   log.query({"renew-token", bulwark::FixOutcome::failed, since, {}});
struct FixLogQuery {
    std::string fixer_id;               // empty = any fixer
    std::optional<FixOutcome> outcome;  // none = any outcome
    std::optional<WallTime> from;       // at >= from
    std::optional<WallTime> to;         // at < to
};

// How bad a fixer's record is, by FixAlertThresholds.
enum class FixAlertLevel : std::uint8_t { ok, warning, critical };

inline const char* to_string(FixAlertLevel level) noexcept {
    switch (level) {
        case FixAlertLevel::ok:
            return "ok";
        case FixAlertLevel::warning:
            return "warning";
        case FixAlertLevel::critical:
            return "critical";
    }
    return "unknown";
}

// One fixer's record over the executions the log holds now.
struct FixerStats {
    std::string fixer_id;
    std::uint64_t executions = 0;                               // every outcome
    std::array<std::uint64_t, fix_outcome_count> by_outcome{};  // indexed by FixOutcome
    // success (failed) executions over the executions that were not skipped; 0 when none was.
    double success_rate = 0.0;
    double failure_rate = 0.0;
    Duration mean_duration{0};  // over every execution
    FixAlertLevel level = FixAlertLevel::ok;

    std::uint64_t count(FixOutcome outcome) const noexcept {
        const auto i = static_cast<std::size_t>(outcome);
        return i < by_outcome.size() ? by_outcome[i] : 0;
    }
};

// When a fixer's record raises an alert. A fixer with fewer than min_executions decided
// (not skipped) executions in the log is ok whatever its rates; its mean duration still counts.
//   bulwark::FixAlertThresholds t;  t.success_warning = 0.8;  t.validate();
// A plain value (thread-compatible).
struct FixAlertThresholds {
    double success_warning = 0.7;                           // success rate below this: warning
    double success_critical = 0.5;                          // below this: critical
    double failure_warning = 0.3;                           // failure rate above this: warning
    double failure_critical = 0.5;                          // above this: critical
    Duration duration_warning = std::chrono::seconds(30);   // mean duration above: warning
    Duration duration_critical = std::chrono::seconds(60);  // above: critical
    std::uint64_t min_executions = 10;  // decided executions before the rates count (>= 1)

    // Throws std::invalid_argument naming the field and its value: rates in [0, 1],
    // success_critical <= success_warning, failure_warning <= failure_critical, durations > 0
    // with duration_warning <= duration_critical, min_executions >= 1.
    void validate(std::string_view prefix = "FixAlertThresholds") const {
        const std::string p(prefix);
        check_rate(p + ".success_warning", success_warning);
        check_rate(p + ".success_critical", success_critical);
        check_rate(p + ".failure_warning", failure_warning);
        check_rate(p + ".failure_critical", failure_critical);
        if (success_critical > success_warning) {
            detail::throw_invalid_option(
                p + ".success_critical",
                "must be <= success_warning (" + detail::format_number(success_warning) + ")",
                detail::format_number(success_critical));
        }
        if (failure_critical < failure_warning) {
            detail::throw_invalid_option(
                p + ".failure_critical",
                "must be >= failure_warning (" + detail::format_number(failure_warning) + ")",
                detail::format_number(failure_critical));
        }
        if (duration_warning <= Duration::zero()) {
            detail::throw_invalid_option(p + ".duration_warning", "must be > 0",
                                         detail::format_duration(duration_warning));
        }
        if (duration_critical < duration_warning) {
            detail::throw_invalid_option(
                p + ".duration_critical",
                "must be >= duration_warning (" + detail::format_duration(duration_warning) + ")",
                detail::format_duration(duration_critical));
        }
        if (min_executions < 1) {
            detail::throw_invalid_option(p + ".min_executions", "must be >= 1", "0");
        }
    }

    // The level `stats` deserves: the worst of its success rate, failure rate and mean duration.
    FixAlertLevel evaluate(const FixerStats& stats) const noexcept {
        FixAlertLevel level = FixAlertLevel::ok;
        const auto raise = [&level](FixAlertLevel l) {
            if (l > level) {
                level = l;
            }
        };
        if (stats.executions - stats.count(FixOutcome::skipped) >= min_executions) {
            if (stats.success_rate < success_critical || stats.failure_rate > failure_critical) {
                raise(FixAlertLevel::critical);
            } else if (stats.success_rate < success_warning ||
                       stats.failure_rate > failure_warning) {
                raise(FixAlertLevel::warning);
            }
        }
        if (stats.executions > 0) {
            if (stats.mean_duration > duration_critical) {
                raise(FixAlertLevel::critical);
            } else if (stats.mean_duration > duration_warning) {
                raise(FixAlertLevel::warning);
            }
        }
        return level;
    }

private:
    static void check_rate(const std::string& field, double value) {
        if (!(value >= 0.0 && value <= 1.0)) {  // NaN fails too
            detail::throw_invalid_option(field, "must be in [0, 1]", detail::format_number(value));
        }
    }
};

// A fixer's alert level changed (FixOrchestrator::on_alert).
struct FixAlert {
    std::string fixer_id;
    FixAlertLevel from = FixAlertLevel::ok;
    FixAlertLevel to = FixAlertLevel::ok;
    FixerStats stats;  // the record that moved it
};

// The execution log: every fixer execution, newest last, at most max_entries of them; when
// full, the oldest entry is dropped for each new one (and counted in dropped()). Per-fixer
// totals follow what the log holds, so statistics cover the same window as queries.
//   bulwark::FixExecutionLog log(1000);
//   log.query({"renew-token", bulwark::FixOutcome::failed, {}, {}});
// Thread-safe (one mutex; query() copies the matches under it).
class FixExecutionLog {
public:
    // Throws std::invalid_argument for max_entries 0.
    explicit FixExecutionLog(std::size_t max_entries = 10000) : max_entries_(max_entries) {
        if (max_entries == 0) {
            detail::throw_invalid_option("FixExecutionLog max_entries", "must be >= 1", "0");
        }
    }
    FixExecutionLog(const FixExecutionLog&) = delete;
    FixExecutionLog& operator=(const FixExecutionLog&) = delete;

    // Appends `execution` (dropping the oldest entry when full) and returns its fixer's
    // statistics after it (level ok: levels are the orchestrator's business).
    FixerStats record(FixExecution execution) {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        if (entries_.size() == max_entries_) {
            const FixExecution& oldest = entries_.front();
            Totals& t = totals_[oldest.fixer_id];
            --t.by_outcome[index(oldest.outcome)];
            t.total_duration -= oldest.duration;
            entries_.pop_front();
            ++dropped_;
        }
        Totals& t = totals_[execution.fixer_id];
        ++t.by_outcome[index(execution.outcome)];
        t.total_duration += execution.duration;
        std::string id = execution.fixer_id;
        entries_.push_back(std::move(execution));
        return make_stats(std::move(id), t);
    }

    // Copies of the matching entries, oldest first.
    std::vector<FixExecution> query(const FixLogQuery& q = {}) const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        std::vector<FixExecution> out;
        for (const FixExecution& e : entries_) {
            if ((q.fixer_id.empty() || e.fixer_id == q.fixer_id) &&
                (!q.outcome || e.outcome == *q.outcome) && (!q.from || e.at >= *q.from) &&
                (!q.to || e.at < *q.to)) {
                out.push_back(e);
            }
        }
        return out;
    }

    // The statistics of one fixer (zero counts when the log holds none of its executions).
    FixerStats stats(std::string_view fixer_id) const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        const auto it = totals_.find(fixer_id);
        return it != totals_.end() ? make_stats(it->first, it->second)
                                   : make_stats(std::string(fixer_id), Totals{});
    }

    // The statistics of every fixer the log has seen, by id (a fixer whose entries were all
    // dropped stays, at zero).
    std::vector<FixerStats> stats() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        std::vector<FixerStats> out;
        for (const auto& [id, t] : totals_) {
            out.push_back(make_stats(id, t));
        }
        return out;
    }

    std::size_t size() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return entries_.size();
    }
    std::size_t max_entries() const noexcept { return max_entries_; }
    // Entries dropped to make room since the log was made.
    std::uint64_t dropped() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return dropped_;
    }

private:
    struct Totals {
        std::array<std::uint64_t, fix_outcome_count> by_outcome{};
        Duration total_duration{0};
    };

    static std::size_t index(FixOutcome outcome) noexcept {
        const auto i = static_cast<std::size_t>(outcome);
        return i < fix_outcome_count ? i : static_cast<std::size_t>(FixOutcome::failed);
    }

    static FixerStats make_stats(std::string id, const Totals& t) {
        FixerStats s;
        s.fixer_id = std::move(id);
        s.by_outcome = t.by_outcome;
        for (const std::uint64_t n : t.by_outcome) {
            s.executions += n;
        }
        const std::uint64_t decided = s.executions - s.count(FixOutcome::skipped);
        if (decided > 0) {
            s.success_rate =
                static_cast<double>(s.count(FixOutcome::success)) / static_cast<double>(decided);
            s.failure_rate =
                static_cast<double>(s.count(FixOutcome::failed)) / static_cast<double>(decided);
        }
        if (s.executions > 0) {
            s.mean_duration = t.total_duration / static_cast<Duration::rep>(s.executions);
        }
        return s;
    }

    const std::size_t max_entries_;
    mutable detail::Mutex mutex_;
    std::deque<FixExecution> entries_ BULWARK_GUARDED_BY(mutex_);
    std::map<std::string, Totals, std::less<>> totals_ BULWARK_GUARDED_BY(mutex_);
    std::uint64_t dropped_ BULWARK_GUARDED_BY(mutex_) = 0;
};

// How a FixOrchestrator runs. An aggregate: set what differs, then validate() (the
// orchestrator's constructor calls it).
//   bulwark::FixOrchestratorOptions o;  o.max_fixes_per_second = 2;
struct FixOrchestratorOptions {
    // At most this many fixer executions per second, on the orchestrator's clock: the i-th
    // starts at least 1 / max_fixes_per_second after the one before (> 0, finite). Default 10.
    double max_fixes_per_second = 10.0;
    // Entries the execution log keeps (>= 1); the oldest is dropped first. Default 10000.
    std::size_t max_log_entries = 10000;
    // When a fixer's record raises an alert.
    FixAlertThresholds thresholds;

    // Throws std::invalid_argument naming the field and its value.
    void validate() const {
        if (!(max_fixes_per_second > 0.0) || !std::isfinite(max_fixes_per_second)) {
            detail::throw_invalid_option("FixOrchestratorOptions.max_fixes_per_second",
                                         "must be > 0 and finite",
                                         detail::format_number(max_fixes_per_second));
        }
        if (max_log_entries == 0) {
            detail::throw_invalid_option("FixOrchestratorOptions.max_log_entries", "must be >= 1",
                                         "0");
        }
        thresholds.validate("FixOrchestratorOptions.thresholds");
    }
};

// What bulk_fix() did to one letter.
struct LetterFix {
    std::string dead_letter_id;
    std::string error_class;  // from the classifier
    std::string fixer_id;     // empty when no fixer took it
    FixResult result;         // as recorded: a refused redrive turns it into failed
    bool redriven = false;    // the Redrive returned true
};

// What one bulk_fix() call did. matched = the sum of the counts = letters.size().
struct BulkFixResult {
    std::size_t matched = 0;
    std::array<std::size_t, fix_outcome_count> by_outcome{};  // indexed by FixOutcome
    std::size_t redriven = 0;
    std::vector<LetterFix> letters;  // in the order handled

    std::size_t count(FixOutcome outcome) const noexcept {
        const auto i = static_cast<std::size_t>(outcome);
        return i < by_outcome.size() ? by_outcome[i] : 0;
    }
};

// Fixes failed messages in bulk: classifies each pending dead letter a query selects, runs the
// fixer registered for its class, records the execution, and hands what was fixed to a Redrive.
//   bulwark::FixOrchestrator fixes(store, classifier, registry, bulwark::redrive_through(engine),
//                                  options, clock);
//   bulwark::BulkFixResult r = fixes.bulk_fix(bulwark::DeadLetterQuery{}.type("sms"), "alice");
//   fixes.log().query({...});  fixes.stats();  fixes.on_alert([](const bulwark::FixAlert& a) {});
// For each letter, in the order the store lists them (only those still pending at their turn):
//   - no fixer for its class (or the fixer's handles() refuses): skipped, "no fixer for <class>",
//     not an execution (nothing in the log);
//   - otherwise the fixer runs, at most max_fixes_per_second (the orchestrator sleeps on its
//     clock between executions); an exception is a failed outcome with its text, never escapes;
//   - the result's tags are added to the stored letter;
//   - a success or partial with redrive set goes to the Redrive, after the result's delay (a
//     sleep on the clock: it holds up the rest of the run), with the edited copy; false or a
//     throw turns the outcome into failed ("redrive refused" / "redrive failed: <what>");
//   - the execution is logged, and the fixer's alert level re-evaluated: a change is reported
//     to the on_alert listeners.
// Thread-safety: every member may be called from any thread; bulk_fix() calls run one at a
// time (a second waits), and call fixers, the store, the classifier, the Redrive and the alert
// listeners on the calling thread with no lock of the orchestrator held except that one: none
// of them may call bulk_fix() on the same orchestrator. store, classifier, registry and clock
// must outlive it.
class FixOrchestrator {
public:
    // Resends a fixed letter: `fixed` is the fixer's edited copy (its payload is the new one when
    // result.payload_changed), `result` says over which channels. True when it was resent.
    using Redrive = std::function<bool(const DeadLetter& fixed, const FixResult& result)>;

    // `redrive` may be empty: successes are then only annotated and logged. Throws
    // std::invalid_argument for invalid options.
    FixOrchestrator(DeadLetterStore& store, ErrorClassifier& classifier, FixRegistry& registry,
                    Redrive redrive = {}, const FixOrchestratorOptions& options = {},
                    Clock& clock = default_clock())
        : store_(store),
          classifier_(classifier),
          registry_(registry),
          redrive_(std::move(redrive)),
          options_(validated(options)),
          log_(options.max_log_entries),
          clock_(clock) {}

    FixOrchestrator(const FixOrchestrator&) = delete;
    FixOrchestrator& operator=(const FixOrchestrator&) = delete;

    // Fixes the pending matches of `query` (its status filter is replaced by pending; its limit
    // caps how many), on behalf of `operator_name`. See the class comment.
    BulkFixResult bulk_fix(const DeadLetterQuery& query, const std::string& operator_name) {
        detail::LockGuard<detail::Mutex> run(run_mutex_);
        DeadLetterQuery pending = query;
        pending.status(DeadLetterStatus::pending);
        BulkFixResult out;
        for (const DeadLetter& listed : store_.list(pending)) {
            std::optional<DeadLetter> now = store_.get(listed.id);
            if (!now || now->status != DeadLetterStatus::pending) {
                continue;  // dismissed or redriven by someone else meanwhile
            }
            LetterFix done = fix_one(std::move(*now), operator_name);
            ++out.matched;
            ++out.by_outcome[static_cast<std::size_t>(done.result.outcome)];
            out.redriven += done.redriven ? 1 : 0;
            out.letters.push_back(std::move(done));
        }
        return out;
    }

    // The execution log.
    const FixExecutionLog& log() const noexcept { return log_; }

    // Every fixer's record over the log, with its alert level now.
    std::vector<FixerStats> stats() const {
        std::vector<FixerStats> out = log_.stats();
        for (FixerStats& s : out) {
            s.level = options_.thresholds.evaluate(s);
        }
        return out;
    }
    FixerStats stats(std::string_view fixer_id) const {
        FixerStats s = log_.stats(fixer_id);
        s.level = options_.thresholds.evaluate(s);
        return s;
    }

    // Called when a fixer's alert level changes (once per change), on the bulk_fix() thread.
    // Returns the id remove_listener() takes; throws std::invalid_argument for an empty one.
    ListenerId on_alert(std::function<void(const FixAlert&)> listener) {
        return alerts_.add(std::move(listener));
    }
    bool remove_listener(ListenerId id) noexcept { return alerts_.remove(id); }

    // Executions per fixer and outcome since the orchestrator was made (unlike the log, never
    // dropped): what to_prometheus() renders as counters.
    std::map<std::string, std::array<std::uint64_t, fix_outcome_count>> executions_total() const {
        detail::LockGuard<detail::Mutex> lock(totals_mutex_);
        return {executions_total_.begin(), executions_total_.end()};
    }

    const FixOrchestratorOptions& options() const noexcept { return options_; }

private:
    static const FixOrchestratorOptions& validated(const FixOrchestratorOptions& options) {
        options.validate();
        return options;
    }

    static std::string message_id_of(const DeadLetter& letter) {
        for (const std::string& tag : letter.tags) {
            if (tag.rfind("message:", 0) == 0) {
                return tag.substr(8);
            }
        }
        return {};
    }

    LetterFix fix_one(DeadLetter letter, const std::string& operator_name)
        BULWARK_REQUIRES(run_mutex_) {
        LetterFix done;
        done.dead_letter_id = letter.id;
        FixContext context;
        context.operator_name = operator_name;
        context.classification = classifier_.classify(letter);
        done.error_class = context.classification.error_class.name;
        std::shared_ptr<FixStrategy> fixer = registry_.find(context.classification);
        if (!fixer) {
            done.result = FixResult::skipped("no fixer for " + done.error_class);
            return done;
        }
        done.fixer_id = fixer->id();

        // The rate limit: each execution starts at least one spacing after the one before.
        clock_.sleep_until(next_fix_);
        const TimePoint start = clock_.now();
        next_fix_ = detail::saturating_add(start, spacing());
        context.at = clock_.wall_now();

        const std::string original_payload = letter.payload;
        FixResult result;
        try {
            result = fixer->fix(letter, context);
            if (static_cast<std::size_t>(result.outcome) >= fix_outcome_count) {
                result = FixResult::failed("the fixer returned an invalid FixOutcome");
            }
        } catch (const std::exception& e) {
            result = FixResult::failed(e.what());
        } catch (...) {
            result = FixResult::failed("the fixer threw a non-std exception");
        }
        const Duration took = clock_.now() - start;
        result.payload_changed = letter.payload != original_payload;

        if (!result.tags.empty()) {
            try {
                store_.categorize(DeadLetterQuery{}.id(letter.id), letter.category, result.tags);
            } catch (const std::exception& e) {
                result.message += std::string(result.message.empty() ? "" : "; ") +
                                  "annotation failed: " + e.what();
            }
        }

        if (redrive_ && result.redrive &&
            (result.outcome == FixOutcome::success || result.outcome == FixOutcome::partial)) {
            if (result.delay > Duration::zero()) {
                clock_.sleep_for(result.delay);
            }
            try {
                done.redriven = redrive_(letter, result);
                if (!done.redriven) {
                    result.outcome = FixOutcome::failed;
                    result.message =
                        "redrive refused" + (result.message.empty() ? "" : ": " + result.message);
                }
            } catch (const std::exception& e) {
                result.outcome = FixOutcome::failed;
                result.message = std::string("redrive failed: ") + e.what();
            } catch (...) {
                result.outcome = FixOutcome::failed;
                result.message = "redrive failed: a non-std exception";
            }
        }

        FixExecution execution;
        execution.fixer_id = done.fixer_id;
        execution.at = context.at;
        execution.operator_name = operator_name;
        execution.dead_letter_id = letter.id;
        execution.message_id = message_id_of(letter);
        execution.outcome = result.outcome;
        execution.duration = took;
        execution.note = result.message;
        {
            detail::LockGuard<detail::Mutex> lock(totals_mutex_);
            ++executions_total_[done.fixer_id][static_cast<std::size_t>(result.outcome)];
        }
        FixerStats stats = log_.record(std::move(execution));
        stats.level = options_.thresholds.evaluate(stats);
        FixAlertLevel& level = levels_[done.fixer_id];
        if (level != stats.level) {
            FixAlert alert{done.fixer_id, level, stats.level, stats};
            level = stats.level;
            alerts_.emit(alert);
        }
        done.result = std::move(result);
        return done;
    }

    Duration spacing() const {
        return std::chrono::duration_cast<Duration>(
            std::chrono::duration<double>(1.0 / options_.max_fixes_per_second));
    }

    DeadLetterStore& store_;
    ErrorClassifier& classifier_;
    FixRegistry& registry_;
    const Redrive redrive_;
    const FixOrchestratorOptions options_;
    FixExecutionLog log_;
    Clock& clock_;
    Listeners<FixAlert> alerts_;
    // Held for a whole bulk_fix(): runs are serialized, and so is the state below.
    detail::Mutex run_mutex_;
    TimePoint next_fix_ BULWARK_GUARDED_BY(run_mutex_){};
    std::map<std::string, FixAlertLevel> levels_ BULWARK_GUARDED_BY(run_mutex_);
    // Read by scrapes while a run goes on: a lock of its own.
    mutable detail::Mutex totals_mutex_;
    std::map<std::string, std::array<std::uint64_t, fix_outcome_count>, std::less<>>
        executions_total_ BULWARK_GUARDED_BY(totals_mutex_);
};

namespace detail {

// to_prometheus(writer, orchestrator): labelled name="fixes" unless wrapped in metric_name().
// bulwark_fix_executions_total{name,fixer,outcome} (C, since construction),
// bulwark_fix_mean_duration_seconds{name,fixer} (G, over the log) and
// bulwark_fix_alert_level{name,fixer,level} (G, 1 for the current level). Reads the
// orchestrator's totals and its log's statistics, each under its own lock.
template <>
struct MetricsRenderer<FixOrchestrator> {
    static constexpr bool known = true;
    static constexpr bool needs_name = false;
    static constexpr bool accepts_name = true;
    template <class C>
    static std::string_view default_name(const C&) noexcept {
        return "fixes";
    }
    template <class C>
    static void write(MetricsWriter& w, const C& orchestrator, std::string_view name) {
        for (const auto& [fixer, counts] : orchestrator.executions_total()) {
            for (std::size_t i = 0; i < counts.size(); ++i) {
                w.add_counter("bulwark_fix_executions_total",
                              "Fixer executions since the orchestrator was made, by outcome.",
                              {{"name", name},
                               {"fixer", fixer},
                               {"outcome", to_string(static_cast<FixOutcome>(i))}},
                              counts[i]);
            }
        }
        for (const FixerStats& s : orchestrator.stats()) {
            const MetricLabels l{{"name", name}, {"fixer", s.fixer_id}};
            w.add_gauge("bulwark_fix_mean_duration_seconds",
                        "Mean duration of the fixer's fix() over the execution log.", l,
                        seconds(s.mean_duration));
            write_enum(w, "bulwark_fix_alert_level",
                       "The fixer's alert level: 1 for the current one.", l, "level", s.level,
                       FixAlertLevel::critical);
        }
    }
};

}  // namespace detail

// A Redrive through a DeliveryEngine (any type with reprocess_dead_letter(id, channels) and
// reprocess_dead_letter_with(id, payload, channels)): puts the letter's message back in the
// engine's queue (released at its redrive rate) over the result's channels, or its original
// route when there are none; with the fixer's edited payload when it changed one. The message
// keeps its id and history.
//   bulwark::FixOrchestrator fixes(store, classifier, registry, bulwark::redrive_through(engine));
// The engine must outlive the orchestrator; thread-safe as the engine is.
template <class Engine>
FixOrchestrator::Redrive redrive_through(Engine& engine) {
    return [&engine](const DeadLetter& fixed, const FixResult& result) -> bool {
        if (result.payload_changed) {
            return engine.reprocess_dead_letter_with(fixed.id, fixed.payload, result.route);
        }
        return engine.reprocess_dead_letter(fixed.id, result.route);
    };
}

// What a RedriveFixer does. An aggregate; the RedriveFixer constructor validates it.
struct RedriveFixerOptions {
    std::string id = "redrive";         // the fixer's id (not empty)
    std::vector<std::string> classes;   // the error classes it fixes (at least one)
    std::vector<std::string> channels;  // forced route; empty = the original route
    Duration delay{0};                  // wait before the redrive (>= 0)

    // Throws std::invalid_argument naming the field and its value.
    void validate() const {
        if (id.empty()) {
            detail::throw_invalid_option("RedriveFixerOptions.id", "must not be empty", "\"\"");
        }
        if (classes.empty()) {
            detail::throw_invalid_option("RedriveFixerOptions.classes",
                                         "must name at least one error class", "none");
        }
        for (const std::string& c : channels) {
            if (c.empty()) {
                detail::throw_invalid_option("RedriveFixerOptions.channels",
                                             "must not hold an empty channel", "\"\"");
            }
        }
        if (delay < Duration::zero()) {
            detail::throw_invalid_option("RedriveFixerOptions.delay", "must be >= 0",
                                         detail::format_duration(delay));
        }
    }
};

// The generic fix: "redrive it over another channel, after a delay". For its error classes it
// returns success with the forced channels and the delay, and tags the letter
// "fixed-by:<id>"; the payload is left alone.
//   bulwark::RedriveFixerOptions o;  o.classes = {"sms_outage"};  o.channels = {"email"};
//   auto fixer = std::make_shared<bulwark::RedriveFixer>(o);
//   registry.add(fixer, fixer->classes());
// Thread-safe (immutable after construction).
class RedriveFixer final : public FixStrategy {
public:
    explicit RedriveFixer(RedriveFixerOptions options) : options_(std::move(options)) {
        options_.validate();
    }

    std::string id() const override { return options_.id; }

    const std::vector<std::string>& classes() const noexcept { return options_.classes; }

    // Only its own classes, whichever registry it is in.
    bool handles(const Classification& classification) const override {
        return std::find(options_.classes.begin(), options_.classes.end(),
                         classification.error_class.name) != options_.classes.end();
    }

    FixResult fix(DeadLetter& letter, const FixContext& context) override {
        static_cast<void>(letter);
        std::string message = "redrive";
        if (!options_.channels.empty()) {
            message += " over";
            for (std::size_t i = 0; i < options_.channels.size(); ++i) {
                message += (i == 0 ? " " : ",") + options_.channels[i];
            }
        }
        if (options_.delay > Duration::zero()) {
            message += " after " + detail::format_duration(options_.delay);
        }
        message += " (" + context.classification.error_class.name + ")";
        FixResult r = FixResult::success(std::move(message));
        r.route = options_.channels;
        r.delay = options_.delay;
        r.tags.push_back("fixed-by:" + options_.id);
        return r;
    }

    const RedriveFixerOptions& options() const noexcept { return options_; }

private:
    RedriveFixerOptions options_;
};

}  // namespace bulwark

#endif  // BULWARK_FIX_STRATEGY_HPP
