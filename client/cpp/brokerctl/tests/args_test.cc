// Specifications of brokerctl's argument parsing: global flags anywhere,
// each command's flags, and the usage errors (exit code 2) they produce.
#include "client/cpp/brokerctl/args.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace brokerctl {
namespace {

using testing::ElementsAre;
using testing::HasSubstr;

const std::vector<FlagSpec> kQueryFlags = {
    {"--param", "-p", "VALUE", "a parameter", true},
    {"--json", "", "", "json"},
    {"--csv", "", "", "csv"},
};

TEST(ParseFlags, ReadsRepeatedValuesBooleansAndPositionals) {
  auto parsed = ParseFlags(kQueryFlags, {"SELECT $1, $2", "-p", "1", "--param=two", "--json"});
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->positional, ElementsAre("SELECT $1, $2"));
  EXPECT_THAT(parsed->values["--param"], ElementsAre("1", "two"));
  EXPECT_TRUE(parsed->Has("--json"));
  EXPECT_FALSE(parsed->Has("--csv"));
}

TEST(ParseFlags, AValueMayLookLikeAFlag) {
  auto parsed = ParseFlags(kQueryFlags, {"SELECT $1", "-p", "--json"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(parsed->values["--param"], ElementsAre("--json"));
  EXPECT_FALSE(parsed->Has("--json"));
}

TEST(ParseFlags, DoubleDashEndsFlags) {
  auto parsed = ParseFlags(kQueryFlags, {"--", "--json"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(parsed->positional, ElementsAre("--json"));
}

TEST(ParseFlags, HelpIsAlwaysKnown) {
  auto parsed = ParseFlags({}, {"--help"});
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->help);
}

TEST(ParseFlags, RefusesUnknownFlagsMissingValuesAndRepeats) {
  EXPECT_THAT(ParseFlags(kQueryFlags, {"--jsn"}).status().message(),
              HasSubstr("unknown flag --jsn"));
  EXPECT_THAT(ParseFlags(kQueryFlags, {"-p"}).status().message(), HasSubstr("needs a value"));
  EXPECT_THAT(ParseFlags(kQueryFlags, {"--json=yes"}).status().message(),
              HasSubstr("takes no value"));
  EXPECT_THAT(ParseFlags(kQueryFlags, {"--json", "--json"}).status().message(),
              HasSubstr("more than once"));
}

TEST(SplitInvocation, TakesGlobalFlagsBeforeAndAfterTheCommand) {
  auto inv = SplitInvocation(
      {"--target", "h:1", "query", "SELECT 1", "--client-id=billing", "--timeout", "2s", "--csv"},
      nullptr);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.target, "h:1");
  EXPECT_EQ(inv->global.client_id, "billing");
  EXPECT_EQ(inv->global.timeout, absl::Seconds(2));
  EXPECT_EQ(inv->command, "query");
  EXPECT_THAT(inv->args, ElementsAre("SELECT 1", "--csv"));
}

TEST(SplitInvocation, TargetDefaultsToTheEnvironmentThenLoopback) {
  EXPECT_EQ(SplitInvocation({"status"}, "broker:9")->global.target, "broker:9");
  EXPECT_EQ(SplitInvocation({"status"}, nullptr)->global.target, "127.0.0.1:50051");
  EXPECT_EQ(SplitInvocation({"status", "--target", "x:1"}, "broker:9")->global.target, "x:1");
}

TEST(SplitInvocation, TlsFlagsNameThePemFiles) {
  auto inv = SplitInvocation(
      {"--tls-ca", "/tls/ca.pem", "status", "--tls-cert=/tls/c.pem", "--tls-key", "/tls/c.key"},
      nullptr);
  ASSERT_TRUE(inv.ok()) << inv.status();
  EXPECT_EQ(inv->global.tls_ca, "/tls/ca.pem");
  EXPECT_EQ(inv->global.tls_cert, "/tls/c.pem");
  EXPECT_EQ(inv->global.tls_key, "/tls/c.key");
  EXPECT_EQ(inv->command, "status");
  EXPECT_FALSE(SplitInvocation({"status", "--tls-ca"}, nullptr).ok());
  auto alone = SplitInvocation({"status", "--tls-cert", "/tls/c.pem"}, nullptr);
  ASSERT_FALSE(alone.ok());
  EXPECT_THAT(std::string(alone.status().message()), HasSubstr("go together"));
}

TEST(SplitInvocation, HelpForms) {
  EXPECT_TRUE(SplitInvocation({"--help"}, nullptr)->global_help);
  EXPECT_TRUE(SplitInvocation({}, nullptr)->command.empty());
  auto inv = SplitInvocation({"help", "watch"}, nullptr);
  EXPECT_EQ(inv->command, "watch");
  EXPECT_THAT(inv->args, ElementsAre("--help"));
}

TEST(SplitInvocation, RefusesBadGlobalValues) {
  EXPECT_FALSE(SplitInvocation({"status", "--timeout", "soon"}, nullptr).ok());
  EXPECT_FALSE(SplitInvocation({"status", "--timeout", "-1s"}, nullptr).ok());
  EXPECT_FALSE(SplitInvocation({"status", "--target"}, nullptr).ok());
  EXPECT_FALSE(SplitInvocation({"--bogus", "status"}, nullptr).ok());
}

TEST(ParseDurationFlag, AcceptsUnitsAndPlainSeconds) {
  EXPECT_EQ(*ParseDurationFlag("--x", "10"), absl::Seconds(10));
  EXPECT_EQ(*ParseDurationFlag("--x", "250ms"), absl::Milliseconds(250));
  EXPECT_FALSE(ParseDurationFlag("--x", "0").ok());
}

TEST(HelpText, ListsTheCommandFlagsThenTheGlobalOnes) {
  const std::string help = HelpText("brokerctl query SQL", "Runs SQL.", kQueryFlags);
  EXPECT_THAT(help, HasSubstr("usage: brokerctl query SQL"));
  EXPECT_THAT(help, HasSubstr("-p, --param VALUE"));
  EXPECT_THAT(help, HasSubstr("--target HOST:PORT"));
  EXPECT_LT(help.find("--param"), help.find("--target"));
}

TEST(MainHelp, DocumentsTheExitCodes) {
  const std::string help = MainHelp();
  EXPECT_THAT(help, HasSubstr("1  PostgreSQL reported an error"));
  EXPECT_THAT(help, HasSubstr("3  the broker is unreachable"));
}

}  // namespace
}  // namespace brokerctl
