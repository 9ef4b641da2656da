// The storage boundary: one physical database connection and the factory that
// opens them. The core (pool, runner) sees only these interfaces; the libpq
// adapter (pq_connection.h) and the unit-test fakes implement them.
//
// Thread safety: a DbConnection is used by one thread at a time, except
// Cancel(), which any thread may call while another runs a statement.
// A DbConnector is thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_
#define SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/storage/value.h"

namespace sessionbroker::storage {

// How a transaction begins: its characteristics, and settings that apply to
// it alone (SET LOCAL semantics: they end with the transaction, so they never
// reach another user of the connection).
struct TransactionOptions {
  enum class Isolation { kDefault, kReadCommitted, kRepeatableRead, kSerializable };
  Isolation isolation = Isolation::kDefault;
  bool read_only = false;
  // Only meaningful with kSerializable and read_only.
  bool deferrable = false;
  // PostgreSQL setting name -> value, applied right after BEGIN. Names must
  // have been checked by the caller (session_settings.h); values are sent as
  // quoted literals and checked by PostgreSQL.
  std::vector<std::pair<std::string, std::string>> settings;

  // BEGIN with nothing to add: a plain BEGIN.
  bool IsPlain() const {
    return isolation == Isolation::kDefault && !read_only && !deferrable && settings.empty();
  }
};

struct ExecuteOptions {
  // A result that would take more than this many bytes on the wire fails with
  // RESOURCE_EXHAUSTED instead of being returned (0 = unlimited). Counted
  // while converting, as an upper bound of the serialized response (cells,
  // rows, column metadata, command tag), so an oversized result is abandoned
  // early and an oversized batch fails before COMMIT.
  size_t max_result_bytes = 0;
  // ExecuteBatch: how its transaction begins.
  TransactionOptions transaction;
  // Execute: the statement runs inside a transaction begun with Begin(), so
  // its effects are not committed yet (only changes what errors say).
  bool in_transaction = false;
  // Execute outside a transaction: the caller wants the session reset
  // afterwards (as ResetSession() does), whether the statement succeeds or
  // not. The connection sends the reset in the same round trip as the
  // statement where it can (libpq pipeline mode); a failed reset leaves the
  // connection broken (IsBroken()). The caller does not call ResetSession()
  // after such a call.
  bool reset_session_after = false;
};

// Receives a streamed statement's result (DbConnection::ExecuteStream), on
// the thread running the statement, which it may block to apply back
// pressure: while it does, the connection reads nothing more and PostgreSQL
// stops producing once the socket's buffers are full.
class RowSink {
 public:
  virtual ~RowSink() = default;
  // The result's columns (empty for a statement without rows), once, before
  // any row. A non-OK status stops the statement before it runs.
  virtual absl::Status Columns(std::vector<Column> columns) = 0;
  // The next row; `bytes` is its size as counted against limits
  // (value_text.h). A non-OK status stops the statement: it is cancelled on
  // the server and ExecuteStream returns that status.
  virtual absl::Status Row(std::vector<Value> row, size_t bytes) = 0;
  // Called from any thread when the statement is being cancelled (deadline,
  // caller, broker): a Row() blocked waiting for the consumer, or the next
  // one, returns `why` instead, so a cancel never waits for a reader.
  virtual void Stop(absl::Status why) {}
};

class DbConnection {
 public:
  virtual ~DbConnection() = default;

  // Runs one statement in autocommit mode. SQL errors come back as a Status
  // whose code follows docs/errors.md and which carries the SQLSTATE
  // (see sql_error.h).
  virtual absl::StatusOr<QueryResult> Execute(const Statement& statement,
                                              const ExecuteOptions& options) = 0;

  // Runs one statement like Execute (options.in_transaction says whether a
  // transaction begun with Begin() is open) and hands its result to `sink`
  // row by row as PostgreSQL sends it, holding one row at a time. Returns
  // the command tag and row count (no rows). A single row over
  // options.max_result_bytes fails with RESOURCE_EXHAUSTED. An error after
  // some rows were handed over is returned as Execute would return it.
  //
  // The default runs Execute and hands over its result (for connections
  // that cannot stream, such as test fakes).
  virtual absl::StatusOr<QueryResult> ExecuteStream(const Statement& statement,
                                                    const ExecuteOptions& options, RowSink& sink) {
    ExecuteOptions whole = options;
    whole.max_result_bytes = 0;
    absl::StatusOr<QueryResult> result = Execute(statement, whole);
    if (!result.ok()) return result.status();
    if (absl::Status s = sink.Columns(result->columns); !s.ok()) return s;
    for (std::vector<Value>& row : result->rows) {
      if (absl::Status s = sink.Row(std::move(row), 0); !s.ok()) return s;
    }
    result->rows.clear();
    return result;
  }

  // Runs the statements in order in one transaction; on the first failure the
  // transaction is rolled back and that failure is returned (its message names
  // the statement's index). Nothing is applied unless everything is.
  virtual absl::StatusOr<std::vector<QueryResult>> ExecuteBatch(
      absl::Span<const Statement> statements, const ExecuteOptions& options) = 0;

  // Opens a transaction (BEGIN with `options`) that later Execute calls join,
  // until Commit() or Rollback(). On failure no transaction is left open, or
  // the connection is broken. Honours Cancel() like Execute.
  virtual absl::Status Begin(const TransactionOptions& options) = 0;

  // Commits the transaction opened by Begin(). OK only if PostgreSQL
  // committed it: a transaction an earlier error had aborted is rolled back
  // and reported as ABORTED; a connection lost during COMMIT is UNKNOWN (the
  // outcome cannot be known). Afterwards no transaction is open, or the
  // connection is broken. Honours Cancel() (then nothing is committed).
  virtual absl::Status Commit() = 0;

  // Rolls back the open transaction, if any. Ignores Cancel(): a cancelled
  // transaction must still be ended.
  virtual absl::Status Rollback() = 0;

  // A cheap round trip proving the connection still works.
  virtual absl::Status Ping() = 0;

  // Returns the connection to its baseline session state: rolls back any
  // open transaction, closes cursors, restores the session's role and every
  // setting (SET SESSION AUTHORIZATION DEFAULT, RESET ALL, then the broker's
  // baseline settings), stops listening, releases session advisory locks,
  // drops temporary objects and sequence state, and deallocates the
  // statements a caller PREPAREd, in one round trip. The broker's own
  // prepared statements stay (unless a caller deallocated or replaced one:
  // then all are deallocated and prepared again on their next use). On
  // failure the connection is broken.
  virtual absl::Status ResetSession() = 0;

  // Makes later statements run as PostgreSQL role `role` (SET ROLE), or as
  // the connection's login role when `role` is empty (RESET ROLE). Skipped
  // when the connection already is in that role; ResetSession (DISCARD ALL)
  // returns it to the login role. The role must exist and the login role be
  // a member of it, or PostgreSQL's error (42704, 42501) is returned.
  virtual absl::Status UseRole(const std::string& role) = 0;

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
  // UNAVAILABLE when the database cannot be reached; RESOURCE_EXHAUSTED
  // (carrying the SQLSTATE, 53300) when it answers but has no connection
  // slot left (max_connections), which the pool treats as "full", not
  // "down".
  virtual absl::StatusOr<std::unique_ptr<DbConnection>> Connect() = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_DB_CONNECTION_H_
