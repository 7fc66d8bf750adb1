// ErrorClassifier: error classes by rule, unclassified counting, redaction.
#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <bulwark/error_classifier.hpp>

#include "catch.hpp"

using bulwark::Classification;
using bulwark::DeadLetter;
using bulwark::DeadLetterAttempt;
using bulwark::ErrorClass;
using bulwark::ErrorClassifier;
using bulwark::ErrorRule;
using bulwark::ErrorSeverity;

namespace {

ErrorClass make_class(const std::string& name, const std::string& category = "infrastructure",
                      ErrorSeverity severity = ErrorSeverity::high) {
    return ErrorClass{name, category, severity, {}};
}

ErrorRule on_pattern(const std::string& pattern, const std::string& name) {
    ErrorRule r;
    r.pattern = pattern;
    r.error_class = make_class(name);
    return r;
}

ErrorRule on_channel(const std::string& channel, const std::string& name) {
    ErrorRule r;
    r.channel = channel;
    r.error_class = make_class(name);
    return r;
}

ErrorRule on_code(const std::string& code, const std::string& name) {
    ErrorRule r;
    r.code = code;
    r.error_class = make_class(name);
    return r;
}

struct QuotaExceeded : std::runtime_error {
    using std::runtime_error::runtime_error;
};

DeadLetterAttempt attempt(const std::string& channel, const std::string& error) {
    DeadLetterAttempt a;
    a.channel = channel;
    a.error = error;
    return a;
}

}  // namespace

TEST_CASE("ErrorClassifier: the first matching rule wins, in the order added",
          "[error_classifier]") {
    ErrorClassifier c;
    c.add(on_pattern("timeout", "network_timeout"))
        .add(on_pattern("connect timeout", "connect_timeout"))
        .add(on_channel("sms", "sms_failure"));
    const Classification first = c.classify("connect timeout after 5s", "", "sms");
    CHECK(first.matched);
    CHECK(first.rule == 0);
    CHECK(first.error_class.name == "network_timeout");
    CHECK(first.error_class.category == "infrastructure");
    CHECK(first.error_class.severity == ErrorSeverity::high);
    const Classification third = c.classify("invalid number", "", "sms");
    CHECK(third.rule == 2);
    CHECK(third.error_class.name == "sms_failure");
    CHECK(c.size() == 3);
    CHECK(c.rules()[1].error_class.name == "connect_timeout");
}

TEST_CASE("ErrorClassifier: channel, code, pattern and type each match alone",
          "[error_classifier]") {
    ErrorClassifier c;
    ErrorRule by_type;
    by_type.type = ErrorRule::of<QuotaExceeded>();
    by_type.error_class = make_class("quota");
    c.add(on_channel("email", "email_failure"))
        .add(on_code("21211", "invalid_number"))
        .add(on_pattern("refused", "refused"))
        .add(by_type);

    CHECK(c.classify("anything", "", "email").error_class.name == "email_failure");
    CHECK(c.classify("anything", "", "emails").matched == false);  // exact channel only
    CHECK(c.classify("anything", "21211", "sms").error_class.name == "invalid_number");
    CHECK(c.classify("anything", "2121", "sms").matched == false);  // exact code only
    CHECK(c.classify("connection refused", "", "").error_class.name == "refused");
    const auto quota = std::make_exception_ptr(QuotaExceeded("daily quota"));
    CHECK(c.classify("no match here", "", "", quota).error_class.name == "quota");
    CHECK(c.classify("no match here", "", "", std::make_exception_ptr(std::runtime_error("x")))
              .matched == false);
    // Without an exception a type rule cannot match (it is never called with a null one).
    CHECK(c.classify("no match here", "", "").matched == false);
}

TEST_CASE("ErrorClassifier: every matcher a rule sets must hold", "[error_classifier]") {
    ErrorClassifier c;
    ErrorRule r;
    r.channel = "sms";
    r.code = "503";
    r.pattern = "unavailable";
    r.type = ErrorRule::of<std::system_error>();
    r.error_class = make_class("sms_provider_down");
    c.add(r);
    const auto sys = std::make_exception_ptr(
        std::system_error(std::make_error_code(std::errc::connection_refused)));
    CHECK(c.classify("Service Unavailable", "503", "sms", sys).matched);
    CHECK_FALSE(c.classify("Service Unavailable", "503", "email", sys).matched);
    CHECK_FALSE(c.classify("Service Unavailable", "500", "sms", sys).matched);
    CHECK_FALSE(c.classify("Bad Gateway", "503", "sms", sys).matched);
    CHECK_FALSE(c.classify("Service Unavailable", "503", "sms",
                           std::make_exception_ptr(std::logic_error("x")))
                    .matched);
    CHECK_FALSE(c.classify("Service Unavailable", "503", "sms").matched);
}

