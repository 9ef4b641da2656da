// End-to-end hardening through the broker binary (issue 13, "Hardening"):
//  * request bounds: a message over BROKER_MAX_REQUEST_BYTES and metadata
//    over BROKER_MAX_METADATA_BYTES are refused by gRPC with
//    RESOURCE_EXHAUSTED, SQL over BROKER_MAX_SQL_BYTES, batches over
//    BROKER_MAX_BATCH_STATEMENTS and arrays deeper than
//    BROKER_MAX_ARRAY_DEPTH with INVALID_ARGUMENT naming the setting, and the
//    broker serves the next call as before;
//  * secrets: after a run that used a database password (a role that
//    PostgreSQL authenticates with SCRAM), a wrong password, a database that
//    went down and calls carrying "authorization: Bearer <token>", neither
//    the password nor the token appears in the broker's logs (text and JSON),
//    PoolStatus, /metrics, --print-config or any status or trailer a caller
//    received.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_process.h"
#include "tests/support/test_env.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

v1::Value Str(const std::string& s) {
  v1::Value v;
  v.set_string_value(s);
  return v;
}

// One Execute; `metadata` added to the call.
grpc::Status Execute(v1::SessionBroker::Stub& stub, const v1::ExecuteRequest& request,
                     const std::multimap<std::string, std::string>& metadata = {},
                     std::string* trailers = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  v1::ExecuteResponse response;
  grpc::Status status = stub.Execute(&context, request, &response);
  if (trailers != nullptr) {
    for (const auto& [key, value] : context.GetServerTrailingMetadata()) {
      absl::StrAppend(trailers, std::string(key.data(), key.size()), ": ",
                      std::string(value.data(), value.size()), "\n");
    }
  }
  return status;
}

v1::ExecuteRequest Sql(const std::string& sql) {
  v1::ExecuteRequest request;
  request.set_sql(sql);
  return request;
}

class RequestLimitsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string url = TestDatabaseUrl();
    ASSERT_FALSE(url.empty());
    broker_ = std::make_unique<BrokerProcess>(url, std::map<std::string, std::string>{
                                                       {"BROKER_MAX_REQUEST_BYTES", "65536"},
                                                       {"BROKER_MAX_METADATA_BYTES", "4096"},
                                                       {"BROKER_MAX_SQL_BYTES", "1000"},
                                                       {"BROKER_MAX_BATCH_STATEMENTS", "3"},
                                                       {"BROKER_MAX_ARRAY_DEPTH", "2"},
                                                   });
    ASSERT_TRUE(broker_->WaitUntilServing()) << broker_->Log();
    stub_ = v1::SessionBroker::NewStub(broker_->channel());
  }

  // The broker still serves an ordinary call, on a new connection (gRPC
  // closes the connection that sent metadata over the limit).
  void ExpectStillServing() {
    v1::ExecuteRequest request = Sql("SELECT $1::text");
    *request.add_params() = Str("still here");
    auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
    grpc::Status status = Execute(*stub, request);
    EXPECT_TRUE(status.ok()) << status.error_message() << "\n" << broker_->Log();
  }

  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<v1::SessionBroker::Stub> stub_;
};

TEST_F(RequestLimitsE2eTest, AMessageOverTheRequestLimitIsResourceExhausted) {
  v1::ExecuteRequest request = Sql("SELECT length($1)");
  *request.add_params() = Str(std::string(100'000, 'x'));
  grpc::Status status = Execute(*stub_, request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("65536")) << "the message names the limit";
  ExpectStillServing();
}

TEST_F(RequestLimitsE2eTest, MetadataOverTheLimitIsRefused) {
  grpc::Status status = Execute(*stub_, Sql("SELECT 1"), {{"x-padding", std::string(8000, 'p')}});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  // gRPC's own words (its HTTP/2 layer refuses the headers before any
  // handler runs): docs/errors.md names the setting.
  EXPECT_THAT(status.error_message(), HasSubstr("metadata size exceeds limit"));
  ExpectStillServing();
  // Within the limit, metadata is taken as always.
  auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
  grpc::Status within = Execute(*stub, Sql("SELECT 1"), {{"x-padding", std::string(1000, 'p')}});
  EXPECT_TRUE(within.ok()) << within.error_message();
}

TEST_F(RequestLimitsE2eTest, SqlOverTheLimitIsInvalidArgumentNamingTheSetting) {
  grpc::Status status = Execute(*stub_, Sql("SELECT 1" + std::string(1000, ' ')));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("BROKER_MAX_SQL_BYTES"));
  ExpectStillServing();
}

TEST_F(RequestLimitsE2eTest, ABatchOverTheLimitIsInvalidArgumentNamingTheSetting) {
  grpc::ClientContext context;
  v1::ExecuteBatchRequest request;
  for (int i = 0; i < 4; ++i) request.add_statements()->set_sql("SELECT 1");
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("BROKER_MAX_BATCH_STATEMENTS"));
}

