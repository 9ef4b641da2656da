#include "server/core/session/session_manager.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/mutex.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/connection_pool.h"
#include "server/storage/sql_error.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::core {
namespace {

using ::sessionbroker::testing::FakeConnection;
using ::sessionbroker::testing::FakeConnector;
using ::sessionbroker::testing::ManualExecutor;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using Results = StatementRunner::Results;
using State = SessionManager::StreamUpdate::State;
using StreamUpdate = SessionManager::StreamUpdate;

constexpr absl::Duration kNs = absl::Nanoseconds(1);

// The instant as the manager's messages print it.
std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

// The session layer's machine-readable reason, "" when there is none.
std::string ReasonOf(const absl::Status& status) {
  auto reason = status.GetPayload(kSessionReasonPayloadUrl);
  return reason.has_value() ? std::string(*reason) : "";
}

RunRequest One(std::string sql, absl::Time deadline = absl::InfiniteFuture()) {
  RunRequest r;
  r.statements.push_back(storage::Statement{std::move(sql), {}});
  r.deadline = deadline;
  return r;
}

RunRequest Batch(std::vector<std::string> sqls) {
  RunRequest r;
  r.op = RunRequest::Op::kBatch;
  for (std::string& sql : sqls) r.statements.push_back(storage::Statement{std::move(sql), {}});
  return r;
}

SessionSpec WithSettings(SessionSettings settings) {
  SessionSpec spec;
  spec.settings = std::move(settings);
  return spec;
}

SessionSpec ForClient(std::string client_id) {
  SessionSpec spec;
  spec.client_id = std::move(client_id);
  return spec;
}

// The options every test starts from; tests that need others Restart().
SessionOptions TestOptions() {
  SessionOptions o;
  o.default_ttl = absl::Seconds(60);
  o.max_ttl = absl::Hours(1);
  o.max_lifetime = absl::Hours(24);
  o.tx_idle_timeout = absl::Seconds(10);
  o.tx_max_duration = absl::Minutes(5);
  o.orphan_grace = absl::Seconds(5);
  o.max_sessions = 1000;
  o.max_sessions_per_client = 1000;
  o.max_queued_calls = 2;
  o.remembered_ended = 100;
  o.remember_ended_for = absl::Hours(1);
  return o;
}

// ---- Single-threaded: every task runs on the test thread -------------------

// Pool, runner and manager over fakes, with a ManualExecutor: database work
// happens only in executor_.RunAll(), time moves only in Tick().
class SessionManagerTest : public ::testing::Test {
 protected:
  SessionManagerTest() {
    spdlog::set_level(spdlog::level::warn);
    PoolOptions options;
    options.pool_size = 2;
    options.max_overflow = 0;
    options.pre_ping = false;
    options.recycle = absl::InfiniteDuration();
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    runner_ =
        std::make_unique<StatementRunner>(*pool_, timers_, executor_, clock_, RunnerOptions{});
    Restart(TestOptions());
  }
  ~SessionManagerTest() override {
    // Nothing runs the executor while Shutdown waits: don't wait.
    manager_->Shutdown(absl::InfinitePast());
    executor_.RunAll();
    manager_.reset();
    pool_->Close();
    executor_.RunAll();
  }

  void Restart(SessionOptions options) {
    if (manager_ != nullptr) {
      manager_->Shutdown(absl::InfinitePast());
      executor_.RunAll();
    }
    options_ = options;
    manager_ = std::make_unique<SessionManager>(*runner_, timers_, clock_, options);
  }

  // Runs timers and database work until neither has anything left to do.
  void Settle() {
    for (;;) {
      timers_.RunDue();
      if (executor_.RunAll() == 0) return;
    }
  }
  void Tick(absl::Duration d) {
    clock_.Advance(d);
    Settle();
  }

