// PqPipelineLoop against a real PostgreSQL (label pg): many callers'
// statements pipelined on a few connections, each in its own implicit
// transaction; errors, over-cap results, deadlines and cancels reaching only
// their own caller; a connection killed mid-pipeline; batches under one Sync,
// all or nothing, answered as the pooled (blocking) ExecuteBatch answers;
// calls waiting for a connection served round robin across clients; several
// loops.
#include "server/storage/pq_pipeline_loop.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/storage/pq_connection.h"
#include "server/storage/sql_error.h"
#include "tests/support/test_env.h"

namespace sessionbroker::storage {
namespace {

using ::testing::HasSubstr;

// One call's answer, waited for by the test thread. (std::mutex, not
// absl's: ThreadSanitizer sees it.)
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  absl::StatusOr<QueryResult> result = absl::UnknownError("not answered");

  PipelineDone Callback() {
    return [this](absl::StatusOr<QueryResult> r) {
      std::lock_guard<std::mutex> lock(mu);
      result = std::move(r);
      answered = true;
      cv.notify_all();
    };
  }
  const absl::StatusOr<QueryResult>& Wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return answered; });
    return result;
  }
  bool HasBeenAnswered() {
    std::lock_guard<std::mutex> lock(mu);
    return answered;
  }
};

// A plain blocking libpq connection for the test's own SQL.
class Admin {
 public:
  explicit Admin(const std::string& url) : pg_(PQconnectdb(url.c_str())) {}
  ~Admin() { PQfinish(pg_); }
  bool ok() const { return PQstatus(pg_) == CONNECTION_OK; }
  // The first value of the first row ("" if none); fails the test on error.
  std::string Value(const std::string& sql) {
    PGresult* r = PQexec(pg_, sql.c_str());
    const ExecStatusType status = PQresultStatus(r);
    EXPECT_TRUE(status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        << sql << ": " << PQresultErrorMessage(r);
    std::string out = (status == PGRES_TUPLES_OK && PQntuples(r) > 0) ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }
  // Polls until `sql` returns "t" (the test waits for a state, not a time).
  void WaitFor(const std::string& sql) {
    while (Value(sql) != "t") absl::SleepFor(absl::Milliseconds(5));
  }
  // Waits until `count` backends are inside pg_sleep running `sql` (see
  // Sleeper). Not state = 'active': a statement shows as active from its
  // Parse message on, and a cancel request that reaches the backend between
  // Parse, Bind and Execute (while it reads the next message) is discarded by
  // PostgreSQL, so the sleep would run its full length.
  void WaitForSleeping(const std::string& sql, int count) {
    WaitFor(absl::StrCat("SELECT count(*) = ", count, " FROM pg_stat_activity WHERE query = '", sql,
                         "' AND wait_event = 'PgSleep'"));
  }

 private:
  PGconn* pg_;
};

// A long sleep whose text no other test process runs: ctest runs this
// program's cases as separate processes, two at a time, against one
// database, so a condition on pg_stat_activity must not match another
// case's sleeper.
std::string Sleeper(absl::string_view name) {
  return absl::StrCat("SELECT pg_sleep(600) /* ", name, " ", getpid(), " */");
}

PipelineCall Call(std::string sql, std::vector<storage::Value> params = {}) {
  PipelineCall call;
  call.statement.sql = std::move(sql);
  call.statement.params = std::move(params);
  call.statement.cacheable = true;
  return call;
}

// A batch's answer, waited for by the test thread.
struct BatchOutcome {
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  absl::StatusOr<std::vector<QueryResult>> result = absl::UnknownError("not answered");

  PipelineBatchDone Callback() {
    return [this](absl::StatusOr<std::vector<QueryResult>> r) {
      std::lock_guard<std::mutex> lock(mu);
      result = std::move(r);
      answered = true;
      cv.notify_all();
    };
  }
  const absl::StatusOr<std::vector<QueryResult>>& Wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return answered; });
    return result;
  }
};

PipelineBatch Batch(std::vector<std::string> sqls) {
  PipelineBatch batch;
  for (std::string& sql : sqls) {
    Statement statement;
    statement.sql = std::move(sql);
    statement.cacheable = true;
    batch.statements.push_back(std::move(statement));
  }
  return batch;
}

class PqPipelineLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = testing::TestDatabaseUrl();
    ASSERT_FALSE(url_.empty());
    admin_ = std::make_unique<Admin>(url_);
    ASSERT_TRUE(admin_->ok());
  }

  std::unique_ptr<PqPipelineLoop> Loop(int connections, int depth = 16, int loops = 1,
                                       bool fair_queuing = true) {
    PqPipelineLoop::Options options;
    options.conninfo = url_;
    options.connections = connections;
    options.loops = loops;
    options.fair_queuing = fair_queuing;
    options.limits.max_depth = depth;
    options.backoff = [](int) { return absl::Milliseconds(10); };
    return std::make_unique<PqPipelineLoop>(std::move(options));
  }

  std::string url_;
  std::unique_ptr<Admin> admin_;
};

