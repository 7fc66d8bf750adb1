// The flagship example: notifications over email, SMS, push and a real webhook through outages.
//
// A DeliveryEngine sends 240 notifications of five kinds over five channels. Email, SMS and push
// are simulated providers with a script of outages, latencies and error kinds (transient,
// permanent, bounced, rate limited with a Retry-After); the webhook is real: it POSTs JSON over
// TCP to a small HTTP receiver this program runs on 127.0.0.1, takes down and brings back. Each
// channel has its own circuit breaker; SMS also a rate limiter and a retry. Everything runs on a
// ManualClock, workers = 0 and a scripted loop: simulated latency and waits move only that clock,
// so the run takes well under a second and prints the same every time (but the receiver's port).
// After the outages the dead letters are classified, fixed by the seed fixers
// (examples/fixers/seed_fixers.hpp) and redriven, and the ledger accounts for every message.
// Exits non-zero when a message is lost or a check fails.
//
// Build and run: cmake -S . -B build/example -DBULWARK_BUILD_TESTS=OFF
//                  -DBULWARK_BUILD_BENCHMARKS=OFF
//                cmake --build build/example --target notification_delivery
//                ./build/example/examples/notification_delivery
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <bulwark/bulwark.hpp>

#include "../fixers/seed_fixers.hpp"
#include "webhook.hpp"

namespace {

using namespace std::chrono_literals;
using bulwark::DeliveryErrorKind;
using bulwark::Duration;

// What is sent. The engine's ids are random; `seq` is the ledger's stable handle for printing.
enum class Kind { receipt, alert, otp, push, webhook };

const char* to_string(Kind kind) {
    switch (kind) {
        case Kind::receipt:
            return "receipt";
        case Kind::alert:
            return "alert";
        case Kind::otp:
            return "otp";
        case Kind::push:
            return "push";
        case Kind::webhook:
            return "webhook";
    }
    return "?";
}

struct Notification {
    int seq = 0;
    Kind kind = Kind::receipt;
    std::string user;
    std::string email;
    std::string phone;
    std::string device;
    std::string text;
};

// Lines of key=value: the payload the queue and the dead letters keep, and the shape the
// validation fixer edits.
std::string encode(const Notification& n) {
    return "seq=" + std::to_string(n.seq) + "\nkind=" + std::to_string(static_cast<int>(n.kind)) +
           "\nuser=" + n.user + "\nemail=" + n.email + "\nphone=" + n.phone +
           "\ndevice=" + n.device + "\ntext=" + n.text + "\n";
}

Notification decode(std::string_view bytes) {
    Notification n;
    while (!bytes.empty()) {
        const std::size_t nl = std::min(bytes.find('\n'), bytes.size());
        const std::string_view line = bytes.substr(0, nl);
        bytes.remove_prefix(std::min(nl + 1, bytes.size()));
        const std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            continue;
        }
        const std::string_view key = line.substr(0, eq);
        const std::string value(line.substr(eq + 1));
        if (key == "seq") {
            n.seq = std::stoi(value);
        } else if (key == "kind") {
            n.kind = static_cast<Kind>(std::stoi(value));
        } else if (key == "user") {
            n.user = value;
        } else if (key == "email") {
            n.email = value;
        } else if (key == "phone") {
            n.phone = value;
        } else if (key == "device") {
            n.device = value;
        } else if (key == "text") {
            n.text = value;
        }
    }
    return n;
}

// A fixed-seed pseudo-random stream (SplitMix64): the same numbers on every platform, unlike
// the standard distributions.
std::uint64_t mix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30U)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27U)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31U);
}

constexpr std::uint64_t run_seed = 20260101;

// "mm:ss.s" of a duration since the start.
std::string clock_text(Duration d) {
    const auto tenths = std::chrono::duration_cast<std::chrono::milliseconds>(d).count() / 100;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%02lld:%02lld.%lld", static_cast<long long>(tenths / 600),
                  static_cast<long long>((tenths / 10) % 60), static_cast<long long>(tenths % 10));
    return buf;
}

std::string ms_text(Duration d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    char buf[32];
    if (ms >= 1000 && ms % 1000 == 0) {
        std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(ms / 1000));
    } else if (ms >= 1000) {
        std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
    } else {
        std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
    }
    return buf;
}

// One scripted provider fault: while [from, to) the channel fails every call this way.
struct Fault {
    std::string channel;
    Duration from;
    Duration to;
    DeliveryErrorKind kind;
    std::string error;
    std::string code;
    Duration retry_after;
    Duration latency;  // of a failing call
    std::string story;
};

// The script: provider faults by time, the receiver's downtime, and the recipients the
// providers refuse whatever the time.
struct Script {
    std::vector<Fault> faults;
    Duration webhook_down_from = 3min;
    Duration webhook_down_to = 6min;

