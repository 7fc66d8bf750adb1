// Multi-channel delivery: a DeliveryEngine sends notifications over email, SMS and push. Email is
// the primary and falls back to SMS, then push; each channel has its own circuit breaker and
// rate limiter (the engine's routing chain skips a channel whose breaker is open without calling
// it) and a bulkhead and timeout around the provider call. A pass that fails is retried later; a
// message that cannot be delivered goes to the dead-letter store with its history instead of
// being lost, and is redriven once the providers are back. The providers are FaultInjectors on a
// ManualClock, so an outage and a recovery play out in simulated time and the program runs in
// milliseconds.
//
// Build and run:  cmake --preset dev && cmake --build --preset dev --target 02_channels
//                 ./build/dev/examples/02_channels
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <bulwark/bulwark.hpp>

namespace {

using namespace std::chrono_literals;

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

    // The adapter: the provider call behind a bulkhead and a timeout; throws when it fails. The
    // breaker and the rate limiter are the engine's to ask (ChannelOptions), before this runs.
    bulwark::Receipt send(const std::string& /*message*/) {
        auto policies = bulwark::pipeline(bulkhead, timeout, provider);
        return policies.execute([&] {
            return bulwark::Receipt{name + "-provider", name + "-" + std::to_string(++sent),
                                    name == "sms" ? 0.0075 : 0.0001, false};
        });
    }

    bulwark::ChannelOptions options() {
        bulwark::ChannelOptions o;
        o.breaker = &breaker;
        o.limiter = &limiter;
        return o;
    }

    std::string name;
    int sent = 0;
    bulwark::FaultInjector provider;  // stands in for the provider's API
    bulwark::CircuitBreaker breaker;
    bulwark::Bulkhead bulkhead;
    bulwark::RateLimiter limiter;
    bulwark::Timeout timeout;
};

// "email sent", "sms failed", "push unavailable" ... for each channel considered.
std::string route_of(const std::vector<bulwark::DeliveryAttempt>& attempts) {
    std::string route;
    std::uint32_t pass = 0;
    for (const bulwark::DeliveryAttempt& a : attempts) {
        if (a.pass != pass) {
            route +=
                (route.empty() ? "" : " | ") + std::string("pass ") + std::to_string(a.pass) + ":";
            pass = a.pass;
        }
        const std::string outcome = a.ok ? "sent"
                                    : a.skipped != bulwark::FallbackReason::none
                                        ? bulwark::to_string(a.skipped)
                                        : "failed";
        route += " " + a.channel + " " + outcome;
    }
    return route;
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
    sms.provider.fail_with_probability(0.6, 7);  // and SMS is flaky

    // Email falls back to SMS, then push. A failed pass is retried 20 s later, three passes in
    // all; no workers: this program drives the engine with run_due() on its manual clock.
    bulwark::FallbackRules rules;
    rules.set("email", {{"sms", "push"}, bulwark::Selection::priority, 0});
    bulwark::DeliveryEngineOptions options;
    options.workers = 0;
    options.max_passes = 3;
    options.backoff = bulwark::Backoff::fixed(20s);
    bulwark::InMemoryDeadLetterStore dead_letters(1000, clock);
    bulwark::DeliveryEngine<std::string> engine(rules, dead_letters, options, clock);
    for (auto& channel : channels) {
        engine.add_channel(channel->name, *channel, channel->options());
    }

    std::vector<std::string> ids;
    for (int i = 1; i <= 12; ++i) {
        if (i == 7) {
            // Two more minutes of outage: the retries fall due and fail, the last passes too.
            for (int s = 0; s < 12; ++s) {
                clock.advance(10s);
                engine.run_due();
            }
            std::printf("  -- two minutes later, email and push are back --\n");
            email.provider.heal();
            push.provider.heal();
        }
        ids.push_back(engine.submit("message " + std::to_string(i), {"email"}));
        engine.run_due();
        clock.advance(1s);
    }
    engine.drain(5min);  // the retries still scheduled
    for (std::size_t i = 0; i < ids.size(); ++i) {
        std::printf("  message %zu: %s ->%s\n", i + 1, bulwark::to_string(*engine.status(ids[i])),
                    route_of(engine.attempts(ids[i])).c_str());
    }

    const std::size_t parked = dead_letters.size();
    std::printf("\ndead-lettered %zu; the providers are back: redrive them\n", parked);
    const bulwark::ReprocessResult redrive = engine.reprocess_dead_letters(
        bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending));
    engine.drain(5min);
    std::printf("redriven %zu\n", redrive.resent);

    const bulwark::DeliveryStats stats = engine.stats();
    for (const bulwark::ChannelDeliveryStats& c : stats.channels) {
        std::printf("  %-5s attempts %llu, sent %llu (%llu as a fallback), cost %.4f\n",
                    c.channel.c_str(), static_cast<unsigned long long>(c.attempts),
                    static_cast<unsigned long long>(c.successes),
                    static_cast<unsigned long long>(c.successful_fallbacks), c.cost);
    }
    // Every message was sent, or dead-lettered and then redriven and sent: none lost.
    bool none_lost = redrive.resent == parked;
    for (const std::string& id : ids) {
        none_lost = none_lost && engine.status(id) == bulwark::MessageStatus::sent;
    }
    std::printf("all %zu sent: %s\n", ids.size(), none_lost ? "yes" : "no");
    return none_lost ? 0 : 1;
}
