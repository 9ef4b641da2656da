#include "server/core/exec/statement_runner.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/base/mutex.h"
#include "server/core/sql/sql_classifier.h"
#include "server/storage/sql_error.h"
#include "server/storage/value_text.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

// LISTEN on a pooled connection could never deliver (the broker reads no
// notifications there, and the connection is reset afterwards).
bool IsListen(const SqlInfo& info) {
  // The first keyword suffices: a text of several statements is refused
  // anyway. (The "listen" statement kind also covers NOTIFY and UNLISTEN,
  // which run.)
  return info.first_keyword == "LISTEN";
}

constexpr absl::string_view kQueryCanceled = "57014";

using Op = RunRequest::Op;

bool TakesStatements(Op op) {
  return op == Op::kExecute || op == Op::kBatch || op == Op::kInTransaction;
}

// What a result counts against max_result_bytes: the connection's own
// upper bound of its size in the response (storage/value_text.h).
size_t ResultBytes(const storage::QueryResult& result) {
  size_t bytes = storage::ResultHeaderBytes(result);
  for (const std::vector<storage::Value>& row : result.rows) {
    bytes += storage::kResultRowOverheadBytes;
    for (const storage::Value& value : row) bytes += storage::ResultBytes(value);
  }
  return bytes;
}

// Whether a one-shot statement may change data and return rows, so that
// its result must be read whole before its changes are committed. Queries
// (SELECT, VALUES, TABLE, SHOW, ...) run in autocommit; a SELECT calling a
// function that writes is the exception this cannot see (docs/streaming.md).
bool MayWriteAndReturnRows(const SqlInfo& info, const std::string& sql) {
  const std::string& k = info.first_keyword;
  if (k == "EXECUTE" || k == "CALL") return true;
  const std::string upper = absl::AsciiStrToUpper(sql);
  if (k == "INSERT" || k == "UPDATE" || k == "DELETE" || k == "MERGE") {
    return absl::StrContains(upper, "RETURNING");
  }
  if (k == "WITH") {
    for (const char* word : {"INSERT", "UPDATE", "DELETE", "MERGE"}) {
      if (absl::StrContains(upper, word)) return true;
    }
  }
  return false;
}

bool RunsOnGivenConnection(Op op) {
  return op == Op::kInTransaction || op == Op::kCommit || op == Op::kRollback;
}

// Statements the connection may prepare and keep (storage::Statement::
// cacheable): queries and DML that leave nothing behind on the session.
bool Cacheable(const SqlInfo& info) {
  if (!info.parsed || info.changes_session_state || info.statement_kinds.size() != 1) return false;
  const std::string& k = info.statement_kinds[0];
  return k == "select" || k == "insert" || k == "update" || k == "delete" || k == "merge";
}

// Checks the request; on success tells whether the connection must be reset
// afterwards because a statement may leave session state behind, and how a
// one-shot statement runs. With
// `statements` (the request's own), marks the cacheable ones.
struct Checked {
  // A statement may leave session state behind: reset the connection after.
  bool needs_reset = false;
  // kExecute: run the statement in a transaction of its own
  // (MayWriteAndReturnRows).
  bool own_transaction = false;
  // The statements that need the reset only unless the catalog proves them
  // stateless (SqlInfo::stateless_if), their dependencies together; unset
  // when some statement needs the reset whatever the catalog says.
  std::optional<CatalogDependencies> stateless_if;
  // Of those: some reads tables only (BROKER_PIPELINE_TABLE_READS), some
  // writes one (BROKER_PIPELINE_TABLE_WRITES).
  bool table_reads = false;
  bool table_writes = false;
  // Some statement may write and return rows (RETURNING): its result must
  // be read before its changes commit.
  bool writes_and_returns_rows = false;
};

void AppendSortedUnique(std::vector<std::string>* to, const std::vector<std::string>& from) {
  to->insert(to->end(), from.begin(), from.end());
  std::sort(to->begin(), to->end());
  to->erase(std::unique(to->begin(), to->end()), to->end());
}

void Merge(CatalogDependencies* to, const CatalogDependencies& from) {
  AppendSortedUnique(&to->relations, from.relations);
  AppendSortedUnique(&to->written, from.written);
  AppendSortedUnique(&to->operators, from.operators);
  AppendSortedUnique(&to->functions, from.functions);
  AppendSortedUnique(&to->types, from.types);
}

