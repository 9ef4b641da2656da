#include "server/config.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

absl::Status ReadInt(const EnvMap& env, absl::string_view name, int64_t min, int64_t max,
                     int64_t* out) {
  const std::string* v = Find(env, name);
  if (v == nullptr) return absl::OkStatus();
  int64_t parsed;
  if (!absl::SimpleAtoi(*v, &parsed) || parsed < min || parsed > max) {
    return Bad(name, *v, absl::StrCat("an integer from ", min, " to ", max));
  }
  *out = parsed;
  return absl::OkStatus();
}

// Seconds, possibly fractional ("30", "0.5").
absl::Status ReadSeconds(const EnvMap& env, absl::string_view name, double min, double max,
                         absl::Duration* out) {
  const std::string* v = Find(env, name);
  if (v == nullptr) return absl::OkStatus();
  double parsed;
  if (!absl::SimpleAtod(*v, &parsed) || !(parsed >= min && parsed <= max)) {
    return Bad(name, *v, absl::StrCat("a number of seconds from ", min, " to ", max));
  }
  *out = absl::Seconds(parsed);
  return absl::OkStatus();
}

absl::Status ReadBool(const EnvMap& env, absl::string_view name, bool* out) {
  const std::string* v = Find(env, name);
  if (v == nullptr) return absl::OkStatus();
  const std::string lower = absl::AsciiStrToLower(*v);
  if (lower == "1" || lower == "true" || lower == "yes" || lower == "on") {
    *out = true;
  } else if (lower == "0" || lower == "false" || lower == "no" || lower == "off") {
    *out = false;
  } else {
    return Bad(name, *v, "true or false (also 1/0, yes/no, on/off)");
  }
  return absl::OkStatus();
}

absl::Status ReadChoice(const EnvMap& env, absl::string_view name,
                        std::initializer_list<absl::string_view> choices, std::string* out) {
  const std::string* v = Find(env, name);
  if (v == nullptr) return absl::OkStatus();
  const std::string lower = absl::AsciiStrToLower(*v);
  for (absl::string_view c : choices) {
    if (lower == c) {
      *out = lower;
      return absl::OkStatus();
    }
  }
  return Bad(name, *v, absl::StrCat("one of ", absl::StrJoin(choices, ", ")));
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

absl::StatusOr<EnvMap> ReadEnvironment(const std::string& dotenv_path) {
  EnvMap env;
  if (!dotenv_path.empty() && ::access(dotenv_path.c_str(), F_OK) == 0) {
    std::ifstream in(dotenv_path);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read ", dotenv_path, ": ", std::strerror(errno)));
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<EnvMap> parsed = ParseEnvFile(text.str());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(dotenv_path, ": ", parsed.status().message()));
    }
    env = *std::move(parsed);
  }
  // The environment wins over .env.
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    absl::string_view entry(*e);
    const size_t eq = entry.find('=');
    if (eq == absl::string_view::npos) continue;
    env[std::string(entry.substr(0, eq))] = std::string(entry.substr(eq + 1));
  }
  return env;
}

