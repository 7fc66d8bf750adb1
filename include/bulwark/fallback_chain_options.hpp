// FallbackChain vocabulary: selections, reasons, options, attempts, results and rules.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FALLBACK_CHAIN_OPTIONS_HPP
#define BULWARK_FALLBACK_CHAIN_OPTIONS_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/detail/math.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/inline_vector.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

template <class Tag>
class BasicCircuitBreaker;
using CircuitBreaker = BasicCircuitBreaker<void>;  // circuit_breaker.hpp
template <class Tag>
class BasicRetryPolicy;
using RetryPolicy = BasicRetryPolicy<void>;  // retry.hpp
template <class Tag>
class BasicRateLimiter;
using RateLimiter = BasicRateLimiter<void>;  // rate_limiter.hpp

// How a FallbackChain orders its channels for one call. See docs/fallback_chain.md.
enum class Selection : std::uint8_t {
    priority,       // the order the channels were added (or a rule lists them)
    round_robin,    // that order, rotated by one per call
    health_based,   // breaker closed first, then by recent success rate, then priority
    load_balanced,  // weighted random by weight / (1 + calls in flight), seeded
    least_cost,     // ascending cost, ties by priority
};

// Why an attempt did not deliver. `none` for the attempt that delivered.
enum class FallbackReason : std::uint8_t {
    none,               // delivered
    primary_failed,     // the channel was called and failed (threw, or its retry gave up)
    unavailable,        // not called: its breaker rejected (open, forced open, probes taken)
    rate_limited,       // not called: its rate limiter had no permit
    cost_threshold,     // not called: its cost is above ChainOptions::max_cost
    quality_threshold,  // not called: recent success rate below ChainOptions::min_success_rate
};

inline const char* to_string(Selection selection) noexcept {
    switch (selection) {
        case Selection::priority:
            return "priority";
        case Selection::round_robin:
            return "round_robin";
        case Selection::health_based:
            return "health_based";
        case Selection::load_balanced:
            return "load_balanced";
        case Selection::least_cost:
            return "least_cost";
    }
    return "unknown";
}

inline const char* to_string(FallbackReason reason) noexcept {
    switch (reason) {
        case FallbackReason::none:
            return "none";
        case FallbackReason::primary_failed:
            return "primary_failed";
        case FallbackReason::unavailable:
            return "unavailable";
        case FallbackReason::rate_limited:
            return "rate_limited";
        case FallbackReason::cost_threshold:
            return "cost_threshold";
        case FallbackReason::quality_threshold:
            return "quality_threshold";
    }
    return "unknown";
}

// Per-channel options of a FallbackChain. Plain aggregate with validate(), which
// FallbackChain::add calls.
//   bulwark::ChannelOptions o;  o.breaker = &email_breaker;  o.cost = 0.001;
// The breaker, retry and limiter are not owned: they must outlive the chain. They may be shared
// with other code (a breaker shared by two chains counts both).
struct ChannelOptions {
    // Relative share for Selection::load_balanced. >= 0 and finite; 0 = only when every
    // weighted channel failed.
    double weight = 1.0;
    // Cost of one call, in the caller's unit, for Selection::least_cost and max_cost. >= 0.
    double cost = 0.0;
    // Asked for a permit before each call; a rejection skips the channel (unavailable).
    CircuitBreaker* breaker = nullptr;
    // Wraps the channel's call: retry->try_execute(call, ctx). Inside the breaker: the breaker
    // sees one result per chain call, whatever the retries did.
    RetryPolicy* retry = nullptr;
    // Asked for one permit (try_acquire, never waits) after the breaker; a refusal skips the
    // channel (rate_limited) and is recorded in the breaker as an inner rejection (neutral).
    RateLimiter* limiter = nullptr;
    // A disabled channel is left out of every call, not even recorded as an attempt.
    // FallbackChain::set_enabled changes it at run time.
    bool enabled = true;

    // Throws std::invalid_argument naming the field and the value. FallbackChain::add calls it.
    void validate() const {
        if (!(weight >= 0.0 && detail::is_finite(weight))) {
            detail::throw_invalid_option("ChannelOptions.weight", "must be finite and >= 0",
                                         detail::format_number(weight));
        }
        if (!(cost >= 0.0 && detail::is_finite(cost))) {
            detail::throw_invalid_option("ChannelOptions.cost", "must be finite and >= 0",
                                         detail::format_number(cost));
        }
    }
};

