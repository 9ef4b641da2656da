// Specification of the connection budget (server/core/pool/connection_budget.h):
// the formula and the warning's text. Reading the settings from a real server
// and the warning in the broker's log are covered by
// tests/e2e/connection_limit_e2e_test.cc.
#include "server/core/pool/connection_budget.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::HasSubstr;

PoolOptions Pool(int size, int overflow, int replicas) {
  PoolOptions o;
  o.pool_size = size;
  o.max_overflow = overflow;
  o.expected_replicas = replicas;
  return o;
}

TEST(ConnectionBudgetTest, DemandIsThePoolMaximumTimesTheReplicas) {
  const ServerConnectionSettings server{60, 3, -1};
  const ConnectionBudget b = ComputeConnectionBudget(server, Pool(5, 10, 2));
  EXPECT_EQ(b.per_replica, 15);
  EXPECT_EQ(b.replicas, 2);
  EXPECT_EQ(b.demand, 30);
  EXPECT_EQ(b.available, 57);
  EXPECT_FALSE(b.exceeded);
}

TEST(ConnectionBudgetTest, ExceededWhenDemandPassesWhatOrdinaryRolesMayOpen) {
  const ServerConnectionSettings server{60, 3, -1};
  EXPECT_FALSE(ComputeConnectionBudget(server, Pool(5, 14, 3)).exceeded) << "57 of 57";
  EXPECT_TRUE(ComputeConnectionBudget(server, Pool(5, 15, 3)).exceeded) << "60 of 57";
}

TEST(ConnectionBudgetTest, ReservedConnectionsOfPostgres16CountWhenPresent) {
  const ServerConnectionSettings server{100, 3, 5};
  const ConnectionBudget b = ComputeConnectionBudget(server, Pool(10, 13, 4));
  EXPECT_EQ(b.available, 92);
  EXPECT_FALSE(b.exceeded);
  EXPECT_TRUE(ComputeConnectionBudget(server, Pool(10, 14, 4)).exceeded);
}

TEST(ConnectionBudgetTest, UnknownSettingsAreNeverExceeded) {
  EXPECT_FALSE(ComputeConnectionBudget(ServerConnectionSettings{}, Pool(100, 100, 10)).exceeded);
}

TEST(ConnectionBudgetTest, TheWarningNamesEveryNumberAndTheFormula) {
  const ServerConnectionSettings server{6, 3, -1};
  const PoolOptions pool = Pool(5, 10, 2);
  const std::string text =
      DescribeExceededBudget(server, pool, ComputeConnectionBudget(server, pool));
  EXPECT_THAT(text, HasSubstr("(DB_POOL_SIZE 5 + DB_MAX_OVERFLOW 10) x BROKER_EXPECTED_REPLICAS "
                              "2 = 30 > max_connections 6 - superuser_reserved_connections 3 = 3"));
  EXPECT_THAT(text, HasSubstr("PostgreSQL 16"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("- reserved_connections"))) << "absent before 16";

  const ServerConnectionSettings pg16{20, 3, 2};
  EXPECT_THAT(DescribeExceededBudget(pg16, pool, ComputeConnectionBudget(pg16, pool)),
              HasSubstr("- superuser_reserved_connections 3 - reserved_connections 2 = 15"));
}

}  // namespace
}  // namespace sessionbroker::core
