// FallbackChain: channels tried in turn by priority, rotation, health, load or cost.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_FALLBACK_CHAIN_HPP
#define BULWARK_FALLBACK_CHAIN_HPP

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/recent_window.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/traits.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/inline_vector.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>

namespace bulwark {

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

// No channel of a FallbackChain delivered and none left an error to report: every candidate was
// skipped by a cost or quality threshold, the chain has no enabled channel, or the call was
// cancelled (or ran past its deadline) before the first channel was tried.
class NoChannelError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

// Per-channel options of a FallbackChain. Plain aggregate; FallbackChain::add validates it and
// throws std::invalid_argument naming the field and the value.
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

// Tries a list of interchangeable channels (telegram, email, sms…) until one delivers, in an
// order chosen per call (Selection), skipping the ones whose breaker is open, whose rate limit is
// used up or that are above the cost or below the quality threshold.
//   bulwark::FallbackChain<Receipt(const Message&)> chain(bulwark::Selection::priority);
//   chain.add("telegram", send_telegram);  chain.add("sms", send_sms, sms_options);
//   bulwark::ChainResult<Receipt> res = chain.execute(msg);  // never throws for channel failures
// Arguments are passed to every channel tried as lvalues, so by-value parameters are copied per
// channel and rvalue-reference parameters are not supported.
// Thread-safety: execute, execute_for, stats, set_enabled and the listeners are thread-safe;
// execute takes no lock and, with up to 8 attempts and 16 candidates, allocates nothing (a
// listener, a rejection's error object or a channel's own work may). Configuration (add, rules,
// max_attempts, max_cost, min_success_rate) is not synchronized: finish it before the chain is
// shared. The clock must outlive the chain, as must the breakers, retries and limiters.
template <class R, class... Args>
class FallbackChain<R(Args...)> {
    static_assert(!std::is_reference<R>::value,
                  "bulwark::FallbackChain: channels return results by value (return a pointer or "
                  "std::reference_wrapper to share an object).");
    static_assert(std::conjunction<std::negation<std::is_rvalue_reference<Args>>...>::value,
                  "bulwark::FallbackChain: rvalue-reference parameters are not supported: every "
                  "channel tried receives the same arguments.");

public:
    using result_type = R;
    using Function = std::function<R(Args...)>;

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit FallbackChain(Selection selection = Selection::priority, ChainOptions options = {},
                           Clock& clock = default_clock())
        : FallbackChain(selection, std::move(options), detail::fresh_seed(), clock) {}

    // `seed` makes Selection::load_balanced reproducible for the same order of calls.
    FallbackChain(Selection selection, ChainOptions options, std::uint64_t seed,
                  Clock& clock = default_clock())
        : selection_(selection),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          seed_(seed),
          count_in_flight_(selection == Selection::load_balanced) {}

    FallbackChain(const FallbackChain&) = delete;
    FallbackChain& operator=(const FallbackChain&) = delete;

    // Adds a channel at the end of the priority order. `f` must be invocable with Args... and
    // return R (or something convertible to it). Throws std::invalid_argument for an empty or
    // duplicate name, a null callable (function pointer, empty std::function) or invalid options.
    template <class F>
    FallbackChain& add(std::string name, F f, ChannelOptions options = {}) {
        static_assert(std::is_invocable_r<R, F&, Args&...>::value,
                      "bulwark::FallbackChain::add: the callable must be invocable with the "
                      "chain's arguments and return its result type.");
        if (name.empty()) {
            detail::throw_invalid_option("FallbackChain.add: name", "must not be empty", "\"\"");
        }
        if (find(name) != npos) {
            detail::throw_invalid_option("FallbackChain.add: name", "must be unique",
                                         "\"" + name + "\" (already added)");
        }
        if (detail::is_null_callable(f)) {
            detail::throw_invalid_option("FallbackChain.add: callable", "must not be null",
                                         "null for \"" + name + "\"");
        }
        if (!(options.weight >= 0.0 && detail::is_finite(options.weight))) {
            detail::throw_invalid_option("ChannelOptions.weight", "must be finite and >= 0",
                                         detail::format_number(options.weight));
        }
        if (!(options.cost >= 0.0 && detail::is_finite(options.cost))) {
            detail::throw_invalid_option("ChannelOptions.cost", "must be finite and >= 0",
                                         detail::format_number(options.cost));
        }
        auto channel = std::make_unique<Channel>();
        channel->name = std::move(name);
        channel->fn = Function(std::move(f));
        channel->enabled.store(options.enabled, std::memory_order_relaxed);
        channel->options = options;
        channels_.push_back(std::move(channel));
        // The rules refer to channels by index; a new channel joins the "remaining" tail.
        return *this;
    }

