// The program every consumer test builds: a few lines of real use.
#include <cstdio>
#include <stdexcept>

#include <bulwark/bulwark.hpp>

int main() {
    using namespace std::chrono_literals;
    bulwark::ManualClock clock;
    bulwark::FaultInjector chaos(clock);
    chaos.fail_next(1).add_latency(10ms);
    auto p = bulwark::pipeline(bulwark::Noop{}, chaos);
    auto first = p.try_execute([] { return 1; });
    const int second = p.execute([] { return 2; });
    auto add = bulwark::wrap([](int a, int b) { return a + b; }, bulwark::Noop{});
    if (first.has_value() || second != 2 || add(2, 3) != 5 || clock.sleep_count() != 2) {
        std::puts("consumer: unexpected result");
        return 1;
    }
    std::printf("consumer: bulwark %s works\n", BULWARK_VERSION_STRING);
    return 0;
}
