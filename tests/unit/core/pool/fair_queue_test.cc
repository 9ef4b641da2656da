// Specification of ConnectionPool's fair shares (see the contract in
// server/core/pool/connection_pool.h and client_shares.h): weighted fair
// queuing across client ids (deficit round robin over per-client FIFO
// queues), reserved floors, and the per-client connection and waiter quotas.
//
// Deterministic like connection_pool_test.cc (a FakeClock, a ManualExecutor
// whose tasks run only in RunAll(), a TimerQueue fired by hand), except the
// race test at the end, which uses real threads and asserts invariants, never
// timings (it runs under ThreadSanitizer).
#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/client_shares.h"
#include "server/core/pool/connection_pool.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Quotas per client id, the rest get ClientQuota{}; the clients whose floor
// is held (as a clients file's entries with reserved_connections);
// changeable (RefreshQuotas).
class MapShares final : public ClientShares {
 public:
  void Set(const std::string& id, ClientQuota quota) {
    MutexLock lock(&mu_);
    quotas_[id] = quota;
  }
  void SetReserved(std::vector<std::string> ids) {
    MutexLock lock(&mu_);
    reserved_ = std::move(ids);
  }
  ClientQuota QuotaFor(absl::string_view id) const override {
    MutexLock lock(&mu_);
    auto it = quotas_.find(id);
    return it == quotas_.end() ? ClientQuota{} : it->second;
  }
  std::vector<std::string> ReservedClients() const override {
    MutexLock lock(&mu_);
    return reserved_;
  }

 private:
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, ClientQuota> quotas_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> reserved_ ABSL_GUARDED_BY(mu_);
};

ClientQuota Floor(int reserved_connections) {
  ClientQuota q;
  q.reserved_connections = reserved_connections;
  return q;
}

ClientQuota Weight(int weight) {
  ClientQuota q;
  q.weight = weight;
  return q;
}

class FairQueueTest : public ::testing::Test {
 protected:
  // One connection, so every request after the first queues.
  PoolOptions Options() {
    PoolOptions o;
    o.pool_size = 1;
    o.max_overflow = 0;
    o.recycle = absl::InfiniteDuration();
    o.pre_ping = false;
    o.max_waiters = 100;
    o.reconnect_backoff.initial = absl::ZeroDuration();
    o.shares = shares_;
    return o;
  }
  void MakePool(const PoolOptions& options) {
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
  }
  void TearDown() override {
    if (pool_ != nullptr) {
      pool_->Close();
      RunAll();
    }
    outcomes_.clear();
    RunAll();
    EXPECT_EQ(connector_.live(), 0) << "a connection leaked";
  }

  // Starts an Acquire for `client`; returns the request's number.
  int Acquire(const std::string& client, absl::Time deadline = absl::InfiniteFuture()) {
    const int i = static_cast<int>(outcomes_.size());
    outcomes_.emplace_back();
    AcquireRequest request;
    request.client_id = client;
    request.deadline = deadline;
    ids_.push_back(pool_->Acquire(request, [this, i](absl::StatusOr<PooledConnection> result) {
      if (result.ok()) served_order_.push_back(i);
      outcomes_[i] = std::move(result);
    }));
    return i;
  }
  void RunAll() {
    timers_.RunDue();
    executor_.RunAll();
  }
  bool Served(int i) const { return outcomes_[i].has_value() && outcomes_[i]->ok(); }
  bool Waiting(int i) const { return !outcomes_[i].has_value(); }
  absl::Status StatusOf(int i) const {
    return outcomes_[i].has_value() ? outcomes_[i]->status() : absl::InternalError("waiting");
  }
  // Gives back the connection request i holds and lets the next waiter have it.
  void Release(int i) {
    ASSERT_TRUE(Served(i)) << "request " << i << ": " << StatusOf(i);
    outcomes_[i]->value().Release();
    RunAll();
  }
  // Releases whoever holds the one connection, `n` times, following it.
  void PassAlong(int n) {
    for (int k = 0; k < n; ++k) Release(served_order_.back());
  }

