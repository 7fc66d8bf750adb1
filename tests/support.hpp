// Test-only helpers shared by the test files.
#ifndef BULWARK_TESTS_SUPPORT_HPP
#define BULWARK_TESTS_SUPPORT_HPP

#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <bulwark/core.hpp>

namespace bulwark_test {

// A policy that logs when it is entered and left, to check composition order.
class Recorder : public bulwark::PolicyBase<Recorder> {
public:
    Recorder(std::string name, std::vector<std::string>& log)
        : name_(std::move(name)), log_(&log) {}

    template <class Next>
    auto apply(bulwark::Context& ctx, Next&& next) {
        log_->push_back("enter " + name_);
        auto outcome = std::forward<Next>(next)(ctx);
        log_->push_back("exit " + name_);
        return outcome;
    }

private:
    std::string name_;
    std::vector<std::string>* log_;
};

// A policy that calls `next` up to `attempts` times until it succeeds, numbering the attempts in
// the context: the smallest retrying policy, to test context propagation and repeated calls.
class Repeat : public bulwark::PolicyBase<Repeat> {
public:
    explicit Repeat(unsigned attempts) : attempts_(attempts) {}

    template <class Next>
    auto apply(bulwark::Context& ctx, Next&& next) {
        auto outcome = next(ctx);
        for (unsigned i = 1; i < attempts_ && !outcome.has_value(); ++i) {
            ctx.set_attempt(i);
            outcome = next(ctx);
        }
        return outcome;
    }

private:
    unsigned attempts_;
};

// A policy that replaces every failure with a fixed value.
template <class T>
class ReplaceFailure : public bulwark::PolicyBase<ReplaceFailure<T>> {
public:
    explicit ReplaceFailure(T value) : value_(std::move(value)) {}

    template <class Next>
    auto apply(bulwark::Context& ctx, Next&& next) {
        auto outcome = std::forward<Next>(next)(ctx);
        if (!outcome) {
            return decltype(outcome)::from_value(value_);
        }
        return outcome;
    }

private:
    T value_;
};

// The source() of the RejectedError `error` holds, or "<not a RejectedError>".
inline std::string rejection_source(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const bulwark::RejectedError& rejected) {
        return rejected.source();
    } catch (...) {
        return "<not a RejectedError>";
    }
}

// A move-only result type.
struct MoveOnly {
    explicit MoveOnly(int v) : value(v) {}
    MoveOnly(MoveOnly&&) = default;
    MoveOnly& operator=(MoveOnly&&) = default;
    MoveOnly(const MoveOnly&) = delete;
    MoveOnly& operator=(const MoveOnly&) = delete;
    int value;
};

}  // namespace bulwark_test

#endif  // BULWARK_TESTS_SUPPORT_HPP
