// AdminHandler: the operator's HTTP API and console over breakers, health and dead letters.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ADMIN_HPP
#define BULWARK_ADMIN_HPP

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/admin_console_page.hpp>
#include <bulwark/circuit_breaker_registry.hpp>
#include <bulwark/clock.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/degradation.hpp>
#include <bulwark/delivery.hpp>
#include <bulwark/detail/json.hpp>
#include <bulwark/detail/json_read.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>
#include <bulwark/detail/utf8.hpp>
#include <bulwark/error_classifier.hpp>
#include <bulwark/fix_strategy.hpp>
#include <bulwark/health.hpp>
#include <bulwark/resources.hpp>
#include <bulwark/retry_queue.hpp>

namespace bulwark {

// One HTTP request as the server saw it, reduced to what the handler needs. The server mounts
// the handler under any prefix and passes the path below it.
struct AdminRequest {
    std::string method;       // "GET", "POST"
    std::string path;         // "/api/breakers/email/trip": no query, percent-encoded
    std::string query;        // "status=pending&limit=50": without '?', percent-encoded
    std::string body;         // the request body (JSON for POST)
    std::string credentials;  // the token of "Authorization: Bearer <token>", or ""
};

// What to answer. The server copies status, content type, body and every header as they are.
struct AdminResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

// Someone allowed to operate: the name the audit log records and the token that proves it.
struct AdminOperator {
    std::string name;
    std::string token;
};

// What AdminHandler enforces. Defaults are safe for a console on an internal network.
//   bulwark::AdminOptions o;  o.tokens = {{"alice", token_from_secret_store()}};
struct AdminOptions {
    // Who may call the API (everything but the page and the liveness/readiness probes). Empty:
    // nobody, every protected request is refused. Each token is at least 16 bytes; names and
    // tokens are unique.
    std::vector<AdminOperator> tokens;
    std::size_t max_body_bytes = std::size_t{64} * 1024;  // larger bodies: 413
    std::size_t default_page_size = 50;  // dead letters per page when `limit` is not given
    std::size_t max_page_size = 500;     // a larger `limit`: 400
    std::size_t max_bulk_ids = 500;      // ids per bulk request; more: 400
    double bulk_rate_per_second = 5.0;   // bulk requests admitted per second (all operators)
    std::size_t bulk_burst = 10;         // of which this many at once
    std::size_t audit_entries = 1000;    // the audit log keeps the newest this many
    // Applied to payloads, error texts and notes before they are shown. Empty: shown as stored.
    Redactor redact = redact_defaults();

    static constexpr std::size_t min_token_bytes = 16;

    void validate() const {
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            const std::string field = "AdminOptions.tokens[" + std::to_string(i) + "]";
            if (tokens[i].name.empty()) {
                detail::throw_invalid_option(field + ".name", "must not be empty", "\"\"");
            }
            if (tokens[i].token.size() < min_token_bytes) {
                // The value itself is a secret: only its length goes in the message.
                detail::throw_invalid_option(field + ".token", "must be at least 16 bytes",
                                             std::to_string(tokens[i].token.size()) + " bytes");
            }
            for (std::size_t j = 0; j < i; ++j) {
                if (tokens[j].name == tokens[i].name) {
                    detail::throw_invalid_option(field + ".name", "must be unique",
                                                 "\"" + tokens[i].name + "\"");
                }
                if (tokens[j].token == tokens[i].token) {
                    detail::throw_invalid_option(field + ".token", "must be unique",
                                                 "the token of \"" + tokens[j].name + "\"");
                }
            }
        }
        positive(max_body_bytes, "AdminOptions.max_body_bytes");
        positive(default_page_size, "AdminOptions.default_page_size");
        positive(max_page_size, "AdminOptions.max_page_size");
        if (default_page_size > max_page_size) {
            detail::throw_invalid_option("AdminOptions.default_page_size",
                                         "must be <= max_page_size",
                                         std::to_string(default_page_size));
        }
        positive(max_bulk_ids, "AdminOptions.max_bulk_ids");
        if (!(bulk_rate_per_second >= 1.0 / 86400.0 && bulk_rate_per_second <= 1e9)) {
            detail::throw_invalid_option("AdminOptions.bulk_rate_per_second",
                                         "must be in [1/86400 (one a day), 1e9] per second",
                                         std::to_string(bulk_rate_per_second));
        }
        positive(bulk_burst, "AdminOptions.bulk_burst");
        positive(audit_entries, "AdminOptions.audit_entries");
    }

private:
    static void positive(std::size_t value, const char* field) {
        if (value == 0) {
            detail::throw_invalid_option(field, "must be > 0", "0");
        }
    }
};

// One operator action: who did what to what, when, and to how many.
struct AdminAuditEntry {
    WallTime at{};
    std::string operator_name;
    std::string action;  // "breaker.trip", "dead_letters.dismiss", ...
    std::string target;  // a breaker's name, the ids (the first few), a level
    std::size_t count = 0;
    std::string detail;  // the reason, the category, the channels
};

namespace detail {

// Compares a presented token with an expected one in time that depends only on the expected
// token's length, so the time taken tells nothing of how many leading bytes were right.
inline bool same_token(std::string_view given, std::string_view expected) noexcept {
    unsigned diff = given.size() == expected.size() ? 0U : 1U;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto g = static_cast<unsigned char>(i < given.size() ? given[i] : '\0');
        diff |= static_cast<unsigned>(g ^ static_cast<unsigned char>(expected[i]));
    }
    return diff == 0;
}

