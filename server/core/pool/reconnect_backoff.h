// ReconnectBackoff: how the pool rations connection attempts while the
// database is unreachable, so that an outage costs the database one dial at a
// time instead of one per caller (no thundering herd when it comes back).
//
//  * Up: every attempt may start.
//  * The first failed attempt marks the database down. From then on at most
//    one attempt (the probe) is in flight, and only once the current delay has
//    passed; callers that would need another attempt are refused (the pool
//    fails them at once with UNAVAILABLE naming the last error).
//  * Each failed probe multiplies the delay (initial × multiplier^n, capped at
//    max), randomized by ±jitter so that several brokers do not dial in step.
//    Attempts that were already running when the database went down fail
//    too, but do not lengthen the delay.
//  * Any successful attempt marks the database up again.
//
// A plain state machine with no clock or lock of its own: the pool calls it
// under its mutex with the time from the injected Clock. Thread-compatible.
#ifndef SESSIONBROKER_SERVER_CORE_POOL_RECONNECT_BACKOFF_H_
#define SESSIONBROKER_SERVER_CORE_POOL_RECONNECT_BACKOFF_H_

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

struct BackoffOptions {
  // absl::ZeroDuration() disables rationing: every attempt may start.
  absl::Duration initial = absl::Milliseconds(100);
  absl::Duration max = absl::Seconds(5);
  double multiplier = 2.0;
  double jitter = 0.2;  // each delay is scaled by U[1 - jitter, 1 + jitter)
};

class ReconnectBackoff final {
 public:
  explicit ReconnectBackoff(BackoffOptions options) : options_(options) {}

  // Whether an attempt may start at `now`. If it may while the database is
  // down, this attempt is the probe (*probe = true) and no other may start
  // until it reports back.
  bool TryStart(absl::Time now, bool* probe);
  // The outcome of an attempt that TryStart allowed.
  void OnSuccess(bool probe);
  void OnFailure(absl::Time now, bool probe);

  bool enabled() const { return options_.initial > absl::ZeroDuration(); }
  bool down() const { return down_; }
  // Failed attempts since the database was last reachable.
  int failures() const { return failures_; }
  // When the next probe may start (meaningful while down()).
  absl::Time next_attempt() const { return next_attempt_; }
  bool probe_in_flight() const { return probe_in_flight_; }
  // The delay before the current next_attempt, before jitter.
  absl::Duration delay() const { return delay_; }

 private:
  const BackoffOptions options_;
  absl::BitGen rng_;
  bool down_ = false;
  bool probe_in_flight_ = false;
  int failures_ = 0;
  absl::Duration delay_;
  absl::Time next_attempt_ = absl::InfinitePast();
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_POOL_RECONNECT_BACKOFF_H_
