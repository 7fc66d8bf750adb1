// R4, out of memory: every allocation that an operation of FileDeadLetterStore makes fails in
// turn, once and from then on, and the store stays as it was or as the operation left it, or
// poisons itself; it never crashes, leaks (LeakSanitizer, in the ASan build) or corrupts its
// journal, and a reopen shows the state before or after the operation. The same sweep for
// InMemoryQueueStore's push and complete (all or nothing) and for a DeliveryEngine pass (every
// message ends sent, none stays in flight). This binary replaces the
// global allocation functions with ones that can fail, so it is an executable of its own. They
// end in malloc/free, which the sanitizers intercept, so it runs under ASan and TSan too.
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/dead_letter.hpp>
#include <bulwark/delivery.hpp>
#include <bulwark/detail/striped_counter.hpp>
#include <bulwark/file_dead_letter_store.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>
#include <bulwark/in_memory_queue_store.hpp>

#include "catch.hpp"

namespace {

// ---- the failing allocator --------------------------------------------------------------------

enum class FailMode { once, forever };

// Per thread, so that nothing another thread allocates (none does here) can use up a countdown.
// Trivial, hence zero-initialised before any allocation can happen.
struct FailState {
    bool armed;
    bool forever;
    bool hit;
    long countdown;  // allocations left until the one that fails
};
thread_local FailState t_fail;

// Not inlined (any of these): GCC would otherwise pair the inlined malloc with `delete` and warn
// (-Wmismatched-new-delete) although every pair ends in malloc/free.
BULWARK_NOINLINE bool injected_failure() noexcept {
    FailState& s = t_fail;
    if (!s.armed) {
        return false;
    }
    if (s.hit) {
        return s.forever;
    }
    if (--s.countdown > 0) {
        return false;
    }
    s.hit = true;
    return true;
}

BULWARK_NOINLINE void* allocate_nothrow(std::size_t size) noexcept {
    return injected_failure() ? nullptr : std::malloc(size == 0 ? 1 : size);
}

BULWARK_NOINLINE void* allocate(std::size_t size) {
    if (void* p = allocate_nothrow(size)) {
        return p;
    }
    throw std::bad_alloc();
}

BULWARK_NOINLINE void* allocate_aligned_nothrow(std::size_t size, std::align_val_t align) noexcept {
    if (injected_failure()) {
        return nullptr;
    }
    std::size_t alignment = static_cast<std::size_t>(align);
    if (alignment < sizeof(void*)) {
        alignment = sizeof(void*);
    }
    void* p = nullptr;
    return ::posix_memalign(&p, alignment, size == 0 ? 1 : size) == 0 ? p : nullptr;
}

BULWARK_NOINLINE void* allocate_aligned(std::size_t size, std::align_val_t align) {
    if (void* p = allocate_aligned_nothrow(size, align)) {
        return p;
    }
    throw std::bad_alloc();
}

BULWARK_NOINLINE void release(void* p) noexcept {
    std::free(p);
}

// Makes the nth allocation on this thread fail (once: only it; forever: it and every later one)
// until destroyed.
class FailingAllocations {
public:
    FailingAllocations(long nth, FailMode mode) noexcept {
        t_fail = FailState{true, mode == FailMode::forever, false, nth};
    }
    FailingAllocations(const FailingAllocations&) = delete;
    FailingAllocations& operator=(const FailingAllocations&) = delete;
    ~FailingAllocations() { t_fail.armed = false; }

    bool hit() const noexcept { return t_fail.hit; }
};

}  // namespace

