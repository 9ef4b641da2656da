#include "server/core/statement_runner.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/mutex.h"
#include "server/core/sql_classifier.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

constexpr absl::string_view kQueryCanceled = "57014";

// Checks the request; on success tells whether the connection must be reset
// afterwards because a statement may leave session state behind.
absl::StatusOr<bool> Check(const RunRequest& request) {
  if (request.statements.empty()) {
    return absl::InvalidArgumentError(request.batch ? "statements is empty: give at least one"
                                                    : "no statement given");
  }
  if (!request.batch && request.statements.size() != 1) {
    return absl::InvalidArgumentError("Execute runs exactly one statement");
  }
  bool needs_reset = false;
  for (size_t i = 0; i < request.statements.size(); ++i) {
    const storage::Statement& s = request.statements[i];
    const std::string where = request.batch ? absl::StrCat("statements[", i, "]: ") : "";
    const SqlInfo info = ClassifySql(s.sql);
    if (info.empty) return absl::InvalidArgumentError(absl::StrCat(where, "sql is empty"));
    if (info.multiple_statements) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "sql holds more than one statement; send one statement per call, or several "
                 "as separate entries of ExecuteBatch"));
    }
    if (info.transaction_control) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, info.first_keyword,
          " is not allowed here: Execute runs each statement in its own transaction "
          "(autocommit) and ExecuteBatch wraps all its statements in one transaction, so the "
          "broker controls transactions"));
    }
    if (info.copy_stdio) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "COPY ... FROM STDIN / TO STDOUT streams data over a protocol the broker does "
                 "not offer; use INSERT ... VALUES with parameters, or SELECT"));
    }
    if (info.max_placeholder != static_cast<int>(s.params.size())) {
      return absl::InvalidArgumentError(
          info.max_placeholder == 0
              ? absl::StrCat(where, "the statement has no $n placeholders but ", s.params.size(),
                             " parameters were given")
              : absl::StrCat(where, "the statement uses placeholders up to $",
                             info.max_placeholder, " but ", s.params.size(),
                             " parameters were given"));
    }
    needs_reset = needs_reset || info.changes_session_state;
  }
  return needs_reset;
}

}  // namespace

