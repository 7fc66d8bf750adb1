// Events and listeners: how every component tells observers what happened.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_EVENTS_HPP
#define BULWARK_EVENTS_HPP

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <utility>

#include <bulwark/config.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// Called with the exception a listener threw. Listeners must never break the component that
// reports to them, so their exceptions are caught and handed here.
using ListenerErrorHandler = void (*)(std::exception_ptr) noexcept;

namespace detail {
inline void default_listener_error_handler(std::exception_ptr error) noexcept {
    try {
        std::rethrow_exception(std::move(error));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bulwark: a listener threw: %s\n", e.what());
    } catch (...) {
        std::fputs("bulwark: a listener threw a non-std exception\n", stderr);
    }
}

inline std::atomic<ListenerErrorHandler>& listener_error_handler_slot() noexcept {
    static std::atomic<ListenerErrorHandler> handler{&default_listener_error_handler};
    return handler;
}

inline void report_listener_error(std::exception_ptr error) noexcept {
    // acquire: pairs with set_listener_error_handler's release.
    listener_error_handler_slot().load(std::memory_order_acquire)(std::move(error));
}
}  // namespace detail

// Installs the process-wide handler for exceptions thrown by listeners; nullptr restores the
// default, which prints one line to stderr. Thread-safe.
inline void set_listener_error_handler(ListenerErrorHandler handler) noexcept {
    detail::listener_error_handler_slot().store(
        handler != nullptr ? handler : &detail::default_listener_error_handler,
        std::memory_order_release);
}

// Identifies a registered listener, for remove() (and a component's remove_listener()). Ids
// are unique in the process, never 0, so an id from one list is never mistaken in another.
using ListenerId = std::uint64_t;

namespace detail {
inline ListenerId next_listener_id() noexcept {
    static std::atomic<ListenerId> last{0};
    // relaxed: only uniqueness matters; the node is published under the list's mutex.
    return last.fetch_add(1, std::memory_order_relaxed) + 1;
}

// Appends a listener to an options struct's list (RetryOptions::on_retry, HedgingOptions::
// on_hedge), which the policy takes over when it is built. Throws std::invalid_argument for an
// empty listener, naming `field`.
template <class List, class Listener>
void add_option_listener(List& listeners, Listener&& listener, const char* field) {
    if (!listener) {
        throw_invalid_argument(std::string(field) + ": the listener is empty");
    }
    listeners.push_back(std::forward<Listener>(listener));
}
}  // namespace detail

// The callbacks a component reports one kind of event to: the building block behind every
// component's on_xxx(listener) (which returns a ListenerId) and remove_listener(id).
//   Listeners<StateChange> changes;  auto id = changes.add([](const StateChange& c) {...});
//   changes.emit(change);            // or emit_with([&] { return make_change(); })
// Costs one atomic load when nobody listens; build expensive events inside emit_with() so that
// they are built only when someone does.
// Thread-safe: add() and remove() may run concurrently with emit(); emit() takes no lock.
// Listeners run in the order they were added, on the thread that emits, and may be called
// concurrently from several threads. An exception a listener throws goes to the
// ListenerErrorHandler and the remaining listeners still run.
// Memory: a removed listener's node is freed only when the Listeners object is destroyed, which is
// what lets emit() walk the list without a lock; add/remove churn therefore grows memory.
template <class Event>
class Listeners {
public:
    using Callback = std::function<void(const Event&)>;

    Listeners() noexcept = default;
    Listeners(const Listeners&) = delete;
    Listeners& operator=(const Listeners&) = delete;
    // Takes over `other`'s listeners (so components holding Listeners stay movable). Not
    // thread-safe: nobody may use `other` meanwhile.
    Listeners(Listeners&& other) noexcept
        : head_(other.head_.exchange(nullptr, std::memory_order_acq_rel)), tail_(other.tail_) {
        other.tail_ = nullptr;
    }
    Listeners& operator=(Listeners&&) = delete;
    ~Listeners() {
        Node* node = head_.load(std::memory_order_acquire);
        while (node != nullptr) {
            Node* next = node->next.load(std::memory_order_acquire);
            delete node;
            node = next;
        }
    }

    // Throws std::invalid_argument for an empty callback.
    ListenerId add(Callback callback) {
        if (!callback) {
            detail::throw_invalid_argument("bulwark::Listeners::add: the callback is empty");
        }
        auto* node = new Node{std::move(callback)};
        node->id = detail::next_listener_id();
        detail::LockGuard lock(mutex_);
        // release: publishes the node's callback to emitters that load the link with acquire.
        if (tail_ == nullptr) {
            head_.store(node, std::memory_order_release);
        } else {
            tail_->next.store(node, std::memory_order_release);
        }
        tail_ = node;
        return node->id;
    }

    // Stops calling the listener; returns false if `id` is unknown or already removed. A call of
    // it that is already running on another thread finishes.
    bool remove(ListenerId id) noexcept {
        detail::LockGuard lock(mutex_);
        for (Node* node = head_.load(std::memory_order_acquire); node != nullptr;
             node = node->next.load(std::memory_order_acquire)) {
            if (node->id == id) {
                // exchange under the mutex makes a second remove of the same id return false.
                return node->active.exchange(false, std::memory_order_acq_rel);
            }
        }
        return false;
    }

    bool empty() const noexcept {
        // relaxed: a hint for callers that want to skip building an event; a listener added
        // concurrently may or may not see the event either way.
        return head_.load(std::memory_order_relaxed) == nullptr;
    }

    void emit(const Event& event) const noexcept {
        for (Node* node = head_.load(std::memory_order_acquire); node != nullptr;
             node = node->next.load(std::memory_order_acquire)) {
            if (node->active.load(std::memory_order_acquire)) {
                try {
                    node->callback(event);
                } catch (...) {
                    detail::report_listener_error(std::current_exception());
                }
            }
        }
    }

    // Builds the event with `make()` only if someone listens.
    template <class Make>
    void emit_with(Make&& make) const noexcept {
        if (head_.load(std::memory_order_acquire) == nullptr) {
            return;
        }
        try {
            emit(std::forward<Make>(make)());
        } catch (...) {
            detail::report_listener_error(std::current_exception());
        }
    }

private:
    struct Node {
        Callback callback;
        std::atomic<bool> active{true};
        std::atomic<Node*> next{nullptr};
        ListenerId id = 0;
    };

    std::atomic<Node*> head_{nullptr};
    Node* tail_ BULWARK_GUARDED_BY(mutex_) = nullptr;
    detail::Mutex mutex_;
};

}  // namespace bulwark

#endif  // BULWARK_EVENTS_HPP