TEST_F(PqPipelineLoopTest, ManyStatementsInFlightAreEachAnsweredWithTheirOwnResult) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(2);
  constexpr int kCalls = 300;
  std::vector<Outcome> outcomes(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    loop->Submit(Call("SELECT $1::int8 * 2 AS doubled", {storage::Value::Int64(i)}),
                 outcomes[i].Callback());
  }
  for (int i = 0; i < kCalls; ++i) {
    const absl::StatusOr<QueryResult>& r = outcomes[i].Wait();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows.size(), 1u);
    EXPECT_EQ(r->rows[0][0], storage::Value::Int64(2 * i));
    EXPECT_EQ(r->columns[0].name, "doubled");
    EXPECT_EQ(r->command_tag, "SELECT 1");
  }
  const PipelineStats stats = loop->Stats();
  EXPECT_EQ(stats.statements, static_cast<uint64_t>(kCalls));
  // Pipelined: several statements went out per flush.
  EXPECT_LT(stats.flushes, stats.statements);
}

TEST_F(PqPipelineLoopTest, AnswersComeInsideALoopTurnWhoseDeferredWorkRunsAfterThem) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(2);
  constexpr int kCalls = 200;
  struct Seen {
    std::mutex mu;
    std::condition_variable cv;
    int answered_in_round = 0;
    int deferred_ran = 0;
    // A deferred action saw no round open and every answer of its turn given.
    int deferred_after_answers = 0;
  } seen;
  for (int i = 0; i < kCalls; ++i) {
    loop->Submit(Call("SELECT $1::int8", {storage::Value::Int64(i)}),
                 [&seen](absl::StatusOr<QueryResult> r) {
                   ASSERT_TRUE(r.ok()) << r.status();
                   {
                     std::lock_guard<std::mutex> lock(seen.mu);
                     if (CompletionRound::Open()) ++seen.answered_in_round;
                   }
                   CompletionRound::Action after = [&seen] {
                     std::lock_guard<std::mutex> lock(seen.mu);
                     ++seen.deferred_ran;
                     if (!CompletionRound::Open()) ++seen.deferred_after_answers;
                     seen.cv.notify_all();
                   };
                   if (!CompletionRound::Defer(after)) std::move(after)();
                 });
  }
  std::unique_lock<std::mutex> lock(seen.mu);
  seen.cv.wait(lock, [&seen] { return seen.deferred_ran == kCalls; });
  EXPECT_EQ(seen.answered_in_round, kCalls);
  EXPECT_EQ(seen.deferred_after_answers, kCalls);
}

TEST_F(PqPipelineLoopTest, OneCallersErrorLeavesTheOthersCommitted) {
  admin_->Value("DROP TABLE IF EXISTS pipe_isolation; CREATE TABLE pipe_isolation (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome before, failing, after;
  loop->Submit(Call("INSERT INTO pipe_isolation VALUES (1)"), before.Callback());
  loop->Submit(Call("INSERT INTO pipe_isolation VALUES (1 / 0)"), failing.Callback());
  loop->Submit(Call("INSERT INTO pipe_isolation VALUES (3)"), after.Callback());
  ASSERT_TRUE(before.Wait().ok()) << before.Wait().status();
  ASSERT_FALSE(failing.Wait().ok());
  EXPECT_EQ(SqlStateOf(failing.Wait().status()), "22012");
  ASSERT_TRUE(after.Wait().ok()) << after.Wait().status();
  EXPECT_EQ(after.Wait()->command_tag, "INSERT 0 1");
  EXPECT_EQ(admin_->Value("SELECT string_agg(id::text, ',' ORDER BY id) FROM pipe_isolation"),
            "1,3");
  admin_->Value("DROP TABLE pipe_isolation");
}

TEST_F(PqPipelineLoopTest, ParametersTravelWithTheTypesTheirKindsImply) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome out;
  loop->Submit(Call("SELECT pg_typeof($1)::text, pg_typeof($2)::text, pg_typeof($3)::text, "
                    "$4::text IS NULL, $5::numeric + 1, $6::jsonb ->> 'a', $7::int8[]",
                    {storage::Value::Bool(true), storage::Value::Int64(7),
                     storage::Value::Double(1.5), storage::Value::Null(),
                     storage::Value::Numeric("1.25"), storage::Value::Json(R"({"a":"x"})"),
                     storage::Value::Array({storage::Value::Int64(1), storage::Value::Int64(2)})}),
               out.Callback());
  const absl::StatusOr<QueryResult>& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_EQ(r->rows[0][0], storage::Value::String("boolean"));
  EXPECT_EQ(r->rows[0][1], storage::Value::String("bigint"));
  EXPECT_EQ(r->rows[0][2], storage::Value::String("double precision"));
  EXPECT_EQ(r->rows[0][3], storage::Value::Bool(true));
  EXPECT_EQ(r->rows[0][4], storage::Value::Numeric("2.25"));
  EXPECT_EQ(r->rows[0][5], storage::Value::String("x"));
  EXPECT_EQ(r->rows[0][6],
            storage::Value::Array({storage::Value::Int64(1), storage::Value::Int64(2)}));
  EXPECT_EQ(r->columns[6].type_name, "_int8");
}

