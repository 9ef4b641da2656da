// Broker configuration, 12-factor style: every setting is an environment
// variable; a .env file (KEY=VALUE lines) fills in what the environment does
// not set. One table in config.cc describes every setting (name, how it is
// parsed and bounded, the Config field it fills, whether it is secret, what
// it does); LoadConfig walks it, validating everything up front and naming
// the offending variable, so a bad value stops the broker at start, not at
// first use. Plain data and pure functions; thread-compatible.
#ifndef SESSIONBROKER_SERVER_CONFIG_H_
#define SESSIONBROKER_SERVER_CONFIG_H_

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/session/session_manager.h"

namespace sessionbroker {

struct Config {
  std::string database_url;                     // DATABASE_URL (required)
  std::string listen_addr = "127.0.0.1:50051";  // BROKER_LISTEN_ADDR
  // BROKER_METRICS_ADDR: HTTP for /metrics, /livez, /readyz; "" = off (the
  // variable set empty, or to "off").
  std::string metrics_addr = "127.0.0.1:9464";
  // BROKER_PORT_FILE: once listening, the bound addresses are written there
  // (BrokerServer); "" = no file.
  std::string port_file;
  // Transport security (docs/security.md): BROKER_TLS_CERT and BROKER_TLS_KEY
  // (PEM paths, both or neither) turn TLS on for the gRPC port; with
  // BROKER_TLS_CLIENT_CA clients must (tls_client_auth "require", the default
  // when a CA is set) or may ("optional") present a certificate it signed.
  // The files are re-read every tls_reload_interval and a valid new pair
  // replaces the old one; an invalid one is logged and the old one kept.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string tls_client_auth;  // "" (none, or require when a CA is set) | require | optional
  int tls_reload_seconds = 10;  // BROKER_TLS_RELOAD_SECONDS
  bool metrics_tls = false;     // BROKER_METRICS_TLS: HTTPS with the same pair
  // BROKER_ALLOW_INSECURE: plaintext on a non-loopback address. Without it a
  // listener without TLS must bind loopback (LoadConfig refuses otherwise).
  bool allow_insecure = false;
  core::PoolOptions pool;             // DB_POOL_* / DB_MAX_OVERFLOW
  bool echo = false;                  // DB_ECHO
  size_t max_result_bytes = 4 << 20;  // BROKER_MAX_RESULT_BYTES
  // Bounds on one request (docs/security.md "Hardening"): the gRPC message
  // (BROKER_MAX_REQUEST_BYTES) and metadata (BROKER_MAX_METADATA_BYTES) sizes
  // gRPC enforces, and BROKER_MAX_SQL_BYTES, BROKER_MAX_STATEMENT_PARAMS,
  // BROKER_MAX_BATCH_STATEMENTS, BROKER_MAX_ARRAY_DEPTH checked before any
  // database work.
  size_t max_request_bytes = 16 << 20;
  size_t max_metadata_bytes = 16 << 10;
  core::RequestLimits request_limits;
  int max_array_depth = 6;
  // BROKER_STREAM_WINDOW_BYTES: rows one StreamExecute call holds at most.
  size_t stream_window_bytes = 1 << 20;
  // BROKER_MAX_PENDING_RESULT_BYTES: results all calls together hold until
  // they are sent.
  size_t max_pending_result_bytes = size_t{256} << 20;
  // BROKER_MAX_CALLS_PER_CLIENT: statement calls in flight per client id.
  int max_calls_per_client = 1024;
  // BROKER_PIPELINE_MAX_IN_FLIGHT: calls in flight on one Pipeline stream.
  int pipeline_max_in_flight = 256;
  // BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT: calls in flight on all of a
  // client's Pipeline streams together; 0 = no limit.
  int pipeline_max_in_flight_per_client = 1024;
  // BROKER_STATEMENT_CACHE_SIZE: prepared statements kept per connection
  // (storage::PqConnector::Options::statement_cache_size); 0 = none.
  int statement_cache_size = 100;
  // BROKER_PIPELINE_CONNECTIONS: the pipelined engine's hot set (issue 14),
  // taken out of DB_POOL_SIZE; 0 = off, kPipelineConnectionsAuto = derived
  // from the pool (HotConnections below). BROKER_PIPELINE_DEPTH: statements
  // in flight on each (docs/benchmarks.md says how both were chosen).
  static constexpr int kPipelineConnectionsAuto = -1;
  int pipeline_connections = kPipelineConnectionsAuto;
  int pipeline_depth = 16;
  // BROKER_PIPELINE_TABLE_READS: with the engine on, also pipeline SELECTs
  // that read tables when the catalog shows they run no user code
  // (core::CatalogGuard); BROKER_PIPELINE_CATALOG_REFRESH: how long such an
  // answer is trusted, so DDL is seen within it (docs/security.md).
  bool pipeline_table_reads = true;
  // BROKER_PIPELINE_TABLE_WRITES: likewise simple INSERT, UPDATE and DELETE
  // statements on tables whose writes run no user code (no trigger but
  // foreign keys', no sequence or user-code default, constraint or index).
  bool pipeline_table_writes = true;
  absl::Duration pipeline_catalog_refresh = absl::Seconds(1);
  // BROKER_PIPELINE_LOOPS: event-loop threads the hot set is divided among;
  // 0 = one per core, at most one per two hot connections (at least 1).
  int pipeline_loops = 0;
  absl::Duration max_statement_duration = absl::Minutes(5);  // BROKER_MAX_STATEMENT_DURATION
  // Request ids (docs/retries.md): how long outcomes are kept, the largest
  // kept whole, the memory for session calls' outcomes, and the table of
  // one-shot calls' outcomes.
  absl::Duration request_id_window = absl::Hours(24);  // BROKER_REQUEST_ID_WINDOW
  size_t request_outcome_max_bytes = 64 << 10;         // BROKER_REQUEST_OUTCOME_MAX_BYTES
  size_t request_id_memory_bytes = 64 << 20;           // BROKER_REQUEST_ID_MEMORY_BYTES
  std::string request_outcomes_table =
      "sessionbroker.request_outcomes";                     // BROKER_REQUEST_OUTCOMES_TABLE
  absl::Duration health_check_interval = absl::Seconds(2);  // BROKER_HEALTH_CHECK_INTERVAL
  // On SIGTERM: BROKER_DRAIN_SECONDS of serving everything while readiness
  // says NOT_SERVING (endpoints converge), then BROKER_SHUTDOWN_GRACE_SECONDS
  // for the calls still running (BrokerServer::Shutdown). Together with the
  // sessions' rollback they fit Kubernetes' default 30 s grace period.
  absl::Duration drain = absl::Seconds(10);           // BROKER_DRAIN_SECONDS
  absl::Duration shutdown_grace = absl::Seconds(10);  // BROKER_SHUTDOWN_GRACE_SECONDS
  // BROKER_SESSION_DEFAULT_TTL, BROKER_SESSION_MAX_TTL, BROKER_SESSION_MAX_LIFETIME,
  // BROKER_TX_IDLE_TIMEOUT, BROKER_TX_MAX_DURATION, BROKER_SESSION_ORPHAN_GRACE,
  // BROKER_MAX_SESSIONS, BROKER_MAX_SESSIONS_PER_CLIENT, BROKER_SESSION_MAX_QUEUED_CALLS
  // BROKER_CLIENT_SESSION_SHARE_PERCENT defaults to 25: no client holds more
  // than a quarter of BROKER_MAX_SESSIONS, so it takes at least four to
  // exhaust it.
  core::SessionOptions sessions = [] {
    core::SessionOptions o;
    o.max_client_share_percent = 25;
    return o;
  }();
  // BROKER_CLIENT_MAX_CONNECTIONS, BROKER_CLIENT_MAX_WAITERS,
  // BROKER_CLIENT_RESERVED_CONNECTIONS, BROKER_CLIENT_STATEMENT_TIMEOUT_MAX:
  // the quota every client id gets (its max_sessions is
  // BROKER_MAX_SESSIONS_PER_CLIENT); BrokerServer wires it as
  // core::UniformClientShares unless pool.shares is set already (a clients
  // file). BROKER_FAIR_QUEUING is pool.fair_queuing.
  core::ClientQuota client_quota;
  // BROKER_CLIENTS_FILE: who may call (core/auth/client_directory.h); ""
  // = no authentication, x-client-id taken at its word.
  std::string clients_file;
  // BROKER_CLIENTS_FILE_POLL: how often the file is checked for changes.
  absl::Duration clients_file_poll = absl::Seconds(2);
  // BROKER_REQUIRE_AUTH: refuse to start without a clients file.
  bool require_auth = false;
  // BROKER_AUTH_EXEMPT_SERVICES: the gRPC services (full names, comma
  // separated) that answer without credentials while a clients file is on;
  // "" = none. Read through AuthExemptServices().
  std::string auth_exempt_services =
      "grpc.health.v1.Health,grpc.reflection.v1.ServerReflection,"
      "grpc.reflection.v1alpha.ServerReflection";
  std::string log_level = "info";   // LOG_LEVEL
  std::string log_format = "text";  // LOG_FORMAT: text | json
};

using EnvMap = std::map<std::string, std::string>;

// The services BROKER_AUTH_EXEMPT_SERVICES names, each one of the health and
// reflection services; INVALID_ARGUMENT naming an unknown one, or
// sessionbroker.v1's own (they always authenticate with a clients file).
absl::StatusOr<std::vector<std::string>> AuthExemptServices(const Config& config);

// The pipelined engine's hot connections for this configuration. With
// BROKER_PIPELINE_CONNECTIONS=auto: none for a pool under 4 (a small pool
// keeps every connection for sessions and statements that need one), else a
// quarter of DB_POOL_SIZE, at least 2 (the engine routes around a slow
// statement only among two or more connections) and at most 4: 2 for the
// default pool of 5 and up to 11, 4 from 16. A number is taken as given, but
// the pool always keeps at least one connection (at most DB_POOL_SIZE - 1).
// 0 = the engine is off.
int PipelineHotConnections(const Config& config);

// Parses .env text: KEY=VALUE per line, '#' comments, blank lines, optional
// "export ", values optionally in single or double quotes. INVALID_ARGUMENT
// naming the line for anything else.
absl::StatusOr<EnvMap> ParseEnvFile(const std::string& text);

// Where the broker's settings come from, kept apart so that each value's
// source can be told (session-broker --print-config).
struct EnvSources {
  EnvMap process;          // the process environment
  std::string file_path;   // the .env file looked for; "" = none
  bool file_read = false;  // it existed and was read
  EnvMap file;             // its entries
};

// The process environment, as a map.
EnvMap ProcessEnvironment();

// The .env file named by `process` (BROKER_ENV_FILE; unset = ".env" in the
// working directory, empty = none) and `process` itself. A missing file is
// fine; an unreadable or malformed one is an error.
absl::StatusOr<EnvSources> ReadEnvSources(EnvMap process);

// What LoadConfig reads: the process environment over the .env file.
EnvMap MergeEnv(const EnvSources& sources);

// Builds and validates the configuration. Errors are INVALID_ARGUMENT with a
// message that names the variable, the bad value and what is accepted.
absl::StatusOr<Config> LoadConfig(const EnvMap& env);

// One row of the settings table, for --help, tests and documentation checks.
struct SettingInfo {
  std::string name;
  std::string default_value;  // as written in .env; "" = unset
  bool required = false;
  bool secret = false;
  std::string description;  // one line
};
std::vector<SettingInfo> DescribeSettings();

// How --print-config renders: kHuman aligns name, value and source (the
// environment, the .env file's path, or default); kEnv prints NAME=value
// lines, values shell-quoted, for scripts (`eval` or any line reader that
// undoes single quotes).
enum class ConfigFormat { kHuman, kEnv };

// Every setting's effective value, as LoadConfig would see it, with secrets
// redacted (RedactUrl). A missing DATABASE_URL is shown as unset, not an
// error; any other bad value is LoadConfig's error.
absl::StatusOr<std::string> RenderConfig(const EnvSources& sources, ConfigFormat format);

// Splits "HOST:PORT" ("[::1]:9464" for IPv6: the brackets are dropped).
// False unless HOST is non-empty and PORT is 0-65535.
bool ParseHostPort(const std::string& addr, std::string* host, int* port);

// True when HOST (as ParseHostPort returns it) only ever reaches this
// machine: "localhost", 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z).
// Wildcards (0.0.0.0, ::), other addresses and other names are not.
bool IsLoopbackHost(const std::string& host);

// The database URL with any password replaced by "***", for logs.
std::string RedactUrl(const std::string& url);

}  // namespace sessionbroker

#endif  // SESSIONBROKER_SERVER_CONFIG_H_