absl::StatusOr<Config> LoadConfig(const EnvMap& env) {
  Config c;
  const std::string* url = Find(env, "DATABASE_URL");
  if (url == nullptr) {
    return absl::InvalidArgumentError(
        "DATABASE_URL is not set: set it to the PostgreSQL URL the broker should pool, e.g. "
        "postgresql://user:password@host:5432/dbname (./scripts/dev up starts a private "
        "PostgreSQL and sets it for you)");
  }
  if (!absl::StartsWith(*url, "postgresql://") && !absl::StartsWith(*url, "postgres://") &&
      url->find('=') == std::string::npos) {
    return Bad("DATABASE_URL", RedactUrl(*url),
               "a postgresql:// URL or a libpq key=value connection string");
  }
  c.database_url = *url;

  if (const std::string* addr = Find(env, "BROKER_LISTEN_ADDR")) {
    std::string host;
    int port;
    if (!ParseHostPort(*addr, &host, &port)) {
      return Bad("BROKER_LISTEN_ADDR", *addr, "HOST:PORT, e.g. 127.0.0.1:50051 or 0.0.0.0:50051");
    }
    c.listen_addr = *addr;
  }
  // Unlike other variables, set-but-empty means something here: off.
  if (auto it = env.find("BROKER_METRICS_ADDR"); it != env.end()) {
    const std::string value(absl::StripAsciiWhitespace(it->second));
    std::string host;
    int port;
    if (value.empty() || absl::AsciiStrToLower(value) == "off") {
      c.metrics_addr.clear();
    } else if (ParseHostPort(value, &host, &port)) {
      c.metrics_addr = value;
    } else {
      return Bad("BROKER_METRICS_ADDR", value,
                 "HOST:PORT for /metrics, /livez and /readyz (e.g. 127.0.0.1:9464 or "
                 "0.0.0.0:9464), or off (or empty) to serve none");
    }
  }
  if (const std::string* v = Find(env, "BROKER_PORT_FILE")) c.port_file = *v;

  int64_t n = c.pool.pool_size;
  if (absl::Status s = ReadInt(env, "DB_POOL_SIZE", 1, 10000, &n); !s.ok()) return s;
  c.pool.pool_size = static_cast<int>(n);
  n = c.pool.max_overflow;
  if (absl::Status s = ReadInt(env, "DB_MAX_OVERFLOW", 0, 10000, &n); !s.ok()) return s;
  c.pool.max_overflow = static_cast<int>(n);
  if (absl::Status s = ReadSeconds(env, "DB_POOL_TIMEOUT", 0.001, 86400, &c.pool.timeout);
      !s.ok()) {
    return s;
  }
  if (const std::string* v = Find(env, "DB_POOL_RECYCLE")) {
    double seconds;
    if (!absl::SimpleAtod(*v, &seconds) || !(seconds == -1 || (seconds > 0 && seconds <= 1e7))) {
      return Bad("DB_POOL_RECYCLE", *v, "a number of seconds > 0, or -1 to never recycle");
    }
    c.pool.recycle = seconds == -1 ? absl::InfiniteDuration() : absl::Seconds(seconds);
  }
  if (absl::Status s = ReadBool(env, "DB_POOL_PRE_PING", &c.pool.pre_ping); !s.ok()) return s;
  n = c.pool.max_waiters;
  if (absl::Status s = ReadInt(env, "DB_POOL_MAX_WAITERS", 0, 1000000, &n); !s.ok()) return s;
  c.pool.max_waiters = static_cast<int>(n);
  if (absl::Status s = ReadBool(env, "DB_ECHO", &c.echo); !s.ok()) return s;

  n = static_cast<int64_t>(c.max_result_bytes);
  // gRPC refuses messages over 2 GiB; clients default to 4 MiB.
  if (absl::Status s = ReadInt(env, "BROKER_MAX_RESULT_BYTES", 1024, int64_t{1} << 30, &n);
      !s.ok()) {
    return s;
  }
  c.max_result_bytes = static_cast<size_t>(n);
  n = c.statement_cache_size;
  if (absl::Status s = ReadInt(env, "BROKER_STATEMENT_CACHE_SIZE", 0, 10000, &n); !s.ok()) return s;
  c.statement_cache_size = static_cast<int>(n);
  if (absl::Status s = ReadSeconds(env, "BROKER_MAX_STATEMENT_DURATION", 0.001, 7 * 86400,
                                   &c.max_statement_duration);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ReadSeconds(env, "BROKER_HEALTH_CHECK_INTERVAL", 0.05, 3600, &c.health_check_interval);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          ReadSeconds(env, "BROKER_SHUTDOWN_GRACE_SECONDS", 0, 3600, &c.shutdown_grace);
      !s.ok()) {
    return s;
  }
  core::SessionOptions& so = c.sessions;
  for (auto [name, min, max, out] :
       {std::tuple{"BROKER_SESSION_DEFAULT_TTL", 1.0, 86400.0, &so.default_ttl},
        std::tuple{"BROKER_SESSION_MAX_TTL", 1.0, 7 * 86400.0, &so.max_ttl},
        std::tuple{"BROKER_SESSION_MAX_LIFETIME", 1.0, 30 * 86400.0, &so.max_lifetime},
        std::tuple{"BROKER_TX_IDLE_TIMEOUT", 0.01, 86400.0, &so.tx_idle_timeout},
        std::tuple{"BROKER_TX_MAX_DURATION", 0.01, 7 * 86400.0, &so.tx_max_duration},
        std::tuple{"BROKER_SESSION_ORPHAN_GRACE", 0.0, 3600.0, &so.orphan_grace}}) {
    if (absl::Status s = ReadSeconds(env, name, min, max, out); !s.ok()) return s;
  }
  if (so.default_ttl > so.max_ttl) {
    return absl::InvalidArgumentError(
        absl::StrCat("BROKER_SESSION_DEFAULT_TTL (", absl::FormatDuration(so.default_ttl),
                     ") is longer than BROKER_SESSION_MAX_TTL (", absl::FormatDuration(so.max_ttl),
                     "); make the default at most the maximum"));
  }
  for (auto [name, min, max, out] :
       {std::tuple{"BROKER_MAX_SESSIONS", 1, 10'000'000, &so.max_sessions},
        std::tuple{"BROKER_MAX_SESSIONS_PER_CLIENT", 0, 10'000'000, &so.max_sessions_per_client},
        std::tuple{"BROKER_SESSION_MAX_QUEUED_CALLS", 0, 10000, &so.max_queued_calls}}) {
    n = *out;
    if (absl::Status s = ReadInt(env, name, min, max, &n); !s.ok()) return s;
    *out = static_cast<int>(n);
  }
  if (absl::Status s =
          ReadChoice(env, "LOG_LEVEL",
                     {"trace", "debug", "info", "warn", "error", "critical", "off"}, &c.log_level);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadChoice(env, "LOG_FORMAT", {"text", "json"}, &c.log_format); !s.ok()) {
    return s;
  }
  return c;
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
