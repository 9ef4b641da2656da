// Time as the core sees it. Every deadline, TTL and timeout is computed from
// an injected Clock so that tests can move time by hand (FakeClock) instead of
// sleeping. Implementations are thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_CLOCK_H_
#define SESSIONBROKER_SERVER_CORE_BASE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The wall clock.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  // A process-wide instance; never destroyed.
  static Clock& Get();
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}
  absl::Time Now() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_CLOCK_H_
