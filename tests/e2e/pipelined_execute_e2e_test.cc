// The pipelined engine through the broker binary (BROKER_PIPELINE_CONNECTIONS):
// concurrent one-shot calls come back with their own results, one caller's
// error stays its own, a slow statement does not hold the short ones behind
// it, the connection bound includes the hot set, /metrics and GetPoolStatus
// show the pipeline's numbers, and a flooding client does not make a quiet
// one wait behind its backlog (unless fair queuing is off). Atomic batches
// (unary ExecuteBatch and the Pipeline stream's execute_batch) answer exactly
// as with the engine off, all or nothing; independent_batch items each run
// under their own Sync.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

// /metrics' sample `name` (no labels), or -1.
double MetricValue(const std::string& metrics, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (absl::ConsumePrefix(&line, name + " ")) {
      double v;
      if (absl::SimpleAtod(line, &v)) return v;
    }
  }
  return -1;
}

// What a caller observes of an ExecuteBatch: status (code, message,
// details), the sqlstate trailer and the results, as comparable text.
std::string BatchAnswer(v1::SessionBroker::Stub* stub, const std::vector<std::string>& sqls) {
  v1::ExecuteBatchRequest request;
  for (const std::string& sql : sqls) request.add_statements()->set_sql(sql);
  v1::ExecuteBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  const grpc::Status status = stub->ExecuteBatch(&context, request, &response);
  return absl::StrCat("code=", status.error_code(), " message=", status.error_message(),
                      " details=", absl::CEscape(status.error_details()),
                      " sqlstate=", SqlStateOf(context), " results=", response.DebugString());
}

// Sends `calls` in one message on a fresh Pipeline stream, half-closes and
// reads every result until the stream ends: the results by id.
std::map<uint64_t, v1::PipelineResult> PipelineExchange(v1::SessionBroker::Stub* stub,
                                                        std::vector<v1::PipelineCall> calls) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto stream = stub->Pipeline(&context);
  v1::PipelineRequest request;
  for (v1::PipelineCall& call : calls) *request.add_calls() = std::move(call);
  EXPECT_TRUE(stream->Write(request));
  stream->WritesDone();
  std::map<uint64_t, v1::PipelineResult> results;
  v1::PipelineResponse response;
  while (stream->Read(&response)) {
    for (const v1::PipelineResult& r : response.results()) results[r.id()] = r;
  }
  const grpc::Status end = stream->Finish();
  EXPECT_TRUE(end.ok()) << end.error_message();
  return results;
}

class PipelineE2eTest : public BrokerFixture {
 protected:
  void StartPipelined(std::map<std::string, std::string> env = {}) {
    env.emplace("BROKER_PIPELINE_CONNECTIONS", "2");
    env.emplace("BROKER_PIPELINE_DEPTH", "8");
    env.emplace("DB_POOL_SIZE", "3");
    env.emplace("DB_MAX_OVERFLOW", "0");
    StartBroker(std::move(env));
  }

  v1::PoolStatus Status() {
    auto monitor = v1::PoolMonitor::NewStub(broker_->NewChannel());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::PoolStatus status;
    const grpc::Status s = monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  CallResult ExecuteAs(const std::string& client, const std::string& sql) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    context.AddMetadata("x-client-id", client);
    v1::ExecuteRequest request;
    request.set_sql(sql);
    CallResult r;
    r.status = stub_->Execute(&context, request, &r.response);
    return r;
  }

