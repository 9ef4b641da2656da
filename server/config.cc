#include "server/config.h"

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
using Rule = std::variant<UrlRule, HostPortRule, HostPortOrOffRule, StringRule, IntRule,
                          SecondsRule, SecondsOrNeverRule, BoolRule, ChoiceRule, EnvFileRule>;

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
      {"BROKER_STREAM_WINDOW_BYTES", IntRule{4096, int64_t{256} << 20},
       [](Config& c) -> Field { return &c.stream_window_bytes; }, kPlain,
       "bytes of rows one StreamExecute call holds; a reader slower than that stops the query"},
      {"BROKER_MAX_PENDING_RESULT_BYTES", IntRule{1 << 20, int64_t{1} << 40},
       [](Config& c) -> Field { return &c.max_pending_result_bytes; }, kPlain,
       "result bytes all calls together hold until sent; over it RESOURCE_EXHAUSTED"},
      {"BROKER_MAX_CALLS_PER_CLIENT", IntRule{0, 1'000'000},
       [](Config& c) -> Field { return &c.max_calls_per_client; }, kPlain,
       "Execute/ExecuteBatch/StreamExecute calls in flight per client id; 0 = no limit"},
      {"BROKER_STATEMENT_CACHE_SIZE", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.statement_cache_size; }, kPlain,
       "prepared statements kept per connection; 0 = off"},
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
       "open sessions per x-client-id; 0 = no per-client cap"},
      {"BROKER_SESSION_MAX_QUEUED_CALLS", IntRule{0, 10000},
       [](Config& c) -> Field { return &c.sessions.max_queued_calls; }, kPlain,
       "calls that may wait behind the running one on a session"},
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
  if (std::holds_alternative<HostPortOrOffRule>(s.rule)) {
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
      },
      s.rule);
}

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
  const core::SessionOptions& so = c->sessions;
  if (so.default_ttl > so.max_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("BROKER_SESSION_DEFAULT_TTL (", absl::FormatDuration(so.default_ttl),
                     ") is longer than BROKER_SESSION_MAX_TTL (", absl::FormatDuration(so.max_ttl),
                     "); make the default at most the maximum"));
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
                        [](const int* v) { return absl::StrCat(*v); },
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

std::string RedactUrl(const std::string& url) { return storage::RedactConninfo(url); }

}  // namespace sessionbroker