// Decodes %XX escapes (and '+' as a space when `plus_is_space`); nullopt for a broken escape.
inline std::optional<std::string> percent_decoded(std::string_view text, bool plus_is_space) {
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    };
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) {
                return std::nullopt;
            }
            const int hi = hex(text[i + 1]);
            const int lo = hex(text[i + 2]);
            if (hi < 0 || lo < 0) {
                return std::nullopt;
            }
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

// "2026-12-05T02:10:42.123Z": a wall time in RFC 3339, UTC, to the millisecond.
inline std::string format_rfc3339(WallTime t) {
    using namespace std::chrono;
    const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
    std::int64_t days = ms / 86400000;
    std::int64_t rest = ms % 86400000;
    if (rest < 0) {
        rest += 86400000;
        --days;
    }
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count.
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const std::int64_t doe = days - era * 146097;
    const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const std::int64_t mp = (5 * doy + 2) / 153;
    const std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
    const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
    const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
    char buffer[128];  // room for any long long fields, as GCC checks
    std::snprintf(buffer, sizeof buffer, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%03lldZ",
                  static_cast<long long>(year), static_cast<long long>(month),
                  static_cast<long long>(day), static_cast<long long>(rest / 3600000),
                  static_cast<long long>(rest / 60000 % 60),
                  static_cast<long long>(rest / 1000 % 60), static_cast<long long>(rest % 1000));
    return buffer;
}

// A refusal that becomes an error response: the status and the message the client sees.
class AdminError : public std::runtime_error {
public:
    AdminError(int status, const std::string& message)
        : std::runtime_error(message), status_(status) {}
    int status() const noexcept { return status_; }

private:
    int status_;
};

}  // namespace detail

// The operator's API and console as a plain function of a request: any HTTP server mounts it.
//   bulwark::AdminHandler admin(options);
//   admin.breakers(registry).degradation(degradation).dead_letters(store).engine(engine);
//   bulwark::AdminResponse r = admin.handle({req.method, req.path, query, req.body, bearer});
// The page (GET /, /console.js, /console.css) and GET /api/health/live and /api/health/ready
// need no token; every other request needs one of options.tokens (compared in constant time)
// or is refused with 403: reads too, since dead letters hold customer data. Bulk operations are
// rate limited (429) and every action is written to the audit log. Errors are JSON
// {"error": "..."} with 400, 403, 404, 405, 413 or 429. docs/operations.md lists the endpoints.
// Thread-safety: wire the sources (breakers(), engine(), ...) before serving; handle() may then
// be called from any number of server threads at once. The sources and the clock must outlive
// the handler. AdminHandler is BasicAdminHandler<>: a template only so that its code is compiled
// where it is used; use the alias.
template <class Tag = void>
class BasicAdminHandler {
public:
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): delegates; llvm-project#37250
    explicit BasicAdminHandler(AdminOptions options)
        : BasicAdminHandler(std::move(options), default_clock()) {}

    // Throws std::invalid_argument for invalid options.
    BasicAdminHandler(AdminOptions options, Clock& clock)
        : options_((options.validate(), std::move(options))),
          clock_(&clock),
          bulk_tokens_(static_cast<double>(options_.bulk_burst)),
          bulk_refilled_(clock.now()) {}

    BasicAdminHandler(const BasicAdminHandler&) = delete;
    BasicAdminHandler& operator=(const BasicAdminHandler&) = delete;

    BasicAdminHandler& breakers(CircuitBreakerRegistry& registry) noexcept {
        breakers_ = &registry;
        return *this;
    }
    BasicAdminHandler& degradation(Degradation& degradation) noexcept {
        degradation_ = &degradation;
        return *this;
    }
    BasicAdminHandler& health(HealthMonitor& monitor) noexcept {
        health_ = &monitor;
        return *this;
    }
    BasicAdminHandler& resources(ResourceManager& manager) noexcept {
        resources_ = &manager;
        return *this;
    }
    BasicAdminHandler& dead_letters(DeadLetterStore& store) noexcept {
        store_ = &store;
        return *this;
    }
    // Adds each letter's error class and severity to what the console shows (peek(): the
    // classifier's counts do not move).
    BasicAdminHandler& classifier(const ErrorClassifier& classifier) noexcept {
        classifier_ = &classifier;
        return *this;
    }
    BasicAdminHandler& fixes(FixOrchestrator& orchestrator) noexcept {
        fixes_ = &orchestrator;
        return *this;
    }
    // Engine statistics and bulk reprocess (DeliveryEngine::reprocess_dead_letter).
    template <class Message>
    BasicAdminHandler& engine(DeliveryEngine<Message>& engine) {
        engine_json_ = [&engine] {
            const DeliveryEngineCounters c = engine.counters();
            detail::JsonWriter w;
            w.begin_object().field("name", engine.options().name);
            w.key("counters").begin_object();
            w.field("submitted", c.submitted).field("redriven", c.redriven);
            w.field("retries", c.retries).field("duplicates_suppressed", c.duplicates_suppressed);
            w.field("lease_lost", c.lease_lost)
                .field("dead_letter_failures", c.dead_letter_failures);
            w.field("undecodable", c.undecodable);
            w.end_object();
            w.key("stats").raw(engine.stats().to_json());
            w.end_object();
            return w.take();
        };
        engine_reprocess_ = [&engine](const std::string& id, std::vector<std::string> channels) {
            return engine.reprocess_dead_letter(id, std::move(channels));
        };
        engine_channels_ = [&engine] {
            return engine.channels();
        };
        return *this;
    }
    template <class Message>
    BasicAdminHandler& retry_queue(RetryQueue<Message>& queue) {
        retry_queue_json_ = [&queue] {
            const RetryQueueStats s = queue.stats();
            detail::JsonWriter w;
            w.begin_object();
            w.field("queued", static_cast<std::uint64_t>(s.queued));
            w.field("in_flight", static_cast<std::uint64_t>(s.in_flight));
            w.field("enqueued", s.enqueued).field("rejected_full", s.rejected_full);
            w.field("attempts", s.attempts).field("delivered", s.delivered);
            w.field("retries", s.retries).field("dead_lettered", s.dead_lettered);
            w.field("dead_letter_failures", s.dead_letter_failures).field("parked", s.parked);
            w.field("returned", s.returned).field("corrupt", s.corrupt);
            w.field("lost_leases", s.lost_leases).field("store_failures", s.store_failures);
            w.end_object();
            return w.take();
        };
        return *this;
    }

    // Answers one request. A refusal is a 4xx, a failure of a source a 500 with its text
    // (redacted), an allocation failure a 503; throws std::bad_alloc only when even that answer
    // cannot be allocated.
    AdminResponse handle(const AdminRequest& request) {
        AdminResponse response;
        try {
            response = route(request);
        } catch (const TooManyBulk& e) {
            response = error(e.status(), e.what());
            response.headers.emplace_back("Retry-After", std::to_string(e.retry_after));
        } catch (const detail::AdminError& e) {
            response = error(e.status(), e.what());
        } catch (const std::bad_alloc&) {
            response = error(503, "out of memory");
        } catch (const std::exception& e) {
            response = error(500, "internal error: " + redacted(e.what()));
        } catch (...) {
            response = error(500, "internal error");
        }
        secure(response);
        return response;
    }

    // The newest `limit` audit entries, newest first.
    std::vector<AdminAuditEntry> audit(std::size_t limit = 100) const {
        detail::LockGuard lock(audit_mutex_);
        std::vector<AdminAuditEntry> out;
        for (auto it = audit_.rbegin(); it != audit_.rend() && out.size() < limit; ++it) {
            out.push_back(*it);
        }
        return out;
    }

    const AdminOptions& options() const noexcept { return options_; }