  // With one hot connection taking one statement at a time, "flood" submits
  // kFlood slow statements; once all of them are in the engine (running or
  // queued, as PoolStatus.pipeline says), "quiet" runs a short one. Returns
  // how many flood calls completed before the quiet one.
  static constexpr int kFlood = 16;
  int FloodCallsBeforeQuiet(bool fair_queuing) {
    StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "1"},
                 {"BROKER_PIPELINE_DEPTH", "1"},
                 {"BROKER_PIPELINE_LOOPS", "1"},
                 {"BROKER_FAIR_QUEUING", fair_queuing ? "true" : "false"},
                 {"DB_POOL_SIZE", "2"},
                 {"DB_MAX_OVERFLOW", "0"}});
    // Calls made before the hot connection is up take the pool instead.
    EXPECT_TRUE(Eventually([&] { return Status().pipeline().connections_up() == 1; }));
    std::mutex mu;
    std::vector<std::string> finished;  // in completion order
    std::atomic<int> failures{0};
    std::vector<std::thread> flood;
    for (int i = 0; i < kFlood; ++i) {
      flood.emplace_back([&] {
        const CallResult r = ExecuteAs("flood", "SELECT pg_catalog.pg_sleep(0.1)");
        if (!r.status.ok()) failures.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        finished.push_back("flood");
      });
    }
    EXPECT_TRUE(Eventually([&] {
      const v1::PipelineStatus p = Status().pipeline();
      std::lock_guard<std::mutex> lock(mu);
      return p.queued() + p.in_flight() + static_cast<int64_t>(finished.size()) >= kFlood;
    })) << "the flood never reached the engine";
    const CallResult quiet = ExecuteAs("quiet", "SELECT 'quiet'");
    EXPECT_TRUE(quiet.status.ok()) << quiet.status.error_message();
    {
      std::lock_guard<std::mutex> lock(mu);
      finished.push_back("quiet");
    }
    for (std::thread& t : flood) t.join();
    EXPECT_EQ(failures.load(), 0);
    // Every call went through the engine.
    EXPECT_GE(Status().pipeline().calls(), kFlood + 1);
    return static_cast<int>(std::find(finished.begin(), finished.end(), "quiet") -
                            finished.begin());
  }

  std::string Metrics() {
    httplib::Client http(absl::StrCat("http://", broker_->metrics_address()));
    httplib::Result metrics = http.Get("/metrics");
    EXPECT_TRUE(metrics) << "no /metrics";
    return metrics ? metrics->body : "";
  }
};

TEST_F(PipelineE2eTest, ConcurrentCallsEachGetTheirOwnResultWithinTheConnectionBound) {
  StartPipelined();
  ConnectionPeakSampler peak(base_url_, app_name_);
  constexpr int kThreads = 16;
  constexpr int kCallsEach = 25;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsEach; ++i) {
        const int64_t n = t * 1000 + i;
        // Every fourth call uses a built-in outside the classifier's
        // allow-list, so it is not provably stateless whatever the catalog
        // holds: it takes a pooled connection and a reset. Both paths run at
        // once.
        const CallResult r = i % 4 == 0 ? Execute("SELECT pg_catalog.int8pl($1::int8, 0)", {Int(n)})
                                        : Execute("SELECT $1::int8", {Int(n)});
        if (!r.status.ok() || r.response.rows_size() != 1 ||
            r.response.rows(0).values(0).int64_value() != n) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  peak.Stop();
  EXPECT_EQ(wrong.load(), 0);
  // DB_POOL_SIZE 3 + DB_MAX_OVERFLOW 0, the two hot connections included.
  EXPECT_LE(peak.peak(), 3);
  // /metrics is sampled: the counters show up within a sampling period.
  // Calls that came before the hot set was up took the pool: most of the
  // three quarters that qualify went to the engine.
  EXPECT_TRUE(Eventually([&] {
    return MetricValue(Metrics(), "sessionbroker_pipeline_statements_total") >=
           kThreads * kCallsEach / 2;
  })) << Metrics();
  const std::string metrics = Metrics();
  EXPECT_EQ(MetricValue(metrics, "sessionbroker_pipeline_connections"), 2);
  EXPECT_GE(MetricValue(metrics, "sessionbroker_pipeline_flushes_total"), 1);
}

TEST_F(PipelineE2eTest, OneCallersErrorLeavesTheOthersUntouched) {
  StartPipelined();
  constexpr int kCalls = 40;
  std::vector<CallResult> results(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      results[i] = i == kCalls / 2 ? Execute("SELECT 1 / $1::int8", {Int(0)})
                                   : Execute("SELECT $1::int8", {Int(i)});
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kCalls; ++i) {
    if (i == kCalls / 2) {
      EXPECT_EQ(results[i].status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_EQ(results[i].sqlstate, "22012");
    } else {
      ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
      EXPECT_EQ(results[i].response.rows(0).values(0).int64_value(), i);
    }
  }
}

TEST_F(PipelineE2eTest, ShortStatementsAreNotAllStuckBehindASlowOne) {
  StartPipelined();
  std::mutex mu;
  std::vector<std::string> finished;  // in completion order
  std::thread slow([&] {
    const CallResult r = Execute("SELECT pg_catalog.pg_sleep(1)");
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    std::lock_guard<std::mutex> lock(mu);
    finished.push_back("slow");
  });
  // The slow one is running before the short ones start.
  ASSERT_TRUE(Eventually([&] {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
               "state = 'active' AND query LIKE '%pg_sleep(1)%'",
               {storage::Value::String(app_name_)}) == 1;
  }));
  constexpr int kThreads = 4;
  constexpr int kCallsEach = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kCallsEach; ++i) {
        const CallResult r = Execute("SELECT 1");
        EXPECT_TRUE(r.status.ok()) << r.status.error_message();
        std::lock_guard<std::mutex> lock(mu);
        finished.push_back("short");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  slow.join();
  ASSERT_EQ(finished.size(), static_cast<size_t>(kThreads * kCallsEach + 1));
  const size_t before_slow = std::find(finished.begin(), finished.end(), "slow") - finished.begin();
  // Most short calls completed while the slow one still ran: only what was
  // sent behind it before it counted as stalled (at most the depth) waited.
  EXPECT_GE(before_slow, static_cast<size_t>(kThreads * kCallsEach / 2));
}

