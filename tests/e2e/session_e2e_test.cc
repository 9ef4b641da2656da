// End-to-end tests of logical sessions: the session-broker binary, a real
// PostgreSQL, generated C++ stubs, and (for the crash test) a separate client
// process that is SIGKILLed. What the broker claims is checked in the database
// itself: rows committed or not (admin connection), pg_stat_activity states of
// this broker's connections, backend pids.
//
// Deadlines are shrunk through the environment (ttl 1 s, tx idle timeout
// 0.5 s, orphan grace 0.5 s, ...) so the whole file runs in well under a
// minute. Things that must eventually happen are polled with generous
// timeouts; nothing asserts how fast the broker is.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/storage/pq_connection.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/test_env.h"

namespace sessionbroker::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Le;

// A helper process (session_e2e_client) with its stdout on a pipe. Killed
// (SIGKILL) and reaped on destruction, whatever happened.
class ClientProcess {
 public:
  explicit ClientProcess(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;
    std::vector<std::string> argv_storage = args;
    std::vector<char*> argv;
    for (std::string& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_fd_ = fds[0];
  }
  ~ClientProcess() {
    Kill();
    if (out_fd_ >= 0) close(out_fd_);
  }
  ClientProcess(const ClientProcess&) = delete;
  ClientProcess& operator=(const ClientProcess&) = delete;

  // Reads stdout until a line equal to `want`, EOF or `timeout`; every line
  // read so far ends up in lines().
  bool WaitForLine(const std::string& want, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    for (;;) {
      if (std::find(lines_.begin(), lines_.end(), want) != lines_.end()) return true;
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration() || out_fd_ < 0) return false;
      pollfd p{out_fd_, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (r <= 0) continue;
      char buf[1024];
      const ssize_t n = read(out_fd_, buf, sizeof(buf));
      if (n <= 0) return std::find(lines_.begin(), lines_.end(), want) != lines_.end();
      partial_.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = partial_.find('\n')) != std::string::npos) {
        lines_.push_back(partial_.substr(0, nl));
        partial_.erase(0, nl + 1);
      }
    }
  }

  // The value of the first "KEY value" line.
  std::string Field(const std::string& key) const {
    for (const std::string& line : lines_) {
      if (absl::StartsWith(line, key + " ")) return line.substr(key.size() + 1);
    }
    return "";
  }

  std::string Output() const { return absl::StrJoin(lines_, "\n") + "\n" + partial_; }

  // SIGKILL and reap; returns whether the process died from SIGKILL.
  bool Kill() {
    if (pid_ <= 0) return false;
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::vector<std::string> lines_;
  std::string partial_;
};

class SessionE2eTest : public BrokerFixture {
 protected:
  // These tests count this broker's connections by state: the broker's own
  // start-up transaction must be over first (see WaitForStartupWork).
  void StartBroker(std::map<std::string, std::string> env = {}) {
    BrokerFixture::StartBroker(std::move(env));
    WaitForStartupWork();
  }

  void TearDown() override {
    client_.reset();
    // The broker first: its connections (and their locks) go with it.
    stub_.reset();
    broker_.reset();
    for (const std::string& table : tables_) Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
  }

  // A fresh table (id int) private to this test, dropped in TearDown.
  std::string NewTable(const std::string& suffix) {
    const std::string table = absl::StrCat(app_name_, "_", suffix);
    Admin(absl::StrCat("CREATE TABLE ", table, " (id int)"));
    tables_.push_back(table);
    return table;
  }

  int64_t Rows(const std::string& table) {
    return AdminCount(absl::StrCat("SELECT count(*) FROM ", table));
  }

  // Statements of this broker whose text starts with `prefix` and that run.
  int64_t ActiveStatements(const std::string& prefix) {
    return AdminCount(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' "
        "AND starts_with(query, $2)",
        {storage::Value::String(app_name_), storage::Value::String(prefix)});
  }

  // The one session `request` begins; fails the test if it cannot.
  std::string MustBegin(const v1::BeginSessionRequest& request = {}) {
    RpcResult<v1::Session> begun = BeginSession(request);
    EXPECT_TRUE(begun.status.ok()) << begun.status.error_message();
    return begun.response.name();
  }

  std::vector<std::string> tables_;
  std::unique_ptr<ClientProcess> client_;
};

// ---- 1. A client process dies with a transaction open -----------------------

TEST_F(SessionE2eTest, KilledClientsTransactionIsRolledBackAndSessionOrphanedAfterGrace) {
  // A long idle timeout and ttl: only the orphan grace can end this.
  StartBroker({{"BROKER_SESSION_ORPHAN_GRACE", "0.5"},
               {"BROKER_TX_IDLE_TIMEOUT", "120"},
               {"BROKER_SESSION_DEFAULT_TTL", "120"}});
  const std::string table = NewTable("killed");
  client_ = std::make_unique<ClientProcess>(
      std::vector<std::string>{SB_SESSION_CLIENT_BINARY, broker_->address(), table});
  ASSERT_TRUE(client_->WaitForLine("READY", absl::Seconds(20)))
      << "client output:\n"
      << client_->Output() << "\nbroker log:\n"
      << broker_->Log();
  const std::string name = client_->Field("SESSION");
  ASSERT_FALSE(name.empty());

  // Before the kill: the row is inserted but not committed, the broker holds
  // the transaction open on one connection, the stream holds the session.
  EXPECT_EQ(Rows(table), 0);
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 1);
  RpcResult<v1::Session> before = GetSession(name);
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  EXPECT_TRUE(before.response.in_transaction());
  EXPECT_TRUE(before.response.held_by_stream());
  EXPECT_EQ(before.response.client_id(), "killed-client");

  ASSERT_TRUE(client_->Kill());

  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle in transaction") == 0; }))
      << "the dead client's transaction is still open in PostgreSQL\n"
      << broker_->Log();
  RpcResult<v1::Session> after;
  EXPECT_TRUE(Eventually([&] {
    after = GetSession(name);
    return !after.status.ok();
  })) << "the session of the dead client never ended";
  EXPECT_EQ(after.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << after.status.error_message();
  EXPECT_EQ(after.reason, "SESSION_ORPHANED");
  EXPECT_THAT(after.status.error_message(), HasSubstr("BROKER_SESSION_ORPHAN_GRACE"));
  // Calls in it fail the same way (and do not revive it).
  RpcResult<v1::ExecuteResponse> call = ExecuteIn(name, "SELECT 1");
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call.reason, "SESSION_ORPHANED");

  EXPECT_EQ(Rows(table), 0) << "the dead client's row was committed";
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle") >= 1; }));
  // The lock on the table is gone: a one-shot insert goes through.
  EXPECT_TRUE(Execute(absl::StrCat("INSERT INTO ", table, " VALUES (2)"), {}, absl::Seconds(5))
                  .status.ok());
  EXPECT_EQ(Rows(table), 1);
}

// ---- 2. BROKER_TX_IDLE_TIMEOUT ------------------------------------------------

