#include "server/transport/pool_status_conversion.h"

#include <algorithm>

#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "server/core/pool/connection_budget.h"

namespace sessionbroker::transport {
namespace {

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  out->set_seconds(nanos / 1'000'000'000);
  out->set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
}

// Leaves `out` unset for a time that is not one (InfinitePast/Future).
template <typename Setter>
void SetTime(absl::Time t, Setter mutable_field) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return;
  const timespec ts = absl::ToTimespec(t);
  google::protobuf::Timestamp* out = mutable_field();
  out->set_seconds(ts.tv_sec);
  out->set_nanos(static_cast<int32_t>(ts.tv_nsec));
}

void Summary(const core::RecentDurations& in, v1::DurationSummary* out) {
  SetDuration(in.window, out->mutable_window());
  out->set_count(in.count);
  SetDuration(in.p50, out->mutable_p50());
  SetDuration(in.p90, out->mutable_p90());
  SetDuration(in.p99, out->mutable_p99());
  SetDuration(in.max, out->mutable_max());
}

void ConvertConnectionLimit(const core::PoolSnapshot& s, v1::ConnectionLimit* out) {
  const core::PoolStats& p = s.pool;
  out->set_effective(p.connection_limit);
  out->set_limited(p.connection_limit < s.config.max_connections());
  if (out->limited()) SetTime(p.next_limit_probe, [out] { return out->mutable_next_probe(); });
  out->set_last_refusal(p.last_limit_error);
  SetTime(p.last_limit_error_time, [out] { return out->mutable_last_refusal_time(); });
  out->set_refusals(p.limit_refusals);
  out->set_server_max_connections(std::max(0, p.server.max_connections));
  out->set_server_superuser_reserved_connections(
      std::max(0, p.server.superuser_reserved_connections));
  out->set_server_reserved_connections(std::max(0, p.server.reserved_connections));
  out->set_expected_replicas(s.config.expected_replicas);
  // The budget is DB_POOL_SIZE's: the pool's share plus the pipelined
  // engine's hot connections carved out of it.
  core::PoolOptions configured = s.config;
  if (s.pipeline.has_value()) configured.pool_size += s.pipeline->connections;
  out->set_budget_exceeded(core::ComputeConnectionBudget(p.server, configured).exceeded);
}

}  // namespace

