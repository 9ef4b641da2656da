#include "server/core/auth/statement_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::HasSubstr;

absl::Status Check(const ClientPolicy& p, std::vector<absl::string_view> sqls) {
  return CheckStatementsAllowed(p, sqls);
}

TEST(StatementPolicyTest, AnUnconstrainedClientRunsAnything) {
  ClientPolicy p;
  p.id = "free";
  EXPECT_FALSE(ConstrainsStatements(p));
  EXPECT_TRUE(Check(p, {"SET ROLE postgres", "DROP TABLE t"}).ok());
}

TEST(StatementPolicyTest, RoleBoundClientsCannotChangeTheRole) {
  ClientPolicy p;
  p.id = "billing";
  p.database_role = "billing_app";
  for (absl::string_view sql :
       {"SET ROLE postgres", "RESET ROLE", "SET SESSION AUTHORIZATION DEFAULT",
        "SELECT set_config('role', 'x', false)", "SELECT set_config('ROLE', 'x', true)",
        "DISCARD ALL"}) {
    absl::Status s = Check(p, {sql});
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << sql;
    EXPECT_THAT(s.message(), HasSubstr("billing_app")) << sql;
  }
  EXPECT_TRUE(Check(p, {"SELECT 1", "UPDATE t SET x = 1"}).ok());
  absl::Status batch = Check(p, {"SELECT 1", "SET ROLE other"});
  EXPECT_THAT(batch.message(), HasSubstr("statements[1]"));
}

TEST(StatementPolicyTest, KindsOutsideTheAllowListAreNamed) {
  ClientPolicy p;
  p.id = "reports";
  p.allowed_statement_kinds = {"select"};
  EXPECT_TRUE(Check(p, {"SELECT * FROM t"}).ok());
  absl::Status ddl = Check(p, {"CREATE TABLE x (i int)"});
  EXPECT_EQ(ddl.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(ddl.message(), HasSubstr("of kind ddl"));
  EXPECT_THAT(Check(p, {"DELETE FROM t"}).message(), HasSubstr("of kind delete"));
}

TEST(StatementPolicyTest, ReadOnlyClientsCannotSet) {
  ClientPolicy p;
  p.id = "viewer";
  p.read_only = true;
  EXPECT_EQ(Check(p, {"SET TRANSACTION READ WRITE"}).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check(p, {"SET transaction_read_only = off"}).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Check(p, {"SELECT 1"}).ok());
}

}  // namespace
}  // namespace sessionbroker::core
