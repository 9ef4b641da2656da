// Specification of StatusCollector: a snapshot reports what the pool, the
// runner, the health checker and the session provider say, with per-client
// occupancy merged and ranked. Fakes and a FakeClock throughout.
#include "server/core/monitor/status_collector.h"

#include <memory>
#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/build_info.h"
#include "server/core/base/clock.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/pool/health_checker.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::HasSubstr;

class StatusCollectorTest : public ::testing::Test {
 protected:
  StatusCollectorTest() {
    PoolOptions options;
    options.pool_size = 2;
    options.max_overflow = 1;
    options.timeout = absl::Seconds(7);
    options.recycle = absl::Seconds(1800);
    options.pre_ping = false;
    options.reconnect_backoff.jitter = 0;
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    runner_ =
        std::make_unique<StatementRunner>(*pool_, timers_, executor_, clock_, RunnerOptions{});
    health_ =
        std::make_unique<HealthChecker>(*pool_, timers_, clock_, absl::Seconds(2), [](bool) {});
    collector_ = std::make_unique<StatusCollector>(
        *pool_, *runner_, *health_, [this] { return sessions_; }, clock_, /*top_clients=*/3);
  }
  ~StatusCollectorTest() override {
    health_->Stop();
    held_.clear();
    pool_->Close();
    executor_.RunAll();
  }