absl::StatusOr<Checked> Check(const RunRequest& request, const RequestLimits& limits,
                              std::vector<storage::Statement>* statements = nullptr,
                              bool savepoints_may_follow = false) {
  if (RunsOnGivenConnection(request.op) && !request.connection) {
    return absl::FailedPreconditionError("no transaction is open (no connection was given)");
  }
  if (!TakesStatements(request.op)) {
    if (!request.statements.empty()) {
      return absl::InvalidArgumentError("BEGIN, COMMIT and ROLLBACK take no statements");
    }
    return Checked{};
  }
  if (request.sink != nullptr && request.op != Op::kExecute &&
      !(request.op == Op::kInTransaction && request.statements.size() == 1)) {
    return absl::InvalidArgumentError("a streamed result comes from exactly one statement");
  }
  if (request.sink != nullptr && request.durable != nullptr) {
    // A replay could not stream the first attempt's rows again.
    return absl::InvalidArgumentError(
        "request_id is not taken on a streamed result (StreamExecute); use Execute for a write "
        "that must be safe to retry");
  }
  const bool several_allowed = request.op != Op::kExecute;
  if (request.statements.empty()) {
    return absl::InvalidArgumentError(several_allowed ? "statements is empty: give at least one"
                                                      : "no statement given");
  }
  if (!several_allowed && request.statements.size() != 1) {
    return absl::InvalidArgumentError("Execute runs exactly one statement");
  }
  if (request.statements.size() > limits.max_batch_statements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the batch has ", request.statements.size(), " statements; this broker takes at most ",
        limits.max_batch_statements,
        " per call (BROKER_MAX_BATCH_STATEMENTS): split it, or pass rows as array parameters"));
  }
  Checked checked;
  // Every statement not provable from its text alone is provable on the
  // catalog's word (so far).
  bool all_conditional = true;
  CatalogDependencies needs;
  for (size_t i = 0; i < request.statements.size(); ++i) {
    const storage::Statement& s = request.statements[i];
    const std::string where = several_allowed ? absl::StrCat("statements[", i, "]: ") : "";
    // Before anything reads the text: classifying it costs time linear in
    // its length.
    if (s.sql.size() > limits.max_sql_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "sql is ", s.sql.size(), " bytes; this broker takes at most ",
          limits.max_sql_bytes,
          " per statement (BROKER_MAX_SQL_BYTES): pass data as parameters, not in the SQL text"));
    }
    // libpq takes the SQL as a C string: it would end at the NUL, silently.
    if (s.sql.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "sql contains a NUL byte, which no SQL text may contain"));
    }
    if (s.params.size() > kMaxStatementParams) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the statement has ", s.params.size(), " parameters; PostgreSQL takes at most ",
          kMaxStatementParams, " per statement: pass the values as an array parameter instead"));
    }
    if (s.params.size() > limits.max_statement_params) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the statement has ", s.params.size(), " parameters; this broker takes at most ",
          limits.max_statement_params,
          " per statement (BROKER_MAX_STATEMENT_PARAMS): pass the values as an array parameter "
          "instead"));
    }
    const SqlInfo info = ClassifySql(s.sql);
    if (info.empty) return absl::InvalidArgumentError(absl::StrCat(where, "sql is empty"));
    if (info.multiple_statements) {
      return absl::InvalidArgumentError(
          absl::StrCat(where,
                       "sql holds more than one statement; send one statement per call, or several "
                       "as separate entries of ExecuteBatch"));
    }
    if (info.savepoint != SqlInfo::Savepoint::kNone) {
      if (request.op != Op::kInTransaction && !savepoints_may_follow) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, info.first_keyword,
            " is allowed only inside a session's transaction (BeginTransaction, then Execute): "
            "Execute outside one runs each statement in its own transaction (autocommit) and "
            "ExecuteBatch is all or nothing, so there is no savepoint to return to"));
      }
    } else if (info.transaction_control) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, info.first_keyword,
          " is not allowed here: Execute runs each statement in its own transaction "
          "(autocommit), ExecuteBatch wraps all its statements in one transaction, and a "
          "session's transactions are opened and ended with BeginTransaction, Commit and "
          "Rollback, so the broker controls transactions"));
    }
    if (info.copy_stdio) {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          "COPY ... FROM STDIN / TO STDOUT streams data over a protocol the broker does "
          "not offer; use INSERT ... VALUES with parameters, or SELECT"));
    }
    if (IsListen(info)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          "LISTEN through Execute/ExecuteBatch never delivers a notification: the connection "
          "goes back to the pool after the call and is reset. Subscribe with the Listen stream "
          "(rpc Listen, docs/notifications.md) instead; NOTIFY through Execute works"));
    }
    // Text that does not parse is left to PostgreSQL, which reports the
    // syntax error before it counts parameters.
    if (info.parsed && info.max_placeholder != static_cast<int>(s.params.size())) {
      return absl::InvalidArgumentError(
          info.max_placeholder == 0
              ? absl::StrCat(where, "the statement has no $n placeholders but ", s.params.size(),
                             " parameters were given")
              : absl::StrCat(where, "the statement uses placeholders up to $", info.max_placeholder,
                             " but ", s.params.size(), " parameters were given"));
    }
    // Only what is provably stateless skips the reset (SqlInfo::leaves_no_state).
    checked.needs_reset = checked.needs_reset || !info.leaves_no_state;
    if (!info.leaves_no_state) {
      if (info.stateless_if.has_value()) {
        Merge(&needs, *info.stateless_if);
        (info.stateless_if->written.empty() ? checked.table_reads : checked.table_writes) = true;
      } else {
        all_conditional = false;
      }
    }
    const bool writes_and_returns = MayWriteAndReturnRows(info, s.sql);
    checked.writes_and_returns_rows = checked.writes_and_returns_rows || writes_and_returns;
    checked.own_transaction = request.op == Op::kExecute && writes_and_returns;
    if (statements != nullptr) (*statements)[i].cacheable = Cacheable(info);
  }
  if (checked.needs_reset && all_conditional) checked.stateless_if = std::move(needs);
  return checked;
}

}  // namespace

// One call's progress: waiting for a connection, running, finished. The mutex
// and the in-flight count order cancellation against completion, so a cancel
// request can never hit a connection after it went back to the pool (or to
// the session that owns it).
class StatementRunner::Call final : public RunningCall, public std::enable_shared_from_this<Call> {
 public:
  // kClientCeiling: the client's statement_timeout_max (ClientQuota), below
  // BROKER_MAX_STATEMENT_DURATION.
  enum class Reason { kNone, kDeadline, kMaxDuration, kClientCeiling, kCaller, kAborted };

  Call(StatementRunner& runner, RunRequest request, StepCallback done, bool needs_reset,
       bool own_transaction)
      : runner_(runner),
        request_(std::move(request)),
        done_(std::move(done)),
        needs_reset_(needs_reset),
        own_transaction_(own_transaction) {}

