// Identity and isolation end to end: the broker binary with a clients file
// (BROKER_CLIENTS_FILE, hashes written by `session-broker hash-token`) and a
// real PostgreSQL. Tokens right, wrong, missing, and plain text in the file;
// reload without restart; one client's sessions out of another's reach;
// ListSessions scoping and the admin role; x-client-id spoofing; PoolMonitor
// access; no token in the broker's log.
#include <stdio.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"
#include "tests/support/grpc_wire.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;
using Stub = v1::SessionBroker::Stub;

// Per-process tokens, so nothing here could work against another broker.
std::string TokenFor(const std::string& who) {
  return absl::StrCat(who, "-token-", getpid(), "-7f3a9c1e5b");
}

// What `session-broker hash-token` prints for `token`.
std::string HashOf(const std::string& token) {
  std::string out;
  const int rc = RunCommand(
      absl::StrCat("printf '%s\\n' '", token, "' | ", SB_BROKER_BINARY, " hash-token"), &out);
  EXPECT_EQ(rc, 0) << out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_TRUE(absl::StartsWith(out, "$argon2id$")) << out;
  return out;
}

template <typename Response>
struct Result {
  grpc::Status status;
  Response response;
  std::string sqlstate;  // the "sqlstate" trailer, if any
};

class IdentityE2eTest : public BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    char dir[] = "/tmp/sb-identity-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    clients_file_ = dir_ + "/clients.yaml";
    for (const char* who :
         {"alice", "bob", "ops", "carol", "watcher", "ra", "rb", "plain", "ro", "reader"}) {
      hashes_[who] = HashOf(TokenFor(who));
    }
  }
  void TearDown() override {
    broker_.reset();
    std::remove(clients_file_.c_str());
    std::remove((clients_file_ + ".new").c_str());
    ::rmdir(dir_.c_str());
  }

  std::string Client(const std::string& id, const std::string& extra = "") {
    return absl::StrCat("  - id: ", id, "\n    token_hashes: [\"", hashes_[id], "\"]\n", extra);
  }
  // Replaces the clients file by rename, as editors and ConfigMaps do.
  void WriteClients(const std::string& clients) {
    const std::string temp = clients_file_ + ".new";
    std::ofstream(temp) << "clients:\n" << clients;
    ASSERT_EQ(std::rename(temp.c_str(), clients_file_.c_str()), 0);
  }
  void StartWithClients(const std::string& clients) {
    WriteClients(clients);
    StartBroker({{"BROKER_CLIENTS_FILE", clients_file_}, {"BROKER_CLIENTS_FILE_POLL", "0.1"}});
  }
  void StartDefault() {
    StartWithClients(Client("alice") + Client("bob") + Client("ops", "    roles: [admin]\n") +
                     Client("watcher", "    roles: [monitor]\n"));
  }

  // One unary call as `who` ("" = no credentials), with an optional
  // self-declared x-client-id.
  template <typename Request, typename Response>
  Result<Response> As(const std::string& who,
                      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                      const Request& request, const std::string& declared_id = "") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    if (!who.empty()) context.AddMetadata("authorization", "Bearer " + TokenFor(who));
    if (!declared_id.empty()) context.AddMetadata("x-client-id", declared_id);
    Result<Response> out;
    out.status = (stub_.get()->*method)(&context, request, &out.response);
    out.sqlstate = SqlStateOf(context);
    return out;
  }
  Result<v1::ExecuteResponse> Exec(const std::string& who, const std::string& sql,
                                   const std::string& session = "") {
    v1::ExecuteRequest request;
    request.set_sql(sql);
    request.set_session(session);
    return As(who, &Stub::Execute, request);
  }
  // One StreamExecute call as `who` ("" = no credentials): its status and
  // the rows' first values as text.
  struct Streamed {
    grpc::Status status;
    std::string sqlstate;
    std::vector<std::string> values;
  };
  Streamed StreamAs(const std::string& who, const std::string& sql,
                    const std::string& session = "") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    if (!who.empty()) context.AddMetadata("authorization", "Bearer " + TokenFor(who));
    v1::ExecuteRequest request;
    request.set_sql(sql);
    request.set_session(session);
    Streamed out;
    auto reader = stub_->StreamExecute(&context, request);
    v1::StreamExecuteResponse response;
    while (reader->Read(&response)) {
      if (!response.has_rows()) continue;
      for (const v1::Row& row : response.rows().rows()) {
        const v1::Value& v = row.values(0);
        out.values.push_back(v.has_string_value() ? v.string_value()
                                                  : absl::StrCat(v.int64_value()));
      }
    }
    out.status = reader->Finish();
    out.sqlstate = SqlStateOf(context);
    return out;
  }
  std::string Begin(const std::string& who, const std::string& declared_id = "") {
    Result<v1::Session> s = As(who, &Stub::BeginSession, v1::BeginSessionRequest(), declared_id);
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    return s.response.name();
  }
  Result<v1::ListSessionsResponse> List(const std::string& who, const std::string& filter = "") {
    v1::ListSessionsRequest request;
    request.set_client_id(filter);
    return As(who, &Stub::ListSessions, request);
  }
  grpc::Status PoolStatusAs(const std::string& who) {
    auto monitor = v1::PoolMonitor::NewStub(broker_->channel());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    if (!who.empty()) context.AddMetadata("authorization", "Bearer " + TokenFor(who));
    v1::PoolStatus status;
    return monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
  }

  std::string dir_;
  std::string clients_file_;
  std::map<std::string, std::string> hashes_;
};

