// DeliveryEngine on the file queue and dead-letter stores, SIGKILLed: a child process submits
// and sends messages and is killed at random moments; a new engine on the same directories
// finishes the work. Every accepted message reaches a terminal state, none is lost, and an
// adapter sees a message twice only if it was in flight at the kill.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <poll.h>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <sys/types.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

#include <bulwark/delivery.hpp>
#include <bulwark/file_dead_letter_store.hpp>
#include <bulwark/file_queue_store.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace delivery_crash_test {

class TempDir {
public:
    TempDir() {
        char pattern[] = "/tmp/bulwark-engine-XXXXXX";
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
    std::string queue() const { return path_ + "/queue"; }
    std::string dead_letters() const { return path_ + "/dlq"; }

private:
    std::string path_;
};

// The script every adapter follows, by message text ("m<n>"): a multiple of 5 fails on the
// primary (transient, so it falls back), a multiple of 13 fails everywhere permanently (it is
// dead-lettered), the rest go through the primary.
int number_of(const std::string& text) {
    return std::stoi(text.substr(1));
}

bulwark::DeliveryEngineOptions engine_options() {
    bulwark::DeliveryEngineOptions o;
    o.workers = 2;
    o.batch_size = 8;
    o.lease = 30s;
    o.max_passes = 3;
    o.backoff = bulwark::Backoff::fixed(1ms);
    o.poll_interval = 20ms;
    return o;
}

// Adds the two channels; `sent(id)` is called when an adapter accepts a message, before it
// returns its receipt.
template <class Sent>
void add_channels(bulwark::DeliveryEngine<std::string>& engine, Sent sent) {
    engine.add_channel("primary", [sent](const std::string& text) {
        const int n = number_of(text);
        if (n % 13 == 0) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::permanent, "refused");
        }
        if (n % 5 == 0) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient, "busy");
        }
        sent(text);
        return bulwark::Receipt{"p", text, 0, false};
    });
    engine.add_channel("backup", [sent](const std::string& text) {
        sent(text);
        return bulwark::Receipt{"b", text, 0, false};
    });
}

bulwark::FallbackRules rules() {
    bulwark::FallbackRules r;
    r.set("primary", {{"backup"}, bulwark::Selection::priority, 0});
    return r;
}

// The child: submits m0, m1, ... and writes "q <text>" once submit() returned (accepted) and
// "s <text>" when an adapter accepts one. Killed by the parent; never returns.
[[noreturn]] void child(const TempDir& dir, int fd) {
    std::mutex write_mutex;
    const auto report = [fd, &write_mutex](const std::string& line) {
        std::lock_guard<std::mutex> lock(write_mutex);
        if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            ::_exit(3);
        }
    };
    try {
        bulwark::FileDeadLetterStore dead_letters(dir.dead_letters());
        bulwark::FileQueueStore queue(dir.queue());
        bulwark::DeliveryEngine<std::string> engine(rules(), dead_letters, queue, engine_options());
        add_channels(engine, [report](const std::string& text) { report("s " + text + "\n"); });
        for (int i = 0;; ++i) {
            const std::string text = "m" + std::to_string(i);
            engine.submit(text, {"primary"});
            report("q " + text + "\n");
        }
    } catch (...) {
        ::_exit(2);
    }
}

bool read_some(int fd, std::string& out, int timeout_ms, bool& eof) {
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, timeout_ms);
    if (ready == 0) {
        return false;
    }
    if (ready < 0) {
        return errno == EINTR;
    }
    char buffer[4096];
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got > 0) {
        out.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
        eof = true;
    }
    return true;
}

// The system clock an hour ahead: every lease the killed child held has run out.
class AfterTheLeases : public bulwark::Clock {
public:
    bulwark::TimePoint now() const noexcept override { return bulwark::default_clock().now(); }
    void sleep_for(bulwark::Duration d) override { bulwark::default_clock().sleep_for(d); }
    bulwark::WallTime wall_now() const noexcept override {
        return bulwark::default_clock().wall_now() + 1h;
    }
};

}  // namespace delivery_crash_test

