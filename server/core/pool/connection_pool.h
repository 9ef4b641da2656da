// ConnectionPool: the bounded set of PostgreSQL connections every call
// borrows from. The knobs are SQLAlchemy QueuePool's (pool_size, max_overflow,
// timeout, recycle, pre_ping); the behaviour is:
//
//  * at most pool_size + max_overflow connections exist at any moment
//    (idle + in use + being opened);
//  * idle connections are reused LIFO (warm ones stay warm, extras age out);
//  * a returned connection goes straight to the next waiter (no
//    wake-and-race); with no waiter it is kept if fewer than pool_size are
//    idle, and closed otherwise (overflow is given back);
//  * the next waiter: with fair_queuing off, the oldest (one FIFO queue);
//    with it on (the default), waiters queue per client id (FIFO within a
//    client) and are served by deficit round robin across clients, each
//    client's turn serving ClientQuota::weight requests, except that a client
//    with fewer connections than its reserved_connections is served first;
//    so a client flooding the pool delays another client's request by at
//    most one turn of each other waiting client, not by its whole queue;
//  * reserved floors: for each client ClientShares::ReservedClients() names
//    (clients-file entries with reserved_connections), the connections it
//    lacks to its floor (reserved_connections minus those it holds: checked
//    out, a session's pinned one included, or on their way to it) are held
//    back from every other client. A request of any other client, and one
//    of a reserved client at or above its floor, takes a connection only if
//    more are available (idle, plus room to open under the effective limit,
//    overflow included) than the floors held back; otherwise it queues (or,
//    not waiting, fails with RESOURCE_EXHAUSTED) and is served once one
//    comes back. A request of a reserved client below its floor takes any
//    available connection, and among waiters is served first (oldest
//    first), with fair queuing on or off. The floors never hold back more
//    than the effective limit minus one (an over-reserved clients file
//    cannot starve everyone else), never open a connection beyond the
//    bound, and never keep a waiter of a client below its floor waiting
//    while a connection is available, so they cannot deadlock. Reserved
//    clients' entries are kept for as long as they are reserved;
//  * waiting never blocks a thread: Acquire() queues a request with a deadline
//    and returns; at most max_waiters may queue, beyond that Acquire fails at
//    once with RESOURCE_EXHAUSTED;
//  * per client (ClientShares): its connections in use plus its queued
//    requests stay within ClientQuota::max_connections and its queued requests
//    within max_waiters; a request beyond either fails at once with
//    RESOURCE_EXHAUSTED naming the quota and the client (0: no such cap);
//  * a connection older than its recycle age (recycle, minus up to
//    recycle_jitter of it, drawn per connection so they do not all expire
//    together) is closed instead of reused; a connection idle for at least
//    pre_ping_after is pinged before it is handed out; a broken one is closed
//    and replaced, never handed out again;
//  * when the database refuses a connect for lack of connection slots
//    (the connector's RESOURCE_EXHAUSTED: SQLSTATE 53300, "too many clients"
//    or "remaining connection slots are reserved"), the pool stops growing
//    at the connections it has: its effective limit drops to them (never
//    above pool_size + max_overflow), the request whose connect was refused
//    waits for one of them like any other (FIFO, with its deadline), and
//    the database counts as reachable (it answered; it is full, not down).
//    Growth resumes by probing: once limit_probe's delay has passed, one
//    connect above the limit may start (for a caller that needs it); if it
//    succeeds the limit rises by one (to the connections established: a
//    probe that only took the place of a connection closed meanwhile raises
//    nothing) and the next probe may follow at once
//    (the delay is reset), if it is refused the delay doubles (up to its
//    maximum). A wait that runs out under the limit fails as any wait does
//    (RESOURCE_EXHAUSTED, carrying SQLSTATE 53300, after DB_POOL_TIMEOUT;
//    DEADLINE_EXCEEDED for the caller's own deadline);
//  * while the database is unreachable (the last connect failed), connects
//    are rationed by a ReconnectBackoff: at most one attempt is in flight,
//    spaced by an exponential, jittered delay, and callers that would need a
//    new connection fail at once with UNAVAILABLE naming the last connect
//    error (queued ones too) instead of each dialing the dead database;
//  * it keeps the numbers PoolStatus and /metrics show: counters, the shape,
//    connections in use and requests waiting per client id, and the
//    distribution of checkout waits. Pool events (connect, connect failure,
//    checkout timeout, broken connection, recycle) are logged as
//    "pool: event=... key=value" lines.
//
// Callbacks run on the Executor (where blocking database work is allowed);
// deadlines come from the TimerQueue and the injected Clock.
//
// Thread-safe. The pool must outlive every PooledConnection it hands out and
// every task it posted: Close() it, then drain the executor and stop the
// timer queue, then destroy it (BrokerServer::Shutdown does this); the timer
// queue must outlive it. Debug and sanitizer builds check, on destruction,
// that nothing is still lent out, opening or on its way to a caller.
#ifndef SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_POOL_H_
#define SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_POOL_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/duration_histogram.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/core/base/rearming_timer.h"
#include "server/core/base/timer_queue.h"
#include "server/core/pool/client_shares.h"
#include "server/core/pool/reconnect_backoff.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::core {

