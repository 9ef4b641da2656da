#include "server/core/exec/statement_runner.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/connection_pool.h"
#include "server/storage/sql_error.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::HasSubstr;
using Results = StatementRunner::Results;

RunRequest One(std::string sql, std::vector<storage::Value> params = {}) {
  RunRequest r;
  r.statements.push_back(storage::Statement{std::move(sql), std::move(params)});
  return r;
}

// The catalog's answer to the guard's lookup (CatalogGuard::ThroughPool).
storage::QueryResult Verdict(bool stateless) {
  storage::QueryResult result;
  result.columns.push_back(storage::Column{"?column?", 16, "bool"});
  result.rows.push_back({storage::Value::Bool(stateless)});
  result.command_tag = "SELECT 1";
  return result;
}

// What identifies the lookup's SQL among the statements a connection runs.
constexpr char kLookupSql[] = "pg_catalog.to_regclass";

// Takes a streamed result's rows and keeps nothing.
class DiscardingSink final : public storage::RowSink {
 public:
  absl::Status Columns(std::vector<storage::Column>) override { return absl::OkStatus(); }
  absl::Status Row(std::vector<storage::Value>, size_t) override { return absl::OkStatus(); }
};

// Client "capped" may run statements for at most 10 s; the others have no
// ceiling of their own.
class CappedClientShares final : public ClientShares {
 public:
  ClientQuota QuotaFor(absl::string_view client_id) const override {
    ClientQuota quota;
    if (client_id == "capped") quota.statement_timeout_max = absl::Seconds(10);
    return quota;
  }
};

class StatementRunnerTest : public ::testing::Test {
 protected:
  StatementRunnerTest() {
    PoolOptions options;
    options.pool_size = 1;
    options.max_overflow = 0;
    options.pre_ping = false;
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    runner_ =
        std::make_unique<StatementRunner>(*pool_, timers_, executor_, clock_, RunnerOptions{});
  }
  ~StatementRunnerTest() override {
    pool_->Close();
    executor_.RunAll();
  }

  // Runs a request to completion on the manual executor.
  absl::StatusOr<Results> RunToEnd(RunRequest request) {
    std::optional<absl::StatusOr<Results>> out;
    runner_->Run(std::move(request), [&](absl::StatusOr<Results> r) { out = std::move(r); });
    executor_.RunAll();
    EXPECT_TRUE(out.has_value()) << "the callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no result");
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  FakeConnector connector_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
};

TEST_F(StatementRunnerTest, RunsOneStatementAndReturnsItsResult) {
  absl::StatusOr<Results> r = RunToEnd(One("SELECT 1"));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].rows[0][0].text, "SELECT 1");
  EXPECT_EQ(runner_->Stats().statements, 1);
}

TEST_F(StatementRunnerTest, ListenIsRefusedWithAPointerToTheListenStreamButNotifyRuns) {
  for (const char* sql : {"LISTEN ch", "  listen \"Ch\"", "(LISTEN ch)"}) {
    std::optional<absl::Status> status;
    runner_->Run(One(sql), [&](absl::StatusOr<Results> r) { status = r.status(); });
    ASSERT_TRUE(status.has_value()) << sql;
    EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument) << sql;
    EXPECT_THAT(std::string(status->message()), ::testing::HasSubstr("rpc Listen")) << sql;
  }
  EXPECT_EQ(connector_.connects(), 0);
  std::optional<absl::Status> notify;
  runner_->Run(One("NOTIFY ch, 'x'"), [&](absl::StatusOr<Results> r) { notify = r.status(); });
  executor_.RunAll();
  ASSERT_TRUE(notify.has_value());
  EXPECT_TRUE(notify->ok()) << *notify;
}

