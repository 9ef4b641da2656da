// SessionManager: logical sessions (leases) and their transactions.
//
// A session is a lease with a deadline, not a connection: it holds a pooled
// connection only while it has a transaction open, so thousands of sessions
// share a few connections. What the manager guarantees, whatever a client
// does:
//
//  * Leases: a session ends when its lease (expire_time = last renewal + ttl)
//    passes. Every call on the session (when it arrives and when it
//    completes), RenewSession (which never waits behind the session's
//    calls), and a KeepAlive stream holding it renew the lease; BROKER_SESSION_MAX_LIFETIME
//    after it began it ends regardless. When the last stream holding a session goes away, the
//    session ends after the orphan grace unless renewed or held again.
//  * Transactions: BeginTransaction pins a connection (with the session's
//    isolation, read-only flag and settings); every statement of the session
//    runs there until Commit or Rollback. A transaction idle (no statement
//    running) for tx_idle_timeout, or open for tx_max_duration, is rolled
//    back and its connection returned; so is a transaction whose statement
//    failed (PostgreSQL has aborted it anyway). The session then reports the
//    transaction as aborted, with the reason, until Rollback (or Commit,
//    which fails with ABORTED) acknowledges it.
//  * Outside a transaction a statement runs on any pooled connection; the
//    session's settings and read-only flag apply to it alone (as a
//    one-statement transaction with SET LOCAL), never to other callers.
//  * Calls on one session run one at a time in arrival order; at most
//    max_queued_calls wait (RESOURCE_EXHAUSTED beyond). A queued call keeps
//    its own deadline and can be cancelled.
//  * A statement still running when its session ends or its transaction
//    reaches tx_max_duration is cancelled on the server.
//  * Errors: unknown session NOT_FOUND; a session that ended (and is still
//    remembered) FAILED_PRECONDITION saying when and why; a transaction the
//    broker rolled back ABORTED saying which deadline fired. Those statuses
//    carry a machine-readable reason (kSessionReasonPayloadUrl).
//
// The reaper keeps the sessions ordered by their next deadline and arms one
// timer (a RearmingTimer) for the earliest, so its cost does not grow with
// idle sessions. Everything is timed with the injected Clock.
//
// The rules of a session's transaction live in TransactionMachine (pure, no
// locks); ended sessions in EndedSessions; KeepAlive holds in StreamHolds.
// The manager keeps the books under its one lock and does what they decide
// after releasing it.
//
// Thread-safe. Callbacks run inline (for calls that need no database work) or
// on the pool's executor; they must not block. The runner, timers and clock
// must outlive the manager; call Shutdown() before destroying it.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_SESSION_MANAGER_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_SESSION_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"
#include "server/core/base/rearming_timer.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/client_shares.h"
#include "server/core/session/ended_sessions.h"
#include "server/core/session/session_stats.h"
#include "server/core/session/session_types.h"
#include "server/core/session/stream_holds.h"
#include "server/core/session/transaction_machine.h"
#include "server/core/sql/session_settings.h"

namespace sessionbroker::core {

struct SessionOptions {
  absl::Duration default_ttl = absl::Seconds(60);
  absl::Duration max_ttl = absl::Hours(1);
  absl::Duration max_lifetime = absl::Hours(24);
  absl::Duration tx_idle_timeout = absl::Seconds(10);
  absl::Duration tx_max_duration = absl::Minutes(5);
  absl::Duration orphan_grace = absl::Seconds(5);
  int max_sessions = 10000;
  int max_sessions_per_client = 5000;
  // No client may hold more than this percentage of max_sessions (at least
  // one session), whatever its own cap: so one or two clients cannot take
  // every session (BROKER_CLIENT_SESSION_SHARE_PERCENT; 100: no such bound).
  int max_client_share_percent = 100;
  // Per-client caps (ClientQuota::max_sessions, 0 = none) replace
  // max_sessions_per_client when set (a clients file); read at each Begin.
  std::shared_ptr<const ClientShares> shares;
  int max_queued_calls = 16;
  // Ended sessions remembered (to answer "ended, because ..." rather than
  // "not found"): at most this many, for at most this long.
  int remembered_ended = 10000;
  absl::Duration remember_ended_for = absl::Hours(1);
};

class SessionManager final {
 public:
  template <typename T>
  using Callback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;
  using StreamId = StreamHolds::StreamId;

  struct Page {
    std::vector<SessionInfo> sessions;
    std::string next_page_token;
    int total_size = 0;
  };

  // A session's state as a KeepAlive stream reports it.
  struct StreamUpdate {
    enum class State { kHeld, kReleased, kEnded, kNotFound };
    std::string name;
    State state = State::kNotFound;
    std::string reason;
    absl::Time expire_time = absl::InfinitePast();
  };
  // Told when a session the stream holds ends. Called outside the manager's
  // lock, possibly after CloseStream() returned: it must keep alive what it
  // touches, and must not block.
  using StreamListener = absl::AnyInvocable<void(StreamUpdate)>;

  SessionManager(StatementRunner& runner, TimerQueue& timers, const Clock& clock,
                 SessionOptions options);
  ~SessionManager();
  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // Leases a session. With settings, they are tried once on a pooled
  // connection (BEGIN; set them; ROLLBACK) so a bad value fails here, with
  // PostgreSQL's message, rather than at every later statement.
  void Begin(SessionSpec spec, absl::Time deadline, Callback<SessionInfo> done);
  // ttl zero: the session's ttl; otherwise it becomes the session's ttl.
  absl::StatusOr<SessionInfo> Renew(const Caller& caller, absl::string_view name,
                                    absl::Duration ttl);
  absl::StatusOr<SessionInfo> Get(const Caller& caller, absl::string_view name) const;
  // Open sessions ordered by name, from after `page_token`: the caller's
  // own, or every one (filtered by `client_id` when not empty) for a caller
  // that sees all.
  absl::StatusOr<Page> List(const Caller& caller, int page_size, absl::string_view page_token,
                            absl::string_view client_id) const;
  // Ends the session: queued calls fail, a running statement is cancelled, an
  // open transaction is rolled back. `done` gets whether one was open.
  void End(const Caller& caller, absl::string_view name, Callback<bool> done);

