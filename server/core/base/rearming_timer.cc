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
  CancelLocked();
  const Token token = next_token_++;
  token_ = token;
  due_ = at;
  ++outstanding_;
  timer_ = timers_.Schedule(at, [this, token] { Run(token); });
}

void RearmingTimer::CancelLocked() {
  // A firing that is already running cannot be cancelled; it will find its
  // token replaced and do nothing, and counts itself out when it returns.
  if (timer_ != 0 && timers_.Cancel(timer_)) --outstanding_;
  timer_ = 0;
}

void RearmingTimer::Run(Token token) {
  bool stopped;
  {
    MutexLock lock(&mu_);
    stopped = stopped_;
  }
  if (!stopped) {
    firing_here = this;
    on_fire_(token);
    firing_here = nullptr;
  }
  MutexLock lock(&mu_);
  if (--outstanding_ == 0) idle_.SignalAll();
}

void RearmingTimer::Disarm() {
  MutexLock lock(&mu_);
  CancelLocked();
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
  MutexLock lock(&mu_);
  stopped_ = true;
  CancelLocked();
  token_ = 0;
  due_ = absl::InfiniteFuture();
  // Not CancelAndWait on the current timer: a stale firing, whose timer id
  // is no longer known, may be running too, and so may one taken out of the
  // queue that has not reached on_fire_ yet (it still locks mu_, so the timer
  // must not be destroyed under it). outstanding_ counts them all.
  const int self = firing_here == this ? 1 : 0;
  while (outstanding_ > self) idle_.Wait(&mu_);
}

}  // namespace sessionbroker::core