  void Start() {
    auto self = shared_from_this();
    if (RunsOnGivenConnection(request_.op)) {
      // The connection is ours already; the work blocks, so it runs where
      // pooled work runs.
      runner_.pool_.executor().Post(
          [self] { self->OnConnection(std::move(self->request_.connection)); });
      return;
    }
    AcquireRequest acquire;
    acquire.deadline = request_.deadline;
    acquire.client_id = request_.client_id;
    const ConnectionPool::WaitId id =
        runner_.pool_.Acquire(acquire, [self](absl::StatusOr<PooledConnection> conn) mutable {
          self->OnConnection(std::move(conn));
        });
    bool cancel_now = false;
    {
      MutexLock lock(&mu_);
      if (phase_ == Phase::kWaiting) {
        wait_id_ = id;
        cancel_now = reason_ != Reason::kNone;
      }
    }
    if (cancel_now) runner_.pool_.CancelWait(id);
  }

  void Cancel() override { Stop(Reason::kCaller, absl::Status()); }
  void Abort(absl::Status why) override { Stop(Reason::kAborted, std::move(why)); }

 private:
  enum class Phase { kWaiting, kRunning, kFinished };

  void Stop(Reason reason, absl::Status why) {
    ConnectionPool::WaitId wait = 0;
    bool running = false;
    {
      MutexLock lock(&mu_);
      if (phase_ == Phase::kFinished || stop_requested_) return;
      stop_requested_ = true;
      if (reason_ == Reason::kNone) {
        reason_ = reason;
        abort_status_ = std::move(why);
      }
      if (phase_ == Phase::kWaiting) wait = wait_id_;
      running = phase_ == Phase::kRunning;
    }
    if (wait != 0) runner_.pool_.CancelWait(wait);
    if (running) RequestCancel(reason);
  }

  // Never blocks: a cancel request opens a socket to PostgreSQL, so it is
  // sent from the runner's cancel executor, not from a gRPC or timer thread.
  void RequestCancel(Reason reason) {
    auto self = shared_from_this();
    runner_.cancel_executor_.Post([self, reason] { self->SendCancel(reason); });
  }

  void SendCancel(Reason reason) {
    storage::DbConnection* conn;
    {
      MutexLock lock(&mu_);
      if (phase_ != Phase::kRunning) return;
      if (reason_ == Reason::kNone) reason_ = reason;
      conn = running_on_;
      ++cancels_in_flight_;  // completion waits for it before reusing conn
    }
    conn->Cancel();
    // A stream's reader may have stopped reading: the statement's thread
    // would wait for it and never see the cancel.
    if (request_.sink != nullptr) {
      request_.sink->Stop(
          storage::SqlError(kQueryCanceled, "canceling statement due to user request"));
    }
    MutexLock lock(&mu_);
    --cancels_in_flight_;
    cancel_sent_.SignalAll();
    // PostgreSQL ignores a cancel that arrives between two statements; the
    // connection's own cancel flag stops the next one, and a repeat every
    // second covers a statement that started just as the request went out.
    if (phase_ == Phase::kRunning && resend_timer_ == 0) {
      auto self = shared_from_this();
      resend_timer_ = runner_.timers_.Schedule(runner_.clock_.Now() + absl::Seconds(1), [self] {
        Reason again;
        {
          MutexLock lock(&self->mu_);
          self->resend_timer_ = 0;
          again = self->reason_;
        }
        self->RequestCancel(again);
      });
    }
  }

  // The request's statements, in order, inside the transaction open on
  // `conn` (options.in_transaction).
  absl::StatusOr<Results> InOpenTransaction(storage::DbConnection& conn,
                                            const storage::ExecuteOptions& options) {
    Results out;
    const size_t n = request_.statements.size();
    // The cap covers the whole batch, as a one-shot batch's does: each
    // statement is capped by the connection, their sum here, where
    // failing rolls the transaction back (in the response it would be
    // too late: the statements would stay in the transaction).
    size_t result_bytes = 0;
    for (size_t k = 0; k < n; ++k) {
      absl::StatusOr<storage::QueryResult> one = conn.Execute(request_.statements[k], options);
      if (one.ok() && options.max_result_bytes > 0) {
        result_bytes += ResultBytes(*one);
        if (result_bytes > options.max_result_bytes) {
          one = absl::ResourceExhaustedError(absl::StrCat(
              "the results of the batch exceed ", options.max_result_bytes,
              " bytes (BROKER_MAX_RESULT_BYTES); add a LIMIT or page with WHERE/ORDER BY; its "
              "transaction was rolled back"));
        }
      }
      if (!one.ok()) {
        if (n == 1) return one.status();
        return storage::ForStatement(one.status(), k, n);
      }
      out.push_back(*std::move(one));
    }
    return out;
  }

  // Ends the transaction a failed durable step left open; a connection
  // whose rollback fails is not reused (OnConnection discards it).
  void RollBackDurable(storage::DbConnection& conn) {
    if (conn.IsBroken()) return;
    if (!conn.Rollback().ok()) discard_connection_ = true;
  }

