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
