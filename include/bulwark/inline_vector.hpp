// InlineVector: a vector with its first N elements inline, for results that are usually short.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_INLINE_VECTOR_HPP
#define BULWARK_INLINE_VECTOR_HPP

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

namespace bulwark {

// A vector that keeps up to N elements inline and moves all of them to the heap past N (so that
// data() stays contiguous): results that are usually short (a chain's attempts) cost no
// allocation. T must be default-constructible and movable. Thread-compatible.
//   bulwark::InlineVector<Attempt, 8> v;  v.push_back(a);  for (const Attempt& x : v) { ... }
template <class T, std::size_t N>
class InlineVector {
public:
    InlineVector() = default;
    InlineVector(const InlineVector&) = default;
    InlineVector& operator=(const InlineVector&) = default;
    // A moved-from vector is empty: its size must not outlive the heap block it described.
    InlineVector(InlineVector&& other) noexcept(std::is_nothrow_move_constructible<T>::value)
        : inline_(std::move(other.inline_)), heap_(std::move(other.heap_)), size_(other.size_) {
        other.clear();
    }
    InlineVector& operator=(InlineVector&& other) noexcept(
        std::is_nothrow_move_assignable<T>::value) {
        if (this != &other) {
            inline_ = std::move(other.inline_);
            heap_ = std::move(other.heap_);
            size_ = other.size_;
            other.clear();
        }
        return *this;
    }
    ~InlineVector() = default;

    void clear() noexcept {
        heap_.clear();
        size_ = 0;
    }

    void push_back(T value) {
        if (heap_.empty() && size_ < N) {
            inline_[size_++] = std::move(value);
            return;
        }
        if (heap_.empty()) {
            heap_.reserve(2 * N);
            for (std::size_t i = 0; i < size_; ++i) {
                heap_.push_back(std::move(inline_[i]));
            }
        }
        heap_.push_back(std::move(value));
        ++size_;
    }
    T* data() noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
    const T* data() const noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T& operator[](std::size_t i) noexcept { return data()[i]; }
    const T& operator[](std::size_t i) const noexcept { return data()[i]; }
    T* begin() noexcept { return data(); }
    T* end() noexcept { return data() + size_; }
    const T* begin() const noexcept { return data(); }
    const T* end() const noexcept { return data() + size_; }
    T& back() noexcept { return data()[size_ - 1]; }
    const T& back() const noexcept { return data()[size_ - 1]; }

private:
    std::array<T, N> inline_{};
    std::vector<T> heap_;
    std::size_t size_ = 0;
};

}  // namespace bulwark

#endif  // BULWARK_INLINE_VECTOR_HPP
