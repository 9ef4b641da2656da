#include "server/core/session/transaction_machine.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/session/session_call.h"
#include "server/core/session/session_types.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::core {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Op = RunRequest::Op;
using Answer = TransactionMachine::Answer;
using ConnectionFate = TransactionMachine::ConnectionFate;
using Event = TransactionMachine::Event;
using KillKind = TransactionMachine::KillKind;
using Reply = TransactionMachine::Reply;
using Step = TransactionMachine::Step;
using StepReport = TransactionMachine::StepReport;
using Verdict = TransactionMachine::Verdict;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);  // 2023-11-14T22:13:20Z
constexpr absl::Duration kNs = absl::Nanoseconds(1);
constexpr TxState kAllStates[] = {TxState::kNone, TxState::kBeginning, TxState::kOpen,
                                  TxState::kAborted};

std::string ReasonOf(const absl::Status& status) {
  auto reason = status.GetPayload(kSessionReasonPayloadUrl);
  return reason.has_value() ? std::string(*reason) : "";
}

absl::Status KillReason() {
  absl::Status why = absl::AbortedError("killed by the broker");
  why.SetPayload(kSessionReasonPayloadUrl, absl::Cord("TX_IDLE_TIMEOUT"));
  return why;
}

// A transaction in `state` as the manager would hold it.
Transaction In(TxState state) {
  Transaction tx;
  tx.state = state;
  if (state == TxState::kOpen || state == TxState::kAborted) {
    tx.start = kT0;
    tx.idle_since = kT0;
  }
  if (state == TxState::kAborted) tx.abort = KillReason();
  return tx;
}

RunRequest Statements(Op op, std::vector<std::string> sqls) {
  RunRequest r;
  r.op = op;
  r.deadline = kT0 + absl::Seconds(30);
  for (std::string& sql : sqls) r.statements.push_back(storage::Statement{std::move(sql), {}});
  return r;
}

SessionCall Exec(std::string sql = "SELECT 1") {
  return RunCall{Statements(Op::kExecute, {std::move(sql)}), nullptr};
}
SessionCall BeginTx(TransactionSpec spec = {}) {
  return BeginTransactionCall{spec, kT0 + absl::Seconds(5), nullptr};
}
SessionCall Commit() { return CommitCall{kT0 + absl::Seconds(7), nullptr}; }
SessionCall Rollback() { return RollbackCall{kT0 + absl::Seconds(9), nullptr}; }

std::vector<SessionCall> OneOfEachKind() {
  std::vector<SessionCall> calls;
  calls.push_back(Exec());
  calls.push_back(BeginTx());
  calls.push_back(Commit());
  calls.push_back(Rollback());
  return calls;
}

// The session's own options.
storage::TransactionOptions Base() {
  storage::TransactionOptions base;
  base.isolation = Isolation::kRepeatableRead;
  base.settings = {{"search_path", "app"}};
  return base;
}

class TransactionMachineTest : public ::testing::Test {
 protected:
  TransactionMachine::Plan Plan(Transaction& tx, SessionCall call,
                                const storage::TransactionOptions& base = Base()) {
    call_ = std::move(call);
    return machine_.PlanCall(tx, base, call_);
  }
  // The plan must be a step; returns it.
  Step MustStep(TransactionMachine::Plan plan) {
    EXPECT_TRUE(std::holds_alternative<Step>(plan)) << std::get<Answer>(plan).status;
    return std::holds_alternative<Step>(plan) ? std::move(std::get<Step>(plan)) : Step{};
  }
  absl::Status MustAnswer(const TransactionMachine::Plan& plan) {
    EXPECT_TRUE(std::holds_alternative<Answer>(plan)) << "planned a step";
    return std::holds_alternative<Answer>(plan) ? std::get<Answer>(plan).status
                                                : absl::UnknownError("a step");
  }

  TransactionMachine machine_{TransactionMachine::Limits{absl::Seconds(10), absl::Minutes(5)}};
  SessionCall call_;
};

// ---- Planning: every kind in every state --------------------------------------

TEST_F(TransactionMachineTest, OutsideATransactionAStatementRunsByItselfWithTheSessionsOptions) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  storage::TransactionOptions base = Base();
  base.read_only = true;
  Step step = MustStep(Plan(tx, Exec("SELECT 1"), base));
  EXPECT_EQ(step.request.op, Op::kExecute);
  ASSERT_EQ(step.request.statements.size(), 1u);
  EXPECT_EQ(step.request.statements[0].sql, "SELECT 1");
  EXPECT_EQ(step.request.deadline, kT0 + absl::Seconds(30));
  EXPECT_EQ(step.request.transaction.settings, base.settings);
  EXPECT_TRUE(step.request.transaction.read_only);
  // One statement sees one snapshot whatever the level.
  EXPECT_EQ(step.request.transaction.isolation, Isolation::kDefault);
  EXPECT_FALSE(step.on_pinned_connection);
  EXPECT_FALSE(step.in_transaction);
  EXPECT_EQ(tx.state, TxState::kNone);
}

