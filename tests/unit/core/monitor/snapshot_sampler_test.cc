// Specification of SnapshotSampler: one sampler, many watchers, driven by a
// FakeClock (the test moves time in 100 ms ticks and runs due timers and
// posted work by hand), and of the memory bound a slow watcher gets from
// LatestOnlyWriter.
#include "server/core/monitor/snapshot_sampler.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/latest_only_writer.h"
#include "server/core/base/timer_queue.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::ManualExecutor;
using Snapshot = SnapshotSampler::Snapshot;

class SnapshotSamplerTest : public ::testing::Test {
 protected:
  ~SnapshotSamplerTest() override {
    sampler_.Stop();
    executor_.RunAll();
  }

  // Records what one watcher receives.
  struct Received {
    std::vector<Snapshot> snapshots;
    std::vector<absl::Time> at;
  };
  SnapshotSampler::WatchId Watch(absl::Duration interval, Received* into) {
    return sampler_.Watch(interval, [this, into](const Snapshot& s) {
      into->snapshots.push_back(s);
      into->at.push_back(clock_.Now());
    });
  }

  void RunAll() {
    timers_.RunDue();
    executor_.RunAll();
  }
  // Moves time in ticks, running what falls due at each.
  void Step(absl::Duration total) {
    for (absl::Duration d; d < total; d += SnapshotSampler::kTick) {
      clock_.Advance(SnapshotSampler::kTick);
      RunAll();
    }
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  int collects_ = 0;
  SnapshotSampler sampler_{[this] {
                             PoolSnapshot s;
                             s.time = clock_.Now();
                             s.pool.checkouts = ++collects_;
                             return s;
                           },
                           timers_, executor_, clock_};
};

TEST_F(SnapshotSamplerTest, FirstSnapshotArrivesAtOnce) {
  Received r;
  Watch(absl::Seconds(1), &r);
  EXPECT_TRUE(r.snapshots.empty()) << "delivered on the executor, not inline";
  RunAll();  // no time passes
  ASSERT_EQ(r.snapshots.size(), 1u);
  EXPECT_EQ(r.snapshots[0]->time, clock_.Now());
  EXPECT_EQ(r.snapshots[0]->watchers, 1);
}

TEST_F(SnapshotSamplerTest, AWatcherGetsOneSnapshotPerInterval) {
  const absl::Time start = clock_.Now();
  Received r;
  Watch(absl::Seconds(1), &r);
  RunAll();
  Step(absl::Seconds(3));
  ASSERT_EQ(r.snapshots.size(), 4u);
  EXPECT_EQ(r.at[1], start + absl::Seconds(1));
  EXPECT_EQ(r.at[2], start + absl::Seconds(2));
  EXPECT_EQ(r.at[3], start + absl::Seconds(3));
  EXPECT_LT(r.snapshots[2]->pool.checkouts, r.snapshots[3]->pool.checkouts) << "fresh each time";
}

// The monitor thread is busy (a thousand StartWrite calls) or descheduled:
// a tick runs late, the next one on time. Each tick must still bring a fresh
// snapshot, not the late one again.
TEST_F(SnapshotSamplerTest, ATickThatRunsLateDoesNotMakeTheNextOneRepeatItsSnapshot) {
  Received r;
  Watch(absl::Milliseconds(100), &r);
  RunAll();
  clock_.Advance(absl::Milliseconds(100));
  timers_.RunDue();  // the wake-up posts the tick...
  clock_.Advance(absl::Milliseconds(40));
  executor_.RunAll();  // ...which runs 40 ms late
  clock_.Advance(absl::Milliseconds(60));
  RunAll();  // the next tick, on time
  ASSERT_EQ(r.snapshots.size(), 3u);
  EXPECT_NE(r.snapshots[2].get(), r.snapshots[1].get()) << "the same snapshot twice";
  EXPECT_EQ(r.snapshots[2]->time, r.at[2]);
}

TEST_F(SnapshotSamplerTest, IntervalsBelowTheMinimumAreRaisedToIt) {
  Received r;
  Watch(absl::Milliseconds(1), &r);
  RunAll();
  Step(absl::Seconds(1));
  EXPECT_EQ(r.snapshots.size(), 11u);  // at once, then every 100 ms
}

TEST_F(SnapshotSamplerTest, AThousandWatchersShareOneSnapshotPerTick) {
  std::vector<Received> r(1000);
  for (Received& one : r) Watch(absl::Seconds(1), &one);
  RunAll();
  EXPECT_EQ(sampler_.samples(), 1) << "one kick for all of them";
  Step(absl::Seconds(2));
  EXPECT_EQ(sampler_.samples(), 3);
  EXPECT_EQ(collects_, 3);
  for (const Received& one : r) {
    ASSERT_EQ(one.snapshots.size(), 3u);
    EXPECT_EQ(one.snapshots[2].get(), r[0].snapshots[2].get()) << "the very same snapshot";
  }
  EXPECT_EQ(r[0].snapshots[0]->watchers, 1000);
}

TEST_F(SnapshotSamplerTest, WatchersThatArriveAtDifferentMomentsStillShareTicks) {
  std::vector<Received> r(300);
  // One new watcher every 10 ms for three seconds.
  for (Received& one : r) {
    Watch(absl::Seconds(1), &one);
    clock_.Advance(absl::Milliseconds(10));
    RunAll();
  }
  const int64_t before = sampler_.samples();
  Step(absl::Seconds(5));
  // At most one snapshot per 100 ms tick, however many watchers.
  EXPECT_LE(sampler_.samples() - before, 50);
  for (const Received& one : r) EXPECT_GE(one.snapshots.size(), 5u);
}

TEST_F(SnapshotSamplerTest, NothingIsSampledWhileNobodyWatches) {
  Received r;
  const SnapshotSampler::WatchId id = Watch(absl::Milliseconds(100), &r);
  RunAll();
  Step(absl::Milliseconds(500));
  sampler_.Unwatch(id);
  const size_t received = r.snapshots.size();
  const int64_t samples = sampler_.samples();
  Step(absl::Seconds(3));
  EXPECT_EQ(r.snapshots.size(), received) << "an unwatched listener is never called";
  EXPECT_EQ(sampler_.samples(), samples);
  EXPECT_EQ(sampler_.watchers(), 0);
}

TEST_F(SnapshotSamplerTest, StopEndsDeliveries) {
  Received r;
  Watch(absl::Milliseconds(100), &r);
  RunAll();
  sampler_.Stop();
  Step(absl::Seconds(1));
  EXPECT_EQ(r.snapshots.size(), 1u);
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(SnapshotSamplerTest, CurrentTakesAFreshSnapshotWithoutWatchers) {
  const Snapshot a = sampler_.Current();
  clock_.Advance(absl::Seconds(1));
  const Snapshot b = sampler_.Current();
  EXPECT_EQ(b->time - a->time, absl::Seconds(1));
  EXPECT_EQ(sampler_.samples(), 0);
}

// A watcher whose client never reads: its stream's write never completes.
// It holds the snapshot being written and the newest one, nothing more, while
// a fast watcher on the same sampler gets every snapshot.
TEST_F(SnapshotSamplerTest, ASlowWatcherHoldsAtMostOnePendingSnapshotAndDelaysNoOne) {
  std::vector<std::weak_ptr<const PoolSnapshot>> seen;
  int fast_writes = 0;
  LatestOnlyWriter<PoolSnapshot>* fast_ptr = nullptr;
  LatestOnlyWriter<PoolSnapshot> fast(
      [&](const PoolSnapshot&) {
        ++fast_writes;
        fast_ptr->OnWriteDone(true);  // the client reads at once
      },
      [] {});
  fast_ptr = &fast;
  std::vector<int64_t> slow_writes;
  LatestOnlyWriter<PoolSnapshot> slow(
      [&](const PoolSnapshot& s) { slow_writes.push_back(s.pool.checkouts); }, [] {});

  sampler_.Watch(absl::Milliseconds(100), [&](const Snapshot& s) {
    seen.push_back(s);
    fast.Offer(s);
  });
  sampler_.Watch(absl::Milliseconds(100), [&](const Snapshot& s) { slow.Offer(s); });
  RunAll();
  Step(absl::Seconds(5));

  EXPECT_EQ(fast_writes, 51);
  EXPECT_EQ(slow_writes.size(), 1u) << "its first write never completed";
  EXPECT_TRUE(slow.has_pending());
  EXPECT_EQ(slow.superseded(), 49);
  int alive = 0;
  for (const auto& w : seen) alive += w.expired() ? 0 : 1;
  // The sampler's latest, the slow watcher's write in flight, its pending one.
  EXPECT_LE(alive, 3) << "old snapshots are freed, not queued";

  // The slow client finally reads: it gets the newest snapshot, not the next.
  slow.OnWriteDone(true);
  ASSERT_EQ(slow_writes.size(), 2u);
  EXPECT_EQ(slow_writes[1], seen.back().lock()->pool.checkouts);
}

}  // namespace
}  // namespace sessionbroker::core
