// Fixers: the registry's refusals, bulk fixes over a dead-letter store (fixed, skipped, thrown,
// partial), the rate limit, the execution log's bounds and queries, alert thresholds, their
// listeners and metrics, and RedriveFixer through a DeliveryEngine, all on a ManualClock.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <bulwark/delivery.hpp>
#include <bulwark/fix_strategy.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/metrics.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::BulkFixResult;
using bulwark::Classification;
using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterStatus;
using bulwark::FixAlert;
using bulwark::FixAlertLevel;
using bulwark::FixContext;
using bulwark::FixExecution;
using bulwark::FixExecutionLog;
using bulwark::FixLogQuery;
using bulwark::FixOrchestrator;
using bulwark::FixOrchestratorOptions;
using bulwark::FixOutcome;
using bulwark::FixRegistry;
using bulwark::FixResult;
using bulwark::FixStrategy;
using bulwark::ManualClock;

namespace {

// A fixer that returns what it is told to, optionally after taking `takes` on the clock, and
// counts its calls.
class ScriptedFixer : public FixStrategy {
public:
    ScriptedFixer(std::string id, FixResult result, ManualClock* clock = nullptr,
                  bulwark::Duration takes = {})
        : id_(std::move(id)), result_(std::move(result)), clock_(clock), takes_(takes) {}

    std::string id() const override { return id_; }

    FixResult fix(DeadLetter& letter, const FixContext& context) override {
        ++calls;
        last_operator = context.operator_name;
        last_class = context.classification.error_class.name;
        if (clock_ != nullptr) {
            clock_->advance(takes_);
        }
        if (!new_payload.empty()) {
            letter.payload = new_payload;
        }
        return result_;
    }

    int calls = 0;
    std::string last_operator;
    std::string last_class;
    std::string new_payload;

private:
    std::string id_;
    FixResult result_;
    ManualClock* clock_;
    bulwark::Duration takes_;
};

class ThrowingFixer : public FixStrategy {
public:
    std::string id() const override { return "thrower"; }
    FixResult fix(DeadLetter&, const FixContext&) override {
        throw std::runtime_error("template service down");
    }
};

bulwark::ErrorRule rule(std::string pattern, std::string name) {
    bulwark::ErrorRule r;
    r.pattern = std::move(pattern);
    r.error_class = {std::move(name), "ops", bulwark::ErrorSeverity::medium, {}};
    return r;
}

DeadLetter letter(std::string id, std::string error) {
    DeadLetter d;
    d.id = std::move(id);
    d.type = "sms";
    d.payload = "body-" + d.id;
    d.error = std::move(error);
    return d;
}

// Options that let every execution count toward the rates.
FixOrchestratorOptions eager() {
    FixOrchestratorOptions o;
    o.max_fixes_per_second = 1000;
    o.thresholds.min_executions = 1;
    return o;
}

}  // namespace

TEST_CASE("FixRegistry refuses a class registered twice, naming the class and both fixers",
          "[fix]") {
    FixRegistry registry;
    auto a = std::make_shared<ScriptedFixer>("renew-token", FixResult::success());
    auto b = std::make_shared<ScriptedFixer>("reset-template", FixResult::success());
    registry.add(a, {"expired_token", "invalid_token"});
    try {
        registry.add(b, {"bad_template", "invalid_token"});
        FAIL("no throw");
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        CHECK(what.find("\"invalid_token\"") != std::string::npos);
        CHECK(what.find("\"renew-token\"") != std::string::npos);
        CHECK(what.find("\"reset-template\"") != std::string::npos);
    }
    // Nothing of the refused registration was kept.
    CHECK(registry.fixer_for("bad_template") == nullptr);
    CHECK(registry.assignments().size() == 2);

    CHECK_THROWS_AS(registry.add(nullptr, {"x"}), std::invalid_argument);
    CHECK_THROWS_AS(registry.add(b, {}), std::invalid_argument);
    CHECK_THROWS_AS(registry.add(b, {""}), std::invalid_argument);
    CHECK_THROWS_AS(registry.add(b, {"c", "c"}), std::invalid_argument);
    auto impostor = std::make_shared<ScriptedFixer>("renew-token", FixResult::success());
    CHECK_THROWS_AS(registry.add(impostor, {"other"}), std::invalid_argument);
    auto nameless = std::make_shared<ScriptedFixer>("", FixResult::success());
    CHECK_THROWS_AS(registry.add(nameless, {"other"}), std::invalid_argument);

    registry.add(a, {"revoked_token"});  // the same fixer may take more classes
    CHECK(registry.fixer_for("revoked_token") == a);
    Classification c;
    c.error_class.name = "expired_token";
    CHECK(registry.find(c) == a);
}

