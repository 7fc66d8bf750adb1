// expect: reading variable 'count_' requires holding mutex 'mutex_'
// clang-only: -Wthread-safety
// Clang's thread-safety analysis is live: a BULWARK_GUARDED_BY member read without its mutex is
// an error (detail::Mutex and detail::LockGuard carry the annotations std::mutex lacks).
#include <bulwark/detail/mutex.hpp>

class Counter {
public:
    void add() {
        bulwark::detail::LockGuard lock(mutex_);
        ++count_;
    }

    int get() {
#ifdef BULWARK_COMPILE_FAIL
        return count_;
#else
        bulwark::detail::LockGuard lock(mutex_);
        return count_;
#endif
    }

private:
    bulwark::detail::Mutex mutex_;
    int count_ BULWARK_GUARDED_BY(mutex_) = 0;
};

int main() {
    Counter c;
    c.add();
    return c.get() - 1;
}
