// libFuzzer target for AdminHandler: the input is one request (method, path, query, body and
// credentials, separated by NUL bytes). Whatever it holds, handle() answers a status it
// documents, with a body that is valid JSON (UTF-8 included) for every API path, and a request
// without the operator's token changes nothing. Built with -DBULWARK_FUZZ=ON on clang
// (ci-clang); ctest runs it from the seed corpus in admin_request_corpus/.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <bulwark/admin.hpp>
#include <bulwark/in_memory_dead_letter_store.hpp>

namespace {

[[noreturn]] void defect() {
    __builtin_trap();
}

const std::string token = "fuzz-operator-token-0123";

std::vector<std::string> fields(std::string_view input) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (out.size() < 4) {
        const std::size_t nul = input.find('\0', at);
        if (nul == std::string_view::npos) {
            break;
        }
        out.emplace_back(input.substr(at, nul - at));
        at = nul + 1;
    }
    out.emplace_back(input.substr(std::min(at, input.size())));
    out.resize(5);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::vector<std::string> f =
        fields(std::string_view(reinterpret_cast<const char*>(data), size));
    bulwark::ManualClock clock;
    bulwark::InMemoryDeadLetterStore store(bulwark::InMemoryDeadLetterStoreOptions{}, clock);
    bulwark::CircuitBreakerRegistry registry(bulwark::CircuitBreakerOptions{}, clock);
    bulwark::Degradation degradation(clock);
    bulwark::ErrorClassifier classifier(bulwark::redact_defaults());
    registry.get("email");
    bulwark::DeadLetter letter;
    letter.id = "dl-1";
    letter.type = "sms";
    letter.error = "timed out \xff <b>";
    letter.payload = std::string("\0\x01\x80 bytes", 9);
    store.add(letter);
    bulwark::AdminOptions options;
    options.tokens = {{"fuzzer", token}};
    bulwark::AdminHandler admin(options, clock);
    admin.breakers(registry).degradation(degradation).dead_letters(store).classifier(classifier);

    // Credentials "T" stand for the real token, so the fuzzer reaches the endpoints behind it.
    const bool authorised = f[4] == "T";
    const bulwark::AdminResponse r =
        admin.handle({f[0], f[1], f[2], f[3], authorised ? token : f[4]});
    switch (r.status) {
        case 200:
        case 400:
        case 403:
        case 404:
        case 405:
        case 413:
        case 429:
        case 503:
            break;
        default:
            defect();
    }
    const bool page = r.content_type.rfind("text/", 0) == 0;
    if (!page) {
        bulwark::detail::JsonValue v;
        std::string why;
        if (!bulwark::detail::read_json(r.body, v, why, 64)) {
            defect();
        }
    }
    if (!authorised) {
        // Without the token only the page and the liveness probe answer; nothing changes.
        if (r.status == 200 && !page && r.body != R"({"status":"up"})") {
            defect();
        }
        if (store.get("dl-1")->status != bulwark::DeadLetterStatus::pending ||
            !store.get("dl-1")->category.empty() ||
            registry.get("email").state() != bulwark::CircuitState::closed ||
            degradation.overridden() || !admin.audit().empty()) {
            defect();
        }
    }
    return 0;
}