TEST_CASE("FixOrchestratorOptions and thresholds refuse bad values, naming the field and value",
          "[fix]") {
    auto refused = [](const FixOrchestratorOptions& o) -> std::string {
        try {
            o.validate();
        } catch (const std::invalid_argument& e) {
            return e.what();
        }
        return "accepted";
    };
    FixOrchestratorOptions o;
    CHECK(refused(o) == "accepted");
    o.max_fixes_per_second = 0;
    CHECK(refused(o) ==
          "FixOrchestratorOptions.max_fixes_per_second must be > 0 and finite, got 0");
    o = {};
    o.thresholds.success_warning = 1.5;
    CHECK(refused(o) ==
          "FixOrchestratorOptions.thresholds.success_warning must be in [0, 1], got 1.5");
    o = {};
    o.thresholds.success_critical = 0.8;
    CHECK(refused(o).find("thresholds.success_critical must be <= success_warning") !=
          std::string::npos);
    o = {};
    o.thresholds.failure_critical = 0.2;
    CHECK(refused(o).find("thresholds.failure_critical") != std::string::npos);
    o = {};
    o.thresholds.duration_critical = 10s;
    CHECK(refused(o) ==
          "FixOrchestratorOptions.thresholds.duration_critical must be >= "
          "duration_warning (30s), got 10s");
    o = {};
    o.max_log_entries = 0;
    CHECK(refused(o).find("max_log_entries") != std::string::npos);
}

TEST_CASE("bulk_fix fixes what has a fixer, skips what has none, and records a throwing fixer",
          "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::ErrorClassifier classifier;
    classifier.add(rule("token expired", "expired_token"));
    classifier.add(rule("template", "bad_template"));
    classifier.add(rule("quota", "provider_quota"));
    classifier.add(rule("address", "bad_address"));

    FixRegistry registry;
    auto renew = std::make_shared<ScriptedFixer>(
        "renew-token", FixResult::success("token renewed").via({"email"}).tag("renewed"));
    auto partly =
        std::make_shared<ScriptedFixer>("trim-address", FixResult::partial("half the recipients"));
    registry.add(renew, {"expired_token"});
    registry.add(std::make_shared<ThrowingFixer>(), {"bad_template"});
    registry.add(partly, {"bad_address"});

    store.add(letter("a", "token expired"));
    store.add(letter("b", "template missing"));
    store.add(letter("c", "quota exceeded"));
    store.add(letter("d", "bad address"));
    store.add(letter("e", "token expired again"));
    DeadLetter done = letter("f", "token expired");
    store.add(done);
    store.dismiss(DeadLetterQuery{}.id("f"));  // not pending: not touched

    std::vector<std::pair<std::string, std::vector<std::string>>> redriven;
    FixOrchestrator fixes(
        store, classifier, registry,
        [&](const DeadLetter& d, const FixResult& r) {
            redriven.emplace_back(d.id, r.route);
            return true;
        },
        eager(), clock);
    const BulkFixResult r = fixes.bulk_fix(DeadLetterQuery{}, "alice");

    CHECK(r.matched == 5);
    CHECK(r.count(FixOutcome::success) == 2);
    CHECK(r.count(FixOutcome::partial) == 1);
    CHECK(r.count(FixOutcome::failed) == 1);
    CHECK(r.count(FixOutcome::skipped) == 1);
    CHECK(r.redriven == 3);
    REQUIRE(r.letters.size() == 5);
    CHECK(r.letters[1].result.outcome == FixOutcome::failed);
    CHECK(r.letters[1].result.message == "template service down");
    CHECK(r.letters[2].result.outcome == FixOutcome::skipped);
    CHECK(r.letters[2].result.message == "no fixer for provider_quota");
    CHECK(r.letters[2].fixer_id.empty());
    CHECK(r.letters[3].result.outcome == FixOutcome::partial);
    CHECK(renew->calls == 2);
    CHECK(renew->last_operator == "alice");
    CHECK(renew->last_class == "expired_token");

    const std::vector<std::pair<std::string, std::vector<std::string>>> expected{
        {"a", {"email"}}, {"d", {}}, {"e", {"email"}}};
    CHECK(redriven == expected);
    // The result's tags annotate the stored letter.
    const auto tags = store.get("a")->tags;
    CHECK(std::find(tags.begin(), tags.end(), "renewed") != tags.end());

    // Every execution is logged; the skipped letter is not an execution.
    const std::vector<FixExecution> log = fixes.log().query();
    REQUIRE(log.size() == 4);
    CHECK(log[1].fixer_id == "thrower");
    CHECK(log[1].outcome == FixOutcome::failed);
    CHECK(log[1].note == "template service down");
    CHECK(log[1].operator_name == "alice");
    CHECK(log[1].dead_letter_id == "b");
}