// Per-chain options. Plain aggregate; the chain's constructor validates it.
//   bulwark::ChainOptions o;  o.max_cost = 0.01;  o.min_success_rate = 0.8;
struct ChainOptions {
    // Channels *called* per execute (skipped channels do not count). 0 = all of them (default).
    std::uint32_t max_attempts = 0;
    // Channels whose cost is above it are skipped (cost_threshold). >= 0; default: no limit.
    double max_cost = std::numeric_limits<double>::infinity();
    // Channels whose success rate over their last min_samples calls (through this chain) is
    // below it are skipped (quality_threshold). In [0, 1]; 0 = off (default).
    double min_success_rate = 0.0;
    // The quality window: the rule judges a channel by its last min_samples calls, and only once
    // it has made that many. In [1, 32].
    std::uint32_t min_samples = 10;
    // A channel skipped for quality gets no new samples, so one call is let through this long
    // after it was first skipped (and again every interval while it stays below). >= 0.
    Duration quality_probe_interval = std::chrono::seconds(30);

    void validate() const {
        if (!(max_cost >= 0.0)) {
            detail::throw_invalid_option("ChainOptions.max_cost", "must be >= 0",
                                         detail::format_number(max_cost));
        }
        if (!(min_success_rate >= 0.0 && min_success_rate <= 1.0)) {
            detail::throw_invalid_option("ChainOptions.min_success_rate", "must be in [0, 1]",
                                         detail::format_number(min_success_rate));
        }
        if (min_samples < 1 || min_samples > 32) {
            detail::throw_invalid_option("ChainOptions.min_samples", "must be in [1, 32]",
                                         std::to_string(min_samples));
        }
        if (quality_probe_interval < Duration::zero()) {
            detail::throw_invalid_option("ChainOptions.quality_probe_interval", "must be >= 0",
                                         detail::format_duration(quality_probe_interval));
        }
    }
};

// One channel considered by one execute: called, or skipped without a call.
struct Attempt {
    std::uint32_t number = 0;  // 1-based position among the attempts of this execute
    std::string_view channel;  // the channel's name (a view into the chain: valid while it lives)
    TimePoint started{};       // when it was considered, on the chain's clock
    Duration elapsed{0};  // the call's duration (retries and their waits included); 0 if skipped
    bool ok = false;      // the channel delivered
    std::exception_ptr error;  // what it threw, or the rejection (breaker, limiter); null if ok
                               // or skipped by a threshold
    FallbackReason reason = FallbackReason::none;  // why it did not deliver; none if ok
    bool called() const noexcept {
        return reason == FallbackReason::none || reason == FallbackReason::primary_failed;
    }
};

// The chain moved on from `from` (which did not deliver, for `reason`) to `to`.
struct ChannelFallbackEvent {
    std::string_view from;
    std::string_view to;
    FallbackReason reason = FallbackReason::none;
    std::exception_ptr error;  // from's error, if it had one
};

// What a channel has seen through this chain (calls made elsewhere are not counted).
// calls == successes + failures once no execute is running.
struct ChannelStats {
    std::uint64_t calls = 0;      // times the channel was called (one per execute, retries inside)
    std::uint64_t successes = 0;  // of those, how many delivered
    std::uint64_t failures = 0;   // of those, how many failed
    std::uint64_t skipped = 0;    // times it was passed over without a call (any skip reason)
    std::uint64_t fallbacks = 0;  // times it delivered after an earlier channel of the same
                                  // execute did not (it served as a fallback)
    double success_rate = 1.0;    // successes / calls over the chain's life; 1 with no calls
    double recent_success_rate = 1.0;  // over the last (up to) 32 calls; 1 with no calls
    Duration mean_latency{0};          // mean duration of the calls
    std::string_view name;             // valid while the chain lives
};

template <class Signature>
class FallbackChain;

// The outcome of FallbackChain::execute: the value and who delivered it, or the last error, and
// every channel considered on the way.
//   auto res = chain.execute(msg);
//   if (res.ok()) log(res.channel()); else alert(res.error());
//   for (const bulwark::Attempt& a : res.attempts()) { ... }
// Holds up to 8 attempts inline (no allocation); a 9th moves them to the heap. The attempts'
// channel names are views into the chain: the chain must outlive them. Thread-compatible.
template <class R>
class [[nodiscard]] ChainResult {
public:
    using value_type = R;
    using AttemptList = InlineVector<Attempt, 8>;

