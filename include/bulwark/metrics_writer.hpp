// MetricsWriter: samples grouped into metric families, rendered in the Prometheus text format.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_METRICS_WRITER_HPP
#define BULWARK_METRICS_WRITER_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/detail/math.hpp>
#include <bulwark/detail/number.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/utf8.hpp>

namespace bulwark {

// One label of a sample: {name, value}. The value is escaped on output; the name must match
// [a-zA-Z_][a-zA-Z0-9_]* and not start with "__" (reserved by Prometheus).
using MetricLabel = std::pair<std::string_view, std::string_view>;
using MetricLabels = std::vector<MetricLabel>;

namespace detail {

// Prometheus's spelling of a double: "+Inf", "-Inf", "NaN", else the shortest of %.15g, %.16g
// and %.17g that reads back as the same double (so 0.1 prints as 0.1, and every value is exact).
// The decimal separator is always '.', whatever the C locale says: snprintf and strtod agree on
// the locale's separator, and the digits are then copied with any non-numeric run (a ',' or a
// multi-byte separator) replaced by one '.' (with_decimal_point).
inline std::string metric_number(double value) {
    if (detail::is_nan(value)) {
        return "NaN";
    }
    if (detail::is_inf(value)) {
        return value > 0 ? "+Inf" : "-Inf";
    }
    char buffer[48];
    for (int precision = 15; precision <= 17; ++precision) {
        std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
        if (std::strtod(buffer, nullptr) == value) {
            break;
        }
    }
    return with_decimal_point(buffer);
}

// Label values escape backslash, double quote and line feed; HELP text only backslash and line
// feed (the exposition format's two escaping rules). The format is UTF-8 and a scraper rejects
// the whole exposition for one bad byte, so bytes that are not UTF-8 (a dead letter's type or
// category comes from message data) become U+FFFD.
inline void append_escaped(std::string& out, std::string_view text, bool quote) {
    append_utf8(out, text, [quote](std::string& to, char c) {
        if (c == '\\') {
            to += "\\\\";
        } else if (c == '\n') {
            to += "\\n";
        } else if (c == '"' && quote) {
            to += "\\\"";
        } else {
            to.push_back(c);
        }
    });
}

inline bool is_metric_name(std::string_view name, bool allow_colon) noexcept {
    if (name.empty()) {
        return false;
    }
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                        (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return false;
        }
    }
    return true;
}

template <class Rep, class Period>
double seconds(std::chrono::duration<Rep, Period> d) noexcept {
    return std::chrono::duration<double>(d).count();
}

}  // namespace detail

// A sample's value: integers are kept exact (a 64-bit counter prints every digit), floating-point
// values as described at detail::metric_number, bools as 1 and 0.
class MetricValue {
public:
    template <class N, std::enable_if_t<std::is_integral<N>::value && !std::is_same<N, bool>::value,
                                        int> = 0>
    MetricValue(N n) {  // NOLINT(google-explicit-constructor): values convert implicitly
        if constexpr (std::is_signed<N>::value) {
            text_ = std::to_string(static_cast<long long>(n));
            negative_ = n < 0;
        } else {
            text_ = std::to_string(static_cast<unsigned long long>(n));
        }
    }
    template <class F, std::enable_if_t<std::is_floating_point<F>::value, int> = 0>
    MetricValue(F f)  // NOLINT(google-explicit-constructor)
        : text_(detail::metric_number(static_cast<double>(f))),
          negative_(detail::is_nan(static_cast<double>(f)) || f < 0) {}
    MetricValue(bool b) : text_(b ? "1" : "0") {}  // NOLINT(google-explicit-constructor)

    const std::string& text() const noexcept { return text_; }
    // Negative or NaN: not a valid counter value.
    bool negative() const noexcept { return negative_; }

private:
    std::string text_;
    bool negative_ = false;
};

// Collects samples grouped into metric families and renders them in the Prometheus text
// exposition format: each family once, `# HELP` and `# TYPE` first, then all its samples
// together, families in the order they were first added. to_prometheus() fills one; add your own
// series to the same exposition with add_counter()/add_gauge().
//   bulwark::MetricsWriter w;
//   w.add_counter("app_requests_total", "Requests served.", {{"route", "/send"}}, 42);
//   bulwark::to_prometheus(w, breaker, bulwark::metric_name("sms_retry", retry));
//   respond(200, "text/plain; version=0.0.4; charset=utf-8", w.str());
// A family's help is the first one given. A sample whose family and label set (in any order) were
// already added is dropped, and counted in dropped(): the first wins, so the exposition never
// holds two series with the same identity (Prometheus would reject the scrape).
// Throws std::invalid_argument for an invalid metric or label name, a label named twice, a
// family added as two types, a family named as a histogram's series (<histogram>_bucket, _sum,
// _count), or a negative or NaN counter value.
// Not thread-safe: build one per scrape.
// MetricsWriter is BasicMetricsWriter<>: a class template only so that its code is compiled where
// it is used (the Tag is never used).
template <class Tag = void>
class BasicMetricsWriter {
public:
    enum class Type : std::uint8_t { counter, gauge, histogram };

