// expect: bulwark::Fallback<T>: the fallback callable returns something that does not convert to T
#include <exception>
#include <string>

#include <bulwark/fallback.hpp>

int main() {
#ifdef BULWARK_COMPILE_FAIL
    bulwark::Fallback<int> fallback([](const std::exception_ptr&) { return std::string("0"); });
#else
    bulwark::Fallback<int> fallback([](const std::exception_ptr&) { return 0; });
#endif
    return fallback.execute([] { return 1; });
}
