// Microbenchmarks of ConnectionPool checkout + return with fake connections
// (no database): the pool's own bookkeeping, nothing else.
//
//  * BM_CheckoutReturn: one thread, a warmed pool of 16; each iteration is
//    Acquire (the callback receives the PooledConnection) + Release. The
//    executor runs posted tasks at once on the calling thread, so this is the
//    uncontended cost of the pool itself. Arg = length of the client id
//    (0: none; 14: fits std::string's inline buffer; 40: does not).
//  * BM_CheckoutReturnContended: 1..32 threads over the same 16 connections.
//    With more threads than connections some requests queue and are served
//    by hand-off on the releasing thread; the requesting thread spins (with a
//    yield) until its callback ran, then releases. Reported as
//    wall_items_per_second: all threads' checkouts over the run's wall-clock
//    time (items_per_second is unreliable here, see RunContended).
//  * BM_CheckoutReturnContendedBlockingWait: the same, but a waiting thread
//    sleeps on a condition variable instead of spinning (with more threads
//    than cores, spinning waiters take CPU from the threads that would give
//    a connection back).
//  * BM_CheckoutReturnWithReservedFloors: BM_CheckoutReturn with two other
//    clients holding reserved floors (ClientShares::ReservedClients): the
//    cost of checking them on the fast path.
//  * BM_QueuedHandOff: the queued path on one thread: with every connection
//    held and one request always waiting, Acquire queues and a Release hands
//    a connection to the oldest waiter.
//  * BM_CheckoutReturnThreadPoolExecutor: like BM_CheckoutReturn, but with the
//    production ThreadPoolExecutor: what the thread hop to the executor costs
//    when a connection is idle.
//
//   build-micro/tests/bench/pool_benchmark --benchmark_repetitions=5 \
//       --benchmark_report_aggregates_only=true
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/client_shares.h"
#include "server/core/pool/connection_pool.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

constexpr int kPoolSize = 16;

// Runs every task at once, on the posting thread.
class InlineExecutor final : public Executor {
 public:
  void Post(absl::AnyInvocable<void() &&> task) override { std::move(task)(); }
};

PoolOptions BenchOptions() {
  PoolOptions o;
  o.pool_size = kPoolSize;
  o.max_overflow = 0;
  o.timeout = absl::Hours(1);
  o.recycle = absl::InfiniteDuration();
  o.recycle_jitter = 0;
  // Pre-ping on, as by default, but never due: the check runs, the ping not.
  o.pre_ping = true;
  o.pre_ping_after = absl::Hours(1);
  o.max_waiters = 100000;
  o.reconnect_backoff.initial = absl::ZeroDuration();
  return o;
}

// Where a callback leaves its connection for the thread that asked.
struct Mailbox {
  std::optional<PooledConnection> conn;
  std::atomic<bool> ready{false};
  std::atomic<bool> failed{false};
};

ConnectionPool::Callback Deliverer(Mailbox* box) {
  return [box](absl::StatusOr<PooledConnection> result) {
    if (result.ok()) {
      box->conn.emplace(*std::move(result));
    } else {
      box->failed.store(true, std::memory_order_relaxed);
    }
    box->ready.store(true, std::memory_order_release);
  };
}

// Spins (yielding) until `box` has an outcome; returns false on failure.
bool Await(Mailbox& box) {
  while (!box.ready.load(std::memory_order_acquire)) std::this_thread::yield();
  box.ready.store(false, std::memory_order_relaxed);
  return !box.failed.load(std::memory_order_relaxed);
}

// For comparison: a waiter that sleeps on a condition variable instead of
// spinning, so that with more threads than cores the waiting ones give their
// CPU to those holding connections.
struct BlockingMailbox {
  std::optional<PooledConnection> conn;
  bool failed = false;
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
};

