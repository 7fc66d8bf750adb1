// DeliveryEngine's ledger under load: 8 threads submit 100k messages in all while 2 workers send
// them over 4 channels with fallback rules, against adapters that fail on a deterministic script
// (transient, permanent, bounced, rate limited with retry_after, and sends that throw after the
// provider accepted: ambiguous). After the drain, every message is in exactly one terminal state,
// the status and the dead-letter store agree, the queue store is empty, and no adapter accepted a
// message twice except through an ambiguous send. Time is a ManualClock that the test moves to
// the next due message whenever no worker holds one, so retries come due without sleeping.
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/delivery.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeliveryEngine;
using bulwark::DeliveryEngineOptions;
using bulwark::DeliveryError;
using bulwark::DeliveryErrorKind;
using bulwark::FallbackRules;
using bulwark::ManualClock;
using bulwark::MessageStatus;
using bulwark::Receipt;

namespace delivery_ledger_test {

// The sanitizers slow every step by 5-20x: the same mix at a tenth of the count.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr std::size_t total = 10000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr std::size_t total = 10000;
#else
constexpr std::size_t total = 100000;
#endif
#else
constexpr std::size_t total = 100000;
#endif
constexpr std::size_t threads = 8;
constexpr std::size_t per_thread = total / threads;

enum Channel : std::size_t { telegram, email, sms, push, channel_count };
constexpr std::array<const char*, channel_count> channel_names{"telegram", "email", "sms", "push"};

// Three routes, by message index % 3: telegram's rule (email, then sms), an explicit list (push,
// email), and none (the global order: sms, email; sms's rule falls back on permanent failures).
std::vector<std::string> route_of(std::size_t index) {
    switch (index % 3) {
        case 0:
            return {"telegram"};
        case 1:
            return {"push", "email"};
        default:
            return {};
    }
}

Channel primary_of(std::size_t index) {
    switch (index % 3) {
        case 0:
            return telegram;
        case 1:
            return push;
        default:
            return sms;
    }
}

// What a message's script is, by (index / 3) % 8: the route and the script vary independently.
enum class Script {
    clean,          // the primary accepts
    primary_flaky,  // the primary fails (transient) on its first two calls
    rate_limited,   // the primary is rate limited (retry_after 3 s) on its first call, every
                    // other channel fails on its first call: the pass fails and waits 3 s
    ambiguous,      // the first channel called accepts and then throws (a lost response)
    permanent,      // every channel refuses for good
    always_down,    // every channel fails (transient): the passes run out
    bounced,        // the primary bounces; the others fail transiently
    primary_dead,   // the primary always fails (transient), the fallbacks accept
};

Script script_of(std::size_t index) {
    return static_cast<Script>((index / 3) % 8);
}

bool may_end_sent(std::size_t index) {
    const Script s = script_of(index);
    return s != Script::permanent && s != Script::always_down && s != Script::bounced;
}

// What the adapters saw, per message: lock-free, written from the workers.
struct Ledger {
    explicit Ledger(std::size_t n)
        : accepted(n), ambiguous(n), calls(n * channel_count), any_call(n) {}
    std::vector<std::atomic<int>> accepted;   // successful sends (the adapter returned)
    std::vector<std::atomic<int>> ambiguous;  // accepted, then threw
    std::vector<std::atomic<int>> calls;      // per message and channel
    std::vector<std::atomic<int>> any_call;   // per message, over every channel
    std::atomic<int> bad_payloads{0};
};

// The message is "<index>": the adapters find their script from it.
std::size_t index_of(const std::string& message, Ledger& ledger) {
    std::size_t index = 0;
    for (char c : message) {
        if (c < '0' || c > '9') {
            ++ledger.bad_payloads;
            return 0;
        }
        index = index * 10 + static_cast<std::size_t>(c - '0');
    }
    if (index >= total) {
        ++ledger.bad_payloads;
        return 0;
    }
    return index;
}

struct Adapter {
    Channel channel;
    Ledger* ledger;

