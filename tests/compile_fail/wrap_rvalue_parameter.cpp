// expect: Arguments are passed as lvalues so that every attempt
#include <memory>

#include <bulwark/core.hpp>

int consume(std::unique_ptr<int> p) {
    return *p;
}
int peek(const std::unique_ptr<int>& p) {
    return *p;
}

int main() {
#ifdef BULWARK_COMPILE_FAIL
    auto w = bulwark::wrap(consume, bulwark::Noop{});
#else
    auto w = bulwark::wrap(peek, bulwark::Noop{});
#endif
    return w(std::make_unique<int>(0));
}
