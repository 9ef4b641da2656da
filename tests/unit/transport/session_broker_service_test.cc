// Specification of SessionBrokerService's unary calls, through a real
// in-process gRPC server over the fake database: what a client sees (status
// code, message, the "sqlstate" trailer, the response) and what reached the
// database (the fake connections' logs).
#include "server/transport/session_broker_service.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/core/base/escape.h"
#include "server/storage/sql_error.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/in_process_broker.h"

namespace sessionbroker::transport {
namespace {

using ::sessionbroker::testing::InProcessBroker;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The value of a trailing metadata key, "" when absent.
std::string Trailer(const grpc::ClientContext& context, const std::string& key) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(key);
  return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
}

class SessionBrokerServiceTest : public ::testing::Test {
 protected:
  grpc::Status Execute(const std::string& sql, v1::ExecuteResponse* response,
                       const std::string& session = "") {
    grpc::ClientContext context;
    v1::ExecuteRequest request;
    request.set_sql(sql);
    request.set_session(session);
    return broker_.broker().Execute(&context, request, response);
  }

  v1::Session MustBeginSession(absl::Duration ttl = absl::Seconds(60)) {
    grpc::ClientContext context;
    v1::BeginSessionRequest request;
    request.mutable_ttl()->set_seconds(absl::ToInt64Seconds(ttl));
    request.set_label("test");
    v1::Session session;
    grpc::Status status = broker_.broker().BeginSession(&context, request, &session);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return session;
  }

  grpc::Status GetSession(const std::string& name, v1::Session* out) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session(name);
    return broker_.broker().GetSession(&context, request, out);
  }

  // Every connection opened so far fails `sql` with `status`.
  void FailEverywhere(const std::string& sql, const absl::Status& status) {
    for (int id = 1; id <= broker_.connector().connects(); ++id) {
      broker_.connector().connection(id)->FailStatement(sql, status);
    }
  }

  InProcessBroker broker_;
};

TEST_F(SessionBrokerServiceTest, ExecuteReturnsTheRowsTheDatabaseSent) {
  v1::ExecuteResponse response;
  grpc::Status status = Execute("SELECT 'hello'", &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.columns_size(), 1);
  EXPECT_EQ(response.columns(0).name(), "sql");
  EXPECT_EQ(response.columns(0).type_oid(), 25u);
  ASSERT_EQ(response.rows_size(), 1);
  EXPECT_EQ(response.rows(0).values(0).string_value(), "SELECT 'hello'") << "the fake echoes";
  EXPECT_EQ(response.command_tag(), "SELECT 1");
  EXPECT_EQ(response.rows_affected(), 1);
}

TEST_F(SessionBrokerServiceTest, ADatabaseErrorBecomesItsCodeWithTheSqlStateTrailer) {
  v1::ExecuteResponse response;
  ASSERT_TRUE(Execute("SELECT 1", &response).ok());
  FailEverywhere("INSERT INTO t VALUES (1)",
                 storage::SqlError("23505", "duplicate key value violates unique constraint"));

  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql("INSERT INTO t VALUES (1)");
  grpc::Status status = broker_.broker().Execute(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(status.error_message(),
              HasSubstr("duplicate key value violates unique constraint [SQLSTATE 23505]"));
  EXPECT_EQ(Trailer(context, "sqlstate"), "23505");
}

TEST_F(SessionBrokerServiceTest, ExecuteBatchRunsEveryStatementInOneTransaction) {
  grpc::ClientContext context;
  v1::ExecuteBatchRequest request;
  request.add_statements()->set_sql("INSERT INTO t VALUES (1)");
  request.add_statements()->set_sql("UPDATE t SET a = 2");
  v1::ExecuteBatchResponse response;
  grpc::Status status = broker_.broker().ExecuteBatch(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).rows(0).values(0).string_value(), "INSERT INTO t VALUES (1)");
  EXPECT_EQ(response.results(1).rows(0).values(0).string_value(), "UPDATE t SET a = 2");
  EXPECT_THAT(broker_.connector().connection(1)->log(),
              ElementsAre("BEGIN", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 2", "COMMIT",
                          // DML on a user table is not provable from its text
                          // (and this broker asks no catalog).
                          "RESET"));
}

