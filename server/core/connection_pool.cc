#include "server/core/connection_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/log_fields.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

constexpr char kShuttingDown[] =
    "the broker is shutting down and takes no new work; retry on another instance";

}  // namespace

// ---- PooledConnection ----

PooledConnection::PooledConnection(PooledConnection&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      slot_(std::move(other.slot_)),
      broken_(std::exchange(other.broken_, false)) {}

PooledConnection& PooledConnection::operator=(PooledConnection&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = std::exchange(other.pool_, nullptr);
    slot_ = std::move(other.slot_);
    broken_ = std::exchange(other.broken_, false);
  }
  return *this;
}

PooledConnection::~PooledConnection() { Release(); }

void PooledConnection::Release() {
  if (slot_ == nullptr) return;
  ConnectionPool* pool = std::exchange(pool_, nullptr);
  pool->Return(std::move(slot_), std::exchange(broken_, false));
}

// ---- ConnectionPool ----

ConnectionPool::ConnectionPool(PoolOptions options, storage::DbConnector& connector,
                               Executor& executor, TimerQueue& timers, const Clock& clock)
    : options_(std::move(options)),
      connector_(connector),
      executor_(executor),
      timers_(timers),
      clock_(clock),
      backoff_(options_.reconnect_backoff),
      checkout_wait_(clock) {}

ConnectionPool::~ConnectionPool() { Close(); }

ConnectionPool::Callback ConnectionPool::Accounted(Callback done, std::string client,
                                                   absl::Time requested) {
  return [this, client = std::move(client), requested,
          done = std::move(done)](absl::StatusOr<PooledConnection> result) mutable {
    if (result.ok()) {
      checkout_wait_.Record(clock_.Now() - requested);
      {
        MutexLock lock(&mu_);
        ++counters_.checkouts;
        ++in_use_by_client_[client];
      }
      result->slot_->client = std::move(client);
    }
    std::move(done)(std::move(result));
  };
}

void ConnectionPool::ForgetCheckoutLocked(const std::string& client) {
  auto it = in_use_by_client_.find(client);
  if (it != in_use_by_client_.end() && --it->second <= 0) in_use_by_client_.erase(it);
}

ConnectionPool::WaitId ConnectionPool::Acquire(const AcquireRequest& request, Callback done) {
  const absl::Time now = clock_.Now();
  done = Accounted(std::move(done), request.client_id, now);
  std::unique_ptr<Slot> idle;
  bool open_new = false;
  bool probe = false;
  absl::Status error;
  WaitId id = 0;
  {
    MutexLock lock(&mu_);
    const int max = options_.max_connections();
    if (closed_) {
      error = absl::UnavailableError(kShuttingDown);
    } else if (request.deadline <= now) {
      error = absl::DeadlineExceededError(
          "the call's deadline had already passed before a database connection was requested");
    } else if (waiters_.empty() && !idle_.empty()) {
      // LIFO: the most recently returned connection is the warmest.
      idle = std::move(idle_.back());
      idle_.pop_back();
    } else if (waiters_.empty() && open_ < max) {
      if (backoff_.TryStart(now, &probe)) {
        ++open_;
        ++opening_;
        open_new = true;
      } else {
        ++counters_.backoff_rejections;
        error = absl::UnavailableError(DownMessageLocked(now));
      }
    } else if (!request.wait) {
      error = absl::ResourceExhaustedError(
          absl::StrCat("all ", open_, " database connections are in use"));
    } else if (static_cast<int>(waiters_.size()) >= options_.max_waiters) {
      ++counters_.waiter_rejections;
      error = absl::ResourceExhaustedError(absl::StrCat(
          "too many callers are waiting for a database connection: all ", open_,
          " connections are in use and ", waiters_.size(),
          " callers already wait (DB_POOL_MAX_WAITERS=", options_.max_waiters,
          "); retry after a short backoff (100 ms or more)"));
    } else {
      const absl::Time pool_deadline = now + options_.timeout;
      Waiter waiter;
      waiter.id = id = next_wait_id_++;
      waiter.enqueued = now;
      waiter.caller_deadline = request.deadline < pool_deadline;
      waiter.deadline = std::min(request.deadline, pool_deadline);
      waiter.client = request.client_id;
      waiter.done = std::move(done);
      waiter.timer = timers_.Schedule(waiter.deadline, [this, id] { ExpireWaiter(id); });
      waiters_.push_back(std::move(waiter));
      waiter_index_.emplace(id, std::prev(waiters_.end()));
    }
  }
  if (!error.ok()) {
    // Moved, not copied: a Status shared between threads has its refcount
    // dropped inside Debian's uninstrumented Abseil, which ThreadSanitizer
    // cannot see (a false race report on the final delete).
    executor_.Post([done = std::move(done), error = std::move(error)]() mutable {
      std::move(done)(std::move(error));
    });
  } else if (idle != nullptr) {
    executor_.Post([this, idle = std::move(idle), done = std::move(done)]() mutable {
      CheckOut(std::move(idle), std::move(done));
    });
  } else if (open_new) {
    executor_.Post([this, done = std::move(done), probe]() mutable {
      OpenAndDeliver(std::move(done), probe);
    });
  }
  return id;
}

