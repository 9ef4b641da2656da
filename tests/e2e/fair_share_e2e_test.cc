// End-to-end: fair shares of the pool (docs/security.md, "Fair shares and
// quotas") with the session-broker binary and a real PostgreSQL. One client
// floods a small pool with slow statements while another runs a short one;
// per-client quotas answer RESOURCE_EXHAUSTED naming the quota and the client.
// A reserved floor (a clients-file entry's reserved_connections) keeps a
// connection free of the flood: the quiet client is served while every flood
// statement is still blocked, and without the reservation it is not.
//
// The order in which PostgreSQL starts statements is read from a sequence:
// each statement takes nextval() as it starts, so the quiet client's value
// says how many statements were served before it. No assertion depends on
// how long anything takes (the p99 comparison is a benchmark,
// tests/bench/fairness_bench.sh). The reservation tests block the flood on an
// advisory lock the test holds, so "served while the flood still runs" is an
// outcome, not a race.
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
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
// The advisory lock the test holds while the flood waits for it.
constexpr int64_t kFloodLock = 7340013;

// Per-process tokens, so nothing here could work against another broker.
std::string TokenFor(const std::string& who) {
  return absl::StrCat(who, "-token-", getpid(), "-3c9e1a7f5d");
}

// What `session-broker hash-token` prints for `token`.
std::string HashOf(const std::string& token) {
  std::string out;
  const int rc = RunCommand(
      absl::StrCat("printf '%s\\n' '", token, "' | ", SB_BROKER_BINARY, " hash-token"), &out);
  EXPECT_EQ(rc, 0) << out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_TRUE(absl::StartsWith(out, "$argon2id$")) << out;
  return out;
}

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
    if (!clients_file_.empty()) std::remove(clients_file_.c_str());
  }

  // Starts a broker of kPoolSize connections with a clients file for
  // "flooder", "quiet" (`quiet_extra`: more of its entry) and "watcher" (who
  // reads the pool's status).
  void StartWithClients(const std::string& quiet_extra) {
    clients_file_ = absl::StrCat("/tmp/sb-fair-share-", getpid(), "-clients.yaml");
    std::ofstream(clients_file_) << "clients:\n"
                                 << "  - id: flooder\n    token_hashes: [\""
                                 << HashOf(TokenFor("flooder")) << "\"]\n"
                                 << "  - id: quiet\n    token_hashes: [\""
                                 << HashOf(TokenFor("quiet")) << "\"]\n"
                                 << quiet_extra << "  - id: watcher\n    token_hashes: [\""
                                 << HashOf(TokenFor("watcher")) << "\"]\n    roles: [monitor]\n";
    StartBroker({{"DB_POOL_SIZE", absl::StrCat(kPoolSize)},
                 {"DB_MAX_OVERFLOW", "0"},
                 {"DB_POOL_TIMEOUT", "120"},
                 {"BROKER_CLIENTS_FILE", clients_file_}});
  }

  CallResult ExecuteWithToken(const std::string& client, const std::string& sql,
                              absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    context.AddMetadata("authorization", absl::StrCat("Bearer ", TokenFor(client)));
    v1::ExecuteRequest request;
    request.set_sql(sql);
    CallResult r;
    r.status = stub_->Execute(&context, request, &r.response);
    return r;
  }

  v1::PoolStatus AuthorizedStatus() {
    auto monitor = v1::PoolMonitor::NewStub(broker_->channel());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    context.AddMetadata("authorization", absl::StrCat("Bearer ", TokenFor("watcher")));
    v1::PoolStatus status;
    const grpc::Status s = monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  // With the test holding kFloodLock, starts kFloodCalls flood statements
  // that wait for it (none can finish until ReleaseFlood) and waits until
  // `running` of them hold a connection and the rest are queued.
  void StartBlockedFlood(int running) {
    // Each token verified once first: the flood's calls then find it cached
    // instead of all running argon2 at once on the broker's gRPC threads.
    for (const char* who : {"flooder", "quiet"}) {
      EXPECT_TRUE(ExecuteWithToken(who, "SELECT 1").status.ok());
    }
    AuthorizedStatus();
    Admin(absl::StrCat("SELECT pg_advisory_lock(", kFloodLock, ")"));
    for (int k = 0; k < kFloodCalls; ++k) {
      flood_.emplace_back([this] {
        const CallResult r = ExecuteWithToken(
            "flooder", absl::StrCat("SELECT pg_advisory_xact_lock_shared(", kFloodLock, ")"));
        if (r.status.ok()) {
          flood_finished_.fetch_add(1);
        } else {
          flood_failures_.fetch_add(1);
        }
      });
    }
    const bool queued = Eventually([&] {
      const v1::ClientOccupancy* f = ClientIn(AuthorizedStatus(), "flooder");
      return f != nullptr && f->in_use() == running && f->waiting() == kFloodCalls - running;
    });
    EXPECT_TRUE(queued) << "the flood never took its place in the pool";
  }
  void ReleaseFlood() {
    Admin(absl::StrCat("SELECT pg_advisory_unlock(", kFloodLock, ")"));
    for (std::thread& t : flood_) t.join();
    flood_.clear();
    EXPECT_EQ(flood_failures_.load(), 0);
    EXPECT_EQ(flood_finished_.load(), kFloodCalls);
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
  std::string clients_file_;
  std::vector<std::thread> flood_;
  std::atomic<int> flood_finished_{0};
  std::atomic<int> flood_failures_{0};
};

TEST_F(FairShareE2eTest, AReservedConnectionServesTheQuietClientWhileTheFloodHoldsTheRest) {
  StartWithClients("    reserved_connections: 1\n");
  // The reservation leaves the flood one of the two connections.
  StartBlockedFlood(/*running=*/kPoolSize - 1);
  const CallResult quiet = ExecuteWithToken("quiet", "SELECT 1");
  EXPECT_TRUE(quiet.status.ok()) << quiet.status.error_message();
  EXPECT_EQ(flood_finished_.load(), 0) << "served without a flood statement finishing";
  // The flood still holds its one connection and waits for the other.
  const v1::ClientOccupancy* f = ClientIn(AuthorizedStatus(), "flooder");
  EXPECT_TRUE(f != nullptr && f->in_use() == kPoolSize - 1 &&
              f->waiting() == kFloodCalls - (kPoolSize - 1));
  // Again and again: the connection it gave back stays held for it.
  for (int k = 0; k < 5; ++k) {
    EXPECT_TRUE(ExecuteWithToken("quiet", "SELECT 1").status.ok());
  }
  EXPECT_EQ(flood_finished_.load(), 0);
  ReleaseFlood();
}

TEST_F(FairShareE2eTest, WithoutAReservationTheQuietClientWaitsForTheFlood) {
  StartWithClients("");
  StartBlockedFlood(/*running=*/kPoolSize);
  // No flood statement can finish: with every connection the flood's, the
  // quiet call waits until its own deadline.
  const CallResult quiet = ExecuteWithToken("quiet", "SELECT 1", absl::Seconds(2));
  EXPECT_EQ(quiet.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << quiet.status.error_message();
  EXPECT_EQ(flood_finished_.load(), 0);
  ReleaseFlood();
  EXPECT_TRUE(ExecuteWithToken("quiet", "SELECT 1").status.ok());
}

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
  // The quota counts pooled connections: with the pipelined engine on, these
  // relation-free statements would hold none (docs/security.md).
  StartBroker({{"DB_POOL_SIZE", "4"},
               {"BROKER_CLIENT_MAX_CONNECTIONS", "1"},
               {"BROKER_PIPELINE_CONNECTIONS", "0"}});
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
