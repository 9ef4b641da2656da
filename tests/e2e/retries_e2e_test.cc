// End-to-end tests of request ids (docs/retries.md): the session-broker
// binary against a real PostgreSQL. What the broker claims is checked in the
// database through an admin connection: how many rows a retried write left,
// and the outcome rows in the broker's table. Each test gets a table of
// outcomes of its own (BROKER_REQUEST_OUTCOMES_TABLE), dropped at the end.
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

class RetriesE2eTest : public BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    if (HasFatalFailure()) return;
    table_ = absl::StrCat(app_name_, "_rows");
    outcomes_ = absl::StrCat("public.", app_name_, "_outcomes");
    Admin(absl::StrCat("CREATE TABLE ", table_, " (id serial PRIMARY KEY, v text UNIQUE)"));
  }

  void TearDown() override {
    broker_.reset();
    if (admin_ != nullptr) {
      Admin(absl::StrCat("DROP TABLE IF EXISTS ", table_));
      Admin(absl::StrCat("DROP TABLE IF EXISTS ", outcomes_));
    }
  }

  std::map<std::string, std::string> Env(std::map<std::string, std::string> extra = {}) {
    extra["BROKER_REQUEST_OUTCOMES_TABLE"] = outcomes_;
    return extra;
  }

  RpcResult<v1::ExecuteResponse> Exec(const v1::ExecuteRequest& request,
                                      const std::string& client_id = "svc-a") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    if (!client_id.empty()) context.AddMetadata("x-client-id", client_id);
    RpcResult<v1::ExecuteResponse> out;
    out.status = stub_->Execute(&context, request, &out.response);
    out.sqlstate = SqlStateOf(context);
    return out;
  }

  v1::ExecuteRequest Insert(const std::string& v, const std::string& request_id) {
    v1::ExecuteRequest request;
    request.set_sql(absl::StrCat("INSERT INTO ", table_, " (v) VALUES ($1) RETURNING id"));
    *request.add_params() = Str(v);
    request.set_request_id(request_id);
    return request;
  }

  int64_t Rows(const std::string& v) {
    return AdminCount(absl::StrCat("SELECT count(*) FROM ", table_, " WHERE v = $1"),
                      {storage::Value::String(v)});
  }

  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (v1::SessionBroker::Stub::*method)(grpc::ClientContext*,
                                                                    const Request&, Response*),
                    const Request& request, Response* response,
                    const std::string& client_id = "svc-a") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    context.AddMetadata("x-client-id", client_id);
    return (stub_.get()->*method)(&context, request, response);
  }

  std::string table_;
  std::string outcomes_;
};

TEST_F(RetriesE2eTest, RetriedInsertWithSameIdInsertsOnceAndReturnsTheFirstResult) {
  StartBroker(Env());
  const RpcResult<v1::ExecuteResponse> first = Exec(Insert("a", "req-1"));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const RpcResult<v1::ExecuteResponse> retry = Exec(Insert("a", "req-1"));
  ASSERT_TRUE(retry.status.ok()) << retry.status.error_message();
  EXPECT_EQ(retry.response.SerializeAsString(), first.response.SerializeAsString());
  EXPECT_EQ(retry.response.command_tag(), "INSERT 0 1");
  EXPECT_EQ(Rows("a"), 1);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", outcomes_,
                                    " WHERE client_id = 'svc-a' AND request_id = 'req-1'")),
            1);
}

