// Specification of ConnectionPool (see the contract in
// server/core/pool/connection_pool.h).
//
// Almost every test is deterministic: a FakeClock that moves only when told, a
// ManualExecutor whose tasks (the pool's connects, checks and callbacks) run
// only in RunAll(), and a TimerQueue whose due timers (the waiters' deadlines)
// fire only in RunAll(). ConnectionPoolCloseOrderTest acts from inside a
// connection's destructor to pin down what another thread could see while the
// pool closes one. The concurrency tests at the end use real threads and a real
// clock (and run under ThreadSanitizer); they assert invariants, never timings.
#include "server/core/pool/connection_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/health_checker.h"
#include "server/storage/db_connection.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnection;
using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::HasSubstr;

class ConnectionPoolTest : public ::testing::Test {
 protected:
  // What each test starts from; tests set the knobs they specify. Recycling,
  // pre-ping and reconnect backoff are off so that they only show up in the
  // tests about them.
  static PoolOptions Options() {
    PoolOptions o;
    o.pool_size = 2;
    o.max_overflow = 1;
    o.timeout = absl::Seconds(30);
    o.recycle = absl::InfiniteDuration();
    o.recycle_jitter = 0;
    o.pre_ping = false;
    o.max_waiters = 100;
    o.reconnect_backoff.initial = absl::ZeroDuration();
    return o;
  }

  // Reconnect backoff on, without jitter: 100 ms, doubling, at most 1 s.
  static PoolOptions WithBackoff(PoolOptions o) {
    o.reconnect_backoff.initial = absl::Milliseconds(100);
    o.reconnect_backoff.max = absl::Seconds(1);
    o.reconnect_backoff.multiplier = 2;
    o.reconnect_backoff.jitter = 0;
    return o;
  }

  // One connection and no overflow: the second caller must wait.
  static PoolOptions SingleConnection() {
    PoolOptions o = Options();
    o.pool_size = 1;
    o.max_overflow = 0;
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
    outcomes_.clear();  // gives back every connection still held
    RunAll();
    // After Close() and with every handle returned, nothing may stay open.
    EXPECT_EQ(connector_.live(), 0) << "a connection leaked";
  }

  // Starts an Acquire and returns the request's number. Its outcome shows up
  // once the executor runs (RunAll()).
  int Acquire(absl::Time deadline = absl::InfiniteFuture(), const std::string& client = "") {
    const int i = static_cast<int>(outcomes_.size());
    outcomes_.emplace_back();
    calls_.push_back(0);
    AcquireRequest request;
    request.deadline = deadline;
    request.client_id = client;
    wait_ids_.push_back(pool_->Acquire(request, [this, i](absl::StatusOr<PooledConnection> result) {
      EXPECT_EQ(++calls_[i], 1) << "request " << i << ": callback ran more than once";
      outcomes_[i] = std::move(result);
    }));
    return i;
  }
  ConnectionPool::WaitId WaitIdOf(int i) const { return wait_ids_[i]; }

  // Runs due timers, then everything posted to the executor.
  void RunAll() {
    timers_.RunDue();
    executor_.RunAll();
  }
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    RunAll();
  }

  bool Waiting(int i) const { return !outcomes_[i].has_value(); }
  bool Served(int i) const { return outcomes_[i].has_value() && outcomes_[i]->ok(); }
  absl::Status StatusOf(int i) const {
    return outcomes_[i].has_value() ? outcomes_[i]->status() : absl::InternalError("still waiting");
  }
  std::string MessageOf(int i) const { return std::string(StatusOf(i).message()); }
  // Request i's connection; the test must have checked Served(i) (else the
  // test fails here rather than crash).
  PooledConnection& Handle(int i) {
    if (!Served(i)) {
      ADD_FAILURE() << "request " << i << " has no connection: " << StatusOf(i);
      static PooledConnection none;
      return none;
    }
    return outcomes_[i]->value();
  }
  FakeConnection* Conn(int i) { return static_cast<FakeConnection*>(Handle(i).get()); }
  // The FakeConnector's id of the connection request i got (1 = first opened),
  // or -1 if it got none.
  int ConnId(int i) {
    FakeConnection* conn = Conn(i);
    return conn != nullptr ? conn->id() : -1;
  }
  void Release(int i) { Handle(i).Release(); }

  // Acquires n connections and serves them.
  std::vector<int> AcquireServed(int n) {
    std::vector<int> requests;
    for (int k = 0; k < n; ++k) requests.push_back(Acquire());
    RunAll();
    for (int r : requests) EXPECT_TRUE(Served(r)) << "request " << r << ": " << StatusOf(r);
    return requests;
  }

  PoolStats Stats() const { return pool_->Stats(); }

  FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  FakeConnector connector_;
  ManualExecutor executor_;
  TimerQueue timers_{clock_};
  std::unique_ptr<ConnectionPool> pool_;
  // Declared after pool_: destroyed first, so every handle is given back to a
  // live pool.
  std::deque<std::optional<absl::StatusOr<PooledConnection>>> outcomes_;
  std::deque<int> calls_;
  std::vector<ConnectionPool::WaitId> wait_ids_;
};

// ---- Opening and reuse ----

TEST_F(ConnectionPoolTest, FirstAcquireOpensAConnectionOnTheExecutor) {
  MakePool(Options());
  const int a = Acquire();

  EXPECT_NE(WaitIdOf(a), 0u) << "accepted: cancellable should it ever have to queue";
  EXPECT_TRUE(Waiting(a)) << "Acquire never runs the callback inline";
  EXPECT_EQ(connector_.connects(), 0) << "connecting is blocking work for the executor";

  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  EXPECT_NE(Handle(a).get(), nullptr);
  EXPECT_EQ(connector_.connects(), 1);
  EXPECT_EQ(connector_.live(), 1);
  const PoolStats s = Stats();
  EXPECT_EQ(s.open, 1);
  EXPECT_EQ(s.in_use, 1);
  EXPECT_EQ(s.idle, 0);
  EXPECT_EQ(s.connects, 1);
  EXPECT_EQ(s.checkouts, 1);
}

TEST_F(ConnectionPoolTest, ReturnedConnectionIsReusedWithoutConnecting) {
  MakePool(Options());
  const int a = Acquire();
  RunAll();
  const int first = ConnId(a);
  Release(a);
  EXPECT_EQ(Stats().idle, 1);
  EXPECT_EQ(Stats().in_use, 0);

  const int b = Acquire();
  EXPECT_GT(WaitIdOf(b), WaitIdOf(a)) << "ids grow with each accepted request";
  RunAll();
  ASSERT_TRUE(Served(b));
  EXPECT_EQ(ConnId(b), first);
  EXPECT_EQ(connector_.connects(), 1);
  EXPECT_EQ(Stats().checkouts, 2);
}

TEST_F(ConnectionPoolTest, DroppingTheHandleReturnsTheConnection) {
  MakePool(Options());
  const int a = Acquire();
  RunAll();
  outcomes_[a].reset();  // the PooledConnection's destructor gives it back

  const PoolStats s = Stats();
  EXPECT_EQ(s.idle, 1);
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(connector_.live(), 1);
}

TEST_F(ConnectionPoolTest, IdleConnectionsAreReusedMostRecentlyReturnedFirst) {
  MakePool(Options());
  const std::vector<int> held = AcquireServed(2);
  const int first_opened = ConnId(held[0]);
  const int second_opened = ConnId(held[1]);
  Release(held[1]);
  Release(held[0]);  // returned last: the warmest

  const int next = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(next), first_opened);
  const int after = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(after), second_opened);
  EXPECT_EQ(connector_.connects(), 2);
}

// ---- The bound ----

TEST_F(ConnectionPoolTest, AtMostPoolSizePlusMaxOverflowConnectionsExist) {
  PoolOptions o = Options();
  o.pool_size = 2;
  o.max_overflow = 1;
  MakePool(o);

  const int a = Acquire();
  const int b = Acquire();
  const int c = Acquire();
  // Connections being opened count towards the bound.
  EXPECT_EQ(Stats().open, 3);
  EXPECT_EQ(Stats().opening, 3);
  const int d = Acquire();
  EXPECT_NE(WaitIdOf(d), 0u) << "the fourth request has to queue";

  RunAll();
  EXPECT_TRUE(Served(a));
  EXPECT_TRUE(Served(b));
  EXPECT_TRUE(Served(c));
  EXPECT_TRUE(Waiting(d));
  EXPECT_EQ(connector_.connects(), 3);
  EXPECT_EQ(Stats().waiters, 1);

  Release(b);
  RunAll();
  ASSERT_TRUE(Served(d));
  EXPECT_EQ(connector_.connects(), 3) << "the waiter got the returned connection";
  EXPECT_EQ(connector_.max_live(), 3);
}

TEST_F(ConnectionPoolTest, OverflowConnectionIsClosedWhenPoolSizeConnectionsAreIdle) {
  PoolOptions o = Options();
  o.pool_size = 2;
  o.max_overflow = 1;
  MakePool(o);
  const std::vector<int> held = AcquireServed(3);
  Release(held[0]);
  Release(held[1]);
  EXPECT_EQ(connector_.live(), 3);

  const int third = ConnId(held[2]);
  Release(held[2]);  // pool_size are idle already: the extra one is given back

  EXPECT_EQ(connector_.live(), 2);
  EXPECT_EQ(connector_.connection(third), nullptr);
  const PoolStats s = Stats();
  EXPECT_EQ(s.overflow_closed, 1);
  EXPECT_EQ(s.open, 2);
  EXPECT_EQ(s.idle, 2);
}

TEST_F(ConnectionPoolTest, ReturnedConnectionIsKeptWhileFewerThanPoolSizeAreIdle) {
  PoolOptions o = Options();
  o.pool_size = 2;
  o.max_overflow = 1;
  MakePool(o);
  const std::vector<int> held = AcquireServed(3);

  // Which connection was opened "as overflow" does not matter: only how many
  // are idle when one comes back.
  Release(held[2]);
  Release(held[1]);

  EXPECT_EQ(connector_.live(), 3);
  const PoolStats s = Stats();
  EXPECT_EQ(s.overflow_closed, 0);
  EXPECT_EQ(s.idle, 2);
  EXPECT_EQ(s.in_use, 1);
}

