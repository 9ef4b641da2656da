#include "server/storage/conninfo.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::storage {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

Conninfo MustParse(const std::string& text) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(text);
  EXPECT_TRUE(parsed.ok()) << text << ": " << parsed.status();
  return parsed.ok() ? *std::move(parsed) : *Conninfo::Parse("");
}

std::vector<std::string> Keywords(const Conninfo& c) {
  std::vector<std::string> out;
  for (const Conninfo::Option& option : c.options()) out.push_back(option.keyword);
  return out;
}

TEST(ConninfoTest, AUrlIsReadIntoItsOptions) {
  const Conninfo c = MustParse("postgresql://app:secret@db.example:5433/appdb?sslmode=require");
  EXPECT_TRUE(c.is_url());
  EXPECT_EQ(c.Get("host"), "db.example");
  EXPECT_EQ(c.Get("port"), "5433");
  EXPECT_EQ(c.Get("dbname"), "appdb");
  EXPECT_EQ(c.Get("user"), "app");
  EXPECT_EQ(c.Get("password"), "secret");
  EXPECT_EQ(c.Get("sslmode"), "require");
  EXPECT_THAT(Keywords(c),
              UnorderedElementsAre("host", "port", "dbname", "user", "password", "sslmode"));
}

TEST(ConninfoTest, ThePostgresSchemeIsAUrlToo) {
  EXPECT_TRUE(MustParse("postgres://h/db").is_url());
  EXPECT_TRUE(IsConninfoUrl("postgres://h/db"));
  EXPECT_FALSE(IsConninfoUrl("host=h"));
  EXPECT_FALSE(MustParse("host=h").is_url());
}

TEST(ConninfoTest, KeyValuePairsAreReadWithQuotesEscapesAndSpacesAroundTheEqualsSign) {
  const Conninfo c = MustParse("host=db  port = 5432 password='a b\\'c\\\\' application_name=x");
  EXPECT_EQ(c.Get("host"), "db");
  EXPECT_EQ(c.Get("port"), "5432");
  EXPECT_EQ(c.Get("password"), "a b'c\\");
  EXPECT_EQ(c.Get("application_name"), "x");
}

TEST(ConninfoTest, PercentEncodingIsDecoded) {
  const Conninfo c = MustParse("postgresql://b%40b:p%40ss%20word@h/my%2Fdb?application_name=a%26b");
  EXPECT_EQ(c.Get("user"), "b@b");
  EXPECT_EQ(c.Get("password"), "p@ss word");
  EXPECT_EQ(c.Get("dbname"), "my/db");
  EXPECT_EQ(c.Get("application_name"), "a&b");
}

TEST(ConninfoTest, AnIpv6HostLosesItsBrackets) {
  const Conninfo c = MustParse("postgresql://[::1]:5433/db");
  EXPECT_EQ(c.Get("host"), "::1");
  EXPECT_EQ(c.Get("port"), "5433");
}

TEST(ConninfoTest, SeveralHostsBecomeCommaSeparatedLists) {
  const Conninfo c = MustParse("postgresql://a:5001,[::1]:5002,c/db?target_session_attrs=any");
  EXPECT_EQ(c.Get("host"), "a,::1,c");
  EXPECT_EQ(c.Get("port"), "5001,5002,");
  // And back: libpq reads the rebuilt string into the same options.
  const Conninfo again = MustParse(c.ToString());
  EXPECT_EQ(again.Get("host"), "a,::1,c");
  EXPECT_EQ(again.Get("port"), "5001,5002,");
}

TEST(ConninfoTest, IsSetSeesOptionsFromTheQueryTheAuthorityAndEmptyValues) {
  const Conninfo url = MustParse("postgresql://u@h/db?keepalives_idle=5&tcp_user_timeout=0");
  EXPECT_TRUE(url.IsSet("keepalives_idle"));
  EXPECT_TRUE(url.IsSet("tcp_user_timeout"));
  EXPECT_TRUE(url.IsSet("user"));
  EXPECT_FALSE(url.IsSet("keepalives"));
  EXPECT_FALSE(url.IsSet("password"));
  const Conninfo kv = MustParse("host=h keepalives=''");
  EXPECT_TRUE(kv.IsSet("keepalives"));
  EXPECT_EQ(kv.Get("keepalives"), "");
  EXPECT_FALSE(kv.IsSet("port"));
}

TEST(ConninfoTest, TheEmptyStringSetsNothing) {
  const Conninfo c = MustParse("");
  EXPECT_THAT(c.options(), IsEmpty());
  EXPECT_EQ(c.ToString(), "");
  EXPECT_EQ(c.Redacted(), "");
}

