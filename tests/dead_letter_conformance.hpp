// The DeadLetterStore conformance suite: every semantic rule of the interface, written once and
// run against any store. A store's test file defines a factory that makes a fresh, empty store
// on the ManualClock it is given, and expands the macro once:
//   std::unique_ptr<bulwark::DeadLetterStore> make_store(bulwark::ManualClock& clock) {
//       return std::make_unique<bulwark::InMemoryDeadLetterStore>(100000, clock);
//   }
//   BULWARK_DEAD_LETTER_CONFORMANCE("InMemoryDeadLetterStore", make_store)
// Each rule becomes its own test case, named "<store>: <rule>" and tagged [dead_letter]
// [conformance]. The store's limits must leave room for the suite: max_entries >= 1000,
// max_attempts >= 4, max_payload_bytes in [256, 64 MiB].
#ifndef BULWARK_TESTS_DEAD_LETTER_CONFORMANCE_HPP
#define BULWARK_TESTS_DEAD_LETTER_CONFORMANCE_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <bulwark/clock.hpp>
#include <bulwark/context.hpp>
#include <bulwark/dead_letter.hpp>

#include "catch.hpp"

namespace bulwark_test {
namespace dead_letter_conformance {

using namespace std::chrono_literals;
using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::DeadLetterReason;
using bulwark::DeadLetterStatus;
using bulwark::DeadLetterStore;
using bulwark::ManualClock;

using Factory = std::function<std::unique_ptr<DeadLetterStore>(ManualClock&)>;

// A fresh store whose limits leave room for the suite.
inline std::unique_ptr<DeadLetterStore> fresh(const Factory& make, ManualClock& clock) {
    std::unique_ptr<DeadLetterStore> store = make(clock);
    REQUIRE(store != nullptr);
    REQUIRE(store->size() == 0);
    const bulwark::DeadLetterLimits limits = store->limits();
    REQUIRE(limits.max_entries >= 1000);
    REQUIRE(limits.max_attempts >= 4);
    REQUIRE(limits.max_payload_bytes >= 256);
    REQUIRE(limits.max_payload_bytes <= (std::size_t{64} << 20U));
    return store;
}

inline DeadLetter letter(std::string type, std::string id = {}) {
    DeadLetter d;
    d.id = std::move(id);
    d.type = std::move(type);
    d.payload = "payload";
    d.error = "provider 503";
    return d;
}

inline std::vector<std::string> ids_of(const std::vector<DeadLetter>& letters) {
    std::vector<std::string> ids;
    for (const DeadLetter& d : letters) {
        ids.push_back(d.id);
    }
    return ids;
}

inline std::vector<std::string> listed(const DeadLetterStore& store, const DeadLetterQuery& q) {
    return ids_of(store.list(q));
}

inline DeadLetterStatus status_of(const DeadLetterStore& store, const std::string& id) {
    const std::optional<DeadLetter> d = store.get(id);
    REQUIRE(d.has_value());
    return d->status;
}

// stats() against counts recomputed from every stored record.
inline void check_stats_match_records(const DeadLetterStore& store) {
    const std::vector<DeadLetter> all = store.list();
    const bulwark::DeadLetterStats s = store.stats();
    std::size_t by_status[bulwark::dead_letter_status_count] = {};
    std::array<std::size_t, bulwark::dead_letter_reason_count> by_reason{};
    std::map<std::string, std::size_t> by_type;
    std::map<std::string, std::size_t> by_category;
    std::map<std::pair<std::string, DeadLetterReason>, std::size_t> by_type_and_reason;
    for (const DeadLetter& d : all) {
        ++by_status[static_cast<std::size_t>(d.status)];
        ++by_reason[static_cast<std::size_t>(d.reason)];
        ++by_type[d.type];
        ++by_category[d.category];
        ++by_type_and_reason[{d.type, d.reason}];
    }
    CHECK(s.total == all.size());
    CHECK(store.size() == all.size());
    CHECK(s.pending + s.reprocessed + s.dismissed == s.total);
    CHECK(s.pending == by_status[0]);
    CHECK(s.reprocessed == by_status[1]);
    CHECK(s.dismissed == by_status[2]);
    CHECK(s.count(DeadLetterStatus::dismissed) == s.dismissed);
    CHECK(s.by_reason == by_reason);
    CHECK(s.by_type == by_type);
    CHECK(s.by_category == by_category);
    CHECK(s.by_type_and_reason == by_type_and_reason);
}

inline void add_assigns_unique_ids(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    std::set<std::string> ids;
    for (int i = 0; i < 500; ++i) {
        const std::string id = store->add(letter("sms"));
        REQUIRE(id.size() == 19);
        CHECK(id.compare(0, 3, "dl-") == 0);
        CHECK(id.find_first_not_of("0123456789abcdef", 3) == std::string::npos);
        ids.insert(id);
    }
    CHECK(ids.size() == 500);
    CHECK(store->size() == 500);
    for (const std::string& id : ids) {
        REQUIRE(store->get(id).has_value());
        CHECK(store->get(id)->id == id);
    }
}

inline void add_keeps_a_given_id(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    CHECK(store->add(letter("sms", "order-42")) == "order-42");
    const auto got = store->get("order-42");
    REQUIRE(got.has_value());
    CHECK(got->id == "order-42");
    CHECK(got->type == "sms");
}

inline void add_sets_created_from_the_clock_unless_given(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    clock.advance(5s);
    const bulwark::WallTime at_add = clock.wall_now();
    const std::string fresh_id = store->add(letter("sms"));
    DeadLetter old = letter("sms");
    old.created = at_add - 3h;  // first dead-lettered elsewhere, earlier
    const std::string old_id = store->add(old);
    clock.advance(1min);
    CHECK(store->get(fresh_id)->created == at_add);
    CHECK(store->get(old_id)->created == at_add - 3h);
}

inline void add_takes_last_attempt_from_the_history_unless_given(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const bulwark::WallTime t = clock.wall_now();
    DeadLetter d = letter("sms");
    d.attempts = {{t - 2s, "sms", "503"}, {t - 1s, "sms-backup", "timeout"}, {t - 5s, "x", "y"}};
    const std::string derived = store->add(d);
    d.last_attempt = t - 1h;
    const std::string given = store->add(d);
    CHECK(store->get(derived)->last_attempt == t - 1s);
    CHECK(store->get(given)->last_attempt == t - 1h);
    CHECK(store->get(store->add(letter("sms")))->last_attempt == bulwark::WallTime{});
}

inline void add_stores_every_record_pending(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    DeadLetter d = letter("sms");
    d.status = DeadLetterStatus::dismissed;
    const std::string id = store->add(d);
    CHECK(status_of(*store, id) == DeadLetterStatus::pending);
    CHECK(store->stats().pending == 1);
}

inline void adding_an_existing_id_again_stores_nothing(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    DeadLetter first = letter("sms", "msg-1");
    first.payload = "first";
    DeadLetter retry = letter("email", "msg-1");
    retry.payload = "second";
    CHECK(store->add(first) == "msg-1");
    CHECK(store->add(retry) == "msg-1");
    const std::string assigned = store->add(letter("sms"));
    CHECK(store->add(letter("sms", assigned)) == assigned);
    CHECK(store->size() == 2);
    CHECK(store->get("msg-1")->payload == "first");
    CHECK(store->get("msg-1")->type == "sms");
    const bulwark::DeadLetterStats s = store->stats();
    CHECK(s.added == 2);
    CHECK(s.duplicate_adds == 2);
    // Idempotent whatever its state: a dismissed record is not revived by a re-add.
    CHECK(store->dismiss(DeadLetterQuery{}.id("msg-1"), "dup") == 1);
    CHECK(store->add(first) == "msg-1");
    CHECK(status_of(*store, "msg-1") == DeadLetterStatus::dismissed);
    CHECK(store->stats().duplicate_adds == 3);
}

inline void get_of_an_unknown_id_is_nullopt(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    CHECK_FALSE(store->get("dl-0000000000000000").has_value());
    store->add(letter("sms", "known"));
    CHECK_FALSE(store->get("unknown").has_value());
    CHECK_FALSE(store->get("").has_value());
    CHECK_FALSE(store->get("know").has_value());
    CHECK(store->get("known").has_value());
}

inline void every_field_round_trips(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    DeadLetter d;
    d.id = "order-7";
    d.type = "email";
    d.payload = "{\"to\":\"a@b\"}";
    d.error = "550 mailbox unavailable";
    d.reason = DeadLetterReason::rejected;
    d.category = "bounced";
    d.tags = {"eu", "vip"};
    d.attempts = {{clock.wall_now() - 2min, "smtp-a", "421"},
                  {clock.wall_now() - 1min, "smtp-b", "550"}};
    d.created = clock.wall_now() - 10min;
    d.last_attempt = clock.wall_now() - 1min;
    d.redrives = 2;
    d.note = "migrated";
    store->add(d);
    const auto got = store->get("order-7");
    REQUIRE(got.has_value());
    CHECK(got->type == d.type);
    CHECK(got->payload == d.payload);
    CHECK(got->error == d.error);
    CHECK(got->reason == d.reason);
    CHECK(got->category == d.category);
    CHECK(got->tags == d.tags);
    REQUIRE(got->attempts.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CHECK(got->attempts[i].at == d.attempts[i].at);
        CHECK(got->attempts[i].channel == d.attempts[i].channel);
        CHECK(got->attempts[i].error == d.attempts[i].error);
    }
    CHECK(got->created == d.created);
    CHECK(got->last_attempt == d.last_attempt);
    CHECK(got->status == DeadLetterStatus::pending);
    CHECK(got->redrives == 2);
    CHECK(got->note == "migrated");
}

inline void payload_bytes_round_trip_nuls_included(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    std::string bytes;
    for (int i = 0; i < 256; ++i) {
        bytes.push_back(static_cast<char>(i));
    }
    bytes += std::string("\0\0tail\0", 7);
    DeadLetter d = letter("binary");
    d.payload = bytes;
    const std::string id = store->add(d);
    const auto got = store->get(id);
    REQUIRE(got.has_value());
    CHECK(got->payload.size() == 263);
    CHECK(got->payload == bytes);
}

inline void an_oversize_payload_is_refused_naming_the_limit(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const std::size_t limit = store->limits().max_payload_bytes;
    DeadLetter d = letter("sms", "big");
    d.payload.assign(limit + 1, 'x');
    try {
        store->add(d);
        FAIL("an oversize payload was accepted");
    } catch (const bulwark::DeadLetterTooLargeError& e) {
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(std::to_string(limit)));
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(std::to_string(limit + 1)));
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("max_payload_bytes"));
        CHECK(e.limit() == limit);
        CHECK(e.size() == limit + 1);
    }
    CHECK(store->size() == 0);
    CHECK_FALSE(store->get("big").has_value());
    CHECK(store->stats().rejected_too_large == 1);
    d.payload.assign(limit, 'x');
    CHECK(store->add(d) == "big");
    CHECK(store->get("big")->payload.size() == limit);
}

