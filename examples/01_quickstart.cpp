// Quickstart: the core vocabulary — outcomes, contexts, composition, wrapping, listeners — with
// a FaultInjector standing in for an unreliable SMS provider.
//
// Build and run:  cmake --preset dev && cmake --build --preset dev --target 01_quickstart
//                 ./build/dev/examples/01_quickstart
#include <cstdio>
#include <string>

#include <bulwark/bulwark.hpp>

namespace {

struct Receipt {
    std::string id;
};

// The dependency: a real program would call an HTTP API here.
Receipt send_sms(const std::string& phone, const std::string& text) {
    return Receipt{"sms-" + std::to_string(phone.size() + text.size())};
}

// A policy of your own is a class with apply(ctx, next). This one tries up to three times.
class TryThreeTimes : public bulwark::PolicyBase<TryThreeTimes> {
public:
    template <class Next>
    auto apply(bulwark::Context& ctx, Next&& next) {
        auto outcome = next(ctx);
        for (std::uint32_t attempt = 1; attempt < 3 && !outcome; ++attempt) {
            ctx.set_attempt(attempt);
            outcome = next(ctx);
        }
        return outcome;
    }
};

}  // namespace

int main() {
    using namespace std::chrono_literals;

    // A test clock: the injected latency advances it instead of sleeping.
    bulwark::ManualClock clock;
    bulwark::FaultInjector flaky_network(clock);
    flaky_network.fail_with_probability(0.4, /*seed*/ 7).add_latency(120ms);
    flaky_network.on_fault([](const bulwark::FaultEvent& e) {
        std::printf("  call %llu: %s\n", static_cast<unsigned long long>(e.call),
                    e.failed ? "network error (injected)" : "delivered to provider");
    });

    // Outermost first: retry around the flaky network.
    TryThreeTimes retry;
    auto resilient = bulwark::pipeline(retry, flaky_network);

    int delivered = 0;
    for (int i = 0; i < 5; ++i) {
        bulwark::Context ctx("send-sms");
        std::printf("message %d:\n", i + 1);
        bulwark::Outcome<Receipt> outcome = resilient.try_execute(
            [&](bulwark::Context& c) {
                return send_sms("+15550100", "attempt " + std::to_string(c.attempt()));
            },
            ctx);
        if (outcome) {
            ++delivered;
            std::printf("  -> %s after %u attempt(s)\n", outcome->id.c_str(), ctx.attempt() + 1);
        } else {
            std::printf("  -> gave up after %u attempts\n", ctx.attempt() + 1);
        }
    }

    // The same policies, decorator style: a callable with send_sms's signature.
    auto resilient_send = bulwark::wrap(send_sms, retry, flaky_network);
    bulwark::Outcome<Receipt> last =
        resilient_send.try_call(std::string("+15550101"), std::string("hello"));

    std::printf(
        "delivered %d of 5 (+%s), %llu provider calls, %lld ms of simulated latency\n", delivered,
        last ? "1" : "0", static_cast<unsigned long long>(flaky_network.calls()),
        static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(clock.total_slept()).count()));
    return delivered > 0 ? 0 : 1;
}