  std::shared_ptr<MapShares> shares_ = std::make_shared<MapShares>();
  FakeClock clock_;
  FakeConnector connector_;
  ManualExecutor executor_;
  TimerQueue timers_{clock_};
  std::unique_ptr<ConnectionPool> pool_;
  std::deque<std::optional<absl::StatusOr<PooledConnection>>> outcomes_;
  std::vector<ConnectionPool::WaitId> ids_;
  std::vector<int> served_order_;
};

// ---- Deficit round robin ----

TEST_F(FairQueueTest, QuietClientIsServedBeforeTheFloodersEarlierWaiters) {
  MakePool(Options());
  const int held = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Served(held));
  std::vector<int> flood;
  for (int k = 0; k < 5; ++k) flood.push_back(Acquire("flooder"));
  const int quiet = Acquire("quiet");
  RunAll();

  PassAlong(2);
  // The flooder's turn (one request), then the quiet client's: not after the
  // flooder's whole queue.
  EXPECT_THAT(served_order_, ElementsAre(held, flood[0], quiet));
  PassAlong(5);
  EXPECT_THAT(served_order_,
              ElementsAre(held, flood[0], quiet, flood[1], flood[2], flood[3], flood[4]));
}

TEST_F(FairQueueTest, EachClientsRequestsAreServedInTheirOrderAndClientsTakeTurns) {
  MakePool(Options());
  const int held = Acquire("other");
  RunAll();
  const int a1 = Acquire("a");
  const int a2 = Acquire("a");
  const int a3 = Acquire("a");
  const int b1 = Acquire("b");
  const int b2 = Acquire("b");
  RunAll();
  PassAlong(5);
  EXPECT_THAT(served_order_, ElementsAre(held, a1, b1, a2, b2, a3));
}

TEST_F(FairQueueTest, WeightsGiveProportionalTurns) {
  shares_->Set("heavy", Weight(3));
  MakePool(Options());
  const int held = Acquire("other");
  RunAll();
  std::vector<int> heavy;
  std::vector<int> light;
  for (int k = 0; k < 6; ++k) heavy.push_back(Acquire("heavy"));
  for (int k = 0; k < 4; ++k) light.push_back(Acquire("light"));
  RunAll();
  PassAlong(10);
  EXPECT_THAT(served_order_, ElementsAre(held, heavy[0], heavy[1], heavy[2], light[0], heavy[3],
                                         heavy[4], heavy[5], light[1], light[2], light[3]));
}

TEST_F(FairQueueTest, AWeightBelowOneCountsAsOne) {
  shares_->Set("zero", Weight(0));
  MakePool(Options());
  const int held = Acquire("other");
  RunAll();
  const int z1 = Acquire("zero");
  const int o1 = Acquire("one");
  const int z2 = Acquire("zero");
  RunAll();
  PassAlong(3);
  EXPECT_THAT(served_order_, ElementsAre(held, z1, o1, z2));
}

TEST_F(FairQueueTest, WithFairQueuingOffEveryoneIsServedInOneFifo) {
  PoolOptions o = Options();
  o.fair_queuing = false;
  MakePool(o);
  const int held = Acquire("flooder");
  RunAll();
  std::vector<int> flood;
  for (int k = 0; k < 3; ++k) flood.push_back(Acquire("flooder"));
  const int quiet = Acquire("quiet");
  RunAll();
  PassAlong(4);
  EXPECT_THAT(served_order_, ElementsAre(held, flood[0], flood[1], flood[2], quiet));
}

TEST_F(FairQueueTest, ClientBelowItsReservedFloorIsServedFirst) {
  ClientQuota reserved;
  reserved.reserved_connections = 1;
  shares_->Set("critical", reserved);
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int h1 = Acquire("flooder");
  const int h2 = Acquire("flooder");
  RunAll();
  const int f1 = Acquire("flooder");
  const int other = Acquire("other");
  const int c1 = Acquire("critical");
  const int c2 = Acquire("critical");
  RunAll();
  // critical holds nothing, below its floor of 1: first, although it queued
  // last.
  Release(h1);
  EXPECT_THAT(served_order_, ElementsAre(h1, h2, c1));
  // Holding one, it is at its floor and takes its turn like everyone else
  // (after the flooder and "other", who were in the ring before it).
  Release(h2);
  Release(f1);
  Release(other);
  EXPECT_THAT(served_order_, ElementsAre(h1, h2, c1, f1, other, c2));
}