  // kExecute/kBatch with a request_id: BEGIN; claim the id; the statements;
  // store the response; COMMIT (request_outcomes.h).
  absl::StatusOr<Results> WorkDurable(storage::DbConnection& conn,
                                      storage::ExecuteOptions options) {
    if (runner_.options_.request_outcomes == nullptr) {
      return absl::FailedPreconditionError(
          "this broker keeps no request outcomes table, so request_id cannot be honoured on "
          "calls outside a session");
    }
    RequestOutcomes& table = *runner_.options_.request_outcomes;
    DurableRequest& durable = *request_.durable;
    if (!table.created()) EnsureTable(conn, table);
    if (absl::Status begun = conn.Begin(request_.transaction); !begun.ok()) return begun;
    options.in_transaction = true;
    absl::StatusOr<storage::QueryResult> claimed =
        conn.Execute(table.Claim(durable, runner_.clock_.Now()), options);
    if (!claimed.ok()) {
      RollBackDurable(conn);
      return OutcomeTableError(claimed.status(), table);
    }
    if (claimed->rows.empty()) {
      // An earlier attempt committed: nothing of this one runs.
      RollBackDurable(conn);
      if (discard_connection_) {
        return absl::UnavailableError("the connection failed while reading an earlier outcome");
      }
      storage::ExecuteOptions plain;
      absl::StatusOr<storage::QueryResult> found = conn.Execute(table.Lookup(durable), plain);
      if (!found.ok()) return OutcomeTableError(found.status(), table);
      if (found->rows.empty() || found->rows[0].size() != 3) {
        return absl::AbortedError(absl::StrCat(
            "the earlier call with request_id \"", durable.request_id,
            "\" expired while this retry looked it up; retry once more (it will run)"));
      }
      const std::vector<storage::Value>& row = found->rows[0];
      DurableRequest::Stored stored;
      stored.same_request = row[0].bool_value;
      stored.omitted = row[1].bool_value;
      stored.response = row[2].text;
      durable.replayed = std::move(stored);
      return Results{};
    }
    absl::StatusOr<Results> out = InOpenTransaction(conn, options);
    if (!out.ok()) {
      RollBackDurable(conn);
      return out.status();
    }
    std::string response = durable.serialize(*out);
    const bool omitted = response.size() > table.options().max_outcome_bytes;
    if (omitted) response.clear();
    absl::StatusOr<storage::QueryResult> stored =
        conn.Execute(table.Store(durable, std::move(response), omitted), options);
    if (!stored.ok()) {
      RollBackDurable(conn);
      return OutcomeTableError(stored.status(), table);
    }
    if (absl::Status committed = conn.Commit(); !committed.ok()) return committed;
    return out;
  }

  // CREATE TABLE IF NOT EXISTS, once per process. A failure is not the
  // call's: the table may exist already (created by an operator for a role
  // without CREATE), which the claim then shows.
  void EnsureTable(storage::DbConnection& conn, RequestOutcomes& table) {
    storage::ExecuteOptions plain;
    for (const storage::Statement& s : table.CreateStatements()) {
      absl::StatusOr<storage::QueryResult> created = conn.Execute(s, plain);
      const std::optional<std::string> sqlstate =
          created.ok() ? std::nullopt : storage::SqlStateOf(created.status());
      // 23505/42P07: another replica created it at the same moment.
      if (!created.ok() && sqlstate != "23505" && sqlstate != "42P07") {
        spdlog::warn("could not create the request outcomes table {}: {}", table.options().table,
                     created.status().ToString());
        if (sqlstate != "42501") return;  // try again on the next call
        break;
      }
    }
    table.MarkCreated();
  }

  // The outcomes table itself failed (missing, no privilege): say what the
  // operator must do; other errors (cancels, serialization) pass through.
  static absl::Status OutcomeTableError(const absl::Status& status, const RequestOutcomes& table) {
    const std::optional<std::string> sqlstate = storage::SqlStateOf(status);
    if (!sqlstate.has_value() || (*sqlstate != "42P01" && *sqlstate != "42501")) return status;
    absl::Status out = absl::FailedPreconditionError(absl::StrCat(
        "request_id on a call outside a session needs the table ", table.options().table,
        " (BROKER_REQUEST_OUTCOMES_TABLE) and SELECT, INSERT, UPDATE and DELETE on it; see "
        "docs/operations.md, \"The request outcomes table\": ",
        status.message()));
    out.SetPayload(storage::kSqlStatePayloadUrl, absl::Cord(*sqlstate));
    return out;
  }

  // The step's work on `conn`; the caller has armed the deadline.
  absl::StatusOr<Results> Work(storage::DbConnection& conn) {
    storage::ExecuteOptions options;
    options.max_result_bytes = runner_.options_.max_result_bytes;
    if (!RunsOnGivenConnection(request_.op)) {
      // A connection fresh from the pool: the caller's role (or the login
      // role) before anything of the caller's runs.
      if (absl::Status role = conn.UseRole(request_.database_role); !role.ok()) return role;
    }
    if (request_.durable != nullptr && (request_.op == Op::kExecute || request_.op == Op::kBatch)) {
      return WorkDurable(conn, options);
    }
    switch (request_.op) {
      case Op::kExecute:
        if (request_.sink != nullptr || own_transaction_) {
          return RunAlone(conn, options);
        }
        if (request_.transaction.IsPlain()) {
          // The connection sends the reset in the statement's round trip.
          options.reset_session_after = needs_reset_;
          reset_by_statement_ = needs_reset_;
          absl::StatusOr<storage::QueryResult> one = conn.Execute(request_.statements[0], options);
          if (!one.ok()) return one.status();
          Results out;
          out.push_back(*std::move(one));
          return out;
        }
        [[fallthrough]];
      case Op::kBatch:
        options.transaction = request_.transaction;
        return conn.ExecuteBatch(request_.statements, options);
      case Op::kBegin:
        if (absl::Status begun = conn.Begin(request_.transaction); !begun.ok()) return begun;
        return Results{};
      case Op::kInTransaction:
        options.in_transaction = true;
        if (request_.sink != nullptr) {
          absl::StatusOr<storage::QueryResult> end =
              conn.ExecuteStream(request_.statements[0], options, *request_.sink);
          if (!end.ok()) return end.status();
          Results out;
          out.push_back(*std::move(end));
          return out;
        }
        return InOpenTransaction(conn, options);
      case Op::kCommit:
        if (absl::Status committed = conn.Commit(); !committed.ok()) return committed;
        return Results{};
      case Op::kRollback:
        if (absl::Status rolled_back = conn.Rollback(); !rolled_back.ok()) return rolled_back;
        return Results{};
    }
    return absl::InternalError("unknown step");
  }