    Receipt send(const std::string& message) const {
        const std::size_t index = index_of(message, *ledger);
        // relaxed: counts per message, read after the workers have stopped.
        const int call =
            ledger->calls[index * channel_count + channel].fetch_add(1, std::memory_order_relaxed) +
            1;
        const int overall = ledger->any_call[index].fetch_add(1, std::memory_order_relaxed) + 1;
        const bool primary = channel == primary_of(index);
        const std::string name = channel_names[channel];
        switch (script_of(index)) {
            case Script::clean:
                break;
            case Script::primary_flaky:
                if (primary && call <= 2) {
                    throw DeliveryError(DeliveryErrorKind::transient, name + " timed out");
                }
                break;
            case Script::rate_limited:
                if (call == 1) {
                    if (primary) {
                        throw DeliveryError(DeliveryErrorKind::rate_limited, name + " throttled",
                                            "429", 3s);
                    }
                    throw DeliveryError(DeliveryErrorKind::transient, name + " timed out");
                }
                break;
            case Script::ambiguous:
                if (overall == 1) {
                    ledger->ambiguous[index].fetch_add(1, std::memory_order_relaxed);
                    throw DeliveryError(DeliveryErrorKind::transient,
                                        name + " accepted, then the connection dropped");
                }
                break;
            case Script::permanent:
                throw DeliveryError(DeliveryErrorKind::permanent, name + " invalid address", "400");
            case Script::always_down:
                throw DeliveryError(DeliveryErrorKind::transient, name + " unavailable", "503");
            case Script::bounced:
                if (primary) {
                    throw DeliveryError(DeliveryErrorKind::bounced, name + " bounced", "550");
                }
                throw DeliveryError(DeliveryErrorKind::transient, name + " unavailable", "503");
            case Script::primary_dead:
                if (primary) {
                    throw DeliveryError(DeliveryErrorKind::transient, name + " is down");
                }
                break;
        }
        ledger->accepted[index].fetch_add(1, std::memory_order_relaxed);
        return Receipt{name, name + ":" + message, 0.0, false};
    }
};

}  // namespace delivery_ledger_test

