// End-to-end: fair shares of the pool (docs/security.md, "Fair shares and
// quotas") with the session-broker binary and a real PostgreSQL. One client
// floods a small pool with slow statements while another runs a short one;
// per-client quotas answer RESOURCE_EXHAUSTED naming the quota and the client.
//
// The order in which PostgreSQL starts statements is read from a sequence:
// each statement takes nextval() as it starts, so the quiet client's value
// says how many statements were served before it. No assertion depends on
// how long anything takes (the p99 comparison is a benchmark,
// tests/bench/fairness_bench.sh).
#include <atomic>
#include <cctype>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kPoolSize = 2;
constexpr int kFloodCalls = 8;  // kPoolSize running, the rest queued

class FairShareE2eTest : public BrokerFixture {
 protected:
  void SetUpSequence() {
    sequence_ = absl::StrCat("fair_share_", app_name_);
    for (char& c : sequence_) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    Admin(absl::StrCat("DROP SEQUENCE IF EXISTS ", sequence_));
    Admin(absl::StrCat("CREATE SEQUENCE ", sequence_));
    Admin(absl::StrCat("GRANT ALL ON SEQUENCE ", sequence_, " TO PUBLIC"));
  }
  void TearDown() override {
    if (!sequence_.empty()) Admin(absl::StrCat("DROP SEQUENCE IF EXISTS ", sequence_));
  }

