// StatementRunner: runs a one-shot statement (autocommit) or an atomic batch
// on a pooled connection, on behalf of one RPC.
//
//  * Requests are checked before any database work, here and nowhere else
//    (empty SQL, a NUL byte in it, several statements in one string,
//    transaction control, placeholder/parameter count mismatch, and the
//    operator's RequestLimits: SQL bytes, parameters per statement,
//    statements per batch → INVALID_ARGUMENT naming the limit's setting).
//  * The call's deadline bounds the pool wait and the statement: when it
//    passes mid-statement, a cancel request goes to PostgreSQL, the statement
//    stops, the caller gets DEADLINE_EXCEEDED and the connection is reused.
//    BROKER_MAX_STATEMENT_DURATION caps statements of callers with no
//    deadline. RunningCall::Cancel() (the RPC was cancelled) does the same
//    and yields CANCELLED.
//  * Unless every statement provably leaves no session state behind
//    (SqlInfo::leaves_no_state: relation-free SELECT/VALUES/SHOW/EXPLAIN with
//    allow-listed built-ins), the connection is reset before it goes back to
//    the pool, so no caller sees another's state.
//  * Results are read row by row and capped (RunnerOptions::max_result_bytes).
//    A one-shot statement that may write and return rows (INSERT/UPDATE/
//    DELETE/MERGE ... RETURNING, a WITH holding one of them, EXECUTE, CALL)
//    runs in a transaction of its own, so a result over the cap (or a stream
//    that fails) is rolled back rather than committed unseen.
//  * A one-shot Execute that needs nothing of a pooled connection (plain
//    autocommit, provably stateless, no request id, role, stream, named
//    parameter types or own transaction) runs on the pipelined engine when
//    one is configured and up (RunnerOptions::pipeline): pipelined with
//    other callers' statements, with the same deadline (capped as above),
//    cancellation and error model. So does an ExecuteBatch (kBatch) whose
//    every statement qualifies: its statements go out under one Sync, one
//    implicit transaction, all or nothing as the pooled BEGIN..COMMIT, with
//    the same per-statement results and the same error (which statement
//    failed, its SqlErrorDetail). A SELECT that is stateless only if the
//    names it reads resolve to no user code (SqlInfo::stateless_if: a table
//    read) goes there too when the CatalogGuard's recent answer says so
//    (RunnerOptions::pipeline_table_reads); so does a simple INSERT, UPDATE
//    or DELETE on a table whose writes the guard proved run no user code
//    (RunnerOptions::pipeline_table_writes; never with RETURNING on the
//    engine), and a batch of such statements, proved together with one
//    lookup; without an answer yet it takes the pooled path with its reset,
//    and the guard looks the answer up.
//    Everything else takes a pooled connection. The guard serves the pooled
//    path too, with the engine on or off: a one-shot Execute or
//    StreamExecute of such a read or write, or such a batch (no role,
//    transaction settings, named parameter types or request id:
//    ProvableOnPool) that the catalog proved stateless skips the reset on
//    its pooled connection.
//  * Sessions (SessionManager) run their transactions as steps: kBegin takes
//    a connection and hands it back inside its transaction, kInTransaction
//    and kCommit/kRollback run on that connection. Each step gets the same
//    deadline and cancellation handling as a one-shot call.
//
// Thread-safe; the pool, timers and clock must outlive it.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_STATEMENT_RUNNER_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_STATEMENT_RUNNER_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/duration_histogram.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/catalog_guard.h"
#include "server/core/exec/request_outcomes.h"
#include "server/core/pool/connection_pool.h"
#include "server/storage/db_connection.h"
#include "server/storage/pipeline_engine.h"
#include "server/storage/value.h"