  // A one-shot kExecute that streams, or may write and return rows: in
  // autocommit when it is a plain query stream, otherwise in a transaction
  // of its own (begun with the request's settings), committed only once the
  // whole result was read (and, for a stream, handed over). On failure the
  // transaction is rolled back.
  absl::StatusOr<Results> RunAlone(storage::DbConnection& conn, storage::ExecuteOptions options) {
    const storage::Statement& statement = request_.statements[0];
    const bool own = own_transaction_ || !request_.transaction.IsPlain();
    auto run = [&]() -> absl::StatusOr<storage::QueryResult> {
      if (request_.sink != nullptr) return conn.ExecuteStream(statement, options, *request_.sink);
      return conn.Execute(statement, options);
    };
    absl::StatusOr<storage::QueryResult> one;
    if (!own) {
      one = run();
    } else {
      if (absl::Status begun = conn.Begin(request_.transaction); !begun.ok()) return begun;
      options.in_transaction = true;
      one = run();
      if (one.ok()) {
        if (absl::Status committed = conn.Commit(); !committed.ok()) return committed;
      } else if (!conn.IsBroken()) {
        conn.Rollback().IgnoreError();  // a failed rollback breaks the connection
      }
    }
    if (!one.ok()) return one.status();
    Results out;
    out.push_back(*std::move(one));
    return out;
  }

  void OnConnection(absl::StatusOr<PooledConnection> acquired) {
    if (!acquired.ok()) {
      absl::Status status = acquired.status();
      {
        MutexLock lock(&mu_);
        if (reason_ == Reason::kAborted) status = abort_status_;
      }
      Finish(std::move(status), PooledConnection());
      return;
    }
    PooledConnection conn = *std::move(acquired);
    bool stopped;
    absl::Status abort_status;
    {
      MutexLock lock(&mu_);
      stopped = stop_requested_;
      phase_ = stopped ? Phase::kFinished : Phase::kRunning;
      if (!stopped) running_on_ = conn.get();
      if (reason_ == Reason::kAborted) abort_status = abort_status_;
    }
    if (stopped && request_.op != Op::kRollback) {
      ReleaseAfterFailure(std::move(conn));
      Finish(abort_status.ok()
                 ? absl::CancelledError("the call was cancelled before its statement started")
                 : abort_status,
             PooledConnection());
      return;
    }

    const absl::Time started = runner_.clock_.Now();
    if (started >= request_.deadline && request_.op != Op::kRollback) {
      // A slow connect can hand over a connection after the caller gave up.
      {
        MutexLock lock(&mu_);
        phase_ = Phase::kFinished;
        running_on_ = nullptr;
      }
      ReleaseAfterFailure(std::move(conn));
      Finish(absl::DeadlineExceededError(
                 "the call's deadline passed while a database connection was being opened"),
             PooledConnection());
      return;
    }
    absl::Duration longest = runner_.options_.max_statement_duration;
    Reason capped_by = Reason::kMaxDuration;
    if (const ClientShares* shares = runner_.pool_.options().shares.get(); shares != nullptr) {
      const absl::Duration ceiling = shares->QuotaFor(request_.client_id).statement_timeout_max;
      if (ceiling < longest) {
        longest = client_ceiling_ = ceiling;
        capped_by = Reason::kClientCeiling;
      }
    }
    const absl::Time cap = started + longest;
    const bool caller_first = request_.deadline <= cap;
    const absl::Time deadline = std::min(request_.deadline, cap);
    TimerQueue::TimerId timer = 0;
    if (deadline != absl::InfiniteFuture()) {
      auto self = shared_from_this();
      const Reason why = caller_first ? Reason::kDeadline : capped_by;
      timer = runner_.timers_.Schedule(deadline, [self, why] { self->RequestCancel(why); });
    }

    absl::StatusOr<Results> out = Work(*conn);

    Reason reason;
    TimerQueue::TimerId resend;
    {
      MutexLock lock(&mu_);
      phase_ = Phase::kFinished;
      // No cancel may touch the connection once it is back in the pool.
      while (cancels_in_flight_ > 0) cancel_sent_.Wait(&mu_);
      running_on_ = nullptr;
      reason = reason_;
      abort_status = abort_status_;
      resend = std::exchange(resend_timer_, 0);
    }
    if (timer != 0) runner_.timers_.Cancel(timer);
    if (resend != 0) runner_.timers_.Cancel(resend);
    conn->ClearCancel();
    const absl::Duration took = runner_.clock_.Now() - started;

    if (!out.ok() && reason != Reason::kNone) {
      out = Explain(out.status(), reason, abort_status, took);
    }
    if (TakesStatements(request_.op)) {
      runner_.statement_duration_.Record(took);
      runner_.statements_.fetch_add(static_cast<int64_t>(request_.statements.size()),
                                    std::memory_order_relaxed);
      if (!out.ok()) runner_.statement_errors_.fetch_add(1, std::memory_order_relaxed);
    }
    if (reason != Reason::kNone) runner_.cancellations_.fetch_add(1, std::memory_order_relaxed);
    if (runner_.options_.echo) Echo(took, out);

    const bool keep = out.ok() && (request_.op == Op::kBegin || request_.op == Op::kInTransaction);
    if (keep) {
      Finish(std::move(out), std::move(conn));
      return;
    }
    if (!out.ok() && request_.op == Op::kInTransaction && request_.keep_on_failure &&
        !conn->IsBroken() && reason != Reason::kAborted) {
      // The transaction has savepoints: it stays open, aborted, on the
      // connection, for a ROLLBACK TO SAVEPOINT to recover it.
      Finish(std::move(out), std::move(conn));
      return;
    }
    if (!out.ok() && request_.op == Op::kInTransaction && !conn->IsBroken()) {
      // The transaction is aborted on the server; end it before the
      // connection goes anywhere.
      if (const absl::Status rolled_back = conn->Rollback(); !rolled_back.ok()) {
        conn.MarkBroken();
      }
    }
    if (discard_connection_) conn.MarkBroken();
    ResetIfNeeded(conn);
    conn.Release();
    Finish(std::move(out), PooledConnection());
  }