TEST_F(PqPipelineLoopTest, NamesColumnsOfUserDefinedTypes) {
  admin_->Value("DROP TYPE IF EXISTS pipe_mood; CREATE TYPE pipe_mood AS ENUM ('sad', 'happy')");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome first, second;
  loop->Submit(Call("SELECT 'happy'::pipe_mood AS m, ARRAY['sad'::pipe_mood] AS ms"),
               first.Callback());
  loop->Submit(Call("SELECT 'sad'::pipe_mood AS m"), second.Callback());
  const absl::StatusOr<QueryResult>& r = first.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->columns[0].type_name, "pipe_mood");
  EXPECT_EQ(r->columns[1].type_name, "_pipe_mood");
  EXPECT_EQ(r->rows[0][0], storage::Value::String("happy"));
  EXPECT_EQ(r->rows[0][1], storage::Value::Array({storage::Value::String("sad")}));
  ASSERT_TRUE(second.Wait().ok()) << second.Wait().status();
  EXPECT_EQ(second.Wait()->columns[0].type_name, "pipe_mood");
  loop.reset();
  admin_->Value("DROP TYPE pipe_mood");
}

TEST_F(PqPipelineLoopTest, ResultOverTheCapFailsOnlyItsCaller) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome big, small;
  PipelineCall capped = Call("SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g");
  capped.max_result_bytes = 4096;
  loop->Submit(std::move(capped), big.Callback());
  PipelineCall fits = Call("SELECT 'small'");
  fits.max_result_bytes = 4096;
  loop->Submit(std::move(fits), small.Callback());
  EXPECT_EQ(big.Wait().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.Wait().status().message(), HasSubstr("BROKER_MAX_RESULT_BYTES"));
  ASSERT_TRUE(small.Wait().ok()) << small.Wait().status();
  EXPECT_EQ(small.Wait()->rows[0][0], storage::Value::String("small"));
}

TEST_F(PqPipelineLoopTest, CancelledHeadStopsOnTheServerAndTheCallBehindItStillRuns) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome sleeper, expired, behind;
  const std::string sleep = Sleeper("CancelledHeadStops");
  const uint64_t sleeper_id = loop->Submit(Call(sleep), sleeper.Callback());
  // Running, so that the cancel below finds it.
  admin_->WaitForSleeping(sleep, 1);
  PipelineCall short_deadline = Call("SELECT 'expired'");
  short_deadline.deadline = absl::Now() + absl::Milliseconds(100);
  loop->Submit(std::move(short_deadline), expired.Callback());
  loop->Submit(Call("SELECT 'behind'"), behind.Callback());
  // Queued behind the sleeper, on the same connection: answered at its
  // deadline without waiting for its turn.
  EXPECT_EQ(expired.Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(sleeper.HasBeenAnswered());
  loop->Cancel(sleeper_id, absl::CancelledError("cancelled by the test"));
  EXPECT_EQ(sleeper.Wait().status().code(), absl::StatusCode::kCancelled);
  // Only possible if the sleeper stopped on the server; the expired call's
  // own cancel request (sent when it headed the queue) did not fail it.
  const absl::StatusOr<QueryResult>& r = behind.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], storage::Value::String("behind"));
  EXPECT_GE(loop->Stats().cancels_sent, 1u);
}

TEST_F(PqPipelineLoopTest, CancelledStatementThatOutlivesItsCancelRequestGetsAnother) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome survivor, behind;
  // Stands in for a cancel request PostgreSQL dropped (one that reached the
  // backend before the statement started): the statement swallows every
  // interrupt of the first half second after the first (one request can
  // interrupt a backend twice) and sleeps on; only a request sent again
  // later stops it.
  const std::string sql = absl::StrCat(
      "DO $$ DECLARE first timestamptz; BEGIN LOOP BEGIN PERFORM pg_sleep(600); RETURN; "
      "EXCEPTION WHEN query_canceled THEN IF first IS NULL THEN first := clock_timestamp(); "
      "ELSIF clock_timestamp() - first > interval '0.5 s' THEN RAISE; END IF; END; END LOOP; "
      "END $$ /* CancelledStatementThatOutlives ",
      getpid(), " */");
  const uint64_t id = loop->Submit(Call(sql), survivor.Callback());
  admin_->WaitFor(
      absl::StrCat("SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE "
                   "'%CancelledStatementThatOutlives ",
                   getpid(), " */' AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()"));
  loop->Cancel(id, absl::CancelledError("cancelled by the test"));
  // The caller is answered at once, whatever the server does.
  EXPECT_EQ(survivor.Wait().status().code(), absl::StatusCode::kCancelled);
  loop->Submit(Call("SELECT 'behind'"), behind.Callback());
  // Only possible once the survivor stopped on the server, which takes the
  // request sent again.
  const absl::StatusOr<QueryResult>& r = behind.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], storage::Value::String("behind"));
  const PipelineStats stats = loop->Stats();
  EXPECT_EQ(stats.cancels_sent, 1u);
  EXPECT_GE(stats.cancel_resends, 1u);
}

