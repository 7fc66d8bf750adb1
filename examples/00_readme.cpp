// The usage example of README.md, compiled and run by ctest; the test readme_snippet checks that
// README.md shows exactly the lines between the markers.
// README-BEGIN
#include <bulwark/bulwark.hpp>

int lookup_price(int sku);  // your dependency

int main() {
    bulwark::FaultInjector chaos;  // a test policy: fails calls on a script
    chaos.fail_next(1);
    // Policies compose outermost first; a pipeline is itself a policy.
    auto p = bulwark::pipeline(bulwark::Noop{}, chaos);
    bulwark::Outcome<int> first = p.try_execute([] { return lookup_price(7); });  // never throws
    int second = p.execute([](bulwark::Context& ctx) { return ctx.cancelled() ? 0 : 42; });
    auto resilient_lookup = bulwark::wrap(lookup_price, chaos);  // same signature, policies applied
    std::printf("first failed: %d, second: %d, wrapped: %d\n", !first, second, resilient_lookup(8));
}
// README-END

int lookup_price(int sku) {
    return sku * 100;
}
