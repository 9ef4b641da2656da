#include "server/core/pool/connection_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/base/invariant.h"
#include "server/core/base/log_fields.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

constexpr char kShuttingDown[] =
    "the broker is shutting down and takes no new work; retry on another instance";

}  // namespace

// ---- PooledConnection ----

// The pool's record of one connection. Owned by the idle list, by the task
// taking it to a caller, or by the caller's PooledConnection.
struct PooledConnection::Slot {
  std::unique_ptr<storage::DbConnection> db;
  absl::Time created;
  absl::Time recycle_at;  // InfiniteFuture when recycling is off
  absl::Time last_used;
  // While on its way to a caller: the request it serves. Once delivered,
  // only request.client is left: who has it checked out (one reference).
  ConnectionPool::Request request;
};

PooledConnection::PooledConnection(ConnectionPool* pool, std::unique_ptr<Slot> slot)
    : pool_(pool), slot_(slot.release()), db_(slot_->db.get()) {}

void PooledConnection::GiveBack() {
  db_ = nullptr;
  ConnectionPool* pool = std::exchange(pool_, nullptr);
  pool->Return(std::unique_ptr<Slot>(std::exchange(slot_, nullptr)), std::exchange(broken_, false));
}

// ---- ConnectionPool ----

ConnectionPool::ConnectionPool(PoolOptions options, storage::DbConnector& connector,
                               Executor& executor, TimerQueue& timers, const Clock& clock)
    : options_(std::move(options)),
      connector_(connector),
      executor_(executor),
      clock_(clock),
      backoff_(options_.reconnect_backoff),
      limit_(options_.max_connections()),
      growth_delay_(options_.limit_probe.initial),
      anonymous_(new Client),
      checkout_wait_(clock),
      expiry_(timers, [this](RearmingTimer::Token token) { ExpireDue(token); }) {
  anonymous_->refs = 1;
  anonymous_->quota = QuotaOf("");
  floors_ = anonymous_->quota.reserved_connections > 0;
  clients_.emplace(anonymous_->name, std::unique_ptr<Client>(anonymous_));
  int floors;
  {
    MutexLock lock(&mu_);
    floors = LoadReservationsLocked();
  }
  WarnOverReserved(floors);
}

ConnectionPool::~ConnectionPool() {
  // First, and without mu_: it waits for a running ExpireDue, which takes it.
  expiry_.Stop();
  Close();
#if SB_INVARIANTS_ON
  // Destroyed with a connection still lent out, opening, or on its way to a
  // caller (a task not drained from the executor), the pool would be used
  // after it is freed: that is the caller's bug, caught here rather than
  // later as a crash somewhere else.
  MutexLock lock(&mu_);
  SB_DCHECK(open_ == 0);
  int in_use = 0;
  int refs = 0;
  for (const auto& [name, client] : clients_) {
    in_use += client->in_use.load(std::memory_order_relaxed);
    refs += client->refs;
  }
  SB_DCHECK(in_use == 0);
  // Only the pool's own, on the anonymous client and the reserved ones.
  SB_DCHECK(refs == 1 + static_cast<int>(reserved_.size()));
#endif
}

ClientQuota ConnectionPool::QuotaOf(absl::string_view id) const {
  ClientQuota quota = options_.shares != nullptr ? options_.shares->QuotaFor(id) : ClientQuota{};
  // A weight below 1 would never be served under saturation.
  quota.weight = std::max(1, quota.weight);
  return quota;
}

void ConnectionPool::RefreshQuotas() {
  Dispatch dispatch;
  int floors;
  {
    MutexLock lock(&mu_);
    floors_ = false;
    for (auto& [name, client] : clients_) {
      client->quota = QuotaOf(name);
      floors_ = floors_ || client->quota.reserved_connections > 0;
    }
    floors = LoadReservationsLocked();
    // Smaller or fewer floors may free what was held back for them.
    ServeEligibleLocked(clock_.Now(), &dispatch);
    CheckInvariantsLocked();
  }
  WarnOverReserved(floors);
  RunDispatch(std::move(dispatch));
}

int ConnectionPool::LoadReservationsLocked() {
  std::vector<std::string> ids;
  if (options_.shares != nullptr) ids = options_.shares->ReservedClients();
  std::vector<Client*> reserved;
  int floors = 0;
  for (const std::string& id : ids) {
    // "" is everyone without an id: not a client to hold connections for.
    if (id.empty()) continue;
    Client* client = RefClientLocked(id, ClientHash{}(id));
    if (client->quota.reserved_connections <= 0 ||
        std::find(reserved.begin(), reserved.end(), client) != reserved.end()) {
      UnrefClientLocked(client);
      continue;
    }
    reserved.push_back(client);
    floors += client->quota.reserved_connections;
  }
  // The new references are taken before the old ones are dropped: an entry
  // reserved before and after is never swept in between.
  for (Client* client : reserved_) client->reserved = false;
  for (Client* client : reserved) client->reserved = true;
  std::swap(reserved, reserved_);
  for (Client* client : reserved) UnrefClientLocked(client);
  return floors;
}

void ConnectionPool::WarnOverReserved(int floors) const {
  if (floors < options_.max_connections()) return;
  spdlog::warn(
      "pool: event=over_reserved floors={} max={} (the clients file's reserved_connections add "
      "up to DB_POOL_SIZE + DB_MAX_OVERFLOW or more: at most {} connections are held back for "
      "them, one always serves the other clients, and reserved clients below their floors are "
      "served first come, first served)",
      floors, options_.max_connections(), options_.max_connections() - 1);
}

int ConnectionPool::HeldLocked(const Client& client) const {
  return client.refs - static_cast<int>(client.queue.size()) - (&client == anonymous_ ? 1 : 0) -
         (client.reserved ? 1 : 0);
}

int ConnectionPool::AvailableLocked() const {
  return static_cast<int>(idle_.size()) + std::max(0, limit_ - open_);
}

int ConnectionPool::HeldBackLocked() const {
  int held_back = 0;
  for (const Client* client : reserved_) {
    held_back += std::max(0, client->quota.reserved_connections - HeldLocked(*client));
  }
  return std::min(held_back, std::max(0, limit_ - 1));
}

