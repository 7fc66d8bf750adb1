// AdminHandler: every endpoint with and without a token, bad input (400), unknown ids (404),
// wrong methods (405), bounds (413, page sizes, bulk sizes), the bulk rate limit (429), the
// audit log and escaping, over real breakers, a degradation, a health monitor, a resource
// manager, a dead-letter store, fixers and a DeliveryEngine, all on a ManualClock.
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <bulwark/admin.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using bulwark::AdminRequest;
using bulwark::AdminResponse;
using bulwark::DeadLetter;
using bulwark::DeadLetterStatus;
using bulwark::detail::JsonValue;

namespace {

const std::string token = "alice-token-0123456789";

bulwark::AdminOptions admin_options() {
    bulwark::AdminOptions o;
    o.tokens = {{"alice", token}, {"bob", "bob-token-abcdefghijkl"}};
    o.bulk_rate_per_second = 1;
    o.bulk_burst = 3;
    return o;
}

JsonValue parse(const AdminResponse& r) {
    JsonValue v;
    std::string why;
    INFO(r.body);
    REQUIRE(bulwark::detail::read_json(r.body, v, why));
    return v;
}

std::string text(const JsonValue& v, const char* name) {
    const JsonValue* m = v.find(name);
    REQUIRE(m != nullptr);
    REQUIRE(m->is(JsonValue::Kind::string));
    return m->text;
}

double number(const JsonValue& v, const char* name) {
    const JsonValue* m = v.find(name);
    REQUIRE(m != nullptr);
    REQUIRE(m->is(JsonValue::Kind::number));
    return m->number;
}

std::string header(const AdminResponse& r, const std::string& name) {
    for (const auto& h : r.headers) {
        if (h.first == name) {
            return h.second;
        }
    }
    return {};
}

// Everything an operator watches, wired into one handler.
struct Console {
    Console()
        : store(bulwark::InMemoryDeadLetterStoreOptions{}, clock),
          registry(bulwark::CircuitBreakerOptions{}, clock),
          degradation(clock),
          monitor(clock),
          resources(clock),
          classifier(bulwark::redact_defaults()),
          engine(bulwark::FallbackRules{}, store, engine_options(), clock),
          fixes(store, classifier, fix_registry, bulwark::redrive_through(engine), fix_options(),
                clock),
          admin(admin_options(), clock) {
        registry.get("email");
        registry.get("sms");
        monitor.add_check({"database", [] { return true; }, 60s, 10s, true});
        monitor.run_due();
        resources.add_quota("sms_budget", 1000, 1h, {70, 90});
        bulwark::ErrorRule timeout;
        timeout.pattern = "timed out";
        timeout.error_class = {
            "network_timeout", "infrastructure", bulwark::ErrorSeverity::high, {}};
        classifier.add(timeout);
        bulwark::RedriveFixerOptions ro;
        ro.classes = {"network_timeout"};
        ro.channels = {"email"};
        auto fixer = std::make_shared<bulwark::RedriveFixer>(ro);
        fix_registry.add(fixer, fixer->classes());
        engine.add_channel("sms", [this](const std::string&) -> bulwark::Receipt {
            if (sms_down) {
                throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                             "sms gateway timed out", "504");
            }
            return bulwark::Receipt{"sms", "sms-1", 0.0, false};
        });
        engine.add_channel("email", [](const std::string& m) {
            return bulwark::Receipt{"mail", "mail:" + m, 0.0, false};
        });
        admin.breakers(registry)
            .degradation(degradation)
            .health(monitor)
            .resources(resources)
            .dead_letters(store)
            .classifier(classifier)
            .fixes(fixes)
            .engine(engine);
    }

    static bulwark::DeliveryEngineOptions engine_options() {
        bulwark::DeliveryEngineOptions o;
        o.workers = 0;
        o.max_passes = 1;
        return o;
    }
    static bulwark::FixOrchestratorOptions fix_options() {
        bulwark::FixOrchestratorOptions o;
        o.max_fixes_per_second = 1000;
        return o;
    }

    AdminResponse call(std::string method, std::string path, std::string query = {},
                       std::string body = {}, std::string credentials = token) {
        return admin.handle(AdminRequest{std::move(method), std::move(path), std::move(query),
                                         std::move(body), std::move(credentials)});
    }
    AdminResponse get(std::string path, std::string query = {}) {
        return call("GET", std::move(path), std::move(query));
    }
    AdminResponse post(std::string path, std::string body) {
        return call("POST", std::move(path), {}, std::move(body));
    }