namespace sessionbroker::core {

// The most parameters one statement may have: PostgreSQL's wire protocol
// (and so libpq) counts them in 16 bits.
inline constexpr size_t kMaxStatementParams = 65'535;

// Bounds on one request, each an operator's setting (server/config.cc); the
// message of a request over one names the setting. The defaults are the
// configuration's defaults.
struct RequestLimits {
  // BROKER_MAX_SQL_BYTES: the bytes of one statement's SQL text.
  size_t max_sql_bytes = 1 << 20;
  // BROKER_MAX_STATEMENT_PARAMS: parameters of one statement, at most
  // kMaxStatementParams (the protocol's own limit).
  size_t max_statement_params = kMaxStatementParams;
  // BROKER_MAX_BATCH_STATEMENTS: statements of one ExecuteBatch.
  size_t max_batch_statements = 1000;
};

struct RunnerOptions {
  size_t max_result_bytes = 4 << 20;
  // Upper bound on a statement's (or batch's) run time whatever the deadline.
  absl::Duration max_statement_duration = absl::Minutes(5);
  // Log every statement's text and duration (never parameter values).
  bool echo = false;
  // The table of one-shot calls' request ids (RunRequest::durable); null:
  // such requests fail with FAILED_PRECONDITION. Must outlive the runner.
  RequestOutcomes* request_outcomes = nullptr;
  RequestLimits limits;
  // The pipelined engine (BROKER_PIPELINE_CONNECTIONS, issue 14), or null.
  // One-shot calls that need nothing of a pooled connection go there instead
  // of to the pool (see StatementRunner::Pipelinable); the engine's hot
  // connections are taken out of the pool's bound by whoever wires them.
  // Must outlive the runner.
  storage::PipelineEngine* pipeline = nullptr;
  // SELECTs the catalog proves stateless (BROKER_PIPELINE_TABLE_READS) are
  // pipelined (with `pipeline`) or skip the reset on a pooled connection,
  // trusting the catalog's answers for `catalog_refresh`
  // (BROKER_PIPELINE_CATALOG_REFRESH; CatalogGuard). The catalog is asked
  // through the engine when there is one, on a pooled connection otherwise.
  bool pipeline_table_reads = true;
  // Likewise simple INSERT, UPDATE and DELETE statements on tables the
  // catalog proves run no user code when written (BROKER_PIPELINE_TABLE_WRITES:
  // no triggers but foreign keys', no sequence or user-code defaults, no
  // user code in constraints or indexes; CatalogGuard), alone or in
  // batches with proved reads.
  bool pipeline_table_writes = true;
  absl::Duration catalog_refresh = absl::Seconds(1);
};

struct RunRequest {
  enum class Op {
    // Exactly one statement: autocommit, or, when `transaction` is not plain
    // (a session's settings or read-only flag), in a one-statement
    // transaction begun with it.
    kExecute,
    // All statements in one transaction begun with `transaction`.
    kBatch,
    // Opens a transaction (`transaction`) on a pooled connection and hands
    // the connection back to the caller in RunOutcome::connection.
    kBegin,
    // The statements, in order, inside the transaction open on `connection`;
    // on success the connection comes back in RunOutcome::connection, on
    // failure the transaction is rolled back and the connection returned to
    // the pool (unless keep_on_failure). The only statements of transaction
    // control allowed (in every op, only here) are SAVEPOINT, RELEASE and
    // ROLLBACK TO SAVEPOINT.
    kInTransaction,
    // Commits / rolls back the transaction open on `connection`, then
    // returns the connection to the pool.
    kCommit,
    kRollback,
  };
  Op op = Op::kExecute;
  std::vector<storage::Statement> statements;
  // The caller's deadline (absl::InfiniteFuture() when it has none).
  absl::Time deadline = absl::InfiniteFuture();
  // How the transaction begins (kExecute, kBatch, kBegin).
  storage::TransactionOptions transaction;
  // kInTransaction, kCommit, kRollback: the connection holding the open
  // transaction (from an earlier kBegin/kInTransaction outcome).
  PooledConnection connection;
  // Reset the connection's session when it goes back to the pool: an
  // earlier step of the transaction changed session state.
  bool reset_on_release = false;
  // kInTransaction: when a statement fails, hand the connection back (still
  // inside its transaction, which PostgreSQL has aborted) instead of rolling
  // it back, so that a ROLLBACK TO SAVEPOINT can recover it. Not when the
  // connection broke or the broker aborted the call.
  bool keep_on_failure = false;
  // Who asks (the authenticated client, or "x-client-id"), passed on to the
  // pool.
  std::string client_id;
  // kExecute, kBatch: the call carries a request_id; its statements run in a
  // transaction together with its RequestOutcomes row (request_outcomes.h).
  // When an earlier attempt's row is found instead, nothing runs, the
  // results are empty and durable->replayed holds that row.
  std::shared_ptr<DurableRequest> durable;
  // kExecute, kBatch, kBegin: the PostgreSQL role the statements run as
  // (DbConnection::UseRole on the connection taken from the pool, before
  // anything else runs on it); "" = the broker's login role. Every such
  // checkout sets it, so a role never reaches another caller.
  std::string database_role;
  // StreamExecute (kExecute, or kInTransaction with one statement): the
  // statement's rows go here as they are read, with back pressure, instead
  // of into the outcome (whose one result then has no rows). The runner
  // keeps it alive while the statement runs.
  std::shared_ptr<storage::RowSink> sink;
};

// What a step produced.
struct RunOutcome {
  absl::StatusOr<std::vector<storage::QueryResult>> results;
  // kBegin and kInTransaction that succeeded (or kInTransaction that failed
  // with keep_on_failure): the connection, still inside its transaction. Otherwise empty: the
  // connection is back in the pool.
  PooledConnection connection;
  // The statements may have left session state behind (SET, temp tables,
  // ...); an owner keeping the connection passes reset_on_release later.
  bool changed_session_state = false;
};

// Statement counters since start, for metrics.
struct RunnerStats {
  int64_t statements = 0;
  int64_t statement_errors = 0;
  int64_t cancellations = 0;  // by deadline or by the caller
  int64_t session_resets = 0;
  int64_t pipelined = 0;  // of `statements`, those run by the pipelined engine
  // The CatalogGuard's answers for table reads that would otherwise be
  // pipelinable or skip the reset on a pooled connection (all 0 without a
  // guard: pipeline_table_reads off).
  int64_t catalog_proved = 0;   // pipelined, or not reset, on the catalog's word
  int64_t catalog_refused = 0;  // the catalog says they may run user code
  int64_t catalog_unknown = 0;  // no recent answer: ran with a reset
  int64_t catalog_lookups = 0;
  int64_t catalog_lookup_failures = 0;
};

// A call in progress; lets the transport cancel it. Thread-safe.
class RunningCall {
 public:
  virtual ~RunningCall() = default;
  // The caller went away: stop waiting, or cancel the running statement; the
  // call ends with CANCELLED. Never blocks.
  virtual void Cancel() = 0;
  // Like Cancel(), on the broker's behalf (a session deadline fired): the
  // call ends with `why` (the SQLSTATE of a cancelled statement is kept).
  virtual void Abort(absl::Status why) = 0;
};

class StatementRunner final {
 public:
  using Results = std::vector<storage::QueryResult>;
  using Callback = absl::AnyInvocable<void(absl::StatusOr<Results>) &&>;
  using StepCallback = absl::AnyInvocable<void(RunOutcome) &&>;