TEST_F(SessionE2eTest, TransactionIdlePastTxIdleTimeoutIsRolledBackAndReportedAborted) {
  StartBroker({{"BROKER_TX_IDLE_TIMEOUT", "0.5"}, {"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const std::string table = NewTable("idle");
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1)");
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, insert, {Int(1)}).status.ok());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 1);

  // The broker rolls it back by itself: the connection is back, idle.
  EXPECT_TRUE(Eventually([&] {
    return BrokerConnectionsIn("idle in transaction") == 0 && BrokerConnectionsIn("idle") == 1;
  })) << broker_->Log();
  EXPECT_EQ(Rows(table), 0);
  RpcResult<v1::Session> info;
  EXPECT_TRUE(Eventually([&] {
    info = GetSession(name);
    return info.response.transaction_aborted();
  }));
  EXPECT_TRUE(info.response.in_transaction());
  EXPECT_THAT(info.response.abort_reason(), HasSubstr("BROKER_TX_IDLE_TIMEOUT"));

  // The next statement learns why; it does not run.
  RpcResult<v1::ExecuteResponse> next = ExecuteIn(name, insert, {Int(2)});
  EXPECT_EQ(next.status.error_code(), grpc::StatusCode::ABORTED) << next.status.error_message();
  EXPECT_THAT(next.status.error_message(), HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
  EXPECT_EQ(next.reason, "TX_IDLE_TIMEOUT");
  EXPECT_EQ(Rows(table), 0);

  // Commit cannot commit it.
  RpcResult<v1::CommitResponse> commit = Commit(name);
  EXPECT_EQ(commit.status.error_code(), grpc::StatusCode::ABORTED) << commit.status.error_message();
  EXPECT_THAT(commit.status.error_message(), HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
  EXPECT_EQ(commit.reason, "TX_IDLE_TIMEOUT");
  EXPECT_EQ(Rows(table), 0);
  // Commit acknowledged the abort (session header: "until Rollback (or
  // Commit, which fails with ABORTED) acknowledges it").
  RpcResult<v1::Session> acknowledged = GetSession(name);
  EXPECT_FALSE(acknowledged.response.in_transaction());
  EXPECT_FALSE(acknowledged.response.transaction_aborted());

  // Second round, acknowledged by Rollback: OK, rolled_back=false (the broker
  // had already rolled it back).
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, insert, {Int(3)}).status.ok());
  EXPECT_TRUE(Eventually([&] { return GetSession(name).response.transaction_aborted(); }));
  RpcResult<v1::RollbackResponse> rollback = Rollback(name);
  ASSERT_TRUE(rollback.status.ok()) << rollback.status.error_message();
  EXPECT_FALSE(rollback.response.rolled_back());
  EXPECT_EQ(Rows(table), 0);

  // The session is usable again: a transaction that does not pause commits.
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, insert, {Int(4)}).status.ok());
  RpcResult<v1::CommitResponse> committed = Commit(name);
  ASSERT_TRUE(committed.status.ok()) << committed.status.error_message();
  EXPECT_EQ(Rows(table), 1);
  EXPECT_TRUE(ExecuteIn(name, "SELECT 1").status.ok());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
}

// ---- 3. BROKER_TX_MAX_DURATION -------------------------------------------------

TEST_F(SessionE2eTest, TxMaxDurationCancelsTheRunningStatementAndCommitsNothing) {
  StartBroker({{"BROKER_TX_MAX_DURATION", "1"}, {"BROKER_TX_IDLE_TIMEOUT", "60"}});
  const std::string table = NewTable("maxdur");
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());

  RpcResult<v1::ExecuteResponse> slow =
      ExecuteIn(name, "SELECT pg_sleep(30)", {}, absl::Seconds(25));
  EXPECT_EQ(slow.status.error_code(), grpc::StatusCode::ABORTED) << slow.status.error_message();
  EXPECT_THAT(slow.status.error_message(), HasSubstr("BROKER_TX_MAX_DURATION"));
  EXPECT_EQ(slow.reason, "TX_MAX_DURATION");

  // Cancelled in PostgreSQL, not just abandoned; and nothing left open.
  EXPECT_TRUE(Eventually([&] { return ActiveStatements("SELECT pg_sleep") == 0; }))
      << "pg_sleep(30) still runs after the transaction was killed";
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle in transaction") == 0; }));
  EXPECT_EQ(Rows(table), 0);

  RpcResult<v1::CommitResponse> commit = Commit(name);
  EXPECT_EQ(commit.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(commit.status.error_message(), HasSubstr("BROKER_TX_MAX_DURATION"));
  EXPECT_EQ(Rows(table), 0);
  EXPECT_TRUE(ExecuteIn(name, "SELECT 1").status.ok());
}

// ---- 4. Leases --------------------------------------------------------------------