  // A connection the step did not use (or whose transaction it must give
  // up): ends a transaction it may hold, resets it if needed, returns it.
  void ReleaseAfterFailure(PooledConnection conn) {
    if (RunsOnGivenConnection(request_.op) && !conn->IsBroken()) {
      if (const absl::Status rolled_back = conn->Rollback(); !rolled_back.ok()) {
        conn.MarkBroken();
      }
    }
    ResetIfNeeded(conn);
    conn.Release();
  }

  void ResetIfNeeded(PooledConnection& conn) {
    if (!(needs_reset_ || request_.reset_on_release) || conn->IsBroken()) return;
    runner_.session_resets_.fetch_add(1, std::memory_order_relaxed);
    // Done with the statement (a failed one leaves the connection broken).
    if (reset_by_statement_) return;
    const absl::Status reset = conn->ResetSession();
    if (!reset.ok()) {
      spdlog::warn("discarding connection pid={}: session reset failed: {}", conn->BackendPid(),
                   reset.ToString());
      conn.MarkBroken();
    }
  }

  // A statement stopped by our cancel request reports SQLSTATE 57014
  // ("canceling statement due to user request"); say why it really stopped.
  absl::Status Explain(const absl::Status& status, Reason reason, const absl::Status& aborted,
                       absl::Duration took) const {
    const std::optional<std::string> sqlstate = storage::SqlStateOf(status);
    if (!sqlstate.has_value() || *sqlstate != kQueryCanceled) return status;
    const std::string after = absl::FormatDuration(absl::Trunc(took, absl::Milliseconds(1)));
    // The server's own message goes last: in a batch it names the statement
    // that was stopped.
    absl::Status explained;
    switch (reason) {
      case Reason::kDeadline:
        explained = absl::DeadlineExceededError(absl::StrCat(
            "the call's deadline passed while its SQL was running (after ", after,
            "), so PostgreSQL cancelled it and nothing of it was committed: ", status.message()));
        break;
      case Reason::kMaxDuration:
        explained = absl::DeadlineExceededError(absl::StrCat(
            "the SQL ran longer than BROKER_MAX_STATEMENT_DURATION (",
            absl::FormatDuration(runner_.options_.max_statement_duration),
            "), so PostgreSQL cancelled it and nothing of it was committed: ", status.message()));
        break;
      case Reason::kClientCeiling:
        explained = absl::DeadlineExceededError(absl::StrCat(
            "the SQL ran longer than ", ClientLabel(request_.client_id),
            "'s statement_timeout_max quota of ", absl::FormatDuration(client_ceiling_),
            " (BROKER_CLIENT_STATEMENT_TIMEOUT_MAX or its clients-file entry), so PostgreSQL "
            "cancelled it and nothing of it was committed: ",
            status.message()));
        break;
      case Reason::kCaller:
        explained = absl::CancelledError(
            absl::StrCat("the call was cancelled, so PostgreSQL cancelled its SQL (after ", after,
                         ") and nothing of it was committed: ", status.message()));
        break;
      case Reason::kAborted:
        explained = aborted;
        break;
      case Reason::kNone:
        return status;
    }
    explained.SetPayload(storage::kSqlStatePayloadUrl, absl::Cord(kQueryCanceled));
    return explained;
  }

  void Echo(absl::Duration took, const absl::StatusOr<Results>& out) const {
    const double ms = absl::ToDoubleMilliseconds(took);
    const std::string status = out.ok() ? "OK" : absl::StatusCodeToString(out.status().code());
    if (!TakesStatements(request_.op)) {
      const char* what = request_.op == Op::kBegin    ? "BEGIN"
                         : request_.op == Op::kCommit ? "COMMIT"
                                                      : "ROLLBACK";
      spdlog::info("sql: {} | took_ms={:.3f} status={}", what, ms, status);
      return;
    }
    for (const storage::Statement& s : request_.statements) {
      // Parameter values are never logged: they may hold secrets.
      spdlog::info("sql: {} | params={} took_ms={:.3f} status={}", s.sql, s.params.size(), ms,
                   status);
    }
  }

  void Finish(absl::StatusOr<Results> out, PooledConnection conn) {
    {
      MutexLock lock(&mu_);
      phase_ = Phase::kFinished;
    }
    RunOutcome outcome;
    outcome.results = std::move(out);
    outcome.connection = std::move(conn);
    outcome.changed_session_state = needs_reset_;
    std::move(done_)(std::move(outcome));
  }

  StatementRunner& runner_;
  RunRequest request_;
  StepCallback done_;
  const bool needs_reset_;
  const bool own_transaction_;
  // The client's statement_timeout_max when it capped the statement (set and
  // read on the thread running it).
  absl::Duration client_ceiling_ = absl::InfiniteDuration();
  // The statement's Execute reset the connection itself
  // (ExecuteOptions::reset_session_after). Worker thread only.
  bool reset_by_statement_ = false;

  Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kWaiting;
  ConnectionPool::WaitId wait_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  Reason reason_ ABSL_GUARDED_BY(mu_) = Reason::kNone;
  absl::Status abort_status_ ABSL_GUARDED_BY(mu_);
  storage::DbConnection* running_on_ ABSL_GUARDED_BY(mu_) = nullptr;
  int cancels_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  CondVar cancel_sent_;
  TimerQueue::TimerId resend_timer_ ABSL_GUARDED_BY(mu_) = 0;
  // A durable step could not end its transaction: never reuse the
  // connection. Only the thread running the step touches it.
  bool discard_connection_ = false;
};

