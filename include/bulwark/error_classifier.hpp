// ErrorClassifier: sorts failed messages into operator-defined error classes by rule.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ERROR_CLASSIFIER_HPP
#define BULWARK_ERROR_CLASSIFIER_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <bulwark/classify.hpp>
#include <bulwark/config.hpp>
#include <bulwark/dead_letter_store.hpp>
#include <bulwark/detail/mutex.hpp>
#include <bulwark/detail/throw.hpp>

namespace bulwark {

// How urgently an error class needs an operator.
enum class ErrorSeverity : std::uint8_t { low, medium, high, critical };

inline constexpr std::size_t error_severity_count = 4;

inline const char* to_string(ErrorSeverity severity) noexcept {
    switch (severity) {
        case ErrorSeverity::low:
            return "low";
        case ErrorSeverity::medium:
            return "medium";
        case ErrorSeverity::high:
            return "high";
        case ErrorSeverity::critical:
            return "critical";
    }
    return "unknown";
}

// What operators fix failed messages by: a named class of errors, its category (who owns the
// fix), its severity and free labels.
//   bulwark::ErrorClass timeout{"network_timeout", "infrastructure", bulwark::ErrorSeverity::high,
//                               {"retryable"}};
// A plain value (thread-compatible).
struct ErrorClass {
    std::string name;      // "network_timeout"; a rule's class must have one
    std::string category;  // "infrastructure"
    ErrorSeverity severity = ErrorSeverity::medium;
    std::vector<std::string> tags;
};

// One classification rule: what it matches and the class it assigns. Every matcher that is set
// must hold (AND); an empty one matches anything, and a rule must set at least one.
//   bulwark::ErrorRule r;
//   r.channel = "sms";  r.pattern = "timed out";  r.error_class = {"network_timeout", "infra"};
//   r.type = bulwark::ErrorRule::of<std::system_error>();   // optional
// A plain value (thread-compatible).
struct ErrorRule {
    using TypeMatcher = std::function<bool(const std::exception_ptr&)>;

    // Exactly this channel (a DeadLetter's last attempt's channel, else its type).
    std::string channel;
    // Exactly this error code (a provider's "21211", a status "503").
    std::string code;
    // A substring of the error text, compared case-insensitively (ASCII letters fold; other
    // bytes compare as they are). Matched against the text before any redaction.
    std::string pattern;
    // Whether the exception is of this kind; never called with a null exception_ptr (a rule that
    // sets it does not match a classification made without an exception). Called with no lock
    // held, from any thread classifying: it must be thread-safe.
    TypeMatcher type;
    // The class assigned when the rule matches.
    ErrorClass error_class;

    // A TypeMatcher that holds for an exception of type E or derived from it (it rethrows the
    // exception_ptr to find out).
    template <class E>
    static TypeMatcher of() {
        static_assert(!std::is_reference<E>::value && !std::is_pointer<E>::value,
                      "ErrorRule::of<E>: E is the exception's type, as thrown");
        return &detail::holds_exception<E>;
    }
};

// What classify() decided for one failed message.
struct Classification {
    static constexpr std::size_t no_rule = std::numeric_limits<std::size_t>::max();