TEST_F(IdentityE2eTest, ValidTokenIsServedWrongOrMissingIsUnauthenticated) {
  StartDefault();
  Result<v1::ExecuteResponse> ok = Exec("alice", "SELECT 1");
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();

  Result<v1::ExecuteResponse> missing = Exec("", "SELECT 1");
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("authorization: Bearer <token>"));

  Result<v1::ExecuteResponse> wrong = Exec("mallory", "SELECT 1");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.status.error_message(), HasSubstr("not valid"));
  EXPECT_THAT(wrong.status.error_message(), ::testing::Not(HasSubstr(TokenFor("mallory"))));

  // Health stays open: Kubernetes' probes carry no token.
  EXPECT_TRUE(broker_->WaitUntilServing(absl::Seconds(5)));

  // Tokens never reach the log.
  const std::string log = broker_->Log();
  for (const char* who : {"alice", "mallory"}) {
    EXPECT_THAT(log, ::testing::Not(HasSubstr(TokenFor(who))));
  }
}

TEST_F(IdentityE2eTest, StreamExecuteIsAuthenticatedAndKeepsToTheCallersSessions) {
  StartDefault();
  Streamed ok = StreamAs("alice", "SELECT g FROM generate_series(1, 3) g");
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_THAT(ok.values, ::testing::ElementsAre("1", "2", "3"));

  Streamed missing = StreamAs("", "SELECT 1");
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  Streamed wrong = StreamAs("mallory", "SELECT 1");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(wrong.values.empty());

  // Another client's session is not found, as for Execute.
  const std::string alices = Begin("alice");
  Streamed theft = StreamAs("bob", "SELECT 1", alices);
  EXPECT_EQ(theft.status.error_code(), grpc::StatusCode::NOT_FOUND) << theft.status.error_message();
  Streamed own = StreamAs("alice", "SELECT 5", alices);
  ASSERT_TRUE(own.status.ok()) << own.status.error_message();
  EXPECT_THAT(own.values, ::testing::ElementsAre("5"));
}

TEST_F(IdentityE2eTest, PlainTextTokenInTheFileStopsTheBrokerWithoutShowingIt) {
  WriteClients(absl::StrCat("  - id: alice\n    token_hashes: [\"", TokenFor("alice"), "\"]\n"));
  BrokerProcess broker(broker_url_, {{"BROKER_CLIENTS_FILE", clients_file_}});
  const std::optional<int> code = broker.WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker.Log();
  EXPECT_NE(*code, 0);
  EXPECT_THAT(broker.Log(), HasSubstr("not an argon2 hash"));
  EXPECT_THAT(broker.Log(), ::testing::Not(HasSubstr(TokenFor("alice"))));
}