    // Caps the channels called per execute (skipped ones do not count). Throws
    // std::invalid_argument for 0.
    FallbackChain& max_attempts(std::uint32_t n) {
        if (n == 0) {
            detail::throw_invalid_option("FallbackChain.max_attempts", "must be >= 1", "0");
        }
        options_.max_attempts = n;
        return *this;
    }
    // The cap in effect: the number of channels unless max_attempts was set.
    std::uint32_t max_attempts() const noexcept {
        return options_.max_attempts != 0 ? options_.max_attempts
                                          : static_cast<std::uint32_t>(channels_.size());
    }
    FallbackChain& max_cost(double cost) {
        ChainOptions o = options_;
        o.max_cost = cost;
        o.validate();
        options_ = o;
        return *this;
    }
    // Keeps the current min_samples.
    FallbackChain& min_success_rate(double rate) {
        return min_success_rate(rate, options_.min_samples);
    }
    FallbackChain& min_success_rate(double rate, std::uint32_t min_samples) {
        ChainOptions o = options_;
        o.min_success_rate = rate;
        o.min_samples = min_samples;
        o.validate();
        options_ = o;
        return *this;
    }

    // Installs fallback rules for execute_for. Throws std::invalid_argument (and keeps the
    // previous rules) if a rule names a channel the chain does not have, lists a channel twice,
    // or lists its own primary among its fallbacks.
    FallbackChain& rules(const FallbackRules& rules) {
        std::vector<ResolvedRule> resolved(channels_.size());
        for (const auto& entry : rules.rules()) {
            const std::size_t primary = resolve(entry.first, "FallbackRules.set: primary", "");
            ResolvedRule& r = resolved[primary];
            if (r.present) {
                detail::throw_invalid_option("FallbackRules.set: primary", "must be unique",
                                             "\"" + entry.first + "\" twice");
            }
            r.present = true;
            r.selection = entry.second.selection;
            r.max_attempts = entry.second.max_attempts;
            for (const std::string& name : entry.second.fallbacks) {
                const std::size_t index =
                    resolve(name, "FallbackRules.set: fallbacks", entry.first);
                if (index == primary || contains(r.order, index)) {
                    detail::throw_invalid_option(
                        "FallbackRules.set: fallbacks",
                        "must list distinct channels other than the primary",
                        "\"" + name + "\" in the rule for \"" + entry.first + "\"");
                }
                r.order.push_back(static_cast<std::uint32_t>(index));
            }
        }
        std::vector<std::uint32_t> global;
        for (const std::string& name : rules.global()) {
            const std::size_t index = resolve(name, "FallbackRules.set_global: order", "");
            if (contains(global, index)) {
                detail::throw_invalid_option("FallbackRules.set_global: order",
                                             "must list distinct channels",
                                             "\"" + name + "\" twice");
            }
            global.push_back(static_cast<std::uint32_t>(index));
        }
        rules_ = std::move(resolved);
        global_ = std::move(global);
        for (const ResolvedRule& r : rules_) {
            if (r.present && r.selection == Selection::load_balanced) {
                count_in_flight_ = true;
            }
        }
        return *this;
    }

    // Enables or disables a channel; thread-safe (a call already running may still use it).
    // Throws std::invalid_argument for an unknown name.
    void set_enabled(std::string_view name, bool enabled) {
        channel(name).enabled.store(enabled, std::memory_order_relaxed);
    }

    // Tries the channels in the chain's selection order until one delivers, at most
    // max_attempts() of them called. Never throws for a channel's failure.
    ChainResult<R> execute(Args... args) {
        Context ctx;
        return execute_all(ctx, args...);
    }

    // As above; stops (ChainResult::stopped()) before the next channel once `ctx` is cancelled
    // or its deadline has passed on the chain's clock. The context is passed to the retries.
    ChainResult<R> execute(Context& ctx, Args... args) { return execute_all(ctx, args...); }

    // Tries `primary` first, then its rule's fallbacks in the rule's selection order (at most
    // the rule's max_attempts called); without a rule, the global order and then the remaining
    // channels in the chain's selection order. Throws std::invalid_argument for an unknown
    // primary (a programming error); never for a channel's failure.
    ChainResult<R> execute_for(std::string_view primary, Args... args) {
        Context ctx;
        return execute_for_impl(ctx, primary, args...);
    }