TEST_F(FairQueueTest, AFloorGivenByRefreshQuotasTakesEffect) {
  MakePool(Options());
  const int held = Acquire("flooder");
  RunAll();
  const int f1 = Acquire("flooder");
  const int c1 = Acquire("critical");
  RunAll();
  ClientQuota reserved;
  reserved.reserved_connections = 1;
  shares_->Set("critical", reserved);
  shares_->Set("flooder", Weight(5));
  pool_->RefreshQuotas();
  // Without the floor the flooder's turn (weight 5) would come first.
  PassAlong(2);
  EXPECT_THAT(served_order_, ElementsAre(held, c1, f1));
}

TEST_F(FairQueueTest, ExpiredAndCancelledWaitersLeaveTheirClientsQueue) {
  MakePool(Options());
  const int held = Acquire("other");
  RunAll();
  const absl::Time soon = clock_.Now() + absl::Seconds(1);
  const int a1 = Acquire("a", soon);
  const int a2 = Acquire("a");
  const int b1 = Acquire("b");
  const int b2 = Acquire("b");
  RunAll();
  pool_->CancelWait(ids_[b1]);
  clock_.Advance(absl::Seconds(2));
  RunAll();
  EXPECT_EQ(StatusOf(a1).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusOf(b1).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(pool_->Stats().waiters, 2);
  PassAlong(2);
  EXPECT_THAT(served_order_, ElementsAre(held, a2, b2));
  EXPECT_EQ(pool_->Stats().waiters, 0);
}

TEST_F(FairQueueTest, CloseFailsEveryClientsWaiters) {
  MakePool(Options());
  const int held = Acquire("other");
  RunAll();
  const int a = Acquire("a");
  const int b = Acquire("b");
  RunAll();
  pool_->Close();
  RunAll();
  EXPECT_EQ(StatusOf(a).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusOf(b).code(), absl::StatusCode::kUnavailable);
  Release(held);
}

// ---- Reserved floors held back (ClientShares::ReservedClients) ----

TEST_F(FairQueueTest, ReservedFloorIsHeldFromOtherClientsSoTheReservedClientIsServedAtOnce) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  const int f2 = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Served(f1));
  EXPECT_TRUE(Waiting(f2)) << "the second connection is critical's floor";
  EXPECT_EQ(connector_.live(), 1) << "held back as room to open it, not opened";

  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c1)) << "no flood connection had to come back first";
  EXPECT_TRUE(Waiting(f2));
  Release(f1);
  EXPECT_TRUE(Served(f2)) << "critical holds its floor: the rest is everyone's";
  Release(c1);
  Release(f2);
}

TEST_F(FairQueueTest, AFloorOnlyInTheQuotaOrdersTheQueueButHoldsNothing) {
  // The same quota, but critical is not among ReservedClients (as with the
  // BROKER_CLIENT_RESERVED_CONNECTIONS default): the flood takes the pool and
  // critical waits for a flood connection to come back.
  shares_->Set("critical", Floor(1));
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  const int f2 = Acquire("flooder");
  const int f3 = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Served(f1));
  ASSERT_TRUE(Served(f2));
  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Waiting(c1));
  Release(f1);
  EXPECT_TRUE(Served(c1)) << "first in line (below its floor), but only once one came back";
  EXPECT_TRUE(Waiting(f3));
  Release(f2);
  Release(c1);
  Release(f3);
}

TEST_F(FairQueueTest, AConnectionReturnedByTheReservedClientIsKeptForItsFloor) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int c1 = Acquire("critical");
  const int f1 = Acquire("flooder");
  RunAll();
  const int f2 = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Served(c1));
  ASSERT_TRUE(Served(f1));
  ASSERT_TRUE(Waiting(f2));
  Release(c1);
  EXPECT_TRUE(Waiting(f2)) << "critical is below its floor again: its connection stays idle";
  EXPECT_EQ(pool_->Stats().idle, 1);
  const int c2 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c2));
  Release(f1);
  EXPECT_TRUE(Served(f2));
  Release(c2);
  Release(f2);
}