struct PoolOptions {
  int pool_size = 5;
  int max_overflow = 10;
  absl::Duration timeout = absl::Seconds(30);
  // Connections older than this are closed instead of reused;
  // absl::InfiniteDuration() disables recycling (DB_POOL_RECYCLE=-1).
  absl::Duration recycle = absl::Seconds(3600);
  // Each connection's recycle age is recycle * (1 - U[0, recycle_jitter)).
  double recycle_jitter = 0.1;
  bool pre_ping = true;
  absl::Duration pre_ping_after = absl::Seconds(1);
  int max_waiters = 1000;
  // Rationing of connects while the database is unreachable;
  // reconnect_backoff.initial = absl::ZeroDuration() turns it off.
  BackoffOptions reconnect_backoff;
  // Probing above the effective limit after the database refused a connect
  // for lack of slots (53300): the first probe after `initial`, doubling on
  // each refusal up to `max`, jittered; initial = absl::ZeroDuration()
  // probes at once.
  BackoffOptions limit_probe{absl::Seconds(1), absl::Seconds(30), 2.0, 0.2};
  // BROKER_EXPECTED_REPLICAS: brokers sharing the database, for the
  // connection budget checked at start (connection_budget.h); the pool
  // itself does not use it.
  int expected_replicas = 1;
  // BROKER_FAIR_QUEUING: weighted fair queuing across client ids while
  // requests wait; false serves every waiter in one FIFO queue.
  bool fair_queuing = true;
  // Per-client quotas and weights (read when a client's entry is created and
  // on RefreshQuotas()); null gives every client ClientQuota{} (no caps,
  // weight 1).
  std::shared_ptr<const ClientShares> shares;

  int max_connections() const { return pool_size + max_overflow; }
};

// The database's connection settings, read on the first connection
// (connection_budget.h); -1 where unknown.
struct ServerConnectionSettings {
  int max_connections = -1;
  int superuser_reserved_connections = -1;
  int reserved_connections = -1;  // PostgreSQL 16 and later; -1 before
};

// One client's share of the pool right now.
struct ClientUsage {
  int in_use = 0;     // connections checked out
  int waiting = 0;    // requests queued
  ClientQuota quota;  // in force for it
  // Requests refused for its quotas (max_connections, max_waiters) since its
  // entry was created (entries of clients with nothing in use or queued are
  // forgotten beyond 64 of them).
  int64_t rejections = 0;
};

// Counters since start and the pool's current shape.
struct PoolStats {
  int open = 0;  // idle + in use + opening
  int idle = 0;
  int in_use = 0;
  int opening = 0;
  int overflow_in_use = 0;  // max(0, open - pool_size)
  int waiters = 0;
  absl::Duration oldest_wait;
  int64_t connects = 0;
  int64_t connect_failures = 0;
  int64_t checkouts = 0;
  int64_t checkout_timeouts = 0;
  int64_t waiter_rejections = 0;
  int64_t recycled = 0;
  int64_t invalidated = 0;  // broken connections discarded
  int64_t pre_ping_failures = 0;
  int64_t overflow_closed = 0;
  // Requests failed at once, without dialing, while the database was down.
  int64_t backoff_rejections = 0;
  // Connects the database refused for lack of connection slots (53300).
  int64_t limit_refusals = 0;

