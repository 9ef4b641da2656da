#include "server/core/session/transaction_machine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/session/session_status.h"
#include "server/core/sql/sql_classifier.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::core {
namespace {

using Op = RunRequest::Op;
using session_internal::Detached;
using session_internal::DurationText;
using session_internal::Fresh;
using session_internal::TimeText;
using session_internal::WithReason;

// A read-only session's transactions begin READ ONLY; PostgreSQL lets a
// transaction turn itself read-write (SET transaction_read_only = off, SET
// TRANSACTION READ WRITE, set_config(...), a DO block) before its first
// query. So such a session refuses statements that set anything; its
// settings belong in BeginSession. Checked before the statement runs, so a
// refusal leaves an open transaction as it was.
absl::Status ReadOnlySessionMayRun(const RunRequest& request) {
  for (size_t i = 0; i < request.statements.size(); ++i) {
    const SqlInfo info = ClassifySql(request.statements[i].sql);
    if (info.first_keyword == "SET" || info.first_keyword == "RESET" ||
        info.changes_session_state) {
      return absl::InvalidArgumentError(absl::StrCat(
          request.statements.size() > 1 ? absl::StrCat("statements[", i, "]: ") : "",
          "a read-only session does not run statements that set or keep session state (",
          info.first_keyword.empty() ? "this one" : info.first_keyword,
          " could make its transactions writable or outlive the call); give settings in "
          "BeginSessionRequest.settings"));
    }
  }
  return absl::OkStatus();
}

// The step that ends the open transaction (Commit, Rollback).
TransactionMachine::Step EndingStep(Op op, absl::Time deadline, const Transaction& tx) {
  TransactionMachine::Step step;
  step.request.op = op;
  step.request.deadline = deadline;
  step.request.reset_on_release = tx.dirty;
  step.on_pinned_connection = true;
  return step;
}

// Forgets the savepoints and PostgreSQL's aborted state: the transaction is
// gone (or new).
void ForgetSavepoints(Transaction& tx) {
  tx.savepoints.clear();
  tx.failed = false;
  tx.running_savepoint = SqlInfo::Savepoint::kNone;
  tx.running_savepoint_name.clear();
  tx.commit_rolls_back = false;
}

// Ending a transaction, whichever way, leaves none.
void Close(Transaction& tx) {
  tx.state = TxState::kNone;
  tx.dirty = false;
  tx.pending_kill = absl::OkStatus();
  ForgetSavepoints(tx);
}

// A savepoint statement succeeded: the savepoints it leaves, as PostgreSQL
// keeps them. RELEASE and ROLLBACK TO name the newest savepoint of that
// name; RELEASE drops it and every later one, ROLLBACK TO every later one.
// A name the broker does not know (PostgreSQL found it, so the broker's
// reading of the name differs) leaves the list as it was: the transaction
// then keeps its connection on failure, which PostgreSQL's rules cover.
void ApplySavepoint(Transaction& tx) {
  const std::string& name = tx.running_savepoint_name;
  switch (tx.running_savepoint) {
    case SqlInfo::Savepoint::kNone:
      return;
    case SqlInfo::Savepoint::kSavepoint:
      tx.savepoints.push_back(name);
      return;
    case SqlInfo::Savepoint::kRelease:
    case SqlInfo::Savepoint::kRollbackTo: {
      if (tx.running_savepoint == SqlInfo::Savepoint::kRollbackTo) {
        // PostgreSQL's transaction is no longer aborted, whatever the name.
        tx.failed = false;
        tx.abort = absl::OkStatus();
      }
      const auto found = std::find(tx.savepoints.rbegin(), tx.savepoints.rend(), name);
      if (found == tx.savepoints.rend()) return;
      auto first_dropped = found.base();  // just after the named one
      if (tx.running_savepoint == SqlInfo::Savepoint::kRelease) --first_dropped;
      tx.savepoints.erase(first_dropped, tx.savepoints.end());
      return;
    }
  }
}

// A session transaction's statements, classified: whether a savepoint
// statement is among them, and which one Execute runs.
struct SavepointUse {
  bool any = false;
  SqlInfo::Savepoint kind = SqlInfo::Savepoint::kNone;
  std::string name;
};
SavepointUse SavepointsIn(const RunRequest& request) {
  SavepointUse use;
  for (const storage::Statement& statement : request.statements) {
    SqlInfo info = ClassifySql(statement.sql);
    if (info.savepoint == SqlInfo::Savepoint::kNone) continue;
    use.any = true;
    use.kind = info.savepoint;
    use.name = std::move(info.savepoint_name);
  }
  return use;
}

}  // namespace