TEST_F(FairQueueTest, AReservedClientAtItsFloorLeavesOtherFloorsAlone) {
  shares_->Set("a", Floor(1));
  shares_->Set("b", Floor(1));
  shares_->SetReserved({"a", "b"});
  PoolOptions o = Options();
  o.pool_size = 3;
  MakePool(o);
  const int a1 = Acquire("a");
  RunAll();
  const int a2 = Acquire("a");  // 2 available, b's floor holds 1
  RunAll();
  const int a3 = Acquire("a");  // 1 available: b's
  RunAll();
  EXPECT_TRUE(Served(a1));
  EXPECT_TRUE(Served(a2));
  EXPECT_TRUE(Waiting(a3));
  const int b1 = Acquire("b");
  RunAll();
  EXPECT_TRUE(Served(b1));
  Release(a1);
  EXPECT_TRUE(Served(a3)) << "a holds one: its floor is met, the returned one is anyone's";
  Release(a2);
  Release(a3);
  Release(b1);
}

TEST_F(FairQueueTest, ReservedClientsBelowTheirFloorsAreServedOldestFirstAheadOfEveryone) {
  shares_->Set("a", Floor(1));
  shares_->Set("b", Floor(1));
  shares_->SetReserved({"a", "b"});
  PoolOptions o = Options();
  o.pool_size = 3;
  MakePool(o);
  const int a1 = Acquire("a");
  const int b1 = Acquire("b");
  const int f1 = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Served(a1) && Served(b1) && Served(f1));
  const int f2 = Acquire("flooder");
  const int a2 = Acquire("a");  // at its floor: waits like the flooder
  RunAll();
  Release(a1);  // a below its floor: the connection is held for it
  EXPECT_TRUE(Waiting(f2));
  EXPECT_TRUE(Served(a2)) << "its queued request takes its floor back at once";
  Release(b1);
  EXPECT_TRUE(Waiting(f2)) << "b's floor";
  Release(a2);
  Release(f1);
  EXPECT_TRUE(Served(f2));
  Release(f2);
}

TEST_F(FairQueueTest, WithFairQueuingOffAReservedClientBelowItsFloorStillSkipsTheFifo) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  o.fair_queuing = false;
  MakePool(o);
  const int f1 = Acquire("flooder");
  RunAll();
  const int f2 = Acquire("flooder");
  const int f3 = Acquire("flooder");
  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c1));
  EXPECT_TRUE(Waiting(f2));
  Release(f1);
  Release(served_order_.back());
  EXPECT_THAT(served_order_, ElementsAre(f1, c1, f2, f3));
  Release(c1);
  Release(f3);
}

TEST_F(FairQueueTest, OverflowRoomCountsTowardTheFloorAndTheBoundHolds) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 1;
  o.max_overflow = 1;
  MakePool(o);
  const int f1 = Acquire("flooder");
  const int f2 = Acquire("flooder");
  RunAll();
  EXPECT_TRUE(Served(f1));
  EXPECT_TRUE(Waiting(f2));
  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c1)) << "served from the overflow slot";
  EXPECT_EQ(pool_->Stats().overflow_in_use, 1);
  EXPECT_LE(connector_.max_live(), 2);
  Release(c1);
  EXPECT_TRUE(Waiting(f2));
  Release(f1);
  Release(f2);
}

TEST_F(FairQueueTest, OverReservedFloorsNeverHoldBackTheLastConnection) {
  shares_->Set("a", Floor(2));
  shares_->Set("b", Floor(2));
  shares_->SetReserved({"a", "b"});
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  RunAll();
  EXPECT_TRUE(Served(f1)) << "floors of 4 in a pool of 2 hold back at most 1";
  const int f2 = Acquire("flooder");
  const int a1 = Acquire("a");
  RunAll();
  EXPECT_TRUE(Waiting(f2));
  EXPECT_TRUE(Served(a1)) << "below its floor: takes the one held back";
  Release(f1);
  EXPECT_TRUE(Waiting(f2)) << "b's floor holds the returned one";
  const int b1 = Acquire("b");
  RunAll();
  EXPECT_TRUE(Served(b1));
  Release(a1);
  Release(b1);
  EXPECT_TRUE(Served(f2)) << "nothing deadlocks: it is served once there is more than is held";
  Release(f2);
}