bool ConnectionPool::MayTakeLocked(const Client& client, int counted, int available) const {
  if (reserved_.empty()) return true;
  if (client.reserved && HeldLocked(client) - counted < client.quota.reserved_connections) {
    return true;
  }
  return available > HeldBackLocked();
}

void ConnectionPool::ServeEligibleLocked(absl::Time now, Dispatch* dispatch) {
  while (!closed_ && !waiters_.empty() && !idle_.empty()) {
    const WaiterList::iterator next = NextWaiterLocked(AvailableLocked());
    if (next == waiters_.end()) break;
    std::unique_ptr<Slot> slot = std::move(idle_.back());
    idle_.pop_back();
    slot->request = TakeWaiterLocked(next).request;
    dispatch->checkouts.push_back(std::move(slot));
  }
  Waiter waiter;
  Dial dial;
  while (TakeWaiterForNewConnectionLocked(now, &waiter, &dial, &dispatch->refused)) {
    dispatch->opens.emplace_back(std::move(waiter), dial);
  }
  if (!dispatch->refused.empty()) dispatch->refusal = DownMessageLocked(now);
}

void ConnectionPool::RunDispatch(Dispatch dispatch) {
  for (std::unique_ptr<Slot>& slot : dispatch.checkouts) {
    executor_.Post([this, slot = std::move(slot)]() mutable { CheckOut(std::move(slot)); });
  }
  for (auto& [waiter, dial] : dispatch.opens) {
    executor_.Post([this, w = std::move(waiter), dial = dial]() mutable {
      ServeNewConnection(std::move(w), dial);
    });
  }
  Refuse(std::move(dispatch.refused), dispatch.refusal);
}

void ConnectionPool::FileWaiterLocked(WaiterList::iterator it) {
  Client* client = it->request.client;
  auto at = client->queue.end();
  while (at != client->queue.begin() && (*std::prev(at))->request.id > it->request.id) --at;
  it->in_client = client->queue.insert(at, it);
  if (client->queue.size() == 1) {
    client->deficit = 0;
    client->ring_pos = ring_.insert(ring_.end(), client);
  }
}

ConnectionPool::WaiterList::iterator ConnectionPool::NextWaiterLocked(int available) {
  if (!reserved_.empty()) {
    // A reserved client below its floor first, the oldest request of them
    // (fair queuing on or off: what is held back is held for it).
    Client* first = nullptr;
    for (Client* client : reserved_) {
      if (client->queue.empty() || HeldLocked(*client) >= client->quota.reserved_connections) {
        continue;
      }
      if (first == nullptr ||
          client->queue.front()->request.id < first->queue.front()->request.id) {
        first = client;
      }
    }
    if (first != nullptr) return first->queue.front();
    // Everyone else leaves the floors held back alone.
    if (available <= HeldBackLocked()) return waiters_.end();
  }
  if (!options_.fair_queuing) return waiters_.begin();
  // A client below its reserved floor first (the first such in ring order).
  if (floors_) {
    for (Client* client : ring_) {
      if (HeldLocked(*client) < client->quota.reserved_connections) return client->queue.front();
    }
  }
  Client* client = ring_.front();
  // A new turn: its weight in requests. (Unit cost per request, so a turn
  // never ends with credit it cannot spend.)
  if (client->deficit <= 0) client->deficit = client->quota.weight;
  --client->deficit;
  if (client->deficit == 0 && client->queue.size() > 1) {
    // Its turn is over and it still waits: behind everyone else.
    ring_.splice(ring_.end(), ring_, client->ring_pos);
  }
  return client->queue.front();
}

ConnectionPool::Waiter ConnectionPool::TakeWaiterLocked(WaiterList::iterator it) {
  Client* client = it->request.client;
  client->queue.erase(it->in_client);
  if (client->queue.empty()) {
    ring_.erase(client->ring_pos);
    client->deficit = 0;
  }
  waiter_index_.erase(it->request.id);
  Waiter waiter = std::move(*it);
  waiters_.erase(it);
  if (waiters_.empty()) expiry_.Disarm();
  return waiter;
}

void ConnectionPool::UnfileAllWaitersLocked() {
  for (Client* client : ring_) {
    client->queue.clear();
    client->deficit = 0;
  }
  ring_.clear();
}

ConnectionPool::Client* ConnectionPool::RefClientLocked(const std::string& id, size_t hash) {
  if (id.empty()) {
    ++anonymous_->refs;  // never 0: the pool holds one
    return anonymous_;
  }
  auto it = clients_.find(id, hash);
  if (it != clients_.end()) {
    Client* client = it->second.get();
    if (client->refs++ == 0) --unreferenced_clients_;
    return client;
  }
  auto client = std::make_unique<Client>();
  client->name = id;
  client->refs = 1;
  client->quota = QuotaOf(id);
  floors_ = floors_ || client->quota.reserved_connections > 0;
  Client* raw = client.get();
  clients_.emplace(raw->name, std::move(client));
  return raw;
}

void ConnectionPool::UnrefClientLocked(Client* client) {
  if (--client->refs > 0) return;
  if (++unreferenced_clients_ <= kMaxUnreferencedClients) return;
  // Unreferenced entries have nothing in use (a checked-out connection holds
  // a reference), so dropping them loses nothing.
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->second->refs == 0) {
      clients_.erase(it++);
    } else {
      ++it;
    }
  }
  unreferenced_clients_ = 0;
}

ConnectionPool::Callback ConnectionPool::DropRequestLocked(Request* request) {
  if (request->client != nullptr) UnrefClientLocked(std::exchange(request->client, nullptr));
  return std::move(request->done);
}

