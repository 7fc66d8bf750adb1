// The webhook channel's real transport: a small HTTP receiver on 127.0.0.1 and a JSON POST client.
// POSIX sockets only. Every socket has send and receive timeouts and the receiver's thread wakes
// on a pipe, so nothing here can hang the example: a receiver that is down has no listening
// socket, and a connect() to it is refused at once.
#ifndef BULWARK_EXAMPLES_WEBHOOK_HPP
#define BULWARK_EXAMPLES_WEBHOOK_HPP

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <utility>

#include <bulwark/delivery_error.hpp>

namespace webhook {

// How long any one socket operation may block.
inline constexpr std::chrono::milliseconds io_timeout{2000};

inline void set_timeouts(int fd) {
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(io_timeout.count() / 1000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>((io_timeout.count() % 1000) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// 127.0.0.1:port, the port in network byte order written byte by byte (htons is a macro that
// trips -Wconversion on some libcs).
inline sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    const unsigned char bytes[2] = {static_cast<unsigned char>(port >> 8U),
                                    static_cast<unsigned char>(port & 0xFFU)};
    std::memcpy(&addr.sin_port, bytes, sizeof bytes);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    return addr;
}

// Writes all of `data`; false on an error or a timeout. MSG_NOSIGNAL: a peer that closed early
// is an error here, not a SIGPIPE.
inline bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// The value of header `name` (lower case) in an HTTP head, or empty.
inline std::string header(std::string_view head, std::string_view name) {
    std::size_t line = head.find("\r\n");
    while (line != std::string_view::npos && line + 2 < head.size()) {
        const std::size_t start = line + 2;
        const std::size_t end = head.find("\r\n", start);
        const std::string_view text =
            head.substr(start, (end == std::string_view::npos ? head.size() : end) - start);
        const std::size_t colon = text.find(':');
        if (colon == name.size()) {
            bool same = true;
            for (std::size_t i = 0; i < colon && same; ++i) {
                const char c = text[i];
                same = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == name[i];
            }
            if (same) {
                std::string_view value = text.substr(colon + 1);
                while (!value.empty() && value.front() == ' ') {
                    value.remove_prefix(1);
                }
                return std::string(value);
            }
        }
        line = end;
    }
    return {};
}

// Reads one HTTP message (head and a Content-Length body) or, without Content-Length, up to
// the peer's close. False on a timeout, an error or a message over 64 KiB.
inline bool read_message(int fd, std::string& head, std::string& body) {
    std::string data;
    char buffer[4096];
    std::size_t head_end = std::string::npos;
    std::size_t length = 0;
    bool has_length = false;
    for (;;) {
        if (head_end == std::string::npos) {
            head_end = data.find("\r\n\r\n");
            if (head_end != std::string::npos) {
                head = data.substr(0, head_end);
                const std::string cl = header(head, "content-length");
                has_length = !cl.empty();
                length = has_length ? std::strtoul(cl.c_str(), nullptr, 10) : 0;
            }
        }
        if (head_end != std::string::npos && has_length && data.size() >= head_end + 4 + length) {
            body = data.substr(head_end + 4, length);
            return true;
        }
        if (data.size() > 65536) {
            return false;
        }
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0 && head_end != std::string::npos && !has_length) {
            body = data.substr(head_end + 4);
            return true;
        }
        if (n <= 0) {
            return false;
        }
        data.append(buffer, static_cast<std::size_t>(n));
    }
}

// The receiving end of the webhook: accepts POSTs on 127.0.0.1, answers 200 with a JSON receipt,
// and keeps the Idempotency-Key of every request it accepted. up() binds an ephemeral port (later
// up() calls the same one while it is free) and starts the serving thread; down() stops it
// and closes the listening socket, so that connects are refused until the next up().
//   webhook::Receiver r;  r.up();  ...  r.down();  r.up();  r.keys();
// Thread-safe: up(), down(), port() and keys() may be called from any thread.
class Receiver {
public:
    Receiver() = default;
    Receiver(const Receiver&) = delete;
    Receiver& operator=(const Receiver&) = delete;
    ~Receiver() { down(); }

    // Throws std::system_error when the socket cannot be bound.
    void up() {
        std::lock_guard<std::mutex> control(control_);
        if (thread_.joinable()) {
            return;
        }
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            throw std::system_error(errno, std::generic_category(), "webhook receiver: socket");
        }
        const int on = 1;
        // The old listener's connections linger in TIME_WAIT: rebinding its port needs this.
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        sockaddr_in addr = loopback(port_.load());
        bool bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
        if (!bound && port_.load() != 0) {
            // Someone took the old port meanwhile: any free one will do (port() tells).
            addr = loopback(0);
            bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
        }
        if (!bound || ::listen(fd, 64) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "webhook receiver: bind");
        }
        socklen_t size = sizeof addr;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &size);
        unsigned char bytes[2];
        std::memcpy(bytes, &addr.sin_port, sizeof bytes);
        port_.store(static_cast<std::uint16_t>((bytes[0] << 8U) | bytes[1]));
        int wake[2];
        if (::pipe2(wake, O_CLOEXEC) != 0) {
            const int error = errno;
            ::close(fd);
            throw std::system_error(error, std::generic_category(), "webhook receiver: pipe");
        }
        listen_fd_ = fd;
        wake_read_ = wake[0];
        wake_write_ = wake[1];
        // Listening before the thread starts: a connect made now waits in the backlog.
        thread_ = std::thread([this, fd, wake_fd = wake[0]] { serve(fd, wake_fd); });
    }

    // Idempotent.
    void down() {
        std::lock_guard<std::mutex> control(control_);
        if (!thread_.joinable()) {
            return;
        }
        const char stop = 'x';
        while (::write(wake_write_, &stop, 1) < 0 && errno == EINTR) {
        }
        thread_.join();
        ::close(listen_fd_);
        ::close(wake_read_);
        ::close(wake_write_);
        listen_fd_ = wake_read_ = wake_write_ = -1;
    }

    std::uint16_t port() const noexcept { return port_.load(); }

    // The Idempotency-Key of every request answered 200, each once.
    std::set<std::string> keys() const {
        std::lock_guard<std::mutex> lock(keys_mutex_);
        return keys_;
    }

    // Requests answered 200, repeats included.
    std::size_t accepted() const {
        std::lock_guard<std::mutex> lock(keys_mutex_);
        return accepted_;
    }