TEST_F(SessionE2eTest, LeaseExpiresUnlessRenewedAndRenewalExtendsExpireTime) {
  StartBroker();
  RpcResult<v1::Session> lapsing = BeginSessionWithTtl(absl::Seconds(1));
  RpcResult<v1::Session> renewed = BeginSessionWithTtl(absl::Seconds(1));
  ASSERT_TRUE(lapsing.status.ok() && renewed.status.ok());
  EXPECT_EQ(lapsing.response.ttl().seconds(), 1);
  EXPECT_EQ(TimeOf(lapsing.response.expire_time()) - TimeOf(lapsing.response.create_time()),
            absl::Seconds(1));

  // Renew the second one every 300 ms for 2 s: each renewal moves
  // expire_time forward.
  absl::Time last_expire = TimeOf(renewed.response.expire_time());
  for (int i = 0; i < 7; ++i) {
    absl::SleepFor(absl::Milliseconds(300));
    RpcResult<v1::Session> r = RenewSession(renewed.response.name());
    ASSERT_TRUE(r.status.ok()) << "renewal " << i << ": " << r.status.error_message();
    const absl::Time expire = TimeOf(r.response.expire_time());
    EXPECT_GT(expire, last_expire) << "renewal " << i;
    last_expire = expire;
  }
  // A renewal with a ttl changes the session's ttl.
  RpcResult<v1::Session> longer = RenewSession(renewed.response.name(), absl::Seconds(5));
  ASSERT_TRUE(longer.status.ok());
  EXPECT_EQ(longer.response.ttl().seconds(), 5);
  EXPECT_GE(TimeOf(longer.response.expire_time()), last_expire + absl::Seconds(3));

  // 2.1 s after it began, the unrenewed one is over.
  RpcResult<v1::ExecuteResponse> late = ExecuteIn(lapsing.response.name(), "SELECT 1");
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << late.status.error_message();
  EXPECT_THAT(late.status.error_message(), HasSubstr("lease expired"));
  EXPECT_EQ(late.reason, "SESSION_EXPIRED");
  RpcResult<v1::Session> gone = GetSession(lapsing.response.name());
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(gone.reason, "SESSION_EXPIRED");
  RpcResult<v1::Session> renew_gone = RenewSession(lapsing.response.name());
  EXPECT_EQ(renew_gone.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // The renewed one is alive.
  EXPECT_TRUE(ExecuteIn(renewed.response.name(), "SELECT 1").status.ok());

  RpcResult<v1::Session> unknown = GetSession("c2Vzc2lvbi10aGF0LW5ldmVyLXdhcw");
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(unknown.reason, "SESSION_NOT_FOUND");
  EXPECT_EQ(ExecuteIn("c2Vzc2lvbi10aGF0LW5ldmVyLXdhcw", "SELECT 1").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// ---- 5. Many sessions, few connections ------------------------------------------------

TEST_F(SessionE2eTest, TwoThousandSessionsAreServedByThreeConnections) {
  StartBroker({{"DB_POOL_SIZE", "3"}, {"DB_MAX_OVERFLOW", "0"}});
  constexpr int kSessions = 2000;
  constexpr int kThreads = 8;
  std::vector<std::unique_ptr<v1::SessionBroker::Stub>> stubs;
  for (int i = 0; i < 4; ++i) stubs.push_back(v1::SessionBroker::NewStub(broker_->NewChannel()));

  ConnectionPeakSampler connections(base_url_, app_name_);

  std::mutex mu;
  std::vector<std::string> names;
  std::vector<std::string> errors;
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      Stub* stub = stubs[t % stubs.size()].get();
      std::vector<std::string> mine;
      for (int k = t; k < kSessions; k += kThreads) {
        RpcResult<v1::Session> begun = BeginSession({}, "", stub);
        if (!begun.status.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(absl::StrCat("BeginSession ", k, ": ", begun.status.error_message()));
          continue;
        }
        mine.push_back(begun.response.name());
        RpcResult<v1::ExecuteResponse> echo =
            ExecuteIn(begun.response.name(), "SELECT $1::int8", {Int(k)}, absl::Seconds(30), stub);
        if (!echo.status.ok() || echo.response.rows_size() != 1 ||
            echo.response.rows(0).values(0).int64_value() != k) {
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(absl::StrCat("Execute ", k, ": ", echo.status.error_message(), " ",
                                        echo.response.ShortDebugString()));
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      names.insert(names.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& w : workers) w.join();
  connections.Stop();

  EXPECT_THAT(errors, IsEmpty());
  ASSERT_EQ(names.size(), static_cast<size_t>(kSessions));
  EXPECT_GT(connections.samples(), 0);
  EXPECT_THAT(connections.peak(), Le(3)) << "the broker opened more connections than its pool";
  EXPECT_THAT(BrokerConnections(), Le(3));

  // Every session is listed, once, across the pages.
  std::set<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListSessionsRequest request;
    request.set_page_size(300);
    request.set_page_token(token);
    RpcResult<v1::ListSessionsResponse> page = ListSessions(request);
    ASSERT_TRUE(page.status.ok()) << page.status.error_message();
    EXPECT_EQ(page.response.total_size(), kSessions);
    EXPECT_LE(page.response.sessions_size(), 300);
    for (const v1::Session& s : page.response.sessions()) {
      EXPECT_TRUE(listed.insert(s.name()).second) << "listed twice: " << s.name();
    }
    token = page.response.next_page_token();
    ASSERT_LT(++pages, 100) << "paging does not end";
  } while (!token.empty());
  EXPECT_EQ(listed.size(), static_cast<size_t>(kSessions));
  EXPECT_EQ(listed, std::set<std::string>(names.begin(), names.end()));
}

// ---- 6. Settings ----------------------------------------------------------------

TEST_F(SessionE2eTest, SessionSettingsApplyOnlyToTheirSessionOnASharedConnection) {
  // One connection: sessions A, B and one-shot calls all run on it.
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const std::string default_path =
      Execute("SHOW search_path").response.rows(0).values(0).string_value();
  ASSERT_NE(default_path, "a_schema, public");

  v1::BeginSessionRequest with_settings;
  (*with_settings.mutable_settings())["search_path"] = "a_schema, public";
  (*with_settings.mutable_settings())["statement_timeout"] = "1234ms";
  (*with_settings.mutable_settings())["app.tenant"] = "t1";
  RpcResult<v1::Session> a = BeginSession(with_settings);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.response.settings().at("statement_timeout"), "1234ms");
  const std::string b = MustBegin();

  const std::string probe =
      "SELECT current_setting('search_path'), current_setting('statement_timeout'), "
      "coalesce(current_setting('app.tenant', true), ''), pg_backend_pid()";
  std::set<int64_t> pids;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    RpcResult<v1::ExecuteResponse> in_a = ExecuteIn(a.response.name(), probe);
    ASSERT_TRUE(in_a.status.ok()) << in_a.status.error_message();
    EXPECT_EQ(in_a.response.rows(0).values(0).string_value(), "a_schema, public");
    EXPECT_EQ(in_a.response.rows(0).values(1).string_value(), "1234ms");
    EXPECT_EQ(in_a.response.rows(0).values(2).string_value(), "t1");
    pids.insert(in_a.response.rows(0).values(3).int64_value());
    RpcResult<v1::ExecuteResponse> show_a = ExecuteIn(a.response.name(), "SHOW search_path");
    ASSERT_TRUE(show_a.status.ok());
    EXPECT_EQ(show_a.response.rows(0).values(0).string_value(), "a_schema, public");

    RpcResult<v1::ExecuteResponse> in_b = ExecuteIn(b, probe);
    ASSERT_TRUE(in_b.status.ok()) << in_b.status.error_message();
    EXPECT_EQ(in_b.response.rows(0).values(0).string_value(), default_path);
    EXPECT_EQ(in_b.response.rows(0).values(1).string_value(), "0");
    EXPECT_EQ(in_b.response.rows(0).values(2).string_value(), "");
    pids.insert(in_b.response.rows(0).values(3).int64_value());
    RpcResult<v1::ExecuteResponse> show_b = ExecuteIn(b, "SHOW search_path");
    ASSERT_TRUE(show_b.status.ok());
    EXPECT_EQ(show_b.response.rows(0).values(0).string_value(), default_path);

    CallResult one_shot = Execute(probe);
    ASSERT_TRUE(one_shot.status.ok()) << one_shot.status.error_message();
    EXPECT_EQ(one_shot.response.rows(0).values(0).string_value(), default_path);
    EXPECT_EQ(one_shot.response.rows(0).values(1).string_value(), "0");
    EXPECT_EQ(one_shot.response.rows(0).values(2).string_value(), "");
    pids.insert(one_shot.response.rows(0).values(3).int64_value());
  }
  EXPECT_EQ(pids.size(), 1u) << "the calls did not share the one connection";

  // Inside a transaction of A, too; and B after it.
  ASSERT_TRUE(BeginTransaction(a.response.name()).status.ok());
  RpcResult<v1::ExecuteResponse> in_tx = ExecuteIn(a.response.name(), probe);
  ASSERT_TRUE(in_tx.status.ok());
  EXPECT_EQ(in_tx.response.rows(0).values(0).string_value(), "a_schema, public");
  EXPECT_EQ(in_tx.response.rows(0).values(1).string_value(), "1234ms");
  EXPECT_EQ(in_tx.response.rows(0).values(2).string_value(), "t1");
  ASSERT_TRUE(Commit(a.response.name()).status.ok());
  RpcResult<v1::ExecuteResponse> b_after = ExecuteIn(b, probe);
  ASSERT_TRUE(b_after.status.ok());
  EXPECT_EQ(b_after.response.rows(0).values(0).string_value(), default_path);
  EXPECT_EQ(b_after.response.rows(0).values(1).string_value(), "0");

  // statement_timeout 1234ms really applies in A.
  RpcResult<v1::ExecuteResponse> too_slow = ExecuteIn(a.response.name(), "SELECT pg_sleep(3)");
  EXPECT_EQ(too_slow.sqlstate, "57014") << too_slow.status.error_message();

  // A bad value fails at BeginSession, with PostgreSQL's SQLSTATE.
  v1::BeginSessionRequest bad_value;
  (*bad_value.mutable_settings())["statement_timeout"] = "soon";
  RpcResult<v1::Session> bad = BeginSession(bad_value);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << bad.status.error_message() << " (session: " << bad.response.ShortDebugString() << ")";
  EXPECT_EQ(bad.sqlstate, "22023");
  EXPECT_THAT(bad.status.error_message(), HasSubstr("statement_timeout"));

  // A setting outside the allow-list is refused before the database.
  v1::BeginSessionRequest role;
  (*role.mutable_settings())["role"] = "postgres";
  RpcResult<v1::Session> refused = BeginSession(role);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("role"));
  EXPECT_EQ(refused.sqlstate, "");

  // Neither left a session behind.
  RpcResult<v1::ListSessionsResponse> list = ListSessions({});
  ASSERT_TRUE(list.status.ok());
  EXPECT_EQ(list.response.total_size(), 2);
}

// ---- 7. Isolation and read-only ----------------------------------------------------

TEST_F(SessionE2eTest, IsolationLevelAndReadOnlyAreHonoured) {
  StartBroker();
  const std::string table = NewTable("iso");
  const std::string count = absl::StrCat("SELECT count(*) FROM ", table);
  Admin(absl::StrCat("INSERT INTO ", table, " VALUES (1)"));

  v1::BeginSessionRequest rr_request;
  rr_request.set_isolation(v1::REPEATABLE_READ);
  RpcResult<v1::Session> rr = BeginSession(rr_request);
  ASSERT_TRUE(rr.status.ok());
  EXPECT_EQ(rr.response.isolation(), v1::REPEATABLE_READ);
  ASSERT_TRUE(BeginTransaction(rr.response.name()).status.ok());
  EXPECT_EQ(ExecuteIn(rr.response.name(), "SHOW transaction_isolation")
                .response.rows(0)
                .values(0)
                .string_value(),
            "repeatable read");
  EXPECT_EQ(ExecuteIn(rr.response.name(), count).response.rows(0).values(0).int64_value(), 1);
  Admin(absl::StrCat("INSERT INTO ", table, " VALUES (2)"));
  EXPECT_EQ(ExecuteIn(rr.response.name(), count).response.rows(0).values(0).int64_value(), 1)
      << "a REPEATABLE READ transaction saw a row committed after its first read";
  ASSERT_TRUE(Commit(rr.response.name()).status.ok());
  EXPECT_EQ(ExecuteIn(rr.response.name(), count).response.rows(0).values(0).int64_value(), 2);

  v1::BeginSessionRequest rc_request;
  rc_request.set_isolation(v1::READ_COMMITTED);
  const std::string rc = MustBegin(rc_request);
  ASSERT_TRUE(BeginTransaction(rc).status.ok());
  EXPECT_EQ(ExecuteIn(rc, "SHOW transaction_isolation").response.rows(0).values(0).string_value(),
            "read committed");
  EXPECT_EQ(ExecuteIn(rc, count).response.rows(0).values(0).int64_value(), 2);
  Admin(absl::StrCat("INSERT INTO ", table, " VALUES (3)"));
  EXPECT_EQ(ExecuteIn(rc, count).response.rows(0).values(0).int64_value(), 3);
  ASSERT_TRUE(Commit(rc).status.ok());

  // BeginTransaction's isolation overrides the session's for one transaction.
  ASSERT_TRUE(BeginTransaction(rc, v1::SERIALIZABLE).status.ok());
  EXPECT_EQ(ExecuteIn(rc, "SHOW transaction_isolation").response.rows(0).values(0).string_value(),
            "serializable");
  ASSERT_TRUE(Commit(rc).status.ok());

  // Read-only: PostgreSQL itself refuses the write (25006), outside a
  // transaction and inside one; reads work.
  v1::BeginSessionRequest ro_request;
  ro_request.set_read_only(true);
  RpcResult<v1::Session> ro = BeginSession(ro_request);
  ASSERT_TRUE(ro.status.ok());
  EXPECT_TRUE(ro.response.read_only());
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES (99)");
  RpcResult<v1::ExecuteResponse> outside = ExecuteIn(ro.response.name(), insert);
  EXPECT_FALSE(outside.status.ok());
  EXPECT_EQ(outside.sqlstate, "25006") << outside.status.error_message();
  EXPECT_EQ(ExecuteIn(ro.response.name(), count).response.rows(0).values(0).int64_value(), 3);

  ASSERT_TRUE(BeginTransaction(ro.response.name()).status.ok());
  EXPECT_EQ(ExecuteIn(ro.response.name(), "SHOW transaction_read_only")
                .response.rows(0)
                .values(0)
                .string_value(),
            "on");
  RpcResult<v1::ExecuteResponse> inside = ExecuteIn(ro.response.name(), insert);
  EXPECT_FALSE(inside.status.ok());
  EXPECT_EQ(inside.sqlstate, "25006") << inside.status.error_message();
  EXPECT_EQ(Commit(ro.response.name()).status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(Rows(table), 3);
  // Another caller's one-shot write is not read-only.
  EXPECT_TRUE(Execute(absl::StrCat("INSERT INTO ", table, " VALUES (4)")).status.ok());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
}

// ---- 8. Commit ----------------------------------------------------------------------

TEST_F(SessionE2eTest, TransactionRowsBecomeVisibleAtCommitAndRunOnOneBackend) {
  StartBroker({{"DB_POOL_SIZE", "3"}});
  const std::string table = NewTable("commit");
  const std::string name = MustBegin();
  EXPECT_FALSE(GetSession(name).response.in_transaction());

  RpcResult<v1::BeginTransactionResponse> begun = BeginTransaction(name);
  ASSERT_TRUE(begun.status.ok()) << begun.status.error_message();
  EXPECT_TRUE(begun.response.session().in_transaction());
  EXPECT_FALSE(begun.response.session().transaction_aborted());
  EXPECT_TRUE(begun.response.session().has_transaction_start_time());

  const int64_t pid1 =
      ExecuteIn(name, "SELECT pg_backend_pid()").response.rows(0).values(0).int64_value();
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());
  // A batch in the session joins its transaction.
  {
    v1::ExecuteBatchRequest batch;
    batch.set_session(name);
    for (int id : {10, 11}) {
      v1::Statement* st = batch.add_statements();
      st->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES ($1)"));
      *st->add_params() = Int(id);
    }
    batch.add_statements()->set_sql("SELECT pg_backend_pid()");
    grpc::ClientContext context;
    v1::ExecuteBatchResponse response;
    grpc::Status status = stub_->ExecuteBatch(&context, batch, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.results_size(), 3);
    EXPECT_EQ(response.results(2).rows(0).values(0).int64_value(), pid1);
  }
  // One-shot calls in between run elsewhere and do not disturb it.
  EXPECT_TRUE(Execute("SELECT 1").status.ok());
  const int64_t pid2 =
      ExecuteIn(name, "SELECT pg_backend_pid()").response.rows(0).values(0).int64_value();
  EXPECT_EQ(pid1, pid2) << "the transaction's statements ran on two backends";
  // PostgreSQL agrees: that backend holds the open transaction.
  EXPECT_EQ(AdminCount("SELECT pid::int8 FROM pg_stat_activity WHERE application_name = $1 AND "
                       "state = 'idle in transaction'",
                       {storage::Value::String(app_name_)}),
            pid1);
  EXPECT_EQ(Rows(table), 0) << "visible before Commit";
  RpcResult<v1::Session> during = GetSession(name);
  EXPECT_TRUE(during.response.in_transaction());

  RpcResult<v1::CommitResponse> commit = Commit(name);
  ASSERT_TRUE(commit.status.ok()) << commit.status.error_message();
  EXPECT_TRUE(commit.response.has_commit_time());
  EXPECT_EQ(Rows(table), 3);
  EXPECT_FALSE(GetSession(name).response.in_transaction());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);

  RpcResult<v1::CommitResponse> again = Commit(name);
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // Rollback outside a transaction is a no-op, as in PostgreSQL.
  RpcResult<v1::RollbackResponse> noop = Rollback(name);
  EXPECT_TRUE(noop.status.ok()) << noop.status.error_message();
  EXPECT_FALSE(noop.response.rolled_back());

  // A failing statement: that call fails with PostgreSQL's error, the
  // transaction is over, Commit says ABORTED, nothing of it is committed.
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (2)")).status.ok());
  RpcResult<v1::ExecuteResponse> division = ExecuteIn(name, "SELECT 1 / 0");
  EXPECT_EQ(division.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(division.sqlstate, "22012");
  RpcResult<v1::Session> aborted = GetSession(name);
  EXPECT_TRUE(aborted.response.transaction_aborted());
  EXPECT_THAT(aborted.response.abort_reason(), HasSubstr("22012"));
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
  RpcResult<v1::CommitResponse> failed = Commit(name);
  EXPECT_EQ(failed.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(failed.reason, "TX_STATEMENT_FAILED");
  EXPECT_EQ(Rows(table), 3);
  EXPECT_FALSE(GetSession(name).response.in_transaction());
}

// ---- Savepoints ------------------------------------------------------------------

// A failed statement after a savepoint leaves the transaction open and
// aborted, as in PostgreSQL: other statements get 25P02, ROLLBACK TO
// recovers it, and Commit commits only the good rows.
TEST_F(SessionE2eTest, RollbackToSavepointRecoversAFailedStatementAndCommitsTheGoodRows) {
  StartBroker({{"DB_POOL_SIZE", "2"}});
  const std::string table = NewTable("savepoint");
  Admin(absl::StrCat("ALTER TABLE ", table, " ADD PRIMARY KEY (id)"));
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  const auto insert = [&](int id) {
    return ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (", id, ")"));
  };
  ASSERT_TRUE(insert(1).status.ok());
  ASSERT_TRUE(ExecuteIn(name, "SAVEPOINT a").status.ok());
  ASSERT_TRUE(insert(2).status.ok());
  RpcResult<v1::ExecuteResponse> duplicate = insert(1);
  EXPECT_EQ(duplicate.sqlstate, "23505");
  EXPECT_TRUE(GetSession(name).response.transaction_aborted());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction (aborted)"), 1)
      << "kept pinned, aborted, as PostgreSQL has it";

  RpcResult<v1::ExecuteResponse> refused = insert(3);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(refused.sqlstate, "25P02");
  EXPECT_EQ(ExecuteIn(name, "RELEASE SAVEPOINT a").sqlstate, "25P02");

  RpcResult<v1::ExecuteResponse> unknown = ExecuteIn(name, "ROLLBACK TO SAVEPOINT nope");
  EXPECT_EQ(unknown.sqlstate, "3B001") << unknown.status.error_message();
  EXPECT_TRUE(GetSession(name).response.transaction_aborted());

  ASSERT_TRUE(ExecuteIn(name, "ROLLBACK TO SAVEPOINT a").status.ok());
  EXPECT_FALSE(GetSession(name).response.transaction_aborted());
  EXPECT_TRUE(GetSession(name).response.in_transaction());
  ASSERT_TRUE(insert(4).status.ok());
  RpcResult<v1::CommitResponse> commit = Commit(name);
  ASSERT_TRUE(commit.status.ok()) << commit.status.error_message();
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table, " WHERE id IN (1, 4)")), 2);
  EXPECT_EQ(Rows(table), 2) << "2 was rolled back to the savepoint";
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
}

