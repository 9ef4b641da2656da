#include "server/core/base/rearming_timer.h"

#include <utility>

namespace sessionbroker::core {
namespace {

// The timer whose callback this thread is running, so Stop() called from
// inside the callback does not wait for itself.
thread_local const RearmingTimer* firing_here = nullptr;

}  // namespace

RearmingTimer::RearmingTimer(TimerQueue& timers, Callback on_fire)
    : timers_(timers), on_fire_(std::move(on_fire)) {}

RearmingTimer::~RearmingTimer() { Stop(); }

void RearmingTimer::ArmBy(absl::Time at) {
  MutexLock lock(&mu_);
  if (stopped_ || at == absl::InfiniteFuture() || at >= due_) return;
  // A pending firing that is already running cannot be cancelled; it will
  // find its token replaced and do nothing.
  if (timer_ != 0) timers_.Cancel(timer_);
  const Token token = next_token_++;
  token_ = token;
  due_ = at;
  timer_ = timers_.Schedule(at, [this, token] {
    {
      MutexLock lock(&mu_);
      if (stopped_) return;
      ++running_;
    }
    firing_here = this;
    on_fire_(token);
    firing_here = nullptr;
    MutexLock lock(&mu_);
    if (--running_ == 0) idle_.SignalAll();
  });
}

void RearmingTimer::Disarm() {
  MutexLock lock(&mu_);
  if (timer_ != 0) timers_.Cancel(timer_);
  timer_ = 0;
  token_ = 0;
  due_ = absl::InfiniteFuture();
}

bool RearmingTimer::Fired(Token token) {
  MutexLock lock(&mu_);
  if (token == 0 || token != token_) return false;
  timer_ = 0;
  token_ = 0;
  due_ = absl::InfiniteFuture();
  return true;
}

absl::Time RearmingTimer::due() const {
  MutexLock lock(&mu_);
  return due_;
}

void RearmingTimer::Stop() {
  TimerQueue::TimerId timer;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    timer = std::exchange(timer_, 0);
    token_ = 0;
    due_ = absl::InfiniteFuture();
  }
  // Not CancelAndWait: the callback to wait for may be a stale one, whose
  // timer id is no longer known; running_ counts them all.
  if (timer != 0) timers_.Cancel(timer);
  const int self = firing_here == this ? 1 : 0;
  MutexLock lock(&mu_);
  while (running_ > self) idle_.Wait(&mu_);
}

}  // namespace sessionbroker::core