  absl::StatusOr<SessionInfo> Begin(SessionSpec spec = {},
                                    absl::Time deadline = absl::InfiniteFuture()) {
    std::optional<absl::StatusOr<SessionInfo>> out;
    manager_->Begin(std::move(spec), deadline,
                    [&](absl::StatusOr<SessionInfo> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "Begin's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }
  SessionInfo MustBegin(SessionSpec spec = {}) {
    absl::StatusOr<SessionInfo> info = Begin(std::move(spec));
    EXPECT_TRUE(info.ok()) << info.status();
    return info.value_or(SessionInfo{});
  }

  absl::StatusOr<Results> Run(const std::string& name, RunRequest request) {
    std::optional<absl::StatusOr<Results>> out;
    manager_->Run(Caller(), name, std::move(request),
                  [&](absl::StatusOr<Results> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "Run's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }
  absl::StatusOr<Results> Exec(const std::string& name, std::string sql) {
    return Run(name, One(std::move(sql)));
  }

  absl::StatusOr<SessionInfo> BeginTx(const std::string& name, TransactionSpec spec = {}) {
    std::optional<absl::StatusOr<SessionInfo>> out;
    manager_->BeginTransaction(Caller(), name, spec, absl::InfiniteFuture(),
                               [&](absl::StatusOr<SessionInfo> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "BeginTransaction's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }
  absl::StatusOr<absl::Time> Commit(const std::string& name) {
    std::optional<absl::StatusOr<absl::Time>> out;
    manager_->Commit(Caller(), name, absl::InfiniteFuture(),
                     [&](absl::StatusOr<absl::Time> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "Commit's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }
  absl::StatusOr<bool> Rollback(const std::string& name) {
    std::optional<absl::StatusOr<bool>> out;
    manager_->Rollback(Caller(), name, absl::InfiniteFuture(),
                       [&](absl::StatusOr<bool> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "Rollback's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }
  absl::StatusOr<bool> End(const std::string& name) {
    std::optional<absl::StatusOr<bool>> out;
    manager_->End(Caller(), name, [&](absl::StatusOr<bool> r) { out = std::move(r); });
    Settle();
    EXPECT_TRUE(out.has_value()) << "End's callback did not run";
    return out.has_value() ? *std::move(out) : absl::InternalError("no callback");
  }

  // Starts a call without running any database work.
  struct Pending {
    std::shared_ptr<RunningCall> call;
    std::shared_ptr<std::optional<absl::StatusOr<Results>>> result =
        std::make_shared<std::optional<absl::StatusOr<Results>>>();
  };
  Pending StartRun(const std::string& name, RunRequest request) {
    Pending p;
    p.call = manager_->Run(Caller(), name, std::move(request),
                           [out = p.result](absl::StatusOr<Results> r) { *out = std::move(r); });
    return p;
  }

  std::vector<std::string> Log(int connection_id) {
    FakeConnection* c = connector_.connection(connection_id);
    EXPECT_NE(c, nullptr) << "connection " << connection_id << " is not open";
    return c == nullptr ? std::vector<std::string>{} : c->log();
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ManualExecutor executor_;
  FakeConnector connector_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
  SessionOptions options_;
  std::unique_ptr<SessionManager> manager_;
};

// ---- Ownership -----------------------------------------------------------------

// With a clients file each session belongs to the client that began it.
TEST_F(SessionManagerTest, AnotherClientsSessionIsIndistinguishableFromANonexistentOne) {
  SessionSpec spec;
  spec.client_id = "alice";
  const std::string name = MustBegin(spec).name;
  ASSERT_TRUE(BeginTx(name).ok());
  const Caller mallory{"mallory", /*sees_all=*/false};
  const absl::Status unknown = manager_->Get(mallory, "AAAAAAAAAAAAAAAAAAAAAA").status();
  ASSERT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  const auto same_as_unknown = [&](const absl::Status& s) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(s.message(),
              absl::StrReplaceAll(unknown.message(), {{"AAAAAAAAAAAAAAAAAAAAAA", name}}));
    EXPECT_EQ(ReasonOf(s), "SESSION_NOT_FOUND");
  };
  same_as_unknown(manager_->Get(mallory, name).status());
  same_as_unknown(manager_->Renew(mallory, name, absl::Nanoseconds(1)).status());
  std::optional<absl::StatusOr<Results>> run;
  manager_->Run(mallory, name, One("UPDATE accounts SET balance = 0"),
                [&](absl::StatusOr<Results> r) { run = std::move(r); });
  std::optional<absl::StatusOr<absl::Time>> commit;
  manager_->Commit(mallory, name, absl::InfiniteFuture(),
                   [&](absl::StatusOr<absl::Time> r) { commit = std::move(r); });
  std::optional<absl::StatusOr<bool>> rollback;
  manager_->Rollback(mallory, name, absl::InfiniteFuture(),
                     [&](absl::StatusOr<bool> r) { rollback = std::move(r); });
  std::optional<absl::StatusOr<SessionInfo>> begin_tx;
  manager_->BeginTransaction(mallory, name, TransactionSpec{}, absl::InfiniteFuture(),
                             [&](absl::StatusOr<SessionInfo> r) { begin_tx = std::move(r); });
  std::optional<absl::StatusOr<bool>> end;
  manager_->End(mallory, name, [&](absl::StatusOr<bool> r) { end = std::move(r); });
  Settle();
  ASSERT_TRUE(run && commit && rollback && begin_tx && end);
  same_as_unknown(run->status());
  same_as_unknown(commit->status());
  same_as_unknown(rollback->status());
  same_as_unknown(begin_tx->status());
  same_as_unknown(end->status());
  const SessionManager::StreamId stream = manager_->OpenStream([](SessionManager::StreamUpdate) {});
  std::vector<SessionManager::StreamUpdate> held = manager_->Hold(mallory, stream, {name});
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].state, SessionManager::StreamUpdate::State::kNotFound);
  manager_->CloseStream(stream);

  // The owner's transaction is untouched and its lease was not cut.
  absl::StatusOr<SessionInfo> mine = manager_->Get(Caller{"alice", false}, name);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_TRUE(mine->in_transaction);
  EXPECT_FALSE(mine->transaction_aborted);
  EXPECT_EQ(mine->ttl, options_.default_ttl);
  EXPECT_TRUE(Commit(name).ok());
}

TEST_F(SessionManagerTest, AnEndedSessionIsNotFoundForOtherClients) {
  SessionSpec spec;
  spec.client_id = "alice";
  const std::string name = MustBegin(spec).name;
  ASSERT_TRUE(End(name).ok());
  EXPECT_EQ(manager_->Get(Caller{"alice", false}, name).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Get(Caller{"mallory", false}, name).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SessionManagerTest, ListShowsAClientItsOwnAndACallerWhoSeesAllEveryone) {
  SessionSpec a;
  a.client_id = "alice";
  SessionSpec b;
  b.client_id = "bob";
  MustBegin(a);
  MustBegin(a);
  MustBegin(b);
  absl::StatusOr<SessionManager::Page> alice = manager_->List(Caller{"alice", false}, 0, "", "");
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->sessions.size(), 2u);
  EXPECT_EQ(alice->total_size, 2);
  // Asking for another client's sessions shows still only one's own.
  absl::StatusOr<SessionManager::Page> peek = manager_->List(Caller{"alice", false}, 0, "", "bob");
  ASSERT_TRUE(peek.ok());
  for (const SessionInfo& info : peek->sessions) EXPECT_EQ(info.client_id, "alice");
  absl::StatusOr<SessionManager::Page> admin = manager_->List(Caller{"ops", true}, 0, "", "");
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(admin->total_size, 3);
  absl::StatusOr<SessionManager::Page> bobs = manager_->List(Caller{"ops", true}, 0, "", "bob");
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->total_size, 1);
}

// ---- Begin -------------------------------------------------------------------

TEST_F(SessionManagerTest, BeginReturnsDistinctUnguessableNames) {
  std::set<std::string> names;
  for (int i = 0; i < 500; ++i) {
    const std::string name = MustBegin().name;
    // 128 random bits in unpadded base64url.
    ASSERT_EQ(name.size(), 22u) << name;
    for (char c : name) {
      ASSERT_TRUE(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
          << name;
    }
    names.insert(name);
  }
  EXPECT_EQ(names.size(), 500u);
  EXPECT_EQ(manager_->Stats().begun, 500);
  EXPECT_EQ(connector_.connects(), 0) << "a session without settings needs no database";
}

TEST_F(SessionManagerTest, BeginTimesComeFromTheClockWithTheDefaultTtl) {
  SessionSpec spec;
  spec.label = "report job";
  spec.client_id = "billing";
  spec.read_only = true;
  spec.isolation = Isolation::kRepeatableRead;
  const absl::Time now = clock_.Now();
  absl::StatusOr<SessionInfo> info = Begin(spec);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->create_time, now);
  EXPECT_EQ(info->ttl, absl::Seconds(60));
  EXPECT_EQ(info->expire_time, now + absl::Seconds(60));
  EXPECT_EQ(info->max_expire_time, now + absl::Hours(24));
  EXPECT_EQ(info->label, "report job");
  EXPECT_EQ(info->client_id, "billing");
  EXPECT_TRUE(info->read_only);
  EXPECT_EQ(info->isolation, Isolation::kRepeatableRead);
  EXPECT_FALSE(info->in_transaction);
  EXPECT_FALSE(info->held_by_stream);
  EXPECT_EQ(info->queued_calls, 0);

  absl::StatusOr<SessionInfo> got = manager_->Get(Caller(), info->name);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->expire_time, info->expire_time);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.open, 1);
  EXPECT_THAT(stats.open_by_client, ElementsAre(Pair("billing", 1)));
}

TEST_F(SessionManagerTest, BeginTakesTheGivenTtlUpToMaxTtl) {
  SessionSpec spec;
  spec.ttl = absl::Hours(1);  // == max_ttl
  absl::StatusOr<SessionInfo> info = Begin(spec);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->ttl, absl::Hours(1));
  EXPECT_EQ(info->expire_time, clock_.Now() + absl::Hours(1));
}

TEST_F(SessionManagerTest, BeginRefusesATtlAboveMaxTtlOrNegative) {
  SessionSpec too_long;
  too_long.ttl = absl::Hours(1) + kNs;
  absl::StatusOr<SessionInfo> r = Begin(too_long);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_SESSION_MAX_TTL"));

  SessionSpec negative;
  negative.ttl = -absl::Seconds(1);
  r = Begin(negative);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("negative"));
  EXPECT_EQ(manager_->Stats().begun, 0);
  EXPECT_EQ(manager_->Stats().open, 0);
}

TEST_F(SessionManagerTest, BeginNormalisesSettingsLowerCasedAndSorted) {
  absl::StatusOr<SessionInfo> info =
      Begin(WithSettings({{"Search_Path", "app"}, {"APP.Tenant_Id", "t1"}}));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(info->settings, ElementsAre(Pair("app.tenant_id", "t1"), Pair("search_path", "app")));
  EXPECT_THAT(manager_->Get(Caller(), info->name)->settings,
              ElementsAre(Pair("app.tenant_id", "t1"), Pair("search_path", "app")));
}

TEST_F(SessionManagerTest, BeginRefusesADisallowedSettingNamingIt) {
  for (const char* name : {"role", "DateStyle", "session_authorization"}) {
    absl::StatusOr<SessionInfo> r = Begin(WithSettings({{"search_path", "a"}, {name, "x"}}));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(r.status().message(), HasSubstr(absl::AsciiStrToLower(name)));
  }
  EXPECT_EQ(connector_.connects(), 0) << "refused before any database work";
  EXPECT_EQ(manager_->Stats().begun, 0);
}

TEST_F(SessionManagerTest, BeginWithSettingsTriesThemOnAPooledConnectionThenRollsBack) {
  absl::StatusOr<SessionInfo> info =
      Begin(WithSettings({{"search_path", "app"}, {"app.tenant_id", "t1"}}));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(connector_.connects(), 1) << "the settings were not tried";
  EXPECT_THAT(Log(1), ElementsAre("BEGIN app.tenant_id=t1 search_path=app", "ROLLBACK"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(pool_->Stats().idle, 1);
}

TEST_F(SessionManagerTest, BeginFailsWithPostgresMessageWhenTheSettingsProbeFails) {
  const absl::Status refused =
      storage::SqlError("22023", "invalid value for parameter \"statement_timeout\": \"soon\"");
  connector_.FailBeginsSetting("statement_timeout", refused);
  absl::StatusOr<SessionInfo> r = Begin(WithSettings({{"statement_timeout", "soon"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), refused.code());
  EXPECT_THAT(r.status().message(), HasSubstr("settings: "));
  EXPECT_THAT(r.status().message(), HasSubstr("invalid value for parameter"));
  EXPECT_EQ(storage::SqlStateOf(r.status()), "22023");
  EXPECT_EQ(manager_->Stats().begun, 0);
  EXPECT_EQ(manager_->Stats().open, 0);
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerTest, BeginRefusesOverlongLabelOrClientId) {
  SessionSpec spec;
  spec.label = std::string(257, 'l');
  EXPECT_EQ(Begin(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec = ForClient(std::string(257, 'c'));
  EXPECT_EQ(Begin(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Leases ------------------------------------------------------------------

TEST_F(SessionManagerTest, ASessionPastItsLeaseIsOverBeforeTheReaperRuns) {
  const SessionInfo s = MustBegin();
  // The clock passes expire_time but no timer has run yet (as when the reaper
  // is a moment late, or busy with a mass expiry): a late call must not revive
  // the session.
  clock_.Advance(s.expire_time - clock_.Now());
  absl::StatusOr<SessionInfo> got = manager_->Get(Caller(), s.name);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(got.status().message(), HasSubstr("lease expired"));
  EXPECT_EQ(manager_->Renew(Caller(), s.name, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Tick(absl::ZeroDuration());
  EXPECT_EQ(manager_->Get(Caller(), s.name).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Stats().expired, 1);
}

// A call that completes after its session's lease passed, before the reaper
// got to the session, ends it rather than renewing it.
TEST_F(SessionManagerTest, ACallCompletingAfterTheLeasePassedDoesNotReviveTheSession) {
  const SessionInfo s = MustBegin();
  Pending run = StartRun(s.name, One("SELECT 1"));
  clock_.Advance(manager_->Get(Caller(), s.name)->expire_time - clock_.Now());
  executor_.RunAll();  // the statement completes; no timer has run
  ASSERT_TRUE(run.result->has_value());
  EXPECT_TRUE(run.result->value().ok()) << "it ran by itself, before the session was reaped";
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
  Tick(absl::ZeroDuration());
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
  EXPECT_EQ(manager_->Stats().expired, 1);
  EXPECT_EQ(manager_->reaper_entries(), 0u);
}

TEST_F(SessionManagerTest, AStatementCompletingAfterTheLeasePassedIsRolledBackWithTheSession) {
  SessionOptions o = TestOptions();
  o.tx_idle_timeout = absl::Hours(1);
  Restart(o);
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  Pending run = StartRun(s.name, One("UPDATE t SET x = 1"));
  clock_.Advance(manager_->Get(Caller(), s.name)->expire_time - clock_.Now());
  executor_.RunAll();
  ASSERT_TRUE(run.result->has_value());
  EXPECT_EQ(run.result->value().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(run.result->value().status().message(), HasSubstr("lease expired"));
  EXPECT_EQ(ReasonOf(run.result->value().status()), "SESSION_EXPIRED");
  Settle();
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "UPDATE t SET x = 1", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.expired, 1);
  EXPECT_EQ(stats.tx_killed_session_end, 1);
  EXPECT_EQ(stats.in_transaction, 0);
}

TEST_F(SessionManagerTest, SessionExpiresExactlyAtItsExpireTime) {
  const SessionInfo s = MustBegin();
  Tick(s.expire_time - clock_.Now() - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok()) << "expired before its expire_time";
  EXPECT_EQ(manager_->Stats().expired, 0);

  Tick(kNs);
  absl::StatusOr<SessionInfo> gone = manager_->Get(Caller(), s.name);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gone.status().message(), HasSubstr("lease expired"));
  EXPECT_THAT(gone.status().message(), HasSubstr(TimeText(s.expire_time)));
  EXPECT_EQ(ReasonOf(gone.status()), "SESSION_EXPIRED");

  absl::StatusOr<Results> exec = Exec(s.name, "SELECT 1");
  EXPECT_EQ(exec.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(exec.status().message(), HasSubstr("lease expired"));
  EXPECT_EQ(ReasonOf(exec.status()), "SESSION_EXPIRED");

  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.expired, 1);
  EXPECT_EQ(stats.open, 0);
  EXPECT_THAT(stats.open_by_client, IsEmpty());
  EXPECT_EQ(manager_->reaper_entries(), 0u);
  EXPECT_EQ(connector_.connects(), 0);
}

TEST_F(SessionManagerTest, RenewExtendsTheLeaseToNowPlusTtl) {
  const SessionInfo s = MustBegin();
  Tick(absl::Seconds(50));
  absl::StatusOr<SessionInfo> renewed = manager_->Renew(Caller(), s.name, absl::ZeroDuration());
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->expire_time, clock_.Now() + absl::Seconds(60));
  EXPECT_EQ(renewed->ttl, absl::Seconds(60));

  Tick(s.expire_time - clock_.Now());  // the original expire_time
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok());
  Tick(renewed->expire_time - clock_.Now() - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok());
  Tick(kNs);
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
}

TEST_F(SessionManagerTest, RenewWithATtlMakesItTheSessionsTtl) {
  const SessionInfo s = MustBegin();
  absl::StatusOr<SessionInfo> renewed = manager_->Renew(Caller(), s.name, absl::Minutes(10));
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_EQ(renewed->ttl, absl::Minutes(10));
  EXPECT_EQ(renewed->expire_time, clock_.Now() + absl::Minutes(10));
  // Later renewals (and calls) use the new ttl.
  Tick(absl::Minutes(9));
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, clock_.Now() + absl::Minutes(10));
}

TEST_F(SessionManagerTest, RenewRefusesBadTtlsAndUnknownSessions) {
  const SessionInfo s = MustBegin();
  EXPECT_EQ(manager_->Renew(Caller(), s.name, absl::Hours(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->Renew(Caller(), s.name, -absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->Get(Caller(), s.name)->ttl, absl::Seconds(60))
      << "a refused renew changes nothing";
  absl::StatusOr<SessionInfo> unknown =
      manager_->Renew(Caller(), "AAAAAAAAAAAAAAAAAAAAAA", absl::ZeroDuration());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(unknown.status()), "SESSION_NOT_FOUND");
}

TEST_F(SessionManagerTest, RenewIsCappedByMaxLifetimeWhereTheSessionEnds) {
  SessionOptions o = TestOptions();
  o.max_lifetime = absl::Minutes(3);
  Restart(o);
  const SessionInfo s = MustBegin();
  EXPECT_EQ(s.max_expire_time, s.create_time + absl::Minutes(3));
  for (int i = 0; i < 3; ++i) {
    Tick(absl::Seconds(50));
    ASSERT_TRUE(manager_->Renew(Caller(), s.name, absl::ZeroDuration()).ok());
  }
  // At +150s a renewal would reach +210s: capped at max lifetime.
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, s.max_expire_time);
  Tick(s.max_expire_time - clock_.Now() - kNs);
  ASSERT_TRUE(manager_->Renew(Caller(), s.name, absl::ZeroDuration()).ok());
  Tick(kNs);
  absl::StatusOr<SessionInfo> gone = manager_->Get(Caller(), s.name);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(gone.status()), "SESSION_MAX_LIFETIME");
  EXPECT_THAT(gone.status().message(), HasSubstr("BROKER_SESSION_MAX_LIFETIME"));
  EXPECT_EQ(manager_->Stats().lifetime_exceeded, 1);
  EXPECT_EQ(manager_->Stats().expired, 0);
}

TEST_F(SessionManagerTest, EveryCallOnTheSessionRenewsItsLease) {
  const SessionInfo s = MustBegin();
  Tick(absl::Seconds(50));
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, clock_.Now() + absl::Seconds(60));

  Tick(absl::Seconds(50));
  ASSERT_TRUE(BeginTx(s.name).ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, clock_.Now() + absl::Seconds(60));
  Tick(absl::Seconds(5));
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, clock_.Now() + absl::Seconds(60));

  // Even a call that fails renews: the client is evidently still there.
  Tick(absl::Seconds(50));
  EXPECT_EQ(Commit(s.name).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, clock_.Now() + absl::Seconds(60));
  Tick(absl::Seconds(59));
  EXPECT_TRUE(manager_->Get(Caller(), s.name).ok());
}

TEST_F(SessionManagerTest, UnknownSessionIsNotFoundEverywhere) {
  const std::string name = "nosuchsessionnosuchses";
  std::vector<absl::Status> statuses = {
      manager_->Get(Caller(), name).status(),
      manager_->Renew(Caller(), name, absl::ZeroDuration()).status(),
      Exec(name, "SELECT 1").status(),
      BeginTx(name).status(),
      Commit(name).status(),
      Rollback(name).status(),
      End(name).status(),
  };
  for (const absl::Status& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
    EXPECT_EQ(ReasonOf(s), "SESSION_NOT_FOUND") << s;
  }
  EXPECT_EQ(manager_->Get(Caller(), "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SessionManagerTest, EndedSessionsAreRememberedForRememberEndedForThenNotFound) {
  SessionOptions o = TestOptions();
  o.remember_ended_for = absl::Minutes(10);
  Restart(o);
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(End(s.name).ok());
  Tick(absl::Minutes(10));
  EXPECT_EQ(manager_->Get(Caller(), s.name).status().code(), absl::StatusCode::kFailedPrecondition);
  // No other session ends meanwhile: forgetting must not depend on one.
  Tick(kNs);
  absl::StatusOr<SessionInfo> gone = manager_->Get(Caller(), s.name);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound) << gone.status();
  EXPECT_EQ(Exec(s.name, "SELECT 1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionManagerTest, AtMostRememberedEndedSessionsAreRemembered) {
  SessionOptions o = TestOptions();
  o.remembered_ended = 2;
  Restart(o);
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) names.push_back(MustBegin().name);
  for (const std::string& name : names) ASSERT_TRUE(End(name).ok());
  EXPECT_EQ(manager_->Get(Caller(), names[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->Get(Caller(), names[1]).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Get(Caller(), names[2]).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// ---- Transactions --------------------------------------------------------------

TEST_F(SessionManagerTest, BeginTransactionPinsOneConnectionWithTheSessionsOptions) {
  SessionSpec spec = WithSettings({{"search_path", "app"}});
  spec.isolation = Isolation::kSerializable;
  const SessionInfo s = MustBegin(spec);
  TransactionSpec tx;
  tx.read_only = true;
  tx.deferrable = true;
  const absl::Time now = clock_.Now();
  absl::StatusOr<SessionInfo> info = BeginTx(s.name, tx);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->in_transaction);
  EXPECT_FALSE(info->transaction_aborted);
  EXPECT_EQ(info->transaction_start_time, now);
  EXPECT_FALSE(info->read_only) << "the transaction's read-only flag is not the session's";
  EXPECT_THAT(Log(1), ElementsAre("BEGIN search_path=app", "ROLLBACK",  // the probe
                                  "BEGIN SERIALIZABLE READ ONLY DEFERRABLE search_path=app"));
  EXPECT_TRUE(connector_.connection(1)->in_transaction());
  EXPECT_EQ(pool_->Stats().in_use, 1);
  EXPECT_EQ(manager_->Stats().in_transaction, 1);
  EXPECT_EQ(manager_->Stats().transactions_begun, 1);
}

TEST_F(SessionManagerTest, TransactionIsolationDefaultsToTheSessionsAndCanBeOverridden) {
  SessionSpec spec;
  spec.isolation = Isolation::kRepeatableRead;
  spec.read_only = true;
  const SessionInfo s = MustBegin(spec);
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Rollback(s.name).ok());
  TransactionSpec tx;
  tx.isolation = Isolation::kSerializable;
  ASSERT_TRUE(BeginTx(s.name, tx).ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN REPEATABLE READ READ ONLY", "ROLLBACK",
                                  "BEGIN SERIALIZABLE READ ONLY", "COMMIT"));
}

TEST_F(SessionManagerTest, StatementsOfATransactionRunOnItsConnectionAndCommitReturnsIt) {
  const SessionInfo a = MustBegin();
  const SessionInfo b = MustBegin();
  ASSERT_TRUE(BeginTx(a.name).ok());
  ASSERT_EQ(connector_.connects(), 1);
  // Another session's statement cannot use the pinned connection.
  ASSERT_TRUE(Exec(b.name, "SELECT 'b'").ok());
  ASSERT_EQ(connector_.connects(), 2);
  absl::StatusOr<Results> r = Exec(a.name, "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].rows[0][0].text, "INSERT INTO t VALUES (1)");
  ASSERT_TRUE(Run(a.name, Batch({"UPDATE t SET x = 2", "SELECT x FROM t"})).ok());
  EXPECT_EQ(pool_->Stats().in_use, 1);

  Tick(absl::Seconds(3));
  absl::StatusOr<absl::Time> committed = Commit(a.name);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(*committed, clock_.Now());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "INSERT INTO t VALUES (1)", "UPDATE t SET x = 2",
                                  "SELECT x FROM t", "COMMIT", "RESET"));
  EXPECT_THAT(Log(2), ElementsAre("SELECT 'b'"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(pool_->Stats().idle, 2);
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), a.name);
  EXPECT_FALSE(info->in_transaction);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.transactions_committed, 1);
  EXPECT_EQ(stats.in_transaction, 0);
}

TEST_F(SessionManagerTest, RollbackEndsTheTransactionAndReturnsTheConnection) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Exec(s.name, "DELETE FROM t").ok());
  absl::StatusOr<bool> rolled_back = Rollback(s.name);
  ASSERT_TRUE(rolled_back.ok()) << rolled_back.status();
  EXPECT_TRUE(*rolled_back);
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "DELETE FROM t", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(manager_->Stats().transactions_rolled_back, 1);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->in_transaction);
}

// The pinned connection was lost (the backend was terminated, the database
// restarted): ROLLBACK fails there, the connection is discarded, and the
// server rolls back the transaction of a closed connection. What the client
// asked for happened, so Rollback succeeds ("a client may always roll back
// on its way out") rather than fail with UNAVAILABLE, which invites a retry.
TEST_F(SessionManagerTest, RollbackOnALostConnectionSucceedsAndDiscardsIt) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Exec(s.name, "DELETE FROM t").ok());
  connector_.connection(1)->set_broken(true);
  absl::StatusOr<bool> rolled_back = Rollback(s.name);
  ASSERT_TRUE(rolled_back.ok()) << rolled_back.status();
  EXPECT_TRUE(*rolled_back);
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(connector_.live(), 0) << "the lost connection went back to the pool";
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->in_transaction);
  EXPECT_EQ(manager_->Stats().transactions_rolled_back, 1);
  // The session goes on, on a new connection.
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(2), ElementsAre("BEGIN", "COMMIT"));
}

TEST_F(SessionManagerTest, CommitWithoutATransactionIsFailedPreconditionRollbackIsANoOp) {
  const SessionInfo s = MustBegin();
  absl::StatusOr<absl::Time> commit = Commit(s.name);
  EXPECT_EQ(commit.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(commit.status().message(), HasSubstr("no transaction is open"));
  // Like PostgreSQL's ROLLBACK outside a transaction: OK, nothing rolled back.
  absl::StatusOr<bool> rollback = Rollback(s.name);
  ASSERT_TRUE(rollback.ok()) << rollback.status();
  EXPECT_FALSE(*rollback);
  EXPECT_EQ(connector_.connects(), 0);
}

TEST_F(SessionManagerTest, BeginTransactionTwiceIsFailedPreconditionAndKeepsTheFirst) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  absl::StatusOr<SessionInfo> again = BeginTx(s.name);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("already open"));
  EXPECT_EQ(pool_->Stats().in_use, 1);
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "SELECT 1", "COMMIT"));
}

class FailingStatementTest : public SessionManagerTest {
 protected:
  // A session whose open transaction just had a statement fail.
  std::string SessionWithFailedStatement() {
    const SessionInfo s = MustBegin();
    EXPECT_TRUE(BeginTx(s.name).ok());
    connector_.connection(1)->FailStatement("SELECT 1/0", failure_);
    EXPECT_TRUE(Exec(s.name, "SELECT 1").ok());
    statement_error_ = Exec(s.name, "SELECT 1/0").status();
    return s.name;
  }

  const absl::Status failure_ = storage::SqlError("22012", "division by zero");
  absl::Status statement_error_;
};

TEST_F(FailingStatementTest, TheCallGetsItsErrorAndTheTransactionIsRolledBackAndReturned) {
  const std::string name = SessionWithFailedStatement();
  EXPECT_EQ(statement_error_.code(), failure_.code());
  EXPECT_THAT(statement_error_.message(), HasSubstr("division by zero"));
  EXPECT_EQ(storage::SqlStateOf(statement_error_), "22012");
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "SELECT 1", "SELECT 1/0", "ROLLBACK", "RESET"));
  EXPECT_FALSE(connector_.connection(1)->in_transaction());
  EXPECT_EQ(pool_->Stats().in_use, 0);

  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), name);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->transaction_aborted);
  EXPECT_THAT(info->abort_reason, HasSubstr("division by zero"));
  EXPECT_EQ(manager_->Stats().transactions_failed, 1);
  EXPECT_EQ(manager_->Stats().in_transaction, 0);

