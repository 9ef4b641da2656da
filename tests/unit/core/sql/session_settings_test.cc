#include "server/core/sql/session_settings.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

absl::StatusOr<SessionSettings> One(std::string name, std::string value = "x") {
  return NormalizeSessionSettings({{std::move(name), std::move(value)}});
}

TEST(SessionSettingsTest, EmptySettingsAreFine) {
  absl::StatusOr<SessionSettings> s = NormalizeSessionSettings({});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->empty());
}

TEST(SessionSettingsTest, EveryListedBuiltinNameIsAccepted) {
  ASSERT_FALSE(AllowedSessionSettings().empty());
  for (const std::string& name : AllowedSessionSettings()) {
    EXPECT_EQ(name, absl::AsciiStrToLower(name)) << "the list is lower case";
    EXPECT_TRUE(One(name).ok()) << name;
  }
}

TEST(SessionSettingsTest, NamesAreLowerCasedAndSortedValuesKeptVerbatim) {
  absl::StatusOr<SessionSettings> s = NormalizeSessionSettings(
      {{"Statement_Timeout", "5s"}, {"search_path", "App, Public"}, {"APP.Tenant_ID", "T-42"}});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(*s, ElementsAre(Pair("app.tenant_id", "T-42"), Pair("search_path", "App, Public"),
                              Pair("statement_timeout", "5s")));
}

TEST(SessionSettingsTest, SettingsThatChangeWhoTheCallerIsOrHowResultsReadAreRefused) {
  for (const char* name :
       {"role", "session_authorization", "datestyle", "DateStyle", "intervalstyle",
        "extra_float_digits", "bytea_output", "standard_conforming_strings", "client_encoding",
        "default_transaction_read_only", "transaction_isolation", "search_path2", ""}) {
    absl::StatusOr<SessionSettings> s = One(name);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(s.status().message(),
                HasSubstr(absl::StrCat("\"", absl::AsciiStrToLower(name), "\"")))
        << "the error names the setting";
  }
}

TEST(SessionSettingsTest, CustomDottedNamesAreAllowed) {
  for (const char* name :
       {"app.tenant_id", "request.jwt.claims", "myapp.user_id_2", "_x._y", "App.Tenant_Id"}) {
    EXPECT_TRUE(One(name).ok()) << name;
  }
}

TEST(SessionSettingsTest, MalformedCustomNamesAreRefused) {
  const std::string long_part(64, 'a');
  for (const std::string& name :
       {std::string("app."), std::string(".x"), std::string("a..b"), std::string("."),
        std::string("app. tenant"), std::string("app.tenant id"), std::string(" app.x"),
        std::string("app.x "), std::string("1app.x"), std::string("app.1x"), std::string("app.x-y"),
        std::string("app.x;drop"), std::string("app.x'"), absl::StrCat("app.", long_part),
        std::string("app.t\xc3\xa9nant"), std::string("app.x\0y", 7),
        std::string("search_path\0", 12)}) {
    absl::StatusOr<SessionSettings> s = One(name);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  // 63 characters per part is PostgreSQL's identifier limit, and is fine.
  EXPECT_TRUE(One(absl::StrCat("app.", std::string(63, 'a'))).ok());
}

TEST(SessionSettingsTest, ValueWithNulByteIsRefused) {
  absl::StatusOr<SessionSettings> s = One("app.tenant_id", std::string("a\0b", 3));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("app.tenant_id"));
  EXPECT_THAT(s.status().message(), HasSubstr("NUL"));
}

TEST(SessionSettingsTest, ValueLongerThanTheLimitIsRefused) {
  EXPECT_TRUE(One("app.claims", std::string(kMaxSettingValueBytes, 'v')).ok());
  absl::StatusOr<SessionSettings> s =
      One("app.claims", std::string(kMaxSettingValueBytes + 1, 'v'));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("app.claims"));
  EXPECT_THAT(s.status().message(), HasSubstr(absl::StrCat(kMaxSettingValueBytes)));
}

TEST(SessionSettingsTest, AtMostTheLimitOfSettings) {
  SessionSettings settings;
  for (int i = 0; i < kMaxSessionSettings; ++i) {
    settings.emplace_back(absl::StrCat("app.s", i), "v");
  }
  EXPECT_TRUE(NormalizeSessionSettings(settings).ok());
  settings.emplace_back("app.one_more", "v");
  absl::StatusOr<SessionSettings> s = NormalizeSessionSettings(settings);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("too many"));
}

TEST(SessionSettingsTest, DuplicatesAfterLowerCasingAreRefused) {
  for (const SessionSettings& settings :
       {SessionSettings{{"search_path", "a"}, {"SEARCH_PATH", "b"}},
        SessionSettings{{"app.x", "same"}, {"App.X", "same"}},
        SessionSettings{{"app.x", "1"}, {"work_mem", "1MB"}, {"APP.x", "2"}}}) {
    absl::StatusOr<SessionSettings> s = NormalizeSessionSettings(settings);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("more than once"));
  }
}

}  // namespace
}  // namespace sessionbroker::core