TEST_CASE("bulk_fix records a refused or throwing redrive as failed", "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::ErrorClassifier classifier;
    classifier.add(rule("timeout", "timeout"));
    FixRegistry registry;
    registry.add(std::make_shared<ScriptedFixer>("retry", FixResult::success("ok")), {"timeout"});
    store.add(letter("a", "timeout"));
    store.add(letter("b", "timeout"));
    int calls = 0;
    FixOrchestrator fixes(
        store, classifier, registry,
        [&](const DeadLetter&, const FixResult&) -> bool {
            if (++calls == 1) {
                return false;
            }
            throw std::runtime_error("queue stopped");
        },
        eager(), clock);
    const BulkFixResult r = fixes.bulk_fix(DeadLetterQuery{}, "bob");
    CHECK(r.count(FixOutcome::failed) == 2);
    CHECK(r.redriven == 0);
    CHECK(r.letters[0].result.message == "redrive refused: ok");
    CHECK(r.letters[1].result.message == "redrive failed: queue stopped");
    CHECK(fixes.log().query({"retry", FixOutcome::failed, {}, {}}).size() == 2);
}

TEST_CASE("an annotate-only result is logged and tagged but not redriven", "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::ErrorClassifier classifier;
    classifier.add(rule("key", "bad_key"));
    FixRegistry registry;
    registry.add(std::make_shared<ScriptedFixer>(
                     "flag", FixResult::annotate("needs a new key", {"needs-credentials"})),
                 {"bad_key"});
    store.add(letter("a", "invalid key"));
    int redrives = 0;
    FixOrchestrator fixes(
        store, classifier, registry,
        [&](const DeadLetter&, const FixResult&) { return ++redrives > 0; }, eager(), clock);
    const BulkFixResult r = fixes.bulk_fix(DeadLetterQuery{}, "carol");
    CHECK(r.count(FixOutcome::success) == 1);
    CHECK(redrives == 0);
    CHECK(store.get("a")->status == DeadLetterStatus::pending);
    CHECK(store.get("a")->tags == std::vector<std::string>{"needs-credentials"});
}

