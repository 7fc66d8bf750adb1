// Outage lab reports: a timeline as CSV and as one SVG picture, and the what-if table.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_OUTAGE_REPORT_HPP
#define BULWARK_OUTAGE_REPORT_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/circuit_breaker_options.hpp>
#include <bulwark/detail/math.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/utf8.hpp>
#include <bulwark/outage_timeline.hpp>

namespace bulwark {

namespace detail {

// Numbers in the reports are written from integers only: no printf, no locale, so the bytes are
// the same with every compiler, standard library and global locale.

// `scaled` / 10^decimals with exactly `decimals` digits after the point: (12345, 3) -> "12.345".
inline std::string fixed_point(long long scaled, int decimals) {
    const bool negative = scaled < 0;
    unsigned long long magnitude = negative ? 0ULL - static_cast<unsigned long long>(scaled)
                                            : static_cast<unsigned long long>(scaled);
    std::string digits = std::to_string(magnitude);
    const auto width = static_cast<std::size_t>(decimals);
    if (digits.size() <= width) {
        digits.insert(0, width + 1 - digits.size(), '0');
    }
    if (decimals > 0) {
        digits.insert(digits.size() - width, 1, '.');
    }
    return negative ? "-" + digits : digits;
}

// `value` rounded half away from zero to `decimals` digits; finite values only (NaN -> "0").
inline std::string fixed_point(double value, int decimals) {
    double scale = 1.0;
    for (int i = 0; i < decimals; ++i) {
        scale *= 10.0;
    }
    double scaled = value * scale;
    if (!(scaled == scaled)) {
        scaled = 0.0;
    }
    scaled = std::min(std::max(scaled, -9.0e18), 9.0e18);
    const auto rounded = static_cast<long long>(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
    return fixed_point(rounded, decimals);
}

// A duration in milliseconds with 3 decimals, exact to the microsecond (rounded half up).
inline std::string millis_text(Duration d) {
    const auto ns = static_cast<long long>(d.count());
    const long long us = ns >= 0 ? (ns + 500) / 1000 : (ns - 500) / 1000;
    return fixed_point(us, 3);
}

// A duration for people: "850.0 ms", "12.3 s", "4.5 min".
inline std::string human_duration(Duration d) {
    const auto ns = static_cast<long long>(d.count());
    if (ns < 1000000000LL && ns > -1000000000LL) {
        return fixed_point(static_cast<double>(ns) / 1e6, 1) + " ms";
    }
    if (ns < 600000000000LL && ns > -600000000000LL) {
        return fixed_point(static_cast<double>(ns) / 1e9, 1) + " s";
    }
    return fixed_point(static_cast<double>(ns) / 6e10, 1) + " min";
}

// Text safe inside an XML element or a double- or single-quoted attribute: markup characters
// escaped, control characters (which XML 1.0 forbids even escaped) and bytes that are not UTF-8
// replaced by U+FFFD.
inline void xml_text(std::string& out, std::string_view text) {
    append_utf8(out, text, [](std::string& o, char c) {
        switch (c) {
            case '&':
                o += "&amp;";
                break;
            case '<':
                o += "&lt;";
                break;
            case '>':
                o += "&gt;";
                break;
            case '"':
                o += "&quot;";
                break;
            case '\'':
                o += "&apos;";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f') {
                    o += "\xEF\xBF\xBD";
                } else {
                    o.push_back(c);
                }
        }
    });
}

inline std::string xml_escaped(std::string_view text) {
    std::string out;
    xml_text(out, text);
    return out;
}

// A CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF; quotes doubled.
inline void csv_field(std::string& out, std::string_view text) {
    if (text.find_first_of(",\"\r\n") == std::string_view::npos) {
        out.append(text);
        return;
    }
    out.push_back('"');
    for (const char c : text) {
        if (c == '"') {
            out.push_back('"');
        }
        out.push_back(c);
    }
    out.push_back('"');
}

// How many characters a terminal shows for `text` (UTF-8 code points; wide glyphs aside).
inline std::size_t display_width(std::string_view text) noexcept {
    std::size_t n = 0;
    for (const char c : text) {
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
            ++n;
        }
    }
    return n;
}

// `text` cut to `max` code points, an ellipsis marking the cut.
inline std::string shortened(std::string_view text, std::size_t max) {
    if (display_width(text) <= max) {
        return std::string(text);
    }
    std::size_t points = 0;
    std::size_t at = 0;
    while (at < text.size() && points + 1 < max) {
        ++at;
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) {
            ++at;
        }
        ++points;
    }
    return std::string(text.substr(0, at)) + "\xE2\x80\xA6";
}

// A load ratio with two decimals, three below 0.1 (where a breaker keeps the load): "3.00x".
inline std::string load_ratio_text(double ratio) {
    return fixed_point(ratio, ratio < 0.1 ? 3 : 2) + "\xC3\x97";
}