  void Hold(const std::string& client, int n) {
    for (int i = 0; i < n; ++i) {
      AcquireRequest request;
      request.client_id = client;
      pool_->Acquire(request, [this](absl::StatusOr<PooledConnection> c) {
        if (c.ok()) held_.push_back(*std::move(c));
      });
    }
    executor_.RunAll();
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  FakeConnector connector_;
  SessionStats sessions_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
  std::unique_ptr<HealthChecker> health_;
  std::unique_ptr<StatusCollector> collector_;
  std::vector<PooledConnection> held_;
};

TEST_F(StatusCollectorTest, ReportsVersionUptimeAndConfiguration) {
  clock_.Advance(absl::Seconds(42));
  const PoolSnapshot s = collector_->Collect();
  EXPECT_EQ(s.time, clock_.Now());
  EXPECT_EQ(s.uptime, absl::Seconds(42));
  EXPECT_EQ(s.version, BrokerVersion());
  EXPECT_FALSE(s.version.empty());
  EXPECT_EQ(s.config.pool_size, 2);
  EXPECT_EQ(s.config.max_overflow, 1);
  EXPECT_EQ(s.config.timeout, absl::Seconds(7));
  EXPECT_EQ(s.config.recycle, absl::Seconds(1800));
  EXPECT_FALSE(s.draining);
  collector_->SetDraining();
  EXPECT_TRUE(collector_->Collect().draining);
}

TEST_F(StatusCollectorTest, ReportsThePoolAndTheStatements) {
  Hold("a", 2);
  std::optional<absl::StatusOr<StatementRunner::Results>> out;
  RunRequest run;
  run.statements.push_back(storage::Statement{"SELECT 1", {}});
  runner_->Run(std::move(run),
               [&](absl::StatusOr<StatementRunner::Results> r) { out = std::move(r); });
  executor_.RunAll();
  ASSERT_TRUE(out.has_value() && out->ok());

  const PoolSnapshot s = collector_->Collect();
  EXPECT_EQ(s.pool.open, 3);
  EXPECT_EQ(s.pool.in_use, 2);
  EXPECT_EQ(s.pool.idle, 1);
  EXPECT_EQ(s.pool.overflow_in_use, 1);
  EXPECT_EQ(s.pool.checkouts, 3);
  EXPECT_EQ(s.pool.connects, 3);
  EXPECT_EQ(s.statements.statements, 1);
  EXPECT_EQ(s.statement_duration.count, 1);
  EXPECT_EQ(s.statement_duration_totals.count, 1u);
  EXPECT_EQ(s.checkout_wait.count, 3);
  EXPECT_EQ(s.checkout_wait_totals.count, 3u);
}

TEST_F(StatusCollectorTest, MapsEverySessionNumber) {
  sessions_.open = 9;
  sessions_.in_transaction = 2;
  sessions_.held_by_stream = 3;
  sessions_.queued_calls = 4;
  sessions_.begun = 20;
  sessions_.tx_killed_idle = 5;
  sessions_.tx_killed_max_duration = 6;
  sessions_.tx_killed_session_end = 7;
  const PoolSnapshot s = collector_->Collect();
  EXPECT_EQ(s.sessions.open, 9);
  EXPECT_EQ(s.sessions.held_by_stream, 3);
  EXPECT_EQ(s.sessions.begun, 20);
  EXPECT_EQ(s.sessions.tx_killed_max_duration, 6);
}

TEST_F(StatusCollectorTest, RanksClientsByConnectionsThenSessionsAndKeepsTheTop) {
  Hold("billing", 2);
  Hold("search", 1);
  Hold("search", 2);  // both wait: the pool has 3 connections
  sessions_.open_by_client = {{"reports", 10}, {"billing", 1}, {"idle-service", 0}, {"x", 2}};
  const PoolSnapshot s = collector_->Collect();
  EXPECT_EQ(s.clients_total, 4) << "billing, search, reports, x (a zero count is no share)";
  ASSERT_EQ(s.top_clients.size(), 3u);
  EXPECT_EQ(s.top_clients[0].client_id, "search");
  EXPECT_EQ(s.top_clients[0].in_use, 1);
  EXPECT_EQ(s.top_clients[0].waiting, 2);
  EXPECT_EQ(s.top_clients[1].client_id, "billing");
  EXPECT_EQ(s.top_clients[1].in_use, 2);
  EXPECT_EQ(s.top_clients[1].sessions, 1);
  EXPECT_EQ(s.top_clients[2].client_id, "reports");
  EXPECT_EQ(s.top_clients[2].sessions, 10);
  EXPECT_TRUE(s.pool.clients.empty());
}

TEST_F(StatusCollectorTest, ReportsTheDatabaseAsTheHealthProbeAndConnectsSeeIt) {
  EXPECT_FALSE(collector_->Collect().database_reachable) << "not before the first probe";
  health_->Start();
  executor_.RunAll();
  PoolSnapshot s = collector_->Collect();
  EXPECT_TRUE(s.database_reachable);
  EXPECT_TRUE(s.last_error.empty());

  connector_.set_fail_connects(true);
  clock_.Advance(absl::Seconds(1));
  Hold("a", 2);  // one idle connection is reused, the second needs a connect
  s = collector_->Collect();
  EXPECT_THAT(s.last_error, HasSubstr("fake database is down"));
  EXPECT_EQ(s.last_error_time, clock_.Now());
  EXPECT_TRUE(s.pool.database_down);
}

// A probe that finds every connection busy learns nothing about the
// database: it must not show up as the database's last error (nor move
// sessionbroker_database_last_error_timestamp_seconds, which alerts watch).
TEST_F(StatusCollectorTest, ABusyPoolIsNotReportedAsADatabaseError) {
  health_->Start();
  executor_.RunAll();
  ASSERT_TRUE(collector_->Collect().database_reachable);
  Hold("a", 3);  // the whole pool
  clock_.Advance(absl::Seconds(2));
  timers_.RunDue();  // the next probe: no connection free
  executor_.RunAll();
  const PoolSnapshot s = collector_->Collect();
  EXPECT_TRUE(s.database_reachable);
  EXPECT_EQ(s.last_error, "");
  EXPECT_EQ(s.last_error_time, absl::InfinitePast());
  EXPECT_TRUE(health_->last_error().ok()) << health_->last_error();
}

}  // namespace
}  // namespace sessionbroker::core
