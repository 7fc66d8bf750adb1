// Delivery statistics: ChannelDeliveryStats and DeliveryStats (with JSON), and the per-channel
// minute buckets a DeliveryEngine keeps them in.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DELIVERY_STATS_HPP
#define BULWARK_DELIVERY_STATS_HPP

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <bulwark/detail/json.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/message_status.hpp>
#include <bulwark/metrics_writer.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// What one channel (or all of them: channel "") did in a time range. Attempts are adapter calls;
// a channel passed over (breaker open, rate limited) is not an attempt.
struct ChannelDeliveryStats {
    std::string channel;
    std::uint64_t attempts = 0;
    std::uint64_t successes = 0;
    double success_rate = 1.0;  // successes / attempts; 1 with no attempts
    Duration mean_response{0};
    // From the response-time histogram (5 ms .. 10 s buckets), interpolated within the bucket
    // as Prometheus's histogram_quantile does: an estimate, exact to the bucket.
    Duration p95_response{0};
    double cost = 0.0;                       // receipts' costs (or the channel's cost per call)
    std::uint64_t fallbacks = 0;             // attempts made after another channel of the
                                             // same pass did not deliver
    std::uint64_t successful_fallbacks = 0;  // of those, how many delivered
    // Outages that ended in the range (a run of failed attempts ended by a success), and their
    // mean length: from the first failure to the success.
    std::uint64_t recoveries = 0;
    Duration mean_recovery{0};
};

// Statistics of a DeliveryEngine for [from, to), with the queue's state when taken.
//   auto s = engine.stats();  s.overall.success_rate;  s.channels[0].p95_response;
//   respond(200, "application/json", s.to_json());
struct DeliveryStats {
    WallTime from{};
    WallTime to{};
    ChannelDeliveryStats overall;
    std::vector<ChannelDeliveryStats> channels;  // in the order they were added
    std::size_t queued = 0;                      // messages in the queue store now
    std::size_t in_flight = 0;                   // of which leased by a worker now
    // Messages the engine tracks now, by status (indexed by MessageStatus).
    std::array<std::size_t, message_status_count> by_status{};
    // Moves into each status since the engine was made.
    std::array<std::uint64_t, message_status_count> entered{};

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object();
        w.field("from_unix_s", seconds(from.time_since_epoch()));
        w.field("to_unix_s", seconds(to.time_since_epoch()));
        w.key("overall");
        write(w, overall);
        w.key("channels").begin_array();
        for (const ChannelDeliveryStats& c : channels) {
            write(w, c);
        }
        w.end_array();
        w.field("queued", static_cast<std::uint64_t>(queued));
        w.field("in_flight", static_cast<std::uint64_t>(in_flight));
        w.key("by_status").begin_object();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.field(to_string(static_cast<MessageStatus>(i)),
                    static_cast<std::uint64_t>(by_status[i]));
        }
        w.end_object();
        w.key("entered").begin_object();
        for (std::size_t i = 0; i < message_status_count; ++i) {
            w.field(to_string(static_cast<MessageStatus>(i)), entered[i]);
        }
        w.end_object();
        w.end_object();
        return w.take();
    }

private:
    static double seconds(Duration d) noexcept { return std::chrono::duration<double>(d).count(); }

    static void write(detail::JsonWriter& w, const ChannelDeliveryStats& c) {
        w.begin_object();
        w.field("channel", c.channel);
        w.field("attempts", c.attempts).field("successes", c.successes);
        w.field("success_rate", c.success_rate);
        w.field("mean_response_s", seconds(c.mean_response));
        w.field("p95_response_s", seconds(c.p95_response));
        w.field("cost", c.cost);
        w.field("fallbacks", c.fallbacks).field("successful_fallbacks", c.successful_fallbacks);
        w.field("recoveries", c.recoveries).field("mean_recovery_s", seconds(c.mean_recovery));
        w.end_object();
    }
};