// ---- Waiters: FIFO, limits ----

TEST_F(ConnectionPoolTest, WaitersAreServedInArrivalOrder) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  const int holder = Acquire();
  RunAll();
  const int only = ConnId(holder);

  const int w1 = Acquire();
  clock_.Advance(absl::Milliseconds(1));
  const int w2 = Acquire();
  clock_.Advance(absl::Milliseconds(1));
  const int w3 = Acquire();
  RunAll();
  EXPECT_TRUE(Waiting(w1) && Waiting(w2) && Waiting(w3));

  Release(holder);
  RunAll();
  ASSERT_TRUE(Served(w1));
  EXPECT_EQ(ConnId(w1), only);
  EXPECT_TRUE(Waiting(w2) && Waiting(w3));

  Release(w1);
  RunAll();
  ASSERT_TRUE(Served(w2));
  EXPECT_TRUE(Waiting(w3));

  Release(w2);
  RunAll();
  ASSERT_TRUE(Served(w3));
  EXPECT_EQ(connector_.connects(), 1);
}

TEST_F(ConnectionPoolTest, WaiterIsServedBeforeNewcomer) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  const int holder = Acquire();
  RunAll();
  const int waiter = Acquire();
  RunAll();

  // The connection comes back and a newcomer asks at the same moment, before
  // the executor has run anything: the connection is already the waiter's.
  Release(holder);
  const int newcomer = Acquire();
  EXPECT_NE(WaitIdOf(newcomer), 0u) << "the newcomer queues behind the waiter";

  RunAll();
  EXPECT_TRUE(Served(waiter));
  EXPECT_TRUE(Waiting(newcomer));

  Release(waiter);
  RunAll();
  EXPECT_TRUE(Served(newcomer));
}

TEST_F(ConnectionPoolTest, WaiterBeyondMaxWaitersIsRejectedAtOnce) {
  PoolOptions o = SingleConnection();
  o.max_waiters = 2;
  MakePool(o);
  const int holder = Acquire();
  const int w1 = Acquire();
  const int w2 = Acquire();
  const int rejected = Acquire();
  EXPECT_EQ(WaitIdOf(rejected), 0u) << "nothing to cancel: it never queued";

  RunAll();  // no time passes
  EXPECT_EQ(StatusOf(rejected).code(), absl::StatusCode::kResourceExhausted) << StatusOf(rejected);
  EXPECT_THAT(MessageOf(rejected), HasSubstr("DB_POOL_MAX_WAITERS"));
  EXPECT_TRUE(Waiting(w1) && Waiting(w2));
  EXPECT_EQ(Stats().waiter_rejections, 1);
  EXPECT_EQ(Stats().waiters, 2);

  // Once a waiter is served, there is room to queue again.
  Release(holder);
  RunAll();
  EXPECT_TRUE(Served(w1));
  const int later = Acquire();
  EXPECT_NE(WaitIdOf(later), 0u);
  RunAll();
  EXPECT_TRUE(Waiting(later));
  EXPECT_EQ(Stats().waiter_rejections, 1);
}

// ---- Timeouts and deadlines ----

TEST_F(ConnectionPoolTest, WaiterFailsWithResourceExhaustedExactlyWhenThePoolTimeoutPasses) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  const int holder = Acquire();
  const int waiter = Acquire();
  RunAll();

  Advance(absl::Seconds(5) - absl::Nanoseconds(1));
  EXPECT_TRUE(Waiting(waiter));
  EXPECT_EQ(Stats().checkout_timeouts, 0);

  Advance(absl::Nanoseconds(1));
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kResourceExhausted) << StatusOf(waiter);
  EXPECT_THAT(MessageOf(waiter), HasSubstr("DB_POOL_TIMEOUT"));
  EXPECT_EQ(Stats().checkout_timeouts, 1);
  EXPECT_EQ(Stats().waiters, 0);

  // Nobody waits any more: the returned connection goes idle.
  Release(holder);
  RunAll();
  EXPECT_EQ(Stats().idle, 1);
}

TEST_F(ConnectionPoolTest, RequestDeadlineBeforeThePoolTimeoutGivesDeadlineExceeded) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  Acquire();
  const int waiter = Acquire(start_ + absl::Seconds(2));
  RunAll();

  Advance(absl::Seconds(2) - absl::Nanoseconds(1));
  EXPECT_TRUE(Waiting(waiter));

  Advance(absl::Nanoseconds(1));
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(waiter);
  EXPECT_EQ(Stats().checkout_timeouts, 1);
}

TEST_F(ConnectionPoolTest, PoolTimeoutBeforeTheRequestDeadlineGivesResourceExhausted) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  Acquire();
  const int waiter = Acquire(start_ + absl::Seconds(60));
  RunAll();

  Advance(absl::Seconds(5));
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kResourceExhausted) << StatusOf(waiter);
}

TEST_F(ConnectionPoolTest, DeadlineAlreadyPastFailsAtOnceWithDeadlineExceeded) {
  MakePool(Options());
  const int idle_conn = Acquire();
  RunAll();
  Release(idle_conn);

  const int at_now = Acquire(clock_.Now());
  const int earlier = Acquire(clock_.Now() - absl::Seconds(1));
  EXPECT_EQ(WaitIdOf(at_now), 0u);
  EXPECT_EQ(WaitIdOf(earlier), 0u);
  RunAll();  // no time passes

  EXPECT_EQ(StatusOf(at_now).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(at_now);
  EXPECT_EQ(StatusOf(earlier).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(earlier);
  // Even with an idle connection and free slots, nothing is handed out or opened.
  EXPECT_EQ(Stats().idle, 1);
  EXPECT_EQ(connector_.connects(), 1);
  EXPECT_EQ(Stats().waiters, 0);
}

TEST_F(ConnectionPoolTest, ServedWaiterIsNotTimedOutLater) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  const int holder = Acquire();
  const int waiter = Acquire(start_ + absl::Seconds(3));
  RunAll();
  Release(holder);
  RunAll();
  ASSERT_TRUE(Served(waiter));
  // Its deadline timer is withdrawn, not left to fire into nothing (under load,
  // stale timers would pile up for a whole DB_POOL_TIMEOUT).
  EXPECT_EQ(timers_.pending(), 0u);

  Advance(absl::Hours(1));
  EXPECT_TRUE(Served(waiter));  // and its callback ran once (checked by Acquire())
  EXPECT_EQ(Stats().checkout_timeouts, 0);
}

TEST_F(ConnectionPoolTest, QueuedWaitersShareOneDeadlineTimer) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  Acquire();
  RunAll();
  for (int k = 0; k < 10; ++k) Acquire(start_ + absl::Seconds(10 - k));  // later ones due sooner
  RunAll();
  EXPECT_EQ(Stats().waiters, 10);
  EXPECT_EQ(timers_.pending(), 1u);
}

TEST_F(ConnectionPoolTest, WaiterDueSoonerThanThoseQueuedBeforeItExpiresFirst) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  Acquire();
  const int patient = Acquire();                             // the pool timeout: 5 s
  const int hurried = Acquire(start_ + absl::Seconds(1));    // its own deadline: 1 s
  const int middle = Acquire(start_ + absl::Seconds(3));     // 3 s
  const int same_time = Acquire(start_ + absl::Seconds(3));  // 3 s, queued after `middle`
  RunAll();

  Advance(absl::Seconds(1));
  EXPECT_EQ(StatusOf(hurried).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(hurried);
  EXPECT_TRUE(Waiting(patient));
  EXPECT_TRUE(Waiting(middle));

  Advance(absl::Seconds(2) - absl::Nanoseconds(1));
  EXPECT_TRUE(Waiting(middle));
  Advance(absl::Nanoseconds(1));
  EXPECT_EQ(StatusOf(middle).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(middle);
  EXPECT_EQ(StatusOf(same_time).code(), absl::StatusCode::kDeadlineExceeded);
  // Same deadline: expired in queue order (the first saw the second waiting).
  EXPECT_THAT(MessageOf(middle), HasSubstr("2 other callers waiting"));
  EXPECT_THAT(MessageOf(same_time), HasSubstr("1 other callers waiting"));
  EXPECT_TRUE(Waiting(patient));

  Advance(absl::Seconds(2));
  EXPECT_EQ(StatusOf(patient).code(), absl::StatusCode::kResourceExhausted) << StatusOf(patient);
  EXPECT_EQ(Stats().checkout_timeouts, 4);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(ConnectionPoolTest, AfterTheEarliestWaiterIsServedTheNextStillExpiresAtItsDeadline) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(30);
  MakePool(o);
  const int holder = Acquire();
  const int first = Acquire(start_ + absl::Seconds(1));
  const int second = Acquire(start_ + absl::Seconds(2));
  RunAll();
  Release(holder);  // to `first`, whose deadline the timer was armed for
  RunAll();
  ASSERT_TRUE(Served(first));

  Advance(absl::Seconds(1));  // the timer fires for nobody and re-arms
  EXPECT_TRUE(Waiting(second));
  EXPECT_EQ(timers_.pending(), 1u);
  Advance(absl::Seconds(1) - absl::Nanoseconds(1));
  EXPECT_TRUE(Waiting(second));
  Advance(absl::Nanoseconds(1));
  EXPECT_EQ(StatusOf(second).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(second);
  EXPECT_EQ(Stats().checkout_timeouts, 1);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(ConnectionPoolTest, CancellingTheLastWaiterWithdrawsTheTimer) {
  MakePool(SingleConnection());
  Acquire();
  const int waiter = Acquire();
  RunAll();
  EXPECT_EQ(timers_.pending(), 1u);
  pool_->CancelWait(WaitIdOf(waiter));
  RunAll();
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(timers_.pending(), 0u);
}

// ---- CancelWait ----

TEST_F(ConnectionPoolTest, CancelledWaiterGetsCancelledAndTheNextWaiterIsServed) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  const int holder = Acquire();
  const int w1 = Acquire();
  const int w2 = Acquire();
  RunAll();

  pool_->CancelWait(WaitIdOf(w1));
  RunAll();
  EXPECT_EQ(StatusOf(w1).code(), absl::StatusCode::kCancelled) << StatusOf(w1);
  EXPECT_EQ(Stats().waiters, 1);
  EXPECT_EQ(timers_.pending(), 1u) << "only w2's deadline is still armed";

  Release(holder);
  RunAll();
  EXPECT_TRUE(Served(w2));

  Advance(o.timeout + absl::Seconds(1));
  EXPECT_EQ(Stats().checkout_timeouts, 0) << "a cancelled waiter does not time out as well";
}

TEST_F(ConnectionPoolTest, CancelWaitOfAServedRequestIsANoOp) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  const int holder = Acquire();
  const int waiter = Acquire();
  RunAll();
  Release(holder);
  RunAll();
  ASSERT_TRUE(Served(waiter));

  pool_->CancelWait(WaitIdOf(waiter));
  pool_->CancelWait(0);  // "nothing to cancel"
  EXPECT_EQ(executor_.queued(), 0u);
  RunAll();
  EXPECT_TRUE(Served(waiter));
  EXPECT_EQ(Stats().in_use, 1);
}

TEST_F(ConnectionPoolTest, CancelWaitOfATimedOutRequestIsANoOp) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(5);
  MakePool(o);
  Acquire();
  const int waiter = Acquire();
  Advance(absl::Seconds(5));
  ASSERT_EQ(StatusOf(waiter).code(), absl::StatusCode::kResourceExhausted);

  pool_->CancelWait(WaitIdOf(waiter));
  RunAll();
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kResourceExhausted);
}

