// The outage lab for a DeliveryEngine: its workers as simulated fibers, and the messages lost.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_DELIVERY_HPP
#define BULWARK_OUTAGE_DELIVERY_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include <bulwark/delivery.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/message_status.hpp>
#include <bulwark/outage_runner.hpp>
#include <bulwark/outcome.hpp>

namespace bulwark {

// Runs a DeliveryEngine under the lab's scenario: every arrival submits make_message(call) (the
// caller-seen outcome is the submit's), and `workers` background fibers each call
// engine.run_due() every `poll` of virtual time, so the engine's passes, its FallbackChain, the
// channels' breakers and retries and its pass backoff all run on the lab's clock. Channels reach
// the scenario's dependencies through lab.dependency(i, ctx). After the load, the run goes on
// until the engine's queue is empty (or SimOptions::max_drain); the summary then says how many
// messages were delivered (sent or delivered), dead-lettered, and lost (accepted and neither).
//   bulwark::DeliveryEngineOptions o;  o.workers = 0;  // the lab's fibers are the workers
//   bulwark::DeliveryEngine<std::string> engine(rules, dead_letters, o, lab.clock());
//   engine.add_channel("sms", [&lab](const std::string&, bulwark::Context& ctx) {
//       lab.dependency(0, ctx);  return bulwark::Receipt{"sms", "id", 0.0, true};
//   });
//   auto t = bulwark::run_delivery(lab, "engine", engine,
//                                  [](bulwark::SimCall& c) { return std::to_string(c.id()); });
// The engine must be built on lab.clock() with DeliveryEngineOptions::workers = 0 (its own
// threads cannot run in the simulation). Throws std::invalid_argument for workers == 0 or a
// non-positive poll.
template <class M, class MakeMessage>
OutageTimeline run_delivery(OutageLab& lab, std::string configuration, DeliveryEngine<M>& engine,
                            MakeMessage make_message, std::size_t workers = 2,
                            Duration poll = std::chrono::milliseconds(50)) {
    if (workers == 0) {
        detail::throw_invalid_option("run_delivery: workers", "must be >= 1", "0");
    }
    for (std::size_t i = 0; i < workers; ++i) {
        lab.background(poll, [&engine] { (void)engine.run_due(); });
    }
    lab.settle_when([&engine] { return engine.stats().queued == 0; });
    std::uint64_t accepted = 0;
    OutageTimeline t =
        lab.run(std::move(configuration), [&](SimCall& call) -> Outcome<std::string> {
            try {
                std::string id = engine.submit(make_message(call));
                ++accepted;
                return Outcome<std::string>::from_value(std::move(id));
            } catch (...) {
                return Outcome<std::string>::from_error(std::current_exception());
            }
        });
    const DeliveryStats stats = engine.stats();
    const auto in = [&stats](MessageStatus s) {
        return static_cast<std::uint64_t>(stats.by_status[static_cast<std::size_t>(s)]);
    };
    t.summary.delivered = in(MessageStatus::sent) + in(MessageStatus::delivered);
    t.summary.dead_lettered = in(MessageStatus::dead_lettered);
    const std::uint64_t accounted = t.summary.delivered + t.summary.dead_lettered +
                                    in(MessageStatus::failed) + in(MessageStatus::bounced);
    t.summary.lost = accepted > accounted ? accepted - accounted : 0;
    return t;
}

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_DELIVERY_HPP
