#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/core.hpp>

#include "catch.hpp"
#include "support.hpp"

using bulwark_test::Recorder;
using bulwark_test::Repeat;
using bulwark_test::ReplaceFailure;
using Log = std::vector<std::string>;

TEST_CASE("a pipeline applies its policies outermost first", "[pipeline]") {
    Log log;
    Recorder a("a", log);
    Recorder b("b", log);
    Recorder c("c", log);
    auto p = bulwark::pipeline(a, b, c);
    int result = p.execute([&] {
        log.push_back("call");
        return 1;
    });
    CHECK(result == 1);
    CHECK(log == Log{"enter a", "enter b", "enter c", "call", "exit c", "exit b", "exit a"});
}

TEST_CASE("order decides semantics: a retry inside a fallback is tried first", "[pipeline]") {
    int calls = 0;
    auto failing = [&]() -> int {
        ++calls;
        throw std::runtime_error("down");
    };
    auto fallback_outside = bulwark::pipeline(ReplaceFailure<int>(-1), Repeat(3));
    CHECK(fallback_outside.execute(failing) == -1);
    CHECK(calls == 3);

    // Fallback inside the retry: the first attempt already "succeeds" with the fallback value.
    calls = 0;
    auto fallback_inside = bulwark::pipeline(Repeat(3), ReplaceFailure<int>(-1));
    CHECK(fallback_inside.execute(failing) == -1);
    CHECK(calls == 1);
}

TEST_CASE("the context flows through every policy to the callable", "[pipeline]") {
    Log log;
    Recorder outer("outer", log);
    std::vector<unsigned> attempts_seen;
    bulwark::Context ctx("charge-card");
    auto p = bulwark::pipeline(outer, Repeat(3), bulwark::Noop{});
    auto result = p.try_execute(
        [&](bulwark::Context& c) -> int {
            attempts_seen.push_back(c.attempt());
            CHECK(&c == &ctx);
            CHECK(c.operation() == "charge-card");
            if (c.attempt() < 2) {
                throw std::runtime_error("transient");
            }
            return 99;
        },
        ctx);
    CHECK(result.value() == 99);
    CHECK(attempts_seen == std::vector<unsigned>{0, 1, 2});
    CHECK(ctx.attempt() == 2);
}

TEST_CASE("pipelines nest, and an empty pipeline just calls", "[pipeline]") {
    Log log;
    Recorder a("a", log);
    Recorder b("b", log);
    Recorder c("c", log);
    auto inner = bulwark::pipeline(b, c);
    auto outer = bulwark::pipeline(a, inner);
    outer.execute([&] { log.push_back("call"); });
    CHECK(log == Log{"enter a", "enter b", "enter c", "call", "exit c", "exit b", "exit a"});
    CHECK(bulwark::pipeline().execute([] { return 5; }) == 5);
    STATIC_REQUIRE(decltype(outer)::size() == 2);
}

TEST_CASE("a pipeline holds lvalue policies by reference and rvalues by value", "[pipeline]") {
    Repeat shared(2);
    auto p = bulwark::pipeline(shared, Repeat(1));
    STATIC_REQUIRE(std::is_same<decltype(p), bulwark::Pipeline<Repeat&, Repeat>>::value);
    CHECK(&p.get<0>() == &shared);
}

TEST_CASE("void and move-only results pass through a pipeline", "[pipeline]") {
    auto p = bulwark::pipeline(bulwark::Noop{}, Repeat(2), bulwark::Noop{});
    int calls = 0;
    p.execute([&] {
        if (++calls == 1) {
            throw std::runtime_error("once");
        }
    });
    CHECK(calls == 2);
    auto ptr = p.execute([] { return std::make_unique<std::string>("owned"); });
    CHECK(*ptr == "owned");
    auto o = p.try_execute([] { return bulwark_test::MoveOnly(3); });
    CHECK(o->value == 3);
}

TEST_CASE("a pipeline reports the final error when every attempt fails", "[pipeline]") {
    auto p = bulwark::pipeline(Repeat(2));
    int calls = 0;
    auto o = p.try_execute([&]() -> int { throw std::out_of_range(std::to_string(++calls)); });
    REQUIRE(o.has_error());
    CHECK_THROWS_WITH(o.rethrow_if_error(), "2");
    CHECK_THROWS_AS(p.execute([]() -> int { throw std::out_of_range("x"); }), std::out_of_range);
}

namespace {
int add(int a, int b) {
    return a + b;
}
}  // namespace

TEST_CASE("wrap keeps the call signature and applies the policies", "[pipeline][wrap]") {
    Log log;
    Recorder outer("outer", log);
    auto resilient_add = bulwark::wrap(add, outer, bulwark::Noop{});
    CHECK(resilient_add(2, 3) == 5);
    CHECK(log == Log{"enter outer", "exit outer"});
    CHECK(resilient_add.try_call(4, 5).value() == 9);
}

TEST_CASE("wrap passes arguments intact to every attempt", "[pipeline][wrap]") {
    std::vector<std::string> seen;
    auto send = [&](std::string message) -> int {
        seen.push_back(message);
        if (seen.size() < 3) {
            throw std::runtime_error("flaky");
        }
        return static_cast<int>(message.size());
    };
    auto resilient_send = bulwark::wrap(send, Repeat(3));
    CHECK(resilient_send(std::string("hello")) == 5);
    CHECK(seen == std::vector<std::string>{"hello", "hello", "hello"});
}

TEST_CASE("wrap of a void function and of a throwing one", "[pipeline][wrap]") {
    int total = 0;
    auto accumulate = bulwark::wrap([&](int x) { total += x; }, bulwark::Noop{});
    accumulate(2);
    accumulate(3);
    CHECK(total == 5);
    auto always_fails = bulwark::wrap([](int) -> int { throw std::runtime_error("no"); });
    CHECK_THROWS_AS(always_fails(1), std::runtime_error);
    CHECK(always_fails.try_call(1).has_error());
}

TEST_CASE("wrap refuses a null callable", "[pipeline][wrap]") {
    int (*null_function)(int) = nullptr;
    CHECK_THROWS_WITH(bulwark::wrap(null_function, bulwark::Noop{}),
                      "bulwark::wrap: the callable is null");
}
