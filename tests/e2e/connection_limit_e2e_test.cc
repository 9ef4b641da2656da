// End-to-end: the real broker binary against a private PostgreSQL whose
// max_connections is smaller than the pool (issue 12's scenario: the server at
// max_connections=6, a pool of 5 + 10, 12 callers). The broker must hold at
// the connections the server grants: every call is served (some after
// waiting), none fails with UNAVAILABLE, health stays SERVING, and PoolStatus
// and /metrics show the effective limit. And the connection budget read at
// start: a warning with the numbers when (size + overflow) x replicas exceeds
// max_connections - superuser_reserved_connections, none when it fits.
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "server/core/base/mutex.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_process.h"
#include "tests/support/grpc_wire.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kServerMaxConnections = 6;

class ConnectionLimitE2eTest : public ::testing::Test {
 protected:
  // One cluster for the suite: initdb is the slow part.
  static void SetUpTestSuite() {
    cluster_ = new PrivateCluster(kServerMaxConnections);
    ASSERT_TRUE(cluster_->Start()) << "scripts/pg could not start a cluster";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  static std::unique_ptr<BrokerProcess> StartBroker(std::map<std::string, std::string> env) {
    auto broker = std::make_unique<BrokerProcess>(cluster_->url(), std::move(env));
    EXPECT_TRUE(broker->WaitUntilServing()) << broker->Log();
    return broker;
  }

  // The broker's log once it holds a "budget:" line (written on its first
  // connection, which WaitUntilServing's health probe opened). The loop is a
  // hang guard, not a timing assertion.
  static std::string LogWithBudgetLine(const BrokerProcess& broker) {
    std::string log;
    for (int i = 0; i < 200; ++i) {
      log = broker.Log();
      if (log.find("budget: ") != std::string::npos) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return log;
  }

  static PrivateCluster* cluster_;
};

// The log line holding `text` ("" if none).
std::string LineWith(const std::string& log, const std::string& text) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, text)) return std::string(line);
  }
  return "";
}

PrivateCluster* ConnectionLimitE2eTest::cluster_ = nullptr;

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

TEST_F(ConnectionLimitE2eTest, APoolLargerThanTheServerWaitsForTheConnectionsItGets) {
  // The pool alone meets the full server: the pipelined engine would hold 2
  // of its 3 slots from the start, and take these statements.
  std::unique_ptr<BrokerProcess> broker = StartBroker({{"DB_POOL_SIZE", "5"},
                                                       {"DB_MAX_OVERFLOW", "10"},
                                                       {"DB_POOL_TIMEOUT", "30"},
                                                       {"BROKER_HEALTH_CHECK_INTERVAL", "0.1"},
                                                       {"BROKER_PIPELINE_CONNECTIONS", "0"}});
  ASSERT_FALSE(broker->address().empty()) << broker->Log();

  // Health watched all along, by Check calls from a thread of its own.
  std::atomic<bool> stop{false};
  std::atomic<int> health_checks{0};
  std::atomic<int> not_serving{0};
  std::thread health([&] {
    const std::shared_ptr<grpc::Channel> channel = broker->NewChannel();
    while (!stop.load()) {
      absl::StatusOr<ServingStatus> s = HealthCheck(channel, "", absl::Seconds(5));
      health_checks.fetch_add(1);
      if (!s.ok() || *s != ServingStatus::kServing) not_serving.fetch_add(1);
      absl::SleepFor(absl::Milliseconds(20));
    }
  });

  constexpr int kCallers = 12;
  constexpr int kCallsPerCaller = 8;
  core::Mutex mu;
  std::map<std::string, int> failures;  // "CODE: message" -> count
  std::atomic<int> ok{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&] {
      auto stub = v1::SessionBroker::NewStub(broker->NewChannel());
      for (int k = 0; k < kCallsPerCaller; ++k) {
        grpc::ClientContext context;
        context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(25)));
        // What is under test is the database's limit, not the 13 channels'
        // first connects: one that fails once (seen once in a full run) would fail
        // its caller's calls fast instead of waiting for the reconnect.
        context.set_wait_for_ready(true);
        v1::ExecuteRequest request;
        request.set_sql("SELECT pg_sleep(0.05)");
        v1::ExecuteResponse response;
        const grpc::Status s = stub->Execute(&context, request, &response);
        if (s.ok()) {
          ok.fetch_add(1);
        } else {
          core::MutexLock lock(&mu);
          ++failures[absl::StrCat(s.error_code(), ": ", s.error_message())];
        }
      }
    });
  }
  for (std::thread& t : callers) t.join();
  stop.store(true);
  health.join();

  EXPECT_EQ(ok.load(), kCallers * kCallsPerCaller);
  for (const auto& [failure, count] : failures) ADD_FAILURE() << count << " x " << failure;
  EXPECT_GT(health_checks.load(), 0);
  EXPECT_EQ(not_serving.load(), 0) << "a full database is not a dead one";

  auto monitor = v1::PoolMonitor::NewStub(broker->NewChannel());
  grpc::ClientContext context;
  v1::PoolStatus status;
  ASSERT_TRUE(monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status).ok());
  const v1::ConnectionLimit& limit = status.connection_limit();
  EXPECT_TRUE(limit.limited());
  EXPECT_GE(limit.effective(), 1);
  EXPECT_LE(limit.effective(), kServerMaxConnections);
  EXPECT_GT(limit.refusals(), 0);
  EXPECT_THAT(limit.last_refusal(), HasSubstr("too many clients"));
  EXPECT_LE(status.connections().open(), kServerMaxConnections);
  EXPECT_EQ(status.config().max_connections(), 15);
  EXPECT_TRUE(status.database().reachable());
  EXPECT_FALSE(status.database().connect_backoff());
  EXPECT_EQ(status.counters().connect_failures(), 0) << "refusals are counted apart";
  EXPECT_EQ(limit.server_max_connections(), kServerMaxConnections);
  EXPECT_EQ(limit.server_superuser_reserved_connections(), 3);  // PostgreSQL's default
  EXPECT_EQ(limit.expected_replicas(), 1);
  EXPECT_TRUE(limit.budget_exceeded());

  httplib::Client http(absl::StrCat("http://", broker->metrics_address()));
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(5, 0);
  httplib::Result metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics) << "no /metrics";
  const double gauge = MetricValue(metrics->body, "sessionbroker_pool_connection_limit");
  EXPECT_GE(gauge, 1);
  EXPECT_LE(gauge, kServerMaxConnections);
  EXPECT_EQ(MetricValue(metrics->body, "sessionbroker_database_max_connections"),
            kServerMaxConnections);

  const std::string log = broker->Log();
  EXPECT_THAT(log, HasSubstr("pool: event=connection_limit "));
  EXPECT_THAT(log, Not(HasSubstr("event=database_unreachable")));
  EXPECT_THAT(log, Not(HasSubstr("NOT_SERVING")));
}

