#include "server/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/storage/conninfo.h"

extern char** environ;

namespace sessionbroker {
namespace {

absl::Status Bad(absl::string_view name, absl::string_view value, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, "='", value, "' is not valid: expected ", expected));
}

// Looks a variable up; empty values count as unset.
const std::string* Find(const EnvMap& env, absl::string_view name) {
  auto it = env.find(std::string(name));
  if (it == env.end() || it->second.empty()) return nullptr;
  return &it->second;
}

// --- The settings table ----------------------------------------------------
// Each rule says how a variable's text is parsed and bounded; the error for a
// value it refuses names what is accepted.
struct UrlRule {};  // DATABASE_URL: a postgresql:// URL or libpq key=value text
struct HostPortRule {
  const char* expected;
};
// Like HostPortRule, but set-but-empty (or "off") means off.
struct HostPortOrOffRule {
  const char* expected;
};
struct StringRule {};
struct IntRule {
  int64_t min;
  int64_t max;
};
// Like IntRule, or "auto" (case-insensitive), stored as -1: the broker
// derives the value from other settings (BROKER_PIPELINE_CONNECTIONS).
struct IntOrAutoRule {
  int64_t min;
  int64_t max;
};
// Seconds, possibly fractional ("30", "0.5").
struct SecondsRule {
  double min;
  double max;
};
// Seconds > 0 up to `max`, or -1 for never (absl::InfiniteDuration()).
struct SecondsOrNeverRule {
  double max;
  const char* expected;
};
struct BoolRule {};
// One of `choices`, case-insensitive, stored in lower case.
struct ChoiceRule {
  std::vector<absl::string_view> choices;
};
// BROKER_ENV_FILE: read by main from the process environment before the .env
// file is, so it fills no Config field.
struct EnvFileRule {};
// A comma-separated list whose empty value means "none" (not "the default"),
// checked between settings (BROKER_AUTH_EXEMPT_SERVICES).
struct ListRule {};
using Rule =
    std::variant<UrlRule, HostPortRule, HostPortOrOffRule, StringRule, IntRule, IntOrAutoRule,
                 SecondsRule, SecondsOrNeverRule, BoolRule, ChoiceRule, EnvFileRule, ListRule>;

// The Config field a setting fills.
using Field = std::variant<std::monostate, std::string*, int*, size_t*, bool*, absl::Duration*>;

struct Setting {
  const char* name;
  Rule rule;
  Field (*field)(Config&);
  bool secret;
  const char* description;
};

constexpr bool kSecret = true;
constexpr bool kPlain = false;

