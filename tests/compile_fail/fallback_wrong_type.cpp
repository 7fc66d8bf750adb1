// expect: bulwark::Fallback<T>: T must be the result type of the call it protects
#include <string>

#include <bulwark/fallback.hpp>

int main() {
#ifdef BULWARK_COMPILE_FAIL
    bulwark::Fallback<int> fallback(0);  // guards a call that returns a std::string
#else
    bulwark::Fallback<std::string> fallback("");
#endif
    auto answer = fallback.execute([] { return std::string("42"); });
    return static_cast<int>(answer.size());
}