    std::string letter(std::string type, std::string error, std::string payload = "hello") {
        DeadLetter d;
        d.type = std::move(type);
        d.error = std::move(error);
        d.payload = std::move(payload);
        return store.add(d);
    }

    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store;
    bulwark::CircuitBreakerRegistry registry;
    bulwark::Degradation degradation;
    bulwark::HealthMonitor monitor;
    bulwark::ResourceManager resources;
    bulwark::ErrorClassifier classifier;
    bulwark::FixRegistry fix_registry;
    std::atomic<bool> sms_down{true};
    bulwark::DeliveryEngine<std::string> engine;
    bulwark::FixOrchestrator fixes;
    bulwark::AdminHandler admin;
};

}  // namespace

TEST_CASE("the page, its script and style, and the liveness and readiness probes need no token",
          "[admin]") {
    Console c;
    const AdminResponse page = c.call("GET", "/", {}, {}, "");
    CHECK(page.status == 200);
    CHECK(page.content_type == "text/html; charset=utf-8");
    CHECK(page.body.find("console.js") != std::string::npos);
    CHECK(header(page, "Content-Security-Policy").find("script-src 'self'") != std::string::npos);
    CHECK(header(page, "X-Frame-Options") == "DENY");
    CHECK(c.call("GET", "/console.js", {}, {}, "").content_type ==
          "text/javascript; charset=utf-8");
    CHECK(c.call("GET", "/console.css", {}, {}, "").content_type == "text/css; charset=utf-8");
    const AdminResponse live = c.call("GET", "/api/health/live", {}, {}, "");
    CHECK(live.status == 200);
    CHECK(live.body == R"({"status":"up"})");
    const AdminResponse ready = c.call("GET", "/api/health/ready", {}, {}, "");
    CHECK(ready.status == 200);
    CHECK(text(parse(ready), "status") == "ready");
}

TEST_CASE("every other endpoint refuses a request without a valid token with 403", "[admin]") {
    Console c;
    const std::vector<std::pair<std::string, std::string>> endpoints = {
        {"GET", "/api/health"},
        {"GET", "/api/breakers"},
        {"GET", "/api/breakers/email"},
        {"POST", "/api/breakers/email/trip"},
        {"POST", "/api/breakers/email/reset"},
        {"GET", "/api/degradation"},
        {"POST", "/api/degradation"},
        {"POST", "/api/degradation/clear"},
        {"GET", "/api/resources"},
        {"GET", "/api/dead-letters"},
        {"GET", "/api/dead-letters/dl-1"},
        {"POST", "/api/dead-letters/dismiss"},
        {"POST", "/api/dead-letters/categorize"},
        {"POST", "/api/dead-letters/fix"},
        {"POST", "/api/dead-letters/reprocess"},
        {"GET", "/api/engine"},
        {"GET", "/api/retry-queue"},
        {"GET", "/api/fixers"},
        {"GET", "/api/fixers/executions"},
        {"GET", "/api/audit"},
    };
    const std::string id = c.letter("sms", "boom");
    for (const auto& e : endpoints) {
        for (const std::string& credentials :
             {std::string(), std::string("wrong"), token.substr(0, token.size() - 1), token + "x",
              std::string("Bearer ") + token}) {
            INFO(e.first << " " << e.second << " with \"" << credentials << "\"");
            const AdminResponse r = c.call(
                e.first, e.second, {}, R"({"ids":[")" + id + R"("],"reason":"x"})", credentials);
            CHECK(r.status == 403);
            CHECK(text(parse(r), "error").find("forbidden") != std::string::npos);
        }
    }
    CHECK(c.registry.get("email").state() == bulwark::CircuitState::closed);
    CHECK(c.store.get(id)->status == DeadLetterStatus::pending);
    CHECK(c.admin.audit().empty());
    // Either operator's token works.
    CHECK(c.call("GET", "/api/breakers", {}, {}, "bob-token-abcdefghijkl").status == 200);
}