// ---- Recycling ----

PoolOptions RecycleOptions(absl::Duration recycle, double jitter) {
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 1;
  o.timeout = absl::Hours(1);
  o.recycle = recycle;
  o.recycle_jitter = jitter;
  o.pre_ping = false;
  return o;
}

TEST_F(ConnectionPoolTest, ConnectionIsReusedBeforeItsEarliestRecycleAge) {
  // recycle 100 s with jitter 0.2: no connection is recycled before 80 s.
  MakePool(RecycleOptions(absl::Seconds(100), 0.2));
  const int a = Acquire();
  RunAll();
  const int first = ConnId(a);
  Release(a);

  Advance(absl::Seconds(80) - absl::Nanoseconds(1));
  const int b = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(b), first);
  EXPECT_EQ(Stats().recycled, 0);
  EXPECT_EQ(connector_.connects(), 1);
}

TEST_F(ConnectionPoolTest, IdleConnectionOlderThanRecycleIsReplacedAtCheckout) {
  MakePool(RecycleOptions(absl::Seconds(100), 0.2));
  const int a = Acquire();
  RunAll();
  const int first = ConnId(a);
  Release(a);

  Advance(absl::Seconds(100));
  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Served(b));
  EXPECT_NE(ConnId(b), first);
  EXPECT_EQ(connector_.connection(first), nullptr) << "the old connection is closed";
  EXPECT_EQ(connector_.connects(), 2);
  EXPECT_EQ(connector_.live(), 1);
  const PoolStats s = Stats();
  EXPECT_EQ(s.recycled, 1);
  EXPECT_EQ(s.open, 1);
  EXPECT_EQ(s.in_use, 1);
}

TEST_F(ConnectionPoolTest, ConnectionReturnedAfterItsRecycleAgeIsClosed) {
  MakePool(RecycleOptions(absl::Seconds(100), 0.2));
  const int a = Acquire();
  RunAll();
  Advance(absl::Seconds(100));
  Release(a);

  EXPECT_EQ(connector_.live(), 0);
  EXPECT_EQ(Stats().recycled, 1);
  EXPECT_EQ(Stats().open, 0);
}

TEST_F(ConnectionPoolTest, WaiterGetsAFreshConnectionWhenTheReturnedOneIsTooOld) {
  PoolOptions o = RecycleOptions(absl::Seconds(100), 0.2);
  o.pool_size = 1;
  o.max_overflow = 0;
  MakePool(o);
  const int holder = Acquire();
  const int waiter = Acquire();
  RunAll();

  Advance(absl::Seconds(100));
  Release(holder);
  RunAll();
  ASSERT_TRUE(Served(waiter));
  EXPECT_EQ(ConnId(waiter), 2);
  EXPECT_EQ(connector_.max_live(), 1) << "the old one closed before the new one opened";
  EXPECT_EQ(Stats().recycled, 1);
}

TEST_F(ConnectionPoolTest, WithoutJitterConnectionIsRecycledExactlyAtRecycleAge) {
  MakePool(RecycleOptions(absl::Seconds(100), 0.0));
  const int a = Acquire();
  RunAll();
  Release(a);

  Advance(absl::Seconds(100) - absl::Nanoseconds(1));
  const int b = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(b), 1);
  Release(b);

  Advance(absl::Nanoseconds(1));
  const int c = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(c), 2);
  EXPECT_EQ(Stats().recycled, 1);
}

TEST_F(ConnectionPoolTest, RecycleJitterSpreadsRecycleAgesBetweenConnections) {
  // recycle 100 s with jitter 0.5: each connection's recycle age is drawn from
  // (50 s, 100 s]. Opened together, they must not all expire together.
  constexpr int kConnections = 32;
  PoolOptions o = RecycleOptions(absl::Seconds(100), 0.5);
  o.pool_size = kConnections;
  o.max_overflow = 0;
  MakePool(o);
  std::vector<int> held = AcquireServed(kConnections);

  // Just before the earliest possible recycle age: every one is still reused.
  Advance(absl::Seconds(50) - absl::Nanoseconds(1));
  for (int r : held) Release(r);
  held = AcquireServed(kConnections);
  EXPECT_EQ(Stats().recycled, 0);
  EXPECT_EQ(connector_.connects(), kConnections);

  // Halfway (75 s): some are past their age (closed when returned), some are
  // not. (All landing on one side has probability 2^-31.)
  Advance(absl::Seconds(25) + absl::Nanoseconds(1));
  for (int r : held) Release(r);
  const int64_t recycled_halfway = Stats().recycled;
  EXPECT_GT(recycled_halfway, 0);
  EXPECT_LT(recycled_halfway, kConnections);
  EXPECT_EQ(connector_.live(), kConnections - recycled_halfway);

  // At the full recycle age (100 s), every original connection is replaced.
  Advance(absl::Seconds(25));
  held = AcquireServed(kConnections);
  EXPECT_EQ(Stats().recycled, kConnections);
  for (int id = 1; id <= kConnections; ++id) {
    EXPECT_EQ(connector_.connection(id), nullptr) << "original connection " << id << " still open";
  }
  EXPECT_EQ(connector_.live(), kConnections);
}

TEST_F(ConnectionPoolTest, InfiniteRecycleNeverRecycles) {
  MakePool(RecycleOptions(absl::InfiniteDuration(), 0.5));
  const int a = Acquire();
  RunAll();
  Release(a);

  Advance(absl::Hours(24 * 365 * 10));
  const int b = Acquire();
  RunAll();
  EXPECT_EQ(ConnId(b), 1);
  Release(b);
  EXPECT_EQ(Stats().recycled, 0);
  EXPECT_EQ(Stats().idle, 1);
}

// ---- Pre-ping ----

PoolOptions PrePingOptions() {
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 1;
  o.recycle = absl::InfiniteDuration();
  o.pre_ping = true;
  o.pre_ping_after = absl::Seconds(1);
  return o;
}

TEST_F(ConnectionPoolTest, ConnectionIdleForPrePingAfterIsPingedBeforeHandOut) {
  MakePool(PrePingOptions());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  FakeConnection* conn = Conn(a);
  EXPECT_EQ(conn->pings(), 0) << "a fresh connection is not pinged";
  Release(a);

  Advance(absl::Seconds(1));
  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Served(b));
  EXPECT_EQ(Conn(b), conn);
  EXPECT_EQ(conn->pings(), 1);
  EXPECT_EQ(Stats().pre_ping_failures, 0);
}

TEST_F(ConnectionPoolTest, RecentlyUsedConnectionIsNotPinged) {
  MakePool(PrePingOptions());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  FakeConnection* conn = Conn(a);
  Release(a);

  Advance(absl::Seconds(1) - absl::Nanoseconds(1));
  const int b = Acquire();
  RunAll();
  EXPECT_EQ(Conn(b), conn);
  EXPECT_EQ(conn->pings(), 0);
}

TEST_F(ConnectionPoolTest, IdleTimeCountsFromTheLastReturnNotFromOpening) {
  MakePool(PrePingOptions());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  FakeConnection* conn = Conn(a);
  Advance(absl::Minutes(10));  // held, in use, for a long time
  Release(a);

  const int b = Acquire();
  RunAll();
  EXPECT_EQ(Conn(b), conn);
  EXPECT_EQ(conn->pings(), 0);
}

TEST_F(ConnectionPoolTest, FailingPingDiscardsTheConnectionAndHandsOutANewOne) {
  MakePool(PrePingOptions());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  const int dead = ConnId(a);
  Conn(a)->set_ping_fails(true);  // e.g. the server restarted meanwhile
  Release(a);

  Advance(absl::Seconds(1));
  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Served(b)) << StatusOf(b);
  EXPECT_NE(ConnId(b), dead);
  EXPECT_EQ(connector_.connection(dead), nullptr);
  EXPECT_EQ(connector_.connects(), 2);
  EXPECT_EQ(connector_.live(), 1);
  const PoolStats s = Stats();
  EXPECT_EQ(s.pre_ping_failures, 1);
  EXPECT_EQ(s.invalidated, 1);
  EXPECT_EQ(s.open, 1);
  EXPECT_EQ(s.in_use, 1);
}