    // The class of the first rule that matched, or the unclassified class (name
    // "unclassified", empty category, medium severity, no tags) when none did.
    ErrorClass error_class;
    // Whether a rule matched; false = unclassified (still counted, never dropped).
    bool matched = false;
    // The index of the matching rule in the rule set classify() used; no_rule when unmatched.
    std::size_t rule = no_rule;
    // The error text as operators see it: passed through the classifier's redactor, if any.
    std::string error;
};

namespace detail {

inline bool ascii_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}
inline bool ascii_alpha(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
inline char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
inline std::string ascii_lowered(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        c = ascii_lower(c);
    }
    return out;
}

// Whether `folded` (already lower-case) occurs in `text`, ASCII letters compared without case.
inline bool contains_folded(std::string_view text, std::string_view folded) {
    return std::search(text.begin(), text.end(), folded.begin(), folded.end(),
                       [](char a, char b) { return ascii_lower(a) == b; }) != text.end();
}

// The characters an address's local part (before '@') and domain (after it) are taken from: the
// common ones, not all RFC 5322 allows, so that punctuation around an address is left alone.
inline bool email_local_char(char c) noexcept {
    return ascii_alpha(c) || ascii_digit(c) || c == '.' || c == '_' || c == '%' || c == '+' ||
           c == '-';
}
inline bool email_domain_char(char c) noexcept {
    return ascii_alpha(c) || ascii_digit(c) || c == '.' || c == '-';
}

// Replaces every e-mail address (local@domain.tld) in `text` with "[email]". One pass: at each
// '@', the local part runs back to the first character that cannot be in one (never into text
// already replaced), the domain forward; the domain must hold a '.' between two labels.
// Trailing dots and hyphens are punctuation, not domain ("write to a@b.com.").
inline std::string mask_emails(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    std::size_t copied = 0;  // text[0, copied) is in out
    std::size_t at = text.find('@');
    while (at != std::string_view::npos) {
        std::size_t begin = at;
        while (begin > copied && email_local_char(text[begin - 1])) {
            --begin;
        }
        while (begin < at && text[begin] == '.') {
            ++begin;  // a local part does not start with a dot
        }
        std::size_t end = at + 1;
        while (end < text.size() && email_domain_char(text[end])) {
            ++end;
        }
        while (end > at + 1 && (text[end - 1] == '.' || text[end - 1] == '-')) {
            --end;
        }
        const std::string_view domain = text.substr(at + 1, end - at - 1);
        const std::size_t dot = domain.find('.');
        const bool valid = begin < at && dot != std::string_view::npos && dot > 0 &&
                           domain.find("..") == std::string_view::npos;
        if (valid) {
            out.append(text.substr(copied, begin - copied)).append("[email]");
            copied = end;
            at = text.find('@', end);
        } else {
            at = text.find('@', at + 1);
        }
    }
    out.append(text.substr(copied));
    return out;
}

// Replaces every run of 12 or more digits in `text` with "[number]": card numbers, phone
// numbers, account numbers. A run may be split by single spaces or hyphens between digits
// ("4111 1111 1111 1111", "+44 7700-900-123 45"); only the digits and the separators inside the
// run are replaced. A run touching a letter or '_' on either side is part of a word (an id, a
// hash) and is left alone.
inline std::string mask_long_numbers(std::string_view text) {
    constexpr std::size_t min_digits = 12;
    std::string out;
    out.reserve(text.size());
    std::size_t copied = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        if (!ascii_digit(text[i])) {
            ++i;
            continue;
        }
        const std::size_t begin = i;
        std::size_t end = i;  // one past the run's last digit
        std::size_t digits = 0;
        while (end < text.size()) {
            if (ascii_digit(text[end])) {
                ++digits;
                ++end;
            } else if ((text[end] == ' ' || text[end] == '-') && end + 1 < text.size() &&
                       ascii_digit(text[end + 1])) {
                ++end;  // a separator between two digits
            } else {
                break;
            }
        }
        const auto word_char = [](char c) {
            return ascii_alpha(c) || c == '_';
        };
        const bool in_word = (begin > 0 && word_char(text[begin - 1])) ||
                             (end < text.size() && word_char(text[end]));
        if (digits >= min_digits && !in_word) {
            out.append(text.substr(copied, begin - copied)).append("[number]");
            copied = end;
        }
        i = end;
    }
    out.append(text.substr(copied));
    return out;
}

// A trailing " (code X)" in an error text, the form DeliveryEngine writes its dead letters'
// errors in: X, or empty when there is none.
inline std::string_view trailing_error_code(std::string_view error) {
    constexpr std::string_view open = " (code ";
    if (error.size() <= open.size() + 1 || error.back() != ')') {
        return {};
    }
    const std::size_t start = error.rfind(open);
    if (start == std::string_view::npos) {
        return {};
    }
    const std::size_t begin = start + open.size();
    const std::string_view code = error.substr(begin, error.size() - 1 - begin);
    if (code.empty() || code.find(')') != std::string_view::npos) {
        return {};
    }
    return code;
}

}  // namespace detail

// The default redaction: masks e-mail addresses as "[email]", then runs of 12 or more digits
// (spaces or hyphens allowed between digits; not inside a word) as "[number]". Everything else
// is left as it is. A hand-written scanner (no std::regex: slow to compile, slow to run); pure
// and thread-safe.
//   bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
inline Redactor redact_defaults() {
    return [](std::string_view text) {
        return detail::mask_long_numbers(detail::mask_emails(text));
    };
}