TEST_CASE("AdminOptions refuse short, duplicate and nameless tokens and zero bounds", "[admin]") {
    const auto refused = [](bulwark::AdminOptions o, const std::string& field) {
        try {
            bulwark::AdminHandler h(o);
            FAIL("accepted");
        } catch (const std::invalid_argument& e) {
            CHECK(std::string(e.what()).find(field) != std::string::npos);
        }
    };
    bulwark::AdminOptions o;
    o.tokens = {{"alice", "short"}};
    refused(o, "AdminOptions.tokens[0].token");
    o.tokens = {{"", "0123456789abcdef"}};
    refused(o, "AdminOptions.tokens[0].name");
    o.tokens = {{"a", "0123456789abcdef"}, {"b", "0123456789abcdef"}};
    refused(o, "AdminOptions.tokens[1].token");
    o.tokens = {{"a", "0123456789abcdef"}, {"a", "0123456789abcdeg"}};
    refused(o, "AdminOptions.tokens[1].name");
    o.tokens.clear();
    o.max_page_size = 0;
    refused(o, "AdminOptions.max_page_size");
    o = {};
    o.bulk_rate_per_second = 0;
    refused(o, "AdminOptions.bulk_rate_per_second");
    o = {};
    o.default_page_size = 1000;
    refused(o, "AdminOptions.default_page_size");
    // No operators at all: the page is served, the API refuses everyone.
    bulwark::AdminHandler nobody(bulwark::AdminOptions{});
    CHECK(nobody.handle({"GET", "/", "", "", ""}).status == 200);
    CHECK(nobody.handle({"GET", "/api/breakers", "", "", ""}).status == 403);
}

TEST_CASE("breakers are listed, read, tripped and reset, and each action is audited", "[admin]") {
    Console c;
    const JsonValue list = parse(c.get("/api/breakers"));
    const JsonValue* breakers = list.find("breakers");
    REQUIRE(breakers != nullptr);
    REQUIRE(breakers->items.size() == 2);
    CHECK(text(breakers->items[0], "name") == "email");
    CHECK(text(breakers->items[0], "state") == "closed");
    CHECK(number(breakers->items[1], "calls") == 0);

    CHECK(text(parse(c.get("/api/breakers/sms")), "name") == "sms");
    const AdminResponse unknown = c.get("/api/breakers/fax");
    CHECK(unknown.status == 404);
    CHECK(text(parse(unknown), "error") == "no breaker named \"fax\"");

    const AdminResponse tripped = c.post("/api/breakers/sms/trip", R"({"reason":"provider down"})");
    CHECK(tripped.status == 200);
    CHECK(text(parse(tripped), "state") == "forced_open");
    CHECK(c.registry.get("sms").state() == bulwark::CircuitState::forced_open);
    CHECK(text(parse(c.post("/api/breakers/sms/reset", "")), "state") == "closed");
    CHECK(c.registry.get("sms").state() == bulwark::CircuitState::closed);

    CHECK(c.get("/api/breakers/sms/trip").status == 405);
    CHECK(c.post("/api/breakers", "{}").status == 405);
    CHECK(c.post("/api/breakers/sms/trip", "{not json").status == 400);
    CHECK(c.post("/api/breakers/sms/melt", "{}").status == 404);
    CHECK(c.call("HEAD", "/api/breakers").status == 405);

    const auto audit = c.admin.audit();
    REQUIRE(audit.size() == 2);
    CHECK(audit[0].action == "breaker.reset");  // newest first
    CHECK(audit[1].action == "breaker.trip");
    CHECK(audit[1].operator_name == "alice");
    CHECK(audit[1].target == "sms");
    CHECK(audit[1].detail == "provider down");
    CHECK(audit[1].at == c.clock.wall_now());
}

TEST_CASE("degradation is read, set with a reason, and cleared", "[admin]") {
    Console c;
    JsonValue d = parse(c.get("/api/degradation"));
    CHECK(text(d, "level") == "normal");
    CHECK(d.find("levels")->items.size() == 5);

    const AdminResponse set =
        c.post("/api/degradation", R"({"level":"severe","reason":"database failover"})");
    CHECK(set.status == 200);
    d = parse(set);
    CHECK(text(d, "level") == "severe");
    CHECK(text(d, "reason") == "database failover");
    CHECK(d.find("overridden")->boolean);
    CHECK(c.degradation.level() == bulwark::DegradationLevel::severe);

    SECTION("a level and a reason are required, and the level must be one of the five") {
        const AdminResponse no_reason = c.post("/api/degradation", R"({"level":"minor"})");
        CHECK(no_reason.status == 400);
        CHECK(text(parse(no_reason), "error") == "reason: required, a non-empty string");
        const AdminResponse bad = c.post("/api/degradation", R"({"level":"meh","reason":"x"})");
        CHECK(bad.status == 400);
        CHECK(text(parse(bad), "error").find("level: unknown \"meh\"") == 0);
        CHECK(c.post("/api/degradation", R"({"level":3,"reason":"x"})").status == 400);
        CHECK(c.post("/api/degradation", "").status == 400);
        CHECK(c.post("/api/degradation", "[1,2]").status == 400);
        CHECK(c.degradation.level() == bulwark::DegradationLevel::severe);
    }
    SECTION("clear returns to the automatic level") {
        d = parse(c.post("/api/degradation/clear", ""));
        CHECK(text(d, "level") == "normal");
        CHECK_FALSE(d.find("overridden")->boolean);
        REQUIRE(c.admin.audit().size() == 2);
        CHECK(c.admin.audit()[0].action == "degradation.clear");
    }
}