  absl::StatusOr<Results> next = Exec(name, "SELECT 2");
  EXPECT_EQ(next.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ReasonOf(next.status()), "TX_STATEMENT_FAILED");
  EXPECT_THAT(next.status().message(), HasSubstr("call Rollback"));
  EXPECT_THAT(Log(1), Not(Contains("SELECT 2"))) << "nothing runs in an aborted transaction";
}

TEST_F(FailingStatementTest, CommitAfterwardsIsAbortedNothingCommittedAndAcknowledges) {
  const std::string name = SessionWithFailedStatement();
  absl::StatusOr<absl::Time> commit = Commit(name);
  EXPECT_EQ(commit.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(commit.status().message(), HasSubstr("nothing was committed"));
  EXPECT_EQ(ReasonOf(commit.status()), "TX_STATEMENT_FAILED");
  EXPECT_THAT(Log(1), Not(Contains("COMMIT")));
  // Acknowledged: the session is usable again.
  EXPECT_FALSE(manager_->Get(Caller(), name)->in_transaction);
  EXPECT_TRUE(Exec(name, "SELECT 3").ok());
}

TEST_F(FailingStatementTest, RollbackAfterwardsReportsFalseAndTheSessionIsUsableAgain) {
  const std::string name = SessionWithFailedStatement();
  absl::StatusOr<bool> rolled_back = Rollback(name);
  ASSERT_TRUE(rolled_back.ok()) << rolled_back.status();
  EXPECT_FALSE(*rolled_back) << "the broker had already rolled it back";
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), name);
  EXPECT_FALSE(info->in_transaction);
  EXPECT_FALSE(info->transaction_aborted);
  EXPECT_TRUE(Exec(name, "SELECT 3").ok());
  ASSERT_TRUE(BeginTx(name).ok());
  ASSERT_TRUE(Commit(name).ok());
}

TEST_F(FailingStatementTest, BeginTransactionIsRefusedUntilTheAbortIsAcknowledged) {
  const std::string name = SessionWithFailedStatement();
  absl::StatusOr<SessionInfo> r = BeginTx(name);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("Rollback"));
}