    ChainResult<R> execute_for(Context& ctx, std::string_view primary, Args... args) {
        return execute_for_impl(ctx, primary, args...);
    }

    // Statistics of one channel; throws std::invalid_argument for an unknown name. Lock-free.
    ChannelStats stats(std::string_view name) const { return snapshot(channel(name)); }

    // Statistics of every channel, in priority order.
    std::vector<ChannelStats> stats() const {
        std::vector<ChannelStats> all;
        all.reserve(channels_.size());
        for (const auto& c : channels_) {
            all.push_back(snapshot(*c));
        }
        return all;
    }

    // Called after every attempt (skipped ones included), on the executing thread.
    Listeners<Attempt>& on_attempt() noexcept { return attempt_listeners_; }
    // Called each time the chain moves on from a channel that did not deliver to the next one.
    Listeners<ChannelFallbackEvent>& on_fallback() noexcept { return fallback_listeners_; }

    Selection selection() const noexcept { return selection_; }
    const ChainOptions& options() const noexcept { return options_; }
    std::uint64_t seed() const noexcept { return seed_; }
    std::size_t size() const noexcept { return channels_.size(); }
    Clock& clock() const noexcept { return *clock_; }
    // Channel names in priority order.
    std::vector<std::string_view> channels() const {
        std::vector<std::string_view> names;
        names.reserve(channels_.size());
        for (const auto& c : channels_) {
            names.push_back(c->name);
        }
        return names;
    }

private:
    // The public forms take their arguments by value once; from here on they are passed by
    // reference, so a by-value parameter is copied once per channel called, not once more.
    ChainResult<R> execute_all(Context& ctx, Args&... args) {
        Order order;
        for (std::uint32_t i = 0; i < channels_.size(); ++i) {
            if (channels_[i]->enabled.load(std::memory_order_relaxed)) {
                order.push_back(Candidate{i, 0.0});
            }
        }
        arrange(order, 0, selection_, round_robin_);
        return run(ctx, order, max_attempts(), args...);
    }

    ChainResult<R> execute_for_impl(Context& ctx, std::string_view primary, Args&... args) {
        const std::size_t p = find(primary);
        if (p == npos) {
            unknown_channel(primary);
        }
        const auto first = static_cast<std::uint32_t>(p);
        Order order;
        if (channels_[p]->enabled.load(std::memory_order_relaxed)) {
            order.push_back(Candidate{first, 0.0});
        }
        std::uint32_t cap = max_attempts();
        const ResolvedRule* rule = p < rules_.size() && rules_[p].present ? &rules_[p] : nullptr;
        if (rule != nullptr) {
            const std::size_t from = order.size();
            for (std::uint32_t i : rule->order) {
                push_enabled(order, i);
            }
            arrange(order, from, rule->selection, channels_[p]->rotation);
            if (rule->max_attempts != 0) {
                cap = rule->max_attempts;
            }
        } else {
            for (std::uint32_t i : global_) {
                if (i != first) {
                    push_enabled(order, i);
                }
            }
            const std::size_t from = order.size();
            for (std::uint32_t i = 0; i < channels_.size(); ++i) {
                if (i != first && !contains(global_, i)) {
                    push_enabled(order, i);
                }
            }
            arrange(order, from, selection_, channels_[p]->rotation);
        }
        return run(ctx, order, cap, args...);
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    static constexpr std::int64_t not_skipping = std::numeric_limits<std::int64_t>::min();

    struct Channel {
        std::string name;
        Function fn;
        ChannelOptions options;
        std::atomic<bool> enabled{true};
        // Per-thread stripes (see detail::StripedCounter): concurrent calls through one channel
        // do not fight over a cache line for their statistics. Read as a relaxed snapshot.
        detail::StripedCounter calls;
        detail::StripedCounter successes;
        detail::StripedCounter failures;
        detail::StripedCounter skipped;
        detail::StripedCounter fallbacks;
        detail::StripedCounter latency_ns;
        // Counted only for Selection::load_balanced, the one reader.
        std::atomic<std::uint32_t> in_flight{0};
        std::atomic<std::uint64_t> recent{0};  // detail::RecentWindow
        std::atomic<std::int64_t> quality_skip_since{not_skipping};
        std::atomic<std::uint64_t> rotation{0};  // round robin of execute_for(this channel)
    };

    struct Candidate {
        std::uint32_t index;
        double key;
    };
    using Order = InlineVector<Candidate, 16>;

    struct ResolvedRule {
        bool present = false;
        Selection selection = Selection::priority;
        std::uint32_t max_attempts = 0;
        std::vector<std::uint32_t> order;
    };

    template <class C>
    static bool contains(const C& c, std::size_t value) noexcept {
        for (auto v : c) {
            if (v == value) {
                return true;
            }
        }
        return false;
    }

    // Linear: chains have a handful of channels, and comparing views allocates nothing.
    std::size_t find(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < channels_.size(); ++i) {
            if (channels_[i]->name == name) {
                return i;
            }
        }
        return npos;
    }

