// DegradationLevel and DegradationSignal: the level a component acts on, without its source.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DEGRADATION_LEVEL_HPP
#define BULWARK_DEGRADATION_LEVEL_HPP

#include <atomic>
#include <cstdint>

namespace bulwark {

// How degraded the service is, from fully working to keeping only what is critical.
enum class DegradationLevel : std::uint8_t { normal, minor, moderate, severe, critical };

inline const char* to_string(DegradationLevel level) noexcept {
    switch (level) {
        case DegradationLevel::normal:
            return "normal";
        case DegradationLevel::minor:
            return "minor";
        case DegradationLevel::moderate:
            return "moderate";
        case DegradationLevel::severe:
            return "severe";
        case DegradationLevel::critical:
            return "critical";
    }
    return "unknown";
}

// The degradation level in force, as one atomic that any component can read without knowing
// what sets it: a LoadShedder sheds by it, a Degradation (the usual source) publishes it.
//   bulwark::LoadShedder shedder(degradation, bulwark::DegradationLevel::severe);
// level() is one acquire load. Thread-safe. Only a subclass sets the level.
class DegradationSignal {
public:
    DegradationSignal(const DegradationSignal&) = delete;
    DegradationSignal& operator=(const DegradationSignal&) = delete;

    DegradationLevel level() const noexcept {
        // acquire: pairs with the source's release store, so what the source wrote before it
        // changed the level (its reason, its time) is visible to a reader that sees the level.
        return static_cast<DegradationLevel>(level_.load(std::memory_order_acquire));
    }

protected:
    DegradationSignal() = default;
    ~DegradationSignal() = default;

    std::atomic<std::uint8_t> level_{static_cast<std::uint8_t>(DegradationLevel::normal)};
};

}  // namespace bulwark

#endif  // BULWARK_DEGRADATION_LEVEL_HPP
