// Mutex, MutexLock and CondVar for the core: std::mutex underneath, with
// Clang thread-safety annotations on top, so that -Wthread-safety checks
// ABSL_GUARDED_BY and ThreadSanitizer sees every lock (Debian's Abseil is not
// built with TSan, so absl::Mutex would hide synchronization from it and
// produce false reports; see docs/design.md).
// Thread-safe, as a mutex should be.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_MUTEX_H_
#define SESSIONBROKER_SERVER_CORE_BASE_MUTEX_H_

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

class ABSL_LOCKABLE Mutex final {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock final {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// Waits use real (steady) time: the injected Clock decides *when* something is
// due, a CondVar only decides how long a thread sleeps before looking again.
class CondVar final {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void Wait(Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }

  // Waits at most `timeout` (spurious wake-ups possible). Returns true if it
  // timed out.
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const auto status = cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout));
    lock.release();
    return status == std::cv_status::timeout;
  }

  // Waits until signalled (or a spurious wake-up) or real time reaches
  // `deadline`. Returns false, without waiting, once the deadline has
  // passed: `while (!done) if (!cv.WaitUntil(&mu, deadline)) return false;`
  bool WaitUntil(Mutex* mu, absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (deadline == absl::InfiniteFuture()) {
      // No timed wait: std::chrono overflows on an infinite timeout and
      // returns at once, which would turn the caller's loop into a spin.
      Wait(mu);
      return true;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    // Bounded, for the same reason; a spurious wake-up is allowed anyway.
    WaitWithTimeout(mu, std::min(left, absl::Hours(24)));
    return true;
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_MUTEX_H_