    [[noreturn]] BULWARK_NOINLINE static void unknown_channel(std::string_view name) {
        detail::throw_invalid_option("FallbackChain: channel", "must be one added to the chain",
                                     "\"" + std::string(name) + "\"");
    }

    Channel& channel(std::string_view name) const {
        const std::size_t i = find(name);
        if (i == npos) {
            unknown_channel(name);
        }
        return *channels_[i];
    }

    std::size_t resolve(const std::string& name, const char* field, const std::string& rule) const {
        const std::size_t i = find(name);
        if (i == npos) {
            detail::throw_invalid_option(
                field, "must name channels added to the chain",
                "unknown \"" + name + "\"" +
                    (rule.empty() ? std::string() : " in the rule for \"" + rule + "\""));
        }
        return i;
    }

    void push_enabled(Order& order, std::uint32_t i) const {
        if (channels_[i]->enabled.load(std::memory_order_relaxed)) {
            order.push_back(Candidate{i, 0.0});
        }
    }

    // Orders order[from..] by `selection`; their current order is the priority order.
    // `rotation` turns round_robin: one counter per kind of call (execute, and execute_for per
    // primary), so that each rotates fairly over its own candidates.
    void arrange(Order& order, std::size_t from, Selection selection,
                 std::atomic<std::uint64_t>& rotation) {
        const std::size_t n = order.size() - from;
        if (n < 2) {
            return;
        }
        Candidate* c = order.data() + from;
        switch (selection) {
            case Selection::priority:
                return;
            case Selection::round_robin: {
                // relaxed: only the rotation matters, not what other threads wrote.
                const std::uint64_t turn = rotation.fetch_add(1, std::memory_order_relaxed);
                const auto shift = static_cast<std::size_t>(turn % n);
                for (std::size_t i = 0; i < n; ++i) {
                    c[i].key = static_cast<double>((i + n - shift) % n);
                }
                break;
            }
            case Selection::health_based:
                for (std::size_t i = 0; i < n; ++i) {
                    const Channel& ch = *channels_[c[i].index];
                    // Rank 0: closed, disabled or no breaker; 1: half-open; 2: open. Within a
                    // rank, the higher recent success rate first.
                    double rank = 0.0;
                    if (ch.options.breaker != nullptr) {
                        const CircuitState s = ch.options.breaker->state();
                        rank = s == CircuitState::half_open                                  ? 1.0
                               : (s == CircuitState::open || s == CircuitState::forced_open) ? 2.0
                                                                                             : 0.0;
                    }
                    c[i].key = rank * 2.0 - detail::RecentWindow::rate(
                                                ch.recent.load(std::memory_order_relaxed));
                }
                break;
            case Selection::load_balanced: {
                // Efraimidis–Spirakis: sorting by -ln(u) / w draws a weighted random order.
                // relaxed: a counter naming this call's random stream.
                const std::uint64_t k = load_balance_.fetch_add(1, std::memory_order_relaxed);
                detail::SplitMix64 random(detail::SplitMix64::at(seed_, k));
                for (std::size_t i = 0; i < n; ++i) {
                    const Channel& ch = *channels_[c[i].index];
                    const double u = random.next_double();
                    const double w =
                        ch.options.weight /
                        (1.0 + static_cast<double>(ch.in_flight.load(std::memory_order_relaxed)));
                    c[i].key =
                        w > 0.0 ? -detail::log1p(-u) / w : std::numeric_limits<double>::infinity();
                }
                break;
            }
            case Selection::least_cost:
                for (std::size_t i = 0; i < n; ++i) {
                    c[i].key = channels_[c[i].index]->options.cost;
                }
                break;
        }
        // Insertion sort: stable (ties keep the priority order), allocates nothing, and fast
        // for the handful of channels a chain has.
        for (std::size_t i = 1; i < n; ++i) {
            const Candidate x = c[i];
            std::size_t j = i;
            for (; j > 0 && x.key < c[j - 1].key; --j) {
                c[j] = c[j - 1];
            }
            c[j] = x;
        }
    }