TEST_F(StatementRunnerTest, InvalidRequestsFailInlineWithoutTouchingThePool) {
  std::vector<RunRequest> invalid;
  for (const char* sql : {"", "  /* only a comment */ ;", "SELECT 1; SELECT 2", "BEGIN",
                          "COPY t TO STDOUT", "COPY t FROM STDIN", "COMMIT", "SELECT $1"}) {
    invalid.push_back(One(sql));
  }
  invalid.push_back(One("SELECT 1", {storage::Value::Int64(1)}));
  invalid.emplace_back().op = RunRequest::Op::kBatch;
  for (RunRequest& request : invalid) {
    std::optional<absl::Status> status;
    runner_->Run(std::move(request), [&](absl::StatusOr<Results> r) { status = r.status(); });
    ASSERT_TRUE(status.has_value()) << "callback must run inline for invalid requests";
    EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument) << status->message();
  }
  EXPECT_EQ(connector_.connects(), 0);
  EXPECT_EQ(executor_.queued(), 0u);
}

TEST_F(StatementRunnerTest, ParameterCountMismatchSaysWhatWasExpected) {
  std::optional<absl::Status> status;
  runner_->Run(One("SELECT $1, $2", {storage::Value::Int64(1)}),
               [&](absl::StatusOr<Results> r) { status = r.status(); });
  ASSERT_TRUE(status.has_value());
  EXPECT_THAT(status->message(), HasSubstr("$2"));
  EXPECT_THAT(status->message(), HasSubstr("1 parameters"));
}

TEST_F(StatementRunnerTest, MoreParametersThanLibpqCanSendAreRefusedNamingTheLimit) {
  // $1 .. $65536: the placeholders match the parameters, so only the count
  // itself is wrong (libpq sends at most 65,535).
  std::string sql = "SELECT $65536";
  std::vector<storage::Value> params(kMaxStatementParams + 1, storage::Value::Int64(1));
  std::optional<absl::Status> status;
  runner_->Run(One(sql, std::move(params)),
               [&](absl::StatusOr<Results> r) { status = r.status(); });
  ASSERT_TRUE(status.has_value()) << "refused inline, before any database work";
  EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument) << status->message();
  EXPECT_THAT(status->message(), HasSubstr("65536 parameters"));
  EXPECT_THAT(status->message(), HasSubstr("at most 65535"));
  EXPECT_EQ(connector_.connects(), 0);
}

TEST_F(StatementRunnerTest, ANulByteInTheSqlIsRefusedRatherThanTruncatingTheStatement) {
  RunRequest batch;
  batch.op = RunRequest::Op::kBatch;
  batch.statements.push_back(storage::Statement{"SELECT 1", {}});
  batch.statements.push_back(
      storage::Statement{std::string("SELECT 1") + '\0' + "; DROP TABLE t", {}});
  std::optional<absl::Status> status;
  runner_->Run(std::move(batch), [&](absl::StatusOr<Results> r) { status = r.status(); });
  ASSERT_TRUE(status.has_value()) << "refused inline, before any database work";
  EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument) << status->message();
  EXPECT_THAT(status->message(), HasSubstr("statements[1]: sql contains a NUL byte"));
  EXPECT_EQ(connector_.connects(), 0);
}

// A runner with the operator's lower request limits, over the same pool.
class LimitedRunnerTest : public StatementRunnerTest {
 protected:
  LimitedRunnerTest() {
    RunnerOptions options;
    options.limits.max_sql_bytes = 16;
    options.limits.max_statement_params = 2;
    options.limits.max_batch_statements = 3;
    runner_ = std::make_unique<StatementRunner>(*pool_, timers_, executor_, clock_, options);
  }

  // The status of a request the runner refuses inline, before any database
  // work (the callback ran before Run returned and nothing connected).
  absl::Status Refusal(RunRequest request) {
    std::optional<absl::Status> status;
    runner_->Run(std::move(request), [&](absl::StatusOr<Results> r) { status = r.status(); });
    EXPECT_TRUE(status.has_value()) << "refused inline, before any database work";
    EXPECT_EQ(connector_.connects(), 0);
    return status.value_or(absl::InternalError("the callback did not run inline"));
  }
};