TEST_F(ConnectionPoolTest, PrePingDisabledNeverPings) {
  PoolOptions o = PrePingOptions();
  o.pre_ping = false;
  MakePool(o);
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  FakeConnection* conn = Conn(a);
  Release(a);

  Advance(absl::Hours(1));
  const int b = Acquire();
  RunAll();
  EXPECT_EQ(Conn(b), conn);
  EXPECT_EQ(conn->pings(), 0);
}

// ---- Broken connections ----

TEST_F(ConnectionPoolTest, BrokenConnectionIsClosedOnReturnAndNeverHandedOutAgain) {
  MakePool(Options());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a)) << StatusOf(a);
  const int broken = ConnId(a);
  Conn(a)->set_broken(true);  // the adapter noticed the connection was lost
  Release(a);

  EXPECT_EQ(connector_.connection(broken), nullptr);
  EXPECT_EQ(connector_.live(), 0);
  EXPECT_EQ(Stats().invalidated, 1);
  EXPECT_EQ(Stats().open, 0);
  EXPECT_EQ(Stats().idle, 0);

  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Served(b));
  EXPECT_NE(ConnId(b), broken);
  EXPECT_EQ(connector_.connects(), 2);
}

TEST_F(ConnectionPoolTest, MarkBrokenClosesTheConnectionOnReturn) {
  MakePool(Options());
  const int a = Acquire();
  RunAll();
  const int marked = ConnId(a);
  Handle(a).MarkBroken();  // e.g. its session state is unknown after an error
  Release(a);

  EXPECT_EQ(connector_.connection(marked), nullptr);
  EXPECT_EQ(Stats().invalidated, 1);
  EXPECT_EQ(Stats().open, 0);

  const int b = Acquire();
  RunAll();
  EXPECT_NE(ConnId(b), marked);
}

TEST_F(ConnectionPoolTest, WaiterGetsAFreshConnectionWhenABrokenOneIsDiscarded) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  const int holder = Acquire();
  const int waiter = Acquire();
  RunAll();

  Handle(holder).MarkBroken();
  Release(holder);
  RunAll();
  ASSERT_TRUE(Served(waiter)) << StatusOf(waiter);
  EXPECT_EQ(ConnId(waiter), 2);
  EXPECT_EQ(connector_.max_live(), 1);
  EXPECT_EQ(Stats().invalidated, 1);
}

// ---- Connect failures ----

TEST_F(ConnectionPoolTest, AcquireFailsWithUnavailableWhenConnectFails) {
  MakePool(Options());
  connector_.set_fail_connects(true);
  const int a = Acquire();
  RunAll();

  EXPECT_EQ(StatusOf(a).code(), absl::StatusCode::kUnavailable) << StatusOf(a);
  const PoolStats s = Stats();
  EXPECT_EQ(s.connect_failures, 1);
  EXPECT_EQ(s.open, 0);
  EXPECT_EQ(s.opening, 0);
}

TEST_F(ConnectionPoolTest, QueuedWaitersFailFastWhenConnectsFail) {
  PoolOptions o = SingleConnection();
  o.timeout = absl::Seconds(30);
  MakePool(o);
  connector_.set_fail_connects(true);
  const int opener = Acquire();
  const int w1 = Acquire();
  const int w2 = Acquire();
  EXPECT_NE(WaitIdOf(w1), 0u);
  EXPECT_NE(WaitIdOf(w2), 0u);

  RunAll();  // no time passes: nobody waits out the 30 s timeout
  EXPECT_EQ(StatusOf(opener).code(), absl::StatusCode::kUnavailable) << StatusOf(opener);
  EXPECT_EQ(StatusOf(w1).code(), absl::StatusCode::kUnavailable) << StatusOf(w1);
  EXPECT_EQ(StatusOf(w2).code(), absl::StatusCode::kUnavailable) << StatusOf(w2);
  const PoolStats s = Stats();
  EXPECT_EQ(s.checkout_timeouts, 0);
  EXPECT_EQ(s.connect_failures, 3);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(s.open, 0);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(ConnectionPoolTest, SlotsComeBackAfterConnectFailures) {
  PoolOptions o = Options();
  o.pool_size = 2;
  o.max_overflow = 1;
  MakePool(o);
  connector_.set_fail_connects(true);
  for (int k = 0; k < 5; ++k) Acquire();
  RunAll();
  EXPECT_EQ(Stats().open, 0);

  connector_.set_fail_connects(false);
  AcquireServed(3);
  const int fourth = Acquire();
  RunAll();
  EXPECT_TRUE(Waiting(fourth));
  EXPECT_EQ(connector_.max_live(), 3);
}

// ---- Reconnect backoff (the database is down) ----

TEST_F(ConnectionPoolTest, WhileTheDatabaseIsDownCallersFailFastWithoutDialing) {
  MakePool(WithBackoff(Options()));
  connector_.set_fail_connects(true);
  const int first = Acquire();
  RunAll();
  EXPECT_EQ(StatusOf(first).code(), absl::StatusCode::kUnavailable) << StatusOf(first);
  EXPECT_TRUE(Stats().database_down);

  const int second = Acquire();
  const int third = Acquire();
  RunAll();
  for (int r : {second, third}) {
    EXPECT_EQ(StatusOf(r).code(), absl::StatusCode::kUnavailable) << StatusOf(r);
    EXPECT_THAT(MessageOf(r), HasSubstr("fake database is down")) << "names the last error";
    EXPECT_THAT(MessageOf(r), HasSubstr("next attempt is in 100ms"));
  }
  const PoolStats s = Stats();
  EXPECT_EQ(s.connect_failures, 1) << "only the first caller dialed";
  EXPECT_EQ(s.backoff_rejections, 2);
  EXPECT_EQ(s.connect_failures_in_row, 1);
  EXPECT_EQ(s.last_connect_error, "fake database is down");
  EXPECT_EQ(s.last_connect_error_time, start_);
  EXPECT_EQ(s.next_connect_attempt, start_ + absl::Milliseconds(100));
  EXPECT_EQ(s.open, 0);
}

TEST_F(ConnectionPoolTest, QueuedWaitersFailAtOnceWithoutEachDialing) {
  MakePool(WithBackoff(SingleConnection()));
  connector_.set_fail_connects(true);
  const int opener = Acquire();
  const int w1 = Acquire();
  const int w2 = Acquire();
  EXPECT_NE(WaitIdOf(w1), 0u);

  RunAll();  // no time passes
  for (int r : {opener, w1, w2}) {
    EXPECT_EQ(StatusOf(r).code(), absl::StatusCode::kUnavailable) << StatusOf(r);
  }
  EXPECT_THAT(MessageOf(w2), HasSubstr("fake database is down"));
  const PoolStats s = Stats();
  EXPECT_EQ(s.connect_failures, 1);
  EXPECT_EQ(s.backoff_rejections, 2);
  EXPECT_EQ(s.checkout_timeouts, 0);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(timers_.pending(), 0u) << "their timeout timers are gone";
}

TEST_F(ConnectionPoolTest, OnceTheDelayPassedOneCallerProbesAndTheOthersStillFailFast) {
  MakePool(WithBackoff(Options()));
  connector_.set_fail_connects(true);
  Acquire();
  RunAll();
  clock_.Advance(absl::Milliseconds(100));

  const int probe = Acquire();   // may dial
  const int during = Acquire();  // must not: the probe is in flight
  RunAll();
  EXPECT_EQ(StatusOf(probe).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusOf(during).code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(MessageOf(during), HasSubstr("a new attempt is in progress"));
  EXPECT_EQ(Stats().connect_failures, 2);
  // The failed probe doubled the delay.
  EXPECT_EQ(Stats().next_connect_attempt, clock_.Now() + absl::Milliseconds(200));
}

TEST_F(ConnectionPoolTest, ReconnectDelayGrowsExponentiallyUpToItsMax) {
  MakePool(WithBackoff(Options()));
  connector_.set_fail_connects(true);
  std::vector<absl::Duration> delays;
  for (int attempt = 0; attempt < 6; ++attempt) {
    Acquire();
    RunAll();
    const PoolStats s = Stats();
    delays.push_back(s.next_connect_attempt - clock_.Now());
    clock_.Set(s.next_connect_attempt);
  }
  EXPECT_EQ(delays, (std::vector<absl::Duration>{absl::Milliseconds(100), absl::Milliseconds(200),
                                                 absl::Milliseconds(400), absl::Milliseconds(800),
                                                 absl::Seconds(1), absl::Seconds(1)}));
  EXPECT_EQ(Stats().connect_failures, 6);
  EXPECT_EQ(Stats().connect_failures_in_row, 6);
}

TEST_F(ConnectionPoolTest, ASuccessfulProbeEndsTheOutageForEveryone) {
  MakePool(WithBackoff(Options()));
  connector_.set_fail_connects(true);
  Acquire();
  RunAll();
  connector_.set_fail_connects(false);  // the database is back
  const int early = Acquire();
  RunAll();
  EXPECT_EQ(StatusOf(early).code(), absl::StatusCode::kUnavailable) << "before the delay";

  clock_.Advance(absl::Milliseconds(100));
  const int probe = Acquire();
  RunAll();
  ASSERT_TRUE(Served(probe)) << StatusOf(probe);
  EXPECT_FALSE(Stats().database_down);
  EXPECT_EQ(Stats().connect_failures_in_row, 0);
  // Everyone may open connections again, at once.
  const std::vector<int> more = AcquireServed(2);
  EXPECT_EQ(connector_.connects(), 3);
}

TEST_F(ConnectionPoolTest, IdleConnectionsAreStillHandedOutWhileConnectsAreRationed) {
  PoolOptions o = WithBackoff(Options());
  o.pool_size = 2;
  o.max_overflow = 0;
  MakePool(o);
  const int a = Acquire();
  RunAll();
  Release(a);  // one idle connection
  connector_.set_fail_connects(true);
  const int reuse = Acquire();   // the idle one
  const int dialer = Acquire();  // needs a new one: fails, the database is down
  RunAll();
  ASSERT_TRUE(Served(reuse));
  EXPECT_EQ(StatusOf(dialer).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(Stats().database_down);
  Release(reuse);
  const int again = Acquire();
  RunAll();
  EXPECT_TRUE(Served(again)) << "rationing gates dialing, not the connections the pool has";
}

TEST_F(ConnectionPoolTest, BrokenConnectionWhileDownFailsTheQueueInsteadOfRedialing) {
  MakePool(WithBackoff(SingleConnection()));
  const int holder = Acquire();
  RunAll();
  ASSERT_TRUE(Served(holder));
  const int w1 = Acquire();
  const int w2 = Acquire();
  // The database restarts: the held connection is lost and connects fail.
  connector_.set_fail_connects(true);
  Conn(holder)->set_broken(true);
  Release(holder);  // discarded; w1 dials (and fails), then w2 is refused
  RunAll();
  EXPECT_EQ(StatusOf(w1).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusOf(w2).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Stats().connect_failures, 1);
  EXPECT_EQ(Stats().invalidated, 1);
  EXPECT_EQ(connector_.live(), 0);
}

// ---- The database's connection limit (SQLSTATE 53300) ----

// A pool of 5 (2 + 3 overflow) whose probes above the database's limit start
// 1 s after a refusal, doubling up to 8 s, without jitter.
PoolOptions LimitedOptions() {
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 3;
  o.timeout = absl::Seconds(30);
  o.recycle = absl::InfiniteDuration();
  o.recycle_jitter = 0;
  o.pre_ping = false;
  o.max_waiters = 100;
  o.reconnect_backoff.initial = absl::Milliseconds(100);
  o.reconnect_backoff.jitter = 0;
  o.limit_probe.initial = absl::Seconds(1);
  o.limit_probe.max = absl::Seconds(8);
  o.limit_probe.multiplier = 2;
  o.limit_probe.jitter = 0;
  return o;
}

TEST_F(ConnectionPoolTest, RefusedConnectsStopGrowthAtTheConnectionsThatWork) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(2);
  std::vector<int> requests;
  for (int k = 0; k < 4; ++k) requests.push_back(Acquire());
  RunAll();

  EXPECT_TRUE(Served(requests[0])) << StatusOf(requests[0]);
  EXPECT_TRUE(Served(requests[1])) << StatusOf(requests[1]);
  EXPECT_TRUE(Waiting(requests[2])) << "a refused connect is no failure: " << StatusOf(requests[2]);
  EXPECT_TRUE(Waiting(requests[3])) << StatusOf(requests[3]);
  const PoolStats s = Stats();
  EXPECT_EQ(s.connection_limit, 2);
  EXPECT_EQ(s.limit_refusals, 2);
  EXPECT_EQ(s.open, 2);
  EXPECT_EQ(s.waiters, 2);
  EXPECT_EQ(s.connect_failures, 0) << "a full database is not a failed one";
  EXPECT_FALSE(s.database_down);
  EXPECT_THAT(s.last_limit_error, HasSubstr("too many clients"));
  EXPECT_EQ(s.last_limit_error_time, start_);
  EXPECT_EQ(s.next_limit_probe, start_ + absl::Seconds(1));
  EXPECT_EQ(connector_.live(), 2);
}

TEST_F(ConnectionPoolTest, CallersUnderTheLimitGetTheConnectionsOthersReturnInOrder) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a));
  // b to e all dial (there is room below pool_size + max_overflow), are
  // refused, and queue in the order they asked.
  const int b = Acquire();
  const int c = Acquire();
  const int d = Acquire();
  const int e = Acquire();
  RunAll();
  EXPECT_EQ(Stats().connection_limit, 1);
  ASSERT_EQ(Stats().waiters, 4);
  const int conn = ConnId(a);

  for (int next : {b, c, d, e}) {
    EXPECT_TRUE(Waiting(next)) << "request " << next;
    const int holder = next == b ? a : next - 1;
    Release(holder);
    RunAll();
    ASSERT_TRUE(Served(next)) << "request " << next << ": " << StatusOf(next);
    EXPECT_EQ(ConnId(next), conn);
  }
  EXPECT_EQ(connector_.connects(), 1);
}

