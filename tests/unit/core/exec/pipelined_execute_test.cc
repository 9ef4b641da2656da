// StatementRunner's routing to the pipelined engine (RunnerOptions::pipeline):
// which one-shot calls go there, with which deadline, and how cancellation
// and answers travel. A fake engine records submissions; the fake clock
// fixes time.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/connection_pool.h"
#include "server/storage/pipeline_engine.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::HasSubstr;
using Results = StatementRunner::Results;

// Records what it is given; the test answers calls with Answer().
class FakePipelineEngine final : public storage::PipelineEngine {
 public:
  uint64_t Submit(storage::PipelineCall call, storage::PipelineDone done) override {
    MutexLock lock(&mu_);
    calls_.push_back(std::move(call));
    dones_.push_back(std::move(done));
    return calls_.size();
  }
  void Cancel(uint64_t id, absl::Status why) override {
    MutexLock lock(&mu_);
    cancels_.emplace_back(id, std::move(why));
  }
  storage::PipelineStats Stats() const override {
    MutexLock lock(&mu_);
    storage::PipelineStats stats;
    stats.connections = 2;
    stats.connections_up = up_;
    return stats;
  }

  void SetUp(int up) {
    MutexLock lock(&mu_);
    up_ = up;
  }
  size_t submitted() const {
    MutexLock lock(&mu_);
    return calls_.size();
  }
  storage::PipelineCall call(size_t i) const {
    MutexLock lock(&mu_);
    return calls_[i];
  }
  std::vector<std::pair<uint64_t, absl::Status>> cancels() const {
    MutexLock lock(&mu_);
    return cancels_;
  }
  void Answer(size_t i, absl::StatusOr<storage::QueryResult> result) {
    storage::PipelineDone done;
    {
      MutexLock lock(&mu_);
      done = std::move(dones_[i]);
    }
    std::move(done)(std::move(result));
  }

 private:
  mutable Mutex mu_;
  int up_ ABSL_GUARDED_BY(mu_) = 2;
  std::vector<storage::PipelineCall> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<storage::PipelineDone> dones_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, absl::Status>> cancels_ ABSL_GUARDED_BY(mu_);
};

// Client "capped" may run statements for at most 10 s.
class CappedClientShares final : public ClientShares {
 public:
  ClientQuota QuotaFor(absl::string_view client_id) const override {
    ClientQuota quota;
    if (client_id == "capped") quota.statement_timeout_max = absl::Seconds(10);
    if (client_id == "heavy") quota.weight = 3;
    return quota;
  }
};

RunRequest One(std::string sql, std::vector<storage::Value> params = {}) {
  RunRequest r;
  r.statements.push_back(storage::Statement{std::move(sql), std::move(params)});
  return r;
}

class PipelinedExecuteTest : public ::testing::Test {
 protected:
  PipelinedExecuteTest() {
    PoolOptions options;
    options.pool_size = 1;
    options.max_overflow = 0;
    options.pre_ping = false;
    options.shares = std::make_shared<CappedClientShares>();
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    RunnerOptions runner_options;
    runner_options.max_statement_duration = absl::Minutes(5);
    runner_options.max_result_bytes = 1234;
    runner_options.pipeline = &engine_;
    runner_ = std::make_unique<StatementRunner>(*pool_, timers_, executor_, clock_, runner_options);
  }
  ~PipelinedExecuteTest() override {
    pool_->Close();
    executor_.RunAll();
  }

