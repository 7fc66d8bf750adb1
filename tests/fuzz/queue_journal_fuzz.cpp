// libFuzzer target for the queue journal reader: the input is a whole FileQueueStore journal. In
// every recovery mode, opening a store on it either succeeds or throws a JournalError (any other
// exception, a crash or a sanitizer report is a defect), and a store that opened is consistent
// and keeps working: every message it holds can be claimed and completed once, and a push is
// durable across a reopen. Built with -DBULWARK_FUZZ=ON on clang (ci-clang); ctest runs it from
// the seed corpus in queue_journal_corpus/ (valid journals written by the store itself).
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include <bulwark/file_queue_store.hpp>

#include "../fault_fs.hpp"

namespace {

const std::string dir = "/fault/queue";
const std::string journal = "/fault/queue/journal";

[[noreturn]] void defect() {
    __builtin_trap();
}

void open_and_use(const std::string& bytes, bulwark::JournalRecovery recovery) {
    bulwark_test::FaultFs fs;
    bulwark::ManualClock clock;
    bulwark::FileQueueStoreOptions options;
    options.recovery = recovery;
    options.max_size = 1 << 16;
    { bulwark::FileQueueStore make(dir, options, fs, clock); }
    fs.put(journal, bytes);
    try {
        bulwark::FileQueueStore store(dir, options, fs, clock);
        const std::size_t size = store.size();
        const bulwark::QueueStoreStats stats = store.stats();
        const auto listed = store.list(1 << 20);
        std::set<std::string> ids;
        for (const bulwark::QueuedMessage& m : listed) {
            if (m.id.empty() || !ids.insert(m.id).second) {
                defect();
            }
        }
        if (listed.size() != size || stats.size != size || stats.leased > size) {
            defect();
        }
        // At the end of time every lease read back has run out: each message comes out once.
        const bulwark::WallTime later = bulwark::WallTime::max();
        const auto claimed = store.claim(later, 1 << 20, std::chrono::seconds(30));
        if (claimed.size() != size) {
            defect();
        }
        for (const bulwark::QueuedMessage& m : claimed) {
            if (!store.complete(m.id, m.lease)) {
                defect();
            }
        }
        if (store.size() != 0) {
            defect();
        }
        store.push(bulwark::QueuedMessage{"fuzz-probe", "p", later, later});
    } catch (const bulwark::JournalError&) {
        return;  // refused with a reason: what a damaged journal may do
    }
    // What was acknowledged reads back: the same mode opens the same journal again.
    bulwark::FileQueueStore again(dir, options, fs, clock);
    if (again.size() != 1 || !again.get("fuzz-probe")) {
        defect();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    for (const auto recovery :
         {bulwark::JournalRecovery::tolerate_torn_tail, bulwark::JournalRecovery::point_in_time,
          bulwark::JournalRecovery::skip_corrupt, bulwark::JournalRecovery::strict}) {
        open_and_use(bytes, recovery);
    }
    return 0;
}
