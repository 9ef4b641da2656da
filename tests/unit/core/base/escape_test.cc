#include "server/core/base/escape.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

std::string Json(absl::string_view value) {
  std::string out;
  AppendJsonString(value, &out);
  return out;
}

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

TEST(EscapeForLogTextTest, EscapesQuotesBackslashesAndLineBreaks) {
  EXPECT_EQ(EscapeForLogText(R"(say "hi" \ bye)"), R"(say \"hi\" \\ bye)");
  EXPECT_EQ(EscapeForLogText("a\nb\rc\td"), R"(a\nb\rc\td)");
}

TEST(EscapeForLogTextTest, OtherControlCharactersBecomeQuestionMarks) {
  EXPECT_EQ(EscapeForLogText(std::string("a\0b\x01\x1b\x1f", 6)), "a?b???");
}

TEST(EscapeForLogTextTest, KeepsOrdinaryTextAndUtf8AsTheyAre) {
  EXPECT_EQ(EscapeForLogText("billing-eu 42 ok"), "billing-eu 42 ok");
  EXPECT_EQ(EscapeForLogText("Grüße, 東京 🙂"), "Grüße, 東京 🙂");
  EXPECT_EQ(EscapeForLogText(""), "");
}

TEST(EscapeForLogTextTest, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(EscapeForLogText("a\xFF"
                             "b"),
            absl::StrCat("a", kReplacement, "b"));
  // A truncated sequence, an overlong '/', a surrogate: one U+FFFD per byte.
  EXPECT_EQ(EscapeForLogText("\xC3"), kReplacement);
  EXPECT_EQ(EscapeForLogText("\xC0\xAF"), absl::StrCat(kReplacement, kReplacement));
  EXPECT_EQ(EscapeForLogText("\xED\xA0\x80"),
            absl::StrCat(kReplacement, kReplacement, kReplacement));
}

TEST(AppendJsonStringTest, QuotesAndEscapesAsRfc8259Requires) {
  EXPECT_EQ(Json(R"(say "hi" \ bye)"), R"("say \"hi\" \\ bye")");
  EXPECT_EQ(Json("a\nb\rc\td"), R"("a\nb\rc\td")");
  EXPECT_EQ(Json(std::string("\0\x01\x1f", 3)), R"("\u0000\u0001\u001f")");
  EXPECT_EQ(Json(""), R"("")");
}

TEST(AppendJsonStringTest, AppendsToWhatIsThere) {
  std::string out = "{\"k\":";
  AppendJsonString("v", &out);
  EXPECT_EQ(out, R"({"k":"v")");
}

TEST(AppendJsonStringTest, KeepsUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(Json("Grüße 🙂"), "\"Grüße 🙂\"");
  EXPECT_EQ(Json("a\xFE"), absl::StrCat("\"a", kReplacement, "\""));
  EXPECT_EQ(Json("\xF4\x90\x80\x80"),  // above U+10FFFF
            absl::StrCat("\"", kReplacement, kReplacement, kReplacement, kReplacement, "\""));
}

TEST(EscapePrometheusLabelTest, EscapesBackslashQuoteAndNewlineOnly) {
  EXPECT_EQ(EscapePrometheusLabel(R"(billing "eu"\1)"), R"(billing \"eu\"\\1)");
  EXPECT_EQ(EscapePrometheusLabel("a\nb"), R"(a\nb)");
  // The format defines no other escapes: tabs and other control characters
  // stay as they are.
  EXPECT_EQ(EscapePrometheusLabel("a\tb\rc\x01"), "a\tb\rc\x01");
  EXPECT_EQ(EscapePrometheusLabel(""), "");
}

TEST(EscapePrometheusLabelTest, KeepsUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(EscapePrometheusLabel("東京"), "東京");
  EXPECT_EQ(EscapePrometheusLabel("x\x80y"), absl::StrCat("x", kReplacement, "y"));
}

TEST(AbbreviatedTest, ShortTextIsKeptWhole) {
  const std::string at_limit(kMaxEchoedChars, 'a');
  EXPECT_EQ(Abbreviated(at_limit), at_limit);
  EXPECT_EQ(Abbreviated(""), "");
}

TEST(AbbreviatedTest, LongTextIsCutToTheLimitWithAnEllipsis) {
  EXPECT_EQ(Abbreviated(std::string(10'000, 'a')), std::string(kMaxEchoedChars, 'a') + "...");
}

TEST(AbbreviatedTest, TheCutNeverSplitsAUtf8Character) {
  // "é" is two bytes; the limit falls between them.
  const std::string text = std::string(kMaxEchoedChars - 1, 'a') + "\xC3\xA9" + "tail";
  EXPECT_EQ(Abbreviated(text), std::string(kMaxEchoedChars - 1, 'a') + "...");
}

}  // namespace
}  // namespace sessionbroker::core