TransactionMachine::Plan TransactionMachine::PlanCall(Transaction& tx,
                                                      const storage::TransactionOptions& base,
                                                      SessionCall& call) const {
  if (tx.state == TxState::kBeginning) {
    // Only while BeginTransaction's own step runs, and calls of a session
    // are planned one at a time.
    return Answer{absl::InternalError(
        "a call of the session was started while BeginTransaction was still running")};
  }
  if (RunCall* run = std::get_if<RunCall>(&call)) {
    if (base.read_only) {
      if (absl::Status allowed = ReadOnlySessionMayRun(run->request); !allowed.ok()) {
        return Answer{std::move(allowed)};
      }
    }
    if (tx.state == TxState::kAborted) return Answer{Detached(tx.abort)};
    Step step;
    if (tx.state == TxState::kOpen) {
      SavepointUse use = SavepointsIn(run->request);
      if (use.any && run->request.op == Op::kBatch) {
        return Answer{absl::InvalidArgumentError(
            "SAVEPOINT, RELEASE and ROLLBACK TO SAVEPOINT run with Execute, one per call, not "
            "in ExecuteBatch (a batch is all or nothing)")};
      }
      if (tx.failed && use.kind != SqlInfo::Savepoint::kRollbackTo) {
        // PostgreSQL's own answer, without a round trip: the transaction is
        // aborted on the pinned connection.
        return Answer{storage::SqlError(
            "25P02",
            absl::StrCat("current transaction is aborted, commands ignored until end of "
                         "transaction block; ROLLBACK TO SAVEPOINT one of its savepoints, or call "
                         "Rollback (",
                         tx.abort.message(), ")"))};
      }
      tx.running_savepoint = use.kind;
      tx.running_savepoint_name = std::move(use.name);
      step.request = std::move(run->request);
      step.request.keep_on_failure =
          !tx.savepoints.empty() || tx.running_savepoint == SqlInfo::Savepoint::kRollbackTo;
      step.request.op = Op::kInTransaction;
      step.request.reset_on_release = tx.dirty;
      step.on_pinned_connection = true;
      step.in_transaction = true;
    } else {
      step.request = std::move(run->request);
      // The session's settings and read-only flag apply to this statement
      // alone, as a one-statement transaction.
      step.request.transaction.settings = base.settings;
      step.request.transaction.read_only = base.read_only;
      // One statement sees one snapshot whatever the level.
      if (step.request.op == Op::kBatch) step.request.transaction.isolation = base.isolation;
    }
    return step;
  }
  if (const BeginTransactionCall* begin = std::get_if<BeginTransactionCall>(&call)) {
    if (tx.state == TxState::kOpen) {
      return Answer{absl::FailedPreconditionError(
          absl::StrCat("a transaction is already open in this session (since ", TimeText(tx.start),
                       "); Commit or Rollback it first"))};
    }
    if (tx.state == TxState::kAborted) {
      return Answer{absl::FailedPreconditionError(absl::StrCat(
          "the session's previous transaction was rolled back by the broker and not yet "
          "acknowledged; call Rollback before beginning another (",
          tx.abort.message(), ")"))};
    }
    Step step;
    step.request.op = Op::kBegin;
    step.request.deadline = begin->deadline;
    step.request.transaction = base;
    if (begin->spec.isolation != Isolation::kDefault) {
      step.request.transaction.isolation = begin->spec.isolation;
    }
    step.request.transaction.read_only = base.read_only || begin->spec.read_only;
    step.request.transaction.deferrable = begin->spec.deferrable;
    tx.state = TxState::kBeginning;
    return step;
  }
  if (const CommitCall* commit = std::get_if<CommitCall>(&call)) {
    if (tx.state == TxState::kNone) {
      return Answer{absl::FailedPreconditionError(
          "no transaction is open in this session: Commit ends a transaction begun with "
          "BeginTransaction (outside one, every statement commits by itself)")};
    }
    if (tx.state == TxState::kAborted) {
      // Acknowledges the kill: the session is out of the transaction.
      absl::Status why = Fresh(tx.abort, tx.abort.code(), "nothing was committed: ");
      tx.state = TxState::kNone;
      tx.abort = absl::OkStatus();
      return Answer{std::move(why)};
    }
    if (tx.failed) {
      // PostgreSQL answers COMMIT of an aborted transaction with a rollback;
      // so does the broker, and says so (Apply).
      tx.commit_rolls_back = true;
      return EndingStep(Op::kRollback, absl::InfiniteFuture(), tx);
    }
    return EndingStep(Op::kCommit, commit->deadline, tx);
  }
  // RollbackCall.
  if (tx.state == TxState::kNone) {
    // Like PostgreSQL's ROLLBACK outside a transaction: nothing to do, and
    // not an error, so a client may always roll back on its way out (also
    // after a Commit that failed).
    return Answer{absl::OkStatus()};
  }
  if (tx.state == TxState::kAborted) {
    tx.state = TxState::kNone;
    tx.abort = absl::OkStatus();
    return Answer{absl::OkStatus()};
  }
  // A rollback is not bounded by the caller's deadline: giving up half-way
  // would leave the transaction open on the connection.
  return EndingStep(Op::kRollback, absl::InfiniteFuture(), tx);
}