TEST_CASE("DeliveryEngine: killed at random moments, it loses no accepted message",
          "[delivery][file][kill]") {
    using namespace delivery_crash_test;
    std::mt19937_64 rng(11);
    std::size_t total_accepted = 0;
    std::size_t total_duplicates = 0;
    std::size_t total_dead = 0;
    for (int round = 0; round < 50; ++round) {
        TempDir dir;
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::close(fds[0]);
            child(dir, fds[1]);
        }
        ::close(fds[1]);
        // Kill after a random number of lines: submits and sends are in flight.
        const std::size_t kill_after = 20 + rng() % 150;
        std::string text;
        bool eof = false;
        bool timed_out = false;
        while (!eof &&
               static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) < kill_after) {
            if (!read_some(fds[0], text, 10000, eof)) {
                timed_out = true;
                break;
            }
        }
        ::kill(pid, SIGKILL);
        while (!eof && !timed_out) {
            timed_out = !read_some(fds[0], text, 10000, eof);
        }
        ::close(fds[0]);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        if (timed_out) {
            FAIL("the child wrote nothing for 10 s");
        }
        INFO("round " << round << ", child status " << status);
        REQUIRE(WIFSIGNALED(status));
        REQUIRE(WTERMSIG(status) == SIGKILL);

        std::set<std::string> accepted;
        std::map<std::string, int> sends;
        std::istringstream lines(text);
        for (std::string line; std::getline(lines, line);) {
            // The last line may be cut by the kill (no newline): getline still returns it, and
            // a cut line names no message the checks rely on.
            if (line.size() < 3 || text.find(line + "\n") == std::string::npos) {
                continue;
            }
            if (line[0] == 'q') {
                accepted.insert(line.substr(2));
            } else {
                ++sends[line.substr(2)];
            }
        }

        // A new engine on the same directories finishes the work.
        AfterTheLeases clock;
        std::mutex m;
        {
            bulwark::FileDeadLetterStore dead_letters(dir.dead_letters());
            bulwark::FileQueueStore queue(dir.queue());
            bulwark::DeliveryEngine<std::string> engine(rules(), dead_letters, queue,
                                                        engine_options(), clock);
            add_channels(engine, [&](const std::string& t) {
                std::lock_guard<std::mutex> lock(m);
                ++sends[t];
            });
            engine.start();
            REQUIRE(engine.drain(60s));
            engine.stop();
            CHECK(queue.size() == 0);

            std::size_t lost = 0;
            std::size_t both = 0;
            std::size_t wrong_dead = 0;
            for (const std::string& t : accepted) {
                const bool was_sent = sends.count(t) != 0;
                const bool permanent = number_of(t) % 13 == 0;
                if (permanent) {
                    // Dead-lettered, never sent.
                    std::size_t letters = 0;
                    for (const bulwark::DeadLetter& d : dead_letters.list()) {
                        letters += d.payload == t ? 1U : 0U;
                    }
                    lost += letters == 1 ? 0U : 1U;
                    both += was_sent ? 1U : 0U;
                    ++total_dead;
                } else {
                    lost += was_sent ? 0U : 1U;
                }
            }
            for (const bulwark::DeadLetter& d : dead_letters.list()) {
                wrong_dead += number_of(d.payload) % 13 == 0 ? 0U : 1U;
            }
            std::size_t duplicates = 0;
            for (const auto& [t, n] : sends) {
                duplicates += n > 1 ? static_cast<std::size_t>(n - 1) : 0U;
            }
            CHECK(lost == 0);
            CHECK(both == 0);
            CHECK(wrong_dead == 0);
            // A message is sent twice only if the kill fell between its send and the queue
            // store's record of it: at most one per worker.
            CHECK(duplicates <= 2);
            total_duplicates += duplicates;
            total_accepted += accepted.size();
        }
    }
    // What the rounds saw, for the log (the issue asks for the duplicates to be reported).
    WARN("50 kills: " << total_accepted << " messages accepted, " << total_dead
                      << " dead-lettered as scripted, " << total_duplicates
                      << " sent twice (in flight at a kill)");
    CHECK(total_accepted > 0);
}