inline void oversize_text_is_refused_naming_the_limit(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const std::size_t limit = store->limits().max_text_bytes;
    REQUIRE(limit >= 64);
    DeadLetter d = letter("sms", "long");
    d.error.assign(limit, 'S');  // with the id and type, just over the limit
    try {
        store->add(d);
        FAIL("an oversize record was accepted");
    } catch (const bulwark::DeadLetterTooLargeError& e) {
        CHECK(std::string(e.limit_name()) == "max_text_bytes");
        CHECK(e.limit() == limit);
        CHECK(e.size() > limit);
        CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS("max_text_bytes"));
        CHECK(std::string(e.what()).find("SSSS") == std::string::npos);  // no record bytes
    }
    CHECK(store->size() == 0);
    CHECK(store->stats().rejected_too_large == 1);
    d.error.assign(limit - d.id.size() - d.type.size(), 'S');
    CHECK(store->add(d) == "long");
}

inline void oversize_notes_categories_and_tags_are_refused(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const std::size_t limit = store->limits().max_text_bytes;
    store->add(letter("sms", "m"));
    const auto refused = [&](const std::function<void()>& change, const char* what) {
        try {
            change();
        } catch (const bulwark::DeadLetterTooLargeError& e) {
            CHECK(std::string(e.limit_name()) == "max_text_bytes");
            CHECK_THAT(e.what(), BULWARK_CATCH_MESSAGE_CONTAINS(what));
            return true;
        }
        return false;
    };
    CHECK(refused([&] { store->dismiss(DeadLetterQuery{}, std::string(limit + 1, 'n')); }, "note"));
    CHECK(refused([&] { store->categorize(DeadLetterQuery{}, std::string(limit + 1, 'c')); },
                  "category and tags"));
    CHECK(refused([&] { store->categorize(DeadLetterQuery{}, "c", {std::string(limit, 't')}); },
                  "category and tags"));
    // Tags accumulate from call to call: the total is what is bounded.
    const std::string half(limit / 2, 'a');
    CHECK(store->categorize(DeadLetterQuery{}, "", {half}) == 1);
    CHECK(refused(
        [&] { store->categorize(DeadLetterQuery{}, "", {std::string(limit / 2 + 1, 'b')}); },
        "category and tags"));
    CHECK(store->categorize(DeadLetterQuery{}, "", {half}) == 1);  // already carried: no growth
    CHECK(store->categorize(DeadLetterQuery{}, "", {half, half}) == 1);  // a repeat counts once
    const auto got = store->get("m");
    REQUIRE(got.has_value());
    CHECK(got->status == DeadLetterStatus::pending);
    CHECK(got->tags == std::vector<std::string>{half});
    CHECK(got->category.empty());
    bulwark::ReprocessOptions long_channel;
    long_channel.channel.assign(257, 'c');
    CHECK_THROWS_AS(store->reprocess(
                        DeadLetterQuery{}, [](const DeadLetter&) { return true; }, long_channel),
                    std::invalid_argument);
    CHECK(store->get("m")->attempts.empty());
    CHECK(store->dismiss(DeadLetterQuery{}, std::string(limit, 'n')) == 1);
    CHECK(store->get("m")->note.size() == limit);
}

