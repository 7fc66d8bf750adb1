// Multi-channel delivery with the policies built so far: each channel (email, SMS, push) has its
// own circuit breaker, bulkhead and rate limiter behind a timeout; a message goes to the first
// channel that takes it, and a Fallback queues it when every channel fails. The providers are
// FaultInjectors on a ManualClock, so an outage and a recovery play out in simulated time and the
// program runs in milliseconds.
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

struct Receipt {
    std::string channel;
    bool queued = false;
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

    // Outermost first: the breaker rejects before a call takes a bulkhead slot or a permit.
    bulwark::Outcome<Receipt> send(const std::string& message) {
        auto policies = bulwark::pipeline(breaker, bulkhead, limiter, timeout, provider);
        return policies.try_execute([&] { return Receipt{name + " <- " + message}; });
    }

    std::string name;
    bulwark::FaultInjector provider;  // stands in for the provider's API
    bulwark::CircuitBreaker breaker;
    bulwark::Bulkhead bulkhead;
    bulwark::RateLimiter limiter;
    bulwark::Timeout timeout;
};

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

    // When every channel fails, queue the message instead of losing it.
    bulwark::Fallback<Receipt> queue_it([](const std::exception_ptr&) {
        return Receipt{"retry queue", true};
    });
    int delivered = 0;
    int queued = 0;
    for (int i = 1; i <= 12; ++i) {
        if (i == 7) {
            std::printf("  -- 40 s later, email and push are back --\n");
            clock.advance(40s);
            email.provider.heal();
            push.provider.heal();
        }
        const std::string message = "message " + std::to_string(i);
        Receipt receipt = queue_it.execute([&] {
            std::exception_ptr last;
            for (auto& channel : channels) {
                bulwark::Outcome<Receipt> sent = channel->send(message);
                if (sent) {
                    return *sent;
                }
                last = sent.error();
            }
            std::rethrow_exception(last);
        });
        (receipt.queued ? queued : delivered) += 1;
        std::printf("  %s: %s\n", message.c_str(), receipt.channel.c_str());
        clock.advance(1s);
    }

    std::printf("\ndelivered %d, queued %d\n", delivered, queued);
    for (auto& channel : channels) {
        const bulwark::CircuitBreakerStats s = channel->breaker.stats();
        std::printf(
            "  %-5s breaker %-9s calls %llu, failures %llu, rejected %llu, opened %llu\n",
            channel->name.c_str(), bulwark::to_string(s.state),
            static_cast<unsigned long long>(s.calls), static_cast<unsigned long long>(s.failures),
            static_cast<unsigned long long>(s.rejected), static_cast<unsigned long long>(s.opened));
    }
    return delivered + queued == 12 ? 0 : 1;
}
