// System gauges: memory, CPU, disk and process RSS readings (Linux /proc).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_SYSTEM_HPP
#define BULWARK_SYSTEM_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <bulwark/detail/mutex.hpp>

#if defined(__linux__)
#include <sys/statvfs.h>
#include <unistd.h>
#endif

namespace bulwark {

namespace detail {
#if defined(__linux__)
// The value in kB of a "Key:   123 kB" line of /proc/meminfo.
inline std::optional<std::uint64_t> proc_meminfo_kb(const char* key) {
    std::FILE* file = std::fopen("/proc/meminfo", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    char line[256];
    const std::size_t key_length = std::strlen(key);
    std::optional<std::uint64_t> result;
    while (std::fgets(line, sizeof line, file) != nullptr) {
        if (std::strncmp(line, key, key_length) == 0 && line[key_length] == ':') {
            unsigned long long value = 0;
            if (std::sscanf(line + key_length + 1, "%llu", &value) == 1) {
                result = static_cast<std::uint64_t>(value);
            }
            break;
        }
    }
    std::fclose(file);
    return result;
}

struct CpuTimes {
    std::uint64_t busy = 0;
    std::uint64_t total = 0;
};

// The aggregate "cpu" line of /proc/stat.
inline std::optional<CpuTimes> proc_cpu_times() {
    std::FILE* file = std::fopen("/proc/stat", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    unsigned long long user = 0;
    unsigned long long nice = 0;
    unsigned long long sys = 0;
    unsigned long long idle = 0;
    unsigned long long iowait = 0;
    unsigned long long irq = 0;
    unsigned long long softirq = 0;
    unsigned long long steal = 0;
    const int fields = std::fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user,
                                   &nice, &sys, &idle, &iowait, &irq, &softirq, &steal);
    std::fclose(file);
    if (fields < 4) {
        return std::nullopt;
    }
    CpuTimes t;
    const unsigned long long busy = user + nice + sys + irq + softirq + steal;
    t.busy = static_cast<std::uint64_t>(busy);
    t.total = static_cast<std::uint64_t>(busy + idle + iowait);
    return t;
}
#endif
}  // namespace detail

// Gauges of this machine and process, for ResourceManager::add_gauge. Linux reads /proc and
// statvfs; on other platforms (or when the files cannot be read) each returns nullopt, which a
// ResourceManager reports as ResourceStatus::unknown.
//   rm.add_gauge("memory", [] { return bulwark::system::memory_used_percent(); }, {80, 95});
// Thread-safe. Each call reads a small file (a few microseconds): give the gauge a cache TTL
// rather than calling these on a hot path.
namespace system {

// Percent of physical memory in use: 100 × (1 − MemAvailable / MemTotal).
inline std::optional<double> memory_used_percent() {
#if defined(__linux__)
    const auto total = bulwark::detail::proc_meminfo_kb("MemTotal");
    const auto available = bulwark::detail::proc_meminfo_kb("MemAvailable");
    if (!total || !available || *total == 0 || *available > *total) {
        return std::nullopt;
    }
    return 100.0 * static_cast<double>(*total - *available) / static_cast<double>(*total);
#else
    return std::nullopt;
#endif
}

// Percent of CPU time spent busy (all cores together) since the previous call of this
// function in this process; the first call measures since boot. Reads /proc/stat.
inline std::optional<double> cpu_used_percent() {
#if defined(__linux__)
    static detail::Mutex mutex;
    static bulwark::detail::CpuTimes previous BULWARK_GUARDED_BY(mutex);
    // Read under the lock, so that racing callers cannot set `previous` back to an older sample.
    detail::LockGuard lock(mutex);
    const auto now = bulwark::detail::proc_cpu_times();
    if (!now) {
        return std::nullopt;
    }
    const std::uint64_t busy = now->busy - previous.busy;
    const std::uint64_t total = now->total - previous.total;
    if (now->total < previous.total || now->busy < previous.busy) {
        previous = *now;
        return std::nullopt;
    }
    previous = *now;
    if (total == 0) {
        return 0.0;
    }
    return 100.0 * static_cast<double>(busy) / static_cast<double>(total);
#else
    return std::nullopt;
#endif
}

// Percent of the file system holding `path` in use, as df shows it (blocks reserved for root
// count as unavailable).
inline std::optional<double> disk_used_percent(const std::string& path = "/") {
#if defined(__linux__)
    struct statvfs fs {};
    if (statvfs(path.c_str(), &fs) != 0) {
        return std::nullopt;
    }
    const auto used = static_cast<double>(fs.f_blocks - fs.f_bfree);
    const double usable = used + static_cast<double>(fs.f_bavail);
    if (usable <= 0.0) {
        return std::nullopt;
    }
    return 100.0 * used / usable;
#else
    (void)path;
    return std::nullopt;
#endif
}

// This process's resident set size in bytes.
inline std::optional<std::uint64_t> process_rss_bytes() {
#if defined(__linux__)
    std::FILE* file = std::fopen("/proc/self/statm", "r");
    if (file == nullptr) {
        return std::nullopt;
    }
    unsigned long long pages_total = 0;
    unsigned long long pages_resident = 0;
    const int fields = std::fscanf(file, "%llu %llu", &pages_total, &pages_resident);
    std::fclose(file);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (fields != 2 || page_size <= 0) {
        return std::nullopt;
    }
    return static_cast<std::uint64_t>(pages_resident) * static_cast<std::uint64_t>(page_size);
#else
    return std::nullopt;
#endif
}

// This process's resident set size as a percent of physical memory.
inline std::optional<double> process_rss_percent() {
#if defined(__linux__)
    const auto rss = process_rss_bytes();
    const auto total_kb = bulwark::detail::proc_meminfo_kb("MemTotal");
    if (!rss || !total_kb || *total_kb == 0) {
        return std::nullopt;
    }
    return 100.0 * static_cast<double>(*rss) / (static_cast<double>(*total_kb) * 1024.0);
#else
    return std::nullopt;
#endif
}

}  // namespace system
}  // namespace bulwark

#endif  // BULWARK_SYSTEM_HPP