TEST_F(PipelineE2eTest, DeadlineOfAPipelinedCallIsDeadlineExceeded) {
  StartPipelined();
  const CallResult r = Execute("SELECT pg_catalog.pg_sleep(30)", {}, absl::Milliseconds(300));
  // The statement was stopped on the server (a cancel request went out
  // while it headed its connection's queue).
  EXPECT_TRUE(Eventually([&] {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
               "state = 'active' AND query LIKE '%pg_sleep(30)%'",
               {storage::Value::String(app_name_)}) == 0;
  }));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The connection is still good for the next caller.
  const CallResult next = Execute("SELECT $1::int8", {Int(5)});
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.response.rows(0).values(0).int64_value(), 5);
}

TEST_F(PipelineE2eTest, AtomicBatchAnswersAlikeWithTheEngineOnAndOffAndAppliesNothingOnError) {
  const std::string table = absl::StrCat("sb_pipe_batch_", getpid());
  Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
  Admin(absl::StrCat("CREATE TABLE ", table, " (id int)"));
  const std::vector<std::vector<std::string>> batches = {
      // Relation-free: the engine takes these.
      {"SELECT $1::int8 AS n", "SELECT 'two'::text AS t", "SELECT 3::int8"},
      {"SELECT 1::int8", "SELECT 'abc'::int8", "SELECT 3::int8"},
      // Writes: never pipelined; all or nothing on either path.
      {absl::StrCat("INSERT INTO ", table, " VALUES (1)"),
       absl::StrCat("INSERT INTO ", table, " VALUES (1 / 0)"),
       absl::StrCat("INSERT INTO ", table, " VALUES (3)")},
  };
  // $1 without a parameter is refused alike; give the first one none.
  std::vector<std::vector<std::string>> runs = batches;
  runs[0][0] = "SELECT 1::int8 AS n";
  std::vector<std::string> off;
  StartBroker({{"DB_POOL_SIZE", "3"}, {"DB_MAX_OVERFLOW", "0"}});
  for (const auto& batch : runs) off.push_back(BatchAnswer(stub_.get(), batch));
  stub_.reset();
  broker_.reset();
  StartPipelined();
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_connections_up") == 2; }));
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(BatchAnswer(stub_.get(), runs[i]), off[i]) << "batch " << i;
  }
  EXPECT_THAT(off[1], HasSubstr("statement 2 of 3: "));
  EXPECT_THAT(off[1], HasSubstr("sqlstate=22P02"));
  EXPECT_THAT(off[2], HasSubstr("statement 2 of 3: "));
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  // The two relation-free batches were pipelined, the write batch was not.
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_batches_total") >= 2; }));
  EXPECT_EQ(MetricValue(Metrics(), "sessionbroker_pipeline_batches_total"), 2);
  Admin(absl::StrCat("DROP TABLE ", table));
}

TEST_F(PipelineE2eTest, BatchWithAStatefulStatementTakesAPooledConnection) {
  StartPipelined();
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_connections_up") == 2; }));
  // SET LOCAL changes session state (a reset follows): the whole batch is
  // pooled. It completes before the pipelined one below starts, so a
  // snapshot that counts the later one would count it too.
  const std::string stateful =
      BatchAnswer(stub_.get(), {"SET LOCAL statement_timeout = '5s'", "SELECT 1::int8"});
  EXPECT_THAT(stateful, HasSubstr("code=0 "));
  EXPECT_THAT(BatchAnswer(stub_.get(), {"SELECT 1::int8", "SELECT 2::int8"}), HasSubstr("code=0 "));
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_batches_total") >= 1; }));
  EXPECT_EQ(MetricValue(Metrics(), "sessionbroker_pipeline_batches_total"), 1);
}