TEST_F(ConnectionLimitE2eTest, TheBudgetWarningNamesTheNumbersWhenPoolsExceedTheServer) {
  std::unique_ptr<BrokerProcess> broker = StartBroker(
      {{"DB_POOL_SIZE", "5"}, {"DB_MAX_OVERFLOW", "10"}, {"BROKER_EXPECTED_REPLICAS", "2"}});
  const std::string log = LogWithBudgetLine(*broker);
  const std::string line = LineWith(log, "budget: ");
  EXPECT_THAT(line, HasSubstr(" warning "));
  EXPECT_THAT(line, HasSubstr("budget: connection budget exceeded: (DB_POOL_SIZE 5 + "
                              "DB_MAX_OVERFLOW 10) x BROKER_EXPECTED_REPLICAS 2 = 30 > "
                              "max_connections 6 - superuser_reserved_connections 3"))
      << log;
  EXPECT_THAT(line, HasSubstr("PostgreSQL 16"));
}

TEST_F(ConnectionLimitE2eTest, ReplicasAloneCanExceedTheBudget) {
  std::unique_ptr<BrokerProcess> broker = StartBroker(
      {{"DB_POOL_SIZE", "2"}, {"DB_MAX_OVERFLOW", "1"}, {"BROKER_EXPECTED_REPLICAS", "2"}});
  const std::string log = LogWithBudgetLine(*broker);
  EXPECT_THAT(log, HasSubstr("budget: connection budget exceeded: (DB_POOL_SIZE 2 + "
                             "DB_MAX_OVERFLOW 1) x BROKER_EXPECTED_REPLICAS 2 = 6 > "
                             "max_connections 6 - superuser_reserved_connections 3"))
      << log;
}

TEST_F(ConnectionLimitE2eTest, NoWarningWhenThePoolsFit) {
  std::unique_ptr<BrokerProcess> broker =
      StartBroker({{"DB_POOL_SIZE", "2"}, {"DB_MAX_OVERFLOW", "1"}});
  const std::string log = LogWithBudgetLine(*broker);
  EXPECT_THAT(log, HasSubstr("budget: (DB_POOL_SIZE 2 + DB_MAX_OVERFLOW 1) x "
                             "BROKER_EXPECTED_REPLICAS 1 = 3 <= max_connections 6 - "
                             "superuser_reserved_connections 3"))
      << log;
  EXPECT_THAT(log, Not(HasSubstr("budget exceeded")));
  EXPECT_THAT(LineWith(log, "budget: "), HasSubstr(" info "));
}

}  // namespace
}  // namespace sessionbroker::testing
