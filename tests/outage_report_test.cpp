#include <clocale>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <bulwark/outage_report.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

// A hand-made timeline: 1 dependency ("email"), 1 breaker; healthy for 10 s, down from 10 s to
// 30 s (the breaker opens at 12 s, probes half-open at 20 s and 28 s), healthy again after.
bulwark::OutageTimeline sample_timeline(std::string scenario = "email provider outage",
                                        std::string configuration = "retry + breaker",
                                        std::string dependency = "email",
                                        std::string breaker = "email") {
    bulwark::OutageTimeline t;
    t.scenario = std::move(scenario);
    t.configuration = std::move(configuration);
    t.bucket = 1s;
    t.dependencies = {std::move(dependency)};
    t.breakers = {std::move(breaker)};
    for (int i = 0; i < 40; ++i) {
        bulwark::SimBucket b;
        b.start = std::chrono::seconds(i);
        b.offered = 100;
        const bool down = i >= 10 && i < 30;
        const bool open = down && i >= 12 && i != 20 && i != 28;
        std::uint8_t state = 0;
        if (open) {
            state = 1;
        } else if (i == 20 || i == 28) {
            state = 2;
        }
        if (!down) {
            b.succeeded = 100;
            b.per_dependency = {{100, 100, 0}};
            b.p50 = 40ms;
            b.p99 = 95ms + std::chrono::milliseconds(i);
        } else if (!open) {
            b.failed = 100;
            b.failed_by_kind = {70, 0, 20, 10};
            b.retries = 200;
            b.per_dependency = {{300, 0, 300}};
            b.p50 = 900ms;
            b.p99 = 2500ms;
        } else {
            b.rejected = 95;
            b.failed = 5;
            b.failed_by_kind = {5, 0, 0, 0};
            b.rejected_by_policy = {{"breaker:email", 95}};
            b.fallbacks = 0;
            b.per_dependency = {{5, 0, 5}};
            b.p50 = 1ms;
            b.p99 = 30ms;
        }
        b.breaker_state = {state};
        t.buckets.push_back(b);
    }
    t.summary.calls = 4000;
    t.summary.succeeded = 2000;
    t.summary.failed = 500;
    t.summary.rejected = 1500;
    t.summary.success_rate = 0.5;
    t.summary.p50 = 40ms;
    t.summary.p99 = 2500ms;
    t.summary.retries = 400;
    t.summary.calls_to_failing_dependency_while_down = 690;
    t.summary.calls_offered_while_down = 2000;
    t.summary.extra_load_ratio = 0.345;
    t.summary.time_to_recover = 1500ms;
    t.elapsed = 40s;
    return t;
}

// A small XML 1.0 well-formedness check: one root element, tags closed in order, attributes
// quoted and unique within their element, only the five predefined entities and character
// references, no '<' or raw '&' in text or attribute values, no control characters, well-formed
// UTF-8. Returns "" when well-formed, else what is wrong and where.
class XmlCheck {
public:
    explicit XmlCheck(std::string_view text) : s_(text) {}

