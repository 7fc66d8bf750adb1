// Seed fixers for failed messages: five FixStrategy examples and the ErrorClassifier rules for
// them. What a fix does belongs to the application; these show the shapes a fix takes (edit the
// payload, redrive after a delay, over another channel, only once a probe says the cause is
// gone) and are what examples/notification_delivery runs. Each is thread-safe as long as the
// functions it is given are.
//   bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
//   fixers::add_seed_rules(classifier);
//   bulwark::FixRegistry registry;
//   fixers::register_seed_fixers(registry);   // or register each fixer with options of your own
#ifndef BULWARK_EXAMPLES_SEED_FIXERS_HPP
#define BULWARK_EXAMPLES_SEED_FIXERS_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/error_classifier.hpp>
#include <bulwark/fix_strategy.hpp>

namespace fixers {

// The error classes the seed rules assign and the seed fixers fix.
inline constexpr const char* database_connection = "database_connection";
inline constexpr const char* network_timeout = "network_timeout";
inline constexpr const char* validation_error = "validation_error";
inline constexpr const char* resource_exhaustion = "resource_exhaustion";
inline constexpr const char* external_api_error = "external_api_error";

// The channel a letter failed on last: its last attempt's channel (passing over the attempts a
// reprocess() appends, "redrive:<engine>"), else its type (a DeliveryEngine letter's primary).
inline std::string failed_channel(const bulwark::DeadLetter& letter) {
    for (auto it = letter.attempts.rbegin(); it != letter.attempts.rend(); ++it) {
        if (!it->channel.empty() && it->channel.rfind("redrive:", 0) != 0) {
            return it->channel;
        }
    }
    return letter.type;
}

// Our database (templates, preferences) was unreachable when the message was rendered. Nothing
// about the message is wrong: once `probe` says the database answers again, redrive it as it
// was; while it does not, the fix fails and the letter stays pending for the next bulk fix.
class DatabaseConnectionFixer final : public bulwark::FixStrategy {
public:
    explicit DatabaseConnectionFixer(std::function<bool()> probe) : probe_(std::move(probe)) {}

    std::string id() const override { return "database-connection"; }

    bulwark::FixResult fix(bulwark::DeadLetter& letter,
                           const bulwark::FixContext& context) override {
        static_cast<void>(letter);
        static_cast<void>(context);
        if (!probe_ || !probe_()) {
            return bulwark::FixResult::failed("database still unreachable: left pending");
        }
        return bulwark::FixResult::success("database answers the probe again: redrive")
            .tag("fixed-by:database-connection");
    }

private:
    std::function<bool()> probe_;
};

// The send timed out or the connection was refused: the far end was down or overloaded. Wait
// for it to settle, then redrive over `channels` (empty = the original route).
struct NetworkTimeoutOptions {
    bulwark::Duration delay = std::chrono::seconds(30);
    std::vector<std::string> channels;
};

class NetworkTimeoutFixer final : public bulwark::FixStrategy {
public:
    explicit NetworkTimeoutFixer(NetworkTimeoutOptions options = {})
        : options_(std::move(options)) {}

    std::string id() const override { return "network-timeout"; }

    bulwark::FixResult fix(bulwark::DeadLetter& letter,
                           const bulwark::FixContext& context) override {
        static_cast<void>(context);
        std::string message = "network settled: redrive";
        std::string over;
        for (const std::string& c : options_.channels) {
            over += (over.empty() ? "" : ",") + c;
        }
        message += " over " + (over.empty() ? failed_channel(letter) : over);
        return bulwark::FixResult::success(message)
            .via(options_.channels)
            .after(options_.delay)
            .tag("fixed-by:network-timeout");
    }

private:
    NetworkTimeoutOptions options_;
};

// Puts a phone number in E.164 form ("+15550100042"): digits only, with `country` (its calling
// code, "1") in front of a national number of `national_digits` digits. Empty when the input
// cannot be made into one.
inline std::string normalize_phone(std::string_view raw, std::string_view country = "1",
                                   std::size_t national_digits = 10) {
    std::string digits;
    for (const char c : raw) {
        if (c >= '0' && c <= '9') {
            digits.push_back(c);
        }
    }
    if (digits.size() == national_digits) {
        digits.insert(0, country);
    } else if (digits.size() == national_digits + country.size() &&
               digits.compare(0, country.size(), country) == 0) {
        // already has the country code
    } else {
        return {};
    }
    return "+" + digits;
}

// The provider refused a field of the message (an invalid phone number). The payload is lines of
// `key=value`; the fixer rewrites the line of `field` to its E.164 form and succeeds, so the
// redrive sends the edited payload (redrive_through passes it to the engine's
// reprocess_dead_letter_with). Fails when the field is missing, cannot be
// normalised, or was valid already (the cause is elsewhere).
struct ValidationOptions {
    std::string field = "phone";
    std::string country = "1";
};

class ValidationFixer final : public bulwark::FixStrategy {
public:
    explicit ValidationFixer(ValidationOptions options = {}) : options_(std::move(options)) {}

    std::string id() const override { return "validation"; }

