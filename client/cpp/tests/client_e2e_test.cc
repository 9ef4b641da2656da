// The C++ client end to end: the real broker binary and PostgreSQL
// (BrokerFixture), checked from PostgreSQL's side through the fixture's
// admin connection where the client's claims concern the database.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/client.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"
#include "tests/support/test_env.h"

namespace sessionbroker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ClientE2eTest : public testing::BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    if (HasFatalFailure()) return;
    StartBroker();
    if (HasFatalFailure()) return;
    client_ = MakeClient();
    // Each test's own table name: the test database is shared.
    table_ = absl::StrCat("cpp_client_", app_name_);
    Admin("DROP TABLE IF EXISTS " + table_);
  }
  void TearDown() override {
    client_.reset();
    if (admin_ != nullptr) Admin("DROP TABLE IF EXISTS " + table_);
  }

  std::unique_ptr<Client> MakeClient() {
    ClientOptions options;
    options.target = broker_->address();
    options.client_id = "cpp-e2e";
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  void MustExecute(const std::string& sql, std::vector<Param> params = {}) {
    absl::StatusOr<Result> r = client_->Execute(sql, std::move(params));
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status();
  }

  std::unique_ptr<Client> client_;
  std::string table_;
};

TEST_F(ClientE2eTest, TypedValuesRoundTripThroughPostgres) {
  MustExecute("CREATE TABLE " + table_ +
              " (i4 int4, i8 int8, f8 float8, b bool, t text, by bytea, j jsonb, n numeric,"
              " at timestamptz, ids int8[], tags text[], u uuid, missing int4)");
  Timestamp at =
      std::chrono::system_clock::from_time_t(1700000000) + std::chrono::microseconds(123456);
  std::optional<int64_t> none;
  MustExecute(
      "INSERT INTO " + table_ + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
      {7, int64_t{1} << 40, 0.1, true, "héllo", Bytes{std::string("\0\xff", 2)},
       Json{R"({"b": 1, "a": [1, 2]})"}, Numeric{"12345678901234567890.5"}, at,
       std::vector<int64_t>{1, 2, 3}, std::vector<std::optional<std::string>>{"x", std::nullopt},
       Param::Typed("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "uuid"), none});

  absl::StatusOr<Result> r = client_->Execute("SELECT * FROM " + table_);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  Row row = (*r)[0];
  EXPECT_EQ(*row.Get<int32_t>("i4"), 7);
  EXPECT_EQ(*row.Get<int64_t>("i8"), int64_t{1} << 40);
  EXPECT_EQ(*row.Get<double>("f8"), 0.1);
  EXPECT_EQ(*row.Get<bool>("b"), true);
  EXPECT_EQ(*row.Get<std::string>("t"), "héllo");
  EXPECT_EQ(row.Get<Bytes>("by")->data, std::string("\0\xff", 2));
  EXPECT_EQ(row.Get<Json>("j")->text, R"({"a": [1, 2], "b": 1})");
  EXPECT_EQ(row.Get<Numeric>("n")->text, "12345678901234567890.5");
  EXPECT_EQ(*row.Get<Timestamp>("at"), at);
  EXPECT_THAT(*row.Get<std::vector<int64_t>>("ids"), ElementsAre(1, 2, 3));
  EXPECT_THAT(*row.Get<std::vector<std::optional<std::string>>>("tags"),
              ElementsAre(std::optional<std::string>("x"), std::nullopt));
  EXPECT_EQ(*row.Get<std::string>("u"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(*row.Get<std::optional<int32_t>>("missing"), std::nullopt);
  absl::Status null_read = row.Get<int32_t>("missing").status();
  EXPECT_EQ(null_read.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(null_read.message(), HasSubstr("column \"missing\" (int4) is NULL"));
}

TEST_F(ClientE2eTest, AUniqueViolationNamesItsConstraintTableAndDetail) {
  MustExecute("CREATE TABLE " + table_ + " (email text CONSTRAINT " + table_ +
              "_email_key UNIQUE)");
  MustExecute("INSERT INTO " + table_ + " VALUES ($1)", {"a@example.com"});
  absl::Status s =
      client_->Execute("INSERT INTO " + table_ + " VALUES ($1)", {"a@example.com"}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(SqlStateOf(s), "23505");
  std::optional<SqlError> e = SqlErrorOf(s);
  ASSERT_TRUE(e.has_value()) << s;
  EXPECT_EQ(e->constraint, table_ + "_email_key");
  EXPECT_EQ(e->table, table_);
  EXPECT_EQ(e->schema, "public");
  EXPECT_EQ(e->detail, "Key (email)=(a@example.com) already exists.");
  EXPECT_EQ(e->statement_index, 0u);
}

TEST_F(ClientE2eTest, ARequestIdMakesExecuteAndCommitSafeToRetry) {
  MustExecute("CREATE TABLE " + table_ + " (id serial PRIMARY KEY, v text)");
  CallOptions once;
  // Unique per run: one-shot ids are recorded in the database, which
  // outlives this broker.
  once.request_id = table_ + "-insert-1";
  const std::string insert = "INSERT INTO " + table_ + " (v) VALUES ($1) RETURNING id";
  absl::StatusOr<Result> first = client_->Execute(insert, {"once"}, once);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<Result> retry = client_->Execute(insert, {"once"}, once);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->proto().SerializeAsString(), first->proto().SerializeAsString());
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_), 1);
  EXPECT_EQ(client_->Execute(insert, {"other"}, once).status().code(),
            absl::StatusCode::kInvalidArgument);

  SessionOptions session_options;
  session_options.call.request_id = "cpp-session-1";
  absl::StatusOr<std::unique_ptr<Session>> session = client_->BeginSession(session_options);
  ASSERT_TRUE(session.ok()) << session.status();
  TransactionOptions begin;
  begin.request_id = "cpp-tx-1";
  ASSERT_TRUE((*session)->Begin(begin).ok());
  ASSERT_TRUE((*session)->Execute("INSERT INTO " + table_ + " (v) VALUES ('tx')").ok());
  CallOptions commit;
  commit.request_id = "cpp-commit-1";
  ASSERT_TRUE((*session)->Commit(commit).ok());
  EXPECT_TRUE((*session)->Commit(commit).ok());
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_ + " WHERE v = 'tx'"), 1);
  // A retried BeginSession is the same lease (both handles end it; the
  // second End finds it ended).
  absl::StatusOr<std::unique_ptr<Session>> again = client_->BeginSession(session_options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->name(), (*session)->name());
}

TEST_F(ClientE2eTest, ARetriedBeginSessionGetsTheSessionItsLostAttemptOpened) {
  // The first attempt, whose answer the client never saw (sent on the raw
  // stub here), and BeginSession's retry with the same request_id and
  // request: the broker answers with the session it opened, not a second.
  SessionOptions options;
  options.call.request_id = table_ + "-begin";
  v1::BeginSessionRequest lost;
  lost.set_request_id(options.call.request_id);
  v1::Session first;
  std::unique_ptr<grpc::ClientContext> context = client_->NewContext();
  grpc::Status sent = client_->broker_stub().BeginSession(context.get(), lost, &first);
  ASSERT_TRUE(sent.ok()) << sent.error_message();
  absl::StatusOr<std::unique_ptr<Session>> retried = client_->BeginSession(options);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ((*retried)->name(), first.name());
  absl::StatusOr<v1::ListSessionsResponse> open = client_->ListSessions("cpp-e2e");
  ASSERT_TRUE(open.ok()) << open.status();
  ASSERT_EQ(open->sessions_size(), 1);
  EXPECT_EQ(open->sessions(0).name(), first.name());
}

TEST_F(ClientE2eTest, BeginSessionCallsWithoutARequestIdLeaseSessionsOfTheirOwn) {
  // Each call's own id: two calls are two sessions, never one replayed.
  std::unique_ptr<Session> a = *client_->BeginSession();
  std::unique_ptr<Session> b = *client_->BeginSession();
  EXPECT_NE(a->name(), b->name());
  absl::StatusOr<v1::ListSessionsResponse> open = client_->ListSessions("cpp-e2e");
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_EQ(open->sessions_size(), 2);
}

TEST_F(ClientE2eTest, AFailedBatchStatementIsNamedByItsIndex) {
  MustExecute("CREATE TABLE " + table_ + " (id int8 PRIMARY KEY)");
  absl::StatusOr<std::vector<Result>> r =
      client_->ExecuteBatch({{"INSERT INTO " + table_ + " VALUES ($1)", {1}},
                             {"INSERT INTO " + table_ + " VALUES ($1)", {1}}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(SqlErrorOf(r.status()).has_value());
  EXPECT_EQ(SqlErrorOf(r.status())->statement_index, 2u);
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_), 0);
}

TEST_F(ClientE2eTest, TransactionRetriesARealSerializationFailure) {
  MustExecute("CREATE TABLE " + table_ + " (id int8 PRIMARY KEY, v int8)");
  MustExecute("INSERT INTO " + table_ + " VALUES (1, 0)");
  std::unique_ptr<Session> other = *client_->BeginSession();
  int runs = 0;
  TransactionOptions options;
  options.isolation = Isolation::kSerializable;
  absl::Status s = client_->Transaction(
      [&](Session& session) -> absl::Status {
        ++runs;
        absl::StatusOr<Result> read = session.Execute("SELECT v FROM " + table_ + " WHERE id = 1");
        if (!read.ok()) return read.status();
        if (runs == 1) {
          // Another session's transaction changes the row after this one's
          // snapshot was taken, and commits first.
          TransactionOptions serializable;
          serializable.isolation = Isolation::kSerializable;
          EXPECT_TRUE(other->Begin(serializable).ok());
          EXPECT_TRUE(other->Execute("UPDATE " + table_ + " SET v = v + 10 WHERE id = 1").ok());
          EXPECT_TRUE(other->Commit().ok());
        }
        return session.Execute("UPDATE " + table_ + " SET v = v + 1 WHERE id = 1").status();
      },
      options);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(AdminCount("SELECT v FROM " + table_ + " WHERE id = 1"), 11);
}

TEST_F(ClientE2eTest, TransactionReturnsTheSerializationFailureWhenAttemptsRunOut) {
  MustExecute("CREATE TABLE " + table_ + " (id int8 PRIMARY KEY, v int8)");
  MustExecute("INSERT INTO " + table_ + " VALUES (1, 0)");
  std::unique_ptr<Session> other = *client_->BeginSession();
  TransactionOptions options;
  options.isolation = Isolation::kRepeatableRead;
  options.max_attempts = 2;
  int runs = 0;
  absl::Status s = client_->Transaction(
      [&](Session& session) -> absl::Status {
        ++runs;
        absl::Status read = session.Execute("SELECT v FROM " + table_).status();
        if (!read.ok()) return read;
        EXPECT_TRUE(other->Execute("UPDATE " + table_ + " SET v = v + 10").ok());
        return session.Execute("UPDATE " + table_ + " SET v = v + 1").status();
      },
      options);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SqlStateOf(s), "40001");
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(AdminCount("SELECT v FROM " + table_), 20);
}

TEST_F(ClientE2eTest, KeepAliveKeepsASessionPastItsTtl) {
  SessionOptions options;
  options.ttl = absl::Seconds(2);
  std::unique_ptr<Session> session = *client_->BeginSession(options);
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<v1::Session> s = session->Get();
    return s.ok() && s->held_by_stream();
  }));
  // Three times the ttl: only the stream can have kept it.
  absl::SleepFor(absl::Seconds(6));
  absl::StatusOr<Result> r = session->Execute("SELECT 1");
  EXPECT_TRUE(r.ok()) << r.status();
  absl::StatusOr<v1::Session> s = client_->GetSession(session->name());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->held_by_stream());
}