TEST_CASE("bulk_fix runs at most max_fixes_per_second on the clock", "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::ErrorClassifier classifier;
    classifier.add(rule("timeout", "timeout"));
    classifier.add(rule("quota", "quota"));
    FixRegistry registry;
    registry.add(std::make_shared<ScriptedFixer>("retry", FixResult::success()), {"timeout"});
    for (int i = 0; i < 5; ++i) {
        store.add(letter("t" + std::to_string(i), "timeout"));
        store.add(letter("q" + std::to_string(i), "quota"));  // skipped: not rate-limited
    }
    FixOrchestratorOptions o;
    o.max_fixes_per_second = 2;
    FixOrchestrator fixes(store, classifier, registry, {}, o, clock);
    const bulwark::TimePoint start = clock.now();
    const BulkFixResult r = fixes.bulk_fix(DeadLetterQuery{}, "ops");
    CHECK(r.count(FixOutcome::success) == 5);
    CHECK(r.count(FixOutcome::skipped) == 5);
    // Five executions, 500 ms apart: the first at once, four waits.
    CHECK(clock.now() - start == 2s);
    CHECK(clock.sleeps() == std::vector<bulwark::Duration>(4, 500ms));

    // The next run keeps the spacing from the last execution.
    store.add(letter("t9", "timeout"));
    clock.clear_sleeps();
    fixes.bulk_fix(DeadLetterQuery{}.id("t9"), "ops");
    CHECK(clock.sleeps() == std::vector<bulwark::Duration>{500ms});
}

TEST_CASE("the execution log drops its oldest entries and answers queries", "[fix]") {
    FixExecutionLog log(3);
    const bulwark::WallTime t0{std::chrono::hours(1)};
    auto entry = [&](std::string fixer, FixOutcome outcome, int minute) {
        FixExecution e;
        e.fixer_id = std::move(fixer);
        e.outcome = outcome;
        e.at = t0 + std::chrono::minutes(minute);
        e.duration = 2s;
        return e;
    };
    log.record(entry("a", FixOutcome::failed, 0));
    log.record(entry("a", FixOutcome::success, 1));
    log.record(entry("b", FixOutcome::success, 2));
    CHECK(log.stats("a").executions == 2);
    log.record(entry("a", FixOutcome::partial, 3));  // drops minute 0
    CHECK(log.size() == 3);
    CHECK(log.dropped() == 1);
    CHECK(log.max_entries() == 3);
    // Statistics follow the window: a's failure is gone.
    const bulwark::FixerStats a = log.stats("a");
    CHECK(a.executions == 2);
    CHECK(a.count(FixOutcome::failed) == 0);
    CHECK(a.success_rate == 0.5);
    CHECK(a.mean_duration == 2s);

    CHECK(log.query({"a", {}, {}, {}}).size() == 2);
    CHECK(log.query({{}, FixOutcome::success, {}, {}}).size() == 2);
    FixLogQuery window;
    window.from = t0 + 2min;
    window.to = t0 + 3min;  // exclusive
    const auto in_window = log.query(window);
    REQUIRE(in_window.size() == 1);
    CHECK(in_window[0].fixer_id == "b");
    CHECK(log.stats("nobody").executions == 0);
    CHECK(log.stats().size() == 2);
    CHECK_THROWS_AS(FixExecutionLog(0), std::invalid_argument);
}