TEST_F(SessionBrokerServiceTest, AFailedBatchStatementRollsBackAndSendsItsSqlState) {
  v1::ExecuteResponse warm;
  ASSERT_TRUE(Execute("SELECT 1", &warm).ok());
  FailEverywhere("UPDATE t SET a = 2", storage::SqlError("40001", "could not serialize access"));
  grpc::ClientContext context;
  v1::ExecuteBatchRequest request;
  request.add_statements()->set_sql("INSERT INTO t VALUES (1)");
  request.add_statements()->set_sql("UPDATE t SET a = 2");
  v1::ExecuteBatchResponse response;
  grpc::Status status = broker_.broker().ExecuteBatch(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(Trailer(context, "sqlstate"), "40001");
  EXPECT_THAT(response.results(), IsEmpty());
  EXPECT_FALSE(broker_.connector().connection(1)->in_transaction());
}

TEST_F(SessionBrokerServiceTest, ASessionBeginsRunsATransactionCommitsAndEnds) {
  const v1::Session session = MustBeginSession();
  EXPECT_FALSE(session.name().empty());
  EXPECT_EQ(session.label(), "test");
  EXPECT_EQ(session.ttl().seconds(), 60);

  {
    grpc::ClientContext context;
    v1::BeginTransactionRequest request;
    request.set_session(session.name());
    request.set_isolation(v1::SERIALIZABLE);
    v1::BeginTransactionResponse response;
    grpc::Status status = broker_.broker().BeginTransaction(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.session().in_transaction());
    EXPECT_TRUE(response.session().has_transaction_start_time());
  }
  v1::ExecuteResponse executed;
  grpc::Status status = Execute("INSERT INTO t VALUES (1)", &executed, session.name());
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::Session during;
  ASSERT_TRUE(GetSession(session.name(), &during).ok());
  EXPECT_TRUE(during.in_transaction());
  {
    grpc::ClientContext context;
    v1::CommitRequest request;
    request.set_session(session.name());
    v1::CommitResponse response;
    status = broker_.broker().Commit(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.commit_time().seconds(), absl::ToUnixSeconds(broker_.clock().Now()));
  }
  EXPECT_THAT(broker_.connector().connection(1)->log(),
              ElementsAre("BEGIN SERIALIZABLE", "INSERT INTO t VALUES (1)", "COMMIT", "RESET"));
  {
    grpc::ClientContext context;
    v1::EndSessionRequest request;
    request.set_session(session.name());
    v1::EndSessionResponse response;
    status = broker_.broker().EndSession(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(response.rolled_back()) << "the transaction was committed";
  }
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session(session.name());
  v1::Session after;
  status = broker_.broker().GetSession(&context, request, &after);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("EndSession was called"));
  EXPECT_EQ(Trailer(context, "sessionbroker-reason"), "SESSION_ENDED");
}

TEST_F(SessionBrokerServiceTest, AnUnknownSessionIsNotFoundWithItsReason) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session("no-such-session");
  v1::Session out;
  grpc::Status status = broker_.broker().GetSession(&context, request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("\"no-such-session\" not found"));
  EXPECT_EQ(Trailer(context, "sessionbroker-reason"), "SESSION_NOT_FOUND");
}