TransactionMachine::Verdict TransactionMachine::Apply(Transaction& tx, const SessionCall& call,
                                                      const absl::Status& status,
                                                      const StepReport& step,
                                                      absl::Time now) const {
  Verdict v;
  if (std::holds_alternative<RunCall>(call)) {
    if (!step.in_transaction) return v;  // it ran by itself
    if (!tx.pending_kill.ok()) {
      // A transaction deadline fired while the statement ran.
      if (step.connection) {
        v.connection = ConnectionFate::kDiscard;
        v.reset = tx.dirty || step.changed_session_state;
      }
      tx.state = TxState::kAborted;
      tx.abort = std::exchange(tx.pending_kill, absl::OkStatus());
      ForgetSavepoints(tx);
      if (status.ok()) {
        v.reply = Reply::kError;
        v.error = Detached(tx.abort);
      }
    } else if (status.ok()) {
      v.connection = ConnectionFate::kKeep;
      tx.dirty = tx.dirty || step.changed_session_state;
      tx.idle_since = now;
      ApplySavepoint(tx);
    } else if (step.connection) {
      // The transaction has savepoints, so the runner kept it, aborted in
      // PostgreSQL, for a ROLLBACK TO SAVEPOINT (a ROLLBACK TO that failed
      // leaves it as it was).
      v.connection = ConnectionFate::kKeep;
      tx.dirty = tx.dirty || step.changed_session_state;
      tx.idle_since = now;
      if (!tx.failed) {
        tx.failed = true;
        tx.abort = WithReason(absl::AbortedError(absl::StrCat(
                                  "a statement failed at ", TimeText(now), " (",
                                  absl::StatusCodeToString(status.code()), ": ", status.message(),
                                  "), so the transaction is aborted until ROLLBACK TO SAVEPOINT")),
                              "TX_STATEMENT_FAILED");
      }
    } else {
      // PostgreSQL aborted the transaction; the runner rolled it back and
      // returned the connection.
      v.event = Event::kFailed;
      tx.state = TxState::kAborted;
      tx.dirty = false;
      ForgetSavepoints(tx);
      tx.abort = WithReason(
          absl::AbortedError(absl::StrCat(
              "the transaction was rolled back at ", TimeText(now),
              " because a statement in it failed (", absl::StatusCodeToString(status.code()), ": ",
              status.message(),
              "); nothing of it was committed; call Rollback, then retry the transaction")),
          "TX_STATEMENT_FAILED");
    }
    return v;
  }
  if (std::holds_alternative<BeginTransactionCall>(call)) {
    if (status.ok()) {
      v.connection = ConnectionFate::kKeep;
      v.event = Event::kBegun;
      tx.state = TxState::kOpen;
      tx.start = now;
      tx.idle_since = now;
      tx.dirty = false;
      tx.pending_kill = absl::OkStatus();
      ForgetSavepoints(tx);
    } else {
      tx.state = TxState::kNone;
    }
    return v;
  }
  if (std::holds_alternative<CommitCall>(call)) {
    if (tx.commit_rolls_back) {
      v.reply = Reply::kError;
      v.error = Fresh(tx.abort, tx.abort.code(),
                      "nothing was committed: the transaction was rolled back, as PostgreSQL "
                      "does on COMMIT of an aborted transaction: ");
      Close(tx);
      v.event = Event::kFailed;
      return v;
    }
    Close(tx);
    v.event = status.ok() ? Event::kCommitted : Event::kFailed;
    return v;
  }
  // RollbackCall. ROLLBACK fails only on a lost connection, which the runner
  // discards, and PostgreSQL rolls back the transaction of a closed
  // connection: what the client asked for happened.
  Close(tx);
  v.event = Event::kRolledBack;
  v.reply = Reply::kSuccess;
  return v;
}