TEST_F(IdentityE2eTest, HealthNeedsATokenWhenNotInTheExemptServices) {
  WriteClients(Client("alice"));
  BrokerProcess broker(
      broker_url_, {{"BROKER_CLIENTS_FILE", clients_file_}, {"BROKER_AUTH_EXEMPT_SERVICES", ""}});
  ASSERT_FALSE(broker.address().empty()) << broker.Log();
  absl::StatusOr<ServingStatus> health;
  // UNAVAILABLE only until the port accepts connections.
  EXPECT_TRUE(Eventually([&] {
    health = HealthCheck(broker.channel(), "");
    return health.status().code() != absl::StatusCode::kUnavailable;
  }));
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnauthenticated) << health.status();
  EXPECT_THAT(health.status().message(), HasSubstr("authorization: Bearer <token>"));
  // The broker itself serves: alice's calls work.
  stub_ = v1::SessionBroker::NewStub(broker.NewChannel());
  Result<v1::ExecuteResponse> ok = Exec("alice", "SELECT 1");
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST_F(IdentityE2eTest, AnUnknownExemptServiceStopsTheBrokerNamingIt) {
  WriteClients(Client("alice"));
  BrokerProcess broker(broker_url_, {{"BROKER_CLIENTS_FILE", clients_file_},
                                     {"BROKER_AUTH_EXEMPT_SERVICES", "grpc.health.v1.Helth"}});
  const std::optional<int> code = broker.WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker.Log();
  EXPECT_NE(*code, 0);
  EXPECT_THAT(broker.Log(),
              HasSubstr("BROKER_AUTH_EXEMPT_SERVICES names \"grpc.health.v1.Helth\""));
}

TEST_F(IdentityE2eTest, ReloadAddsAndRemovesClientsWithoutRestart) {
  StartWithClients(Client("alice") + Client("bob"));
  ASSERT_TRUE(Exec("bob", "SELECT 1").status.ok());
  ASSERT_EQ(Exec("carol", "SELECT 1").status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const pid_t pid = broker_->pid();

  WriteClients(Client("alice") + Client("carol"));
  EXPECT_TRUE(Eventually([&] { return Exec("carol", "SELECT 1").status.ok(); }));
  // bob's verified token was cached: the reload must forget it.
  EXPECT_EQ(Exec("bob", "SELECT 1").status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Exec("alice", "SELECT 1").status.ok());

  // A broken edit keeps the clients there are.
  WriteClients("  - id: broken\n");
  EXPECT_TRUE(Eventually(
      [&] { return absl::StrContains(broker_->Log(), "keeping the previous clients"); }));
  EXPECT_TRUE(Exec("carol", "SELECT 1").status.ok());
  EXPECT_EQ(broker_->pid(), pid);
}

TEST_F(IdentityE2eTest, AnotherClientsSessionIsNotFoundAndItsTransactionSurvives) {
  StartDefault();
  Admin("DROP TABLE IF EXISTS identity_e2e_theft");
  Admin("CREATE TABLE identity_e2e_theft (v int)");
  const std::string victim = Begin("alice");
  v1::BeginTransactionRequest begin_tx;
  begin_tx.set_session(victim);
  ASSERT_TRUE(As("alice", &Stub::BeginTransaction, begin_tx).status.ok());
  ASSERT_TRUE(Exec("alice", "INSERT INTO identity_e2e_theft VALUES (1)", victim).status.ok());

  const std::string nonexistent = "AAAAAAAAAAAAAAAAAAAAAA";
  Result<v1::Session> unknown = As("bob", &Stub::GetSession, [&] {
    v1::GetSessionRequest r;
    r.set_session(nonexistent);
    return r;
  }());
  ASSERT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string expected =
      absl::StrReplaceAll(unknown.status.error_message(), {{nonexistent, victim}});
  std::vector<std::pair<std::string, grpc::Status>> attempts;
  attempts.emplace_back("Execute", Exec("bob", "DELETE FROM identity_e2e_theft", victim).status);
  {
    v1::ExecuteBatchRequest r;
    r.set_session(victim);
    r.add_statements()->set_sql("DELETE FROM identity_e2e_theft");
    attempts.emplace_back("ExecuteBatch", As("bob", &Stub::ExecuteBatch, r).status);
  }
  {
    v1::GetSessionRequest r;
    r.set_session(victim);
    attempts.emplace_back("GetSession", As("bob", &Stub::GetSession, r).status);
  }
  {
    v1::RenewSessionRequest r;
    r.set_session(victim);
    r.mutable_ttl()->set_nanos(1);
    attempts.emplace_back("RenewSession", As("bob", &Stub::RenewSession, r).status);
  }
  attempts.emplace_back("BeginTransaction", As("bob", &Stub::BeginTransaction, begin_tx).status);
  {
    v1::CommitRequest r;
    r.set_session(victim);
    attempts.emplace_back("Commit", As("bob", &Stub::Commit, r).status);
  }
  {
    v1::RollbackRequest r;
    r.set_session(victim);
    attempts.emplace_back("Rollback", As("bob", &Stub::Rollback, r).status);
  }
  {
    v1::EndSessionRequest r;
    r.set_session(victim);
    attempts.emplace_back("EndSession", As("bob", &Stub::EndSession, r).status);
  }
  // bob's self-declared id changes nothing.
  attempts.emplace_back("Execute as x-client-id alice", [&] {
    v1::ExecuteRequest r;
    r.set_sql("DELETE FROM identity_e2e_theft");
    r.set_session(victim);
    return As("bob", &Stub::Execute, r, "alice").status;
  }());
  for (const auto& [what, status] : attempts) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << what;
    EXPECT_EQ(status.error_message(), expected) << what;
  }
  {
    KeepAliveStream stream(stub_.get(), "", TokenFor("bob"));
    ASSERT_TRUE(stream.Hold({victim}));
    std::optional<v1::KeepAliveResponse> answer = stream.Next(absl::Seconds(10));
    ASSERT_TRUE(answer.has_value());
    ASSERT_EQ(answer->sessions_size(), 1);
    EXPECT_EQ(answer->sessions(0).state(), v1::SessionState::NOT_FOUND);
  }

  // The victim's transaction is intact: still open, its row still there.
  v1::GetSessionRequest get;
  get.set_session(victim);
  Result<v1::Session> mine = As("alice", &Stub::GetSession, get);
  ASSERT_TRUE(mine.status.ok()) << mine.status.error_message();
  EXPECT_TRUE(mine.response.in_transaction());
  EXPECT_FALSE(mine.response.transaction_aborted());
  v1::CommitRequest commit;
  commit.set_session(victim);
  ASSERT_TRUE(As("alice", &Stub::Commit, commit).status.ok());
  EXPECT_EQ(AdminCount("SELECT count(*) FROM identity_e2e_theft"), 1);
  Admin("DROP TABLE identity_e2e_theft");
}