    BasicMetricsWriter& add_counter(std::string_view name, std::string_view help,
                                    const MetricLabels& labels, const MetricValue& value) {
        add(Type::counter, name, help, labels, value);
        return *this;
    }

    BasicMetricsWriter& add_gauge(std::string_view name, std::string_view help,
                                  const MetricLabels& labels, const MetricValue& value) {
        add(Type::gauge, name, help, labels, value);
        return *this;
    }

    // A histogram: `cumulative[i]` observations were <= `bounds[i]` (ascending, finite), `count`
    // in all (the +Inf bucket) summing to `sum`. Renders name_bucket{...,le="..."} for each
    // bound and +Inf, name_sum and name_count. Throws std::invalid_argument, besides the
    // reasons above, for bounds that do not ascend, counts that decrease or exceed `count`,
    // sizes that differ, or a label named "le".
    BasicMetricsWriter& add_histogram(std::string_view name, std::string_view help,
                                      const MetricLabels& labels, const std::vector<double>& bounds,
                                      const std::vector<std::uint64_t>& cumulative, double sum,
                                      std::uint64_t count) {
        MetricLabels shown;
        std::string key = series_key(name, labels, shown);
        const std::string what = "bulwark::MetricsWriter: histogram " + std::string(name);
        if (bounds.size() != cumulative.size()) {
            detail::throw_invalid_argument(what + ": bounds and counts differ in size");
        }
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            if (!detail::is_finite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
                detail::throw_invalid_argument(what + ": bounds must be finite and ascend");
            }
            if ((i > 0 && cumulative[i] < cumulative[i - 1]) || cumulative[i] > count) {
                detail::throw_invalid_argument(what + ": bucket counts must not decrease");
            }
        }
        for (const MetricLabel& label : shown) {
            if (label.first == "le") {
                detail::throw_invalid_argument(what + ": \"le\" is the bucket label");
            }
        }
        Family& f = family(Type::histogram, name, help);
        if (!f.series.insert(std::move(key)).second) {
            ++dropped_;
            return *this;
        }
        for (std::size_t i = 0; i <= bounds.size(); ++i) {
            const std::string le =
                i < bounds.size() ? detail::metric_number(bounds[i]) : std::string("+Inf");
            const MetricLabel bucket{"le", le};
            append_sample(f.samples, name, "_bucket", shown, &bucket,
                          MetricValue(i < bounds.size() ? cumulative[i] : count).text());
        }
        append_sample(f.samples, name, "_sum", shown, nullptr, MetricValue(sum).text());
        append_sample(f.samples, name, "_count", shown, nullptr, MetricValue(count).text());
        ++samples_;
        return *this;
    }

    // The exposition: ends with a line feed unless empty.
    std::string str() const {
        std::string out;
        for (const Family& f : families_) {
            out += "# HELP ";
            out += f.name;
            out.push_back(' ');
            detail::append_escaped(out, f.help, false);
            out += "\n# TYPE ";
            out += f.name;
            out += f.type == Type::counter ? " counter\n"
                   : f.type == Type::gauge ? " gauge\n"
                                           : " histogram\n";
            out += f.samples;
        }
        return out;
    }

    std::size_t families() const noexcept { return families_.size(); }
    std::size_t samples() const noexcept { return samples_; }
    // Samples dropped as duplicates of an earlier (family, label set).
    std::size_t dropped() const noexcept { return dropped_; }
    bool empty() const noexcept { return families_.empty(); }