  // The effective limit on open connections: max_connections() until the
  // database refuses a connect for lack of slots, then the connections that
  // work, growing again by probes.
  int connection_limit = 0;
  absl::Time next_limit_probe = absl::InfinitePast();  // while limited
  std::string last_limit_error;                        // empty if never refused
  absl::Time last_limit_error_time = absl::InfinitePast();
  ServerConnectionSettings server;

  // Reconnect backoff: "down" from a failed connect until one succeeds.
  bool database_down = false;
  int connect_failures_in_row = 0;
  absl::Time next_connect_attempt = absl::InfinitePast();  // while down
  std::string last_connect_error;                          // empty if no connect ever failed
  absl::Time last_connect_error_time = absl::InfinitePast();

  // Per AcquireRequest::client_id; only clients with something in use or
  // queued, or with quota rejections.
  absl::flat_hash_map<std::string, ClientUsage> clients;
};

class ConnectionPool;

// A checked-out connection. Move-only; returns the connection to its pool
// when destroyed (or on Release()). Use from one thread at a time.
class PooledConnection final {
 public:
  PooledConnection() = default;
  PooledConnection(PooledConnection&& other) noexcept
      : pool_(std::exchange(other.pool_, nullptr)),
        slot_(std::exchange(other.slot_, nullptr)),
        db_(std::exchange(other.db_, nullptr)),
        broken_(std::exchange(other.broken_, false)) {}
  PooledConnection& operator=(PooledConnection&& other) noexcept {
    if (this != &other) {
      Release();
      pool_ = std::exchange(other.pool_, nullptr);
      slot_ = std::exchange(other.slot_, nullptr);
      db_ = std::exchange(other.db_, nullptr);
      broken_ = std::exchange(other.broken_, false);
    }
    return *this;
  }
  PooledConnection(const PooledConnection&) = delete;
  PooledConnection& operator=(const PooledConnection&) = delete;
  ~PooledConnection() { Release(); }

  storage::DbConnection& operator*() const { return *db_; }
  storage::DbConnection* operator->() const { return db_; }
  storage::DbConnection* get() const { return db_; }
  explicit operator bool() const { return db_ != nullptr; }

  // The connection must not be reused (its state is unknown): it is closed on
  // return. Connections that report IsBroken() are discarded anyway.
  void MarkBroken() { broken_ = true; }

  // Gives the connection back now.
  void Release() {
    if (slot_ != nullptr) GiveBack();
  }

 private:
  friend class ConnectionPool;
  struct Slot;  // the pool's record of one connection (connection_pool.cc)
  PooledConnection(ConnectionPool* pool, std::unique_ptr<Slot> slot);
  void GiveBack();

  // Moves, destruction and Release() of an empty handle are inline and cheap:
  // a callback's result is moved a few times on its way.
  ConnectionPool* pool_ = nullptr;
  Slot* slot_ = nullptr;                 // owned
  storage::DbConnection* db_ = nullptr;  // slot_'s connection, null when empty
  bool broken_ = false;
};

struct AcquireRequest {
  // When the caller gives up. The pool waits until the earlier of this and
  // now + PoolOptions::timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // false: never queue; fail at once with RESOURCE_EXHAUSTED when no
  // connection can be had right away (health probes must not take a place
  // in the waiter queue that callers are bounded by).
  bool wait = true;
  // Who asks (the gRPC "x-client-id" metadata; "" when absent), for the
  // per-client occupancy in PoolStats.
  std::string client_id;
};

class ConnectionPool final {
 public:
  using WaitId = uint64_t;  // 0 = nothing to cancel
  using Callback = absl::AnyInvocable<void(absl::StatusOr<PooledConnection>) &&>;

  ConnectionPool(PoolOptions options, storage::DbConnector& connector, Executor& executor,
                 TimerQueue& timers, const Clock& clock);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Never blocks. `done` runs exactly once, on the executor, with a connection
  // or with: RESOURCE_EXHAUSTED (pool timeout, or too many waiters; with
  // SQLSTATE 53300 when the database's connection limit held the pool below
  // its size, or when a request that may not wait had its connect refused
  // for lack of slots), DEADLINE_EXCEEDED (the request's own deadline came
  // first), UNAVAILABLE (cannot connect, or the pool is closed), CANCELLED
  // (CancelWait). Returns an id for CancelWait, or 0 when the request failed
  // at once. CancelWait finds the request while it is queued: also after a
  // connect of its own was refused for lack of slots and it queued again.
  WaitId Acquire(const AcquireRequest& request, Callback done);

