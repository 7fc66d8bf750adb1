// expect: could not deduce the result type from the predicate
#include <bulwark/core.hpp>

int main() {
    bulwark::Classifier c;
#ifdef BULWARK_COMPILE_FAIL
    c.handle_result([](const auto& v) { return v < 0; });
#else
    c.handle_result<int>([](const auto& v) { return v < 0; });
#endif
    return c.is_failure_result(1) ? 1 : 0;
}