private:
    void serve(int listen_fd, int wake_fd) {
        for (;;) {
            pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
            const int ready = ::poll(fds, 2, 1000);
            if (ready < 0 && errno != EINTR) {
                return;
            }
            if ((fds[1].revents & POLLIN) != 0) {
                return;
            }
            if ((fds[0].revents & POLLIN) == 0) {
                continue;
            }
            const int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (client < 0) {
                continue;
            }
            set_timeouts(client);
            answer(client);
            ::close(client);
        }
    }

    void answer(int client) {
        std::string head;
        std::string body;
        if (!read_message(client, head, body)) {
            send_all(client, reply(400, R"({"error":"unreadable request"})"));
            return;
        }
        const std::string key = header(head, "idempotency-key");
        if (head.rfind("POST ", 0) != 0 || key.empty() || body.empty() || body.front() != '{') {
            send_all(client, reply(400, R"({"error":"expected a JSON POST with a key"})"));
            return;
        }
        std::size_t number = 0;
        {
            std::lock_guard<std::mutex> lock(keys_mutex_);
            keys_.insert(key);
            number = ++accepted_;
        }
        send_all(client, reply(200, R"({"receipt":"wh-)" + std::to_string(number) + R"("})"));
    }

    static std::string reply(int status, const std::string& json) {
        const char* reason = status == 200 ? "OK" : "Bad Request";
        return "HTTP/1.1 " + std::to_string(status) + " " + reason +
               "\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(json.size()) + "\r\nConnection: close\r\n\r\n" + json;
    }

    std::mutex control_;  // serializes up() and down()
    std::thread thread_;
    int listen_fd_ = -1;
    int wake_read_ = -1;
    int wake_write_ = -1;
    std::atomic<std::uint16_t> port_{0};
    mutable std::mutex keys_mutex_;
    std::set<std::string> keys_;
    std::size_t accepted_ = 0;
};

// What the receiver answered.
struct Response {
    int status = 0;
    std::string retry_after;  // the Retry-After header, if any
    std::string body;
};

// POSTs `json` to http://127.0.0.1:port/path with an Idempotency-Key and returns the response.
// Throws bulwark::DeliveryError: transient for a refused connection, a timeout or a broken
// exchange (the receiver may be back soon); the caller maps the status codes.
inline Response post_json(std::uint16_t port, std::string_view path, std::string_view json,
                          std::string_view idempotency_key) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                     "webhook: socket: " + std::generic_category().message(errno));
    }
    // Closed on every path out.
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    set_timeouts(fd);  // SO_SNDTIMEO bounds connect() too
    const sockaddr_in addr = loopback(port);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        const int error = errno;
        if (error == ECONNREFUSED) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                         "webhook: connect: connection refused", "ECONNREFUSED");
        }
        if (error == EAGAIN || error == EINPROGRESS || error == ETIMEDOUT) {
            throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                         "webhook: connect timed out", "ETIMEDOUT");
        }
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                     "webhook: connect: " + std::generic_category().message(error));
    }
    std::string request = "POST " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    request += "Content-Type: application/json\r\nIdempotency-Key: ";
    request.append(idempotency_key);
    request += "\r\nContent-Length: " + std::to_string(json.size());
    request += "\r\nConnection: close\r\n\r\n";
    request.append(json);
    std::string head;
    Response response;
    if (!send_all(fd, request) || !read_message(fd, head, response.body)) {
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                     "webhook: the exchange timed out or broke off", "ETIMEDOUT");
    }
    if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) {
        throw bulwark::DeliveryError(bulwark::DeliveryErrorKind::transient,
                                     "webhook: not an HTTP response");
    }
    response.status = std::atoi(head.c_str() + 9);
    response.retry_after = header(head, "retry-after");
    return response;
}

// `text` as a JSON string literal.
inline std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (const char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    const char* hex = "0123456789abcdef";
                    out += "\\u00";
                    out += hex[(static_cast<unsigned char>(c) >> 4U) & 0xFU];
                    out += hex[static_cast<unsigned char>(c) & 0xFU];
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

}  // namespace webhook

#endif  // BULWARK_EXAMPLES_WEBHOOK_HPP
