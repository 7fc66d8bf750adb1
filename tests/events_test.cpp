#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <bulwark/events.hpp>

#include "catch.hpp"

namespace {
struct Ping {
    int value;
};

std::atomic<int> g_listener_errors{0};
void count_listener_error(std::exception_ptr) noexcept {
    g_listener_errors.fetch_add(1);
}
}  // namespace

TEST_CASE("Listeners run in the order they were added", "[events]") {
    bulwark::Listeners<Ping> listeners;
    std::vector<std::string> log;
    listeners.add([&](const Ping& p) { log.push_back("a" + std::to_string(p.value)); });
    listeners.add([&](const Ping& p) { log.push_back("b" + std::to_string(p.value)); });
    listeners.emit(Ping{1});
    CHECK(log == std::vector<std::string>{"a1", "b1"});
}

TEST_CASE("emit_with builds the event only when someone listens", "[events]") {
    bulwark::Listeners<Ping> listeners;
    int built = 0;
    auto make = [&] {
        ++built;
        return Ping{7};
    };
    CHECK(listeners.empty());
    listeners.emit_with(make);
    CHECK(built == 0);
    int seen = 0;
    listeners.add([&](const Ping& p) { seen = p.value; });
    CHECK_FALSE(listeners.empty());
    listeners.emit_with(make);
    CHECK(built == 1);
    CHECK(seen == 7);
}

TEST_CASE("A removed listener is no longer called", "[events]") {
    bulwark::Listeners<Ping> listeners;
    int a = 0;
    int b = 0;
    auto id = listeners.add([&](const Ping&) { ++a; });
    listeners.add([&](const Ping&) { ++b; });
    CHECK(listeners.remove(id));
    CHECK_FALSE(listeners.remove(id));
    CHECK_FALSE(listeners.remove(0));
    listeners.emit(Ping{0});
    CHECK(a == 0);
    CHECK(b == 1);
}

TEST_CASE("An id from another list removes nothing there", "[events]") {
    bulwark::Listeners<Ping> first;
    bulwark::Listeners<Ping> second;
    int heard = 0;
    const bulwark::ListenerId a = first.add([&](const Ping&) { ++heard; });
    const bulwark::ListenerId b = second.add([&](const Ping&) { ++heard; });
    CHECK(a != b);
    CHECK_FALSE(second.remove(a));
    CHECK_FALSE(first.remove(b));
    first.emit(Ping{0});
    second.emit(Ping{0});
    CHECK(heard == 2);
}

TEST_CASE("A throwing listener goes to the error handler and the others still run", "[events]") {
    bulwark::set_listener_error_handler(&count_listener_error);
    g_listener_errors = 0;
    bulwark::Listeners<Ping> listeners;
    int after = 0;
    listeners.add([](const Ping&) { throw std::runtime_error("listener bug"); });
    listeners.add([&](const Ping&) { ++after; });
    listeners.emit(Ping{0});
    listeners.emit_with([] { return Ping{1}; });
    CHECK(g_listener_errors == 2);
    CHECK(after == 2);
    bulwark::set_listener_error_handler(nullptr);
}

TEST_CASE("An empty callback is refused", "[events]") {
    bulwark::Listeners<Ping> listeners;
    CHECK_THROWS_AS(listeners.add(nullptr), std::invalid_argument);
}

TEST_CASE("Listeners can be added and removed while others emit", "[events][concurrency]") {
    bulwark::Listeners<Ping> listeners;
    std::atomic<long> total{0};
    listeners.add([&](const Ping& p) { total.fetch_add(p.value, std::memory_order_relaxed); });
    std::atomic<bool> stop{false};
    std::vector<std::thread> emitters;
    std::atomic<long> emitted{0};
    for (int t = 0; t < 3; ++t) {
        emitters.emplace_back([&] {
            while (!stop.load()) {
                listeners.emit(Ping{1});
                emitted.fetch_add(1, std::memory_order_relaxed);
            }
        });
    }
    std::atomic<long> extra{0};
    for (int i = 0; i < 200; ++i) {
        auto id =
            listeners.add([&](const Ping&) { extra.fetch_add(1, std::memory_order_relaxed); });
        listeners.emit(Ping{1});
        emitted.fetch_add(1, std::memory_order_relaxed);
        CHECK(listeners.remove(id));
    }
    stop = true;
    for (auto& t : emitters) {
        t.join();
    }
    // The first listener never left, so it saw every emission exactly once.
    CHECK(total.load() == emitted.load());
    CHECK(extra.load() >= 200);
}
