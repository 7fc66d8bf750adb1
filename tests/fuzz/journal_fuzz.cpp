// libFuzzer target for the dead-letter journal reader: the input is a whole journal file. In every
// recovery mode, opening a store on it either succeeds or throws a FileDeadLetterStoreError (any
// other exception, a crash or a sanitizer report is a defect), and a store that opened is
// consistent and keeps working: an add is durable across a reopen. Built with -DBULWARK_FUZZ=ON
// on clang (ci-clang); ctest runs it for 60 s from the seed corpus in journal_corpus/.
#include <cstddef>
#include <cstdint>
#include <string>

#include <bulwark/file_dead_letter_store.hpp>

#include "../fault_fs.hpp"

namespace {

const std::string dir = "/fault/dlq";
const std::string journal = "/fault/dlq/journal";

[[noreturn]] void defect() {
    __builtin_trap();
}

void open_and_use(const std::string& bytes, bulwark::JournalRecovery recovery) {
    bulwark_test::FaultFs fs;
    bulwark::ManualClock clock;
    bulwark::FileDeadLetterStoreOptions options;
    options.recovery = recovery;
    options.max_entries = 1 << 16;
    { bulwark::FileDeadLetterStore make(dir, options, fs, clock); }
    fs.put(journal, bytes);
    std::size_t held = 0;
    try {
        bulwark::FileDeadLetterStore store(dir, options, fs, clock);
        const bulwark::DeadLetterStats stats = store.stats();
        if (store.list(bulwark::DeadLetterQuery{}.limit(1 << 20)).size() != store.size() ||
            stats.total != store.size() ||
            stats.pending + stats.reprocessed + stats.dismissed != stats.total) {
            defect();
        }
        bulwark::DeadLetter d;
        d.id = "fuzz-probe";
        d.type = "probe";
        d.payload = "p";
        store.add(d);
        held = store.size();
    } catch (const bulwark::FileDeadLetterStoreError&) {
        return;  // refused with a reason: what a damaged journal may do
    } catch (const bulwark::DeadLetterStoreFullError&) {
        return;
    }
    // What was acknowledged reads back: the same mode opens the same journal again.
    bulwark::FileDeadLetterStore again(dir, options, fs, clock);
    if (again.size() != held || !again.get("fuzz-probe")) {
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