// A one-shot statement, or an atomic batch, on the pipelined engine: its
// deadline (capped like a pooled call's) and cancellation go to the engine,
// which answers on its loop thread. A batch is cancelled as a unit.
class StatementRunner::PipelinedCall final : public RunningCall {
 public:
  explicit PipelinedCall(StatementRunner& runner) : runner_(runner) {}

  // `writes`: a statement of the batch writes a table (proved by the catalog).
  void Start(RunRequest request, StepCallback done, bool writes) {
    absl::Duration longest = runner_.options_.max_statement_duration;
    int weight = 1;
    if (const ClientShares* shares = runner_.pool_.options().shares.get(); shares != nullptr) {
      const ClientQuota quota = shares->QuotaFor(request.client_id);
      longest = std::min(longest, quota.statement_timeout_max);
      weight = quota.weight;
    }
    const absl::Time started = runner_.clock_.Now();
    const absl::Time deadline = std::min(request.deadline, started + longest);
    // Parameter values are never logged: they may hold secrets.
    std::vector<std::pair<std::string, size_t>> echo;
    if (runner_.options_.echo) {
      for (const storage::Statement& s : request.statements)
        echo.emplace_back(s.sql, s.params.size());
    }
    StatementRunner* runner = &runner_;
    const int64_t n = static_cast<int64_t>(request.statements.size());
    auto finish = [runner, started, n, echo = std::move(echo),
                   done = std::move(done)](absl::StatusOr<Results> out) mutable {
      const absl::Duration took = runner->clock_.Now() - started;
      runner->statement_duration_.Record(took);
      runner->statements_.fetch_add(n, std::memory_order_relaxed);
      runner->pipelined_.fetch_add(n, std::memory_order_relaxed);
      if (!out.ok()) runner->statement_errors_.fetch_add(1, std::memory_order_relaxed);
      if (!out.ok() && (out.status().code() == absl::StatusCode::kDeadlineExceeded ||
                        out.status().code() == absl::StatusCode::kCancelled)) {
        runner->cancellations_.fetch_add(1, std::memory_order_relaxed);
      }
      for (const auto& [sql, params] : echo) {
        spdlog::info("sql: {} | params={} took_ms={:.3f} status={} pipelined=true", sql, params,
                     absl::ToDoubleMilliseconds(took),
                     out.ok() ? "OK" : absl::StatusCodeToString(out.status().code()));
      }
      RunOutcome outcome;
      outcome.results = std::move(out);
      std::move(done)(std::move(outcome));
    };
    uint64_t id;
    if (request.op == Op::kBatch) {
      storage::PipelineBatch batch;
      batch.statements = std::move(request.statements);
      batch.max_result_bytes = runner_.options_.max_result_bytes;
      batch.writes = writes;
      batch.deadline = deadline;
      // The engine's fair queue serves clients round robin by this id, as
      // the pool's does for connections.
      batch.client_id = request.client_id;
      batch.weight = weight;
      id = runner_.options_.pipeline->SubmitBatch(
          std::move(batch), [finish = std::move(finish)](absl::StatusOr<Results> results) mutable {
            std::move(finish)(std::move(results));
          });
    } else {
      storage::PipelineCall call;
      call.statement = std::move(request.statements[0]);
      call.max_result_bytes = runner_.options_.max_result_bytes;
      call.deadline = deadline;
      call.client_id = request.client_id;
      call.weight = weight;
      id = runner_.options_.pipeline->Submit(
          std::move(call),
          [finish = std::move(finish)](absl::StatusOr<storage::QueryResult> one) mutable {
            if (!one.ok()) {
              std::move(finish)(one.status());
              return;
            }
            Results results;
            results.push_back(*std::move(one));
            std::move(finish)(std::move(results));
          });
    }
    id_.store(id, std::memory_order_release);
  }

  void Cancel() override {
    Stop(absl::CancelledError(
        "the call was cancelled; its statement was cancelled on the server if it had started, "
        "and if it had already finished it was committed"));
  }
  void Abort(absl::Status why) override { Stop(std::move(why)); }

 private:
  void Stop(absl::Status why) {
    const uint64_t id = id_.load(std::memory_order_acquire);
    if (id != 0) runner_.options_.pipeline->Cancel(id, std::move(why));
  }

  StatementRunner& runner_;
  std::atomic<uint64_t> id_{0};
};

bool StatementRunner::Pipelinable(const RunRequest& request, bool needs_reset,
                                  bool own_transaction) {
  // kBatch: its statements under one Sync are one implicit transaction, all
  // or nothing as the pooled BEGIN..COMMIT. Every statement must pass the
  // rules below (needs_reset covers them all). Writes get here only proved
  // by the catalog (BROKER_PIPELINE_TABLE_WRITES), and never with RETURNING
  // (own_transaction; for a batch the caller passes it for any statement):
  // the engine reads a batch's results after its Sync committed it, so a
  // result over the cap could not roll the write back.
  const bool batch = request.op == Op::kBatch && !request.statements.empty();
  if (!batch && (request.op != Op::kExecute || request.statements.size() != 1)) return false;
  if (needs_reset || own_transaction || !request.transaction.IsPlain()) return false;
  if (request.durable != nullptr || request.sink != nullptr || !request.database_role.empty()) {
    return false;
  }
  if (request.reset_on_release || request.connection) return false;
  for (const storage::Statement& statement : request.statements) {
    for (const std::string& type : statement.param_types) {
      if (!type.empty()) return false;
    }
  }
  return true;
}