  // Withdraws a queued request (its caller went away): its callback runs with
  // CANCELLED. No effect if it was already served.
  void CancelWait(WaitId id);

  // Refuses new requests (UNAVAILABLE), fails queued ones, closes idle
  // connections; connections in use are closed when they come back.
  void Close();

  PoolStats Stats() const;

  // `hook` runs once, on the executor, with the first connection the pool
  // opens, before that connection is handed out (connection_budget.h reads
  // the server's settings there). It must leave the connection's session
  // state as it found it. Set it before the first Acquire.
  void SetFirstConnectHook(absl::AnyInvocable<void(storage::DbConnection&) &&> hook);
  // Re-reads every known client's quota from options().shares (a clients
  // file reloaded). Connections already in use stay in use; the new caps
  // apply to the next requests.
  void RefreshQuotas();
  // Kept for Stats() (PoolStats::server).
  void RecordServerSettings(const ServerConnectionSettings& settings);
  const PoolOptions& options() const { return options_; }
  // Where the pool runs its callbacks, and where work on a checked-out
  // connection may block.
  Executor& executor() const { return executor_; }
  // How long successful Acquire calls took, request to delivery.
  const DurationHistogram& checkout_wait() const { return checkout_wait_; }

 private:
  friend class PooledConnection;
  using Slot = PooledConnection::Slot;

  struct Client;
  static constexpr int kMaxUnreferencedClients = 64;

  // What a request carries from Acquire to its delivery: the caller's
  // callback, when it asked, until when it may wait, and its client (one
  // reference). A request whose connect the database refused for lack of
  // slots queues again with all of it.
  struct Request {
    Callback done;
    absl::Time requested;
    Client* client = nullptr;
    WaitId id = 0;
    absl::Time deadline;  // AcquireRequest::deadline
    bool wait = true;     // AcquireRequest::wait
  };

  // A request in the queue (request.id indexes it in waiter_index_).
  struct Waiter;
  using WaiterList = std::list<Waiter>;
  using ClientQueue = std::list<WaiterList::iterator>;
  struct Waiter {
    absl::Time deadline;              // the earlier of request.deadline and the pool timeout
    bool caller_deadline;             // request.deadline, not the pool timeout, bounds it
    Request request;                  // request.requested: when it was first queued or dialed for
    ClientQueue::iterator in_client;  // its place in request.client->queue
  };

  // One client id's share of the pool. Kept while referenced (by a request
  // on its way to a connection or queued, or by a connection checked out),
  // plus up to kMaxUnreferencedClients unreferenced ones, swept when there
  // are more: a client's next checkout finds its entry instead of allocating
  // one, and ids cannot grow memory. Every field but in_use is guarded by
  // mu_ (the analysis cannot name the pool's mutex from here).
  struct Client {
    std::string name;
    // Connections checked out. Atomic: counted up at delivery, outside mu_
    // (the references keep the entry alive meanwhile), and down under mu_.
    std::atomic<int> in_use{0};
    int refs = 0;
    ClientQuota quota;
    // Its queued requests, oldest (lowest id) first; non-empty exactly while
    // it is in ring_ (at ring_pos).
    ClientQueue queue;
    std::list<Client*>::iterator ring_pos;
    // Deficit round robin: requests it may still be served in its current
    // turn (a turn adds quota.weight).
    int deficit = 0;
    int64_t rejections = 0;
    // In reserved_: its floor is held (the pool holds a reference to it).
    bool reserved = false;
  };

  // How a connect was allowed to start: `probe` is ReconnectBackoff's probe,
  // `growth` the one connect above the effective limit.
  struct Dial {
    bool probe = false;
    bool growth = false;
  };

