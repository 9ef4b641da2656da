// BrokerServer: wires the parts together (connector, pool, runner, health
// checker, the pool monitor's sampler, the gRPC server with the SessionBroker,
// PoolMonitor, grpc.health.v1.Health and reflection v1 and v1alpha services,
// and the HTTP endpoint for /metrics, /livez, /readyz) and owns them. Start()
// binds and serves. Health knows two names: "" is liveness (SERVING while the
// process serves, database or not), kServiceName is readiness (the database
// is reachable and the broker not draining); /livez and /readyz say the same.
// Shutdown(drain) (SIGTERM: drain = BROKER_DRAIN_SECONDS; SIGINT and the
// destructor: none) drains in Kubernetes' order:
//   1. readiness turns NOT_SERVING (/readyz 503) at once, liveness stays
//      SERVING; for `drain` every call is still served, new
//      calls and sessions too, since endpoints take a while to stop routing
//      here;
//   2. then liveness turns NOT_SERVING too and health Watch streams end with
//      OK; new calls are refused with UNAVAILABLE (except EndSession, Commit
//      and Rollback, which only give back), and the calls in flight get up to
//      BROKER_SHUTDOWN_GRACE_SECONDS to finish;
//   3. every session ends and every open transaction is rolled back (their
//      KeepAlive streams are told why: BROKER_SHUTDOWN); WatchPoolStatus
//      streams end with OK; Listen streams end with UNAVAILABLE ("the broker
//      is shutting down; listen on another instance");
//   4. the gRPC server stops (cancelling what is left), the HTTP endpoint
//      closes, the pool closes every connection, worker threads end; the
//      port file (BROKER_PORT_FILE), if any, is removed.
// With the defaults (10 s + 10 s, session rollbacks bounded by 5 s) it ends
// within Kubernetes' default terminationGracePeriodSeconds of 30.
// A listening address may ask for port 0 (the kernel chooses); the startup
// log line and the port file name the ports actually bound.
// Not thread-safe: Start and Shutdown are called from main.
#ifndef SESSIONBROKER_SERVER_BROKER_SERVER_H_
#define SESSIONBROKER_SERVER_BROKER_SERVER_H_

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/config.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/clients_file_watcher.h"
#include "server/core/auth/directory_shares.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/outcome_pruner.h"
#include "server/core/exec/request_ledger.h"
#include "server/core/exec/request_outcomes.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/monitor/snapshot_sampler.h"
#include "server/core/monitor/status_collector.h"
#include "server/core/notify/notification_hub.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/pool/health_checker.h"
#include "server/core/session/session_manager.h"
#include "server/storage/db_connection.h"
#include "server/storage/listen_connection.h"
#include "server/storage/pq_pipeline_loop.h"
#include "server/transport/health_service.h"
#include "server/transport/metrics_http_server.h"
#include "server/transport/pool_monitor_service.h"
#include "server/transport/reflection_service.h"
#include "server/transport/session_broker_service.h"
#include "server/transport/tls_certificates.h"

namespace sessionbroker {

inline constexpr char kServiceName[] = "sessionbroker.v1.SessionBroker";

class BrokerServer final {
 public:
  explicit BrokerServer(Config config);
  ~BrokerServer();
  BrokerServer(const BrokerServer&) = delete;
  BrokerServer& operator=(const BrokerServer&) = delete;

  // Loads the clients file (INVALID_ARGUMENT naming the problem if it is
  // broken: the broker does not start with a broken one) and the TLS files
  // when configured (INVALID_ARGUMENT naming the file when one is bad), binds
  // the listening addresses (gRPC, and HTTP unless
  // BROKER_METRICS_ADDR is off) and starts serving; UNAVAILABLE if one
  // cannot be bound. Then writes the port file when BROKER_PORT_FILE is set
  // (FAILED_PRECONDITION if it cannot be written): "grpc=HOST:PORT" and,
  // unless metrics are off, "metrics=HOST:PORT", one per line, HOST as
  // configured and PORT as bound. It is written to a temporary file in the
  // same directory and renamed into place, so a reader never sees it half
  // written.
  absl::Status Start();
  // See the drain sequence above; `drain` is step 1's window. Blocks until
  // done. Only the first call does anything.
  void Shutdown(absl::Duration drain = absl::ZeroDuration());

  int port() const { return port_; }
  absl::Duration drain() const { return config_.drain; }
  absl::Duration shutdown_grace() const { return config_.shutdown_grace; }

 private:
  // /readyz: the same answer as grpc.health.v1 for kServiceName.
  absl::Status Ready() const;

  const Config config_;
  std::unique_ptr<storage::DbConnector> connector_;
  std::unique_ptr<core::TimerQueue> timers_;
  // With BROKER_CLIENTS_FILE: who may call (empty until Start() loads the
  // file), and what keeps it current.
  std::unique_ptr<core::Authenticator> authenticator_;
  std::unique_ptr<core::ClientsFileWatcher> clients_watcher_;
  std::unique_ptr<core::ThreadPoolExecutor> executor_;
  std::unique_ptr<core::ThreadPoolExecutor> cancel_executor_;
  std::unique_ptr<core::ConnectionPool> pool_;
  // Request ids: the table of one-shot calls' outcomes (used by the
  // runner), its pruner, and the memory of session calls' outcomes.
  std::unique_ptr<core::RequestOutcomes> request_outcomes_;
  std::unique_ptr<core::RequestLedger> ledger_;
  // The pipelined engine (BROKER_PIPELINE_CONNECTIONS), or null; reset in
  // Shutdown while the runner its callbacks use is alive.
  std::unique_ptr<storage::PqPipelineLoop> pipeline_;
  std::unique_ptr<core::StatementRunner> runner_;
  std::unique_ptr<core::OutcomePruner> pruner_;
  std::unique_ptr<core::SessionManager> sessions_;
  // LISTEN/NOTIFY: one connection outside the pool (docs/notifications.md).
  // Before service_: Listen streams unsubscribe until the server is gone.
  std::unique_ptr<storage::ListenConnector> listen_connector_;
  std::unique_ptr<core::NotificationHub> notifications_;
  std::unique_ptr<core::HealthChecker> health_;
  std::unique_ptr<core::StatusCollector> collector_;
  std::unique_ptr<core::ThreadPoolExecutor> monitor_executor_;
  std::unique_ptr<core::SnapshotSampler> sampler_;
  std::unique_ptr<transport::SessionBrokerService> service_;
  std::unique_ptr<transport::PoolMonitorService> monitor_;
  std::unique_ptr<transport::HealthService> health_service_;
  std::unique_ptr<transport::ReflectionV1Service> reflection_v1_;
  std::unique_ptr<transport::ReflectionV1AlphaService> reflection_v1alpha_;
  // TLS (BROKER_TLS_CERT): before server_ and http_, which read what it
  // publishes until they are destroyed.
  std::unique_ptr<transport::CertificateReloader> tls_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<transport::MetricsHttpServer> http_;
  std::atomic<bool> draining_{false};
  int port_ = 0;
  bool port_file_written_ = false;
  bool shut_down_ = false;
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_SERVER_BROKER_SERVER_H_