// In the order LoadConfig checks them, which is also README's and
// .env.example's order.
const std::vector<Setting>& Settings() {
  static const auto* const kSettings = new std::vector<Setting>{
      {"DATABASE_URL", UrlRule{}, [](Config& c) -> Field { return &c.database_url; }, kSecret,
       "PostgreSQL URL or libpq key=value string"},
      {"BROKER_LISTEN_ADDR", HostPortRule{"HOST:PORT, e.g. 127.0.0.1:50051 or 0.0.0.0:50051"},
       [](Config& c) -> Field { return &c.listen_addr; }, kPlain, "gRPC listen address"},
      {"BROKER_METRICS_ADDR",
       HostPortOrOffRule{"HOST:PORT for /metrics, /livez and /readyz (e.g. 127.0.0.1:9464 or "
                         "0.0.0.0:9464), or off (or empty) to serve none"},
       [](Config& c) -> Field { return &c.metrics_addr; }, kPlain,
       "HTTP address of /metrics, /livez, /readyz; off or empty: none"},
      {"BROKER_PORT_FILE", StringRule{}, [](Config& c) -> Field { return &c.port_file; }, kPlain,
       "after the broker listens it writes the ports it bound to this file; empty: off"},
      {"BROKER_TLS_CERT", StringRule{}, [](Config& c) -> Field { return &c.tls_cert; }, kPlain,
       "PEM certificate chain of the gRPC port (TLS on when set, with BROKER_TLS_KEY); "
       "re-read when it changes"},
      {"BROKER_TLS_KEY", StringRule{}, [](Config& c) -> Field { return &c.tls_key; }, kPlain,
       "PEM private key of BROKER_TLS_CERT (the path; the key itself is never logged)"},
      {"BROKER_TLS_CLIENT_CA", StringRule{}, [](Config& c) -> Field { return &c.tls_client_ca; },
       kPlain, "PEM CA bundle that signs client certificates (mutual TLS); empty: no client certs"},
      {"BROKER_TLS_CLIENT_AUTH", ChoiceRule{{"require", "optional"}},
       [](Config& c) -> Field { return &c.tls_client_auth; }, kPlain,
       "with BROKER_TLS_CLIENT_CA: require a client certificate (default) or accept calls "
       "without one (optional); a certificate given is always verified"},
      {"BROKER_TLS_RELOAD_SECONDS", IntRule{1, 86400},
       [](Config& c) -> Field { return &c.tls_reload_seconds; }, kPlain,
       "seconds between checks of the TLS files for a rotated certificate"},
      {"BROKER_METRICS_TLS", BoolRule{}, [](Config& c) -> Field { return &c.metrics_tls; }, kPlain,
       "serve /metrics, /livez, /readyz over HTTPS with the gRPC port's certificate"},
      {"BROKER_ALLOW_INSECURE", BoolRule{}, [](Config& c) -> Field { return &c.allow_insecure; },
       kPlain,
       "allow plaintext (no TLS) on a non-loopback address; without it the broker refuses to "
       "start so"},
      {"DB_POOL_SIZE", IntRule{1, 10000}, [](Config& c) -> Field { return &c.pool.pool_size; },
       kPlain, "connections kept open when idle"},
      {"DB_MAX_OVERFLOW", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.pool.max_overflow; }, kPlain,
       "extra connections under load; never more than size + overflow in total"},
      {"DB_POOL_TIMEOUT", SecondsRule{0.001, 86400},
       [](Config& c) -> Field { return &c.pool.timeout; }, kPlain,
       "seconds to wait for a connection before RESOURCE_EXHAUSTED"},
      {"DB_POOL_RECYCLE",
       SecondsOrNeverRule{1e7, "a number of seconds > 0, or -1 to never recycle"},
       [](Config& c) -> Field { return &c.pool.recycle; }, kPlain,
       "seconds before a connection is replaced (jittered up to 10% earlier); -1 never"},
      {"DB_POOL_PRE_PING", BoolRule{}, [](Config& c) -> Field { return &c.pool.pre_ping; }, kPlain,
       "ping connections idle for over a second before use"},
      {"DB_POOL_MAX_WAITERS", IntRule{0, 1000000},
       [](Config& c) -> Field { return &c.pool.max_waiters; }, kPlain,
       "callers allowed to queue for a connection; beyond, RESOURCE_EXHAUSTED at once"},
      {"BROKER_EXPECTED_REPLICAS", IntRule{1, 10000},
       [](Config& c) -> Field { return &c.pool.expected_replicas; }, kPlain,
       "brokers sharing the database; at start a warning if their pools exceed its "
       "max_connections"},
      {"DB_ECHO", BoolRule{}, [](Config& c) -> Field { return &c.echo; }, kPlain,
       "log each statement and its duration (never parameter values)"},
      // gRPC refuses messages over 2 GiB; clients default to 4 MiB.
      {"BROKER_MAX_RESULT_BYTES", IntRule{1024, int64_t{1} << 30},
       [](Config& c) -> Field { return &c.max_result_bytes; }, kPlain,
       "largest unary result in bytes; over it RESOURCE_EXHAUSTED"},
      {"BROKER_REQUEST_ID_WINDOW", SecondsRule{0.001, 30 * 86400},
       [](Config& c) -> Field { return &c.request_id_window; }, kPlain,
       "seconds a request_id's outcome is kept for retries"},
      {"BROKER_REQUEST_OUTCOME_MAX_BYTES", IntRule{0, int64_t{1} << 30},
       [](Config& c) -> Field { return &c.request_outcome_max_bytes; }, kPlain,
       "largest response kept for a request_id; a retry of a larger one gets ALREADY_EXISTS"},
      {"BROKER_REQUEST_ID_MEMORY_BYTES", IntRule{0, int64_t{1} << 40},
       [](Config& c) -> Field { return &c.request_id_memory_bytes; }, kPlain,
       "memory for request_id outcomes of session calls; the oldest are forgotten first"},
      {"BROKER_REQUEST_OUTCOMES_TABLE", StringRule{},
       [](Config& c) -> Field { return &c.request_outcomes_table; }, kPlain,
       "schema.table the broker records one-shot request_ids in (created if missing)"},
      // Bounds on one request: the two sizes gRPC enforces as it receives,
      // then what the broker checks before any database work.
      {"BROKER_MAX_REQUEST_BYTES", IntRule{1024, int64_t{1} << 30},
       [](Config& c) -> Field { return &c.max_request_bytes; }, kPlain,
       "largest request message in bytes; over it RESOURCE_EXHAUSTED"},
      {"BROKER_MAX_METADATA_BYTES", IntRule{1024, 1 << 20},
       [](Config& c) -> Field { return &c.max_metadata_bytes; }, kPlain,
       "largest request metadata (headers) in bytes; over it RESOURCE_EXHAUSTED"},
      {"BROKER_MAX_SQL_BYTES", IntRule{1, int64_t{1} << 30},
       [](Config& c) -> Field { return &c.request_limits.max_sql_bytes; }, kPlain,
       "longest SQL text of one statement in bytes; over it INVALID_ARGUMENT"},
      {"BROKER_MAX_STATEMENT_PARAMS", IntRule{0, 65535},
       [](Config& c) -> Field { return &c.request_limits.max_statement_params; }, kPlain,
       "parameters of one statement (65535 is PostgreSQL's own limit); over it "
       "INVALID_ARGUMENT"},
      {"BROKER_MAX_BATCH_STATEMENTS", IntRule{1, 1000000},
       [](Config& c) -> Field { return &c.request_limits.max_batch_statements; }, kPlain,
       "statements of one ExecuteBatch; over it INVALID_ARGUMENT"},
      {"BROKER_MAX_ARRAY_DEPTH", IntRule{1, 6},
       [](Config& c) -> Field { return &c.max_array_depth; }, kPlain,
       "deepest nesting of array parameters (6 is PostgreSQL's own limit); over it "
       "INVALID_ARGUMENT"},
      {"BROKER_STREAM_WINDOW_BYTES", IntRule{4096, int64_t{256} << 20},
       [](Config& c) -> Field { return &c.stream_window_bytes; }, kPlain,
       "bytes of rows one StreamExecute call holds; a reader slower than that stops the query"},
      {"BROKER_MAX_PENDING_RESULT_BYTES", IntRule{1 << 20, int64_t{1} << 40},
       [](Config& c) -> Field { return &c.max_pending_result_bytes; }, kPlain,
       "result bytes all calls together hold until sent; over it RESOURCE_EXHAUSTED"},
      {"BROKER_MAX_CALLS_PER_CLIENT", IntRule{0, 1'000'000},
       [](Config& c) -> Field { return &c.max_calls_per_client; }, kPlain,
       "Execute/ExecuteBatch/StreamExecute/Pipeline calls in flight per client id; 0 = no limit"},
      {"BROKER_PIPELINE_MAX_IN_FLIGHT", IntRule{1, 100'000},
       [](Config& c) -> Field { return &c.pipeline_max_in_flight; }, kPlain,
       "calls in flight on one Pipeline stream; at it the broker stops reading the stream"},
      {"BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT", IntRule{0, 1'000'000},
       [](Config& c) -> Field { return &c.pipeline_max_in_flight_per_client; }, kPlain,
       "calls in flight on all of a client's Pipeline streams; 0 = no limit"},
      {"BROKER_STATEMENT_CACHE_SIZE", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.statement_cache_size; }, kPlain,
       "prepared statements kept per connection; 0 = off"},
      {"BROKER_PIPELINE_CONNECTIONS", IntOrAutoRule{0, 64},
       [](Config& c) -> Field { return &c.pipeline_connections; }, kPlain,
       "hot connections, taken from DB_POOL_SIZE (at most DB_POOL_SIZE - 1), on which provably "
       "stateless one-shot Execute calls of different callers are pipelined; auto = a quarter "
       "of DB_POOL_SIZE, at least 2 and at most 4, none below a pool of 4 (about twice the "
       "database's cores is best); 0 = off"},
      {"BROKER_PIPELINE_DEPTH", IntRule{1, 1024},
       [](Config& c) -> Field { return &c.pipeline_depth; }, kPlain,
       "statements in flight per pipelined connection"},
      {"BROKER_PIPELINE_TABLE_READS", BoolRule{},
       [](Config& c) -> Field { return &c.pipeline_table_reads; }, kPlain,
       "SELECTs that read tables skip the session reset when the catalog shows they run no user "
       "code (no view, row-level security, rule, user operator, function or type): pipelined "
       "with BROKER_PIPELINE_CONNECTIONS > 0, on their pooled connection otherwise"},
      {"BROKER_PIPELINE_TABLE_WRITES", BoolRule{},
       [](Config& c) -> Field { return &c.pipeline_table_writes; }, kPlain,
       "simple INSERT, UPDATE and DELETE statements (alone or in batches) skip the session reset "
       "when the catalog shows writing their table runs no user code (no trigger but foreign "
       "keys', no sequence, identity or user-code default, constraint or index, besides what "
       "BROKER_PIPELINE_TABLE_READS checks): pipelined with BROKER_PIPELINE_CONNECTIONS > 0, on "
       "their pooled connection otherwise"},
      {"BROKER_PIPELINE_CATALOG_REFRESH", SecondsRule{0.01, 3600},
       [](Config& c) -> Field { return &c.pipeline_catalog_refresh; }, kPlain,
       "seconds a catalog answer for BROKER_PIPELINE_TABLE_READS and "
       "BROKER_PIPELINE_TABLE_WRITES is trusted: DDL that makes a read or write run user code is "
       "seen within it"},
      {"BROKER_PIPELINE_LOOPS", IntRule{0, 64},
       [](Config& c) -> Field { return &c.pipeline_loops; }, kPlain,
       "event-loop threads the pipelined connections are divided among; 0 = one per core, "
       "at most one per two pipelined connections"},
      {"BROKER_MAX_STATEMENT_DURATION", SecondsRule{0.001, 7 * 86400},
       [](Config& c) -> Field { return &c.max_statement_duration; }, kPlain,
       "seconds a statement may run when the caller's deadline is longer or absent"},
      {"BROKER_HEALTH_CHECK_INTERVAL", SecondsRule{0.05, 3600},
       [](Config& c) -> Field { return &c.health_check_interval; }, kPlain,
       "seconds between database probes driving grpc.health.v1"},
      {"BROKER_DRAIN_SECONDS", SecondsRule{0, 3600}, [](Config& c) -> Field { return &c.drain; },
       kPlain,
       "on SIGTERM, seconds the broker keeps serving every call (new ones too) with readiness "
       "NOT_SERVING, while endpoints stop routing to it (SIGINT skips it)"},
      {"BROKER_SHUTDOWN_GRACE_SECONDS", SecondsRule{0, 3600},
       [](Config& c) -> Field { return &c.shutdown_grace; }, kPlain,
       "after the drain, seconds calls in flight get to finish before they are cancelled"},
      {"BROKER_SESSION_DEFAULT_TTL", SecondsRule{1, 86400},
       [](Config& c) -> Field { return &c.sessions.default_ttl; }, kPlain,
       "seconds a session's lease lasts when BeginSession gives no ttl"},
      {"BROKER_SESSION_MAX_TTL", SecondsRule{1, 7 * 86400},
       [](Config& c) -> Field { return &c.sessions.max_ttl; }, kPlain,
       "longest ttl a caller may ask for, in seconds"},
      {"BROKER_SESSION_MAX_LIFETIME", SecondsRule{1, 30 * 86400},
       [](Config& c) -> Field { return &c.sessions.max_lifetime; }, kPlain,
       "seconds after which a session ends, renewed or not"},
      {"BROKER_TX_IDLE_TIMEOUT", SecondsRule{0.01, 86400},
       [](Config& c) -> Field { return &c.sessions.tx_idle_timeout; }, kPlain,
       "seconds a session's transaction may sit idle before it is rolled back"},
      {"BROKER_TX_MAX_DURATION", SecondsRule{0.01, 7 * 86400},
       [](Config& c) -> Field { return &c.sessions.tx_max_duration; }, kPlain,
       "seconds a session's transaction may stay open before it is rolled back"},
      {"BROKER_SESSION_ORPHAN_GRACE", SecondsRule{0, 3600},
       [](Config& c) -> Field { return &c.sessions.orphan_grace; }, kPlain,
       "seconds sessions outlive the KeepAlive stream that held them"},
      {"BROKER_MAX_SESSIONS", IntRule{1, 10'000'000},
       [](Config& c) -> Field { return &c.sessions.max_sessions; }, kPlain,
       "open sessions in the broker"},
      {"BROKER_MAX_SESSIONS_PER_CLIENT", IntRule{0, 10'000'000},
       [](Config& c) -> Field { return &c.sessions.max_sessions_per_client; }, kPlain,
       "open sessions per client (authenticated id, else x-client-id); 0 = no per-client cap"},
      {"BROKER_CLIENT_SESSION_SHARE_PERCENT", IntRule{1, 100},
       [](Config& c) -> Field { return &c.sessions.max_client_share_percent; }, kPlain,
       "percent of BROKER_MAX_SESSIONS one client may hold, whatever its own cap"},
      {"BROKER_FAIR_QUEUING", BoolRule{}, [](Config& c) -> Field { return &c.pool.fair_queuing; },
       kPlain, "serve waiting callers by weighted fair queuing across client ids; false: one FIFO"},
      {"BROKER_CLIENT_MAX_CONNECTIONS", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.client_quota.max_connections; }, kPlain,
       "connections in use plus calls waiting per client id; 0 = no per-client cap"},
      {"BROKER_CLIENT_MAX_WAITERS", IntRule{0, 1000000},
       [](Config& c) -> Field { return &c.client_quota.max_waiters; }, kPlain,
       "calls waiting for a connection per client id; 0 = no per-client cap"},
      {"BROKER_CLIENT_RESERVED_CONNECTIONS", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.client_quota.reserved_connections; }, kPlain,
       "a client holding fewer connections is served first when callers wait"},
      {"BROKER_CLIENT_STATEMENT_TIMEOUT_MAX",
       SecondsOrNeverRule{7 * 86400, "a number of seconds > 0, or -1 for no ceiling"},
       [](Config& c) -> Field { return &c.client_quota.statement_timeout_max; }, kPlain,
       "ceiling on each statement's run time per client id; -1 = none"},
      {"BROKER_SESSION_MAX_QUEUED_CALLS", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.sessions.max_queued_calls; }, kPlain,
       "calls that may wait behind the running one on a session"},
      {"BROKER_CLIENTS_FILE", StringRule{}, [](Config& c) -> Field { return &c.clients_file; },
       kPlain,
       "YAML/JSON file of the clients allowed to call (token hashes, roles, database role); "
       "empty: no authentication, x-client-id taken at its word"},
      {"BROKER_CLIENTS_FILE_POLL", SecondsRule{0.05, 3600},
       [](Config& c) -> Field { return &c.clients_file_poll; }, kPlain,
       "seconds between checks of the clients file for changes (reloaded without a restart)"},
      {"BROKER_AUTH_EXEMPT_SERVICES", ListRule{},
       [](Config& c) -> Field { return &c.auth_exempt_services; }, kPlain,
       "comma-separated gRPC services that answer without credentials while a clients file is "
       "on (health, reflection); empty: every call authenticates"},
      {"BROKER_REQUIRE_AUTH", BoolRule{}, [](Config& c) -> Field { return &c.require_auth; },
       kPlain,
       "refuse to start without BROKER_CLIENTS_FILE (no unauthenticated broker by mistake)"},
      {"LOG_LEVEL", ChoiceRule{{"trace", "debug", "info", "warn", "error", "critical", "off"}},
       [](Config& c) -> Field { return &c.log_level; }, kPlain, "least severe level logged"},
      {"LOG_FORMAT", ChoiceRule{{"text", "json"}}, [](Config& c) -> Field { return &c.log_format; },
       kPlain, "text, or json (one object per line)"},
      {"BROKER_ENV_FILE", EnvFileRule{}, [](Config&) -> Field { return std::monostate{}; }, kPlain,
       "the .env file to read (from the environment only); empty to read none"},
  };
  return *kSettings;
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// The text a setting was given, or nullptr if it counts as unset: empty
// values count as unset, except where set-but-empty means off.
const std::string* Lookup(const Setting& s, const EnvMap& env) {
  if (std::holds_alternative<HostPortOrOffRule>(s.rule) ||
      std::holds_alternative<ListRule>(s.rule)) {
    auto it = env.find(s.name);
    return it == env.end() ? nullptr : &it->second;
  }
  return Find(env, s.name);
}

