// The seed fixers of examples/fixers/seed_fixers.hpp: their rules sort each kind of failure into
// its class, and each fixer does what its comment says, alone and in a bulk fix on a ManualClock.
#include "../examples/fixers/seed_fixers.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <bulwark/error_classifier.hpp>
#include <bulwark/fix_strategy.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeadLetter;
using bulwark::FixOutcome;
using bulwark::FixResult;

namespace {

DeadLetter letter(const std::string& channel, const std::string& error,
                  const std::string& payload = "seq=1\nphone=(555) 010-0042\n") {
    DeadLetter d;
    d.type = channel;
    d.payload = payload;
    d.error = error;
    d.attempts.push_back({bulwark::WallTime{}, channel, error});
    return d;
}

bulwark::FixContext context() {
    bulwark::FixContext c;
    c.operator_name = "test";
    return c;
}

std::string class_of(const DeadLetter& d) {
    bulwark::ErrorClassifier classifier;
    fixers::add_seed_rules(classifier);
    return classifier.classify(d).error_class.name;
}

}  // namespace

TEST_CASE("the seed rules sort each kind of failure into its class", "[seed_fixers]") {
    CHECK(class_of(letter("email", "template database: connection refused (code 08006)")) ==
          fixers::database_connection);
    CHECK(class_of(letter("webhook", "webhook: connect: connection refused (code ECONNREFUSED)")) ==
          fixers::network_timeout);
    CHECK(class_of(letter("sms", "request timed out")) == fixers::network_timeout);
    CHECK(class_of(letter("sms", "invalid 'To' phone number (code 21211)")) ==
          fixers::validation_error);
    CHECK(class_of(letter("sms", "account queue full (code RESOURCE_EXHAUSTED)")) ==
          fixers::resource_exhaustion);
    CHECK(class_of(letter("email", "503 service unavailable (code 503)")) ==
          fixers::external_api_error);
    CHECK(class_of(letter("email", "circuit breaker 'email' is open")) ==
          fixers::external_api_error);
    CHECK(class_of(letter("push", "device token unregistered (code UNREGISTERED)")) ==
          "unclassified");
}

TEST_CASE("the database fixer redrives only once its probe answers", "[seed_fixers]") {
    bool up = false;
    fixers::DatabaseConnectionFixer fixer([&] { return up; });
    DeadLetter d = letter("email", "template database: connection refused (code 08006)");
    const std::string payload = d.payload;
    CHECK(fixer.fix(d, context()).outcome == FixOutcome::failed);
    up = true;
    const FixResult r = fixer.fix(d, context());
    CHECK(r.outcome == FixOutcome::success);
    CHECK(r.redrive);
    CHECK(r.route.empty());
    CHECK(d.payload == payload);
}

TEST_CASE("the network fixer redrives after its delay over its channels", "[seed_fixers]") {
    fixers::NetworkTimeoutOptions o;
    o.delay = 10s;
    o.channels = {"email"};
    fixers::NetworkTimeoutFixer fixer(o);
    DeadLetter d = letter("webhook", "connection refused");
    const FixResult r = fixer.fix(d, context());
    CHECK(r.outcome == FixOutcome::success);
    CHECK(r.delay == bulwark::Duration(10s));
    CHECK(r.route == std::vector<std::string>{"email"});
    CHECK(r.message == "network settled: redrive over email");
}

TEST_CASE("the validation fixer puts the phone number in E.164 form", "[seed_fixers]") {
    fixers::ValidationFixer fixer;
    DeadLetter d = letter("sms", "invalid 'To' phone number (code 21211)",
                          "seq=7\nphone=(555) 010-0042\ntext=hi\n");
    const FixResult r = fixer.fix(d, context());
    CHECK(r.outcome == FixOutcome::success);
    CHECK(d.payload == "seq=7\nphone=+15550100042\ntext=hi\n");

    SECTION("a valid number is not its business to fix again") {
        CHECK(fixer.fix(d, context()).outcome == FixOutcome::failed);
    }
    SECTION("nor a number it cannot read, nor a payload without one") {
        DeadLetter short_number = letter("sms", "invalid", "phone=12345\n");
        CHECK(fixer.fix(short_number, context()).outcome == FixOutcome::failed);
        CHECK(short_number.payload == "phone=12345\n");
        DeadLetter none = letter("sms", "invalid", "seq=1\ntelephone=5550100042\n");
        CHECK(fixer.fix(none, context()).outcome == FixOutcome::failed);
    }
}

