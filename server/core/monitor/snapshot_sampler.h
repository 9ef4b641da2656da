// SnapshotSampler: one sampler feeding every WatchPoolStatus stream
// (fan-out). Watchers ask for a snapshot every `interval`; the sampler takes
// one snapshot per tick (100 ms) for all watchers due at that tick and hands
// each of them the same std::shared_ptr<const PoolSnapshot>, so a thousand
// watchers cost one snapshot per tick, not a thousand. Due times are aligned
// to the tick grid so watchers with the same interval share snapshots even
// when they subscribed at different moments. A new watcher gets its first
// snapshot at once (one taken since the last grid point is reused).
//
// Sampling runs on `executor` (a thread of its own in the server), woken by
// one RearmingTimer on the TimerQueue; nothing is sampled while nobody
// watches. Listeners are
// called with the sampler's lock held, so that after Unwatch() returns a
// listener is neither running nor called again; a listener must therefore
// only hand the snapshot on (LatestOnlyWriter::Offer) and never call back
// into the sampler.
//
// Thread-safe. Stop() it, then drain the executor, before destroying it.
#ifndef SESSIONBROKER_SERVER_CORE_MONITOR_SNAPSHOT_SAMPLER_H_
#define SESSIONBROKER_SERVER_CORE_MONITOR_SNAPSHOT_SAMPLER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/core/base/rearming_timer.h"
#include "server/core/base/timer_queue.h"
#include "server/core/monitor/pool_snapshot.h"

namespace sessionbroker::core {

class SnapshotSampler final {
 public:
  using Snapshot = std::shared_ptr<const PoolSnapshot>;
  using CollectFn = std::function<PoolSnapshot()>;  // thread-safe
  using Listener = absl::AnyInvocable<void(const Snapshot&)>;
  using WatchId = uint64_t;

  static constexpr absl::Duration kTick = absl::Milliseconds(100);
  // The shortest interval a watcher may ask for.
  static constexpr absl::Duration kMinInterval = kTick;

  SnapshotSampler(CollectFn collect, TimerQueue& timers, Executor& executor, const Clock& clock);
  ~SnapshotSampler();
  SnapshotSampler(const SnapshotSampler&) = delete;
  SnapshotSampler& operator=(const SnapshotSampler&) = delete;

  // Calls `listener` with a snapshot now (on the executor) and then every
  // `interval` (at least kMinInterval; shorter ones are raised to it).
  WatchId Watch(absl::Duration interval, Listener listener);
  // After it returns, the listener is not running and never runs again.
  void Unwatch(WatchId id);

  // A fresh snapshot, taken on the calling thread (GetPoolStatus, /metrics).
  Snapshot Current() const;

  // No more snapshots for watchers; the pending wake-up is cancelled, and a
  // wake-up running now has returned. Call it without holding anything a
  // listener takes.
  void Stop();

  int watchers() const { return watcher_count_.load(); }
  // Snapshots taken for watchers so far (Current() not included).
  int64_t samples() const;

 private:
  struct Watcher {
    absl::Duration interval;
    absl::Time next_due;
    Listener listener;
  };

  void Tick();
  // The wake-up's callback: posts a Tick unless the firing is stale.
  void OnTimer(RearmingTimer::Token token);
  Snapshot Take() const;
  // The first grid point at or after t.
  absl::Time GridCeil(absl::Time t) const;
  // The last grid point at or before t.
  absl::Time GridFloor(absl::Time t) const;
  // Makes sure the wake-up is armed no later than the earliest due watcher.
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CollectFn collect_;
  Executor& executor_;
  const Clock& clock_;
  const absl::Time origin_;
  std::atomic<int> watcher_count_{0};

  mutable Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::map<WatchId, Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  WatchId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool kick_posted_ ABSL_GUARDED_BY(mu_) = false;
  Snapshot latest_ ABSL_GUARDED_BY(mu_);
  absl::Time latest_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  // Last: destroyed first, and its callback uses the members above. Its lock
  // is taken after mu_ (ScheduleLocked, OnTimer), never before.
  RearmingTimer wake_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_MONITOR_SNAPSHOT_SAMPLER_H_