void StoreInt(const Field& f, int64_t v) {
  if (int* const* p = std::get_if<int*>(&f)) **p = static_cast<int>(v);
  if (size_t* const* p = std::get_if<size_t*>(&f)) **p = static_cast<size_t>(v);
}

template <class T>
void Store(const Field& f, T v) {
  if (T* const* p = std::get_if<T*>(&f)) **p = std::move(v);
}

// Parses `value` by the setting's rule into its field.
absl::Status Apply(const Setting& s, const std::string& value, Config* c) {
  const Field field = s.field(*c);
  const absl::string_view name = s.name;
  return std::visit(
      Overloaded{
          [&](const UrlRule&) -> absl::Status {
            // libpq's own parser, so a string it cannot use stops the broker
            // here rather than failing every connect. Its message never
            // repeats the value (it may hold a password).
            if (absl::StatusOr<storage::Conninfo> parsed = storage::Conninfo::Parse(value);
                !parsed.ok()) {
              return absl::InvalidArgumentError(
                  absl::StrCat(name, " is not valid: ", parsed.status().message()));
            }
            Store(field, value);
            return absl::OkStatus();
          },
          [&](const HostPortRule& r) -> absl::Status {
            std::string host;
            int port;
            if (!ParseHostPort(value, &host, &port)) return Bad(name, value, r.expected);
            Store(field, value);
            return absl::OkStatus();
          },
          [&](const HostPortOrOffRule& r) -> absl::Status {
            const std::string v(absl::StripAsciiWhitespace(value));
            std::string host;
            int port;
            if (v.empty() || absl::AsciiStrToLower(v) == "off") {
              Store(field, std::string());
            } else if (ParseHostPort(v, &host, &port)) {
              Store(field, v);
            } else {
              return Bad(name, v, r.expected);
            }
            return absl::OkStatus();
          },
          [&](const StringRule&) -> absl::Status {
            Store(field, value);
            return absl::OkStatus();
          },
          [&](const IntRule& r) -> absl::Status {
            int64_t parsed;
            if (!absl::SimpleAtoi(value, &parsed) || parsed < r.min || parsed > r.max) {
              return Bad(name, value, absl::StrCat("an integer from ", r.min, " to ", r.max));
            }
            StoreInt(field, parsed);
            return absl::OkStatus();
          },
          [&](const IntOrAutoRule& r) -> absl::Status {
            int64_t parsed;
            if (absl::AsciiStrToLower(absl::StripAsciiWhitespace(value)) == "auto") {
              StoreInt(field, -1);
            } else if (!absl::SimpleAtoi(value, &parsed) || parsed < r.min || parsed > r.max) {
              return Bad(name, value,
                         absl::StrCat("auto, or an integer from ", r.min, " to ", r.max));
            } else {
              StoreInt(field, parsed);
            }
            return absl::OkStatus();
          },
          [&](const SecondsRule& r) -> absl::Status {
            double parsed;
            if (!absl::SimpleAtod(value, &parsed) || !(parsed >= r.min && parsed <= r.max)) {
              return Bad(name, value,
                         absl::StrCat("a number of seconds from ", r.min, " to ", r.max));
            }
            Store(field, absl::Seconds(parsed));
            return absl::OkStatus();
          },
          [&](const SecondsOrNeverRule& r) -> absl::Status {
            double parsed;
            if (!absl::SimpleAtod(value, &parsed) ||
                !(parsed == -1 || (parsed > 0 && parsed <= r.max))) {
              return Bad(name, value, r.expected);
            }
            Store(field, parsed == -1 ? absl::InfiniteDuration() : absl::Seconds(parsed));
            return absl::OkStatus();
          },
          [&](const BoolRule&) -> absl::Status {
            const std::string lower = absl::AsciiStrToLower(value);
            if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") {
              Store(field, true);
            } else if (lower == "0" || lower == "false" || lower == "no" || lower == "off") {
              Store(field, false);
            } else {
              return Bad(name, value, "true or false (also 1/0, yes/no, on/off)");
            }
            return absl::OkStatus();
          },
          [&](const ChoiceRule& r) -> absl::Status {
            const std::string lower = absl::AsciiStrToLower(value);
            for (absl::string_view choice : r.choices) {
              if (lower == choice) {
                Store(field, lower);
                return absl::OkStatus();
              }
            }
            return Bad(name, value, absl::StrCat("one of ", absl::StrJoin(r.choices, ", ")));
          },
          [&](const EnvFileRule&) -> absl::Status { return absl::OkStatus(); },
          [&](const ListRule&) -> absl::Status {
            Store(field, value);
            return absl::OkStatus();
          },
      },
      s.rule);
}