void ConnectionPool::CheckOut(std::unique_ptr<Slot> slot, Callback done) {
  const absl::Time now = clock_.Now();
  if (now >= slot->recycle_at) {
    {
      MutexLock lock(&mu_);
      ++counters_.recycled;
    }
    spdlog::info("pool: event=recycle pid={} age={} at=checkout", slot->db->BackendPid(),
                 Millis(now - slot->created));
    Replace(std::move(slot), std::move(done));
    return;
  }
  if (options_.pre_ping && now - slot->last_used >= options_.pre_ping_after) {
    const absl::Status ping = slot->db->Ping();
    if (!ping.ok()) {
      {
        MutexLock lock(&mu_);
        ++counters_.pre_ping_failures;
        ++counters_.invalidated;
      }
      spdlog::warn("pool: event=invalidate reason=pre_ping_failed pid={} idle={} error={}",
                   slot->db->BackendPid(), Millis(now - slot->last_used),
                   Quoted(ping.message()));
      Replace(std::move(slot), std::move(done));
      return;
    }
    slot->last_used = clock_.Now();
  }
  Deliver(std::move(done), PooledConnection(this, std::move(slot)));
}

void ConnectionPool::Replace(std::unique_ptr<Slot> slot, Callback done) {
  slot.reset();  // closed first; its slot stays counted in open_ for the new one
  const absl::Time now = clock_.Now();
  bool probe = false;
  bool allowed;
  std::string refusal;
  {
    MutexLock lock(&mu_);
    allowed = backoff_.TryStart(now, &probe);
    if (allowed) {
      ++opening_;
    } else {
      ++counters_.backoff_rejections;
      refusal = DownMessageLocked(now);
    }
  }
  if (allowed) {
    OpenAndDeliver(std::move(done), probe);
    return;
  }
  FreeSlot();
  std::move(done)(absl::UnavailableError(refusal));
}