private:
    using Segments = std::vector<std::string>;

    // The tag categorize() stores a severity in: "severity:high".
    static constexpr const char* severity_tag = "severity:";
    using Params = std::vector<std::pair<std::string, std::string>>;

    [[noreturn]] static void fail(int status, const std::string& message) {
        throw detail::AdminError(status, message);
    }

    static AdminResponse error(int status, std::string_view message) {
        AdminResponse r;
        r.status = status;
        detail::JsonWriter w;
        w.begin_object().key("error");
        std::string text;
        detail::append_utf8(text, message, [](std::string& out, char c) { out.push_back(c); });
        w.value(text).end_object();
        r.body = w.take();
        return r;
    }

    static AdminResponse json(std::string body, int status = 200) {
        AdminResponse r;
        r.status = status;
        r.body = std::move(body);
        return r;
    }

    // Headers on every answer: nothing cached, nothing sniffed, no framing, and a page that may
    // run only its own script and style (so text that slipped through as markup cannot run).
    static void secure(AdminResponse& r) {
        r.headers.emplace_back("Cache-Control", "no-store");
        r.headers.emplace_back("X-Content-Type-Options", "nosniff");
        r.headers.emplace_back("X-Frame-Options", "DENY");
        r.headers.emplace_back("Referrer-Policy", "no-referrer");
        r.headers.emplace_back("Content-Security-Policy",
                               "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'");
    }

    AdminResponse route(const AdminRequest& request) {
        if (request.body.size() > options_.max_body_bytes) {
            fail(413, "request body of " + std::to_string(request.body.size()) +
                          " bytes exceeds max_body_bytes (" +
                          std::to_string(options_.max_body_bytes) + ")");
        }
        const Segments path = split_path(request.path);
        const bool get = request.method == "GET";
        const bool post = request.method == "POST";
        if (path.empty() ||
            (path.size() == 1 &&
             (path[0] == "console.js" || path[0] == "console.css" || path[0] == "index.html"))) {
            allow(get, "GET");
            AdminResponse r;
            const std::string name = path.empty() ? std::string("index.html") : path[0];
            if (name == "console.js") {
                r.content_type = "text/javascript; charset=utf-8";
                r.body = std::string(admin_console_js());
            } else if (name == "console.css") {
                r.content_type = "text/css; charset=utf-8";
                r.body = std::string(admin_console_css());
            } else {
                r.content_type = "text/html; charset=utf-8";
                r.body = std::string(admin_console_html());
            }
            return r;
        }
        if (path[0] != "api" || path.size() < 2) {
            fail(404, "no such path: " + shown(request.path));
        }
        const std::string& area = path[1];
        if (area == "health" && path.size() == 3 && path[2] == "live") {
            allow(get, "GET");
            return json(R"({"status":"up"})");
        }
        if (area == "health" && path.size() == 3 && path[2] == "ready") {
            allow(get, "GET");
            const HealthReport report = need(health_, "health").report();
            return json(report.readiness_json(), report.http_status());
        }
        const std::string who = authenticate(request.credentials);
        const Params params = parse_query(request.query);
        if (area == "health" && path.size() == 2) {
            allow(get, "GET");
            return json(need(health_, "health").report().to_json());
        }
        if (area == "breakers") {
            return breakers_api(path, get, post, request.body, who);
        }
        if (area == "degradation") {
            return degradation_api(path, get, post, request.body, who);
        }
        if (area == "resources" && path.size() == 2) {
            allow(get, "GET");
            return json(need(resources_, "resources").report().to_json());
        }
        if (area == "dead-letters") {
            return dead_letters_api(path, get, post, params, request.body, who);
        }
        if (area == "engine" && path.size() == 2) {
            allow(get, "GET");
            if (!engine_json_) {
                fail(404, "engine: not configured");
            }
            return json(engine_json_());
        }
        if (area == "retry-queue" && path.size() == 2) {
            allow(get, "GET");
            if (!retry_queue_json_) {
                fail(404, "retry-queue: not configured");
            }
            return json(retry_queue_json_());
        }
        if (area == "fixers") {
            return fixers_api(path, get, params);
        }
        if (area == "audit" && path.size() == 2) {
            allow(get, "GET");
            return json(
                audit_json(page_limit(params, std::min<std::size_t>(100, options_.max_page_size))));
        }
        fail(404, "no such path: " + shown(request.path));
    }

    static void allow(bool ok, const char* methods) {
        if (!ok) {
            fail(405, std::string("method not allowed here; allowed: ") + methods);
        }
    }

    template <class T>
    static T& need(T* source, const char* name) {
        if (source == nullptr) {
            fail(404, std::string(name) + ": not configured");
        }
        return *source;
    }

    // The operator the token belongs to. Every token is compared (no early exit), so the time
    // does not say which operator's token came closest.
    std::string authenticate(std::string_view credentials) const {
        const AdminOperator* who = nullptr;
        for (const AdminOperator& op : options_.tokens) {
            if (detail::same_token(credentials, op.token) && who == nullptr) {
                who = &op;
            }
        }
        if (who == nullptr || credentials.empty()) {
            fail(403, "forbidden: a valid operator token is required");
        }
        return who->name;
    }

    static Segments split_path(std::string_view path) {
        Segments out;
        std::size_t at = 0;
        while (at <= path.size()) {
            const std::size_t slash = std::min(path.find('/', at), path.size());
            if (slash > at) {
                std::optional<std::string> part =
                    detail::percent_decoded(path.substr(at, slash - at), false);
                if (!part) {
                    fail(400, "path: invalid percent-encoding");
                }
                out.push_back(std::move(*part));
            }
            at = slash + 1;
        }
        return out;
    }

    static Params parse_query(std::string_view query) {
        Params out;
        std::size_t at = 0;
        while (at < query.size()) {
            const std::size_t amp = std::min(query.find('&', at), query.size());
            const std::string_view pair = query.substr(at, amp - at);
            at = amp + 1;
            if (pair.empty()) {
                continue;
            }
            const std::size_t eq = pair.find('=');
            std::optional<std::string> key = detail::percent_decoded(pair.substr(0, eq), true);
            std::optional<std::string> value = detail::percent_decoded(
                eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
            if (!key || !value) {
                fail(400, "query: invalid percent-encoding");
            }
            out.emplace_back(std::move(*key), std::move(*value));
        }
        return out;
    }

    static const std::string* param(const Params& params, std::string_view name) {
        for (const auto& p : params) {
            if (p.first == name) {
                return &p.second;
            }
        }
        return nullptr;
    }

    static std::size_t number_param(const Params& params, std::string_view name,
                                    std::size_t fallback) {
        const std::string* text = param(params, name);
        if (text == nullptr) {
            return fallback;
        }
        if (text->empty() || text->size() > 9 ||
            text->find_first_not_of("0123456789") != std::string::npos) {
            fail(400, std::string(name) + ": expected a whole number below 10^9, got \"" +
                          shown(*text) + "\"");
        }
        return static_cast<std::size_t>(std::stoul(*text));
    }

    std::size_t page_limit(const Params& params, std::size_t fallback) const {
        const std::size_t limit = number_param(params, "limit", fallback);
        if (limit == 0 || limit > options_.max_page_size) {
            fail(400, "limit: must be 1 to " + std::to_string(options_.max_page_size) + ", got " +
                          std::to_string(limit));
        }
        return limit;
    }

    // A client's value quoted back in a message: cut, so an error cannot echo a whole body.
    static std::string shown(std::string_view text) {
        return std::string(text.substr(0, 64)) + (text.size() > 64 ? "..." : "");
    }

    static detail::JsonValue parse_body(const std::string& body, bool required) {
        detail::JsonValue v;
        if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
            if (required) {
                fail(400, "body: expected a JSON object");
            }
            v.kind = detail::JsonValue::Kind::object;
            return v;
        }
        std::string why;
        if (!detail::read_json(body, v, why)) {
            fail(400, "body: invalid JSON: " + why);
        }
        if (!v.is(detail::JsonValue::Kind::object)) {
            fail(400, "body: expected a JSON object");
        }
        return v;
    }

    // The string member `name`; nullopt when absent; 400 when present but not a string or
    // longer than `max` bytes.
    static std::optional<std::string> string_field(const detail::JsonValue& body,
                                                   std::string_view name, std::size_t max = 1024) {
        const detail::JsonValue* v = body.find(name);
        if (v == nullptr || v->is(detail::JsonValue::Kind::null)) {
            return std::nullopt;
        }
        if (!v->is(detail::JsonValue::Kind::string)) {
            fail(400, std::string(name) + ": expected a string");
        }
        if (v->text.size() > max) {
            fail(400, std::string(name) + ": at most " + std::to_string(max) + " bytes, got " +
                          std::to_string(v->text.size()));
        }
        return v->text;
    }

    static std::string required_string(const detail::JsonValue& body, std::string_view name) {
        std::optional<std::string> v = string_field(body, name);
        if (!v || v->empty()) {
            fail(400, std::string(name) + ": required, a non-empty string");
        }
        return std::move(*v);
    }

    static std::vector<std::string> string_list(const detail::JsonValue& body,
                                                std::string_view name, std::size_t max_items) {
        std::vector<std::string> out;
        const detail::JsonValue* v = body.find(name);
        if (v == nullptr || v->is(detail::JsonValue::Kind::null)) {
            return out;
        }
        if (!v->is(detail::JsonValue::Kind::array)) {
            fail(400, std::string(name) + ": expected an array of strings");
        }
        if (v->items.size() > max_items) {
            fail(400, std::string(name) + ": at most " + std::to_string(max_items) +
                          " items, got " + std::to_string(v->items.size()));
        }
        for (const detail::JsonValue& item : v->items) {
            if (!item.is(detail::JsonValue::Kind::string) || item.text.empty() ||
                item.text.size() > 256) {
                fail(400, std::string(name) +
                              ": every item must be a non-empty string of at most 256 bytes");
            }
            out.push_back(item.text);
        }
        return out;
    }

    AdminResponse breakers_api(const Segments& path, bool get, bool post, const std::string& body,
                               const std::string& who) {
        CircuitBreakerRegistry& registry = need(breakers_, "breakers");
        if (path.size() == 2) {
            allow(get, "GET");
            detail::JsonWriter w;
            w.begin_object().key("breakers").begin_array();
            registry.for_each([&](CircuitBreaker& b) { write_breaker(w, b); });
            w.end_array().end_object();
            return json(w.take());
        }
        CircuitBreaker* breaker = registry.find(path[2]);
        if (breaker == nullptr) {
            fail(404, "no breaker named \"" + shown(path[2]) + "\"");
        }
        if (path.size() == 3) {
            allow(get, "GET");
            detail::JsonWriter w;
            write_breaker(w, *breaker);
            return json(w.take());
        }
        if (path.size() == 4 && (path[3] == "trip" || path[3] == "reset")) {
            allow(post, "POST");
            const detail::JsonValue v = parse_body(body, false);
            const std::string reason = string_field(v, "reason").value_or("");
            if (path[3] == "trip") {
                breaker->trip();
            } else {
                breaker->reset();
            }
            record(who, "breaker." + path[3], breaker->name(), 1, reason);
            detail::JsonWriter w;
            write_breaker(w, *breaker);
            return json(w.take());
        }
        fail(404, "no such path under /api/breakers");
    }

    static void write_breaker(detail::JsonWriter& w, const CircuitBreaker& b) {
        const CircuitBreakerStats s = b.stats();
        w.begin_object().field("name", b.name()).field("state", to_string(s.state));
        w.field("failure_rate", s.failure_rate).field("slow_call_rate", s.slow_call_rate);
        w.field("calls", s.calls).field("successes", s.successes).field("failures", s.failures);
        w.field("slow_calls", s.slow).field("timeouts", s.timeouts).field("rejected", s.rejected);
        w.field("opened", s.opened);
        w.field("consecutive_failures", static_cast<std::uint64_t>(s.consecutive_failures));
        w.field("window_calls", s.window_calls).field("window_failures", s.window_failures);
        w.field("time_in_state_ms", millis(s.time_in_state));
        w.field("retry_after_ms", millis(s.retry_after));
        w.end_object();
    }

    static double millis(Duration d) noexcept {
        return std::chrono::duration<double, std::milli>(d).count();
    }

    AdminResponse degradation_api(const Segments& path, bool get, bool post,
                                  const std::string& body, const std::string& who) {
        Degradation& d = need(degradation_, "degradation");
        if (path.size() == 2 && get) {
            return json(degradation_json(d));
        }
        if (path.size() == 2) {
            allow(post, "GET, POST");
            const detail::JsonValue v = parse_body(body, true);
            const std::string name = required_string(v, "level");
            const std::string reason = required_string(v, "reason");
            const std::optional<DegradationLevel> level = level_named(name);
            if (!level) {
                fail(400, "level: unknown \"" + shown(name) +
                              "\" (expected normal, minor, moderate, severe or critical)");
            }
            d.set_level(*level, reason);
            record(who, "degradation.set", name, 1, reason);
            return json(degradation_json(d));
        }
        if (path.size() == 3 && path[2] == "clear") {
            allow(post, "POST");
            d.clear_override();
            record(who, "degradation.clear", to_string(d.level()), 1, "");
            return json(degradation_json(d));
        }
        fail(404, "no such path under /api/degradation");
    }

    static std::optional<DegradationLevel> level_named(std::string_view name) {
        for (int i = 0; i <= static_cast<int>(DegradationLevel::critical); ++i) {
            const auto level = static_cast<DegradationLevel>(i);
            if (name == to_string(level)) {
                return level;
            }
        }
        return std::nullopt;
    }

    std::string degradation_json(const Degradation& d) const {
        detail::JsonWriter w;
        w.begin_object().field("level", to_string(d.level()));
        w.field("reason", redacted(d.reason())).field("overridden", d.overridden());
        w.field("for_ms", millis(clock_->now() - d.since()));
        w.key("levels").begin_array();
        for (int i = 0; i <= static_cast<int>(DegradationLevel::critical); ++i) {
            w.value(to_string(static_cast<DegradationLevel>(i)));
        }
        w.end_array().end_object();
        return w.take();
    }

    std::string redacted(std::string_view text) const {
        std::string out;
        const std::string masked = options_.redact ? options_.redact(text) : std::string(text);
        // JSON needs UTF-8: payloads are arbitrary bytes.
        detail::append_utf8(out, masked, [](std::string& o, char c) { o.push_back(c); });
        return out;
    }

    template <class Enum>
    static std::optional<Enum> enum_named(std::string_view name, std::size_t count) {
        for (std::size_t i = 0; i < count; ++i) {
            const auto e = static_cast<Enum>(i);
            if (name == to_string(e)) {
                return e;
            }
        }
        return std::nullopt;
    }

    AdminResponse dead_letters_api(const Segments& path, bool get, bool post, const Params& params,
                                   const std::string& body, const std::string& who) {
        DeadLetterStore& store = need(store_, "dead-letters");
        if (path.size() == 2) {
            allow(get, "GET");
            return json(list_letters(store, params));
        }
        if (path.size() == 3 && post &&
            (path[2] == "dismiss" || path[2] == "categorize" || path[2] == "fix" ||
             path[2] == "reprocess")) {
            admit_bulk();
            return json(bulk(store, path[2], body, who));
        }
        if (path.size() == 3) {
            allow(get, "GET");
            std::optional<DeadLetter> d = store.get(path[2]);
            if (!d) {
                fail(404, "no dead letter with id \"" + shown(path[2]) + "\"");
            }
            detail::JsonWriter w;
            write_letter(w, *d, true);
            return json(w.take());
        }
        fail(404, "no such path under /api/dead-letters");
    }

    // A page of the letters the filters select. Filtered by status alone (or not at all), it
    // copies only the records up to the page's end and counts from the store's statistics;
    // other filters read every record they select.
    std::string list_letters(DeadLetterStore& store, const Params& params) const {
        DeadLetterQuery q;
        std::optional<DeadLetterStatus> status_filter;
        bool other_filters = false;
        if (const std::string* s = param(params, "status"); s != nullptr && !s->empty()) {
            const auto status = enum_named<DeadLetterStatus>(*s, dead_letter_status_count);
            if (!status) {
                fail(400, "status: unknown \"" + shown(*s) +
                              "\" (expected pending, reprocessed or dismissed)");
            }
            q.status(*status);
            status_filter = status;
        }
        if (const std::string* s = param(params, "reason"); s != nullptr && !s->empty()) {
            const auto reason = enum_named<DeadLetterReason>(*s, dead_letter_reason_count);
            if (!reason) {
                fail(400, "reason: unknown \"" + shown(*s) + "\"");
            }
            q.reason(*reason);
            other_filters = true;
        }
        if (const std::string* s = param(params, "type"); s != nullptr && !s->empty()) {
            q.type(*s);
            other_filters = true;
        }
        if (const std::string* s = param(params, "category"); s != nullptr && !s->empty()) {
            q.category(*s);
            other_filters = true;
        }
        for (const auto& p : params) {
            if (p.first == "tag" && !p.second.empty()) {
                q.tag(p.second);
                other_filters = true;
            }
        }
        const std::string* error_class = param(params, "error_class");
        const std::string* text = param(params, "text");
        const std::size_t offset = number_param(params, "offset", 0);
        const std::size_t limit = page_limit(params, options_.default_page_size);
        const std::string folded = text == nullptr ? std::string() : detail::ascii_lowered(*text);
        const bool by_class = error_class != nullptr && !error_class->empty();
        std::optional<std::size_t> counted;
        if (!other_filters && !by_class && folded.empty()) {
            const DeadLetterStats stats = store.stats();
            counted = status_filter ? stats.count(*status_filter) : stats.total;
            q.limit(offset + limit);  // both below 10^9: no overflow
        }

        std::size_t total = 0;
        detail::JsonWriter w;
        w.begin_object().key("items").begin_array();
        for (const DeadLetter& d : store.list(q)) {
            if (by_class && class_of(d).error_class.name != *error_class) {
                continue;
            }
            // The text filter reads what operators see (redacted), so it cannot probe for
            // masked data.
            if (!folded.empty() && !detail::contains_folded(redacted(d.error), folded) &&
                !detail::contains_folded(d.id, folded)) {
                continue;
            }
            if (total >= offset && total - offset < limit) {
                write_letter(w, d, false);
            }
            ++total;
        }
        w.end_array();
        // The statistics and the list are two reads: a record added between them is counted
        // once it shows.
        w.field("total", static_cast<std::uint64_t>(counted ? std::max(*counted, total) : total));
        w.field("offset", static_cast<std::uint64_t>(offset));
        w.field("limit", static_cast<std::uint64_t>(limit));
        w.end_object();
        return w.take();
    }

    Classification class_of(const DeadLetter& d) const {
        if (classifier_ != nullptr) {
            return classifier_->peek(d);
        }
        Classification c;
        c.error_class.name = std::string(ErrorClassifier::unclassified_name);
        return c;
    }

    void write_letter(detail::JsonWriter& w, const DeadLetter& d, bool full) const {
        const Classification c = class_of(d);
        ErrorSeverity severity = c.error_class.severity;
        for (const std::string& t : d.tags) {
            // An operator's categorize() outranks the rule's; a tag naming no severity is a tag.
            if (t.rfind(severity_tag, 0) == 0) {
                if (const auto s = enum_named<ErrorSeverity>(std::string_view(t).substr(9),
                                                             error_severity_count)) {
                    severity = *s;
                }
            }
        }
        // Ids, types, categories and tags are keys and labels, shown as stored (the console acts
        // on the ids it shows); the message's content (payload, error texts, notes) is redacted.
        w.begin_object().field("id", d.id).field("type", d.type);
        w.field("status", to_string(d.status)).field("reason", to_string(d.reason));
        w.field("category", d.category);
        w.key("tags").begin_array();
        for (const std::string& t : d.tags) {
            w.value(t);
        }
        w.end_array();
        w.field("error", redacted(d.error)).field("error_class", c.error_class.name);
        w.field("severity", to_string(severity));
        w.field("created", detail::format_rfc3339(d.created));
        w.key("last_attempt");
        if (d.last_attempt == WallTime{}) {
            w.null();
        } else {
            w.value(detail::format_rfc3339(d.last_attempt));
        }
        w.field("redrives", static_cast<std::uint64_t>(d.redrives)).field("note", redacted(d.note));
        if (full) {
            w.field("payload", redacted(d.payload));
            w.key("attempts").begin_array();
            for (const DeadLetterAttempt& a : d.attempts) {
                w.begin_object().field("at", detail::format_rfc3339(a.at));
                w.field("channel", a.channel).field("error", redacted(a.error));
                w.end_object();
            }
            w.end_array();
        }
        w.end_object();
    }

    // One token per bulk request, refilled at bulk_rate_per_second up to bulk_burst.
    void admit_bulk() {
        detail::LockGuard lock(bulk_mutex_);
        const TimePoint now = clock_->now();
        const double elapsed = std::chrono::duration<double>(now - bulk_refilled_).count();
        bulk_refilled_ = now;
        bulk_tokens_ =
            std::min(static_cast<double>(options_.bulk_burst),
                     bulk_tokens_ + std::max(0.0, elapsed) * options_.bulk_rate_per_second);
        if (bulk_tokens_ < 1.0) {
            const double wait = (1.0 - bulk_tokens_) / options_.bulk_rate_per_second;
            throw TooManyBulk(static_cast<long long>(std::ceil(wait)));
        }
        bulk_tokens_ -= 1.0;
    }

    struct TooManyBulk : detail::AdminError {
        explicit TooManyBulk(long long seconds)
            : detail::AdminError(
                  429, "too many bulk operations: try again in " + std::to_string(seconds) + " s"),
              retry_after(seconds) {}
        long long retry_after;
    };

    // A bulk operation: the body is checked whole first (a 400 changes nothing), then each id is
    // acted on by itself, so one that fails (the store refuses, the engine stopped) is reported
    // in "failed" and the others still happen; the audit entry records what did.
    std::string bulk(DeadLetterStore& store, const std::string& operation, const std::string& body,
                     const std::string& who) {
        const detail::JsonValue v = parse_body(body, true);
        const std::vector<std::string> ids = string_list(v, "ids", options_.max_bulk_ids);
        if (ids.empty()) {
            fail(400, "ids: required, 1 to " + std::to_string(options_.max_bulk_ids) + " ids");
        }
        std::string detail_text;
        std::function<bool(const std::string&, std::string&)> apply;
        std::array<std::size_t, fix_outcome_count> outcomes{};
        std::size_t redriven = 0;
        if (operation == "dismiss") {
            detail_text = required_string(v, "reason");
            apply = [&](const std::string& id, std::string&) {
                return store.dismiss(DeadLetterQuery{}.id(id), detail_text) == 1;
            };
        } else if (operation == "categorize") {
            detail_text = required_string(v, "category");
            std::vector<std::string> tags = string_list(v, "tags", 32);
            for (const std::string& t : tags) {
                if (t.rfind(severity_tag, 0) == 0) {
                    fail(400, "tags: \"" + shown(t) + R"(": set a severity with "severity")");
                }
            }
            if (std::optional<std::string> severity = string_field(v, "severity")) {
                if (!enum_named<ErrorSeverity>(*severity, error_severity_count)) {
                    fail(400, "severity: unknown \"" + shown(*severity) +
                                  "\" (expected low, medium, high or critical)");
                }
                tags.push_back(severity_tag + *severity);
            }
            apply = [&, tags](const std::string& id, std::string&) {
                return store.categorize(DeadLetterQuery{}.id(id), detail_text, tags) == 1;
            };
        } else if (operation == "fix") {
            FixOrchestrator& fixes = need(fixes_, "fixes");
            apply = [&](const std::string& id, std::string& why) {
                const BulkFixResult r =
                    fixes.bulk_fix(DeadLetterQuery{}.id(id).status(DeadLetterStatus::pending), who);
                for (std::size_t i = 0; i < fix_outcome_count; ++i) {
                    outcomes[i] += r.by_outcome[i];
                }
                redriven += r.redriven;
                if (r.count(FixOutcome::failed) == 1) {
                    why = r.letters.front().result.message;
                }
                return r.count(FixOutcome::success) + r.count(FixOutcome::partial) == 1;
            };
        } else {
            if (!engine_reprocess_) {
                fail(404, "engine: not configured");
            }
            std::vector<std::string> channels = string_list(v, "channels", 16);
            const std::vector<std::string> known = engine_channels_();
            for (const std::string& c : channels) {
                if (std::find(known.begin(), known.end(), c) == known.end()) {
                    fail(400, "channels: the engine has no channel \"" + shown(c) + "\"");
                }
                detail_text += (detail_text.empty() ? "" : ",") + c;
            }
            apply = [this, channels](const std::string& id, std::string&) {
                return engine_reprocess_(id, channels);
            };
        }

        std::size_t changed = 0;
        std::vector<std::string> not_found;
        std::vector<std::string> unchanged;
        std::vector<std::pair<std::string, std::string>> failed;
        for (const std::string& id : ids) {
            std::string why;
            try {
                if (apply(id, why)) {
                    ++changed;
                    continue;
                }
            } catch (const std::bad_alloc&) {
                throw;
            } catch (...) {
                why = detail::describe_exception(std::current_exception());
            }
            if (!why.empty()) {
                failed.emplace_back(id, std::move(why));
            } else if (!store.get(id)) {
                not_found.push_back(id);
            } else {
                unchanged.push_back(id);
            }
        }
        record(who, "dead_letters." + operation, summary(ids), changed, detail_text);

        detail::JsonWriter w;
        w.begin_object().field("operation", operation);
        w.field("requested", static_cast<std::uint64_t>(ids.size()));
        w.field("changed", static_cast<std::uint64_t>(changed));
        w.key("not_found").begin_array();
        for (const std::string& id : not_found) {
            w.value(id);
        }
        w.end_array().key("unchanged").begin_array();
        for (const std::string& id : unchanged) {
            w.value(id);
        }
        w.end_array().key("failed").begin_array();
        for (const auto& f : failed) {
            w.begin_object().field("id", f.first).field("error", redacted(f.second)).end_object();
        }
        w.end_array();
        if (operation == "fix") {
            w.key("outcomes").begin_object();
            for (std::size_t i = 0; i < fix_outcome_count; ++i) {
                w.field(to_string(static_cast<FixOutcome>(i)),
                        static_cast<std::uint64_t>(outcomes[i]));
            }
            w.end_object().field("redriven", static_cast<std::uint64_t>(redriven));
        }
        w.end_object();
        return w.take();
    }

    // "dl-1, dl-2, dl-3 and 47 more": what an audit entry names.
    static std::string summary(const std::vector<std::string>& ids) {
        std::string out;
        const std::size_t shown_ids = std::min<std::size_t>(ids.size(), 3);
        for (std::size_t i = 0; i < shown_ids; ++i) {
            out += (i == 0 ? "" : ", ") + ids[i];
        }
        if (ids.size() > shown_ids) {
            out += " and " + std::to_string(ids.size() - shown_ids) + " more";
        }
        return out;
    }

    AdminResponse fixers_api(const Segments& path, bool get, const Params& params) {
        FixOrchestrator& fixes = need(fixes_, "fixes");
        allow(get, "GET");
        if (path.size() == 2) {
            detail::JsonWriter w;
            w.begin_object().key("fixers").begin_array();
            for (const FixerStats& s : fixes.stats()) {
                w.begin_object().field("fixer", s.fixer_id).field("executions", s.executions);
                for (std::size_t i = 0; i < fix_outcome_count; ++i) {
                    w.field(to_string(static_cast<FixOutcome>(i)), s.by_outcome[i]);
                }
                w.field("success_rate", s.success_rate).field("failure_rate", s.failure_rate);
                w.field("mean_duration_ms", millis(s.mean_duration));
                w.field("alert", to_string(s.level));
                w.end_object();
            }
            w.end_array().end_object();
            return json(w.take());
        }
        if (path.size() == 3 && path[2] == "executions") {
            const std::size_t limit = page_limit(params, options_.default_page_size);
            const std::vector<FixExecution> all = fixes.log().query();
            detail::JsonWriter w;
            w.begin_object().key("executions").begin_array();
            std::size_t n = 0;
            for (auto it = all.rbegin(); it != all.rend() && n < limit; ++it, ++n) {
                w.begin_object().field("fixer", it->fixer_id);
                w.field("at", detail::format_rfc3339(it->at)).field("operator", it->operator_name);
                w.field("dead_letter_id", redacted(it->dead_letter_id));
                w.field("message_id", redacted(it->message_id));
                w.field("outcome", to_string(it->outcome));
                w.field("duration_ms", millis(it->duration)).field("note", redacted(it->note));
                w.end_object();
            }
            w.end_array().end_object();
            return json(w.take());
        }
        fail(404, "no such path under /api/fixers");
    }

    void record(const std::string& who, std::string action, std::string target, std::size_t count,
                std::string detail_text) {
        AdminAuditEntry e;
        e.at = clock_->wall_now();
        e.operator_name = who;
        e.action = std::move(action);
        e.target = std::move(target);
        e.count = count;
        e.detail = std::move(detail_text);
        detail::LockGuard lock(audit_mutex_);
        if (audit_.size() >= options_.audit_entries) {
            audit_.pop_front();
        }
        audit_.push_back(std::move(e));
    }

    std::string audit_json(std::size_t limit) const {
        detail::JsonWriter w;
        w.begin_object().key("entries").begin_array();
        for (const AdminAuditEntry& e : audit(limit)) {
            w.begin_object().field("at", detail::format_rfc3339(e.at));
            w.field("operator", e.operator_name).field("action", e.action);
            w.field("target", redacted(e.target));
            w.field("count", static_cast<std::uint64_t>(e.count))
                .field("detail", redacted(e.detail));
            w.end_object();
        }
        w.end_array().end_object();
        return w.take();
    }

    const AdminOptions options_;
    Clock* const clock_;
    CircuitBreakerRegistry* breakers_ = nullptr;
    Degradation* degradation_ = nullptr;
    HealthMonitor* health_ = nullptr;
    ResourceManager* resources_ = nullptr;
    DeadLetterStore* store_ = nullptr;
    const ErrorClassifier* classifier_ = nullptr;
    FixOrchestrator* fixes_ = nullptr;
    std::function<std::string()> engine_json_;
    std::function<bool(const std::string&, std::vector<std::string>)> engine_reprocess_;
    std::function<std::vector<std::string>()> engine_channels_;
    std::function<std::string()> retry_queue_json_;

    mutable detail::Mutex bulk_mutex_;
    double bulk_tokens_ BULWARK_GUARDED_BY(bulk_mutex_);
    TimePoint bulk_refilled_ BULWARK_GUARDED_BY(bulk_mutex_);

    mutable detail::Mutex audit_mutex_;
    std::deque<AdminAuditEntry> audit_ BULWARK_GUARDED_BY(audit_mutex_);
};

using AdminHandler = BasicAdminHandler<>;

}  // namespace bulwark

#endif  // BULWARK_ADMIN_HPP