TEST_F(ClientE2eTest, DestroyingASessionRollsBackItsTransactionInTheDatabase) {
  MustExecute("CREATE TABLE " + table_ + " (id int8)");
  std::string name;
  {
    std::unique_ptr<Session> session = *client_->BeginSession();
    name = session->name();
    ASSERT_TRUE(session->Begin().ok());
    ASSERT_TRUE(session->Execute("INSERT INTO " + table_ + " VALUES (1)").ok());
    // Eventually: under load another of the broker's connections was seen
    // "idle in transaction" for a moment (pg_stat_activity shows that state
    // while a backend waits between the messages of a pipeline, as in a
    // reset).
    EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle in transaction") == 1; }));
  }
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_), 0);
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("idle in transaction") == 0; }));
  absl::StatusOr<v1::Session> gone = client_->GetSession(name);
  EXPECT_FALSE(gone.ok());
}

TEST_F(ClientE2eTest, ACommittedSessionTransactionIsVisibleAndTheSessionEnds) {
  MustExecute("CREATE TABLE " + table_ + " (id int8)");
  {
    std::unique_ptr<Session> session = *client_->BeginSession();
    ASSERT_TRUE(session->Begin().ok());
    ASSERT_TRUE(session->Execute("INSERT INTO " + table_ + " VALUES (1)").ok());
    ASSERT_TRUE(session->Commit().ok());
  }
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_), 1);
  absl::StatusOr<v1::ListSessionsResponse> list = client_->ListSessions("cpp-e2e");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->sessions_size(), 0);
}

