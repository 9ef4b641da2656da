// Specification of the client id taken from "x-client-id": valid UTF-8 of at
// most kMaxClientIdBytes, whatever bytes the caller sent.
#include "server/transport/client_id.h"

#include <string>

#include "gtest/gtest.h"

namespace sessionbroker::transport {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

TEST(ClientIdTest, UsualIdsAreKeptAsTheyAre) {
  EXPECT_EQ(ClientIdFromHeader(""), "");
  EXPECT_EQ(ClientIdFromHeader("billing"), "billing");
  EXPECT_EQ(ClientIdFromHeader("a \"quoted\" \\ id\t"), "a \"quoted\" \\ id\t");
  EXPECT_EQ(ClientIdFromHeader("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x98"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x90\x98");
}

TEST(ClientIdTest, BytesThatAreNotUtf8BecomeTheReplacementCharacter) {
  EXPECT_EQ(ClientIdFromHeader("caf\xE9"), std::string("caf") + kReplacement);
  EXPECT_EQ(ClientIdFromHeader("\xC0\xAF"), std::string(kReplacement) + kReplacement)
      << "an overlong '/'";
  EXPECT_EQ(ClientIdFromHeader("\xED\xA0\x80x"),
            std::string(kReplacement) + kReplacement + kReplacement + "x")
      << "a surrogate";
  EXPECT_EQ(ClientIdFromHeader("\xF4\x90\x80\x80"),
            std::string(kReplacement) + kReplacement + kReplacement + kReplacement)
      << "above U+10FFFF";
  EXPECT_EQ(ClientIdFromHeader("a\xE2\x82"), std::string("a") + kReplacement + kReplacement)
      << "a truncated sequence";
}

TEST(ClientIdTest, LongIdsAreCutBetweenCharacters) {
  EXPECT_EQ(ClientIdFromHeader(std::string(100, 'x')), std::string(kMaxClientIdBytes, 'x'));
  // A two-byte character at bytes 63..64 does not fit: it goes whole.
  EXPECT_EQ(ClientIdFromHeader(std::string(63, 'x') + "\xC3\xA9" + "z"), std::string(63, 'x'));
  EXPECT_EQ(ClientIdFromHeader(std::string(62, 'x') + "\xC3\xA9" + "z"),
            std::string(62, 'x') + "\xC3\xA9");
  EXPECT_EQ(ClientIdFromHeader(std::string(62, 'x') + "\xFF"), std::string(62, 'x'))
      << "nor does a replacement character";
}

}  // namespace
}  // namespace sessionbroker::transport
