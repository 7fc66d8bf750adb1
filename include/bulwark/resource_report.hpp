// Resource vocabulary: ResourceStatus, thresholds, readings, changes and the ResourceReport.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_RESOURCE_REPORT_HPP
#define BULWARK_RESOURCE_REPORT_HPP

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <bulwark/detail/json.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/time.hpp>

namespace bulwark {

// How much of a resource is used. Ordered: a larger value is worse; unknown (the gauge could not
// be read) is the smallest, so it never hides a real reading.
enum class ResourceStatus : std::uint8_t { unknown, healthy, warning, critical, exhausted };

inline const char* to_string(ResourceStatus status) noexcept {
    switch (status) {
        case ResourceStatus::unknown:
            return "unknown";
        case ResourceStatus::healthy:
            return "healthy";
        case ResourceStatus::warning:
            return "warning";
        case ResourceStatus::critical:
            return "critical";
        case ResourceStatus::exhausted:
            return "exhausted";
    }
    return "unknown";
}

// Percent thresholds: warning from `warning` on, critical from `critical` on, exhausted at 100.
struct ResourceThresholds {
    double warning = 80.0;   // in [0, 100]. Default 80.
    double critical = 95.0;  // in [warning, 100]. Default 95.

    void validate(std::string_view resource) const {
        const std::string prefix = "ResourceThresholds(" + std::string(resource) + ").";
        if (!(warning >= 0.0 && warning <= 100.0)) {
            detail::throw_invalid_option(prefix + "warning", "must be in [0, 100]",
                                         detail::format_number(warning));
        }
        if (!(critical >= warning && critical <= 100.0)) {
            detail::throw_invalid_option(prefix + "critical", "must be in [warning, 100]",
                                         detail::format_number(critical));
        }
    }

    ResourceStatus classify(double percent) const noexcept {
        if (detail::is_nan(percent)) {
            return ResourceStatus::unknown;
        }
        if (percent >= 100.0) {
            return ResourceStatus::exhausted;
        }
        if (percent >= critical) {
            return ResourceStatus::critical;
        }
        return percent >= warning ? ResourceStatus::warning : ResourceStatus::healthy;
    }
};

// A reading: `auto [status, percent] = rm.check("llm_tokens");`. percent is NaN when unknown.
struct ResourceCheck {
    ResourceStatus status = ResourceStatus::unknown;
    double percent = std::numeric_limits<double>::quiet_NaN();
};

// A resource's status changed.
struct ResourceChange {
    std::string name;
    ResourceStatus from = ResourceStatus::unknown;
    ResourceStatus to = ResourceStatus::unknown;
    double percent = 0.0;
    TimePoint at{};
};

// One resource in a report.
struct ResourceReading {
    std::string name;
    bool quota = false;  // a quota (else a gauge)
    ResourceStatus status = ResourceStatus::unknown;
    double percent = std::numeric_limits<double>::quiet_NaN();
    double used = 0.0;   // quotas: used within the window
    double limit = 0.0;  // quotas
    Duration window{};   // quotas
    ResourceThresholds thresholds;
    // History summary since the resource was added.
    std::uint64_t readings = 0;
    double peak_percent = 0.0;
    std::uint64_t times_warning = 0;   // entries into warning (from a better status)
    std::uint64_t times_critical = 0;  // entries into critical or exhausted
    TimePoint status_since{};
    std::vector<std::string> alternatives;
};

struct ResourceReport {
    TimePoint at{};
    ResourceStatus worst = ResourceStatus::unknown;
    std::string worst_name;  // the resource with the worst status (empty if none is known)
    std::vector<ResourceReading> resources;

    std::string to_json() const {
        detail::JsonWriter w;
        w.begin_object().field("status", to_string(worst));
        w.key("resources").begin_array();
        for (const ResourceReading& r : resources) {
            w.begin_object();
            w.field("name", r.name).field("kind", r.quota ? "quota" : "gauge");
            w.field("status", to_string(r.status)).field("percent", r.percent);
            if (r.quota) {
                w.field("used", r.used).field("limit", r.limit);
                w.field("window_s", std::chrono::duration<double>(r.window).count());
            }
            w.field("warning", r.thresholds.warning).field("critical", r.thresholds.critical);
            w.field("readings", r.readings).field("peak_percent", r.peak_percent);
            w.field("times_warning", r.times_warning).field("times_critical", r.times_critical);
            w.field("status_for_s", std::chrono::duration<double>(at - r.status_since).count());
            w.key("alternatives").begin_array();
            for (const std::string& alternative : r.alternatives) {
                w.value(alternative);
            }
            w.end_array();
            w.end_object();
        }
        w.end_array().end_object();
        return w.take();
    }
};

}  // namespace bulwark

#endif  // BULWARK_RESOURCE_REPORT_HPP
