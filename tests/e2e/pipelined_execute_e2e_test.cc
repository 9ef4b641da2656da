// The pipelined engine through the broker binary (BROKER_PIPELINE_CONNECTIONS):
// concurrent one-shot calls come back with their own results, one caller's
// error stays its own, a slow statement does not hold the short ones behind
// it, the connection bound includes the hot set, and /metrics shows the
// pipeline's numbers.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

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

class PipelineE2eTest : public BrokerFixture {
 protected:
  void StartPipelined(std::map<std::string, std::string> env = {}) {
    env.emplace("BROKER_PIPELINE_CONNECTIONS", "2");
    env.emplace("BROKER_PIPELINE_DEPTH", "8");
    env.emplace("DB_POOL_SIZE", "3");
    env.emplace("DB_MAX_OVERFLOW", "0");
    StartBroker(std::move(env));
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

}  // namespace
}  // namespace sessionbroker::testing