TEST_F(TransactionMachineTest, OutsideATransactionABatchRunsAtTheSessionsIsolation) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  Step step =
      MustStep(Plan(tx, RunCall{Statements(Op::kBatch, {"SELECT 1", "SELECT 2"}), nullptr}));
  EXPECT_EQ(step.request.op, Op::kBatch);
  EXPECT_EQ(step.request.statements.size(), 2u);
  EXPECT_EQ(step.request.transaction.isolation, Isolation::kRepeatableRead);
}

TEST_F(TransactionMachineTest, InAnOpenTransactionAStatementRunsOnThePinnedConnection) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  Step step = MustStep(Plan(tx, Exec("UPDATE t SET x = 1")));
  EXPECT_EQ(step.request.op, Op::kInTransaction);
  EXPECT_EQ(step.request.statements[0].sql, "UPDATE t SET x = 1");
  EXPECT_TRUE(step.on_pinned_connection);
  EXPECT_TRUE(step.in_transaction);
  EXPECT_TRUE(step.request.reset_on_release) << "an earlier statement changed session state";
  EXPECT_TRUE(step.request.transaction.settings.empty()) << "the transaction has them already";
  EXPECT_EQ(tx.state, TxState::kOpen);
}

TEST_F(TransactionMachineTest, InAnAbortedTransactionAStatementGetsTheAbortReason) {
  Transaction tx = In(TxState::kAborted);
  const absl::Status answer = MustAnswer(Plan(tx, Exec()));
  EXPECT_EQ(answer.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(answer.message(), "killed by the broker");
  EXPECT_EQ(ReasonOf(answer), "TX_IDLE_TIMEOUT");
  EXPECT_EQ(tx.state, TxState::kAborted) << "only Rollback or Commit acknowledges it";
  EXPECT_EQ(tx.abort.message(), "killed by the broker");
}

TEST_F(TransactionMachineTest, AReadOnlySessionRefusesStatementsThatSetStateInEveryState) {
  storage::TransactionOptions base = Base();
  base.read_only = true;
  for (const TxState state : {TxState::kNone, TxState::kOpen, TxState::kAborted}) {
    Transaction tx = In(state);
    const absl::Status answer = MustAnswer(Plan(tx, Exec("SET transaction_read_only = off"), base));
    EXPECT_EQ(answer.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(answer.message(),
              "a read-only session does not run statements that set or keep session state (SET "
              "could make its transactions writable or outlive the call); give settings in "
              "BeginSessionRequest.settings");
    EXPECT_EQ(tx.state, state) << "a refusal leaves the transaction as it was";
  }
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  const absl::Status batch = MustAnswer(
      Plan(tx, RunCall{Statements(Op::kBatch, {"SELECT 1", "RESET ALL"}), nullptr}, base));
  EXPECT_THAT(batch.message(), StartsWith("statements[1]: a read-only session"));
  Transaction open = In(TxState::kOpen);
  MustStep(Plan(open, Exec("SELECT 1"), base));
}

TEST_F(TransactionMachineTest, BeginTransactionOutsideOneBeginsWithTheSessionsOptionsAndSpec) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  Step step = MustStep(Plan(tx, BeginTx()));
  EXPECT_EQ(step.request.op, Op::kBegin);
  EXPECT_EQ(step.request.deadline, kT0 + absl::Seconds(5));
  EXPECT_EQ(step.request.transaction.isolation, Isolation::kRepeatableRead);
  EXPECT_EQ(step.request.transaction.settings, Base().settings);
  EXPECT_FALSE(step.request.transaction.read_only);
  EXPECT_FALSE(step.on_pinned_connection);
  EXPECT_FALSE(step.in_transaction);
  EXPECT_EQ(tx.state, TxState::kBeginning);

  TransactionSpec spec;
  spec.isolation = Isolation::kSerializable;
  spec.read_only = true;
  spec.deferrable = true;
  Transaction other = In(TxState::kNone);
  step = MustStep(Plan(other, BeginTx(spec)));
  EXPECT_EQ(step.request.transaction.isolation, Isolation::kSerializable);
  EXPECT_TRUE(step.request.transaction.read_only);
  EXPECT_TRUE(step.request.transaction.deferrable);
}

TEST_F(TransactionMachineTest, AReadOnlySessionsTransactionIsReadOnlyWhateverTheSpecSays) {
  storage::TransactionOptions base = Base();
  base.read_only = true;
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  EXPECT_TRUE(MustStep(Plan(tx, BeginTx(), base)).request.transaction.read_only);
}

TEST_F(TransactionMachineTest, BeginTransactionWhileOneIsOpenIsRefusedAndKeepsIt) {
  Transaction tx = In(TxState::kOpen);
  const absl::Status answer = MustAnswer(Plan(tx, BeginTx()));
  EXPECT_EQ(answer.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(answer.message(),
            "a transaction is already open in this session (since 2023-11-14T22:13:20.000Z); "
            "Commit or Rollback it first");
  EXPECT_EQ(tx.state, TxState::kOpen);
}

TEST_F(TransactionMachineTest, BeginTransactionAfterAnUnacknowledgedAbortIsRefused) {
  Transaction tx = In(TxState::kAborted);
  const absl::Status answer = MustAnswer(Plan(tx, BeginTx()));
  EXPECT_EQ(answer.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(answer.message(),
            "the session's previous transaction was rolled back by the broker and not yet "
            "acknowledged; call Rollback before beginning another (killed by the broker)");
  EXPECT_EQ(tx.state, TxState::kAborted);
}

TEST_F(TransactionMachineTest, CommitWithoutATransactionIsRefused) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  const absl::Status answer = MustAnswer(Plan(tx, Commit()));
  EXPECT_EQ(answer.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(answer.message(),
            "no transaction is open in this session: Commit ends a transaction begun with "
            "BeginTransaction (outside one, every statement commits by itself)");
  EXPECT_EQ(tx.state, TxState::kNone);
}

TEST_F(TransactionMachineTest, CommitOfAnOpenTransactionCommitsOnThePinnedConnection) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  Step step = MustStep(Plan(tx, Commit()));
  EXPECT_EQ(step.request.op, Op::kCommit);
  EXPECT_EQ(step.request.deadline, kT0 + absl::Seconds(7));
  EXPECT_TRUE(step.request.statements.empty());
  EXPECT_TRUE(step.on_pinned_connection);
  EXPECT_TRUE(step.request.reset_on_release);
  EXPECT_EQ(tx.state, TxState::kOpen) << "until the step completes";
}

TEST_F(TransactionMachineTest, CommitOfAnAbortedTransactionIsAbortedAndAcknowledgesIt) {
  Transaction tx = In(TxState::kAborted);
  const absl::Status answer = MustAnswer(Plan(tx, Commit()));
  EXPECT_EQ(answer.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(answer.message(), "nothing was committed: killed by the broker");
  EXPECT_EQ(ReasonOf(answer), "TX_IDLE_TIMEOUT");
  EXPECT_EQ(tx.state, TxState::kNone);
  EXPECT_TRUE(tx.abort.ok());
}

TEST_F(TransactionMachineTest, RollbackWithoutATransactionIsANoOpNotAnError) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  EXPECT_TRUE(MustAnswer(Plan(tx, Rollback())).ok());
  EXPECT_EQ(tx.state, TxState::kNone);
}

TEST_F(TransactionMachineTest, RollbackOfAnOpenTransactionRunsOnThePinnedConnectionUnbounded) {
  Transaction tx = In(TxState::kOpen);
  Step step = MustStep(Plan(tx, Rollback()));
  EXPECT_EQ(step.request.op, Op::kRollback);
  EXPECT_EQ(step.request.deadline, absl::InfiniteFuture());
  EXPECT_TRUE(step.on_pinned_connection);
  EXPECT_FALSE(step.request.reset_on_release);
  EXPECT_EQ(tx.state, TxState::kOpen);
}

TEST_F(TransactionMachineTest, RollbackAcknowledgesABrokerKillWithNothingRolledBack) {
  Transaction tx = In(TxState::kAborted);
  EXPECT_TRUE(MustAnswer(Plan(tx, Rollback())).ok()) << "OK: false, nothing was rolled back";
  EXPECT_EQ(tx.state, TxState::kNone);
  EXPECT_TRUE(tx.abort.ok());
  // The session can begin again.
  MustStep(Plan(tx, BeginTx()));
}

TEST_F(TransactionMachineTest, NoCallIsPlannedWhileBeginTransactionRuns) {
  for (SessionCall& call : OneOfEachKind()) {
    Transaction tx = In(TxState::kBeginning);
    EXPECT_EQ(MustAnswer(Plan(tx, std::move(call))).code(), absl::StatusCode::kInternal);
    EXPECT_EQ(tx.state, TxState::kBeginning);
  }
}

TEST_F(TransactionMachineTest, EveryKindInEveryStateEitherStepsOrAnswersAndOnlyRollbackAnswersOk) {
  for (const TxState state : kAllStates) {
    std::vector<SessionCall> calls = OneOfEachKind();
    for (size_t kind = 0; kind < calls.size(); ++kind) {
      Transaction tx = In(state);
      TransactionMachine::Plan plan = Plan(tx, std::move(calls[kind]));
      if (const Answer* answer = std::get_if<Answer>(&plan)) {
        EXPECT_EQ(answer->status.ok(),
                  kind == 3 && (state == TxState::kNone || state == TxState::kAborted))
            << "kind " << kind << " state " << static_cast<int>(state);
      } else {
        const Step& step = std::get<Step>(plan);
        // Steps on the pinned connection exactly when a transaction is open.
        EXPECT_EQ(step.on_pinned_connection, state == TxState::kOpen)
            << "kind " << kind << " state " << static_cast<int>(state);
      }
    }
  }
}

// ---- Applying a step's outcome ------------------------------------------------------

StepReport Report(bool in_transaction, bool connection, bool changed = false) {
  StepReport r;
  r.in_transaction = in_transaction;
  r.connection = connection;
  r.changed_session_state = changed;
  return r;
}

const absl::Time kNow = kT0 + absl::Seconds(3);

TEST_F(TransactionMachineTest, AStatementOutsideATransactionChangesNothing) {
  for (const absl::Status& status : {absl::OkStatus(), absl::InvalidArgumentError("bad")}) {
    Transaction tx = In(TxState::kNone);
    EXPECT_FALSE(
        machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
        << "a statement running by itself";
    const Verdict v = machine_.Apply(tx, Exec(), status, Report(false, false, true), kNow);
    EXPECT_EQ(v.connection, ConnectionFate::kNone);
    EXPECT_EQ(v.reply, Reply::kStepResult);
    EXPECT_EQ(v.event, Event::kNone);
    EXPECT_EQ(tx.state, TxState::kNone);
    EXPECT_FALSE(tx.dirty);
  }
}

TEST_F(TransactionMachineTest, AStatementThatSucceededInTheTransactionKeepsItsConnection) {
  Transaction tx = In(TxState::kOpen);
  Verdict v = machine_.Apply(tx, Exec(), absl::OkStatus(), Report(true, true), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kKeep);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_EQ(v.event, Event::kNone);
  EXPECT_EQ(tx.state, TxState::kOpen);
  EXPECT_EQ(tx.idle_since, kNow) << "the idle limit restarts";
  EXPECT_FALSE(tx.dirty);

  v = machine_.Apply(tx, Exec(), absl::OkStatus(), Report(true, true, true), kNow);
  EXPECT_TRUE(tx.dirty);
  v = machine_.Apply(tx, Exec(), absl::OkStatus(), Report(true, true, false), kNow);
  EXPECT_TRUE(tx.dirty) << "once changed, reset on release";
  EXPECT_TRUE(MustStep(Plan(tx, Commit())).request.reset_on_release);
}

TEST_F(TransactionMachineTest, AStatementThatFailedAbortsTheTransactionSayingWhy) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  const absl::Status failed = absl::InvalidArgumentError("relation \"t\" does not exist");
  const Verdict v = machine_.Apply(tx, Exec(), failed, Report(true, false), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kNone) << "the runner rolled back and returned it";
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_EQ(v.event, Event::kFailed);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_FALSE(tx.dirty);
  EXPECT_EQ(tx.abort.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(tx.abort.message(),
            "the transaction was rolled back at 2023-11-14T22:13:23.000Z because a statement in "
            "it failed (INVALID_ARGUMENT: relation \"t\" does not exist); nothing of it was "
            "committed; call Rollback, then retry the transaction");
  EXPECT_EQ(ReasonOf(tx.abort), "TX_STATEMENT_FAILED");
}

TEST_F(TransactionMachineTest, APendingKillLandsWhenTheStatementSucceedsAnyway) {
  Transaction tx = In(TxState::kOpen);
  machine_.Kill(tx, KillReason(), /*call_running=*/true);
  const Verdict v = machine_.Apply(tx, Exec(), absl::OkStatus(), Report(true, true, true), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kDiscard);
  EXPECT_TRUE(v.reset) << "the statement changed session state";
  EXPECT_EQ(v.reply, Reply::kError);
  EXPECT_EQ(v.error.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(v.error.message(), "killed by the broker");
  EXPECT_EQ(ReasonOf(v.error), "TX_IDLE_TIMEOUT");
  EXPECT_EQ(v.event, Event::kNone) << "counted as a kill, not as a failure";
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_EQ(tx.abort.message(), "killed by the broker");
  EXPECT_TRUE(tx.pending_kill.ok());
}

TEST_F(TransactionMachineTest, APendingKillLandsWhenTheStatementWasStoppedByIt) {
  Transaction tx = In(TxState::kOpen);
  machine_.Kill(tx, KillReason(), /*call_running=*/true);
  const Verdict v =
      machine_.Apply(tx, Exec(), absl::AbortedError("stopped"), Report(true, false), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kNone);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_EQ(v.event, Event::kNone);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_EQ(ReasonOf(tx.abort), "TX_IDLE_TIMEOUT");
}

TEST_F(TransactionMachineTest, BeginTransactionThatSucceededOpensTheTransactionNow) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  MustStep(Plan(tx, BeginTx()));
  const Verdict v = machine_.Apply(tx, BeginTx(), absl::OkStatus(), Report(false, true), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kKeep);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_EQ(v.event, Event::kBegun);
  EXPECT_EQ(tx.state, TxState::kOpen);
  EXPECT_EQ(tx.start, kNow);
  EXPECT_EQ(tx.idle_since, kNow);
  EXPECT_FALSE(tx.dirty);
}

TEST_F(TransactionMachineTest, BeginTransactionThatFailedLeavesNoTransaction) {
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  MustStep(Plan(tx, BeginTx()));
  const Verdict v = machine_.Apply(tx, BeginTx(), absl::ResourceExhaustedError("pool full"),
                                   Report(false, false), kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kNone);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_EQ(v.event, Event::kNone);
  EXPECT_EQ(tx.state, TxState::kNone);
}

TEST_F(TransactionMachineTest, CommitEndsTheTransactionCountedByWhetherItCommitted) {
  for (const absl::Status& status :
       {absl::OkStatus(), absl::AbortedError("could not serialize access")}) {
    Transaction tx = In(TxState::kOpen);
    tx.dirty = true;
    const Verdict v = machine_.Apply(tx, Commit(), status, Report(false, false), kNow);
    EXPECT_EQ(v.connection, ConnectionFate::kNone);
    EXPECT_EQ(v.reply, Reply::kStepResult);
    EXPECT_EQ(v.event, status.ok() ? Event::kCommitted : Event::kFailed);
    EXPECT_EQ(tx.state, TxState::kNone);
    EXPECT_FALSE(tx.dirty);
  }
}

TEST_F(TransactionMachineTest, RollbackSucceedsEvenWhenTheConnectionWasLost) {
  for (const absl::Status& status : {absl::OkStatus(), absl::UnavailableError("lost")}) {
    Transaction tx = In(TxState::kOpen);
    machine_.Kill(tx, KillReason(), /*call_running=*/true);
    const Verdict v = machine_.Apply(tx, Rollback(), status, Report(false, false), kNow);
    EXPECT_EQ(v.connection, ConnectionFate::kNone);
    EXPECT_EQ(v.reply, Reply::kSuccess);
    EXPECT_EQ(v.event, Event::kRolledBack);
    EXPECT_EQ(tx.state, TxState::kNone);
    EXPECT_TRUE(tx.pending_kill.ok());
  }
}

TEST_F(TransactionMachineTest, AStepDoneAfterTheSessionEndedIsRolledBackWithIt) {
  absl::Status ended = absl::FailedPreconditionError("session s ended at T: why");
  ended.SetPayload(kSessionReasonPayloadUrl, absl::Cord("SESSION_EXPIRED"));
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  Verdict v = machine_.ApplyEnded(tx, absl::OkStatus(), Report(true, true), &ended);
  EXPECT_EQ(v.connection, ConnectionFate::kDiscard);
  EXPECT_TRUE(v.reset);
  EXPECT_EQ(v.reply, Reply::kError);
  EXPECT_EQ(v.error.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(v.error.message(),
            "the session ended while this call was running, so its transaction was rolled "
            "back: session s ended at T: why");
  EXPECT_EQ(ReasonOf(v.error), "SESSION_EXPIRED");
  EXPECT_EQ(tx.state, TxState::kNone);

  Transaction forgotten = In(TxState::kOpen);
  v = machine_.ApplyEnded(forgotten, absl::OkStatus(), Report(true, true), nullptr);
  EXPECT_EQ(v.error.message(), "the session ended; its transaction was rolled back");
}

TEST_F(TransactionMachineTest, AFailedStepOrOneWithoutAConnectionKeepsItsResultAfterTheEnd) {
  Transaction tx = In(TxState::kOpen);
  Verdict v = machine_.ApplyEnded(tx, absl::CancelledError("stopped"), Report(true, true), nullptr);
  EXPECT_EQ(v.connection, ConnectionFate::kDiscard);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  Transaction none = In(TxState::kNone);
  v = machine_.ApplyEnded(none, absl::OkStatus(), Report(false, false), nullptr);
  EXPECT_EQ(v.connection, ConnectionFate::kNone);
  EXPECT_EQ(v.reply, Reply::kStepResult) << "a statement that ran by itself did commit";
}

// ---- Deadlines and kills --------------------------------------------------------

TEST_F(TransactionMachineTest, OnlyAnOpenTransactionHasDeadlines) {
  for (const TxState state : {TxState::kNone, TxState::kBeginning, TxState::kAborted}) {
    Transaction tx = In(state);
    EXPECT_EQ(machine_.NextDeadline(tx, false), absl::InfiniteFuture());
    EXPECT_FALSE(machine_.KillDue(tx, false, kT0 + absl::Hours(1)).has_value());
  }
}

TEST_F(TransactionMachineTest, AnIdleTransactionIsDueAtItsIdleLimitABusyOneAtItsMaximum) {
  Transaction tx = In(TxState::kOpen);
  EXPECT_EQ(machine_.NextDeadline(tx, /*call_running=*/false), kT0 + absl::Seconds(10));
  EXPECT_EQ(machine_.NextDeadline(tx, /*call_running=*/true), kT0 + absl::Minutes(5));
  EXPECT_FALSE(machine_.KillDue(tx, false, kT0 + absl::Seconds(10) - kNs).has_value());
  EXPECT_FALSE(machine_.KillDue(tx, true, kT0 + absl::Minutes(5) - kNs).has_value());
}

TEST_F(TransactionMachineTest, TheIdleLimitKillsOnlyWhenNoCallRuns) {
  Transaction tx = In(TxState::kOpen);
  const absl::Time at = kT0 + absl::Seconds(10);
  EXPECT_FALSE(machine_.KillDue(tx, /*call_running=*/true, at).has_value());
  std::optional<TransactionMachine::DueKill> kill = machine_.KillDue(tx, false, at);
  ASSERT_TRUE(kill.has_value());
  EXPECT_EQ(kill->kind, KillKind::kIdle);
  EXPECT_EQ(kill->why.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(kill->why.message(),
            "the transaction was rolled back by the broker at 2023-11-14T22:13:30.000Z: no "
            "statement ran in it since 2023-11-14T22:13:20.000Z, longer than "
            "BROKER_TX_IDLE_TIMEOUT (10s); nothing of it was committed; call Rollback, then "
            "retry the transaction without pausing inside it");
  EXPECT_EQ(ReasonOf(kill->why), "TX_IDLE_TIMEOUT");
}

TEST_F(TransactionMachineTest, TheMaximumDurationKillsBusyOrNotAndComesBeforeTheIdleLimit) {
  const absl::Time at = kT0 + absl::Minutes(5);
  for (const bool running : {true, false}) {
    Transaction tx = In(TxState::kOpen);
    std::optional<TransactionMachine::DueKill> kill = machine_.KillDue(tx, running, at);
    ASSERT_TRUE(kill.has_value());
    EXPECT_EQ(kill->kind, KillKind::kMaxDuration);
    EXPECT_EQ(kill->why.message(),
              "the transaction was rolled back by the broker at 2023-11-14T22:18:20.000Z: it had "
              "been open since 2023-11-14T22:13:20.000Z, longer than BROKER_TX_MAX_DURATION "
              "(5m); nothing of it was committed; call Rollback, then retry the transaction "
              "(shorter)");
    EXPECT_EQ(ReasonOf(kill->why), "TX_MAX_DURATION");
  }
}

TEST_F(TransactionMachineTest, AKillWithACallRunningWaitsForItsCompletion) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  const TransactionMachine::KillPlan kill = machine_.Kill(tx, KillReason(), true);
  EXPECT_TRUE(kill.abort_running_call);
  EXPECT_EQ(kill.abort_with.message(), "killed by the broker");
  EXPECT_EQ(ReasonOf(kill.abort_with), "TX_IDLE_TIMEOUT");
  EXPECT_FALSE(kill.discard_connection) << "the running call holds it";
  EXPECT_EQ(tx.state, TxState::kOpen);
  EXPECT_EQ(tx.pending_kill.message(), "killed by the broker");
  // Its deadlines have fired: no more, and no second kill.
  EXPECT_EQ(machine_.NextDeadline(tx, true), absl::InfiniteFuture());
  EXPECT_FALSE(machine_.KillDue(tx, true, kT0 + absl::Hours(1)).has_value());
}

TEST_F(TransactionMachineTest, AKillWithNoCallRunningAbortsAndDiscardsAtOnce) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  const TransactionMachine::KillPlan kill = machine_.Kill(tx, KillReason(), false);
  EXPECT_FALSE(kill.abort_running_call);
  EXPECT_TRUE(kill.discard_connection);
  EXPECT_TRUE(kill.reset);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_EQ(tx.abort.message(), "killed by the broker");
  EXPECT_FALSE(tx.dirty);
  // Reported until acknowledged; Commit then fails ABORTED.
  const absl::Status commit = MustAnswer(Plan(tx, Commit()));
  EXPECT_EQ(commit.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(tx.state, TxState::kNone);
}

// ---- The session's end ----------------------------------------------------------------

TEST_F(TransactionMachineTest, EndingASessionWithAnIdleOpenTransactionRollsItBack) {
  Transaction tx = In(TxState::kOpen);
  tx.dirty = true;
  const TransactionMachine::EndPlan end = machine_.End(tx, false, false);
  EXPECT_TRUE(end.had_transaction);
  EXPECT_TRUE(end.count_kill);
  EXPECT_TRUE(end.discard_connection);
  EXPECT_TRUE(end.reset);
  EXPECT_EQ(tx.state, TxState::kNone);
}

TEST_F(TransactionMachineTest, EndingASessionWithACallRunningLeavesTheRollbackToItsCompletion) {
  for (const TxState state : {TxState::kOpen, TxState::kBeginning}) {
    Transaction tx = In(state);
    const TransactionMachine::EndPlan end = machine_.End(tx, true, state == TxState::kOpen);
    EXPECT_TRUE(end.had_transaction);
    EXPECT_TRUE(end.count_kill);
    EXPECT_FALSE(end.discard_connection);
    EXPECT_EQ(tx.state, state);
  }
}

TEST_F(TransactionMachineTest, ATransactionAlreadyKilledIsNotCountedAgainWhenTheSessionEnds) {
  Transaction tx = In(TxState::kOpen);
  machine_.Kill(tx, KillReason(), true);
  const TransactionMachine::EndPlan end = machine_.End(tx, true, true);
  EXPECT_TRUE(end.had_transaction);
  EXPECT_FALSE(end.count_kill);
}

TEST_F(TransactionMachineTest, EndingASessionWithoutATransactionHasNothingToRollBack) {
  for (const TxState state : {TxState::kNone, TxState::kAborted}) {
    Transaction tx = In(state);
    const TransactionMachine::EndPlan end = machine_.End(tx, false, false);
    EXPECT_FALSE(end.had_transaction);
    EXPECT_FALSE(end.count_kill);
    EXPECT_FALSE(end.discard_connection);
  }
  Transaction tx = In(TxState::kNone);
  EXPECT_FALSE(
      machine_.End(tx, /*call_running=*/true, /*running_in_transaction=*/false).had_transaction)
      << "a statement running by itself";
  EXPECT_TRUE(machine_.End(tx, true, /*running_in_transaction=*/false).had_transaction == false);
}

// ---- Savepoints ------------------------------------------------------------------

// Plans `sql` with Execute in `tx` and applies its outcome: `status`, with
// the connection handed back when `kept`. Returns the verdict.
Verdict RunInTransaction(const TransactionMachine& machine, Transaction& tx, const std::string& sql,
                         const absl::Status& status, bool kept, absl::Time now) {
  SessionCall call = Exec(sql);
  TransactionMachine::Plan plan = machine.PlanCall(tx, Base(), call);
  EXPECT_TRUE(std::holds_alternative<Step>(plan)) << sql;
  StepReport report;
  report.in_transaction = true;
  report.connection = kept;
  return machine.Apply(tx, call, status, report, now);
}

const absl::Status kUniqueViolation =
    storage::SqlError("23505", "duplicate key value violates unique constraint \"t_pkey\"");

TEST_F(TransactionMachineTest, ASavepointStatementRunsInTheTransactionAndIsRemembered) {
  Transaction tx = In(TxState::kOpen);
  const Step step = MustStep(Plan(tx, Exec("SAVEPOINT a")));
  EXPECT_EQ(step.request.op, Op::kInTransaction);
  EXPECT_TRUE(step.on_pinned_connection);
  EXPECT_FALSE(step.request.keep_on_failure) << "no savepoint yet to return to";
  machine_.Apply(tx, call_, absl::OkStatus(), Report(true, true), kNow);
  EXPECT_THAT(tx.savepoints, ::testing::ElementsAre("a"));
  EXPECT_TRUE(MustStep(Plan(tx, Exec("INSERT INTO t VALUES (1)"))).request.keep_on_failure)
      << "with a savepoint, a failure keeps the transaction";
}

TEST_F(TransactionMachineTest, AFailureWithASavepointKeepsTheAbortedTransactionPinned) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  const Verdict v = RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation,
                                     /*kept=*/true, kNow + absl::Seconds(1));
  EXPECT_EQ(v.connection, ConnectionFate::kKeep);
  EXPECT_EQ(v.reply, Reply::kStepResult) << "the caller gets the statement's own error";
  EXPECT_EQ(v.event, Event::kNone) << "the transaction may still commit";
  EXPECT_EQ(tx.state, TxState::kOpen);
  EXPECT_TRUE(tx.failed);
  EXPECT_EQ(tx.idle_since, kNow + absl::Seconds(1)) << "the idle limit still applies";
  EXPECT_THAT(tx.abort.message(), HasSubstr("duplicate key value"));
  EXPECT_EQ(ReasonOf(tx.abort), "TX_STATEMENT_FAILED");
  EXPECT_EQ(machine_.NextDeadline(tx, false), kNow + absl::Seconds(11));
}

TEST_F(TransactionMachineTest, InAFailedTransactionOnlyRollbackToRunsOthersGet25P02) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation, true, kNow);
  for (const char* sql : {"SELECT 1", "SAVEPOINT b", "RELEASE a", "INSERT INTO t VALUES (2)"}) {
    const absl::Status refused = MustAnswer(Plan(tx, Exec(sql)));
    EXPECT_EQ(storage::SqlStateOf(refused), "25P02") << sql;
    EXPECT_THAT(refused.message(),
                StartsWith("current transaction is aborted, commands ignored until end of "
                           "transaction block"));
    EXPECT_THAT(refused.message(), HasSubstr("duplicate key value")) << "says what failed";
  }
  EXPECT_TRUE(tx.failed) << "refusals change nothing";
  const Step step = MustStep(Plan(tx, Exec("ROLLBACK TO SAVEPOINT a")));
  EXPECT_TRUE(step.request.keep_on_failure);
  EXPECT_EQ(step.request.op, Op::kInTransaction);
}