TEST_F(SessionE2eTest, NestedSavepointsReleaseAndRollbackToFollowPostgres) {
  StartBroker({{"DB_POOL_SIZE", "2"}});
  const std::string table = NewTable("nested");
  const std::string name = MustBegin();
  const auto run = [&](const std::string& sql) {
    RpcResult<v1::ExecuteResponse> r = ExecuteIn(name, sql);
    EXPECT_TRUE(r.status.ok()) << sql << ": " << r.status.error_message();
  };
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  run("SAVEPOINT outer_sp");
  run(absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  run("SAVEPOINT inner_sp");
  run(absl::StrCat("INSERT INTO ", table, " VALUES (2)"));
  run("RELEASE SAVEPOINT inner_sp");  // 2 joins outer_sp's work
  EXPECT_EQ(ExecuteIn(name, "RELEASE inner_sp").sqlstate, "3B001")
      << "released already: PostgreSQL's error, and it aborts the transaction";
  EXPECT_EQ(ExecuteIn(name, "SELECT 1").sqlstate, "25P02");
  run("ROLLBACK TO outer_sp");  // undoes 1 and 2
  run("SAVEPOINT again");
  run(absl::StrCat("INSERT INTO ", table, " VALUES (3)"));
  RpcResult<v1::ExecuteResponse> failed = ExecuteIn(name, "SELECT 1 / 0");
  EXPECT_EQ(failed.sqlstate, "22012");
  run("ROLLBACK TO SAVEPOINT again");  // undoes 3
  run(absl::StrCat("INSERT INTO ", table, " VALUES (5)"));
  ASSERT_TRUE(Commit(name).status.ok());
  EXPECT_EQ(Rows(table), 1);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT max(id)::int8 FROM ", table)), 5);
}

TEST_F(SessionE2eTest, SavepointsOutsideASessionTransactionAreRefused) {
  StartBroker({{"DB_POOL_SIZE", "1"}});
  CallResult one_shot = Execute("SAVEPOINT a");
  EXPECT_EQ(one_shot.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(one_shot.status.error_message(), HasSubstr("only inside a session's transaction"));
  const std::string name = MustBegin();
  RpcResult<v1::ExecuteResponse> no_tx = ExecuteIn(name, "ROLLBACK TO SAVEPOINT a");
  EXPECT_EQ(no_tx.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  v1::ExecuteBatchRequest batch;
  batch.set_session(name);
  batch.add_statements()->set_sql("SAVEPOINT a");
  grpc::ClientContext context;
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, batch, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("not in ExecuteBatch"));
  EXPECT_TRUE(ExecuteIn(name, "SELECT 1").status.ok()) << "the transaction goes on";
  EXPECT_TRUE(Commit(name).status.ok());
}

// Without a savepoint a failed statement still rolls the transaction back at
// once and frees its connection (the documented behaviour).
TEST_F(SessionE2eTest, WithoutASavepointAFailedStatementStillEndsTheTransactionAtOnce) {
  StartBroker({{"DB_POOL_SIZE", "1"}});
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, "SAVEPOINT a").status.ok());
  ASSERT_TRUE(ExecuteIn(name, "RELEASE SAVEPOINT a").status.ok());
  EXPECT_EQ(ExecuteIn(name, "SELECT 1 / 0").sqlstate, "22012");
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction (aborted)"), 0);
  EXPECT_EQ(ExecuteIn(name, "SELECT 1").reason, "TX_STATEMENT_FAILED");
}

