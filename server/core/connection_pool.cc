#include "server/core/connection_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {

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
      clock_(clock) {}

ConnectionPool::~ConnectionPool() { Close(); }

ConnectionPool::WaitId ConnectionPool::Acquire(const AcquireRequest& request, Callback done) {
  const absl::Time now = clock_.Now();
  std::unique_ptr<Slot> idle;
  bool open_new = false;
  absl::Status error;
  WaitId id = 0;
  {
    MutexLock lock(&mu_);
    const int max = options_.max_connections();
    if (closed_) {
      error = absl::UnavailableError(
          "the broker is shutting down and takes no new work; retry on another instance");
    } else if (request.deadline <= now) {
      error = absl::DeadlineExceededError(
          "the call's deadline had already passed before a database connection was requested");
    } else if (waiters_.empty() && !idle_.empty()) {
      // LIFO: the most recently returned connection is the warmest.
      idle = std::move(idle_.back());
      idle_.pop_back();
    } else if (waiters_.empty() && open_ < max) {
      ++open_;
      ++opening_;
      open_new = true;
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
    executor_.Post([this, done = std::move(done)]() mutable { OpenAndDeliver(std::move(done)); });
  }
  return id;
}

void ConnectionPool::CheckOut(std::unique_ptr<Slot> slot, Callback done) {
  const absl::Time now = clock_.Now();
  if (now >= slot->recycle_at) {
    {
      MutexLock lock(&mu_);
      ++counters_.recycled;
      ++opening_;
    }
    spdlog::debug("pool: recycling connection pid={} age={}", slot->db->BackendPid(),
                  absl::FormatDuration(now - slot->created));
    slot.reset();
    OpenAndDeliver(std::move(done));
    return;
  }
  if (options_.pre_ping && now - slot->last_used >= options_.pre_ping_after) {
    const absl::Status ping = slot->db->Ping();
    if (!ping.ok()) {
      {
        MutexLock lock(&mu_);
        ++counters_.pre_ping_failures;
        ++counters_.invalidated;
        ++opening_;
      }
      spdlog::warn("pool: pre-ping failed, replacing connection pid={}: {}",
                   slot->db->BackendPid(), ping.ToString());
      slot.reset();
      OpenAndDeliver(std::move(done));
      return;
    }
    slot->last_used = clock_.Now();
  }
  Deliver(std::move(done), PooledConnection(this, std::move(slot)));
}

void ConnectionPool::OpenAndDeliver(Callback done) {
  absl::StatusOr<std::unique_ptr<storage::DbConnection>> db = connector_.Connect();
  if (!db.ok()) {
    Waiter next;
    bool serve_next;
    {
      MutexLock lock(&mu_);
      --opening_;
      --open_;
      ++counters_.connect_failures;
      // The slot is free again; let the oldest waiter try (and fail fast if
      // the database is down, rather than wait out its whole timeout).
      serve_next = TakeWaiterForNewConnectionLocked(&next);
    }
    spdlog::warn("pool: connect failed: {}", db.status().ToString());
    if (serve_next) {
      executor_.Post([this, w = std::move(next)]() mutable { ServeNewConnection(std::move(w)); });
    }
    std::move(done)(db.status());
    return;
  }
  auto slot = std::make_unique<Slot>();
  slot->db = *std::move(db);
  slot->created = slot->last_used = clock_.Now();
  bool closed;
  {
    MutexLock lock(&mu_);
    --opening_;
    ++counters_.connects;
    slot->recycle_at = RecycleAtLocked(slot->created);
    closed = closed_;
    if (closed) --open_;
  }
  spdlog::debug("pool: connected pid={}", slot->db->BackendPid());
  if (closed) {
    slot.reset();
    std::move(done)(absl::UnavailableError(
        "the broker is shutting down and takes no new work; retry on another instance"));
    return;
  }
  Deliver(std::move(done), PooledConnection(this, std::move(slot)));
}

void ConnectionPool::Deliver(Callback done, absl::StatusOr<PooledConnection> result) {
  if (result.ok()) {
    MutexLock lock(&mu_);
    ++counters_.checkouts;
  }
  std::move(done)(std::move(result));
}

void ConnectionPool::Return(std::unique_ptr<Slot> slot, bool broken) {
  if (broken || slot->db->IsBroken()) {
    {
      MutexLock lock(&mu_);
      ++counters_.invalidated;
    }
    spdlog::info("pool: discarding broken connection pid={}", slot->db->BackendPid());
    Discard(std::move(slot));
    return;
  }
  const absl::Time now = clock_.Now();
  slot->last_used = now;
  if (now >= slot->recycle_at) {
    {
      MutexLock lock(&mu_);
      ++counters_.recycled;
    }
    Discard(std::move(slot));
    return;
  }
  std::unique_ptr<Slot> to_close;
  Callback waiter_done;
  {
    MutexLock lock(&mu_);
    if (closed_) {
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
      to_close = std::move(slot);
    } else {
      idle_.push_back(std::move(slot));
    }
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
  Waiter next;
  bool serve_next;
  {
    MutexLock lock(&mu_);
    --open_;
    serve_next = TakeWaiterForNewConnectionLocked(&next);
  }
  if (serve_next) {
    executor_.Post([this, w = std::move(next)]() mutable { ServeNewConnection(std::move(w)); });
  }
}

bool ConnectionPool::TakeWaiterForNewConnectionLocked(Waiter* out) {
  if (closed_ || waiters_.empty() || open_ >= options_.max_connections()) return false;
  *out = std::move(waiters_.front());
  waiter_index_.erase(out->id);
  waiters_.pop_front();
  timers_.Cancel(out->timer);
  ++open_;
  ++opening_;
  return true;
}

void ConnectionPool::ServeNewConnection(Waiter waiter) { OpenAndDeliver(std::move(waiter.done)); }

void ConnectionPool::ExpireWaiter(WaitId id) {
  Waiter waiter;
  absl::Status status;
  {
    MutexLock lock(&mu_);
    auto it = waiter_index_.find(id);
    if (it == waiter_index_.end()) return;  // served or withdrawn meanwhile
    waiter = std::move(*it->second);
    waiters_.erase(it->second);
    waiter_index_.erase(it);
    ++counters_.checkout_timeouts;
    status = TimeoutStatusLocked(waiter, clock_.Now());
  }
  spdlog::info("pool: checkout timed out: {}", status.ToString());
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
      std::move(done)(absl::UnavailableError(
          "the broker is shutting down and takes no new work; retry on another instance"));
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
  return s;
}

}  // namespace sessionbroker::core