    std::string run() {
        for (std::size_t i = 0; i < s_.size();) {
            const std::size_t n = bulwark::detail::utf8_sequence_length(s_, i);
            if (n == 0) {
                return at(i, "invalid UTF-8");
            }
            const auto c = static_cast<unsigned char>(s_[i]);
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                return at(i, "control character");
            }
            i += n;
        }
        if (s_.substr(0, 5) == "<?xml") {
            const std::size_t end = s_.find("?>");
            if (end == std::string_view::npos) {
                return at(0, "unterminated XML declaration");
            }
            i_ = end + 2;
        }
        std::vector<std::string> open;
        bool root_seen = false;
        while (i_ < s_.size()) {
            if (s_[i_] != '<') {
                const std::size_t next = s_.find('<', i_);
                const std::string_view text = s_.substr(i_, next - i_);
                if (open.empty() && text.find_first_not_of(" \t\r\n") != std::string_view::npos) {
                    return at(i_, "text outside the root element");
                }
                if (!references_ok(text)) {
                    return at(i_, "bad '&' in text");
                }
                i_ = next == std::string_view::npos ? s_.size() : next;
                continue;
            }
            if (s_.substr(i_, 4) == "<!--") {
                const std::size_t end = s_.find("-->", i_ + 4);
                if (end == std::string_view::npos) {
                    return at(i_, "unterminated comment");
                }
                i_ = end + 3;
                continue;
            }
            if (s_.substr(i_, 2) == "</") {
                i_ += 2;
                const std::string name = read_name();
                skip_space();
                if (name.empty() || i_ >= s_.size() || s_[i_] != '>') {
                    return at(i_, "bad end tag");
                }
                ++i_;
                if (open.empty() || open.back() != name) {
                    return at(i_, "end tag </" + name + "> does not match");
                }
                open.pop_back();
                continue;
            }
            ++i_;
            const std::string name = read_name();
            if (name.empty()) {
                return at(i_, "bad start tag");
            }
            if (open.empty()) {
                if (root_seen) {
                    return at(i_, "a second root element");
                }
                root_seen = true;
            }
            std::vector<std::string> attributes;
            for (;;) {
                const bool spaced = skip_space();
                if (i_ >= s_.size()) {
                    return at(i_, "unterminated tag");
                }
                if (s_[i_] == '>') {
                    ++i_;
                    open.push_back(name);
                    break;
                }
                if (s_.substr(i_, 2) == "/>") {
                    i_ += 2;
                    break;
                }
                if (!spaced) {
                    return at(i_, "no space before an attribute");
                }
                const std::string attribute = read_name();
                if (attribute.empty() || i_ >= s_.size() || s_[i_] != '=') {
                    return at(i_, "bad attribute");
                }
                for (const std::string& a : attributes) {
                    if (a == attribute) {
                        return at(i_, "attribute " + attribute + " given twice");
                    }
                }
                attributes.push_back(attribute);
                ++i_;
                if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) {
                    return at(i_, "unquoted attribute value");
                }
                const char quote = s_[i_++];
                const std::size_t end = s_.find(quote, i_);
                if (end == std::string_view::npos) {
                    return at(i_, "unterminated attribute value");
                }
                const std::string_view value = s_.substr(i_, end - i_);
                if (value.find('<') != std::string_view::npos || !references_ok(value)) {
                    return at(i_, "bad character in an attribute value");
                }
                i_ = end + 1;
            }
        }
        if (!open.empty()) {
            return "element <" + open.back() + "> is not closed";
        }
        return root_seen ? "" : "no root element";
    }

private:
    std::string at(std::size_t where, const std::string& what) const {
        return what + " at byte " + std::to_string(where);
    }

    bool skip_space() {
        const std::size_t from = i_;
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) {
            ++i_;
        }
        return i_ > from;
    }

    std::string read_name() {
        const std::size_t from = i_;
        while (i_ < s_.size()) {
            const char c = s_[i_];
            const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9' && i_ > from) || c == '_' || c == ':' ||
                            ((c == '-' || c == '.') && i_ > from);
            if (!ok) {
                break;
            }
            ++i_;
        }
        return std::string(s_.substr(from, i_ - from));
    }

    static bool references_ok(std::string_view text) {
        for (std::size_t a = text.find('&'); a != std::string_view::npos;
             a = text.find('&', a + 1)) {
            const std::size_t semi = text.find(';', a);
            if (semi == std::string_view::npos) {
                return false;
            }
            const std::string_view ref = text.substr(a + 1, semi - a - 1);
            const bool named =
                ref == "amp" || ref == "lt" || ref == "gt" || ref == "quot" || ref == "apos";
            const bool numeric = ref.size() > 1 && ref[0] == '#' &&
                                 ref.find_first_not_of("0123456789", 1) == std::string_view::npos;
            const bool hex =
                ref.size() > 2 && ref[0] == '#' && ref[1] == 'x' &&
                ref.find_first_not_of("0123456789abcdefABCDEF", 2) == std::string_view::npos;
            if (!named && !numeric && !hex) {
                return false;
            }
        }
        return true;
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

std::string xml_problem(std::string_view text) {
    return XmlCheck(text).run();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t from = 0;
    for (std::size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', from)) {
        out.push_back(text.substr(from, nl - from));
        from = nl + 1;
    }
    if (from < text.size()) {
        out.push_back(text.substr(from));
    }
    return out;
}

std::size_t count_of(const std::string& text, std::string_view what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string::npos;
         at = text.find(what, at + what.size())) {
        ++n;
    }
    return n;
}

}  // namespace