// ---- 9. Serialization --------------------------------------------------------------

TEST_F(SessionE2eTest, ConcurrentCallsOnOneSessionDoNotOverlap) {
  StartBroker({{"DB_POOL_SIZE", "3"}});
  const std::string name = MustBegin();
  // Start and end of each statement, as PostgreSQL's clock sees them.
  const std::string sql =
      "SELECT extract(epoch FROM statement_timestamp())::float8, "
      "extract(epoch FROM clock_timestamp())::float8 FROM pg_sleep(0.5)";
  auto stub2 = v1::SessionBroker::NewStub(broker_->NewChannel());
  RpcResult<v1::ExecuteResponse> first, second;
  std::thread t1([&] { first = ExecuteIn(name, sql); });
  std::thread t2([&] { second = ExecuteIn(name, sql, {}, absl::Seconds(20), stub2.get()); });
  t1.join();
  t2.join();
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const double s1 = first.response.rows(0).values(0).double_value();
  const double e1 = first.response.rows(0).values(1).double_value();
  const double s2 = second.response.rows(0).values(0).double_value();
  const double e2 = second.response.rows(0).values(1).double_value();
  EXPECT_GE(e1 - s1, 0.5);
  EXPECT_GE(e2 - s2, 0.5);
  EXPECT_TRUE(s2 >= e1 || s1 >= e2)
      << "the calls overlapped: [" << s1 << ", " << e1 << "] and [" << s2 << ", " << e2 << "]";
}

// ---- 10. Quotas -----------------------------------------------------------------------