void PoolSnapshotToProto(const core::PoolSnapshot& s, v1::PoolStatus* out) {
  out->Clear();
  SetTime(s.time, [out] { return out->mutable_time(); });

  v1::BrokerInfo* broker = out->mutable_broker();
  broker->set_version(s.version);
  SetTime(s.started, [broker] { return broker->mutable_start_time(); });
  SetDuration(s.uptime, broker->mutable_uptime());
  broker->set_draining(s.draining);
  broker->set_watchers(s.watchers);

  v1::PoolConfig* config = out->mutable_config();
  config->set_pool_size(s.config.pool_size);
  config->set_max_overflow(s.config.max_overflow);
  config->set_max_connections(s.config.max_connections());
  SetDuration(s.config.timeout, config->mutable_timeout());
  if (s.config.recycle != absl::InfiniteDuration()) {
    SetDuration(s.config.recycle, config->mutable_recycle());
  }
  config->set_pre_ping(s.config.pre_ping);
  config->set_max_waiters(s.config.max_waiters);

  const core::PoolStats& p = s.pool;
  v1::Connections* connections = out->mutable_connections();
  connections->set_open(p.open);
  connections->set_idle(p.idle);
  connections->set_in_use(p.in_use);
  connections->set_opening(p.opening);
  connections->set_overflow_in_use(p.overflow_in_use);

  out->mutable_waiters()->set_count(p.waiters);
  SetDuration(p.oldest_wait, out->mutable_waiters()->mutable_oldest_wait());

  v1::PoolCounters* c = out->mutable_counters();
  c->set_connects(p.connects);
  c->set_connect_failures(p.connect_failures);
  c->set_checkouts(p.checkouts);
  c->set_checkout_timeouts(p.checkout_timeouts);
  c->set_waiter_rejections(p.waiter_rejections);
  c->set_recycled(p.recycled);
  c->set_invalidated(p.invalidated);
  c->set_pre_ping_failures(p.pre_ping_failures);
  c->set_overflow_closed(p.overflow_closed);
  c->set_backoff_rejections(p.backoff_rejections);
  c->set_statements(s.statements.statements);
  c->set_statement_errors(s.statements.statement_errors);
  c->set_cancellations(s.statements.cancellations);
  c->set_session_resets(s.statements.session_resets);

  Summary(s.checkout_wait, out->mutable_checkout_wait());
  Summary(s.statement_duration, out->mutable_statement_duration());

  const core::SessionStats& ss = s.sessions;
  v1::SessionNumbers* sessions = out->mutable_sessions();
  sessions->set_open(ss.open);
  sessions->set_in_transaction(ss.in_transaction);
  sessions->set_held_by_stream(ss.held_by_stream);
  sessions->set_queued_calls(ss.queued_calls);
  sessions->set_begun(ss.begun);
  sessions->set_rejected(ss.rejected);
  sessions->set_ended_by_client(ss.ended_by_client);
  sessions->set_expired(ss.expired);
  sessions->set_orphaned(ss.orphaned);
  sessions->set_lifetime_exceeded(ss.lifetime_exceeded);
  sessions->set_ended_by_shutdown(ss.ended_by_shutdown);
  sessions->set_transactions_begun(ss.transactions_begun);
  sessions->set_transactions_committed(ss.transactions_committed);
  sessions->set_transactions_rolled_back(ss.transactions_rolled_back);
  sessions->set_transactions_failed(ss.transactions_failed);
  sessions->set_transactions_killed_idle(ss.tx_killed_idle);
  sessions->set_transactions_killed_max_duration(ss.tx_killed_max_duration);
  sessions->set_transactions_killed_session_end(ss.tx_killed_session_end);

  for (const core::ClientShare& client : s.top_clients) {
    v1::ClientOccupancy* o = out->add_clients();
    o->set_client_id(client.client_id);
    o->set_in_use(client.in_use);
    o->set_waiting(client.waiting);
    o->set_sessions(client.sessions);
    o->set_weight(client.quota.weight);
    o->set_max_connections(client.quota.max_connections);
    o->set_max_waiters(client.quota.max_waiters);
    o->set_max_sessions(client.quota.max_sessions);
    o->set_reserved_connections(client.quota.reserved_connections);
    if (client.quota.statement_timeout_max != absl::InfiniteDuration()) {
      SetDuration(client.quota.statement_timeout_max, o->mutable_statement_timeout_max());
    }
    o->set_quota_rejections(client.quota_rejections);
  }
  out->set_clients_total(s.clients_total);

  v1::ListenerStatus* listener = out->mutable_listener();
  listener->set_connections(s.listener.connections);
  listener->set_backend_pid(s.listener.backend_pid);
  listener->set_channels(s.listener.channels);
  listener->set_subscribers(s.listener.subscribers);
  listener->set_notifications_received(s.listener.notifications_received);
  listener->set_notifications_dropped(s.listener.notifications_dropped);
  listener->set_connections_lost(s.listener.connections_lost);

  v1::PipelineStatus* pipeline = out->mutable_pipeline();
  pipeline->set_streams_open(s.pipeline_streams.open);
  pipeline->set_streams(static_cast<int64_t>(s.pipeline_streams.opened));
  pipeline->set_stream_calls(static_cast<int64_t>(s.pipeline_streams.calls));
  if (s.pipeline.has_value()) {
    const storage::PipelineStats& pl = *s.pipeline;
    pipeline->set_enabled(true);
    pipeline->set_loops(pl.loops);
    pipeline->set_connections(pl.connections);
    pipeline->set_connections_up(pl.connections_up);
    pipeline->set_max_depth(pl.max_depth);
    pipeline->set_queued(pl.queued);
    pipeline->set_in_flight(pl.in_flight);
    pipeline->set_calls(static_cast<int64_t>(pl.calls));
    pipeline->set_errors(static_cast<int64_t>(pl.errors));
    pipeline->set_statements(static_cast<int64_t>(pl.statements));
    pipeline->set_retries(static_cast<int64_t>(pl.retries));
    pipeline->set_cancels_sent(static_cast<int64_t>(pl.cancels_sent));
    pipeline->set_cancel_resends(static_cast<int64_t>(pl.cancel_resends));
    pipeline->set_connection_failures(static_cast<int64_t>(pl.connection_failures));
    pipeline->set_recycles(static_cast<int64_t>(pl.recycles));
    pipeline->set_recent_statements_per_flush(pl.recent_statements_per_flush);
  }

  v1::DatabaseHealth* db = out->mutable_database();
  db->set_reachable(s.database_reachable);
  db->set_last_error(s.last_error);
  SetTime(s.last_error_time, [db] { return db->mutable_last_error_time(); });
  db->set_connect_backoff(p.database_down);
  ConvertConnectionLimit(s, out->mutable_connection_limit());
  db->set_connect_failures_in_row(p.connect_failures_in_row);
  if (p.database_down) {
    SetTime(p.next_connect_attempt, [db] { return db->mutable_next_connect_attempt(); });
  }
}

}  // namespace sessionbroker::transport