TEST_CASE("alerts fire once per level change as a fixer's record crosses the thresholds", "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::ErrorClassifier classifier;
    classifier.add(rule("ok", "good"));
    classifier.add(rule("bad", "bad"));
    classifier.add(rule("slow", "slow"));
    FixRegistry registry;
    // One fixer id for good and bad letters: its record is what the letters make it.
    class Mixed : public FixStrategy {
    public:
        std::string id() const override { return "mixed"; }
        FixResult fix(DeadLetter& d, const FixContext&) override {
            return d.error == "ok" ? FixResult::success() : FixResult::failed("no");
        }
    };
    registry.add(std::make_shared<Mixed>(), {"good", "bad"});
    registry.add(std::make_shared<ScriptedFixer>("slowpoke", FixResult::success(), &clock, 45s),
                 {"slow"});

    FixOrchestratorOptions o = eager();
    o.thresholds.min_executions = 4;
    FixOrchestrator fixes(store, classifier, registry, {}, o, clock);
    std::vector<FixAlert> alerts;
    fixes.on_alert([&](const FixAlert& a) { alerts.push_back(a); });

    int n = 0;
    auto run = [&](const std::string& error) {
        // Nothing is redriven, so earlier letters stay pending: fix only the new one.
        const std::string id = store.add(letter("m" + std::to_string(++n), error));
        fixes.bulk_fix(DeadLetterQuery{}.id(id), "ops");
    };
    run("ok");
    run("ok");
    run("ok");
    CHECK(alerts.empty());  // below min_executions
    run("bad");             // 3/4 success = 75 %, 25 % failed: ok
    CHECK(alerts.empty());
    run("bad");  // 3/5 = 60 % success, 40 % failed: warning
    REQUIRE(alerts.size() == 1);
    CHECK(alerts[0].fixer_id == "mixed");
    CHECK(alerts[0].from == FixAlertLevel::ok);
    CHECK(alerts[0].to == FixAlertLevel::warning);
    run("bad");  // 50 % / 50 %: still warning (critical is below 50 % / above 50 %)
    CHECK(alerts.size() == 1);
    run("bad");  // 3/7 success: critical
    REQUIRE(alerts.size() == 2);
    CHECK(alerts[1].from == FixAlertLevel::warning);
    CHECK(alerts[1].to == FixAlertLevel::critical);
    CHECK(alerts[1].stats.count(FixOutcome::failed) == 4);
    CHECK(fixes.stats("mixed").level == FixAlertLevel::critical);
    for (int i = 0; i < 5; ++i) {
        run("ok");  // 8/12 = 67 % success, 33 % failed: warning again
    }
    REQUIRE(alerts.size() == 3);
    CHECK(alerts[2].to == FixAlertLevel::warning);

    // Duration: a mean of 45 s is a warning from the first execution (min_executions is about
    // rates).
    run("slow");
    REQUIRE(alerts.size() == 4);
    CHECK(alerts[3].fixer_id == "slowpoke");
    CHECK(alerts[3].to == FixAlertLevel::warning);
    CHECK(fixes.stats("slowpoke").mean_duration == 45s);

    // The same record, for a scraper.
    const std::string text = bulwark::to_prometheus(fixes);
    auto has = [&](const std::string& line) {
        return text.find(line + "\n") != std::string::npos;
    };
    CHECK(has(R"(bulwark_fix_executions_total{name="fixes",fixer="mixed",outcome="success"} 8)"));
    CHECK(has(R"(bulwark_fix_executions_total{name="fixes",fixer="mixed",outcome="failed"} 4)"));
    CHECK(has(R"(bulwark_fix_mean_duration_seconds{name="fixes",fixer="slowpoke"} 45)"));
    CHECK(has(R"(bulwark_fix_alert_level{name="fixes",fixer="mixed",level="warning"} 1)"));
    CHECK(has(R"(bulwark_fix_alert_level{name="fixes",fixer="mixed",level="critical"} 0)"));
    const std::string named = bulwark::to_prometheus(bulwark::metric_name("ops", fixes));
    CHECK(named.find(R"(fixer="slowpoke",level="warning"} 1)") != std::string::npos);
    CHECK(named.find(R"(name="ops")") != std::string::npos);
}

