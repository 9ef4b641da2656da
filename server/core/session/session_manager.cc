#include "server/core/session/session_manager.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/core/session/session_status.h"
#include "server/core/sql/sql_classifier.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

using Op = RunRequest::Op;
using session_internal::Detached;
using session_internal::DurationText;
using session_internal::Fresh;
using session_internal::TimeText;
using session_internal::WithReason;

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxLabelBytes = 256;
constexpr size_t kMaxClientIdBytes = 256;
// Reaped per timer run, so that a mass expiry cannot hold the lock for long;
// the rest follow at once.
constexpr int kReapBatch = 4096;

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

}  // namespace

// ---- Session and Call --------------------------------------------------------

struct SessionManager::Session {
  std::string name;
  std::string label;
  std::string client_id;
  // The session's own isolation, read-only flag and settings.
  storage::TransactionOptions base;
  absl::Duration ttl;
  absl::Time created;
  absl::Time renewed;
  absl::Time lease_end;  // while no stream holds it
  absl::Time max_end;
  bool orphaned = false;  // lease_end was set when its last stream went away
  absl::Time orphaned_at;
  bool ended = false;

  TxState tx = TxState::kNone;
  absl::Time tx_start;
  absl::Time tx_idle_since;
  PooledConnection conn;  // kOpen with no call running
  bool tx_dirty = false;  // a statement changed session state: reset on release
  absl::Status tx_abort;  // kAborted: why (ABORTED)
  // A transaction deadline fired while a call ran on the connection.
  absl::Status pending_kill;

  std::shared_ptr<Call> running;
  std::list<std::shared_ptr<Call>> queue;
  // Told once the session's connection is back in the pool after it ended.
  std::vector<absl::AnyInvocable<void() &&>> end_waiters;

  absl::Time deadline = absl::InfiniteFuture();  // its key in deadlines_
};

// One call on a session: queued, running (a runner step), or done. Its state
// is guarded by the manager's lock.
class SessionManager::Call final : public RunningCall {
 public:
  enum class Kind { kRun, kBeginTx, kCommit, kRollback };
  enum class State { kQueued, kRunning, kDone };

  Call(SessionManager* manager, Kind kind, absl::Time deadline)
      : manager_(manager), kind(kind), deadline(deadline) {}

  void Cancel() override { Stop(absl::CancelledError("the call was cancelled")); }
  void Abort(absl::Status why) override { Stop(std::move(why)); }

  // Completes the call with an error (any kind).
  void Fail(absl::Status status) {
    switch (kind) {
      case Kind::kRun:
        std::move(on_run)(std::move(status));
        break;
      case Kind::kBeginTx:
        std::move(on_info)(std::move(status));
        break;
      case Kind::kCommit:
        std::move(on_commit)(std::move(status));
        break;
      case Kind::kRollback:
        std::move(on_rollback)(std::move(status));
        break;
    }
  }

  SessionManager* const manager_;
  const Kind kind;
  const absl::Time deadline;
  RunRequest request;       // kRun
  TransactionSpec tx_spec;  // kBeginTx
  StatementRunner::Callback on_run;
  Callback<SessionInfo> on_info;
  Callback<absl::Time> on_commit;
  Callback<bool> on_rollback;

  // Guarded by manager_->mu_.
  State state = State::kQueued;
  bool in_transaction = false;  // kRun on the pinned connection
  std::weak_ptr<Session> session;
  std::shared_ptr<RunningCall> step;
  absl::Status stop;  // a stop requested before the step was known
  TimerQueue::TimerId queue_timer = 0;

 private:
  void Stop(absl::Status why);
};

struct SessionManager::Actions {
  std::vector<absl::AnyInvocable<void() &&>> later;
  void Add(absl::AnyInvocable<void() &&> f) { later.push_back(std::move(f)); }
};

void SessionManager::Call::Stop(absl::Status why) {
  std::shared_ptr<RunningCall> running_step;
  bool fail_now = false;
  {
    MutexLock lock(&manager_->mu_);
    switch (state) {
      case State::kDone:
        return;
      case State::kQueued: {
        std::shared_ptr<Session> s = session.lock();
        if (s != nullptr) {
          for (auto it = s->queue.begin(); it != s->queue.end(); ++it) {
            if (it->get() == this) {
              s->queue.erase(it);
              break;
            }
          }
        }
        if (queue_timer != 0) manager_->timers_.Cancel(queue_timer);
        state = State::kDone;
        fail_now = true;
        break;
      }
      case State::kRunning:
        if (step != nullptr) {
          running_step = step;
        } else if (stop.ok()) {
          stop = std::move(why);  // applied once the step is known
        }
        break;
    }
  }
  if (fail_now) {
    Fail(why.code() == absl::StatusCode::kCancelled
             ? absl::CancelledError("the call was cancelled while it waited for earlier calls "
                                    "of its session")
             : std::move(why));
    return;
  }
  if (running_step == nullptr) return;
  if (why.code() == absl::StatusCode::kCancelled) {
    running_step->Cancel();
  } else {
    running_step->Abort(std::move(why));
  }
}

// ---- Construction ------------------------------------------------------------

SessionManager::SessionManager(StatementRunner& runner, TimerQueue& timers, const Clock& clock,
                               SessionOptions options)
    : runner_(runner),
      timers_(timers),
      clock_(clock),
      options_(std::move(options)),
      ended_(options_.remembered_ended, options_.remember_ended_for) {}

SessionManager::~SessionManager() {
  // Waits for a Reap() running on the timer thread.
  reaper_.Stop();
}

