// The admin console over cpp-httplib: an AdminHandler mounted on an HTTP server, in front of a
// DeliveryEngine that sends simulated traffic over email, SMS and push adapters that fail now and
// then (and a RetryQueue of webhooks), so that dead letters pile up for an operator to triage in
// the browser. It also wires an ErrorClassifier, a FixOrchestrator with a RedriveFixer, the
// channels' circuit breakers in a registry, a Degradation, a HealthMonitor and a
// ResourceManager.
//
// Build and run (needs libcpp-httplib-dev):
//   cmake --preset dev && cmake --build --preset dev --target admin_console
//   ./build/dev/examples/admin_console/admin_console --seed-demo
// then open the printed address and paste the printed token. Options:
//   --port N          listen on 127.0.0.1:N (default 8080; 0 = any free port)
//   --token T         the operator token, at least 16 bytes (default: a random one, printed)
//   --seed-demo       add 24 fixed dead letters to the store at start
//   --exit-after S    stop after S seconds
// It listens on 127.0.0.1 only: the console can change breakers and dead letters.
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <httplib.h>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <bulwark/admin.hpp>
#include <bulwark/bulwark.hpp>

namespace {

using namespace std::chrono_literals;

volatile std::sig_atomic_t interrupted = 0;

extern "C" void on_signal(int) {
    interrupted = 1;
}

struct Options {
    int port = 8080;
    std::string token;
    bool seed_demo = false;
    double exit_after = 0;  // seconds; 0 = run until interrupted
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "admin_console: %s\n"
                 "usage: admin_console [--port N] [--token T] [--seed-demo] [--exit-after S]\n",
                 why);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    const std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        const bool has_value = i + 1 < args.size();
        try {
            if (a == "--port" && has_value) {
                o.port = std::stoi(args[++i]);
                if (o.port < 0 || o.port > 65535) {
                    usage("--port must be in [0, 65535]");
                }
            } else if (a == "--token" && has_value) {
                o.token = args[++i];
                if (o.token.size() < bulwark::AdminOptions::min_token_bytes) {
                    usage("--token must be at least 16 bytes");
                }
            } else if (a == "--exit-after" && has_value) {
                o.exit_after = std::stod(args[++i]);
            } else if (a == "--seed-demo") {
                o.seed_demo = true;
            } else {
                usage(("unknown or incomplete option " + a).c_str());
            }
        } catch (const std::logic_error&) {  // stoi/stod: not a number
            usage(("not a number after " + a).c_str());
        }
    }
    return o;
}

// 32 hex digits from the system's random source.
std::string random_token() {
    std::random_device device;
    std::string token;
    for (int i = 0; i < 4; ++i) {
        char part[9];
        std::snprintf(part, sizeof part, "%08x", static_cast<unsigned>(device()));
        token += part;
    }
    return token;
}

// A simulated provider: takes most messages, fails some with a provider's error. Thread-safe
// (the engine's workers call it at once).
class SimulatedProvider {
public:
    struct Failure {
        double probability;
        bulwark::DeliveryErrorKind kind;
        std::string text;
        std::string code;
    };

    SimulatedProvider(std::string channel, std::vector<Failure> failures, unsigned seed)
        : channel_(std::move(channel)), failures_(std::move(failures)), rng_(seed) {}

    bulwark::Receipt send(const std::string& message) {
        double roll = 0;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            roll = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
            ++sent_;
        }
        for (const Failure& f : failures_) {
            if (roll < f.probability) {
                throw bulwark::DeliveryError(f.kind, f.text, f.code);
            }
            roll -= f.probability;
        }
        return bulwark::Receipt{channel_ + "-provider",
                                channel_ + "-" + std::to_string(message.size()), 0.001, false};
    }

private:
    std::string channel_;
    std::vector<Failure> failures_;
    std::mutex mutex_;
    std::mt19937 rng_;
    std::uint64_t sent_ = 0;
};

