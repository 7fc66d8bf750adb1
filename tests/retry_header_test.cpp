#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/retry.hpp>
#include <bulwark/retry_header.hpp>
#include <bulwark/testing.hpp>
#include <bulwark/timeout.hpp>

#include "catch.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using bulwark::Context;
using bulwark::ManualClock;
using bulwark::RetryHeader;

namespace {

std::string parse_error(const std::string& text) {
    try {
        (void)RetryHeader::parse(text);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(parsed)";
}

RetryHeader header(std::uint32_t attempt, std::optional<std::chrono::milliseconds> deadline,
                   bool caller_retries) {
    RetryHeader h;
    h.attempt = attempt;
    h.deadline = deadline;
    h.caller_retries = caller_retries;
    return h;
}

}  // namespace

TEST_CASE("a retry header is written in canonical form and read back", "[retry_header]") {
    const RetryHeader h = header(2, 1500ms, true);
    CHECK(h.to_string() == "attempt=2; deadline-ms=1500; caller-retries=1");
    CHECK(RetryHeader::parse(h.to_string()) == h);
    CHECK(header(0, std::nullopt, false).to_string() == "attempt=0; caller-retries=0");
    CHECK(RetryHeader::parse("attempt=0; caller-retries=0") == RetryHeader{});
    CHECK(bulwark::retry_header_name == "x-bulwark-retry");
}

TEST_CASE("a retry header's items may come in any order, any case and with spaces",
          "[retry_header]") {
    const RetryHeader want = header(7, 250ms, true);
    CHECK(RetryHeader::parse("caller-retries=1;deadline-ms=250;attempt=7") == want);
    CHECK(RetryHeader::parse("  Deadline-MS=250 ;\tATTEMPT=7 ;  caller-retries=1\t") == want);
    // Every key is optional.
    CHECK(RetryHeader::parse("caller-retries=1") == header(0, std::nullopt, true));
    CHECK(RetryHeader::parse("deadline-ms=0") == header(0, 0ms, false));
}

TEST_CASE("a retry header skips keys it does not know", "[retry_header]") {
    CHECK(RetryHeader::parse("attempt=1; priority=high; x-trace=abc123; caller-retries=1") ==
          header(1, std::nullopt, true));
    // Even a header of unknown keys alone: a newer peer may send only new ones.
    CHECK(RetryHeader::parse("budget-v2=17") == RetryHeader{});
    // Unknown keys may repeat; they still follow the grammar.
    CHECK(RetryHeader::parse("x=1; x=2; attempt=3").attempt == 3);
    CHECK(parse_error("x=a=b") ==
          "retry header: the value of x must be 1 or more visible characters other than ';' "
          "'=' ',', got \"a=b\"");
}

TEST_CASE("property: any header survives to_string and parse, in any order and spelling",
          "[retry_header]") {
    std::mt19937_64 rng(20261205);
    auto pick = [&](std::uint64_t n) {
        return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
    };
    const std::uint32_t attempts[] = {0, 1, 9, 10, 4294967294U, 4294967295U};
    const std::int64_t deadlines[] = {0, 1, 999, 1000, RetryHeader::max_deadline_ms};
    for (int i = 0; i < 20000; ++i) {
        RetryHeader h;
        h.attempt =
            pick(3) == 0 ? attempts[pick(6)] : static_cast<std::uint32_t>(pick(4294967296ULL));
        switch (pick(3)) {
            case 0:
                break;
            case 1:
                h.deadline = std::chrono::milliseconds(deadlines[pick(5)]);
                break;
            default:
                h.deadline = std::chrono::milliseconds(
                    static_cast<std::int64_t>(pick(RetryHeader::max_deadline_ms + 1)));
                break;
        }
        h.caller_retries = pick(2) == 1;
        const std::string canonical = h.to_string();
        REQUIRE(canonical.size() <= bulwark::retry_header_max_length);
        REQUIRE(RetryHeader::parse(canonical) == h);

        // The same items shuffled, in random case and spacing, with unknown keys between.
        std::vector<std::string> items;
        std::size_t from = 0;
        while (from <= canonical.size()) {
            std::size_t end = canonical.find("; ", from);
            if (end == std::string::npos) {
                end = canonical.size();
            }
            items.push_back(canonical.substr(from, end - from));
            from = end + 2;
        }
        for (std::uint64_t n = pick(3); n > 0; --n) {
            items.push_back("ext-" + std::to_string(pick(100)) + "=v" + std::to_string(pick(9)));
        }
        std::shuffle(items.begin(), items.end(), rng);
        std::string text;
        for (std::size_t k = 0; k < items.size(); ++k) {
            std::string item = items[k];
            for (char& c : item) {
                if (c >= 'a' && c <= 'z' && c != 'x' && pick(2) == 0) {
                    c = static_cast<char>(c - 'a' + 'A');
                }
            }
            const char* spaces[] = {"", " ", "\t", "  "};
            text +=
                (k == 0 ? spaces[pick(4)] : std::string(spaces[pick(4)]) + ";" + spaces[pick(4)]) +
                item;
        }
        REQUIRE(RetryHeader::parse(text) == h);
        REQUIRE(bulwark::try_parse_retry_header(text).header == h);
    }
}

TEST_CASE("property: random bytes either parse to a header that round-trips or fail cleanly",
          "[retry_header]") {
    std::mt19937_64 rng(7);
    const std::string alphabet = "attempt=deadline-ms=caller-retries=0123456789;; \t=,-+xX\x01\xff";
    int parsed = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string text(static_cast<std::size_t>(rng() % 40), ' ');
        for (char& c : text) {
            c = alphabet[static_cast<std::size_t>(rng() % alphabet.size())];
        }
        const bulwark::RetryHeaderParse r = bulwark::try_parse_retry_header(text);
        REQUIRE(r.header.has_value() == r.error.empty());
        if (r) {
            ++parsed;
            REQUIRE(RetryHeader::parse(r.header->to_string()) == *r.header);
        } else {
            REQUIRE(r.error.rfind("retry header: ", 0) == 0);
            REQUIRE(parse_error(text) == r.error);
        }
    }
    CHECK(parsed > 0);  // the generator reaches valid headers too
}

