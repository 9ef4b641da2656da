// RearmingTimer: one timer on a TimerQueue, kept armed for the earliest of
// its owner's deadlines (the pool's waiter expiry, the session reaper, the
// snapshot sampler). Arming for a later time than the pending one changes
// nothing; arming for an earlier one replaces it.
//
// The race it settles once for everyone: a firing can already be running
// (taken out of the queue, not yet holding the owner's lock) when the owner
// re-arms. So the callback is given a token, and the owner, under its own
// lock, asks Fired(token) first: true means this firing is the current
// arming (the timer is now disarmed, and the owner re-arms for its next
// deadline if it has one); false means a newer arming replaced it, and the
// callback must do nothing (the newer one will fire).
//
// Thread-safe. The internal lock is a leaf: ArmBy, Disarm and Fired may be
// called under the owner's lock, and the callback runs with no lock held, on
// the TimerQueue's thread. Stop() waits for a running callback, so call it
// without the owner's lock; after it returns the callback never runs again
// and nothing on the TimerQueue touches the timer, so it may be destroyed.
// The TimerQueue must outlive the timer, and the timer must not be destroyed
// from inside its own callback.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_REARMING_TIMER_H_
#define SESSIONBROKER_SERVER_CORE_BASE_REARMING_TIMER_H_

#include <cstdint>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/core/base/mutex.h"
#include "server/core/base/timer_queue.h"

namespace sessionbroker::core {

class RearmingTimer final {
 public:
  // Identifies one arming; never 0.
  using Token = uint64_t;
  using Callback = absl::AnyInvocable<void(Token)>;

  RearmingTimer(TimerQueue& timers, Callback on_fire);
  ~RearmingTimer();  // Stop()
  RearmingTimer(const RearmingTimer&) = delete;
  RearmingTimer& operator=(const RearmingTimer&) = delete;

  // Makes the timer fire no later than `at`: arms it if disarmed, re-arms it
  // if it is armed for later, and otherwise leaves it alone. Does nothing
  // after Stop() or for an infinite `at`. Never blocks.
  void ArmBy(absl::Time at);
  // Cancels the pending firing, if any. A firing already running will find
  // itself stale. Never blocks.
  void Disarm();
  // In the callback, under the owner's lock: whether `token` is the current
  // arming. If so the timer is disarmed by this call.
  bool Fired(Token token);

  // When the timer will fire; InfiniteFuture when disarmed.
  absl::Time due() const;

  // Disarms for good and waits until no callback runs on another thread
  // (also a stale one, or one about to start). Idempotent. Called from the
  // callback itself, it does not wait for that callback.
  void Stop();

 private:
  // Cancels the pending TimerQueue timer, if it has not started.
  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What every scheduled TimerQueue callback runs.
  void Run(Token token);

  TimerQueue& timers_;
  Callback on_fire_;
  mutable Mutex mu_;
  TimerQueue::TimerId timer_ ABSL_GUARDED_BY(mu_) = 0;
  Token token_ ABSL_GUARDED_BY(mu_) = 0;  // the current arming; 0 when disarmed
  Token next_token_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Time due_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // TimerQueue callbacks scheduled and neither cancelled nor returned: each
  // may still lock mu_ and call on_fire_.
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  CondVar idle_;  // outstanding_ dropped
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_REARMING_TIMER_H_
