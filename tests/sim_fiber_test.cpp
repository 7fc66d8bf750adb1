#include <cfenv>
#include <stdexcept>
#include <string>

#include <bulwark/detail/sim_fiber.hpp>

#include "catch.hpp"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

using bulwark::detail::SimFiber;

namespace {

struct RoundingState {
    SimFiber* fiber = nullptr;
    int at_start = -1;
    int after_resume = -1;
#if defined(__x86_64__)
    unsigned int sse_after_resume = 0;
#endif
};

void rounding_body(void* arg) {
    auto& s = *static_cast<RoundingState*>(arg);
    s.at_start = std::fegetround();
    std::fesetround(FE_UPWARD);
    s.fiber->suspend();
    s.after_resume = std::fegetround();
#if defined(__x86_64__)
    s.sse_after_resume = _mm_getcsr() & 0x6000U;  // the SSE rounding-control bits
#endif
    std::fesetround(FE_TONEAREST);
}

}  // namespace

// The floating-point control state (x87 control word, MXCSR) belongs to the context that set it,
// as with swapcontext: a fiber that changes the rounding mode must not change the main
// context's, nor see the main context's later change.
TEST_CASE("a fiber keeps its own floating-point rounding mode", "[sim_fiber]") {
    REQUIRE(std::fegetround() == FE_TONEAREST);
    RoundingState s;
    SimFiber fiber(64 * 1024, &rounding_body, &s);
    s.fiber = &fiber;
    fiber.resume();
    const int main_after_switch = std::fegetround();
#if defined(__x86_64__)
    const unsigned int main_sse = _mm_getcsr() & 0x6000U;
#endif
    std::fesetround(FE_TONEAREST);  // leaves the test in a sane state whatever happened
    std::fesetround(FE_DOWNWARD);
    fiber.resume();
    const int main_after_finish = std::fegetround();
    std::fesetround(FE_TONEAREST);
    CHECK(fiber.finished());
    CHECK(s.at_start == FE_TONEAREST);  // starts with its creator's mode
    CHECK(main_after_switch == FE_TONEAREST);
#if defined(__x86_64__)
    CHECK(main_sse == 0U);                 // round to nearest
    CHECK(s.sse_after_resume == 0x4000U);  // round up
#endif
    CHECK(s.after_resume == FE_UPWARD);
    CHECK(main_after_finish == FE_DOWNWARD);
}

namespace {

struct UnwindState {
    SimFiber* fiber = nullptr;
    int alive = 0;
    int suspends_after_catch = 0;
    bool swallow = false;
};

struct Held {
    explicit Held(int& n) : count(&n) { ++*count; }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { --*count; }
    int* count;
};

void waiting_body(void* arg) {
    auto& s = *static_cast<UnwindState*>(arg);
    const Held held(s.alive);
    const std::string buffer(1000, 'x');  // on the heap: leaked unless unwound
    if (s.swallow) {
        try {
            s.fiber->suspend();
        } catch (...) {
            // A handler that swallows it cannot wait again.
            try {
                s.fiber->suspend();
            } catch (const bulwark::detail::SimFiberUnwind&) {
                ++s.suspends_after_catch;
            }
        }
        return;
    }
    for (;;) {
        s.fiber->suspend();
    }
}

}  // namespace

TEST_CASE("a suspended fiber is unwound: what its stack holds is destroyed", "[sim_fiber]") {
    SECTION("the unwind passes through") {
        UnwindState s;
        SimFiber fiber(64 * 1024, &waiting_body, &s);
        s.fiber = &fiber;
        fiber.resume();
        fiber.resume();
        CHECK(s.alive == 1);
        CHECK_FALSE(fiber.finished());
        fiber.unwind();
        CHECK(fiber.finished());
        CHECK(s.alive == 0);
        fiber.unwind();  // finished: nothing to do
        CHECK(fiber.finished());
    }
    SECTION("a handler swallows it") {
        UnwindState s;
        s.swallow = true;
        SimFiber fiber(64 * 1024, &waiting_body, &s);
        s.fiber = &fiber;
        fiber.resume();
        fiber.unwind();
        CHECK(fiber.finished());
        CHECK(s.alive == 0);
        CHECK(s.suspends_after_catch == 1);
    }
    SECTION("a fiber never started has nothing to unwind") {
        UnwindState s;
        SimFiber fiber(64 * 1024, &waiting_body, &s);
        s.fiber = &fiber;
        fiber.unwind();
        CHECK(fiber.finished());
        CHECK(s.alive == 0);
    }
}

namespace {

struct X87State {
    SimFiber* fiber = nullptr;
    volatile long double in = 1.5L;
    long double out = 0.0L;
};

void x87_body(void* arg) {
    auto& s = *static_cast<X87State*>(arg);
    long double y = s.in * 3.0L;
    long double z = s.in * 5.0L;
    s.fiber->suspend();
    s.out = y + z;
}

}  // namespace

// long double lives on the x87 register stack, which the contexts share: a value the compiler
// keeps there across a switch (clang -O2 does) must not meet the other context's values.
// long double lives on the x87 register stack, which the contexts share: a value the compiler
// keeps there across a switch (clang -O2 does) must not meet the other context's values.
static bool x87_round_trip(long double& fiber_out, long double& main_out) {
    X87State s;
    SimFiber fiber(64 * 1024, &x87_body, &s);
    s.fiber = &fiber;
    volatile long double m = 2.25L;
    long double a = m * 7.0L;
    long double b = m * 11.0L;
    fiber.resume();
    long double c = a + b;  // main's values across its switch
    fiber.resume();
    fiber_out = s.out;
    main_out = c;
    return fiber.finished();
}

TEST_CASE("long double values held across a switch stay intact", "[sim_fiber]") {
    long double fiber_out = 0.0L;
    long double main_out = 0.0L;
    CHECK(x87_round_trip(fiber_out, main_out));
    CHECK(static_cast<double>(fiber_out) == 12.0);
    CHECK(static_cast<double>(main_out) == 40.5);
}
