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
#include <bulwark/fallback_chain_options.hpp>
#include <bulwark/inline_vector.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>
#include <bulwark/rate_limiter.hpp>
#include <bulwark/retry.hpp>

namespace bulwark {

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
        : selection_((detail::check_enumerator(selection, Selection::least_cost,
                                               "FallbackChain(selection)", "Selection"),
                      selection)),
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
        options.validate();
        auto channel = std::make_unique<Channel>();
        channel->name = std::move(name);
        channel->fn = Function(std::move(f));
        channel->enabled.store(options.enabled, std::memory_order_relaxed);
        channel->options = options;
        channels_.push_back(std::move(channel));
        // The rules refer to channels by index; a new channel joins the "remaining" tail.
        return *this;
    }

    // Caps the channels called per execute (skipped ones do not count); 0 = all of them, as in
    // ChainOptions::max_attempts.
    FallbackChain& max_attempts(std::uint32_t n) noexcept {
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
            detail::check_enumerator(entry.second.selection, Selection::least_cost,
                                     "FallbackRule.selection", "Selection");
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

    // Tries exactly the channels of `route`, in that order (no rule, no selection), at most
    // route.size() of them called: a route the caller chose, such as an operator's redrive
    // through named channels. Throws std::invalid_argument for an unknown or repeated name;
    // never for a channel's failure.
    ChainResult<R> execute_route(Context& ctx, const std::vector<std::string>& route,
                                 Args... args) {
        Order order;
        for (auto it = route.begin(); it != route.end(); ++it) {
            const std::string& name = *it;
            const std::size_t i = find(name);
            if (i == npos) {
                unknown_channel(name);
            }
            if (std::find(route.begin(), it, name) != it) {
                detail::throw_invalid_option("FallbackChain.execute_route: route",
                                             "must list distinct channels",
                                             "\"" + name + "\" twice");
            }
            push_enabled(order, static_cast<std::uint32_t>(i));
        }
        return run(ctx, order, static_cast<std::uint32_t>(route.size()), args...);
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

    // Called after every attempt (skipped ones included), on the executing thread. Returns the
    // id that remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_attempt(std::function<void(const Attempt&)> listener) {
        return attempt_listeners_.add(std::move(listener));
    }
    // Called each time the chain moves on from a channel that did not deliver to the next one.
    // Returns the id that remove_listener() takes; throws std::invalid_argument for an empty
    // listener.
    ListenerId on_fallback(std::function<void(const ChannelFallbackEvent&)> listener) {
        return fallback_listeners_.add(std::move(listener));
    }
    // Stops calling a listener added by on_attempt() or on_fallback(); false if the id is
    // unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept {
        return attempt_listeners_.remove(id) || fallback_listeners_.remove(id);
    }

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
        // source(): the limiter that refused, as when it rejects a call itself.
        const std::string& limiter = ch.options.limiter->name();
        return std::make_exception_ptr(RateLimitedError(
            limiter.empty() ? nullptr : std::make_shared<const std::string>(limiter),
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
