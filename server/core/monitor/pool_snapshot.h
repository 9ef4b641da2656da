// PoolSnapshot: everything PoolStatus and /metrics report, taken at one
// moment: the pool's configuration and shape, its counters since start,
// recent checkout-wait and statement-duration distributions, sessions,
// per-client occupancy, the LISTEN connection, database reachability, and the broker's version and
// uptime. A plain value (the transport turns it into a v1::PoolStatus, the
// Prometheus renderer into text); shared read-only between watchers through
// std::shared_ptr<const PoolSnapshot>.
#ifndef SESSIONBROKER_SERVER_CORE_MONITOR_POOL_SNAPSHOT_H_
#define SESSIONBROKER_SERVER_CORE_MONITOR_POOL_SNAPSHOT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/core/base/duration_histogram.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/notify/notification_hub.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/session/session_stats.h"

namespace sessionbroker::core {

// One calling service's share of the broker ("x-client-id").
struct ClientShare {
  std::string client_id;
  int in_use = 0;        // connections checked out
  int waiting = 0;       // requests queued for a connection
  int64_t sessions = 0;  // open sessions
  ClientQuota quota;     // in force for it
  // Calls refused for its pool quotas (PoolStats ClientUsage::rejections).
  int64_t quota_rejections = 0;
};

// The Pipeline RPC's streams (issue 14), whether or not the pipelined engine
// runs: kept by the transport's SessionBrokerService.
struct PipelineStreamStats {
  int64_t open = 0;     // streams open now
  uint64_t opened = 0;  // streams opened since start (refused ones included)
  uint64_t calls = 0;   // calls admitted and started on them since start
};

struct PoolSnapshot {
  absl::Time time;  // when it was taken

  // The broker.
  std::string version;
  absl::Time started;
  absl::Duration uptime;
  bool draining = false;  // shutting down: refuses new calls
  int watchers = 0;       // open WatchPoolStatus streams

  // The pool: its knobs, its shape now and its counters since start
  // (pool.clients is empty here: see top_clients).
  PoolOptions config;
  PoolStats pool;

  // Statements since start, and how long they and the checkouts took.
  RunnerStats statements;
  RecentDurations checkout_wait;
  RecentDurations statement_duration;
  HistogramTotals checkout_wait_totals;
  HistogramTotals statement_duration_totals;

  SessionStats sessions;

  // The LISTEN/NOTIFY listener connection, outside the pool's bound.
  ListenerStats listener;

  // The pipelined engine (BROKER_PIPELINE_CONNECTIONS), when configured: its
  // hot connections are part of the bound (the pool has DB_POOL_SIZE minus
  // them).
  std::optional<storage::PipelineStats> pipeline;
  PipelineStreamStats pipeline_streams;

  // The busiest clients (by connections in use and waiting, then sessions),
  // at most top_clients of them; clients_total counts them all.
  std::vector<ClientShare> top_clients;
  int clients_total = 0;

  // The database as the health probes see it.
  bool database_reachable = false;
  std::string last_error;  // empty if none yet
  absl::Time last_error_time = absl::InfinitePast();
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_MONITOR_POOL_SNAPSHOT_H_