TEST_CASE("DeliveryEngine ledger: 8 submitting threads, scripted failures, every message ends once",
          "[delivery][stress]") {
    using namespace delivery_ledger_test;
    ManualClock clock;
    bulwark::InMemoryDeadLetterStore dlq(total, clock);
    FallbackRules rules;
    rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, 0});
    bulwark::FallbackRule sms_rule{{"email"}, bulwark::Selection::priority, 0};
    sms_rule.fallback_on_permanent = true;
    rules.set("sms", sms_rule);
    rules.set_global({"sms", "email"});
    DeliveryEngineOptions o;
    o.workers = 2;
    o.batch_size = 64;
    o.max_passes = 3;
    o.backoff = bulwark::Backoff::fixed(1s);
    o.max_elapsed = bulwark::Duration::zero();
    // The test moves the clock only while no worker holds a lease, by at most a retry_after: a
    // lease never runs out under a working worker (that race has tests of its own).
    o.lease = 1h;
    o.max_tracked = total;
    Ledger ledger(total);
    DeliveryEngine<std::string> engine(rules, dlq, o, clock);
    for (std::size_t c = 0; c < channel_count; ++c) {
        engine.add_channel(channel_names[c], Adapter{static_cast<Channel>(c), &ledger});
    }

    std::vector<std::string> ids(total);
    std::atomic<int> submit_failures{0};
    std::atomic<std::size_t> submitters_done{0};
    std::vector<std::thread> submitters;
    for (std::size_t t = 0; t < threads; ++t) {
        submitters.emplace_back([&, t] {
            for (std::size_t i = 0; i < per_thread; ++i) {
                const std::size_t index = t * per_thread + i;
                try {
                    ids[index] = engine.submit(std::to_string(index), route_of(index));
                } catch (...) {
                    ++submit_failures;
                }
            }
            ++submitters_done;
        });
    }
    // The test's loop: when no worker holds a message and none is due, time moves to the next
    // due one; otherwise the workers are at it.
    // A watchdog, not a timing: a lost message would otherwise hang the loop (a lease it holds
    // stops the clock).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    bool drained = false;
    for (;;) {
        const bool submitting = submitters_done.load() < threads;
        if (!submitting && engine.drain(bulwark::Duration::zero())) {
            drained = true;
            break;
        }
        if (std::chrono::steady_clock::now() > give_up) {
            break;
        }
        const std::optional<bulwark::WallTime> next = engine.queue().next_ready();
        const bulwark::WallTime now = clock.wall_now();
        if (next && *next > now && engine.queue().stats().leased == 0) {
            clock.advance(*next - now);
        } else {
            for (int spin = 0; spin < 32; ++spin) {
                std::this_thread::yield();
            }
        }
    }
    for (std::thread& t : submitters) {
        t.join();
    }
    engine.stop();

    REQUIRE(drained);
    CHECK(submit_failures.load() == 0);
    CHECK(ledger.bad_payloads.load() == 0);
    CHECK(engine.queue().size() == 0);

    std::size_t sent = 0;
    std::size_t dead = 0;
    std::size_t ambiguous_resends = 0;
    int wrong_state = 0;
    int twice_accepted = 0;
    int accepted_but_dead = 0;
    int dead_without_letter = 0;
    int sent_without_accept = 0;
    int not_ended = 0;
    for (std::size_t i = 0; i < total; ++i) {
        const int accepted = ledger.accepted[i].load();
        const int ambiguous = ledger.ambiguous[i].load();
        if (accepted > 1) {
            ++twice_accepted;
        }
        const std::optional<bulwark::MessageInfo> info = engine.info(ids[i]);
        if (!info) {
            ++not_ended;
            continue;
        }
        switch (info->status) {
            case MessageStatus::sent:
            case MessageStatus::delivered:
                ++sent;
                if (accepted != 1) {
                    ++sent_without_accept;
                }
                if (!may_end_sent(i) || !info->dead_letter_id.empty()) {
                    ++wrong_state;
                }
                if (dlq.get(ids[i])) {
                    ++accepted_but_dead;
                }
                ambiguous_resends += static_cast<std::size_t>(ambiguous);
                break;
            case MessageStatus::dead_lettered: {
                ++dead;
                if (accepted != 0) {
                    ++accepted_but_dead;
                }
                const auto letter = dlq.get(info->dead_letter_id);
                if (!letter || letter->payload != std::to_string(i) ||
                    info->dead_letter_id != ids[i]) {
                    ++dead_without_letter;
                }
                if (may_end_sent(i)) {
                    ++wrong_state;
                }
                break;
            }
            default:
                ++not_ended;
        }
    }
    CHECK(not_ended == 0);
    CHECK(wrong_state == 0);
    CHECK(twice_accepted == 0);
    CHECK(sent_without_accept == 0);
    CHECK(accepted_but_dead == 0);
    CHECK(dead_without_letter == 0);
    CHECK(sent + dead == total);
    CHECK(dlq.stats().pending == dead);
    std::size_t expected_dead = 0;
    std::size_t expected_ambiguous = 0;
    for (std::size_t i = 0; i < total; ++i) {
        expected_dead += may_end_sent(i) ? 0U : 1U;
        expected_ambiguous += script_of(i) == Script::ambiguous ? 1U : 0U;
    }
    CHECK(dead == expected_dead);
    // Every ambiguous send was followed by an accepted one (the message ended sent).
    CHECK(ambiguous_resends == expected_ambiguous);
    const auto counters = engine.counters();
    CHECK(counters.submitted == total);
    CHECK(counters.duplicates_suppressed == 0);
    CHECK(counters.lease_lost == 0);
    CHECK(counters.entered[static_cast<std::size_t>(MessageStatus::dead_lettered)] == dead);
}