TEST_F(TransactionMachineTest, RollbackToClearsTheFailureAndKeepsTheSavepoint) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "SAVEPOINT b", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation, true, kNow);
  const Verdict v =
      RunInTransaction(machine_, tx, "rollback work to a", absl::OkStatus(), true, kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kKeep);
  EXPECT_FALSE(tx.failed);
  EXPECT_TRUE(tx.abort.ok());
  EXPECT_THAT(tx.savepoints, ::testing::ElementsAre("a")) << "b was later than a";
  MustStep(Plan(tx, Exec("SELECT 1")));
  EXPECT_EQ(MustStep(Plan(tx, Commit())).request.op, Op::kCommit);
}

TEST_F(TransactionMachineTest, AFailedRollbackToLeavesTheTransactionFailed) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "SELECT 1/0", storage::SqlError("22012", "division by zero"), true,
                   kNow);
  const absl::Status unknown = storage::SqlError("3B001", "savepoint \"nope\" does not exist");
  const Verdict v = RunInTransaction(machine_, tx, "ROLLBACK TO nope", unknown, true, kNow);
  EXPECT_EQ(v.connection, ConnectionFate::kKeep);
  EXPECT_EQ(v.reply, Reply::kStepResult);
  EXPECT_TRUE(tx.failed);
  EXPECT_THAT(tx.abort.message(), HasSubstr("division by zero")) << "the first failure stays";
  EXPECT_THAT(tx.savepoints, ::testing::ElementsAre("a"));
}

