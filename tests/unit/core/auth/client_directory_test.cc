#include "server/core/auth/client_directory.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/auth/token_hash.h"

namespace sessionbroker::core {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A syntactically valid argon2id hash (verification is not exercised here).
constexpr char kHash[] = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo";
constexpr char kHash2[] = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$b3RoZXJoYXNo";

absl::Status ErrorOf(const std::string& text) { return ClientDirectory::Parse(text).status(); }

TEST(ClientDirectoryTest, ParsesEveryFieldOfAClient) {
  const std::string text = absl::StrCat(R"(
clients:
  - id: billing
    token_hashes: [")",
                                        kHash, R"("]
    spiffe_ids: ["spiffe://example.org/billing"]
    cert_subjects: ["CN=billing,O=Example"]
    roles: [admin, monitor]
    database_role: billing_app
    read_only: true
    allowed_statement_kinds: [SELECT, insert]
    weight: 3
    max_connections: 4
    max_waiters: 20
    max_sessions: 100
    reserved_connections: 1
    statement_timeout_max: 2.5
)");
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> d = ClientDirectory::Parse(text);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ((*d)->clients().size(), 1u);
  const ClientPolicy& p = *(*d)->Find("billing");
  EXPECT_EQ(p.token_hashes, std::vector<std::string>{kHash});
  EXPECT_TRUE(p.admin());
  EXPECT_TRUE(p.may_monitor());
  EXPECT_EQ(p.database_role, "billing_app");
  EXPECT_TRUE(p.read_only);
  EXPECT_EQ(p.allowed_statement_kinds, (std::vector<std::string>{"select", "insert"}));
  EXPECT_EQ(p.weight, 3);
  EXPECT_EQ(p.max_connections, 4);
  EXPECT_EQ(p.max_waiters, 20);
  EXPECT_EQ(p.max_sessions, 100);
  EXPECT_EQ(p.reserved_connections, 1);
  EXPECT_EQ(p.statement_timeout_max, absl::Milliseconds(2500));
  EXPECT_EQ((*d)->FindBySpiffeId("spiffe://example.org/billing"), (*d)->Find("billing"));
  EXPECT_EQ((*d)->FindBySubject("CN=billing,O=Example"), (*d)->Find("billing"));
  EXPECT_EQ((*d)->Find("nobody"), nullptr);
}

TEST(ClientDirectoryTest, AcceptsJsonAndAppliesDefaults) {
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> d = ClientDirectory::Parse(
      absl::StrCat(R"({"clients": [{"id": "web", "token_hashes": [")", kHash, R"("]}]})"));
  ASSERT_TRUE(d.ok()) << d.status();
  const ClientPolicy& p = *(*d)->Find("web");
  EXPECT_FALSE(p.admin());
  EXPECT_FALSE(p.may_monitor());
  EXPECT_FALSE(p.read_only);
  EXPECT_EQ(p.database_role, "");
  EXPECT_TRUE(p.allowed_statement_kinds.empty());
  EXPECT_EQ(p.weight, 1);
  EXPECT_EQ(p.max_connections, 0);
}

TEST(ClientDirectoryTest, RefusesAPlainTextTokenWithoutRepeatingIt) {
  absl::Status s = ErrorOf(R"(
clients:
  - id: web
    token_hashes: ["s3cret-plain-text-token"]
)");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not an argon2 hash"));
  EXPECT_THAT(s.message(), HasSubstr("hash-token"));
  EXPECT_THAT(s.message(), Not(HasSubstr("s3cret")));
}

TEST(ClientDirectoryTest, RefusesMistakesNamingTheClientAndField) {
  const std::string h = absl::StrCat("token_hashes: [\"", kHash, "\"]");
  struct Case {
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {"clients: [{id: 'bad id', " + h + "}]", "is not a client id"},
      {"clients: [{" + h + "}]", "id is missing"},
      {"clients: [{id: a}]", "has no credential"},
      {"clients: [{id: a, " + h + "}, {id: a, token_hashes: [\"" + kHash2 + "\"]}]",
       "appears twice"},
      {"clients: [{id: a, " + h + "}, {id: b, " + h + "}]", "a hash appears twice"},
      {"clients: [{id: a, " + h + ", roles: [root]}]", "unknown role \"root\""},
      {"clients: [{id: a, " + h + ", wieght: 2}]", "client \"a\".wieght: unknown field"},
      {"clients: [{id: a, " + h + ", weight: 0}]", "client \"a\".weight: expected an integer"},
      {"clients: [{id: a, " + h + ", max_connections: -1}]", "max_connections"},
      {"clients: [{id: a, " + h + ", read_only: maybe}]", "expected true or false"},
      {"clients: [{id: a, " + h + ", statement_timeout_max: -1}]", "statement_timeout_max"},
      {"clients: [{id: a, " + h + ", max_connections: 1, reserved_connections: 2}]",
       "more than max_connections"},
      {"clients: [{id: a, " + h + ", allowed_statement_kinds: []}]", "leave it out"},
      {"clients: [{id: a, spiffe_ids: ['https://x']}]", "not a SPIFFE id"},
      {"clients: [{id: a, spiffe_ids: ['spiffe://x/a']}, {id: b, spiffe_ids: ['spiffe://x/a']}]",
       "already names another client"},
      {"clients: {id: a}", "`clients` must be a list"},
      {"users: []", "`clients` list"},
      {"clients: [\n  {id: a,", "not valid YAML or JSON: line"},
  };
  for (const Case& c : cases) {
    absl::Status s = ErrorOf(c.text);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(s.message(), HasSubstr(c.expected)) << c.text;
  }
}

TEST(ClientDirectoryTest, AnEmptyListIsValidAndAdmitsNobody) {
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> d = ClientDirectory::Parse("clients: []");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE((*d)->clients().empty());
}

}  // namespace
}  // namespace sessionbroker::core
