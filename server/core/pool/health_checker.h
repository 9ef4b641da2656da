// HealthChecker: decides whether the broker can serve, by borrowing a pooled
// connection and pinging PostgreSQL every `interval`. The result drives the
// grpc.health.v1 status (wired in the server), so Kubernetes stops routing to
// a broker whose database is unreachable.
//
//  * ping OK → serving;
//  * cannot connect, or the ping fails → not serving;
//  * no connection free in time (pool saturated) → unchanged: a busy pool is
//    not a dead database, and PoolStatus shows saturation separately;
//  * the database refused a connection for lack of slots (SQLSTATE 53xxx,
//    e.g. 53300 "too many clients") → serving: it answered, it is full,
//    not down (the pool holds at the connections that work).
//
// Thread-safe. Stop() before destroying the pool, executor or timers.
#ifndef SESSIONBROKER_SERVER_CORE_POOL_HEALTH_CHECKER_H_
#define SESSIONBROKER_SERVER_CORE_POOL_HEALTH_CHECKER_H_

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/connection_pool.h"

namespace sessionbroker::core {

// The client id the probes borrow connections under (per-client occupancy).
inline constexpr char kHealthClientId[] = "session-broker/health";

class HealthChecker final {
 public:
  // Called with the new state whenever it changes (and after the first probe),
  // on an executor thread.
  using Listener = absl::AnyInvocable<void(bool serving)>;

  HealthChecker(ConnectionPool& pool, TimerQueue& timers, const Clock& clock,
                absl::Duration interval, Listener listener);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Probes now, then every interval.
  void Start();
  // No further probes start; a probe in flight reports nothing.
  void Stop();

  bool serving() const;
  // The last failure and when it happened (OK / InfinitePast if none yet). A
  // probe that found no connection free is none: the database may be fine.
  absl::Status last_error() const;
  // Its message alone (no absl::Status crosses threads: see connection_pool.cc).
  std::string last_error_message() const;
  absl::Time last_error_time() const;

 private:
  void Probe();
  void Report(const absl::Status& status);

  ConnectionPool& pool_;
  TimerQueue& timers_;
  const Clock& clock_;
  const absl::Duration interval_;
  Listener listener_;

  mutable Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool reported_ ABSL_GUARDED_BY(mu_) = false;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  TimerQueue::TimerId next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  absl::Time last_error_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_POOL_HEALTH_CHECKER_H_
