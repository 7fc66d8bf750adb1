// Delivery errors: what a channel adapter's failure means for a message (retry, fall back, stop).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DELIVERY_ERROR_HPP
#define BULWARK_DELIVERY_ERROR_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/classify.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// What a failed delivery attempt means.
enum class DeliveryErrorKind : std::uint8_t {
    transient,     // worth retrying on the same channel (a timeout, a 5xx), then falling back
    permanent,     // retrying cannot help (an invalid address, a 4xx): no retry
    bounced,       // the provider accepted and the recipient refused: no retry
    rate_limited,  // the provider asks to slow down: retry after retry_after
    unknown,       // anything else: treated as transient
};

inline constexpr std::size_t delivery_error_kind_count = 5;

inline const char* to_string(DeliveryErrorKind kind) noexcept {
    switch (kind) {
        case DeliveryErrorKind::transient:
            return "transient";
        case DeliveryErrorKind::permanent:
            return "permanent";
        case DeliveryErrorKind::bounced:
            return "bounced";
        case DeliveryErrorKind::rate_limited:
            return "rate_limited";
        case DeliveryErrorKind::unknown:
            break;
    }
    return "unknown";
}

// Whether an attempt that failed this way may be made again on the same channel.
inline bool retryable(DeliveryErrorKind kind) noexcept {
    return kind == DeliveryErrorKind::transient || kind == DeliveryErrorKind::rate_limited ||
           kind == DeliveryErrorKind::unknown;
}

// What a channel adapter throws to say how its send failed: the kind, the provider's error code
// (empty when none) and, for rate_limited, how long the provider asked to wait.
//   throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "invalid number", "21211");
class DeliveryError : public std::runtime_error {
public:
    DeliveryError(DeliveryErrorKind kind, const std::string& what, std::string code = {},
                  Duration retry_after = Duration::zero())
        : std::runtime_error(what),
          kind_(kind),
          code_(std::move(code)),
          retry_after_(retry_after < Duration::zero() ? Duration::zero() : retry_after) {}

    DeliveryErrorKind kind() const noexcept { return kind_; }
    const std::string& code() const noexcept { return code_; }
    Duration retry_after() const noexcept { return retry_after_; }

private:
    DeliveryErrorKind kind_;
    std::string code_;
    Duration retry_after_;
};

// How a failure was classified: its kind, the error code and the wait the error asked for.
struct DeliveryFailure {
    DeliveryErrorKind kind = DeliveryErrorKind::unknown;
    std::string code;
    Duration retry_after{0};
};

// Maps a failed attempt's exception to a DeliveryFailure. Rules are tried in the order added,
// the first that matches wins; then the defaults: a DeliveryError says its own kind; a
// RejectedError (an open breaker, a rate limiter, a bulkhead: the caller's own policies) is
// transient with its retry_after(); anything else is unknown (treated as transient). Per channel
// and overridable, as the policies' classifiers are:
//   bulwark::DeliveryClassifier c;
//   c.on<std::invalid_argument>(bulwark::DeliveryErrorKind::permanent);
//   c.on_if([](const std::exception_ptr& e) { return is_quota(e); },
//           bulwark::DeliveryErrorKind::rate_limited);
// Copyable; const use is thread-safe.
class DeliveryClassifier {
public:
    using Predicate = std::function<bool(const std::exception_ptr&)>;

    // Exceptions of type E (or derived from it) are of `kind`.
    template <class E>
    DeliveryClassifier& on(DeliveryErrorKind kind) {
        static_assert(!std::is_reference<E>::value && !std::is_pointer<E>::value,
                      "DeliveryClassifier::on<E>: E is the exception's type, as thrown");
        return on_if(&detail::holds_exception<E>, kind);
    }

    // Exceptions for which `predicate` returns true are of `kind`.
    DeliveryClassifier& on_if(Predicate predicate, DeliveryErrorKind kind) {
        if (!predicate) {
            detail::throw_invalid_argument("DeliveryClassifier.on_if: empty predicate");
        }
        detail::check_enumerator(kind, DeliveryErrorKind::unknown, "DeliveryClassifier.on_if kind",
                                 "DeliveryErrorKind");
        rules_.push_back(Rule{std::move(predicate), kind});
        return *this;
    }

    // The failure `error` (not null) describes.
    DeliveryFailure classify(const std::exception_ptr& error) const {
        DeliveryFailure failure = defaults(error);
        for (const Rule& rule : rules_) {
            if (rule.predicate(error)) {
                failure.kind = rule.kind;
                break;
            }
        }
        return failure;
    }

private:
    struct Rule {
        Predicate predicate;
        DeliveryErrorKind kind;
    };

    static DeliveryFailure defaults(const std::exception_ptr& error) {
        DeliveryFailure failure;
        try {
            std::rethrow_exception(error);
        } catch (const DeliveryError& e) {
            failure.kind = e.kind();
            failure.code = e.code();
            failure.retry_after = e.retry_after();
        } catch (const RejectedError& e) {
            failure.kind = DeliveryErrorKind::transient;
            failure.retry_after = std::max(e.retry_after(), Duration::zero());
        } catch (...) {
            failure.kind = DeliveryErrorKind::unknown;
        }
        return failure;
    }

    std::vector<Rule> rules_;
};

}  // namespace bulwark

#endif  // BULWARK_DELIVERY_ERROR_HPP