  // Starts `request`; its answer lands in *out.
  std::shared_ptr<RunningCall> Start(RunRequest request,
                                     std::optional<absl::StatusOr<Results>>* out) {
    return runner_->Run(std::move(request),
                        [out](absl::StatusOr<Results> r) { *out = std::move(r); });
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  FakeConnector connector_;
  FakePipelineEngine engine_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
};

TEST_F(PipelinedExecuteTest, StatelessOneShotGoesToTheEngineNotThePool) {
  std::optional<absl::StatusOr<Results>> out;
  Start(One("SELECT $1::int8", {storage::Value::Int64(7)}), &out);
  executor_.RunAll();
  ASSERT_EQ(engine_.submitted(), 1u);
  EXPECT_EQ(engine_.call(0).statement.sql, "SELECT $1::int8");
  EXPECT_EQ(engine_.call(0).statement.params[0], storage::Value::Int64(7));
  EXPECT_EQ(engine_.call(0).max_result_bytes, 1234u);
  EXPECT_EQ(connector_.connects(), 0);
  EXPECT_FALSE(out.has_value());
  storage::QueryResult result;
  result.command_tag = "SELECT 1";
  engine_.Answer(0, result);
  ASSERT_TRUE(out.has_value());
  ASSERT_TRUE(out->ok()) << out->status();
  EXPECT_EQ((**out)[0].command_tag, "SELECT 1");
  EXPECT_EQ(runner_->Stats().statements, 1);
  EXPECT_EQ(runner_->Stats().pipelined, 1);
}

TEST_F(PipelinedExecuteTest, CallsThatNeedAPooledConnectionKeepThePool) {
  std::vector<RunRequest> requests;
  requests.push_back(One("SELECT * FROM accounts"));  // a relation: may run user code
  requests.push_back(One("SET search_path = x"));
  requests.push_back(One("INSERT INTO t VALUES (1) RETURNING id"));
  RunRequest read_only = One("SELECT 1");
  read_only.transaction.read_only = true;
  requests.push_back(std::move(read_only));
  RunRequest role = One("SELECT 1");
  role.database_role = "reporting";
  requests.push_back(std::move(role));
  RunRequest typed = One("SELECT $1", {storage::Value::String("x")});
  typed.statements[0].param_types = {"uuid"};
  requests.push_back(std::move(typed));
  RunRequest batch = One("SELECT 1");
  batch.op = RunRequest::Op::kBatch;
  requests.push_back(std::move(batch));
  for (RunRequest& request : requests) {
    std::optional<absl::StatusOr<Results>> out;
    Start(std::move(request), &out);
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(engine_.submitted(), 0u);
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  EXPECT_GE(connector_.connects(), 1);
}

TEST_F(PipelinedExecuteTest, EngineWithNoConnectionUpLeavesTheCallToThePool) {
  engine_.SetUp(0);
  std::optional<absl::StatusOr<Results>> out;
  Start(One("SELECT 1"), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(out->ok()) << out->status();
  EXPECT_EQ(engine_.submitted(), 0u);
  EXPECT_EQ(connector_.connects(), 1);
}

TEST_F(PipelinedExecuteTest, DeadlineIsTheCallersCappedByTheMaxStatementDuration) {
  std::optional<absl::StatusOr<Results>> a, b, c;
  RunRequest soon = One("SELECT 1");
  soon.deadline = clock_.Now() + absl::Seconds(2);
  Start(std::move(soon), &a);
  RunRequest late = One("SELECT 1");
  late.deadline = clock_.Now() + absl::Hours(1);
  Start(std::move(late), &b);
  RunRequest capped = One("SELECT 1");
  capped.client_id = "capped";
  Start(std::move(capped), &c);
  ASSERT_EQ(engine_.submitted(), 3u);
  EXPECT_EQ(engine_.call(0).deadline, clock_.Now() + absl::Seconds(2));
  EXPECT_EQ(engine_.call(1).deadline, clock_.Now() + absl::Minutes(5));
  EXPECT_EQ(engine_.call(2).deadline, clock_.Now() + absl::Seconds(10));
}

TEST_F(PipelinedExecuteTest, TheCallersClientIdAndWeightGoToTheEnginesFairQueue) {
  std::optional<absl::StatusOr<Results>> a, b, c;
  RunRequest heavy = One("SELECT 1");
  heavy.client_id = "heavy";
  Start(std::move(heavy), &a);
  RunRequest plain = One("SELECT 1");
  plain.client_id = "plain";
  Start(std::move(plain), &b);
  Start(One("SELECT 1"), &c);
  ASSERT_EQ(engine_.submitted(), 3u);
  EXPECT_EQ(engine_.call(0).client_id, "heavy");
  EXPECT_EQ(engine_.call(0).weight, 3);
  EXPECT_EQ(engine_.call(1).client_id, "plain");
  EXPECT_EQ(engine_.call(1).weight, 1);
  EXPECT_EQ(engine_.call(2).client_id, "");
  EXPECT_EQ(engine_.call(2).weight, 1);
}

TEST_F(PipelinedExecuteTest, CancelledCallAsksTheEngineToCancelIt) {
  std::optional<absl::StatusOr<Results>> out;
  std::shared_ptr<RunningCall> running = Start(One("SELECT 1"), &out);
  ASSERT_NE(running, nullptr);
  running->Cancel();
  ASSERT_EQ(engine_.cancels().size(), 1u);
  EXPECT_EQ(engine_.cancels()[0].first, 1u);
  EXPECT_EQ(engine_.cancels()[0].second.code(), absl::StatusCode::kCancelled);
  // The engine answers with the status it was given.
  engine_.Answer(0, engine_.cancels()[0].second);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(runner_->Stats().cancellations, 1);
}

TEST_F(PipelinedExecuteTest, AbortPassesTheBrokersReasonToTheEngine) {
  std::optional<absl::StatusOr<Results>> out;
  std::shared_ptr<RunningCall> running = Start(One("SELECT 1"), &out);
  running->Abort(absl::AbortedError("session expired"));
  ASSERT_EQ(engine_.cancels().size(), 1u);
  EXPECT_EQ(engine_.cancels()[0].second, absl::AbortedError("session expired"));
}

TEST_F(PipelinedExecuteTest, EngineErrorReachesTheCallerAndIsCounted) {
  std::optional<absl::StatusOr<Results>> out;
  Start(One("SELECT 1"), &out);
  engine_.Answer(0, absl::InvalidArgumentError("division by zero"));
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out->status().message()), HasSubstr("division by zero"));
  EXPECT_EQ(runner_->Stats().statement_errors, 1);
}

TEST_F(PipelinedExecuteTest, InvalidRequestIsRefusedBeforeReachingTheEngine) {
  std::optional<absl::StatusOr<Results>> out;
  Start(One("SELECT 1; SELECT 2"), &out);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_.submitted(), 0u);
}

}  // namespace
}  // namespace sessionbroker::core
