// Multi-channel delivery: a FallbackChain tries email, SMS and push in turn, each channel with
// its own circuit breaker and rate limiter (given to the chain, which skips a channel whose
// breaker is open without calling it) and a bulkhead and timeout around the provider call. When
// no channel delivers, the message goes to a dead-letter store with its attempts instead of being
// lost, and is redriven through the chain once the providers are back. The providers are
// FaultInjectors on a ManualClock, so an outage and a recovery play out in simulated time and the
// program runs in milliseconds.
//
// Build and run:  cmake --preset dev && cmake --build --preset dev --target 02_channels
//                 ./build/dev/examples/02_channels
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <bulwark/bulwark.hpp>
#include <bulwark/dead_letter.hpp>

namespace {

using namespace std::chrono_literals;

struct Receipt {
    std::string channel;
    std::string text;
};

// One delivery channel and the policies that protect it.
struct Channel {
    Channel(std::string channel_name, bulwark::Clock& clock)
        : name(std::move(channel_name)),
          provider(clock),
          breaker(name, breaker_options(), clock),
          bulkhead(4, 0, 1s, clock),
          limiter(bulwark::TokenBucket{50, 10}, clock),
          timeout(2s, clock) {}

    static bulwark::CircuitBreakerOptions breaker_options() {
        bulwark::CircuitBreakerOptions o;
        o.failure_threshold = 3;
        o.break_duration = 30s;
        o.half_open_calls = 1;
        return o;
    }

    // The provider call behind a bulkhead and a timeout; throws when it fails. The breaker and
    // the rate limiter are the chain's to ask (ChannelOptions), before this is called.
    Receipt send(const std::string& message) {
        auto policies = bulwark::pipeline(bulkhead, timeout, provider);
        return policies.execute([&] { return Receipt{name, message}; });
    }

    bulwark::ChannelOptions options() {
        bulwark::ChannelOptions o;
        o.breaker = &breaker;
        o.limiter = &limiter;
        return o;
    }

    std::string name;
    bulwark::FaultInjector provider;  // stands in for the provider's API
    bulwark::CircuitBreaker breaker;
    bulwark::Bulkhead bulkhead;
    bulwark::RateLimiter limiter;
    bulwark::Timeout timeout;
};

std::string error_text(const std::exception_ptr& error) {
    try {
        if (error) {
            std::rethrow_exception(error);
        }
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
    }
    return "no channel delivered";
}

// "delivered", "failed" (called, and it failed) or why the chain did not call the channel.
std::string outcome_of(const bulwark::Attempt& a) {
    if (a.ok) {
        return "delivered";
    }
    return a.reason == bulwark::FallbackReason::primary_failed ? "failed"
                                                               : bulwark::to_string(a.reason);
}

}  // namespace

int main() {
    bulwark::ManualClock clock;
    std::vector<std::unique_ptr<Channel>> channels;
    for (const char* name : {"email", "sms", "push"}) {
        channels.push_back(std::make_unique<Channel>(name, clock));
        channels.back()->breaker.on_state_change([](const bulwark::StateChange& c) {
            std::printf("    [%.*s breaker: %s -> %s (%s)]\n", static_cast<int>(c.breaker.size()),
                        c.breaker.data(), bulwark::to_string(c.from), bulwark::to_string(c.to),
                        bulwark::to_string(c.reason));
        });
    }
    Channel& email = *channels[0];
    Channel& sms = *channels[1];
    Channel& push = *channels[2];
    email.provider.fail_always();                // the email provider is down,
    push.provider.fail_always();                 // so is push,
    sms.provider.fail_with_probability(0.3, 7);  // and SMS is flaky

    // priority: email first, then SMS, then push; an open breaker skips its channel at no cost.
    bulwark::FallbackChain<Receipt(const std::string&)> chain(bulwark::Selection::priority,
                                                              bulwark::ChainOptions{}, clock);
    for (auto& channel : channels) {
        Channel* c = channel.get();
        chain.add(
            c->name, [c](const std::string& message) { return c->send(message); }, c->options());
    }

    bulwark::InMemoryDeadLetterStore dead_letters(1000, clock);
    int delivered = 0;
    for (int i = 1; i <= 12; ++i) {
        if (i == 7) {
            std::printf("  -- 40 s later, email and push are back --\n");
            clock.advance(40s);
            email.provider.heal();
            push.provider.heal();
        }
        const std::string message = "message " + std::to_string(i);
        bulwark::ChainResult<Receipt> result = chain.execute(message);
        std::string route;
        for (const bulwark::Attempt& a : result.attempts()) {
            route += std::string(route.empty() ? "" : ", ") + std::string(a.channel) + " " +
                     outcome_of(a);
        }
        if (result.ok()) {
            ++delivered;
        } else {
            // Nobody took it: keep it, with what was tried, rather than lose it.
            bulwark::DeadLetter letter;
            letter.type = "notification";
            letter.payload = message;
            letter.error = error_text(result.error());
            for (const bulwark::Attempt& a : result.attempts()) {
                // Attempts are timed on the monotonic clock; a stored record keeps wall time.
                const bulwark::WallTime at = clock.wall_now() - (clock.now() - a.started);
                letter.attempts.push_back({at, std::string(a.channel), outcome_of(a)});
            }
            dead_letters.add(std::move(letter));
            route += " -> dead-lettered";
        }
        std::printf("  %s: %s\n", message.c_str(), route.c_str());
        clock.advance(1s);
    }

    const std::size_t parked = dead_letters.size();
    std::printf("\ndelivered %d, dead-lettered %zu\n", delivered, parked);

    // The providers are back: redrive the dead letters through the chain.
    const bulwark::ReprocessResult redrive = dead_letters.reprocess(
        bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending),
        [&](const bulwark::DeadLetter& d) { return chain.execute(d.payload).ok(); });
    std::printf("redriven %zu: %zu resent, %zu still pending\n", redrive.matched, redrive.resent,
                redrive.failed);
    for (auto& channel : channels) {
        const bulwark::ChannelStats c = chain.stats(channel->name);
        const bulwark::CircuitBreakerStats b = channel->breaker.stats();
        std::printf(
            "  %-5s calls %llu, delivered %llu (%llu as a fallback), skipped %llu; breaker "
            "%s, opened %llu\n",
            channel->name.c_str(), static_cast<unsigned long long>(c.calls),
            static_cast<unsigned long long>(c.successes),
            static_cast<unsigned long long>(c.fallbacks),
            static_cast<unsigned long long>(c.skipped), bulwark::to_string(b.state),
            static_cast<unsigned long long>(b.opened));
    }
    // Every message was delivered, or dead-lettered and then resent or still pending: none lost.
    const bulwark::DeadLetterStats s = dead_letters.stats();
    const bool none_lost = static_cast<std::size_t>(delivered) + parked == 12 &&
                           redrive.matched == parked && s.reprocessed == redrive.resent &&
                           s.pending == parked - redrive.resent;
    return none_lost ? 0 : 1;
}