inline void a_redrive_error_text_is_cut_to_a_kibibyte(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m"));
    const auto r = store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) -> bool {
        throw std::runtime_error(std::string(5000, 'x'));
    });
    CHECK(r.failed == 1);
    const auto got = store->get("m");
    REQUIRE(got.has_value());
    REQUIRE(got->attempts.size() == 1);
    CHECK(got->attempts.back().error.size() <= 1024);
    CHECK(got->attempts.back().error.size() >= 1000);
}

inline void an_out_of_range_reason_is_refused(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    DeadLetter d = letter("sms");
    d.reason = static_cast<DeadLetterReason>(200);
    CHECK_THROWS_AS(store->add(d), std::invalid_argument);
    CHECK(store->size() == 0);
}

// Five records with distinct fields, added in order a..e with created times out of order.
struct Fixture {
    ManualClock clock;
    std::unique_ptr<DeadLetterStore> store;
    bulwark::WallTime t0;

    explicit Fixture(const Factory& make) : store(fresh(make, clock)), t0(clock.wall_now()) {
        DeadLetter a = letter("sms", "a");
        a.created = t0 + 30s;
        DeadLetter b = letter("email", "b");
        b.reason = DeadLetterReason::not_retryable;
        b.tags = {"vip"};
        b.created = t0 + 10s;
        DeadLetter c = letter("sms", "c");
        c.reason = DeadLetterReason::expired;
        c.tags = {"vip", "eu"};
        c.created = t0 + 20s;
        DeadLetter d = letter("push", "d");
        d.created = t0 + 40s;
        DeadLetter e = letter("sms", "e");
        e.reason = DeadLetterReason::expired;
        e.created = t0 + 50s;
        for (const DeadLetter& x : {a, b, c, d, e}) {
            store->add(x);
        }
        REQUIRE(store->categorize(DeadLetterQuery{}.id("c"), "outage") == 1);
        REQUIRE(store->categorize(DeadLetterQuery{}.id("e"), "outage") == 1);
        REQUIRE(store->dismiss(DeadLetterQuery{}.id("d"), "test") == 1);
        const auto result =
            store->reprocess(DeadLetterQuery{}.id("e"), [](const DeadLetter&) { return true; });
        REQUIRE(result.resent == 1);
    }

    std::vector<std::string> ids(const DeadLetterQuery& q) const { return listed(*store, q); }
};

using Ids = std::vector<std::string>;

