// Throttler: Google SRE client-side adaptive throttling over a sliding time window.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_THROTTLER_HPP
#define BULWARK_THROTTLER_HPP

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/random.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

struct ThrottlerOptions {
    // The multiplier of accepts: requests are rejected locally once they exceed k × accepts.
    // 2 (the SRE book's value) lets through twice what the backend accepts; lower is more
    // aggressive, higher wastes more backend work on requests it will refuse. > 0, finite.
    double k = 2.0;
    // The sliding window that requests and accepts are counted over, in `buckets` slices that
    // expire one at a time. window > 0; buckets in [1, 1000] and window / buckets >= 1ns.
    Duration window = std::chrono::minutes(2);
    std::uint32_t buckets = 12;
    // Requests are never rejected locally with a higher probability than this, so that some
    // always reach the backend and see it recover. In [0, 1].
    double max_rejection_probability = 0.9;
    // Shadow mode: decide as usual, count and report rejections (with shadow = true), but let
    // the calls through; a let-through call's outcome is not counted as an accept. Switch at
    // run time with set_shadow().
    bool shadow = false;
    // Whether a failed call means the backend refused it (overload: not an accept). Called
    // only for failures. Empty: every failure is a refusal.
    std::function<bool(const std::exception_ptr&)> rejected_by_backend{};
    // Uniform draws in [0, 1), called only while the rejection probability is above 0 (tests
    // pass a deterministic sequence). Empty: a per-thread SplitMix64. Must be thread-safe and must
    // not throw: it is called from the noexcept try_acquire(), so an exception terminates.
    std::function<double()> random{};

    // Throws std::invalid_argument naming the field and the value.
    void validate() const {
        if (!(k > 0) || std::isinf(k)) {
            detail::throw_invalid_option("ThrottlerOptions.k", "must be > 0 and finite",
                                         detail::format_number(k));
        }
        if (window <= Duration::zero()) {
            detail::throw_invalid_option("ThrottlerOptions.window", "must be > 0",
                                         detail::format_duration(window));
        }
        if (buckets == 0 || buckets > 1000) {
            detail::throw_invalid_option("ThrottlerOptions.buckets", "must be in [1, 1000]",
                                         std::to_string(buckets));
        }
        if (window.count() < static_cast<Duration::rep>(buckets)) {
            detail::throw_invalid_option(
                "ThrottlerOptions.buckets",
                "must be at most window in nanoseconds (" + detail::format_duration(window) + ")",
                std::to_string(buckets));
        }
        if (!(max_rejection_probability >= 0.0 && max_rejection_probability <= 1.0)) {
            detail::throw_invalid_option("ThrottlerOptions.max_rejection_probability",
                                         "must be in [0, 1]",
                                         detail::format_number(max_rejection_probability));
        }
    }
};

// A call was rejected locally (or, in shadow mode, would have been: shadow = true).
struct ThrottleEvent {
    double probability = 0;      // the rejection probability it was drawn against
    std::uint64_t requests = 0;  // in the window, before this one
    std::uint64_t accepts = 0;   // in the window
    bool shadow = false;
};

struct ThrottlerStats {
    std::uint64_t requests = 0;  // in the window, rejected ones included (as the formula wants)
    std::uint64_t accepts = 0;   // in the window
    double rejection_probability = 0;     // what the next request is drawn against
    std::uint64_t rejected = 0;           // rejected locally since construction; in shadow mode too
    std::uint64_t shadow_rejections = 0;  // of `rejected`, how many were let through
};

// A throttler rejected the call locally: the backend has been refusing requests, and this one
// was drawn to spare it. source(): the throttler's name.
class ThrottledError : public RejectedError {
public:
    using RejectedError::RejectedError;
};

namespace detail {
// A uniform draw in [0, 1) from a per-thread generator: no lock, no shared state.
inline double thread_uniform() noexcept {
    static std::atomic<std::uint64_t> streams{0};
    // relaxed: only distinct seeds are needed.
    thread_local SplitMix64 generator(
        SplitMix64::at(0x5EED0F7B07713ULL, streams.fetch_add(1, std::memory_order_relaxed)));
    return generator.next_double();
}
}  // namespace detail

