#include "server/core/pool/health_checker.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {

HealthChecker::HealthChecker(ConnectionPool& pool, TimerQueue& timers, const Clock& clock,
                             absl::Duration interval, Listener listener)
    : pool_(pool),
      timers_(timers),
      clock_(clock),
      interval_(interval),
      listener_(std::move(listener)) {}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Start() { Probe(); }

void HealthChecker::Stop() {
  TimerQueue::TimerId next;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    next = std::exchange(next_, 0);
  }
  if (next != 0) timers_.CancelAndWait(next);
}

void HealthChecker::Probe() {
  {
    MutexLock lock(&mu_);
    if (stopped_) return;
    next_ = 0;
  }
  // A probe never queues: with every connection busy it learns nothing and
  // leaves the state as it is.
  AcquireRequest request;
  request.wait = false;
  request.client_id = kHealthClientId;
  pool_.Acquire(request, [this](absl::StatusOr<PooledConnection> conn) {
    absl::Status status;
    if (conn.ok()) {
      status = (*conn)->Ping();
      if (!status.ok()) conn->MarkBroken();
      conn->Release();
    } else {
      status = conn.status();
    }
    Report(status);
    MutexLock lock(&mu_);
    if (!stopped_) next_ = timers_.Schedule(clock_.Now() + interval_, [this] { Probe(); });
  });
}

void HealthChecker::Report(const absl::Status& status) {
  // The database refused a connection for lack of slots (53xxx): it
  // answered, so it is up; only full (the pool waits for the connections it
  // has, see connection_pool.h).
  const std::optional<std::string> sqlstate = storage::SqlStateOf(status);
  if (status.code() == absl::StatusCode::kResourceExhausted && sqlstate.has_value() &&
      absl::StartsWith(*sqlstate, "53")) {
    Report(absl::OkStatus());
    return;
  }
  const bool saturated = status.code() == absl::StatusCode::kResourceExhausted ||
                         status.code() == absl::StatusCode::kDeadlineExceeded;
  bool changed;
  bool serving;
  {
    MutexLock lock(&mu_);
    if (stopped_) return;
    // Not the database's error either: it would show as database.last_error
    // and move the last-error timestamp alerts watch, for a busy pool.
    if (saturated && reported_) return;  // a busy pool says nothing about the database
    if (!status.ok() && !saturated) {
      last_error_ = status;
      last_error_time_ = clock_.Now();
    }
    serving = status.ok();
    changed = !reported_ || serving != serving_;
    reported_ = true;
    serving_ = serving;
  }
  if (!changed) return;
  if (serving) {
    spdlog::info("health: database reachable, SERVING");
  } else {
    spdlog::error("health: database unreachable, NOT_SERVING: {}", status.ToString());
  }
  listener_(serving);
}

bool HealthChecker::serving() const {
  MutexLock lock(&mu_);
  return serving_;
}

absl::Status HealthChecker::last_error() const {
  MutexLock lock(&mu_);
  return last_error_;
}

std::string HealthChecker::last_error_message() const {
  MutexLock lock(&mu_);
  return std::string(last_error_.message());
}

absl::Time HealthChecker::last_error_time() const {
  MutexLock lock(&mu_);
  return last_error_time_;
}

}  // namespace sessionbroker::core
