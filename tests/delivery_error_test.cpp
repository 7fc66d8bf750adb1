// DeliveryError and DeliveryClassifier: what a channel adapter's failure means.
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>

#include <bulwark/delivery_error.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::DeliveryClassifier;
using bulwark::DeliveryError;
using bulwark::DeliveryErrorKind;

namespace {

template <class E>
std::exception_ptr thrown(E e) {
    return std::make_exception_ptr(std::move(e));
}

struct QuotaExceeded : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace

TEST_CASE("DeliveryClassifier: a DeliveryError says its own kind, code and wait",
          "[delivery_error]") {
    const DeliveryClassifier c;
    const bulwark::DeliveryFailure f =
        c.classify(thrown(DeliveryError(DeliveryErrorKind::rate_limited, "slow down", "429", 30s)));
    CHECK(f.kind == DeliveryErrorKind::rate_limited);
    CHECK(f.code == "429");
    CHECK(f.retry_after == 30s);
    CHECK(c.classify(thrown(DeliveryError(DeliveryErrorKind::bounced, "mailbox full"))).kind ==
          DeliveryErrorKind::bounced);
    // A negative wait is no wait.
    CHECK(DeliveryError(DeliveryErrorKind::rate_limited, "x", "", -5s).retry_after() == 0s);
}

TEST_CASE("DeliveryClassifier: the caller's own rejections are transient, the rest unknown",
          "[delivery_error]") {
    const DeliveryClassifier c;
    const bulwark::DeliveryFailure open =
        c.classify(thrown(bulwark::CircuitOpenError(nullptr, "breaker 'sms' is open", 12s)));
    CHECK(open.kind == DeliveryErrorKind::transient);
    CHECK(open.retry_after == 12s);
    CHECK(c.classify(thrown(std::runtime_error("socket reset"))).kind ==
          DeliveryErrorKind::unknown);
    CHECK(c.classify(thrown(42)).kind == DeliveryErrorKind::unknown);
}

TEST_CASE("DeliveryClassifier: rules for the adapter's exceptions, first match wins",
          "[delivery_error]") {
    DeliveryClassifier c;
    c.on<std::invalid_argument>(DeliveryErrorKind::permanent)
        .on<std::logic_error>(DeliveryErrorKind::bounced)
        .on_if(
            [](const std::exception_ptr& e) {
                try {
                    std::rethrow_exception(e);
                } catch (const QuotaExceeded&) {
                    return true;
                } catch (...) {
                    return false;
                }
            },
            DeliveryErrorKind::rate_limited);
    CHECK(c.classify(thrown(std::invalid_argument("bad number"))).kind ==
          DeliveryErrorKind::permanent);  // before the logic_error rule it derives from
    CHECK(c.classify(thrown(std::logic_error("x"))).kind == DeliveryErrorKind::bounced);
    CHECK(c.classify(thrown(QuotaExceeded("quota"))).kind == DeliveryErrorKind::rate_limited);
    CHECK(c.classify(thrown(std::runtime_error("x"))).kind == DeliveryErrorKind::unknown);
    // A rule overrides a DeliveryError's own kind; its code and wait stay.
    c.on<DeliveryError>(DeliveryErrorKind::transient);
    const bulwark::DeliveryFailure f =
        c.classify(thrown(DeliveryError(DeliveryErrorKind::permanent, "x", "E1", 3s)));
    CHECK(f.kind == DeliveryErrorKind::transient);
    CHECK(f.code == "E1");
    CHECK(f.retry_after == 3s);
}

TEST_CASE("DeliveryClassifier: an empty predicate or an unknown kind is refused by name",
          "[delivery_error]") {
    DeliveryClassifier c;
    CHECK_THROWS_WITH(c.on_if({}, DeliveryErrorKind::permanent),
                      BULWARK_CATCH_MESSAGE_CONTAINS("DeliveryClassifier.on_if"));
    CHECK_THROWS_WITH(c.on<std::exception>(static_cast<DeliveryErrorKind>(9)),
                      BULWARK_CATCH_MESSAGE_CONTAINS("DeliveryClassifier.on_if kind"));
    CHECK(std::string(bulwark::to_string(DeliveryErrorKind::rate_limited)) == "rate_limited");
    CHECK(bulwark::retryable(DeliveryErrorKind::unknown));
    CHECK_FALSE(bulwark::retryable(DeliveryErrorKind::bounced));
}
