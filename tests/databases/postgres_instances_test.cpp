// The many-instances test: 4 pg_worker processes deliver N messages from one PostgreSQL queue
// while one of them is SIGKILLed (mode "kill") or the server restarts (mode "restart"), and
// then every message must have reached exactly one terminal state: sent (in a ledger) or
// dead-lettered (the "fail-" ones, which the channel refuses for good), with nothing left in the
// queue. A message is in two ledger lines only when the instance that first sent it died before
// completing it (kill mode: at most one batch of the killed instance); none is lost.
//   postgres_instances_test kill|restart PG_WORKER FIXTURE_SCRIPT SERVER_DIR
// The connection string is in the file BULWARK_PG_CONNINFO_FILE names; BULWARK_PG_MESSAGES sets
// N (default 100000). Exits 0 when every check passed; prints the figures either way.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <signal.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <bulwark/postgres_dead_letter_store.hpp>
#include <bulwark/postgres_queue_store.hpp>

#include "postgres_support.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) {
        ++failures;
    }
}

pid_t spawn(const std::vector<std::string>& args, int keep_fd) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::vector<char*> argv;
        for (const std::string& a : args) {
            argv.push_back(const_cast<char*>(a.c_str()));
        }
        argv.push_back(nullptr);
        (void)keep_fd;
        ::execv(argv[0], argv.data());
        std::perror("execv");
        ::_exit(127);
    }
    return pid;
}

