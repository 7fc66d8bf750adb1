// LoadShedder: drops calls by priority while the service is degraded.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_LOAD_SHEDDER_HPP
#define BULWARK_LOAD_SHEDDER_HPP

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <bulwark/context.hpp>
#include <bulwark/degradation_level.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/errors.hpp>
#include <bulwark/events.hpp>
#include <bulwark/outcome.hpp>
#include <bulwark/policy.hpp>

namespace bulwark {

struct LoadShedderOptions {
    // Normal-priority calls are shed from this level on.
    DegradationLevel shed_at = DegradationLevel::severe;
    // With priorities, low-priority calls are shed one level earlier and high-priority ones one
    // level later; critical calls are never shed by level. false: every call alike.
    bool by_priority = true;
    // Optional: also shed when this returns true (a queue too long, a CPU too hot…).
    std::function<bool(const Context&)> shed_if{};
    // Shadow mode: the shedder decides, counts and reports (on_shed) every call it would shed,
    // but lets it through; such a call is counted in shed and in shadow_rejections, not in
    // passed. Switch at run time with set_shadow(). false by default.
    bool shadow = false;
};

// A call was shed.
struct ShedEvent {
    DegradationLevel level = DegradationLevel::normal;
    Priority priority = Priority::normal;
    bool by_predicate = false;
    // The call was let through anyway, because the shedder is in shadow mode.
    bool shadow = false;
};

struct LoadShedderStats {
    std::uint64_t passed = 0;  // calls not shed
    std::uint64_t shed = 0;    // calls shed (in shadow mode: that would have been shed)
    // of the shed, how many were let through in shadow mode
    std::uint64_t shadow_rejections = 0;
};

// Drops calls while the service is degraded, lowest priority first, so that what matters keeps
// working.
//   bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
//   bulwark::LoadShedder front("front", degradation, bulwark::DegradationLevel::severe);  // named
//   ctx.set_priority(bulwark::Priority::critical);    // a call that must pass longest
//   shedder.execute(f, ctx);                          // LoadShedError when shed
// The degradation must outlive the shedder. Thread-safe. Passing costs one atomic load of the
// level and a per-thread counter; shedding allocates nothing (the error is built once).
// LoadShedder is BasicLoadShedder<>: a class template only so that a translation unit compiles only
// the members it uses (the Tag is never used).
template <class Tag = void>
class BasicLoadShedder : public PolicyBase<BasicLoadShedder<Tag>> {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(const DegradationSignal& degradation, DegradationLevel shed_at)
        : BasicLoadShedder(degradation, LoadShedderOptions{shed_at, true, nullptr, false}) {}

    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(const DegradationSignal& degradation, LoadShedderOptions options)
        : BasicLoadShedder(std::string(), degradation, std::move(options)) {}

    // A named shedder: its rejections say the name in their message and in
    // RejectedError::source().
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    BasicLoadShedder(std::string name, const DegradationSignal& degradation,
                     DegradationLevel shed_at)
        : BasicLoadShedder(std::move(name), degradation,
                           LoadShedderOptions{shed_at, true, nullptr, false}) {}
    BasicLoadShedder(std::string name, const DegradationSignal& degradation,
                     LoadShedderOptions options)
        : name_(std::make_shared<const std::string>(std::move(name))),
          degradation_(&degradation),
          options_(std::move(options)),
          shadow_(options_.shadow),
          error_(std::make_exception_ptr(LoadShedError(
              name_, (name_->empty() ? std::string("load shed")
                                     : detail::component_label("load shedder", *name_)) +
                         ": the service is degraded (shedding from level " +
                         to_string(options_.shed_at) + ")"))) {
        detail::check_enumerator(options_.shed_at, DegradationLevel::critical,
                                 "LoadShedderOptions.shed_at", "DegradationLevel");
        if (options_.shed_at == DegradationLevel::normal) {
            detail::throw_invalid_option("LoadShedderOptions.shed_at",
                                         "must be above normal (or every call would be shed)",
                                         "normal");
        }
    }

