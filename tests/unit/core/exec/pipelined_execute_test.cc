// StatementRunner's routing to the pipelined engine (RunnerOptions::pipeline):
// which one-shot calls and atomic batches go there, with which deadline, and
// how cancellation and answers travel. A fake engine records submissions; the fake clock
// fixes time.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
  uint64_t SubmitBatch(storage::PipelineBatch batch, storage::PipelineBatchDone done) override {
    MutexLock lock(&mu_);
    batches_.push_back(std::move(batch));
    batch_dones_.push_back(std::move(done));
    return 1000 + batches_.size();
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
  size_t batches() const {
    MutexLock lock(&mu_);
    return batches_.size();
  }
  storage::PipelineBatch batch(size_t i) const {
    MutexLock lock(&mu_);
    return batches_[i];
  }
  void AnswerBatch(size_t i, absl::StatusOr<std::vector<storage::QueryResult>> results) {
    storage::PipelineBatchDone done;
    {
      MutexLock lock(&mu_);
      done = std::move(batch_dones_[i]);
    }
    std::move(done)(std::move(results));
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
  std::vector<storage::PipelineBatch> batches_ ABSL_GUARDED_BY(mu_);
  std::vector<storage::PipelineBatchDone> batch_dones_ ABSL_GUARDED_BY(mu_);
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

RunRequest Batch(std::vector<std::string> sqls) {
  RunRequest r;
  r.op = RunRequest::Op::kBatch;
  for (std::string& sql : sqls) r.statements.push_back(storage::Statement{std::move(sql), {}});
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
  // A locking read: never stateless, whatever the catalog holds.
  requests.push_back(One("SELECT * FROM accounts FOR UPDATE"));
  requests.push_back(One("SELECT my_function(1)"));  // a user function
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
  for (RunRequest& request : requests) {
    std::optional<absl::StatusOr<Results>> out;
    Start(std::move(request), &out);
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  // The write with RETURNING asked the catalog (for its pooled reset):
  // nothing else went to the engine.
  ASSERT_EQ(engine_.submitted(), 1u);
  EXPECT_THAT(engine_.call(0).statement.sql, HasSubstr("pg_catalog.to_regclass"));
  EXPECT_EQ(engine_.batches(), 0u);
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  EXPECT_GE(connector_.connects(), 1);
}

// The catalog's answer to a lookup (CatalogGuard::ThroughEngine).
storage::QueryResult Verdict(bool stateless) {
  storage::QueryResult result;
  result.columns.push_back(storage::Column{"?column?", 16, "bool"});
  result.rows.push_back({storage::Value::Bool(stateless)});
  result.command_tag = "SELECT 1";
  return result;
}

TEST_F(PipelinedExecuteTest, TableReadTakesThePoolWithAResetUntilTheCatalogProvesIt) {
  const std::string read = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
  std::optional<absl::StatusOr<Results>> first;
  Start(One(read, {storage::Value::Int64(1)}), &first);
  executor_.RunAll();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(runner_->Stats().session_resets, 1);
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  // Meanwhile the guard asked the catalog, through the engine.
  ASSERT_EQ(engine_.submitted(), 1u);
  const storage::PipelineCall lookup = engine_.call(0);
  EXPECT_THAT(lookup.statement.sql, HasSubstr("pg_catalog.to_regclass"));
  ASSERT_EQ(lookup.statement.params.size(), 6u);
  // Nothing written: no written relations, and no function list for them.
  EXPECT_EQ(lookup.statement.params[4], storage::Value::Array({}));
  EXPECT_EQ(lookup.statement.params[5], storage::Value::Array({}));
  EXPECT_EQ(lookup.statement.params[0],
            storage::Value::Array({storage::Value::String("\"pgbench_accounts\"")}));
  EXPECT_EQ(lookup.statement.params[1], storage::Value::Array({storage::Value::String("=")}));
  engine_.Answer(0, Verdict(true));

  std::optional<absl::StatusOr<Results>> second;
  Start(One(read, {storage::Value::Int64(2)}), &second);
  executor_.RunAll();
  ASSERT_EQ(engine_.submitted(), 2u);
  EXPECT_EQ(engine_.call(1).statement.sql, read);
  EXPECT_TRUE(engine_.call(1).statement.cacheable);
  engine_.Answer(1, storage::QueryResult{});
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(runner_->Stats().pipelined, 1);
  EXPECT_EQ(runner_->Stats().catalog_proved, 1);
  EXPECT_EQ(runner_->Stats().session_resets, 1);
}

// Takes a streamed result's rows and keeps nothing.
class DiscardingSink final : public storage::RowSink {
 public:
  absl::Status Columns(std::vector<storage::Column>) override { return absl::OkStatus(); }
  absl::Status Row(std::vector<storage::Value>, size_t) override { return absl::OkStatus(); }
};

TEST_F(PipelinedExecuteTest, ProvedTableReadBoundForThePoolSkipsTheResetThere) {
  // A stream never goes to the engine; the engine's proof still spares its
  // pooled connection the reset.
  const std::string read = "SELECT * FROM t";
  std::optional<absl::StatusOr<Results>> out;
  Start(One(read), &out);
  executor_.RunAll();
  ASSERT_EQ(engine_.submitted(), 1u);  // the lookup
  engine_.Answer(0, Verdict(true));
  out.reset();
  RunRequest streamed = One(read);
  streamed.sink = std::make_shared<DiscardingSink>();
  Start(std::move(streamed), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(out->ok()) << out->status();
  EXPECT_EQ(engine_.submitted(), 1u);
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  EXPECT_EQ(runner_->Stats().catalog_proved, 1);
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
  EXPECT_EQ(runner_->Stats().session_resets, 1);
}

TEST_F(PipelinedExecuteTest, ProvedTableReadUnderARoleKeepsItsReset) {
  const std::string read = "SELECT * FROM t";
  std::optional<absl::StatusOr<Results>> out;
  Start(One(read), &out);
  executor_.RunAll();
  engine_.Answer(0, Verdict(true));
  out.reset();
  RunRequest as_reader = One(read);
  as_reader.database_role = "reader";
  Start(std::move(as_reader), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(runner_->Stats().catalog_proved, 0);
  EXPECT_EQ(runner_->Stats().session_resets, 2);
}

TEST_F(PipelinedExecuteTest, TableReadTheCatalogRefusesStaysOnThePool) {
  const std::string read = "SELECT * FROM secured";
  std::optional<absl::StatusOr<Results>> out;
  Start(One(read), &out);
  executor_.RunAll();
  ASSERT_EQ(engine_.submitted(), 1u);
  engine_.Answer(0, Verdict(false));
  out.reset();
  Start(One(read), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(engine_.submitted(), 1u);
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  EXPECT_EQ(runner_->Stats().session_resets, 2);
  EXPECT_EQ(runner_->Stats().catalog_refused, 1);
}

TEST_F(PipelinedExecuteTest, CatalogAnswerIsAskedAgainAfterTheRefreshInterval) {
  const std::string read = "SELECT * FROM t";
  std::optional<absl::StatusOr<Results>> out;
  Start(One(read), &out);
  executor_.RunAll();
  engine_.Answer(0, Verdict(true));
  clock_.Advance(absl::Seconds(1));  // RunnerOptions::catalog_refresh's default
  out.reset();
  Start(One(read), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());  // ran on the pool: the answer was too old
  ASSERT_EQ(engine_.submitted(), 2u);
  EXPECT_THAT(engine_.call(1).statement.sql, HasSubstr("pg_catalog.to_regclass"));
  EXPECT_EQ(runner_->Stats().pipelined, 0);
}

TEST_F(PipelinedExecuteTest, LookupFailureKeepsTheReadOnThePool) {
  std::optional<absl::StatusOr<Results>> out;
  Start(One("SELECT * FROM t"), &out);
  executor_.RunAll();
  engine_.Answer(0, absl::UnavailableError("lost"));
  out.reset();
  Start(One("SELECT * FROM t"), &out);
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(runner_->Stats().pipelined, 0);
  EXPECT_EQ(runner_->Stats().catalog_lookup_failures, 1);
}

TEST_F(PipelinedExecuteTest, TableReadsSwitchedOffNeverAskTheCatalog) {
  RunnerOptions options;
  options.pipeline = &engine_;
  options.pipeline_table_reads = false;
  StatementRunner runner(*pool_, timers_, executor_, clock_, options);
  for (int i = 0; i < 2; ++i) {
    std::optional<absl::StatusOr<Results>> out;
    runner.Run(One("SELECT * FROM t"), [&out](absl::StatusOr<Results> r) { out = std::move(r); });
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(engine_.submitted(), 0u);
  EXPECT_EQ(runner.Stats().pipelined, 0);
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

TEST_F(PipelinedExecuteTest, AtomicBatchOfStatelessStatementsGoesToTheEngineAsOneBatch) {
  std::optional<absl::StatusOr<Results>> out;
  RunRequest batch = Batch({"SELECT 1", "SELECT $1::int8", "SELECT 3"});
  batch.statements[1].params.push_back(storage::Value::Int64(2));
  batch.deadline = clock_.Now() + absl::Seconds(3);
  Start(std::move(batch), &out);
  executor_.RunAll();
  ASSERT_EQ(engine_.batches(), 1u);
  EXPECT_EQ(engine_.submitted(), 0u);
  EXPECT_EQ(connector_.connects(), 0);
  const storage::PipelineBatch sent = engine_.batch(0);
  ASSERT_EQ(sent.statements.size(), 3u);
  EXPECT_EQ(sent.statements[1].sql, "SELECT $1::int8");
  EXPECT_EQ(sent.statements[1].params[0], storage::Value::Int64(2));
  EXPECT_EQ(sent.max_result_bytes, 1234u);
  EXPECT_EQ(sent.deadline, clock_.Now() + absl::Seconds(3));
  std::vector<storage::QueryResult> results(3);
  for (int k = 0; k < 3; ++k) results[k].command_tag = absl::StrCat("SELECT ", k + 1);
  engine_.AnswerBatch(0, results);
  ASSERT_TRUE(out.has_value());
  ASSERT_TRUE(out->ok()) << out->status();
  ASSERT_EQ((*out)->size(), 3u);
  EXPECT_EQ((**out)[2].command_tag, "SELECT 3");
  EXPECT_EQ(runner_->Stats().statements, 3);
  EXPECT_EQ(runner_->Stats().pipelined, 3);
}

TEST_F(PipelinedExecuteTest, BatchThatNeedsAPooledConnectionKeepsThePool) {
  std::vector<RunRequest> requests;
  // One statement that may leave state (a relation) keeps the whole batch off.
  requests.push_back(Batch({"SELECT 1", "SELECT * FROM accounts"}));
  requests.push_back(Batch({"SELECT 1", "INSERT INTO t VALUES (1)"}));
  RunRequest isolated = Batch({"SELECT 1", "SELECT 2"});
  isolated.transaction.isolation = storage::TransactionOptions::Isolation::kSerializable;
  requests.push_back(std::move(isolated));
  RunRequest set = Batch({"SELECT 1", "SELECT 2"});
  set.transaction.settings.emplace_back("search_path", "x");
  requests.push_back(std::move(set));
  RunRequest role = Batch({"SELECT 1"});
  role.database_role = "reporting";
  requests.push_back(std::move(role));
  for (RunRequest& request : requests) {
    std::optional<absl::StatusOr<Results>> out;
    Start(std::move(request), &out);
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(engine_.batches(), 0u);
  // The table read and the write asked the catalog (unanswered): nothing
  // else went to the engine.
  for (size_t i = 0; i < engine_.submitted(); ++i) {
    EXPECT_THAT(engine_.call(i).statement.sql, HasSubstr("pg_catalog.to_regclass"));
  }
  EXPECT_EQ(runner_->Stats().pipelined, 0);
}

TEST_F(PipelinedExecuteTest, ProvedWriteBatchGoesToTheEngineAsOneWritingBatch) {
  const std::vector<std::string> tx3 = {
      "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1",
      "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
      "INSERT INTO pgbench_history (aid, delta) VALUES (1, 1)"};
  std::optional<absl::StatusOr<Results>> first;
  Start(Batch(tx3), &first);
  executor_.RunAll();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(engine_.batches(), 0u);
  EXPECT_EQ(runner_->Stats().session_resets, 1);
  // One lookup for the batch's names together, written relations apart.
  ASSERT_EQ(engine_.submitted(), 1u);
  const storage::PipelineCall lookup = engine_.call(0);
  ASSERT_EQ(lookup.statement.params.size(), 6u);
  EXPECT_EQ(lookup.statement.params[0],
            storage::Value::Array({storage::Value::String("\"pgbench_accounts\""),
                                   storage::Value::String("\"pgbench_history\"")}));
  EXPECT_EQ(lookup.statement.params[1],
            storage::Value::Array({storage::Value::String("+"), storage::Value::String("=")}));
  EXPECT_EQ(lookup.statement.params[4],
            storage::Value::Array({storage::Value::String("\"pgbench_accounts\""),
                                   storage::Value::String("\"pgbench_history\"")}));
  EXPECT_NE(lookup.statement.params[5], storage::Value::Array({}));
  engine_.Answer(0, Verdict(true));

  std::optional<absl::StatusOr<Results>> second;
  Start(Batch(tx3), &second);
  executor_.RunAll();
  ASSERT_EQ(engine_.batches(), 1u);
  EXPECT_TRUE(engine_.batch(0).writes);
  EXPECT_EQ(engine_.batch(0).statements.size(), 3u);
  engine_.AnswerBatch(0, std::vector<storage::QueryResult>(3));
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->ok()) << second->status();
  EXPECT_EQ(runner_->Stats().catalog_proved, 1);
  EXPECT_EQ(runner_->Stats().session_resets, 1);
}

TEST_F(PipelinedExecuteTest, ProvedWriteReturningRowsTakesThePoolWithoutTheReset) {
  // Its rows must be read before it commits: never the engine, whose batch
  // results are read after the Sync. The proof still spares the reset.
  for (const bool batch : {false, true}) {
    SCOPED_TRACE(batch);
    const std::string write = "UPDATE t SET x = 1 RETURNING x";
    auto request = [&] { return batch ? Batch({write, "SELECT * FROM u"}) : One(write); };
    const size_t lookups = engine_.submitted();
    std::optional<absl::StatusOr<Results>> out;
    Start(request(), &out);
    executor_.RunAll();
    ASSERT_EQ(engine_.submitted(), lookups + 1);
    engine_.Answer(lookups, Verdict(true));
    const int64_t resets = runner_->Stats().session_resets;
    out.reset();
    Start(request(), &out);
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(engine_.batches(), 0u);
    EXPECT_EQ(engine_.submitted(), lookups + 1);
    EXPECT_EQ(runner_->Stats().pipelined, 0);
    EXPECT_EQ(runner_->Stats().session_resets, resets);
  }
  EXPECT_EQ(runner_->Stats().catalog_proved, 2);
}

TEST_F(PipelinedExecuteTest, ProvedWriteUnderARoleOrTransactionSettingsKeepsItsReset) {
  // As for reads: the proof is about the login role's names and baseline
  // search_path, and named parameter types may run a user input function.
  const std::string write = "UPDATE t SET x = $1 WHERE id = 1";
  std::optional<absl::StatusOr<Results>> out;
  Start(One(write, {storage::Value::Int64(1)}), &out);
  executor_.RunAll();
  ASSERT_EQ(engine_.submitted(), 1u);
  engine_.Answer(0, Verdict(true));
  std::vector<RunRequest> requests;
  RunRequest role = One(write, {storage::Value::Int64(1)});
  role.database_role = "writer";
  requests.push_back(std::move(role));
  RunRequest settings = One(write, {storage::Value::Int64(1)});
  settings.transaction.settings.emplace_back("search_path", "other");
  requests.push_back(std::move(settings));
  RunRequest typed = One(write, {storage::Value::String("1")});
  typed.statements[0].param_types = {"int4"};
  requests.push_back(std::move(typed));
  RunRequest batch = Batch({write});
  batch.statements[0].params.push_back(storage::Value::Int64(1));
  batch.database_role = "writer";
  requests.push_back(std::move(batch));
  const int64_t resets = runner_->Stats().session_resets;
  for (RunRequest& request : requests) {
    out.reset();
    Start(std::move(request), &out);
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(engine_.submitted(), 1u);
  EXPECT_EQ(engine_.batches(), 0u);
  EXPECT_EQ(runner_->Stats().catalog_proved, 0);
  EXPECT_EQ(runner_->Stats().session_resets, resets + 4);
}

TEST_F(PipelinedExecuteTest, TableWritesSwitchedOffNeverAskTheCatalogForAWrite) {
  RunnerOptions options;
  options.pipeline = &engine_;
  options.pipeline_table_writes = false;
  StatementRunner runner(*pool_, timers_, executor_, clock_, options);
  for (const bool batch : {false, true}) {
    RunRequest request = batch ? Batch({"SELECT * FROM t", "DELETE FROM t WHERE id = 1"})
                               : One("UPDATE t SET x = 1 WHERE id = 1");
    std::optional<absl::StatusOr<Results>> out;
    runner.Run(std::move(request), [&out](absl::StatusOr<Results> r) { out = std::move(r); });
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(engine_.submitted(), 0u);
  EXPECT_EQ(runner.Stats().session_resets, 2);
  // Reads alone still are.
  std::optional<absl::StatusOr<Results>> out;
  runner.Run(One("SELECT * FROM t"), [&out](absl::StatusOr<Results> r) { out = std::move(r); });
  executor_.RunAll();
  EXPECT_EQ(engine_.submitted(), 1u);
}

TEST_F(PipelinedExecuteTest, CancelledBatchIsCancelledAsAUnit) {
  std::optional<absl::StatusOr<Results>> out;
  std::shared_ptr<RunningCall> running = Start(Batch({"SELECT 1", "SELECT 2"}), &out);
  ASSERT_NE(running, nullptr);
  running->Cancel();
  ASSERT_EQ(engine_.cancels().size(), 1u);
  EXPECT_EQ(engine_.cancels()[0].first, 1001u);
  EXPECT_EQ(engine_.cancels()[0].second.code(), absl::StatusCode::kCancelled);
  engine_.AnswerBatch(0, engine_.cancels()[0].second);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(runner_->Stats().cancellations, 1);
}

TEST_F(PipelinedExecuteTest, BatchErrorReachesTheCallerAsTheEngineReportedIt) {
  std::optional<absl::StatusOr<Results>> out;
  Start(Batch({"SELECT 1", "SELECT 2"}), &out);
  engine_.AnswerBatch(0, absl::InvalidArgumentError("statement 2 of 2: division by zero"));
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status(), absl::InvalidArgumentError("statement 2 of 2: division by zero"));
  EXPECT_EQ(runner_->Stats().statement_errors, 1);
  EXPECT_EQ(runner_->Stats().statements, 2);
}

}  // namespace
}  // namespace sessionbroker::core