ConnectionPool::WaitId ConnectionPool::Acquire(const AcquireRequest& request, Callback done) {
  const absl::Time now = clock_.Now();
  // Hashed before taking the lock: the critical section only probes.
  const size_t client_hash = ClientHash{}(request.client_id);
  std::unique_ptr<Slot> idle;
  Request open_request;
  bool open_new = false;
  Dial dial;
  absl::Status error;
  WaitId id = 0;
  {
    MutexLock lock(&mu_);
    bool growth = false;
    if (closed_) {
      error = absl::UnavailableError(kShuttingDown);
    } else if (request.deadline <= now) {
      error = absl::DeadlineExceededError(
          "the call's deadline had already passed before a database connection was requested");
    } else {
      Client* client = RefClientLocked(request.client_id, client_hash);
      const ClientQuota& quota = client->quota;
      const int queued = static_cast<int>(client->queue.size());
      if (quota.max_connections > 0 && HeldLocked(*client) - 1 + queued >= quota.max_connections) {
        ++client->rejections;
        error = absl::ResourceExhaustedError(absl::StrCat(
            ClientLabel(client->name), " has ", HeldLocked(*client) - 1,
            " database connections in use and ", queued,
            " calls waiting for one, its max_connections quota of ", quota.max_connections,
            " (BROKER_CLIENT_MAX_CONNECTIONS or its clients-file entry); wait for its calls to "
            "finish, or retry after a short backoff (100 ms or more)"));
        UnrefClientLocked(client);
      } else if (!idle_.empty() && (waiters_.empty() || !reserved_.empty()) &&
                 MayTakeLocked(*client, 1, AvailableLocked())) {
        // With reserved floors someone may wait while connections are idle:
        // they are held back from the waiters, not from a client below its
        // floor.
        // LIFO: the most recently returned connection is the warmest.
        idle = std::move(idle_.back());
        idle_.pop_back();
        idle->request.client = client;
        idle->request.id = id = next_wait_id_++;
      } else if ((waiters_.empty() || !reserved_.empty()) &&
                 MayTakeLocked(*client, 1, AvailableLocked()) && RoomLocked(now, &growth)) {
        if (backoff_.TryStart(now, &dial.probe)) {
          ++open_;
          ++opening_;
          dial.growth = growth;
          if (growth) growth_in_flight_ = true;
          open_new = true;
          open_request.client = client;
          open_request.id = id = next_wait_id_++;
        } else {
          ++counters_.backoff_rejections;
          error = absl::UnavailableError(DownMessageLocked(now));
          UnrefClientLocked(client);
        }
      } else if (!request.wait) {
        error = absl::ResourceExhaustedError(
            AvailableLocked() > 0
                ? absl::StrCat("all ", open_,
                               " database connections are in use or held for clients' "
                               "reserved_connections")
                : absl::StrCat("all ", open_, " database connections are in use"));
        UnrefClientLocked(client);
      } else if (static_cast<int>(waiters_.size()) >= options_.max_waiters) {
        ++counters_.waiter_rejections;
        error = absl::ResourceExhaustedError(
            absl::StrCat("too many callers are waiting for a database connection: all ", open_,
                         " connections are in use and ", waiters_.size(),
                         " callers already wait (DB_POOL_MAX_WAITERS=", options_.max_waiters,
                         "); retry after a short backoff (100 ms or more)"));
        UnrefClientLocked(client);
      } else if (quota.max_waiters > 0 && queued >= quota.max_waiters) {
        ++counters_.waiter_rejections;
        ++client->rejections;
        error = absl::ResourceExhaustedError(absl::StrCat(
            ClientLabel(client->name), " already has ", queued,
            " calls waiting for a database connection, its max_waiters quota of ",
            quota.max_waiters, " (BROKER_CLIENT_MAX_WAITERS or its clients-file entry); all ",
            open_, " connections are in use; retry after a short backoff (100 ms or more)"));
        UnrefClientLocked(client);
      } else {
        Waiter& waiter = waiters_.emplace_back();
        Request& r = waiter.request;
        r.id = id = next_wait_id_++;
        r.deadline = request.deadline;
        r.done = std::move(done);
        r.requested = now;
        r.client = client;
        SetWaitBoundLocked(&waiter);
        waiter_index_.emplace(id, std::prev(waiters_.end()));
        FileWaiterLocked(std::prev(waiters_.end()));
        expiry_.ArmBy(waiter.deadline);
        ArmGrowthLocked();
      }
    }
    CheckInvariantsLocked();
  }
  if (!error.ok()) {
    // Moved, not copied: a Status shared between threads has its refcount
    // dropped inside Debian's uninstrumented Abseil, which ThreadSanitizer
    // cannot see (a false race report on the final delete).
    executor_.Post([done = std::move(done), error = std::move(error)]() mutable {
      std::move(done)(std::move(error));
    });
  } else if (idle != nullptr) {
    // The slot carries the request, so the task is two pointers: no
    // allocation to post it.
    Request& r = idle->request;
    r.done = std::move(done);
    r.requested = now;
    // Deadline and wait matter only if a replacement's connect is refused
    // for lack of slots and the request has to queue.
    r.deadline = request.deadline;
    r.wait = request.wait;
    executor_.Post([this, slot = std::move(idle)]() mutable { CheckOut(std::move(slot)); });
  } else if (open_new) {
    Request& r = open_request;
    r.done = std::move(done);
    r.requested = now;
    r.deadline = request.deadline;
    r.wait = request.wait;
    executor_.Post([this, request = std::move(open_request), dial]() mutable {
      OpenAndDeliver(std::move(request), dial);
    });
  }
  return id;
}

void ConnectionPool::CheckOut(std::unique_ptr<Slot> slot) {
  absl::Time now = clock_.Now();
  if (now >= slot->recycle_at) {
    {
      MutexLock lock(&mu_);
      ++counters_.recycled;
      CheckInvariantsLocked();
    }
    spdlog::info("pool: event=recycle pid={} age={} at=checkout", slot->db->BackendPid(),
                 Millis(now - slot->created));
    Replace(std::move(slot));
    return;
  }
  if (options_.pre_ping && now - slot->last_used >= options_.pre_ping_after) {
    const absl::Status ping = slot->db->Ping();
    if (!ping.ok()) {
      {
        MutexLock lock(&mu_);
        ++counters_.pre_ping_failures;
        ++counters_.invalidated;
        CheckInvariantsLocked();
      }
      spdlog::warn("pool: event=invalidate reason=pre_ping_failed pid={} idle={} error={}",
                   slot->db->BackendPid(), Millis(now - slot->last_used), Quoted(ping.message()));
      Replace(std::move(slot));
      return;
    }
    now = clock_.Now();
    slot->last_used = now;
  }
  Deliver(std::move(slot), now);
}

