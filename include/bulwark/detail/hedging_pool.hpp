// The internal executor of Hedging: a few lazily started threads and a task queue (private).
// SPDX-License-Identifier: MIT
#ifndef BULWARK_DETAIL_HEDGING_POOL_HPP
#define BULWARK_DETAIL_HEDGING_POOL_HPP

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include <bulwark/detail/mutex.hpp>

namespace bulwark {
namespace detail {

// The executor a Hedging uses when given none: at most `max_threads` threads, each started when
// a task finds no idle thread, all joined by the destructor. Tasks still queued then are
// destroyed unrun. Thread-safe. A class template only so that a translation unit without a
// Hedging does not compile its threads (the Tag is never used).
template <class Tag = void>
class BasicHedgingPool {
public:
    explicit BasicHedgingPool(std::size_t max_threads) : max_threads_(max_threads) {}
    BasicHedgingPool(const BasicHedgingPool&) = delete;
    BasicHedgingPool& operator=(const BasicHedgingPool&) = delete;

    ~BasicHedgingPool() {
        std::deque<std::function<void()>> unrun;
        {
            detail::LockGuard lock(mutex_);
            stop_ = true;
            unrun.swap(queue_);
        }
        cv_.notify_all();
        for (std::thread& t : threads_) {
            t.join();
        }
        // `unrun` is destroyed here, outside the lock.
    }

    // Throws if no thread could ever be started for the task.
    void post(std::function<void()> task) {
        detail::UniqueLock lock(mutex_);
        queue_.push_back(std::move(task));
        if (queue_.size() > idle_ && threads_.size() < max_threads_) {
            try {
                threads_.emplace_back([this] { work(); });
            } catch (...) {
                if (threads_.empty()) {
                    std::function<void()> refused = std::move(queue_.back());
                    queue_.pop_back();
                    lock.unlock();
                    throw;  // `refused` is destroyed unrun
                }
            }
        }
        lock.unlock();
        cv_.notify_one();
    }

private:
    void work() {
        detail::UniqueLock lock(mutex_);
        for (;;) {
            while (!stop_ && queue_.empty()) {
                ++idle_;
                cv_.wait(lock.native());
                --idle_;
            }
            if (stop_) {
                return;
            }
            std::function<void()> task = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            try {
                task();
            } catch (...) {
                // Hedging's tasks catch everything; nothing else is posted here.
            }
            task = nullptr;  // destroyed outside the lock
            lock.lock();
        }
    }

    const std::size_t max_threads_;
    detail::Mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_ BULWARK_GUARDED_BY(mutex_);
    std::vector<std::thread> threads_ BULWARK_GUARDED_BY(mutex_);
    std::size_t idle_ BULWARK_GUARDED_BY(mutex_) = 0;
    bool stop_ BULWARK_GUARDED_BY(mutex_) = false;
};

using HedgingPool = BasicHedgingPool<>;

}  // namespace detail
}  // namespace bulwark

#endif  // BULWARK_DETAIL_HEDGING_POOL_HPP