  std::shared_ptr<RunningCall> BeginTransaction(const Caller& caller, absl::string_view name,
                                                TransactionSpec spec, absl::Time deadline,
                                                Callback<SessionInfo> done);
  // `done` gets the commit time.
  std::shared_ptr<RunningCall> Commit(const Caller& caller, absl::string_view name,
                                      absl::Time deadline, Callback<absl::Time> done);
  // `done` gets false when the broker had already rolled the transaction back.
  std::shared_ptr<RunningCall> Rollback(const Caller& caller, absl::string_view name,
                                        absl::Time deadline, Callback<bool> done);
  // Execute (op kExecute) or ExecuteBatch (op kBatch) in the session.
  std::shared_ptr<RunningCall> Run(const Caller& caller, absl::string_view name, RunRequest request,
                                   StatementRunner::Callback done);

  // KeepAlive streams.
  StreamId OpenStream(StreamListener listener);
  std::vector<StreamUpdate> Hold(const Caller& caller, StreamId stream,
                                 const std::vector<std::string>& names);
  std::vector<StreamUpdate> Release(const Caller& caller, StreamId stream,
                                    const std::vector<std::string>& names);
  // The stream is gone: sessions no other stream holds end after the orphan
  // grace unless renewed or held again.
  void CloseStream(StreamId stream);

  // Ends every session (new ones are refused with UNAVAILABLE), rolls back
  // every open transaction, and waits until their connections are back in
  // the pool or `deadline` (real time) passes. Returns false on timeout.
  bool Shutdown(absl::Time deadline);

  SessionStats Stats() const;
  // Unit tests: the reaper's pending deadlines (one per session at most).
  size_t reaper_entries() const;

 private:
  struct Session;
  class Call;
  // Work found under the lock, done after releasing it.
  struct Actions;

  // OK if a session for `client_id` may begin (not shutting down, quotas);
  // counts a refusal.
  absl::Status RoomForSession(const std::string& client_id);
  absl::Status RoomForSessionLocked(const std::string& client_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Submit(const Caller& caller, absl::string_view name, std::shared_ptr<Call> call);
  void StartLocked(const std::shared_ptr<Session>& s, std::shared_ptr<Call> call, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnStepDone(std::shared_ptr<Session> s, std::shared_ptr<Call> call, RunOutcome outcome);
  void StartNextLocked(const std::shared_ptr<Session>& s, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailQueued(const std::shared_ptr<Call>& call, absl::Status status);
  void EndLocked(const std::shared_ptr<Session>& s, EndReason reason, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KillTransactionLocked(const std::shared_ptr<Session>& s, absl::Status why, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rolls back (in the background) a transaction nobody will use again.
  void DiscardTransaction(PooledConnection conn, bool dirty);
  void RenewLocked(Session& s, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why the session is over at `now` (its lifetime or its running lease ran
  // out), even if the reaper has not ended it yet; nullopt while it lives.
  std::optional<EndReason> LapsedLocked(const Session& s, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the lease deadline applies now (no stream holds it).
  bool LeaseRunsLocked(const Session& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RescheduleLocked(Session& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arms the reaper for the earliest deadline (RearmingTimer only ever moves
  // it earlier; a firing for a deadline that moved later finds nothing due).
  void ArmReaperLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Reap(RearmingTimer::Token token);
  absl::StatusOr<std::shared_ptr<Session>> FindLocked(const Caller& caller,
                                                      absl::string_view name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NOT_FOUND for `name`: the same for a name that never existed and for
  // another client's session.
  absl::Status NotFound(absl::string_view name) const;
  SessionInfo InfoLocked(const Session& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  StreamUpdate UpdateLocked(const Session& s, StreamUpdate::State state) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time ExpireTimeLocked(const Session& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string EndDetail(const Session& s, EndReason reason, absl::Time now) const;
  void Perform(Actions& actions);
  std::string NewName();

  StatementRunner& runner_;
  TimerQueue& timers_;
  const Clock& clock_;
  const SessionOptions options_;
  const TransactionMachine machine_;

  mutable Mutex mu_;
  CondVar steps_done_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::btree_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  // (next deadline, session): the reaper's order.
  absl::btree_set<std::pair<absl::Time, Session*>> deadlines_ ABSL_GUARDED_BY(mu_);
  EndedSessions ended_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int64_t> open_by_client_ ABSL_GUARDED_BY(mu_);
  StreamHolds holds_ ABSL_GUARDED_BY(mu_);
  // Shared: a listener is called outside the lock, maybe after CloseStream.
  absl::flat_hash_map<StreamId, std::shared_ptr<StreamListener>> listeners_ ABSL_GUARDED_BY(mu_);
  // Steps running without a caller (background rollbacks) plus calls running.
  int steps_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  SessionStats counters_ ABSL_GUARDED_BY(mu_);  // only the counter fields are used
  // Armed for the earliest of deadlines_; last, so that it stops (in the
  // destructor) before anything its callback touches goes away.
  RearmingTimer reaper_{timers_, [this](RearmingTimer::Token token) { Reap(token); }};
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_SESSION_MANAGER_H_