    bool deadline_passed(const Context& ctx) const noexcept {
        return ctx.cancelled() || (ctx.deadline() && clock_->now() >= *ctx.deadline());
    }

    // True if the channel is below the quality floor and must be skipped now. A skipped channel
    // is let through once every quality_probe_interval (the CAS picks one caller) so that it can
    // show it has recovered; that caller gets the stamp it replaced in `probe_from`, to put it
    // back if the probe is not made after all (breaker or limiter said no).
    bool below_quality(Channel& ch, TimePoint now, std::int64_t& probe_from) const noexcept {
        if (options_.min_success_rate <= 0.0) {
            return false;
        }
        const std::uint64_t w = ch.recent.load(std::memory_order_relaxed);
        if (detail::RecentWindow::samples(w) < options_.min_samples ||
            detail::RecentWindow::rate(w, options_.min_samples) >= options_.min_success_rate) {
            if (ch.quality_skip_since.load(std::memory_order_relaxed) != not_skipping) {
                ch.quality_skip_since.store(not_skipping, std::memory_order_relaxed);
            }
            return false;
        }
        const std::int64_t t = now.time_since_epoch().count();
        std::int64_t since = ch.quality_skip_since.load(std::memory_order_relaxed);
        if (since == not_skipping) {
            // relaxed: the stamp is the whole state.
            ch.quality_skip_since.compare_exchange_strong(since, t, std::memory_order_relaxed);
            return true;
        }
        if (t - since >= options_.quality_probe_interval.count()) {
            const std::int64_t before = since;
            if (ch.quality_skip_since.compare_exchange_strong(since, t,
                                                              std::memory_order_relaxed)) {
                probe_from = before;
                return false;
            }
        }
        return true;
    }

    Outcome<R> call(Channel& ch, Context& ctx, Args&... args) noexcept {
        if (ch.options.retry != nullptr) {
            return ch.options.retry->try_execute([&]() -> R { return ch.fn(args...); }, ctx);
        }
        return detail::capture<R>([&]() -> R { return ch.fn(args...); });
    }

    static void record_recent(Channel& ch, bool ok) noexcept {
        std::uint64_t w = ch.recent.load(std::memory_order_relaxed);
        // relaxed: the word is the whole state.
        while (!ch.recent.compare_exchange_weak(w, detail::RecentWindow::push(w, ok),
                                                std::memory_order_relaxed)) {
        }
    }

    BULWARK_NOINLINE static std::exception_ptr rate_limited_error(const Channel& ch,
                                                                  Duration retry_after) {
        return std::make_exception_ptr(RateLimitedError(
            "bulwark::FallbackChain: channel \"" + ch.name + "\" is rate limited", retry_after));
    }

    BULWARK_NOINLINE static std::exception_ptr no_channel_error(const ChainResult<R>& result) {
        std::string why = result.stopped() ? "cancelled or past its deadline"
                          : result.attempts().empty()
                              ? "no enabled channel"
                              : "every channel was skipped by a cost or quality threshold";
        return std::make_exception_ptr(
            NoChannelError("bulwark::FallbackChain: no channel delivered: " + why));
    }

    void finish_attempt(ChainResult<R>& result, Attempt&& attempt) {
        attempt.number = static_cast<std::uint32_t>(result.attempts_.size() + 1);
        result.attempts_.push_back(std::move(attempt));
        const Attempt& a = result.attempts_.back();
        attempt_listeners_.emit(a);
    }