TEST_CASE("ErrorClassifier: patterns match a substring without regard to case",
          "[error_classifier]") {
    ErrorClassifier c;
    c.add(on_pattern("Connection RESET", "reset"));
    CHECK(c.classify("upstream: connection reset by peer", "", "").matched);
    CHECK(c.classify("CONNECTION RESET", "", "").matched);
    CHECK_FALSE(c.classify("connection re-set", "", "").matched);
    CHECK_FALSE(c.classify("", "", "").matched);
}

TEST_CASE("ErrorClassifier: what no rule matches is unclassified, counted and returned",
          "[error_classifier]") {
    ErrorClassifier c;
    CHECK(c.stats() == std::map<std::string, std::uint64_t>{{"unclassified", 0}});
    c.add(on_pattern("timeout", "network_timeout"));
    const Classification u = c.classify("disk on fire", "E42", "sms");
    CHECK_FALSE(u.matched);
    CHECK(u.rule == Classification::no_rule);
    CHECK(u.error_class.name == "unclassified");
    CHECK(u.error_class.severity == ErrorSeverity::medium);
    CHECK(u.error_class.category.empty());
    CHECK(u.error == "disk on fire");
    c.classify("read timeout", "", "");
    c.classify("another mystery", "", "");
    const std::map<std::string, std::uint64_t> expected{{"network_timeout", 1},
                                                        {"unclassified", 2}};
    CHECK(c.stats() == expected);
    CHECK(std::string(bulwark::to_string(ErrorSeverity::critical)) == "critical");
    CHECK(std::string(bulwark::to_string(static_cast<ErrorSeverity>(9))) == "unknown");
}

TEST_CASE("ErrorClassifier: invalid rules are refused with the field named", "[error_classifier]") {
    ErrorClassifier c;
    CHECK_THROWS_WITH(c.add(on_pattern("timeout", "")),
                      "ErrorRule.error_class.name must not be empty, got \"\"");
    CHECK_THROWS_WITH(c.add(on_pattern("timeout", "unclassified")),
                      BULWARK_CATCH_MESSAGE_CONTAINS("ErrorRule.error_class.name must not be"));
    ErrorRule nothing;
    nothing.error_class = make_class("orphan");
    CHECK_THROWS_WITH(c.add(nothing),
                      "ErrorRule.channel/code/pattern/type must set at least one "
                      "(a rule must match something), got none set for class "
                      "\"orphan\"");
    ErrorRule bad_severity = on_code("1", "x");
    bad_severity.error_class.severity = static_cast<ErrorSeverity>(7);
    CHECK_THROWS_WITH(c.add(bad_severity),
                      "ErrorRule.error_class.severity must be a ErrorSeverity, got 7");

    c.add(on_pattern("timeout", "network_timeout"));
    ErrorRule other_category = on_code("504", "network_timeout");
    other_category.error_class.category = "provider";
    CHECK_THROWS_WITH(c.add(other_category),
                      "ErrorRule.error_class.category must be \"infrastructure\" as in the class "
                      "\"network_timeout\" added before, got \"provider\"");
    ErrorRule other_severity = on_code("504", "network_timeout");
    other_severity.error_class.severity = ErrorSeverity::low;
    CHECK_THROWS_WITH(c.add(other_severity),
                      "ErrorRule.error_class.severity must be high as in the class "
                      "\"network_timeout\" added before, got low");
    // The same class again, the same category and severity: another way into it.
    c.add(on_code("504", "network_timeout"));
    CHECK(c.size() == 2);

    // replace() checks every rule and changes nothing when one is refused.
    CHECK_THROWS_WITH(c.replace({on_code("1", "a"), on_pattern("", "b")}),
                      BULWARK_CATCH_MESSAGE_CONTAINS("ErrorRule[1].channel/code/pattern/type"));
    CHECK(c.size() == 2);
    CHECK(c.rules()[0].pattern == "timeout");
}

TEST_CASE("ErrorClassifier: a dead letter is classified by its last attempt",
          "[error_classifier]") {
    ErrorClassifier c;
    c.add(on_channel("email", "email_failure"))
        .add(on_code("21211", "invalid_number"))
        .add(on_channel("sms", "sms_failure"));

    DeadLetter d;
    d.type = "sms";
    d.error = "mailbox full";
    d.attempts = {attempt("sms", "provider 503"), attempt("email", "mailbox full")};
    // The last attempt's channel, not the type nor an earlier attempt's.
    CHECK(c.classify(d).error_class.name == "email_failure");

    // No channel in the last attempt: the letter's type is the channel.
    d.attempts = {attempt("", "provider 503")};
    CHECK(c.classify(d).error_class.name == "sms_failure");
    d.attempts.clear();
    CHECK(c.classify(d).error_class.name == "sms_failure");

    // The code DeliveryEngine appends to the error text.
    DeadLetter coded;
    coded.type = "push";
    coded.error = "invalid number (code 21211)";
    coded.attempts = {attempt("push", "invalid number")};
    const Classification by_code = c.classify(coded);
    CHECK(by_code.error_class.name == "invalid_number");
    CHECK(by_code.error == "invalid number (code 21211)");

    // An empty letter error: the last attempt's error is the text.
    ErrorClassifier p;
    p.add(on_pattern("quota", "quota"));
    DeadLetter quiet;
    quiet.type = "sms";
    quiet.attempts = {attempt("sms", "timeout"), attempt("sms", "Quota exceeded")};
    const Classification q = p.classify(quiet);
    CHECK(q.error_class.name == "quota");
    CHECK(q.error == "Quota exceeded");
}