  // `cancel_executor` sends cancel requests to PostgreSQL (a network round
  // trip each), away from gRPC and timer threads.
  StatementRunner(ConnectionPool& pool, TimerQueue& timers, Executor& cancel_executor,
                  const Clock& clock, RunnerOptions options);
  StatementRunner(const StatementRunner&) = delete;
  StatementRunner& operator=(const StatementRunner&) = delete;

  // Checks a request without touching the database. `in_session`: the
  // request is a session's, which may yet run inside its transaction (as
  // kInTransaction), so savepoint statements pass here; RunStep checks again.
  absl::Status Validate(const RunRequest& request, bool in_session = false) const;

  // Starts the work and returns at once. `done` runs exactly once: inline when
  // the request is invalid, otherwise on an executor thread (or, for a call
  // the pipelined engine runs, on its loop thread: `done` must not block).
  // The connection is back in the pool before `done` runs. For kExecute and
  // kBatch.
  std::shared_ptr<RunningCall> Run(RunRequest request, Callback done);

  // Like Run, for every Op; the outcome may hand a connection back (see
  // RunRequest::Op). Work on a given connection runs on the pool's executor.
  std::shared_ptr<RunningCall> RunStep(RunRequest request, StepCallback done);

  RunnerStats Stats() const;
  // The pipelined engine's numbers; nullopt when there is none.
  std::optional<storage::PipelineStats> PipelineStats() const;

  // Whether a checked request goes to the pipelined engine (when one is up):
  // kExecute of one statement in plain autocommit, no request id, stream,
  // role or named parameter types, that leaves no session state and need not
  // run in a transaction of its own; or kBatch whose statements all are so,
  // with plain transaction options (no isolation, read-only or settings).
  // `own_transaction` for a batch: one of its writes returns rows.
  static bool Pipelinable(const RunRequest& request, bool needs_reset, bool own_transaction);
  // Whether a request's table reads and writes, when the catalog proves
  // them stateless (SqlInfo::stateless_if), may skip the reset on the pooled
  // connection they run on: kExecute of one statement (also streamed, also
  // in a transaction of its own) or kBatch, on a connection fresh from the
  // pool, with no database_role, transaction settings, named parameter types
  // or request id; never a session's connection or reset_on_release. What Pipelinable
  // adds to this is about the engine, not about session state.
  static bool ProvableOnPool(const RunRequest& request);
  // How long statements (or whole batches) ran on their connection.
  const DurationHistogram& statement_duration() const { return statement_duration_; }

 private:
  class Call;
  friend class Call;
  class PipelinedCall;
  friend class PipelinedCall;

  ConnectionPool& pool_;
  TimerQueue& timers_;
  Executor& cancel_executor_;
  const Clock& clock_;
  const RunnerOptions options_;
  std::atomic<int64_t> statements_{0};
  std::atomic<int64_t> statement_errors_{0};
  std::atomic<int64_t> cancellations_{0};
  std::atomic<int64_t> session_resets_{0};
  std::atomic<int64_t> pipelined_{0};
  DurationHistogram statement_duration_{clock_};
  // With pipeline_table_reads or pipeline_table_writes; null otherwise.
  std::unique_ptr<CatalogGuard> catalog_guard_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_STATEMENT_RUNNER_H_
