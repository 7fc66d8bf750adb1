// expect: every argument of bulwark::pipeline\(\)/wrap\(\) must be a policy
#include <bulwark/core.hpp>

int main() {
#ifdef BULWARK_COMPILE_FAIL
    auto p = bulwark::pipeline(bulwark::Noop{}, 42);
#else
    auto p = bulwark::pipeline(bulwark::Noop{});
#endif
    return p.execute([] { return 0; });
}