ConnectionPool::Callback Deliverer(BlockingMailbox* box) {
  return [box](absl::StatusOr<PooledConnection> result) {
    // Notified under the lock: once the waiter sees `ready` it may go on and,
    // at the end, destroy the box.
    std::lock_guard<std::mutex> lock(box->mu);
    if (result.ok()) {
      box->conn.emplace(*std::move(result));
    } else {
      box->failed = true;
    }
    box->ready = true;
    box->cv.notify_one();
  };
}

bool Await(BlockingMailbox& box) {
  std::unique_lock<std::mutex> lock(box.mu);
  box.cv.wait(lock, [&box] { return box.ready; });
  box.ready = false;
  return !box.failed;
}

// A pool over fake connections with its executor and started timer queue;
// opens `kPoolSize` connections up front so the benchmark never connects.
class Env {
 public:
  explicit Env(std::unique_ptr<Executor> executor, PoolOptions options = BenchOptions())
      : executor_(std::move(executor)), timers_(RealClock::Get()) {
    timers_.Start();
    pool_ = std::make_unique<ConnectionPool>(std::move(options), connector_, *executor_, timers_,
                                             RealClock::Get());
    std::vector<Mailbox> boxes(kPoolSize);
    for (Mailbox& box : boxes) pool_->Acquire(AcquireRequest{}, Deliverer(&box));
    for (Mailbox& box : boxes) {
      if (!Await(box)) std::abort();
    }
    boxes.clear();  // every connection back, idle
  }

  ~Env() {
    pool_->Close();
    // A ThreadPoolExecutor runs what is queued before its threads stop, then
    // the timer thread stops (no waiter is left: Close() cancelled them).
    executor_.reset();
    timers_.Stop();
  }

  ConnectionPool& pool() { return *pool_; }
  const testing::FakeConnector& connector() const { return connector_; }

 private:
  testing::FakeConnector connector_;
  std::unique_ptr<Executor> executor_;
  TimerQueue timers_;
  std::unique_ptr<ConnectionPool> pool_;
};

std::string ClientId(int64_t length) { return std::string(static_cast<size_t>(length), 'c'); }

void RunSingleThread(benchmark::State& state, std::unique_ptr<Executor> executor,
                     PoolOptions options = BenchOptions()) {
  Env env(std::move(executor), std::move(options));
  AcquireRequest request;
  request.client_id = ClientId(state.range(0));
  Mailbox box;
  for (auto _ : state) {
    env.pool().Acquire(request, Deliverer(&box));
    if (!Await(box)) {
      state.SkipWithError("Acquire failed");
      break;
    }
    box.conn->Release();
  }
  state.SetItemsProcessed(state.iterations());
  if (env.connector().connects() != kPoolSize) state.SkipWithError("the pool reconnected");
}

void BM_CheckoutReturn(benchmark::State& state) {
  RunSingleThread(state, std::make_unique<InlineExecutor>());
}
BENCHMARK(BM_CheckoutReturn)->Arg(0)->Arg(14)->Arg(40);

// Two clients (not the one checking out) hold reserved floors of 2 each, as
// a clients file's reserved_connections does: what checking the floors costs
// the fast path of everyone else.
class ReservedShares final : public ClientShares {
 public:
  ClientQuota QuotaFor(absl::string_view id) const override {
    ClientQuota quota;
    if (id == "critical-a" || id == "critical-b") quota.reserved_connections = 2;
    return quota;
  }
  std::vector<std::string> ReservedClients() const override { return {"critical-a", "critical-b"}; }
};

void BM_CheckoutReturnWithReservedFloors(benchmark::State& state) {
  PoolOptions options = BenchOptions();
  options.shares = std::make_shared<ReservedShares>();
  // Room for the 4 held back, so the warm-up still opens all kPoolSize.
  options.max_overflow = 4;
  RunSingleThread(state, std::make_unique<InlineExecutor>(), std::move(options));
}
BENCHMARK(BM_CheckoutReturnWithReservedFloors)->Arg(14);

void BM_CheckoutReturnThreadPoolExecutor(benchmark::State& state) {
  RunSingleThread(state, std::make_unique<ThreadPoolExecutor>(1, "bench-worker"));
}
BENCHMARK(BM_CheckoutReturnThreadPoolExecutor)->Arg(14)->UseRealTime();