std::string SessionManager::NewName() {
  // 128 bits from the kernel's CSPRNG: unguessable, and (with the check the
  // caller does against live and remembered names) never reused.
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::critical("getrandom failed: errno {}", errno);
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  return absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

// ---- Lookup and bookkeeping -------------------------------------------------

absl::StatusOr<std::shared_ptr<SessionManager::Session>> SessionManager::FindLocked(
    absl::string_view name) const {
  if (name.empty()) return absl::InvalidArgumentError("session is empty: name a session");
  auto it = sessions_.find(name);
  if (it != sessions_.end()) {
    // Past its lease or lifetime but not reaped yet (the reaper runs at the
    // deadline, a moment later, or works through a mass expiry in batches):
    // it is over already and must not be revived by a late call.
    const Session& found = *it->second;
    const absl::Time now = clock_.Now();
    if (now >= found.max_end) {
      return EndedSessions::StatusOf(
          name, EndedSession{EndReason::kLifetime, found.max_end,
                             EndDetail(found, EndReason::kLifetime, found.max_end)});
    }
    if (LeaseRunsLocked(found) && now >= found.lease_end) {
      const EndReason reason = found.orphaned ? EndReason::kOrphaned : EndReason::kExpired;
      return EndedSessions::StatusOf(
          name, EndedSession{reason, found.lease_end, EndDetail(found, reason, now)});
    }
    return it->second;
  }
  if (const EndedSession* ended = ended_.Find(name, clock_.Now()); ended != nullptr) {
    return EndedSessions::StatusOf(name, *ended);
  }
  return WithReason(
      absl::NotFoundError(absl::StrCat(
          "session \"", name, "\" not found: it never existed here, or it ended more than ",
          DurationText(options_.remember_ended_for),
          " ago (or the broker restarted since); begin a new session")),
      "SESSION_NOT_FOUND");
}

std::string SessionManager::EndDetail(const Session& s, EndReason reason, absl::Time now) const {
  switch (reason) {
    case EndReason::kClient:
      return "EndSession was called";
    case EndReason::kExpired:
      return absl::StrCat("its lease expired: it was not renewed within its ttl of ",
                          DurationText(s.ttl), " (last renewed at ", TimeText(s.renewed), ")");
    case EndReason::kOrphaned:
      return absl::StrCat("the KeepAlive stream holding it went away at ", TimeText(s.orphaned_at),
                          " and it was neither renewed nor held again within "
                          "BROKER_SESSION_ORPHAN_GRACE (",
                          DurationText(options_.orphan_grace), ")");
    case EndReason::kLifetime:
      return absl::StrCat("it reached BROKER_SESSION_MAX_LIFETIME (",
                          DurationText(options_.max_lifetime), ") after beginning at ",
                          TimeText(s.created));
    case EndReason::kShutdown:
      return "the broker shut down";
  }
  return "";
}

absl::Time SessionManager::ExpireTimeLocked(const Session& s) const {
  if (holds_.Held(s.name)) return std::min(clock_.Now() + s.ttl, s.max_end);
  return s.lease_end;
}

SessionInfo SessionManager::InfoLocked(const Session& s) const {
  SessionInfo info;
  info.name = s.name;
  info.label = s.label;
  info.client_id = s.client_id;
  info.create_time = s.created;
  info.expire_time = ExpireTimeLocked(s);
  info.max_expire_time = s.max_end;
  info.ttl = s.ttl;
  info.read_only = s.base.read_only;
  info.isolation = s.base.isolation;
  info.settings = s.base.settings;
  info.in_transaction = s.tx == TxState::kOpen || s.tx == TxState::kAborted;
  info.transaction_aborted = s.tx == TxState::kAborted;
  if (info.transaction_aborted) info.abort_reason = std::string(s.tx_abort.message());
  if (info.in_transaction) info.transaction_start_time = s.tx_start;
  info.held_by_stream = holds_.Held(s.name);
  info.queued_calls = static_cast<int>(s.queue.size());
  return info;
}

std::optional<EndReason> SessionManager::LapsedLocked(const Session& s, absl::Time now) const {
  if (now >= s.max_end) return EndReason::kLifetime;
  if (LeaseRunsLocked(s) && now >= s.lease_end) {
    return s.orphaned ? EndReason::kOrphaned : EndReason::kExpired;
  }
  return std::nullopt;
}

bool SessionManager::LeaseRunsLocked(const Session& s) const {
  // A stream holding the session suspends its lease. A running call does
  // not: a statement outlasting its session's lease is cancelled (the client
  // renews with RenewSession, which never queues, or holds the session with
  // a KeepAlive stream, for long statements).
  return !holds_.Held(s.name);
}

void SessionManager::RenewLocked(Session& s, absl::Time now) {
  s.renewed = now;
  s.lease_end = std::min(now + s.ttl, s.max_end);
  s.orphaned = false;
  RescheduleLocked(s);
}

void SessionManager::RescheduleLocked(Session& s) {
  absl::Time next = s.max_end;
  if (LeaseRunsLocked(s)) next = std::min(next, s.lease_end);
  // Once a kill is pending (the running call was told to stop), the
  // transaction's deadlines have fired: keeping them would re-arm the reaper
  // at a past time and make it spin until the call completes.
  if (s.tx == TxState::kOpen && s.pending_kill.ok()) {
    next = std::min(next, s.tx_start + options_.tx_max_duration);
    if (s.running == nullptr) next = std::min(next, s.tx_idle_since + options_.tx_idle_timeout);
  }
  if (next == s.deadline) return;
  if (s.deadline != absl::InfiniteFuture()) deadlines_.erase({s.deadline, &s});
  s.deadline = next;
  if (next != absl::InfiniteFuture()) deadlines_.insert({next, &s});
  ArmReaperLocked();
}

void SessionManager::ArmReaperLocked() {
  if (!deadlines_.empty()) reaper_.ArmBy(deadlines_.begin()->first);
}

// ---- The reaper --------------------------------------------------------------

void SessionManager::Reap(RearmingTimer::Token token) {
  Actions actions;
  {
    MutexLock lock(&mu_);
    // A newer arming replaced this one: it will fire instead.
    if (!reaper_.Fired(token)) return;
    const absl::Time now = clock_.Now();
    std::vector<Session*> due;
    for (auto it = deadlines_.begin();
         it != deadlines_.end() && it->first <= now && static_cast<int>(due.size()) < kReapBatch;
         ++it) {
      due.push_back(it->second);
    }
    for (Session* raw : due) {
      auto found = sessions_.find(raw->name);
      if (found == sessions_.end()) continue;
      std::shared_ptr<Session> s = found->second;
      if (const std::optional<EndReason> lapsed = LapsedLocked(*s, now); lapsed.has_value()) {
        EndLocked(s, *lapsed, actions);
      } else if (s->tx == TxState::kOpen && s->pending_kill.ok() &&
                 now >= s->tx_start + options_.tx_max_duration) {
        ++counters_.tx_killed_max_duration;
        KillTransactionLocked(
            s,
            WithReason(absl::AbortedError(absl::StrCat(
                           "the transaction was rolled back by the broker at ", TimeText(now),
                           ": it had been open since ", TimeText(s->tx_start),
                           ", longer than BROKER_TX_MAX_DURATION (",
                           DurationText(options_.tx_max_duration),
                           "); nothing of it was committed; call Rollback, then retry the "
                           "transaction (shorter)")),
                       "TX_MAX_DURATION"),
            actions);
      } else if (s->tx == TxState::kOpen && s->running == nullptr &&
                 now >= s->tx_idle_since + options_.tx_idle_timeout) {
        ++counters_.tx_killed_idle;
        KillTransactionLocked(
            s,
            WithReason(absl::AbortedError(absl::StrCat(
                           "the transaction was rolled back by the broker at ", TimeText(now),
                           ": no statement ran in it since ", TimeText(s->tx_idle_since),
                           ", longer than BROKER_TX_IDLE_TIMEOUT (",
                           DurationText(options_.tx_idle_timeout),
                           "); nothing of it was committed; call Rollback, then retry the "
                           "transaction without pausing inside it")),
                       "TX_IDLE_TIMEOUT"),
            actions);
      } else {
        RescheduleLocked(*s);
      }
    }
    ArmReaperLocked();
  }
  Perform(actions);
}

void SessionManager::KillTransactionLocked(const std::shared_ptr<Session>& s, absl::Status why,
                                           Actions& actions) {
  spdlog::warn("session {} ({}): {}", s->name, s->label, std::string(why.message()));
  if (s->running != nullptr) {
    // The call's completion rolls back and reports `why`.
    std::shared_ptr<Call> call = s->running;
    actions.Add([call, why = Detached(why)]() mutable { call->Abort(std::move(why)); });
    s->pending_kill = std::move(why);
    RescheduleLocked(*s);
    return;
  }
  s->tx = TxState::kAborted;
  s->tx_abort = std::move(why);
  PooledConnection conn = std::move(s->conn);
  const bool dirty = std::exchange(s->tx_dirty, false);
  ++steps_in_flight_;
  actions.Add([this, conn = std::move(conn), dirty]() mutable {
    DiscardTransaction(std::move(conn), dirty);
  });
  RescheduleLocked(*s);
}

void SessionManager::DiscardTransaction(PooledConnection conn, bool dirty) {
  // steps_in_flight_ was counted by the caller, under the lock.
  RunRequest request;
  request.op = Op::kRollback;
  request.connection = std::move(conn);
  request.reset_on_release = dirty;
  runner_.RunStep(std::move(request), [this](RunOutcome outcome) {
    if (!outcome.results.ok()) {
      spdlog::warn("rolling back a reclaimed transaction failed: {}",
                   outcome.results.status().ToString());
    }
    MutexLock lock(&mu_);
    --steps_in_flight_;
    steps_done_.SignalAll();
  });
}

void SessionManager::EndLocked(const std::shared_ptr<Session>& s, EndReason reason,
                               Actions& actions) {
  const absl::Time now = clock_.Now();
  s->ended = true;
  if (s->deadline != absl::InfiniteFuture()) deadlines_.erase({s->deadline, s.get()});
  s->deadline = absl::InfiniteFuture();
  sessions_.erase(s->name);
  if (--open_by_client_[s->client_id] == 0) open_by_client_.erase(s->client_id);
  switch (reason) {
    case EndReason::kClient:
      ++counters_.ended_by_client;
      break;
    case EndReason::kExpired:
      ++counters_.expired;
      break;
    case EndReason::kOrphaned:
      ++counters_.orphaned;
      break;
    case EndReason::kLifetime:
      ++counters_.lifetime_exceeded;
      break;
    case EndReason::kShutdown:
      ++counters_.ended_by_shutdown;
      break;
  }
  EndedSession ended{reason, now, EndDetail(*s, reason, now)};
  const absl::Status ended_status = EndedSessions::StatusOf(s->name, ended);
  const bool had_tx = s->tx == TxState::kOpen || s->tx == TxState::kBeginning ||
                      (s->running != nullptr && s->running->in_transaction);
  if (reason != EndReason::kClient) {
    spdlog::info("session {} ({}) ended: {}{}", s->name, s->label, ended.detail,
                 had_tx ? "; its open transaction is rolled back" : "");
    // Not again for a transaction a deadline already killed (its running
    // call was told to stop, and counted, by the reaper).
    if (had_tx && s->pending_kill.ok()) ++counters_.tx_killed_session_end;
  }
  ended_.Remember(s->name, std::move(ended));

  for (std::shared_ptr<Call>& queued : s->queue) {
    queued->state = Call::State::kDone;
    if (queued->queue_timer != 0) timers_.Cancel(queued->queue_timer);
    actions.Add(
        [queued, status = Detached(ended_status)]() mutable { queued->Fail(std::move(status)); });
  }
  s->queue.clear();

  if (s->running != nullptr) {
    absl::Status aborted =
        Fresh(ended_status, absl::StatusCode::kAborted,
              "the session ended while this call was running, so the call was stopped and any open "
              "transaction rolled back: ");
    std::shared_ptr<Call> call = s->running;
    actions.Add(
        [call, aborted = std::move(aborted)]() mutable { call->Abort(std::move(aborted)); });
  } else if (s->tx == TxState::kOpen) {
    s->tx = TxState::kNone;
    ++steps_in_flight_;
    PooledConnection conn = std::move(s->conn);
    const bool dirty = s->tx_dirty;
    std::vector<absl::AnyInvocable<void()&&>> waiters = std::move(s->end_waiters);
    actions.Add([this, conn = std::move(conn), dirty, waiters = std::move(waiters)]() mutable {
      DiscardTransaction(std::move(conn), dirty);
      // The rollback is on its way; the waiters (EndSession) need not wait
      // for its round trip: the session is gone and its transaction can no
      // longer commit.
      for (auto& w : waiters) std::move(w)();
    });
  }
  if (s->running == nullptr && s->tx != TxState::kOpen) {
    for (auto& w : s->end_waiters) actions.Add(std::move(w));
    s->end_waiters.clear();
  }

  for (const StreamId id : holds_.Forget(s->name)) {
    auto listener = listeners_.find(id);
    if (listener == listeners_.end()) continue;
    StreamUpdate update;
    update.name = s->name;
    update.state = StreamUpdate::State::kEnded;
    update.reason = std::string(ended_status.message());
    actions.Add([listener = listener->second, update = std::move(update)]() mutable {
      (*listener)(std::move(update));
    });
  }
}

void SessionManager::Perform(Actions& actions) {
  for (auto& action : actions.later) std::move(action)();
  actions.later.clear();
}

// ---- Sessions ----------------------------------------------------------------

absl::Status SessionManager::RoomForSession(const std::string& client_id) {
  MutexLock lock(&mu_);
  return RoomForSessionLocked(client_id);
}

absl::Status SessionManager::RoomForSessionLocked(const std::string& client_id) {
  if (shutting_down_) {
    return absl::UnavailableError("the broker is shutting down; retry on another replica");
  }
  if (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
    ++counters_.rejected;
    return WithReason(
        absl::ResourceExhaustedError(
            absl::StrCat("the broker has ", sessions_.size(),
                         " open sessions, its limit "
                         "(BROKER_MAX_SESSIONS); end sessions you no longer need, or retry later")),
        "MAX_SESSIONS");
  }
  auto by_client = open_by_client_.find(client_id);
  if (options_.max_sessions_per_client > 0 && by_client != open_by_client_.end() &&
      by_client->second >= options_.max_sessions_per_client) {
    ++counters_.rejected;
    return WithReason(
        absl::ResourceExhaustedError(absl::StrCat(
            "client \"", client_id, "\" has ", by_client->second,
            " open sessions, its limit (BROKER_MAX_SESSIONS_PER_CLIENT); end sessions you no "
            "longer need, or retry later")),
        "MAX_SESSIONS_PER_CLIENT");
  }
  return absl::OkStatus();
}

void SessionManager::Begin(SessionSpec spec, absl::Time deadline, Callback<SessionInfo> done) {
  if (spec.ttl < absl::ZeroDuration()) {
    std::move(done)(absl::InvalidArgumentError("ttl is negative"));
    return;
  }
  if (spec.ttl > options_.max_ttl) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("ttl ", DurationText(spec.ttl), " is longer than BROKER_SESSION_MAX_TTL (",
                     DurationText(options_.max_ttl),
                     "); renew the session (or hold it with KeepAlive) instead")));
    return;
  }
  if (spec.label.size() > kMaxLabelBytes) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("label is ", spec.label.size(), " bytes; at most ", kMaxLabelBytes)));
    return;
  }
  if (spec.client_id.size() > kMaxClientIdBytes) {
    std::move(done)(absl::InvalidArgumentError(absl::StrCat(
        "x-client-id is ", spec.client_id.size(), " bytes; at most ", kMaxClientIdBytes)));
    return;
  }
  if (spec.ttl == absl::ZeroDuration()) spec.ttl = options_.default_ttl;
  absl::StatusOr<SessionSettings> settings = NormalizeSessionSettings(std::move(spec.settings));
  if (!settings.ok()) {
    std::move(done)(std::move(settings).status());
    return;
  }
  spec.settings = *std::move(settings);
  // Kept for the probe below: `spec` itself moves into `create`.
  SessionSettings probe_settings = spec.settings;
  const std::string client_id = spec.client_id;

  auto create = [this, spec = std::move(spec)]() mutable -> absl::StatusOr<SessionInfo> {
    MutexLock lock(&mu_);
    if (absl::Status room = RoomForSessionLocked(spec.client_id); !room.ok()) return room;
    auto s = std::make_shared<Session>();
    do {
      s->name = NewName();
    } while (sessions_.contains(s->name) || ended_.Contains(s->name));
    s->label = std::move(spec.label);
    s->client_id = std::move(spec.client_id);
    s->base.isolation = spec.isolation;
    s->base.read_only = spec.read_only;
    s->base.settings = std::move(spec.settings);
    s->ttl = spec.ttl;
    const absl::Time now = clock_.Now();
    s->created = now;
    s->max_end = now + options_.max_lifetime;
    sessions_.emplace(s->name, s);
    ++open_by_client_[s->client_id];
    ++counters_.begun;
    RenewLocked(*s, now);
    return InfoLocked(*s);
  };

  if (probe_settings.empty()) {
    std::move(done)(create());
    return;
  }
  // Refuse before the probe takes a connection when the quota is already
  // reached (create() checks again: others may begin meanwhile).
  if (absl::Status room = RoomForSession(client_id); !room.ok()) {
    std::move(done)(std::move(room));
    return;
  }
  // Try the settings once, so that a bad value fails now, with PostgreSQL's
  // own message.
  RunRequest probe;
  probe.op = Op::kBegin;
  probe.deadline = deadline;
  probe.transaction.settings = std::move(probe_settings);
  runner_.RunStep(std::move(probe), [this, create = std::move(create),
                                     done = std::move(done)](RunOutcome begun) mutable {
    if (!begun.results.ok()) {
      std::move(done)(storage::WithPrefix(begun.results.status(), "settings: "));
      return;
    }
    RunRequest rollback;
    rollback.op = Op::kRollback;
    rollback.connection = std::move(begun.connection);
    runner_.RunStep(std::move(rollback), [create = std::move(create), done = std::move(done)](
                                             RunOutcome) mutable { std::move(done)(create()); });
  });
}