TEST_F(ClientE2eTest, OperatorsCallsReportThePoolSessionsAndHealth) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  absl::StatusOr<v1::ListSessionsResponse> list = client_->ListSessions("cpp-e2e");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->sessions_size(), 1);
  EXPECT_EQ(list->sessions(0).name(), session->name());
  absl::StatusOr<v1::PoolStatus> pool = client_->GetPoolStatus();
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_GT(pool->config().pool_size(), 0);
  EXPECT_EQ(*client_->Health(), ServingStatus::kServing);
  EXPECT_EQ(*client_->Health("sessionbroker.v1.SessionBroker"), ServingStatus::kServing);
  EXPECT_EQ(*client_->Health("no.such.Service"), ServingStatus::kServiceUnknown);
  int snapshots = 0;
  absl::Status watched = client_->WatchPoolStatus(
      absl::Milliseconds(100), [&](const v1::PoolStatus&) { return ++snapshots < 3; });
  EXPECT_TRUE(watched.ok()) << watched;
  EXPECT_EQ(snapshots, 3);
  // A canceller ends the watch from another thread (here: the callback's).
  WatchCanceller canceller;
  int seen = 0;
  watched = client_->WatchPoolStatus(
      absl::Milliseconds(100),
      [&](const v1::PoolStatus&) {
        if (++seen == 2) std::thread([&] { canceller.Cancel(); }).join();
        return true;
      },
      &canceller);
  EXPECT_TRUE(watched.ok()) << watched;
  EXPECT_GE(seen, 2);
  // Cancelled before it starts: returns at once.
  EXPECT_TRUE(
      client_
          ->WatchPoolStatus(
              absl::Milliseconds(100), [](const v1::PoolStatus&) { return true; }, &canceller)
          .ok());
  absl::StatusOr<bool> ended = client_->EndSession(session->name());
  EXPECT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(session->Execute("SELECT 1").status().code(), absl::StatusCode::kFailedPrecondition);
}