// The names of the policies that rejected in any bucket, sorted (the CSV's rejected_by columns).
inline std::vector<std::string> rejecting_policies(const OutageTimeline& t) {
    std::vector<std::string> names;
    for (const SimBucket& b : t.buckets) {
        for (const auto& p : b.rejected_by_policy) {
            names.push_back(p.first);
        }
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
}

inline const char* circuit_state_name(std::uint8_t state) noexcept {
    return state <= static_cast<std::uint8_t>(CircuitState::disabled)
               ? to_string(static_cast<CircuitState>(state))
               : "unknown";
}

// "1, 2, 5 x 10^k" tick steps: the smallest that gives at most `max_ticks` intervals over
// [0, top].
inline double nice_step(double top, int max_ticks) {
    if (!(top > 0.0) || !is_finite(top)) {
        return 1.0;
    }
    const double raw = top / static_cast<double>(max_ticks);
    double magnitude = 1.0;  // the largest power of ten <= raw
    while (magnitude > raw && magnitude > 1e-9) {
        magnitude /= 10.0;
    }
    while (magnitude * 10.0 <= raw) {
        magnitude *= 10.0;
    }
    for (;;) {
        for (const double m : {1.0, 2.0, 5.0}) {
            if (top / (m * magnitude) <= static_cast<double>(max_ticks)) {
                return m * magnitude;
            }
        }
        magnitude *= 10.0;
    }
}

// An axis value: no decimals when whole, else as few as the step needs (at most 3).
inline std::string tick_text(double value, double step) {
    int decimals = 0;
    double s = step;
    while (decimals < 3 && s < 0.999999) {
        s *= 10.0;
        ++decimals;
    }
    return fixed_point(value, decimals);
}

// A time-axis label for `seconds` since the start: "45s" or "2:30" or "1:02:30".
inline std::string clock_label(double seconds, bool minutes, double step) {
    if (!minutes) {
        return tick_text(seconds, step) + "s";
    }
    // seconds >= 0, so adding 0.5 rounds half up.
    // NOLINTNEXTLINE(bugprone-incorrect-roundings)
    const auto whole = static_cast<long long>(seconds + 0.5);
    const long long h = whole / 3600;
    const long long m = (whole / 60) % 60;
    const long long s = whole % 60;
    const auto two = [](long long v) {
        return (v < 10 ? "0" : "") + std::to_string(v);
    };
    return h > 0 ? std::to_string(h) + ":" + two(m) + ":" + two(s)
                 : std::to_string(m) + ":" + two(s);
}

}  // namespace detail

// Writes a timeline as CSV, one row per bucket, for a spreadsheet or pandas. The columns, in this
// order: start_ms, offered, succeeded, failed, failed_transient, failed_permanent,
// failed_rate_limited, failed_timeout, rejected, retries, fallbacks, p50_ms, p99_ms; then for
// each dependency D (OutageTimeline::dependencies order) D.calls, D.successes, D.failures; for
// each breaker B (registration order) B.state (closed, open, half_open, forced_open,
// disabled); for each policy P that rejected anywhere in the run (by name) rejected_by.P.
// Durations are milliseconds with 3 decimals; names are quoted as RFC 4180 says when needed.
// The output is deterministic: the same timeline gives the same bytes everywhere.
//   std::ofstream("timeline.csv") << bulwark::outage_timeline_csv(timeline);
inline std::string outage_timeline_csv(const OutageTimeline& timeline) {
    const std::vector<std::string> policies = detail::rejecting_policies(timeline);
    std::string out =
        "start_ms,offered,succeeded,failed,failed_transient,failed_permanent,"
        "failed_rate_limited,failed_timeout,rejected,retries,fallbacks,p50_ms,p99_ms";
    const auto column = [&out](std::string_view prefix, const std::string& name,
                               std::string_view suffix) {
        out.push_back(',');
        detail::csv_field(out, std::string(prefix) + name + std::string(suffix));
    };
    for (const std::string& d : timeline.dependencies) {
        column("", d, ".calls");
        column("", d, ".successes");
        column("", d, ".failures");
    }
    for (const std::string& b : timeline.breakers) {
        column("", b, ".state");
    }
    for (const std::string& p : policies) {
        column("rejected_by.", p, "");
    }
    out.push_back('\n');
    for (const SimBucket& b : timeline.buckets) {
        const auto number = [&out](std::uint64_t v) {
            out.push_back(',');
            out += std::to_string(v);
        };
        out += detail::millis_text(b.start);
        number(b.offered);
        number(b.succeeded);
        number(b.failed);
        for (const std::uint64_t f : b.failed_by_kind) {
            number(f);
        }
        number(b.rejected);
        number(b.retries);
        number(b.fallbacks);
        out += ',' + detail::millis_text(b.p50) + ',' + detail::millis_text(b.p99);
        for (std::size_t d = 0; d < timeline.dependencies.size(); ++d) {
            const SimDependencyBucket dep =
                d < b.per_dependency.size() ? b.per_dependency[d] : SimDependencyBucket{};
            number(dep.calls);
            number(dep.successes);
            number(dep.failures);
        }
        for (std::size_t i = 0; i < timeline.breakers.size(); ++i) {
            out.push_back(',');
            out += i < b.breaker_state.size() ? detail::circuit_state_name(b.breaker_state[i])
                                              : "unknown";
        }
        for (const std::string& p : policies) {
            std::uint64_t n = 0;
            for (const auto& r : b.rejected_by_policy) {
                n += r.first == p ? r.second : 0;
            }
            number(n);
        }
        out.push_back('\n');
    }
    return out;
}