void ConnectionPool::OpenAndDeliver(Callback done, bool probe) {
  const absl::Time started = clock_.Now();
  absl::StatusOr<std::unique_ptr<storage::DbConnection>> db = connector_.Connect();
  const absl::Time now = clock_.Now();
  if (!db.ok()) {
    Waiter next;
    bool next_probe = false;
    bool serve_next;
    std::list<Waiter> refused;
    std::string refusal;
    bool went_down;
    bool rationed;
    int failures;
    absl::Time next_attempt;
    {
      MutexLock lock(&mu_);
      --opening_;
      --open_;
      ++counters_.connect_failures;
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
      serve_next = TakeWaiterForNewConnectionLocked(now, &next, &next_probe, &refused);
      if (!refused.empty()) refusal = DownMessageLocked(now);
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
      executor_.Post([this, w = std::move(next), next_probe]() mutable {
        ServeNewConnection(std::move(w), next_probe);
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
  absl::Time last_error_time;
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
    if (closed) --open_;
    open = open_;
  }
  if (recovered) {
    spdlog::info("pool: event=database_reachable failed_attempts={} last_failure_ago={}",
                 failures, Millis(now - last_error_time));
  }
  spdlog::info("pool: event=connect pid={} took={} open={}", slot->db->BackendPid(),
               Millis(now - started), open);
  if (closed) {
    slot.reset();
    std::move(done)(absl::UnavailableError(kShuttingDown));
    return;
  }
  Deliver(std::move(done), PooledConnection(this, std::move(slot)));
}

void ConnectionPool::Deliver(Callback done, absl::StatusOr<PooledConnection> result) {
  std::move(done)(std::move(result));
}

void ConnectionPool::Return(std::unique_ptr<Slot> slot, bool broken) {
  const absl::Time now = clock_.Now();
  const int pid = slot->db->BackendPid();
  const bool is_broken = broken || slot->db->IsBroken();
  const bool aged = !is_broken && now >= slot->recycle_at;
  slot->last_used = now;
  std::unique_ptr<Slot> to_close;
  Callback waiter_done;
  bool overflow = false;
  {
    MutexLock lock(&mu_);
    ForgetCheckoutLocked(slot->client);
    slot->client.clear();
    if (is_broken) {
      ++counters_.invalidated;
      to_close = std::move(slot);
    } else if (aged) {
      ++counters_.recycled;
      to_close = std::move(slot);
    } else if (closed_) {
      to_close = std::move(slot);
    } else if (!waiters_.empty()) {
      // Straight to the oldest waiter: no wake-and-race with newcomers.
      Waiter& w = waiters_.front();
      timers_.Cancel(w.timer);
      waiter_done = std::move(w.done);
      waiter_index_.erase(w.id);
      waiters_.pop_front();
    } else if (static_cast<int>(idle_.size()) >= options_.pool_size) {
      ++counters_.overflow_closed;
      overflow = true;
      to_close = std::move(slot);
    } else {
      idle_.push_back(std::move(slot));
    }
  }
  if (is_broken) {
    spdlog::warn("pool: event=invalidate reason={} pid={}",
                 broken ? "marked_broken" : "connection_lost", pid);
  } else if (aged) {
    spdlog::info("pool: event=recycle pid={} at=return", pid);
  } else if (overflow) {
    spdlog::debug("pool: event=overflow_close pid={}", pid);
  }
  if (waiter_done) {
    // Posted, not run inline: the waiter's work must not nest inside the
    // returning caller's stack.
    executor_.Post([this, slot = std::move(slot), done = std::move(waiter_done)]() mutable {
      Deliver(std::move(done), PooledConnection(this, std::move(slot)));
    });
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
  bool probe = false;
  bool serve_next;
  std::list<Waiter> refused;
  std::string refusal;
  {
    MutexLock lock(&mu_);
    --open_;
    serve_next = TakeWaiterForNewConnectionLocked(now, &next, &probe, &refused);
    if (!refused.empty()) refusal = DownMessageLocked(now);
  }
  if (serve_next) {
    executor_.Post([this, w = std::move(next), probe]() mutable {
      ServeNewConnection(std::move(w), probe);
    });
  }
  Refuse(std::move(refused), refusal);
}

bool ConnectionPool::TakeWaiterForNewConnectionLocked(absl::Time now, Waiter* out, bool* probe,
                                                      std::list<Waiter>* refused) {
  if (closed_ || waiters_.empty() || open_ >= options_.max_connections()) return false;
  if (!backoff_.TryStart(now, probe)) {
    // Each of them would need a connect that may not start now: failing them
    // at once is what they would get from dialing the dead database, minus
    // the dialing.
    for (Waiter& w : waiters_) timers_.Cancel(w.timer);
    counters_.backoff_rejections += static_cast<int64_t>(waiters_.size());
    waiter_index_.clear();
    refused->splice(refused->end(), waiters_);
    return false;
  }
  *out = std::move(waiters_.front());
  waiter_index_.erase(out->id);
  waiters_.pop_front();
  timers_.Cancel(out->timer);
  ++open_;
  ++opening_;
  return true;
}

void ConnectionPool::ServeNewConnection(Waiter waiter, bool probe) {
  OpenAndDeliver(std::move(waiter.done), probe);
}

void ConnectionPool::Refuse(std::list<Waiter> refused, const std::string& message) {
  for (Waiter& w : refused) {
    executor_.Post([done = std::move(w.done), message]() mutable {
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
                      " ago (", backoff_.failures(), " in a row) with: ", last_connect_error_,
                      "; ", when, ", so the broker fails calls that need a new connection at "
                      "once instead of dialing for each; retry with backoff");
}

void ConnectionPool::ExpireWaiter(WaitId id) {
  Waiter waiter;
  absl::Status status;
  int waiting;
  {
    MutexLock lock(&mu_);
    auto it = waiter_index_.find(id);
    if (it == waiter_index_.end()) return;  // served or withdrawn meanwhile
    waiter = std::move(*it->second);
    waiters_.erase(it->second);
    waiter_index_.erase(it);
    ++counters_.checkout_timeouts;
    status = TimeoutStatusLocked(waiter, clock_.Now());
    waiting = static_cast<int>(waiters_.size());
  }
  spdlog::warn("pool: event=checkout_timeout client={} code={} waited={} still_waiting={}",
               Quoted(waiter.client), absl::StatusCodeToString(status.code()),
               Millis(clock_.Now() - waiter.enqueued), waiting);
  // Moved, not copied: see Acquire().
  executor_.Post([done = std::move(waiter.done), status = std::move(status)]() mutable {
    std::move(done)(std::move(status));
  });
}

absl::Status ConnectionPool::TimeoutStatusLocked(const Waiter& w, absl::Time now) const {
  const std::string waited = absl::FormatDuration(absl::Trunc(now - w.enqueued, absl::Milliseconds(1)));
  if (w.caller_deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the call's deadline passed after waiting ", waited,
        " for a database connection (all ", open_, " connections in use, ", waiters_.size(),
        " other callers waiting)"));
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
    timers_.Cancel(it->second->timer);
    done = std::move(it->second->done);
    waiters_.erase(it->second);
    waiter_index_.erase(it);
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
    waiters.swap(waiters_);
    waiter_index_.clear();
    for (Waiter& w : waiters) timers_.Cancel(w.timer);
  }
  idle.clear();  // closes them, outside the lock
  for (Waiter& w : waiters) {
    executor_.Post([done = std::move(w.done)]() mutable {
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
  s.oldest_wait = waiters_.empty() ? absl::ZeroDuration() : now - waiters_.front().enqueued;
  s.database_down = backoff_.down();
  s.connect_failures_in_row = backoff_.failures();
  s.next_connect_attempt = backoff_.down() ? backoff_.next_attempt() : absl::InfinitePast();
  s.last_connect_error = last_connect_error_;
  s.last_connect_error_time = last_connect_error_time_;
  for (const auto& [client, n] : in_use_by_client_) s.clients[client].in_use = n;
  for (const Waiter& w : waiters_) ++s.clients[w.client].waiting;
  return s;
}

}  // namespace sessionbroker::core