  // Runs on the executor: validates an idle connection (recycle age,
  // pre-ping), replacing it if needed, then delivers it to slot->request.
  void CheckOut(std::unique_ptr<Slot> slot);
  // Runs on the executor: opens a connection into a slot already counted in
  // open_ and opening_, then delivers it.
  void OpenAndDeliver(Request request, Dial dial);
  // OpenAndDeliver's path when the database refused the connect for lack of
  // slots: lowers the limit and queues the request again (or fails it).
  void OnServerFull(Request request, Dial dial, const absl::Status& refusal, absl::Time now);
  // Closes a connection that may not be handed out and opens another in its
  // slot for the same request (or fails it, while connects are rationed).
  void Replace(std::unique_ptr<Slot> slot);
  // Counts the checkout (checkouts, its client's share, the wait until `now`)
  // and hands the connection to slot->request's callback.
  void Deliver(std::unique_ptr<Slot> slot, absl::Time now);
  void Return(std::unique_ptr<Slot> slot, bool broken);
  void Discard(std::unique_ptr<Slot> slot);  // closes a connection counted in open_
  // Frees a slot counted in open_ and lets the oldest waiter use it.
  void FreeSlot();
  // The expiry timer's callback: fails every waiter whose deadline passed,
  // earliest first, and re-arms for the next. A stale firing does nothing.
  void ExpireDue(RearmingTimer::Token token);
  // With room for a connection (RoomLocked), starts opening one for the
  // oldest waiter. Returns the waiter to serve, if any. While connects are
  // rationed and none may start, moves every waiter to `refused` instead
  // (their client references already dropped).
  bool TakeWaiterForNewConnectionLocked(absl::Time now, Waiter* out, Dial* dial,
                                        std::list<Waiter>* refused)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServeNewConnection(Waiter waiter, Dial dial);
  // Whether one more connection may open at `now`: below the effective
  // limit, or (*growth) as the growth probe above it.
  bool RoomLocked(absl::Time now, bool* growth) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Connections it holds (checked out or on their way to it): its references
  // minus its queued requests (minus the pool's own on the anonymous entry
  // and on a reserved one).
  int HeldLocked(const Client& client) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Connections a request could have now: idle ones plus room to open more
  // under the effective limit.
  int AvailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Connections the reserved clients' unmet floors hold back from everyone
  // else (at most limit_ - 1).
  int HeldBackLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a request of `client` may take one of `available` connections.
  // `counted`: 1 if the request is already counted in HeldLocked(client) (a
  // request being decided in Acquire, or on its way), 0 if it waits.
  bool MayTakeLocked(const Client& client, int counted, int available) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-reads ClientShares::ReservedClients(): pins their entries (one pool
  // reference each) and unpins those no longer reserved. Returns the sum of
  // their floors.
  int LoadReservationsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What ServeEligibleLocked hands out: idle connections to check out and
  // waiters to open a connection for (or to refuse, while connects are
  // rationed).
  struct Dispatch {
    std::vector<std::unique_ptr<Slot>> checkouts;
    std::vector<std::pair<Waiter, Dial>> opens;
    std::list<Waiter> refused;
    std::string refusal;
  };
  // After the floors held back shrank (quotas refreshed, the limit
  // lowered): serves every waiter that may now take a connection.
  void ServeEligibleLocked(absl::Time now, Dispatch* dispatch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunDispatch(Dispatch dispatch);
  // Logs a clients file whose floors add up to the bound or more.
  void WarnOverReserved(int floors) const;
  // Files a waiter (already in waiters_) in its client's queue, in id order,
  // putting the client in the fair-queuing ring if it was not.
  void FileWaiterLocked(WaiterList::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The waiter to serve next with `available` connections to give (someone
  // waits): the policy in the class comment. Charges the client's turn.
  // waiters_.end() when every waiter must leave them to the reserved floors.
  WaiterList::iterator NextWaiterLocked(int available) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a waiter out of every queue and index; disarms the expiry timer
  // when no one is left.
  Waiter TakeWaiterLocked(WaiterList::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Empties every client's queue and the ring (all of waiters_ is about to
  // be failed).
  void UnfileAllWaitersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ClientQuota QuotaOf(absl::string_view id) const;
  // Queues a request (its wait bounded by the earlier of its deadline and
  // requested + timeout), in id order (a request queued again after a
  // refused connect goes before those that came after it), and arms the
  // expiry timer for it.
  void EnqueueLocked(Request request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Where a waiter's wait ends.
  void SetWaitBoundLocked(Waiter* w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // While limited with someone waiting and no growth probe out: arms the
  // expiry timer for the next probe.
  void ArmGrowthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // "the database accepts only N of this pool's M connections (...)".
  std::string LimitMessageLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails each refused waiter with UNAVAILABLE and `message`.
  void Refuse(std::list<Waiter> refused, const std::string& message);
  // Why a connect may not start now (the database is down).
  std::string DownMessageLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  using ClientHash = absl::Hash<absl::string_view>;
  // A reference to `id`'s entry, created if needed; `hash` is ClientHash of
  // `id` (unused for "", whose entry is always there).
  Client* RefClientLocked(const std::string& id, size_t hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnrefClientLocked(Client* client) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A request that will not be served: drops its client reference and
  // returns its callback (to fail).
  Callback DropRequestLocked(Request* request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time RecycleAtLocked(absl::Time created) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status TimeoutStatusLocked(const Waiter& w, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asserts (SB_DCHECK) what must hold whenever mu_ is free: the shape
  // counts, the waiter index, the clients' references and occupancy. Called
  // at the end of every locked section that changes state; a no-op where
  // invariants are off (release builds).
  void CheckInvariantsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PoolOptions options_;
  storage::DbConnector& connector_;
  Executor& executor_;
  const Clock& clock_;

  mutable Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Slot>> idle_ ABSL_GUARDED_BY(mu_);  // back = most recently used
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  int opening_ ABSL_GUARDED_BY(mu_) = 0;
  WaiterList waiters_ ABSL_GUARDED_BY(mu_);  // front = oldest (lowest id)
  absl::flat_hash_map<WaitId, WaiterList::iterator> waiter_index_ ABSL_GUARDED_BY(mu_);
  // Clients with queued requests, in deficit-round-robin order (front: the
  // one whose turn it is).
  std::list<Client*> ring_ ABSL_GUARDED_BY(mu_);
  // Some known client has a reserved floor: only then does picking a waiter
  // look through the ring for one below its floor.
  bool floors_ ABSL_GUARDED_BY(mu_) = false;
  // The clients whose floors are held (ClientShares::ReservedClients()).
  // Empty, the checkout paths skip every reservation check.
  std::vector<Client*> reserved_ ABSL_GUARDED_BY(mu_);
  WaitId next_wait_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);
  PoolStats counters_ ABSL_GUARDED_BY(mu_);  // only the counter fields are used
  // Checkouts given back; PoolStats::checkouts adds those in use.
  int64_t returned_ ABSL_GUARDED_BY(mu_) = 0;
  ReconnectBackoff backoff_ ABSL_GUARDED_BY(mu_);
  // The effective limit (see the class comment) and its growth probe.
  int limit_ ABSL_GUARDED_BY(mu_);
  bool growth_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration growth_delay_ ABSL_GUARDED_BY(mu_);
  absl::Time growth_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string last_limit_error_ ABSL_GUARDED_BY(mu_);
  std::string last_limit_sqlstate_ ABSL_GUARDED_BY(mu_);
  absl::Time last_limit_error_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::AnyInvocable<void(storage::DbConnection&) &&> first_connect_hook_ ABSL_GUARDED_BY(mu_);
  ServerConnectionSettings server_ ABSL_GUARDED_BY(mu_);
  std::string last_connect_error_ ABSL_GUARDED_BY(mu_);
  absl::Time last_connect_error_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Keyed by Client::name (entries never move).
  absl::flat_hash_map<absl::string_view, std::unique_ptr<Client>, ClientHash> clients_
      ABSL_GUARDED_BY(mu_);
  // The entry of "" (no x-client-id), in clients_ for good.
  Client* const anonymous_;
  int unreferenced_clients_ ABSL_GUARDED_BY(mu_) = 0;
  DurationHistogram checkout_wait_;
  // Waiters' deadlines (and, while limited, the next growth probe): one
  // timer, armed no later than the earliest deadline while anyone waits, and disarmed when no one
  // does (not one timer per waiter: scheduling and cancelling a timer per queued request cost more
  // than the rest of the queueing). A waiter served before its deadline
  // leaves the timer as it is; it then fires for nothing and re-arms for the
  // earliest deadline left. Its lock is taken after mu_, never before.
  // Last: destroyed first, and its callback uses the members above.
  RearmingTimer expiry_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_POOL_CONNECTION_POOL_H_