TEST_F(LimitedRunnerTest, SqlLongerThanTheLimitIsRefusedNamingTheSetting) {
  const absl::Status status = Refusal(One("SELECT 1234567890"));  // 17 bytes
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("sql is 17 bytes"));
  EXPECT_THAT(status.message(), HasSubstr("at most 16 per statement (BROKER_MAX_SQL_BYTES)"));
  EXPECT_TRUE(RunToEnd(One("SELECT 123456789")).ok()) << "16 bytes are within the limit";
}

TEST_F(LimitedRunnerTest, MoreParametersThanTheLimitAreRefusedNamingTheSetting) {
  const absl::Status status =
      Refusal(One("SELECT $1,$2,$3",
                  {storage::Value::Int64(1), storage::Value::Int64(2), storage::Value::Int64(3)}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("3 parameters"));
  EXPECT_THAT(status.message(), HasSubstr("at most 2 per statement (BROKER_MAX_STATEMENT_PARAMS)"));
  EXPECT_TRUE(
      RunToEnd(One("SELECT $1,$2", {storage::Value::Int64(1), storage::Value::Int64(2)})).ok());
}

TEST_F(LimitedRunnerTest, ABatchOfMoreStatementsThanTheLimitIsRefusedNamingTheSetting) {
  RunRequest batch;
  batch.op = RunRequest::Op::kBatch;
  batch.statements.assign(4, storage::Statement{"SELECT 1", {}});
  const absl::Status status = Refusal(std::move(batch));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("the batch has 4 statements"));
  EXPECT_THAT(status.message(), HasSubstr("at most 3 per call (BROKER_MAX_BATCH_STATEMENTS)"));
  RunRequest three;
  three.op = RunRequest::Op::kBatch;
  three.statements.assign(3, storage::Statement{"SELECT 1", {}});
  EXPECT_TRUE(RunToEnd(std::move(three)).ok());
}

TEST_F(LimitedRunnerTest, AnOverlongStatementOfABatchIsNamedByItsPosition) {
  RunRequest batch;
  batch.op = RunRequest::Op::kBatch;
  batch.statements = {{"SELECT 1", {}}, {std::string(100, ' ') + "SELECT 1", {}}};
  const absl::Status status = Refusal(std::move(batch));
  EXPECT_THAT(status.message(), HasSubstr("statements[1]: sql is 108 bytes"));
}

TEST_F(LimitedRunnerTest, ValidateAppliesTheSameLimits) {
  EXPECT_EQ(runner_->Validate(One("SELECT 1234567890"), /*in_session=*/true).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(runner_->Validate(One("SELECT 1"), /*in_session=*/true).ok());
}

TEST_F(StatementRunnerTest, BatchErrorsNameTheStatement) {
  RunRequest batch;
  batch.op = RunRequest::Op::kBatch;
  batch.statements = {{"SELECT 1", {}}, {"ROLLBACK", {}}};
  std::optional<absl::Status> status;
  runner_->Run(std::move(batch), [&](absl::StatusOr<Results> r) { status = r.status(); });
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status->message(), HasSubstr("statements[1]"));
}

TEST_F(StatementRunnerTest, SessionStateStatementsResetTheConnectionBeforeItIsReused) {
  ASSERT_TRUE(RunToEnd(One("SET search_path TO x")).ok());
  ASSERT_TRUE(RunToEnd(One("SELECT pg_advisory_lock(1)")).ok());
  ASSERT_EQ(connector_.connects(), 1);
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(runner_->Stats().session_resets, 2);
}

TEST_F(StatementRunnerTest, ProvablyStatelessStatementsDoNotResetTheConnection) {
  ASSERT_TRUE(RunToEnd(One("SELECT $1::int8", {storage::Value::Int64(1)})).ok());
  ASSERT_TRUE(RunToEnd(One("SELECT now(), pg_backend_pid()")).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 0);
}