    ChainResult<R> run(Context& ctx, const Order& order, std::uint32_t cap, Args&... args) {
        ChainResult<R> result;
        for (const Candidate& candidate : order) {
            if (result.calls_ >= cap) {
                break;
            }
            if (BULWARK_UNLIKELY(deadline_passed(ctx))) {
                result.stopped_ = true;
                break;
            }
            Channel& ch = *channels_[candidate.index];
            if (BULWARK_UNLIKELY(!result.attempts_.empty())) {
                const Attempt& prev = result.attempts_.back();
                fallback_listeners_.emit_with([&] {
                    return ChannelFallbackEvent{prev.channel, ch.name, prev.reason, prev.error};
                });
            }
            Attempt a;
            a.channel = ch.name;
            a.started = clock_->now();

            FallbackReason skip = FallbackReason::none;
            std::int64_t probe_from = not_skipping;
            if (ch.options.cost > options_.max_cost) {
                skip = FallbackReason::cost_threshold;
            } else if (below_quality(ch, a.started, probe_from)) {
                skip = FallbackReason::quality_threshold;
            }
            CircuitBreaker::Permit permit;
            if (skip == FallbackReason::none && ch.options.breaker != nullptr) {
                permit = ch.options.breaker->try_acquire();
                if (!permit) {
                    skip = FallbackReason::unavailable;
                    a.error = permit.rejection();
                }
            }
            if (skip == FallbackReason::none && ch.options.limiter != nullptr) {
                const RateDecision d = ch.options.limiter->try_acquire();
                if (!d) {
                    skip = FallbackReason::rate_limited;
                    a.error = rate_limited_error(ch, d.retry_after);
                    if (permit.pending()) {
                        // An inner rejection: neither a success nor a failure for the breaker,
                        // and it frees a half-open probe slot.
                        permit.record(Outcome<R>::from_error(a.error), Duration::zero());
                    }
                }
            }
            if (skip != FallbackReason::none) {
                if (probe_from != not_skipping) {
                    // A quality probe that was not made: the next call may make it. relaxed: the
                    // stamp is the whole state; losing to a newer stamp is fine.
                    std::int64_t mine = a.started.time_since_epoch().count();
                    ch.quality_skip_since.compare_exchange_strong(mine, probe_from,
                                                                  std::memory_order_relaxed);
                }
                ch.skipped.add();
                a.reason = skip;
                finish_attempt(result, std::move(a));
                continue;
            }

            if (count_in_flight_) {
                ch.in_flight.fetch_add(1, std::memory_order_relaxed);
            }
            Outcome<R> outcome = call(ch, ctx, args...);
            if (count_in_flight_) {
                ch.in_flight.fetch_sub(1, std::memory_order_relaxed);
            }
            a.elapsed = clock_->now() - a.started;
            if (permit.pending()) {
                permit.record(outcome, a.elapsed);
            }
            ++result.calls_;
            ch.calls.add();
            ch.latency_ns.add(
                static_cast<std::uint64_t>(std::max<Duration::rep>(a.elapsed.count(), 0)));
            const bool ok = outcome.has_value();
            record_recent(ch, ok);
            if (ok) {
                ch.successes.add();
                if (!result.attempts_.empty()) {
                    ch.fallbacks.add();
                }
                a.ok = true;
                if constexpr (!std::is_void<R>::value) {
                    result.value_.emplace(std::move(outcome).value());
                }
                result.channel_ = ch.name;
                result.ok_ = true;
                result.stopped_ = false;
                finish_attempt(result, std::move(a));
                return result;
            }
            ch.failures.add();
            a.error = outcome.error();
            a.reason = FallbackReason::primary_failed;
            finish_attempt(result, std::move(a));
        }
        // Nobody delivered: report the last error any attempt has.
        for (std::size_t i = result.attempts_.size(); i > 0; --i) {
            if (result.attempts_[i - 1].error) {
                result.error_ = result.attempts_[i - 1].error;
                return result;
            }
        }
        result.error_ = no_channel_error(result);
        return result;
    }

    static ChannelStats snapshot(const Channel& ch) noexcept {
        ChannelStats s;
        s.name = ch.name;
        s.calls = ch.calls.sum();
        s.successes = ch.successes.sum();
        s.failures = ch.failures.sum();
        s.skipped = ch.skipped.sum();
        s.fallbacks = ch.fallbacks.sum();
        if (s.calls > 0) {
            s.success_rate = static_cast<double>(s.successes) / static_cast<double>(s.calls);
            s.mean_latency = Duration{static_cast<Duration::rep>(ch.latency_ns.sum() / s.calls)};
        }
        s.recent_success_rate =
            detail::RecentWindow::rate(ch.recent.load(std::memory_order_relaxed));
        return s;
    }

    Selection selection_;
    ChainOptions options_;
    Clock* clock_;
    std::uint64_t seed_;
    std::vector<std::unique_ptr<Channel>> channels_;
    std::vector<ResolvedRule> rules_;  // by channel index; may be shorter than channels_
    std::vector<std::uint32_t> global_;
    bool count_in_flight_;  // some order is load_balanced: channels count their calls in flight
    std::atomic<std::uint64_t> round_robin_{0};
    std::atomic<std::uint64_t> load_balance_{0};
    Listeners<Attempt> attempt_listeners_;
    Listeners<ChannelFallbackEvent> fallback_listeners_;
};

}  // namespace bulwark

#endif  // BULWARK_FALLBACK_CHAIN_HPP