inline void list_filters_by_each_field(const Factory& make) {
    Fixture f(make);
    CHECK(f.ids(DeadLetterQuery{}) == Ids{"a", "b", "c", "d", "e"});
    CHECK(f.ids(DeadLetterQuery{}.id("c")) == Ids{"c"});
    CHECK(f.ids(DeadLetterQuery{}.id("zz")).empty());
    CHECK(f.ids(DeadLetterQuery{}.type("sms")) == Ids{"a", "c", "e"});
    CHECK(f.ids(DeadLetterQuery{}.type("fax")).empty());
    CHECK(f.ids(DeadLetterQuery{}.status(DeadLetterStatus::pending)) == Ids{"a", "b", "c"});
    CHECK(f.ids(DeadLetterQuery{}.status(DeadLetterStatus::dismissed)) == Ids{"d"});
    CHECK(f.ids(DeadLetterQuery{}.status(DeadLetterStatus::reprocessed)) == Ids{"e"});
    CHECK(f.ids(DeadLetterQuery{}.reason(DeadLetterReason::expired)) == Ids{"c", "e"});
    CHECK(f.ids(DeadLetterQuery{}.reason(DeadLetterReason::not_retryable)) == Ids{"b"});
    CHECK(f.ids(DeadLetterQuery{}.reason(DeadLetterReason::manual)).empty());
    CHECK(f.ids(DeadLetterQuery{}.category("outage")) == Ids{"c", "e"});
    CHECK(f.ids(DeadLetterQuery{}.category("")) == Ids{"a", "b", "d"});
    CHECK(f.ids(DeadLetterQuery{}.tag("vip")) == Ids{"b", "c"});
    CHECK(f.ids(DeadLetterQuery{}.tag("eu")) == Ids{"c"});
    CHECK(f.ids(DeadLetterQuery{}.created_before(f.t0 + 30s)) == Ids{"b", "c"});
    CHECK(f.ids(DeadLetterQuery{}.created_after(f.t0 + 30s)) == Ids{"d", "e"});
}

inline void list_combines_filters_in_add_order(const Factory& make) {
    Fixture f(make);
    CHECK(f.ids(DeadLetterQuery{}.type("sms").status(DeadLetterStatus::pending)) == Ids{"a", "c"});
    CHECK(
        f.ids(DeadLetterQuery{}.type("sms").reason(DeadLetterReason::expired).category("outage")) ==
        Ids{"c", "e"});
    CHECK(f.ids(DeadLetterQuery{}.tag("vip").tag("eu")) == Ids{"c"});
    CHECK(f.ids(DeadLetterQuery{}.tag("vip").type("email")) == Ids{"b"});
    CHECK(f.ids(DeadLetterQuery{}.created_after(f.t0 + 10s).created_before(f.t0 + 50s)) ==
          Ids{"a", "c", "d"});
    CHECK(f.ids(DeadLetterQuery{}.id("c").type("email")).empty());
    CHECK(f.ids(DeadLetterQuery{}.id("c").type("sms")) == Ids{"c"});
}

inline void list_stops_at_the_limit(const Factory& make) {
    Fixture f(make);
    CHECK(f.ids(DeadLetterQuery{}.limit(2)) == Ids{"a", "b"});
    CHECK(f.ids(DeadLetterQuery{}.type("sms").limit(2)) == Ids{"a", "c"});
    CHECK(f.ids(DeadLetterQuery{}.limit(0)).empty());
    CHECK(f.ids(DeadLetterQuery{}.limit(100)).size() == 5);
    DeadLetterQuery named;
    named.type("sms").limit(1);
    CHECK(f.ids(named) == Ids{"a"});
    const DeadLetterQuery& bound = DeadLetterQuery{}.type("email");  // no dangling reference
    CHECK(f.ids(bound) == Ids{"b"});
}

inline void dismiss_changes_only_pending_matches_and_counts_them(const Factory& make) {
    Fixture f(make);
    // sms: a and c pending, e reprocessed (stays reprocessed).
    CHECK(f.store->dismiss(DeadLetterQuery{}.type("sms"), "duplicate") == 2);
    CHECK(status_of(*f.store, "a") == DeadLetterStatus::dismissed);
    CHECK(status_of(*f.store, "c") == DeadLetterStatus::dismissed);
    CHECK(status_of(*f.store, "e") == DeadLetterStatus::reprocessed);
    CHECK(status_of(*f.store, "b") == DeadLetterStatus::pending);
    CHECK(f.store->get("a")->note == "duplicate");
    CHECK(f.store->get("b")->note.empty());
    CHECK(f.store->get("d")->note == "test");  // dismissed before: untouched
    CHECK(f.store->dismiss(DeadLetterQuery{}.type("sms"), "again") == 0);
    CHECK(f.store->get("a")->note == "duplicate");
    CHECK(f.store->dismiss(DeadLetterQuery{}.type("fax"), "none") == 0);
    check_stats_match_records(*f.store);
}

inline void dismiss_stops_at_the_limit(const Factory& make) {
    Fixture f(make);
    // The limit counts records dismissed, so it reaches past non-pending matches.
    CHECK(f.store->dismiss(DeadLetterQuery{}.limit(2), "batch") == 2);
    CHECK(f.ids(DeadLetterQuery{}.status(DeadLetterStatus::pending)) == Ids{"c"});
    CHECK(f.store->dismiss(DeadLetterQuery{}.limit(0), "none") == 0);
    CHECK(f.store->dismiss(DeadLetterQuery{}.limit(5), "rest") == 1);
}

inline void categorize_sets_the_category_and_adds_missing_tags(const Factory& make) {
    Fixture f(make);
    CHECK(f.store->categorize(DeadLetterQuery{}.tag("vip"), "provider-outage",
                              {"eu", "sms", "sms"}) == 2);
    const auto b = f.store->get("b");
    const auto c = f.store->get("c");
    CHECK(b->category == "provider-outage");
    CHECK(b->tags == Ids{"vip", "eu", "sms"});
    CHECK(c->category == "provider-outage");
    CHECK(c->tags == Ids{"vip", "eu", "sms"});
    CHECK(f.store->get("a")->category.empty());
    CHECK(f.store->get("a")->tags.empty());
    // Again: no duplicate tags, still counted as matched.
    CHECK(f.store->categorize(DeadLetterQuery{}.tag("vip"), "provider-outage", {"eu"}) == 2);
    CHECK(f.store->get("c")->tags == Ids{"vip", "eu", "sms"});
    // Any status, and the limit.
    CHECK(f.store->categorize(DeadLetterQuery{}.status(DeadLetterStatus::dismissed), "noise") == 1);
    CHECK(f.store->get("d")->category == "noise");
    CHECK(f.store->categorize(DeadLetterQuery{}.limit(1), "first") == 1);
    CHECK(f.store->get("a")->category == "first");
    CHECK(f.store->get("b")->category == "provider-outage");
    CHECK(f.store->categorize(DeadLetterQuery{}.type("fax"), "none") == 0);
    check_stats_match_records(*f.store);
}

