// A second translation unit that instantiates the same inline code as consumer.cpp, so that
// linking the two catches any non-inline definition in the single header.
#include <bulwark/bulwark.hpp>

int other_tu_uses_bulwark() {
    bulwark::FaultInjector chaos;
    return bulwark::pipeline(bulwark::Noop{}, chaos).execute([] { return 0; }) +
           static_cast<int>(bulwark::default_clock().now().time_since_epoch().count() % 1);
}