TEST(ConninfoTest, ToStringPutsTheAddressFirstAndQuotesWhatMustBeQuoted) {
  const Conninfo c = MustParse(
      "postgresql://app:pw@db:5432/app?application_name=my%20app&options=-c%20a%3D'b'%5C");
  EXPECT_EQ(c.ToString(),
            "host=db port=5432 dbname=app user=app password=pw options='-c a=\\'b\\'\\\\' "
            "application_name='my app'");
  const Conninfo again = MustParse(c.ToString());
  EXPECT_EQ(again.Get("application_name"), "my app");
  EXPECT_EQ(again.Get("options"), "-c a='b'\\");
  EXPECT_EQ(MustParse("host=h application_name=''").ToString(), "host=h application_name=''");
}

TEST(ConninfoTest, RedactionHidesThePasswordOfAUrl) {
  const Conninfo c = MustParse("postgresql://app:secret@db:5432/app");
  EXPECT_EQ(c.Redacted(), "host=db port=5432 dbname=app user=app password=***");
}

TEST(ConninfoTest, RedactionHidesAPasswordGivenAsAQueryParameter) {
  const Conninfo c = MustParse("postgresql://db/app?user=app&password=s%20cret&sslmode=require");
  EXPECT_EQ(c.Redacted(), "host=db dbname=app user=app password=*** sslmode=require");
}

TEST(ConninfoTest, RedactionHidesQuotedKeyValuePasswords) {
  EXPECT_EQ(MustParse("host=db password = 'a b\\'c' user=app").Redacted(),
            "host=db user=app password=***");
}

TEST(ConninfoTest, EveryOptionLibpqMarksSecretIsRedacted) {
  const Conninfo c = MustParse("host=db sslpassword=keypass password=pw sslmode=verify-full");
  EXPECT_THAT(c.Redacted(), AllOf(HasSubstr("sslpassword=***"), HasSubstr("password=***"),
                                  HasSubstr("sslmode=verify-full"), Not(HasSubstr("keypass"))));
  EXPECT_THAT(c.SecretValues(), UnorderedElementsAre("pw", "keypass"));
}

TEST(ConninfoTest, AnUnencodedAtSignInAUrlPasswordDoesNotShowThePasswordsTail) {
  // libpq ends the user info at the first '@': "ss@db" is the host it will
  // try, and "ss" was meant as the end of the password.
  const Conninfo c = MustParse("postgresql://app:p@ss@db/app");
  EXPECT_EQ(c.Get("host"), "ss@db");
  EXPECT_EQ(c.Redacted(), "host=***@db dbname=app user=app password=***");
}

TEST(ConninfoTest, AMalformedPercentEscapeIsInvalidArgumentWithoutThePassword) {
  absl::StatusOr<Conninfo> c = Conninfo::Parse("postgresql://bob:Pass%zzword@127.0.0.1:1/db");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr("invalid percent-encoded token"), Not(HasSubstr("Pass"))));
}

TEST(ConninfoTest, AnUnclosedIpv6BracketIsInvalidArgumentWithoutTheUrl) {
  absl::StatusOr<Conninfo> c = Conninfo::Parse("postgresql://u:topsecret@[::1/db");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(),
              AllOf(HasSubstr("IPv6"), HasSubstr("\"]\""), Not(HasSubstr("topsecret"))));
}

TEST(ConninfoTest, AnUnknownOptionIsNamed) {
  absl::StatusOr<Conninfo> kv = Conninfo::Parse("host=h no_such_option=1");
  ASSERT_FALSE(kv.ok());
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(kv.status().message(), HasSubstr("invalid connection option \"no_such_option\""));
  absl::StatusOr<Conninfo> url = Conninfo::Parse("postgresql://h/db?no_such_option=1");
  ASSERT_FALSE(url.ok());
  EXPECT_THAT(url.status().message(), HasSubstr("\"no_such_option\""));
}

TEST(ConninfoTest, AnUnquotedPasswordWithASpaceIsRefusedWithoutShowingIt) {
  absl::StatusOr<Conninfo> c = Conninfo::Parse("host=h password=first second");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), AllOf(HasSubstr("missing \"=\""), Not(HasSubstr("second"))));
}

TEST(ConninfoTest, AnUnterminatedQuoteIsInvalidArgument) {
  absl::StatusOr<Conninfo> c = Conninfo::Parse("host=h password='abc");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("unterminated quoted string"));
}

TEST(ConninfoTest, RedactingAStringThatDoesNotParseShowsNothingOfIt) {
  EXPECT_THAT(RedactConninfo("postgresql://bob:Pass%zzword@h/db"),
              AllOf(HasSubstr("cannot parse"), Not(HasSubstr("bob")), Not(HasSubstr("Pass"))));
  EXPECT_THAT(RedactConninfo("db.example.com"), Not(HasSubstr("db.example.com")));
  EXPECT_EQ(RedactConninfo("host=db password=pw"), "host=db password=***");
}

}  // namespace
}  // namespace sessionbroker::storage