TEST_F(SessionBrokerServiceTest, ALongUnknownSessionNameIsCutShortInTheMessage) {
  const std::string name(10'000, 'n');
  v1::Session out;
  grpc::Status status = GetSession(name, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(
      status.error_message(),
      HasSubstr("session \"" + std::string(core::kMaxEchoedChars, 'n') + "...\" not found"));
  EXPECT_LT(status.error_message().size(), 400u) << status.error_message();
}

TEST_F(SessionBrokerServiceTest, AnUnparseableRequestIsInvalidArgumentNamingTheMessage) {
  // Field 1 with wire type 7, which does not exist: no message parses.
  const std::string garbage("\x0f\x01", 2);
  const int connects = broker_.connector().connects();
  for (const char* method :
       {"Execute", "ExecuteBatch", "BeginSession", "RenewSession", "EndSession", "GetSession",
        "ListSessions", "BeginTransaction", "Commit", "Rollback"}) {
    grpc::Status status = sessionbroker::testing::RawUnaryCall(
        broker_.channel(), absl::StrCat("/sessionbroker.v1.SessionBroker/", method), garbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_THAT(status.error_message(), HasSubstr("could not be parsed")) << method;
  }
  EXPECT_EQ(broker_.connector().connects(), connects) << "nothing reached the database";
}

TEST_F(SessionBrokerServiceTest, BadRequestsAreInvalidArgumentSayingWhatIsWrong) {
  {
    grpc::ClientContext context;
    v1::BeginSessionRequest request;
    request.mutable_ttl()->set_seconds(-5);
    v1::Session out;
    grpc::Status status = broker_.broker().BeginSession(&context, request, &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "ttl must be a non-negative duration (e.g. \"30s\")");
  }
  {
    grpc::ClientContext context;
    v1::BeginSessionRequest request;
    request.set_isolation(static_cast<v1::IsolationLevel>(7));
    v1::Session out;
    grpc::Status status = broker_.broker().BeginSession(&context, request, &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("isolation = 7 is not an isolation level"));
  }
  {
    v1::ExecuteResponse out;
    grpc::Status status = Execute("", &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("empty"));
  }
  {
    v1::ExecuteResponse out;
    grpc::Status status = Execute("SELECT 1; SELECT 2", &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(broker_.connector().connects(), 0) << "refused before touching the pool";
}

// ---- Per-call settings ----------------------------------------------------------

TEST_F(SessionBrokerServiceTest, ExecuteWithSettingsRunsInATransactionBegunWithThem) {
  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql("SELECT current_setting('app.tenant_id')");
  (*request.mutable_settings())["App.Tenant_Id"] = "42";
  (*request.mutable_settings())["statement_timeout"] = "5s";
  v1::ExecuteResponse response;
  grpc::Status status = broker_.broker().Execute(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(broker_.connector().connection(1)->log(),
              ElementsAre("BEGIN app.tenant_id=42 statement_timeout=5s",
                          "SELECT current_setting('app.tenant_id')", "COMMIT",
                          // current_setting(...) is not provably stateless
                          // (docs/design.md, "No state leaks between callers").
                          "RESET"));
  EXPECT_FALSE(broker_.connector().connection(1)->in_transaction());
}

TEST_F(SessionBrokerServiceTest, ExecuteBatchWithSettingsBeginsItsTransactionWithThem) {
  grpc::ClientContext context;
  v1::ExecuteBatchRequest request;
  request.add_statements()->set_sql("INSERT INTO t VALUES (1)");
  (*request.mutable_settings())["lock_timeout"] = "1s";
  v1::ExecuteBatchResponse response;
  grpc::Status status = broker_.broker().ExecuteBatch(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(broker_.connector().connection(1)->log(),
              ElementsAre("BEGIN lock_timeout=1s", "INSERT INTO t VALUES (1)", "COMMIT", "RESET"));
}

TEST_F(SessionBrokerServiceTest, CallSettingsOutsideTheAllowListAreRefusedNamingThem) {
  for (const char* name : {"role", "session_authorization", "DateStyle", "no_such_setting"}) {
    grpc::ClientContext context;
    v1::ExecuteRequest request;
    request.set_sql("SELECT 1");
    (*request.mutable_settings())[name] = "x";
    v1::ExecuteResponse response;
    grpc::Status status = broker_.broker().Execute(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_THAT(absl::AsciiStrToLower(status.error_message()),
                HasSubstr(absl::AsciiStrToLower(name)));
  }
  grpc::ClientContext context;
  v1::ExecuteBatchRequest batch;
  batch.add_statements()->set_sql("SELECT 1");
  (*batch.mutable_settings())["role"] = "postgres";
  v1::ExecuteBatchResponse response;
  EXPECT_EQ(broker_.broker().ExecuteBatch(&context, batch, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(broker_.connector().connects(), 0) << "refused before touching the pool";
}

TEST_F(SessionBrokerServiceTest, CallSettingsInASessionAreRefused) {
  const v1::Session session = MustBeginSession();
  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql("SELECT 1");
  request.set_session(session.name());
  (*request.mutable_settings())["statement_timeout"] = "1s";
  v1::ExecuteResponse response;
  grpc::Status status = broker_.broker().Execute(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("session's own settings"));
}

TEST_F(SessionBrokerServiceTest, WhileDrainingNewCallsAreUnavailable) {
  broker_.broker_service().StartDraining();
  v1::ExecuteResponse out;
  grpc::Status status = Execute("SELECT 1", &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "the broker is shutting down; retry on another instance");
}

TEST_F(SessionBrokerServiceTest, ACommitRetriedWithItsRequestIdAnswersTheFirstOutcome) {
  const v1::Session session = MustBeginSession();
  v1::CommitRequest commit;
  commit.set_session(session.name());
  commit.set_request_id("commit-1");
  v1::CommitResponse out;
  {
    // No transaction yet: the failure is not remembered...
    grpc::ClientContext context;
    EXPECT_EQ(broker_.broker().Commit(&context, commit, &out).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext context;
    v1::BeginTransactionRequest begin;
    begin.set_session(session.name());
    v1::BeginTransactionResponse begun;
    ASSERT_TRUE(broker_.broker().BeginTransaction(&context, begin, &begun).ok());
  }
  v1::CommitResponse first;
  {
    // ...so the same id runs again, and commits.
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().Commit(&context, commit, &first);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  broker_.clock().Advance(absl::Seconds(5));
  v1::CommitResponse retried;
  {
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().Commit(&context, commit, &retried);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(retried.SerializeAsString(), first.SerializeAsString());
  {
    // Another session's Commit with the same id is another request.
    const v1::Session other = MustBeginSession();
    grpc::ClientContext context;
    commit.set_session(other.name());
    grpc::Status status = broker_.broker().Commit(&context, commit, &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("different request"));
  }
}

// Execute's and ExecuteBatch's responses live on an arena per call, freed
// once the call is over; a retry is answered from the ledger's own copy.
TEST_F(SessionBrokerServiceTest, ASessionExecuteRetriedAfterOtherCallsAnswersTheFirstResult) {
  const v1::Session session = MustBeginSession();
  // Larger than an arena's first block: the result spans several blocks.
  const std::string sql = absl::StrCat("SELECT '", std::string(20000, 'a'), "'");
  v1::ExecuteRequest request;
  request.set_sql(sql);
  request.set_session(session.name());
  request.set_request_id("read-1");
  v1::ExecuteResponse first;
  {
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().Execute(&context, request, &first);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(first.rows(0).values(0).string_value(), sql) << "the fake echoes";
  // Other calls come and go meanwhile (the first call's arena is long freed).
  for (int i = 0; i < 4; ++i) {
    v1::ExecuteResponse other;
    ASSERT_TRUE(Execute(absl::StrCat("SELECT ", i), &other, session.name()).ok());
    EXPECT_EQ(other.rows(0).values(0).string_value(), absl::StrCat("SELECT ", i));
  }
  v1::ExecuteResponse retried;
  {
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().Execute(&context, request, &retried);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(retried.SerializeAsString(), first.SerializeAsString());
  EXPECT_THAT(broker_.connector().connection(1)->log(), ::testing::Contains(sql).Times(1))
      << "the retry was answered without running the statement again";
}

TEST_F(SessionBrokerServiceTest, ASessionBatchRetriedAfterOtherCallsAnswersTheFirstResults) {
  const v1::Session session = MustBeginSession();
  v1::ExecuteBatchRequest request;
  request.set_session(session.name());
  request.set_request_id("batch-1");
  request.add_statements()->set_sql(absl::StrCat("SELECT '", std::string(9000, 'b'), "'"));
  request.add_statements()->set_sql("SELECT 2");
  v1::ExecuteBatchResponse first;
  {
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().ExecuteBatch(&context, request, &first);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(first.results_size(), 2);
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext context;
    v1::ExecuteBatchRequest other;
    other.set_session(session.name());
    other.add_statements()->set_sql(absl::StrCat("SELECT ", 10 + i));
    v1::ExecuteBatchResponse out;
    ASSERT_TRUE(broker_.broker().ExecuteBatch(&context, other, &out).ok());
  }
  v1::ExecuteBatchResponse retried;
  {
    grpc::ClientContext context;
    grpc::Status status = broker_.broker().ExecuteBatch(&context, request, &retried);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(retried.SerializeAsString(), first.SerializeAsString());
}

TEST_F(SessionBrokerServiceTest, ARequestIdIsScopedByClientId) {
  v1::BeginSessionRequest request;
  request.set_request_id("begin-1");
  v1::Session a;
  v1::Session a_again;
  v1::Session b;
  for (auto [client, out] : {std::pair{"svc-a", &a}, {"svc-a", &a_again}, {"svc-b", &b}}) {
    grpc::ClientContext context;
    context.AddMetadata("x-client-id", client);
    grpc::Status status = broker_.broker().BeginSession(&context, request, out);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(a_again.name(), a.name());
  EXPECT_NE(b.name(), a.name());
}

TEST_F(SessionBrokerServiceTest, AOneShotRequestIdWithoutAnOutcomesTableIsFailedPrecondition) {
  // This broker's runner keeps no outcomes table (RunnerOptions::
  // request_outcomes is null): nothing runs rather than running unrecorded.
  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql("INSERT INTO t VALUES (1)");
  request.set_request_id("write-1");
  v1::ExecuteResponse out;
  grpc::Status status = broker_.broker().Execute(&context, request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id"));
}

TEST_F(SessionBrokerServiceTest, ACallRefusedWhileDrainingLeavesItsRequestIdFree) {
  const v1::Session session = MustBeginSession();
  v1::BeginTransactionRequest begin;
  begin.set_session(session.name());
  begin.set_request_id("tx-1");
  v1::BeginTransactionResponse out;
  broker_.broker_service().StartDraining();
  {
    grpc::ClientContext context;
    EXPECT_EQ(broker_.broker().BeginTransaction(&context, begin, &out).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(broker_.ledger().entries(), 0u);
}

}  // namespace
}  // namespace sessionbroker::transport