inline void reprocess_marks_a_resent_record_reprocessed(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    DeadLetter d = letter("sms", "m1");
    d.attempts = {{clock.wall_now(), "sms", "503"}};
    store->add(d);
    clock.advance(1h);
    std::vector<DeadLetter> seen;
    const auto r = store->reprocess(DeadLetterQuery{}, [&](const DeadLetter& x) {
        seen.push_back(x);
        return true;
    });
    CHECK(r.matched == 1);
    CHECK(r.resent == 1);
    CHECK(r.failed == 0);
    CHECK_FALSE(r.cancelled);
    CHECK_FALSE(r.already_running);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].id == "m1");
    CHECK(seen[0].payload == "payload");
    CHECK(seen[0].status == DeadLetterStatus::pending);
    CHECK(seen[0].redrives == 0);
    const auto got = store->get("m1");
    REQUIRE(got.has_value());
    CHECK(got->status == DeadLetterStatus::reprocessed);
    CHECK(got->redrives == 1);
    REQUIRE(got->attempts.size() == 2);
    CHECK(got->attempts[1].at == clock.wall_now());
    CHECK(got->attempts[1].channel == "reprocess");
    CHECK(got->attempts[1].error.empty());
    CHECK(got->last_attempt == clock.wall_now());
    CHECK(got->created == d.attempts[0].at);  // retention still counts from the first time
    CHECK(store->stats().resent == 1);
    // Resolved: a second reprocess finds nothing.
    CHECK(store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return true; }).matched == 0);
}

inline void a_failed_or_throwing_handler_leaves_the_record_pending(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "false"));
    store->add(letter("sms", "throws"));
    store->add(letter("sms", "throws-int"));
    bulwark::ReprocessOptions options;
    options.channel = "sms-backup";
    const auto r = store->reprocess(
        DeadLetterQuery{},
        [](const DeadLetter& d) -> bool {
            if (d.id == "throws") {
                throw std::runtime_error("backup provider 500");
            }
            if (d.id == "throws-int") {
                throw 42;
            }
            return false;
        },
        options);
    CHECK(r.matched == 3);
    CHECK(r.failed == 3);
    CHECK(r.resent == 0);
    for (const char* id : {"false", "throws", "throws-int"}) {
        const auto got = store->get(id);
        REQUIRE(got.has_value());
        CHECK(got->status == DeadLetterStatus::pending);
        CHECK(got->redrives == 1);
        REQUIRE(got->attempts.size() == 1);
        CHECK(got->attempts[0].channel == "sms-backup");
        CHECK(got->attempts[0].at == clock.wall_now());
        CHECK_FALSE(got->attempts[0].error.empty());
    }
    CHECK(store->get("false")->attempts[0].error == "handler returned false");
    CHECK(store->get("throws")->attempts[0].error == "backup provider 500");
    CHECK(store->stats().redrive_failures == 3);
    // Still pending: the next redrive picks them up again and counts on.
    clock.advance(1s);
    CHECK(store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return false; }).failed == 3);
    CHECK(store->get("false")->redrives == 2);
    CHECK(store->get("false")->attempts.size() == 2);
    CHECK(store->get("false")->last_attempt == clock.wall_now());
}

inline void reprocess_hands_over_only_pending_matches(const Factory& make) {
    Fixture f(make);
    std::vector<std::string> seen;
    const auto r = f.store->reprocess(DeadLetterQuery{}, [&](const DeadLetter& d) {
        seen.push_back(d.id);
        return false;
    });
    CHECK(seen == Ids{"a", "b", "c"});  // d dismissed, e reprocessed
    CHECK(r.matched == 3);
    seen.clear();
    f.store->reprocess(DeadLetterQuery{}.type("sms"), [&](const DeadLetter& d) {
        seen.push_back(d.id);
        return false;
    });
    CHECK(seen == Ids{"a", "c"});
    CHECK(f.store->get("d")->redrives == 0);
    CHECK(f.store->get("e")->redrives == 1);
}

inline void reprocess_skips_records_at_max_redrives(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "poison"));
    store->add(letter("sms", "late"));
    bulwark::ReprocessOptions options;
    options.max_redrives = 2;
    const auto fail = [](const DeadLetter&) {
        return false;
    };
    CHECK(store->reprocess(DeadLetterQuery{}.id("poison"), fail, options).failed == 1);
    CHECK(store->reprocess(DeadLetterQuery{}.id("poison"), fail, options).failed == 1);
    std::vector<std::string> seen;
    const auto r = store->reprocess(
        DeadLetterQuery{},
        [&](const DeadLetter& d) {
            seen.push_back(d.id);
            return true;
        },
        options);
    CHECK(seen == Ids{"late"});
    CHECK(r.matched == 2);
    CHECK(r.skipped_limit == 1);
    CHECK(r.resent == 1);
    const auto poison = store->get("poison");
    CHECK(poison->status == DeadLetterStatus::pending);  // left for a person to decide
    CHECK(poison->redrives == 2);
    CHECK(poison->attempts.size() == 2);
    // Unlimited again with max_redrives = 0.
    CHECK(store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return true; }).resent == 1);
}