void ConnectionPool::Replace(std::unique_ptr<Slot> slot) {
  Request request = std::move(slot->request);
  slot.reset();  // closed first; its slot stays counted in open_ for the new one
  const absl::Time now = clock_.Now();
  Dial dial;  // the slot was counted already: never a growth probe
  bool allowed;
  std::string refusal;
  Callback refused;
  {
    MutexLock lock(&mu_);
    allowed = backoff_.TryStart(now, &dial.probe);
    if (allowed) {
      ++opening_;
    } else {
      ++counters_.backoff_rejections;
      refusal = DownMessageLocked(now);
      refused = DropRequestLocked(&request);
    }
    CheckInvariantsLocked();
  }
  if (allowed) {
    OpenAndDeliver(std::move(request), dial);
    return;
  }
  FreeSlot();
  std::move(refused)(absl::UnavailableError(refusal));
}

void ConnectionPool::OpenAndDeliver(Request request, Dial dial) {
  const absl::Time started = clock_.Now();
  absl::StatusOr<std::unique_ptr<storage::DbConnection>> db = connector_.Connect();
  const absl::Time now = clock_.Now();
  if (!db.ok() && db.status().code() == absl::StatusCode::kResourceExhausted) {
    OnServerFull(std::move(request), dial, db.status(), now);
    return;
  }
  const bool probe = dial.probe;
  if (!db.ok()) {
    Waiter next;
    Dial next_dial;
    bool serve_next;
    std::list<Waiter> refused;
    std::string refusal;
    bool went_down;
    bool rationed;
    int failures;
    absl::Time next_attempt;
    Callback done;
    {
      MutexLock lock(&mu_);
      --opening_;
      --open_;
      ++counters_.connect_failures;
      // Down, not full: the growth probe proved nothing; the next one may
      // start when the database is back.
      if (dial.growth) growth_in_flight_ = false;
      const bool was_down = backoff_.down();
      backoff_.OnFailure(now, probe);
      went_down = !was_down && backoff_.down();
      rationed = backoff_.enabled();
      failures = backoff_.failures();
      next_attempt = backoff_.next_attempt();
      last_connect_error_ = std::string(db.status().message());
      last_connect_error_time_ = now;
      // The slot is free again: the oldest waiter may try (without
      // rationing, so that it fails fast rather than wait out its timeout),
      // or, while connects are rationed, every waiter fails now.
      serve_next = TakeWaiterForNewConnectionLocked(now, &next, &next_dial, &refused);
      if (!refused.empty()) refusal = DownMessageLocked(now);
      done = DropRequestLocked(&request);
      CheckInvariantsLocked();
    }
    const std::string retry_in =
        rationed ? Millis(std::max(absl::ZeroDuration(), next_attempt - now)) : "0";
    if (went_down) {
      spdlog::error(
          "pool: event=database_unreachable error={} retry_in={} refused_waiters={} "
          "(callers that need a new connection fail with UNAVAILABLE until a connect succeeds)",
          Quoted(db.status().message()), retry_in, refused.size());
    } else {
      spdlog::warn("pool: event=connect_failed failures_in_row={} took={} retry_in={} error={}",
                   failures, Millis(now - started), retry_in, Quoted(db.status().message()));
    }
    if (serve_next) {
      executor_.Post([this, w = std::move(next), next_dial]() mutable {
        ServeNewConnection(std::move(w), next_dial);
      });
    }
    Refuse(std::move(refused), refusal);
    std::move(done)(db.status());
    return;
  }
  auto slot = std::make_unique<Slot>();
  slot->db = *std::move(db);
  slot->created = slot->last_used = now;
  bool closed;
  bool recovered;
  int failures;
  int open;
  int limit = 0;
  absl::Time last_error_time;
  Callback refused;
  absl::AnyInvocable<void(storage::DbConnection&) &&> hook;
  Waiter next;
  Dial next_dial;
  bool serve_next = false;
  std::list<Waiter> unused;  // nothing is refused: the database is up
  {
    MutexLock lock(&mu_);
    --opening_;
    ++counters_.connects;
    recovered = backoff_.down();
    failures = backoff_.failures();
    last_error_time = last_connect_error_time_;
    backoff_.OnSuccess(probe);
    slot->recycle_at = RecycleAtLocked(slot->created);
    closed = closed_;
    if (closed) {
      --open_;
      refused = DropRequestLocked(&request);
    }
    if (dial.growth) {
      // The database took one more: so may the next probe, at once. The
      // limit rises to the connections established now (this one included),
      // not past them: if others closed meanwhile, the probe only took the
      // place of one of them.
      growth_in_flight_ = false;
      limit_ = std::min(options_.max_connections(), std::max(limit_, open_ - opening_));
      limit = limit_;
      growth_delay_ = absl::ZeroDuration();  // reset: a refusal starts over at `initial`
      growth_at_ = now;
      if (!closed) serve_next = TakeWaiterForNewConnectionLocked(now, &next, &next_dial, &unused);
    }
    hook = std::move(first_connect_hook_);
    first_connect_hook_ = nullptr;
    open = open_;
    CheckInvariantsLocked();
  }
  if (recovered) {
    spdlog::info("pool: event=database_reachable failed_attempts={} last_failure_ago={}", failures,
                 Millis(now - last_error_time));
  }
  spdlog::info("pool: event=connect pid={} took={} open={}", slot->db->BackendPid(),
               Millis(now - started), open);
  if (dial.growth) {
    if (limit == options_.max_connections()) {
      spdlog::info("pool: event=connection_limit_lifted limit={} (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
                   limit);
    } else {
      spdlog::info("pool: event=connection_limit_raised limit={} max={}", limit,
                   options_.max_connections());
    }
  }
  if (serve_next) {
    executor_.Post([this, w = std::move(next), next_dial]() mutable {
      ServeNewConnection(std::move(w), next_dial);
    });
  }
  if (hook != nullptr) std::move(hook)(*slot->db);
  if (closed) {
    slot.reset();
    std::move(refused)(absl::UnavailableError(kShuttingDown));
    return;
  }
  slot->request = std::move(request);
  Deliver(std::move(slot), now);
}