TEST_F(PqPipelineLoopTest, QueuedCallPastItsDeadlineIsNeverSentNorCancelled) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1, /*depth=*/1);
  Outcome sleeper, queued;
  const std::string sleep = Sleeper("QueuedCallPastItsDeadline");
  const uint64_t sleeper_id = loop->Submit(Call(sleep), sleeper.Callback());
  // Sent and running (it holds the only place), before the next call's
  // deadline starts to count.
  admin_->WaitForSleeping(sleep, 1);
  PipelineCall short_deadline = Call("SELECT 'queued'");
  short_deadline.deadline = absl::Now() + absl::Milliseconds(100);
  loop->Submit(std::move(short_deadline), queued.Callback());
  EXPECT_EQ(queued.Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(queued.Wait().status().message(), HasSubstr("not sent"));
  EXPECT_EQ(loop->Stats().cancels_sent, 0u);
  EXPECT_EQ(loop->Stats().statements, 1u);
  loop->Cancel(sleeper_id, absl::CancelledError("cancelled by the test"));
  EXPECT_EQ(sleeper.Wait().status().code(), absl::StatusCode::kCancelled);
}

TEST_F(PqPipelineLoopTest, StatementCancelledByNobodyInTheBrokerIsRetriedOnce) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  admin_->Value("SELECT pg_advisory_lock(4242)");
  Outcome blocked;
  loop->Submit(Call("SELECT pg_advisory_xact_lock(4242), 'done'"), blocked.Callback());
  const std::string waiting =
      "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE "
      "'%pg_advisory_xact_lock(4242)%' AND pid <> pg_backend_pid()";
  // A cancel request the loop did not send (as a stray one meant for the
  // statement before would be): the statement runs again.
  admin_->WaitFor(waiting);
  admin_->Value(
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
      "query LIKE '%pg_advisory_xact_lock(4242)%' AND pid <> pg_backend_pid()");
  while (loop->Stats().retries < 1) absl::SleepFor(absl::Milliseconds(5));
  // A second one is the caller's answer.
  admin_->WaitFor(waiting);
  admin_->Value(
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
      "query LIKE '%pg_advisory_xact_lock(4242)%' AND pid <> pg_backend_pid()");
  EXPECT_EQ(SqlStateOf(blocked.Wait().status()), "57014");
  EXPECT_EQ(loop->Stats().retries, 1u);
  admin_->Value("SELECT pg_advisory_unlock(4242)");
}

TEST_F(PqPipelineLoopTest, StalePreparedStatementIsPreparedAgain) {
  admin_->Value(
      "DROP TABLE IF EXISTS pipe_stale; CREATE TABLE pipe_stale (a int); "
      "INSERT INTO pipe_stale VALUES (1)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome first, second;
  loop->Submit(Call("SELECT * FROM pipe_stale"), first.Callback());
  ASSERT_TRUE(first.Wait().ok()) << first.Wait().status();
  admin_->Value("ALTER TABLE pipe_stale ADD COLUMN b text DEFAULT 'new'");
  loop->Submit(Call("SELECT * FROM pipe_stale"), second.Callback());
  const absl::StatusOr<QueryResult>& r = second.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->columns.size(), 2u);
  EXPECT_EQ(r->rows[0][1], storage::Value::String("new"));
  EXPECT_EQ(loop->Stats().retries, 1u);
  // The stale copy is deallocated with the connection's next statement: one
  // prepared copy of the read is left on the server, and it still runs.
  Outcome third, count;
  loop->Submit(Call("SELECT * FROM pipe_stale"), third.Callback());
  ASSERT_TRUE(third.Wait().ok()) << third.Wait().status();
  loop->Submit(Call("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE "
                    "'%FROM pipe_stale%' AND statement NOT LIKE '%pg_prepared_statements%'"),
               count.Callback());
  ASSERT_TRUE(count.Wait().ok()) << count.Wait().status();
  EXPECT_EQ(count.Wait()->rows[0][0], storage::Value::Int64(1));
  admin_->Value("DROP TABLE pipe_stale");
}