// Every ordinary form is replaced, so that no allocation is served by one allocator and freed by
// another (ASan reports that as a mismatch).
void* operator new(std::size_t size) {
    return allocate(size);
}
void* operator new[](std::size_t size) {
    return allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return allocate_nothrow(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return allocate_nothrow(size);
}
void* operator new(std::size_t size, std::align_val_t align) {
    return allocate_aligned(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align) {
    return allocate_aligned(size, align);
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return allocate_aligned_nothrow(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return allocate_aligned_nothrow(size, align);
}
void operator delete(void* p) noexcept {
    release(p);
}
void operator delete[](void* p) noexcept {
    release(p);
}
void operator delete(void* p, std::size_t) noexcept {
    release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    release(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    release(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    release(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    release(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    release(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    release(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    release(p);
}

namespace {

using bulwark::DeadLetter;
using bulwark::DeadLetterQuery;
using bulwark::FileDeadLetterStore;
using bulwark::FileDeadLetterStoreOptions;
using bulwark::ManualClock;

// The POSIX file system without its syncs: fsync is what would make hundreds of opens per
// operation slow, and it allocates nothing. No power is lost here; durability is R2's test.
class NoSyncFs final : public bulwark::FileSystem {
public:
    Info info(const std::string& path) override { return fs().info(path); }
    void make_dir(const std::string& path) override { fs().make_dir(path); }
    Handle open(const std::string& path, bool create, bool truncate) override {
        return fs().open(path, create, truncate);
    }
    Handle create_new(const std::string& path) override { return fs().create_new(path); }
    void close(Handle file) noexcept override { fs().close(file); }
    std::string read_all(Handle file) override { return fs().read_all(file); }
    void write_at(Handle file, std::uint64_t offset, std::string_view data) override {
        fs().write_at(file, offset, data);
    }
    void sync(Handle /*file*/) override {}
    void truncate(Handle file, std::uint64_t size) override { fs().truncate(file, size); }
    void rename(const std::string& from, const std::string& to) override { fs().rename(from, to); }
    void sync_dir(const std::string& /*path*/) override {}
    void remove(const std::string& path) override { fs().remove(path); }
    Handle lock(const std::string& path) override { return fs().lock(path); }

private:
    static bulwark::FileSystem& fs() noexcept { return bulwark::default_file_system(); }
};

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/bulwark-oom-XXXXXX";
        const char* made = ::mkdtemp(pattern);
        REQUIRE(made != nullptr);
        path_ = made;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }

    std::string store() const { return path_ + "/dlq"; }

private:
    std::string path_;
};

// Every field of every record in list order, and the durable counters: two stores hold the same
// state iff equal.
std::string dump(const bulwark::DeadLetterStore& store) {
    std::ostringstream out;
    const auto t = [](bulwark::WallTime w) {
        return w.time_since_epoch().count();
    };
    for (const DeadLetter& d : store.list()) {
        out << d.id << '|' << d.type << '|' << d.payload.size() << ':' << d.payload << '|'
            << d.error << '|' << static_cast<int>(d.reason) << '|' << d.category << '|';
        for (const std::string& tag : d.tags) {
            out << tag << ',';
        }
        out << '|';
        for (const bulwark::DeadLetterAttempt& a : d.attempts) {
            out << t(a.at) << '/' << a.channel << '/' << a.error << ',';
        }
        out << '|' << t(d.created) << '|' << t(d.last_attempt) << '|' << static_cast<int>(d.status)
            << '|' << d.redrives << '|' << d.note << '\n';
    }
    const bulwark::DeadLetterStats s = store.stats();
    out << "added " << s.added << " evicted " << s.evicted << " purged " << s.purged << " resent "
        << s.resent << " redrive_failures " << s.redrive_failures << '\n';
    return out.str();
}

bulwark::WallTime day(int n) {
    return bulwark::WallTime{std::chrono::hours(24 * (20000 + n))};
}

// Letter i: created on day i, a payload of `payload` bytes, every other one tagged.
DeadLetter letter(int i, std::size_t payload = 40) {
    static const char* const types[] = {"sms", "email", "push"};
    DeadLetter d;
    d.id = "m" + std::to_string(i);
    d.type = types[i % 3];
    d.payload.assign(payload, static_cast<char>('a' + i % 26));
    d.error = "provider 503";
    d.reason = static_cast<bulwark::DeadLetterReason>(i % 6);
    d.created = day(i);
    if (i % 2 == 1) {
        d.tags = {"odd"};
    }
    return d;
}

DeadLetter after_letter() {
    DeadLetter d = letter(1000);
    d.id = "after-oom";
    return d;
}

using Step = std::function<void(FileDeadLetterStore&)>;

// One operation under test: the state it starts from and what it does.
struct Operation {
    FileDeadLetterStoreOptions options;
    Step setup;  // builds the starting state (no failures)
    Step run;    // fails at every allocation in turn (building its arguments too: a few rounds
                 // fail in the test's own code, before the store is called, which is harmless)
    // Prefixes of `run` whose states an interrupted run may also leave: each is durable on its
    // own (one reprocess outcome after another).
    std::vector<Step> partial;
};

// The journal bytes of a store, to start each round from a copy of them.
std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A store directory (0700) holding `journal` (0600), as a store leaves them.
void write_store(const std::string& dir, const std::string& journal) {
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    const std::string path = dir + "/journal";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, journal.data(), journal.size()) == static_cast<ssize_t>(journal.size()));
    REQUIRE(::close(fd) == 0);
}

struct Fixture {
    NoSyncFs fs;
    FileDeadLetterStoreOptions options;
    std::string journal;           // the starting state, on disk
    std::string before;            // dump() of it
    std::string after;             // dump() once the operation ran
    std::set<std::string> states;  // what a reopen may show: before, after and the partials

    std::unique_ptr<FileDeadLetterStore> open(const std::string& dir, ManualClock& clock) {
        return std::make_unique<FileDeadLetterStore>(dir, options, fs, clock);
    }

    // The state `steps` leave, from a copy of the starting journal.
    std::string run_clean(const std::vector<const Step*>& steps) {
        TempDir temp;
        write_store(temp.store(), journal);
        ManualClock clock;
        auto store = open(temp.store(), clock);
        for (const Step* step : steps) {
            (*step)(*store);
        }
        return dump(*store);
    }
};

Fixture prepare(const Operation& op) {
    Fixture f;
    f.options = op.options;
    TempDir temp;
    {
        ManualClock clock;
        auto store = f.open(temp.store(), clock);
        op.setup(*store);
    }
    f.journal = read_file(temp.store() + "/journal");
    f.before = f.run_clean({});
    f.after = op.run ? f.run_clean({&op.run}) : f.before;
    f.states = {f.before, f.after};
    for (const Step& step : op.partial) {
        f.states.insert(f.run_clean({&step}));
    }
    return f;
}

// Reopens `dir` (no failures): the state must be one of `allowed`, the journal whole; an add
// then survives another reopen.
void check_reopen(Fixture& f, const std::string& dir, const std::set<std::string>& allowed) {
    ManualClock clock;
    auto store = f.open(dir, clock);
    const std::string reopened = dump(*store);
    CHECK(allowed.count(reopened) == 1);
    CHECK(store->journal_stats().dropped_tail_bytes == 0);
    CHECK(store->journal_stats().corrupt_regions == 0);
    store->add(after_letter());
    const std::string expected = dump(*store);
    store.reset();
    store = f.open(dir, clock);
    CHECK(dump(*store) == expected);
}

// What escaped the operation: nothing, std::bad_alloc, the store's own error or anything else
// (a bug: its text is kept).
enum class Escaped { nothing, bad_alloc, store_error, other };

template <class F>
Escaped run_failing(long nth, FailMode mode, bool& hit, std::string& other, F&& f) {
    Escaped escaped = Escaped::nothing;
    {
        FailingAllocations failing(nth, mode);
        try {
            f();
        } catch (const std::bad_alloc&) {
            escaped = Escaped::bad_alloc;
        } catch (const bulwark::FileDeadLetterStoreError&) {
            escaped = Escaped::store_error;
        } catch (const std::exception& e) {
            escaped = Escaped::other;
            try {
                other = e.what();  // may itself fail while allocations do
            } catch (const std::bad_alloc&) {
                other = "?";  // short: no allocation
            }
        } catch (...) {
            escaped = Escaped::other;
            other = "?";
        }
        hit = failing.hit();
    }
    return escaped;
}

// Fails the 1st, 2nd, ... allocation of `op.run` until a run makes no failing allocation.
// Returns how many rounds that took.
long check_every_allocation(const Operation& op, FailMode mode) {
    Fixture f = prepare(op);
    for (long nth = 1;; ++nth) {
        INFO("failing allocation " << nth << (mode == FailMode::once ? " (once)" : " (onwards)"));
        TempDir temp;
        write_store(temp.store(), f.journal);
        ManualClock clock;
        auto store = f.open(temp.store(), clock);
        bool hit = false;
        std::string other;
        const Escaped escaped = run_failing(nth, mode, hit, other, [&] { op.run(*store); });
        CHECK(other.empty());  // only std::bad_alloc or a FileDeadLetterStoreError may escape
        CHECK(escaped != Escaped::other);
        const bool poisoned = store->poisoned();
        const std::string memory = dump(*store);
        if (escaped == Escaped::nothing) {
            CHECK(memory == f.after);  // a swallowed failure (compaction's) changes no result
        } else if (!poisoned) {
            CHECK(f.states.count(memory) == 1);  // not a mix
            // ...and not the whole change: a call that reports failure did not complete it (a
            // compaction that fails after the mutation stood must not fail the call).
            CHECK(memory != f.after);
        }
        if (poisoned) {
            // It refuses changes; a reopen recovers what the journal holds.
            CHECK_THROWS_AS(store->add(after_letter()), bulwark::DeadLetterStorePoisonedError);
            store.reset();
            check_reopen(f, temp.store(), f.states);
        } else {
            // Memory and disk agree, and the store takes changes.
            store->add(after_letter());
            const std::string expected = dump(*store);
            store.reset();
            check_reopen(f, temp.store(), {expected});
        }
        if (!hit) {
            CHECK(escaped == Escaped::nothing);
            return nth;
        }
    }
}

// Opening the starting journal fails at every allocation in turn: it throws cleanly or opens
// with the whole state, and a reopen shows the whole state.
long check_every_allocation_of_open(const Operation& op, FailMode mode) {
    Fixture f = prepare(op);
    for (long nth = 1;; ++nth) {
        INFO("failing allocation " << nth << (mode == FailMode::once ? " (once)" : " (onwards)"));
        TempDir temp;
        write_store(temp.store(), f.journal);
        ManualClock clock;
        std::unique_ptr<FileDeadLetterStore> store;
        bool hit = false;
        std::string other;
        const Escaped escaped =
            run_failing(nth, mode, hit, other, [&] { store = f.open(temp.store(), clock); });
        CHECK(other.empty());
        CHECK(escaped != Escaped::other);
        const bool opened = store != nullptr;
        CHECK(opened == (escaped == Escaped::nothing));
        if (opened) {
            CHECK_FALSE(store->poisoned());
            CHECK(dump(*store) == f.before);
            store.reset();  // releases the LOCK
        }
        check_reopen(f, temp.store(), {f.before});
        if (!hit) {
            CHECK(opened);
            return nth;
        }
    }
}

// ---- the operations -----------------------------------------------------------------------------

FileDeadLetterStoreOptions small_options() {
    FileDeadLetterStoreOptions o;
    o.max_entries = 8;
    o.max_attempts = 3;
    return o;
}

// Six letters: m1 dismissed, m2 categorized, m3 redriven once (failed).
void varied_setup(FileDeadLetterStore& store) {
    for (int i = 0; i < 6; ++i) {
        store.add(letter(i));
    }
    store.dismiss(DeadLetterQuery{}.id("m1"), "known bad");
    store.categorize(DeadLetterQuery{}.id("m2"), "outage", {"t1", "t2"});
    store.reprocess(DeadLetterQuery{}.id("m3"), [](const DeadLetter&) { return false; });
}

Operation add_with_room() {
    Operation op;
    op.options = small_options();
    op.setup = varied_setup;
    op.run = [](FileDeadLetterStore& s) {
        s.add(letter(6, 300));
    };
    return op;
}

Operation add_that_evicts() {
    Operation op;
    op.options = small_options();
    op.options.max_entries = 6;  // full: the add evicts m1, the add after it m4
    op.setup = [](FileDeadLetterStore& s) {
        varied_setup(s);
        s.dismiss(DeadLetterQuery{}.id("m4"));
    };
    op.run = [](FileDeadLetterStore& s) {
        s.add(letter(6, 300));
    };
    return op;
}

Operation bulk_dismiss() {
    Operation op;
    op.options = small_options();
    op.setup = varied_setup;
    op.run = [](FileDeadLetterStore& s) {
        s.dismiss(DeadLetterQuery{}, "bulk");
    };
    return op;
}

Operation bulk_categorize() {
    Operation op;
    op.options = small_options();
    op.setup = varied_setup;
    op.run = [](FileDeadLetterStore& s) {
        s.categorize(DeadLetterQuery{}, "provider-outage", {"bulk", "t1"});
    };
    return op;
}

Operation bulk_purge() {
    Operation op;
    op.options = small_options();
    op.setup = varied_setup;
    op.run = [](FileDeadLetterStore& s) {
        s.purge(day(4));
    };  // m0..m3
    return op;
}

// One reprocess over the five pending records, in add order: m0 and m2 resent, m3 failed (its
// second attempt), m4 and m5 resent. Each outcome is journaled on its own, so a run cut short
// leaves the first k of them (the same call with limit k).
Operation redrive() {
    Operation op;
    op.options = small_options();
    op.setup = varied_setup;
    const auto first = [](std::size_t k) {
        return [k](FileDeadLetterStore& s) {
            // The handler allocates nothing: one that ran out of memory would be a failed
            // redrive, a different (and correct) result.
            s.reprocess(DeadLetterQuery{}.limit(k),
                        [](const DeadLetter& d) { return d.id != "m3"; });
        };
    };
    op.run = first(10);
    op.partial = {first(1), first(2), first(3), first(4)};
    return op;
}

Operation add_that_compacts() {
    Operation op;
    op.options = small_options();
    op.options.max_entries = 100;
    op.options.compact_min_bytes = 4096;
    op.setup = [](FileDeadLetterStore& s) {
        // A journal just under compact_min_bytes that holds almost nothing live.
        for (int i = 0; s.journal_stats().file_bytes < 3000; ++i) {
            s.add(letter(i, 200));
        }
        s.purge(day(1000));
        REQUIRE(s.journal_stats().compactions == 0);
        REQUIRE(s.size() == 0);
        s.add(letter(500));
    };
    op.run = [](FileDeadLetterStore& s) {
        s.add(letter(501, 1200));
    };
    return op;
}

}  // namespace

TEST_CASE("the failing allocator fails the nth allocation, once or onwards", "[alloc_failure]") {
    {
        FailingAllocations failing(2, FailMode::once);
        auto a = std::make_unique<int>(1);
        CHECK_FALSE(failing.hit());
        CHECK_THROWS_AS(std::make_unique<int>(2), std::bad_alloc);
        CHECK(failing.hit());
        auto c = std::make_unique<int>(3);
        CHECK(*c == 3);
    }
    {
        FailingAllocations failing(1, FailMode::forever);
        CHECK_THROWS_AS(std::make_unique<int>(1), std::bad_alloc);
        CHECK_THROWS_AS(std::make_unique<int>(2), std::bad_alloc);
        CHECK(new (std::nothrow) int(3) == nullptr);
    }
    auto d = std::make_unique<int>(4);  // disarmed
    CHECK(*d == 4);
}

TEST_CASE("FileDeadLetterStore: an add that runs out of memory leaves the store before or after it",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(add_with_room(), FailMode::once) > 1);
    CHECK(check_every_allocation(add_with_room(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: an add that evicts runs out of memory without a half eviction",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(add_that_evicts(), FailMode::once) > 1);
    CHECK(check_every_allocation(add_that_evicts(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: a bulk dismiss out of memory is all or nothing after reopen",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(bulk_dismiss(), FailMode::once) > 1);
    CHECK(check_every_allocation(bulk_dismiss(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: a bulk categorize out of memory is all or nothing after reopen",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(bulk_categorize(), FailMode::once) > 1);
    CHECK(check_every_allocation(bulk_categorize(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: a purge out of memory is all or nothing after reopen",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(bulk_purge(), FailMode::once) > 1);
    CHECK(check_every_allocation(bulk_purge(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: a reprocess out of memory keeps every outcome it recorded",
          "[alloc_failure][file]") {
    CHECK(check_every_allocation(redrive(), FailMode::once) > 1);
    CHECK(check_every_allocation(redrive(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: a compaction out of memory keeps the add it follows",
          "[alloc_failure][file]") {
    {
        // Without failures, the add compacts.
        const Operation op = add_that_compacts();
        TempDir temp;
        NoSyncFs fs;
        ManualClock clock;
        FileDeadLetterStore store(temp.store(), op.options, fs, clock);
        op.setup(store);
        op.run(store);
        REQUIRE(store.journal_stats().compactions == 1);
    }
    CHECK(check_every_allocation(add_that_compacts(), FailMode::once) > 1);
    CHECK(check_every_allocation(add_that_compacts(), FailMode::forever) > 1);
}

TEST_CASE("FileDeadLetterStore: an open out of memory throws cleanly or opens the whole journal",
          "[alloc_failure][file]") {
    Operation op;
    op.options = small_options();
    op.setup = [](FileDeadLetterStore& s) {
        varied_setup(s);
        s.purge(day(1));  // m0
        s.add(letter(7, 500));
    };
    CHECK(check_every_allocation_of_open(op, FailMode::once) > 1);
    CHECK(check_every_allocation_of_open(op, FailMode::forever) > 1);
}

namespace {

bulwark::QueuedMessage queued(std::string id, std::string payload) {
    bulwark::QueuedMessage m;
    m.id = std::move(id);
    m.payload = std::move(payload);
    return m;
}

}  // namespace

TEST_CASE("InMemoryQueueStore: a push out of memory changes nothing, with or without spare nodes",
          "[alloc_failure][queue_store]") {
    using namespace std::chrono_literals;
    const std::string id = "new-" + std::string(40, 'n');
    for (const bool with_spare : {false, true}) {
        for (const bool by_rvalue : {false, true}) {
            for (long nth = 1;; ++nth) {
                bulwark::InMemoryQueueStore s;
                s.push(queued("held-" + std::string(30, 'h'), "x"));
                if (with_spare) {  // a completed message leaves its nodes for the next push
                    s.push(queued("gone-" + std::string(30, 'g'), std::string(10, 'q')));
                    for (const auto& q : s.claim(bulwark::WallTime{}, 10, 10s)) {
                        if (q.id[0] == 'g') {
                            REQUIRE(s.complete(q.id, q.lease));
                        } else {
                            REQUIRE(s.release(q));
                        }
                    }
                }
                const std::size_t before = s.size();
                bulwark::QueuedMessage m = queued(id, std::string(100, 'z'));
                bool hit = false;
                bool threw = false;
                {
                    FailingAllocations fail(nth, FailMode::once);
                    try {
                        if (by_rvalue) {
                            s.push(std::move(m));
                        } else {
                            s.push(m);
                        }
                    } catch (const std::bad_alloc&) {
                        threw = true;
                    }
                    hit = fail.hit();
                }
                INFO("spare " << with_spare << ", rvalue " << by_rvalue << ", nth " << nth);
                CHECK(s.size() == before + (threw ? 0 : 1));
                CHECK(static_cast<bool>(s.get(id)) == !threw);
                for (const auto& q : s.claim(bulwark::WallTime{} + 1h, 100, 10s)) {
                    CHECK(s.complete(q.id, q.lease));
                }
                CHECK(s.size() == 0);
                if (!hit) {
                    break;
                }
            }
        }
    }
}

TEST_CASE("InMemoryQueueStore: complete() out of memory completes or changes nothing",
          "[alloc_failure][queue_store]") {
    using namespace std::chrono_literals;
    for (long nth = 1;; ++nth) {
        bulwark::InMemoryQueueStore s;
        s.push(queued("a", "payload"));
        const auto batch = s.claim(bulwark::WallTime{}, 1, 10s);
        REQUIRE(batch.size() == 1);
        bool hit = false;
        bool done = false;
        bool threw = false;
        {
            FailingAllocations fail(nth, FailMode::once);
            try {
                done = s.complete("a", batch[0].lease);
            } catch (const std::bad_alloc&) {
                threw = true;
            }
            hit = fail.hit();
        }
        INFO("nth " << nth);
        CHECK(s.size() == (done ? 0U : 1U));
        CHECK(done != threw);
        if (!hit) {
            break;
        }
    }
}

namespace {

// Accepts every message under an external id of its own.
struct AcceptingAdapter {
    int calls = 0;
    bulwark::Receipt send(const std::string& m) {
        ++calls;
        return bulwark::Receipt{"p", "ext-" + m + "-" + std::to_string(calls), 0.0, false};
    }
};

}  // namespace

TEST_CASE("DeliveryEngine: a pass out of memory anywhere leaves every message sent in the end",
          "[alloc_failure][delivery]") {
    using namespace std::chrono_literals;
    bulwark::DeliveryEngineOptions o;
    o.workers = 0;
    o.batch_size = 8;
    for (long nth = 1;; ++nth) {
        bulwark::ManualClock clock;
        bulwark::InMemoryDeadLetterStore dlq;
        bulwark::InMemoryQueueStore store;
        // Two engines on one store: `other`'s message has no record in `engine`, whose pass
        // makes one (an allocation between its sends).
        bulwark::DeliveryEngine<std::string> engine(bulwark::FallbackRules{}, dlq, store, o, clock);
        bulwark::DeliveryEngine<std::string> other(bulwark::FallbackRules{}, dlq, store, o, clock);
        AcceptingAdapter ok;
        engine.add_channel("c", ok);
        other.add_channel("c", ok);
        const std::string first = engine.submit("one", {"c"});
        other.submit("two", {"c"});
        const std::string third = engine.submit("three", {"c"});
        bool hit = false;
        {
            FailingAllocations fail(nth, FailMode::once);
            try {
                engine.run_due();
            } catch (const std::bad_alloc&) {  // NOLINT(bugprone-empty-catch): the sweep's point
            }
            hit = fail.hit();
        }
        clock.advance(10min);  // a lease the failure left behind runs out
        engine.run_due();
        INFO("nth " << nth);
        CHECK(engine.drain(0s));
        CHECK(engine.status(first) == bulwark::MessageStatus::sent);
        CHECK(engine.status(third) == bulwark::MessageStatus::sent);
        CHECK(store.size() == 0);
        if (!hit) {
            break;
        }
    }
}

TEST_CASE("A thread whose slot cannot be made counts on the shared stripe, then gets one",
          "[alloc_failure]") {
    bulwark::detail::StripedCounter counter;
    std::uint32_t failed_slot = 0;
    std::uint32_t later_slot = 0;
    std::thread t([&] {
        {
            FailingAllocations fail(1, FailMode::forever);
            counter.add(1);  // must not throw (add is noexcept: that would terminate)
            failed_slot = bulwark::detail::thread_slot();
        }
        counter.add(2);
        later_slot = bulwark::detail::thread_slot();
    });
    t.join();
    CHECK(failed_slot == bulwark::detail::no_thread_slot);
    CHECK(later_slot != bulwark::detail::no_thread_slot);
    CHECK(counter.sum() == 3);
}