TEST_F(PipelineE2eTest, StreamBatchesRunOnTheEngineAtomicOrItemByItem) {
  StartPipelined();
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_connections_up") == 2; }));
  std::vector<v1::PipelineCall> calls(3);
  calls[0].set_id(1);
  calls[0].mutable_execute_batch()->add_statements()->set_sql("SELECT 1::int8");
  calls[0].mutable_execute_batch()->add_statements()->set_sql("SELECT 'abc'::int8");
  calls[1].set_id(2);
  v1::ExecuteBatchRequest* ok = calls[1].mutable_execute_batch();
  ok->add_statements()->set_sql("SELECT $1::int8");
  *ok->mutable_statements(0)->add_params() = Int(41);
  ok->add_statements()->set_sql("SELECT 42::int8");
  calls[2].set_id(3);
  v1::ExecuteBatchRequest* items = calls[2].mutable_independent_batch();
  items->add_statements()->set_sql("SELECT 1::int8");
  items->add_statements()->set_sql("SELECT 'abc'::int8");
  items->add_statements()->set_sql("SELECT 3::int8");
  std::map<uint64_t, v1::PipelineResult> results = PipelineExchange(stub_.get(), std::move(calls));
  ASSERT_EQ(results.size(), 3u);
  // The atomic one fails as a whole, naming its statement as unary does.
  const std::string unary = BatchAnswer(stub_.get(), {"SELECT 1::int8", "SELECT 'abc'::int8"});
  ASSERT_TRUE(results[1].has_status());
  EXPECT_EQ(results[1].sqlstate(), "22P02");
  EXPECT_THAT(unary, HasSubstr(absl::StrCat("message=", results[1].status().message(), " ")));
  ASSERT_TRUE(results[2].has_execute_batch()) << results[2].status().message();
  ASSERT_EQ(results[2].execute_batch().results_size(), 2);
  EXPECT_EQ(results[2].execute_batch().results(0).rows(0).values(0).int64_value(), 41);
  EXPECT_EQ(results[2].execute_batch().results(1).rows(0).values(0).int64_value(), 42);
  // Independent items: each its own Sync; one fails, the others succeed.
  ASSERT_TRUE(results[3].has_items()) << results[3].status().message();
  ASSERT_EQ(results[3].items().items_size(), 3);
  EXPECT_EQ(results[3].items().items(0).result().rows(0).values(0).int64_value(), 1);
  EXPECT_EQ(results[3].items().items(1).sqlstate(), "22P02");
  EXPECT_EQ(results[3].items().items(2).result().rows(0).values(0).int64_value(), 3);
  // Three batches (the unary one too) and the three items as statements.
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_batches_total") >= 3; }));
  EXPECT_EQ(MetricValue(Metrics(), "sessionbroker_pipeline_batches_total"), 3);
  EXPECT_GE(MetricValue(Metrics(), "sessionbroker_pipeline_statements_total"), 9);
}

TEST_F(PipelineE2eTest, IndependentWritesEachCommitOrFailAlone) {
  StartPipelined();
  const std::string table = absl::StrCat("sb_pipe_items_", getpid());
  Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
  Admin(absl::StrCat("CREATE TABLE ", table, " (id int)"));
  std::vector<v1::PipelineCall> calls(1);
  calls[0].set_id(7);
  v1::ExecuteBatchRequest* items = calls[0].mutable_independent_batch();
  items->add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  items->add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (1 / 0)"));
  items->add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (3)"));
  std::map<uint64_t, v1::PipelineResult> results = PipelineExchange(stub_.get(), std::move(calls));
  ASSERT_TRUE(results[7].has_items()) << results[7].status().message();
  EXPECT_EQ(results[7].items().items(0).result().command_tag(), "INSERT 0 1");
  EXPECT_EQ(results[7].items().items(1).sqlstate(), "22012");
  EXPECT_EQ(results[7].items().items(2).result().command_tag(), "INSERT 0 1");
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 2);
  Admin(absl::StrCat("DROP TABLE ", table));
}