// How outage_timeline_svg draws. validate() throws std::invalid_argument naming the field.
struct OutageSvgOptions {
    // Width of the picture in pixels, in [480, 8000].
    int width = 1000;
    // Height of the main plot (the stacked outcomes) in pixels, in [120, 4000]; the title,
    // breaker bands, axes and legend add to it.
    int plot_height = 320;
    // The title; empty: "<scenario> — <configuration>".
    std::string title;

    void validate() const {
        if (width < 480 || width > 8000) {
            detail::throw_invalid_option("OutageSvgOptions.width", "must be in [480, 8000]",
                                         std::to_string(width));
        }
        if (plot_height < 120 || plot_height > 4000) {
            detail::throw_invalid_option("OutageSvgOptions.plot_height", "must be in [120, 4000]",
                                         std::to_string(plot_height));
        }
    }
};

namespace detail {

// Builds the SVG document; one use per picture. Coordinates are written with one decimal.
class OutageSvgWriter {
public:
    OutageSvgWriter(const OutageTimeline& t, const OutageSvgOptions& o) : t_(t), o_(o) {}

    std::string write() {
        layout();
        header();
        plot_backdrop();
        stacked_areas();
        dependency_lines();
        p99_line();
        axes();
        breaker_lanes();
        legend();
        out_ += "</svg>\n";
        return std::move(out_);
    }

private:
    struct Series {
        const char* label;
        const char* css_class;
        const char* color;
    };
    static constexpr std::size_t series_count_ = 7;
    static constexpr Series series_[series_count_] = {
        {"succeeded", "succeeded", "#37b24d"},
        {"served by a fallback", "fallback", "#66d9e8"},
        {"failed: transient", "failed-transient", "#f59f00"},
        {"failed: permanent", "failed-permanent", "#e03131"},
        {"failed: rate limited", "failed-rate-limited", "#ae3ec9"},
        {"failed: timeout", "failed-timeout", "#a0522d"},
        {"rejected by a policy", "rejected", "#868e96"},
    };
    static constexpr const char* p99_color_ = "#1c3f95";
    static constexpr const char* dash_[4] = {"6 4", "2 3", "10 3 2 3", "1 5"};

    static const char* state_color(std::uint8_t s) noexcept {
        switch (s) {
            case 0:
                return "#b2f2bb";  // closed
            case 1:
                return "#fa5252";  // open
            case 2:
                return "#fcc419";  // half_open
            case 3:
                return "#a61e4d";  // forced_open
            default:
                return "#dee2e6";  // disabled or unknown
        }
    }

    static std::string num(double v) { return fixed_point(v, 1); }

    // Appends the parts in order (no temporary strings for the concatenation).
    void put(std::initializer_list<std::string_view> parts) {
        for (const std::string_view part : parts) {
            out_.append(part);
        }
    }

    // How many steps of `step` fit in [0, top] (a tick count, so no loop runs on a double).
    static int ticks(double top, double step) { return static_cast<int>((top + step / 2) / step); }

    static double seconds(Duration d) { return static_cast<double>(d.count()) / 1e9; }

    // Count per second in bucket `i` of series `k` (0 succeeded from the dependency, 1 from a
    // fallback, 2-5 failed by kind, 6 rejected).
    double rate(std::size_t i, std::size_t k) const {
        const SimBucket& b = t_.buckets[i];
        const std::uint64_t fallbacks = std::min(b.fallbacks, b.succeeded);
        std::uint64_t n = 0;
        if (k == 0) {
            n = b.succeeded - fallbacks;
        } else if (k == 1) {
            n = fallbacks;
        } else if (k <= 5) {
            n = b.failed_by_kind[k - 2];
        } else {
            n = b.rejected;
        }
        return static_cast<double>(n) / bucket_s_;
    }

    double x_of(double s) const { return left_ + s / span_s_ * plot_w_; }
    double y_of(double per_second) const {
        return plot_top_ + plot_h_ - per_second / y_max_ * plot_h_;
    }
    // The right axis is in milliseconds, or in seconds when the p99 passes 10 s.
    double y2_of(double ms) const {
        return plot_top_ + plot_h_ - ms / y2_unit_ms_ / y2_max_ * plot_h_;
    }

    void layout() {
        const std::size_t n = t_.buckets.size();
        bucket_s_ = seconds(t_.bucket) > 0 ? seconds(t_.bucket) : 1.0;
        span_s_ = n > 0 ? bucket_s_ * static_cast<double>(n) : bucket_s_;
        double top = 0.0;
        double top_p99 = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
            double stack = 0.0;
            for (std::size_t k = 0; k < series_count_; ++k) {
                stack += rate(i, k);
            }
            top = std::max(top, stack);
            for (const SimDependencyBucket& d : t_.buckets[i].per_dependency) {
                top = std::max(top, static_cast<double>(d.calls) / bucket_s_);
            }
            top_p99 = std::max(top_p99, seconds(t_.buckets[i].p99) * 1000.0);
        }
        // 4% headroom: a line at the maximum stays visible below the plot's top edge.
        top = top > 0 ? top * 1.04 : 1.0;
        top_p99 = top_p99 > 0 ? top_p99 * 1.04 : 1.0;
        y_step_ = nice_step(top, 8);
        y_max_ = y_step_ * detail::ceil(top / y_step_);
        if (top_p99 > 10000.0) {
            y2_unit_ms_ = 1000.0;
            top_p99 /= 1000.0;
        }
        y2_step_ = nice_step(top_p99, 8);
        y2_max_ = y2_step_ * detail::ceil(top_p99 / y2_step_);
        width_ = static_cast<double>(o_.width);
        plot_w_ = width_ - left_ - right_;
        plot_h_ = static_cast<double>(o_.plot_height);
        lanes_top_ = plot_top_ + plot_h_ + 58.0;
        const double lanes = static_cast<double>(t_.breakers.size()) * lane_step_;
        legend_top_ = lanes_top_ + lanes + (t_.breakers.empty() ? 0.0 : 14.0);
        legend_rows_ = legend_layout().back().row + 1;
        height_ = legend_top_ + static_cast<double>(legend_rows_) * 22.0 + 12.0;
    }

