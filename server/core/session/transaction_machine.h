// TransactionMachine: the rules of a session's transaction, as a pure state
// machine. Given the transaction's state (plain data) it plans what a call
// does (a runner step to run, or an answer without database work), applies
// the step's outcome (the state it leads to, what the caller is told, what
// becomes of the connection the step handed back), and decides kills (which
// transaction deadline passed, how a kill lands with or without a call
// running) and what ending the session does to the transaction.
//
// It holds no lock, starts no thread and reads no clock: times are passed in,
// the transaction is passed by reference and updated in place, and the
// connection itself stays with the caller (the machine only says where it
// goes). SessionManager owns one per manager and calls it under its lock;
// the machine is immutable after construction, so it is thread-safe, and a
// Transaction is guarded by whoever holds it.
//
// Error messages and codes are the session layer's contract with clients
// (ABORTED with a reason token for a transaction the broker rolled back,
// FAILED_PRECONDITION for a call the transaction's state does not allow).
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_TRANSACTION_MACHINE_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_TRANSACTION_MACHINE_H_

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/session/session_call.h"
#include "server/core/sql/sql_classifier.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::core {

enum class TxState {
  kNone,       // no transaction: statements run by themselves
  kBeginning,  // BeginTransaction's step runs
  kOpen,       // a connection is pinned to the session (also while
               // PostgreSQL's transaction is aborted: Transaction::failed)
  kAborted,    // the broker rolled it back; reported until acknowledged
};

// A session's transaction, as the machine sees it.
struct Transaction {
  TxState state = TxState::kNone;
  absl::Time start;       // kOpen, kAborted: when BEGIN completed
  absl::Time idle_since;  // kOpen: when its last call completed
  // A statement changed session state: reset the connection on release.
  bool dirty = false;
  absl::Status abort;  // kAborted: why (ABORTED, with a reason token)
  // kOpen with a call running: a deadline fired and the call was told to
  // stop; the kill lands when the call completes.
  absl::Status pending_kill;
  // kOpen: the savepoints open in it, oldest first, named as PostgreSQL
  // compares names (SqlInfo::savepoint_name). A name may repeat.
  std::vector<std::string> savepoints;
  // kOpen: a statement failed while a savepoint existed, so PostgreSQL's
  // transaction is aborted and stays so, on the pinned connection, until a
  // ROLLBACK TO SAVEPOINT (or Rollback, or Commit, which rolls back). `abort`
  // says which statement failed.
  bool failed = false;
  // kOpen with a call running: the savepoint statement it runs, if any, and
  // whether it is a Commit that rolls back (the transaction had failed).
  SqlInfo::Savepoint running_savepoint = SqlInfo::Savepoint::kNone;
  std::string running_savepoint_name;
  bool commit_rolls_back = false;
};

class TransactionMachine final {
 public:
  struct Limits {
    absl::Duration idle_timeout = absl::Seconds(10);  // BROKER_TX_IDLE_TIMEOUT
    absl::Duration max_duration = absl::Minutes(5);   // BROKER_TX_MAX_DURATION
  };

  // ---- Planning a call -------------------------------------------------------

  // Run this runner step.
  struct Step {
    // Complete but for `connection` and `client_id`.
    RunRequest request;
    // The transaction's pinned connection goes in request.connection.
    bool on_pinned_connection = false;
    // A RunCall inside the transaction (its completion applies to it).
    bool in_transaction = false;
  };
  // Complete the call now, with no database work: with `status` when it is
  // an error; OK only for a RollbackCall, meaning "nothing was rolled back"
  // (false).
  struct Answer {
    absl::Status status;
  };
  using Plan = std::variant<Step, Answer>;

  // ---- Applying a step's outcome ----------------------------------------------

  // What the step reported besides its status.
  struct StepReport {
    bool in_transaction = false;  // Step::in_transaction
    // The step handed its connection back (still inside its transaction).
    bool connection = false;
    bool changed_session_state = false;
  };
  // Where the connection the step handed back goes.
  enum class ConnectionFate {
    kNone,     // it handed none back
    kKeep,     // pinned: the transaction goes on
    kDiscard,  // rolled back (in the background) and returned to the pool
  };
  // What the caller is told.
  enum class Reply {
    kStepResult,  // the step's own result: its error, or success
    kError,       // Verdict::error instead
    kSuccess,     // success whatever the step returned
  };
  // What the completion counts as, for the session counters.
  enum class Event { kNone, kBegun, kCommitted, kRolledBack, kFailed };
  struct Verdict {
    ConnectionFate connection = ConnectionFate::kNone;
    bool reset = false;  // kDiscard: reset the connection's session too
    Reply reply = Reply::kStepResult;
    absl::Status error;  // kError
    Event event = Event::kNone;
  };

  // ---- Kills and the session's end -----------------------------------------------

  enum class KillKind { kMaxDuration, kIdle };
  struct DueKill {
    KillKind kind;
    absl::Status why;  // ABORTED, with the reason token
  };
  struct KillPlan {
    // A call runs on the connection: stop it with `abort_with`; its
    // completion rolls back and reports the kill.
    bool abort_running_call = false;
    absl::Status abort_with;
    // No call runs: roll back the pinned connection in the background.
    bool discard_connection = false;
    bool reset = false;  // discard_connection: reset its session too
  };
  struct EndPlan {
    // A transaction was open or beginning (what EndSession reports).
    bool had_transaction = false;
    // Count it as killed by the session's end (not when a deadline already
    // killed it).
    bool count_kill = false;
    // No call runs: roll back the pinned connection in the background.
    bool discard_connection = false;
    bool reset = false;
  };

  explicit TransactionMachine(Limits limits) : limits_(limits) {}

  // Plans `call` on a session whose own options are `base`, with `tx` in the
  // state it is, and moves `tx` to the state the plan leads to. A RunCall's
  // request moves into the step. Calls of a session are planned one at a
  // time, never while another's step runs.
  Plan PlanCall(Transaction& tx, const storage::TransactionOptions& base, SessionCall& call) const;

  // The step planned for `call` completed with `status` on a live session
  // at `now`; moves `tx` on.
  Verdict Apply(Transaction& tx, const SessionCall& call, const absl::Status& status,
                const StepReport& step, absl::Time now) const;
  // The same when the session ended while the step ran: whatever the step
  // did is rolled back with the session. `ended` is the ended session's
  // status (FAILED_PRECONDITION), or nullptr if it is no longer remembered.
  Verdict ApplyEnded(Transaction& tx, const absl::Status& status, const StepReport& step,
                     const absl::Status* ended) const;

  // The transaction deadline that has passed at `now`, if any (the maximum
  // duration before the idle limit), with why, for the kill.
  std::optional<DueKill> KillDue(const Transaction& tx, bool call_running, absl::Time now) const;
  // When the earliest transaction deadline still to fire is due;
  // InfiniteFuture when none (no open transaction, or a kill is pending).
  absl::Time NextDeadline(const Transaction& tx, bool call_running) const;
  // Kills the open transaction with `why`.
  KillPlan Kill(Transaction& tx, absl::Status why, bool call_running) const;

  // Whether the session has a transaction to roll back: open, beginning, or
  // a call running inside it.
  static bool HasTransaction(const Transaction& tx, bool running_in_transaction);
  // The session ends; `call_running` says whether a call runs on it now.
  EndPlan End(Transaction& tx, bool call_running, bool running_in_transaction) const;

 private:
  const Limits limits_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_TRANSACTION_MACHINE_H_