absl::Status CheckTransportSecurity(const Config& c);

// Every setting that is set, then the checks between settings. A missing
// DATABASE_URL is an error only if `require_database_url`.
absl::Status ApplyAll(const EnvMap& env, bool require_database_url, Config* c) {
  for (const Setting& s : Settings()) {
    const std::string* value = Lookup(s, env);
    if (value == nullptr) {
      if (require_database_url && std::holds_alternative<UrlRule>(s.rule)) {
        return absl::InvalidArgumentError(
            "DATABASE_URL is not set: set it to the PostgreSQL URL the broker should pool, e.g. "
            "postgresql://user:password@host:5432/dbname (./scripts/dev up starts a private "
            "PostgreSQL and sets it for you)");
      }
      continue;
    }
    if (absl::Status status = Apply(s, *value, c); !status.ok()) return status;
  }
  {
    // Both parts plain lower-case identifiers: the broker writes the name
    // into SQL unescaped-but-quoted.
    const std::vector<std::string> parts = absl::StrSplit(c->request_outcomes_table, '.');
    bool valid = parts.size() == 2;
    for (const std::string& p : parts) {
      valid = valid && !p.empty() && p.size() <= 50 && !absl::ascii_isdigit(p[0]);
      for (char ch : p)
        valid = valid && (absl::ascii_islower(ch) || absl::ascii_isdigit(ch) || ch == '_');
    }
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BROKER_REQUEST_OUTCOMES_TABLE is \"", c->request_outcomes_table,
          "\"; expected schema.table, each part lower-case letters, digits and _ (at most 50), "
          "e.g. sessionbroker.request_outcomes"));
    }
  }
  if (absl::Status status = CheckTransportSecurity(*c); !status.ok()) return status;
  // Mutual TLS means a certificate is required unless said otherwise.
  if (!c->tls_client_ca.empty() && c->tls_client_auth.empty()) c->tls_client_auth = "require";
  const core::SessionOptions& so = c->sessions;
  if (so.default_ttl > so.max_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("BROKER_SESSION_DEFAULT_TTL (", absl::FormatDuration(so.default_ttl),
                     ") is longer than BROKER_SESSION_MAX_TTL (", absl::FormatDuration(so.max_ttl),
                     "); make the default at most the maximum"));
  }
  if (absl::StatusOr<std::vector<std::string>> exempt = AuthExemptServices(*c); !exempt.ok()) {
    return exempt.status();
  }
  if (c->require_auth && c->clients_file.empty()) {
    return absl::InvalidArgumentError(
        "BROKER_REQUIRE_AUTH is true but BROKER_CLIENTS_FILE is not set: point it at the clients "
        "file (docs/security.md), or set BROKER_REQUIRE_AUTH=false to let any caller in");
  }
  return absl::OkStatus();
}