TEST_CASE("ErrorClassifier: counts stay exact while the rules are replaced under traffic",
          "[error_classifier][concurrency]") {
    ErrorClassifier c;
    const std::vector<ErrorRule> set_a = {on_pattern("timeout", "a_timeout")};
    const std::vector<ErrorRule> set_b = {on_code("never", "b_filler"),
                                          on_pattern("timeout", "b_timeout")};
    c.replace(set_a);
    constexpr int per_thread = 2000;
    constexpr int replacements = 500;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                const bool timed_out = i % 2 == 0;
                const Classification r =
                    c.classify(timed_out ? "read timeout" : "mystery", "", "sms");
                const bool consistent = timed_out
                                            ? ((r.error_class.name == "a_timeout" && r.rule == 0) ||
                                               (r.error_class.name == "b_timeout" && r.rule == 1))
                                            : (!r.matched && r.error_class.name == "unclassified");
                if (!consistent) {
                    wrong.fetch_add(1);
                }
            }
        });
    }
    threads.emplace_back([&] {
        for (int i = 0; i < replacements; ++i) {
            c.replace(i % 2 == 0 ? set_b : set_a);
        }
    });
    for (std::thread& t : threads) {
        t.join();
    }
    CHECK(wrong.load() == 0);
    const std::map<std::string, std::uint64_t> s = c.stats();
    CHECK(s.at("unclassified") == 4U * per_thread / 2);
    CHECK(s.at("a_timeout") + s.at("b_timeout") == 4U * per_thread / 2);
    CHECK(s.at("b_filler") == 0);
    CHECK(c.size() == 1);  // the last replacement (an odd one) put set_a back
}

TEST_CASE("redact_defaults masks e-mail addresses and long digit runs, nothing else",
          "[error_classifier][redaction]") {
    const bulwark::Redactor redact = bulwark::redact_defaults();
    CHECK(redact("bounce for jane.doe+sms@mail.example.com: mailbox full") ==
          "bounce for [email]: mailbox full");
    CHECK(redact("to <a@b.co>, then x_y@corp.example.org.") == "to <[email]>, then [email].");
    CHECK(redact("card 4111111111111111 declined") == "card [number] declined");
    CHECK(redact("card 4111 1111 1111 1111 declined") == "card [number] declined");
    CHECK(redact("call +44 7700-900-123 45 now") == "call +[number] now");
    CHECK(redact("msisdn=447700900123;") == "msisdn=[number];");
    // Left alone: short numbers, dates, ids inside words, '@' that is not an address.
    const std::string plain =
        "HTTP 503 at 2024-01-15 10:30, order 12345678901, retry@3, user@localhost, "
        "trace a4111111111111111, sha 1234567890123abc, @handle, empty@.com";
    CHECK(redact(plain) == plain);
    CHECK(redact("") == "");
    CHECK(redact("only digits 123456789012") == "only digits [number]");
    CHECK(redact("a@b.c 1234567890123") == "[email] [number]");
}

TEST_CASE("ErrorClassifier: the error text operators see passes through the redactor",
          "[error_classifier][redaction]") {
    ErrorClassifier c(bulwark::redact_defaults());
    c.add(on_pattern("jane@example.com", "blocked_recipient"));
    // Rules see the text as it was; operators see it redacted.
    const Classification r =
        c.classify("recipient jane@example.com blocked, card 4111111111111111", "", "");
    CHECK(r.error_class.name == "blocked_recipient");
    CHECK(r.error == "recipient [email] blocked, card [number]");
    const Classification u = c.classify("mystery for 447700900123", "", "");
    CHECK_FALSE(u.matched);
    CHECK(u.error == "mystery for [number]");

    DeadLetter d;
    d.type = "email";
    d.error = "no such user bob@example.org";
    CHECK(c.classify(d).error == "no such user [email]");

    ErrorClassifier custom([](std::string_view text) { return "<" + std::string(text) + ">"; });
    CHECK(custom.classify("x", "", "").error == "<x>");
}