    BasicLoadShedder(const BasicLoadShedder&) = delete;
    BasicLoadShedder& operator=(const BasicLoadShedder&) = delete;

    // Empty when unnamed.
    const std::string& name() const noexcept { return *name_; }

    // True if a call with this context would be shed now.
    bool should_shed(const Context& ctx) const {
        return shed_by_level(ctx.priority()) || (options_.shed_if && options_.shed_if(ctx));
    }

    template <class Next>
    auto apply(Context& ctx, Next&& next) {
        using O = std::invoke_result_t<Next&, Context&>;
        const bool by_level = shed_by_level(ctx.priority());
        if (BULWARK_UNLIKELY(by_level || (options_.shed_if && options_.shed_if(ctx)))) {
            if (shed(ctx, !by_level)) {
                return next(ctx);  // shadow mode: counted and reported as shed, let through
            }
            return O::from_error(error_);
        }
        passed_.add();
        return next(ctx);
    }

    // Shadow mode on or off, at run time (see LoadShedderOptions::shadow); applies to the next
    // call shed.
    void set_shadow(bool on) noexcept {
        // relaxed: an independent switch; nothing else is published with it.
        shadow_.store(on, std::memory_order_relaxed);
    }
    bool shadow() const noexcept { return shadow_.load(std::memory_order_relaxed); }

    // Called for every call shed (in shadow mode too, with ShedEvent::shadow). Returns the id that
    // remove_listener() takes; throws std::invalid_argument for an empty listener.
    ListenerId on_shed(std::function<void(const ShedEvent&)> listener) {
        return listeners_.add(std::move(listener));
    }
    // Stops calling a listener; false if the id is unknown here or already removed.
    bool remove_listener(ListenerId id) noexcept { return listeners_.remove(id); }

    LoadShedderStats stats() const noexcept {
        return LoadShedderStats{passed_.sum(), shed_.load(std::memory_order_relaxed),
                                shadow_rejections_.load(std::memory_order_relaxed)};
    }

private:
    bool shed_by_level(Priority priority) const noexcept {
        const int level = static_cast<int>(degradation_->level());
        int threshold = static_cast<int>(options_.shed_at);
        if (options_.by_priority) {
            switch (priority) {
                case Priority::low:
                    threshold -= 1;
                    break;
                case Priority::normal:
                    break;
                case Priority::high:
                    threshold += 1;
                    break;
                case Priority::critical:
                    return false;
            }
        }
        // A low-priority threshold never falls to normal: a healthy service sheds nothing.
        return level >= std::max(threshold, 1);
    }

    // Counts and reports a call shed; returns true if it is to be let through anyway (shadow
    // mode). The switch is read only here, never on the pass path.
    bool shed(const Context& ctx, bool by_predicate) noexcept {
        const bool shadow = shadow_.load(std::memory_order_relaxed);
        // relaxed: statistics.
        shed_.fetch_add(1, std::memory_order_relaxed);
        if (shadow) {
            shadow_rejections_.fetch_add(1, std::memory_order_relaxed);
        }
        listeners_.emit_with([&] {
            return ShedEvent{degradation_->level(), ctx.priority(), by_predicate, shadow};
        });
        return shadow;
    }

    const std::shared_ptr<const std::string> name_;
    const DegradationSignal* degradation_;
    const LoadShedderOptions options_;
    std::atomic<bool> shadow_;  // read only on the shed path
    const std::exception_ptr error_;
    detail::StripedCounter passed_;
    std::atomic<std::uint64_t> shed_{0};
    std::atomic<std::uint64_t> shadow_rejections_{0};
    Listeners<ShedEvent> listeners_;
};

using LoadShedder = BasicLoadShedder<>;

}  // namespace bulwark

#endif  // BULWARK_LOAD_SHEDDER_HPP