TEST_CASE("the XML check used below rejects what is not well-formed", "[outage_report]") {
    CHECK(xml_problem("<svg><g a=\"1\"/></svg>").empty());
    CHECK_FALSE(xml_problem("<svg><g></svg>").empty());
    CHECK_FALSE(xml_problem("<svg a=\"1\" a=\"2\"/>").empty());
    CHECK_FALSE(xml_problem("<svg>a < b</svg>").empty());
    CHECK_FALSE(xml_problem("<svg>a & b</svg>").empty());
    CHECK_FALSE(xml_problem("<svg x=\"<\"/>").empty());
    CHECK_FALSE(xml_problem("<svg/><svg/>").empty());
    CHECK_FALSE(xml_problem("<svg>\x01</svg>").empty());
    CHECK_FALSE(xml_problem("<svg>\xff</svg>").empty());
    CHECK_FALSE(xml_problem("<svg x=1/>").empty());
}

TEST_CASE("numbers are written from integers: fixed decimals, rounded half away from zero",
          "[outage_report]") {
    using bulwark::detail::fixed_point;
    CHECK(fixed_point(12345LL, 3) == "12.345");
    CHECK(fixed_point(5LL, 3) == "0.005");
    CHECK(fixed_point(-5LL, 1) == "-0.5");
    CHECK(fixed_point(7LL, 0) == "7");
    CHECK(fixed_point(0.125, 2) == "0.13");
    CHECK(fixed_point(-0.125, 2) == "-0.13");
    CHECK(fixed_point(99.995, 1) == "100.0");
    CHECK(bulwark::detail::millis_text(1234567ns) == "1.235");
    CHECK(bulwark::detail::millis_text(2s) == "2000.000");
    CHECK(bulwark::detail::human_duration(850ms) == "850.0 ms");
    CHECK(bulwark::detail::human_duration(12300ms) == "12.3 s");
    CHECK(bulwark::detail::human_duration(15min) == "15.0 min");
}

TEST_CASE("the timeline CSV has a stable header and one row per bucket", "[outage_report]") {
    const bulwark::OutageTimeline t = sample_timeline();
    const std::vector<std::string> lines = lines_of(bulwark::outage_timeline_csv(t));
    REQUIRE(lines.size() == 41);
    CHECK(lines[0] ==
          "start_ms,offered,succeeded,failed,failed_transient,failed_permanent,"
          "failed_rate_limited,failed_timeout,rejected,retries,fallbacks,p50_ms,p99_ms,"
          "email.calls,email.successes,email.failures,email.state,rejected_by.breaker:email");
    CHECK(lines[1] == "0.000,100,100,0,0,0,0,0,0,0,0,40.000,95.000,100,100,0,closed,0");
    CHECK(lines[11] ==
          "10000.000,100,0,100,70,0,20,10,0,200,0,900.000,2500.000,300,0,300,closed,0");
    CHECK(lines[13] == "12000.000,100,0,5,5,0,0,0,95,0,0,1.000,30.000,5,0,5,open,95");
    CHECK(lines[21] ==
          "20000.000,100,0,100,70,0,20,10,0,200,0,900.000,2500.000,300,0,300,"
          "half_open,0");
    for (const std::string& line : lines) {
        CHECK(count_of(line, ",") == 17);
    }
}