bool StatementRunner::ProvableOnPool(const RunRequest& request) {
  // One statement (or a batch, in one plain transaction) on a connection
  // fresh from the pool, whose only session state is the baseline: the
  // lookup ran with that baseline too.
  const bool batch = request.op == Op::kBatch && !request.statements.empty();
  if (!batch && (request.op != Op::kExecute || request.statements.size() != 1)) return false;
  // Not a session's connection, nor one an earlier step dirtied.
  if (request.connection || request.reset_on_release) return false;
  // SET ROLE changes what `$user` in search_path resolves to (the lookup
  // runs as the login role), and a transaction's settings may set
  // search_path itself: the proof would be about other names.
  if (!request.database_role.empty() || !request.transaction.IsPlain()) return false;
  // A named parameter type may be a user type whose input function runs.
  for (const storage::Statement& statement : request.statements) {
    for (const std::string& type : statement.param_types) {
      if (!type.empty()) return false;
    }
  }
  // A durable call also runs the outcomes table's statements, whose
  // classification this proof does not cover; reads rarely carry an id.
  return request.durable == nullptr;
}

std::optional<storage::PipelineStats> StatementRunner::PipelineStats() const {
  if (options_.pipeline == nullptr) return std::nullopt;
  return options_.pipeline->Stats();
}

StatementRunner::StatementRunner(ConnectionPool& pool, TimerQueue& timers,
                                 Executor& cancel_executor, const Clock& clock,
                                 RunnerOptions options)
    : pool_(pool),
      timers_(timers),
      cancel_executor_(cancel_executor),
      clock_(clock),
      options_(std::move(options)) {
  if (options_.pipeline_table_reads || options_.pipeline_table_writes) {
    CatalogGuard::Options guard;
    guard.refresh = options_.catalog_refresh;
    // The lookup runs where the proofs are used: on the engine when there
    // is one (pipelined with callers' statements), on the pool otherwise.
    catalog_guard_ = std::make_unique<CatalogGuard>(
        guard, clock_,
        options_.pipeline != nullptr ? CatalogGuard::ThroughEngine(*options_.pipeline)
                                     : CatalogGuard::ThroughPool(pool_, clock_));
  }
}

absl::Status StatementRunner::Validate(const RunRequest& request, bool in_session) const {
  return Check(request, options_.limits, nullptr, in_session).status();
}

std::shared_ptr<RunningCall> StatementRunner::Run(RunRequest request, Callback done) {
  return RunStep(std::move(request), [done = std::move(done)](RunOutcome outcome) mutable {
    std::move(done)(std::move(outcome.results));
  });
}

std::shared_ptr<RunningCall> StatementRunner::RunStep(RunRequest request, StepCallback done) {
  absl::StatusOr<Checked> checked = Check(request, options_.limits, &request.statements);
  if (!checked.ok()) {
    RunOutcome outcome;
    outcome.results = checked.status();
    // A given connection is not the runner's to keep: hand it back untouched.
    outcome.connection = std::move(request.connection);
    std::move(done)(std::move(outcome));
    return nullptr;
  }
  bool needs_reset = checked->needs_reset;
  // Asked only of calls that could go there: Stats() gathers every loop's
  // numbers.
  auto engine_up = [this] {
    return options_.pipeline != nullptr && options_.pipeline->Stats().connections_up > 0;
  };
  // A batch that writes and returns rows stays off the engine (Pipelinable).
  const bool own_transaction =
      checked->own_transaction ||
      (request.op == Op::kBatch && checked->table_writes && checked->writes_and_returns_rows);
  // Table reads and writes the catalog may prove stateless, each under its
  // switch: asked only when the proof would be used (on the engine, or on a
  // pooled connection that then skips its reset), so sessions and
  // statements under a role cause no lookups.
  const bool switched_on = (!checked->table_reads || options_.pipeline_table_reads) &&
                           (!checked->table_writes || options_.pipeline_table_writes);
  if (needs_reset && checked->stateless_if.has_value() && switched_on &&
      catalog_guard_ != nullptr &&
      ((Pipelinable(request, /*needs_reset=*/false, own_transaction) && engine_up()) ||
       ProvableOnPool(request)) &&
      catalog_guard_->Check(*checked->stateless_if) == CatalogGuard::Verdict::kStateless) {
    needs_reset = false;
  }
  if (Pipelinable(request, needs_reset, own_transaction) && engine_up()) {
    auto pipelined = std::make_shared<PipelinedCall>(*this);
    pipelined->Start(std::move(request), std::move(done), checked->table_writes);
    return pipelined;
  }
  auto call = std::make_shared<Call>(*this, std::move(request), std::move(done), needs_reset,
                                     checked->own_transaction);
  call->Start();
  return call;
}

RunnerStats StatementRunner::Stats() const {
  RunnerStats s;
  s.statements = statements_.load(std::memory_order_relaxed);
  s.statement_errors = statement_errors_.load(std::memory_order_relaxed);
  s.cancellations = cancellations_.load(std::memory_order_relaxed);
  s.session_resets = session_resets_.load(std::memory_order_relaxed);
  s.pipelined = pipelined_.load(std::memory_order_relaxed);
  if (catalog_guard_ != nullptr) {
    const CatalogGuard::Stats guard = catalog_guard_->stats();
    s.catalog_proved = static_cast<int64_t>(guard.proved);
    s.catalog_refused = static_cast<int64_t>(guard.refused);
    s.catalog_unknown = static_cast<int64_t>(guard.unknown);
    s.catalog_lookups = static_cast<int64_t>(guard.lookups);
    s.catalog_lookup_failures = static_cast<int64_t>(guard.lookup_failures);
  }
  return s;
}

}  // namespace sessionbroker::core