    void header() {
        std::string title = o_.title;
        if (title.empty()) {
            title = t_.scenario + " \xE2\x80\x94 " + t_.configuration;
        }
        const std::string w = num(width_);
        const std::string h = num(height_);
        out_ += "<?xml version='1.0' encoding='UTF-8'?>\n";
        out_ += "<svg xmlns='http://www.w3.org/2000/svg' width='" + w + "' height='" + h +
                "' viewBox='0 0 " + w + " " + h +
                "' font-family='-apple-system, Segoe UI, Roboto, Helvetica, Arial, "
                "sans-serif' font-size='12' role='img'>\n";
        out_ += "<title>";
        xml_text(out_, title);
        out_ += "</title>\n";
        out_ +=
            "<desc>Outage lab timeline: calls per second by outcome (stacked), breaker "
            "states (bands), caller-seen p99 latency (line, right axis).</desc>\n";
        out_ += "<rect width='100%' height='100%' fill='#ffffff'/>\n";
        // Cut to what fits the width (about 10.5 px a character at 18 px bold); the <title>
        // above keeps it whole.
        const auto fits = [this](double px_per_char) {
            return static_cast<std::size_t>((width_ - left_ - 12.0) / px_per_char);
        };
        out_ += "<text class='title' x='" + num(left_) +
                "' y='28' font-size='18' font-weight='600' fill='#212529'>";
        xml_text(out_, shortened(title, fits(10.5)));
        out_ += "</text>\n";
        const OutageSummary& s = t_.summary;
        std::string line = "success " + fixed_point(s.success_rate * 100.0, 2) + "% of " +
                           std::to_string(s.calls) + " calls \xC2\xB7 p50 " +
                           human_duration(s.p50) + " \xC2\xB7 p99 " + human_duration(s.p99) +
                           " \xC2\xB7 load on the dependency while down " +
                           load_ratio_text(s.extra_load_ratio) + " offered \xC2\xB7 ";
        line += s.time_to_recover ? "recovered " + human_duration(*s.time_to_recover) + " after it"
                                  : std::string("no recovery measured");
        out_ +=
            "<text class='summary' x='" + num(left_) + "' y='48' font-size='12' fill='#495057'>";
        xml_text(out_, shortened(line, fits(6.4)));
        out_ += "</text>\n";
    }

    // Faint vertical bands behind the plot where a breaker was open or half-open, so the
    // outcomes can be read against the breaker's decisions.
    void plot_backdrop() {
        out_ += "<g class='plot-backdrop'>\n";
        out_ += "<rect x='" + num(left_) + "' y='" + num(plot_top_) + "' width='" + num(plot_w_) +
                "' height='" + num(plot_h_) + "' fill='#f8f9fa'/>\n";
        std::size_t i = 0;
        const std::size_t n = t_.buckets.size();
        while (i < n) {
            const int worst = worst_state(i);
            std::size_t j = i + 1;
            while (j < n && worst_state(j) == worst) {
                ++j;
            }
            if (worst != 0) {
                const double x0 = x_of(bucket_s_ * static_cast<double>(i));
                const double x1 = x_of(bucket_s_ * static_cast<double>(j));
                out_ += "<rect x='" + num(x0) + "' y='" + num(plot_top_) + "' width='" +
                        num(x1 - x0) + "' height='" + num(plot_h_) + "' fill='" +
                        (worst == 2 ? "#fa5252' fill-opacity='0.10'/>\n"
                                    : "#fcc419' fill-opacity='0.14'/>\n");
            }
            i = j;
        }
        out_ += "</g>\n";
    }

    // 2 when a breaker is open or forced open at the end of bucket i, 1 half-open, else 0.
    int worst_state(std::size_t i) const {
        int worst = 0;
        for (const std::uint8_t s : t_.buckets[i].breaker_state) {
            if (s == 1 || s == 3) {
                worst = 2;
            } else if (s == 2 && worst == 0) {
                worst = 1;
            }
        }
        return worst;
    }

    void gridlines() {
        for (int tick = 0; tick <= ticks(y_max_, y_step_); ++tick) {
            const double v = y_step_ * tick;
            out_ += "<line x1='" + num(left_) + "' x2='" + num(left_ + plot_w_) + "' y1='" +
                    num(y_of(v)) + "' y2='" + num(y_of(v)) +
                    "' stroke='#dee2e6' stroke-width='1'/>\n";
        }
    }