TEST_CASE("health, resources, engine and fixer reports are served as JSON", "[admin]") {
    Console c;
    const JsonValue health = parse(c.get("/api/health"));
    CHECK(text(health, "status") == "healthy");
    CHECK(health.find("checks")->items.size() == 1);
    const JsonValue resources = parse(c.get("/api/resources"));
    CHECK(resources.find("resources") != nullptr);

    c.engine.submit("hello", {"email"});
    c.engine.run_due();
    const JsonValue engine = parse(c.get("/api/engine"));
    CHECK(number(*engine.find("counters"), "submitted") == 1);
    CHECK(engine.find("stats")->find("channels")->items.size() == 2);

    CHECK(c.get("/api/retry-queue").status == 404);  // not wired here
    CHECK(text(parse(c.get("/api/retry-queue")), "error") == "retry-queue: not configured");
    CHECK(parse(c.get("/api/fixers")).find("fixers")->items.empty());
    CHECK(c.get("/api/nothing").status == 404);
    CHECK(c.get("/elsewhere").status == 404);
    CHECK(c.call("DELETE", "/api/breakers").status == 405);
}

TEST_CASE("a readiness probe answers 503 while a critical check fails", "[admin]") {
    Console c;
    c.monitor.add_check({"queue", [] { return false; }, 60s, 10s, true});
    c.monitor.run_due();
    const AdminResponse ready = c.call("GET", "/api/health/ready", {}, {}, "");
    CHECK(ready.status == 503);
    CHECK(text(parse(ready), "status") == "not_ready");
}

TEST_CASE("dead letters are filtered, paged, read whole and shown redacted and escaped",
          "[admin]") {
    Console c;
    std::vector<std::string> ids;
    for (int i = 0; i < 7; ++i) {
        ids.push_back(c.letter("sms", "sms gateway timed out (code 504)"));
    }
    const std::string email = c.letter("email", "mailbox full for jane@example.com");
    const std::string xss =
        c.letter("push", "<script>alert(1)</script>\"}", "card 4111111111111111");
    c.store.categorize(bulwark::DeadLetterQuery{}.id(email), "data", {"vip"});

    JsonValue page = parse(c.get("/api/dead-letters", "type=sms&limit=3&offset=2"));
    CHECK(number(page, "total") == 7);
    CHECK(number(page, "offset") == 2);
    const JsonValue* items = page.find("items");
    REQUIRE(items->items.size() == 3);
    CHECK(text(items->items[0], "id") == ids[2]);
    CHECK(text(items->items[0], "error_class") == "network_timeout");
    CHECK(text(items->items[0], "severity") == "high");
    CHECK(text(items->items[0], "status") == "pending");
    CHECK(text(items->items[0], "created").size() == 24);  // 2026-12-05T02:10:42.123Z

    CHECK(number(parse(c.get("/api/dead-letters", "error_class=network_timeout")), "total") == 7);
    CHECK(number(parse(c.get("/api/dead-letters", "error_class=unclassified")), "total") == 2);
    CHECK(number(parse(c.get("/api/dead-letters", "category=data&tag=vip")), "total") == 1);
    CHECK(number(parse(c.get("/api/dead-letters", "text=MAILBOX+full")), "total") == 1);
    CHECK(number(parse(c.get("/api/dead-letters", "text=jane%40example")), "total") == 0);
    CHECK(number(parse(c.get("/api/dead-letters", "status=dismissed")), "total") == 0);
    CHECK(number(parse(c.get("/api/dead-letters", "offset=100")), "total") == 9);
    CHECK(parse(c.get("/api/dead-letters", "offset=100")).find("items")->items.empty());

    // The email address is masked in what operators see.
    const JsonValue mail = parse(c.get("/api/dead-letters/" + email));
    CHECK(text(mail, "error").find("jane@example.com") == std::string::npos);
    CHECK(text(mail, "category") == "data");
    // Markup and quotes come back as JSON string data, never as document structure.
    const AdminResponse raw = c.get("/api/dead-letters/" + xss);
    const JsonValue x = parse(raw);
    CHECK(text(x, "error") == "<script>alert(1)</script>\"}");
    CHECK(text(x, "payload").find("4111111111111111") == std::string::npos);
    CHECK(x.find("attempts")->is(JsonValue::Kind::array));

    SECTION("bad filters and page sizes are refused with the field named") {
        CHECK(text(parse(c.get("/api/dead-letters", "status=lost")), "error") ==
              "status: unknown \"lost\" (expected pending, reprocessed or dismissed)");
        CHECK(c.get("/api/dead-letters", "limit=501").status == 400);
        CHECK(text(parse(c.get("/api/dead-letters", "limit=0")), "error") ==
              "limit: must be 1 to 500, got 0");
        CHECK(text(parse(c.get("/api/dead-letters", "offset=-1")), "error") ==
              "offset: expected a whole number below 10^9, got \"-1\"");
        CHECK(c.get("/api/dead-letters", "reason=bored").status == 400);
        CHECK(c.get("/api/dead-letters", "text=%zz").status == 400);
    }
    SECTION("an unknown id is 404, and an id needing percent-encoding is found") {
        const AdminResponse missing = c.get("/api/dead-letters/dl-nope");
        CHECK(missing.status == 404);
        CHECK(text(parse(missing), "error") == "no dead letter with id \"dl-nope\"");
        DeadLetter d;
        d.id = "order 7/a";
        d.type = "sms";
        c.store.add(d);
        CHECK(text(parse(c.get("/api/dead-letters/order%207%2Fa")), "id") == "order 7/a");
    }
}