    const Fault* active(std::string_view channel, Duration at) const {
        for (const Fault& f : faults) {
            if (f.channel == channel && at >= f.from && at < f.to) {
                return &f;
            }
        }
        return nullptr;
    }
    bool database_down(Duration at) const {
        for (const Fault& f : faults) {
            if (f.code == "08006" && at >= f.from && at < f.to) {
                return true;
            }
        }
        return false;
    }
};

Script make_script() {
    Script s;
    const std::string db = "template database: connection refused";
    s.faults = {
        {"email", 1min, 3min + 30s, DeliveryErrorKind::transient, "503 service unavailable", "503",
         0s, 2500ms, "mail provider outage: 503 after 2.5 s"},
        {"sms", 2min, 2min + 40s, DeliveryErrorKind::rate_limited, "429 too many requests", "429",
         20s, 120ms, "SMS provider throttles: 429, Retry-After 20 s"},
        {"sms", 5min + 10s, 5min + 30s, DeliveryErrorKind::transient, "502 bad gateway", "502", 0s,
         300ms, "SMS gateway blips: 502"},
        {"sms", 6min + 30s, 9min, DeliveryErrorKind::rate_limited, "account queue full",
         "RESOURCE_EXHAUSTED", 30s, 150ms, "SMS account queue full: retry after 30 s"},
        {"email", 7min, 9min + 30s, DeliveryErrorKind::transient, db, "08006", 0s, 40ms,
         "our template database down: email cannot render"},
        {"push", 7min, 9min + 30s, DeliveryErrorKind::transient, db, "08006", 0s, 40ms,
         "our template database down: push cannot render"},
    };
    return s;
}

// Users 1..60. A few have a phone number the SMS provider refuses (not E.164) and a few a push
// token that no longer exists.
bool bad_phone(int user) {
    return user % 13 == 4;
}
bool dead_token(int user) {
    return user % 17 == 9;
}

Notification make_notification(int seq, Kind kind) {
    const int user = static_cast<int>(mix(run_seed ^ static_cast<std::uint64_t>(seq)) % 60) + 1;
    char id[16];
    std::snprintf(id, sizeof id, "%03d", user);
    Notification n;
    n.seq = seq;
    n.kind = kind;
    n.user = std::string("user-") + id;
    n.email = std::string("user") + id + "@example.com";
    n.phone =
        bad_phone(user) ? std::string("(555) 010-0") + id : std::string("+1555010") + id + "0";
    n.device = std::string(dead_token(user) ? "gone-" : "tok-") + id;
    n.text = std::string(to_string(kind)) + " #" + std::to_string(seq);
    return n;
}

// A simulated provider behind a channel: takes time on the manual clock and fails as the
// script says. Called from the loop's thread only (workers = 0).
class SimulatedProvider {
public:
    SimulatedProvider(std::string channel, std::string provider, Duration latency,
                      const Script& script, bulwark::ManualClock& clock, bulwark::TimePoint start)
        : channel_(std::move(channel)),
          provider_(std::move(provider)),
          latency_(latency),
          script_(script),
          clock_(clock),
          start_(start) {}

    bulwark::Receipt send(const Notification& n) {
        const Duration at = clock_.now() - start_;
        const Fault* fault = script_.active(channel_, at);
        ++calls_;
        // Latency between 1x and 2x the base, from the seeded stream.
        const auto jitter = static_cast<Duration::rep>(
            mix(run_seed ^ (calls_ * 1000003ULL) ^ std::hash<std::string>{}(channel_)) %
            static_cast<std::uint64_t>(latency_.count()));
        clock_.advance(fault != nullptr ? fault->latency : latency_ + Duration(jitter));
        if (fault != nullptr) {
            throw bulwark::DeliveryError(fault->kind, fault->error, fault->code,
                                         fault->retry_after);
        }
        if (channel_ == "sms" && (n.phone.empty() || n.phone.front() != '+')) {
            throw bulwark::DeliveryError(DeliveryErrorKind::permanent, "invalid 'To' phone number",
                                         "21211");
        }
        if (channel_ == "push" && n.device.rfind("gone-", 0) == 0) {
            throw bulwark::DeliveryError(DeliveryErrorKind::bounced, "device token unregistered",
                                         "UNREGISTERED");
        }
        return {provider_, provider_ + "-" + std::to_string(calls_), 0.0, false};
    }

private:
    std::string channel_;
    std::string provider_;
    Duration latency_;
    const Script& script_;
    bulwark::ManualClock& clock_;
    bulwark::TimePoint start_;
    std::uint64_t calls_ = 0;
};

// The webhook channel: a real HTTP POST to the receiver. The simulated part is only the time it
// takes on the manual clock (the real exchange takes microseconds and is not timed, so that
// the statistics stay the same from run to run).
class WebhookAdapter {
public:
    WebhookAdapter(webhook::Receiver& receiver, bulwark::ManualClock& clock)
        : receiver_(receiver), clock_(clock) {}