    // One band per outcome, stacked bottom-up in series_ order; each bucket is a flat step.
    void stacked_areas() {
        gridlines();
        const std::size_t n = t_.buckets.size();
        std::vector<double> below(n, 0.0);
        std::vector<double> above(n, 0.0);
        out_ += "<g class='outcomes'>\n";
        for (std::size_t k = 0; k < series_count_; ++k) {
            bool any = false;
            for (std::size_t i = 0; i < n; ++i) {
                const double r = rate(i, k);
                above[i] = below[i] + r;
                any = any || r > 0.0;
            }
            if (any) {
                std::string d;
                edge(d, above, false, true);
                edge(d, below, true, false);
                out_ += "<path class='area " + std::string(series_[k].css_class) + "' d='" + d +
                        "Z' fill='" + series_[k].color +
                        "' fill-opacity='0.85' stroke='none'><title>" + series_[k].label +
                        "</title></path>\n";
            }
            below.swap(above);
        }
        out_ += "</g>\n";
    }

    // Appends the step outline of `values` (per second, per bucket) left to right, or right to
    // left when `reverse`; a run of equal values is one segment.
    void edge(std::string& d, const std::vector<double>& values, bool reverse, bool start) const {
        const std::size_t n = values.size();
        const auto point = [&](double x_s, double v) {
            d += (start && d.empty()) ? "M" : "L";
            d += num(x_of(x_s)) + "," + num(y_of(v));
        };
        if (n == 0) {
            point(0.0, 0.0);
            return;
        }
        if (!reverse) {
            for (std::size_t i = 0; i < n; ++i) {
                if (i == 0 || values[i] != values[i - 1]) {
                    point(bucket_s_ * static_cast<double>(i), values[i]);
                }
                if (i + 1 == n || values[i + 1] != values[i]) {
                    point(bucket_s_ * static_cast<double>(i + 1), values[i]);
                }
            }
        } else {
            for (std::size_t r = n; r-- > 0;) {
                if (r + 1 == n || values[r] != values[r + 1]) {
                    point(bucket_s_ * static_cast<double>(r + 1), values[r]);
                }
                if (r == 0 || values[r - 1] != values[r]) {
                    point(bucket_s_ * static_cast<double>(r), values[r]);
                }
            }
        }
    }

    // Calls that reached each dependency, per second: above the outcomes when retries multiply
    // the load, below them when a breaker keeps it away.
    void dependency_lines() {
        const std::size_t n = t_.buckets.size();
        out_ += "<g class='dependency-load'>\n";
        for (std::size_t d = 0; d < t_.dependencies.size() && n > 0; ++d) {
            std::vector<double> v(n, 0.0);
            for (std::size_t i = 0; i < n; ++i) {
                const auto& per = t_.buckets[i].per_dependency;
                v[i] = d < per.size() ? static_cast<double>(per[d].calls) / bucket_s_ : 0.0;
            }
            std::string path;
            edge(path, v, false, true);
            out_ += "<path class='line dependency' d='" + path +
                    "' fill='none' stroke='#212529' stroke-width='1.5' "
                    "stroke-dasharray='" +
                    dash_[d % 4] + "'><title>calls reaching ";
            xml_text(out_, t_.dependencies[d]);
            out_ += " per second</title></path>\n";
        }
        out_ += "</g>\n";
    }

    // Caller-seen p99 at each bucket's middle, on the right axis; the line breaks where no call
    // ended (no latency to show).
    void p99_line() {
        std::string d;
        bool open = false;
        for (std::size_t i = 0; i < t_.buckets.size(); ++i) {
            const SimBucket& b = t_.buckets[i];
            if (b.succeeded + b.failed + b.rejected == 0) {
                open = false;
                continue;
            }
            const double x = x_of(bucket_s_ * (static_cast<double>(i) + 0.5));
            d += open ? "L" : "M";
            d += num(x) + "," + num(y2_of(seconds(b.p99) * 1000.0));
            open = true;
        }
        if (d.empty()) {
            return;
        }
        out_ += "<path class='line p99' d='" + d + "' fill='none' stroke='" + p99_color_ +
                "' stroke-width='2' stroke-linejoin='round'><title>caller p99 "
                "latency</title></path>\n";
    }