TEST_CASE("bulk dismiss, categorize, fix and reprocess act on the ids given and say how many",
          "[admin]") {
    Console c;
    const std::string a = c.engine.submit("one", {"sms"});
    const std::string b = c.engine.submit("two", {"sms"});
    const std::string d = c.engine.submit("three", {"sms"});
    c.engine.run_due();
    REQUIRE(c.store.size() == 3);
    std::vector<std::string> letters;
    for (const DeadLetter& l : c.store.list()) {
        letters.push_back(l.id);
    }
    const auto ids_json = [](const std::vector<std::string>& ids) {
        std::string out = "[";
        for (const std::string& id : ids) {
            out += (out.size() > 1 ? ",\"" : "\"") + id + "\"";
        }
        return out + "]";
    };

    SECTION("dismiss") {
        const AdminResponse r = c.post("/api/dead-letters/dismiss",
                                       R"({"ids":)" + ids_json({letters[0], letters[1], "dl-x"}) +
                                           R"(,"reason":"customer unsubscribed"})");
        CHECK(r.status == 200);
        const JsonValue v = parse(r);
        CHECK(number(v, "requested") == 3);
        CHECK(number(v, "changed") == 2);
        REQUIRE(v.find("not_found")->items.size() == 1);
        CHECK(v.find("not_found")->items[0].text == "dl-x");
        CHECK(c.store.get(letters[0])->status == DeadLetterStatus::dismissed);
        CHECK(c.store.get(letters[0])->note == "customer unsubscribed");
        CHECK(c.store.get(letters[2])->status == DeadLetterStatus::pending);
        // Dismissing again changes nothing: the record is no longer pending.
        const JsonValue again =
            parse(c.post("/api/dead-letters/dismiss",
                         R"({"ids":)" + ids_json({letters[0]}) + R"(,"reason":"twice"})"));
        CHECK(number(again, "changed") == 0);
        CHECK(again.find("unchanged")->items.size() == 1);
        const auto audit = c.admin.audit();
        REQUIRE(audit.size() == 2);
        CHECK(audit[1].action == "dead_letters.dismiss");
        CHECK(audit[1].count == 2);
        CHECK(audit[1].target == letters[0] + ", " + letters[1] + ", dl-x");
        CHECK(audit[1].detail == "customer unsubscribed");
        CHECK(number(parse(c.get("/api/dead-letters", "status=dismissed")), "total") == 2);
    }
    SECTION("categorize with a severity") {
        const JsonValue v = parse(
            c.post("/api/dead-letters/categorize",
                   R"({"ids":)" + ids_json(letters) +
                       R"(,"category":"provider","severity":"critical","tags":["sms-outage"]})"));
        CHECK(number(v, "changed") == 3);
        const DeadLetter l = *c.store.get(letters[1]);
        CHECK(l.category == "provider");
        CHECK(std::find(l.tags.begin(), l.tags.end(), "severity:critical") != l.tags.end());
        CHECK(std::find(l.tags.begin(), l.tags.end(), "sms-outage") != l.tags.end());
        CHECK(text(parse(c.get("/api/dead-letters/" + letters[1])), "severity") == "critical");
        CHECK(c.post("/api/dead-letters/categorize",
                     R"({"ids":)" + ids_json(letters) + R"(,"category":"p","severity":"meh"})")
                  .status == 400);
    }
    SECTION("fix runs the fixer for each letter's class and redrives it through the engine") {
        const JsonValue v =
            parse(c.post("/api/dead-letters/fix", R"({"ids":)" + ids_json(letters) + "}"));
        CHECK(number(v, "changed") == 3);
        CHECK(number(*v.find("outcomes"), "success") == 3);
        CHECK(number(v, "redriven") == 3);
        c.engine.drain(1min);  // redrives are released at the engine's redrive rate
        CHECK(c.engine.status(a) == bulwark::MessageStatus::sent);
        CHECK(c.engine.status(d) == bulwark::MessageStatus::sent);
        const JsonValue fixers = parse(c.get("/api/fixers"));
        REQUIRE(fixers.find("fixers")->items.size() == 1);
        CHECK(number(fixers.find("fixers")->items[0], "executions") == 3);
        CHECK(text(fixers.find("fixers")->items[0], "alert") == "ok");
        const JsonValue runs = parse(c.get("/api/fixers/executions", "limit=2"));
        REQUIRE(runs.find("executions")->items.size() == 2);
        CHECK(text(runs.find("executions")->items[0], "operator") == "alice");
    }
    SECTION("reprocess redrives through the engine, over the channels given") {
        c.sms_down = false;
        const JsonValue v = parse(
            c.post("/api/dead-letters/reprocess",
                   R"({"ids":)" + ids_json({letters[0], "dl-x"}) + R"(,"channels":["email"]})"));
        CHECK(number(v, "changed") == 1);
        CHECK(v.find("not_found")->items.size() == 1);
        c.engine.run_due();
        CHECK(c.engine.status(a) == bulwark::MessageStatus::sent);
        CHECK(c.engine.status(b) == bulwark::MessageStatus::dead_lettered);
        const AdminResponse bad =
            c.post("/api/dead-letters/reprocess",
                   R"({"ids":)" + ids_json({letters[1]}) + R"(,"channels":["fax"]})");
        CHECK(bad.status == 400);
        CHECK(text(parse(bad), "error").find("fax") != std::string::npos);
    }
    SECTION("bodies are checked: ids required, bounded, strings; JSON well formed") {
        c.clock.advance(1min);  // a full bucket: 3 bulk requests
        CHECK(text(parse(c.post("/api/dead-letters/dismiss", R"({"reason":"x"})")), "error") ==
              "ids: required, 1 to 500 ids");
        CHECK(
            text(parse(c.post("/api/dead-letters/dismiss", R"({"ids":[1],"reason":"x"})")), "error")
                .find("ids: every item") == 0);
        c.clock.advance(1s);  // a bad request takes its token too
        CHECK(text(parse(c.post("/api/dead-letters/dismiss", R"({"ids":["a"]})")), "error") ==
              "reason: required, a non-empty string");
        const AdminResponse broken = c.post("/api/dead-letters/dismiss", R"({"ids":["a"],)");
        CHECK(broken.status == 400);
        CHECK(text(parse(broken), "error").find("body: invalid JSON") == 0);
    }
}

