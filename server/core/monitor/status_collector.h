// StatusCollector: takes a PoolSnapshot by reading the parts that own the
// numbers: the pool (shape, counters, checkout waits, per-client use), the
// statement runner (counters, durations), the LISTEN connection's hub, the
// health checker (database
// reachable, last error), and a provider of session numbers. It owns none
// of them; they must outlive it.
//
// Thread-safe: Collect() only takes the short locks of the parts it reads.
#ifndef SESSIONBROKER_SERVER_CORE_MONITOR_STATUS_COLLECTOR_H_
#define SESSIONBROKER_SERVER_CORE_MONITOR_STATUS_COLLECTOR_H_

#include <atomic>
#include <functional>
#include <utility>

#include "server/core/base/clock.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/monitor/pool_snapshot.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/pool/health_checker.h"
#include "server/core/session/session_stats.h"

namespace sessionbroker::core {

class StatusCollector final {
 public:
  // Session numbers (SessionManager::Stats()); must be thread-safe.
  using SessionStatsFn = std::function<SessionStats()>;
  static constexpr int kDefaultTopClients = 20;

  StatusCollector(const ConnectionPool& pool, const StatementRunner& runner,
                  const HealthChecker& health, SessionStatsFn sessions, const Clock& clock,
                  int top_clients = kDefaultTopClients);
  StatusCollector(const StatusCollector&) = delete;
  StatusCollector& operator=(const StatusCollector&) = delete;

  PoolSnapshot Collect() const;

  // The listener's numbers (NotificationHub::Stats()); thread-safe. Set
  // before the first Collect(); unset, snapshots show no listener.
  using ListenerStatsFn = std::function<ListenerStats()>;
  void SetListenerStats(ListenerStatsFn listener) { listener_ = std::move(listener); }

  // The Pipeline streams' numbers (SessionBrokerService); thread-safe. Set
  // before the first Collect(); unset, snapshots show zeros.
  using PipelineStreamStatsFn = std::function<PipelineStreamStats()>;
  void SetPipelineStreamStats(PipelineStreamStatsFn streams) {
    pipeline_streams_ = std::move(streams);
  }

  // From now on snapshots say the broker is draining.
  void SetDraining() { draining_.store(true); }
  absl::Time started() const { return started_; }

 private:
  const ConnectionPool& pool_;
  const StatementRunner& runner_;
  const HealthChecker& health_;
  const SessionStatsFn sessions_;
  ListenerStatsFn listener_;                // set before any Collect()
  PipelineStreamStatsFn pipeline_streams_;  // set before any Collect()
  const Clock& clock_;
  const int top_clients_;
  const absl::Time started_;
  const std::string version_;
  std::atomic<bool> draining_{false};
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_MONITOR_STATUS_COLLECTOR_H_
