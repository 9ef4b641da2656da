#include "server/core/monitor/status_collector.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "server/core/base/build_info.h"

namespace sessionbroker::core {

StatusCollector::StatusCollector(const ConnectionPool& pool, const StatementRunner& runner,
                                 const HealthChecker& health, SessionStatsFn sessions,
                                 const Clock& clock, int top_clients)
    : pool_(pool),
      runner_(runner),
      health_(health),
      sessions_(std::move(sessions)),
      clock_(clock),
      top_clients_(top_clients),
      started_(clock.Now()),
      version_(BrokerVersion()) {}

PoolSnapshot StatusCollector::Collect() const {
  PoolSnapshot s;
  s.time = clock_.Now();
  s.version = version_;
  s.started = started_;
  s.uptime = s.time - started_;
  s.draining = draining_.load();

  s.config = pool_.options();
  s.pool = pool_.Stats();
  s.checkout_wait = pool_.checkout_wait().Recent();
  s.checkout_wait_totals = pool_.checkout_wait().Totals();
  s.statements = runner_.Stats();
  s.pipeline = runner_.PipelineStats();
  s.statement_duration = runner_.statement_duration().Recent();
  s.statement_duration_totals = runner_.statement_duration().Totals();
  if (sessions_) s.sessions = sessions_();
  if (listener_) s.listener = listener_();
  if (pipeline_streams_) s.pipeline_streams = pipeline_streams_();

  absl::flat_hash_map<std::string, ClientShare> clients;
  for (auto& [id, usage] : s.pool.clients) {
    ClientShare& c = clients[id];
    c.in_use = usage.in_use;
    c.waiting = usage.waiting;
    c.quota = usage.quota;
    c.quota_rejections = usage.rejections;
  }
  const ClientShares* shares = pool_.options().shares.get();
  for (const auto& [id, open] : s.sessions.open_by_client) {
    if (open <= 0) continue;
    auto [it, added] = clients.try_emplace(id);
    it->second.sessions = open;
    // Not in the pool's table (nothing in use or waiting): its quota from
    // the source the pool reads.
    if (added && shares != nullptr) it->second.quota = shares->QuotaFor(id);
  }
  s.pool.clients.clear();
  s.clients_total = static_cast<int>(clients.size());
  s.top_clients.reserve(clients.size());
  for (auto& [id, c] : clients) {
    c.client_id = id;
    s.top_clients.push_back(std::move(c));
  }
  std::sort(s.top_clients.begin(), s.top_clients.end(),
            [](const ClientShare& a, const ClientShare& b) {
              return std::make_tuple(-(a.in_use + a.waiting), -a.sessions, a.client_id) <
                     std::make_tuple(-(b.in_use + b.waiting), -b.sessions, b.client_id);
            });
  if (static_cast<int>(s.top_clients.size()) > top_clients_) s.top_clients.resize(top_clients_);

  // The most recent failure, whether the health probe or a connect saw it.
  s.database_reachable = health_.serving();
  s.last_error = health_.last_error_message();
  s.last_error_time = health_.last_error_time();
  if (s.pool.last_connect_error_time > s.last_error_time) {
    s.last_error = s.pool.last_connect_error;
    s.last_error_time = s.pool.last_connect_error_time;
  }
  return s;
}

}  // namespace sessionbroker::core