TEST_F(TransactionMachineTest, ReleaseDropsTheNamedSavepointAndEveryLaterOne) {
  Transaction tx = In(TxState::kOpen);
  for (const char* sql : {"SAVEPOINT a", "SAVEPOINT b", "SAVEPOINT a", "SAVEPOINT c"}) {
    RunInTransaction(machine_, tx, sql, absl::OkStatus(), true, kNow);
  }
  RunInTransaction(machine_, tx, "RELEASE SAVEPOINT a", absl::OkStatus(), true, kNow);
  EXPECT_THAT(tx.savepoints, ::testing::ElementsAre("a", "b")) << "the newest a and c went";
  RunInTransaction(machine_, tx, "RELEASE \"a\"", absl::OkStatus(), true, kNow);
  EXPECT_TRUE(tx.savepoints.empty());
  EXPECT_FALSE(MustStep(Plan(tx, Exec("SELECT 1"))).request.keep_on_failure)
      << "with no savepoint left, a failure rolls back as before";
}

TEST_F(TransactionMachineTest, AFailureWithNoSavepointStillRollsBackAtOnce) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "RELEASE a", absl::OkStatus(), true, kNow);
  const Verdict v = RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation,
                                     /*kept=*/false, kNow);
  EXPECT_EQ(v.event, Event::kFailed);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_EQ(ReasonOf(tx.abort), "TX_STATEMENT_FAILED");
}

