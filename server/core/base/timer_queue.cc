#include "server/core/base/timer_queue.h"

#include <pthread.h>

#include <algorithm>

#include "server/core/base/invariant.h"

namespace sessionbroker::core {

TimerQueue::TimerQueue(const Clock& clock) : clock_(clock) {}

TimerQueue::~TimerQueue() { Stop(); }

TimerQueue::TimerId TimerQueue::Schedule(absl::Time when, Callback callback) {
  MutexLock lock(&mu_);
  const TimerId id = next_id_++;
  timers_.emplace(Key{when, id}, std::move(callback));
  due_.emplace(id, when);
  CheckInvariantsLocked();
  // Wake the thread only if it sleeps past the new timer. A thread that is
  // not sleeping looks at the queue before it does; one that sleeps until an
  // earlier (perhaps since cancelled) deadline finds this timer when it wakes.
  // Per-call deadline timers are scheduled and cancelled on every call, and
  // waking the thread for each would cost a context switch per call.
  if (when < wake_at_) changed_.Signal();
  return id;
}

bool TimerQueue::Cancel(TimerId id) {
  Callback dropped;  // destroyed outside the lock: it may own arbitrary state
  MutexLock lock(&mu_);
  auto it = due_.find(id);
  if (it == due_.end()) return false;
  auto node = timers_.find(Key{it->second, id});
  SB_DCHECK(node != timers_.end());
  dropped = std::move(node->second);
  timers_.erase(node);
  due_.erase(it);
  CheckInvariantsLocked();
  return true;
}

bool TimerQueue::CancelAndWait(TimerId id) {
  if (Cancel(id)) return true;
  MutexLock lock(&mu_);
  // A callback cancelling its own timer must not wait for itself.
  while (running_id_ == id && running_thread_ != std::this_thread::get_id()) {
    finished_.Wait(&mu_);
  }
  return false;
}

absl::Time TimerQueue::RunDue() {
  for (;;) {
    Callback callback;
    {
      MutexLock lock(&mu_);
      const absl::Time now = clock_.Now();
      if (timers_.empty()) return absl::InfiniteFuture();
      auto first = timers_.begin();
      if (first->first.first > now) return first->first.first;
      running_id_ = first->first.second;
      running_thread_ = std::this_thread::get_id();
      callback = std::move(first->second);
      due_.erase(first->first.second);
      timers_.erase(first);
      CheckInvariantsLocked();
    }
    std::move(callback)();
    callback = nullptr;
    MutexLock lock(&mu_);
    running_id_ = 0;
    finished_.SignalAll();
  }
}

void TimerQueue::Start() {
  MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { ThreadLoop(); });
  pthread_setname_np(thread_.native_handle(), "sb-timers");
}

void TimerQueue::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    changed_.SignalAll();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void TimerQueue::CheckInvariantsLocked() const {
  // Every pending timer is in both maps (a size check: the full cross-check
  // would cost O(n) per call on the per-call deadline path), and the one
  // running is in neither.
  SB_DCHECK(timers_.size() == due_.size());
  SB_DCHECK(running_id_ == 0 || !due_.contains(running_id_));
}

size_t TimerQueue::pending() const {
  MutexLock lock(&mu_);
  return timers_.size();
}

void TimerQueue::ThreadLoop() {
  for (;;) {
    const absl::Time next = RunDue();
    MutexLock lock(&mu_);
    if (stopping_) return;
    // Re-check under the lock: a timer scheduled after RunDue() returned
    // signalled before we started waiting, so look at the queue, not `next`.
    const absl::Time wake =
        timers_.empty() ? absl::InfiniteFuture() : std::min(next, timers_.begin()->first.first);
    const absl::Duration wait = wake - clock_.Now();
    if (wait <= absl::ZeroDuration()) continue;
    // Sleep in bounded slices so a clock that jumps is noticed.
    const absl::Duration slice = std::min(wait, absl::Seconds(1));
    wake_at_ = clock_.Now() + slice;
    changed_.WaitWithTimeout(&mu_, slice);
    wake_at_ = absl::InfinitePast();
    if (stopping_) return;
  }
}

}  // namespace sessionbroker::core