TEST_F(ConnectionPoolTest, AWaitUnderTheLimitTimesOutWithResourceExhaustedAnd53300) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a));
  ASSERT_TRUE(Waiting(b));

  // Probes above the limit keep being refused meanwhile.
  Advance(absl::Seconds(30));
  EXPECT_EQ(StatusOf(b).code(), absl::StatusCode::kResourceExhausted) << StatusOf(b);
  EXPECT_EQ(storage::SqlStateOf(StatusOf(b)), "53300");
  EXPECT_THAT(MessageOf(b), HasSubstr("DB_POOL_TIMEOUT"));
  EXPECT_THAT(MessageOf(b), HasSubstr("the database accepts only 1 of this pool's 5 connections"));
  EXPECT_THAT(MessageOf(b), HasSubstr("too many clients"));
  EXPECT_EQ(Stats().checkout_timeouts, 1);
  EXPECT_TRUE(Served(a)) << "the connection that works keeps serving";
}

TEST_F(ConnectionPoolTest, ACallersDeadlineUnderTheLimitEndsWithDeadlineExceeded) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  const int b = Acquire(start_ + absl::Milliseconds(500));
  RunAll();
  ASSERT_TRUE(Served(a));
  ASSERT_TRUE(Waiting(b));

  Advance(absl::Milliseconds(500));
  EXPECT_EQ(StatusOf(b).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(b);
  EXPECT_THAT(MessageOf(b), HasSubstr("deadline passed after waiting 500ms"));
  EXPECT_THAT(MessageOf(b), HasSubstr("accepts only 1 of this pool's 5"));
}

TEST_F(ConnectionPoolTest, AConnectRefusedWhenItsDeadlineHasPassedFailsAtOnce) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a));
  const int b = Acquire(start_ + absl::Milliseconds(10));
  clock_.Advance(absl::Milliseconds(10));  // the connect took that long
  executor_.RunAll();
  EXPECT_EQ(StatusOf(b).code(), absl::StatusCode::kDeadlineExceeded) << StatusOf(b);
  EXPECT_EQ(Stats().waiters, 0);
}

TEST_F(ConnectionPoolTest, GrowthResumesByProbingAfterTheDelayWhichDoublesOnRefusal) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  const int b = Acquire();
  RunAll();
  ASSERT_TRUE(Waiting(b));
  EXPECT_EQ(connector_.refused(), 1);

  Advance(absl::Milliseconds(999));
  EXPECT_EQ(connector_.refused(), 1) << "no probe before its delay";
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(connector_.refused(), 2) << "one probe after 1 s";
  EXPECT_TRUE(Waiting(b));
  EXPECT_EQ(Stats().connection_limit, 1);
  EXPECT_EQ(Stats().next_limit_probe, clock_.Now() + absl::Seconds(2)) << "doubled";
  Advance(absl::Seconds(2));
  EXPECT_EQ(connector_.refused(), 3);
  EXPECT_EQ(Stats().next_limit_probe, clock_.Now() + absl::Seconds(4));

  // The database makes room (another client left): the next probe succeeds.
  connector_.set_server_limit(2);
  Advance(absl::Seconds(4));
  ASSERT_TRUE(Served(b)) << StatusOf(b);
  EXPECT_NE(ConnId(b), ConnId(a));
  EXPECT_EQ(Stats().connection_limit, 2);

  // After a success the next probe may start at once, and a refusal starts
  // the delay over at 1 s.
  const int c = Acquire();
  RunAll();
  EXPECT_EQ(connector_.refused(), 4) << "probed at once";
  EXPECT_TRUE(Waiting(c));
  EXPECT_EQ(Stats().next_limit_probe, clock_.Now() + absl::Seconds(1));
  Release(a);
  RunAll();
  EXPECT_TRUE(Served(c)) << StatusOf(c);
}

TEST_F(ConnectionPoolTest, AProbeThatOnlyTakesAClosedConnectionsPlaceDoesNotRaiseTheLimit) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(2);
  const int a = Acquire();
  const int b = Acquire();
  const int c = Acquire();
  RunAll();
  ASSERT_EQ(Stats().connection_limit, 2);
  ASSERT_TRUE(Waiting(c));

  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();  // the growth probe for c is posted, not yet run
  Conn(a)->set_broken(true);
  Release(a);  // closed: the server has room again, the pool no more slots
  executor_.RunAll();
  ASSERT_TRUE(Served(c)) << StatusOf(c);
  EXPECT_EQ(Stats().connection_limit, 2) << "still two connections at once";
  EXPECT_EQ(Stats().open, 2);
  EXPECT_TRUE(Served(b));
}

TEST_F(ConnectionPoolTest, TheLimitLiftsOnceProbesReachTheConfiguredMaximum) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(3);
  std::vector<int> requests;
  for (int k = 0; k < 5; ++k) requests.push_back(Acquire());
  RunAll();
  EXPECT_EQ(Stats().connection_limit, 3);

  connector_.set_server_limit(-1);
  Advance(absl::Seconds(1));  // the probe succeeds, and the next one follows at once
  for (int r : requests) EXPECT_TRUE(Served(r)) << "request " << r << ": " << StatusOf(r);
  const PoolStats s = Stats();
  EXPECT_EQ(s.connection_limit, 5);
  EXPECT_EQ(s.next_limit_probe, absl::InfinitePast()) << "not limited any more";
  EXPECT_EQ(s.open, 5);
}

TEST_F(ConnectionPoolTest, WithNoOneWaitingNoProbeIsMade) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  const int b = Acquire();
  RunAll();
  Release(a);
  RunAll();
  ASSERT_TRUE(Served(b));
  Release(b);
  Advance(absl::Minutes(1));
  EXPECT_EQ(connector_.refused(), 1);
  EXPECT_EQ(Stats().connection_limit, 1);
}