    // A channel delivered. False for a default-constructed (or moved-from) result too.
    bool ok() const noexcept { return ok_; }
    explicit operator bool() const noexcept { return ok(); }

    // The delivered value; throws error() (the last channel's error) if none delivered.
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    U& value() & {
        rethrow_if_error();
        return *value_;
    }
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    const U& value() const& {
        rethrow_if_error();
        return *value_;
    }
    template <class U = R, std::enable_if_t<!std::is_void<U>::value, int> = 0>
    U&& value() && {
        rethrow_if_error();
        return std::move(*value_);
    }
    template <class U = R, std::enable_if_t<std::is_void<U>::value, int> = 0>
    void value() const {
        rethrow_if_error();
    }

    // The name of the channel that delivered; empty if none did.
    std::string_view channel() const noexcept { return channel_; }
    // Null if a channel delivered. Otherwise the error of the last attempt that has one (a
    // channel's exception, a CircuitOpenError, a RateLimitedError), or a NoChannelError when
    // no attempt has one.
    std::exception_ptr error() const noexcept { return error_; }
    void rethrow_if_error() const {
        if (error_) {
            std::rethrow_exception(error_);
        }
        if (!ok_) {
            detail::throw_invalid_argument(
                "bulwark::ChainResult: no result (default-constructed or moved from)");
        }
    }
    // Every channel considered, in order.
    const AttemptList& attempts() const noexcept { return attempts_; }
    // Channels called (attempts that were not skipped).
    std::uint32_t calls() const noexcept { return calls_; }
    // True if the context was cancelled or its deadline passed before a channel delivered, and
    // channels were left untried because of it.
    bool stopped() const noexcept { return stopped_; }

private:
    template <class S>
    friend class FallbackChain;

    struct NoValue {};
    using Slot = std::conditional_t<std::is_void<R>::value, NoValue, std::optional<R>>;

    Slot value_{};
    bool ok_ = false;
    std::string_view channel_;
    std::exception_ptr error_;
    AttemptList attempts_;
    std::uint32_t calls_ = 0;
    bool stopped_ = false;
};

// The fallbacks for one primary channel, for FallbackChain::execute_for.
struct FallbackRule {
    std::vector<std::string> fallbacks;  // tried after the primary, ordered by `selection`
    Selection selection = Selection::priority;
    std::uint32_t max_attempts = 0;  // channels called, primary included; 0 = the chain's
    // For DeliveryEngine: whether a permanent failure of a channel (DeliveryErrorKind permanent
    // or bounced: a bad address, a refused message) moves on to the next channel. A
    // FallbackChain falls back on every failure and does not read it.
    bool fallback_on_permanent = false;
};

// Which channels back up which: per primary channel, and a global order for primaries without
// a rule. Names are checked when the rules are given to a chain (FallbackChain::rules).
//   bulwark::FallbackRules rules;
//   rules.set("telegram", {{"email", "sms"}, bulwark::Selection::priority, 2});
//   rules.set_global({"email", "sms", "telegram"});
// Plain value type; not thread-safe.
class FallbackRules {
public:
    // Sets (or replaces) the rule for `primary`.
    FallbackRules& set(std::string primary, FallbackRule rule) {
        for (auto& entry : rules_) {
            if (entry.first == primary) {
                entry.second = std::move(rule);
                return *this;
            }
        }
        rules_.emplace_back(std::move(primary), std::move(rule));
        return *this;
    }
    // The fallback order for a primary without a rule; channels it does not list follow in the
    // chain's selection order.
    FallbackRules& set_global(std::vector<std::string> order) {
        global_ = std::move(order);
        return *this;
    }
    const FallbackRule* find(std::string_view primary) const noexcept {
        for (const auto& entry : rules_) {
            if (entry.first == primary) {
                return &entry.second;
            }
        }
        return nullptr;
    }
    const std::vector<std::pair<std::string, FallbackRule>>& rules() const noexcept {
        return rules_;
    }
    const std::vector<std::string>& global() const noexcept { return global_; }

private:
    std::vector<std::pair<std::string, FallbackRule>> rules_;
    std::vector<std::string> global_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_CHAIN_OPTIONS_HPP