TEST_F(RetriesE2eTest, SameIdWithADifferentRequestIsInvalidArgumentAndRunsNothing) {
  StartBroker(Env());
  ASSERT_TRUE(Exec(Insert("a", "req-1")).status.ok());
  const RpcResult<v1::ExecuteResponse> other = Exec(Insert("b", "req-1"));
  EXPECT_EQ(other.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(other.status.error_message(), HasSubstr("different request"));
  EXPECT_EQ(Rows("b"), 0);

  // The same id on ExecuteBatch is another request too.
  v1::ExecuteBatchRequest batch;
  v1::Statement* s = batch.add_statements();
  s->set_sql(absl::StrCat("INSERT INTO ", table_, " (v) VALUES ($1) RETURNING id"));
  *s->add_params() = Str("a");
  batch.set_request_id("req-1");
  v1::ExecuteBatchResponse response;
  EXPECT_EQ(Call(&v1::SessionBroker::Stub::ExecuteBatch, batch, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RetriesE2eTest, AFailedAttemptIsNotRecordedSoItsRetryRunsAgain) {
  StartBroker(Env());
  Admin(absl::StrCat("INSERT INTO ", table_, " (v) VALUES ('taken')"));
  const RpcResult<v1::ExecuteResponse> first = Exec(Insert("taken", "req-dup"));
  ASSERT_FALSE(first.status.ok());
  EXPECT_EQ(first.sqlstate, "23505");
  const RpcResult<v1::ExecuteResponse> again = Exec(Insert("taken", "req-dup"));
  EXPECT_EQ(again.status.error_code(), first.status.error_code());
  EXPECT_EQ(again.sqlstate, "23505");
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", outcomes_)), 0);

  // It ran again (not replayed): once the conflict is gone it succeeds.
  Admin(absl::StrCat("DELETE FROM ", table_, " WHERE v = 'taken'"));
  const RpcResult<v1::ExecuteResponse> third = Exec(Insert("taken", "req-dup"));
  ASSERT_TRUE(third.status.ok()) << third.status.error_message();
  EXPECT_EQ(Rows("taken"), 1);
}

TEST_F(RetriesE2eTest, AWriteReturningRowsOverTheCapIsRolledBackWithItsRecord) {
  StartBroker(Env({{"BROKER_MAX_RESULT_BYTES", "10000"}}));
  v1::ExecuteRequest big;
  big.set_sql(absl::StrCat("INSERT INTO ", table_,
                           " (v) SELECT 'big-' || g FROM generate_series(1, 5000) g "
                           "RETURNING id, v, 'padding'"));
  big.set_request_id("req-big");
  const RpcResult<v1::ExecuteResponse> first = Exec(big);
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << first.status.error_message();
  EXPECT_THAT(first.status.error_message(), HasSubstr("BROKER_MAX_RESULT_BYTES"));
  EXPECT_THAT(first.status.error_message(), HasSubstr("rolled back"));
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table_)), 0);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", outcomes_)), 0);
  // Nothing was recorded, so the retry runs again (and fails the same way).
  const RpcResult<v1::ExecuteResponse> retry = Exec(big);
  EXPECT_EQ(retry.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table_)), 0);
  // Under the cap the same kind of call is recorded with its write.
  const RpcResult<v1::ExecuteResponse> small = Exec(Insert("small", "req-small"));
  ASSERT_TRUE(small.status.ok()) << small.status.error_message();
  EXPECT_EQ(Rows("small"), 1);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", outcomes_)), 1);
}

TEST_F(RetriesE2eTest, StreamExecuteRefusesARequestIdAndRunsNothing) {
  StartBroker(Env());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  context.AddMetadata("x-client-id", "svc-a");
  auto reader = stub_->StreamExecute(&context, Insert("streamed", "req-stream"));
  v1::StreamExecuteResponse response;
  EXPECT_FALSE(reader->Read(&response));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id"));
  EXPECT_EQ(Rows("streamed"), 0);
}

TEST_F(RetriesE2eTest, RetryAfterABrokerRestartReturnsTheFirstOutcome) {
  StartBroker(Env());
  const RpcResult<v1::ExecuteResponse> first = Exec(Insert("a", "req-restart"));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  // The first broker dies (SIGKILL: nothing of it survives but the
  // database); a new one on the same database answers the retry.
  ASSERT_EQ(broker_->SignalAndWait(SIGKILL, absl::Seconds(10)), std::nullopt);
  broker_.reset();
  StartBroker(Env());
  const RpcResult<v1::ExecuteResponse> retry = Exec(Insert("a", "req-restart"));
  ASSERT_TRUE(retry.status.ok()) << retry.status.error_message();
  EXPECT_EQ(retry.response.SerializeAsString(), first.response.SerializeAsString());
  EXPECT_EQ(Rows("a"), 1);
}