TEST_F(SessionE2eTest, SessionQuotasPerClientAndInTotal) {
  StartBroker({{"BROKER_MAX_SESSIONS_PER_CLIENT", "2"},
               {"BROKER_MAX_SESSIONS", "3"},
               {"BROKER_CLIENT_SESSION_SHARE_PERCENT", "100"}});
  RpcResult<v1::Session> a1 = BeginSession({}, "a");
  RpcResult<v1::Session> a2 = BeginSession({}, "a");
  ASSERT_TRUE(a1.status.ok() && a2.status.ok());
  EXPECT_EQ(a1.response.client_id(), "a");
  RpcResult<v1::Session> a3 = BeginSession({}, "a");
  EXPECT_EQ(a3.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(a3.reason, "MAX_SESSIONS_PER_CLIENT");
  EXPECT_THAT(a3.status.error_message(), HasSubstr("BROKER_MAX_SESSIONS_PER_CLIENT"));

  RpcResult<v1::Session> b1 = BeginSession({}, "b");
  ASSERT_TRUE(b1.status.ok()) << b1.status.error_message();
  // Three open: b is under its own share but the broker is full.
  RpcResult<v1::Session> b2 = BeginSession({}, "b");
  EXPECT_EQ(b2.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(b2.reason, "MAX_SESSIONS");
  RpcResult<v1::Session> anonymous = BeginSession({});
  EXPECT_EQ(anonymous.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(anonymous.reason, "MAX_SESSIONS");

  v1::ListSessionsRequest only_a;
  only_a.set_client_id("a");
  RpcResult<v1::ListSessionsResponse> listed = ListSessions(only_a);
  ASSERT_TRUE(listed.status.ok());
  EXPECT_EQ(listed.response.total_size(), 2);
  EXPECT_EQ(listed.response.sessions_size(), 2);

  // Ending a session gives its slot back.
  ASSERT_TRUE(EndSession(a1.response.name()).status.ok());
  EXPECT_TRUE(BeginSession({}, "a").status.ok());
}

// ---- 11. KeepAlive -----------------------------------------------------------------------

TEST_F(SessionE2eTest, KeepAliveHoldsASessionAndClosingTheStreamOrphansItAfterGrace) {
  StartBroker({{"BROKER_SESSION_ORPHAN_GRACE", "1.5"}});
  RpcResult<v1::Session> held = BeginSessionWithTtl(absl::Seconds(1));
  RpcResult<v1::Session> released = BeginSessionWithTtl(absl::Seconds(1));
  ASSERT_TRUE(held.status.ok() && released.status.ok());
  const std::string name = held.response.name();

  KeepAliveStream stream(stub_.get());
  ASSERT_TRUE(stream.Hold({name, released.response.name()}));
  std::optional<v1::KeepAliveResponse> first = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(first.has_value()) << "no answer to the hold";
  ASSERT_EQ(first->sessions_size(), 2) << first->ShortDebugString();
  EXPECT_EQ(first->sessions(0).name(), name);
  EXPECT_EQ(first->sessions(0).state(), v1::SessionState::HELD);
  EXPECT_TRUE(first->sessions(0).has_expire_time());
  EXPECT_EQ(first->sessions(1).state(), v1::SessionState::HELD);
  EXPECT_TRUE(GetSession(name).response.held_by_stream());

  ASSERT_TRUE(stream.Release({released.response.name()}));
  std::optional<v1::KeepAliveResponse> second = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->sessions_size(), 1) << second->ShortDebugString();
  EXPECT_EQ(second->sessions(0).state(), v1::SessionState::RELEASED);

  // Three ttls without a call or renewal: only the stream keeps it (GetSession
  // does not renew).
  absl::SleepFor(absl::Seconds(3));
  RpcResult<v1::Session> alive = GetSession(name);
  ASSERT_TRUE(alive.status.ok()) << alive.status.error_message();
  EXPECT_TRUE(alive.response.held_by_stream());
  // The released one lapsed with its 1 s ttl.
  RpcResult<v1::Session> lapsed = GetSession(released.response.name());
  EXPECT_EQ(lapsed.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(lapsed.reason, "SESSION_EXPIRED");
  EXPECT_TRUE(ExecuteIn(name, "SELECT 1").status.ok());

  // The client closes the stream cleanly.
  grpc::Status closed = stream.Close();
  EXPECT_TRUE(closed.ok()) << closed.error_message();
  // Not at once (1.5 s grace) ...
  RpcResult<v1::Session> in_grace = GetSession(name);
  EXPECT_TRUE(in_grace.status.ok()) << in_grace.status.error_message();
  EXPECT_FALSE(in_grace.response.held_by_stream());
  // ... but after the grace.
  RpcResult<v1::Session> ended;
  EXPECT_TRUE(Eventually([&] {
    ended = GetSession(name);
    return !ended.status.ok();
  }));
  EXPECT_EQ(ended.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ended.reason, "SESSION_ORPHANED");
}

// ---- 12. EndSession ------------------------------------------------------------------------

TEST_F(SessionE2eTest, EndSessionRollsBackTheOpenTransaction) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const std::string table = NewTable("end");
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 1);

  RpcResult<v1::EndSessionResponse> end = EndSession(name);
  ASSERT_TRUE(end.status.ok()) << end.status.error_message();
  EXPECT_TRUE(end.response.rolled_back());
  EXPECT_TRUE(Eventually([&] {
    return BrokerConnectionsIn("idle in transaction") == 0 && BrokerConnectionsIn("idle") == 1;
  }));
  EXPECT_EQ(Rows(table), 0);
  // The one connection serves others again.
  EXPECT_TRUE(Execute(absl::StrCat("INSERT INTO ", table, " VALUES (2)"), {}, absl::Seconds(10))
                  .status.ok());
  EXPECT_EQ(Rows(table), 1);

  RpcResult<v1::ExecuteResponse> later = ExecuteIn(name, "SELECT 1");
  EXPECT_EQ(later.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(later.status.error_message(), HasSubstr("EndSession was called"));
  EXPECT_EQ(later.reason, "SESSION_ENDED");
  EXPECT_EQ(Commit(name).status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(EndSession(name).status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Without a transaction: rolled_back=false.
  const std::string plain = MustBegin();
  RpcResult<v1::EndSessionResponse> plain_end = EndSession(plain);
  ASSERT_TRUE(plain_end.status.ok());
  EXPECT_FALSE(plain_end.response.rolled_back());
}

// ---- 13. SIGTERM --------------------------------------------------------------------------

TEST_F(SessionE2eTest, SigtermRollsBackOpenTransactionsEndsHeldSessionsAndExitsZero) {
  StartBroker({{"BROKER_TX_IDLE_TIMEOUT", "60"}});
  const std::string table = NewTable("sigterm");
  const std::string name = MustBegin();
  const std::string other = MustBegin();
  KeepAliveStream stream(stub_.get());
  ASSERT_TRUE(stream.Hold({name}));
  std::optional<v1::KeepAliveResponse> held = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(held.has_value());
  ASSERT_EQ(held->sessions(0).state(), v1::SessionState::HELD);
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());
  ASSERT_TRUE(BeginTransaction(other).status.ok());
  ASSERT_TRUE(ExecuteIn(other, absl::StrCat("INSERT INTO ", table, " VALUES (2)")).status.ok());
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 2);

  const std::optional<int> code = broker_->SignalAndWait(SIGTERM, absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "the broker did not exit (or died from a signal)\n"
                                << broker_->Log();
  EXPECT_EQ(*code, 0) << broker_->Log();
  EXPECT_EQ(Rows(table), 0) << "a transaction open at SIGTERM was committed";
  EXPECT_TRUE(Eventually([&] { return BrokerConnections() == 0; }));

  // The stream learns that its session ended, then the stream ends.
  ASSERT_TRUE(stream.WaitEnded(absl::Seconds(10))) << "the KeepAlive stream outlived the broker";
  std::vector<v1::SessionState> states;
  while (std::optional<v1::KeepAliveResponse> r = stream.Next(absl::ZeroDuration())) {
    for (const v1::SessionState& s : r->sessions()) states.push_back(s);
  }
  grpc::Status finished = stream.FinishAfterEnd();
  ASSERT_EQ(states.size(), 1u) << "final status: " << finished.error_code() << " "
                               << finished.error_message();
  EXPECT_EQ(states[0].name(), name);
  EXPECT_EQ(states[0].state(), v1::SessionState::ENDED);
  EXPECT_THAT(states[0].reason(), HasSubstr("shut down"));
}

// Kubernetes' order: on SIGTERM readiness turns NOT_SERVING at once while
// liveness stays SERVING, and for BROKER_DRAIN_SECONDS everything is still
// served, new calls included (endpoints take a while to stop routing here);
// then the sessions still open end, rolled back and told why, and the
// process exits 0.
TEST_F(SessionE2eTest, SigtermDrainsInKubernetesOrder) {
  // A window far longer than the few calls made in it take.
  StartBroker({{"BROKER_DRAIN_SECONDS", "8"}, {"BROKER_TX_IDLE_TIMEOUT", "60"}});
  const std::string table = NewTable("drain");
  const std::string finishing = MustBegin();  // commits within the window
  const std::string left_open = MustBegin();  // still open when the window ends
  KeepAliveStream stream(stub_.get());
  ASSERT_TRUE(stream.Hold({left_open}));
  std::optional<v1::KeepAliveResponse> held = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(held.has_value());
  ASSERT_EQ(held->sessions(0).state(), v1::SessionState::HELD);
  ASSERT_TRUE(BeginTransaction(finishing).status.ok());
  ASSERT_TRUE(ExecuteIn(finishing, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());
  ASSERT_TRUE(BeginTransaction(left_open).status.ok());
  ASSERT_TRUE(ExecuteIn(left_open, absl::StrCat("INSERT INTO ", table, " VALUES (2)")).status.ok());
  HealthWatch readiness(broker_->NewChannel(), kService);
  ASSERT_EQ(*readiness.Next(absl::Seconds(5)), ServingStatus::kServing);

  ASSERT_EQ(kill(broker_->pid(), SIGTERM), 0);
  absl::StatusOr<ServingStatus> watched = readiness.Next(absl::Seconds(5));
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(*watched, ServingStatus::kNotServing) << "readiness turns NOT_SERVING at once";
  EXPECT_EQ(*HealthCheck(broker_->NewChannel(), kService), ServingStatus::kNotServing);
  EXPECT_EQ(*HealthCheck(broker_->NewChannel(), ""), ServingStatus::kServing)
      << "liveness stays SERVING while the broker drains";

  // A call started after SIGTERM, on a new connection, is served.
  auto late = v1::SessionBroker::NewStub(broker_->NewChannel());
  CallResult after = Execute("SELECT 1", {}, absl::Seconds(20), late.get());
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  // An open session's transaction goes on and commits.
  EXPECT_TRUE(ExecuteIn(finishing, absl::StrCat("INSERT INTO ", table, " VALUES (3)")).status.ok());
  RpcResult<v1::CommitResponse> commit = Commit(finishing);
  EXPECT_TRUE(commit.status.ok()) << commit.status.error_message();
  EXPECT_TRUE(EndSession(finishing).status.ok());

  const std::optional<int> code = broker_->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << "the broker did not exit (or died from a signal)\n"
                                << broker_->Log();
  EXPECT_EQ(*code, 0) << broker_->Log();
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table, " WHERE id IN (1, 3)")), 2)
      << "the transaction committed during the drain is kept";
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table, " WHERE id = 2")), 0)
      << "the transaction still open when the drain ended was rolled back";
  EXPECT_THAT(broker_->Log(), HasSubstr("BROKER_DRAIN_SECONDS"));

  // The session left open was told why it ended, then its stream ended.
  ASSERT_TRUE(stream.WaitEnded(absl::Seconds(10))) << "the KeepAlive stream outlived the broker";
  std::vector<v1::SessionState> states;
  while (std::optional<v1::KeepAliveResponse> r = stream.Next(absl::ZeroDuration())) {
    for (const v1::SessionState& s : r->sessions()) states.push_back(s);
  }
  stream.FinishAfterEnd();
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[0].name(), left_open);
  EXPECT_EQ(states[0].state(), v1::SessionState::ENDED);
  EXPECT_THAT(states[0].reason(), HasSubstr("shut down"));
}