TEST_F(StatementRunnerTest, StatementsOnRelationsResetTheConnection) {
  // A table may be a view calling set_config, or have a trigger or a rule
  // that does: only relation-free statements are provably stateless.
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM t WHERE id = $1", {storage::Value::Int64(1)})).ok());
  ASSERT_TRUE(RunToEnd(One("INSERT INTO t VALUES (1)")).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
}

TEST_F(StatementRunnerTest, TableReadTheCatalogProvedSkipsTheResetOnThePool) {
  connector_.AnswerSqlContaining(kLookupSql, Verdict(true));
  const std::string read = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
  // No answer yet: the reset, while the guard asks on a pooled connection.
  ASSERT_TRUE(RunToEnd(One(read, {storage::Value::Int64(1)})).ok());
  EXPECT_EQ(connector_.answered(), 1);
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
  ASSERT_TRUE(RunToEnd(One(read, {storage::Value::Int64(2)})).ok());
  ASSERT_TRUE(RunToEnd(One(read, {storage::Value::Int64(3)})).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
  EXPECT_EQ(connector_.answered(), 1);
  EXPECT_EQ(connector_.connects(), 1);
  const RunnerStats stats = runner_->Stats();
  EXPECT_EQ(stats.session_resets, 1);
  EXPECT_EQ(stats.catalog_proved, 2);
  EXPECT_EQ(stats.catalog_lookups, 1);
  EXPECT_EQ(stats.pipelined, 0);
}

TEST_F(StatementRunnerTest, StreamedTableReadTheCatalogProvedSkipsTheReset) {
  connector_.AnswerSqlContaining(kLookupSql, Verdict(true));
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM t")).ok());
  RunRequest streamed = One("SELECT * FROM t");
  streamed.sink = std::make_shared<DiscardingSink>();
  ASSERT_TRUE(RunToEnd(std::move(streamed)).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
  EXPECT_EQ(runner_->Stats().catalog_proved, 1);
}

TEST_F(StatementRunnerTest, TableReadTheCatalogRefusesKeepsTheReset) {
  connector_.AnswerSqlContaining(kLookupSql, Verdict(false));
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM secured")).ok());
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM secured")).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(runner_->Stats().catalog_refused, 1);
}

TEST_F(StatementRunnerTest, TableReadUnderADatabaseRoleKeepsTheResetWithoutAskingTheCatalog) {
  // SET ROLE changes what `$user` in search_path names: the login role's
  // answer would be about other relations.
  connector_.AnswerSqlContaining(kLookupSql, Verdict(true));
  for (int i = 0; i < 2; ++i) {
    RunRequest read = One("SELECT * FROM t");
    read.database_role = "reader";
    ASSERT_TRUE(RunToEnd(std::move(read)).ok());
  }
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(connector_.answered(), 0);
  EXPECT_EQ(runner_->Stats().catalog_lookups, 0);
  EXPECT_EQ(runner_->Stats().catalog_proved, 0);
}

TEST_F(StatementRunnerTest, TableReadWithTransactionSettingsKeepsTheReset) {
  // A transaction's settings may set search_path: other names again.
  connector_.AnswerSqlContaining(kLookupSql, Verdict(true));
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM t")).ok());
  RunRequest read = One("SELECT * FROM t");
  read.transaction.settings.emplace_back("search_path", "other");
  ASSERT_TRUE(RunToEnd(std::move(read)).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(runner_->Stats().catalog_proved, 0);
}

TEST_F(StatementRunnerTest, CatalogLookupFailureKeepsTheResetAndAsksAgain) {
  connector_.AnswerSqlContaining(kLookupSql, absl::UnavailableError("lost"));
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM t")).ok());
  ASSERT_TRUE(RunToEnd(One("SELECT * FROM t")).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(connector_.answered(), 2);
  EXPECT_EQ(runner_->Stats().catalog_lookup_failures, 2);
  EXPECT_EQ(runner_->Stats().catalog_proved, 0);
}

TEST_F(StatementRunnerTest, TableReadsSwitchedOffNeverAskTheCatalogOnThePool) {
  connector_.AnswerSqlContaining(kLookupSql, Verdict(true));
  RunnerOptions options;
  options.pipeline_table_reads = false;
  StatementRunner runner(*pool_, timers_, executor_, clock_, options);
  for (int i = 0; i < 2; ++i) {
    std::optional<absl::StatusOr<Results>> out;
    runner.Run(One("SELECT * FROM t"), [&out](absl::StatusOr<Results> r) { out = std::move(r); });
    executor_.RunAll();
    ASSERT_TRUE(out.has_value());
  }
  EXPECT_EQ(connector_.answered(), 0);
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
}

TEST_F(StatementRunnerTest, UnparsableSqlGoesToTheDatabaseWithItsParameters) {
  // PostgreSQL reports the syntax error (with its SQLSTATE); the broker does
  // not count placeholders it cannot parse.
  ASSERT_TRUE(RunToEnd(One("SELEC $1", {storage::Value::Int64(1)})).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
}

TEST_F(StatementRunnerTest, PoolErrorsReachTheCaller) {
  connector_.set_fail_connects(true);
  absl::StatusOr<Results> r = RunToEnd(One("SELECT 1"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(StatementRunnerTest, CancelWhileWaitingForAConnectionGivesCancelled) {
  // Hold the only connection.
  std::optional<absl::StatusOr<PooledConnection>> held;
  pool_->Acquire(AcquireRequest{},
                 [&](absl::StatusOr<PooledConnection> c) { held = std::move(c); });
  executor_.RunAll();
  ASSERT_TRUE(held.has_value() && held->ok());

  std::optional<absl::StatusOr<Results>> out;
  std::shared_ptr<RunningCall> call =
      runner_->Run(One("SELECT 1"), [&](absl::StatusOr<Results> r) { out = std::move(r); });
  executor_.RunAll();
  EXPECT_FALSE(out.has_value());
  call->Cancel();
  executor_.RunAll();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kCancelled);
  held->value().Release();
  executor_.RunAll();
  EXPECT_EQ(pool_->Stats().idle, 1);
}

// Inside a session's transaction a batch runs statement by statement, and
// BROKER_MAX_RESULT_BYTES still covers it whole (as it covers a one-shot
// batch): statements each under the cap but together over it fail the step,
// and the transaction is rolled back, rather than joining it and failing
// only in the response, where the client hears of an error but a later
// COMMIT commits them.
TEST_F(StatementRunnerTest, BatchInATransactionOverTheResultCapTogetherFailsAndRollsBack) {
  RunnerOptions options;
  // The fake returns each statement's text as its one value: about 210
  // bytes of result for these statements, so one fits and two do not.
  options.max_result_bytes = 300;
  StatementRunner capped(*pool_, timers_, executor_, clock_, options);
  const std::string sql = absl::StrCat("SELECT '", std::string(100, 'x'), "'");

  std::optional<RunOutcome> begun;
  RunRequest begin;
  begin.op = RunRequest::Op::kBegin;
  capped.RunStep(std::move(begin), [&](RunOutcome o) { begun = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(begun.has_value() && begun->results.ok());

  RunRequest one;
  one.op = RunRequest::Op::kInTransaction;
  one.statements = {{sql, {}}};
  one.connection = std::move(begun->connection);
  std::optional<RunOutcome> first;
  capped.RunStep(std::move(one), [&](RunOutcome o) { first = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(first->results.ok()) << first->results.status();
  ASSERT_TRUE(first->connection) << "the transaction goes on";

  RunRequest two;
  two.op = RunRequest::Op::kInTransaction;
  two.statements = {{sql, {}}, {sql, {}}};
  two.connection = std::move(first->connection);
  std::optional<RunOutcome> second;
  capped.RunStep(std::move(two), [&](RunOutcome o) { second = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->results.status().code(), absl::StatusCode::kResourceExhausted)
      << second->results.status();
  EXPECT_THAT(second->results.status().message(), HasSubstr("300 bytes"));
  EXPECT_THAT(second->results.status().message(), HasSubstr("rolled back"));
  EXPECT_FALSE(second->connection) << "the transaction went on";
  EXPECT_FALSE(connector_.connection(1)->in_transaction());
  EXPECT_EQ(connector_.connection(1)->log().back(), "ROLLBACK");
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

// A savepoint statement runs only inside a transaction; elsewhere it is
// refused before any database work.
TEST_F(StatementRunnerTest, SavepointStatementsAreRefusedOutsideATransaction) {
  absl::StatusOr<Results> out = RunToEnd(One("SAVEPOINT a"));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("only inside a session's transaction"));
  RunRequest batch = One("SELECT 1");
  batch.op = RunRequest::Op::kBatch;
  batch.statements.push_back({"ROLLBACK TO SAVEPOINT a", {}});
  out = RunToEnd(std::move(batch));
  EXPECT_THAT(out.status().message(), HasSubstr("only inside a session's transaction"));
  EXPECT_EQ(connector_.connects(), 0);
}

// With keep_on_failure a failed statement hands the connection back still in
// its (aborted) transaction, unrolled, so a ROLLBACK TO SAVEPOINT can follow.
TEST_F(StatementRunnerTest, KeepOnFailureHandsBackTheAbortedTransaction) {
  std::optional<RunOutcome> begun;
  RunRequest begin;
  begin.op = RunRequest::Op::kBegin;
  runner_->RunStep(std::move(begin), [&](RunOutcome o) { begun = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(begun.has_value() && begun->results.ok());
  connector_.connection(1)->FailStatement("INSERT 1", storage::SqlError("23505", "duplicate key"));

  RunRequest savepoint;
  savepoint.op = RunRequest::Op::kInTransaction;
  savepoint.statements = {{"SAVEPOINT a", {}}};
  savepoint.connection = std::move(begun->connection);
  std::optional<RunOutcome> saved;
  runner_->RunStep(std::move(savepoint), [&](RunOutcome o) { saved = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(saved.has_value() && saved->results.ok()) << saved->results.status();

  RunRequest insert;
  insert.op = RunRequest::Op::kInTransaction;
  insert.keep_on_failure = true;
  insert.statements = {{"INSERT 1", {}}};
  insert.connection = std::move(saved->connection);
  std::optional<RunOutcome> failed;
  runner_->RunStep(std::move(insert), [&](RunOutcome o) { failed = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(storage::SqlStateOf(failed->results.status()), "23505");
  ASSERT_TRUE(failed->connection) << "handed back for a ROLLBACK TO";
  EXPECT_TRUE(connector_.connection(1)->in_transaction());
  EXPECT_NE(connector_.connection(1)->log().back(), "ROLLBACK");
  EXPECT_EQ(pool_->Stats().in_use, 1);
  failed->connection.Release();
}

// A session's batch fails at its failing statement like a one-shot batch:
// the message names the statement and PostgreSQL's fields say which one it
// was (statement_index), for the transport's SqlErrorDetail.
TEST_F(StatementRunnerTest, BatchInATransactionNamesTheFailedStatementInItsErrorFields) {
  std::optional<RunOutcome> begun;
  RunRequest begin;
  begin.op = RunRequest::Op::kBegin;
  runner_->RunStep(std::move(begin), [&](RunOutcome o) { begun = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(begun.has_value() && begun->results.ok());
  storage::SqlErrorFields fields;
  fields.sqlstate = "23505";
  fields.message = "duplicate key";
  fields.constraint_name = "t_pkey";
  connector_.connection(1)->FailStatement("INSERT 2", storage::SqlError(fields, "duplicate key"));

  RunRequest batch;
  batch.op = RunRequest::Op::kInTransaction;
  batch.statements = {{"INSERT 1", {}}, {"INSERT 2", {}}, {"INSERT 3", {}}};
  batch.connection = std::move(begun->connection);
  std::optional<RunOutcome> outcome;
  runner_->RunStep(std::move(batch), [&](RunOutcome o) { outcome = std::move(o); });
  executor_.RunAll();
  ASSERT_TRUE(outcome.has_value());
  const absl::Status status = outcome->results.status();
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_THAT(status.message(), ::testing::StartsWith("statement 2 of 3: duplicate key"));
  const std::optional<storage::SqlErrorFields> carried = storage::SqlErrorFieldsOf(status);
  ASSERT_TRUE(carried.has_value()) << status;
  EXPECT_EQ(carried->statement_index, 2u);
  EXPECT_EQ(carried->constraint_name, "t_pkey");
}

// Statement cancellation needs the statement to block on another thread while
// the test moves the fake clock: a real executor thread runs it.
class StatementRunnerCancelTest : public ::testing::Test {
 protected:
  StatementRunnerCancelTest() {
    PoolOptions options;
    options.pool_size = 1;
    options.max_overflow = 0;
    options.pre_ping = false;
    options.shares = std::make_shared<CappedClientShares>();
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    RunnerOptions runner_options;
    runner_options.max_statement_duration = absl::Minutes(5);
    runner_ = std::make_unique<StatementRunner>(*pool_, timers_, cancels_, clock_, runner_options);
    // The catalog lookup a read like pg_sleep($1) starts runs on the same
    // connection as the statements these tests block: it answers at once.
    connector_.AnswerSqlContaining(kLookupSql, Verdict(false));
  }
  ~StatementRunnerCancelTest() override {
    pool_->Close();
    executor_.Shutdown();
    cancels_.Shutdown();
  }

  // Starts `request`, returns once its statement blocks in the fake.
  std::shared_ptr<RunningCall> StartBlocking(RunRequest request) {
    // Open the connection first so the test can make it block.
    {
      Mutex mu;
      CondVar cv;
      bool ready = false;
      pool_->Acquire(AcquireRequest{}, [&](absl::StatusOr<PooledConnection> c) {
        MutexLock lock(&mu);
        ready = true;
        cv.Signal();
      });
      MutexLock lock(&mu);
      while (!ready) cv.Wait(&mu);
    }
    connector_.connection(1)->set_block_until_cancel(true);
    std::shared_ptr<RunningCall> call =
        runner_->Run(std::move(request), [this](absl::StatusOr<Results> r) {
          MutexLock lock(&mu_);
          result_ = std::move(r);
          done_.SignalAll();
        });
    connector_.connection(1)->WaitUntilExecuting();
    return call;
  }

  absl::StatusOr<Results> Wait() {
    MutexLock lock(&mu_);
    while (!result_.has_value()) done_.Wait(&mu_);
    return *result_;
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ThreadPoolExecutor executor_{2, "test-worker"};
  ThreadPoolExecutor cancels_{1, "test-cancel"};
  FakeConnector connector_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
  Mutex mu_;
  CondVar done_;
  std::optional<absl::StatusOr<Results>> result_ ABSL_GUARDED_BY(mu_);
};

TEST_F(StatementRunnerCancelTest, DeadlineCancelsTheRunningStatementExactlyWhenDue) {
  RunRequest request = One("SELECT pg_sleep(30)");
  request.deadline = clock_.Now() + absl::Milliseconds(200);
  StartBlocking(std::move(request));
  clock_.Advance(absl::Milliseconds(199));
  timers_.RunDue();
  EXPECT_EQ(connector_.connection(1)->cancels(), 0) << "cancelled before the deadline";
  clock_.Advance(absl::Milliseconds(1));
  timers_.RunDue();
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("deadline"));
  EXPECT_EQ(storage::SqlStateOf(r.status()), "57014");
  EXPECT_EQ(connector_.connection(1)->cancels(), 1);
  EXPECT_EQ(runner_->Stats().cancellations, 1);
}

TEST_F(StatementRunnerCancelTest, MaxStatementDurationCapsCallersWithoutDeadline) {
  StartBlocking(One("SELECT pg_sleep(3600)"));
  clock_.Advance(absl::Minutes(5));
  timers_.RunDue();
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_MAX_STATEMENT_DURATION"));
}

TEST_F(StatementRunnerCancelTest, ClientStatementTimeoutCeilingCancelsItsStatementNamingTheQuota) {
  RunRequest request = One("SELECT pg_sleep(3600)");
  request.client_id = "capped";
  request.deadline = clock_.Now() + absl::Minutes(1);  // later than its ceiling
  StartBlocking(std::move(request));
  clock_.Advance(absl::Seconds(10));
  timers_.RunDue();
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("client \"capped\""));
  EXPECT_THAT(r.status().message(), HasSubstr("statement_timeout_max quota of 10s"));
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_CLIENT_STATEMENT_TIMEOUT_MAX"));
}

TEST_F(StatementRunnerCancelTest, CallerDeadlineBeforeTheClientCeilingIsTheCallersDeadline) {
  RunRequest request = One("SELECT pg_sleep(3600)");
  request.client_id = "capped";
  request.deadline = clock_.Now() + absl::Seconds(2);
  StartBlocking(std::move(request));
  clock_.Advance(absl::Seconds(2));
  timers_.RunDue();
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status().message(), HasSubstr("the call's deadline passed"));
}

TEST_F(StatementRunnerCancelTest, CallerCancellationCancelsTheStatementAndKeepsTheConnection) {
  std::shared_ptr<RunningCall> call = StartBlocking(One("SELECT pg_sleep(30)"));
  call->Cancel();
  timers_.RunDue();  // the cancel request is sent from the timer thread
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  // The connection went back to the pool (not discarded): cancelling a
  // statement leaves it usable.
  for (int i = 0; i < 1000 && pool_->Stats().idle != 1; ++i) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(pool_->Stats().idle, 1);
  EXPECT_EQ(pool_->Stats().invalidated, 0);
}

TEST_F(StatementRunnerCancelTest, ConnectionCancelFlagIsClearedBeforeTheNextCaller) {
  std::shared_ptr<RunningCall> call = StartBlocking(One("SELECT pg_sleep(30)"));
  call->Cancel();
  ASSERT_EQ(Wait().status().code(), absl::StatusCode::kCancelled);
  connector_.connection(1)->set_block_until_cancel(false);
  {
    MutexLock lock(&mu_);
    result_.reset();
  }
  runner_->Run(One("SELECT 1"), [this](absl::StatusOr<Results> r) {
    MutexLock lock(&mu_);
    result_ = std::move(r);
    done_.SignalAll();
  });
  absl::StatusOr<Results> next = Wait();
  EXPECT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(connector_.connects(), 1) << "the same connection serves the next call";
}

TEST_F(StatementRunnerCancelTest, CancelIsRepeatedWhileTheStatementKeepsRunning) {
  RunRequest request = One("SELECT pg_sleep(30)");
  request.deadline = clock_.Now() + absl::Milliseconds(100);
  // A connection that ignores the first cancel request, as PostgreSQL does
  // when it arrives between two statements.
  StartBlocking(std::move(request));
  connector_.connection(1)->set_ignore_cancels(1);
  clock_.Advance(absl::Milliseconds(100));
  timers_.RunDue();
  for (int i = 0; i < 5000 && connector_.connection(1)->cancels() < 1; ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(connector_.connection(1)->cancels(), 1);
  // The repeat is scheduled just after that cancel returns: wait for it, or
  // the clock could move before it is armed and it would never come due.
  for (int i = 0; i < 5000 && timers_.pending() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(timers_.pending(), 1u);
  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  absl::StatusOr<Results> r = Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(connector_.connection(1)->cancels(), 2);
}

}  // namespace
}  // namespace sessionbroker::core