    void axes() {
        out_ += "<g class='axes' fill='#495057' font-size='11'>\n";
        const double bottom = plot_top_ + plot_h_;
        out_ += "<line x1='" + num(left_) + "' x2='" + num(left_ + plot_w_) + "' y1='" +
                num(bottom) + "' y2='" + num(bottom) + "' stroke='#495057'/>\n";
        out_ += "<line x1='" + num(left_) + "' x2='" + num(left_) + "' y1='" + num(plot_top_) +
                "' y2='" + num(bottom) + "' stroke='#495057'/>\n";
        out_ += "<line x1='" + num(left_ + plot_w_) + "' x2='" + num(left_ + plot_w_) + "' y1='" +
                num(plot_top_) + "' y2='" + num(bottom) + "' stroke='" + p99_color_ + "'/>\n";
        for (int tick = 0; tick <= ticks(y_max_, y_step_); ++tick) {
            const double v = y_step_ * tick;
            const std::string y = num(y_of(v));
            put({"<line x1='", num(left_ - 4), "' x2='", num(left_), "' y1='", y, "' y2='", y,
                 "' stroke='#495057'/>\n"});
            out_ += "<text class='tick y' x='" + num(left_ - 7) + "' y='" + y +
                    "' dy='4' text-anchor='end'>";
            out_ += tick_text(v, y_step_) + "</text>\n";
        }
        for (int tick = 0; tick <= ticks(y2_max_, y2_step_); ++tick) {
            const double v = y2_step_ * tick;
            const std::string y = num(y2_of(v * y2_unit_ms_));
            put({"<line x1='", num(left_ + plot_w_), "' x2='", num(left_ + plot_w_ + 4), "' y1='",
                 y, "' y2='", y, "' stroke='", p99_color_, "'/>\n"});
            out_ += "<text class='tick y2' x='" + num(left_ + plot_w_ + 7) + "' y='" + y +
                    "' dy='4' fill='" + p99_color_ + "'>";
            out_ += tick_text(v, y2_step_) + "</text>\n";
        }
        // Time ticks: a step from 1-2-5 seconds, or whole minutes for longer runs.
        double step = nice_step(span_s_, 10);
        const bool minutes = span_s_ >= 180.0;
        if (minutes) {
            for (const double m : {60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
                                   14400.0, 21600.0, 43200.0, 86400.0}) {
                step = m;
                if (span_s_ / m <= 10.0) {
                    break;
                }
            }
        }
        for (int tick = 0; tick <= ticks(span_s_ + step / 1000, step); ++tick) {
            const double s = step * tick;
            const std::string x = num(x_of(s));
            put({"<line x1='", x, "' x2='", x, "' y1='", num(bottom), "' y2='", num(bottom + 4),
                 "' stroke='#495057'/>\n"});
            out_ += "<text class='tick x' x='" + x + "' y='" + num(bottom + 16) +
                    "' text-anchor='middle'>";
            out_ += clock_label(s, minutes, step) + "</text>\n";
        }
        out_ += "<text class='axis-label x' x='" + num(left_ + plot_w_ / 2) + "' y='" +
                num(bottom + 34) + "' text-anchor='middle' font-size='12'>" +
                (!minutes            ? "time since the scenario began"
                 : span_s_ >= 3600.0 ? "time since the scenario began (h:mm:ss)"
                                     : "time since the scenario began (m:ss)") +
                "</text>\n";
        const std::string mid = num(plot_top_ + plot_h_ / 2);
        out_ += "<text class='axis-label y' transform='translate(16," + mid +
                ") rotate(-90)' text-anchor='middle' font-size='12'>calls per second "
                "(" +
                bucket_label() + " buckets)</text>\n";
        out_ += "<text class='axis-label y2' transform='translate(" + num(width_ - 12) + "," + mid +
                ") rotate(90)' text-anchor='middle' font-size='12' fill='" + p99_color_ +
                "'>caller p99 latency (" + (y2_unit_ms_ > 1.0 ? "s" : "ms") + ")</text>\n";
        out_ += "</g>\n";
    }

    std::string bucket_label() const { return format_duration(t_.bucket); }

    // One lane per breaker: its state at the end of each bucket, runs of one state as one band.
    void breaker_lanes() {
        if (t_.breakers.empty()) {
            return;
        }
        out_ += "<g class='breakers' font-size='11'>\n";
        out_ += "<text class='lanes-caption' x='" + num(left_) + "' y='" + num(lanes_top_ - 5) +
                "' fill='#495057'>circuit breaker state</text>\n";
        const std::size_t n = t_.buckets.size();
        for (std::size_t k = 0; k < t_.breakers.size(); ++k) {
            const double y = lanes_top_ + static_cast<double>(k) * lane_step_;
            out_ += "<text class='breaker-label' x='" + num(left_ - 7) + "' y='" +
                    num(y + lane_h_ / 2) + "' dy='4' text-anchor='end' fill='#212529'>";
            xml_text(out_, shortened(t_.breakers[k], 10));
            out_ += "<title>breaker ";
            xml_text(out_, t_.breakers[k]);
            out_ += "</title></text>\n";
            out_ += "<rect x='" + num(left_) + "' y='" + num(y) + "' width='" + num(plot_w_) +
                    "' height='" + num(lane_h_) + "' fill='#f1f3f5'/>\n";
            std::size_t i = 0;
            while (i < n) {
                const std::uint8_t s = state_at(i, k);
                std::size_t j = i + 1;
                while (j < n && state_at(j, k) == s) {
                    ++j;
                }
                const double x0 = x_of(bucket_s_ * static_cast<double>(i));
                const double x1 = x_of(bucket_s_ * static_cast<double>(j));
                out_ += "<rect class='state " + std::string(circuit_state_name(s)) + "' x='" +
                        num(x0) + "' y='" + num(y) + "' width='" + num(x1 - x0) + "' height='" +
                        num(lane_h_) + "' fill='" + state_color(s) + "'><title>";
                xml_text(out_, t_.breakers[k]);
                out_ += std::string(": ") + circuit_state_name(s) + " from " +
                        clock_label(bucket_s_ * static_cast<double>(i), true, 1.0) + " to " +
                        clock_label(bucket_s_ * static_cast<double>(j), true, 1.0) +
                        "</title></rect>\n";
                i = j;
            }
        }
        out_ += "</g>\n";
    }