absl::StatusOr<SessionInfo> SessionManager::Renew(absl::string_view name, absl::Duration ttl) {
  if (ttl < absl::ZeroDuration()) return absl::InvalidArgumentError("ttl is negative");
  if (ttl > options_.max_ttl) {
    return absl::InvalidArgumentError(absl::StrCat("ttl ", DurationText(ttl),
                                                   " is longer than BROKER_SESSION_MAX_TTL (",
                                                   DurationText(options_.max_ttl), ")"));
  }
  MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> s = FindLocked(name);
  if (!s.ok()) return s.status();
  if (ttl > absl::ZeroDuration()) (*s)->ttl = ttl;
  RenewLocked(**s, clock_.Now());
  return InfoLocked(**s);
}

absl::StatusOr<SessionInfo> SessionManager::Get(absl::string_view name) const {
  MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> s = FindLocked(name);
  if (!s.ok()) return s.status();
  return InfoLocked(**s);
}

absl::StatusOr<SessionManager::Page> SessionManager::List(int page_size,
                                                          absl::string_view page_token,
                                                          absl::string_view client_id) const {
  if (page_size < 0) return absl::InvalidArgumentError("page_size is negative");
  if (page_size == 0) page_size = kDefaultPageSize;
  page_size = std::min(page_size, kMaxPageSize);
  Page page;
  MutexLock lock(&mu_);
  for (auto it = sessions_.upper_bound(page_token); it != sessions_.end(); ++it) {
    const Session& s = *it->second;
    if (!client_id.empty() && s.client_id != client_id) continue;
    if (static_cast<int>(page.sessions.size()) == page_size) {
      page.next_page_token = page.sessions.back().name;
      break;
    }
    page.sessions.push_back(InfoLocked(s));
  }
  if (client_id.empty()) {
    page.total_size = static_cast<int>(sessions_.size());
  } else {
    auto it = open_by_client_.find(client_id);
    page.total_size = it == open_by_client_.end() ? 0 : static_cast<int>(it->second);
  }
  return page;
}