private:
    struct Family {
        std::string name;
        std::string help;
        Type type;
        std::string samples;           // rendered sample lines
        std::set<std::string> series;  // label sets seen, labels sorted by name
    };

    void add(Type type, std::string_view name, std::string_view help, const MetricLabels& labels,
             const MetricValue& value) {
        if (type == Type::counter && value.negative()) {
            check_name(name);
            detail::throw_invalid_argument("bulwark::MetricsWriter: counter " + std::string(name) +
                                           " must not be negative or NaN, got " + value.text());
        }
        MetricLabels shown;
        std::string key = series_key(name, labels, shown);
        Family& f = family(type, name, help);
        if (!f.series.insert(std::move(key)).second) {
            ++dropped_;
            return;
        }
        append_sample(f.samples, name, "", shown, nullptr, value.text());
        ++samples_;
    }

    static void check_name(std::string_view name) {
        if (!detail::is_metric_name(name, true)) {
            detail::throw_invalid_argument("bulwark::MetricsWriter: invalid metric name \"" +
                                           std::string(name) + "\"");
        }
    }

    // The identity of a series (its labels sorted by name, empty values left out), after
    // checking the names; `shown` gets the labels as given, without the empty ones.
    static std::string series_key(std::string_view name, const MetricLabels& labels,
                                  MetricLabels& shown) {
        check_name(name);
        for (const MetricLabel& label : labels) {
            if (!detail::is_metric_name(label.first, false) || label.first.substr(0, 2) == "__") {
                detail::throw_invalid_argument("bulwark::MetricsWriter: invalid label name \"" +
                                               std::string(label.first) + "\" in " +
                                               std::string(name));
            }
        }
        // A label with an empty value is the same series as one without it (Prometheus's rule),
        // so it is left out of both the identity and the output.
        MetricLabels sorted;
        sorted.reserve(labels.size());
        for (const MetricLabel& label : labels) {
            if (!label.second.empty()) {
                sorted.push_back(label);
            }
        }
        shown = sorted;
        std::sort(sorted.begin(), sorted.end(),
                  [](const MetricLabel& a, const MetricLabel& b) { return a.first < b.first; });
        std::string key;
        for (std::size_t i = 0; i < sorted.size(); ++i) {
            if (i > 0 && sorted[i].first == sorted[i - 1].first) {
                detail::throw_invalid_argument("bulwark::MetricsWriter: label \"" +
                                               std::string(sorted[i].first) + "\" given twice in " +
                                               std::string(name));
            }
            append_label(key, sorted[i]);
        }
        return key;
    }

    static void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                              const MetricLabels& shown, const MetricLabel* extra,
                              const std::string& value) {
        out += name;
        out += suffix;
        if (!shown.empty() || extra != nullptr) {
            out.push_back('{');
            for (std::size_t i = 0; i < shown.size(); ++i) {
                if (i > 0) {
                    out.push_back(',');
                }
                append_label(out, shown[i]);
            }
            if (extra != nullptr) {
                if (!shown.empty()) {
                    out.push_back(',');
                }
                append_label(out, *extra);
            }
            out.push_back('}');
        }
        out.push_back(' ');
        out += value;
        out.push_back('\n');
    }

    static void append_label(std::string& out, const MetricLabel& label) {
        out += label.first;
        out += "=\"";
        detail::append_escaped(out, label.second, true);
        out.push_back('"');
    }

    Family& family(Type type, std::string_view name, std::string_view help) {
        auto it = index_.find(name);
        if (it == index_.end()) {
            // A histogram's series are named <name>_bucket, _sum and _count: no family may take
            // one of those names, before or after the histogram.
            if (const auto r = reserved_.find(name); r != reserved_.end()) {
                detail::throw_invalid_argument("bulwark::MetricsWriter: " + std::string(name) +
                                               " is a series of the histogram " + r->second);
            }
            if (type == Type::histogram) {
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    if (index_.count(std::string(name) + suffix) != 0) {
                        detail::throw_invalid_argument("bulwark::MetricsWriter: the histogram " +
                                                       std::string(name) + " would name a series " +
                                                       std::string(name) + suffix +
                                                       ", already a family");
                    }
                }
                for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                    reserved_.emplace(std::string(name) + suffix, std::string(name));
                }
            }
            // The family first, then its index entry, undone if that throws: the index never
            // points past the end of families_.
            families_.push_back(Family{std::string(name), std::string(help), type, {}, {}});
            try {
                it = index_.emplace(std::string(name), families_.size() - 1).first;
            } catch (...) {
                families_.pop_back();
                throw;
            }
        }
        Family& f = families_[it->second];
        if (f.type != type) {
            detail::throw_invalid_argument("bulwark::MetricsWriter: " + std::string(name) +
                                           " was added as two types (counter, gauge, histogram)");
        }
        return f;
    }

    std::vector<Family> families_;
    std::map<std::string, std::size_t, std::less<>> index_;
    std::map<std::string, std::string, std::less<>> reserved_;  // series name -> its histogram
    std::size_t samples_ = 0;
    std::size_t dropped_ = 0;
};

using MetricsWriter = BasicMetricsWriter<>;

}  // namespace bulwark

#endif  // BULWARK_METRICS_WRITER_HPP
