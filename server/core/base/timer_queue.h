// One-shot timers on the injected Clock: pool waiters' deadlines, statement
// deadlines, periodic health probes. Timers are kept ordered by due time, so
// the cost of a timer does not grow with how many others are pending.
//
// Callbacks run on the thread that calls RunDue(): the queue's own thread once
// Start() is called (production), or the test's thread (with a FakeClock and no
// Start()). Callbacks must be short; they may do a brief blocking call (a
// cancel request to PostgreSQL) but must not wait for other timers.
//
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_TIMER_QUEUE_H_
#define SESSIONBROKER_SERVER_CORE_BASE_TIMER_QUEUE_H_

#include <cstdint>
#include <map>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

class TimerQueue final {
 public:
  using TimerId = uint64_t;  // never 0
  using Callback = absl::AnyInvocable<void() &&>;

  explicit TimerQueue(const Clock& clock);
  ~TimerQueue();  // stops the thread; pending timers are dropped, not run
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `callback` once, as soon as the clock reaches `when`.
  TimerId Schedule(absl::Time when, Callback callback);

  // Removes a pending timer. Returns true if it had not started; false if it
  // already ran, is running, or never existed. Never blocks.
  bool Cancel(TimerId id);

  // Like Cancel, and if the callback is running on another thread right now,
  // waits until it has returned: afterwards the callback is guaranteed not to
  // touch anything the caller is about to free.
  bool CancelAndWait(TimerId id);

  // Runs every timer due at clock.Now(), earliest first. Returns the time the
  // next timer is due (absl::InfiniteFuture() when none is pending).
  absl::Time RunDue();

  // Starts/stops a thread that calls RunDue() whenever a timer is due. Only for
  // a real clock: with a FakeClock, tests call RunDue() themselves.
  void Start();
  void Stop();

  size_t pending() const;

 private:
  using Key = std::pair<absl::Time, TimerId>;

  void ThreadLoop();
  // timers_ and due_ agree (SB_DCHECK; nothing in release builds).
  void CheckInvariantsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  mutable Mutex mu_;
  CondVar changed_;   // a timer due before wake_at_, or Stop()
  CondVar finished_;  // a callback returned
  std::map<Key, Callback> timers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<TimerId, absl::Time> due_ ABSL_GUARDED_BY(mu_);
  TimerId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  TimerId running_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread::id running_thread_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // While the thread sleeps: when it will wake up by itself. InfinitePast
  // while it runs (it looks at the queue before sleeping again).
  absl::Time wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_TIMER_QUEUE_H_