// The TLS settings agree with each other, and a listener without TLS binds
// loopback unless BROKER_ALLOW_INSECURE says plaintext is meant: anyone who can
// reach a plaintext port can read every statement, result and password-like
// parameter on the wire.
absl::Status CheckTransportSecurity(const Config& c) {
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        c.tls_cert.empty() ? "BROKER_TLS_KEY" : "BROKER_TLS_CERT", " is set but ",
        c.tls_cert.empty() ? "BROKER_TLS_CERT" : "BROKER_TLS_KEY",
        " is not: TLS needs both the certificate chain and its private key (PEM files)"));
  }
  const bool tls = !c.tls_cert.empty();
  if (!tls && !c.tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "BROKER_TLS_CLIENT_CA is set without BROKER_TLS_CERT and BROKER_TLS_KEY: client "
        "certificates are asked for only over TLS; set the server's certificate and key too");
  }
  if (c.tls_client_ca.empty() && !c.tls_client_auth.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BROKER_TLS_CLIENT_AUTH=", c.tls_client_auth,
        " needs BROKER_TLS_CLIENT_CA, the CA bundle client certificates are verified against"));
  }
  if (c.metrics_tls && !tls) {
    return absl::InvalidArgumentError(
        "BROKER_METRICS_TLS=true needs BROKER_TLS_CERT and BROKER_TLS_KEY: the metrics endpoint "
        "serves the gRPC port's certificate");
  }
  if (c.allow_insecure) return absl::OkStatus();
  struct Listener {
    const char* variable;
    const std::string& addr;
    bool tls;
    const char* how;
  };
  const Listener listeners[] = {
      {"BROKER_LISTEN_ADDR", c.listen_addr, tls, "set BROKER_TLS_CERT and BROKER_TLS_KEY"},
      {"BROKER_METRICS_ADDR", c.metrics_addr, c.metrics_tls,
       "set BROKER_METRICS_TLS=true (with BROKER_TLS_CERT and BROKER_TLS_KEY)"},
  };
  for (const Listener& l : listeners) {
    std::string host;
    int port;
    if (l.tls || l.addr.empty() || !ParseHostPort(l.addr, &host, &port)) continue;
    if (IsLoopbackHost(host)) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        l.variable, "=", l.addr,
        " would serve plaintext beyond this machine (anyone on the network could read "
        "statements, results and credentials): ",
        l.how,
        " to serve TLS, bind a loopback address (127.0.0.1, ::1, localhost), or set "
        "BROKER_ALLOW_INSECURE=true if plaintext is intended (e.g. behind a mesh that encrypts)"));
  }
  return absl::OkStatus();
}

