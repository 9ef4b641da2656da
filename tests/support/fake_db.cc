#include "tests/support/fake_db.h"

#include <utility>

#include "server/storage/sql_error.h"

namespace sessionbroker::testing {

FakeConnection::FakeConnection(FakeConnector* owner, int id) : owner_(owner), id_(id) {}

FakeConnection::~FakeConnection() { owner_->Closed(id_); }

absl::StatusOr<storage::QueryResult> FakeConnection::Execute(const storage::Statement& statement,
                                                             const storage::ExecuteOptions&) {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  {
    core::MutexLock lock(&mu_);
    if (block_until_cancel_.load()) {
      executing_ = true;
      changed_.SignalAll();
      while (!cancelled_) changed_.Wait(&mu_);
      executing_ = false;
    }
    if (cancelled_) return storage::SqlError("57014", "canceling statement due to user request");
  }
  storage::QueryResult result;
  result.command_tag = "SELECT 1";
  result.rows_affected = 1;
  result.columns.push_back({"sql", 25, "text"});
  result.rows.push_back({storage::Value::String(statement.sql)});
  return result;
}

absl::StatusOr<std::vector<storage::QueryResult>> FakeConnection::ExecuteBatch(
    absl::Span<const storage::Statement> statements, const storage::ExecuteOptions& options) {
  std::vector<storage::QueryResult> results;
  for (const storage::Statement& s : statements) {
    auto r = Execute(s, options);
    if (!r.ok()) return r.status();
    results.push_back(*std::move(r));
  }
  return results;
}

void FakeConnection::Cancel() {
  cancels_.fetch_add(1);
  if (ignore_cancels_.load() > 0) {
    ignore_cancels_.fetch_sub(1);
    return;
  }
  core::MutexLock lock(&mu_);
  cancelled_ = true;
  changed_.SignalAll();
}

void FakeConnection::ClearCancel() {
  core::MutexLock lock(&mu_);
  cancelled_ = false;
}

void FakeConnection::WaitUntilExecuting() {
  core::MutexLock lock(&mu_);
  while (!executing_) changed_.Wait(&mu_);
}

absl::Status FakeConnection::Ping() {
  pings_.fetch_add(1);
  if (ping_fails_.load() || broken_.load()) {
    broken_.store(true);
    return absl::UnavailableError("fake ping failed");
  }
  return absl::OkStatus();
}

absl::Status FakeConnection::ResetSession() {
  resets_.fetch_add(1);
  return broken_.load() ? absl::UnavailableError("fake connection is broken") : absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<storage::DbConnection>> FakeConnector::Connect() {
  if (fail_connects_.load()) return absl::UnavailableError("fake database is down");
  core::MutexLock lock(&mu_);
  const int id = static_cast<int>(by_id_.size()) + 1;
  auto conn = std::make_unique<FakeConnection>(this, id);
  by_id_.push_back(conn.get());
  connects_.fetch_add(1);
  const int now_live = live_.fetch_add(1) + 1;
  int seen = max_live_.load();
  while (now_live > seen && !max_live_.compare_exchange_weak(seen, now_live)) {
  }
  return std::unique_ptr<storage::DbConnection>(std::move(conn));
}

FakeConnection* FakeConnector::connection(int id) {
  core::MutexLock lock(&mu_);
  if (id < 1 || id > static_cast<int>(by_id_.size())) return nullptr;
  return by_id_[id - 1];
}

void FakeConnector::Closed(int id) {
  live_.fetch_sub(1);
  core::MutexLock lock(&mu_);
  by_id_[id - 1] = nullptr;
}

void ManualExecutor::Post(absl::AnyInvocable<void() &&> task) {
  core::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

bool ManualExecutor::RunOne() {
  absl::AnyInvocable<void() &&> task;
  {
    core::MutexLock lock(&mu_);
    if (tasks_.empty()) return false;
    task = std::move(tasks_.front());
    tasks_.pop_front();
  }
  std::move(task)();
  return true;
}

int ManualExecutor::RunAll() {
  int n = 0;
  while (RunOne()) ++n;
  return n;
}

size_t ManualExecutor::queued() const {
  core::MutexLock lock(&mu_);
  return tasks_.size();
}

}  // namespace sessionbroker::testing