// Dead letters with fixed ids and texts, as the engine would have stored them (its tags make
// them redrivable), including two whose error text is markup: the console shows it as text.
void seed_demo(bulwark::DeadLetterStore& store, bulwark::WallTime now) {
    struct Seed {
        const char* type;
        const char* error;
        const char* category;
        bulwark::DeadLetterReason reason;
    };
    const Seed seeds[] = {
        {"email", "smtp 503 service unavailable", "provider",
         bulwark::DeadLetterReason::retries_exhausted},
        {"sms", "invalid number (code 21211)", "data", bulwark::DeadLetterReason::not_retryable},
        {"push", "connect timed out after 2s", "infrastructure",
         bulwark::DeadLetterReason::retries_exhausted},
        {"email", "<script>alert(1)</script>", "", bulwark::DeadLetterReason::rejected},
        {"sms", "monthly quota exceeded for account 4471", "provider",
         bulwark::DeadLetterReason::retries_exhausted},
        {"push", "<img src=x onerror=alert(1)>", "", bulwark::DeadLetterReason::rejected},
    };
    constexpr int count = 24;
    for (int i = 0; i < count; ++i) {
        const Seed& s = seeds[i % 6];
        char id[16];
        std::snprintf(id, sizeof id, "demo-%02d", i + 1);
        bulwark::DeadLetter d;
        d.id = id;
        d.type = s.type;
        d.payload = "{\"to\":\"customer-" + std::to_string(i + 1) +
                    "@example.com\",\"body\":\"Order " + std::to_string(1000 + i) +
                    " has shipped\"}";
        d.error = s.error;
        d.reason = s.reason;
        // The first six are not triaged yet (as letters arrive); the markup letters never are.
        if (i >= 6) {
            d.category = s.category;
        }
        d.tags = {"engine:delivery", std::string("message:") + id, std::string("route:") + s.type,
                  "generation:0"};
        d.attempts.push_back({now, s.type, s.error});
        store.add(d);
    }
}

}  // namespace