// Sorts failed messages into error classes by rules, first matching rule wins (in the order
// added), and counts how many fell into each class; a message no rule matches is unclassified,
// counted as such and returned like any other, never dropped.
//   bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
//   classifier.add(rule);                                   // see ErrorRule
//   bulwark::Classification c = classifier.classify(letter);  // a DeadLetter
//   classifier.stats();                                      // {"network_timeout": 3, ...}
// Thread-safe: classify() runs concurrently with itself and with add() / replace(). The rules
// are an immutable snapshot behind a shared_ptr, swapped under the mutex; a classification
// uses the snapshot it took at its start, and matches, calls type matchers and the redactor
// with no lock held. The mutex is held only to take the snapshot and to count.
class ErrorClassifier {
public:
    // The class name of what no rule matched; a rule may not use it.
    static constexpr std::string_view unclassified_name = "unclassified";

    // `redactor` rewrites each Classification::error (none = the text as it is).
    explicit ErrorClassifier(Redactor redactor = {}) : redactor_(std::move(redactor)) {
        counts_.emplace(std::string(unclassified_name), 0);
    }
    ErrorClassifier(const ErrorClassifier&) = delete;
    ErrorClassifier& operator=(const ErrorClassifier&) = delete;

    // Appends `rule` (tried after every rule added before). Throws std::invalid_argument naming
    // the field, and changes nothing, when its class has no name or is named "unclassified", its
    // severity is out of range, it sets none of channel / code / pattern / type, or a rule
    // already added has a class of the same name with another category or severity.
    ErrorClassifier& add(ErrorRule rule) {
        Entry entry = make_entry(std::move(rule));
        detail::LockGuard<detail::Mutex> lock(mutex_);
        check_consistent(*rules_, entry.rule.error_class, "ErrorRule");
        auto next = std::make_shared<std::vector<Entry>>();
        next->reserve(rules_->size() + 1);
        next->insert(next->end(), rules_->begin(), rules_->end());
        next->push_back(std::move(entry));
        counts_.emplace(next->back().rule.error_class.name, 0);
        rules_ = std::move(next);
        return *this;
    }

    // Replaces every rule with `rules`, at once: a classification running sees either the old
    // set or the new. Checked as add() checks, each against those before it
    // ("ErrorRule[2].pattern ..."); when one is refused, nothing changes. Counts are kept.
    void replace(std::vector<ErrorRule> rules) {
        auto next = std::make_shared<std::vector<Entry>>();
        next->reserve(rules.size());
        for (std::size_t i = 0; i < rules.size(); ++i) {
            const std::string label = "ErrorRule[" + std::to_string(i) + "]";
            Entry entry = make_entry(std::move(rules[i]), label);
            check_consistent(*next, entry.rule.error_class, label);
            next->push_back(std::move(entry));
        }
        detail::LockGuard<detail::Mutex> lock(mutex_);
        for (const Entry& e : *next) {
            counts_.emplace(e.rule.error_class.name, 0);
        }
        rules_ = std::move(next);
    }

    // A copy of the rules, in the order they are tried.
    std::vector<ErrorRule> rules() const {
        const std::shared_ptr<const std::vector<Entry>> now = snapshot();
        std::vector<ErrorRule> out;
        out.reserve(now->size());
        for (const Entry& e : *now) {
            out.push_back(e.rule);
        }
        return out;
    }

    std::size_t size() const { return snapshot()->size(); }

    // Classifies a failure described by its error text, its error code and the channel it
    // failed on (each may be empty), and the exception when there is one (type rules need it).
    Classification classify(std::string_view error, std::string_view code, std::string_view channel,
                            const std::exception_ptr& exception = nullptr) {
        Classification out = peek(error, code, channel, exception);
        count(out.error_class.name);
        return out;
    }

    // Classifies a dead letter: its error text (the last attempt's when the letter's own is
    // empty); its code, from a trailing " (code X)" of that text (how DeliveryEngine records
    // a provider's code; DeadLetter has no code field), else none; its channel, the last
    // attempt's when it names one, else the letter's type. No exception: type rules do not
    // match a letter.
    Classification classify(const DeadLetter& letter) {
        Classification out = peek(letter);
        count(out.error_class.name);
        return out;
    }

    // classify() without counting: for showing a class (an operator's console listing letters
    // again and again) rather than recording a failure.
    Classification peek(std::string_view error, std::string_view code, std::string_view channel,
                        const std::exception_ptr& exception = nullptr) const {
        const std::shared_ptr<const std::vector<Entry>> rules = snapshot();
        Classification out;
        for (std::size_t i = 0; i < rules->size(); ++i) {
            if (matches((*rules)[i], error, code, channel, exception)) {
                out.matched = true;
                out.rule = i;
                out.error_class = (*rules)[i].rule.error_class;
                break;
            }
        }
        if (!out.matched) {
            out.error_class.name = std::string(unclassified_name);
            out.error_class.severity = ErrorSeverity::medium;
        }
        out.error = redact(error);
        return out;
    }