TEST_F(ConnectionPoolTest, AConnectionReturnedDuringARefusedConnectServesItsRequest) {
  MakePool(LimitedOptions());
  const int a = Acquire();
  RunAll();
  ASSERT_TRUE(Served(a));
  const int first = ConnId(a);
  connector_.set_server_limit(1);
  const int b = Acquire();  // its connect is posted, not yet run
  Release(a);               // no one waits: idle
  RunAll();                 // b's connect is refused, then b takes the idle one
  ASSERT_TRUE(Served(b)) << StatusOf(b);
  EXPECT_EQ(ConnId(b), first);
  EXPECT_EQ(Stats().connection_limit, 1);
}

TEST_F(ConnectionPoolTest, CancelWaitReachesARequestQueuedAfterItsConnectWasRefused) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(1);
  const int a = Acquire();
  const int b = Acquire();
  EXPECT_NE(WaitIdOf(b), 0u);
  RunAll();
  ASSERT_TRUE(Waiting(b));
  pool_->CancelWait(WaitIdOf(b));
  RunAll();
  EXPECT_EQ(StatusOf(b).code(), absl::StatusCode::kCancelled) << StatusOf(b);
  EXPECT_EQ(Stats().waiters, 0);
  EXPECT_TRUE(Served(a));
}

TEST_F(ConnectionPoolTest, ARequestThatMayNotWaitGetsResourceExhaustedWith53300) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(0);
  std::optional<absl::StatusOr<PooledConnection>> result;
  AcquireRequest request;
  request.wait = false;
  pool_->Acquire(request, [&](absl::StatusOr<PooledConnection> r) { result = std::move(r); });
  RunAll();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status().code(), absl::StatusCode::kResourceExhausted) << result->status();
  EXPECT_EQ(storage::SqlStateOf(result->status()), "53300");
  EXPECT_EQ(Stats().waiters, 0);
  EXPECT_EQ(Stats().connection_limit, 0);
}