namespace detail {

// Upper bounds of the response-time histogram, in seconds (Prometheus's default buckets).
inline constexpr std::array<double, 11> delivery_latency_bounds = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};

// Sums of attempts, mergeable: one minute of one channel, a range, or every channel.
struct DeliveryCounts {
    std::uint64_t attempts = 0;
    std::uint64_t successes = 0;
    std::uint64_t fallbacks = 0;
    std::uint64_t fallback_successes = 0;
    std::uint64_t recoveries = 0;
    double cost = 0.0;
    std::int64_t response_ns = 0;
    std::int64_t recovery_ns = 0;
    // Observations per histogram bucket (not cumulative); the last is +Inf.
    std::array<std::uint64_t, delivery_latency_bounds.size() + 1> buckets{};

    void merge(const DeliveryCounts& o) noexcept {
        attempts += o.attempts;
        successes += o.successes;
        fallbacks += o.fallbacks;
        fallback_successes += o.fallback_successes;
        recoveries += o.recoveries;
        cost += o.cost;
        response_ns += o.response_ns;
        recovery_ns += o.recovery_ns;
        for (std::size_t i = 0; i < buckets.size(); ++i) {
            buckets[i] += o.buckets[i];
        }
    }

    // The 95th percentile, interpolated within its bucket (the +Inf bucket answers its lower
    // bound: nothing better is known).
    double p95_s() const noexcept {
        if (attempts == 0) {
            return 0.0;
        }
        const double rank = 0.95 * static_cast<double>(attempts);
        double below = 0.0;
        for (std::size_t i = 0; i < buckets.size(); ++i) {
            const auto here = static_cast<double>(buckets[i]);
            if (here > 0.0 && below + here >= rank) {
                const double lower = i == 0 ? 0.0 : delivery_latency_bounds[i - 1];
                if (i == delivery_latency_bounds.size()) {
                    return lower;
                }
                const double upper = delivery_latency_bounds[i];
                return lower + (upper - lower) * ((rank - below) / here);
            }
            below += here;
        }
        return delivery_latency_bounds.back();
    }

    ChannelDeliveryStats finish(std::string channel) const {
        ChannelDeliveryStats s;
        s.channel = std::move(channel);
        s.attempts = attempts;
        s.successes = successes;
        s.cost = cost;
        s.fallbacks = fallbacks;
        s.successful_fallbacks = fallback_successes;
        s.recoveries = recoveries;
        if (attempts > 0) {
            s.success_rate = static_cast<double>(successes) / static_cast<double>(attempts);
            s.mean_response = Duration(response_ns / static_cast<std::int64_t>(attempts));
            s.p95_response = to_duration(p95_s());
        }
        if (recoveries > 0) {
            s.mean_recovery = Duration(recovery_ns / static_cast<std::int64_t>(recoveries));
        }
        return s;
    }

    static Duration to_duration(double s) noexcept {
        return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
    }
};

// One channel's statistics: a ring of one-minute buckets (wall time) for ranges, and totals
// since it was made for the metrics. Thread-safe (one mutex; one short critical section per
// attempt).
class ChannelStatsCell {
public:
    explicit ChannelStatsCell(std::size_t minutes) : ring_(std::max<std::size_t>(minutes, 1)) {}