    Classification peek(const DeadLetter& letter) const {
        std::string_view error = letter.error;
        std::string_view channel = letter.type;
        if (!letter.attempts.empty()) {
            const DeadLetterAttempt& last = letter.attempts.back();
            if (error.empty()) {
                error = last.error;
            }
            if (!last.channel.empty()) {
                channel = last.channel;
            }
        }
        return peek(error, detail::trailing_error_code(error), channel);
    }

    // `text` through the classifier's redactor (unchanged without one).
    std::string redact(std::string_view text) const {
        return redactor_ ? redactor_(text) : std::string(text);
    }

    // How many classifications fell into each class since construction, by class name:
    // "unclassified" and every class a rule has assigned (added or replaced) are present, at 0
    // until counted. A class whose rules were replaced away keeps its count.
    std::map<std::string, std::uint64_t> stats() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return {counts_.begin(), counts_.end()};
    }

private:
    struct Entry {
        ErrorRule rule;
        std::string folded_pattern;  // rule.pattern in lower case, folded once
    };

    static Entry make_entry(ErrorRule rule, const std::string& label = "ErrorRule") {
        const ErrorClass& c = rule.error_class;
        if (c.name.empty()) {
            detail::throw_invalid_option(label + ".error_class.name", "must not be empty", "\"\"");
        }
        if (c.name == unclassified_name) {
            detail::throw_invalid_option(label + ".error_class.name",
                                         "must not be \"unclassified\" (it names what no rule "
                                         "matches)",
                                         "\"unclassified\"");
        }
        detail::check_enumerator(c.severity, ErrorSeverity::critical,
                                 label + ".error_class.severity", "ErrorSeverity");
        if (rule.channel.empty() && rule.code.empty() && rule.pattern.empty() && !rule.type) {
            detail::throw_invalid_option(label + ".channel/code/pattern/type",
                                         "must set at least one (a rule must match something)",
                                         "none set for class \"" + c.name + "\"");
        }
        std::string folded = detail::ascii_lowered(rule.pattern);
        return Entry{std::move(rule), std::move(folded)};
    }

    // One class name means one class: its category and severity agree in every rule.
    static void check_consistent(const std::vector<Entry>& before, const ErrorClass& c,
                                 const std::string& label) {
        for (const Entry& e : before) {
            const ErrorClass& other = e.rule.error_class;
            if (other.name != c.name) {
                continue;
            }
            if (other.category != c.category) {
                detail::throw_invalid_option(label + ".error_class.category",
                                             "must be \"" + other.category +
                                                 "\" as in the class \"" + c.name +
                                                 "\" added before",
                                             "\"" + c.category + "\"");
            }
            if (other.severity != c.severity) {
                detail::throw_invalid_option(label + ".error_class.severity",
                                             std::string("must be ") + to_string(other.severity) +
                                                 " as in the class \"" + c.name + "\" added before",
                                             to_string(c.severity));
            }
            return;
        }
    }

    static bool matches(const Entry& e, std::string_view error, std::string_view code,
                        std::string_view channel, const std::exception_ptr& exception) {
        const ErrorRule& r = e.rule;
        return (r.channel.empty() || r.channel == channel) && (r.code.empty() || r.code == code) &&
               (e.folded_pattern.empty() || detail::contains_folded(error, e.folded_pattern)) &&
               (!r.type || (exception != nullptr && r.type(exception)));
    }

    std::shared_ptr<const std::vector<Entry>> snapshot() const {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        return rules_;
    }

    void count(const std::string& name) {
        detail::LockGuard<detail::Mutex> lock(mutex_);
        auto it = counts_.find(name);
        if (it == counts_.end()) {
            it = counts_.emplace(name, 0).first;
        }
        ++it->second;
    }

    const Redactor redactor_;
    mutable detail::Mutex mutex_;
    std::shared_ptr<const std::vector<Entry>> rules_ BULWARK_GUARDED_BY(mutex_) =
        std::make_shared<const std::vector<Entry>>();
    std::map<std::string, std::uint64_t, std::less<>> counts_ BULWARK_GUARDED_BY(mutex_);
};

}  // namespace bulwark

#endif  // BULWARK_ERROR_CLASSIFIER_HPP