TEST_F(PqPipelineLoopTest, KilledConnectionFailsWhatItHadInFlightAndReconnects) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome warm;
  loop->Submit(Call("SELECT 1"), warm.Callback());
  ASSERT_TRUE(warm.Wait().ok());
  const std::vector<int> pids = loop->BackendPids();
  ASSERT_EQ(pids.size(), 1u);
  Outcome sleeper, behind;
  loop->Submit(Call("SELECT pg_sleep(600)"), sleeper.Callback());
  loop->Submit(Call("SELECT 'behind'"), behind.Callback());
  admin_->WaitFor(absl::StrCat("SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = ", pids[0],
                               " AND query LIKE '%pg_sleep(600)%'"));
  admin_->Value(absl::StrCat("SELECT pg_terminate_backend(", pids[0], ")"));
  EXPECT_EQ(sleeper.Wait().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(behind.Wait().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(behind.Wait().status().message(), HasSubstr("may or may not have been applied"));
  Outcome again;
  loop->Submit(Call("SELECT 'again'"), again.Callback());
  ASSERT_TRUE(again.Wait().ok()) << again.Wait().status();
  EXPECT_EQ(again.Wait()->rows[0][0], storage::Value::String("again"));
  EXPECT_GE(loop->Stats().connection_failures, 1u);
  EXPECT_NE(loop->BackendPids(), pids);
}

TEST_F(PqPipelineLoopTest, OldConnectionIsRecycledOnceDrained) {
  PqPipelineLoop::Options options;
  options.conninfo = url_;
  options.connections = 1;
  options.recycle = absl::Milliseconds(50);
  PqPipelineLoop loop(std::move(options));
  Outcome first;
  loop.Submit(Call("SELECT pg_backend_pid()"), first.Callback());
  ASSERT_TRUE(first.Wait().ok()) << first.Wait().status();
  const storage::Value first_pid = first.Wait()->rows[0][0];
  // Each connection lives 50 ms: a later call runs on another backend.
  while (loop.Stats().recycles < 1) absl::SleepFor(absl::Milliseconds(5));
  Outcome second;
  loop.Submit(Call("SELECT pg_backend_pid()"), second.Callback());
  ASSERT_TRUE(second.Wait().ok()) << second.Wait().status();
  EXPECT_NE(second.Wait()->rows[0][0], first_pid);
  EXPECT_EQ(loop.Stats().connection_failures, 0u);
}

TEST_F(PqPipelineLoopTest, UnreachableDatabaseAnswersUnavailable) {
  testing::RefusedPort refused;
  ASSERT_NE(refused.port(), 0);
  PqPipelineLoop::Options options;
  options.conninfo = absl::StrCat("postgresql://postgres@127.0.0.1:", refused.port(), "/postgres");
  options.connections = 1;
  options.backoff = [](int) { return absl::Seconds(60); };
  PqPipelineLoop loop(std::move(options));
  Outcome out;
  loop.Submit(Call("SELECT 1"), out.Callback());
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(PqPipelineLoopTest, ParameterThatCannotBeSentIsInvalidArgument) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  Outcome out;
  loop->Submit(Call("SELECT $1::text", {storage::Value::String(std::string("a\0b", 3))}),
               out.Callback());
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PqPipelineLoopTest, BatchRunsInOneTransactionAndAnswersEachStatement) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  PipelineBatch batch = Batch(
      {"SELECT $1::int8 AS first", "SELECT pg_catalog.now() AS t", "SELECT pg_catalog.now() AS t"});
  batch.statements[0].params.push_back(Value::Int64(7));
  BatchOutcome out;
  loop->SubmitBatch(std::move(batch), out.Callback());
  const absl::StatusOr<std::vector<QueryResult>>& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].rows[0][0], Value::Int64(7));
  EXPECT_EQ((*r)[0].columns[0].name, "first");
  // now() is the transaction's start: one transaction for the whole batch.
  EXPECT_EQ((*r)[1].rows[0][0], (*r)[2].rows[0][0]);
  EXPECT_EQ(loop->Stats().statements, 3u);
  EXPECT_EQ(loop->Stats().batches, 1u);
}

TEST_F(PqPipelineLoopTest, BatchWithAFailingMiddleStatementAppliesNothingAndSaysWhichFailed) {
  admin_->Value("DROP TABLE IF EXISTS pipe_batch; CREATE TABLE pipe_batch (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  const std::vector<std::string> sqls = {"INSERT INTO pipe_batch VALUES (1)",
                                         "INSERT INTO pipe_batch VALUES (1 / 0)",
                                         "INSERT INTO pipe_batch VALUES (3)"};
  Outcome before, after;
  BatchOutcome batch;
  // Other callers' statements on the same connection, before and after it.
  loop->Submit(Call("INSERT INTO pipe_batch VALUES (10)"), before.Callback());
  loop->SubmitBatch(Batch(sqls), batch.Callback());
  loop->Submit(Call("INSERT INTO pipe_batch VALUES (20)"), after.Callback());
  const absl::Status engine = batch.Wait().status();
  ASSERT_TRUE(before.Wait().ok()) << before.Wait().status();
  ASSERT_TRUE(after.Wait().ok()) << after.Wait().status();
  EXPECT_EQ(admin_->Value("SELECT string_agg(id::text, ',' ORDER BY id) FROM pipe_batch"), "10,20");

  // The pooled path (blocking libpq, BEGIN .. COMMIT) answers the same batch alike.
  PqConnector connector(url_);
  absl::StatusOr<std::unique_ptr<DbConnection>> pooled = connector.Connect();
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  std::vector<Statement> statements;
  for (const std::string& sql : sqls) statements.push_back(Statement{sql, {}});
  const absl::Status expected = (*pooled)->ExecuteBatch(statements, ExecuteOptions{}).status();
  EXPECT_EQ(engine.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.code(), expected.code());
  EXPECT_EQ(engine.message(), expected.message());
  EXPECT_THAT(engine.message(), HasSubstr("statement 2 of 3: "));
  EXPECT_EQ(SqlStateOf(engine), "22012");
  const std::optional<SqlErrorFields> fields = SqlErrorFieldsOf(engine);
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->statement_index, 2u);
  EXPECT_EQ(fields, SqlErrorFieldsOf(expected));
  EXPECT_EQ(admin_->Value("SELECT count(*) FROM pipe_batch"), "2");
  admin_->Value("DROP TABLE pipe_batch");
}