TransactionMachine::Verdict TransactionMachine::ApplyEnded(Transaction& tx,
                                                           const absl::Status& status,
                                                           const StepReport& step,
                                                           const absl::Status* ended) const {
  Verdict v;
  if (step.connection) {
    v.connection = ConnectionFate::kDiscard;
    v.reset = tx.dirty || step.changed_session_state;
    // The work is rolled back with the session: it must not look done.
    if (status.ok()) {
      v.reply = Reply::kError;
      v.error = ended == nullptr
                    ? absl::AbortedError("the session ended; its transaction was rolled back")
                    : Fresh(*ended, absl::StatusCode::kAborted,
                            "the session ended while this call was running, so its "
                            "transaction was rolled back: ");
    }
  }
  tx.state = TxState::kNone;
  ForgetSavepoints(tx);
  return v;
}

std::optional<TransactionMachine::DueKill> TransactionMachine::KillDue(const Transaction& tx,
                                                                       bool call_running,
                                                                       absl::Time now) const {
  if (tx.state != TxState::kOpen) return std::nullopt;
  if (tx.pending_kill.ok() && now >= tx.start + limits_.max_duration) {
    return DueKill{
        KillKind::kMaxDuration,
        WithReason(absl::AbortedError(absl::StrCat(
                       "the transaction was rolled back by the broker at ", TimeText(now),
                       ": it had been open since ", TimeText(tx.start),
                       ", longer than BROKER_TX_MAX_DURATION (", DurationText(limits_.max_duration),
                       "); nothing of it was committed; call Rollback, then retry the "
                       "transaction (shorter)")),
                   "TX_MAX_DURATION")};
  }
  if (!call_running && now >= tx.idle_since + limits_.idle_timeout) {
    return DueKill{
        KillKind::kIdle,
        WithReason(absl::AbortedError(absl::StrCat(
                       "the transaction was rolled back by the broker at ", TimeText(now),
                       ": no statement ran in it since ", TimeText(tx.idle_since),
                       ", longer than BROKER_TX_IDLE_TIMEOUT (", DurationText(limits_.idle_timeout),
                       "); nothing of it was committed; call Rollback, then retry the "
                       "transaction without pausing inside it")),
                   "TX_IDLE_TIMEOUT")};
  }
  return std::nullopt;
}

absl::Time TransactionMachine::NextDeadline(const Transaction& tx, bool call_running) const {
  // Once a kill is pending (the running call was told to stop), the
  // transaction's deadlines have fired: keeping them would re-arm the reaper
  // at a past time and make it spin until the call completes.
  if (tx.state != TxState::kOpen || !tx.pending_kill.ok()) return absl::InfiniteFuture();
  absl::Time next = tx.start + limits_.max_duration;
  // A running statement is not idle.
  if (!call_running) next = std::min(next, tx.idle_since + limits_.idle_timeout);
  return next;
}

TransactionMachine::KillPlan TransactionMachine::Kill(Transaction& tx, absl::Status why,
                                                      bool call_running) const {
  KillPlan plan;
  if (call_running) {
    // The call's completion rolls back and reports `why` (Apply).
    plan.abort_running_call = true;
    plan.abort_with = Detached(why);
    tx.pending_kill = std::move(why);
    return plan;
  }
  tx.state = TxState::kAborted;
  tx.abort = std::move(why);
  ForgetSavepoints(tx);
  plan.discard_connection = true;
  plan.reset = std::exchange(tx.dirty, false);
  return plan;
}

bool TransactionMachine::HasTransaction(const Transaction& tx, bool running_in_transaction) {
  return tx.state == TxState::kOpen || tx.state == TxState::kBeginning || running_in_transaction;
}

TransactionMachine::EndPlan TransactionMachine::End(Transaction& tx, bool call_running,
                                                    bool running_in_transaction) const {
  EndPlan plan;
  plan.had_transaction = HasTransaction(tx, running_in_transaction);
  // Not again for a transaction a deadline already killed (its running call
  // was told to stop, and counted, by the reaper).
  plan.count_kill = plan.had_transaction && tx.pending_kill.ok();
  // With a call running, its completion rolls back (ApplyEnded).
  if (!call_running && tx.state == TxState::kOpen) {
    tx.state = TxState::kNone;
    ForgetSavepoints(tx);
    plan.discard_connection = true;
    plan.reset = tx.dirty;
  }
  return plan;
}

}  // namespace sessionbroker::core