// Client-side adaptive throttling (Google SRE book, "Handling Overload"): when the backend
// accepts fewer requests than it is sent, reject locally with probability
// max(0, (requests − k·accepts) / (requests + 1)), capped at max_rejection_probability, where
// requests and accepts are counted over a sliding window. Rejecting costs no round trip, and
// the backend spends no work on requests it would refuse.
//   bulwark::Throttler throttler({});                       // k = 2 over 2 minutes
//   throttler.execute([&] { return backend.call(); });     // ThrottledError when rejected
//   if (auto ticket = throttler.try_acquire()) { if (call()) ticket.accepted(); }
// Thread-safe. A decision reads the coarse clock, sums the window's buckets (a few loads) and
// adds to one bucket; an accept adds to one. A bucket's rollover takes a mutex. Draws a random
// number only while the probability is above 0. Does not allocate after construction.
// Throttler is BasicThrottler<>: a class template only so that a translation unit compiles only
// the members it uses (the Tag is never used).
template <class Tag = void>
class BasicThrottler : public PolicyBase<BasicThrottler<Tag>> {
public:
    // The decision for one request. True when it may be sent (admitted, or let through by
    // shadow mode: shadow() is true). Call accepted() when the backend accepted it; a ticket
    // destroyed without it counts the request as refused. Movable.
    class [[nodiscard]] Ticket {
    public:
        Ticket() noexcept = default;
        Ticket(Ticket&& other) noexcept
            : throttler_(std::exchange(other.throttler_, nullptr)),
              epoch_(other.epoch_),
              allowed_(other.allowed_),
              shadow_(other.shadow_) {}
        Ticket& operator=(Ticket&& other) noexcept {
            throttler_ = std::exchange(other.throttler_, nullptr);
            epoch_ = other.epoch_;
            allowed_ = other.allowed_;
            shadow_ = other.shadow_;
            return *this;
        }
        Ticket(const Ticket&) = delete;
        Ticket& operator=(const Ticket&) = delete;
        ~Ticket() = default;

        explicit operator bool() const noexcept { return allowed_; }
        bool shadow() const noexcept { return shadow_; }

        // The backend accepted the request (once; a shadow ticket counts nothing).
        void accepted() noexcept {
            if (throttler_ != nullptr) {
                std::exchange(throttler_, nullptr)->record_accept(epoch_);
            }
        }
        // The backend refused it; the same as dropping the ticket.
        void refused() noexcept { throttler_ = nullptr; }

    private:
        friend class BasicThrottler;
        Ticket(BasicThrottler* throttler, std::int64_t epoch, bool allowed, bool shadow) noexcept
            : throttler_(throttler), epoch_(epoch), allowed_(allowed), shadow_(shadow) {}

        BasicThrottler* throttler_ = nullptr;
        std::int64_t epoch_ = 0;  // the bucket its request was counted in
        bool allowed_ = false;
        bool shadow_ = false;
    };

    // Throws std::invalid_argument for invalid options. The clock must outlive the throttler.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicThrottler(ThrottlerOptions options, Clock& clock = default_clock())
        : BasicThrottler(std::string(), std::move(options), clock) {}

    // A named throttler: its rejections say the name in their message and in
    // RejectedError::source().
    BasicThrottler(std::string name, ThrottlerOptions options, Clock& clock = default_clock())
        : name_(std::make_shared<const std::string>(std::move(name))),
          options_((options.validate(), std::move(options))),
          clock_(&clock),
          bucket_ns_(options_.window.count() / static_cast<Duration::rep>(options_.buckets)),
          buckets_(new Bucket[options_.buckets]),
          error_(std::make_exception_ptr(
              ThrottledError(name_, detail::component_label("throttler", *name_) +
                                        ": rejected locally, the backend is refusing requests"))),
          shadow_(options_.shadow) {}

    BasicThrottler(const BasicThrottler&) = delete;
    BasicThrottler& operator=(const BasicThrottler&) = delete;

    const ThrottlerOptions& options() const noexcept { return options_; }
    const std::string& name() const noexcept { return *name_; }

    void set_shadow(bool on) noexcept { shadow_.store(on, std::memory_order_relaxed); }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

    // Decides one request and counts it. Never waits; does not allocate.
    Ticket try_acquire() noexcept {
        const std::int64_t epoch = current_epoch();
        const Totals totals = sum(epoch);
        Bucket& bucket = bucket_for(epoch);
        // relaxed: counters; decisions tolerate a concurrent request counted a moment late.
        bucket.requests.fetch_add(1, std::memory_order_relaxed);
        const double p = probability(totals);
        if (BULWARK_LIKELY(p <= 0.0) || draw() >= p) {
            return Ticket(this, epoch, true, false);
        }
        return reject(p, totals);
    }

    // The probability the next request is rejected with.
    double rejection_probability() const noexcept { return probability(sum(current_epoch())); }

    // As a pipeline policy: a success is an accept, and so is a failure that
    // options().rejected_by_backend says is not a refusal.
    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        Ticket ticket = try_acquire();
        if (BULWARK_UNLIKELY(!ticket)) {
            return O::from_error(error_);
        }
        O outcome = next(ctx);
        if (BULWARK_LIKELY(!outcome.has_error()) ||
            (options_.rejected_by_backend && !options_.rejected_by_backend(outcome.error()))) {
            ticket.accepted();
        }
        return outcome;
    }

    // Called on every local rejection (and would-be rejection in shadow mode). Returns the id
    // that remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_rejected(std::function<void(const ThrottleEvent&)> listener) {
        return rejected_listeners_.add(std::move(listener));
    }
    bool remove_listener(ListenerId id) noexcept { return rejected_listeners_.remove(id); }

    ThrottlerStats stats() const {
        ThrottlerStats s;
        const std::int64_t epoch = current_epoch();
        const Totals totals = sum(epoch);
        s.requests = totals.requests;
        s.accepts = totals.accepts;
        s.rejection_probability = probability(totals);
        s.rejected = rejected_.load(std::memory_order_relaxed);
        s.shadow_rejections = shadow_rejections_.load(std::memory_order_relaxed);
        return s;
    }

