// expect: must take no arguments or a single bulwark::Context&
#include <bulwark/core.hpp>

int main() {
    bulwark::Noop noop;
#ifdef BULWARK_COMPILE_FAIL
    return noop.execute([](int x) { return x; });
#else
    return noop.execute([] { return 0; });
#endif
}