TEST_F(RequestLimitsE2eTest, ArraysDeeperThanTheLimitAreInvalidArgumentNamingTheSetting) {
  v1::ExecuteRequest request = Sql("SELECT $1::int[]");
  v1::Value* level = request.add_params();
  for (int i = 0; i < 3; ++i) level = level->mutable_array_value()->add_values();
  level->set_int64_value(1);
  grpc::Status status = Execute(*stub_, request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("BROKER_MAX_ARRAY_DEPTH"));
}

// ---- secrets ----

constexpr char kRole[] = "sb_secret_role";
constexpr char kPassword[] = "Pw-3f9c1e7a-Secret";
constexpr char kWrongPassword[] = "Wrong-8d2b6f04-Secret";
constexpr char kToken[] = "tok-51ad93c0e7b24f6a";

// psql against `url` as the superuser, the SQL from a file (so no shell
// quoting applies to it); false (and the output in `out`) on failure.
bool Psql(const std::string& url, const std::string& sql, std::string* out) {
  char path[] = "/tmp/sb-hardening-sql.XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return false;
  const bool written = write(fd, sql.data(), sql.size()) == static_cast<ssize_t>(sql.size());
  close(fd);
  const int rc =
      written
          ? RunCommand(absl::StrCat("psql -X -q -v ON_ERROR_STOP=1 '", url, "' -f ", path, " 2>&1"),
                       out)
          : -1;
  unlink(path);
  return rc == 0;
}

// Where the secret occurs in `text`, for the failure message ("" if not).
std::string Leak(const std::string& where, const std::string& text) {
  std::string leaks;
  for (const char* secret : {kPassword, kWrongPassword, kToken}) {
    const size_t at = text.find(secret);
    if (at == std::string::npos) continue;
    const size_t from = at < 120 ? 0 : at - 120;
    absl::StrAppend(&leaks, where, " holds ", secret, ": ...", text.substr(from, 240), "...\n");
  }
  return leaks;
}

