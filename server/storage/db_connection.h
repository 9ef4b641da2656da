// The storage boundary: one physical database connection and the factory that
// opens them. The core (pool, runner) sees only these interfaces; the libpqxx
// adapter (pqxx_connection.h) and the unit-test fakes implement them.
//
// Thread safety: a DbConnection is used by one thread at a time, except
// Cancel(), which any thread may call while another runs a statement.
// A DbConnector is thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/storage/value.h"

namespace sessionbroker::storage {

struct ExecuteOptions {
  // A result that would take more than this many bytes on the wire fails with
  // RESOURCE_EXHAUSTED instead of being returned (0 = unlimited). Counted
  // while converting, as an upper bound of the serialized response (cells,
  // rows, column metadata, command tag), so an oversized result is abandoned
  // early and an oversized batch fails before COMMIT.
  size_t max_result_bytes = 0;
};

class DbConnection {
 public:
  virtual ~DbConnection() = default;

  // Runs one statement in autocommit mode. SQL errors come back as a Status
  // whose code follows docs/errors.md and which carries the SQLSTATE
  // (see sql_error.h).
  virtual absl::StatusOr<QueryResult> Execute(const Statement& statement,
                                              const ExecuteOptions& options) = 0;

  // Runs the statements in order in one transaction; on the first failure the
  // transaction is rolled back and that failure is returned (its message names
  // the statement's index). Nothing is applied unless everything is.
  virtual absl::StatusOr<std::vector<QueryResult>> ExecuteBatch(
      absl::Span<const Statement> statements, const ExecuteOptions& options) = 0;

  // A cheap round trip proving the connection still works.
  virtual absl::Status Ping() = 0;

  // Returns the connection to a pristine session state: rolls back any open
  // transaction, then drops session-level state (settings, temporary tables,
  // prepared statements, cursors, LISTENs, advisory locks: DISCARD ALL), then
  // re-applies the broker's baseline settings.
  virtual absl::Status ResetSession() = 0;

  // Stops the work in progress: asks the server to cancel the statement now
  // running, if any, and makes every later Execute/ExecuteBatch step on this
  // connection (the next statement of a batch, its COMMIT, a new call) fail
  // at once with SQLSTATE 57014 instead of starting, until ClearCancel(). So
  // a cancel that reaches the server between two statements, where
  // PostgreSQL ignores it, still stops the batch, which is rolled back.
  // Thread-safe; sends the request and returns without waiting for the
  // statement to stop.
  virtual void Cancel() = 0;

  // Forgets an earlier Cancel(). Called by the owner once no further Cancel()
  // can arrive for the finished work, before the connection is reused.
  virtual void ClearCancel() = 0;

  // True once the connection is known to be unusable (lost, or failed in a way
  // that leaves its state unknown). A broken connection is never reused.
  virtual bool IsBroken() const = 0;

  // The server process id, for logs and for matching pg_stat_activity.
  virtual int BackendPid() const = 0;
};

class DbConnector {
 public:
  virtual ~DbConnector() = default;

  // Opens a new connection with the broker's baseline settings applied.
  // UNAVAILABLE when the database cannot be reached.
  virtual absl::StatusOr<std::unique_ptr<DbConnection>> Connect() = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_