// TLS: the client's TlsCredentials against a broker requiring client
// certificates (certificates made at test time).
class ClientTlsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    certs_ = testing::MakeTlsCertificates();
    ASSERT_FALSE(certs_.empty());
    const std::string url = testing::TestDatabaseUrl();
    ASSERT_FALSE(url.empty());
    broker_ = std::make_unique<testing::BrokerProcess>(
        url, std::map<std::string, std::string>{{"BROKER_TLS_CERT", Cert("server.pem")},
                                                {"BROKER_TLS_KEY", Cert("server.key")},
                                                {"BROKER_TLS_CLIENT_CA", Cert("ca.pem")}});
    ASSERT_FALSE(broker_->address().empty()) << broker_->Log();
    // The certificate names localhost (and 127.0.0.1).
    target_ = "localhost:" + broker_->address().substr(broker_->address().rfind(':') + 1);
  }
  void TearDown() override {
    broker_.reset();
    if (!certs_.empty()) std::system(("rm -rf '" + certs_ + "'").c_str());
  }
  std::string Cert(const std::string& name) const { return certs_ + "/" + name; }

  absl::StatusOr<std::unique_ptr<Client>> Connect(const TlsFiles& files) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = TlsCredentials(files);
    if (!creds.ok()) return creds.status();
    ClientOptions options;
    options.target = target_;
    options.credentials = *std::move(creds);
    options.default_deadline = absl::Seconds(10);
    return Client::Create(options);
  }

  std::string certs_;
  std::string target_;
  std::unique_ptr<testing::BrokerProcess> broker_;
};

TEST_F(ClientTlsE2eTest, MutualTlsClientRunsStatementsAndSessions) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Connect({Cert("ca.pem"), Cert("client.pem"), Cert("client.key")});
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status ready = absl::UnavailableError("not yet");
  for (int i = 0; i < 200 && !ready.ok(); ++i) {
    absl::StatusOr<ServingStatus> health = (*client)->Health("sessionbroker.v1.SessionBroker");
    ready = health.ok() && *health == ServingStatus::kServing ? absl::OkStatus()
                                                              : absl::UnavailableError("waiting");
    if (!ready.ok()) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(ready.ok()) << broker_->Log();
  absl::StatusOr<Result> r = (*client)->Execute("SELECT $1::int4 + 1", {41});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*(*r)[0].Get<int64_t>(0), 42);
  absl::StatusOr<std::unique_ptr<Session>> session = (*client)->BeginSession();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_TRUE((*session)->Execute("SELECT 1").ok());
}

