#include "tests/support/fake_db.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::testing {

FakeConnection::FakeConnection(FakeConnector* owner, int id) : owner_(owner), id_(id) {}

FakeConnection::~FakeConnection() { owner_->Closed(id_); }

absl::StatusOr<storage::QueryResult> FakeConnection::Execute(
    const storage::Statement& statement, const storage::ExecuteOptions& options) {
  absl::StatusOr<storage::QueryResult> out = ExecuteStatement(statement);
  // As the real connection does: the reset follows the statement, whatever
  // its outcome.
  if (options.reset_session_after && !broken_.load()) ResetSession().IgnoreError();
  return out;
}

absl::StatusOr<storage::QueryResult> FakeConnection::ExecuteStatement(
    const storage::Statement& statement) {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  if (std::optional<absl::StatusOr<storage::QueryResult>> answer = owner_->AnswerFor(statement.sql);
      answer.has_value()) {
    return *std::move(answer);
  }
  {
    core::MutexLock lock(&mu_);
    if (block_until_cancel_.load()) {
      executing_ = true;
      changed_.SignalAll();
      while (!cancelled_) changed_.Wait(&mu_);
      executing_ = false;
    }
    if (cancelled_) return storage::SqlError("57014", "canceling statement due to user request");
    log_.push_back(statement.sql);
    if (!failing_sql_.empty() && statement.sql == failing_sql_) return failing_status_;
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
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  if (absl::Status begun = Begin(options.transaction); !begun.ok()) return begun;
  std::vector<storage::QueryResult> results;
  for (const storage::Statement& s : statements) {
    auto r = Execute(s, options);
    if (!r.ok()) {
      Rollback().IgnoreError();
      return r.status();
    }
    results.push_back(*std::move(r));
  }
  if (absl::Status committed = Commit(); !committed.ok()) return committed;
  return results;
}

namespace {
const char* IsolationName(storage::TransactionOptions::Isolation i) {
  switch (i) {
    case storage::TransactionOptions::Isolation::kReadCommitted:
      return " READ COMMITTED";
    case storage::TransactionOptions::Isolation::kRepeatableRead:
      return " REPEATABLE READ";
    case storage::TransactionOptions::Isolation::kSerializable:
      return " SERIALIZABLE";
    case storage::TransactionOptions::Isolation::kDefault:
      break;
  }
  return "";
}
}  // namespace

absl::Status FakeConnection::Begin(const storage::TransactionOptions& options) {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  std::string entry = absl::StrCat("BEGIN", IsolationName(options.isolation));
  if (options.read_only) entry += " READ ONLY";
  if (options.deferrable) entry += " DEFERRABLE";
  for (const auto& [name, value] : options.settings) absl::StrAppend(&entry, " ", name, "=", value);
  if (absl::Status refused = owner_->BeginFailure(options); !refused.ok()) return refused;
  core::MutexLock lock(&mu_);
  if (cancelled_) return storage::SqlError("57014", "canceling statement due to user request");
  log_.push_back(std::move(entry));
  in_transaction_ = true;
  return absl::OkStatus();
}

absl::Status FakeConnection::Commit() {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  core::MutexLock lock(&mu_);
  in_transaction_ = false;
  if (cancelled_) {
    log_.push_back("ROLLBACK");
    return storage::SqlError("57014", "canceling statement due to user request");
  }
  if (!next_commit_.ok()) {
    log_.push_back("ROLLBACK");
    return std::exchange(next_commit_, absl::OkStatus());
  }
  log_.push_back("COMMIT");
  return absl::OkStatus();
}

absl::Status FakeConnection::Rollback() {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  core::MutexLock lock(&mu_);
  in_transaction_ = false;
  log_.push_back("ROLLBACK");
  return absl::OkStatus();
}

std::vector<std::string> FakeConnection::log() const {
  core::MutexLock lock(&mu_);
  return log_;
}

bool FakeConnection::in_transaction() const {
  core::MutexLock lock(&mu_);
  return in_transaction_;
}

void FakeConnection::FailNextCommit(absl::Status status) {
  core::MutexLock lock(&mu_);
  next_commit_ = std::move(status);
}

void FakeConnection::FailStatement(std::string sql, absl::Status status) {
  core::MutexLock lock(&mu_);
  failing_sql_ = std::move(sql);
  failing_status_ = std::move(status);
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
  {
    core::MutexLock lock(&mu_);
    in_transaction_ = false;
    role_.clear();
    log_.push_back("RESET");
  }
  return broken_.load() ? absl::UnavailableError("fake connection is broken") : absl::OkStatus();
}

absl::Status FakeConnection::UseRole(const std::string& role) {
  if (broken_.load()) return absl::UnavailableError("fake connection is broken");
  core::MutexLock lock(&mu_);
  if (role == role_) return absl::OkStatus();
  log_.push_back(role.empty() ? std::string("RESET ROLE") : "SET ROLE " + role);
  role_ = role;
  return absl::OkStatus();
}

void FakeConnector::AnswerSqlContaining(std::string needle,
                                        absl::StatusOr<storage::QueryResult> answer) {
  core::MutexLock lock(&mu_);
  answer_needle_ = std::move(needle);
  answer_ = std::move(answer);
}

std::optional<absl::StatusOr<storage::QueryResult>> FakeConnector::AnswerFor(
    const std::string& sql) {
  core::MutexLock lock(&mu_);
  if (answer_needle_.empty() || sql.find(answer_needle_) == std::string::npos) return std::nullopt;
  answered_.fetch_add(1);
  return answer_;
}

absl::StatusOr<std::unique_ptr<storage::DbConnection>> FakeConnector::Connect() {
  if (fail_connects_.load()) return absl::UnavailableError("fake database is down");
  core::MutexLock lock(&mu_);
  const int limit = server_limit_.load();
  if (limit >= 0 && live_.load() >= limit) {
    refused_.fetch_add(1);
    // What PostgreSQL says, and what PqConnector makes of it.
    return storage::SqlError("53300", "sorry, too many clients already");
  }
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

void FakeConnector::FailBeginsSetting(std::string setting, absl::Status status) {
  core::MutexLock lock(&mu_);
  failing_setting_ = std::move(setting);
  failing_setting_status_ = std::move(status);
}

absl::Status FakeConnector::BeginFailure(const storage::TransactionOptions& options) {
  core::MutexLock lock(&mu_);
  if (failing_setting_.empty()) return absl::OkStatus();
  for (const auto& [name, value] : options.settings) {
    if (name == failing_setting_) return failing_setting_status_;
  }
  return absl::OkStatus();
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
