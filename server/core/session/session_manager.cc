#include "server/core/session/session_manager.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <list>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/core/base/escape.h"
#include "server/core/base/log_fields.h"
#include "server/core/session/session_call.h"
#include "server/core/session/session_status.h"
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
using ConnectionFate = TransactionMachine::ConnectionFate;
using Reply = TransactionMachine::Reply;

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxLabelBytes = 256;
constexpr size_t kMaxClientIdBytes = 256;
// Reaped per timer run, so that a mass expiry cannot hold the lock for long;
// the rest follow at once.
constexpr int kReapBatch = 4096;

}  // namespace

// ---- Session and Call --------------------------------------------------------

struct SessionManager::Session {
  std::string name;
  std::string label;
  std::string client_id;
  std::string database_role;
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

  Transaction tx;         // its state; the rules are TransactionMachine's
  PooledConnection conn;  // tx kOpen with no call running: the pinned connection

  std::shared_ptr<Call> running;
  std::list<std::shared_ptr<Call>> queue;
  // Told once the session's connection is back in the pool after it ended.
  std::vector<absl::AnyInvocable<void() &&>> end_waiters;

  absl::Time deadline = absl::InfiniteFuture();  // its key in deadlines_
};

// One call on a session: queued, running (a runner step), or done. What it
// is (kind, inputs, callback) is its SessionCall; its progress is guarded by
// the manager's lock.
class SessionManager::Call final : public RunningCall {
 public:
  enum class State { kQueued, kRunning, kDone };

  Call(SessionManager* manager, SessionCall what)
      : manager_(manager), what(std::move(what)), deadline(DeadlineOf(this->what)) {}

  void Cancel() override { Stop(absl::CancelledError("the call was cancelled")); }
  void Abort(absl::Status why) override { Stop(std::move(why)); }

  // Completes the call with an error (any kind).
  void Fail(absl::Status status) { FailCall(what, std::move(status)); }
  // Completes the call as TransactionMachine::Answer says.
  void Answer(absl::Status status) {
    if (!status.ok()) {
      Fail(std::move(status));
      return;
    }
    if (RollbackCall* rollback = std::get_if<RollbackCall>(&what)) {
      std::move(rollback->done)(false);
      return;
    }
    Fail(absl::InternalError("the call was answered without a result"));
  }

  SessionManager* const manager_;
  // The request of a RunCall moves out when its step starts.
  SessionCall what;
  const absl::Time deadline;

  // Guarded by manager_->mu_.
  State state = State::kQueued;
  bool in_transaction = false;  // a RunCall on the pinned connection
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
      machine_(TransactionMachine::Limits{options_.tx_idle_timeout, options_.tx_max_duration}),
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
    const Caller& caller, absl::string_view name) const {
  if (name.empty()) return absl::InvalidArgumentError("session is empty: name a session");
  auto it = sessions_.find(name);
  if (it != sessions_.end() && !caller.Owns(it->second->client_id)) return NotFound(name);
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
    if (!caller.Owns(ended->client_id)) return NotFound(name);
    return EndedSessions::StatusOf(name, *ended);
  }
  return NotFound(name);
}