TEST_F(PqPipelineLoopTest, BatchResultsOverTheCapFailTheBatchAsThePooledPathDoes) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  const std::vector<std::string> sqls = {"SELECT repeat('x', 3000)", "SELECT repeat('y', 3000)"};
  PipelineBatch batch = Batch(sqls);
  batch.max_result_bytes = 4096;
  BatchOutcome out;
  loop->SubmitBatch(std::move(batch), out.Callback());
  const absl::Status engine = out.Wait().status();
  PqConnector connector(url_);
  absl::StatusOr<std::unique_ptr<DbConnection>> pooled = connector.Connect();
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  std::vector<Statement> statements;
  for (const std::string& sql : sqls) statements.push_back(Statement{sql, {}});
  ExecuteOptions options;
  options.max_result_bytes = 4096;
  const absl::Status expected = (*pooled)->ExecuteBatch(statements, options).status();
  EXPECT_EQ(engine.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine.message(), expected.message());
  EXPECT_THAT(engine.message(), HasSubstr("statement 2 of 2: "));
}

TEST_F(PqPipelineLoopTest, WritingBatchOverTheCapSaysItsStatementsCommitted) {
  // Its results are read after the Sync: the write is in, and the error
  // says so rather than the pooled path's "rolled back".
  admin_->Value("DROP TABLE IF EXISTS pipe_batch_cap; CREATE TABLE pipe_batch_cap (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  PipelineBatch batch =
      Batch({"INSERT INTO pipe_batch_cap VALUES (1)", "SELECT repeat('y', 5000)"});
  batch.max_result_bytes = 4096;
  batch.writes = true;
  BatchOutcome out;
  loop->SubmitBatch(std::move(batch), out.Callback());
  const absl::Status engine = out.Wait().status();
  EXPECT_EQ(engine.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(engine.message(), HasSubstr("statement 2 of 2: "));
  EXPECT_THAT(engine.message(), HasSubstr("statements were committed"));
  EXPECT_EQ(admin_->Value("SELECT count(*) FROM pipe_batch_cap"), "1");
  admin_->Value("DROP TABLE pipe_batch_cap");
}

TEST_F(PqPipelineLoopTest, WritesInABatchReportTheirRowCounts) {
  admin_->Value("DROP TABLE IF EXISTS pipe_batch_rows; CREATE TABLE pipe_batch_rows (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  PipelineBatch batch = Batch({"INSERT INTO pipe_batch_rows VALUES (1), (2), (3)",
                               "UPDATE pipe_batch_rows SET id = id + 1 WHERE id > 1",
                               "DELETE FROM pipe_batch_rows WHERE id = 99"});
  batch.writes = true;
  BatchOutcome out;
  loop->SubmitBatch(std::move(batch), out.Callback());
  const absl::StatusOr<std::vector<QueryResult>>& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].rows_affected, 3);
  EXPECT_EQ((*r)[0].command_tag, "INSERT 0 3");
  EXPECT_EQ((*r)[1].rows_affected, 2);
  EXPECT_EQ((*r)[2].rows_affected, 0);
  admin_->Value("DROP TABLE pipe_batch_rows");
}

TEST_F(PqPipelineLoopTest, BatchColumnsOfUserDefinedTypesAreNamed) {
  admin_->Value("DROP TYPE IF EXISTS pipe_batch_mood; CREATE TYPE pipe_batch_mood AS ENUM ('ok')");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  BatchOutcome out;
  loop->SubmitBatch(Batch({"SELECT 1 AS n", "SELECT 'ok'::pipe_batch_mood AS m"}), out.Callback());
  const absl::StatusOr<std::vector<QueryResult>>& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[1].columns[0].type_name, "pipe_batch_mood");
  EXPECT_EQ((*r)[1].rows[0][0], Value::String("ok"));
  loop.reset();
  admin_->Value("DROP TYPE pipe_batch_mood");
}

