// expect: bulwark::wrap: the wrapped callable cannot be called with these arguments
#include <string>

#include <bulwark/core.hpp>

int send(const std::string& to, int retries) {
    return static_cast<int>(to.size()) + retries;
}

int main() {
    auto resilient_send = bulwark::wrap(send, bulwark::Noop{});
#ifdef BULWARK_COMPILE_FAIL
    return resilient_send(3, "alice");  // the arguments swapped
#else
    return resilient_send("alice", 3);
#endif
}