TEST_CASE("bulk requests are rate limited with 429 and Retry-After, refilled on the clock",
          "[admin]") {
    Console c;
    const std::string id = c.letter("sms", "x");
    const std::string body = R"({"ids":[")" + id + R"("],"category":"c"})";
    for (int i = 0; i < 3; ++i) {
        CHECK(c.post("/api/dead-letters/categorize", body).status == 200);
    }
    const AdminResponse limited = c.post("/api/dead-letters/categorize", body);
    CHECK(limited.status == 429);
    CHECK(header(limited, "Retry-After") == "1");
    CHECK(c.get("/api/dead-letters").status == 200);  // reads are not bulk operations
    c.clock.advance(1s);
    CHECK(c.post("/api/dead-letters/categorize", body).status == 200);
    CHECK(c.post("/api/dead-letters/categorize", body).status == 429);
}

TEST_CASE("bodies over max_body_bytes and bulk lists over max_bulk_ids are refused", "[admin]") {
    Console c;
    const AdminResponse big = c.post("/api/dead-letters/dismiss", std::string(64 * 1024 + 1, ' '));
    CHECK(big.status == 413);
    CHECK(text(parse(big), "error").find("max_body_bytes (65536)") != std::string::npos);
    std::string ids = "[";
    for (int i = 0; i < 501; ++i) {
        ids += (i == 0 ? "\"" : ",\"") + std::to_string(i) + "\"";
    }
    const AdminResponse many =
        c.post("/api/dead-letters/dismiss", R"({"ids":)" + ids + R"(],"reason":"x"})");
    CHECK(many.status == 400);
    CHECK(text(parse(many), "error") == "ids: at most 500 items, got 501");
    std::string deep(100, '[');
    deep += std::string(100, ']');
    CHECK(text(parse(c.post("/api/dead-letters/dismiss", deep)), "error").find("nesting") !=
          std::string::npos);
}