int wait_exit(pid_t pid, bool* signalled = nullptr) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (signalled != nullptr) {
        *signalled = WIFSIGNALED(status);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s kill|restart PG_WORKER FIXTURE_SCRIPT SERVER_DIR\n",
                     argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    const std::string worker = argv[2];
    const std::string conninfo = bulwark_test::pg::conninfo();
    if (conninfo.empty()) {
        std::fprintf(stderr, "no server: set BULWARK_PG_CONNINFO_FILE\n");
        return 2;
    }
    const long n = std::getenv("BULWARK_PG_MESSAGES") != nullptr
                       ? std::atol(std::getenv("BULWARK_PG_MESSAGES"))
                       : 100000;
    const std::string schema = "inst_" + mode + "_" + std::to_string(::getpid());
    const std::string lease_ms = mode == "kill" ? "3000" : "20000";
    const int instances = 4;
    const auto t0 = std::chrono::steady_clock::now();

    if (wait_exit(spawn({worker, "seed", conninfo, schema, std::to_string(n)}, -1)) != 0) {
        std::fprintf(stderr, "seeding failed\n");
        return 1;
    }
    const auto t_seeded = std::chrono::steady_clock::now();

    int progress[2];
    if (::pipe(progress) != 0) {
        std::perror("pipe");
        return 1;
    }
    std::vector<pid_t> pids;
    std::vector<std::string> ledgers;
    for (int i = 0; i < instances; ++i) {
        ledgers.push_back("ledger_" + schema + "_" + std::to_string(i) + ".txt");
        std::remove(ledgers.back().c_str());
        pids.push_back(spawn({worker, "work", conninfo, schema, lease_ms, ledgers.back(),
                              std::to_string(progress[1])},
                             progress[1]));
    }
    ::close(progress[1]);
    // One byte per 500 messages sent by any instance; EOF once every instance has exited.
    const long act_at = std::max(1L, n / 500 / 3);  // a third of the way through
    long bytes = 0;
    bool acted = false;
    char buf[64];
    for (;;) {
        const ssize_t got = ::read(progress[0], buf, sizeof buf);
        if (got <= 0) {
            break;
        }
        bytes += got;
        if (!acted && bytes >= act_at) {
            acted = true;
            if (mode == "kill") {
                ::kill(pids[0], SIGKILL);
                std::printf("SIGKILLed instance 0 after %ld messages\n", bytes * 500);
            } else {
                const std::string cmd =
                    std::string("sh '") + argv[3] + "' restart '" + argv[4] + "'";
                const auto r0 = std::chrono::steady_clock::now();
                check(std::system(cmd.c_str()) == 0, "pg_ctl restart");
                std::printf(
                    "restarted the server after %ld messages (%.1f s)\n", bytes * 500,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count());
            }
        }
    }
    ::close(progress[0]);
    for (int i = 0; i < instances; ++i) {
        bool signalled = false;
        const int code = wait_exit(pids[static_cast<std::size_t>(i)], &signalled);
        if (mode == "kill" && i == 0) {
            check(signalled, "instance 0 died of the SIGKILL");
        } else {
            check(code == 0, "instance " + std::to_string(i) + " exited cleanly");
        }
    }
    const auto t_done = std::chrono::steady_clock::now();
    check(acted, "the " + mode + " happened mid-run");

    // Every ledger line, by instance.
    std::map<std::string, int> sent;
    std::set<std::string> killed_sent;
    long lines = 0;
    for (int i = 0; i < instances; ++i) {
        std::ifstream in(ledgers[static_cast<std::size_t>(i)]);
        for (std::string line; std::getline(in, line);) {
            ++sent[line];
            ++lines;
            if (i == 0) {
                killed_sent.insert(line);
            }
        }
        std::remove(ledgers[static_cast<std::size_t>(i)].c_str());
    }
    bulwark::PostgresQueueStoreOptions qo;
    qo.database = bulwark_test::pg::options(schema);
    bulwark::PostgresQueueStore queue(qo);
    bulwark::PostgresDeadLetterStoreOptions dlo;
    dlo.database = qo.database;
    dlo.max_entries = 1000000;
    bulwark::PostgresDeadLetterStore dead(dlo);
    std::map<std::string, int> lettered;
    for (const bulwark::DeadLetter& d : dead.list()) {
        ++lettered[d.payload];
    }

    long missing = 0;
    long wrong_terminal = 0;
    long duplicates = 0;
    long duplicates_outside_killed = 0;
    for (long i = 0; i < n; ++i) {
        const bool fail = i % 1000 == 999;
        const std::string body = (fail ? "fail-" : "m-") + std::to_string(i);
        const auto s = sent.find(body);
        const int times_sent = s == sent.end() ? 0 : s->second;
        const auto l = lettered.find(body);
        const int times_lettered = l == lettered.end() ? 0 : l->second;
        if (fail) {
            wrong_terminal += (times_sent != 0 || times_lettered != 1) ? 1 : 0;
            missing += times_lettered == 0 ? 1 : 0;
            continue;
        }
        missing += times_sent == 0 ? 1 : 0;
        wrong_terminal += times_lettered != 0 ? 1 : 0;
        if (times_sent > 1) {
            duplicates += times_sent - 1;
            if (mode != "kill" || killed_sent.count(body) == 0 || times_sent > 2) {
                ++duplicates_outside_killed;
            }
        }
    }
    const auto q = queue.stats();
    std::printf(
        "%ld messages, 4 instances, %s: seeded in %.1f s, delivered in %.1f s; %ld ledger "
        "lines, %zu dead letters, %ld duplicates\n",
        n, mode.c_str(), std::chrono::duration<double>(t_seeded - t0).count(),
        std::chrono::duration<double>(t_done - t_seeded).count(), lines, dead.size(), duplicates);
    check(missing == 0, "no message lost (" + std::to_string(missing) + " missing)");
    check(wrong_terminal == 0, "each message in exactly one terminal state (" +
                                   std::to_string(wrong_terminal) + " wrong)");
    check(q.size == 0 && q.leased == 0, "the queue is empty");
    check(lettered.size() == static_cast<std::size_t>(n / 1000),
          "every refused message dead-lettered once");
    if (mode == "kill") {
        // The killed instance had at most one batch (batch_size 10) in flight.
        check(duplicates_outside_killed == 0 && duplicates <= 10,
              "sent twice only what the killed instance had in flight (" +
                  std::to_string(duplicates) + ")");
    } else {
        check(duplicates == 0,
              "nothing sent twice across the restart (" + std::to_string(duplicates) + ")");
    }
    return failures == 0 ? 0 : 1;
}