TEST_CASE("a malformed retry header is refused naming the key and the value", "[retry_header]") {
    CHECK(parse_error("") == "retry header: the value is empty");
    CHECK(parse_error(" \t ") == "retry header: the value is empty");
    CHECK(parse_error("attempt=1; attempt=2") ==
          "retry header: attempt appears twice, the second time as \"2\"");
    CHECK(parse_error("deadline-ms=1;DEADLINE-MS=1") ==
          "retry header: deadline-ms appears twice, the second time as \"1\"");
    CHECK(parse_error("caller-retries=1; caller-retries=1") ==
          "retry header: caller-retries appears twice, the second time as \"1\"");
    const std::string attempt_rule =
        "retry header: attempt must be an integer in [0, 4294967295] (no sign, no leading zero), "
        "got ";
    CHECK(parse_error("attempt=4294967296") == attempt_rule + "\"4294967296\"");
    CHECK(parse_error("attempt=99999999999999999999999") ==
          attempt_rule + "\"99999999999999999999999\"");
    CHECK(parse_error("attempt=-1") == attempt_rule + "\"-1\"");
    CHECK(parse_error("attempt=+1") == attempt_rule + "\"+1\"");
    CHECK(parse_error("attempt=01") == attempt_rule + "\"01\"");
    CHECK(parse_error("attempt=1.5") == attempt_rule + "\"1.5\"");
    CHECK(parse_error("attempt=0x10") == attempt_rule + "\"0x10\"");
    const std::string deadline_rule =
        "retry header: deadline-ms must be an integer in [0, 999999999999] (no sign, no leading "
        "zero), got ";
    CHECK(parse_error("deadline-ms=1000000000000") == deadline_rule + "\"1000000000000\"");
    CHECK(parse_error("deadline-ms=-5") == deadline_rule + "\"-5\"");
    CHECK(parse_error("deadline-ms=1s") == deadline_rule + "\"1s\"");
    CHECK(parse_error("caller-retries=2") ==
          "retry header: caller-retries must be 0 or 1, got \"2\"");
    CHECK(parse_error("caller-retries=true") ==
          "retry header: caller-retries must be 0 or 1, got \"true\"");
    CHECK(parse_error("hello") == "retry header: item \"hello\" is not key=value");
    CHECK(parse_error("=1") ==
          "retry header: key \"\" must be a letter then letters, digits or '-'");
    CHECK(parse_error("1x=1") ==
          "retry header: key \"1x\" must be a letter then letters, digits or '-'");
    CHECK(parse_error("attempt = 1") ==
          "retry header: key \"attempt \" must be a letter then letters, digits or '-'");
    CHECK(parse_error("attempt=") ==
          "retry header: the value of attempt must be 1 or more visible characters other than "
          "';' '=' ',', got \"\"");
    CHECK(parse_error("attempt=1, caller-retries=1") ==
          "retry header: the value of attempt must be 1 or more visible characters other than "
          "';' '=' ',', got \"1, caller-retries=1\"");
    CHECK(parse_error("attempt=1;;caller-retries=1") ==
          "retry header: empty item (two ';' in a row, or one at an end) in "
          "\"attempt=1;;caller-retries=1\"");
    CHECK(parse_error("attempt=1;") ==
          "retry header: empty item (two ';' in a row, or one at an end) in \"attempt=1;\"");
    CHECK(parse_error(";attempt=1") ==
          "retry header: empty item (two ';' in a row, or one at an end) in \";attempt=1\"");
    // Control and non-ASCII bytes are quoted as escapes, never copied raw into the message.
    CHECK(parse_error(std::string("attempt=1\x01")) ==
          "retry header: the value of attempt must be 1 or more visible characters other than "
          "';' '=' ',', got \"1\\x01\"");
    CHECK(parse_error("k\xc3\xa9=1") ==
          "retry header: key \"k\\xc3\\xa9\" must be a letter then letters, digits or '-'");
    // Bounded length, however the bytes are spent.
    const std::string padded = "attempt=1; " + std::string(244, 'x') + "=1";
    REQUIRE(padded.size() == 257);
    CHECK(parse_error(padded) == "retry header: the value is 257 bytes, more than 256");
    CHECK(RetryHeader::parse("attempt=1; " + std::string(243, 'x') + "=1").attempt == 1);
}