inline void reprocess_hands_over_at_most_limit_records(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    for (const char* id : {"stuck", "r1", "r2", "r3", "r4"}) {
        store->add(letter("sms", id));
    }
    bulwark::ReprocessOptions options;
    options.max_redrives = 1;
    store->reprocess(
        DeadLetterQuery{}.id("stuck"), [](const DeadLetter&) { return false; }, options);
    std::vector<std::string> seen;
    const auto record = [&](const DeadLetter& d) {
        seen.push_back(d.id);
        return true;
    };
    // A record at the cycle limit does not use up the batch.
    const auto r = store->reprocess(DeadLetterQuery{}.limit(2), record, options);
    CHECK(seen == Ids{"r1", "r2"});
    CHECK(r.skipped_limit == 1);
    CHECK(r.resent == 2);
    seen.clear();
    store->reprocess(DeadLetterQuery{}.limit(2), record, options);
    CHECK(seen == Ids{"r3", "r4"});
    CHECK(store->reprocess(DeadLetterQuery{}.limit(0), record).matched == 0);
}

inline void cancel_stops_before_the_next_record(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    for (const char* id : {"m1", "m2", "m3", "m4"}) {
        store->add(letter("sms", id));
    }
    bulwark::Context ctx;
    bulwark::ReprocessOptions options;
    options.cancel = &ctx;
    int calls = 0;
    const auto r = store->reprocess(
        DeadLetterQuery{},
        [&](const DeadLetter&) {
            if (++calls == 2) {
                ctx.cancel();
            }
            return true;
        },
        options);
    CHECK(calls == 2);
    CHECK(r.cancelled);
    CHECK(r.matched == 4);
    CHECK(r.resent == 2);
    CHECK(status_of(*store, "m1") == DeadLetterStatus::reprocessed);
    CHECK(status_of(*store, "m2") == DeadLetterStatus::reprocessed);  // handled stays handled
    CHECK(status_of(*store, "m3") == DeadLetterStatus::pending);
    CHECK(store->get("m3")->redrives == 0);
    CHECK(store->get("m4")->attempts.empty());
    // Cancelled before it starts: nothing handed over.
    calls = 0;
    const auto none = store->reprocess(
        DeadLetterQuery{},
        [&](const DeadLetter&) {
            ++calls;
            return true;
        },
        options);
    CHECK(calls == 0);
    CHECK(none.cancelled);
    CHECK(none.resent == 0);
}

inline void the_handler_may_call_the_store(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m1"));
    store->add(letter("sms", "m2"));
    std::string added;
    const auto r = store->reprocess(DeadLetterQuery{}.id("m1"), [&](const DeadLetter& d) {
        CHECK(store->get(d.id)->status == DeadLetterStatus::pending);
        CHECK(store->list(DeadLetterQuery{}.type("sms")).size() == 2);
        CHECK(store->stats().total == 2);
        added = store->add(letter("sms"));  // a follow-up dead letter
        CHECK(store->categorize(DeadLetterQuery{}.id("m2"), "seen") == 1);
        CHECK(store->dismiss(DeadLetterQuery{}.id("m2"), "handled elsewhere") == 1);
        return true;
    });
    CHECK(r.resent == 1);
    CHECK(store->size() == 3);
    CHECK(status_of(*store, added) == DeadLetterStatus::pending);
    CHECK(status_of(*store, "m2") == DeadLetterStatus::dismissed);
}

inline void only_one_reprocess_runs_at_a_time(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m1"));
    store->add(letter("sms", "m2"));
    bulwark::ReprocessResult inner;
    int inner_calls = 0;
    const auto outer = store->reprocess(DeadLetterQuery{}.id("m1"), [&](const DeadLetter&) {
        inner = store->reprocess(DeadLetterQuery{}, [&](const DeadLetter&) {
            ++inner_calls;
            return true;
        });
        return true;
    });
    CHECK(outer.resent == 1);
    CHECK_FALSE(outer.already_running);
    CHECK(inner.already_running);
    CHECK(inner.matched == 0);
    CHECK(inner.resent == 0);
    CHECK(inner_calls == 0);
    CHECK(status_of(*store, "m2") == DeadLetterStatus::pending);
    CHECK(store->get("m2")->redrives == 0);
    // Once the first has returned, the next runs.
    const auto after = store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return true; });
    CHECK_FALSE(after.already_running);
    CHECK(after.resent == 1);
}

inline void a_record_changed_during_the_redrive_is_skipped(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m1"));
    DeadLetter old = letter("sms", "old");
    old.created = clock.wall_now() - 48h;
    store->add(old);
    store->add(letter("sms", "m3"));
    store->add(letter("sms", "m4"));
    std::vector<std::string> seen;
    const auto r = store->reprocess(DeadLetterQuery{}, [&](const DeadLetter& d) {
        seen.push_back(d.id);
        if (d.id == "m1") {
            store->dismiss(DeadLetterQuery{}.id("m3"), "operator");
            store->purge(clock.wall_now() - 24h);  // removes "old"
        }
        return true;
    });
    CHECK(seen == Ids{"m1", "m4"});
    CHECK(r.matched == 4);
    CHECK(r.resent == 2);
    CHECK(r.skipped_changed == 2);
    CHECK(status_of(*store, "m3") == DeadLetterStatus::dismissed);
    CHECK(store->get("m3")->redrives == 0);
    CHECK_FALSE(store->get("old").has_value());
}

inline void a_record_that_no_longer_matches_at_its_turn_is_skipped(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    for (const char* id : {"a", "b", "c"}) {
        store->add(letter("sms", id));
    }
    store->categorize(DeadLetterQuery{}, "outage");
    std::vector<std::string> seen;
    const auto r = store->reprocess(DeadLetterQuery{}.category("outage"), [&](const DeadLetter& d) {
        seen.push_back(d.id);
        if (d.id == "a") {  // an operator takes "b" out of the redrive meanwhile
            store->categorize(DeadLetterQuery{}.id("b"), "do-not-resend");
        }
        return true;
    });
    CHECK(seen == Ids{"a", "c"});
    CHECK(r.resent == 2);
    CHECK(r.skipped_changed == 1);
    CHECK(status_of(*store, "b") == DeadLetterStatus::pending);
    CHECK(store->get("b")->redrives == 0);
}