TEST_F(FairQueueTest, ARequestThatMayNotWaitIsRefusedRatherThanTakeAFloor) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  RunAll();
  std::optional<absl::Status> probe;
  AcquireRequest request;
  request.client_id = "health";
  request.wait = false;
  pool_->Acquire(request,
                 [&probe](absl::StatusOr<PooledConnection> result) { probe = result.status(); });
  RunAll();
  ASSERT_TRUE(probe.has_value());
  EXPECT_EQ(probe->code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(probe->message(), HasSubstr("held for clients' reserved_connections"));
  Release(f1);
}

TEST_F(FairQueueTest, AWaiterHeldBackByAFloorTimesOutWithTheUsualError) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  o.timeout = absl::Seconds(1);
  MakePool(o);
  const int f1 = Acquire("flooder");
  const int f2 = Acquire("flooder");
  RunAll();
  clock_.Advance(absl::Seconds(2));
  RunAll();
  EXPECT_EQ(StatusOf(f2).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(StatusOf(f2).message(), HasSubstr("DB_POOL_TIMEOUT"));
  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c1));
  Release(f1);
  Release(c1);
}

TEST_F(FairQueueTest, RefreshQuotasDroppingAReservationServesTheWaitersItHeldBack) {
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  const int f2 = Acquire("flooder");
  RunAll();
  ASSERT_TRUE(Waiting(f2));
  shares_->SetReserved({});
  pool_->RefreshQuotas();
  RunAll();
  EXPECT_TRUE(Served(f2));
  Release(f1);
  Release(f2);
}

TEST_F(FairQueueTest, AReservationGivenByRefreshQuotasHoldsForTheNextRequests) {
  PoolOptions o = Options();
  o.pool_size = 2;
  MakePool(o);
  const int f1 = Acquire("flooder");
  RunAll();
  shares_->Set("critical", Floor(1));
  shares_->SetReserved({"critical"});
  pool_->RefreshQuotas();
  const int f2 = Acquire("flooder");
  RunAll();
  EXPECT_TRUE(Waiting(f2));
  const int c1 = Acquire("critical");
  RunAll();
  EXPECT_TRUE(Served(c1));
  Release(f1);
  Release(c1);
  Release(f2);
}

// ---- Quotas ----