// A field's value as it would be written in .env.
std::string Show(const Setting& s, Config& c) {
  if (std::holds_alternative<EnvFileRule>(s.rule)) return ".env";
  return std::visit(Overloaded{
                        [](std::monostate) { return std::string(); },
                        [&](const std::string* v) {
                          if (v->empty() && std::holds_alternative<HostPortOrOffRule>(s.rule))
                            return std::string("off");
                          return s.secret && !v->empty() ? RedactUrl(*v) : *v;
                        },
                        [&](const int* v) {
                          if (*v == -1 && std::holds_alternative<IntOrAutoRule>(s.rule))
                            return std::string("auto");
                          return absl::StrCat(*v);
                        },
                        [](const size_t* v) { return absl::StrCat(*v); },
                        [](const bool* v) { return std::string(*v ? "true" : "false"); },
                        [](const absl::Duration* v) {
                          return *v == absl::InfiniteDuration()
                                     ? std::string("-1")
                                     : absl::StrCat(absl::ToDoubleSeconds(*v));
                        },
                    },
                    s.field(c));
}

// Single-quoted for a POSIX shell unless every character is plainly safe.
std::string ShellQuote(absl::string_view v) {
  const bool plain = !v.empty() && std::all_of(v.begin(), v.end(), [](char ch) {
    return absl::ascii_isalnum(static_cast<unsigned char>(ch)) ||
           absl::string_view("_-./:@%+,=").find(ch) != absl::string_view::npos;
  });
  if (plain) return std::string(v);
  return absl::StrCat("'", absl::StrReplaceAll(v, {{"'", "'\\''"}}), "'");
}

}  // namespace

