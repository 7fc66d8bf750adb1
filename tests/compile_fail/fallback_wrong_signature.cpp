// expect: bulwark::Fallback<T>: the fallback must be a value convertible to T, or a callable taking
#include <exception>

#include <bulwark/fallback.hpp>

int main() {
#ifdef BULWARK_COMPILE_FAIL
    bulwark::Fallback<int> fallback([](int status) { return status; });  // not an error handler
#else
    bulwark::Fallback<int> fallback([](const std::exception_ptr&) { return 0; });
#endif
    return fallback.execute([] { return 1; });
}