    bulwark::Receipt send(const Notification& n, bulwark::Context& ctx) {
        clock_.advance(35ms + Duration(static_cast<Duration::rep>(n.seq % 7) * 1000000));
        const std::string json = R"({"event":"notification","user":)" +
                                 webhook::json_string(n.user) + R"(,"text":)" +
                                 webhook::json_string(n.text) + "}";
        const webhook::Response r =
            webhook::post_json(receiver_.port(), "/hooks/notifications", json, ctx.operation());
        if (r.status == 429) {
            const Duration wait = std::chrono::seconds(std::atoi(r.retry_after.c_str()));
            throw bulwark::DeliveryError(DeliveryErrorKind::rate_limited, "webhook: 429", "429",
                                         wait);
        }
        if (r.status >= 500) {
            throw bulwark::DeliveryError(DeliveryErrorKind::transient,
                                         "webhook: HTTP " + std::to_string(r.status),
                                         std::to_string(r.status));
        }
        if (r.status < 200 || r.status > 299) {
            throw bulwark::DeliveryError(DeliveryErrorKind::permanent,
                                         "webhook: HTTP " + std::to_string(r.status),
                                         std::to_string(r.status));
        }
        return {"partner-hook", r.body, 0.0, true};
    }

private:
    webhook::Receiver& receiver_;
    bulwark::ManualClock& clock_;
};

// A breaker counts only what says the provider is unwell: a transient failure of its own. An
// invalid number, a bounce or a 429 is about the message or the pace, and our template
// database being down is ours: none of them says anything about the provider's health.
bool provider_failure(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const bulwark::DeliveryError& e) {
        return (e.kind() == DeliveryErrorKind::transient ||
                e.kind() == DeliveryErrorKind::unknown) &&
               e.code() != "08006";
    } catch (...) {
        return true;
    }
}

bulwark::CircuitBreakerOptions breaker_options() {
    bulwark::CircuitBreakerOptions o;
    o.failure_threshold = 3;
    o.failure_ratio = 0.0;
    o.break_duration = 30s;
    o.half_open_calls = 1;
    o.handle_if(provider_failure);
    return o;
}

// Events of one step of the loop, printed in time order, a message's events grouped with
// others' when they read the same.
class Timeline {
public:
    explicit Timeline(bulwark::TimePoint start) : start_(start) {}

    void add(bulwark::TimePoint at, std::string text, int seq = 0) {
        for (Entry& e : entries_) {
            if (seq != 0 && e.text == text && !e.seqs.empty()) {
                e.seqs.push_back(seq);
                return;
            }
        }
        Entry e{at - start_, std::move(text), {}};
        if (seq != 0) {
            e.seqs.push_back(seq);
        }
        entries_.push_back(std::move(e));
    }

    void flush() {
        std::stable_sort(entries_.begin(), entries_.end(),
                         [](const Entry& a, const Entry& b) { return a.at < b.at; });
        for (const Entry& e : entries_) {
            std::string who;
            for (std::size_t i = 0; i < e.seqs.size(); ++i) {
                if (i == 6 && e.seqs.size() > 8) {
                    who += " ... #" + std::to_string(e.seqs.back()) + " (" +
                           std::to_string(e.seqs.size()) + ")";
                    break;
                }
                who += " #" + std::to_string(e.seqs[i]);
            }
            std::printf("  %s %s%s%s\n", clock_text(e.at).c_str(), who.c_str(),
                        who.empty() ? "" : ": ", e.text.c_str());
        }
        entries_.clear();
    }

private:
    struct Entry {
        Duration at;
        std::string text;
        std::vector<int> seqs;
    };
    bulwark::TimePoint start_;
    std::vector<Entry> entries_;
};

// "email 503", "sms skipped (breaker open)", "sms 429 x2" ... for the attempts of one pass.
std::string describe(const std::vector<bulwark::DeliveryAttempt>& pass,
                     const std::vector<Duration>& retry_delays) {
    std::string out;
    for (std::size_t i = 0; i < pass.size(); ++i) {
        const bulwark::DeliveryAttempt& a = pass[i];
        std::string what;
        if (a.ok) {
            what = a.channel + " ok";
        } else if (a.skipped == bulwark::FallbackReason::unavailable) {
            what = a.channel + " skipped (breaker open)";
        } else if (a.skipped == bulwark::FallbackReason::rate_limited) {
            what = a.channel + " skipped (our rate limit)";
        } else if (a.skipped != bulwark::FallbackReason::none) {
            what = a.channel + " skipped (" + bulwark::to_string(a.skipped) + ")";
        } else {
            what = a.channel + " " + (a.code.empty() ? bulwark::to_string(a.kind) : a.code);
            std::size_t same = 1;
            while (i + 1 < pass.size() && !pass[i + 1].ok && pass[i + 1].channel == a.channel &&
                   pass[i + 1].code == a.code && pass[i + 1].skipped == a.skipped) {
                ++same;
                ++i;
            }
            if (same > 1) {
                what += " x" + std::to_string(same);
                if (!retry_delays.empty()) {
                    what += " (retried after";
                    for (std::size_t r = 0; r < retry_delays.size(); ++r) {
                        what += (r == 0 ? " " : ", ") + ms_text(retry_delays[r]);
                    }
                    what += ")";
                }
            }
        }
        out += (out.empty() ? "" : ", ") + what;
    }
    return out;
}

