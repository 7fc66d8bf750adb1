// The typical user translation unit of the compile-time report (cmake/compile_time.py): the
// single header, a pipeline(fallback, timeout, retry, breaker) and a wrap of a free function,
// both called. The report compiles it with g++ -std=c++17 -O0 -c; to see where the time goes
// (from the repository's root):
//   g++ -std=c++17 -O0 -c -ftime-report -I single_include cmake/compile_time_typical.cpp
#include <cstdio>
#include <string>

#include <bulwark/bulwark.hpp>

using namespace std::chrono_literals;

// The dependency: a free function, as most services have.
std::string fetch_quote(int id) {
    return "quote-" + std::to_string(id);
}

int main() {
    bulwark::Fallback<std::string> fallback(std::string("cached quote"));
    bulwark::Timeout timeout(2s);
    bulwark::RetryOptions retry_options;
    retry_options.max_retries = 3;
    retry_options.backoff = bulwark::Backoff::exponential(100ms).max_delay(2s);
    bulwark::RetryPolicy retry(retry_options);
    bulwark::CircuitBreakerOptions breaker_options;
    breaker_options.failure_threshold = 5;
    breaker_options.break_duration = 30s;
    bulwark::CircuitBreaker breaker("quotes", breaker_options);

    auto policies = bulwark::pipeline(fallback, timeout, retry, breaker);
    const std::string first = policies.execute([] { return fetch_quote(1); });

    auto resilient_fetch = bulwark::wrap(fetch_quote, retry, breaker);
    const std::string second = resilient_fetch(2);
    const bulwark::Outcome<std::string> third = resilient_fetch.try_call(3);

    std::printf("%s %s %s\n", first.c_str(), second.c_str(), third.value_or("none").c_str());
    return 0;
}