// With a savepoint, a failed statement leaves the transaction open and
// aborted on its pinned connection, as PostgreSQL does: other statements get
// 25P02 without reaching the database, ROLLBACK TO recovers it, and the
// statements before the savepoint and after the recovery commit.
TEST_F(FailingStatementTest, WithASavepointTheTransactionStaysAbortedUntilRollbackTo) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  connector_.connection(1)->FailStatement("SELECT 1/0", failure_);
  ASSERT_TRUE(Exec(s.name, "INSERT 1").ok());
  ASSERT_TRUE(Exec(s.name, "SAVEPOINT a").ok());
  const absl::Status failed = Exec(s.name, "SELECT 1/0").status();
  EXPECT_EQ(storage::SqlStateOf(failed), "22012");
  EXPECT_EQ(pool_->Stats().in_use, 1) << "the aborted transaction keeps its connection";
  EXPECT_TRUE(connector_.connection(1)->in_transaction());
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  EXPECT_TRUE(info->in_transaction);
  EXPECT_TRUE(info->transaction_aborted);
  EXPECT_THAT(info->abort_reason, HasSubstr("division by zero"));

  const absl::Status refused = Exec(s.name, "INSERT 2").status();
  EXPECT_EQ(storage::SqlStateOf(refused), "25P02");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Log(1), Not(Contains("INSERT 2"))) << "refused by the broker";

  ASSERT_TRUE(Exec(s.name, "ROLLBACK TO SAVEPOINT a").ok());
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);
  ASSERT_TRUE(Exec(s.name, "INSERT 3").ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "INSERT 1", "SAVEPOINT a", "SELECT 1/0",
                                  "ROLLBACK TO SAVEPOINT a", "INSERT 3", "COMMIT", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(manager_->Stats().transactions_committed, 1);
  EXPECT_EQ(manager_->Stats().transactions_failed, 0);
}

TEST_F(FailingStatementTest, CommitOfATransactionAbortedAfterASavepointRollsBack) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  connector_.connection(1)->FailStatement("SELECT 1/0", failure_);
  ASSERT_TRUE(Exec(s.name, "SAVEPOINT a").ok());
  ASSERT_FALSE(Exec(s.name, "SELECT 1/0").ok());
  absl::StatusOr<absl::Time> commit = Commit(s.name);
  EXPECT_EQ(commit.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(commit.status().message(), HasSubstr("nothing was committed"));
  EXPECT_EQ(ReasonOf(commit.status()), "TX_STATEMENT_FAILED");
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "SAVEPOINT a", "SELECT 1/0", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->in_transaction);
  EXPECT_TRUE(Exec(s.name, "SELECT 3").ok());
}

TEST_F(SessionManagerTest, SavepointsOutsideATransactionAreRefused) {
  const SessionInfo s = MustBegin();
  const absl::Status refused = Exec(s.name, "SAVEPOINT a").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("only inside a session's transaction"));
}

TEST_F(SessionManagerTest, ReadOnlySessionRefusesStatementsThatCouldMakeItWritable) {
  SessionSpec spec;
  spec.read_only = true;
  const SessionInfo s = MustBegin(spec);
  ASSERT_TRUE(BeginTx(s.name).ok());
  for (const char* sql : {"SET transaction_read_only = off", "SET TRANSACTION READ WRITE",
                          "SELECT set_config('transaction_read_only', 'off', true)", "RESET ALL",
                          "DO $$BEGIN PERFORM 1; END$$"}) {
    SCOPED_TRACE(sql);
    absl::StatusOr<Results> r = Exec(s.name, sql);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("read-only session"));
  }
  // Refused before running: the transaction is still open and usable.
  EXPECT_TRUE(Exec(s.name, "SELECT 1").ok());
  EXPECT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN READ ONLY", "SELECT 1", "COMMIT"));
}

TEST_F(SessionManagerTest, OutsideATransactionSettingsAndReadOnlyApplyToTheOneStatement) {
  SessionSpec spec = WithSettings({{"search_path", "s1"}});
  spec.read_only = true;
  const SessionInfo s = MustBegin(spec);
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN search_path=s1", "ROLLBACK",  // the probe
                                  "BEGIN READ ONLY search_path=s1", "SELECT 1", "COMMIT"));
  EXPECT_FALSE(connector_.connection(1)->in_transaction());
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerTest, OutsideATransactionWithoutSettingsAStatementAutocommits) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  EXPECT_THAT(Log(1), ElementsAre("SELECT 1"));
}

TEST_F(SessionManagerTest, BatchOutsideATransactionRunsAtTheSessionsIsolation) {
  SessionSpec spec;
  spec.isolation = Isolation::kSerializable;
  const SessionInfo s = MustBegin(spec);
  ASSERT_TRUE(Run(s.name, Batch({"SELECT 1", "SELECT 2"})).ok());
  EXPECT_THAT(Log(1), ElementsAre("BEGIN SERIALIZABLE", "SELECT 1", "SELECT 2", "COMMIT"));
}

TEST_F(SessionManagerTest, InvalidRequestFailsInlineAndLeavesTheTransactionAlone) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  std::optional<absl::Status> status;
  manager_->Run(Caller(), s.name, One("COMMIT"),
                [&](absl::StatusOr<Results> r) { status = r.status(); });
  ASSERT_TRUE(status.has_value()) << "an invalid request fails inline";
  EXPECT_EQ(status->code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);
  ASSERT_TRUE(Commit(s.name).ok());
}

TEST_F(SessionManagerTest, FailedCommitReturnsTheErrorAndTheConnection) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Exec(s.name, "UPDATE t SET x = 1").ok());
  const absl::Status serialization =
      storage::SqlError("40001", "could not serialize access due to concurrent update");
  connector_.connection(1)->FailNextCommit(serialization);
  absl::StatusOr<absl::Time> commit = Commit(s.name);
  EXPECT_EQ(commit.status().code(), serialization.code());
  EXPECT_EQ(storage::SqlStateOf(commit.status()), "40001");
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_FALSE(connector_.connection(1)->in_transaction());
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  EXPECT_FALSE(info->in_transaction);
  EXPECT_FALSE(info->transaction_aborted) << "the caller already knows: nothing to acknowledge";
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.transactions_failed, 1);
  EXPECT_EQ(stats.transactions_committed, 0);
  ASSERT_TRUE(BeginTx(s.name).ok()) << "the session goes on";
  ASSERT_TRUE(Commit(s.name).ok());
}

TEST_F(SessionManagerTest, TransactionThatChangedSessionStateResetsItsConnection) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Exec(s.name, "SET search_path TO private").ok());
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_THAT(Log(1),
              ElementsAre("BEGIN", "SET search_path TO private", "SELECT 1", "COMMIT", "RESET"));
  // The next transaction starts clean and is not reset again.
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Commit(s.name).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 1);
}

TEST_F(SessionManagerTest, DirtyTransactionKilledOrEndedResetsItsConnection) {
  const SessionInfo idle = MustBegin();
  ASSERT_TRUE(BeginTx(idle.name).ok());
  ASSERT_TRUE(Exec(idle.name, "CREATE TEMP TABLE scratch (x int)").ok());
  Tick(absl::Seconds(10));
  EXPECT_THAT(Log(1),
              ElementsAre("BEGIN", "CREATE TEMP TABLE scratch (x int)", "ROLLBACK", "RESET"));

  const SessionInfo ended = MustBegin();
  ASSERT_TRUE(BeginTx(ended.name).ok());
  ASSERT_TRUE(Exec(ended.name, "SET work_mem TO '1GB'").ok());
  ASSERT_TRUE(End(ended.name).ok());
  EXPECT_EQ(connector_.connection(1)->resets(), 2);
  EXPECT_EQ(Log(1).back(), "RESET");
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerTest, BeginTransactionThatGetsNoConnectionLeavesNoTransaction) {
  // Both connections pinned by other sessions.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(BeginTx(MustBegin().name).ok());
  const SessionInfo s = MustBegin();
  std::optional<absl::StatusOr<SessionInfo>> out;
  manager_->BeginTransaction(Caller(), s.name, {}, clock_.Now() + absl::Seconds(2),
                             [&](absl::StatusOr<SessionInfo> r) { out = std::move(r); });
  Settle();
  EXPECT_FALSE(out.has_value()) << "waits for a connection";
  Tick(absl::Seconds(2));
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->in_transaction);
  EXPECT_EQ(manager_->Stats().transactions_begun, 2);
  // Once the others' transactions are gone (idle), it can begin one.
  Tick(absl::Seconds(10));
  EXPECT_TRUE(BeginTx(s.name).ok());
}

// sessions.in_transaction is "holding a pinned connection" (docs/operations.md):
// a session whose BeginTransaction still waits for one holds none. Under a
// full pool those are the many, and counting them would overstate the pinned
// connections by as much.
TEST_F(SessionManagerTest, ASessionWaitingForAConnectionToBeginIsNotInATransaction) {
  // Both connections pinned by other sessions.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(BeginTx(MustBegin().name).ok());
  ASSERT_EQ(manager_->Stats().in_transaction, 2);
  // Answered when the fixture shuts the manager down, after this body.
  auto out = std::make_shared<std::optional<absl::StatusOr<SessionInfo>>>();
  for (int i = 0; i < 3; ++i) {
    manager_->BeginTransaction(Caller(), MustBegin().name, {}, absl::InfiniteFuture(),
                               [out](absl::StatusOr<SessionInfo> r) { *out = std::move(r); });
  }
  Settle();
  EXPECT_FALSE(out->has_value()) << "waits for a connection";
  EXPECT_EQ(pool_->Stats().in_use, 2);
  EXPECT_EQ(manager_->Stats().in_transaction, 2);
}

TEST_F(SessionManagerTest, ExpiringSessionRollsBackItsIdleTransaction) {
  SessionOptions o = TestOptions();
  o.tx_idle_timeout = absl::Hours(1);
  o.tx_max_duration = absl::Hours(1);
  Restart(o);
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  Tick(absl::Seconds(60));
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "ROLLBACK"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.expired, 1);
  EXPECT_EQ(stats.tx_killed_session_end, 1);
  EXPECT_EQ(stats.tx_killed_idle, 0);
  EXPECT_EQ(stats.in_transaction, 0);
}

TEST_F(SessionManagerTest, OrphanedSessionRollsBackItsTransaction) {
  SessionOptions o = TestOptions();
  o.tx_idle_timeout = absl::Hours(1);
  Restart(o);
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  const SessionManager::StreamId stream = manager_->OpenStream([](StreamUpdate) {});
  manager_->Hold(Caller(), stream, {s.name});
  manager_->CloseStream(stream);
  Tick(absl::Seconds(5));
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_ORPHANED");
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "ROLLBACK"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(manager_->Stats().orphaned, 1);
  EXPECT_EQ(manager_->Stats().tx_killed_session_end, 1);
}

// ---- Transaction deadlines -------------------------------------------------------

TEST_F(SessionManagerTest, IdleTransactionIsRolledBackExactlyWhenTxIdleTimeoutPasses) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  const absl::Time idle_since = clock_.Now();
  Tick(absl::Seconds(10) - kNs);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted) << "killed before the timeout";
  EXPECT_EQ(pool_->Stats().in_use, 1);

  Tick(kNs);
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "ROLLBACK"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok()) << "the session itself goes on";
  EXPECT_TRUE(info->transaction_aborted);
  EXPECT_THAT(info->abort_reason, HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
  EXPECT_THAT(info->abort_reason, HasSubstr(TimeText(idle_since)));
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.tx_killed_idle, 1);
  EXPECT_EQ(stats.tx_killed_max_duration, 0);
  EXPECT_EQ(stats.in_transaction, 0);

  absl::StatusOr<Results> next = Exec(s.name, "SELECT 1");
  EXPECT_EQ(next.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ReasonOf(next.status()), "TX_IDLE_TIMEOUT");
  absl::StatusOr<absl::Time> commit = Commit(s.name);
  EXPECT_EQ(commit.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(commit.status().message(), HasSubstr("nothing was committed"));
  EXPECT_THAT(commit.status().message(), HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
}

// A transaction the broker rolled back is still reported (in_transaction,
// until acknowledged), and so is when it began (Session.transaction_start_time:
// "When the open transaction began").
TEST_F(SessionManagerTest, AbortedTransactionStillReportsWhenItBegan) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  const absl::Time began = clock_.Now();
  Tick(absl::Seconds(10));
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(info->in_transaction);
  ASSERT_TRUE(info->transaction_aborted);
  EXPECT_EQ(info->transaction_start_time, began);
  ASSERT_TRUE(Rollback(s.name).ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->transaction_start_time, absl::InfinitePast());
}