TEST_CASE("the audit endpoint lists operator actions newest first", "[admin]") {
    Console c;
    c.post("/api/breakers/email/trip", "");
    c.call("POST", "/api/degradation", {}, R"({"level":"minor","reason":"drill"})",
           "bob-token-abcdefghijkl");
    const JsonValue v = parse(c.get("/api/audit", "limit=10"));
    const JsonValue* entries = v.find("entries");
    REQUIRE(entries->items.size() == 2);
    CHECK(text(entries->items[0], "operator") == "bob");
    CHECK(text(entries->items[0], "action") == "degradation.set");
    CHECK(text(entries->items[0], "detail") == "drill");
    CHECK(text(entries->items[1], "action") == "breaker.trip");
}

TEST_CASE("sources not wired answer 404 naming what is missing", "[admin]") {
    bulwark::AdminHandler bare(admin_options());
    for (const char* path : {"/api/breakers", "/api/degradation", "/api/health", "/api/resources",
                             "/api/dead-letters", "/api/engine", "/api/fixers"}) {
        const AdminResponse r = bare.handle({"GET", path, "", "", token});
        CHECK(r.status == 404);
        CHECK(r.body.find("not configured") != std::string::npos);
    }
    CHECK(bare.handle({"GET", "/api/health/ready", "", "", ""}).status == 404);
}

TEST_CASE("read_json reads what JSON allows and refuses the rest", "[admin]") {
    const auto reads = [](const std::string& s) {
        JsonValue v;
        std::string why;
        return bulwark::detail::read_json(s, v, why);
    };
    JsonValue v;
    std::string why;
    REQUIRE(bulwark::detail::read_json(
        R"( {"a":[1,-2.5e2,true,false,null],"b":"\u00e9\ud83d\ude00\n\"","c":{}} )", v, why));
    CHECK(v.find("a")->items[1].number == -250.0);
    CHECK(v.find("b")->text == "\xC3\xA9\xF0\x9F\x98\x80\n\"");
    CHECK(v.find("c")->is(JsonValue::Kind::object));
    for (const char* bad : {"", "{", "[1,]", "{\"a\"}", "01", "1.", "\"\\x\"", "\"\\ud800\"",
                            "\"a\nb\"", "\"\xff\"", "tru", "{} {}", "[1 2]", "-"}) {
        INFO(bad);
        CHECK_FALSE(reads(bad));
    }
    REQUIRE(bulwark::detail::read_json("[1.7976931348623157e308, 5e-324, -0.1]", v, why));
    CHECK(v.items[0].number == 1.7976931348623157e308);
    CHECK(v.items[1].number == 5e-324);
    CHECK(v.items[2].number == -0.1);
    CHECK_FALSE(reads("1e999"));
    CHECK(reads(std::string(16, '[') + std::string(16, ']')));
    CHECK_FALSE(reads(std::string(17, '[') + std::string(17, ']')));
}