TEST_F(PqPipelineLoopTest, BatchHitByAStrayCancelIsRetriedAsAWholeOnce) {
  admin_->Value("DROP TABLE IF EXISTS pipe_batch_retry; CREATE TABLE pipe_batch_retry (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  admin_->Value("SELECT pg_advisory_lock(4343)");
  BatchOutcome out;
  loop->SubmitBatch(
      Batch({"INSERT INTO pipe_batch_retry VALUES (1)", "SELECT pg_advisory_xact_lock(4343)",
             "INSERT INTO pipe_batch_retry VALUES (3)"}),
      out.Callback());
  const std::string waiting =
      "SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE "
      "'%pg_advisory_xact_lock(4343)%' AND pid <> pg_backend_pid()";
  // A cancel request the loop did not send: the statement before it was
  // rolled back with it, and the whole batch runs again.
  admin_->WaitFor(waiting);
  admin_->Value(
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
      "query LIKE '%pg_advisory_xact_lock(4343)%' AND pid <> pg_backend_pid()");
  while (loop->Stats().retries < 1) absl::SleepFor(absl::Milliseconds(5));
  admin_->WaitFor(waiting);
  admin_->Value("SELECT pg_advisory_unlock(4343)");
  const absl::StatusOr<std::vector<QueryResult>>& r = out.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(loop->Stats().retries, 1u);
  EXPECT_EQ(loop->Stats().batches, 2u);
  // Applied once: the first attempt's INSERT was rolled back.
  EXPECT_EQ(admin_->Value("SELECT string_agg(id::text, ',' ORDER BY id) FROM pipe_batch_retry"),
            "1,3");
  admin_->Value("DROP TABLE pipe_batch_retry");
}

TEST_F(PqPipelineLoopTest, CancelledBatchStopsAsAUnitAndTheCallBehindItRuns) {
  admin_->Value("DROP TABLE IF EXISTS pipe_batch_cancel; CREATE TABLE pipe_batch_cancel (id int)");
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  BatchOutcome out;
  Outcome behind;
  const std::string sleep = Sleeper("CancelledBatchStopsAsAUnit");
  const uint64_t id = loop->SubmitBatch(Batch({"INSERT INTO pipe_batch_cancel VALUES (1)", sleep,
                                               "INSERT INTO pipe_batch_cancel VALUES (3)"}),
                                        out.Callback());
  loop->Submit(Call("SELECT 'behind'"), behind.Callback());
  admin_->WaitForSleeping(sleep, 1);
  loop->Cancel(id, absl::CancelledError("cancelled by the test"));
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kCancelled);
  const absl::StatusOr<QueryResult>& r = behind.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rows[0][0], Value::String("behind"));
  EXPECT_EQ(admin_->Value("SELECT count(*) FROM pipe_batch_cancel"), "0");
  admin_->Value("DROP TABLE pipe_batch_cancel");
}

TEST_F(PqPipelineLoopTest, BatchParameterThatCannotBeSentNamesItsStatement) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1);
  PipelineBatch batch = Batch({"SELECT 1", "SELECT $1::text"});
  batch.statements[1].params.push_back(Value::String(std::string("a\0b", 3)));
  BatchOutcome out;
  loop->SubmitBatch(std::move(batch), out.Callback());
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.Wait().status().message(), HasSubstr("statement 2 of 2: "));
}

// Answers in the order the engine gave them (its callbacks run on its loop
// threads).
class AnswerLog {
 public:
  PipelineDone Callback(std::string label) {
    return [this, label = std::move(label)](absl::StatusOr<QueryResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!r.ok()) errors_.push_back(label + ": " + r.status().ToString());
      order_.push_back(label);
      cv_.notify_all();
    };
  }
  std::vector<std::string> WaitFor(size_t answers) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return order_.size() >= answers; });
    return order_;
  }
  std::vector<std::string> Errors() {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> order_;
  std::vector<std::string> errors_;
};

PipelineCall FromClient(std::string client, std::string sql) {
  PipelineCall call = Call(std::move(sql));
  call.client_id = std::move(client);
  return call;
}

// The index at which `label` was answered, or -1.
int PositionOf(const std::vector<std::string>& order, const std::string& label) {
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] == label) return static_cast<int>(i);
  }
  return -1;
}

constexpr int kFlood = 40;

TEST_F(PqPipelineLoopTest, QuietClientIsAnsweredBeforeAFloodingClientsBacklogDrains) {
  // One connection, one statement at a time: everything else waits in the
  // engine's queue, where the quiet client's call must not sit behind the
  // flood.
  std::unique_ptr<PqPipelineLoop> loop = Loop(1, /*depth=*/1);
  AnswerLog log;
  for (int i = 0; i < kFlood; ++i) {
    loop->Submit(FromClient("flood", "SELECT pg_sleep(0.01)"), log.Callback(absl::StrCat("f", i)));
  }
  loop->Submit(FromClient("quiet", "SELECT 'quiet'"), log.Callback("quiet"));
  const std::vector<std::string> order = log.WaitFor(kFlood + 1);
  EXPECT_THAT(log.Errors(), ::testing::IsEmpty());
  // At most the flood's running statement and its current turn go first.
  const int quiet = PositionOf(order, "quiet");
  ASSERT_GE(quiet, 0);
  EXPECT_LE(quiet, 2);
  // The flood itself keeps its own order.
  std::vector<std::string> flood;
  for (const std::string& label : order) {
    if (label != "quiet") flood.push_back(label);
  }
  for (int i = 0; i < kFlood; ++i) EXPECT_EQ(flood[i], absl::StrCat("f", i));
  // The loop publishes its numbers at the end of the turn that answered.
  while (loop->Stats().calls < static_cast<uint64_t>(kFlood + 1)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const PipelineStats stats = loop->Stats();
  EXPECT_EQ(stats.calls, static_cast<uint64_t>(kFlood + 1));
  EXPECT_EQ(stats.errors, 0u);
}

TEST_F(PqPipelineLoopTest, HeavierClientTakesMoreCallsPerTurn) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1, /*depth=*/1);
  AnswerLog log;
  // A blocker holds the connection until both backlogs are queued.
  admin_->Value("SELECT pg_advisory_lock(4343)");
  loop->Submit(FromClient("blocker", "SELECT pg_advisory_xact_lock(4343)"),
               log.Callback("blocker"));
  for (int i = 0; i < 4; ++i) {
    PipelineCall heavy = FromClient("heavy", "SELECT 1");
    heavy.weight = 2;
    loop->Submit(std::move(heavy), log.Callback(absl::StrCat("h", i)));
  }
  for (int i = 0; i < 2; ++i) {
    loop->Submit(FromClient("light", "SELECT 1"), log.Callback(absl::StrCat("l", i)));
  }
  while (loop->Stats().queued < 6) absl::SleepFor(absl::Milliseconds(5));
  admin_->Value("SELECT pg_advisory_unlock(4343)");
  EXPECT_EQ(log.WaitFor(7),
            (std::vector<std::string>{"blocker", "h0", "h1", "l0", "h2", "h3", "l1"}));
}