TEST_CASE("RedriveFixer sends a dead-lettered message over the forced channel after its delay",
          "[fix]") {
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::DeliveryEngineOptions eo;
    eo.workers = 0;
    eo.max_passes = 1;
    bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dlq, eo, clock);
    std::atomic<int> sms_calls{0};
    std::atomic<int> email_calls{0};
    std::vector<std::string> emailed;  // workers = 0: only this thread sends
    engine.add_channel("sms", [&](const std::string&) -> bulwark::Receipt {
        ++sms_calls;
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient, "sms gateway timed out",
                                     "504");
    });
    engine.add_channel("email", [&](const std::string& m) {
        ++email_calls;
        emailed.push_back(m);
        return bulwark::Receipt{"mail", "mail:" + m, 0.0, false};
    });
    const std::string id = engine.submit("otp 1234", {"sms"});
    engine.run_due();
    REQUIRE(engine.status(id) == bulwark::MessageStatus::dead_lettered);

    bulwark::ErrorClassifier classifier;
    classifier.add(rule("timed out", "sms_outage"));
    bulwark::RedriveFixerOptions ro;
    ro.classes = {"sms_outage"};
    ro.channels = {"email"};
    ro.delay = 5s;
    auto fixer = std::make_shared<bulwark::RedriveFixer>(ro);
    FixRegistry registry;
    registry.add(fixer, fixer->classes());
    FixOrchestrator fixes(dlq, classifier, registry, bulwark::redrive_through(engine), eager(),
                          clock);

    const bulwark::TimePoint before = clock.now();
    const BulkFixResult r = fixes.bulk_fix(DeadLetterQuery{}, "dana");
    REQUIRE(r.letters.size() == 1);
    CHECK(r.letters[0].result.outcome == FixOutcome::success);
    CHECK(r.letters[0].result.message == "redrive over email after 5s (sms_outage)");
    CHECK(r.redriven == 1);
    CHECK(clock.now() - before == 5s);  // waited the fixer's delay on the clock
    CHECK(dlq.get(id)->status == DeadLetterStatus::reprocessed);
    const auto tags = dlq.get(id)->tags;
    CHECK(std::find(tags.begin(), tags.end(), "fixed-by:redrive") != tags.end());

    engine.run_due();
    CHECK(engine.status(id) == bulwark::MessageStatus::sent);
    CHECK(email_calls == 1);
    CHECK(sms_calls == 1);
    const auto log = fixes.log().query();
    REQUIRE(log.size() == 1);
    CHECK(log[0].message_id == id);
    CHECK(log[0].fixer_id == "redrive");

    SECTION("an edited payload is what redrive_through resends, under the message's id") {
        const std::string other = engine.submit("otp 5678", {"sms"});
        engine.run_due();
        REQUIRE(engine.status(other) == bulwark::MessageStatus::dead_lettered);
        auto editor = std::make_shared<ScriptedFixer>("edit", FixResult::success().via({"email"}));
        editor->new_payload = "otp 0000";
        bulwark::ErrorClassifier c2;
        c2.add(rule("timed out", "edited"));
        FixRegistry r2;
        r2.add(editor, {"edited"});
        FixOrchestrator f2(dlq, c2, r2, bulwark::redrive_through(engine), eager(), clock);
        const BulkFixResult e = f2.bulk_fix(DeadLetterQuery{}.id(other), "dana");
        REQUIRE(e.letters.size() == 1);
        CHECK(e.letters[0].result.outcome == FixOutcome::success);
        CHECK(e.letters[0].result.payload_changed);
        CHECK(e.redriven == 1);
        CHECK(dlq.get(other)->status == DeadLetterStatus::reprocessed);
        CHECK(dlq.get(other)->payload == "otp 5678");  // the letter keeps what failed
        engine.drain(1min);
        CHECK(engine.status(other) == bulwark::MessageStatus::sent);
        REQUIRE(!emailed.empty());
        CHECK(emailed.back() == "otp 0000");
    }
}

TEST_CASE("RedriveFixerOptions refuse an empty id, no class and a negative delay", "[fix]") {
    bulwark::RedriveFixerOptions o;
    CHECK_THROWS_AS(bulwark::RedriveFixer(o), std::invalid_argument);  // no class
    o.classes = {"x"};
    o.delay = -1s;
    CHECK_THROWS_AS(bulwark::RedriveFixer(o), std::invalid_argument);
    o.delay = 0s;
    o.id = "";
    CHECK_THROWS_AS(bulwark::RedriveFixer(o), std::invalid_argument);
    o.id = "r";
    const bulwark::RedriveFixer ok(o);
    Classification c;
    c.error_class.name = "y";
    CHECK_FALSE(ok.handles(c));
    c.error_class.name = "x";
    CHECK(ok.handles(c));
}