TEST_CASE("the timeline CSV quotes names holding commas, quotes or newlines", "[outage_report]") {
    const bulwark::OutageTimeline t = sample_timeline("s", "c", "mail, \"primary\"", "line\nbreak");
    const std::string csv = bulwark::outage_timeline_csv(t);
    CHECK(csv.find(R"("mail, ""primary"".calls","mail, ""primary"".successes")") !=
          std::string::npos);
    CHECK(csv.find("\"line\nbreak.state\"") != std::string::npos);
}

TEST_CASE("the timeline CSV is the same whatever the global C locale", "[outage_report]") {
    const bulwark::OutageTimeline t = sample_timeline();
    const std::string before = bulwark::outage_timeline_csv(t);
    const std::string svg_before = bulwark::outage_timeline_svg(t);
    // A decimal-comma locale, when the machine has one; the output must not change.
    const char* set = std::setlocale(LC_ALL, "de_DE.UTF-8");
    if (set == nullptr) {
        set = std::setlocale(LC_ALL, "fr_FR.UTF-8");
    }
    const std::string after = bulwark::outage_timeline_csv(t);
    const std::string svg_after = bulwark::outage_timeline_svg(t);
    std::setlocale(LC_ALL, "C");
    CHECK(before == after);
    CHECK(svg_before == svg_after);
}

TEST_CASE("the timeline SVG is well-formed, self-contained XML with title, axes and legend",
          "[outage_report]") {
    const bulwark::OutageTimeline t = sample_timeline();
    const std::string svg = bulwark::outage_timeline_svg(t);
    INFO(svg.substr(0, 400));
    CHECK(xml_problem(svg) == "");
    CHECK(svg.find("<svg xmlns='http://www.w3.org/2000/svg'") != std::string::npos);
    // Self-contained: no script, no link to anything outside the document.
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(svg.find("href") == std::string::npos);
    CHECK(svg.find("url(") == std::string::npos);
    CHECK(svg.find("@import") == std::string::npos);
    // The title names the scenario and the configuration.
    CHECK(svg.find("email provider outage \xE2\x80\x94 retry + breaker</text>") !=
          std::string::npos);
    // The outcome areas that occur, the p99 line, the dependency's load, the breaker lane.
    CHECK(count_of(svg, "class='area ") == 5);  // no permanent failure in the sample
    CHECK(svg.find("class='area succeeded'") != std::string::npos);
    CHECK(svg.find("class='area rejected'") != std::string::npos);
    CHECK(svg.find("class='area failed-permanent'") == std::string::npos);
    CHECK(svg.find("class='line p99'") != std::string::npos);
    CHECK(svg.find("class='line dependency'") != std::string::npos);
    // Breaker bands: closed 0-12 s, open 12-20, half-open 20-21, open 21-28, half-open 28-29,
    // open 29-30, closed 30-40.
    CHECK(count_of(svg, "class='state open'") == 3);
    CHECK(count_of(svg, "class='state half_open'") == 2);
    CHECK(count_of(svg, "class='state closed'") == 2);
    CHECK(svg.find("email: open from 0:12 to 0:20") != std::string::npos);
    // Axes: both labelled, ticks on both.
    CHECK(svg.find("calls per second (1s buckets)") != std::string::npos);
    CHECK(svg.find("caller p99 latency (ms)") != std::string::npos);
    CHECK(svg.find("time since the scenario began") != std::string::npos);
    CHECK(count_of(svg, "class='tick x'") >= 3);
    CHECK(count_of(svg, "class='tick y'") >= 3);
    CHECK(count_of(svg, "class='tick y2'") >= 3);
    // Legend: every outcome, the p99 line, the dependency's line, the breaker states.
    for (const char* label :
         {"succeeded", "failed: transient", "failed: permanent", "failed: rate limited",
          "failed: timeout", "rejected by a policy", "caller p99 (right axis)",
          "calls reaching email", "breaker open", "breaker half-open", "breaker closed"}) {
        INFO(label);
        CHECK(svg.find(std::string("class='legend-item'")) != std::string::npos);
        CHECK(svg.find(std::string("' dy='4'>") + label + "</text>") != std::string::npos);
    }
    // The summary line.
    CHECK(svg.find("success 50.00% of 4000 calls") != std::string::npos);
    CHECK(svg.find("0.35\xC3\x97") != std::string::npos);
}