absl::StatusOr<EnvMap> ParseEnvFile(const std::string& text) {
  EnvMap out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    absl::ConsumePrefix(&line, "export ");
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(".env line ", line_no, ": expected KEY=VALUE, got '", line, "'"));
    }
    std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    } else if (const size_t hash = value.find(" #"); hash != absl::string_view::npos) {
      value = absl::StripAsciiWhitespace(value.substr(0, hash));  // trailing comment
    }
    out[std::move(key)] = std::string(value);
  }
  return out;
}

EnvMap ProcessEnvironment() {
  EnvMap env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos) continue;
    env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return env;
}

absl::StatusOr<EnvSources> ReadEnvSources(EnvMap process) {
  EnvSources sources;
  sources.process = std::move(process);
  auto named = sources.process.find("BROKER_ENV_FILE");
  sources.file_path = named != sources.process.end() ? named->second : ".env";
  const std::string& path = sources.file_path;
  if (!path.empty() && ::access(path.c_str(), F_OK) == 0) {
    std::ifstream in(path);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<EnvMap> parsed = ParseEnvFile(text.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", parsed.status().message()));
    }
    sources.file = *std::move(parsed);
    sources.file_read = true;
  }
  return sources;
}

EnvMap MergeEnv(const EnvSources& sources) {
  EnvMap env = sources.file;
  // The environment wins over .env.
  for (const auto& [name, value] : sources.process) env[name] = value;
  return env;
}