TEST_CASE("try_parse_retry_header reports a malformed value without throwing", "[retry_header]") {
    const bulwark::RetryHeaderParse bad = bulwark::try_parse_retry_header("attempt=-1");
    CHECK_FALSE(bad);
    CHECK_FALSE(bad.header.has_value());
    CHECK(bad.error == parse_error("attempt=-1"));
    const bulwark::RetryHeaderParse good = bulwark::try_parse_retry_header("attempt=3");
    REQUIRE(good);
    CHECK(good.header->attempt == 3);
    CHECK(good.error.empty());
}

TEST_CASE("to_string refuses a deadline the grammar cannot carry", "[retry_header]") {
    CHECK_THROWS_WITH(header(0, -1ms, false).to_string(),
                      "RetryHeader.deadline must be in [0ms, 999999999999ms], got -1ms");
    CHECK_THROWS_WITH(header(0, 1000000000000ms, false).to_string(),
                      "RetryHeader.deadline must be in [0ms, 999999999999ms], got 1000000000000ms");
}

TEST_CASE("RetryHeader::from carries the context's attempt and the time left", "[retry_header]") {
    ManualClock clock;
    Context ctx("call");
    ctx.set_attempt(2);
    CHECK(RetryHeader::from(ctx, clock, true) == header(2, std::nullopt, true));
    ctx.set_deadline(clock.now() + 1500ms + 700us);
    CHECK(RetryHeader::from(ctx, clock, false) == header(2, 1500ms, false));  // rounded down
    clock.advance(2s);
    CHECK(RetryHeader::from(ctx, clock, false).deadline == std::chrono::milliseconds(0));
    ctx.set_deadline(bulwark::TimePoint::max() - 1s);
    CHECK(RetryHeader::from(ctx, clock, false).deadline ==
          std::chrono::milliseconds(RetryHeader::max_deadline_ms));
}

TEST_CASE("apply_to hands the caller's attempt, retries and deadline to the callee's context",
          "[retry_header]") {
    ManualClock clock;
    Context ctx;
    RetryHeader::parse("attempt=3; deadline-ms=1500; caller-retries=1").apply_to(ctx, clock);
    CHECK(ctx.caller_attempt() == 3);
    CHECK(ctx.caller_retries());
    CHECK(ctx.deadline() == clock.now() + 1500ms);
    CHECK(ctx.deadline_clock() == nullptr);  // a caller's deadline: a Timeout takes it over
    CHECK(ctx.attempt() == 0);               // this service's own attempts are its own

    // An earlier deadline of the callee's own stays.
    Context tight;
    tight.set_deadline(clock.now() + 100ms);
    RetryHeader::parse("deadline-ms=1500").apply_to(tight, clock);
    CHECK(tight.deadline() == clock.now() + 100ms);

    // A child context (a hedged attempt) inherits what the caller said.
    const Context child = Context::child_of(ctx);
    CHECK(child.caller_retries());
    CHECK(child.caller_attempt() == 3);
}

TEST_CASE("an HTTP header and gRPC metadata carry the value as a plain string", "[retry_header]") {
    ManualClock clock;
    // The caller, inside its retry policy: attempt 1 of up to 3 retries, 2 s left.
    Context outgoing;
    outgoing.set_attempt(1);
    outgoing.set_deadline(clock.now() + 2s);
    std::map<std::string, std::string> http_headers;  // any HTTP library's header map
    http_headers[std::string(bulwark::retry_header_name)] =
        RetryHeader::from(outgoing, clock, /*caller_retries*/ outgoing.attempt() < 3).to_string();
    std::multimap<std::string, std::string> grpc_metadata;  // grpc::ClientContext::AddMetadata
    grpc_metadata.emplace(std::string(bulwark::retry_header_name), http_headers["x-bulwark-retry"]);
    CHECK(grpc_metadata.find("x-bulwark-retry")->second ==
          "attempt=1; deadline-ms=2000; caller-retries=1");

    // The callee.
    Context incoming;
    RetryHeader::parse(grpc_metadata.find("x-bulwark-retry")->second).apply_to(incoming, clock);
    CHECK(incoming.caller_retries());
    CHECK(incoming.remaining(clock) == bulwark::Duration(2s));
}