int main(int argc, char** argv) {
    Options opts = parse(argc, argv);
    const bool generated_token = opts.token.empty();
    if (generated_token) {
        opts.token = random_token();
    }
    bulwark::Clock& clock = bulwark::default_clock();

    // The channels' breakers, in a registry the console lists.
    bulwark::CircuitBreakerOptions breaker_options;
    breaker_options.failure_threshold = 5;
    breaker_options.break_duration = 15s;
    bulwark::CircuitBreakerRegistry breakers(breaker_options, clock);

    // Providers that fail now and then, each in its own way.
    using Kind = bulwark::DeliveryErrorKind;
    SimulatedProvider email("email", {{0.15, Kind::transient, "smtp 503 service unavailable", ""}},
                            1);
    SimulatedProvider sms("sms",
                          {{0.10, Kind::permanent, "invalid number", "21211"},
                           {0.10, Kind::transient, "gateway timed out", ""}},
                          2);
    SimulatedProvider push("push", {{0.25, Kind::transient, "connect timed out after 2s", ""}}, 3);

    bulwark::InMemoryDeadLetterStore dead_letters(10000, clock);
    if (opts.seed_demo) {
        seed_demo(dead_letters, clock.wall_now());
    }

    // Each message goes to its channel only (no fallback), at most two passes 2 s apart: a
    // failure becomes a dead letter within seconds.
    bulwark::DeliveryEngineOptions engine_options;
    engine_options.workers = 2;
    engine_options.max_passes = 2;
    engine_options.backoff = bulwark::Backoff::fixed(2s);
    bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dead_letters,
                                                engine_options, clock);
    for (auto& [name, provider] : {std::pair<const char*, SimulatedProvider*>{"email", &email},
                                   {"sms", &sms},
                                   {"push", &push}}) {
        bulwark::ChannelOptions channel;
        channel.breaker = &breakers.get(name);
        engine.add_channel(name, *provider, channel);
    }

    // Webhooks go through a RetryQueue: tried three times, 1 s apart, then dead-lettered.
    SimulatedProvider webhook_endpoint("webhook",
                                       {{0.5, Kind::transient, "webhook 502 bad gateway", ""}}, 4);
    bulwark::RetryOptions webhook_retry;
    webhook_retry.max_retries = 2;
    webhook_retry.backoff = bulwark::Backoff::fixed(1s);
    bulwark::RetryQueueOptions webhook_options;
    webhook_options.workers = 1;
    webhook_options.name = "webhooks";
    webhook_options.type = "webhook";
    bulwark::RetryQueue<std::string> webhooks(
        [&webhook_endpoint](const std::string& m) { static_cast<void>(webhook_endpoint.send(m)); },
        dead_letters, webhook_retry, webhook_options, clock);

    // Error classes, and a fixer that redrives what an outage or a timeout failed over email.
    bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
    const auto rule = [&](std::string pattern, std::string code, std::string channel,
                          bulwark::ErrorClass error_class) {
        bulwark::ErrorRule r;
        r.pattern = std::move(pattern);
        r.code = std::move(code);
        r.channel = std::move(channel);
        r.error_class = std::move(error_class);
        classifier.add(r);
    };
    rule("", "21211", "sms", {"invalid_recipient", "data", bulwark::ErrorSeverity::low, {}});
    rule("timed out", "", "",
         {"network_timeout", "infrastructure", bulwark::ErrorSeverity::high, {"retryable"}});
    rule("503", "", "", {"provider_outage", "provider", bulwark::ErrorSeverity::high, {}});
    rule("502", "", "", {"webhook_gateway", "provider", bulwark::ErrorSeverity::medium, {}});
    rule("quota", "", "", {"provider_quota", "provider", bulwark::ErrorSeverity::critical, {}});

    bulwark::FixRegistry fix_registry;
    bulwark::RedriveFixerOptions redrive_options;
    redrive_options.classes = {"provider_outage", "network_timeout"};
    redrive_options.channels = {"email"};
    auto redrive = std::make_shared<bulwark::RedriveFixer>(redrive_options);
    fix_registry.add(redrive, redrive->classes());
    bulwark::FixOrchestratorOptions fix_options;
    fix_options.max_fixes_per_second = 200;  // a console's bulk fix answers within a request
    bulwark::FixOrchestrator fixes(dead_letters, classifier, fix_registry,
                                   bulwark::redrive_through(engine), fix_options, clock);

    // Health (the breakers and the dead-letter backlog), resources, and a degradation level
    // that follows both.
    bulwark::HealthMonitor monitor(clock);
    breakers.for_each([&](bulwark::CircuitBreaker& b) { monitor.add_breaker(b); });
    monitor.add_check({"dead-letter-backlog", [&] { return dead_letters.stats().pending < 5000; },
                       5s, 1s, false});
    bulwark::ResourceManager resources(clock);
    resources.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); });
    resources.add_quota("sms_budget", 100000, 1h, {70, 90});
    bulwark::Degradation degradation(clock, 30s);
    degradation.follow(monitor, resources);
    monitor.start();

    // The console.
    bulwark::AdminOptions admin_options;
    admin_options.tokens = {{"operator", opts.token}};
    bulwark::AdminHandler admin(admin_options, clock);
    admin.breakers(breakers);
    admin.degradation(degradation);
    admin.health(monitor);
    admin.resources(resources);
    admin.dead_letters(dead_letters);
    admin.classifier(classifier);
    admin.fixes(fixes);
    admin.engine(engine);
    admin.retry_queue(webhooks);

    httplib::Server server;
    server.set_payload_max_length(1 << 20);  // the handler refuses more than its own limit
    const auto serve = [&admin](const httplib::Request& req, httplib::Response& res) {
        bulwark::AdminRequest request;
        request.method = req.method;
        // The raw target, still percent-encoded: the handler decodes the path's segments and
        // the query itself (req.path is decoded already).
        const std::size_t question = req.target.find('?');
        request.path = req.target.substr(0, question);
        if (question != std::string::npos) {
            request.query = req.target.substr(question + 1);
        }
        request.body = req.body;
        const std::string authorization = req.get_header_value("Authorization");
        if (authorization.rfind("Bearer ", 0) == 0) {
            request.credentials = authorization.substr(7);
        }
        bulwark::AdminResponse out = admin.handle(request);
        res.status = out.status;
        for (const auto& [name, value] : out.headers) {
            res.set_header(name, value);
        }
        res.set_content(out.body, out.content_type);
    };
    server.Get(".*", serve);
    server.Post(".*", serve);
    server.Put(".*", serve);
    server.Delete(".*", serve);
    server.Patch(".*", serve);
    server.Options(".*", serve);

    int port = opts.port;
    if (port == 0) {
        port = server.bind_to_any_port("127.0.0.1");
    } else if (!server.bind_to_port("127.0.0.1", port)) {
        port = -1;
    }
    if (port < 0) {
        std::fprintf(stderr, "admin_console: cannot listen on 127.0.0.1:%d\n", opts.port);
        return 1;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::thread listener([&server] { server.listen_after_bind(); });
    std::printf("listening on http://127.0.0.1:%d/\n", port);
    if (generated_token) {
        std::printf("operator token: %s\n", opts.token.c_str());
    }
    std::fflush(stdout);

    // Simulated traffic: a message every 250 ms, to a channel in turn, until asked to stop.
    const auto started = std::chrono::steady_clock::now();
    std::uint64_t n = 0;
    const char* const channels[] = {"email", "sms", "push"};
    while (interrupted == 0) {
        if (opts.exit_after > 0 && std::chrono::steady_clock::now() - started >=
                                       std::chrono::duration<double>(opts.exit_after)) {
            break;
        }
        const char* channel = channels[n % 3];
        engine.submit("notification " + std::to_string(++n), {channel});
        if (n % 4 == 0) {
            webhooks.enqueue("{\"event\":\"order.shipped\",\"seq\":" + std::to_string(n) + "}");
        }
        std::this_thread::sleep_for(250ms);
    }

    server.stop();
    listener.join();
    monitor.stop();
    degradation.unfollow();
    static_cast<void>(webhooks.stop(bulwark::StopMode::persist));
    static_cast<void>(engine.stop(bulwark::StopMode::persist, 5s));
    std::printf("stopped after %llu messages\n", static_cast<unsigned long long>(n));
    return 0;
}