  CallResult ExecuteAs(const std::string& client, const std::string& sql,
                       absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    context.AddMetadata("x-client-id", client);
    v1::ExecuteRequest request;
    request.set_sql(sql);
    CallResult r;
    r.status = stub_->Execute(&context, request, &r.response);
    return r;
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

  const v1::ClientOccupancy* ClientIn(const v1::PoolStatus& status, const std::string& id) {
    for (const v1::ClientOccupancy& c : status.clients()) {
      if (c.client_id() == id) return &c;
    }
    return nullptr;
  }

  // Floods a pool of kPoolSize with kFloodCalls slow statements from
  // "flooder"; once every one of them is running or queued, runs one short
  // statement as "quiet". Returns the quiet statement's place in the order
  // PostgreSQL started them (1 = first), or -1 if it failed.
  int64_t QuietPlaceUnderFlood(bool fair_queuing) {
    StartBroker({{"DB_POOL_SIZE", absl::StrCat(kPoolSize)},
                 {"DB_MAX_OVERFLOW", "0"},
                 {"DB_POOL_TIMEOUT", "120"},
                 {"BROKER_FAIR_QUEUING", fair_queuing ? "true" : "false"}});
    SetUpSequence();
    std::atomic<int> flood_failures{0};
    std::vector<std::thread> flood;
    for (int k = 0; k < kFloodCalls; ++k) {
      flood.emplace_back([&] {
        const CallResult r =
            ExecuteAs("flooder", absl::StrCat("SELECT nextval('", sequence_, "'), pg_sleep(0.4)"));
        if (!r.status.ok()) flood_failures.fetch_add(1);
      });
    }
    // Every flood call is in the pool (running or queued) before the quiet
    // one starts.
    const bool queued = Eventually([&] {
      const v1::ClientOccupancy* f = ClientIn(Status(), "flooder");
      return f != nullptr && f->in_use() == kPoolSize && f->waiting() == kFloodCalls - kPoolSize;
    });
    EXPECT_TRUE(queued) << "the flood never filled the pool";
    const CallResult quiet = ExecuteAs("quiet", absl::StrCat("SELECT nextval('", sequence_, "')"));
    for (std::thread& t : flood) t.join();
    EXPECT_EQ(flood_failures.load(), 0);
    EXPECT_TRUE(quiet.status.ok()) << quiet.status.error_message();
    if (!quiet.status.ok()) return -1;
    return quiet.response.rows(0).values(0).int64_value();
  }

  std::string sequence_;
};

TEST_F(FairShareE2eTest, WithFairQueuingTheQuietClientIsNotQueuedBehindTheFlood) {
  const int64_t place = QuietPlaceUnderFlood(/*fair_queuing=*/true);
  // The statements running when it queued, then at most one turn of the
  // flooder (one request) before its own.
  EXPECT_GE(place, kPoolSize + 1);
  EXPECT_LE(place, kPoolSize + 2) << "the quiet call waited behind the flooder's queue";
}

TEST_F(FairShareE2eTest, WithFairQueuingOffTheQuietClientIsServedAfterTheWholeFlood) {
  const int64_t place = QuietPlaceUnderFlood(/*fair_queuing=*/false);
  // One FIFO: every flood call queued before it starts first.
  EXPECT_EQ(place, kFloodCalls + 1);
}

TEST_F(FairShareE2eTest, ConnectionQuotaRefusesBeyondItNamingTheQuotaAndTheClient) {
  StartBroker({{"DB_POOL_SIZE", "4"}, {"BROKER_CLIENT_MAX_CONNECTIONS", "1"}});
  std::thread holder([&] { ExecuteAs("greedy", "SELECT pg_sleep(3)"); });
  WaitForActiveStatements(1);
  const CallResult second = ExecuteAs("greedy", "SELECT 1");
  const CallResult other = ExecuteAs("other", "SELECT 1");
  const v1::PoolStatus status = Status();
  holder.join();

  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(second.status.error_message(), HasSubstr("client \"greedy\""));
  EXPECT_THAT(second.status.error_message(), HasSubstr("max_connections quota of 1"));
  EXPECT_THAT(second.status.error_message(), HasSubstr("BROKER_CLIENT_MAX_CONNECTIONS"));
  EXPECT_TRUE(other.status.ok()) << "another client has its own quota: "
                                 << other.status.error_message();
  const v1::ClientOccupancy* greedy = ClientIn(status, "greedy");
  ASSERT_NE(greedy, nullptr);
  EXPECT_EQ(greedy->max_connections(), 1);
  EXPECT_EQ(greedy->weight(), 1);
  EXPECT_EQ(greedy->quota_rejections(), 1);
  EXPECT_EQ(greedy->in_use(), 1);
}

TEST_F(FairShareE2eTest, StatementTimeoutCeilingCancelsTheStatementNamingTheQuota) {
  StartBroker({{"BROKER_CLIENT_STATEMENT_TIMEOUT_MAX", "0.5"}});
  const CallResult r = ExecuteAs("slow", "SELECT pg_sleep(30)", absl::Seconds(60));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(r.status.error_message(), HasSubstr("client \"slow\""));
  EXPECT_THAT(r.status.error_message(), HasSubstr("statement_timeout_max"));
  EXPECT_THAT(r.status.error_message(), HasSubstr("BROKER_CLIENT_STATEMENT_TIMEOUT_MAX"));
  // The connection was reused, not lost: the next call works.
  EXPECT_TRUE(ExecuteAs("slow", "SELECT 1").status.ok());
}

TEST_F(FairShareE2eTest, OneClientCannotTakeMoreThanItsShareOfAllSessions) {
  // 25% (the default BROKER_CLIENT_SESSION_SHARE_PERCENT) of 8: two each.
  StartBroker({{"BROKER_MAX_SESSIONS", "8"}, {"BROKER_MAX_SESSIONS_PER_CLIENT", "0"}});
  ASSERT_TRUE(BeginSession({}, "hog").status.ok());
  ASSERT_TRUE(BeginSession({}, "hog").status.ok());
  const RpcResult<v1::Session> third = BeginSession({}, "hog");
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(third.reason, "MAX_SESSIONS_PER_CLIENT");
  EXPECT_THAT(third.status.error_message(), HasSubstr("client \"hog\""));
  EXPECT_THAT(third.status.error_message(), HasSubstr("BROKER_CLIENT_SESSION_SHARE_PERCENT"));
  EXPECT_TRUE(BeginSession({}, "other").status.ok()) << "the rest stay for other clients";
}

}  // namespace
}  // namespace sessionbroker::testing