private:
    struct Bucket {
        std::atomic<std::int64_t> epoch{-1};  // which slice of time it counts; -1: none yet
        std::atomic<std::uint64_t> requests{0};
        std::atomic<std::uint64_t> accepts{0};
    };
    struct Totals {
        std::uint64_t requests = 0;
        std::uint64_t accepts = 0;
    };

    std::int64_t current_epoch() const noexcept {
        const auto ns = clock_->coarse_now_fast().time_since_epoch().count();
        return static_cast<std::int64_t>(ns / bucket_ns_);
    }

    // The window's counts: the buckets of the last `buckets` epochs, this one included.
    Totals sum(std::int64_t epoch) const noexcept {
        Totals t;
        const std::int64_t oldest = epoch - static_cast<std::int64_t>(options_.buckets);
        for (std::uint32_t i = 0; i < options_.buckets; ++i) {
            const Bucket& b = buckets_[i];
            // acquire: pairs with the release that published the bucket's reset counts.
            const std::int64_t e = b.epoch.load(std::memory_order_acquire);
            if (e > oldest && e <= epoch) {
                t.requests += b.requests.load(std::memory_order_relaxed);
                t.accepts += b.accepts.load(std::memory_order_relaxed);
            }
        }
        return t;
    }

    double probability(const Totals& t) const noexcept {
        const auto requests = static_cast<double>(t.requests);
        const double excess = requests - options_.k * static_cast<double>(t.accepts);
        if (excess <= 0.0) {
            return 0.0;
        }
        return std::min(options_.max_rejection_probability, excess / (requests + 1.0));
    }

    Bucket& bucket_for(std::int64_t epoch) noexcept {
        // Unsigned: an epoch before the clock's zero still maps to a valid slot.
        Bucket& b = buckets_[static_cast<std::size_t>(static_cast<std::uint64_t>(epoch) %
                                                      options_.buckets)];
        if (BULWARK_UNLIKELY(b.epoch.load(std::memory_order_acquire) != epoch)) {
            roll(b, epoch);
        }
        return b;
    }

    // A bucket's first use in a new epoch: its old counts expire. A count racing the reset may
    // be lost, which a sliding-window estimate tolerates.
    BULWARK_NOINLINE void roll(Bucket& b, std::int64_t epoch) noexcept {
        detail::LockGuard lock(roll_mutex_);
        if (b.epoch.load(std::memory_order_relaxed) < epoch) {
            b.requests.store(0, std::memory_order_relaxed);
            b.accepts.store(0, std::memory_order_relaxed);
            // release: readers that see the new epoch see the reset counts.
            b.epoch.store(epoch, std::memory_order_release);
        }
    }

    // An accept is counted in its request's bucket, so the two leave the window together (an
    // accept that outlived its request would make the formula undercount the excess). If that
    // bucket has already expired, so has the accept. Reads no clock.
    void record_accept(std::int64_t epoch) noexcept {
        Bucket& b = buckets_[static_cast<std::size_t>(static_cast<std::uint64_t>(epoch) %
                                                      options_.buckets)];
        if (BULWARK_LIKELY(b.epoch.load(std::memory_order_acquire) == epoch)) {
            // relaxed: a counter.
            b.accepts.fetch_add(1, std::memory_order_relaxed);
        }
    }

    double draw() const { return options_.random ? options_.random() : detail::thread_uniform(); }

    // The reject branch: counts, reports, and lets the call through in shadow mode.
    BULWARK_NOINLINE Ticket reject(double p, const Totals& totals) noexcept {
        // relaxed: statistics, and a mode switch that need not order anything else.
        rejected_.fetch_add(1, std::memory_order_relaxed);
        const bool shadow = shadow_.load(std::memory_order_relaxed);
        if (shadow) {
            shadow_rejections_.fetch_add(1, std::memory_order_relaxed);
        }
        rejected_listeners_.emit_with([&] {
            return ThrottleEvent{p, totals.requests, totals.accepts, shadow};
        });
        // A let-through call holds no throttler: its outcome is never counted as an accept.
        return Ticket(nullptr, 0, shadow, shadow);
    }

    const std::shared_ptr<const std::string> name_;
    const ThrottlerOptions options_;
    Clock* const clock_;
    const Duration::rep bucket_ns_;
    const std::unique_ptr<Bucket[]> buckets_;
    const std::exception_ptr error_;
    std::atomic<bool> shadow_;
    detail::Mutex roll_mutex_;
    std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> shadow_rejections_{0};
    Listeners<ThrottleEvent> rejected_listeners_;
};

using Throttler = BasicThrottler<>;

}  // namespace bulwark

#endif  // BULWARK_THROTTLER_HPP
