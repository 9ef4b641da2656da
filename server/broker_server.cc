#include "server/broker_server.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/base/build_info.h"
#include "server/core/base/clock.h"
#include "server/core/monitor/prometheus_text.h"
#include "server/core/pool/connection_budget.h"
#include "server/storage/pq_connection.h"
#include "server/storage/pq_listen_connection.h"
#include "server/storage/pq_pipeline_loop.h"
#include "spdlog/spdlog.h"

namespace sessionbroker {
namespace {

// `addr` ("HOST:PORT", validated by LoadConfig) with its port replaced.
std::string WithPort(const std::string& addr, int port) {
  return absl::StrCat(addr.substr(0, addr.rfind(':') + 1), port);
}

// Writes `contents` to a temporary file next to `path` and renames it over
// `path`: rename is atomic within a directory, so a script polling for the
// file sees nothing or all of it.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  std::string temp = path + ".XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "could not create a file next to ", path, " (BROKER_PORT_FILE): ", std::strerror(errno),
        "; point it into an existing directory the broker may write to"));
  }
  // mkstemp creates the file 0600; the addresses are no secret, and the
  // script reading them may run as another user.
  bool ok = ::fchmod(fd, 0644) == 0;
  for (size_t done = 0; ok && done < contents.size();) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ::close(fd) == 0 && ok;
  ok = ok && std::rename(temp.c_str(), path.c_str()) == 0;
  if (!ok) {
    const int error = errno;
    ::unlink(temp.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("could not write ", path, " (BROKER_PORT_FILE): ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace

BrokerServer::BrokerServer(Config config) : config_(std::move(config)) {
  core::Clock& clock = core::RealClock::Get();
  storage::PqConnector::Options connector_options;
  connector_options.statement_cache_size = config_.statement_cache_size;
  connector_ = std::make_unique<storage::PqConnector>(config_.database_url, connector_options);
  timers_ = std::make_unique<core::TimerQueue>(clock);
  // One worker per connection the pool may open (each runs one statement at a
  // time), plus one so that completions and health probes never queue behind
  // a full pool.
  executor_ =
      std::make_unique<core::ThreadPoolExecutor>(config_.pool.max_connections() + 1, "sb-worker");
  transport::CallAuthenticator auth;
  if (!config_.clients_file.empty()) {
    // Nobody is admitted until Start() has loaded the file.
    absl::StatusOr<std::shared_ptr<const core::ClientDirectory>> none =
        core::ClientDirectory::Parse("clients: []");
    authenticator_ = std::make_unique<core::Authenticator>(*std::move(none));
    auth = transport::CallAuthenticator(authenticator_.get());
  }
  // Every client gets the BROKER_CLIENT_* quota, unless the clients file
  // gives it one of its own.
  core::PoolOptions pool_options = config_.pool;
  core::SessionOptions session_options = config_.sessions;
  if (pool_options.shares == nullptr) {
    core::ClientQuota quota = config_.client_quota;
    quota.max_sessions = config_.sessions.max_sessions_per_client;
    if (authenticator_ != nullptr) {
      pool_options.shares = std::make_shared<core::DirectoryShares>(*authenticator_, quota);
    } else {
      pool_options.shares = std::make_shared<core::UniformClientShares>(quota);
    }
  }
  if (session_options.shares == nullptr) session_options.shares = pool_options.shares;
  // The pipelined engine's hot set is part of the bound: the pool keeps
  // DB_POOL_SIZE minus it (and at least one, for sessions and statements
  // that need a pooled connection).
  const int hot = PipelineHotConnections(config_);
  if (hot > 0) {
    pool_options.pool_size -= hot;
    storage::PqPipelineLoop::Options pipeline_options;
    pipeline_options.conninfo =
        storage::ConninfoWithDefaults(config_.database_url, connector_options);
    pipeline_options.connections = hot;
    pipeline_options.limits.max_depth = config_.pipeline_depth;
    pipeline_options.statement_cache_size = config_.statement_cache_size;
    pipeline_options.recycle = config_.pool.recycle;
    pipeline_options.fair_queuing = config_.pool.fair_queuing;
    // By default one loop per core, but at least two hot connections per
    // loop. More loops than cores only time-slice. Two loops served 1.2-2x
    // the statements of one on 2 cores (docs/benchmarks.md: one thread
    // reading every connection in turn is a serialization point), but a
    // loop's age-aware dispatch routes around a stalled connection only among
    // its own: calls queued in a loop whose only connection runs a slow
    // statement wait for it. With two or more per loop that guarantee holds.
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    pipeline_options.loops =
        config_.pipeline_loops > 0 ? config_.pipeline_loops : std::max(1, std::min(cores, hot / 2));
    // The pool's reconnect backoff (without its jitter: a few connections).
    const core::BackoffOptions backoff = config_.pool.reconnect_backoff;
    pipeline_options.backoff = [backoff](int failures) {
      absl::Duration delay = backoff.initial;
      for (int i = 1; i < failures && delay < backoff.max; ++i) delay = delay * backoff.multiplier;
      return std::min(delay, backoff.max);
    };
    pipeline_options.now = [&clock] { return clock.Now(); };
    pipeline_ = std::make_unique<storage::PqPipelineLoop>(std::move(pipeline_options));
    spdlog::info(
        "pipelined engine: {} hot connections{} (depth {}) on {} loops, pool keeps {} + {} "
        "overflow",
        hot,
        config_.pipeline_connections == Config::kPipelineConnectionsAuto
            ? " (BROKER_PIPELINE_CONNECTIONS=auto)"
            : "",
        config_.pipeline_depth, pipeline_->Stats().loops, pool_options.pool_size,
        pool_options.max_overflow);
  } else {
    spdlog::info("pipelined engine off (BROKER_PIPELINE_CONNECTIONS={}, DB_POOL_SIZE={})",
                 config_.pipeline_connections == Config::kPipelineConnectionsAuto
                     ? std::string("auto")
                     : std::to_string(config_.pipeline_connections),
                 config_.pool.pool_size);
  }
  pool_ = std::make_unique<core::ConnectionPool>(pool_options, *connector_, *executor_, *timers_,
                                                 clock);
  // The first connection reads max_connections and checks the connection
  // budget (BROKER_EXPECTED_REPLICAS); a warning if it is exceeded.
  pool_->SetFirstConnectHook([pool = pool_.get(), hot](storage::DbConnection& db) {
    core::CheckConnectionBudget(db, *pool, hot);
  });
  core::RunnerOptions runner_options;
  runner_options.max_result_bytes = config_.max_result_bytes;
  runner_options.max_statement_duration = config_.max_statement_duration;
  runner_options.echo = config_.echo;
  core::RequestOutcomesOptions outcomes_options;
  outcomes_options.table = config_.request_outcomes_table;
  outcomes_options.window = config_.request_id_window;
  outcomes_options.max_outcome_bytes = config_.request_outcome_max_bytes;
  request_outcomes_ = std::make_unique<core::RequestOutcomes>(outcomes_options);
  runner_options.request_outcomes = request_outcomes_.get();
  runner_options.limits = config_.request_limits;
  runner_options.pipeline = pipeline_.get();
  runner_options.pipeline_table_reads = config_.pipeline_table_reads;
  runner_options.pipeline_table_writes = config_.pipeline_table_writes;
  runner_options.catalog_refresh = config_.pipeline_catalog_refresh;
  // Cancel requests get threads of their own: each is a round trip to
  // PostgreSQL, and none may wait behind statements or delay timers.
  cancel_executor_ = std::make_unique<core::ThreadPoolExecutor>(2, "sb-cancel");
  runner_ = std::make_unique<core::StatementRunner>(*pool_, *timers_, *cancel_executor_, clock,
                                                    runner_options);
  sessions_ = std::make_unique<core::SessionManager>(*runner_, *timers_, clock, session_options);
  // The listener connection gets the pool's connect_timeout and TCP
  // keepalives (a vanished server is noticed as for the pool) and its
  // reconnect backoff.
  listen_connector_ = std::make_unique<storage::PqListenConnector>(
      storage::ConninfoWithDefaults(config_.database_url, connector_options));
  core::NotificationHub::Options listen_options;
  listen_options.backoff = config_.pool.reconnect_backoff;
  notifications_ =
      std::make_unique<core::NotificationHub>(*listen_connector_, clock, listen_options);
  core::RequestLedgerOptions ledger_options;
  ledger_options.window = config_.request_id_window;
  ledger_options.max_bytes = config_.request_id_memory_bytes;
  ledger_options.max_outcome_bytes = config_.request_outcome_max_bytes;
  ledger_ = std::make_unique<core::RequestLedger>(clock, ledger_options);
  pruner_ = std::make_unique<core::OutcomePruner>(*runner_, *timers_, clock, *request_outcomes_);
  transport::CallLimits limits;
  limits.stream_window_bytes = config_.stream_window_bytes;
  limits.max_pending_result_bytes = config_.max_pending_result_bytes;
  limits.max_calls_per_client = config_.max_calls_per_client;
  limits.pipeline_max_in_flight = config_.pipeline_max_in_flight;
  limits.pipeline_max_in_flight_per_client = config_.pipeline_max_in_flight_per_client;
  service_ = std::make_unique<transport::SessionBrokerService>(
      *runner_, *sessions_, config_.max_result_bytes, *ledger_, auth, config_.max_array_depth,
      notifications_.get(), listen_options.queue_capacity, limits);
  // Health and reflection answer without credentials only where
  // BROKER_AUTH_EXEMPT_SERVICES says so (LoadConfig has checked the names;
  // an unchecked Config exempts nothing).
  const std::vector<std::string> exempt =
      AuthExemptServices(config_).value_or(std::vector<std::string>());
  auto gate_for = [&](const std::string& service) {
    const bool open = std::find(exempt.begin(), exempt.end(), service) != exempt.end();
    return open ? transport::CallGate() : transport::CallGate(auth);
  };
  health_service_ = std::make_unique<transport::HealthService>(
      kServiceName, gate_for(grpc::health::v1::Health::service_full_name()));
  health_ = std::make_unique<core::HealthChecker>(
      *pool_, *timers_, clock, config_.health_check_interval,
      [this](bool serving) { health_service_->SetDatabaseReachable(serving); });
  core::StatusCollector::SessionStatsFn session_stats = [this] { return sessions_->Stats(); };
  collector_ = std::make_unique<core::StatusCollector>(*pool_, *runner_, *health_,
                                                       std::move(session_stats), clock);
  collector_->SetListenerStats([this] { return notifications_->Stats(); });
  collector_->SetPipelineStreamStats([this] { return service_->PipelineStreams(); });
  // The sampler and its fan-out get a thread of their own: snapshots and
  // StartWrite calls for many watchers must not delay statements or timers.
  monitor_executor_ = std::make_unique<core::ThreadPoolExecutor>(1, "sb-monitor");
  sampler_ = std::make_unique<core::SnapshotSampler>([this] { return collector_->Collect(); },
                                                     *timers_, *monitor_executor_, clock);
  monitor_ = std::make_unique<transport::PoolMonitorService>(*sampler_, auth);
  // Every service registered in Start(), listed by reflection.
  const std::vector<std::string> services = {
      v1::SessionBroker::service_full_name(),
      v1::PoolMonitor::service_full_name(),
      grpc::health::v1::Health::service_full_name(),
      grpc::reflection::v1::ServerReflection::service_full_name(),
      grpc::reflection::v1alpha::ServerReflection::service_full_name(),
  };
  reflection_v1_ = std::make_unique<transport::ReflectionV1Service>(
      services, gate_for(grpc::reflection::v1::ServerReflection::service_full_name()));
  reflection_v1alpha_ = std::make_unique<transport::ReflectionV1AlphaService>(
      services, gate_for(grpc::reflection::v1alpha::ServerReflection::service_full_name()));
}

BrokerServer::~BrokerServer() { Shutdown(); }

absl::Status BrokerServer::Start() {
  if (authenticator_ != nullptr) {
    core::ClientsFileWatcher::FileStamp stamp;
    absl::StatusOr<std::shared_ptr<const core::ClientDirectory>> directory =
        core::ClientsFileWatcher::Load(config_.clients_file, &stamp);
    if (!directory.ok()) return directory.status();
    spdlog::info("clients file {}: {} clients; calls without valid credentials are refused",
                 config_.clients_file, (*directory)->clients().size());
    authenticator_->Replace(*std::move(directory));
    clients_watcher_ = std::make_unique<core::ClientsFileWatcher>(
        config_.clients_file, stamp, *authenticator_, *timers_, core::RealClock::Get(),
        config_.clients_file_poll);
    // A reload changes quotas too: the pool re-reads the ones it cached.
    clients_watcher_->SetReloadHook([pool = pool_.get()] { pool->RefreshQuotas(); });
    pool_->RefreshQuotas();
  } else {
    spdlog::warn(
        "no clients file (BROKER_CLIENTS_FILE): calls are not authenticated, x-client-id is "
        "taken at its word and any caller may use any session it can name");
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  std::string security = "plaintext";
  if (!config_.tls_cert.empty()) {
    tls_ = std::make_unique<transport::CertificateReloader>(
        transport::CertificateReloader::Files{config_.tls_cert, config_.tls_key,
                                              config_.tls_client_ca},
        absl::Seconds(config_.tls_reload_seconds));
    if (absl::Status s = tls_->Start(); !s.ok()) return s;
    using ClientAuth = transport::CertificateReloader::ClientAuth;
    const ClientAuth auth = config_.tls_client_ca.empty()           ? ClientAuth::kNone
                            : config_.tls_client_auth == "optional" ? ClientAuth::kOptional
                                                                    : ClientAuth::kRequire;
    credentials = tls_->GrpcCredentials(auth);
    security = auth == ClientAuth::kNone       ? "TLS"
               : auth == ClientAuth::kOptional ? "TLS, client certificates optional"
                                               : "TLS, client certificates required";
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen_addr, credentials, &port_);
  // gRPC sets SO_REUSEPORT by default, which lets a second broker bind the
  // same port and silently split traffic (and double the connections the
  // database sees). One address, one broker.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(service_.get());
  builder.RegisterService(monitor_.get());
  builder.RegisterService(health_service_.get());
  builder.RegisterService(reflection_v1_.get());
  builder.RegisterService(reflection_v1alpha_.get());
  // Requests may carry large parameter sets, up to BROKER_MAX_REQUEST_BYTES
  // (gRPC answers a larger one RESOURCE_EXHAUSTED before any handler runs);
  // responses are capped separately by BROKER_MAX_RESULT_BYTES. Metadata
  // over BROKER_MAX_METADATA_BYTES is refused by gRPC's HTTP/2 layer.
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             static_cast<int>(config_.max_metadata_bytes));
  // A KeepAlive stream whose client vanished without closing its socket (a
  // host or network failure) is noticed by HTTP/2 pings within about 30 s, and
  // its sessions then get the orphan grace. Clients may ping as often as
  // every 10 s while they have calls open. Connections without calls are not
  // pinged: an idle client's gRPC answers a ping only when its backup poller
  // next runs (every 5 s by default, later on a busy host), so the 10 s
  // watchdog closed idle connections of healthy clients, and a call sent just
  // then failed UNAVAILABLE "Socket closed" (seen with the Python client).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.SetMaxSendMessageSize(
      static_cast<int>(std::min<size_t>(config_.max_result_bytes + (1 << 20), size_t{1} << 30)));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", config_.listen_addr,
                     " (BROKER_LISTEN_ADDR): the address is in use or not available on this host"));
  }
  if (!config_.metrics_addr.empty()) {
    std::string host;
    int port = 0;
    ParseHostPort(config_.metrics_addr, &host, &port);  // validated by LoadConfig
    http_ = std::make_unique<transport::MetricsHttpServer>(
        host, port, [this] { return core::RenderPrometheus(*sampler_->Current()); },
        [this] { return Ready(); },
        config_.metrics_tls ? transport::MetricsHttpServer::IdentityFn(
                                  [tls = tls_.get()] { return tls->Current(); })
                            : nullptr);
    if (absl::Status s = http_->Start(); !s.ok()) return s;
  }
  // Readiness is NOT_SERVING until the first probe reaches the database
  // (HealthService starts so); liveness is SERVING from here on.
  timers_->Start();
  // Readiness also waits for the outcome pruner's first run (it creates the
  // request outcomes table): run after SERVING, it would take a pool
  // connection, or one of DB_POOL_MAX_WAITERS' places, from the first
  // callers. A failed run counts as done (it is retried every interval).
  health_service_->SetStarting();
  pruner_->Start([health = health_service_.get()] { health->SetStartupDone(); });
  health_->Start();
  if (clients_watcher_ != nullptr) clients_watcher_->Start();
  const std::string metrics = http_ == nullptr ? "metrics off"
                                               : absl::StrCat("metrics on ", config_.metrics_addr,
                                                              " (port ", http_->port(), ")");
  spdlog::info(
      "session broker {} listening on {} (port {}), {}; transport {}; database {}; pool size={} "
      "overflow={} timeout={} recycle={} pre_ping={} max_waiters={}",
      core::BrokerVersion(), config_.listen_addr, port_, metrics, security,
      RedactUrl(config_.database_url), config_.pool.pool_size, config_.pool.max_overflow,
      absl::FormatDuration(config_.pool.timeout), absl::FormatDuration(config_.pool.recycle),
      config_.pool.pre_ping, config_.pool.max_waiters);
  spdlog::info(
      "sessions: max={} per_client={} default_ttl={} max_ttl={} max_lifetime={} "
      "tx_idle_timeout={} tx_max_duration={} orphan_grace={}",
      config_.sessions.max_sessions, config_.sessions.max_sessions_per_client,
      absl::FormatDuration(config_.sessions.default_ttl),
      absl::FormatDuration(config_.sessions.max_ttl),
      absl::FormatDuration(config_.sessions.max_lifetime),
      absl::FormatDuration(config_.sessions.tx_idle_timeout),
      absl::FormatDuration(config_.sessions.tx_max_duration),
      absl::FormatDuration(config_.sessions.orphan_grace));
  // Last, after the log line: whoever sees the file finds both listeners up
  // and the ports in the log.
  if (!config_.port_file.empty()) {
    std::string contents = absl::StrCat("grpc=", WithPort(config_.listen_addr, port_), "\n");
    if (http_ != nullptr) {
      absl::StrAppend(&contents, "metrics=", WithPort(config_.metrics_addr, http_->port()), "\n");
    }
    if (absl::Status s = WriteFileAtomically(config_.port_file, contents); !s.ok()) return s;
    port_file_written_ = true;
  }
  return absl::OkStatus();
}