TEST_F(SessionManagerTest, EachStatementRestartsTheIdleTimeout) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  Tick(absl::Seconds(9));
  ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  Tick(absl::Seconds(10) - kNs);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);
  Tick(kNs);
  EXPECT_TRUE(manager_->Get(Caller(), s.name)->transaction_aborted);
  EXPECT_EQ(manager_->Stats().tx_killed_idle, 1);
}

TEST_F(SessionManagerTest, ARunningStatementKeepsTheTransactionFromBeingIdle) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  // The statement is "running" until the executor runs its work.
  Pending p = StartRun(s.name, One("SELECT slow()"));
  clock_.Advance(absl::Seconds(30));
  timers_.RunDue();
  EXPECT_EQ(manager_->Stats().tx_killed_idle, 0);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);

  Settle();
  ASSERT_TRUE(p.result->has_value());
  ASSERT_TRUE(p.result->value().ok()) << p.result->value().status();
  // Idle from the statement's end.
  Tick(absl::Seconds(10) - kNs);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);
  Tick(kNs);
  EXPECT_TRUE(manager_->Get(Caller(), s.name)->transaction_aborted);
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "SELECT slow()", "ROLLBACK", "RESET"));
}

TEST_F(SessionManagerTest, TransactionIsRolledBackAtTxMaxDurationEvenWhenBusy) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  const absl::Time start = clock_.Now();
  // A statement every 9 s: never idle for 10 s.
  while (clock_.Now() + absl::Seconds(9) < start + absl::Minutes(5)) {
    Tick(absl::Seconds(9));
    ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  }
  Tick(start + absl::Minutes(5) - clock_.Now() - kNs);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->transaction_aborted);
  Tick(kNs);
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->transaction_aborted);
  EXPECT_THAT(info->abort_reason, HasSubstr("BROKER_TX_MAX_DURATION"));
  EXPECT_EQ(Log(1).back(), "ROLLBACK");
  EXPECT_EQ(pool_->Stats().in_use, 0);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.tx_killed_max_duration, 1);
  EXPECT_EQ(stats.tx_killed_idle, 0);
  absl::StatusOr<Results> next = Exec(s.name, "SELECT 2");
  EXPECT_EQ(next.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ReasonOf(next.status()), "TX_MAX_DURATION");
}

TEST_F(SessionManagerTest, TxMaxDurationReachedWhileAStatementIsStartingAbortsItOnce) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  const absl::Time start = clock_.Now();
  while (clock_.Now() + absl::Seconds(9) < start + absl::Minutes(5)) {
    Tick(absl::Seconds(9));
    ASSERT_TRUE(Exec(s.name, "SELECT 1").ok());
  }
  // The statement is submitted but its work has not run when the deadline
  // passes: the reaper must abort it once, not spin on the same deadline.
  Pending p = StartRun(s.name, One("SELECT last()"));
  clock_.Set(start + absl::Minutes(5));
  timers_.RunDue();
  EXPECT_EQ(manager_->Stats().tx_killed_max_duration, 1);
  Settle();
  ASSERT_TRUE(p.result->has_value());
  EXPECT_EQ(p.result->value().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(p.result->value().status().message(), HasSubstr("BROKER_TX_MAX_DURATION"));
  EXPECT_THAT(Log(1), Not(Contains("SELECT last()")));
  // Rolled back, then reset (the refused statement calls a user function,
  // so the step that carried it resets the connection it gives up).
  ASSERT_GE(Log(1).size(), 2u);
  EXPECT_EQ(Log(1)[Log(1).size() - 2], "ROLLBACK");
  EXPECT_EQ(Log(1).back(), "RESET");
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_TRUE(manager_->Get(Caller(), s.name)->transaction_aborted);
  EXPECT_EQ(manager_->Stats().tx_killed_max_duration, 1);
  absl::StatusOr<bool> rolled_back = Rollback(s.name);
  ASSERT_TRUE(rolled_back.ok());
  EXPECT_FALSE(*rolled_back);
}

// ---- KeepAlive streams -------------------------------------------------------------

class StreamTest : public SessionManagerTest {
 protected:
  // The manager's shutdown tells the streams their sessions ended: it runs
  // here, while told_ still exists, not in ~SessionManagerTest after it is
  // gone (UBSan: the listener reached into a destroyed StreamTest).
  ~StreamTest() override {
    manager_->Shutdown(absl::InfinitePast());
    executor_.RunAll();
  }

  SessionManager::StreamId Open() {
    return manager_->OpenStream([this](StreamUpdate u) { told_.push_back(std::move(u)); });
  }
  std::vector<StreamUpdate> told_;
};

TEST_F(StreamTest, HeldSessionDoesNotExpireWhileHeld) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  std::vector<StreamUpdate> held = manager_->Hold(Caller(), stream, {s.name});
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].state, State::kHeld);
  EXPECT_EQ(held[0].name, s.name);
  EXPECT_EQ(held[0].expire_time, clock_.Now() + absl::Seconds(60));

  Tick(absl::Hours(10));
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->held_by_stream);
  EXPECT_EQ(info->expire_time, clock_.Now() + absl::Seconds(60));
  EXPECT_EQ(manager_->Stats().held_by_stream, 1);
  EXPECT_EQ(manager_->Stats().expired, 0);
  EXPECT_THAT(told_, IsEmpty());
}

TEST_F(StreamTest, ClosedStreamEndsItsSessionsExactlyAfterTheOrphanGrace) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  manager_->Hold(Caller(), stream, {s.name});
  Tick(absl::Hours(1));
  const absl::Time closed_at = clock_.Now();
  manager_->CloseStream(stream);
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->held_by_stream);
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, closed_at + absl::Seconds(5));
  Tick(absl::Seconds(5) - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok()) << "ended before the grace passed";
  Tick(kNs);
  absl::StatusOr<SessionInfo> gone = manager_->Get(Caller(), s.name);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(gone.status()), "SESSION_ORPHANED");
  EXPECT_THAT(gone.status().message(), HasSubstr("BROKER_SESSION_ORPHAN_GRACE"));
  EXPECT_THAT(gone.status().message(), HasSubstr(TimeText(closed_at)));
  EXPECT_EQ(manager_->Stats().orphaned, 1);
  EXPECT_EQ(manager_->Stats().expired, 0);
  EXPECT_THAT(told_, IsEmpty()) << "a closed stream is not told";
}

TEST_F(StreamTest, HoldingAgainWithinTheGraceKeepsTheSession) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId first = Open();
  manager_->Hold(Caller(), first, {s.name});
  manager_->CloseStream(first);
  Tick(absl::Seconds(4));
  const SessionManager::StreamId second = Open();
  EXPECT_EQ(manager_->Hold(Caller(), second, {s.name})[0].state, State::kHeld);
  Tick(absl::Hours(2));
  EXPECT_TRUE(manager_->Get(Caller(), s.name).ok());
  EXPECT_EQ(manager_->Stats().orphaned, 0);
}

TEST_F(StreamTest, RenewingWithinTheGraceKeepsTheSessionForItsTtl) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  manager_->Hold(Caller(), stream, {s.name});
  manager_->CloseStream(stream);
  Tick(absl::Seconds(4));
  ASSERT_TRUE(manager_->Renew(Caller(), s.name, absl::ZeroDuration()).ok());
  Tick(absl::Seconds(60) - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok());
  Tick(kNs);
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
  EXPECT_EQ(manager_->Stats().orphaned, 0);
  EXPECT_EQ(manager_->Stats().expired, 1);
}

TEST_F(StreamTest, SessionHeldByTwoStreamsStaysHeldWhenOneCloses) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId a = Open();
  const SessionManager::StreamId b = Open();
  manager_->Hold(Caller(), a, {s.name});
  manager_->Hold(Caller(), b, {s.name});
  manager_->CloseStream(a);
  Tick(absl::Hours(3));
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->held_by_stream);
}

TEST_F(StreamTest, ReleaseStartsTheLeaseFromNowWithTheTtl) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  manager_->Hold(Caller(), stream, {s.name});
  Tick(absl::Hours(2));
  std::vector<StreamUpdate> released = manager_->Release(Caller(), stream, {s.name});
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].state, State::kReleased);
  EXPECT_EQ(released[0].expire_time, clock_.Now() + absl::Seconds(60));
  EXPECT_FALSE(manager_->Get(Caller(), s.name)->held_by_stream);
  // Closing the stream later does not orphan what it no longer holds.
  manager_->CloseStream(stream);
  Tick(absl::Seconds(60) - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok());
  Tick(kNs);
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
}

TEST_F(StreamTest, HoldReportsUnknownAndEndedSessions) {
  const SessionInfo ended = MustBegin();
  ASSERT_TRUE(End(ended.name).ok());
  const SessionInfo live = MustBegin();
  const SessionManager::StreamId stream = Open();
  std::vector<StreamUpdate> r =
      manager_->Hold(Caller(), stream, {"nosuchsessionnosuchses", ended.name, live.name});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].state, State::kNotFound);
  EXPECT_EQ(r[0].name, "nosuchsessionnosuchses");
  EXPECT_EQ(r[1].state, State::kEnded);
  EXPECT_THAT(r[1].reason, HasSubstr("EndSession was called"));
  EXPECT_EQ(r[2].state, State::kHeld);
  std::vector<StreamUpdate> rel =
      manager_->Release(Caller(), stream, {"nosuchsessionnosuchses", ended.name});
  EXPECT_EQ(rel[0].state, State::kNotFound);
  EXPECT_EQ(rel[1].state, State::kEnded);
}

TEST_F(StreamTest, HeldSessionEndsAtMaxLifetimeAndTheStreamIsTold) {
  SessionOptions o = TestOptions();
  o.max_lifetime = absl::Hours(2);
  Restart(o);
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  manager_->Hold(Caller(), stream, {s.name});
  Tick(absl::Hours(2) - kNs);
  ASSERT_TRUE(manager_->Get(Caller(), s.name).ok());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->expire_time, s.max_expire_time);
  EXPECT_THAT(told_, IsEmpty());
  Tick(kNs);
  ASSERT_EQ(told_.size(), 1u);
  EXPECT_EQ(told_[0].name, s.name);
  EXPECT_EQ(told_[0].state, State::kEnded);
  EXPECT_THAT(told_[0].reason, HasSubstr("BROKER_SESSION_MAX_LIFETIME"));
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_MAX_LIFETIME");
  EXPECT_EQ(manager_->Stats().lifetime_exceeded, 1);
  EXPECT_EQ(manager_->Stats().held_by_stream, 0);
}

TEST_F(StreamTest, StreamIsToldWhenAHeldSessionIsEnded) {
  const SessionInfo s = MustBegin();
  const SessionManager::StreamId stream = Open();
  manager_->Hold(Caller(), stream, {s.name});
  ASSERT_TRUE(End(s.name).ok());
  ASSERT_EQ(told_.size(), 1u);
  EXPECT_EQ(told_[0].state, State::kEnded);
  EXPECT_THAT(told_[0].reason, HasSubstr("EndSession was called"));
  manager_->CloseStream(stream);  // nothing left to orphan
  Tick(absl::Minutes(1));
  EXPECT_EQ(manager_->Stats().orphaned, 0);
}

// ---- One call at a time ------------------------------------------------------------