// The queued path without threads: every connection is held and one
// request always waits. Each iteration's Acquire queues behind it, and giving
// a connection back hands it to the oldest waiter (inline, through the
// InlineExecutor), which keeps it in place of the one given back.
void BM_QueuedHandOff(benchmark::State& state) {
  Env env(std::make_unique<InlineExecutor>());
  std::vector<PooledConnection> held;
  {
    std::vector<Mailbox> boxes(kPoolSize);
    for (Mailbox& box : boxes) env.pool().Acquire(AcquireRequest{}, Deliverer(&box));
    for (Mailbox& box : boxes) {
      if (!Await(box)) std::abort();
      held.push_back(*std::move(box.conn));
    }
  }
  AcquireRequest request;
  request.client_id = ClientId(14);
  Mailbox boxes[2];
  int oldest = 0;
  env.pool().Acquire(request, Deliverer(&boxes[oldest]));  // the one always waiting
  size_t next = 0;
  for (auto _ : state) {
    env.pool().Acquire(request, Deliverer(&boxes[1 - oldest]));  // queues
    held[next].Release();                                        // hands off to the oldest waiter
    Mailbox& served = boxes[oldest];
    if (!Await(served)) {
      state.SkipWithError("Acquire failed");
      break;
    }
    held[next] = *std::move(served.conn);
    served.conn.reset();
    next = (next + 1) % held.size();
    oldest = 1 - oldest;
  }
  state.SetItemsProcessed(state.iterations());
  held.clear();  // the first one given back serves the last waiter
  Await(boxes[oldest]);
}
BENCHMARK(BM_QueuedHandOff);

// Shared by the threads of one contended run; thread 0 creates it before the
// start barrier and destroys it after the stop barrier.
Env* g_env = nullptr;

template <typename Box>
void RunContended(benchmark::State& state) {
  if (state.thread_index() == 0) g_env = new Env(std::make_unique<InlineExecutor>());
  AcquireRequest request;
  request.client_id = "client-" + std::to_string(state.thread_index() % 4);  // 4 clients
  Box box;
  const absl::Time start = absl::Now();  // before the start barrier
  for (auto _ : state) {
    g_env->pool().Acquire(request, Deliverer(&box));
    if (!Await(box)) {
      state.SkipWithError("Acquire failed");
      break;
    }
    box.conn->Release();
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    // After the stop barrier: every thread is done. Google Benchmark's own
    // rate divides by the threads' mean running time, and a thread starts its
    // clock only once it runs after the start barrier: with more threads than
    // cores, threads that run one after another look as fast as one alone.
    // This rate is over the wall-clock time the whole run took.
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    state.counters["wall_items_per_second"] =
        static_cast<double>(state.iterations()) * state.threads() / seconds;
    if (g_env->connector().connects() != kPoolSize) state.SkipWithError("the pool reconnected");
    delete g_env;
    g_env = nullptr;
  }
}

void BM_CheckoutReturnContended(benchmark::State& state) { RunContended<Mailbox>(state); }
BENCHMARK(BM_CheckoutReturnContended)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Threads(16)
    ->Threads(32)
    ->UseRealTime();

void BM_CheckoutReturnContendedBlockingWait(benchmark::State& state) {
  RunContended<BlockingMailbox>(state);
}
BENCHMARK(BM_CheckoutReturnContendedBlockingWait)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->Threads(16)
    ->Threads(32)
    ->UseRealTime();

// For scale: one read of the clock the pool uses (it reads it a few times per
// checkout + return).
void BM_RealClockNow(benchmark::State& state) {
  const Clock& clock = RealClock::Get();
  for (auto _ : state) benchmark::DoNotOptimize(clock.Now());
}
BENCHMARK(BM_RealClockNow);

}  // namespace
}  // namespace sessionbroker::core

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);  // no "pool: event=connect" lines
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