    bulwark::FixResult fix(bulwark::DeadLetter& letter,
                           const bulwark::FixContext& context) override {
        static_cast<void>(context);
        // The value's [from, to) in the payload: the line that starts with "<field>=".
        const std::string key = options_.field + "=";
        std::size_t from = std::string::npos;
        for (std::size_t line = 0; line < letter.payload.size();) {
            if (letter.payload.compare(line, key.size(), key) == 0) {
                from = line + key.size();
                break;
            }
            const std::size_t next = letter.payload.find('\n', line);
            line = next == std::string::npos ? letter.payload.size() : next + 1;
        }
        if (from == std::string::npos) {
            return bulwark::FixResult::failed("no " + options_.field + " field in the payload");
        }
        const std::size_t to = std::min(letter.payload.find('\n', from), letter.payload.size());
        const std::string before = letter.payload.substr(from, to - from);
        const std::string after = normalize_phone(before, options_.country);
        if (after.empty()) {
            return bulwark::FixResult::failed(options_.field + " cannot be normalised");
        }
        if (after == before) {
            return bulwark::FixResult::failed(options_.field + " is valid already");
        }
        letter.payload.replace(from, to - from, after);
        return bulwark::FixResult::success(options_.field + " normalised to E.164")
            .tag("fixed-by:validation");
    }

private:
    ValidationOptions options_;
};

// The provider (or we) ran out of something: a quota, a queue, connections. Retrying at once
// only hits the limit again; redrive after `delay`, when it has room again.
class ResourceExhaustionFixer final : public bulwark::FixStrategy {
public:
    explicit ResourceExhaustionFixer(bulwark::Duration delay = std::chrono::minutes(1))
        : delay_(delay) {}

    std::string id() const override { return "resource-exhaustion"; }

    bulwark::FixResult fix(bulwark::DeadLetter& letter,
                           const bulwark::FixContext& context) override {
        static_cast<void>(letter);
        static_cast<void>(context);
        return bulwark::FixResult::success("capacity freed: redrive after the back-off")
            .after(delay_)
            .tag("fixed-by:resource-exhaustion");
    }

private:
    bulwark::Duration delay_;
};

// A provider's API failed (5xx, an outage): send through another provider. `reroute` maps the
// channel that failed to the channel of the alternative provider; a channel with none is left
// pending (failed) for an operator.
class ExternalApiFixer final : public bulwark::FixStrategy {
public:
    explicit ExternalApiFixer(std::map<std::string, std::string> reroute)
        : reroute_(std::move(reroute)) {}

    std::string id() const override { return "external-api"; }

    bulwark::FixResult fix(bulwark::DeadLetter& letter,
                           const bulwark::FixContext& context) override {
        static_cast<void>(context);
        const std::string failed = failed_channel(letter);
        const auto it = reroute_.find(failed);
        if (it == reroute_.end()) {
            return bulwark::FixResult::failed("no alternative provider for " + failed);
        }
        return bulwark::FixResult::success("rerouted from " + failed + " to " + it->second)
            .via({it->second})
            .tag("fixed-by:external-api");
    }

private:
    std::map<std::string, std::string> reroute_;
};

// The rules that sort failures into the five classes. Specific before general (first match
// wins): a database error mentions "connection refused" too, so its rules come first.
inline void add_seed_rules(bulwark::ErrorClassifier& classifier) {
    using bulwark::ErrorSeverity;
    const bulwark::ErrorClass database{
        database_connection, "infrastructure", ErrorSeverity::critical, {"ours"}};
    const bulwark::ErrorClass network{
        network_timeout, "network", ErrorSeverity::high, {"retryable"}};
    const bulwark::ErrorClass validation{validation_error, "data", ErrorSeverity::low, {"data"}};
    const bulwark::ErrorClass resources{
        resource_exhaustion, "capacity", ErrorSeverity::high, {"retryable"}};
    const bulwark::ErrorClass external{
        external_api_error, "provider", ErrorSeverity::medium, {"provider"}};
    auto by_code = [&](const char* code, const bulwark::ErrorClass& c) {
        bulwark::ErrorRule r;
        r.code = code;
        r.error_class = c;
        classifier.add(r);
    };
    auto by_text = [&](const char* pattern, const bulwark::ErrorClass& c) {
        bulwark::ErrorRule r;
        r.pattern = pattern;
        r.error_class = c;
        classifier.add(r);
    };
    by_code("08001", database);  // SQLSTATE: the client could not connect
    by_code("08006", database);  // SQLSTATE: the connection failed
    by_text("database", database);
    by_code("21211", validation);  // the SMS provider's "invalid 'To' phone number"
    by_text("invalid phone", validation);
    by_text("validation", validation);
    by_code("RESOURCE_EXHAUSTED", resources);
    by_text("quota", resources);
    by_text("queue full", resources);
    by_code("ETIMEDOUT", network);
    by_code("ECONNREFUSED", network);
    by_text("timed out", network);
    by_text("connection refused", network);
    by_text("connection reset", network);
    by_text("service unavailable", external);
    by_text("bad gateway", external);
    by_text("internal server error", external);
    // A letter whose last pass found the provider's breaker still open: the provider failed
    // for longer than the message's retries lasted.
    by_text("circuit breaker", external);
}

// Registers the five seed fixers for their classes. `database_probe` says whether the database
// answers (no probe: never); `reroute` maps a failed channel to another provider's channel.
inline void register_seed_fixers(bulwark::FixRegistry& registry,
                                 std::function<bool()> database_probe = {},
                                 std::map<std::string, std::string> reroute = {},
                                 NetworkTimeoutOptions network = {},
                                 bulwark::Duration resource_delay = std::chrono::minutes(1)) {
    registry.add(std::make_shared<DatabaseConnectionFixer>(std::move(database_probe)),
                 {database_connection});
    registry.add(std::make_shared<NetworkTimeoutFixer>(std::move(network)), {network_timeout});
    registry.add(std::make_shared<ValidationFixer>(), {validation_error});
    registry.add(std::make_shared<ResourceExhaustionFixer>(resource_delay), {resource_exhaustion});
    registry.add(std::make_shared<ExternalApiFixer>(std::move(reroute)), {external_api_error});
}

}  // namespace fixers

#endif  // BULWARK_EXAMPLES_SEED_FIXERS_HPP