int PipelineHotConnections(const Config& config) {
  const int pool = config.pool.pool_size;
  // Never one by itself: the engine routes around a slow statement only
  // among two or more connections (pipeline_dispatch.h).
  const int wanted = config.pipeline_connections == Config::kPipelineConnectionsAuto
                         ? (pool < 4 ? 0 : std::clamp(pool / 4, 2, 4))
                         : config.pipeline_connections;
  return std::max(0, std::min(wanted, pool - 1));
}

absl::StatusOr<std::vector<std::string>> AuthExemptServices(const Config& config) {
  static constexpr absl::string_view kExemptable[] = {
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
  };
  std::vector<std::string> services;
  for (absl::string_view part : absl::StrSplit(config.auth_exempt_services, ',')) {
    const absl::string_view name = absl::StripAsciiWhitespace(part);
    if (name.empty()) continue;
    if (absl::StartsWith(name, "sessionbroker.")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BROKER_AUTH_EXEMPT_SERVICES names \"", name,
          "\": the broker's own services always authenticate while a clients file is on (they "
          "run SQL and show sessions); only grpc.health.v1.Health, "
          "grpc.reflection.v1.ServerReflection and grpc.reflection.v1alpha.ServerReflection may "
          "be exempt"));
    }
    if (std::find(std::begin(kExemptable), std::end(kExemptable), name) == std::end(kExemptable)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BROKER_AUTH_EXEMPT_SERVICES names \"", name,
          "\", which this broker does not serve; expected a comma-separated list of "
          "grpc.health.v1.Health, grpc.reflection.v1.ServerReflection, "
          "grpc.reflection.v1alpha.ServerReflection (full names, as grpcurl list prints them), or "
          "empty for none"));
    }
    if (std::find(services.begin(), services.end(), name) == services.end()) {
      services.emplace_back(name);
    }
  }
  return services;
}

absl::StatusOr<Config> LoadConfig(const EnvMap& env) {
  Config c;
  if (absl::Status s = ApplyAll(env, /*require_database_url=*/true, &c); !s.ok()) return s;
  return c;
}

std::vector<SettingInfo> DescribeSettings() {
  std::vector<SettingInfo> out;
  Config defaults;
  for (const Setting& s : Settings()) {
    out.push_back({s.name, Show(s, defaults), std::holds_alternative<UrlRule>(s.rule), s.secret,
                   s.description});
  }
  return out;
}

absl::StatusOr<std::string> RenderConfig(const EnvSources& sources, ConfigFormat format) {
  const EnvMap env = MergeEnv(sources);
  Config c;
  if (absl::Status s = ApplyAll(env, /*require_database_url=*/false, &c); !s.ok()) return s;
  struct Row {
    std::string name, value, source;
  };
  std::vector<Row> rows;
  for (const Setting& s : Settings()) {
    Row row{s.name, Show(s, c), "default"};
    if (std::holds_alternative<EnvFileRule>(s.rule)) {
      row.value = sources.file_path;
      if (sources.process.count(s.name) != 0) row.source = "environment";
    } else if (Lookup(s, env) != nullptr) {
      row.source = sources.process.count(s.name) != 0 ? "environment" : sources.file_path;
    } else if (std::holds_alternative<UrlRule>(s.rule)) {
      row.source = "unset (required)";
    }
    rows.push_back(std::move(row));
  }
  std::string out;
  if (format == ConfigFormat::kEnv) {
    for (const Row& r : rows) absl::StrAppend(&out, r.name, "=", ShellQuote(r.value), "\n");
    return out;
  }
  size_t name_width = 0, value_width = 0;
  for (Row& r : rows) {
    if (r.value.empty()) r.value = "(empty)";
    name_width = std::max(name_width, r.name.size());
    value_width = std::max(value_width, r.value.size());
  }
  absl::StrAppend(&out, "# session-broker settings: effective value, then where it came from\n",
                  "# .env file: ",
                  sources.file_path.empty()
                      ? "none (BROKER_ENV_FILE is empty)"
                      : absl::StrCat(sources.file_path, sources.file_read ? "" : " (not found)"),
                  "\n");
  for (const Row& r : rows) {
    absl::StrAppend(&out, absl::StrFormat("%-*s  %-*s  %s\n", name_width, r.name, value_width,
                                          r.value, r.source));
  }
  return out;
}

bool ParseHostPort(const std::string& addr, std::string* host, int* port) {
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  int parsed;
  if (!absl::SimpleAtoi(addr.substr(colon + 1), &parsed) || parsed < 0 || parsed > 65535) {
    return false;
  }
  absl::string_view h(addr.data(), colon);
  if (absl::ConsumePrefix(&h, "[") && !absl::ConsumeSuffix(&h, "]")) return false;
  if (h.empty()) return false;
  *host = std::string(h);
  *port = parsed;
  return true;
}

bool IsLoopbackHost(const std::string& host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  in_addr v4;
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

std::string RedactUrl(const std::string& url) { return storage::RedactConninfo(url); }

}  // namespace sessionbroker