TEST_CASE("normalize_phone keeps a country code and refuses other lengths", "[seed_fixers]") {
    CHECK(fixers::normalize_phone("555-010-0042") == "+15550100042");
    CHECK(fixers::normalize_phone("+1 555 010 0042") == "+15550100042");
    CHECK(fixers::normalize_phone("0042").empty());
    CHECK(fixers::normalize_phone("+44 555 010 0042").empty());
}

TEST_CASE("the resource fixer redrives after its back-off", "[seed_fixers]") {
    fixers::ResourceExhaustionFixer fixer(45s);
    DeadLetter d = letter("sms", "account queue full");
    const FixResult r = fixer.fix(d, context());
    CHECK(r.outcome == FixOutcome::success);
    CHECK(r.delay == bulwark::Duration(45s));
    CHECK(r.route.empty());
}

TEST_CASE("the external API fixer reroutes to the other provider's channel", "[seed_fixers]") {
    fixers::ExternalApiFixer fixer(std::map<std::string, std::string>{{"email", "email-backup"}});
    DeadLetter d = letter("email", "503 service unavailable");
    const FixResult r = fixer.fix(d, context());
    CHECK(r.outcome == FixOutcome::success);
    CHECK(r.route == std::vector<std::string>{"email-backup"});
    DeadLetter other = letter("sms", "503 service unavailable");
    CHECK(fixer.fix(other, context()).outcome == FixOutcome::failed);
}

TEST_CASE("a bulk fix runs each seed fixer for its class and waits its delays on the clock",
          "[seed_fixers]") {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(100, clock);
    bulwark::ErrorClassifier classifier;
    fixers::add_seed_rules(classifier);
    bulwark::FixRegistry registry;
    fixers::NetworkTimeoutOptions network;
    network.delay = 10s;
    fixers::register_seed_fixers(
        registry, [] { return true; }, {{"email", "email-backup"}}, network, 30s);
    CHECK(registry.assignments().size() == 5);

    store.add(letter("email", "template database: connection refused (code 08006)"));
    store.add(letter("webhook", "webhook: connect: connection refused (code ECONNREFUSED)"));
    store.add(letter("sms", "invalid 'To' phone number (code 21211)"));
    store.add(letter("sms", "account queue full (code RESOURCE_EXHAUSTED)"));
    store.add(letter("email", "503 service unavailable (code 503)"));
    store.add(letter("push", "device token unregistered (code UNREGISTERED)"));

    std::vector<FixResult> redriven;
    bulwark::FixOrchestratorOptions options;
    options.max_fixes_per_second = 1000;
    bulwark::FixOrchestrator orchestrator(
        store, classifier, registry,
        [&](const DeadLetter&, const FixResult& r) {
            redriven.push_back(r);
            return true;
        },
        options, clock);
    const bulwark::TimePoint before = clock.now();
    const bulwark::BulkFixResult result = orchestrator.bulk_fix({}, "test");

    CHECK(result.matched == 6);
    CHECK(result.count(FixOutcome::success) == 5);
    CHECK(result.count(FixOutcome::skipped) == 1);  // the bounce: no seed class
    CHECK(result.redriven == 5);
    std::map<std::string, std::string> fixer_of;
    for (const bulwark::LetterFix& f : result.letters) {
        fixer_of[f.error_class] = f.fixer_id;
    }
    CHECK(fixer_of[fixers::database_connection] == "database-connection");
    CHECK(fixer_of[fixers::network_timeout] == "network-timeout");
    CHECK(fixer_of[fixers::validation_error] == "validation");
    CHECK(fixer_of[fixers::resource_exhaustion] == "resource-exhaustion");
    CHECK(fixer_of[fixers::external_api_error] == "external-api");
    REQUIRE(redriven.size() == 5);
    CHECK(redriven[2].payload_changed);  // the validation fixer edited the phone number
    // The network delay (10 s) and the resource back-off (30 s), on the manual clock, plus
    // the rate limit's spacing.
    CHECK(clock.now() - before >= bulwark::Duration(40s));
    CHECK(clock.now() - before < bulwark::Duration(41s));
}