TEST_F(TransactionMachineTest, AFailureWhoseConnectionWasLostAbortsEvenWithASavepoint) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "SELECT 1", absl::UnavailableError("connection lost"),
                   /*kept=*/false, kNow);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_TRUE(tx.savepoints.empty());
  EXPECT_FALSE(tx.failed);
}

TEST_F(TransactionMachineTest, CommitOfAFailedTransactionRollsBackAndSaysNothingWasCommitted) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation, true, kNow);
  const Step step = MustStep(Plan(tx, Commit()));
  EXPECT_EQ(step.request.op, Op::kRollback) << "never COMMIT what the broker thinks aborted";
  EXPECT_TRUE(step.on_pinned_connection);
  const Verdict v = machine_.Apply(tx, call_, absl::OkStatus(), Report(false, false), kNow);
  EXPECT_EQ(v.reply, Reply::kError);
  EXPECT_EQ(v.error.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(v.error.message(), StartsWith("nothing was committed"));
  EXPECT_THAT(v.error.message(), HasSubstr("duplicate key value"));
  EXPECT_EQ(ReasonOf(v.error), "TX_STATEMENT_FAILED");
  EXPECT_EQ(v.event, Event::kFailed);
  EXPECT_EQ(tx.state, TxState::kNone);
  EXPECT_FALSE(tx.failed);
  EXPECT_TRUE(tx.savepoints.empty());
}