TEST_F(SessionManagerTest, CallsOnOneSessionRunOneAtATimeInArrivalOrder) {
  const SessionInfo s = MustBegin();
  std::vector<int> completed;
  for (int i = 1; i <= 3; ++i) {
    manager_->Run(Caller(), s.name, One(absl::StrCat("SELECT ", i)),
                  [&completed, i](absl::StatusOr<Results> r) {
                    EXPECT_TRUE(r.ok()) << r.status();
                    completed.push_back(i);
                  });
  }
  // Only the first has started: the pool (two connections) would otherwise
  // be opening a connection for each.
  EXPECT_EQ(executor_.queued(), 1u);
  EXPECT_EQ(manager_->Get(Caller(), s.name)->queued_calls, 2);
  EXPECT_EQ(manager_->Stats().queued_calls, 2);
  Settle();
  EXPECT_THAT(completed, ElementsAre(1, 2, 3));
  EXPECT_EQ(connector_.connects(), 1) << "never two at once";
  EXPECT_THAT(Log(1), ElementsAre("SELECT 1", "SELECT 2", "SELECT 3"));
  EXPECT_EQ(manager_->Get(Caller(), s.name)->queued_calls, 0);
}

TEST_F(SessionManagerTest, CallsOfDifferentSessionsRunConcurrently) {
  const SessionInfo a = MustBegin();
  const SessionInfo b = MustBegin();
  StartRun(a.name, One("SELECT 'a'"));
  StartRun(b.name, One("SELECT 'b'"));
  EXPECT_EQ(executor_.queued(), 2u);
  Settle();
  EXPECT_EQ(connector_.connects(), 2);
}

TEST_F(SessionManagerTest, MoreThanMaxQueuedCallsWaitingIsResourceExhausted) {
  const SessionInfo s = MustBegin();
  std::vector<Pending> accepted;
  for (int i = 0; i < 3; ++i) accepted.push_back(StartRun(s.name, One("SELECT 1")));
  Pending refused = StartRun(s.name, One("SELECT 'too many'"));
  ASSERT_TRUE(refused.result->has_value()) << "refused at once";
  EXPECT_EQ(refused.result->value().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(refused.result->value().status()), "SESSION_QUEUE_FULL");
  Settle();
  for (Pending& p : accepted) {
    ASSERT_TRUE(p.result->has_value());
    EXPECT_TRUE(p.result->value().ok());
  }
  EXPECT_THAT(Log(1), Not(Contains("SELECT 'too many'")));
}

