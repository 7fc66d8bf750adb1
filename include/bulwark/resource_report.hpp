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
        std::string out;
        bool first = true;
        out.push_back('{');
        detail::json_key(out, "status", first);
        detail::json_string(out, to_string(worst));
        detail::json_key(out, "resources", first);
        out.push_back('[');
        for (std::size_t i = 0; i < resources.size(); ++i) {
            const ResourceReading& r = resources[i];
            if (i != 0) {
                out.push_back(',');
            }
            bool f = true;
            out.push_back('{');
            detail::json_key(out, "name", f);
            detail::json_string(out, r.name);
            detail::json_key(out, "kind", f);
            detail::json_string(out, r.quota ? "quota" : "gauge");
            detail::json_key(out, "status", f);
            detail::json_string(out, to_string(r.status));
            detail::json_key(out, "percent", f);
            detail::json_number(out, r.percent);
            if (r.quota) {
                detail::json_key(out, "used", f);
                detail::json_number(out, r.used);
                detail::json_key(out, "limit", f);
                detail::json_number(out, r.limit);
                detail::json_key(out, "window_s", f);
                detail::json_number(out, std::chrono::duration<double>(r.window).count());
            }
            detail::json_key(out, "warning", f);
            detail::json_number(out, r.thresholds.warning);
            detail::json_key(out, "critical", f);
            detail::json_number(out, r.thresholds.critical);
            detail::json_key(out, "readings", f);
            detail::json_number(out, r.readings);
            detail::json_key(out, "peak_percent", f);
            detail::json_number(out, r.peak_percent);
            detail::json_key(out, "times_warning", f);
            detail::json_number(out, r.times_warning);
            detail::json_key(out, "times_critical", f);
            detail::json_number(out, r.times_critical);
            detail::json_key(out, "status_for_s", f);
            detail::json_number(out, std::chrono::duration<double>(at - r.status_since).count());
            detail::json_key(out, "alternatives", f);
            out.push_back('[');
            for (std::size_t j = 0; j < r.alternatives.size(); ++j) {
                if (j != 0) {
                    out.push_back(',');
                }
                detail::json_string(out, r.alternatives[j]);
            }
            out += "]}";
        }
        out += "]}";
        return out;
    }
};

}  // namespace bulwark

#endif  // BULWARK_RESOURCE_REPORT_HPP