void ConnectionPool::OnServerFull(Request request, Dial dial, const absl::Status& refusal,
                                  absl::Time now) {
  const std::string error(refusal.message());
  std::string sqlstate = storage::SqlStateOf(refusal).value_or("53300");
  Callback failed;
  absl::Status failure;
  std::unique_ptr<Slot> idle;
  bool newly_limited;
  bool queued = false;
  bool recovered;
  int limit;
  int open;
  absl::Time probe_at;
  Dispatch dispatch;
  {
    MutexLock lock(&mu_);
    --opening_;
    --open_;
    ++counters_.limit_refusals;
    // The database answered: it is reachable, only full.
    recovered = backoff_.down();
    backoff_.OnSuccess(dial.probe);
    const int max = options_.max_connections();
    newly_limited = limit_ >= max;
    // Connects that were under way count: they may still succeed (and if
    // not, lower the limit in turn).
    limit_ = std::min(limit_, open_);
    const BackoffOptions& o = options_.limit_probe;
    if (dial.growth || newly_limited) {
      if (dial.growth && growth_delay_ > absl::ZeroDuration()) {
        growth_delay_ = std::min(o.max, growth_delay_ * o.multiplier);
      } else {
        growth_delay_ = o.initial;
      }
      growth_in_flight_ = false;
      double scale = 1.0;
      if (o.jitter > 0) scale = absl::Uniform(rng_, 1.0 - o.jitter, 1.0 + o.jitter);
      growth_at_ = now + growth_delay_ * scale;
    }
    last_limit_error_ = error;
    last_limit_sqlstate_ = sqlstate;
    last_limit_error_time_ = now;
    if (closed_) {
      failure = absl::UnavailableError(kShuttingDown);
      failed = DropRequestLocked(&request);
    } else if (!idle_.empty() && MayTakeLocked(*request.client, 1, AvailableLocked())) {
      // A connection came back while this one was being refused.
      idle = std::move(idle_.back());
      idle_.pop_back();
      idle->request = std::move(request);
    } else if (!request.wait) {
      failure = storage::SqlError(
          sqlstate, absl::StrCat("no database connection is free and the database refused "
                                 "another: ",
                                 LimitMessageLocked()));
      failed = DropRequestLocked(&request);
    } else if (static_cast<int>(waiters_.size()) >= options_.max_waiters) {
      ++counters_.waiter_rejections;
      failure = storage::SqlError(
          sqlstate,
          absl::StrCat("too many callers are waiting for a database connection (", waiters_.size(),
                       ", DB_POOL_MAX_WAITERS=", options_.max_waiters, "): ", LimitMessageLocked(),
                       "; retry after a short backoff (100 ms or more)"));
      failed = DropRequestLocked(&request);
    } else {
      Waiter w;
      w.request = std::move(request);
      SetWaitBoundLocked(&w);
      if (w.deadline <= now) {
        ++counters_.checkout_timeouts;
        failure = TimeoutStatusLocked(w, now);
        failed = DropRequestLocked(&w.request);
      } else {
        EnqueueLocked(std::move(w.request));
        queued = true;
      }
    }
    ArmGrowthLocked();
    // A lower limit lowers what the floors may hold back (limit_ - 1).
    if (!reserved_.empty()) ServeEligibleLocked(now, &dispatch);
    limit = limit_;
    open = open_;
    probe_at = growth_in_flight_ ? absl::InfinitePast() : growth_at_;
    CheckInvariantsLocked();
  }
  if (recovered) spdlog::info("pool: event=database_reachable (it refused a connect: full)");
  const std::string probe_in = probe_at == absl::InfinitePast()
                                   ? "probing"
                                   : Millis(std::max(absl::ZeroDuration(), probe_at - now));
  if (newly_limited) {
    spdlog::warn(
        "pool: event=connection_limit limit={} max={} open={} probe_in={} error={} (the database "
        "has no connection slot left for this broker: callers wait for the connections that "
        "work instead of failing, connects still under way may lower the limit further, and "
        "growth resumes by probing)",
        limit, options_.max_connections(), open, probe_in, Quoted(error));
  } else {
    spdlog::info(
        "pool: event=connection_limit_refused limit={} max={} growth_probe={} probe_in={} "
        "error={}",
        limit, options_.max_connections(), dial.growth, probe_in, Quoted(error));
  }
  if (idle != nullptr) {
    executor_.Post([this, slot = std::move(idle)]() mutable { CheckOut(std::move(slot)); });
  } else if (!queued && failed != nullptr) {
    executor_.Post([done = std::move(failed), status = std::move(failure)]() mutable {
      std::move(done)(std::move(status));
    });
  }
  RunDispatch(std::move(dispatch));
}

bool ConnectionPool::RoomLocked(absl::Time now, bool* growth) const {
  *growth = false;
  if (open_ < limit_) return true;
  if (limit_ >= options_.max_connections() || growth_in_flight_ || open_ > limit_ ||
      now < growth_at_) {
    return false;
  }
  *growth = true;
  return true;
}

void ConnectionPool::SetWaitBoundLocked(Waiter* w) const {
  const absl::Time pool_deadline = w->request.requested + options_.timeout;
  w->caller_deadline = w->request.deadline < pool_deadline;
  w->deadline = std::min(w->request.deadline, pool_deadline);
}

void ConnectionPool::EnqueueLocked(Request request) {
  auto at = waiters_.end();
  while (at != waiters_.begin() && std::prev(at)->request.id > request.id) --at;
  auto it = waiters_.emplace(at);
  it->request = std::move(request);
  SetWaitBoundLocked(&*it);
  waiter_index_.emplace(it->request.id, it);
  FileWaiterLocked(it);
  expiry_.ArmBy(it->deadline);
}

void ConnectionPool::ArmGrowthLocked() {
  if (!waiters_.empty() && limit_ < options_.max_connections() && !growth_in_flight_) {
    expiry_.ArmBy(growth_at_);
  }
}

std::string ConnectionPool::LimitMessageLocked() const {
  return absl::StrCat("the database accepts only ", limit_, " of this pool's ",
                      options_.max_connections(), " connections (DB_POOL_SIZE=", options_.pool_size,
                      " + DB_MAX_OVERFLOW=", options_.max_overflow, "): it refused another with \"",
                      last_limit_error_,
                      "\"; the broker grows again when it accepts more (see max_connections "
                      "in docs/operations.md)");
}

void ConnectionPool::SetFirstConnectHook(absl::AnyInvocable<void(storage::DbConnection&) &&> hook) {
  MutexLock lock(&mu_);
  first_connect_hook_ = std::move(hook);
}

void ConnectionPool::RecordServerSettings(const ServerConnectionSettings& settings) {
  MutexLock lock(&mu_);
  server_ = settings;
}

