#include "server/core/pool/connection_budget.h"

#include <algorithm>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/core/base/log_fields.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

// One setting's value as the query returned it: text, or an integer if the
// storage layer typed it; -1 for NULL (a setting this server does not have).
absl::StatusOr<int> SettingValue(const storage::Value& v, const char* name) {
  if (v.is_null()) return -1;
  if (v.kind == storage::Value::Kind::kInt64) return static_cast<int>(v.int64_value);
  int parsed;
  if (absl::SimpleAtoi(v.text, &parsed)) return parsed;
  return absl::InternalError(absl::StrCat(name, " is not an integer: ", storage::DebugString(v)));
}

}  // namespace

absl::StatusOr<ServerConnectionSettings> ReadServerConnectionSettings(storage::DbConnection& db) {
  storage::Statement statement;
  // current_setting(name, true) is NULL for a setting the server lacks
  // (reserved_connections before PostgreSQL 16).
  statement.sql =
      "SELECT current_setting('max_connections'), "
      "current_setting('superuser_reserved_connections'), "
      "current_setting('reserved_connections', true)";
  absl::StatusOr<storage::QueryResult> result = db.Execute(statement, storage::ExecuteOptions());
  if (!result.ok()) return result.status();
  if (result->rows.size() != 1 || result->rows[0].size() != 3) {
    return absl::InternalError("the settings query returned an unexpected shape");
  }
  const std::vector<storage::Value>& row = result->rows[0];
  ServerConnectionSettings s;
  absl::StatusOr<int> v = SettingValue(row[0], "max_connections");
  if (!v.ok()) return v.status();
  s.max_connections = *v;
  v = SettingValue(row[1], "superuser_reserved_connections");
  if (!v.ok()) return v.status();
  s.superuser_reserved_connections = *v;
  v = SettingValue(row[2], "reserved_connections");
  if (!v.ok()) return v.status();
  s.reserved_connections = *v;
  return s;
}

ConnectionBudget ComputeConnectionBudget(const ServerConnectionSettings& server,
                                         const PoolOptions& pool) {
  ConnectionBudget b;
  b.per_replica = pool.max_connections();
  b.replicas = std::max(1, pool.expected_replicas);
  b.demand = b.per_replica * b.replicas;
  b.available = server.max_connections - std::max(0, server.superuser_reserved_connections) -
                std::max(0, server.reserved_connections);
  b.exceeded = server.max_connections >= 0 && b.demand > b.available;
  return b;
}

std::string DescribeExceededBudget(const ServerConnectionSettings& server, const PoolOptions& pool,
                                   const ConnectionBudget& b) {
  const std::string reserved =
      server.reserved_connections >= 0
          ? absl::StrCat(" - reserved_connections ", server.reserved_connections)
          : std::string();
  return absl::StrCat(
      "connection budget exceeded: (DB_POOL_SIZE ", pool.pool_size, " + DB_MAX_OVERFLOW ",
      pool.max_overflow, ") x BROKER_EXPECTED_REPLICAS ", b.replicas, " = ", b.demand,
      " > max_connections ", server.max_connections, " - superuser_reserved_connections ",
      server.superuser_reserved_connections, reserved, " = ", b.available,
      " (reserved_connections exists from PostgreSQL 16 on). Under load the database will refuse "
      "connections (53300) and the brokers hold at what they get, so callers wait; lower "
      "DB_POOL_SIZE/DB_MAX_OVERFLOW so that the product fits, leaving room for other clients "
      "(docs/operations.md, \"Connection budget\")");
}

void CheckConnectionBudget(storage::DbConnection& db, ConnectionPool& pool, int outside_pool) {
  absl::StatusOr<ServerConnectionSettings> server = ReadServerConnectionSettings(db);
  if (!server.ok()) {
    spdlog::info("budget: could not read max_connections ({}); connection budget not checked",
                 Quoted(server.status().message()));
    return;
  }
  pool.RecordServerSettings(*server);
  PoolOptions o = pool.options();
  o.pool_size += outside_pool;
  const ConnectionBudget b = ComputeConnectionBudget(*server, o);
  if (b.exceeded) {
    spdlog::warn("budget: {}", DescribeExceededBudget(*server, o, b));
  } else {
    spdlog::info(
        "budget: (DB_POOL_SIZE {} + DB_MAX_OVERFLOW {}) x BROKER_EXPECTED_REPLICAS {} = {} <= "
        "max_connections {} - superuser_reserved_connections {}{} = {}",
        o.pool_size, o.max_overflow, b.replicas, b.demand, server->max_connections,
        server->superuser_reserved_connections,
        server->reserved_connections >= 0
            ? absl::StrCat(" - reserved_connections ", server->reserved_connections)
            : std::string(),
        b.available);
  }
}

}  // namespace sessionbroker::core
