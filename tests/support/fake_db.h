// Test doubles for the storage boundary and the executor: a FakeConnector
// whose connections count themselves (so a test can check the pool's bound at
// every instant), fail on demand, and record what was run; and a
// ManualExecutor that runs posted tasks only when the test says so.
// FakeConnector and FakeConnection are thread-safe.
#ifndef SESSIONBROKER_TESTS_SUPPORT_FAKE_DB_H_
#define SESSIONBROKER_TESTS_SUPPORT_FAKE_DB_H_

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/storage/db_connection.h"

namespace sessionbroker::testing {

class FakeConnector;

class FakeConnection final : public storage::DbConnection {
 public:
  FakeConnection(FakeConnector* owner, int id);
  ~FakeConnection() override;

  absl::StatusOr<storage::QueryResult> Execute(const storage::Statement& statement,
                                               const storage::ExecuteOptions& options) override;
  absl::StatusOr<std::vector<storage::QueryResult>> ExecuteBatch(
      absl::Span<const storage::Statement> statements,
      const storage::ExecuteOptions& options) override;
  absl::Status Begin(const storage::TransactionOptions& options) override;
  absl::Status Commit() override;
  absl::Status Rollback() override;
  absl::Status Ping() override;
  absl::Status ResetSession() override;
  // Logs "SET ROLE r" / "RESET ROLE" when the role changes.
  absl::Status UseRole(const std::string& role) override;
  void Cancel() override;
  void ClearCancel() override;
  bool IsBroken() const override { return broken_.load(); }
  int BackendPid() const override { return id_; }

  int id() const { return id_; }
  // While set, Execute blocks until Cancel(). After Cancel() and until
  // ClearCancel(), Execute fails like a cancelled PostgreSQL statement
  // (SQLSTATE 57014), as the real adapter does.
  void set_block_until_cancel(bool b) { block_until_cancel_.store(b); }
  // The next `n` Cancel() calls are counted but have no effect.
  void set_ignore_cancels(int n) { ignore_cancels_.store(n); }
  // Blocks until a statement is executing (for tests that cancel it).
  void WaitUntilExecuting();
  void set_broken(bool b) { broken_.store(b); }
  void set_ping_fails(bool b) { ping_fails_.store(b); }
  int pings() const { return pings_.load(); }
  int resets() const { return resets_.load(); }
  int cancels() const { return cancels_.load(); }
  // Every statement's SQL and every BEGIN/COMMIT/ROLLBACK/RESET, in order.
  // BEGIN is logged with its options ("BEGIN SERIALIZABLE READ ONLY
  // search_path=a"); batches log BEGIN ... COMMIT around their statements.
  std::vector<std::string> log() const;
  // True between Begin() and Commit()/Rollback().
  bool in_transaction() const;
  // The next Commit() fails with this status (and rolls back).
  void FailNextCommit(absl::Status status);
  // Execute fails with this status for statements whose SQL is exactly `sql`.
  void FailStatement(std::string sql, absl::Status status);

 private:
  // Execute without the reset ExecuteOptions::reset_session_after asks for.
  absl::StatusOr<storage::QueryResult> ExecuteStatement(const storage::Statement& statement);

  FakeConnector* const owner_;
  const int id_;
  std::atomic<bool> broken_{false};
  std::atomic<bool> ping_fails_{false};
  std::atomic<int> pings_{0};
  std::atomic<int> resets_{0};
  std::atomic<int> cancels_{0};
  std::atomic<bool> block_until_cancel_{false};
  std::atomic<int> ignore_cancels_{0};
  void Log(std::string entry);

  mutable core::Mutex mu_;
  core::CondVar changed_;
  bool executing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool in_transaction_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  std::string role_ ABSL_GUARDED_BY(mu_);
  absl::Status next_commit_ ABSL_GUARDED_BY(mu_);
  std::string failing_sql_ ABSL_GUARDED_BY(mu_);
  absl::Status failing_status_ ABSL_GUARDED_BY(mu_);
};

class FakeConnector final : public storage::DbConnector {
 public:
  absl::StatusOr<std::unique_ptr<storage::DbConnection>> Connect() override;

  // While set, Connect() fails with UNAVAILABLE.
  void set_fail_connects(bool b) { fail_connects_.store(b); }
  // Like PostgreSQL's max_connections: with `n` connections open, Connect()
  // fails as the real connector does when the server has no slot left
  // (RESOURCE_EXHAUSTED, SQLSTATE 53300 "too many clients"); -1 = no limit.
  void set_server_limit(int n) { server_limit_.store(n); }
  int refused() const { return refused_.load(); }  // connects refused by the limit
  // From now on Begin() fails with `status` (and logs nothing) on every
  // connection when the transaction sets `setting`, as PostgreSQL refuses a
  // bad value for it.
  void FailBeginsSetting(std::string setting, absl::Status status);
  // From now on statements whose SQL contains `needle` get `answer` at once
  // on every connection: never blocked (set_block_until_cancel), not in
  // log(), counted by answered(). For queries the broker sends by itself,
  // such as the catalog lookup of CatalogGuard::ThroughPool.
  void AnswerSqlContaining(std::string needle, absl::StatusOr<storage::QueryResult> answer);
  int answered() const { return answered_.load(); }

  int connects() const { return connects_.load(); }  // successful ones
  int live() const { return live_.load(); }          // open right now
  int max_live() const { return max_live_.load(); }  // highest `live` ever seen
  // Every connection ever opened, by id (1, 2, ...); pointers stay valid while open.
  FakeConnection* connection(int id);

 private:
  friend class FakeConnection;
  void Closed(int id);
  // The answer for `sql` if AnswerSqlContaining covers it.
  std::optional<absl::StatusOr<storage::QueryResult>> AnswerFor(const std::string& sql);
  absl::Status BeginFailure(const storage::TransactionOptions& options);

  std::atomic<bool> fail_connects_{false};
  std::atomic<int> server_limit_{-1};
  std::atomic<int> refused_{0};
  std::atomic<int> connects_{0};
  std::atomic<int> live_{0};
  std::atomic<int> max_live_{0};
  std::atomic<int> answered_{0};
  core::Mutex mu_;
  std::vector<FakeConnection*> by_id_ ABSL_GUARDED_BY(mu_);  // index id-1; null once closed
  std::string failing_setting_ ABSL_GUARDED_BY(mu_);
  absl::Status failing_setting_status_ ABSL_GUARDED_BY(mu_);
  std::string answer_needle_ ABSL_GUARDED_BY(mu_);
  absl::StatusOr<storage::QueryResult> answer_ ABSL_GUARDED_BY(mu_);
};

// Runs posted tasks only in RunAll()/RunOne(), on the calling thread.
class ManualExecutor final : public core::Executor {
 public:
  void Post(absl::AnyInvocable<void() &&> task) override;
  // Runs tasks (including ones posted while running) until none is left.
  // Returns how many ran.
  int RunAll();
  bool RunOne();
  size_t queued() const;

 private:
  mutable core::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_FAKE_DB_H_