void ConnectionPool::Deliver(std::unique_ptr<Slot> slot, absl::Time now) {
  Request& request = slot->request;
  // Counted before the callback runs: it may give the connection back at
  // once. The client's entry lives while request.client references it. (The
  // checkout counter is derived: connections returned plus those in use.)
  request.client->in_use.fetch_add(1, std::memory_order_relaxed);
  checkout_wait_.Record(now - request.requested, now);
  // Out of the slot first: once the callback has the connection, the slot may
  // go back to the pool and on to another caller while this one still runs.
  Callback done = std::move(request.done);
  std::move(done)(PooledConnection(this, std::move(slot)));
}

void ConnectionPool::Return(std::unique_ptr<Slot> slot, bool broken) {
  const absl::Time now = clock_.Now();
  const int pid = slot->db->BackendPid();
  const bool is_broken = broken || slot->db->IsBroken();
  const bool aged = !is_broken && now >= slot->recycle_at;
  slot->last_used = now;
  Client* client = std::exchange(slot->request.client, nullptr);
  std::unique_ptr<Slot> to_close;
  bool hand_off = false;
  bool overflow = false;
  {
    MutexLock lock(&mu_);
    // Both under mu_, so Stats() counts this checkout exactly once.
    client->in_use.fetch_sub(1, std::memory_order_relaxed);
    ++returned_;
    UnrefClientLocked(client);
    if (is_broken) {
      ++counters_.invalidated;
      to_close = std::move(slot);
    } else if (aged) {
      ++counters_.recycled;
      to_close = std::move(slot);
    } else if (closed_) {
      to_close = std::move(slot);
    } else if (const WaiterList::iterator next =
                   waiters_.empty() ? waiters_.end() : NextWaiterLocked(AvailableLocked() + 1);
               next != waiters_.end()) {
      // Straight to the next waiter: no wake-and-race with newcomers.
      slot->request = TakeWaiterLocked(next).request;
      hand_off = true;
    } else if (static_cast<int>(idle_.size()) >= options_.pool_size) {
      ++counters_.overflow_closed;
      overflow = true;
      to_close = std::move(slot);
    } else {
      idle_.push_back(std::move(slot));
    }
    CheckInvariantsLocked();
  }
  if (is_broken) {
    spdlog::warn("pool: event=invalidate reason={} pid={}",
                 broken ? "marked_broken" : "connection_lost", pid);
  } else if (aged) {
    spdlog::info("pool: event=recycle pid={} at=return", pid);
  } else if (overflow) {
    spdlog::debug("pool: event=overflow_close pid={}", pid);
  }
  if (hand_off) {
    // Posted, not run inline: the waiter's work must not nest inside the
    // returning caller's stack. The slot carries the waiter's request, so
    // posting allocates nothing.
    executor_.Post(
        [this, slot = std::move(slot)]() mutable { Deliver(std::move(slot), clock_.Now()); });
  }
  // Closed outside the lock; its slot stays counted until it really is.
  if (to_close != nullptr) Discard(std::move(to_close));
}

void ConnectionPool::Discard(std::unique_ptr<Slot> slot) {
  // Close first, then free the slot: freed earlier, another thread could open
  // a replacement while this connection still exists, one over the bound.
  slot.reset();
  FreeSlot();
}

void ConnectionPool::FreeSlot() {
  const absl::Time now = clock_.Now();
  Waiter next;
  Dial dial;
  bool serve_next;
  std::list<Waiter> refused;
  std::string refusal;
  {
    MutexLock lock(&mu_);
    --open_;
    serve_next = TakeWaiterForNewConnectionLocked(now, &next, &dial, &refused);
    if (!refused.empty()) refusal = DownMessageLocked(now);
    CheckInvariantsLocked();
  }
  if (serve_next) {
    executor_.Post(
        [this, w = std::move(next), dial]() mutable { ServeNewConnection(std::move(w), dial); });
  }
  Refuse(std::move(refused), refusal);
}

bool ConnectionPool::TakeWaiterForNewConnectionLocked(absl::Time now, Waiter* out, Dial* dial,
                                                      std::list<Waiter>* refused) {
  bool growth = false;
  if (closed_ || waiters_.empty() || !RoomLocked(now, &growth)) return false;
  // The growth probe's slot is above the limit, so not in AvailableLocked().
  const WaiterList::iterator next = NextWaiterLocked(AvailableLocked() + (growth ? 1 : 0));
  if (next == waiters_.end()) return false;
  if (!backoff_.TryStart(now, &dial->probe)) {
    // Each of them would need a connect that may not start now: failing them
    // at once is what they would get from dialing the dead database, minus
    // the dialing.
    UnfileAllWaitersLocked();
    for (Waiter& w : waiters_) UnrefClientLocked(std::exchange(w.request.client, nullptr));
    expiry_.Disarm();
    counters_.backoff_rejections += static_cast<int64_t>(waiters_.size());
    waiter_index_.clear();
    refused->splice(refused->end(), waiters_);
    return false;
  }
  *out = TakeWaiterLocked(next);
  ++open_;
  ++opening_;
  dial->growth = growth;
  if (growth) growth_in_flight_ = true;
  return true;
}

void ConnectionPool::ServeNewConnection(Waiter waiter, Dial dial) {
  OpenAndDeliver(std::move(waiter.request), dial);
}

void ConnectionPool::Refuse(std::list<Waiter> refused, const std::string& message) {
  for (Waiter& w : refused) {
    executor_.Post([done = std::move(w.request.done), message]() mutable {
      std::move(done)(absl::UnavailableError(message));
    });
  }
}

std::string ConnectionPool::DownMessageLocked(absl::Time now) const {
  const absl::Duration ago = now - last_connect_error_time_;
  std::string when;
  if (backoff_.probe_in_flight()) {
    when = "a new attempt is in progress";
  } else {
    when = absl::StrCat("the next attempt is in ",
                        Millis(std::max(absl::ZeroDuration(), backoff_.next_attempt() - now)));
  }
  return absl::StrCat("cannot connect to the database: the last attempt failed ", Millis(ago),
                      " ago (", backoff_.failures(), " in a row) with: ", last_connect_error_, "; ",
                      when,
                      ", so the broker fails calls that need a new connection at "
                      "once instead of dialing for each; retry with backoff");
}