TEST_F(SessionManagerTest, QueuedCallWhoseDeadlinePassesFailsAndNeverRuns) {
  const SessionInfo s = MustBegin();
  Pending first = StartRun(s.name, One("SELECT 1"));
  Pending second = StartRun(s.name, One("SELECT 2", clock_.Now() + absl::Seconds(1)));
  clock_.Advance(absl::Seconds(1) - kNs);
  timers_.RunDue();
  EXPECT_FALSE(second.result->has_value());
  clock_.Advance(kNs);
  timers_.RunDue();
  ASSERT_TRUE(second.result->has_value());
  EXPECT_EQ(second.result->value().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(second.result->value().status().message(), HasSubstr("nothing of it ran"));
  EXPECT_EQ(manager_->Get(Caller(), s.name)->queued_calls, 0);
  Settle();
  ASSERT_TRUE(first.result->has_value());
  EXPECT_TRUE(first.result->value().ok());
  EXPECT_THAT(Log(1), ElementsAre("SELECT 1"));
}

TEST_F(SessionManagerTest, CancelledQueuedCallFailsCancelledAndNeverRuns) {
  const SessionInfo s = MustBegin();
  Pending first = StartRun(s.name, One("SELECT 1"));
  Pending second = StartRun(s.name, One("SELECT 2"));
  Pending third = StartRun(s.name, One("SELECT 3"));
  second.call->Cancel();
  ASSERT_TRUE(second.result->has_value());
  EXPECT_EQ(second.result->value().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(manager_->Get(Caller(), s.name)->queued_calls, 1);
  Settle();
  EXPECT_TRUE(first.result->value().ok());
  EXPECT_TRUE(third.result->value().ok());
  EXPECT_THAT(Log(1), ElementsAre("SELECT 1", "SELECT 3"));
  second.call->Cancel();  // a second cancel is harmless
}

TEST_F(SessionManagerTest, CancelledCallBeforeItsWorkStartsIsCancelledAndTheNextRuns) {
  const SessionInfo s = MustBegin();
  Pending first = StartRun(s.name, One("SELECT 1"));
  Pending second = StartRun(s.name, One("SELECT 2"));
  first.call->Cancel();
  Settle();
  ASSERT_TRUE(first.result->has_value());
  EXPECT_EQ(first.result->value().status().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(second.result->has_value());
  EXPECT_TRUE(second.result->value().ok());
  EXPECT_THAT(Log(1), ElementsAre("SELECT 2"));
}

// ---- Quotas ------------------------------------------------------------------------

TEST_F(SessionManagerTest, MaxSessionsIsEnforcedAndEndingASessionFreesItsSlot) {
  SessionOptions o = TestOptions();
  o.max_sessions = 3;
  Restart(o);
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) names.push_back(MustBegin(ForClient(absl::StrCat("c", i))).name);
  absl::StatusOr<SessionInfo> r = Begin(ForClient("c9"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(r.status()), "MAX_SESSIONS");
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_MAX_SESSIONS"));
  EXPECT_EQ(manager_->Stats().rejected, 1);
  ASSERT_TRUE(End(names[0]).ok());
  EXPECT_TRUE(Begin(ForClient("c9")).ok());
  EXPECT_EQ(manager_->Stats().open, 3);
}

TEST_F(SessionManagerTest, NoClientHoldsMoreThanItsShareOfAllSessions) {
  SessionOptions o = TestOptions();
  o.max_sessions = 8;
  o.max_sessions_per_client = 0;
  o.max_client_share_percent = 25;  // two of eight
  Restart(o);
  MustBegin(ForClient("a"));
  MustBegin(ForClient("a"));
  absl::StatusOr<SessionInfo> r = Begin(ForClient("a"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(r.status()), "MAX_SESSIONS_PER_CLIENT");
  EXPECT_THAT(r.status().message(), HasSubstr("client \"a\""));
  EXPECT_THAT(r.status().message(), HasSubstr("25% of BROKER_MAX_SESSIONS=8"));
  EXPECT_TRUE(Begin(ForClient("b")).ok()) << "the rest stay for other clients";
}

TEST_F(SessionManagerTest, ClientSharesGiveEachClientItsOwnSessionCap) {
  class Shares final : public ClientShares {
   public:
    ClientQuota QuotaFor(absl::string_view id) const override {
      ClientQuota q;
      q.max_sessions = id == "small" ? 1 : 0;
      return q;
    }
  };
  SessionOptions o = TestOptions();
  o.max_sessions_per_client = 1000;  // replaced by the shares
  o.shares = std::make_shared<Shares>();
  Restart(o);
  MustBegin(ForClient("small"));
  absl::StatusOr<SessionInfo> r = Begin(ForClient("small"));
  EXPECT_EQ(ReasonOf(r.status()), "MAX_SESSIONS_PER_CLIENT");
  EXPECT_THAT(r.status().message(), HasSubstr("max_sessions quota of 1"));
  MustBegin(ForClient("big"));
  MustBegin(ForClient("big"));
}

TEST_F(SessionManagerTest, MaxSessionsPerClientIsEnforcedPerClient) {
  SessionOptions o = TestOptions();
  o.max_sessions_per_client = 2;
  Restart(o);
  const SessionInfo a1 = MustBegin(ForClient("a"));
  MustBegin(ForClient("a"));
  absl::StatusOr<SessionInfo> r = Begin(ForClient("a"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(r.status()), "MAX_SESSIONS_PER_CLIENT");
  EXPECT_THAT(r.status().message(), HasSubstr("\"a\""));
  EXPECT_TRUE(Begin(ForClient("b")).ok()) << "other clients are not affected";
  EXPECT_EQ(manager_->Stats().rejected, 1);
  EXPECT_THAT(manager_->Stats().open_by_client,
              ::testing::UnorderedElementsAre(Pair("a", 2), Pair("b", 1)));

  // A session that expires frees its client's slot too.
  ASSERT_TRUE(manager_->Renew(Caller(), a1.name, absl::Seconds(1)).ok());
  Tick(absl::Seconds(1));
  EXPECT_TRUE(Begin(ForClient("a")).ok());
}

// ---- End ---------------------------------------------------------------------------

TEST_F(SessionManagerTest, EndRollsBackAnOpenTransactionAndReturnsTheConnection) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(BeginTx(s.name).ok());
  ASSERT_TRUE(Exec(s.name, "INSERT INTO t VALUES (1)").ok());
  absl::StatusOr<bool> ended = End(s.name);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(*ended) << "a transaction was open";
  EXPECT_THAT(Log(1), ElementsAre("BEGIN", "INSERT INTO t VALUES (1)", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.ended_by_client, 1);
  EXPECT_EQ(stats.open, 0);
  EXPECT_EQ(stats.in_transaction, 0);
  EXPECT_EQ(manager_->reaper_entries(), 0u);
}

TEST_F(SessionManagerTest, EndWithoutATransactionReportsFalse) {
  const SessionInfo s = MustBegin();
  absl::StatusOr<bool> ended = End(s.name);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_FALSE(*ended);
}

TEST_F(SessionManagerTest, CallsAfterEndFailWithFailedPreconditionSayingWhy) {
  const SessionInfo s = MustBegin();
  ASSERT_TRUE(End(s.name).ok());
  for (const absl::Status& status :
       {manager_->Get(Caller(), s.name).status(), Exec(s.name, "SELECT 1").status(),
        BeginTx(s.name).status(), manager_->Renew(Caller(), s.name, absl::ZeroDuration()).status(),
        End(s.name).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(status.message(), HasSubstr("EndSession was called"));
    EXPECT_EQ(ReasonOf(status), "SESSION_ENDED");
  }
}

TEST_F(SessionManagerTest, EndFailsQueuedCallsAndStopsTheRunningOne) {
  const SessionInfo s = MustBegin();
  Pending running = StartRun(s.name, One("SELECT 1"));
  Pending queued1 = StartRun(s.name, One("SELECT 2"));
  Pending queued2 = StartRun(s.name, One("SELECT 3"));
  std::optional<absl::StatusOr<bool>> ended;
  manager_->End(Caller(), s.name, [&](absl::StatusOr<bool> r) { ended = std::move(r); });
  for (Pending* q : {&queued1, &queued2}) {
    ASSERT_TRUE(q->result->has_value());
    EXPECT_EQ(q->result->value().status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(q->result->value().status().message(), HasSubstr("EndSession was called"));
  }
  Settle();
  ASSERT_TRUE(running.result->has_value());
  EXPECT_EQ(running.result->value().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(running.result->value().status().message(), HasSubstr("session ended"));
  ASSERT_TRUE(ended.has_value());
  ASSERT_TRUE(ended->ok());
  EXPECT_FALSE(**ended);
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_THAT(connector_.connection(1)->log(), IsEmpty());
}

TEST_F(SessionManagerTest, EndCallbackMayCallBackIntoTheManager) {
  // Callbacks must not run under the manager's lock, even on failure.
  std::optional<absl::Status> status;
  manager_->End(Caller(), "nosuchsessionnosuchses", [&](absl::StatusOr<bool> r) {
    status = r.status();
    manager_->Stats();
  });
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->code(), absl::StatusCode::kNotFound);

  const SessionInfo s = MustBegin();
  std::optional<absl::StatusOr<bool>> ended;
  manager_->End(Caller(), s.name, [&](absl::StatusOr<bool> r) {
    ended = std::move(r);
    EXPECT_EQ(manager_->Get(Caller(), s.name).status().code(),
              absl::StatusCode::kFailedPrecondition);
  });
  Settle();
  ASSERT_TRUE(ended.has_value());
}

// ---- Shutdown (single-threaded part) -----------------------------------------------

TEST_F(SessionManagerTest, BeginAfterShutdownIsUnavailable) {
  MustBegin();
  EXPECT_TRUE(manager_->Shutdown(absl::InfiniteFuture())) << "nothing was in flight";
  absl::StatusOr<SessionInfo> r = Begin();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(manager_->Stats().ended_by_shutdown, 1);
  EXPECT_EQ(manager_->Stats().open, 0);
}

// ---- Reaper cost and List ----------------------------------------------------------

TEST_F(SessionManagerTest, ReaperEndsAHundredThousandSessionsInBatchesNotOneTimerEach) {
  constexpr int kSessions = 100000;
  constexpr int kBatch = 4096;
  const char* const kClients[] = {"a", "b", "c"};
  SessionOptions o = TestOptions();
  o.max_sessions = kSessions;
  o.max_sessions_per_client = 0;  // no per-client limit
  o.remembered_ended = 1000;
  Restart(o);
  const size_t timers_before = timers_.pending();
  const absl::Time start = clock_.Now();
  int begun = 0;
  for (int i = 0; i < kSessions; ++i) {
    manager_->Begin(ForClient(kClients[i % 3]), absl::InfiniteFuture(),
                    [&begun](absl::StatusOr<SessionInfo> r) {
                      if (r.ok()) ++begun;
                    });
  }
  ASSERT_EQ(begun, kSessions) << "a session without settings begins inline";
  EXPECT_EQ(manager_->reaper_entries(), static_cast<size_t>(kSessions));
  EXPECT_EQ(timers_.pending(), timers_before + 1) << "one timer for the earliest deadline";

  // List pages through every session exactly once, in name order.
  std::set<std::string> seen;
  std::string token;
  std::string previous;
  int pages = 0;
  do {
    absl::StatusOr<SessionManager::Page> page = manager_->List(Caller(), 1000, token, "");
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->total_size, kSessions);
    for (const SessionInfo& info : page->sessions) {
      ASSERT_GT(info.name, previous);
      previous = info.name;
      seen.insert(info.name);
    }
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages <= 1000);
  EXPECT_EQ(seen.size(), static_cast<size_t>(kSessions));
  EXPECT_EQ(pages, kSessions / 1000);

  // With a client filter: only that client's, all of them.
  int of_b = 0;
  token.clear();
  do {
    absl::StatusOr<SessionManager::Page> page = manager_->List(Caller(), 1000, token, "b");
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->total_size, kSessions / 3);
    for (const SessionInfo& info : page->sessions) {
      ASSERT_EQ(info.client_id, "b");
      ++of_b;
    }
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(of_b, kSessions / 3);

  // All leases end together. A probe timer due at the same instant runs
  // between two reaper runs (timers due together run in the order they were
  // scheduled), so it sees how many each reaper run ended.
  const absl::Time expiry = start + absl::Seconds(60);
  std::vector<size_t> left_after_each_run;
  std::function<void()> schedule_probe = [&] {
    timers_.Schedule(expiry, [&] {
      left_after_each_run.push_back(manager_->reaper_entries());
      if (left_after_each_run.back() > 0 && left_after_each_run.size() < 200) schedule_probe();
    });
  };
  schedule_probe();
  clock_.Set(expiry - kNs);
  timers_.RunDue();
  EXPECT_THAT(left_after_each_run, IsEmpty());
  EXPECT_EQ(manager_->Stats().open, kSessions);

  clock_.Set(expiry);
  int run_due_calls = 0;
  while (manager_->reaper_entries() > 0 && run_due_calls < kSessions) {
    timers_.RunDue();
    ++run_due_calls;
  }
  EXPECT_EQ(run_due_calls, 1) << "the reaper re-arms itself at once";
  const size_t runs = left_after_each_run.size();
  EXPECT_EQ(runs, static_cast<size_t>((kSessions + kBatch - 1) / kBatch));
  size_t before = kSessions;
  for (size_t left : left_after_each_run) {
    EXPECT_LT(left, before);
    EXPECT_LE(before - left, static_cast<size_t>(kBatch));
    before = left;
  }
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.open, 0);
  EXPECT_EQ(stats.expired, kSessions);
  EXPECT_THAT(stats.open_by_client, IsEmpty());
  EXPECT_LE(timers_.pending(), timers_before + 1);
}

TEST_F(SessionManagerTest, ListPagesWithDefaultAndCappedSizesAndRefusesNegative) {
  for (int i = 0; i < 150; ++i) MustBegin();
  absl::StatusOr<SessionManager::Page> page = manager_->List(Caller(), 0, "", "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->sessions.size(), 100u) << "default page size";
  EXPECT_FALSE(page->next_page_token.empty());
  page = manager_->List(Caller(), 100000, "", "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->sessions.size(), 150u);
  EXPECT_TRUE(page->next_page_token.empty()) << "no token after the last page";
  EXPECT_EQ(manager_->List(Caller(), -1, "", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  page = manager_->List(Caller(), 10, "", "nobody");
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(page->sessions, IsEmpty());
  EXPECT_EQ(page->total_size, 0);
}

// ---- With threads: statements that block until cancelled ---------------------------

template <typename T>
class Awaited {
 public:
  // A callback that stores its argument and wakes Wait().
  auto Set() {
    return [this](T value) {
      MutexLock lock(&mu_);
      value_.emplace(std::move(value));
      cv_.SignalAll();
    };
  }
  T Wait() {
    MutexLock lock(&mu_);
    while (!value_.has_value()) cv_.Wait(&mu_);
    return std::move(*value_);
  }
  bool has_value() const {
    MutexLock lock(&mu_);
    return value_.has_value();
  }

 private:
  mutable Mutex mu_;
  CondVar cv_;
  std::optional<T> value_ ABSL_GUARDED_BY(mu_);
};

// Real executor threads run the database work, so a statement can block in
// the fake until cancelled while the test moves the clock.
class SessionManagerThreadedTest : public ::testing::Test {
 protected:
  SessionManagerThreadedTest() {
    spdlog::set_level(spdlog::level::warn);
    PoolOptions options;
    options.pool_size = 3;
    options.max_overflow = 0;
    options.pre_ping = false;
    options.recycle = absl::InfiniteDuration();
    options.max_waiters = 10000;
    pool_ = std::make_unique<ConnectionPool>(options, connector_, executor_, timers_, clock_);
    RunnerOptions runner_options;
    runner_options.max_statement_duration = absl::Hours(1);
    runner_ = std::make_unique<StatementRunner>(*pool_, timers_, cancels_, clock_, runner_options);
    SessionOptions o = TestOptions();
    o.default_ttl = absl::Minutes(30);
    manager_ = std::make_unique<SessionManager>(*runner_, timers_, clock_, o);
  }
  ~SessionManagerThreadedTest() override {
    manager_->Shutdown(absl::InfiniteFuture());
    manager_.reset();
    pool_->Close();
    executor_.Shutdown();
    cancels_.Shutdown();
  }

  SessionInfo MustBegin(SessionSpec spec = {}) {
    Awaited<absl::StatusOr<SessionInfo>> out;
    manager_->Begin(std::move(spec), absl::InfiniteFuture(), out.Set());
    absl::StatusOr<SessionInfo> info = out.Wait();
    EXPECT_TRUE(info.ok()) << info.status();
    return info.value_or(SessionInfo{});
  }
  void MustBeginTx(const std::string& name) {
    Awaited<absl::StatusOr<SessionInfo>> out;
    manager_->BeginTransaction(Caller(), name, {}, absl::InfiniteFuture(), out.Set());
    absl::StatusOr<SessionInfo> info = out.Wait();
    ASSERT_TRUE(info.ok()) << info.status();
  }
  // Starts a statement on connection `id` that blocks until cancelled;
  // returns once it is executing.
  std::shared_ptr<RunningCall> StartBlocking(const std::string& name, int id,
                                             Awaited<absl::StatusOr<Results>>& out) {
    connector_.connection(id)->set_block_until_cancel(true);
    std::shared_ptr<RunningCall> call =
        manager_->Run(Caller(), name, One("SELECT pg_sleep(3600)"), out.Set());
    connector_.connection(id)->WaitUntilExecuting();
    return call;
  }

  FakeClock clock_;
  TimerQueue timers_{clock_};
  ThreadPoolExecutor executor_{3, "sm-test-worker"};
  ThreadPoolExecutor cancels_{1, "sm-test-cancel"};
  FakeConnector connector_;
  std::unique_ptr<ConnectionPool> pool_;
  std::unique_ptr<StatementRunner> runner_;
  std::unique_ptr<SessionManager> manager_;
};

TEST_F(SessionManagerThreadedTest, TxMaxDurationCancelsTheRunningStatement) {
  const SessionInfo s = MustBegin();
  MustBeginTx(s.name);
  const absl::Time start = clock_.Now();
  Awaited<absl::StatusOr<Results>> out;
  StartBlocking(s.name, 1, out);
  clock_.Advance(absl::Minutes(5) - kNs);
  timers_.RunDue();
  EXPECT_EQ(connector_.connection(1)->cancels(), 0) << "cancelled before tx_max_duration";
  clock_.Set(start + absl::Minutes(5));
  timers_.RunDue();
  absl::StatusOr<Results> r = out.Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("BROKER_TX_MAX_DURATION"));
  EXPECT_EQ(ReasonOf(r.status()), "TX_MAX_DURATION");
  EXPECT_EQ(connector_.connection(1)->cancels(), 1);
  // The cancelled statement was not provably stateless: a reset follows.
  EXPECT_THAT(connector_.connection(1)->log(), ElementsAre("BEGIN", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(manager_->Stats().tx_killed_max_duration, 1);
  absl::StatusOr<SessionInfo> info = manager_->Get(Caller(), s.name);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->transaction_aborted);
  EXPECT_THAT(info->abort_reason, HasSubstr("BROKER_TX_MAX_DURATION"));
}

// One transaction, rolled back once, counted once: tx_max_duration fires
// while a statement runs on (the cancel does not stop it at once), then the
// session's lease runs out before the statement returns.
TEST_F(SessionManagerThreadedTest, ATransactionKilledTwiceOverIsCountedOnce) {
  SessionSpec spec;
  spec.ttl = absl::Minutes(6);
  const SessionInfo s = MustBegin(spec);
  MustBeginTx(s.name);
  const absl::Time start = clock_.Now();
  connector_.connection(1)->set_ignore_cancels(1);
  Awaited<absl::StatusOr<Results>> out;
  StartBlocking(s.name, 1, out);
  clock_.Set(start + absl::Minutes(5));
  timers_.RunDue();
  EXPECT_EQ(manager_->Stats().tx_killed_max_duration, 1);
  clock_.Set(manager_->Get(Caller(), s.name).value_or(SessionInfo{}).expire_time);
  timers_.RunDue();
  // The runner repeats its cancel request every second until the statement
  // stops.
  while (!out.has_value()) {
    clock_.Advance(absl::Seconds(1));
    timers_.RunDue();
    std::this_thread::yield();
  }
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kAborted);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.expired, 1);
  EXPECT_EQ(stats.tx_killed_max_duration + stats.tx_killed_session_end, 1)
      << "max_duration " << stats.tx_killed_max_duration << ", session_end "
      << stats.tx_killed_session_end;
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerThreadedTest, SessionExpiryCancelsTheRunningStatementAndRollsBack) {
  SessionSpec spec;
  spec.ttl = absl::Seconds(60);
  const SessionInfo s = MustBegin(spec);
  MustBeginTx(s.name);
  Awaited<absl::StatusOr<Results>> out;
  StartBlocking(s.name, 1, out);
  const absl::Time expiry = manager_->Get(Caller(), s.name)->expire_time;
  clock_.Set(expiry - kNs);
  timers_.RunDue();
  EXPECT_EQ(connector_.connection(1)->cancels(), 0);
  clock_.Set(expiry);
  timers_.RunDue();
  absl::StatusOr<Results> r = out.Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("lease expired"));
  EXPECT_EQ(ReasonOf(r.status()), "SESSION_EXPIRED");
  // The cancelled statement was not provably stateless: a reset follows.
  EXPECT_THAT(connector_.connection(1)->log(), ElementsAre("BEGIN", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.expired, 1);
  EXPECT_EQ(stats.tx_killed_session_end, 1);
  EXPECT_EQ(ReasonOf(manager_->Get(Caller(), s.name).status()), "SESSION_EXPIRED");
}

TEST_F(SessionManagerThreadedTest, EndCancelsTheRunningStatementAndRollsBack) {
  const SessionInfo s = MustBegin();
  MustBeginTx(s.name);
  Awaited<absl::StatusOr<Results>> out;
  StartBlocking(s.name, 1, out);
  Awaited<absl::StatusOr<bool>> ended;
  manager_->End(Caller(), s.name, ended.Set());
  absl::StatusOr<bool> had_tx = ended.Wait();
  ASSERT_TRUE(had_tx.ok()) << had_tx.status();
  EXPECT_TRUE(*had_tx);
  absl::StatusOr<Results> r = out.Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("EndSession was called"));
  // The cancelled statement was not provably stateless: a reset follows.
  EXPECT_THAT(connector_.connection(1)->log(), ElementsAre("BEGIN", "ROLLBACK", "RESET"));
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerThreadedTest, SecondCallStartsOnlyAfterTheFirstCompletes) {
  const SessionInfo s = MustBegin();
  MustBeginTx(s.name);
  Awaited<absl::StatusOr<Results>> first;
  std::shared_ptr<RunningCall> call = StartBlocking(s.name, 1, first);
  Awaited<absl::StatusOr<Results>> second;
  manager_->Run(Caller(), s.name, One("SELECT 2"), second.Set());
  EXPECT_EQ(manager_->Get(Caller(), s.name)->queued_calls, 1);
  EXPECT_FALSE(second.has_value());
  EXPECT_THAT(connector_.connection(1)->log(), ElementsAre("BEGIN"));
  connector_.connection(1)->set_block_until_cancel(false);
  call->Cancel();
  EXPECT_EQ(first.Wait().status().code(), absl::StatusCode::kCancelled);
  // The cancelled statement aborted the transaction: the second call,
  // which ran only after it, is refused.
  EXPECT_EQ(second.Wait().status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(manager_->Get(Caller(), s.name)->transaction_aborted);
  EXPECT_EQ(pool_->Stats().in_use, 0);
}

TEST_F(SessionManagerThreadedTest, ShutdownEndsEverySessionRollsBackAndWaitsForConnections) {
  const SessionInfo a = MustBegin();
  const SessionInfo b = MustBegin();
  const SessionInfo c = MustBegin();
  MustBeginTx(a.name);
  MustBeginTx(b.name);
  ASSERT_EQ(pool_->Stats().in_use, 2);
  Mutex mu;
  std::vector<StreamUpdate> told;
  const SessionManager::StreamId stream = manager_->OpenStream([&](StreamUpdate u) {
    MutexLock lock(&mu);
    told.push_back(std::move(u));
  });
  manager_->Hold(Caller(), stream, {c.name});

  EXPECT_TRUE(manager_->Shutdown(absl::InfiniteFuture()));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  for (int id : {1, 2}) {
    EXPECT_THAT(connector_.connection(id)->log(), ElementsAre("BEGIN", "ROLLBACK"));
  }
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.open, 0);
  EXPECT_EQ(stats.ended_by_shutdown, 3);
  EXPECT_EQ(stats.tx_killed_session_end, 2);
  EXPECT_EQ(manager_->reaper_entries(), 0u);
  for (const SessionInfo& s : {a, b, c}) {
    absl::StatusOr<SessionInfo> gone = manager_->Get(Caller(), s.name);
    EXPECT_EQ(gone.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(ReasonOf(gone.status()), "BROKER_SHUTDOWN");
  }
  {
    MutexLock lock(&mu);
    ASSERT_EQ(told.size(), 1u);
    EXPECT_EQ(told[0].state, State::kEnded);
  }
  Awaited<absl::StatusOr<SessionInfo>> late;
  manager_->Begin({}, absl::InfiniteFuture(), late.Set());
  EXPECT_EQ(late.Wait().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(SessionManagerThreadedTest, ShutdownCancelsRunningStatementsAndWaits) {
  const SessionInfo s = MustBegin();
  MustBeginTx(s.name);
  Awaited<absl::StatusOr<Results>> out;
  StartBlocking(s.name, 1, out);
  EXPECT_TRUE(manager_->Shutdown(absl::InfiniteFuture()));
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(out.Wait().status().code(), absl::StatusCode::kAborted);
  // The cancelled statement was not provably stateless: a reset follows.
  EXPECT_THAT(connector_.connection(1)->log(), ElementsAre("BEGIN", "ROLLBACK", "RESET"));
}

// Many threads on shared sessions while another thread moves the clock and
// runs the timers: no data race (TSan), no deadlock, nothing left behind.
TEST_F(SessionManagerThreadedTest, ConcurrentCallsOnSharedSessionsLeaveNothingBehind) {
  constexpr int kWorkers = 4;
  constexpr int kOpsPerWorker = 1000;
  Mutex names_mu;
  std::vector<std::string> names;
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0};
  Mutex unexpected_mu;
  std::vector<std::string> unexpected_statuses;

  Mutex tally_mu;
  std::map<std::string, int> tally;  // "op code" -> count, to see what ran
  auto check = [&](const absl::Status& status, const char* op = "") {
    {
      MutexLock lock(&tally_mu);
      ++tally[absl::StrCat(op, " ", absl::StatusCodeToString(status.code()))];
    }
    switch (status.code()) {
      case absl::StatusCode::kOk:
      case absl::StatusCode::kNotFound:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kAborted:
      case absl::StatusCode::kResourceExhausted:
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kCancelled:
        return;
      default:
        unexpected.fetch_add(1);
        MutexLock lock(&unexpected_mu);
        unexpected_statuses.push_back(status.ToString());
    }
  };

  // Time moves with the work: 100 ms of fake time per two calls, so leases
  // (1-20 s), the idle timeout (10 s) and the orphan grace (5 s) all fire
  // while the workers are busy, however fast the machine is; and whenever
  // every worker waits (for a connection that only a deadline will free).
  std::atomic<int> ops_done{0};
  std::atomic<int> working{kWorkers};  // workers not blocked in a wait
  std::thread ticker([&] {
    int seen = 0;
    while (!stop.load()) {
      const int now_done = ops_done.load();
      if (now_done >= seen + 2 || working.load() == 0) {
        seen = now_done;
        clock_.Advance(absl::Milliseconds(100));
        timers_.RunDue();
      }
      std::this_thread::yield();
    }
  });
  // Waits for a call's result, telling the ticker this worker is blocked.
  auto wait = [&](auto& awaited) {
    working.fetch_sub(1);
    auto value = awaited.Wait();
    working.fetch_add(1);
    return value;
  };

  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937 rng(w + 1);
      const SessionManager::StreamId stream = manager_->OpenStream([](StreamUpdate) {});
      // Mostly the newest sessions, so that workers share live ones.
      auto pick = [&]() -> std::string {
        MutexLock lock(&names_mu);
        if (names.empty()) return "nosuchsessionnosuchses";
        const size_t recent = std::min<size_t>(names.size(), 6);
        return names[names.size() - 1 - rng() % recent];
      };
      for (int i = 0; i < kOpsPerWorker; ++i, ops_done.fetch_add(1)) {
        const std::string name = pick();
        switch (rng() % 13) {
          case 0:
          case 1: {
            SessionSpec spec;
            spec.ttl = absl::Seconds(1 + rng() % 20);
            spec.client_id = absl::StrCat("client", rng() % 3);
            if (rng() % 4 == 0) spec.settings = {{"search_path", "app"}};
            Awaited<absl::StatusOr<SessionInfo>> out;
            manager_->Begin(std::move(spec), absl::InfiniteFuture(), out.Set());
            absl::StatusOr<SessionInfo> info = wait(out);
            check(info.status(), "begin");
            if (info.ok()) {
              MutexLock lock(&names_mu);
              names.push_back(info->name);
            }
            break;
          }
          case 2:
          case 3: {
            Awaited<absl::StatusOr<Results>> out;
            manager_->Run(Caller(), name, One("SELECT 1"), out.Set());
            check(wait(out).status(), "exec");
            break;
          }
          case 4: {
            Awaited<absl::StatusOr<Results>> out;
            std::shared_ptr<RunningCall> call =
                manager_->Run(Caller(), name, Batch({"SELECT 1", "SELECT 2"}), out.Set());
            if (call != nullptr && rng() % 2 == 0) call->Cancel();
            check(wait(out).status(), "batch");
            break;
          }
          case 5:
            check(manager_->Renew(Caller(), name, absl::Seconds(rng() % 10)).status(), "renew");
            break;
          case 6:
            check(manager_->Get(Caller(), name).status(), "get");
            break;
          case 7: {
            Awaited<absl::StatusOr<SessionInfo>> out;
            manager_->BeginTransaction(Caller(), name, {}, clock_.Now() + absl::Seconds(30),
                                       out.Set());
            check(wait(out).status(), "begin_tx");
            break;
          }
          case 8: {
            Awaited<absl::StatusOr<absl::Time>> out;
            manager_->Commit(Caller(), name, absl::InfiniteFuture(), out.Set());
            check(wait(out).status(), "commit");
            break;
          }
          case 9: {
            Awaited<absl::StatusOr<bool>> out;
            manager_->Rollback(Caller(), name, absl::InfiniteFuture(), out.Set());
            check(wait(out).status(), "rollback");
            break;
          }
          case 10: {
            Awaited<absl::StatusOr<bool>> out;
            manager_->End(Caller(), name, out.Set());
            check(wait(out).status(), "end");
            break;
          }
          case 11: {
            SessionStats stats = manager_->Stats();
            EXPECT_GE(stats.open, 0);
            absl::StatusOr<SessionManager::Page> page = manager_->List(Caller(), 10, "", "client1");
            check(page.status(), "list");
            break;
          }
          case 12:
            if (rng() % 2 == 0) {
              manager_->Hold(Caller(), stream, {name});
            } else {
              manager_->Release(Caller(), stream, {name});
            }
            break;
        }
      }
      manager_->CloseStream(stream);
      working.fetch_sub(1);
    });
  }
  for (std::thread& t : workers) t.join();
  stop.store(true);
  ticker.join();

  EXPECT_EQ(unexpected.load(), 0) << ::testing::PrintToString(unexpected_statuses);
  {
    MutexLock lock(&tally_mu);
    for (const char* ran : {"begin OK", "exec OK", "begin_tx OK", "commit OK", "end OK"}) {
      EXPECT_GT(tally[ran], 0) << ran << " never happened: " << ::testing::PrintToString(tally);
    }
  }
  EXPECT_TRUE(manager_->Shutdown(absl::InfiniteFuture()));
  SessionStats stats = manager_->Stats();
  EXPECT_EQ(stats.open, 0);
  EXPECT_EQ(stats.in_transaction, 0);
  EXPECT_EQ(stats.queued_calls, 0);
  EXPECT_EQ(stats.held_by_stream, 0);
  EXPECT_THAT(stats.open_by_client, IsEmpty());
  EXPECT_EQ(stats.begun, stats.ended_by_client + stats.expired + stats.orphaned +
                             stats.lifetime_exceeded + stats.ended_by_shutdown);
  EXPECT_GT(stats.begun, 0);
  EXPECT_EQ(manager_->reaper_entries(), 0u);
  EXPECT_EQ(pool_->Stats().in_use, 0);
  EXPECT_EQ(pool_->Stats().waiters, 0);
  EXPECT_LE(timers_.pending(), 1u) << "at most the reaper's one timer is left";
  for (int id = 1; id <= connector_.connects(); ++id) {
    if (FakeConnection* c = connector_.connection(id)) EXPECT_FALSE(c->in_transaction());
  }
}

}  // namespace
}  // namespace sessionbroker::core