// ---- 14. Reflection --------------------------------------------------------------------------

TEST_F(SessionE2eTest, ReflectionDescribesTheSessionMethods) {
  StartBroker();
  absl::StatusOr<std::vector<std::string>> methods =
      ReflectionDescribeService(broker_->channel(), kService);
  ASSERT_TRUE(methods.ok()) << methods.status();
  for (const char* method :
       {"Execute", "ExecuteBatch", "BeginSession", "RenewSession", "EndSession", "GetSession",
        "ListSessions", "BeginTransaction", "Commit", "Rollback", "KeepAlive"}) {
    EXPECT_THAT(*methods, Contains(method));
  }
}

// ---- Beyond the list: queue bound, lifetime cap, long calls --------------------------------

TEST_F(SessionE2eTest, QueuedCallsAreBoundedAndKeepTheirOwnDeadline) {
  StartBroker({{"BROKER_SESSION_MAX_QUEUED_CALLS", "1"}});
  const std::string table = NewTable("queue");
  const std::string name = MustBegin();
  auto stub2 = v1::SessionBroker::NewStub(broker_->NewChannel());
  auto stub3 = v1::SessionBroker::NewStub(broker_->NewChannel());

  RpcResult<v1::ExecuteResponse> running, queued;
  std::thread first([&] { running = ExecuteIn(name, "SELECT pg_sleep(2)"); });
  ASSERT_TRUE(Eventually([&] { return ActiveStatements("SELECT pg_sleep") == 1; }));
  std::thread second(
      [&] { queued = ExecuteIn(name, "SELECT 2::int8", {}, absl::Seconds(20), stub2.get()); });
  const bool saw_queued = Eventually([&] { return GetSession(name).response.queued_calls() == 1; });
  RpcResult<v1::ExecuteResponse> rejected;
  if (saw_queued) rejected = ExecuteIn(name, "SELECT 3", {}, absl::Seconds(20), stub3.get());
  first.join();
  second.join();
  ASSERT_TRUE(saw_queued) << "the second call never showed up as queued";
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << rejected.status.error_message();
  EXPECT_EQ(rejected.reason, "SESSION_QUEUE_FULL");
  EXPECT_TRUE(running.status.ok()) << running.status.error_message();
  ASSERT_TRUE(queued.status.ok()) << queued.status.error_message();
  EXPECT_EQ(queued.response.rows(0).values(0).int64_value(), 2);

  // A queued call whose deadline passes fails with DEADLINE_EXCEEDED and
  // never runs.
  std::thread holder([&] { running = ExecuteIn(name, "SELECT pg_sleep(1.5)"); });
  ASSERT_TRUE(Eventually([&] { return ActiveStatements("SELECT pg_sleep") == 1; }));
  RpcResult<v1::ExecuteResponse> late =
      ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {},
                absl::Milliseconds(300), stub2.get());
  holder.join();
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << late.status.error_message();
  EXPECT_TRUE(running.status.ok()) << running.status.error_message();
  EXPECT_TRUE(ExecuteIn(name, "SELECT 1").status.ok());
  EXPECT_EQ(Rows(table), 0) << "a call whose deadline passed in the queue ran anyway";
}

TEST_F(SessionE2eTest, MaxLifetimeEndsAHeldSessionAndRollsBackItsTransaction) {
  StartBroker({{"BROKER_SESSION_MAX_LIFETIME", "1"}, {"BROKER_TX_IDLE_TIMEOUT", "60"}});
  const std::string table = NewTable("lifetime");
  RpcResult<v1::Session> begun = BeginSession();
  ASSERT_TRUE(begun.status.ok());
  const std::string name = begun.response.name();
  EXPECT_EQ(TimeOf(begun.response.max_expire_time()) - TimeOf(begun.response.create_time()),
            absl::Seconds(1));
  // Renewals are capped by it.
  RpcResult<v1::Session> renewed = RenewSession(name, absl::Seconds(30));
  ASSERT_TRUE(renewed.status.ok());
  EXPECT_LE(TimeOf(renewed.response.expire_time()), TimeOf(renewed.response.max_expire_time()));

  KeepAliveStream stream(stub_.get());
  ASSERT_TRUE(stream.Hold({name}));
  std::optional<v1::KeepAliveResponse> held = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->sessions(0).state(), v1::SessionState::HELD);
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, absl::StrCat("INSERT INTO ", table, " VALUES (1)")).status.ok());

  // Held, in use, renewed: it ends anyway, and the stream is told.
  std::optional<v1::KeepAliveResponse> ended = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(ended.has_value()) << "the stream was not told that its session ended";
  ASSERT_EQ(ended->sessions_size(), 1);
  EXPECT_EQ(ended->sessions(0).name(), name);
  EXPECT_EQ(ended->sessions(0).state(), v1::SessionState::ENDED);
  EXPECT_THAT(ended->sessions(0).reason(), HasSubstr("BROKER_SESSION_MAX_LIFETIME"));
  RpcResult<v1::Session> gone = GetSession(name);
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(gone.reason, "SESSION_MAX_LIFETIME");
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle in transaction") == 0; }));
  EXPECT_EQ(Rows(table), 0);
  // Holding it again says it ended.
  ASSERT_TRUE(stream.Hold({name}));
  std::optional<v1::KeepAliveResponse> again = stream.Next(absl::Seconds(10));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->sessions(0).state(), v1::SessionState::ENDED);
}