void ConnectionPool::ExpireDue(RearmingTimer::Token token) {
  struct Expired {
    Callback done;
    absl::Status status;
    std::string client;
    absl::Duration waited;
    int still_waiting;
  };
  std::vector<Expired> expired;
  Waiter grow;
  Dial grow_dial;
  bool serve_grow = false;
  std::list<Waiter> refused;
  std::string refusal;
  {
    MutexLock lock(&mu_);
    // A firing replaced while it ran: the newer arming is due no later than
    // every waiter's deadline, so it does the work.
    if (!expiry_.Fired(token)) return;
    const absl::Time now = clock_.Now();
    // One pass over the queue (at most max_waiters), only when the timer
    // fires: the waiters due, and the earliest deadline of the others.
    std::vector<WaiterList::iterator> due;
    absl::Time next = absl::InfiniteFuture();
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (it->deadline <= now) {
        due.push_back(it);
      } else {
        next = std::min(next, it->deadline);
      }
    }
    // Earliest deadline first, then oldest first.
    std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) {
      return std::make_pair(a->deadline, a->request.id) <
             std::make_pair(b->deadline, b->request.id);
    });
    for (const WaiterList::iterator& it : due) {
      Waiter waiter = TakeWaiterLocked(it);
      ++counters_.checkout_timeouts;
      Expired& e = expired.emplace_back();
      e.status = TimeoutStatusLocked(waiter, now);
      e.client = waiter.request.client->name;
      e.waited = now - waiter.request.requested;
      e.still_waiting = static_cast<int>(waiters_.size());
      e.done = DropRequestLocked(&waiter.request);
    }
    // While limited: the growth probe's time may have come (the oldest
    // waiter dials above the limit).
    serve_grow = TakeWaiterForNewConnectionLocked(now, &grow, &grow_dial, &refused);
    if (!refused.empty()) refusal = DownMessageLocked(now);
    // Fired() disarmed the timer; InfiniteFuture (no one left) keeps it so.
    if (!waiters_.empty()) expiry_.ArmBy(next);
    ArmGrowthLocked();
    CheckInvariantsLocked();
  }
  if (serve_grow) {
    executor_.Post([this, w = std::move(grow), grow_dial]() mutable {
      ServeNewConnection(std::move(w), grow_dial);
    });
  }
  Refuse(std::move(refused), refusal);
  for (Expired& e : expired) {
    spdlog::warn("pool: event=checkout_timeout client={} code={} waited={} still_waiting={}",
                 Quoted(e.client), absl::StatusCodeToString(e.status.code()), Millis(e.waited),
                 e.still_waiting);
    // Moved, not copied: see Acquire().
    executor_.Post([done = std::move(e.done), status = std::move(e.status)]() mutable {
      std::move(done)(std::move(status));
    });
  }
}

absl::Status ConnectionPool::TimeoutStatusLocked(const Waiter& w, absl::Time now) const {
  const std::string waited =
      absl::FormatDuration(absl::Trunc(now - w.request.requested, absl::Milliseconds(1)));
  const bool limited = limit_ < options_.max_connections();
  if (w.caller_deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the call's deadline passed after waiting ", waited, " for a database connection (all ",
        open_, " connections in use, ", waiters_.size(), " other callers waiting",
        limited ? absl::StrCat("; ", LimitMessageLocked()) : "", ")"));
  }
  if (limited) {
    // The database's limit held the pool below its size: the 53xxx the
    // database reported, as docs/errors.md maps it.
    return storage::SqlError(
        last_limit_sqlstate_,
        absl::StrCat("no database connection became free within ",
                     absl::FormatDuration(options_.timeout), " (DB_POOL_TIMEOUT): all ", open_,
                     " open connections are in use and ", waiters_.size(),
                     " other callers wait, because ", LimitMessageLocked(),
                     "; retry with backoff, or lower the pool sizes sharing this database"));
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "no database connection became free within ", absl::FormatDuration(options_.timeout),
      " (DB_POOL_TIMEOUT): all ", open_, " connections (DB_POOL_SIZE=", options_.pool_size,
      " + DB_MAX_OVERFLOW=", options_.max_overflow, ") are in use and ", waiters_.size(),
      " other callers wait; retry with backoff, shorten transactions, or raise the pool size"));
}

void ConnectionPool::CancelWait(WaitId id) {
  if (id == 0) return;
  Callback done;
  {
    MutexLock lock(&mu_);
    auto it = waiter_index_.find(id);
    if (it == waiter_index_.end()) return;
    Waiter waiter = TakeWaiterLocked(it->second);
    done = DropRequestLocked(&waiter.request);
    CheckInvariantsLocked();
  }
  executor_.Post([done = std::move(done)]() mutable {
    std::move(done)(absl::CancelledError("the call was cancelled while waiting for a connection"));
  });
}

void ConnectionPool::Close() {
  std::vector<std::unique_ptr<Slot>> idle;
  std::list<Waiter> waiters;
  {
    MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    idle.swap(idle_);
    open_ -= static_cast<int>(idle.size());
    UnfileAllWaitersLocked();
    waiters.swap(waiters_);
    waiter_index_.clear();
    for (Waiter& w : waiters) UnrefClientLocked(std::exchange(w.request.client, nullptr));
    expiry_.Disarm();
    CheckInvariantsLocked();
  }
  idle.clear();  // closes them, outside the lock
  for (Waiter& w : waiters) {
    executor_.Post([done = std::move(w.request.done)]() mutable {
      std::move(done)(absl::UnavailableError(kShuttingDown));
    });
  }
}

absl::Time ConnectionPool::RecycleAtLocked(absl::Time created) {
  if (options_.recycle == absl::InfiniteDuration()) return absl::InfiniteFuture();
  double jitter = 0;
  if (options_.recycle_jitter > 0) jitter = absl::Uniform(rng_, 0.0, options_.recycle_jitter);
  return created + options_.recycle * (1.0 - jitter);
}