class SecretsE2eTest : public ::testing::Test {
 protected:
  // A private cluster where kRole must log in with kPassword over SCRAM
  // (scripts/pg trusts every local connection): the hba file is rewritten by
  // the server itself (COPY ... TO, as the postgres user) and reloaded.
  static void SetUpTestSuite() {
    cluster_ = new PrivateCluster();
    ASSERT_TRUE(cluster_->Start()) << "scripts/pg could not start a cluster";
    const std::string& url = cluster_->url();
    std::string out;
    ASSERT_TRUE(Psql(url,
                     absl::StrCat("SET password_encryption = 'scram-sha-256'; CREATE ROLE ", kRole,
                                  " LOGIN PASSWORD '", kPassword, "'"),
                     &out))
        << out;
    ASSERT_TRUE(Psql(url,
                     absl::StrCat("DO $$ BEGIN EXECUTE format('COPY (VALUES (%L), (%L), (%L)) TO "
                                  "%L', 'host all ",
                                  kRole,
                                  " 127.0.0.1/32 scram-sha-256', 'host all all 127.0.0.1/32 "
                                  "trust', 'local all all trust', current_setting('hba_file')); "
                                  "END $$; SELECT pg_reload_conf();"),
                     &out))
        << out;
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  // DATABASE_URL for kRole with `password`.
  static std::string RoleUrl(const std::string& password) {
    std::string url = cluster_->url();  // postgresql://postgres@127.0.0.1:PORT/postgres
    const std::string user = "postgres@";
    const size_t at = url.find(user);
    if (at == std::string::npos) return "";
    return url.replace(at, user.size(), absl::StrCat(kRole, ":", password, "@"));
  }

  // Calls that carry the token: a query, a failing query, a session's
  // calls; every status message and trailer goes into `seen`.
  static void CallWithToken(v1::SessionBroker::Stub& stub, std::string* seen) {
    const std::multimap<std::string, std::string> auth = {
        {"authorization", absl::StrCat("Bearer ", kToken)}, {"x-client-id", "secrets-test"}};
    for (const char* sql : {"SELECT current_user", "SELECT * FROM no_such_table",
                            "SELECT current_setting('no.such_setting')"}) {
      std::string trailers;
      grpc::Status status = Execute(stub, Sql(sql), auth, &trailers);
      absl::StrAppend(seen, sql, " -> ", status.error_code(), " ", status.error_message(), " ",
                      status.error_details(), "\n", trailers);
    }
    grpc::ClientContext context;
    for (const auto& [key, value] : auth) context.AddMetadata(key, value);
    v1::BeginSessionRequest begin;
    begin.set_label("secrets");
    v1::Session session;
    grpc::Status status = stub.BeginSession(&context, begin, &session);
    absl::StrAppend(seen, "BeginSession -> ", status.error_code(), " ", status.error_message(), " ",
                    session.DebugString(), "\n");
    grpc::ClientContext list_context;
    for (const auto& [key, value] : auth) list_context.AddMetadata(key, value);
    v1::ListSessionsResponse list;
    status = stub.ListSessions(&list_context, v1::ListSessionsRequest(), &list);
    absl::StrAppend(seen, "ListSessions -> ", status.error_message(), " ", list.DebugString(),
                    "\n");
  }

  // PoolStatus as text and the /metrics body, into `seen`.
  static void ReadMonitoring(const BrokerProcess& broker, std::string* seen) {
    auto monitor = v1::PoolMonitor::NewStub(broker.channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
    v1::PoolStatus status;
    grpc::Status rpc = monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(rpc.ok()) << rpc.error_message();
    absl::StrAppend(seen, "PoolStatus: ", status.DebugString(), "\n");
    httplib::Client http(absl::StrCat("http://", broker.metrics_address()));
    httplib::Result metrics = http.Get("/metrics");
    ASSERT_TRUE(metrics) << "no /metrics";
    EXPECT_THAT(metrics->body, HasSubstr("sessionbroker_"));
    absl::StrAppend(seen, "/metrics: ", metrics->body, "\n");
  }

  static PrivateCluster* cluster_;
};

PrivateCluster* SecretsE2eTest::cluster_ = nullptr;

TEST_F(SecretsE2eTest, NoPasswordOrTokenInLogsStatusMetricsOrErrors) {
  for (const char* format : {"text", "json"}) {
    SCOPED_TRACE(format);
    ASSERT_TRUE(cluster_->Start());
    const std::map<std::string, std::string> env = {{"LOG_FORMAT", format},
                                                    {"LOG_LEVEL", "debug"},
                                                    {"DB_ECHO", "true"},
                                                    {"BROKER_HEALTH_CHECK_INTERVAL", "0.1"},
                                                    {"DB_POOL_TIMEOUT", "2"},
                                                    {"BROKER_DRAIN_SECONDS", "0"},
                                                    {"BROKER_SHUTDOWN_GRACE_SECONDS", "1"}};
    std::string seen;

    // The right password: the calls reach PostgreSQL as kRole.
    auto good = std::make_unique<BrokerProcess>(RoleUrl(kPassword), env);
    ASSERT_TRUE(good->WaitUntilServing()) << good->Log();
    auto stub = v1::SessionBroker::NewStub(good->channel());
    {
      v1::ExecuteRequest whoami = Sql("SELECT current_user::text");
      grpc::ClientContext context;
      v1::ExecuteResponse response;
      grpc::Status status = stub->Execute(&context, whoami, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      ASSERT_EQ(response.rows(0).values(0).string_value(), kRole);
    }
    CallWithToken(*stub, &seen);
    ReadMonitoring(*good, &seen);
    // The database goes down: connects fail (and are logged) while calls
    // carrying the token fail too.
    ASSERT_TRUE(cluster_->Stop());
    CallWithToken(*stub, &seen);
    ReadMonitoring(*good, &seen);
    ASSERT_TRUE(cluster_->Start());

    // A wrong password: every connect fails with PostgreSQL's
    // authentication error (which proves the role's password is checked).
    auto bad = std::make_unique<BrokerProcess>(RoleUrl(kWrongPassword), env);
    auto bad_stub = v1::SessionBroker::NewStub(bad->channel());
    {
      grpc::ClientContext context;
      v1::ExecuteResponse response;
      grpc::Status status = bad_stub->Execute(&context, Sql("SELECT 1"), &response);
      EXPECT_FALSE(status.ok()) << "a wrong password must not connect";
      absl::StrAppend(&seen, "wrong password -> ", status.error_message(), "\n");
    }
    CallWithToken(*bad_stub, &seen);
    ReadMonitoring(*bad, &seen);

    // --print-config shows DATABASE_URL redacted.
    std::string printed;
    RunCommand(absl::StrCat("env DATABASE_URL='", RoleUrl(kPassword),
                            "' BROKER_ENV_FILE= ", SB_BROKER_BINARY, " --print-config 2>&1"),
               &printed);
    EXPECT_THAT(printed, HasSubstr("DATABASE_URL"));

    // The logs, whole: each broker stopped first, so they hold the
    // shutdown's lines too.
    EXPECT_EQ(good->SignalAndWait(SIGTERM, absl::Seconds(30)), 0);
    EXPECT_EQ(bad->SignalAndWait(SIGTERM, absl::Seconds(30)), 0);
    const std::string good_log = good->Log();
    const std::string bad_log = bad->Log();
    EXPECT_THAT(bad_log, HasSubstr("password authentication failed"))
        << "the wrong password's failures are logged (the path this test checks)";
    EXPECT_THAT(good_log, HasSubstr("no_such_table")) << "DB_ECHO logged the statements";

    EXPECT_EQ(Leak("what callers saw", seen), "");
    EXPECT_EQ(Leak("--print-config", printed), "");
    EXPECT_EQ(Leak("the log (right password)", good_log), "");
    EXPECT_EQ(Leak("the log (wrong password)", bad_log), "");
  }
}

}  // namespace
}  // namespace sessionbroker::testing
