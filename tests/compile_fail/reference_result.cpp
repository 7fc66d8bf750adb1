// expect: the callable returns a reference
#include <bulwark/core.hpp>

int main() {
    static int shared = 0;
    bulwark::Noop noop;
#ifdef BULWARK_COMPILE_FAIL
    return noop.execute([]() -> int& { return shared; });
#else
    return *noop.execute([]() -> int* { return &shared; });
#endif
}