TEST_F(RetriesE2eTest, RetryAfterTheWindowRunsAgain) {
  StartBroker(Env({{"BROKER_REQUEST_ID_WINDOW", "0.2"}}));
  ASSERT_TRUE(Exec(Insert("a", "req-old")).status.ok());
  Admin(absl::StrCat("DELETE FROM ", table_));
  absl::SleepFor(absl::Milliseconds(400));  // past the window: a lower bound, not a timing claim
  const RpcResult<v1::ExecuteResponse> later = Exec(Insert("a", "req-old"));
  ASSERT_TRUE(later.status.ok()) << later.status.error_message();
  EXPECT_EQ(Rows("a"), 1);
}

TEST_F(RetriesE2eTest, ExpiredOutcomesArePruned) {
  StartBroker(Env({{"BROKER_REQUEST_ID_WINDOW", "0.5"}}));
  ASSERT_TRUE(Exec(Insert("a", "req-prune")).status.ok());
  EXPECT_TRUE(
      Eventually([&] { return AdminCount(absl::StrCat("SELECT count(*) FROM ", outcomes_)) == 0; },
                 absl::Seconds(20)));
}

TEST_F(RetriesE2eTest, TheOutcomesTableIsCreatedAtStart) {
  StartBroker(Env());
  EXPECT_TRUE(Eventually(
      [&] {
        return AdminCount(
                   "SELECT count(*) FROM pg_tables WHERE schemaname || '.' || tablename = $1",
                   {storage::Value::String(outcomes_)}) == 1;
      },
      absl::Seconds(20)));
}

TEST_F(RetriesE2eTest, AConcurrentDuplicateWaitsForTheFirstAndGetsItsOutcome) {
  StartBroker(Env());
  v1::ExecuteBatchRequest batch;
  v1::Statement* insert = batch.add_statements();
  insert->set_sql(absl::StrCat("INSERT INTO ", table_, " (v) VALUES ('slow') RETURNING id"));
  batch.add_statements()->set_sql("SELECT pg_sleep(1)");
  batch.set_request_id("req-slow");
  v1::ExecuteBatchResponse first;
  grpc::Status first_status;
  std::thread runner(
      [&] { first_status = Call(&v1::SessionBroker::Stub::ExecuteBatch, batch, &first); });
  WaitForActiveStatements(1);
  v1::ExecuteBatchResponse second;
  const grpc::Status second_status = Call(&v1::SessionBroker::Stub::ExecuteBatch, batch, &second);
  runner.join();
  ASSERT_TRUE(first_status.ok()) << first_status.error_message();
  ASSERT_TRUE(second_status.ok()) << second_status.error_message();
  EXPECT_EQ(second.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(Rows("slow"), 1);
}

TEST_F(RetriesE2eTest, AResponseOverTheLimitIsNotKeptAndItsRetrySaysTheWriteHappened) {
  StartBroker(Env({{"BROKER_REQUEST_OUTCOME_MAX_BYTES", "1024"}}));
  v1::ExecuteRequest big = Insert("big", "req-big");
  big.set_sql(
      absl::StrCat("INSERT INTO ", table_, " (v) VALUES ($1) RETURNING repeat(v, 1000) AS wide"));
  ASSERT_TRUE(Exec(big).status.ok());
  const RpcResult<v1::ExecuteResponse> retry = Exec(big);
  EXPECT_EQ(retry.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(retry.status.error_message(), HasSubstr("BROKER_REQUEST_OUTCOME_MAX_BYTES"));
  EXPECT_EQ(Rows("big"), 1);
}

TEST_F(RetriesE2eTest, IdsOfOneClientAreInvisibleToAnother) {
  StartBroker(Env());
  ASSERT_TRUE(Exec(Insert("a", "shared-id"), "svc-a").status.ok());
  // Another client's id "shared-id" is its own: neither a mismatch nor a
  // replay of svc-a's outcome.
  const RpcResult<v1::ExecuteResponse> b = Exec(Insert("b", "shared-id"), "svc-b");
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(Rows("b"), 1);
  const RpcResult<v1::ExecuteResponse> b_same_body = Exec(Insert("a", "other-id"), "svc-b");
  EXPECT_EQ(b_same_body.sqlstate, "23505");  // ran: svc-a's row is in the way

  // The same holds for session calls.
  v1::BeginSessionRequest begin;
  begin.set_request_id("shared-session");
  v1::Session a_session;
  v1::Session b_session;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginSession, begin, &a_session, "svc-a").ok());
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginSession, begin, &b_session, "svc-b").ok());
  EXPECT_NE(a_session.name(), b_session.name());
}