    // An attempt that started at `at` (wall) and ended at `end` (on the engine's clock).
    void record(WallTime at, TimePoint end, bool ok, Duration response, double cost,
                bool fallback) {
        const std::int64_t response_ns = std::max<std::int64_t>(response.count(), 0);
        const double response_s = static_cast<double>(response_ns) / 1e9;
        // The first bound >= the duration: Prometheus's buckets are "less than or equal".
        const auto bucket =
            static_cast<std::size_t>(std::lower_bound(delivery_latency_bounds.begin(),
                                                      delivery_latency_bounds.end(), response_s) -
                                     delivery_latency_bounds.begin());
        LockGuard lock(mutex_);
        DeliveryCounts* minute = slot(minute_of(at));
        std::int64_t recovered = -1;
        if (!ok) {
            if (!down_) {
                down_ = true;
                down_since_ = end - response;
            }
        } else if (down_) {
            down_ = false;
            recovered = std::max<std::int64_t>((end - down_since_).count(), 0);
        }
        for (DeliveryCounts* c : {&total_, minute}) {
            if (c == nullptr) {
                continue;
            }
            ++c->attempts;
            c->successes += ok ? 1 : 0;
            c->fallbacks += fallback ? 1 : 0;
            c->fallback_successes += fallback && ok ? 1 : 0;
            c->cost += cost;
            c->response_ns += response_ns;
            ++c->buckets[bucket];
            if (recovered >= 0) {
                ++c->recoveries;
                c->recovery_ns += recovered;
            }
        }
    }

    // The sums of the minutes that start in [minute of `from`, `to`).
    DeliveryCounts range(WallTime from, WallTime to) const {
        DeliveryCounts sum;
        const std::int64_t first = minute_of(from);
        const std::int64_t last = minute_of(to - Duration{1});
        LockGuard lock(mutex_);
        for (const Minute& m : ring_) {
            if (m.minute >= first && m.minute <= last) {
                sum.merge(m.counts);
            }
        }
        return sum;
    }

    DeliveryCounts total() const {
        LockGuard lock(mutex_);
        return total_;
    }

    void write(MetricsWriter& w, std::string_view engine, std::string_view channel) const {
        const DeliveryCounts t = total();
        const MetricLabels l{{"engine", engine}, {"channel", channel}};
        w.add_counter("bulwark_delivery_attempts_total", "Adapter calls, by channel.", l,
                      t.attempts);
        w.add_counter("bulwark_delivery_successes_total", "Adapter calls that delivered.", l,
                      t.successes);
        w.add_counter("bulwark_delivery_fallbacks_total",
                      "Calls made after another channel of the same pass did not deliver.", l,
                      t.fallbacks);
        w.add_counter("bulwark_delivery_fallback_successes_total", "Fallback calls that delivered.",
                      l, t.fallback_successes);
        w.add_counter("bulwark_delivery_cost_total", "What the calls cost, in the user's unit.", l,
                      t.cost);
        std::vector<double> bounds(delivery_latency_bounds.begin(), delivery_latency_bounds.end());
        std::vector<std::uint64_t> cumulative;
        std::uint64_t running = 0;
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            running += t.buckets[i];
            cumulative.push_back(running);
        }
        w.add_histogram("bulwark_delivery_response_seconds", "Adapter call durations.", l, bounds,
                        cumulative, static_cast<double>(t.response_ns) / 1e9, t.attempts);
    }

private:
    struct Minute {
        std::int64_t minute = std::numeric_limits<std::int64_t>::min();
        DeliveryCounts counts;
    };

    static std::int64_t minute_of(WallTime t) noexcept {
        return std::chrono::floor<std::chrono::minutes>(t.time_since_epoch()).count();
    }

    // The bucket of `minute`, reset when it held an older minute; null for a minute older than
    // the ring holds (a late record counts in the totals only).
    DeliveryCounts* slot(std::int64_t minute) BULWARK_REQUIRES(mutex_) {
        const auto n = static_cast<std::int64_t>(ring_.size());
        Minute& m = ring_[static_cast<std::size_t>(((minute % n) + n) % n)];
        if (m.minute > minute) {
            return nullptr;
        }
        if (m.minute != minute) {
            m = Minute{};
            m.minute = minute;
        }
        return &m.counts;
    }

    mutable Mutex mutex_;
    std::vector<Minute> ring_ BULWARK_GUARDED_BY(mutex_);
    DeliveryCounts total_ BULWARK_GUARDED_BY(mutex_);
    bool down_ BULWARK_GUARDED_BY(mutex_) = false;
    TimePoint down_since_ BULWARK_GUARDED_BY(mutex_){};
};

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DELIVERY_STATS_HPP