// A call in progress is the client using its session: the lease must not run
// out under it (the client cannot renew through a session whose calls run one
// at a time).
TEST_F(SessionE2eTest, LeaseRunningOutMidStatementCancelsItUnlessRenewedOrHeld) {
  StartBroker();
  // Not renewed: the statement outlasts the 1 s lease and is cancelled in
  // PostgreSQL; the call hears that the session ended.
  RpcResult<v1::Session> lapsed = BeginSessionWithTtl(absl::Seconds(1));
  ASSERT_TRUE(lapsed.status.ok());
  RpcResult<v1::ExecuteResponse> cut =
      ExecuteIn(lapsed.response.name(), "SELECT 'done'::text FROM pg_sleep(5)");
  EXPECT_EQ(cut.status.error_code(), grpc::StatusCode::ABORTED) << cut.status.error_message();
  EXPECT_EQ(cut.reason, "SESSION_EXPIRED");
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("active") == 0; }));

  // RenewSession does not wait behind the running call: renewing while the
  // statement runs keeps the session.
  RpcResult<v1::Session> renewed = BeginSessionWithTtl(absl::Seconds(1));
  ASSERT_TRUE(renewed.status.ok());
  std::atomic<bool> running{true};
  std::thread renewer([&] {
    while (running.load()) {
      RenewSession(renewed.response.name());
      absl::SleepFor(absl::Milliseconds(200));
    }
  });
  RpcResult<v1::ExecuteResponse> slow =
      ExecuteIn(renewed.response.name(), "SELECT 'done'::text FROM pg_sleep(2)");
  running.store(false);
  renewer.join();
  EXPECT_TRUE(slow.status.ok()) << slow.status.error_message() << " [" << slow.reason << "]";

  // Held by a KeepAlive stream: no lease runs at all.
  RpcResult<v1::Session> held = BeginSessionWithTtl(absl::Seconds(1));
  ASSERT_TRUE(held.status.ok());
  KeepAliveStream stream(stub_.get());
  ASSERT_TRUE(stream.Hold({held.response.name()}));
  RpcResult<v1::ExecuteResponse> long_one =
      ExecuteIn(held.response.name(), "SELECT 'done'::text FROM pg_sleep(2)");
  EXPECT_TRUE(long_one.status.ok()) << long_one.status.error_message();
  EXPECT_TRUE(GetSession(held.response.name()).status.ok());
  stream.Close();
}

// ---- The result cap inside a transaction ---------------------------------------

// BROKER_MAX_RESULT_BYTES covers a whole batch, as it does outside a session,
// where an over-cap batch is rolled back before COMMIT. Inside a session's
// transaction each statement of the batch under the cap but their sum over
// it must not leave the batch's writes in the transaction while the client
// hears RESOURCE_EXHAUSTED: its Commit would commit what it was told failed
// (and a retry would apply it twice).
TEST_F(SessionE2eTest, BatchOverTheResultCapInATransactionIsNotLeftInIt) {
  StartBroker({{"BROKER_MAX_RESULT_BYTES", "100000"}});
  const std::string table = NewTable("cap");
  const std::string name = MustBegin();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  v1::ExecuteBatchRequest batch;
  batch.set_session(name);
  for (int id : {1, 2}) {
    v1::Statement* st = batch.add_statements();
    // 60,000 bytes each: under the cap alone, over it together.
    st->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES ($1) RETURNING repeat('x', 60000)"));
    *st->add_params() = Int(id);
  }
  grpc::ClientContext context;
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, batch, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_EQ(response.results_size(), 0);

  RpcResult<v1::Session> info = GetSession(name);
  EXPECT_TRUE(info.response.transaction_aborted())
      << "the failed batch is still in the transaction";
  RpcResult<v1::CommitResponse> commit = Commit(name);
  EXPECT_EQ(commit.status.error_code(), grpc::StatusCode::ABORTED) << commit.status.error_message();
  EXPECT_EQ(Rows(table), 0) << "Commit committed the batch that failed";
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
}

// ---- A database outage under a pinned connection ---------------------------

// The backend of a session's pinned connection is terminated while the
// transaction sits idle (an operator's pg_terminate_backend, the server's
// idle_in_transaction_session_timeout, a restart). PostgreSQL has rolled the
// transaction back; each way the client goes on must say so plainly, the dead
// connection must not come back, and the session must go on.
TEST_F(SessionE2eTest, TerminatedPinnedConnectionIsReportedRolledBackAndTheSessionRecovers) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"BROKER_TX_IDLE_TIMEOUT", "60"}});
  const std::string table = NewTable("terminated");
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1)");
  const std::string name = MustBegin();
  // Opens a transaction with one row in it, then terminates its backend;
  // returns the backend's pid.
  auto open_and_terminate = [&](int64_t row) -> int64_t {
    EXPECT_TRUE(BeginTransaction(name).status.ok());
    EXPECT_TRUE(ExecuteIn(name, insert, {Int(row)}).status.ok());
    RpcResult<v1::ExecuteResponse> pid = ExecuteIn(name, "SELECT pg_backend_pid()::int8");
    EXPECT_TRUE(pid.status.ok()) << pid.status.error_message();
    if (!pid.status.ok()) return -1;
    const int64_t backend = pid.response.rows(0).values(0).int64_value();
    // The timeout makes pg_terminate_backend wait until the backend is gone.
    EXPECT_EQ(AdminCount("SELECT count(*) FROM pg_terminate_backend($1::int, 10000) AS t(ok) "
                         "WHERE ok",
                         {storage::Value::Int64(backend)}),
              1);
    return backend;
  };

  // Commit: the transaction is known to be rolled back (not "unknown").
  const int64_t first = open_and_terminate(1);
  RpcResult<v1::CommitResponse> commit = Commit(name);
  EXPECT_EQ(commit.status.error_code(), grpc::StatusCode::ABORTED) << commit.status.error_message();
  EXPECT_THAT(commit.status.error_message(), HasSubstr("nothing of the transaction was applied"));
  EXPECT_FALSE(GetSession(name).response.in_transaction());

  // Rollback: it happened, so it succeeds.
  const int64_t second = open_and_terminate(2);
  EXPECT_NE(second, first) << "the dead connection was reused";
  RpcResult<v1::RollbackResponse> rollback = Rollback(name);
  ASSERT_TRUE(rollback.status.ok()) << rollback.status.error_message();
  EXPECT_TRUE(rollback.response.rolled_back());

  // A statement: its own error, then the transaction reads as aborted.
  open_and_terminate(3);
  RpcResult<v1::ExecuteResponse> next = ExecuteIn(name, "SELECT 1");
  EXPECT_EQ(next.status.error_code(), grpc::StatusCode::UNAVAILABLE) << next.status.error_message();
  RpcResult<v1::Session> info = GetSession(name);
  EXPECT_TRUE(info.response.transaction_aborted());
  EXPECT_THAT(info.response.abort_reason(), HasSubstr("lost the connection"));
  RpcResult<v1::RollbackResponse> acknowledged = Rollback(name);
  ASSERT_TRUE(acknowledged.status.ok()) << acknowledged.status.error_message();
  EXPECT_FALSE(acknowledged.response.rolled_back());

  // The session goes on, on a new connection.
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  ASSERT_TRUE(ExecuteIn(name, insert, {Int(4)}).status.ok());
  RpcResult<v1::CommitResponse> committed = Commit(name);
  ASSERT_TRUE(committed.status.ok()) << committed.status.error_message();
  EXPECT_EQ(Rows(table), 1);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table, " WHERE id = 4")), 1);
  EXPECT_EQ(BrokerConnectionsIn("idle in transaction"), 0);
  EXPECT_EQ(BrokerConnections(), 1);
}

}  // namespace
}  // namespace sessionbroker::testing