TEST_CASE("the timeline SVG escapes hostile names everywhere they appear", "[outage_report]") {
    const std::string hostile = "<script>alert('x')</script> & \"q\" \x01\xff";
    const bulwark::OutageTimeline t = sample_timeline(hostile, hostile, hostile, hostile);
    const std::string svg = bulwark::outage_timeline_svg(t);
    INFO(xml_problem(svg));
    CHECK(xml_problem(svg).empty());
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(svg.find("&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; &quot;q&quot;") !=
          std::string::npos);
    CHECK(svg.find('\x01') == std::string::npos);
    // The title and the custom-title option are escaped too.
    bulwark::OutageSvgOptions o;
    o.title = "a < b & c";
    const std::string titled = bulwark::outage_timeline_svg(t, o);
    CHECK(xml_problem(titled).empty());
    CHECK(titled.find("<title>a &lt; b &amp; c</title>") != std::string::npos);
}

TEST_CASE("the timeline SVG is deterministic and handles degenerate timelines", "[outage_report]") {
    const bulwark::OutageTimeline t = sample_timeline();
    CHECK(bulwark::outage_timeline_svg(t) == bulwark::outage_timeline_svg(sample_timeline()));
    CHECK(bulwark::outage_timeline_csv(t) == bulwark::outage_timeline_csv(sample_timeline()));

    bulwark::OutageTimeline empty;
    empty.scenario = "nothing";
    empty.configuration = "none";
    const std::string svg = bulwark::outage_timeline_svg(empty);
    CHECK(xml_problem(svg).empty());
    CHECK(svg.find("nan") == std::string::npos);
    CHECK(svg.find("inf") == std::string::npos);
    CHECK(lines_of(bulwark::outage_timeline_csv(empty)).size() == 1);

    // No breakers, a long run in minutes, a sub-second bucket.
    bulwark::OutageTimeline longer = sample_timeline();
    longer.breakers.clear();
    longer.bucket = 10s;
    for (auto& b : longer.buckets) {
        b.breaker_state.clear();
    }
    const std::string minutes = bulwark::outage_timeline_svg(longer);
    CHECK(xml_problem(minutes).empty());
    CHECK(minutes.find("class='breakers'") == std::string::npos);
    CHECK(minutes.find(">6:00</text>") != std::string::npos);
    bulwark::OutageTimeline fast = sample_timeline();
    fast.bucket = 100ms;
    const std::string sub = bulwark::outage_timeline_svg(fast);
    CHECK(xml_problem(sub).empty());
    CHECK(sub.find(">0.5s</text>") != std::string::npos);
}