TEST_F(ClientTlsE2eTest, WithoutAClientCertificateOrWithAForeignCaTheCallFails) {
  for (const TlsFiles& files :
       {TlsFiles{Cert("ca.pem"), "", ""},
        TlsFiles{Cert("otherca.pem"), Cert("client.pem"), Cert("client.key")},
        TlsFiles{Cert("ca.pem"), Cert("otherca_client.pem"), Cert("otherca_client.key")}}) {
    absl::StatusOr<std::unique_ptr<Client>> client = Connect(files);
    ASSERT_TRUE(client.ok()) << client.status();
    EXPECT_EQ((*client)->Execute("SELECT 1").status().code(), absl::StatusCode::kUnavailable)
        << files.ca << " " << files.cert;
  }
}

TEST_F(ClientTlsE2eTest, TlsCredentialsNamesAnUnreadableFileAndACertWithoutKey) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> missing =
      TlsCredentials({Cert("absent.pem"), "", ""});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("absent.pem"));
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> no_key =
      TlsCredentials({Cert("ca.pem"), Cert("client.pem"), ""});
  EXPECT_EQ(no_key.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sessionbroker

namespace sessionbroker {
namespace {

// Against a broker with a clients file: the token goes out on every call and
// on the KeepAlive stream, and the broker knows the client by it.
class ClientAuthE2eTest : public testing::BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    if (HasFatalFailure()) return;
    token_ = absl::StrCat("cpp-client-token-", getpid(), "-5d1e");
    std::string hash;
    ASSERT_EQ(
        testing::RunCommand(
            absl::StrCat("printf '%s' '", token_, "' | ", SB_BROKER_BINARY, " hash-token"), &hash),
        0);
    while (!hash.empty() && hash.back() == '\n') hash.pop_back();
    clients_file_ = absl::StrCat("/tmp/sb-cpp-clients-", getpid(), ".yaml");
    std::ofstream(clients_file_) << "clients:\n  - id: cppapp\n    token_hashes: [\"" << hash
                                 << "\"]\n";
    StartBroker({{"BROKER_CLIENTS_FILE", clients_file_}});
  }
  void TearDown() override {
    broker_.reset();
    std::remove(clients_file_.c_str());
  }
  absl::StatusOr<std::unique_ptr<Client>> MakeClient(const std::string& token) {
    ClientOptions options;
    options.target = broker_->address();
    options.client_id = "spoofed";
    options.token = token;
    return Client::Create(options);
  }

  std::string token_;
  std::string clients_file_;
};

TEST_F(ClientAuthE2eTest, TokenAuthenticatesCallsAndTheKeepAliveStream) {
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient(token_);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<Result> one = (*client)->Execute("SELECT 1");
  ASSERT_TRUE(one.ok()) << one.status();
  SessionOptions options;
  options.ttl = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<Session>> session = (*client)->BeginSession(options);
  ASSERT_TRUE(session.ok()) << session.status();
  // Only a KeepAlive stream that authenticated can hold the session.
  ASSERT_TRUE(Eventually([&] {
    absl::StatusOr<v1::Session> s = (*session)->Get();
    return s.ok() && s->held_by_stream();
  }));
  absl::StatusOr<v1::Session> s = (*session)->Get();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->client_id(), "cppapp");  // the token's client, not "spoofed"
}

TEST_F(ClientAuthE2eTest, TokenComesFromSbTokenWhenNotGiven) {
  ::setenv("SB_TOKEN", token_.c_str(), 1);
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient("");
  ::unsetenv("SB_TOKEN");
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<Result> one = (*client)->Execute("SELECT 1");
  EXPECT_TRUE(one.ok()) << one.status();
}

TEST_F(ClientAuthE2eTest, WithoutATokenCallsAreUnauthenticated) {
  ::unsetenv("SB_TOKEN");
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient("");
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<Result> one = (*client)->Execute("SELECT 1");
  EXPECT_EQ(one.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(one.status().message(), HasSubstr("authorization: Bearer"));
}

}  // namespace
}  // namespace sessionbroker