absl::Status BrokerServer::Ready() const {
  if (draining_.load()) return absl::UnavailableError("draining: the broker is shutting down");
  if (!health_->serving()) {
    const std::string error = health_->last_error_message();
    return absl::UnavailableError(error.empty()
                                      ? "no health probe has reached the database yet"
                                      : absl::StrCat("the database is unreachable: ", error));
  }
  if (health_service_->starting()) {
    return absl::UnavailableError(
        "starting: the request outcomes table is being created (BROKER_REQUEST_OUTCOMES_TABLE)");
  }
  return absl::OkStatus();
}

void BrokerServer::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  draining_.store(true);
  if (server_ != nullptr) {
    // 1. Not ready, still serving everything: until endpoints converge,
    // clients keep sending calls here, and they must not fail.
    spdlog::info(
        "draining: readiness NOT_SERVING, still serving every call for {} "
        "(BROKER_DRAIN_SECONDS); {} calls in flight",
        absl::FormatDuration(drain), service_->in_flight());
    health_service_->SetDraining();
    collector_->SetDraining();
    absl::SleepFor(drain);
    // 2. No new calls; those in flight get the grace period.
    spdlog::info(
        "drain over: NOT_SERVING, refusing new calls, {} in flight, grace {} "
        "(BROKER_SHUTDOWN_GRACE_SECONDS)",
        service_->in_flight(), absl::FormatDuration(config_.shutdown_grace));
    health_service_->Shutdown();
    service_->StartDraining();
    const absl::Time grace_end = absl::Now() + config_.shutdown_grace;
    if (!service_->WaitForIdle(grace_end)) {
      spdlog::warn("grace period over with {} calls still running; cancelling them",
                   service_->in_flight());
    }
    // Every session ends: running statements are cancelled, open
    // transactions rolled back, KeepAlive streams told why.
    // 3. (A rollback is one round trip; 5 s bounds a database that hangs.)
    if (!sessions_->Shutdown(absl::Now() + absl::Seconds(5))) {
      spdlog::warn("some session transactions were still being rolled back after 5s");
    }
    // Listen streams end with UNAVAILABLE: their clients listen elsewhere.
    notifications_->Shutdown(
        absl::UnavailableError("the broker is shutting down; listen on another instance"));
    // Their status must reach the wire before Shutdown below cancels what is
    // left (a cancelled stream would tell the client "Cancelling all calls").
    if (!notifications_->WaitForSubscribersGone(absl::Now() + absl::Seconds(2))) {
      spdlog::warn("some Listen streams did not end in time; cancelling them");
    }
    // Watchers saw the drain; now their streams end cleanly (OK), before
    // Shutdown below would cancel them.
    monitor_->EndAllStreams();
    if (!monitor_->WaitForStreamsDone(absl::Now() + absl::Seconds(2))) {
      spdlog::warn("{} WatchPoolStatus streams did not end in time; cancelling them",
                   monitor_->streams());
    }
    if (!health_service_->WaitForStreamsDone(absl::Now() + absl::Seconds(2))) {
      spdlog::warn("some health Watch streams did not end in time; cancelling them");
    }
    // Pipeline streams end with UNAVAILABLE once their running calls' results
    // are sent; WaitForIdle returned when the last result was written, which
    // is before the stream's Finish: Shutdown below would cancel it.
    if (!service_->WaitForPipelineStreamsDone(absl::Now() + absl::Seconds(2))) {
      spdlog::warn("some Pipeline streams did not end in time; cancelling them");
    }
    // 4. Cancels whatever is left; the runner sees the cancellations and stops
    // the statements in PostgreSQL.
    server_->Shutdown(std::chrono::system_clock::now());
  } else {
    sessions_->Shutdown(absl::Now() + absl::Seconds(5));
  }
  // Answers what it still holds (UNAVAILABLE) while the runner is alive.
  pipeline_.reset();
  if (http_ != nullptr) http_->Stop();
  if (tls_ != nullptr) tls_->Stop();
  health_->Stop();
  if (clients_watcher_ != nullptr) clients_watcher_->Stop();
  pruner_->Stop();
  sampler_->Stop();
  pool_->Close();
  executor_->Shutdown();  // runs every pending completion, then joins
  cancel_executor_->Shutdown();
  monitor_executor_->Shutdown();
  if (server_ != nullptr) server_->Wait();
  notifications_->Stop();  // closes the listener connection
  timers_->Stop();
  // The addresses in it no longer serve.
  if (port_file_written_) ::unlink(config_.port_file.c_str());
  spdlog::info("shutdown complete");
}

}  // namespace sessionbroker