inline void reprocess_hands_over_only_records_that_matched_when_it_started(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m1"));
    std::vector<std::string> seen;
    store->reprocess(DeadLetterQuery{}, [&](const DeadLetter& d) {
        seen.push_back(d.id);
        store->add(letter("sms", "late-" + d.id));
        return false;
    });
    CHECK(seen == Ids{"m1"});
    CHECK(store->size() == 2);
    CHECK(store->get("late-m1")->redrives == 0);
}

inline void reprocess_refuses_an_empty_handler(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    store->add(letter("sms", "m1"));
    CHECK_THROWS_AS(store->reprocess(DeadLetterQuery{}, bulwark::DeadLetterHandler{}),
                    std::invalid_argument);
    // The refusal did not leave a redrive marked as running.
    CHECK(store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return true; }).resent == 1);
}

inline void the_attempt_history_keeps_the_newest_entries(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const std::size_t max = store->limits().max_attempts;
    DeadLetter d = letter("sms", "m1");
    for (std::size_t i = 0; i < max + 3; ++i) {
        d.attempts.push_back({clock.wall_now(), "sms", "e" + std::to_string(i)});
    }
    store->add(d);
    auto got = store->get("m1");
    REQUIRE(got->attempts.size() == max);
    CHECK(got->attempts.front().error == "e3");
    CHECK(got->attempts.back().error == "e" + std::to_string(max + 2));
    for (int i = 0; i < 5; ++i) {
        clock.advance(1s);
        store->reprocess(DeadLetterQuery{}, [](const DeadLetter&) { return false; });
    }
    got = store->get("m1");
    CHECK(got->attempts.size() == max);
    CHECK(got->redrives == 5);  // counts every redrive, not just those still in the history
    CHECK(got->attempts.back().at == clock.wall_now());
    CHECK(got->attempts.back().error == "handler returned false");
}

inline void purge_removes_records_created_before_the_cutoff(const Factory& make) {
    ManualClock clock;
    auto store = fresh(make, clock);
    const bulwark::WallTime t0 = clock.wall_now();
    store->add(letter("sms", "day1"));
    clock.advance(24h);
    store->add(letter("sms", "day2"));
    clock.advance(24h);
    store->add(letter("sms", "day3"));
    // Old but redriven recently: retention counts from created, not from the last attempt.
    store->reprocess(DeadLetterQuery{}.id("day1"), [](const DeadLetter&) { return false; });
    CHECK(store->get("day1")->last_attempt == clock.wall_now());
    store->dismiss(DeadLetterQuery{}.id("day2"), "x");
    CHECK(store->purge(t0) == 0);             // strictly before
    CHECK(store->purge(t0 + 24h + 1s) == 2);  // any status
    CHECK(listed(*store, DeadLetterQuery{}) == Ids{"day3"});
    CHECK(store->purge(t0 + 24h + 1s) == 0);
    CHECK(store->stats().purged == 2);
    CHECK(store->size() == 1);
    // A purged id may be added again: it is a new record.
    CHECK(store->add(letter("sms", "day1")) == "day1");
    CHECK(store->get("day1")->created == clock.wall_now());
    check_stats_match_records(*store);
}

inline void stats_add_up(const Factory& make) {
    Fixture f(make);
    f.clock.advance(1h);
    DeadLetter manual = letter("email", "f");
    manual.reason = DeadLetterReason::manual;
    f.store->add(manual);
    f.store->add(letter("email", "f"));  // duplicate
    f.store->categorize(DeadLetterQuery{}.type("email"), "bounced");
    f.store->reprocess(DeadLetterQuery{}.id("a"), [](const DeadLetter&) { return false; });
    const bulwark::DeadLetterStats s = f.store->stats();
    CHECK(s.total == 6);
    CHECK(s.pending == 4);  // a, b, c, f
    CHECK(s.reprocessed == 1);
    CHECK(s.dismissed == 1);
    CHECK(s.count(DeadLetterReason::retries_exhausted) == 2);  // a, d
    CHECK(s.count(DeadLetterReason::not_retryable) == 1);
    CHECK(s.count(DeadLetterReason::expired) == 2);
    CHECK(s.count(DeadLetterReason::manual) == 1);
    CHECK(s.by_type == std::map<std::string, std::size_t>{{"email", 2}, {"push", 1}, {"sms", 3}});
    CHECK(s.by_category ==
          std::map<std::string, std::size_t>{{"", 2}, {"bounced", 2}, {"outage", 2}});
    CHECK(s.by_type_and_reason.at({"sms", DeadLetterReason::expired}) == 2);  // c, e
    CHECK(s.by_type_and_reason.at({"email", DeadLetterReason::manual}) == 1);
    CHECK(s.by_type_and_reason.count({"push", DeadLetterReason::expired}) == 0);
    CHECK(s.added == 6);
    CHECK(s.duplicate_adds == 1);
    CHECK(s.resent == 1);
    CHECK(s.redrive_failures == 1);
    CHECK(s.purged == 0);
    check_stats_match_records(*f.store);
    f.store->purge(f.t0 + 25s);  // b, c
    check_stats_match_records(*f.store);
    CHECK(f.store->stats().by_type.count("email") == 1);
    f.store->purge(f.t0 + 24h);
    const bulwark::DeadLetterStats empty = f.store->stats();
    CHECK(empty.total == 0);
    CHECK(empty.by_type.empty());  // no zero entries left behind
    CHECK(empty.by_category.empty());
}

}  // namespace dead_letter_conformance
}  // namespace bulwark_test

#define BULWARK_DLC_CASE(store_name, factory, title, check)          \
    TEST_CASE(store_name ": " title, "[dead_letter][conformance]") { \
        ::bulwark_test::dead_letter_conformance::check(factory);     \
    }