absl::Status SessionManager::NotFound(absl::string_view name) const {
  return WithReason(absl::NotFoundError(
                        absl::StrCat("session \"", Abbreviated(name),
                                     "\" not found: it never existed here, or it ended more than ",
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
  info.in_transaction = s.tx.state == TxState::kOpen || s.tx.state == TxState::kAborted;
  // Aborted by the broker (awaiting Rollback), or by PostgreSQL after a
  // failed statement in a transaction with savepoints (awaiting ROLLBACK TO).
  info.transaction_aborted =
      s.tx.state == TxState::kAborted || (s.tx.state == TxState::kOpen && s.tx.failed);
  if (info.transaction_aborted) info.abort_reason = std::string(s.tx.abort.message());
  if (info.in_transaction) info.transaction_start_time = s.tx.start;
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
  next = std::min(next, machine_.NextDeadline(s.tx, s.running != nullptr));
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
      } else if (std::optional<TransactionMachine::DueKill> kill =
                     machine_.KillDue(s->tx, s->running != nullptr, now);
                 kill.has_value()) {
        ++(kill->kind == TransactionMachine::KillKind::kMaxDuration
               ? counters_.tx_killed_max_duration
               : counters_.tx_killed_idle);
        KillTransactionLocked(s, std::move(kill->why), actions);
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
  spdlog::warn("session {} label={}: {}", s->name, Quoted(s->label), std::string(why.message()));
  TransactionMachine::KillPlan kill = machine_.Kill(s->tx, std::move(why), s->running != nullptr);
  if (kill.abort_running_call) {
    std::shared_ptr<Call> call = s->running;
    actions.Add(
        [call, why = std::move(kill.abort_with)]() mutable { call->Abort(std::move(why)); });
  }
  if (kill.discard_connection) {
    ++steps_in_flight_;
    actions.Add([this, conn = std::move(s->conn), dirty = kill.reset]() mutable {
      DiscardTransaction(std::move(conn), dirty);
    });
  }
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
  EndedSession ended{reason, now, EndDetail(*s, reason, now), s->client_id};
  const absl::Status ended_status = EndedSessions::StatusOf(s->name, ended);
  const TransactionMachine::EndPlan tx_end = machine_.End(
      s->tx, s->running != nullptr, s->running != nullptr && s->running->in_transaction);
  if (reason != EndReason::kClient) {
    spdlog::info("session {} label={} ended: {}{}", s->name, Quoted(s->label), ended.detail,
                 tx_end.had_transaction ? "; its open transaction is rolled back" : "");
    if (tx_end.count_kill) ++counters_.tx_killed_session_end;
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
  } else if (tx_end.discard_connection) {
    ++steps_in_flight_;
    std::vector<absl::AnyInvocable<void()&&>> waiters = std::move(s->end_waiters);
    actions.Add([this, conn = std::move(s->conn), dirty = tx_end.reset,
                 waiters = std::move(waiters)]() mutable {
      DiscardTransaction(std::move(conn), dirty);
      // The rollback is on its way; the waiters (EndSession) need not wait
      // for its round trip: the session is gone and its transaction can no
      // longer commit.
      for (auto& w : waiters) std::move(w)();
    });
  }
  if (s->running == nullptr) {
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
  const int open = by_client == open_by_client_.end() ? 0 : static_cast<int>(by_client->second);
  const int own_cap = options_.shares != nullptr ? options_.shares->QuotaFor(client_id).max_sessions
                                                 : options_.max_sessions_per_client;
  if (own_cap > 0 && open >= own_cap) {
    ++counters_.rejected;
    return WithReason(
        absl::ResourceExhaustedError(absl::StrCat(
            ClientLabel(client_id), " has ", open, " open sessions, its max_sessions quota of ",
            own_cap,
            " (BROKER_MAX_SESSIONS_PER_CLIENT or its clients-file entry); end sessions you no "
            "longer need, or retry later")),
        "MAX_SESSIONS_PER_CLIENT");
  }
  if (options_.max_client_share_percent < 100) {
    const int share = std::max<int64_t>(
        1, int64_t{options_.max_sessions} * options_.max_client_share_percent / 100);
    if (open >= share) {
      ++counters_.rejected;
      return WithReason(
          absl::ResourceExhaustedError(absl::StrCat(
              ClientLabel(client_id), " has ", open,
              " open sessions, its share of the broker's sessions (",
              options_.max_client_share_percent, "% of BROKER_MAX_SESSIONS=", options_.max_sessions,
              ", BROKER_CLIENT_SESSION_SHARE_PERCENT), so that no "
              "client can take every session; end sessions you no longer need, or retry later")),
          "MAX_SESSIONS_PER_CLIENT");
    }
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
  const std::string database_role = spec.database_role;

  auto create = [this, spec = std::move(spec)]() mutable -> absl::StatusOr<SessionInfo> {
    MutexLock lock(&mu_);
    if (absl::Status room = RoomForSessionLocked(spec.client_id); !room.ok()) return room;
    auto s = std::make_shared<Session>();
    do {
      s->name = NewName();
    } while (sessions_.contains(s->name) || ended_.Contains(s->name));
    s->label = std::move(spec.label);
    s->client_id = std::move(spec.client_id);
    s->database_role = std::move(spec.database_role);
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
  probe.client_id = client_id;
  probe.database_role = database_role;
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

absl::StatusOr<SessionInfo> SessionManager::Renew(const Caller& caller, absl::string_view name,
                                                  absl::Duration ttl) {
  if (ttl < absl::ZeroDuration()) return absl::InvalidArgumentError("ttl is negative");
  if (ttl > options_.max_ttl) {
    return absl::InvalidArgumentError(absl::StrCat("ttl ", DurationText(ttl),
                                                   " is longer than BROKER_SESSION_MAX_TTL (",
                                                   DurationText(options_.max_ttl), ")"));
  }
  MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> s = FindLocked(caller, name);
  if (!s.ok()) return s.status();
  if (ttl > absl::ZeroDuration()) (*s)->ttl = ttl;
  RenewLocked(**s, clock_.Now());
  return InfoLocked(**s);
}

absl::StatusOr<SessionInfo> SessionManager::Get(const Caller& caller,
                                                absl::string_view name) const {
  MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<Session>> s = FindLocked(caller, name);
  if (!s.ok()) return s.status();
  return InfoLocked(**s);
}

absl::StatusOr<SessionManager::Page> SessionManager::List(const Caller& caller, int page_size,
                                                          absl::string_view page_token,
                                                          absl::string_view client_id) const {
  // A caller that does not see all is shown its own sessions, whatever
  // filter it asked for.
  if (!caller.sees_all) client_id = caller.client_id;
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

void SessionManager::End(const Caller& caller, absl::string_view name, Callback<bool> done) {
  Actions actions;
  absl::Status not_found;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(caller, name);
    if (!found.ok()) {
      not_found = found.status();
    } else {
      std::shared_ptr<Session> s = *std::move(found);
      const bool had_tx = TransactionMachine::HasTransaction(
          s->tx, s->running != nullptr && s->running->in_transaction);
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

std::shared_ptr<RunningCall> SessionManager::BeginTransaction(const Caller& caller,
                                                              absl::string_view name,
                                                              TransactionSpec spec,
                                                              absl::Time deadline,
                                                              Callback<SessionInfo> done) {
  auto call = std::make_shared<Call>(this, BeginTransactionCall{spec, deadline, std::move(done)});
  Submit(caller, name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Commit(const Caller& caller, absl::string_view name,
                                                    absl::Time deadline,
                                                    Callback<absl::Time> done) {
  auto call = std::make_shared<Call>(this, CommitCall{deadline, std::move(done)});
  Submit(caller, name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Rollback(const Caller& caller, absl::string_view name,
                                                      absl::Time deadline, Callback<bool> done) {
  auto call = std::make_shared<Call>(this, RollbackCall{deadline, std::move(done)});
  Submit(caller, name, call);
  return call;
}

std::shared_ptr<RunningCall> SessionManager::Run(const Caller& caller, absl::string_view name,
                                                 RunRequest request,
                                                 StatementRunner::Callback done) {
  // Bad requests fail before they reach the session: they must not abort its
  // transaction.
  if (absl::Status valid = runner_.Validate(request, /*in_session=*/true); !valid.ok()) {
    std::move(done)(std::move(valid));
    return nullptr;
  }
  auto call = std::make_shared<Call>(this, RunCall{std::move(request), std::move(done)});
  Submit(caller, name, call);
  return call;
}

void SessionManager::Submit(const Caller& caller, absl::string_view name,
                            std::shared_ptr<Call> call) {
  Actions actions;
  absl::Status rejected;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(caller, name);
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
  TransactionMachine::Plan plan = machine_.PlanCall(s->tx, s->base, call->what);
  if (TransactionMachine::Answer* answer = std::get_if<TransactionMachine::Answer>(&plan)) {
    // Completes the call without database work, then moves on.
    call->state = Call::State::kDone;
    actions.Add(
        [call, status = std::move(answer->status)]() mutable { call->Answer(std::move(status)); });
    StartNextLocked(s, actions);
    return;
  }
  TransactionMachine::Step& planned = std::get<TransactionMachine::Step>(plan);
  RunRequest step = std::move(planned.request);
  if (planned.on_pinned_connection) step.connection = std::move(s->conn);
  call->in_transaction = planned.in_transaction;
  // The session's owner, for per-client pool occupancy (also for steps that
  // carry no caller's request: BEGIN, COMMIT, ROLLBACK).
  step.client_id = s->client_id;
  step.database_role = s->database_role;
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
  TransactionMachine::Verdict verdict;
  SessionInfo info;
  absl::Time now;
  {
    MutexLock lock(&mu_);
    --steps_in_flight_;
    steps_done_.SignalAll();
    call->state = Call::State::kDone;
    call->step = nullptr;
    now = clock_.Now();
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
    TransactionMachine::StepReport step;
    step.in_transaction = call->in_transaction;
    step.connection = static_cast<bool>(conn);
    step.changed_session_state = outcome.changed_session_state;
    if (s->ended) {
      const EndedSession* ended = ended_.Find(s->name, now);
      const absl::Status ended_status =
          ended == nullptr ? absl::OkStatus() : EndedSessions::StatusOf(s->name, *ended);
      verdict = machine_.ApplyEnded(s->tx, results.status(), step,
                                    ended == nullptr ? nullptr : &ended_status);
    } else {
      verdict = machine_.Apply(s->tx, call->what, results.status(), step, now);
    }
    // Before anything else may start on the session: the next call may need
    // the pinned connection.
    switch (verdict.connection) {
      case ConnectionFate::kNone:
        break;
      case ConnectionFate::kKeep:
        s->conn = std::move(conn);
        break;
      case ConnectionFate::kDiscard:
        ++steps_in_flight_;
        actions.Add([this, conn = std::move(conn), dirty = verdict.reset]() mutable {
          DiscardTransaction(std::move(conn), dirty);
        });
        break;
    }
    if (s->ended) {
      for (auto& w : s->end_waiters) actions.Add(std::move(w));
      s->end_waiters.clear();
    } else {
      switch (verdict.event) {
        case TransactionMachine::Event::kNone:
          break;
        case TransactionMachine::Event::kBegun:
          ++counters_.transactions_begun;
          break;
        case TransactionMachine::Event::kCommitted:
          ++counters_.transactions_committed;
          break;
        case TransactionMachine::Event::kRolledBack:
          ++counters_.transactions_rolled_back;
          break;
        case TransactionMachine::Event::kFailed:
          ++counters_.transactions_failed;
          break;
      }
      if (std::holds_alternative<RollbackCall>(call->what) && !results.ok()) {
        spdlog::warn("session {} label={}: ROLLBACK failed, the connection is discarded: {}",
                     s->name, Quoted(s->label), results.status().ToString());
      }
      if (s->orphaned) {
        // Its stream went away while the call ran: the grace runs from now.
        s->lease_end = std::min(now + options_.orphan_grace, s->max_end);
        RescheduleLocked(*s);
      } else {
        RenewLocked(*s, now);
      }
      if (std::holds_alternative<BeginTransactionCall>(call->what) && results.ok()) {
        info = InfoLocked(*s);
      }
      StartNextLocked(s, actions);
    }
  }
  if (verdict.reply == Reply::kError) {
    call->Fail(std::move(verdict.error));
  } else if (verdict.reply == Reply::kStepResult && !results.ok()) {
    call->Fail(std::move(results).status());
  } else {
    std::visit(
        [&](auto& kind) {
          using Kind = std::decay_t<decltype(kind)>;
          if constexpr (std::is_same_v<Kind, RunCall>) {
            std::move(kind.done)(std::move(results));
          } else if constexpr (std::is_same_v<Kind, BeginTransactionCall>) {
            std::move(kind.done)(std::move(info));
          } else if constexpr (std::is_same_v<Kind, CommitCall>) {
            std::move(kind.done)(now);
          } else {
            std::move(kind.done)(true);
          }
        },
        call->what);
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
    const Caller& caller, StreamId stream, const std::vector<std::string>& names) {
  std::vector<StreamUpdate> out;
  MutexLock lock(&mu_);
  const bool open = holds_.IsOpen(stream);
  for (const std::string& name : names) {
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(caller, name);
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
    const Caller& caller, StreamId stream, const std::vector<std::string>& names) {
  std::vector<StreamUpdate> out;
  MutexLock lock(&mu_);
  for (const std::string& name : names) {
    absl::StatusOr<std::shared_ptr<Session>> found = FindLocked(caller, name);
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
    if (s->tx.state == TxState::kOpen) ++out.in_transaction;
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