// The tags a DeliveryEngine puts on its letters: "message:<id>" and "route:<a,b>".
std::string tag_value(const bulwark::DeadLetter& d, std::string_view prefix) {
    for (const std::string& t : d.tags) {
        if (t.rfind(prefix, 0) == 0) {
            return t.substr(prefix.size());
        }
    }
    return {};
}

std::vector<std::string> route_of(Kind kind) {
    switch (kind) {
        case Kind::receipt:
            return {"email"};  // email has no rule: email only
        case Kind::alert:
            return {"email", "sms", "push"};  // exactly these, in this order
        case Kind::otp:
            return {"sms"};  // a one-time code: SMS only
        case Kind::push:
            return {"push"};  // push's rule falls back to email
        case Kind::webhook:
            return {"webhook"};
    }
    return {};
}

Kind kind_of(int seq) {
    static const Kind cycle[10] = {Kind::receipt, Kind::alert, Kind::otp, Kind::receipt,
                                   Kind::push,    Kind::alert, Kind::otp, Kind::receipt,
                                   Kind::webhook, Kind::alert};
    return cycle[static_cast<std::size_t>(seq) % 10];
}

bool check(bool ok, const char* what, int& failures) {
    std::printf("  [%s] %s\n", ok ? "ok" : "FAILED", what);
    failures += ok ? 0 : 1;
    return ok;
}

}  // namespace