TEST_F(PqPipelineLoopTest, WithFairQueuingOffTheQuietClientWaitsItsTurnInOneFifo) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(1, /*depth=*/1, /*loops=*/1, /*fair_queuing=*/false);
  AnswerLog log;
  for (int i = 0; i < 10; ++i) {
    loop->Submit(FromClient("flood", "SELECT 1"), log.Callback(absl::StrCat("f", i)));
  }
  loop->Submit(FromClient("quiet", "SELECT 'quiet'"), log.Callback("quiet"));
  const std::vector<std::string> order = log.WaitFor(11);
  EXPECT_EQ(PositionOf(order, "quiet"), 10);
}

TEST_F(PqPipelineLoopTest, SeveralLoopsShareTheHotSetAndEachCallGetsItsOwnResult) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(3, /*depth=*/4, /*loops=*/2);
  EXPECT_EQ(loop->Stats().loops, 2);
  EXPECT_EQ(loop->Stats().connections, 3);
  constexpr int kCalls = 400;
  std::vector<Outcome> outcomes(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    PipelineCall call = Call("SELECT $1::int8 + 1", {storage::Value::Int64(i)});
    call.client_id = absl::StrCat("client-", i % 4);
    loop->Submit(std::move(call), outcomes[i].Callback());
  }
  for (int i = 0; i < kCalls; ++i) {
    const absl::StatusOr<QueryResult>& r = outcomes[i].Wait();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->rows[0][0], storage::Value::Int64(i + 1));
  }
  while (loop->Stats().connections_up < 3) absl::SleepFor(absl::Milliseconds(5));
  const std::vector<int> pids = loop->BackendPids();
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).size(), 3u);
  while (loop->Stats().calls < static_cast<uint64_t>(kCalls)) absl::SleepFor(absl::Milliseconds(5));
  const PipelineStats stats = loop->Stats();
  EXPECT_EQ(stats.calls, static_cast<uint64_t>(kCalls));
  EXPECT_GE(stats.statements, static_cast<uint64_t>(kCalls));
  EXPECT_GT(stats.recent_statements_per_flush, 0.0);
  EXPECT_EQ(stats.max_depth, 4);
}

TEST_F(PqPipelineLoopTest, CancelFindsTheCallsLoop) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(2, /*depth=*/4, /*loops=*/2);
  Outcome first, second;
  const std::string sleep = Sleeper("CancelFindsTheCallsLoop");
  // The least-loaded loop takes each: one sleeper per loop.
  const uint64_t first_id = loop->Submit(Call(sleep), first.Callback());
  const uint64_t second_id = loop->Submit(Call(sleep), second.Callback());
  // Both sent and running: a call cancelled while it still waits for its
  // loop's connection is answered without a cancel request.
  admin_->WaitForSleeping(sleep, 2);
  loop->Cancel(second_id, absl::CancelledError("second"));
  EXPECT_EQ(second.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(first.HasBeenAnswered());
  loop->Cancel(first_id, absl::CancelledError("first"));
  EXPECT_EQ(first.Wait().status().code(), absl::StatusCode::kCancelled);
  // Both stopped on the server.
  admin_->WaitFor(absl::StrCat("SELECT count(*) = 0 FROM pg_stat_activity WHERE query = '", sleep,
                               "' AND state = 'active'"));
  while (loop->Stats().errors < 2) absl::SleepFor(absl::Milliseconds(5));
  const PipelineStats stats = loop->Stats();
  EXPECT_EQ(stats.errors, 2u);
  EXPECT_EQ(stats.cancels_sent, 2u);
}

TEST_F(PqPipelineLoopTest, MoreLoopsThanConnectionsAreClampedToTheConnections) {
  std::unique_ptr<PqPipelineLoop> loop = Loop(2, /*depth=*/4, /*loops=*/8);
  EXPECT_EQ(loop->Stats().loops, 2);
  Outcome out;
  loop->Submit(Call("SELECT 'one'"), out.Callback());
  ASSERT_TRUE(out.Wait().ok()) << out.Wait().status();
}

}  // namespace
}  // namespace sessionbroker::storage