// Expands to one test case per rule for the store `factory` makes (a callable
// `std::unique_ptr<bulwark::DeadLetterStore>(bulwark::ManualClock&)`); `store_name` is a string
// literal.
#define BULWARK_DEAD_LETTER_CONFORMANCE(store_name, factory)                                      \
    BULWARK_DLC_CASE(store_name, factory, "add assigns a unique dl- id when none is given",       \
                     add_assigns_unique_ids)                                                      \
    BULWARK_DLC_CASE(store_name, factory, "add keeps a given id", add_keeps_a_given_id)           \
    BULWARK_DLC_CASE(store_name, factory, "add sets created from the clock unless given",         \
                     add_sets_created_from_the_clock_unless_given)                                \
    BULWARK_DLC_CASE(store_name, factory, "add takes last_attempt from the history unless given", \
                     add_takes_last_attempt_from_the_history_unless_given)                        \
    BULWARK_DLC_CASE(store_name, factory, "add stores every record pending",                      \
                     add_stores_every_record_pending)                                             \
    BULWARK_DLC_CASE(store_name, factory, "adding an existing id again stores nothing",           \
                     adding_an_existing_id_again_stores_nothing)                                  \
    BULWARK_DLC_CASE(store_name, factory, "get of an unknown id is nullopt",                      \
                     get_of_an_unknown_id_is_nullopt)                                             \
    BULWARK_DLC_CASE(store_name, factory, "every field round-trips", every_field_round_trips)     \
    BULWARK_DLC_CASE(store_name, factory, "payload bytes round-trip, NULs included",              \
                     payload_bytes_round_trip_nuls_included)                                      \
    BULWARK_DLC_CASE(store_name, factory, "an oversize payload is refused naming the limit",      \
                     an_oversize_payload_is_refused_naming_the_limit)                             \
    BULWARK_DLC_CASE(store_name, factory, "oversize text is refused naming the limit",            \
                     oversize_text_is_refused_naming_the_limit)                                   \
    BULWARK_DLC_CASE(store_name, factory, "oversize notes, categories and tags are refused",      \
                     oversize_notes_categories_and_tags_are_refused)                              \
    BULWARK_DLC_CASE(store_name, factory, "a redrive's error text is cut to a kibibyte",          \
                     a_redrive_error_text_is_cut_to_a_kibibyte)                                   \
    BULWARK_DLC_CASE(store_name, factory,                                                         \
                     "a record that no longer matches at its turn is skipped",                    \
                     a_record_that_no_longer_matches_at_its_turn_is_skipped)                      \
    BULWARK_DLC_CASE(store_name, factory, "an out-of-range reason is refused",                    \
                     an_out_of_range_reason_is_refused)                                           \
    BULWARK_DLC_CASE(store_name, factory, "list filters by each field",                           \
                     list_filters_by_each_field)                                                  \
    BULWARK_DLC_CASE(store_name, factory, "list combines filters, in add order",                  \
                     list_combines_filters_in_add_order)                                          \
    BULWARK_DLC_CASE(store_name, factory, "list stops at the limit", list_stops_at_the_limit)     \
    BULWARK_DLC_CASE(store_name, factory, "dismiss changes only pending matches and counts them", \
                     dismiss_changes_only_pending_matches_and_counts_them)                        \
    BULWARK_DLC_CASE(store_name, factory, "dismiss stops at the limit",                           \
                     dismiss_stops_at_the_limit)                                                  \
    BULWARK_DLC_CASE(store_name, factory,                                                         \
                     "categorize sets the category and adds missing tags only",                   \
                     categorize_sets_the_category_and_adds_missing_tags)                          \
    BULWARK_DLC_CASE(store_name, factory, "reprocess marks a resent record reprocessed",          \
                     reprocess_marks_a_resent_record_reprocessed)                                 \
    BULWARK_DLC_CASE(store_name, factory,                                                         \
                     "a failed or throwing handler leaves the record pending",                    \
                     a_failed_or_throwing_handler_leaves_the_record_pending)                      \
    BULWARK_DLC_CASE(store_name, factory, "reprocess hands over only pending matches",            \
                     reprocess_hands_over_only_pending_matches)                                   \
    BULWARK_DLC_CASE(store_name, factory, "reprocess skips records at max_redrives",              \
                     reprocess_skips_records_at_max_redrives)                                     \
    BULWARK_DLC_CASE(store_name, factory, "reprocess hands over at most limit records",           \
                     reprocess_hands_over_at_most_limit_records)                                  \
    BULWARK_DLC_CASE(store_name, factory, "cancel stops reprocess before the next record",        \
                     cancel_stops_before_the_next_record)                                         \
    BULWARK_DLC_CASE(store_name, factory, "the reprocess handler may call the store",             \
                     the_handler_may_call_the_store)                                              \
    BULWARK_DLC_CASE(store_name, factory, "only one reprocess runs at a time",                    \
                     only_one_reprocess_runs_at_a_time)                                           \
    BULWARK_DLC_CASE(store_name, factory, "a record changed during the redrive is skipped",       \
                     a_record_changed_during_the_redrive_is_skipped)                              \
    BULWARK_DLC_CASE(store_name, factory,                                                         \
                     "reprocess hands over only records that matched when it started",            \
                     reprocess_hands_over_only_records_that_matched_when_it_started)              \
    BULWARK_DLC_CASE(store_name, factory, "reprocess refuses an empty handler",                   \
                     reprocess_refuses_an_empty_handler)                                          \
    BULWARK_DLC_CASE(store_name, factory, "the attempt history keeps the newest entries",         \
                     the_attempt_history_keeps_the_newest_entries)                                \
    BULWARK_DLC_CASE(store_name, factory, "purge removes records created before the cutoff",      \
                     purge_removes_records_created_before_the_cutoff)                             \
    BULWARK_DLC_CASE(store_name, factory, "stats add up", stats_add_up)

#endif  // BULWARK_TESTS_DEAD_LETTER_CONFORMANCE_HPP