TEST_F(PipelineE2eTest, PipelinedBatchPastItsDeadlineStopsAsAUnit) {
  StartPipelined();
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_connections_up") == 2; }));
  v1::ExecuteBatchRequest request;
  request.add_statements()->set_sql("SELECT 1::int8");
  request.add_statements()->set_sql("SELECT pg_catalog.pg_sleep(30) -- batch-deadline");
  v1::ExecuteBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
  const grpc::Status status = stub_->ExecuteBatch(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(response.results_size(), 0);
  // Cancelled on the server once it headed its connection's queue.
  EXPECT_TRUE(Eventually([&] {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
               "state = 'active' AND query LIKE '%batch-deadline%' AND pid <> pg_backend_pid()",
               {storage::Value::String(app_name_)}) == 0;
  }));
  EXPECT_THAT(BatchAnswer(stub_.get(), {"SELECT 5::int8", "SELECT 6::int8"}), HasSubstr("code=0 "));
  ASSERT_TRUE(Eventually(
      [&] { return MetricValue(Metrics(), "sessionbroker_pipeline_batches_total") >= 2; }));
}

TEST_F(PipelineE2eTest, QuietClientIsAnsweredBeforeAFloodingClientsBacklogDrains) {
  // The flood's running statement and its current turn may go first; the
  // rest of its backlog waits for the quiet call.
  const int before = FloodCallsBeforeQuiet(/*fair_queuing=*/true);
  EXPECT_LE(before, 3);
}

TEST_F(PipelineE2eTest, WithFairQueuingOffTheQuietClientWaitsBehindTheWholeFlood) {
  // One FIFO: the quiet call was queued last. (Its answer and the last flood
  // answer leave the broker back to back, so one may overtake the other on
  // the way to the test.)
  const int before = FloodCallsBeforeQuiet(/*fair_queuing=*/false);
  EXPECT_GE(before, kFlood - 1);
}

TEST_F(PipelineE2eTest, PoolStatusShowsThePipelinedEngine) {
  StartPipelined({{"BROKER_PIPELINE_LOOPS", "2"}});
  ASSERT_TRUE(Eventually([&] { return Status().pipeline().connections_up() == 2; }));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Execute("SELECT 1").status.ok());
  // An error the engine answers (operators such as `/` would take the pool).
  const CallResult failed = Execute("SELECT pg_catalog.pg_sleep(30)", {}, absl::Milliseconds(300));
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(Eventually([&] { return Status().pipeline().errors() >= 1; }));
  const v1::PoolStatus status = Status();
  ASSERT_TRUE(status.has_pipeline());
  const v1::PipelineStatus& p = status.pipeline();
  EXPECT_TRUE(p.enabled());
  EXPECT_EQ(p.loops(), 2);
  EXPECT_EQ(p.connections(), 2);
  EXPECT_EQ(p.max_depth(), 8);
  EXPECT_GE(p.calls(), 11);
  EXPECT_EQ(p.errors(), 1);
  EXPECT_GE(p.statements(), p.calls());
  EXPECT_GT(p.recent_statements_per_flush(), 0);
  // The same numbers as /metrics (one source), which are sampled.
  EXPECT_TRUE(Eventually([&] {
    return MetricValue(Metrics(), "sessionbroker_pipeline_loops") == 2 &&
           MetricValue(Metrics(), "sessionbroker_pipeline_errors_total") == 1;
  })) << Metrics();
}

TEST_F(PipelineE2eTest, PoolStatusSaysThePipelinedEngineIsOffWhenItIsOff) {
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "0"}});
  EXPECT_FALSE(Status().pipeline().enabled());
  EXPECT_EQ(Status().pipeline().connections(), 0);
  EXPECT_EQ(Status().config().pool_size(), 5);
}

TEST_F(PipelineE2eTest, TheDefaultBrokerPipelinesOnTwoOfItsFiveConnections) {
  // BROKER_PIPELINE_CONNECTIONS=auto with the default DB_POOL_SIZE of 5.
  StartBroker();
  EXPECT_TRUE(Status().pipeline().enabled());
  EXPECT_EQ(Status().pipeline().connections(), 2);
  // The hot set is carved out of DB_POOL_SIZE: the pool keeps the rest.
  EXPECT_EQ(Status().config().pool_size(), 3);
  EXPECT_EQ(Status().config().max_connections(), 13);
  for (int i = 0; i < 20; ++i) {
    const CallResult r = Execute("SELECT $1::int8", {Int(i)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows(0).values(0).int64_value(), i);
  }
  EXPECT_TRUE(Eventually([&] { return Status().pipeline().calls() >= 20; }))
      << Status().pipeline().DebugString();
}

TEST_F(PipelineE2eTest, APoolUnderFourKeepsEveryConnectionForThePoolByDefault) {
  StartBroker({{"DB_POOL_SIZE", "3"}});
  EXPECT_FALSE(Status().pipeline().enabled());
  EXPECT_EQ(Status().pipeline().connections(), 0);
}

}  // namespace
}  // namespace sessionbroker::testing