    std::uint8_t state_at(std::size_t i, std::size_t k) const {
        const auto& states = t_.buckets[i].breaker_state;
        return k < states.size() ? states[k] : std::uint8_t{255};
    }

    struct LegendItem {
        std::string label;
        std::string color;
        int kind;  // 0 swatch, 1 solid line, 2 dashed line
        const char* dash;
    };
    struct Placed {
        std::size_t row;
        double x;
    };

    std::vector<LegendItem> legend_items() const {
        std::vector<LegendItem> items;
        for (const Series& s : series_) {
            items.push_back({s.label, s.color, 0, ""});
        }
        items.push_back({"caller p99 (right axis)", p99_color_, 1, ""});
        for (std::size_t d = 0; d < t_.dependencies.size(); ++d) {
            items.push_back({"calls reaching " + shortened(t_.dependencies[d], 24), "#212529", 2,
                             dash_[d % 4]});
        }
        if (!t_.breakers.empty()) {
            items.push_back({"breaker closed", state_color(0), 0, ""});
            items.push_back({"breaker open", state_color(1), 0, ""});
            items.push_back({"breaker half-open", state_color(2), 0, ""});
        }
        return items;
    }

    // Left to right, wrapping at the plot's width; text width estimated at 6.5 px a character.
    std::vector<Placed> legend_layout() const {
        std::vector<Placed> placed;
        std::size_t row = 0;
        double x = left_;
        for (const LegendItem& item : legend_items()) {
            const double w = 26.0 + 6.5 * static_cast<double>(display_width(item.label)) + 18.0;
            if (x + w > left_ + plot_w_ + right_ / 2 && x > left_) {
                ++row;
                x = left_;
            }
            placed.push_back({row, x});
            x += w;
        }
        if (placed.empty()) {
            placed.push_back({0, left_});
        }
        return placed;
    }

    void legend() {
        const std::vector<LegendItem> items = legend_items();
        const std::vector<Placed> placed = legend_layout();
        out_ += "<g class='legend' font-size='12' fill='#212529'>\n";
        for (std::size_t i = 0; i < items.size(); ++i) {
            const LegendItem& item = items[i];
            const double y = legend_top_ + static_cast<double>(placed[i].row) * 22.0 + 8.0;
            const double x = placed[i].x;
            if (item.kind == 0) {
                out_ += "<rect x='" + num(x) + "' y='" + num(y - 6) +
                        "' width='20' height='12' fill='" + item.color + "'/>\n";
            } else {
                out_ += "<line x1='" + num(x) + "' x2='" + num(x + 20) + "' y1='" + num(y) +
                        "' y2='" + num(y) + "' stroke='" + item.color + "' stroke-width='2'" +
                        (item.kind == 2 ? std::string(" stroke-dasharray='") + item.dash + "'"
                                        : std::string()) +
                        "/>\n";
            }
            out_ += "<text class='legend-item' x='" + num(x + 26) + "' y='" + num(y) + "' dy='4'>";
            xml_text(out_, item.label);
            out_ += "</text>\n";
        }
        out_ += "</g>\n";
    }

    const OutageTimeline& t_;
    const OutageSvgOptions& o_;
    std::string out_;
    double left_ = 72.0;
    double right_ = 72.0;
    double plot_top_ = 66.0;
    double lane_h_ = 16.0;
    double lane_step_ = 22.0;
    double width_ = 0.0;
    double height_ = 0.0;
    double plot_w_ = 0.0;
    double plot_h_ = 0.0;
    double lanes_top_ = 0.0;
    double legend_top_ = 0.0;
    std::size_t legend_rows_ = 1;
    double bucket_s_ = 1.0;
    double span_s_ = 1.0;
    double y_max_ = 1.0;
    double y_step_ = 1.0;
    double y2_max_ = 1.0;
    double y2_step_ = 1.0;
    double y2_unit_ms_ = 1.0;
};

}  // namespace detail

// Draws a timeline as one self-contained SVG document (no script, no external font, image or
// style): calls per second stacked by outcome (succeeded, failed by kind, rejected), dashed lines
// for the calls that reached each dependency, the caller-seen p99 as a line on a second axis,
// faint bands behind the plot and one lane per breaker for the breakers' states, axes, a legend
// and a title naming the scenario and the configuration. Every name is XML-escaped; the same
// timeline gives the same bytes with every compiler and locale.
//   std::ofstream("timeline.svg") << bulwark::outage_timeline_svg(timeline);
inline std::string outage_timeline_svg(const OutageTimeline& timeline,
                                       const OutageSvgOptions& options = {}) {
    options.validate();
    return detail::OutageSvgWriter(timeline, options).write();
}