// One call's progress: waiting for a connection, running, finished. The mutex
// and the in-flight count order cancellation against completion, so a cancel
// request can never hit a connection after it went back to the pool.
class StatementRunner::Call final : public RunningCall,
                                    public std::enable_shared_from_this<Call> {
 public:
  enum class Reason { kNone, kDeadline, kMaxDuration, kCaller };

  Call(StatementRunner& runner, RunRequest request, Callback done, bool needs_reset)
      : runner_(runner),
        request_(std::move(request)),
        done_(std::move(done)),
        needs_reset_(needs_reset) {}

  void Start() {
    auto self = shared_from_this();
    AcquireRequest acquire;
    acquire.deadline = request_.deadline;
    acquire.client_id = request_.client_id;
    const ConnectionPool::WaitId id = runner_.pool_.Acquire(
        acquire,
        [self](absl::StatusOr<PooledConnection> conn) mutable {
          self->OnConnection(std::move(conn));
        });
    bool cancel_now = false;
    {
      MutexLock lock(&mu_);
      if (phase_ == Phase::kWaiting) {
        wait_id_ = id;
        cancel_now = cancel_requested_;
      }
    }
    if (cancel_now) runner_.pool_.CancelWait(id);
  }

  void Cancel() override {
    ConnectionPool::WaitId wait = 0;
    bool running = false;
    {
      MutexLock lock(&mu_);
      if (phase_ == Phase::kFinished || cancel_requested_) return;
      cancel_requested_ = true;
      if (phase_ == Phase::kWaiting) wait = wait_id_;
      running = phase_ == Phase::kRunning;
    }
    if (wait != 0) runner_.pool_.CancelWait(wait);
    if (running) RequestCancel(Reason::kCaller);
  }

 private:
  enum class Phase { kWaiting, kRunning, kFinished };

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

  void OnConnection(absl::StatusOr<PooledConnection> acquired) {
    if (!acquired.ok()) {
      Finish(acquired.status());
      return;
    }
    PooledConnection conn = *std::move(acquired);
    bool cancelled;
    {
      MutexLock lock(&mu_);
      cancelled = cancel_requested_;
      phase_ = cancelled ? Phase::kFinished : Phase::kRunning;
      if (!cancelled) running_on_ = conn.get();
    }
    if (cancelled) {
      conn.Release();
      Finish(absl::CancelledError("the call was cancelled before its statement started"));
      return;
    }

    const absl::Time started = runner_.clock_.Now();
    if (started >= request_.deadline) {
      // A slow connect can hand over a connection after the caller gave up.
      conn.Release();
      Finish(absl::DeadlineExceededError(
          "the call's deadline passed while a database connection was being opened"));
      return;
    }
    const absl::Time cap = started + runner_.options_.max_statement_duration;
    const bool caller_first = request_.deadline <= cap;
    const absl::Time deadline = std::min(request_.deadline, cap);
    TimerQueue::TimerId timer = 0;
    if (deadline != absl::InfiniteFuture()) {
      auto self = shared_from_this();
      const Reason why = caller_first ? Reason::kDeadline : Reason::kMaxDuration;
      timer = runner_.timers_.Schedule(deadline, [self, why] { self->RequestCancel(why); });
    }

    storage::ExecuteOptions options;
    options.max_result_bytes = runner_.options_.max_result_bytes;
    absl::StatusOr<Results> out;
    if (request_.batch) {
      out = conn->ExecuteBatch(request_.statements, options);
    } else {
      absl::StatusOr<storage::QueryResult> one = conn->Execute(request_.statements[0], options);
      if (one.ok()) {
        out = Results{};
        out->push_back(*std::move(one));
      } else {
        out = one.status();
      }
    }

    Reason reason;
    TimerQueue::TimerId resend;
    {
      MutexLock lock(&mu_);
      phase_ = Phase::kFinished;
      // No cancel may touch the connection once it is back in the pool.
      while (cancels_in_flight_ > 0) cancel_sent_.Wait(&mu_);
      running_on_ = nullptr;
      reason = reason_;
      resend = std::exchange(resend_timer_, 0);
    }
    if (timer != 0) runner_.timers_.Cancel(timer);
    if (resend != 0) runner_.timers_.Cancel(resend);
    conn->ClearCancel();
    const absl::Duration took = runner_.clock_.Now() - started;
    runner_.statement_duration_.Record(took);

    if (!out.ok() && reason != Reason::kNone) {
      out = Explain(out.status(), reason, took);
    }
    runner_.statements_.fetch_add(static_cast<int64_t>(request_.statements.size()),
                                  std::memory_order_relaxed);
    if (!out.ok()) runner_.statement_errors_.fetch_add(1, std::memory_order_relaxed);
    if (reason != Reason::kNone) runner_.cancellations_.fetch_add(1, std::memory_order_relaxed);

    if (needs_reset_ && !conn->IsBroken()) {
      runner_.session_resets_.fetch_add(1, std::memory_order_relaxed);
      const absl::Status reset = conn->ResetSession();
      if (!reset.ok()) {
        spdlog::warn("discarding connection pid={}: session reset failed: {}", conn->BackendPid(),
                     reset.ToString());
        conn.MarkBroken();
      }
    }
    if (runner_.options_.echo) Echo(took, out);
    conn.Release();
    Finish(std::move(out));
  }

  // A statement stopped by our cancel request reports SQLSTATE 57014
  // ("canceling statement due to user request"); say why it really stopped.
  absl::Status Explain(const absl::Status& status, Reason reason, absl::Duration took) const {
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
      case Reason::kCaller:
        explained = absl::CancelledError(absl::StrCat(
            "the call was cancelled, so PostgreSQL cancelled its SQL (after ", after,
            ") and nothing of it was committed: ", status.message()));
        break;
      case Reason::kNone:
        return status;
    }
    explained.SetPayload(storage::kSqlStatePayloadUrl, absl::Cord(kQueryCanceled));
    return explained;
  }

  void Echo(absl::Duration took, const absl::StatusOr<Results>& out) const {
    const double ms = absl::ToDoubleMilliseconds(took);
    for (const storage::Statement& s : request_.statements) {
      // Parameter values are never logged: they may hold secrets.
      spdlog::info("sql: {} | params={} took_ms={:.3f} status={}", s.sql, s.params.size(), ms,
                   out.ok() ? "OK" : absl::StatusCodeToString(out.status().code()));
    }
  }

  void Finish(absl::StatusOr<Results> out) {
    {
      MutexLock lock(&mu_);
      phase_ = Phase::kFinished;
    }
    std::move(done_)(std::move(out));
  }

  StatementRunner& runner_;
  const RunRequest request_;
  Callback done_;
  const bool needs_reset_;

  Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kWaiting;
  ConnectionPool::WaitId wait_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  Reason reason_ ABSL_GUARDED_BY(mu_) = Reason::kNone;
  storage::DbConnection* running_on_ ABSL_GUARDED_BY(mu_) = nullptr;
  int cancels_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  CondVar cancel_sent_;
  TimerQueue::TimerId resend_timer_ ABSL_GUARDED_BY(mu_) = 0;
};

StatementRunner::StatementRunner(ConnectionPool& pool, TimerQueue& timers,
                                 Executor& cancel_executor, const Clock& clock,
                                 RunnerOptions options)
    : pool_(pool),
      timers_(timers),
      cancel_executor_(cancel_executor),
      clock_(clock),
      options_(std::move(options)) {}

absl::Status StatementRunner::Validate(const RunRequest& request) {
  return Check(request).status();
}

std::shared_ptr<RunningCall> StatementRunner::Run(RunRequest request, Callback done) {
  absl::StatusOr<bool> needs_reset = Check(request);
  if (!needs_reset.ok()) {
    std::move(done)(needs_reset.status());
    return nullptr;
  }
  auto call = std::make_shared<Call>(*this, std::move(request), std::move(done), *needs_reset);
  call->Start();
  return call;
}

RunnerStats StatementRunner::Stats() const {
  RunnerStats s;
  s.statements = statements_.load(std::memory_order_relaxed);
  s.statement_errors = statement_errors_.load(std::memory_order_relaxed);
  s.cancellations = cancellations_.load(std::memory_order_relaxed);
  s.session_resets = session_resets_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace sessionbroker::core