TEST_F(RetriesE2eTest, BeginSessionRetryReturnsTheSameSession) {
  StartBroker(Env());
  v1::BeginSessionRequest begin;
  begin.set_label("retrying");
  begin.set_request_id("begin-1");
  v1::Session first;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginSession, begin, &first).ok());
  v1::Session retry;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginSession, begin, &retry).ok());
  EXPECT_EQ(retry.name(), first.name());
  v1::ListSessionsRequest list;
  list.set_client_id("svc-a");
  v1::ListSessionsResponse sessions;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::ListSessions, list, &sessions).ok());
  EXPECT_EQ(sessions.total_size(), 1);

  begin.set_label("another");
  v1::Session other;
  EXPECT_EQ(Call(&v1::SessionBroker::Stub::BeginSession, begin, &other).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Once the session has ended, its retry says so (as GetSession does)
  // instead of leasing anew.
  ASSERT_TRUE(EndSession(first.name()).status.ok());
  begin.set_label("retrying");
  const grpc::Status ended = Call(&v1::SessionBroker::Stub::BeginSession, begin, &retry);
  EXPECT_EQ(ended.error_code(), GetSession(first.name()).status.error_code());
  EXPECT_THAT(ended.error_message(), HasSubstr("ended"));
}

TEST_F(RetriesE2eTest, RetriedBeginTransactionExecuteAndCommitInASessionHappenOnce) {
  StartBroker(Env());
  v1::Session session;
  ASSERT_TRUE(
      Call(&v1::SessionBroker::Stub::BeginSession, v1::BeginSessionRequest(), &session).ok());
  v1::BeginTransactionRequest begin;
  begin.set_session(session.name());
  begin.set_request_id("tx-1");
  v1::BeginTransactionResponse begun;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginTransaction, begin, &begun).ok());
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::BeginTransaction, begin, &begun).ok());

  v1::ExecuteRequest insert = Insert("in-session", "exec-1");
  insert.set_session(session.name());
  const RpcResult<v1::ExecuteResponse> first = Exec(insert);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const RpcResult<v1::ExecuteResponse> again = Exec(insert);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.response.SerializeAsString(), first.response.SerializeAsString());

  v1::CommitRequest commit;
  commit.set_session(session.name());
  commit.set_request_id("commit-1");
  v1::CommitResponse committed;
  ASSERT_TRUE(Call(&v1::SessionBroker::Stub::Commit, commit, &committed).ok());
  v1::CommitResponse retried;
  const grpc::Status retry = Call(&v1::SessionBroker::Stub::Commit, commit, &retried);
  ASSERT_TRUE(retry.ok()) << retry.error_message();
  EXPECT_EQ(retried.SerializeAsString(), committed.SerializeAsString());
  EXPECT_EQ(Rows("in-session"), 1);

  // Without an id, a second Commit has nothing to commit.
  commit.clear_request_id();
  EXPECT_EQ(Call(&v1::SessionBroker::Stub::Commit, commit, &retried).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(RetriesE2eTest, MalformedRequestIdsAreRefusedNamingTheLimit) {
  StartBroker(Env());
  const RpcResult<v1::ExecuteResponse> long_id = Exec(Insert("a", std::string(129, 'x')));
  EXPECT_EQ(long_id.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_id.status.error_message(), HasSubstr("at most 128"));
  const RpcResult<v1::ExecuteResponse> bad_char = Exec(Insert("a", "id with spaces"));
  EXPECT_EQ(bad_char.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::CommitRequest commit;
  commit.set_session("whatever");
  commit.set_request_id("bad/id");
  v1::CommitResponse response;
  EXPECT_EQ(Call(&v1::SessionBroker::Stub::Commit, commit, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Rows("a"), 0);
}

}  // namespace
}  // namespace sessionbroker::testing
