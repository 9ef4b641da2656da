#include "server/core/base/log_fields.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/core/base/escape.h"

namespace sessionbroker::core {
namespace {

// Restores the process-wide style a test changed.
class StyleGuard {
 public:
  explicit StyleGuard(LogFieldStyle style) : previous_(GetLogFieldStyle()) {
    SetLogFieldStyle(style);
  }
  ~StyleGuard() { SetLogFieldStyle(previous_); }

 private:
  LogFieldStyle previous_;
};

TEST(QuotedTest, TextStyleIsTheDefaultAndQuotesTheEscapedValue) {
  EXPECT_EQ(GetLogFieldStyle(), LogFieldStyle::kText);
  EXPECT_EQ(Quoted("billing"), "\"billing\"");
  EXPECT_EQ(Quoted(""), "\"\"");
  EXPECT_EQ(Quoted("no \"such\" host\n"), "\"no \\\"such\\\" host\\n\"");
  const std::string odd("a\x1e\x7f\xFF", 4);
  EXPECT_EQ(Quoted(odd), "\"" + EscapeForLogText(odd) + "\"");
}

TEST(QuotedTest, MarkedStyleCarriesTheRawValueBetweenMarkers) {
  StyleGuard marked(LogFieldStyle::kMarked);
  EXPECT_EQ(Quoted("no \"such\" host\n"),
            std::string(1, kLogFieldBegin) + "no \"such\" host\n" + kLogFieldEnd);
  EXPECT_EQ(Quoted(""), std::string(1, kLogFieldBegin) + kLogFieldEnd);
}

TEST(QuotedTest, MarkerBytesInAMarkedValueCannotEndItEarly) {
  StyleGuard marked(LogFieldStyle::kMarked);
  EXPECT_EQ(
      Quoted(absl::StrCat("a", std::string(1, kLogFieldEnd), "b", std::string(1, kLogFieldBegin))),
      std::string(1, kLogFieldBegin) + "a?b?" + kLogFieldEnd);
}

TEST(MillisTest, RoundsToTheMillisecond) {
  EXPECT_EQ(Millis(absl::Microseconds(1234567)), "1.234s");
  EXPECT_EQ(Millis(absl::ZeroDuration()), "0");
}

}  // namespace
}  // namespace sessionbroker::core