TEST_F(ConnectionPoolTest, AFullDatabaseAnswersSoItIsReachableAgainAfterAnOutage) {
  MakePool(LimitedOptions());
  connector_.set_fail_connects(true);
  const int a = Acquire();
  RunAll();
  EXPECT_EQ(StatusOf(a).code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(Stats().database_down);

  // Back, but full: the probe is refused with 53300.
  connector_.set_fail_connects(false);
  connector_.set_server_limit(0);
  clock_.Advance(absl::Milliseconds(100));
  const int b = Acquire(clock_.Now() + absl::Seconds(5));
  RunAll();
  EXPECT_FALSE(Stats().database_down);
  EXPECT_TRUE(Waiting(b)) << "waits for room instead of UNAVAILABLE: " << StatusOf(b);
  connector_.set_server_limit(-1);
  Advance(absl::Seconds(1));
  EXPECT_TRUE(Served(b)) << StatusOf(b);
}

TEST_F(ConnectionPoolTest, HealthStaysServingWhileTheDatabaseIsFull) {
  MakePool(LimitedOptions());
  connector_.set_server_limit(0);
  std::vector<bool> reports;
  HealthChecker health(*pool_, timers_, clock_, absl::Seconds(2),
                       [&](bool serving) { reports.push_back(serving); });
  health.Start();
  RunAll();
  EXPECT_THAT(reports, ::testing::ElementsAre(true)) << "it answered: full, not down";
  EXPECT_TRUE(health.serving());
  EXPECT_TRUE(health.last_error_message().empty()) << health.last_error_message();
  Advance(absl::Seconds(2));
  EXPECT_TRUE(health.serving());
  health.Stop();
}

TEST_F(ConnectionPoolTest, TheFirstConnectHookRunsOnceOnTheFirstConnectionBeforeItIsHandedOut) {
  MakePool(LimitedOptions());
  std::vector<int> seen;
  pool_->SetFirstConnectHook([&](storage::DbConnection& db) {
    seen.push_back(db.BackendPid());
    EXPECT_EQ(connector_.connects(), 1);
  });
  pool_->RecordServerSettings({60, 3, -1});
  AcquireServed(3);
  EXPECT_THAT(seen, ::testing::ElementsAre(1));
  EXPECT_EQ(Stats().server.max_connections, 60);
  EXPECT_EQ(Stats().server.superuser_reserved_connections, 3);
  EXPECT_EQ(Stats().server.reserved_connections, -1);
}

// ---- Per-client occupancy and checkout waits ----

TEST_F(ConnectionPoolTest, ConnectionsInUseAndWaitersAreCountedPerClient) {
  MakePool(SingleConnection());
  const int billing = Acquire(absl::InfiniteFuture(), "billing");
  const int search1 = Acquire(absl::InfiniteFuture(), "search");
  const int search2 = Acquire(absl::InfiniteFuture(), "search");
  const int anonymous = Acquire();
  RunAll();
  ASSERT_TRUE(Served(billing));
  PoolStats s = Stats();
  EXPECT_EQ(s.clients["billing"].in_use, 1);
  EXPECT_EQ(s.clients["billing"].waiting, 0);
  EXPECT_EQ(s.clients["search"].waiting, 2);
  EXPECT_EQ(s.clients[""].waiting, 1);

  Release(billing);  // to search1
  RunAll();
  ASSERT_TRUE(Served(search1));
  s = Stats();
  EXPECT_EQ(s.clients.count("billing"), 0u) << "clients with nothing drop out";
  EXPECT_EQ(s.clients["search"].in_use, 1);
  EXPECT_EQ(s.clients["search"].waiting, 1);

  Release(search1);  // to the anonymous client: its turn comes before search's second
  RunAll();
  ASSERT_TRUE(Served(anonymous));
  Release(anonymous);
  RunAll();
  Release(search2);
  s = Stats();
  EXPECT_TRUE(s.clients.empty());
}

TEST_F(ConnectionPoolTest, ManyClientIdsComeAndGoWithoutLingering) {
  MakePool(Options());
  // More ids than the pool keeps unreferenced entries for, so they are swept.
  for (int k = 0; k < 200; ++k) {
    const int r = Acquire(absl::InfiniteFuture(), absl::StrCat("client-", k));
    RunAll();
    ASSERT_TRUE(Served(r));
    EXPECT_EQ(Stats().clients[absl::StrCat("client-", k)].in_use, 1);
    Release(r);
  }
  EXPECT_TRUE(Stats().clients.empty());
  // An id seen before (and perhaps swept) counts from zero again.
  const int again = Acquire(absl::InfiniteFuture(), "client-5");
  const int other = Acquire(absl::InfiniteFuture(), "client-199");
  RunAll();
  ASSERT_TRUE(Served(again));
  ASSERT_TRUE(Served(other));
  PoolStats s = Stats();
  EXPECT_EQ(s.clients.size(), 2u);
  EXPECT_EQ(s.clients["client-5"].in_use, 1);
  EXPECT_EQ(s.clients["client-199"].in_use, 1);
  EXPECT_EQ(s.checkouts, 202);
}

TEST_F(ConnectionPoolTest, CheckoutWaitsAreRecordedFromRequestToDelivery) {
  MakePool(SingleConnection());
  const int first = Acquire();
  RunAll();
  const int waiter = Acquire();
  Advance(absl::Seconds(3));
  Release(first);
  RunAll();
  ASSERT_TRUE(Served(waiter));
  const RecentDurations waits = pool_->checkout_wait().Recent();
  EXPECT_EQ(waits.count, 2);
  EXPECT_EQ(waits.max, absl::Seconds(3));
  EXPECT_EQ(pool_->checkout_wait().Totals().count, 2u);
}

// ---- Close ----

TEST_F(ConnectionPoolTest, CloseFailsQueuedWaitersWithUnavailable) {
  PoolOptions o = SingleConnection();
  MakePool(o);
  Acquire();
  const int waiter = Acquire();
  RunAll();

  pool_->Close();
  RunAll();
  EXPECT_EQ(StatusOf(waiter).code(), absl::StatusCode::kUnavailable) << StatusOf(waiter);
  EXPECT_EQ(Stats().waiters, 0);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(ConnectionPoolTest, CloseClosesIdleConnections) {
  MakePool(Options());
  const std::vector<int> held = AcquireServed(2);
  Release(held[0]);
  Release(held[1]);
  EXPECT_EQ(connector_.live(), 2);

  pool_->Close();
  EXPECT_EQ(connector_.live(), 0);
  EXPECT_EQ(Stats().open, 0);
  EXPECT_EQ(Stats().idle, 0);
}

TEST_F(ConnectionPoolTest, ConnectionInUseIsClosedWhenReturnedAfterClose) {
  MakePool(Options());
  const int a = Acquire();
  RunAll();

  pool_->Close();
  EXPECT_EQ(connector_.live(), 1) << "still in use: not closed under its user";
  EXPECT_NE(Handle(a).get(), nullptr);

  Release(a);
  EXPECT_EQ(connector_.live(), 0);
  EXPECT_EQ(Stats().open, 0);
}

TEST_F(ConnectionPoolTest, AcquireAfterCloseFailsWithUnavailable) {
  MakePool(Options());
  pool_->Close();
  const int a = Acquire();
  EXPECT_EQ(WaitIdOf(a), 0u);
  RunAll();
  EXPECT_EQ(StatusOf(a).code(), absl::StatusCode::kUnavailable) << StatusOf(a);
  EXPECT_EQ(connector_.connects(), 0);
}

TEST_F(ConnectionPoolTest, ConnectionOpenedWhileClosingIsNotHandedOut) {
  MakePool(Options());
  const int a = Acquire();  // its connect has not run yet
  pool_->Close();
  RunAll();
  EXPECT_EQ(StatusOf(a).code(), absl::StatusCode::kUnavailable) << StatusOf(a);
  EXPECT_EQ(connector_.live(), 0);
  EXPECT_EQ(Stats().open, 0);
}

// ---- Stats ----

TEST_F(ConnectionPoolTest, StatsDescribeThePoolShapeAndCounters) {
  PoolOptions o = Options();
  o.pool_size = 2;
  o.max_overflow = 2;
  MakePool(o);
  std::vector<int> held;
  for (int k = 0; k < 4; ++k) held.push_back(Acquire());
  PoolStats s = Stats();
  EXPECT_EQ(s.open, 4);
  EXPECT_EQ(s.opening, 4);
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(s.idle, 0);

  RunAll();
  s = Stats();
  EXPECT_EQ(s.open, 4);
  EXPECT_EQ(s.opening, 0);
  EXPECT_EQ(s.in_use, 4);
  EXPECT_EQ(s.overflow_in_use, 2);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(s.oldest_wait, absl::ZeroDuration());
  EXPECT_EQ(s.connects, 4);
  EXPECT_EQ(s.checkouts, 4);

  const int w1 = Acquire();
  Advance(absl::Seconds(3));
  const int w2 = Acquire();
  Advance(absl::Seconds(1));
  s = Stats();
  EXPECT_EQ(s.waiters, 2);
  EXPECT_EQ(s.oldest_wait, absl::Seconds(4));

  Release(held[0]);  // to w1
  RunAll();
  ASSERT_TRUE(Served(w1));
  s = Stats();
  EXPECT_EQ(s.waiters, 1);
  EXPECT_EQ(s.oldest_wait, absl::Seconds(1));
  EXPECT_EQ(s.checkouts, 5);
  EXPECT_EQ(s.connects, 4);

  Release(held[1]);  // to w2
  Release(held[2]);  // idle
  Release(held[3]);  // idle
  RunAll();
  ASSERT_TRUE(Served(w2));
  s = Stats();
  EXPECT_EQ(s.open, 4);
  EXPECT_EQ(s.idle, 2);
  EXPECT_EQ(s.in_use, 2);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(s.checkouts, 6);

  Release(w1);  // pool_size already idle: closed
  s = Stats();
  EXPECT_EQ(s.open, 3);
  EXPECT_EQ(s.idle, 2);
  EXPECT_EQ(s.in_use, 1);
  EXPECT_EQ(s.overflow_in_use, 1);
  EXPECT_EQ(s.overflow_closed, 1);
  EXPECT_EQ(s.checkout_timeouts, 0);
  EXPECT_EQ(s.waiter_rejections, 0);
  EXPECT_EQ(s.recycled, 0);
  EXPECT_EQ(s.invalidated, 0);
  EXPECT_EQ(s.connect_failures, 0);
  EXPECT_EQ(connector_.live(), s.open);
}

// ---- Closing before freeing the slot ----

// A connector whose connections run a hook while they are being closed, so a
// test can act at the moment the pool is in the middle of closing one (what
// another thread might do at that instant) without any timing.
class CloseHookConnector final : public storage::DbConnector {
 public:
  absl::StatusOr<std::unique_ptr<storage::DbConnection>> Connect() override {
    max_live_ = std::max(max_live_, ++live_);
    return std::unique_ptr<storage::DbConnection>(std::make_unique<Connection>(this));
  }
  // Runs once, inside the next connection's destructor.
  void OnNextClose(std::function<void()> hook) { on_close_ = std::move(hook); }
  int live() const { return live_; }
  int max_live() const { return max_live_; }

 private:
  class Connection final : public storage::DbConnection {
   public:
    explicit Connection(CloseHookConnector* owner) : owner_(owner) {}
    ~Connection() override {
      if (auto hook = std::exchange(owner_->on_close_, nullptr)) hook();
      --owner_->live_;
    }
    absl::StatusOr<storage::QueryResult> Execute(const storage::Statement&,
                                                 const storage::ExecuteOptions&) override {
      return absl::UnimplementedError("not used");
    }
    absl::StatusOr<std::vector<storage::QueryResult>> ExecuteBatch(
        absl::Span<const storage::Statement>, const storage::ExecuteOptions&) override {
      return absl::UnimplementedError("not used");
    }
    absl::Status Begin(const storage::TransactionOptions&) override {
      return absl::UnimplementedError("not used");
    }
    absl::Status Commit() override { return absl::UnimplementedError("not used"); }
    absl::Status Rollback() override { return absl::UnimplementedError("not used"); }
    absl::Status Ping() override { return absl::OkStatus(); }
    absl::Status ResetSession() override { return absl::OkStatus(); }
    absl::Status UseRole(const std::string&) override { return absl::OkStatus(); }
    void Cancel() override {}
    void ClearCancel() override {}
    bool IsBroken() const override { return false; }
    int BackendPid() const override { return 0; }

   private:
    CloseHookConnector* const owner_;
  };

  std::function<void()> on_close_;
  int live_ = 0;
  int max_live_ = 0;
};

class ConnectionPoolCloseOrderTest : public ::testing::Test {
 protected:
  void MakePool(int pool_size, int max_overflow) {
    PoolOptions o;
    o.pool_size = pool_size;
    o.max_overflow = max_overflow;
    o.recycle = absl::InfiniteDuration();
    o.pre_ping = false;
    pool_ = std::make_unique<ConnectionPool>(o, connector_, executor_, timers_, clock_);
  }
  void TearDown() override {
    connector_.OnNextClose(nullptr);
    pool_->Close();
    executor_.RunAll();
    held_.clear();
    EXPECT_EQ(connector_.live(), 0);
  }
  // Acquires and keeps the outcome in held_; returns its index.
  size_t Acquire() {
    held_.emplace_back();
    const size_t i = held_.size() - 1;
    pool_->Acquire(AcquireRequest{},
                   [this, i](absl::StatusOr<PooledConnection> r) { held_[i] = std::move(r); });
    return i;
  }
  bool Served(size_t i) const { return held_[i].has_value() && held_[i]->ok(); }
  PooledConnection& Handle(size_t i) { return held_[i]->value(); }

  FakeClock clock_;
  CloseHookConnector connector_;
  ManualExecutor executor_;
  TimerQueue timers_{clock_};
  std::unique_ptr<ConnectionPool> pool_;
  std::deque<std::optional<absl::StatusOr<PooledConnection>>> held_;
};

TEST_F(ConnectionPoolCloseOrderTest, DiscardedConnectionStillCountsUntilItIsClosed) {
  MakePool(/*pool_size=*/1, /*max_overflow=*/0);
  const size_t holder = Acquire();
  executor_.RunAll();
  ASSERT_TRUE(Served(holder));

  // Someone asks for a connection while the broken one is being closed: it
  // must wait for the close, not open a second connection next to it.
  std::optional<size_t> newcomer;
  connector_.OnNextClose([&] {
    newcomer = Acquire();
    executor_.RunAll();
  });
  Handle(holder).MarkBroken();
  Handle(holder).Release();
  ASSERT_TRUE(newcomer.has_value()) << "the broken connection was not closed";
  executor_.RunAll();

  EXPECT_EQ(connector_.max_live(), 1);
  EXPECT_TRUE(Served(*newcomer)) << "served with a fresh connection once the old one closed";
}

TEST_F(ConnectionPoolCloseOrderTest, OverflowConnectionStillCountsUntilItIsClosed) {
  MakePool(/*pool_size=*/1, /*max_overflow=*/1);
  const size_t a = Acquire();
  const size_t b = Acquire();
  executor_.RunAll();
  ASSERT_TRUE(Served(a) && Served(b));
  Handle(a).Release();  // idle: fewer than pool_size were idle

  std::optional<size_t> c;
  std::optional<size_t> d;
  connector_.OnNextClose([&] {
    c = Acquire();  // takes the idle one
    d = Acquire();  // must wait for b's connection to be closed
    executor_.RunAll();
  });
  Handle(b).Release();  // pool_size idle already: closed
  ASSERT_TRUE(c.has_value() && d.has_value()) << "the overflow connection was not closed";
  executor_.RunAll();

  EXPECT_EQ(connector_.max_live(), 2);
  EXPECT_TRUE(Served(*c));
  EXPECT_TRUE(Served(*d));
  EXPECT_EQ(pool_->Stats().overflow_closed, 1);
}

// ---- Concurrency (also run under ThreadSanitizer) ----

// A hang guard only: far longer than anything should take.
constexpr std::chrono::seconds kHangGuard{60};

// Quiets the pool's per-event info logs while many threads churn.
class QuietLogs {
 public:
  QuietLogs() : previous_(spdlog::get_level()) { spdlog::set_level(spdlog::level::warn); }
  ~QuietLogs() { spdlog::set_level(previous_); }

 private:
  spdlog::level::level_enum previous_;
};

struct ClientCounts {
  std::atomic<int> served{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> deadline_exceeded{0};
  std::atomic<int> unavailable{0};
  std::atomic<int> over_bound{0};
};

// One request: Acquire, wait for the outcome, hold the connection briefly and
// give it back (from the callback on the executor, or from the client thread).
// Returns the outcome's code.
absl::StatusCode RunOneRequest(ConnectionPool& pool, const FakeConnector& connector,
                               std::atomic<int>& calls, ClientCounts& counts,
                               const AcquireRequest& request, bool release_in_callback,
                               bool mark_broken, bool cancel) {
  const int bound = pool.options().max_connections();
  std::promise<absl::StatusOr<PooledConnection>> promise;
  std::future<absl::StatusOr<PooledConnection>> future = promise.get_future();
  const ConnectionPool::WaitId id =
      pool.Acquire(request, [&, release_in_callback, mark_broken, promise = std::move(promise)](
                                absl::StatusOr<PooledConnection> result) mutable {
        calls.fetch_add(1);
        if (result.ok()) {
          if (connector.live() > bound) counts.over_bound.fetch_add(1);
          if (mark_broken) result->MarkBroken();
          if (release_in_callback) {
            std::this_thread::yield();  // "hold briefly"
            result->Release();
          }
        }
        promise.set_value(std::move(result));
      });
  if (cancel) pool.CancelWait(id);
  if (future.wait_for(kHangGuard) != std::future_status::ready) {
    ADD_FAILURE() << "a request never completed";
    std::abort();  // the callback still references this frame
  }
  absl::StatusOr<PooledConnection> result = future.get();
  if (result.ok()) {
    counts.served.fetch_add(1);
    if (connector.live() > bound) counts.over_bound.fetch_add(1);
    std::this_thread::yield();
    // Given back by `result`'s destructor (unless the callback already did).
  }
  return result.status().code();
}

TEST(ConnectionPoolConcurrencyTest, ManyClientsAreEachServedExactlyOnceWithinTheBound) {
  QuietLogs quiet;
  constexpr int kClients = 8;
  constexpr int kRequestsPerClient = 150;
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 2;
  o.timeout = absl::Seconds(20);  // generous: nobody should time out (< kHangGuard)
  o.max_waiters = 1000;
  // Exercise every path concurrently: ping at each checkout, recycle often.
  o.pre_ping = true;
  o.pre_ping_after = absl::ZeroDuration();
  o.recycle = absl::Milliseconds(5);
  o.recycle_jitter = 0.5;

  FakeConnector connector;
  ThreadPoolExecutor executor(4, "pool-test");
  TimerQueue timers(RealClock::Get());
  timers.Start();
  ConnectionPool pool(o, connector, executor, timers, RealClock::Get());

  std::vector<std::atomic<int>> calls(kClients * kRequestsPerClient);
  ClientCounts counts;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < kRequestsPerClient; ++r) {
        const int n = c * kRequestsPerClient + r;
        AcquireRequest request;
        const bool short_deadline = r % 11 == 5;
        if (short_deadline) request.deadline = absl::Now() + absl::Microseconds(20);
        const bool cancel = r % 10 == 9;
        const absl::StatusCode code =
            RunOneRequest(pool, connector, calls[n], counts, request,
                          /*release_in_callback=*/c % 2 == 0, /*mark_broken=*/n % 13 == 0, cancel);
        switch (code) {
          case absl::StatusCode::kOk:
            break;
          case absl::StatusCode::kCancelled:
            EXPECT_TRUE(cancel) << "request " << n;
            counts.cancelled.fetch_add(1);
            break;
          case absl::StatusCode::kDeadlineExceeded:
            EXPECT_TRUE(short_deadline) << "request " << n;
            counts.deadline_exceeded.fetch_add(1);
            break;
          default:
            ADD_FAILURE() << "request " << n << ": unexpected " << absl::StatusCodeToString(code);
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  // Quiesce: no task or timer callback still running.
  executor.Shutdown();
  timers.Stop();

  for (size_t n = 0; n < calls.size(); ++n) {
    EXPECT_EQ(calls[n].load(), 1) << "request " << n << "'s callback ran " << calls[n].load()
                                  << " times";
  }
  EXPECT_EQ(counts.served + counts.cancelled + counts.deadline_exceeded,
            kClients * kRequestsPerClient);
  EXPECT_GT(counts.served.load(), 0);
  EXPECT_EQ(counts.over_bound.load(), 0);
  EXPECT_LE(connector.max_live(), o.max_connections());

  const PoolStats s = pool.Stats();
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(s.opening, 0);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(s.idle, s.open);
  EXPECT_EQ(connector.live(), s.open);
  EXPECT_EQ(s.checkouts, counts.served.load());

  pool.Close();
  EXPECT_EQ(connector.live(), 0);
}

TEST(ConnectionPoolConcurrencyTest, CloseWhileClientsAreActiveCompletesEveryRequestOnce) {
  QuietLogs quiet;
  constexpr int kClients = 8;
  constexpr int kRequestsPerClient = 100;
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 1;
  o.timeout = absl::Seconds(20);
  o.max_waiters = 1000;
  o.recycle = absl::InfiniteDuration();

  FakeConnector connector;
  ThreadPoolExecutor executor(4, "pool-test");
  TimerQueue timers(RealClock::Get());
  timers.Start();
  ConnectionPool pool(o, connector, executor, timers, RealClock::Get());

  std::vector<std::atomic<int>> calls(kClients * kRequestsPerClient);
  ClientCounts counts;
  std::promise<void> halfway;
  std::atomic<bool> halfway_signalled{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < kRequestsPerClient; ++r) {
        const int n = c * kRequestsPerClient + r;
        const absl::StatusCode code =
            RunOneRequest(pool, connector, calls[n], counts, AcquireRequest{},
                          /*release_in_callback=*/c % 2 == 0, /*mark_broken=*/false,
                          /*cancel=*/false);
        if (code == absl::StatusCode::kUnavailable) {
          counts.unavailable.fetch_add(1);
        } else {
          EXPECT_EQ(code, absl::StatusCode::kOk) << "request " << n;
        }
        if (r == kRequestsPerClient / 2 && !halfway_signalled.exchange(true)) halfway.set_value();
      }
    });
  }
  ASSERT_EQ(halfway.get_future().wait_for(kHangGuard), std::future_status::ready);
  pool.Close();
  for (std::thread& t : clients) t.join();
  executor.Shutdown();
  timers.Stop();

  for (size_t n = 0; n < calls.size(); ++n) {
    EXPECT_EQ(calls[n].load(), 1) << "request " << n;
  }
  EXPECT_EQ(counts.served + counts.unavailable, kClients * kRequestsPerClient);
  EXPECT_GT(counts.unavailable.load(), 0) << "requests after Close() fail";
  EXPECT_EQ(counts.over_bound.load(), 0);
  EXPECT_LE(connector.max_live(), o.max_connections());
  // Everything came back to a closed pool, so everything is closed.
  EXPECT_EQ(connector.live(), 0);
  const PoolStats s = pool.Stats();
  EXPECT_EQ(s.open, 0);
  EXPECT_EQ(s.waiters, 0);
}

TEST(ConnectionPoolConcurrencyTest, CallersBeyondTheDatabasesLimitWaitAndAreAllServed) {
  QuietLogs quiet;
  constexpr int kClients = 8;
  constexpr int kRequestsPerClient = 120;
  PoolOptions o;
  o.pool_size = 2;
  o.max_overflow = 6;
  o.timeout = absl::Seconds(20);  // generous: nobody should time out (< kHangGuard)
  o.max_waiters = 1000;
  o.recycle = absl::Milliseconds(5);  // replacements get refused too
  o.recycle_jitter = 0.5;
  o.limit_probe.initial = absl::Microseconds(200);
  o.limit_probe.max = absl::Milliseconds(2);

  FakeConnector connector;
  connector.set_server_limit(3);
  ThreadPoolExecutor executor(4, "pool-test");
  TimerQueue timers(RealClock::Get());
  timers.Start();
  ConnectionPool pool(o, connector, executor, timers, RealClock::Get());

  // First the limit is met for certain (the churn below meets it only when
  // its threads happen to overlap): three connections held on a database
  // that takes three, so a fourth caller's connect is refused and it waits
  // until one is given back.
  {
    std::vector<std::future<absl::StatusOr<PooledConnection>>> held;
    for (int i = 0; i < 4; ++i) {
      auto promise = std::make_shared<std::promise<absl::StatusOr<PooledConnection>>>();
      held.push_back(promise->get_future());
      pool.Acquire(AcquireRequest{}, [promise](absl::StatusOr<PooledConnection> result) {
        promise->set_value(std::move(result));
      });
    }
    auto ready = [&held] {
      int n = 0;
      for (auto& f : held) {
        if (f.valid() && f.wait_for(std::chrono::seconds(0)) == std::future_status::ready) ++n;
      }
      return n;
    };
    const auto give_up = std::chrono::steady_clock::now() + kHangGuard;
    while ((ready() < 3 || pool.Stats().limit_refusals == 0) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_GT(pool.Stats().limit_refusals, 0);
    ASSERT_EQ(ready(), 3) << "three are served, the fourth waits";
    // Whichever caller waits is served once another gives its connection back.
    std::vector<absl::StatusOr<PooledConnection>> got;
    int waiting = -1;
    for (int i = 0; i < 4; ++i) {
      if (held[i].wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        got.push_back(held[i].get());
        ASSERT_TRUE(got.back().ok()) << got.back().status();
      } else {
        waiting = i;
      }
    }
    ASSERT_NE(waiting, -1);
    got.front()->Release();
    ASSERT_EQ(held[waiting].wait_for(kHangGuard), std::future_status::ready);
    absl::StatusOr<PooledConnection> last = held[waiting].get();
    EXPECT_TRUE(last.ok()) << last.status();
  }
  const int64_t checkouts_before = pool.Stats().checkouts;

  std::vector<std::atomic<int>> calls(kClients * kRequestsPerClient);
  ClientCounts counts;
  std::atomic<int> done_requests{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < kRequestsPerClient; ++r) {
        const int n = c * kRequestsPerClient + r;
        // Halfway the database makes room for two more.
        if (done_requests.fetch_add(1) == kClients * kRequestsPerClient / 2) {
          connector.set_server_limit(5);
        }
        const bool cancel = r % 10 == 9;
        const absl::StatusCode code =
            RunOneRequest(pool, connector, calls[n], counts, AcquireRequest{},
                          /*release_in_callback=*/c % 2 == 0, /*mark_broken=*/n % 17 == 0, cancel);
        if (code == absl::StatusCode::kCancelled) {
          EXPECT_TRUE(cancel) << "request " << n;
          counts.cancelled.fetch_add(1);
        } else {
          EXPECT_EQ(code, absl::StatusCode::kOk) << "request " << n;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  executor.Shutdown();
  timers.Stop();

  for (size_t n = 0; n < calls.size(); ++n) {
    EXPECT_EQ(calls[n].load(), 1) << "request " << n;
  }
  EXPECT_EQ(counts.served + counts.cancelled, kClients * kRequestsPerClient);
  EXPECT_LE(connector.max_live(), 5);
  const PoolStats s = pool.Stats();
  EXPECT_GT(s.limit_refusals, 0);
  // (No upper bound on connection_limit here: a probe racing a connection
  // being closed may count it once; the next refusal corrects that.)
  EXPECT_GE(s.connection_limit, 1);
  EXPECT_FALSE(s.database_down);
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(s.waiters, 0);
  EXPECT_EQ(s.checkouts - checkouts_before, counts.served.load());
  pool.Close();
  EXPECT_EQ(connector.live(), 0);
}

}  // namespace
}  // namespace sessionbroker::core
