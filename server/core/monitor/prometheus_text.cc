#include "server/core/monitor/prometheus_text.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/core/base/escape.h"

namespace sessionbroker::core {
namespace {

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 9e15) return absl::StrCat(static_cast<int64_t>(v));
  return absl::StrFormat("%.6f", v);  // seconds to the microsecond
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

double UnixSeconds(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return 0;
  return absl::ToDoubleSeconds(t - absl::UnixEpoch());
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// Writes families: a HELP and a TYPE line, then its samples.
class Writer {
 public:
  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(absl::string_view name, double value, const Labels& labels = {}) {
    out_.append(name.data(), name.size());
    if (!labels.empty()) {
      out_.push_back('{');
      for (size_t i = 0; i < labels.size(); ++i) {
        absl::StrAppend(&out_, i == 0 ? "" : ",", labels[i].first, "=\"",
                        EscapePrometheusLabel(labels[i].second), "\"");
      }
      out_.push_back('}');
    }
    absl::StrAppend(&out_, " ", Number(value), "\n");
  }
  // A family with one unlabelled sample.
  void Gauge(absl::string_view name, double value, absl::string_view help) {
    Family(name, "gauge", help);
    Sample(name, value);
  }
  void Counter(absl::string_view name, double value, absl::string_view help) {
    Family(name, "counter", help);
    Sample(name, value);
  }
  void Histogram(absl::string_view name, const HistogramTotals& h, absl::string_view help) {
    Family(name, "histogram", help);
    const std::string bucket = absl::StrCat(name, "_bucket");
    for (size_t i = 0; i < h.bounds_seconds.size(); ++i) {
      Sample(bucket, static_cast<double>(h.cumulative[i]),
             {{"le", absl::StrCat(h.bounds_seconds[i])}});
    }
    Sample(bucket, static_cast<double>(h.count), {{"le", "+Inf"}});
    Sample(absl::StrCat(name, "_sum"), h.sum_seconds);
    Sample(absl::StrCat(name, "_count"), static_cast<double>(h.count));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

// Kept for callers of prometheus_text.h; the escaping is base's.
std::string EscapeLabelValue(absl::string_view value) { return EscapePrometheusLabel(value); }

std::string RenderPrometheus(const PoolSnapshot& s) {
  Writer w;
  const PoolStats& p = s.pool;

  // The broker.
  w.Family("sessionbroker_build_info", "gauge", "The broker's version (always 1).");
  w.Sample("sessionbroker_build_info", 1, {{"version", s.version}});
  w.Gauge("sessionbroker_start_time_seconds", UnixSeconds(s.started),
          "When the broker started, in seconds since the Unix epoch.");
  w.Gauge("sessionbroker_uptime_seconds", Seconds(s.uptime), "Seconds since the broker started.");
  w.Gauge("sessionbroker_draining", s.draining ? 1 : 0,
          "1 while the broker shuts down and refuses new calls.");
  w.Gauge("sessionbroker_monitor_watchers", s.watchers, "Open WatchPoolStatus streams.");

  // Configuration.
  w.Gauge("sessionbroker_pool_size", s.config.pool_size, "DB_POOL_SIZE.");
  w.Gauge("sessionbroker_pool_max_overflow", s.config.max_overflow, "DB_MAX_OVERFLOW.");
  w.Gauge("sessionbroker_pool_max_connections", s.config.max_connections(),
          "DB_POOL_SIZE + DB_MAX_OVERFLOW: the bound on open connections.");
  w.Gauge("sessionbroker_pool_timeout_seconds", Seconds(s.config.timeout), "DB_POOL_TIMEOUT.");
  w.Gauge("sessionbroker_pool_recycle_seconds",
          s.config.recycle == absl::InfiniteDuration() ? -1 : Seconds(s.config.recycle),
          "DB_POOL_RECYCLE (-1: never).");
  w.Gauge("sessionbroker_pool_max_waiters", s.config.max_waiters, "DB_POOL_MAX_WAITERS.");

  // Shape now.
  w.Family("sessionbroker_pool_connections", "gauge",
           "Open connections by state; they add up to the open connections.");
  w.Sample("sessionbroker_pool_connections", p.idle, {{"state", "idle"}});
  w.Sample("sessionbroker_pool_connections", p.in_use, {{"state", "in_use"}});
  w.Sample("sessionbroker_pool_connections", p.opening, {{"state", "opening"}});
  w.Gauge("sessionbroker_pool_connections_open", p.open,
          "Open connections (idle + in use + opening).");
  w.Gauge("sessionbroker_pool_overflow_connections", p.overflow_in_use,
          "Connections open beyond DB_POOL_SIZE.");
  w.Gauge("sessionbroker_pool_connection_limit", p.connection_limit,
          "The effective limit on open connections: DB_POOL_SIZE + DB_MAX_OVERFLOW until the "
          "database refuses a connect for lack of slots (53300), then the connections that "
          "worked, growing again by probes.");
  w.Gauge("sessionbroker_pool_waiters", p.waiters, "Calls queued for a connection.");
  w.Gauge("sessionbroker_pool_oldest_wait_seconds", Seconds(p.oldest_wait),
          "How long the oldest queued call has waited (0 when none).");

  // Counters since start.
  w.Counter("sessionbroker_pool_connects_total", p.connects, "Connections opened.");
  w.Counter("sessionbroker_pool_connect_failures_total", p.connect_failures,
            "Connection attempts that failed.");
  w.Counter("sessionbroker_pool_checkouts_total", p.checkouts, "Connections handed to callers.");
  w.Counter("sessionbroker_pool_checkout_timeouts_total", p.checkout_timeouts,
            "Waits for a connection that ended without one (DB_POOL_TIMEOUT or the call's "
            "deadline).");
  w.Counter("sessionbroker_pool_waiter_rejections_total", p.waiter_rejections,
            "Calls refused at once because DB_POOL_MAX_WAITERS callers already waited.");
  w.Counter("sessionbroker_pool_backoff_rejections_total", p.backoff_rejections,
            "Calls failed at once, without dialing, while the database was unreachable.");
  w.Counter("sessionbroker_pool_limit_refusals_total", p.limit_refusals,
            "Connects the database refused for lack of connection slots (SQLSTATE 53300).");
  w.Counter("sessionbroker_pool_recycled_total", p.recycled,
            "Connections closed for age (DB_POOL_RECYCLE).");
  w.Counter("sessionbroker_pool_invalidated_total", p.invalidated, "Broken connections discarded.");
  w.Counter("sessionbroker_pool_pre_ping_failures_total", p.pre_ping_failures,
            "Connections whose pre-ping failed.");
  w.Counter("sessionbroker_pool_overflow_closed_total", p.overflow_closed,
            "Overflow connections closed on return.");
  w.Counter("sessionbroker_statements_total", s.statements.statements, "Statements run.");
  w.Counter("sessionbroker_statement_errors_total", s.statements.statement_errors,
            "Calls whose statement or batch failed.");
  w.Counter("sessionbroker_statement_cancellations_total", s.statements.cancellations,
            "Statements cancelled by a deadline or by their caller.");
  w.Counter("sessionbroker_session_resets_total", s.statements.session_resets,
            "Connections reset after a statement that changes session state.");

  w.Histogram("sessionbroker_pool_checkout_wait_seconds", s.checkout_wait_totals,
              "From the request for a connection to its delivery.");
  w.Histogram("sessionbroker_statement_duration_seconds", s.statement_duration_totals,
              "How long statements (a batch counts once) ran on their connection.");

  // Sessions.
  const SessionStats& ss = s.sessions;
  w.Gauge("sessionbroker_sessions_open", ss.open, "Open logical sessions.");
  w.Gauge("sessionbroker_sessions_in_transaction", ss.in_transaction,
          "Sessions with a transaction open (each pins a connection).");
  w.Gauge("sessionbroker_sessions_held_by_stream", ss.held_by_stream,
          "Sessions kept alive by a KeepAlive stream.");
  w.Gauge("sessionbroker_session_queued_calls", ss.queued_calls,
          "Calls waiting behind a session's running call.");
  w.Counter("sessionbroker_sessions_begun_total", ss.begun, "Sessions begun.");
  w.Counter("sessionbroker_sessions_rejected_total", ss.rejected,
            "BeginSession calls refused by a session quota.");
  w.Family("sessionbroker_sessions_ended_total", "counter", "Sessions ended, by why.");
  w.Sample("sessionbroker_sessions_ended_total", ss.ended_by_client, {{"reason", "client"}});
  w.Sample("sessionbroker_sessions_ended_total", ss.expired, {{"reason", "expired"}});
  w.Sample("sessionbroker_sessions_ended_total", ss.orphaned, {{"reason", "orphaned"}});
  w.Sample("sessionbroker_sessions_ended_total", ss.lifetime_exceeded,
           {{"reason", "lifetime_exceeded"}});
  w.Sample("sessionbroker_sessions_ended_total", ss.ended_by_shutdown, {{"reason", "shutdown"}});
  w.Counter("sessionbroker_transactions_begun_total", ss.transactions_begun,
            "Session transactions begun.");
  w.Family("sessionbroker_transactions_ended_total", "counter",
           "Session transactions ended, by outcome.");
  w.Sample("sessionbroker_transactions_ended_total", ss.transactions_committed,
           {{"outcome", "committed"}});
  w.Sample("sessionbroker_transactions_ended_total", ss.transactions_rolled_back,
           {{"outcome", "rolled_back"}});
  w.Sample("sessionbroker_transactions_ended_total", ss.transactions_failed,
           {{"outcome", "failed"}});
  w.Family("sessionbroker_transactions_killed_total", "counter",
           "Session transactions rolled back by the broker, by the deadline that fired.");
  w.Sample("sessionbroker_transactions_killed_total", ss.tx_killed_idle, {{"reason", "idle"}});
  w.Sample("sessionbroker_transactions_killed_total", ss.tx_killed_max_duration,
           {{"reason", "max_duration"}});
  w.Sample("sessionbroker_transactions_killed_total", ss.tx_killed_session_end,
           {{"reason", "session_end"}});

  // Per client (the busiest ones).
  w.Gauge("sessionbroker_clients", s.clients_total,
          "Clients (x-client-id) with connections in use, calls waiting or sessions open.");
  w.Family("sessionbroker_client_connections_in_use", "gauge",
           "Connections in use per client (the busiest clients only).");
  for (const ClientShare& c : s.top_clients) {
    w.Sample("sessionbroker_client_connections_in_use", c.in_use, {{"client", c.client_id}});
  }
  w.Family("sessionbroker_client_waiters", "gauge",
           "Calls waiting for a connection per client (the busiest clients only).");
  for (const ClientShare& c : s.top_clients) {
    w.Sample("sessionbroker_client_waiters", c.waiting, {{"client", c.client_id}});
  }
  w.Family("sessionbroker_client_quota_rejections_total", "counter",
           "Calls refused for a client's connection or waiter quota (the busiest clients only; "
           "a client forgotten while idle starts again from 0).");
  for (const ClientShare& c : s.top_clients) {
    w.Sample("sessionbroker_client_quota_rejections_total", static_cast<double>(c.quota_rejections),
             {{"client", c.client_id}});
  }
  w.Family("sessionbroker_client_quota", "gauge",
           "A client's quotas in force, by quota (0 = no cap of its own) and its fair-queuing "
           "weight (the busiest clients only).");
  for (const ClientShare& c : s.top_clients) {
    const std::pair<const char*, int> quotas[] = {
        {"weight", c.quota.weight},
        {"max_connections", c.quota.max_connections},
        {"max_waiters", c.quota.max_waiters},
        {"max_sessions", c.quota.max_sessions},
        {"reserved_connections", c.quota.reserved_connections}};
    for (const auto& [quota, value] : quotas) {
      w.Sample("sessionbroker_client_quota", value, {{"client", c.client_id}, {"quota", quota}});
    }
  }
  w.Gauge("sessionbroker_fair_queuing", s.config.fair_queuing ? 1 : 0,
          "1 when waiting calls are served by weighted fair queuing across clients "
          "(BROKER_FAIR_QUEUING), 0 for one FIFO queue.");
  w.Family("sessionbroker_client_sessions_open", "gauge",
           "Open sessions per client (the busiest clients only).");
  for (const ClientShare& c : s.top_clients) {
    w.Sample("sessionbroker_client_sessions_open", static_cast<double>(c.sessions),
             {{"client", c.client_id}});
  }

  // The LISTEN/NOTIFY listener connection (outside the pool's bound).
  const ListenerStats& ls = s.listener;
  w.Gauge("sessionbroker_listener_connections", ls.connections,
          "1 while the dedicated LISTEN connection is open (outside the pool's bound).");
  w.Gauge("sessionbroker_listener_channels", ls.channels, "Channels LISTENed on it.");
  w.Gauge("sessionbroker_listener_subscribers", ls.subscribers, "Open Listen streams.");
  w.Counter("sessionbroker_listener_notifications_received_total",
            static_cast<double>(ls.notifications_received),
            "Notifications received from PostgreSQL.");
  w.Counter("sessionbroker_listener_notifications_dropped_total",
            static_cast<double>(ls.notifications_dropped),
            "Notifications dropped from full subscriber queues (each reported as a gap).");
  w.Counter("sessionbroker_listener_connections_lost_total",
            static_cast<double>(ls.connections_lost),
            "Listener connections lost (each followed by a RECONNECTED gap).");

  // The Pipeline RPC's streams, with or without the engine.
  const PipelineStreamStats& ps = s.pipeline_streams;
  w.Gauge("sessionbroker_pipeline_streams_open", static_cast<double>(ps.open),
          "Pipeline streams open.");
  w.Counter("sessionbroker_pipeline_streams_total", static_cast<double>(ps.opened),
            "Pipeline streams opened (those refused at once included).");
  w.Counter("sessionbroker_pipeline_stream_calls_total", static_cast<double>(ps.calls),
            "Calls admitted and started on Pipeline streams (whichever path ran them).");

  // The pipelined engine (issue 14), when configured.
  if (s.pipeline.has_value()) {
    const storage::PipelineStats& pl = *s.pipeline;
    w.Gauge("sessionbroker_pipeline_loops", pl.loops,
            "Event-loop threads the hot connections are divided among (BROKER_PIPELINE_LOOPS).");
    w.Gauge("sessionbroker_pipeline_max_depth", pl.max_depth,
            "Statements in flight per pipelined connection, at most (BROKER_PIPELINE_DEPTH).");
    w.Gauge("sessionbroker_pipeline_statements_per_flush", pl.recent_statements_per_flush,
            "Statements written per connection per dispatch round, a moving average over about "
            "the last 100 flushes.");
    w.Counter("sessionbroker_pipeline_calls_total", static_cast<double>(pl.calls),
              "Calls the pipelined engine answered (errors, deadlines and cancels included).");
    w.Counter("sessionbroker_pipeline_errors_total", static_cast<double>(pl.errors),
              "Calls the pipelined engine answered with an error status.");
    w.Gauge("sessionbroker_pipeline_connections", pl.connections,
            "Hot connections of the pipelined engine (BROKER_PIPELINE_CONNECTIONS, within the "
            "pool's bound).");
    w.Gauge("sessionbroker_pipeline_connections_up", pl.connections_up,
            "Pipelined connections connected and in pipeline mode.");
    w.Gauge("sessionbroker_pipeline_depth", static_cast<double>(pl.in_flight),
            "Statements sent on the pipelined connections and not yet answered (all together).");
    w.Gauge("sessionbroker_pipeline_queued", static_cast<double>(pl.queued),
            "Statements waiting for a pipelined connection.");
    w.Counter("sessionbroker_pipeline_statements_total", static_cast<double>(pl.statements),
              "Statements sent on pipelined connections (retries included).");
    w.Counter("sessionbroker_pipeline_batches_total", static_cast<double>(pl.batches),
              "ExecuteBatch calls sent on pipelined connections, each as its statements under "
              "one Sync (one implicit transaction; retries included).");
    w.Counter("sessionbroker_pipeline_flushes_total", static_cast<double>(pl.flushes),
              "Writes of a dispatch round to one connection; statements_total / flushes_total "
              "is the statements per flush.");
    w.Counter("sessionbroker_pipeline_cancel_requests_total", static_cast<double>(pl.cancels_sent),
              "Cancel requests sent for pipelined statements (only while heading their queue; "
              "the first request per statement).");
    w.Counter("sessionbroker_pipeline_cancel_resends_total", static_cast<double>(pl.cancel_resends),
              "Cancel requests sent again because the cancelled pipelined statement still ran "
              "(PostgreSQL drops a request that arrives before the statement starts).");
    w.Counter("sessionbroker_pipeline_retries_total", static_cast<double>(pl.retries),
              "Pipelined statements sent again (hit by a stray cancel, or a stale prepared copy).");
    w.Counter("sessionbroker_pipeline_connection_failures_total",
              static_cast<double>(pl.connection_failures),
              "Pipelined connects that failed and pipelined connections lost.");
    w.Counter("sessionbroker_pipeline_recycles_total", static_cast<double>(pl.recycles),
              "Pipelined connections closed for their age (DB_POOL_RECYCLE) and reopened.");
  }

  // The CatalogGuard's table-read and table-write proofs, for the engine
  // and for the pooled path (with BROKER_PIPELINE_TABLE_READS and
  // BROKER_PIPELINE_TABLE_WRITES off they stay 0).
  const RunnerStats& st = s.statements;
  w.Counter("sessionbroker_pipeline_catalog_proved_total", st.catalog_proved,
            "Table reads and writes (a call's statements together) the catalog showed run no "
            "user code (BROKER_PIPELINE_TABLE_READS, BROKER_PIPELINE_TABLE_WRITES): "
            "pipelined, or run on a pooled connection without the session reset.");
  w.Counter("sessionbroker_pipeline_catalog_refused_total", st.catalog_refused,
            "Table reads and writes kept on the reset path because the catalog showed they may "
            "run user code (a view, row-level security, a rule, a trigger, a sequence, a user "
            "operator, function or type).");
  w.Counter("sessionbroker_pipeline_catalog_unknown_total", st.catalog_unknown,
            "Table reads and writes kept on the reset path because no recent catalog answer was "
            "at hand "
            "(each starts or waits for a lookup; BROKER_PIPELINE_CATALOG_REFRESH).");
  w.Counter("sessionbroker_pipeline_catalog_lookups_total", st.catalog_lookups,
            "Catalog lookups sent (through the pipelined engine, or on a pooled connection "
            "without one).");
  w.Counter("sessionbroker_pipeline_catalog_lookup_failures_total", st.catalog_lookup_failures,
            "Catalog lookups that failed (the reads and writes keep their reset).");

  // The database.
  w.Gauge("sessionbroker_database_reachable", s.database_reachable ? 1 : 0,
          "1 while the health probe reaches the database (grpc.health.v1 SERVING).");
  w.Gauge("sessionbroker_database_last_error_timestamp_seconds", UnixSeconds(s.last_error_time),
          "When a probe or connect last failed, in seconds since the Unix epoch (0: never).");
  w.Gauge("sessionbroker_pool_connect_backoff", p.database_down ? 1 : 0,
          "1 while connects are rationed because the last one failed.");
  w.Gauge("sessionbroker_pool_connect_failures_in_row", p.connect_failures_in_row,
          "Connect attempts failed since the last success.");
  // The connection budget, as read on the first connection (absent until then).
  w.Gauge("sessionbroker_expected_replicas", s.config.expected_replicas,
          "BROKER_EXPECTED_REPLICAS: brokers sharing the database.");
  if (p.server.max_connections >= 0) {
    w.Gauge("sessionbroker_database_max_connections", p.server.max_connections,
            "The server's max_connections, read at start.");
    w.Gauge("sessionbroker_database_reserved_connections",
            std::max(0, p.server.superuser_reserved_connections) +
                std::max(0, p.server.reserved_connections),
            "superuser_reserved_connections + reserved_connections (PostgreSQL 16+), read at "
            "start: slots ordinary roles cannot use.");
  }
  return w.Take();
}

}  // namespace sessionbroker::core