void ConnectionPool::CheckInvariantsLocked() const {
#if SB_INVARIANTS_ON
  const int max = options_.max_connections();
  const int idle = static_cast<int>(idle_.size());
  const int waiting = static_cast<int>(waiters_.size());
  // The shape: open = idle + in use + opening, with in use (the rest) never
  // negative, and never more than the bound.
  SB_DCHECK(opening_ >= 0);
  SB_DCHECK(idle + opening_ <= open_);
  SB_DCHECK(open_ <= max);
  SB_DCHECK(idle <= options_.pool_size);  // extras are closed on return
  SB_DCHECK(waiting <= options_.max_waiters);
  // A closed pool keeps nothing idle and no one waiting.
  SB_DCHECK(!closed_ || (idle == 0 && waiting == 0));
  // The effective limit: within the bound. (Open connections may exceed it
  // for a while: a growth probe under way, or a replacement's connect after
  // a refusal lowered it; no new slot opens until they are back under it.)
  SB_DCHECK(limit_ >= 0 && limit_ <= max);
  SB_DCHECK(!growth_in_flight_ || (opening_ >= 1 && limit_ < max));
  // No one waits while a connection is idle or a slot is free: a returned
  // connection goes to the oldest waiter, a freed slot opens one for it;
  // unless the reserved floors hold them back, and then from no waiter of a
  // client below its floor.
  if (waiting > 0 && (idle > 0 || open_ < limit_)) {
    SB_DCHECK(!reserved_.empty());
    SB_DCHECK(AvailableLocked() <= HeldBackLocked());
    for (const Client* client : reserved_) {
      SB_DCHECK(client->queue.empty() || HeldLocked(*client) >= client->quota.reserved_connections);
    }
  }
  // Only one connect probes the database while it is down.
  SB_DCHECK(!backoff_.probe_in_flight() || opening_ >= 1);

  // The waiter index indexes exactly the queue; ids grow from front to back;
  // the expiry timer is due no later than the earliest deadline.
  SB_DCHECK(waiter_index_.size() == waiters_.size());
  WaitId previous_id = 0;
  absl::Time earliest = absl::InfiniteFuture();
  absl::flat_hash_map<const Client*, int> waiting_per_client;
  for (const Waiter& w : waiters_) {
    SB_DCHECK(w.request.id > previous_id && w.request.id < next_wait_id_);
    previous_id = w.request.id;
    const auto it = waiter_index_.find(w.request.id);
    SB_DCHECK(it != waiter_index_.end() && &*it->second == &w);
    SB_DCHECK(w.request.client != nullptr && w.request.done != nullptr);
    ++waiting_per_client[w.request.client];
    earliest = std::min(earliest, w.deadline);
  }
  SB_DCHECK(waiting == 0 || expiry_.due() <= earliest);

  // Clients: every reference is a waiter, a request on its way to a
  // connection (holding a slot counted in open_, not idle), or a connection
  // checked out (counted in in_use, also such a slot). in_use is counted up
  // outside mu_, so it may lag behind its reference, never run ahead.
  SB_DCHECK(clients_.contains(absl::string_view()) && anonymous_->refs >= 1);
  // The pool's own references: to the anonymous client and the reserved ones.
  int refs = -1 - static_cast<int>(reserved_.size());
  for (const Client* client : reserved_) {
    SB_DCHECK(client->reserved && client->refs >= 1 && client != anonymous_);
  }
  int in_use = 0;
  int unreferenced = 0;
  for (const auto& [name, client] : clients_) {
    const int client_in_use = client->in_use.load(std::memory_order_relaxed);
    const auto w = waiting_per_client.find(client.get());
    const int client_waiting = w == waiting_per_client.end() ? 0 : w->second;
    SB_DCHECK(name == client->name);
    SB_DCHECK(client->refs >= 0 && client_in_use >= 0);
    SB_DCHECK(client->refs >= client_waiting + client_in_use + (client.get() == anonymous_) +
                                  (client->reserved ? 1 : 0));
    // Its queue is exactly its waiters, in id order, and it is in the ring
    // exactly while it has some.
    SB_DCHECK(static_cast<int>(client->queue.size()) == client_waiting);
    SB_DCHECK(client->queue.empty() || client->deficit >= 0);
    WaitId previous = 0;
    for (const WaiterList::iterator& q : client->queue) {
      SB_DCHECK(q->request.client == client.get() && q->request.id > previous);
      previous = q->request.id;
    }
    refs += client->refs;
    in_use += client_in_use;
    if (client->refs == 0) ++unreferenced;
  }
  SB_DCHECK(waiting_per_client.size() <= clients_.size());
  SB_DCHECK(ring_.size() == waiting_per_client.size());
  SB_DCHECK(unreferenced == unreferenced_clients_);
  SB_DCHECK(unreferenced_clients_ <= kMaxUnreferencedClients);
  SB_DCHECK(refs - waiting <= open_ - idle);
  SB_DCHECK(in_use <= open_ - idle - opening_);
#endif
}

PoolStats ConnectionPool::Stats() const {
  const absl::Time now = clock_.Now();
  MutexLock lock(&mu_);
  PoolStats s = counters_;
  s.open = open_;
  s.idle = static_cast<int>(idle_.size());
  s.opening = opening_;
  s.in_use = open_ - s.idle - opening_;
  s.overflow_in_use = std::max(0, open_ - options_.pool_size);
  s.waiters = static_cast<int>(waiters_.size());
  s.oldest_wait =
      waiters_.empty() ? absl::ZeroDuration() : now - waiters_.front().request.requested;
  s.database_down = backoff_.down();
  s.connect_failures_in_row = backoff_.failures();
  s.next_connect_attempt = backoff_.down() ? backoff_.next_attempt() : absl::InfinitePast();
  s.last_connect_error = last_connect_error_;
  s.last_connect_error_time = last_connect_error_time_;
  s.connection_limit = limit_;
  s.next_limit_probe =
      limit_ < options_.max_connections() && !growth_in_flight_ ? growth_at_ : absl::InfinitePast();
  s.last_limit_error = last_limit_error_;
  s.last_limit_error_time = last_limit_error_time_;
  s.server = server_;
  // Every checkout delivered is either back or still in use.
  s.checkouts = returned_;
  for (const auto& [name, client] : clients_) {
    const int in_use = client->in_use.load(std::memory_order_relaxed);
    s.checkouts += in_use;
    if (in_use == 0 && client->queue.empty() && client->rejections == 0) continue;
    ClientUsage& usage = s.clients[std::string(name)];
    usage.in_use = in_use;
    usage.waiting = static_cast<int>(client->queue.size());
    usage.quota = client->quota;
    usage.rejections = client->rejections;
  }
  return s;
}

}  // namespace sessionbroker::core
