#include "server/core/monitor/snapshot_sampler.h"

#include <algorithm>
#include <utility>

namespace sessionbroker::core {

SnapshotSampler::SnapshotSampler(CollectFn collect, TimerQueue& timers, Executor& executor,
                                 const Clock& clock)
    : collect_(std::move(collect)),
      executor_(executor),
      clock_(clock),
      origin_(clock.Now()),
      wake_(timers, [this](RearmingTimer::Token token) { OnTimer(token); }) {}

SnapshotSampler::~SnapshotSampler() { Stop(); }

SnapshotSampler::WatchId SnapshotSampler::Watch(absl::Duration interval, Listener listener) {
  bool post = false;
  WatchId id;
  {
    MutexLock lock(&mu_);
    id = next_id_++;
    watchers_.emplace(id,
                      Watcher{std::max(interval, kMinInterval), clock_.Now(), std::move(listener)});
    watcher_count_.fetch_add(1);
    // One kick serves every watcher that arrived before it runs.
    if (!stopped_ && !kick_posted_) post = kick_posted_ = true;
  }
  if (post) executor_.Post([this] { Tick(); });
  return id;
}

void SnapshotSampler::Unwatch(WatchId id) {
  Listener dropped;  // destroyed outside the lock
  MutexLock lock(&mu_);
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  dropped = std::move(it->second.listener);
  watchers_.erase(it);
  watcher_count_.fetch_sub(1);
}

SnapshotSampler::Snapshot SnapshotSampler::Take() const {
  PoolSnapshot s = collect_();
  s.watchers = watcher_count_.load();
  return std::make_shared<const PoolSnapshot>(std::move(s));
}

SnapshotSampler::Snapshot SnapshotSampler::Current() const { return Take(); }

absl::Time SnapshotSampler::GridCeil(absl::Time t) const {
  if (t <= origin_) return origin_;
  absl::Duration rem;
  const int64_t steps = absl::IDivDuration(t - origin_, kTick, &rem);
  return origin_ + kTick * (steps + (rem > absl::ZeroDuration() ? 1 : 0));
}

absl::Time SnapshotSampler::GridFloor(absl::Time t) const {
  if (t <= origin_) return origin_;
  absl::Duration rem;
  return origin_ + kTick * absl::IDivDuration(t - origin_, kTick, &rem);
}

void SnapshotSampler::Tick() {
  const absl::Time now = clock_.Now();
  MutexLock lock(&mu_);
  kick_posted_ = false;
  if (stopped_) return;
  Snapshot snapshot;
  for (auto& [id, w] : watchers_) {
    if (w.next_due > now) continue;
    if (snapshot == nullptr) {
      // A kick shortly after a tick reuses that tick's snapshot: one taken
      // since the last grid point. (Not "within kTick": after a tick that ran
      // late, the next one, on time, would hand its watchers the same
      // snapshot again.)
      if (latest_ != nullptr && latest_time_ >= GridFloor(now)) {
        snapshot = latest_;
      } else {
        snapshot = latest_ = Take();
        latest_time_ = now;
        ++samples_;
      }
    }
    w.listener(snapshot);
    absl::Time next = GridCeil(w.next_due + w.interval);
    if (next <= now) next = GridCeil(now + absl::Nanoseconds(1));  // fell behind: skip
    w.next_due = next;
  }
  ScheduleLocked();
}

void SnapshotSampler::ScheduleLocked() {
  absl::Time earliest = absl::InfiniteFuture();
  for (const auto& [id, w] : watchers_) earliest = std::min(earliest, w.next_due);
  // Nobody watches (earliest is InfiniteFuture): the pending wake-up, if
  // any, finds nothing to do.
  wake_.ArmBy(earliest);
}

void SnapshotSampler::OnTimer(RearmingTimer::Token token) {
  {
    MutexLock lock(&mu_);
    // A replaced wake-up that was already running does nothing: the newer
    // one will fire.
    if (!wake_.Fired(token) || stopped_) return;
  }
  executor_.Post([this] { Tick(); });
}

void SnapshotSampler::Stop() {
  {
    MutexLock lock(&mu_);
    stopped_ = true;
  }
  // Outside mu_: it waits for a running OnTimer, which takes mu_.
  wake_.Stop();
}

int64_t SnapshotSampler::samples() const {
  MutexLock lock(&mu_);
  return samples_;
}

}  // namespace sessionbroker::core