TEST_CASE("the timeline SVG draws fallbacks apart and a long p99 in seconds", "[outage_report]") {
    bulwark::OutageTimeline t = sample_timeline();
    CHECK(bulwark::outage_timeline_svg(t).find("class='area fallback'") == std::string::npos);
    t.buckets[35].fallbacks = 40;  // of its 100 successes
    t.buckets[36].p99 = 95s;
    const std::string svg = bulwark::outage_timeline_svg(t);
    CHECK(xml_problem(svg).empty());
    CHECK(svg.find("class='area fallback'") != std::string::npos);
    CHECK(svg.find("caller p99 latency (s)") != std::string::npos);
    CHECK(svg.find("caller p99 latency (ms)") == std::string::npos);
    CHECK(svg.find(">100</text>") != std::string::npos);  // a right-axis tick, in seconds
    // A title too long for the width is cut with an ellipsis; the document's <title> keeps it.
    t.scenario = std::string(300, 'x');
    const std::string cut = bulwark::outage_timeline_svg(t);
    CHECK(cut.find("<title>" + std::string(300, 'x')) != std::string::npos);
    CHECK(cut.find("x\xE2\x80\xA6</text>") != std::string::npos);
}

TEST_CASE("OutageSvgOptions::validate names the field and the value", "[outage_report]") {
    bulwark::OutageSvgOptions o;
    o.width = 100;
    CHECK_THROWS_WITH(o.validate(), "OutageSvgOptions.width must be in [480, 8000], got 100");
    CHECK_THROWS_AS(bulwark::outage_timeline_svg(sample_timeline(), o), std::invalid_argument);
    o = {};
    o.plot_height = 5000;
    CHECK_THROWS_WITH(o.validate(),
                      "OutageSvgOptions.plot_height must be in [120, 4000], got 5000");
}

TEST_CASE("the what-if table puts configurations side by side, aligned", "[outage_report]") {
    bulwark::OutageTimeline a = sample_timeline("outage", "retry only");
    a.summary.success_rate = 0.1234;
    a.summary.p99 = 12s;
    a.summary.time_to_recover.reset();
    a.summary.extra_load_ratio = 3.0;
    bulwark::OutageTimeline b = sample_timeline("outage", "recommended \xC3\xA9");
    b.summary.success_rate = 0.999;
    const std::string table = bulwark::outage_what_if_table({a, b});
    const std::vector<std::string> lines = lines_of(table);
    REQUIRE(lines.size() == 15);
    CHECK(lines[0] == "what-if: outage");
    CHECK(lines[1].find("configuration") == 0);
    CHECK(lines[1].find("retry only") != std::string::npos);
    CHECK(lines[2].find_first_not_of('-') == std::string::npos);
    // Every row is as wide as the header (in characters), so the columns line up.
    const std::size_t width = bulwark::detail::display_width(lines[1]);
    for (std::size_t i = 1; i < lines.size(); ++i) {
        INFO(lines[i]);
        CHECK(bulwark::detail::display_width(lines[i]) == width);
    }
    CHECK(table.find("12.34%") != std::string::npos);
    CHECK(table.find("99.90%") != std::string::npos);
    CHECK(table.find("12.0 s") != std::string::npos);
    CHECK(table.find("3.00x") != std::string::npos);
    CHECK(table.find("0.35x") != std::string::npos);
    CHECK(table.find("1.5 s") != std::string::npos);
    CHECK(table.find("delivered") == std::string::npos);  // no engine run among them

    b.summary.delivered = 10;
    b.summary.lost = 1;
    const std::string engine = bulwark::outage_what_if_table({a, b});
    CHECK(engine.find("lost") != std::string::npos);
    CHECK(engine.find("dead-lettered") != std::string::npos);
}

TEST_CASE("the what-if markdown escapes names and right-aligns numbers", "[outage_report]") {
    const bulwark::OutageTimeline a = sample_timeline("outage", "a|b\nc");
    const std::string md = bulwark::outage_what_if_markdown({a});
    const std::vector<std::string> lines = lines_of(md);
    REQUIRE(lines.size() == 14);
    CHECK(lines[0] == "| configuration | a\\|b c |");
    CHECK(lines[1] == "|---|---:|");
    CHECK(lines[2] == "| calls offered | 4000 |");
    for (const std::string& line : lines) {
        CHECK(count_of(line, "|") - count_of(line, "\\|") == 3);
    }
}