TEST_F(TransactionMachineTest, RollbackOfAFailedTransactionRollsItBack) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "INSERT INTO t VALUES (1)", kUniqueViolation, true, kNow);
  EXPECT_EQ(MustStep(Plan(tx, Rollback())).request.op, Op::kRollback);
  const Verdict v = machine_.Apply(tx, call_, absl::OkStatus(), Report(false, false), kNow);
  EXPECT_EQ(v.reply, Reply::kSuccess);
  EXPECT_EQ(tx.state, TxState::kNone);
  EXPECT_FALSE(tx.failed);
  EXPECT_TRUE(tx.savepoints.empty());
  EXPECT_EQ(MustStep(Plan(tx, BeginTx())).request.op, Op::kBegin);
  machine_.Apply(tx, call_, absl::OkStatus(), Report(false, true), kNow);
  EXPECT_TRUE(tx.savepoints.empty()) << "a new transaction starts without savepoints";
}

TEST_F(TransactionMachineTest, TheIdleLimitKillsAFailedTransactionAndForgetsItsSavepoints) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kT0);
  RunInTransaction(machine_, tx, "SELECT 1/0", kUniqueViolation, true, kT0);
  const auto due = machine_.KillDue(tx, false, kT0 + absl::Seconds(10));
  ASSERT_TRUE(due.has_value());
  EXPECT_EQ(due->kind, KillKind::kIdle);
  const TransactionMachine::KillPlan plan = machine_.Kill(tx, due->why, false);
  EXPECT_TRUE(plan.discard_connection);
  EXPECT_EQ(tx.state, TxState::kAborted);
  EXPECT_FALSE(tx.failed);
  EXPECT_TRUE(tx.savepoints.empty());
  EXPECT_EQ(ReasonOf(tx.abort), "TX_IDLE_TIMEOUT");
}

TEST_F(TransactionMachineTest, SavepointsInABatchAreRefused) {
  Transaction tx = In(TxState::kOpen);
  SessionCall batch = RunCall{Statements(Op::kBatch, {"SELECT 1", "SAVEPOINT a"}), nullptr};
  const absl::Status refused = MustAnswer(Plan(tx, std::move(batch)));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("not in ExecuteBatch"));
  EXPECT_EQ(tx.state, TxState::kOpen);
}

TEST_F(TransactionMachineTest, EndingASessionWithAFailedTransactionRollsItBack) {
  Transaction tx = In(TxState::kOpen);
  RunInTransaction(machine_, tx, "SAVEPOINT a", absl::OkStatus(), true, kNow);
  RunInTransaction(machine_, tx, "SELECT 1/0", kUniqueViolation, true, kNow);
  const TransactionMachine::EndPlan plan = machine_.End(tx, false, false);
  EXPECT_TRUE(plan.had_transaction);
  EXPECT_TRUE(plan.discard_connection);
  EXPECT_TRUE(tx.savepoints.empty());
  EXPECT_FALSE(tx.failed);
}

}  // namespace
}  // namespace sessionbroker::core