TEST_F(IdentityE2eTest, ListSessionsShowsOwnSessionsAndAdminSeesAndEndsAll) {
  StartDefault();
  const std::string a1 = Begin("alice");
  const std::string a2 = Begin("alice");
  const std::string b1 = Begin("bob", /*declared_id=*/"alice");

  Result<v1::ListSessionsResponse> alice = List("alice");
  ASSERT_TRUE(alice.status.ok());
  EXPECT_EQ(alice.response.sessions_size(), 2);
  for (const v1::Session& s : alice.response.sessions()) EXPECT_EQ(s.client_id(), "alice");

  // bob asked for alice's; he sees his own, which carries his real id.
  Result<v1::ListSessionsResponse> bob = List("bob", "alice");
  ASSERT_TRUE(bob.status.ok());
  ASSERT_EQ(bob.response.sessions_size(), 1);
  EXPECT_EQ(bob.response.sessions(0).name(), b1);
  EXPECT_EQ(bob.response.sessions(0).client_id(), "bob");

  Result<v1::ListSessionsResponse> ops = List("ops");
  ASSERT_TRUE(ops.status.ok());
  EXPECT_EQ(ops.response.total_size(), 3);
  Result<v1::ListSessionsResponse> ops_bob = List("ops", "bob");
  ASSERT_TRUE(ops_bob.status.ok());
  EXPECT_EQ(ops_bob.response.total_size(), 1);

  v1::EndSessionRequest end;
  end.set_session(b1);
  EXPECT_TRUE(As("ops", &Stub::EndSession, end).status.ok());
  v1::GetSessionRequest get;
  get.set_session(b1);
  EXPECT_EQ(As("bob", &Stub::GetSession, get).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(a1.empty() || a2.empty());
}

TEST_F(IdentityE2eTest, PoolMonitorIsForAdminAndMonitorRoles) {
  StartDefault();
  EXPECT_EQ(PoolStatusAs("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status alice = PoolStatusAs("alice");
  EXPECT_EQ(alice.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(alice.error_message(), HasSubstr("admin or monitor"));
  EXPECT_TRUE(PoolStatusAs("ops").ok());
  EXPECT_TRUE(PoolStatusAs("watcher").ok());
}

// Database roles: each client's statements run as its own role, on whatever
// connection serves them, and no role reaches another client.
class RoleE2eTest : public IdentityE2eTest {
 protected:
  void SetUp() override {
    IdentityE2eTest::SetUp();
    if (HasFatalFailure()) return;
    for (const char* role : {"sb_e2e_role_a", "sb_e2e_role_b"}) {
      Admin(absl::StrCat("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '", role,
                         "') THEN CREATE ROLE ", role, " NOLOGIN; END IF; END $$"));
      Admin(absl::StrCat("GRANT ", role, " TO CURRENT_USER"));
    }
    Admin("DROP TABLE IF EXISTS identity_e2e_rls");
    Admin("CREATE TABLE identity_e2e_rls (owner text, v int)");
    Admin("INSERT INTO identity_e2e_rls VALUES ('sb_e2e_role_a', 1), ('sb_e2e_role_b', 2)");
    Admin("ALTER TABLE identity_e2e_rls ENABLE ROW LEVEL SECURITY");
    Admin("CREATE POLICY own_rows ON identity_e2e_rls USING (owner = current_user)");
    Admin("GRANT SELECT, INSERT ON identity_e2e_rls TO sb_e2e_role_a, sb_e2e_role_b");
    login_role_ = Admin("SELECT current_user::text").rows[0][0].text;
    // One connection: every client's calls share it.
    WriteClients(Client("ra", "    database_role: sb_e2e_role_a\n") +
                 Client("rb", "    database_role: sb_e2e_role_b\n") + Client("plain") +
                 Client("ro", "    read_only: true\n") +
                 Client("reader", "    allowed_statement_kinds: [select]\n"));
    StartBroker(
        {{"BROKER_CLIENTS_FILE", clients_file_}, {"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  }
  void TearDown() override {
    broker_.reset();
    if (admin_ != nullptr) Admin("DROP TABLE IF EXISTS identity_e2e_rls");
    IdentityE2eTest::TearDown();
  }
  std::string One(const std::string& who, const std::string& sql, const std::string& session = "") {
    Result<v1::ExecuteResponse> r = Exec(who, sql, session);
    EXPECT_TRUE(r.status.ok()) << who << ": " << sql << ": " << r.status.error_message();
    if (!r.status.ok() || r.response.rows_size() != 1) return "";
    const v1::Value& v = r.response.rows(0).values(0);
    return v.has_string_value() ? v.string_value() : absl::StrCat(v.int64_value());
  }

  std::string login_role_;
};

TEST_F(RoleE2eTest, EachClientSeesItsOwnRoleOnOneSharedConnection) {
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(One("ra", "SELECT current_user::text"), "sb_e2e_role_a");
    EXPECT_EQ(One("rb", "SELECT current_user::text"), "sb_e2e_role_b");
    EXPECT_EQ(One("plain", "SELECT current_user::text"), login_role_);
    EXPECT_EQ(One("rb", "SELECT current_user::text"), "sb_e2e_role_b");
  }
  // A session's transaction runs as its client's role too, and the role
  // does not outlive it.
  const std::string session = Begin("ra");
  v1::BeginTransactionRequest begin_tx;
  begin_tx.set_session(session);
  ASSERT_TRUE(As("ra", &Stub::BeginTransaction, begin_tx).status.ok());
  EXPECT_EQ(One("ra", "SELECT current_user::text", session), "sb_e2e_role_a");
  v1::CommitRequest commit;
  commit.set_session(session);
  ASSERT_TRUE(As("ra", &Stub::Commit, commit).status.ok());
  EXPECT_EQ(One("plain", "SELECT current_user::text"), login_role_);
  EXPECT_EQ(BrokerConnections(), 1);
}

TEST_F(RoleE2eTest, RowLevelSecurityAppliesPerClient) {
  EXPECT_EQ(One("ra", "SELECT string_agg(v::text, ',') FROM identity_e2e_rls"), "1");
  EXPECT_EQ(One("rb", "SELECT string_agg(v::text, ',') FROM identity_e2e_rls"), "2");
  EXPECT_EQ(One("ra", "SELECT string_agg(v::text, ',') FROM identity_e2e_rls"), "1");
}

TEST_F(RoleE2eTest, RoleChangesAreRefusedForRoleBoundClients) {
  for (const char* sql :
       {"SET ROLE NONE", "RESET ROLE", "SET SESSION AUTHORIZATION DEFAULT",
        "SELECT set_config('role', 'sb_e2e_role_b', false)", "SET LOCAL ROLE sb_e2e_role_b"}) {
    Result<v1::ExecuteResponse> r = Exec("ra", sql);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << sql;
    EXPECT_THAT(r.status.error_message(), HasSubstr("database_role")) << sql;
  }
  EXPECT_EQ(One("ra", "SELECT current_user::text"), "sb_e2e_role_a");
}

TEST_F(RoleE2eTest, ReadOnlyClientsAlwaysGetReadOnlyTransactions) {
  Result<v1::ExecuteResponse> write =
      Exec("ro", "INSERT INTO identity_e2e_rls VALUES ('sb_e2e_role_a', 3)");
  EXPECT_FALSE(write.status.ok());
  EXPECT_EQ(write.sqlstate, "25006") << write.status.error_message();

  // Its sessions are read-only though it asked otherwise.
  v1::BeginSessionRequest begin;
  begin.set_read_only(false);
  Result<v1::Session> session = As("ro", &Stub::BeginSession, begin);
  ASSERT_TRUE(session.status.ok());
  EXPECT_TRUE(session.response.read_only());
  v1::BeginTransactionRequest begin_tx;
  begin_tx.set_session(session.response.name());
  ASSERT_TRUE(As("ro", &Stub::BeginTransaction, begin_tx).status.ok());
  Result<v1::ExecuteResponse> in_tx = Exec(
      "ro", "INSERT INTO identity_e2e_rls VALUES ('sb_e2e_role_a', 4)", session.response.name());
  EXPECT_EQ(in_tx.sqlstate, "25006") << in_tx.status.error_message();

  // No way back to read-write: SET is refused before it reaches PostgreSQL.
  v1::ExecuteBatchRequest batch;
  batch.add_statements()->set_sql("SET TRANSACTION READ WRITE");
  batch.add_statements()->set_sql("INSERT INTO identity_e2e_rls VALUES ('sb_e2e_role_a', 5)");
  Result<v1::ExecuteBatchResponse> escape = As("ro", &Stub::ExecuteBatch, batch);
  EXPECT_EQ(escape.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(escape.status.error_message(), HasSubstr("read-only"));
  EXPECT_EQ(AdminCount("SELECT count(*) FROM identity_e2e_rls"), 2);
}

TEST_F(RoleE2eTest, StatementKindsOutsideTheAllowListAreRefusedByName) {
  EXPECT_EQ(One("reader", "SELECT 7"), "7");
  Result<v1::ExecuteResponse> ddl = Exec("reader", "CREATE TABLE identity_e2e_nope (i int)");
  EXPECT_EQ(ddl.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(ddl.status.error_message(), HasSubstr("of kind ddl"));
  Result<v1::ExecuteResponse> insert =
      Exec("reader", "INSERT INTO identity_e2e_rls VALUES ('x', 9)");
  EXPECT_EQ(insert.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(insert.status.error_message(), HasSubstr("of kind insert"));
  EXPECT_EQ(AdminCount("SELECT count(*) FROM pg_class WHERE relname = 'identity_e2e_nope'"), 0);
}

TEST_F(RoleE2eTest, StreamExecuteRunsAsTheClientsRoleUnderItsPolicy) {
  Streamed role = StreamAs("ra", "SELECT current_user::text");
  ASSERT_TRUE(role.status.ok()) << role.status.error_message();
  EXPECT_THAT(role.values, ::testing::ElementsAre("sb_e2e_role_a"));
  Streamed rows = StreamAs("rb", "SELECT v FROM identity_e2e_rls");
  ASSERT_TRUE(rows.status.ok()) << rows.status.error_message();
  EXPECT_THAT(rows.values, ::testing::ElementsAre("2"));
  // The role does not outlive the stream on the one shared connection.
  EXPECT_EQ(One("plain", "SELECT current_user::text"), login_role_);

  Streamed ddl = StreamAs("reader", "CREATE TABLE identity_e2e_nope (i int)");
  EXPECT_EQ(ddl.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(ddl.status.error_message(), HasSubstr("of kind ddl"));
  Streamed escape = StreamAs("ra", "SET ROLE NONE");
  EXPECT_EQ(escape.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  Streamed write =
      StreamAs("ro", "INSERT INTO identity_e2e_rls VALUES ('sb_e2e_role_a', 3) RETURNING v");
  EXPECT_EQ(write.sqlstate, "25006") << write.status.error_message();
  EXPECT_EQ(AdminCount("SELECT count(*) FROM identity_e2e_rls"), 2);
}

}  // namespace
}  // namespace sessionbroker::testing
