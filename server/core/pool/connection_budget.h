// The connection budget: whether this broker's pool, times the replicas that
// share the database (BROKER_EXPECTED_REPLICAS), fits in the connections
// PostgreSQL lets ordinary roles open:
//
//   (DB_POOL_SIZE + DB_MAX_OVERFLOW) × BROKER_EXPECTED_REPLICAS
//       <= max_connections − superuser_reserved_connections − reserved_connections
//
// (reserved_connections exists from PostgreSQL 16 on; before, it counts as 0).
// At start the broker reads the settings on its first connection
// (ConnectionPool::SetFirstConnectHook), records them for PoolStatus and
// /metrics, and logs a warning with the numbers and the formula when the
// budget is exceeded. Exceeding it is survivable (the pool holds at the
// connections the database grants, see connection_pool.h), but then
// replicas compete for slots and callers wait. docs/operations.md explains
// it with a worked example.
//
// Pure functions plus one that runs two SHOW-like queries on a connection it
// is lent; thread-compatible.
#ifndef SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_BUDGET_H_
#define SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_BUDGET_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/core/pool/connection_pool.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::core {

// Reads max_connections, superuser_reserved_connections and (PostgreSQL 16+)
// reserved_connections with current_setting(). Leaves no session state.
absl::StatusOr<ServerConnectionSettings> ReadServerConnectionSettings(storage::DbConnection& db);

struct ConnectionBudget {
  int per_replica = 0;  // DB_POOL_SIZE + DB_MAX_OVERFLOW
  int replicas = 1;     // BROKER_EXPECTED_REPLICAS
  int demand = 0;       // per_replica × replicas
  int available = 0;    // max_connections − superuser_reserved − reserved
  bool exceeded = false;
};

ConnectionBudget ComputeConnectionBudget(const ServerConnectionSettings& server,
                                         const PoolOptions& pool);

// The warning's text: the numbers, the formula, what to change.
std::string DescribeExceededBudget(const ServerConnectionSettings& server, const PoolOptions& pool,
                                   const ConnectionBudget& budget);

// What the broker does on its first connection: reads the settings, records
// them in `pool`, and logs the budget (a warning when exceeded, an info line
// otherwise; an info line if the settings cannot be read, e.g. through a
// pooler that does not pass SHOW through).
// `outside_pool`: connections of the same bound held outside the pool (the
// pipelined engine's hot set, carved out of DB_POOL_SIZE), counted back into
// DB_POOL_SIZE for the check.
void CheckConnectionBudget(storage::DbConnection& db, ConnectionPool& pool, int outside_pool = 0);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_BUDGET_H_