TEST_CASE("an inner retry policy does not retry when its caller retries", "[retry_header][retry]") {
    ManualClock clock;
    bulwark::RetryOptions o;
    o.max_retries = 3;
    o.backoff = bulwark::Backoff::fixed(10ms);
    o.budget = bulwark::QuotaRetryBudget::shared({});
    bulwark::RetryPolicy inner(o, clock);
    const bulwark::TimePoint start = clock.now();
    int attempts = 0;
    auto failing = [&](Context&) -> int {
        ++attempts;
        throw std::runtime_error("down");
    };

    Context ctx;
    RetryHeader::parse("attempt=0; caller-retries=1").apply_to(ctx, clock);
    CHECK_THROWS_WITH(inner.execute(failing, ctx), "down");
    CHECK(attempts == 1);
    CHECK(inner.stats().deferred_to_caller == 1);
    CHECK(inner.stats().exhausted == 0);
    CHECK(inner.stats().retries == 0);
    CHECK(o.budget->stats().granted == 0);  // no budget spent either
    CHECK(clock.now() == start);            // and no wait

    // caller-retries=0 (the caller's last attempt): the inner policy retries as usual.
    attempts = 0;
    Context last;
    RetryHeader::parse("attempt=3; caller-retries=0").apply_to(last, clock);
    CHECK_THROWS_WITH(inner.execute(failing, last), "down");
    CHECK(attempts == 4);

    // An operation may keep its own retries: defer_to_retrying_caller = false.
    o.defer_to_retrying_caller = false;
    bulwark::RetryPolicy own(o, clock);
    attempts = 0;
    Context again;
    RetryHeader::parse("caller-retries=1").apply_to(again, clock);
    CHECK_THROWS_WITH(own.execute(failing, again), "down");
    CHECK(attempts == 4);
}

TEST_CASE("the async schedule also leaves the retrying to a retrying caller", "[retry_header]") {
    ManualClock clock;
    bulwark::RetryPolicy retry(bulwark::RetryOptions{}, clock);
    Context ctx;
    RetryHeader::parse("caller-retries=1").apply_to(ctx, clock);
    auto schedule = retry.schedule(ctx);
    const auto failed =
        bulwark::Outcome<int>::from_error(std::make_exception_ptr(std::runtime_error("x")));
    CHECK_FALSE(schedule.next_delay(failed).has_value());
    CHECK(retry.stats().deferred_to_caller == 1);
}

TEST_CASE("an inner retry policy honours the caller's deadline from the header",
          "[retry_header][retry]") {
    ManualClock clock;
    bulwark::RetryOptions o;
    o.max_retries = 10;
    o.backoff = bulwark::Backoff::fixed(1s);
    bulwark::RetryPolicy retry(o, clock);
    std::vector<bulwark::TimePoint> starts;
    const bulwark::TimePoint t0 = clock.now();
    Context ctx;
    RetryHeader::parse("deadline-ms=1500").apply_to(ctx, clock);
    CHECK_THROWS_WITH(retry.execute(
                          [&](Context& c) -> int {
                              starts.push_back(clock.now());
                              CHECK(c.deadline() == t0 + 1500ms);
                              throw std::runtime_error("down");
                          },
                          ctx),
                      "down");
    // t = 0 and t = 1 s; a third attempt would start after a wait ending at 2 s > 1.5 s.
    REQUIRE(starts.size() == 2);
    CHECK(starts[1] == t0 + 1s);
    CHECK(retry.stats().exhausted == 1);
}

TEST_CASE("a Timeout enforces the caller's deadline from the header when it is tighter",
          "[retry_header]") {
    ManualClock clock;
    bulwark::Timeout timeout(10s, clock);
    Context ctx;
    RetryHeader::parse("deadline-ms=1500").apply_to(ctx, clock);
    bulwark::Duration seen{};
    const bulwark::Outcome<int> late = timeout.try_execute(
        [&](Context& c) {
            seen = *c.remaining(clock);
            clock.advance(2s);  // answers within its own 10 s, after the caller's 1.5 s
            return 1;
        },
        ctx);
    CHECK(seen == bulwark::Duration(1500ms));
    REQUIRE(late.has_error());
    CHECK_THROWS_AS(late.rethrow_if_error(), bulwark::TimeoutError);
    // Within the caller's deadline the answer stands.
    Context roomy;
    RetryHeader::parse("deadline-ms=1500").apply_to(roomy, clock);
    CHECK(timeout.execute(
              [&] {
                  clock.advance(1s);
                  return 7;
              },
              roomy) == 7);
}