namespace detail {

// The what-if table's cells: one row per measure, one column per configuration.
inline std::vector<std::vector<std::string>> what_if_cells(
    const std::vector<OutageTimeline>& timelines) {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> head{"configuration"};
    bool delivery = false;
    for (const OutageTimeline& t : timelines) {
        head.push_back(t.configuration);
        delivery = delivery || t.summary.delivered + t.summary.dead_lettered + t.summary.lost > 0;
    }
    rows.push_back(std::move(head));
    const auto row = [&](const char* name, auto&& cell) {
        std::vector<std::string> r{name};
        for (const OutageTimeline& t : timelines) {
            r.push_back(cell(t.summary));
        }
        rows.push_back(std::move(r));
    };
    const auto count = [](std::uint64_t v) {
        return std::to_string(v);
    };
    row("calls offered", [&](const OutageSummary& s) { return count(s.calls); });
    row("succeeded", [&](const OutageSummary& s) { return count(s.succeeded); });
    row("failed", [&](const OutageSummary& s) { return count(s.failed); });
    row("rejected", [&](const OutageSummary& s) { return count(s.rejected); });
    row("success rate",
        [](const OutageSummary& s) { return fixed_point(s.success_rate * 100.0, 2) + "%"; });
    row("p50 latency", [](const OutageSummary& s) { return human_duration(s.p50); });
    row("p99 latency", [](const OutageSummary& s) { return human_duration(s.p99); });
    row("retries", [&](const OutageSummary& s) { return count(s.retries); });
    row("fallbacks", [&](const OutageSummary& s) { return count(s.fallbacks); });
    row("calls to the dependency while down",
        [&](const OutageSummary& s) { return count(s.calls_to_failing_dependency_while_down); });
    row("load on it while down (x offered)", [](const OutageSummary& s) {
        return fixed_point(s.extra_load_ratio, s.extra_load_ratio < 0.1 ? 3 : 2) + "x";
    });
    row("time to recover", [](const OutageSummary& s) {
        return s.time_to_recover ? human_duration(*s.time_to_recover) : std::string("-");
    });
    if (delivery) {
        row("delivered", [&](const OutageSummary& s) { return count(s.delivered); });
        row("dead-lettered", [&](const OutageSummary& s) { return count(s.dead_lettered); });
        row("lost", [&](const OutageSummary& s) { return count(s.lost); });
    }
    return rows;
}

// A cell for one line of text: control characters (a newline in a name) become spaces.
inline std::string one_line(std::string_view text) {
    std::string out;
    append_utf8(out, text, [](std::string& o, char c) {
        o.push_back(static_cast<unsigned char>(c) < 0x20 || c == '\x7f' ? ' ' : c);
    });
    return out;
}

}  // namespace detail

// The summaries of several runs side by side, as aligned plain text: one column per
// configuration (in the order given), one row per measure (calls, outcomes, success rate,
// p50/p99, retries, fallbacks, calls to the failing dependency while down and that load as a
// multiple of the offered load, time to recover; delivered/dead-lettered/lost for engine runs).
//   std::fputs(bulwark::outage_what_if_table({retry_only, with_breaker, recommended}).c_str(),
//              stdout);
inline std::string outage_what_if_table(const std::vector<OutageTimeline>& timelines) {
    std::vector<std::vector<std::string>> rows = detail::what_if_cells(timelines);
    for (auto& r : rows) {
        for (auto& c : r) {
            c = detail::one_line(c);
        }
    }
    std::vector<std::size_t> width(rows.front().size(), 0);
    for (const auto& r : rows) {
        for (std::size_t c = 0; c < r.size(); ++c) {
            width[c] = std::max(width[c], detail::display_width(r[c]));
        }
    }
    std::string out;
    if (!timelines.empty()) {
        out += "what-if: " + detail::one_line(timelines.front().scenario) + "\n";
    }
    for (std::size_t i = 0; i < rows.size(); ++i) {
        std::string line;
        for (std::size_t c = 0; c < rows[i].size(); ++c) {
            const std::string& cell = rows[i][c];
            const std::size_t pad = width[c] - detail::display_width(cell);
            if (c == 0) {
                line += cell + std::string(pad, ' ');
            } else {
                line += "  " + std::string(pad, ' ') + cell;  // numbers align on the right
            }
        }
        out += line + "\n";
        if (i == 0) {
            std::size_t total = 0;
            for (const std::size_t w : width) {
                total += w;
            }
            out += std::string(total + 2 * (width.size() - 1), '-') + "\n";
        }
    }
    return out;
}

// The same table as GitHub-flavoured markdown (for a pull request or a runbook); '|' in a name
// is escaped, numbers are right-aligned.
inline std::string outage_what_if_markdown(const std::vector<OutageTimeline>& timelines) {
    const std::vector<std::vector<std::string>> rows = detail::what_if_cells(timelines);
    const auto cell = [](const std::string& text) {
        std::string out;
        for (const char c : detail::one_line(text)) {
            if (c == '|' || c == '\\' || c == '`' || c == '*' || c == '_' || c == '<') {
                out.push_back('\\');
            }
            out.push_back(c);
        }
        return out;
    };
    std::string out;
    for (std::size_t i = 0; i < rows.size(); ++i) {
        out += "|";
        for (const std::string& c : rows[i]) {
            out += " " + cell(c) + " |";
        }
        out += "\n";
        if (i == 0) {
            out += "|---|";
            for (std::size_t c = 1; c < rows[i].size(); ++c) {
                out += "---:|";
            }
            out += "\n";
        }
    }
    return out;
}

}  // namespace bulwark

#endif  // BULWARK_OUTAGE_REPORT_HPP
