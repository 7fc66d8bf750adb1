// detail::JsonWriter, the writer behind every report's to_json().
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <bulwark/detail/json.hpp>

#include "catch.hpp"

using bulwark::detail::JsonWriter;

TEST_CASE("the JSON writer puts commas between members and elements at every depth", "[json]") {
    JsonWriter w;
    w.begin_object().field("a", std::uint64_t{1}).key("list").begin_array();
    w.begin_object().field("x", true).end_object();
    w.begin_object().end_object();
    w.begin_array().value("p").value("q").end_array();
    w.begin_array().end_array();
    w.value(std::uint64_t{2});
    w.end_array();
    w.key("inner").begin_object().key("deeper").begin_object().field("y", false);
    w.end_object().field("z", "after").end_object();
    w.field("last", 0.5).end_object();
    CHECK(w.str() ==
          "{\"a\":1,\"list\":[{\"x\":true},{},[\"p\",\"q\"],[],2],"
          "\"inner\":{\"deeper\":{\"y\":false},\"z\":\"after\"},\"last\":0.5}");
}

TEST_CASE("the JSON writer writes empty scopes and a bare value as whole documents", "[json]") {
    CHECK(JsonWriter().begin_object().end_object().take() == "{}");
    CHECK(JsonWriter().begin_array().end_array().take() == "[]");
    CHECK(JsonWriter().value("text").take() == "\"text\"");
    CHECK(JsonWriter().null().take() == "null");
}

TEST_CASE("the JSON writer escapes keys and strings and never writes a raw control character",
          "[json]") {
    JsonWriter w;
    w.begin_object()
        .field("k\"ey\n", std::string("q\"b\\s\r\n\t\x01\x1f\x7f"
                                      "end"))
        .end_object();
    CHECK(w.str() == "{\"k\\\"ey\\n\":\"q\\\"b\\\\s\\r\\n\\t\\u0001\\u001f\\u007fend\"}");
    for (const char c : w.str()) {
        CHECK((static_cast<unsigned char>(c) >= 0x20 && c != '\x7f'));
    }
}

TEST_CASE("the JSON writer writes numbers JSON can read and null for NaN and infinities",
          "[json]") {
    JsonWriter w;
    w.begin_array();
    w.value(42.0).value(0.1).value(-2.5e-7).value(std::numeric_limits<std::uint64_t>::max());
    w.value(std::nan("")).value(std::numeric_limits<double>::infinity());
    w.value(-std::numeric_limits<double>::infinity()).null();
    w.end_array();
    CHECK(w.str() == "[42,0.1,-2.5e-07,18446744073709551615,null,null,null,null]");
}