TEST_CASE("operators calling at once from many threads: every action lands and is audited",
          "[admin][stress]") {
    Console c;
    bulwark::AdminOptions o = admin_options();
    o.bulk_rate_per_second = 1e9;
    o.bulk_burst = 100000;
    bulwark::AdminHandler admin(o, c.clock);
    admin.breakers(c.registry).dead_letters(c.store).classifier(c.classifier);
    constexpr int per_thread = 150;
    std::vector<std::string> ids;
    for (int i = 0; i < 2 * per_thread; ++i) {
        ids.push_back(c.letter("sms", "timed out " + std::to_string(i)));
    }
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const std::string& id = ids[static_cast<std::size_t>(t * per_thread + i)];
                const AdminResponse d = admin.handle(
                    {"POST", "/api/dead-letters/dismiss", "",
                     R"({"ids":[")" + id + R"("],"reason":"thread )" + std::to_string(t) + "\"}",
                     token});
                const AdminResponse l =
                    admin.handle({"GET", "/api/dead-letters", "limit=5&status=pending", "", token});
                const AdminResponse b = admin.handle(
                    {"POST", t == 0 ? "/api/breakers/email/trip" : "/api/breakers/email/reset", "",
                     "", token});
                if (d.status != 200 || l.status != 200 || b.status != 200 ||
                    d.body.find(R"("changed":1)") == std::string::npos) {
                    ++failures;
                }
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    CHECK(failures == 0);
    CHECK(c.store.stats().dismissed == ids.size());
    CHECK(admin.audit(10000).size() == 4 * per_thread);
}

TEST_CASE(
    "what the console shows is valid JSON and honest: raw ids, checked severities, "
    "never-attempted letters",
    "[admin]") {
    Console c;
    DeadLetter d;
    d.id = "order-2026120512345678";  // a producer's id with a long number: a key, not masked
    d.type = "sms\xff";
    d.tags = {"severity:alice@example.com <b>", "bad\xfe"};
    d.error = "timed out for +4915112345678";
    c.store.add(d);
    const AdminResponse r = c.get("/api/dead-letters/order-2026120512345678");
    const JsonValue v = parse(r);  // valid JSON although the letter holds bytes that are not UTF-8
    CHECK(text(v, "id") == "order-2026120512345678");
    CHECK(text(v, "type") == "sms\xEF\xBF\xBD");
    CHECK(text(v, "severity") == "high");  // the class's: the tag names no severity
    CHECK(text(v, "error").find("4915112345678") == std::string::npos);
    CHECK(v.find("last_attempt")->is(JsonValue::Kind::null));
    CHECK(number(parse(c.get("/api/dead-letters", "text=2026120512")), "total") == 1);

    const AdminResponse refused =
        c.post("/api/dead-letters/categorize",
               R"({"ids":["order-2026120512345678"],"category":"x","tags":["severity:critical"]})");
    CHECK(refused.status == 400);
    CHECK(text(parse(refused), "error") ==
          R"(tags: "severity:critical": set a severity with "severity")");
}

TEST_CASE(
    "a bulk operation the store refuses for one id still applies to the others and is "
    "audited",
    "[admin]") {
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStoreOptions so;
    so.max_text_bytes = 300;
    bulwark::InMemoryDeadLetterStore store(so, clock);
    DeadLetter small;
    small.id = "a";
    store.add(small);
    DeadLetter full;
    full.id = "b";
    full.tags = {std::string(280, 't')};
    store.add(full);
    bulwark::AdminHandler admin(admin_options(), clock);
    admin.dead_letters(store);
    const AdminResponse r =
        admin.handle({"POST", "/api/dead-letters/categorize", "",
                      R"({"ids":["b","a"],"category":")" + std::string(40, 'c') + R"("})", token});
    CHECK(r.status == 200);
    const JsonValue v = parse(r);
    CHECK(number(v, "changed") == 1);
    REQUIRE(v.find("failed")->items.size() == 1);
    CHECK(text(v.find("failed")->items[0], "id") == "b");
    CHECK(text(v.find("failed")->items[0], "error").find("max_text_bytes") != std::string::npos);
    CHECK(store.get("a")->category == std::string(40, 'c'));
    REQUIRE(admin.audit().size() == 1);
    CHECK(admin.audit()[0].count == 1);
}

TEST_CASE("the audit endpoint's default page fits a small max_page_size", "[admin]") {
    bulwark::AdminOptions o = admin_options();
    o.max_page_size = 20;
    o.default_page_size = 10;
    bulwark::AdminHandler admin(o);
    CHECK(admin.handle({"GET", "/api/audit", "", "", token}).status == 200);
}