int main() {
    bulwark::ManualClock clock;
    const bulwark::TimePoint start = clock.now();
    const bulwark::WallTime wall_start = clock.wall_now();
    const Script script = make_script();
    int failures = 0;

    constexpr int regular = 216;  // one every 2.5 s for 9 minutes
    constexpr int storm = 24;     // a login storm of one-time codes at 04:00
    constexpr Duration storm_at = 4min;

    std::printf("bulwark flagship: notification delivery through provider outages\n\n");
    std::printf("scenario (simulated time, seed %llu):\n",
                static_cast<unsigned long long>(run_seed));
    std::printf(
        "  %d notifications, one every 2.5 s from 00:00 to 09:00, plus %d one-time "
        "codes at once at %s\n",
        regular, storm, clock_text(storm_at).c_str());
    std::printf(
        "  routes: receipt -> email only; alert -> email, sms, push; otp -> sms only;\n"
        "          push -> push, then email (a FallbackRule); webhook -> webhook only\n");
    std::printf(
        "  channels: email (mail-sim, 120 ms), sms (sms-sim, 250 ms, our limit 1/s "
        "burst 5, 2 quick retries),\n"
        "            push (push-sim, 60 ms), email-backup (ses-sim, 150 ms, used by "
        "the fixers), webhook (real HTTP)\n");
    std::printf("  each channel: breaker opens after 3 provider failures in a row, 30 s break\n");
    std::printf(
        "  engine: 4 passes per message, next pass after 15 s, 30 s, 60 s (or the "
        "provider's Retry-After)\n");
    // The faults and the receiver's downtime, in the order they begin.
    std::vector<std::pair<Duration, std::string>> faults;
    char line[160];
    for (const Fault& f : script.faults) {
        std::snprintf(line, sizeof line, "%s-%s  %-6s %s [%s]", clock_text(f.from).c_str(),
                      clock_text(f.to).c_str(), f.channel.c_str(), f.story.c_str(),
                      bulwark::to_string(f.kind));
        faults.emplace_back(f.from, line);
    }
    std::snprintf(line, sizeof line,
                  "%s-%s  webhook receiver down: its listening socket closed, connects refused "
                  "[transient]",
                  clock_text(script.webhook_down_from).c_str(),
                  clock_text(script.webhook_down_to).c_str());
    faults.emplace_back(script.webhook_down_from, line);
    std::stable_sort(faults.begin(), faults.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& fault : faults) {
        std::printf("  %s\n", fault.second.c_str());
    }
    std::printf(
        "  always   sms refuses numbers not in E.164 [permanent, code 21211]; push "
        "refuses dead tokens [bounced]\n\n");

    webhook::Receiver receiver;
    receiver.up();
    const std::uint16_t port = receiver.port();
    std::printf("webhook receiver listening on 127.0.0.1:%u\n\n", static_cast<unsigned>(port));

    // The engine, on the manual clock, driven by this loop (no workers).
    bulwark::FallbackRules rules;
    rules.set("push", {{"email"}, bulwark::Selection::priority, 0});
    bulwark::DeliveryEngineOptions options;
    options.name = "notifications";
    options.workers = 0;
    options.max_passes = 4;
    options.backoff = bulwark::Backoff::exponential(15s).max_delay(2min);
    options.stats_window = 2h;
    bulwark::InMemoryDeadLetterStore dead_letters(10000, clock);
    bulwark::DeliveryEngine<Notification> engine(rules, dead_letters, options, clock);
    engine.codec(encode, decode);

    Timeline timeline(start);
    SimulatedProvider email("email", "mail-sim", 120ms, script, clock, start);
    SimulatedProvider sms("sms", "sms-sim", 250ms, script, clock, start);
    SimulatedProvider push("push", "push-sim", 60ms, script, clock, start);
    SimulatedProvider backup("email-backup", "ses-sim", 150ms, script, clock, start);
    WebhookAdapter hook(receiver, clock);

    std::vector<std::unique_ptr<bulwark::CircuitBreaker>> breakers;
    auto channel_options = [&](const std::string& name, double cost) {
        breakers.push_back(
            std::make_unique<bulwark::CircuitBreaker>(name, breaker_options(), clock));
        breakers.back()->on_state_change([&](const bulwark::StateChange& c) {
            timeline.add(c.at, std::string(c.breaker) + " breaker " + bulwark::to_string(c.from) +
                                   " -> " + bulwark::to_string(c.to) + " (" +
                                   bulwark::to_string(c.reason) + ")");
        });
        bulwark::ChannelOptions o;
        o.breaker = breakers.back().get();
        o.cost = cost;
        return o;
    };

    // SMS: our own send cap, and two quick retries of a transient failure within a pass.
    bulwark::RateLimiter sms_limiter("sms", bulwark::TokenBucket{1.0, 5}, clock);
    std::map<std::string, std::vector<Duration>> retry_delays;  // by message id, this step
    bulwark::RetryOptions sms_retry_options;
    sms_retry_options.max_retries = 2;
    sms_retry_options.backoff = bulwark::Backoff::exponential(200ms);
    sms_retry_options.retry_if([](const std::exception_ptr& e) {
        try {
            std::rethrow_exception(e);
        } catch (const bulwark::DeliveryError& d) {
            return d.kind() == DeliveryErrorKind::transient;
        } catch (...) {
            return false;
        }
    });
    sms_retry_options.on_retry([&](const bulwark::RetryEvent& r) {
        retry_delays[std::string(r.operation)].push_back(r.delay);
    });
    bulwark::RetryPolicy sms_retry("sms", sms_retry_options, run_seed, clock);

    bulwark::ChannelOptions email_o = channel_options("email", 0.0004);
    bulwark::ChannelOptions sms_o = channel_options("sms", 0.0079);
    sms_o.limiter = &sms_limiter;
    sms_o.retry = &sms_retry;
    bulwark::ChannelOptions push_o = channel_options("push", 0.0001);
    bulwark::ChannelOptions backup_o = channel_options("email-backup", 0.0010);
    bulwark::ChannelOptions hook_o = channel_options("webhook", 0.0);
    engine.add_channel("email", email, email_o);
    engine.add_channel("sms", sms, sms_o);
    engine.add_channel("push", push, push_o);
    engine.add_channel("email-backup", backup, backup_o);
    engine.add_channel("webhook", hook, hook_o);

    // Status changes of this step, in order: the loop describes them after run_due().
    std::vector<std::string> changed;
    engine.on_status([&](const bulwark::StatusChange& c) {
        if (c.to != bulwark::MessageStatus::sending) {
            changed.emplace_back(c.id);
        }
    });

    std::map<std::string, int> seq_of;  // engine id -> seq
    std::map<int, Kind> kind_by_seq;
    std::vector<std::pair<int, std::string>> submitted;  // seq, engine id
    std::size_t first_try = 0;

    auto describe_changes = [&]() {
        std::vector<std::string> seen;
        for (const std::string& id : changed) {
            if (std::find(seen.begin(), seen.end(), id) == seen.end()) {
                seen.push_back(id);
            }
        }
        changed.clear();
        for (const std::string& id : seen) {
            const std::optional<bulwark::MessageInfo> info = engine.info(id);
            if (!info || info->status == bulwark::MessageStatus::sending) {
                continue;
            }
            const std::vector<bulwark::DeliveryAttempt> all = engine.attempts(id);
            if (all.empty()) {
                continue;  // queued by submit or a redrive, not tried yet
            }
            // The last pass: the trailing attempts of its number. A redrive numbers afresh, so
            // the walk back also stops where the attempt numbers stop falling.
            const std::uint32_t last = all.back().pass;
            std::size_t first = all.size() - 1;
            while (first > 0 && all[first - 1].pass == last &&
                   all[first - 1].number < all[first].number) {
                --first;
            }
            const std::vector<bulwark::DeliveryAttempt> pass(
                all.begin() + static_cast<std::ptrdiff_t>(first), all.end());
            const int seq = seq_of[id];
            const std::string kind = to_string(kind_by_seq[seq]);
            const std::string what = describe(pass, retry_delays[id]);
            const bulwark::TimePoint at = start + (pass.front().at - wall_start);
            if (info->status == bulwark::MessageStatus::sent ||
                info->status == bulwark::MessageStatus::delivered) {
                const bool again = !info->dead_letter_id.empty();
                if (pass.size() == 1 && last == 1 && !again) {
                    ++first_try;
                    continue;
                }
                std::string note = last > 1 ? " (pass " + std::to_string(last) + ")" : "";
                note += again ? " (redriven)" : "";
                timeline.add(at, kind + ": " + what + note, seq);
            } else if (info->status == bulwark::MessageStatus::queued) {
                const std::optional<bulwark::QueuedMessage> q = engine.queue().get(id);
                const Duration wait = q ? q->due - pass.front().at : Duration::zero();
                timeline.add(at, kind + ": " + what + " -> next pass in " + ms_text(wait), seq);
            } else if (info->status == bulwark::MessageStatus::dead_lettered) {
                const std::optional<bulwark::DeadLetter> d = dead_letters.get(info->dead_letter_id);
                timeline.add(at,
                             kind + ": " + what + " -> DEAD LETTER (" +
                                 (d ? bulwark::to_string(d->reason) : "?") + ")",
                             seq);
            }
        }
        retry_delays.clear();
        timeline.flush();
    };

    auto submit = [&](int seq, Kind kind) {
        const Notification n = make_notification(seq, kind);
        const std::string id = engine.submit(n, route_of(kind));
        seq_of[id] = seq;
        kind_by_seq[seq] = kind;
        submitted.emplace_back(seq, id);
    };

    // The scripted loop: every 500 ms of simulated time, apply the script, submit what is due
    // and make the passes that are due.
    std::printf("timeline (mm:ss.s; first-try sends are not listed):\n");
    std::set<std::string> announced;
    int next_seq = 1;
    bool storm_done = false;
    bool hook_down = false;
    Duration minute_mark = 1min;
    for (int step = 0;; ++step) {
        const bulwark::TimePoint target = start + step * Duration(500ms);
        if (clock.now() < target) {
            clock.set(target);
        }
        const Duration at = clock.now() - start;
        for (const Fault& f : script.faults) {
            const std::string begin = f.channel + " " + f.code + " begins";
            const std::string end = f.channel + " " + f.code + " ends";
            if (at >= f.from && announced.insert(begin).second) {
                timeline.add(start + f.from, "-- " + f.channel + ": " + f.story);
            }
            if (at >= f.to && announced.insert(end).second) {
                timeline.add(start + f.to, "-- " + f.channel + ": over (" + f.code + ")");
            }
        }
        if (!hook_down && at >= script.webhook_down_from && at < script.webhook_down_to) {
            receiver.down();
            hook_down = true;
            timeline.add(start + script.webhook_down_from,
                         "-- webhook receiver down: listening socket closed");
        } else if (hook_down && at >= script.webhook_down_to) {
            receiver.up();
            hook_down = false;
            timeline.add(
                start + script.webhook_down_to,
                std::string("-- webhook receiver back up") +
                    (receiver.port() == port ? " on the same port"
                                             : " on another port (the old one was taken)"));
        }
        while (next_seq <= regular && Duration(2500ms) * (next_seq - 1) <= at) {
            submit(next_seq, kind_of(next_seq));
            ++next_seq;
        }
        if (!storm_done && at >= storm_at) {
            storm_done = true;
            timeline.add(start + storm_at, "-- login storm: " + std::to_string(storm) +
                                               " one-time codes submitted at once");
            for (int i = 0; i < storm; ++i) {
                submit(regular + 1 + i, Kind::otp);
            }
        }
        if (at >= minute_mark) {
            const bulwark::DeliveryStats s = engine.stats();
            const std::size_t sent_now =
                s.by_status[static_cast<std::size_t>(bulwark::MessageStatus::sent)] +
                s.by_status[static_cast<std::size_t>(bulwark::MessageStatus::delivered)];
            timeline.add(start + minute_mark,
                         "== " + std::to_string(submitted.size()) + " submitted: " +
                             std::to_string(sent_now) + " sent, " + std::to_string(s.queued) +
                             " waiting, " + std::to_string(dead_letters.size()) + " dead letters");
            minute_mark += 1min;
        }
        engine.run_due();
        describe_changes();
        if (next_seq > regular && storm_done && engine.queue().size() == 0 && !hook_down) {
            break;
        }
        if (at > 60min) {
            check(false, "the queue emptied within an hour of simulated time", failures);
            break;
        }
    }
    const Duration quiet = clock.now() - start;
    std::printf("  %s all queues empty; %zu sent on the first try\n\n", clock_text(quiet).c_str(),
                first_try);

    // Per channel: what the providers saw during the outages.
    auto print_stats = [&](const char* title) {
        const bulwark::DeliveryStats s = engine.stats();
        std::printf("%s\n", title);
        std::printf("  %-13s %8s %6s %8s %9s %9s %9s %10s\n", "channel", "attempts", "sent",
                    "success", "mean", "p95", "cost", "fallbacks");
        auto row = [](const bulwark::ChannelDeliveryStats& c, const char* name) {
            char fallbacks[32];
            std::snprintf(fallbacks, sizeof fallbacks, "%llu/%llu",
                          static_cast<unsigned long long>(c.successful_fallbacks),
                          static_cast<unsigned long long>(c.fallbacks));
            std::printf("  %-13s %8llu %6llu %7.1f%% %9s %9s %9.4f %10s\n", name,
                        static_cast<unsigned long long>(c.attempts),
                        static_cast<unsigned long long>(c.successes), c.success_rate * 100.0,
                        ms_text(c.mean_response).c_str(), ms_text(c.p95_response).c_str(), c.cost,
                        fallbacks);
        };
        for (const bulwark::ChannelDeliveryStats& c : s.channels) {
            row(c, c.channel.c_str());
        }
        row(s.overall, "all");
        std::printf(
            "  (fallbacks: sent / tried after another channel of the same pass failed)\n\n");
    };
    print_stats("per channel, the outages:");

    // The dead letters, by error class: two rules of this application's first (first match
    // wins), then the seed rules. A webhook letter whose last pass found the breaker open is a
    // network matter here: the receiver is ours to bring back.
    bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
    bulwark::ErrorRule unreachable;
    unreachable.code = "UNREGISTERED";
    unreachable.error_class = {"recipient_unreachable", "data", bulwark::ErrorSeverity::low, {}};
    classifier.add(unreachable);
    bulwark::ErrorRule hook_open;
    hook_open.channel = "webhook";
    hook_open.pattern = "circuit breaker";
    hook_open.error_class = {
        fixers::network_timeout, "network", bulwark::ErrorSeverity::high, {"retryable"}};
    classifier.add(hook_open);
    fixers::add_seed_rules(classifier);

    const std::vector<bulwark::DeadLetter> letters =
        dead_letters.list(bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending));
    std::map<std::string, std::pair<std::vector<int>, std::string>> by_class;
    {
        bulwark::ErrorClassifier preview(bulwark::redact_defaults());
        preview.replace(classifier.rules());
        for (const bulwark::DeadLetter& d : letters) {
            const bulwark::Classification c = preview.classify(d);
            auto& entry = by_class[c.error_class.name];
            entry.first.push_back(seq_of[tag_value(d, "message:")]);
            entry.second = c.error;
        }
    }
    std::printf("dead letters: %zu, by error class (with the last one's error)\n", letters.size());
    for (const auto& [name, entry] : by_class) {
        std::string who;
        for (const int s : entry.first) {
            who += " #" + std::to_string(s);
        }
        std::printf("  %-21s %2zu:%s\n  %21s     \"%s\"\n", name.c_str(), entry.first.size(),
                    who.c_str(), "", entry.second.c_str());
    }

    // Fix and redrive, once every provider is back. A fix that edited the payload (the
    // validation fixer) is redriven with the new payload under the message's own id.
    std::printf("\nredrive at %s: every provider is back; bulk fix by the on-call operator\n",
                clock_text(clock.now() - start).c_str());
    bulwark::FixRegistry registry;
    fixers::NetworkTimeoutOptions network;
    network.delay = 10s;
    fixers::register_seed_fixers(
        registry, [&] { return !script.database_down(clock.now() - start); },
        {{"email", "email-backup"}, {"push", "email-backup"}}, network, 30s);
    bulwark::FixOrchestratorOptions fix_options;
    fix_options.max_fixes_per_second = 20;
    bulwark::FixOrchestrator fixes(dead_letters, classifier, registry,
                                   bulwark::redrive_through(engine), fix_options, clock);
    const bulwark::BulkFixResult fixed = fixes.bulk_fix(bulwark::DeadLetterQuery{}, "on-call");
    {
        std::vector<std::pair<std::string, std::vector<int>>> lines;
        for (const bulwark::LetterFix& f : fixed.letters) {
            const int seq = seq_of[tag_value(*dead_letters.get(f.dead_letter_id), "message:")];
            const std::string text =
                f.error_class + " -> " + (f.fixer_id.empty() ? "no fixer" : f.fixer_id) + ": " +
                bulwark::to_string(f.result.outcome) + ", " + f.result.message +
                (f.result.delay > Duration::zero() ? " (after " + ms_text(f.result.delay) + ")"
                                                   : std::string()) +
                (f.redriven ? ", redriven" : "");
            auto it = std::find_if(lines.begin(), lines.end(),
                                   [&](const auto& l) { return l.first == text; });
            if (it == lines.end()) {
                lines.push_back({text, {seq}});
            } else {
                it->second.push_back(seq);
            }
        }
        for (const auto& [text, seqs] : lines) {
            std::string who;
            for (const int s : seqs) {
                who += " #" + std::to_string(s);
            }
            std::printf(" %s: %s\n", who.c_str(), text.c_str());
        }
    }
    std::printf(
        "  bulk fix: %zu letters, %zu fixed, %zu failed, %zu without a fixer; %zu "
        "redriven\n",
        fixed.matched, fixed.count(bulwark::FixOutcome::success),
        fixed.count(bulwark::FixOutcome::failed), fixed.count(bulwark::FixOutcome::skipped),
        fixed.redriven);

    // What no fixer takes is the operator's: a dead push token cannot be fixed by resending.
    const std::size_t dismissed =
        dead_letters.dismiss(bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending),
                             "recipient unreachable: the device must register again");
    std::printf("  dismissed by the operator: %zu (no fixer: the recipient must act)\n", dismissed);

    for (const bulwark::FixerStats& s : fixes.stats()) {
        std::printf("  fixer %-20s %2llu runs, %3.0f%% success, alert %s\n", s.fixer_id.c_str(),
                    static_cast<unsigned long long>(s.executions), s.success_rate * 100.0,
                    bulwark::to_string(s.level));
    }

    // The redriven messages go out now.
    const bool drained = engine.drain(30min);
    describe_changes();
    std::printf("  redrive drained at %s: %s\n\n", clock_text(clock.now() - start).c_str(),
                drained ? "queue empty" : "NOT EMPTY");
    print_stats("per channel, the whole run:");

    // The ledger: every message submitted, and where it ended.
    std::printf("checks:\n");
    std::size_t sent = 0;
    std::size_t after_fix = 0;
    std::size_t parked = 0;
    std::size_t lost = 0;
    std::vector<int> lost_seqs;
    std::size_t webhook_sent = 0;
    const std::set<std::string> keys = receiver.keys();
    bool webhook_received = true;
    for (const auto& [seq, id] : submitted) {
        const std::optional<bulwark::MessageInfo> info = engine.info(id);
        const bool is_sent = info && (info->status == bulwark::MessageStatus::sent ||
                                      info->status == bulwark::MessageStatus::delivered);
        bool accounted = false;
        if (is_sent) {
            ++sent;
            after_fix += !info->dead_letter_id.empty() ? 1U : 0U;
            if (info->channel == "webhook") {
                ++webhook_sent;
                webhook_received = webhook_received && keys.count(id) == 1;
            }
        } else if (info && info->status == bulwark::MessageStatus::dead_lettered) {
            // Accounted only with its letter in the store, dismissed (an operator's decision)
            // or still pending.
            const std::optional<bulwark::DeadLetter> d = dead_letters.get(info->dead_letter_id);
            accounted = d.has_value() && d->status != bulwark::DeadLetterStatus::reprocessed;
            parked += accounted ? 1 : 0;
        }
        if (!is_sent && !accounted) {
            ++lost;
            lost_seqs.push_back(seq);
        }
    }
    check(drained && engine.queue().size() == 0, "nothing left in the queue", failures);
    check(dead_letters.list(bulwark::DeadLetterQuery{}.status(bulwark::DeadLetterStatus::pending))
              .empty(),
          "no dead letter left pending: each was fixed and redriven, or dismissed", failures);
    check(webhook_received && receiver.accepted() == webhook_sent,
          "the receiver got each webhook message the engine counts as sent, once", failures);
    std::set<std::string> classes_fixed;
    for (const bulwark::LetterFix& f : fixed.letters) {
        if (f.result.outcome == bulwark::FixOutcome::success && f.redriven) {
            classes_fixed.insert(f.error_class);
        }
    }
    check(classes_fixed.size() == 5, "each of the five seed fixers fixed and redrove a letter",
          failures);
    check(submitted.size() == static_cast<std::size_t>(regular) + static_cast<std::size_t>(storm),
          "every notification of the scenario was submitted", failures);
    for (const int seq : lost_seqs) {
        std::printf("  LOST #%d\n", seq);
    }
    std::printf(
        "ledger: %zu submitted, %zu sent (%zu after a fix and redrive), %zu "
        "dismissed/dead-lettered, %zu lost\n",
        submitted.size(), sent, after_fix, parked, lost);
    receiver.down();
    return lost == 0 && failures == 0 ? 0 : 1;
}