void SessionManager::End(absl::string_view name, Callback<bool> done) {
  Actions actions;
  absl::Status not_found;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(name);
    if (!found.ok()) {
      not_found = found.status();
    } else {
      std::shared_ptr<Session> s = *std::move(found);
      const bool had_tx = s->tx == TxState::kOpen || s->tx == TxState::kBeginning ||
                          (s->running != nullptr && s->running->in_transaction);
      // Answer once the session's connection is on its way back.
      s->end_waiters.push_back(
          [done = std::move(done), had_tx]() mutable { std::move(done)(had_tx); });
      EndLocked(s, EndReason::kClient, actions);
    }
  }
  if (!not_found.ok()) {
    // Outside the lock: the callback may call back into the manager.
    std::move(done)(std::move(not_found));
    return;
  }
  Perform(actions);
}

// ---- Calls -------------------------------------------------------------------

std::shared_ptr<RunningCall> SessionManager::BeginTransaction(absl::string_view name,
                                                              TransactionSpec spec,
                                                              absl::Time deadline,
                                                              Callback<SessionInfo> done) {
  auto call = std::make_shared<Call>(this, Call::Kind::kBeginTx, deadline);
  call->tx_spec = spec;
  call->on_info = std::move(done);
  Submit(name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Commit(absl::string_view name, absl::Time deadline,
                                                    Callback<absl::Time> done) {
  auto call = std::make_shared<Call>(this, Call::Kind::kCommit, deadline);
  call->on_commit = std::move(done);
  Submit(name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Rollback(absl::string_view name, absl::Time deadline,
                                                      Callback<bool> done) {
  auto call = std::make_shared<Call>(this, Call::Kind::kRollback, deadline);
  call->on_rollback = std::move(done);
  Submit(name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Run(absl::string_view name, RunRequest request,
                                                 StatementRunner::Callback done) {
  // Bad requests fail before they reach the session: they must not abort its
  // transaction.
  if (absl::Status valid = StatementRunner::Validate(request); !valid.ok()) {
    std::move(done)(std::move(valid));
    return nullptr;
  }
  auto call = std::make_shared<Call>(this, Call::Kind::kRun, request.deadline);
  call->request = std::move(request);
  call->on_run = std::move(done);
  Submit(name, call);
  return call;
}

void SessionManager::Submit(absl::string_view name, std::shared_ptr<Call> call) {
  Actions actions;
  absl::Status rejected;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(name);
    if (!found.ok()) {
      rejected = found.status();
    } else {
      std::shared_ptr<Session> s = *std::move(found);
      call->session = s;
      RenewLocked(*s, clock_.Now());
      if (s->running == nullptr && s->queue.empty()) {
        StartLocked(s, call, actions);
      } else if (static_cast<int>(s->queue.size()) >= options_.max_queued_calls) {
        rejected = WithReason(
            absl::ResourceExhaustedError(absl::StrCat(
                "session ", s->name, " already has ", s->queue.size(),
                " calls waiting behind the one running (BROKER_SESSION_MAX_QUEUED_CALLS); calls "
                "on one session run one at a time: wait for earlier calls to finish")),
            "SESSION_QUEUE_FULL");
      } else {
        s->queue.push_back(call);
        if (call->deadline != absl::InfiniteFuture()) {
          std::weak_ptr<Call> weak = call;
          call->queue_timer = timers_.Schedule(call->deadline, [weak] {
            if (std::shared_ptr<Call> c = weak.lock()) {
              c->Abort(absl::DeadlineExceededError(
                  "the call's deadline passed while it waited for earlier calls of its session "
                  "to finish; nothing of it ran"));
            }
          });
        }
      }
    }
  }
  if (!rejected.ok()) {
    call->state = Call::State::kDone;
    call->Fail(std::move(rejected));
    return;
  }
  Perform(actions);
}

void SessionManager::StartLocked(const std::shared_ptr<Session>& s, std::shared_ptr<Call> call,
                                 Actions& actions) {
  call->state = Call::State::kRunning;
  if (call->queue_timer != 0) {
    timers_.Cancel(call->queue_timer);
    call->queue_timer = 0;
  }
  // Completes the call without database work, then moves on.
  // (The caller of finish_now moves on with StartNextLocked.)
  auto finish_now = [&](absl::AnyInvocable<void() &&> deliver) {
    call->state = Call::State::kDone;
    actions.Add(std::move(deliver));
  };
  RunRequest step;
  switch (call->kind) {
    case Call::Kind::kRun:
      if (s->base.read_only) {
        if (absl::Status allowed = ReadOnlySessionMayRun(call->request); !allowed.ok()) {
          finish_now([call, allowed]() mutable { call->Fail(Detached(allowed)); });
          StartNextLocked(s, actions);
          return;
        }
      }
      if (s->tx == TxState::kAborted) {
        finish_now([call, why = Detached(s->tx_abort)]() mutable { call->Fail(std::move(why)); });
        StartNextLocked(s, actions);
        return;
      }
      step = std::move(call->request);
      if (s->tx == TxState::kOpen) {
        step.op = Op::kInTransaction;
        step.connection = std::move(s->conn);
        step.reset_on_release = s->tx_dirty;
        call->in_transaction = true;
      } else {
        step.transaction.settings = s->base.settings;
        step.transaction.read_only = s->base.read_only;
        // One statement sees one snapshot whatever the level.
        if (step.op == Op::kBatch) step.transaction.isolation = s->base.isolation;
      }
      break;
    case Call::Kind::kBeginTx:
      if (s->tx == TxState::kOpen) {
        finish_now([call, since = s->tx_start] {
          call->Fail(absl::FailedPreconditionError(
              absl::StrCat("a transaction is already open in this session (since ", TimeText(since),
                           "); Commit or Rollback it first")));
        });
        StartNextLocked(s, actions);
        return;
      }
      if (s->tx == TxState::kAborted) {
        finish_now([call, why = std::string(s->tx_abort.message())] {
          call->Fail(absl::FailedPreconditionError(absl::StrCat(
              "the session's previous transaction was rolled back by the broker and not yet "
              "acknowledged; call Rollback before beginning another (",
              why, ")")));
        });
        StartNextLocked(s, actions);
        return;
      }
      step.op = Op::kBegin;
      step.deadline = call->deadline;
      step.transaction = s->base;
      if (call->tx_spec.isolation != Isolation::kDefault) {
        step.transaction.isolation = call->tx_spec.isolation;
      }
      step.transaction.read_only = s->base.read_only || call->tx_spec.read_only;
      step.transaction.deferrable = call->tx_spec.deferrable;
      s->tx = TxState::kBeginning;
      break;
    case Call::Kind::kCommit:
      if (s->tx == TxState::kNone) {
        finish_now([call] {
          call->Fail(absl::FailedPreconditionError(
              "no transaction is open in this session: Commit ends a transaction begun with "
              "BeginTransaction (outside one, every statement commits by itself)"));
        });
        StartNextLocked(s, actions);
        return;
      }
      if (s->tx == TxState::kAborted) {
        absl::Status why = Fresh(s->tx_abort, s->tx_abort.code(), "nothing was committed: ");
        s->tx = TxState::kNone;
        s->tx_abort = absl::OkStatus();
        finish_now([call, why = std::move(why)]() mutable { call->Fail(std::move(why)); });
        StartNextLocked(s, actions);
        return;
      }
      step.op = Op::kCommit;
      step.deadline = call->deadline;
      step.connection = std::move(s->conn);
      step.reset_on_release = s->tx_dirty;
      break;
    case Call::Kind::kRollback:
      if (s->tx == TxState::kNone) {
        // Like PostgreSQL's ROLLBACK outside a transaction: nothing to do,
        // and not an error, so a client may always roll back on its way out
        // (also after a Commit that failed).
        finish_now([call] { std::move(call->on_rollback)(false); });
        StartNextLocked(s, actions);
        return;
      }
      if (s->tx == TxState::kAborted) {
        s->tx = TxState::kNone;
        s->tx_abort = absl::OkStatus();
        finish_now([call] { std::move(call->on_rollback)(false); });
        StartNextLocked(s, actions);
        return;
      }
      step.op = Op::kRollback;
      step.connection = std::move(s->conn);
      step.reset_on_release = s->tx_dirty;
      break;
  }
  // The session's owner, for per-client pool occupancy (also for steps that
  // carry no caller's request: BEGIN, COMMIT, ROLLBACK).
  step.client_id = s->client_id;
  s->running = call;
  ++steps_in_flight_;
  RescheduleLocked(*s);  // a running statement is not idle
  actions.Add([this, s, call, step = std::move(step)]() mutable {
    std::shared_ptr<RunningCall> running = runner_.RunStep(
        std::move(step),
        [this, s, call](RunOutcome outcome) { OnStepDone(s, call, std::move(outcome)); });
    absl::Status stop;
    {
      MutexLock lock(&mu_);
      if (call->state != Call::State::kRunning) return;
      call->step = running;
      stop = std::exchange(call->stop, absl::OkStatus());
    }
    if (!stop.ok() && running != nullptr) {
      if (stop.code() == absl::StatusCode::kCancelled) {
        running->Cancel();
      } else {
        running->Abort(std::move(stop));
      }
    }
  });
}

void SessionManager::StartNextLocked(const std::shared_ptr<Session>& s, Actions& actions) {
  if (s->running != nullptr || s->queue.empty() || s->ended) return;
  std::shared_ptr<Call> next = std::move(s->queue.front());
  s->queue.pop_front();
  StartLocked(s, std::move(next), actions);
}

void SessionManager::OnStepDone(std::shared_ptr<Session> s, std::shared_ptr<Call> call,
                                RunOutcome outcome) {
  Actions actions;
  absl::StatusOr<StatementRunner::Results> results = std::move(outcome.results);
  PooledConnection conn = std::move(outcome.connection);
  SessionInfo info;
  absl::Time commit_time;
  {
    MutexLock lock(&mu_);
    --steps_in_flight_;
    steps_done_.SignalAll();
    call->state = Call::State::kDone;
    call->step = nullptr;
    const absl::Time now = clock_.Now();
    // The session's lease or lifetime ran out while the call ran, and the
    // reaper has not got to it yet: it is over (FindLocked already says so),
    // and this completion must not renew it. End it here, as the reaper
    // would have, while the call still counts as running on it, so that what
    // follows treats the call as one its session ended under.
    if (!s->ended) {
      if (const std::optional<EndReason> lapsed = LapsedLocked(*s, now); lapsed.has_value()) {
        EndLocked(s, *lapsed, actions);
      }
    }
    s->running = nullptr;
    // A transaction that goes on only if the session and its deadlines allow.
    int discards = 0;
    auto discard = [&](bool dirty) {
      ++discards;
      actions.Add([this, conn = std::move(conn), dirty]() mutable {
        DiscardTransaction(std::move(conn), dirty);
      });
    };
    if (s->ended) {
      if (conn) {
        discard(s->tx_dirty || outcome.changed_session_state);
        // The work is rolled back with the session: it must not look done.
        if (results.ok()) {
          const EndedSession* ended = ended_.Find(s->name, now);
          results =
              ended == nullptr
                  ? absl::AbortedError("the session ended; its transaction was rolled back")
                  : Fresh(EndedSessions::StatusOf(s->name, *ended), absl::StatusCode::kAborted,
                          "the session ended while this call was running, so its "
                          "transaction was rolled back: ");
        }
      }
      s->tx = TxState::kNone;
      for (auto& w : s->end_waiters) actions.Add(std::move(w));
      s->end_waiters.clear();
    } else {
      switch (call->kind) {
        case Call::Kind::kRun:
          if (!call->in_transaction) break;
          if (!s->pending_kill.ok()) {
            // A transaction deadline fired while the statement ran.
            if (conn) discard(s->tx_dirty || outcome.changed_session_state);
            s->tx = TxState::kAborted;
            s->tx_abort = std::exchange(s->pending_kill, absl::OkStatus());
            if (results.ok()) results = Detached(s->tx_abort);
          } else if (results.ok()) {
            s->conn = std::move(conn);
            s->tx_dirty = s->tx_dirty || outcome.changed_session_state;
            s->tx_idle_since = now;
          } else {
            // PostgreSQL aborted the transaction; the runner rolled it back.
            ++counters_.transactions_failed;
            s->tx = TxState::kAborted;
            s->tx_dirty = false;
            s->tx_abort = WithReason(
                absl::AbortedError(absl::StrCat(
                    "the transaction was rolled back at ", TimeText(now),
                    " because a statement in it failed (",
                    absl::StatusCodeToString(results.status().code()), ": ",
                    results.status().message(),
                    "); nothing of it was committed; call Rollback, then retry the transaction")),
                "TX_STATEMENT_FAILED");
          }
          break;
        case Call::Kind::kBeginTx:
          if (results.ok()) {
            s->tx = TxState::kOpen;
            s->conn = std::move(conn);
            s->tx_start = now;
            s->tx_idle_since = now;
            s->tx_dirty = false;
            s->pending_kill = absl::OkStatus();
            ++counters_.transactions_begun;
          } else {
            s->tx = TxState::kNone;
          }
          break;
        case Call::Kind::kCommit:
          s->tx = TxState::kNone;
          s->tx_dirty = false;
          s->pending_kill = absl::OkStatus();
          if (results.ok()) {
            ++counters_.transactions_committed;
            commit_time = now;
          } else {
            ++counters_.transactions_failed;
          }
          break;
        case Call::Kind::kRollback:
          s->tx = TxState::kNone;
          s->tx_dirty = false;
          s->pending_kill = absl::OkStatus();
          ++counters_.transactions_rolled_back;
          if (!results.ok()) {
            // ROLLBACK fails only on a lost connection, which the runner
            // discards, and PostgreSQL rolls back the transaction of a closed
            // connection: what the client asked for happened.
            spdlog::warn("session {} ({}): ROLLBACK failed, the connection is discarded: {}",
                         s->name, s->label, results.status().ToString());
            results = StatementRunner::Results{};
          }
          break;
      }
      if (s->orphaned) {
        // Its stream went away while the call ran: the grace runs from now.
        s->lease_end = std::min(now + options_.orphan_grace, s->max_end);
        RescheduleLocked(*s);
      } else {
        RenewLocked(*s, now);
      }
      if (call->kind == Call::Kind::kBeginTx && results.ok()) info = InfoLocked(*s);
      StartNextLocked(s, actions);
    }
    steps_in_flight_ += discards;
  }
  if (!results.ok()) {
    call->Fail(std::move(results).status());
  } else {
    switch (call->kind) {
      case Call::Kind::kRun:
        std::move(call->on_run)(std::move(results));
        break;
      case Call::Kind::kBeginTx:
        std::move(call->on_info)(std::move(info));
        break;
      case Call::Kind::kCommit:
        std::move(call->on_commit)(commit_time);
        break;
      case Call::Kind::kRollback:
        std::move(call->on_rollback)(true);
        break;
    }
  }
  Perform(actions);
}

// ---- KeepAlive streams ---------------------------------------------------------

SessionManager::StreamId SessionManager::OpenStream(StreamListener listener) {
  MutexLock lock(&mu_);
  const StreamId id = holds_.Open();
  listeners_.emplace(id, std::make_shared<StreamListener>(std::move(listener)));
  return id;
}

SessionManager::StreamUpdate SessionManager::UpdateLocked(const Session& s,
                                                          StreamUpdate::State state) const {
  StreamUpdate update;
  update.name = s.name;
  update.state = state;
  update.expire_time = ExpireTimeLocked(s);
  return update;
}

std::vector<SessionManager::StreamUpdate> SessionManager::Hold(
    StreamId stream, const std::vector<std::string>& names) {
  std::vector<StreamUpdate> out;
  MutexLock lock(&mu_);
  const bool open = holds_.IsOpen(stream);
  for (const std::string& name : names) {
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(name);
    if (!found.ok() || !open) {
      StreamUpdate update;
      update.name = name;
      const bool ended = found.status().code() == absl::StatusCode::kFailedPrecondition;
      update.state = ended ? StreamUpdate::State::kEnded : StreamUpdate::State::kNotFound;
      update.reason = std::string(found.status().message());
      out.push_back(std::move(update));
      continue;
    }
    Session& s = **found;
    holds_.Hold(stream, s.name);
    RenewLocked(s, clock_.Now());
    out.push_back(UpdateLocked(s, StreamUpdate::State::kHeld));
  }
  return out;
}

std::vector<SessionManager::StreamUpdate> SessionManager::Release(
    StreamId stream, const std::vector<std::string>& names) {
  std::vector<StreamUpdate> out;
  MutexLock lock(&mu_);
  for (const std::string& name : names) {
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(name);
    if (!found.ok()) {
      StreamUpdate update;
      update.name = name;
      const bool ended = found.status().code() == absl::StatusCode::kFailedPrecondition;
      update.state = ended ? StreamUpdate::State::kEnded : StreamUpdate::State::kNotFound;
      update.reason = std::string(found.status().message());
      out.push_back(std::move(update));
      continue;
    }
    std::shared_ptr<Session> s = *std::move(found);
    holds_.Release(stream, s->name);
    // The lease runs on from now.
    RenewLocked(*s, clock_.Now());
    out.push_back(UpdateLocked(*s, StreamUpdate::State::kReleased));
  }
  return out;
}

void SessionManager::CloseStream(StreamId stream) {
  MutexLock lock(&mu_);
  if (listeners_.erase(stream) == 0) return;
  const absl::Time now = clock_.Now();
  for (const std::string& name : holds_.Close(stream)) {
    auto found = sessions_.find(name);
    if (found == sessions_.end()) continue;
    Session& s = *found->second;
    s.lease_end = std::min(now + options_.orphan_grace, s.max_end);
    s.orphaned = true;
    s.orphaned_at = now;
    RescheduleLocked(s);
  }
}

// ---- Shutdown and stats ------------------------------------------------------------

bool SessionManager::Shutdown(absl::Time deadline) {
  Actions actions;
  {
    MutexLock lock(&mu_);
    shutting_down_ = true;
    std::vector<std::shared_ptr<Session>> all;
    all.reserve(sessions_.size());
    for (auto& [name, s] : sessions_) all.push_back(s);
    for (const std::shared_ptr<Session>& s : all) EndLocked(s, EndReason::kShutdown, actions);
  }
  Perform(actions);
  MutexLock lock(&mu_);
  while (steps_in_flight_ > 0) {
    if (!steps_done_.WaitUntil(&mu_, deadline)) return false;
  }
  return true;
}

SessionStats SessionManager::Stats() const {
  MutexLock lock(&mu_);
  SessionStats out = counters_;
  out.open = static_cast<int64_t>(sessions_.size());
  out.held_by_stream = static_cast<int64_t>(holds_.held_sessions());
  for (const auto& [name, s] : sessions_) {
    // Holding a pinned connection: not while BeginTransaction waits for one
    // (under a full pool, most of them would).
    if (s->tx == TxState::kOpen) ++out.in_transaction;
    out.queued_calls += static_cast<int64_t>(s->queue.size());
  }
  out.open_by_client.reserve(open_by_client_.size());
  for (const auto& [client, n] : open_by_client_) out.open_by_client.emplace(client, n);
  return out;
}

size_t SessionManager::reaper_entries() const {
  MutexLock lock(&mu_);
  return deadlines_.size();
}

}  // namespace sessionbroker::core