TEST_F(FairQueueTest, ConnectionQuotaCountsConnectionsInUseAndQueuedCalls) {
  ClientQuota capped;
  capped.max_connections = 2;
  shares_->Set("capped", capped);
  MakePool(Options());
  const int c1 = Acquire("capped");
  RunAll();
  const int c2 = Acquire("capped");  // queues: 1 in use + 1 queued = 2
  const int c3 = Acquire("capped");  // beyond
  const int other = Acquire("other");
  RunAll();
  ASSERT_TRUE(Served(c1));
  EXPECT_TRUE(Waiting(c2));
  EXPECT_TRUE(Waiting(other)) << "other clients are not affected";
  EXPECT_EQ(StatusOf(c3).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(StatusOf(c3).message(), HasSubstr("client \"capped\""));
  EXPECT_THAT(StatusOf(c3).message(), HasSubstr("max_connections quota of 2"));
  EXPECT_THAT(StatusOf(c3).message(), HasSubstr("BROKER_CLIENT_MAX_CONNECTIONS"));

  const PoolStats s = pool_->Stats();
  EXPECT_EQ(s.clients.at("capped").rejections, 1);
  EXPECT_EQ(s.clients.at("capped").quota.max_connections, 2);
  EXPECT_EQ(s.clients.at("capped").in_use, 1);
  EXPECT_EQ(s.clients.at("capped").waiting, 1);

  PassAlong(2);  // c2, then other
  ASSERT_TRUE(Served(other));
  const int c4 = Acquire("capped");  // 1 in use + 0 queued: room again
  RunAll();
  EXPECT_TRUE(Waiting(c4));
}

TEST_F(FairQueueTest, ConnectionQuotaHoldsOnTheFastPathToo) {
  ClientQuota capped;
  capped.max_connections = 1;
  shares_->Set("capped", capped);
  PoolOptions o = Options();
  o.pool_size = 3;
  MakePool(o);
  const int c1 = Acquire("capped");
  RunAll();
  const int c2 = Acquire("capped");
  RunAll();
  ASSERT_TRUE(Served(c1));
  EXPECT_EQ(StatusOf(c2).code(), absl::StatusCode::kResourceExhausted)
      << "connections are free, but not for this client";
  Release(c1);
  const int c3 = Acquire("capped");
  RunAll();
  EXPECT_TRUE(Served(c3)) << "its connection came back: room again";
}

TEST_F(FairQueueTest, WaiterQuotaRefusesBeyondItNamingTheQuotaAndTheClient) {
  ClientQuota capped;
  capped.max_waiters = 1;
  shares_->Set("", capped);
  MakePool(Options());
  const int held = Acquire("");
  RunAll();
  const int w1 = Acquire("");
  const int w2 = Acquire("");
  const int other = Acquire("other");
  RunAll();
  EXPECT_TRUE(Waiting(w1));
  EXPECT_TRUE(Waiting(other));
  EXPECT_EQ(StatusOf(w2).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(StatusOf(w2).message(), HasSubstr("max_waiters quota of 1"));
  EXPECT_THAT(StatusOf(w2).message(), HasSubstr("BROKER_CLIENT_MAX_WAITERS"));
  EXPECT_THAT(StatusOf(w2).message(), HasSubstr("the client without an id"));
  const PoolStats s = pool_->Stats();
  EXPECT_EQ(s.clients.at("").rejections, 1);
  EXPECT_EQ(s.waiter_rejections, 1);
  Release(held);
}

TEST_F(FairQueueTest, RefreshQuotasAppliesChangedCapsToTheNextRequests) {
  MakePool(Options());
  const int a1 = Acquire("a");
  RunAll();
  ASSERT_TRUE(Served(a1));
  ClientQuota capped;
  capped.max_connections = 1;
  shares_->Set("a", capped);
  const int a2 = Acquire("a");
  RunAll();
  EXPECT_TRUE(Waiting(a2)) << "the cached quota holds until a refresh";
  pool_->RefreshQuotas();
  const int a3 = Acquire("a");
  RunAll();
  EXPECT_EQ(StatusOf(a3).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool_->Stats().clients.at("a").quota.max_connections, 1);
}

// ---- Races ----

// A reserved client with one caller among flooders that overrun their waiter
// quota on a small pool, from real threads: its floor is always there for
// it, so every one of its requests is served (none refused, none timed out),
// while the flood's extra requests are refused; the bound holds.
TEST(FairQueueConcurrencyTest, AReservedClientIsAlwaysServedWhileAFloodIsRefused) {
  spdlog::level::level_enum previous = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);
  constexpr int kFlooders = 6;
  constexpr int kRequests = 300;
  auto shares = std::make_shared<MapShares>();
  ClientQuota floor;
  floor.reserved_connections = 1;
  shares->Set("critical", floor);
  shares->SetReserved({"critical"});
  ClientQuota flood;
  flood.max_waiters = 2;
  shares->Set("flooder", flood);
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 1;
  o.timeout = absl::Seconds(60);
  o.recycle = absl::InfiniteDuration();
  o.shares = shares;

  FakeConnector connector;
  ThreadPoolExecutor executor(4, "floor-test");
  TimerQueue timers(RealClock::Get());
  timers.Start();
  ConnectionPool pool(o, connector, executor, timers, RealClock::Get());

  struct Tally {
    std::atomic<int> served{0};
    std::atomic<int> refused{0};
    std::atomic<int> other{0};
  };
  Tally critical;
  Tally flooders;
  auto run = [&pool](const std::string& client, Tally& tally) {
    for (int r = 0; r < kRequests; ++r) {
      std::atomic<bool> done{false};
      AcquireRequest request;
      request.client_id = client;
      pool.Acquire(request, [&](absl::StatusOr<PooledConnection> conn) {
        if (conn.ok()) {
          std::this_thread::yield();
          conn->Release();
          tally.served.fetch_add(1);
        } else if (conn.status().code() == absl::StatusCode::kResourceExhausted) {
          tally.refused.fetch_add(1);
        } else {
          tally.other.fetch_add(1);
        }
        done.store(true);
      });
      while (!done.load()) std::this_thread::yield();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kFlooders; ++t) threads.emplace_back(run, "flooder", std::ref(flooders));
  threads.emplace_back(run, "critical", std::ref(critical));
  for (std::thread& t : threads) t.join();
  executor.Shutdown();
  timers.Stop();

  EXPECT_EQ(critical.served.load(), kRequests);
  EXPECT_EQ(critical.refused.load() + critical.other.load(), 0);
  EXPECT_EQ(flooders.served.load() + flooders.refused.load(), kFlooders * kRequests);
  EXPECT_EQ(flooders.other.load(), 0);
  EXPECT_EQ(pool.Stats().waiters, 0);
  EXPECT_LE(connector.max_live(), o.max_connections());
  pool.Close();
  spdlog::set_level(previous);
}

// Several clients with different weights, floors and quotas hammer a small
// pool from real threads: every callback runs once, no client ever holds more
// than its max_connections, and the pool's bound holds.
TEST(FairQueueConcurrencyTest, ClientsWithSharesAreEachServedOnceWithinTheirQuotas) {
  spdlog::level::level_enum previous = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);
  constexpr int kClients = 6;
  constexpr int kThreadsPerClient = 2;
  constexpr int kRequests = 150;
  auto shares = std::make_shared<MapShares>();
  for (int c = 0; c < kClients; ++c) {
    ClientQuota q;
    q.weight = 1 + c % 3;
    q.reserved_connections = c == 0 ? 1 : 0;
    q.max_connections = c % 2 == 0 ? 2 : 0;
    q.max_waiters = c == 3 ? 1 : 0;
    shares->Set(absl::StrCat("client-", c), q);
  }
  shares->SetReserved({"client-0"});
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 1;
  o.timeout = absl::Seconds(20);
  o.max_waiters = 1000;
  o.recycle = absl::InfiniteDuration();
  o.shares = shares;

  FakeConnector connector;
  ThreadPoolExecutor executor(4, "fair-test");
  TimerQueue timers(RealClock::Get());
  timers.Start();
  ConnectionPool pool(o, connector, executor, timers, RealClock::Get());

  std::vector<std::atomic<int>> holding(kClients);
  std::vector<std::atomic<int>> most_held(kClients);
  std::atomic<int> served{0};
  std::atomic<int> refused{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients * kThreadsPerClient; ++t) {
    const int c = t % kClients;
    threads.emplace_back([&, c] {
      for (int r = 0; r < kRequests; ++r) {
        std::atomic<int> calls{0};
        std::atomic<bool> done{false};
        AcquireRequest request;
        request.client_id = absl::StrCat("client-", c);
        const ConnectionPool::WaitId id =
            pool.Acquire(request, [&](absl::StatusOr<PooledConnection> conn) {
              calls.fetch_add(1);
              if (conn.ok()) {
                const int now = holding[c].fetch_add(1) + 1;
                int seen = most_held[c].load();
                while (now > seen && !most_held[c].compare_exchange_weak(seen, now)) {
                }
                holding[c].fetch_sub(1);
                conn->Release();
                served.fetch_add(1);
              } else if (conn.status().code() == absl::StatusCode::kResourceExhausted ||
                         conn.status().code() == absl::StatusCode::kCancelled) {
                refused.fetch_add(1);
              } else {
                unexpected.fetch_add(1);
              }
              done.store(true);
            });
        if (r % 7 == 3) pool.CancelWait(id);
        while (!done.load()) std::this_thread::yield();
        EXPECT_EQ(calls.load(), 1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  executor.Shutdown();
  timers.Stop();

  EXPECT_EQ(served.load() + refused.load(), kClients * kThreadsPerClient * kRequests);
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(served.load(), 0);
  for (int c = 0; c < kClients; c += 2) {
    EXPECT_LE(most_held[c].load(), 2) << "client-" << c << " beyond its max_connections";
  }
  const PoolStats s = pool.Stats();
  EXPECT_EQ(s.waiters, 0);
  EXPECT_LE(connector.max_live(), o.max_connections());
  pool.Close();
  spdlog::set_level(previous);
}

}  // namespace
}  // namespace sessionbroker::core
