// Specification of the C++ client against a scripted in-process broker
// (fake_broker.h): how C++ values are sent, how cells read back (and fail),
// what errors carry, the Session life cycle, BeginSession's retry on
// UNAVAILABLE (one request_id for all attempts) and Transaction's retries.
#include "sessionbroker/client.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cpp/tests/fake_broker.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker {
namespace {

using ::sessionbroker::testing::FakeBroker;
using ::sessionbroker::testing::FakeError;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ClientTest : public ::testing::Test {
 protected:
  ClientTest() {
    ClientOptions options;
    options.client_id = "billing";
    options.channel = fake_.channel();
    client_ = *Client::Create(std::move(options));
  }

  // The Value the fake received as parameter `i` of the last Execute.
  v1::Value SentParam(int i) {
    std::vector<v1::ExecuteRequest> e = fake_.executes();
    EXPECT_FALSE(e.empty());
    return e.back().params(i);
  }

  FakeBroker fake_;
  std::unique_ptr<Client> client_;
};

// A response with one column of type `type` and one row holding `cell`.
v1::ExecuteResponse OneCell(const std::string& name, const std::string& type, v1::Value cell) {
  v1::ExecuteResponse r;
  v1::Column* c = r.add_columns();
  c->set_name(name);
  c->set_type_name(type);
  *r.add_rows()->add_values() = std::move(cell);
  r.set_command_tag("SELECT 1");
  r.set_rows_affected(1);
  return r;
}

v1::Value Int(int64_t i) {
  v1::Value v;
  v.set_int64_value(i);
  return v;
}
v1::Value Text(const std::string& s) {
  v1::Value v;
  v.set_string_value(s);
  return v;
}
v1::Value Null() {
  v1::Value v;
  v.set_null_value(google::protobuf::NULL_VALUE);
  return v;
}

// ---- parameters ----

TEST_F(ClientTest, ParamsAreSentAsTheCaseAndTypeTheirCppTypeImplies) {
  ASSERT_TRUE(client_
                  ->Execute("SELECT $1",
                            {42, int64_t{1} << 40, 2.5, true, "text", std::string("str"),
                             Bytes{std::string("\0\1", 2)}, Json{R"({"a":1})"}, Numeric{"12.50"}})
                  .ok());
  EXPECT_EQ(SentParam(0).int64_value(), 42);
  EXPECT_EQ(SentParam(0).type(), "int4");
  EXPECT_EQ(SentParam(1).int64_value(), int64_t{1} << 40);
  EXPECT_EQ(SentParam(1).type(), "");
  EXPECT_EQ(SentParam(2).double_value(), 2.5);
  EXPECT_TRUE(SentParam(3).bool_value());
  EXPECT_EQ(SentParam(4).string_value(), "text");
  EXPECT_EQ(SentParam(5).string_value(), "str");
  EXPECT_EQ(SentParam(6).bytes_value(), std::string("\0\1", 2));
  EXPECT_EQ(SentParam(7).json_value(), R"({"a":1})");
  EXPECT_EQ(SentParam(8).numeric_value(), "12.50");
}

TEST_F(ClientTest, OptionalNulloptAndNullptrAreSentAsNull) {
  std::optional<int64_t> none;
  std::optional<std::string> some = "x";
  ASSERT_TRUE(client_
                  ->Execute("SELECT $1, $2, $3, $4, $5",
                            {none, some, std::nullopt, nullptr, Param::Null("int4")})
                  .ok());
  EXPECT_EQ(SentParam(0).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(SentParam(1).string_value(), "x");
  EXPECT_EQ(SentParam(2).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(SentParam(3).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(SentParam(4).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(SentParam(4).type(), "int4");
}

TEST_F(ClientTest, VectorsAreSentAsArraysAndNestedVectorsAsNestedArrays) {
  std::vector<int64_t> ids = {1, 2, 3};
  std::vector<std::optional<std::string>> names = {"a", std::nullopt};
  std::vector<std::vector<int64_t>> grid = {{1, 2}, {3, 4}};
  ASSERT_TRUE(client_->Execute("SELECT $1, $2, $3", {ids, names, grid}).ok());
  ASSERT_EQ(SentParam(0).array_value().values_size(), 3);
  EXPECT_EQ(SentParam(0).array_value().values(2).int64_value(), 3);
  EXPECT_EQ(SentParam(1).array_value().values(0).string_value(), "a");
  EXPECT_EQ(SentParam(1).array_value().values(1).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(SentParam(2).array_value().values(1).array_value().values(0).int64_value(), 3);
}

TEST_F(ClientTest, TypedParamsAndTimePointsCarryTheirType) {
  Timestamp t = std::chrono::system_clock::from_time_t(1700000000) + std::chrono::microseconds(5);
  ASSERT_TRUE(client_
                  ->Execute("SELECT $1, $2",
                            {Param::Typed("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "uuid"), t})
                  .ok());
  EXPECT_EQ(SentParam(0).type(), "uuid");
  EXPECT_EQ(SentParam(0).string_value(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(SentParam(1).type(), "timestamptz");
  EXPECT_EQ(SentParam(1).string_value(), "2023-11-14T22:13:20.000005Z");
}

TEST_F(ClientTest, EveryCallCarriesTheClientIdAndADeadline) {
  ASSERT_TRUE(client_->Execute("SELECT 1").ok());
  EXPECT_EQ(fake_.last_client_id(), "billing");
  EXPECT_TRUE(fake_.last_call_had_deadline());
}

// ---- results ----

TEST_F(ClientTest, CellsReadAsTheirCppTypesByIndexAndByName) {
  v1::ExecuteResponse r = OneCell("id", "int8", Int(7));
  v1::Column* c = r.add_columns();
  c->set_name("name");
  c->set_type_name("text");
  *r.mutable_rows(0)->add_values() = Null();
  fake_.NextExecute(r);
  absl::StatusOr<Result> result = client_->Execute("SELECT id, name FROM t");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 1u);
  EXPECT_EQ(result->command_tag(), "SELECT 1");
  EXPECT_EQ(result->rows_affected(), 1);
  EXPECT_EQ(result->columns()[1].name, "name");
  Row row = (*result)[0];
  EXPECT_EQ(*row.Get<int64_t>("id"), 7);
  EXPECT_EQ(*row.Get<int32_t>(0), 7);
  EXPECT_EQ(*row.Get<double>(0), 7.0);
  EXPECT_EQ(*row.Get<std::optional<std::string>>(1), std::nullopt);
  EXPECT_EQ(row.GetOr<std::string>("name", "none"), "none");
  int rows = 0;
  for (Row each : *result) rows += each.Get<int64_t>(0).ok() ? 1 : 0;
  EXPECT_EQ(rows, 1);
}

TEST_F(ClientTest, NullIntoANonOptionalIsFailedPreconditionNamingColumnAndTypes) {
  fake_.NextExecute(OneCell("total", "int8", Null()));
  Result result = *client_->Execute("SELECT total");
  absl::StatusOr<int64_t> v = result[0].Get<int64_t>("total");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(v.status().message(), HasSubstr("column \"total\" (int8) is NULL"));
  EXPECT_THAT(v.status().message(), HasSubstr("std::optional<int64_t>"));
}

TEST_F(ClientTest, ATypeMismatchIsInvalidArgumentNamingColumnAndTypes) {
  fake_.NextExecute(OneCell("name", "text", Text("alice")));
  Result result = *client_->Execute("SELECT name");
  absl::StatusOr<int64_t> v = result[0].Get<int64_t>(0);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v.status().message(), HasSubstr("column \"name\" (text) holds text"));
  EXPECT_THAT(v.status().message(), HasSubstr("int64_t"));
  EXPECT_EQ(result[0].Get<bool>(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result[0].Get<Timestamp>(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, NarrowIntegersAreRangeChecked) {
  fake_.NextExecute(OneCell("big", "int8", Int(int64_t{5000000000})));
  Result result = *client_->Execute("SELECT big");
  EXPECT_EQ(result[0].Get<int32_t>(0).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(result[0].Get<int32_t>(0).status().message(), HasSubstr("5000000000"));
  EXPECT_EQ(*result[0].Get<int64_t>(0), 5000000000);
}

TEST_F(ClientTest, UnknownColumnsAndIndexesAreErrorsNotCrashes) {
  fake_.NextExecute(OneCell("id", "int8", Int(1)));
  Result result = *client_->Execute("SELECT id");
  EXPECT_EQ(result[0].Get<int64_t>("nope").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result[0].Get<int64_t>("nope").status().message(), HasSubstr("\"id\""));
  EXPECT_EQ(result[0].Get<int64_t>(3).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(ClientTest, ArraysReadAsVectorsWithNullElementsAsOptionals) {
  v1::Value array;
  *array.mutable_array_value()->add_values() = Int(1);
  *array.mutable_array_value()->add_values() = Null();
  fake_.NextExecute(OneCell("xs", "_int4", array));
  Result result = *client_->Execute("SELECT xs");
  EXPECT_THAT(*result[0].Get<std::vector<std::optional<int64_t>>>(0),
              ElementsAre(std::optional<int64_t>(1), std::nullopt));
  absl::Status s = result[0].Get<std::vector<int64_t>>(0).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("column \"xs\" (_int4) element 1 is NULL"));
}

TEST_F(ClientTest, TimestampsReadFromPostgresIsoOutputWithAnyOffset) {
  fake_.NextExecute(OneCell("at", "timestamptz", Text("2024-02-29 10:34:56.789+00")));
  Result utc = *client_->Execute("SELECT at");
  EXPECT_EQ(*utc[0].Get<Timestamp>(0),
            absl::ToChronoTime(
                absl::FromCivil(absl::CivilSecond(2024, 2, 29, 10, 34, 56), absl::UTCTimeZone()) +
                absl::Milliseconds(789)));
  fake_.NextExecute(OneCell("at", "timestamptz", Text("2024-02-29 16:04:56.789+05:30")));
  Result india = *client_->Execute("SELECT at");
  EXPECT_EQ(*india[0].Get<Timestamp>(0), *utc[0].Get<Timestamp>(0));
}

// ---- errors ----

TEST_F(ClientTest, PostgresErrorsCarryTheSqlStateAndAllTheirFields) {
  v1::SqlErrorDetail detail;
  detail.set_sqlstate("23505");
  detail.set_message("duplicate key value violates unique constraint \"users_email_key\"");
  detail.set_detail("Key (email)=(a@example.com) already exists.");
  detail.set_table_name("users");
  detail.set_schema_name("public");
  detail.set_constraint_name("users_email_key");
  detail.set_statement_index(2);
  v1::RpcStatus rpc;
  rpc.set_code(grpc::StatusCode::ALREADY_EXISTS);
  rpc.add_details()->PackFrom(detail);
  fake_.NextExecuteError({grpc::StatusCode::ALREADY_EXISTS, "duplicate key [SQLSTATE 23505]",
                          "23505", "", rpc.SerializeAsString()});
  absl::Status s = client_->Execute("INSERT ...").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "duplicate key [SQLSTATE 23505]");
  EXPECT_EQ(SqlStateOf(s), "23505");
  std::optional<SqlError> e = SqlErrorOf(s);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->constraint, "users_email_key");
  EXPECT_EQ(e->table, "users");
  EXPECT_EQ(e->schema, "public");
  EXPECT_EQ(e->detail, "Key (email)=(a@example.com) already exists.");
  EXPECT_EQ(e->statement_index, 2u);
  EXPECT_FALSE(IsRetryableTransactionError(s));
}

TEST_F(ClientTest, BrokerErrorsCarryTheReasonAndNoSqlError) {
  fake_.NextExecuteError(
      {grpc::StatusCode::FAILED_PRECONDITION, "session expired", "", "SESSION_EXPIRED", ""});
  absl::Status s = client_->Execute("SELECT 1").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(s), "SESSION_EXPIRED");
  EXPECT_EQ(SqlStateOf(s), std::nullopt);
  EXPECT_EQ(SqlErrorOf(s), std::nullopt);
}

TEST(RetryableTest, AbortedAndSerializationOrDeadlockStatesAreRetryable) {
  EXPECT_TRUE(IsRetryableTransactionError(absl::AbortedError("x")));
  absl::Status deadlock = absl::UnknownError("x");
  deadlock.SetPayload(kSqlStatePayloadUrl, absl::Cord("40P01"));
  EXPECT_TRUE(IsRetryableTransactionError(deadlock));
  EXPECT_FALSE(IsRetryableTransactionError(absl::InvalidArgumentError("x")));
  EXPECT_FALSE(IsRetryableTransactionError(absl::OkStatus()));
}

// ---- sessions ----

TEST_F(ClientTest, ASessionIsHeldByTheKeepAliveStreamWhileItLives) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  fake_.AwaitHeld(session->name());
  ASSERT_TRUE(session->Execute("SELECT 1").ok());
  EXPECT_EQ(fake_.executes().back().session(), session->name());
}

TEST_F(ClientTest, ABrokenKeepAliveStreamIsReopenedAndHoldsEverySessionAgain) {
  std::unique_ptr<Session> first = *client_->BeginSession();
  std::unique_ptr<Session> second = *client_->BeginSession();
  fake_.AwaitHeld(first->name());
  fake_.AwaitHeld(second->name());
  fake_.BreakKeepAliveStreams();
  fake_.AwaitStreamsOpened(2);
  fake_.AwaitHeld(first->name());
  fake_.AwaitHeld(second->name());
  second.reset();
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginSession", "EndSession s2"));
}

TEST_F(ClientTest, OneKeepAliveStreamHoldsAllSessionsOfAClient) {
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 5; ++i) sessions.push_back(*client_->BeginSession());
  for (const auto& s : sessions) fake_.AwaitHeld(s->name());
  EXPECT_EQ(fake_.held().size(), 5u);
  EXPECT_EQ(fake_.streams_opened(), 1);
}

TEST_F(ClientTest, DestroyingASessionRollsBackItsOpenTransactionAndEndsIt) {
  {
    std::unique_ptr<Session> session = *client_->BeginSession();
    ASSERT_TRUE(session->Begin().ok());
    ASSERT_TRUE(session->Execute("INSERT ...").ok());
  }
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginTransaction s1", "Execute s1",
                                         "Rollback s1", "EndSession s1"));
}

TEST_F(ClientTest, DestroyingACommittedSessionOnlyEndsIt) {
  {
    std::unique_ptr<Session> session = *client_->BeginSession();
    ASSERT_TRUE(session->Begin().ok());
    ASSERT_TRUE(session->Commit().ok());
  }
  EXPECT_THAT(fake_.calls(),
              ElementsAre("BeginSession", "BeginTransaction s1", "Commit s1", "EndSession s1"));
}

TEST_F(ClientTest, AnEndedSessionRefusesCallsAndItsDestructorDoesNothingMore) {
  {
    std::unique_ptr<Session> session = *client_->BeginSession();
    ASSERT_TRUE(session->End().ok());
    EXPECT_EQ(session->Execute("SELECT 1").status().code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "EndSession s1"));
}

// ---- BeginSession's retry on UNAVAILABLE ----

FakeError Unavailable(const std::string& message) {
  return {grpc::StatusCode::UNAVAILABLE, message, "", "", ""};
}

// The request_ids of the BeginSession calls the fake received.
std::vector<std::string> BeginSessionIds(const FakeBroker& fake) {
  std::vector<std::string> ids;
  for (const v1::BeginSessionRequest& r : fake.begin_sessions()) ids.push_back(r.request_id());
  return ids;
}

TEST_F(ClientTest, ABeginSessionThatFailsUnavailableIsRetriedWithOneRequestId) {
  fake_.FailNext("BeginSession", 2, Unavailable("Socket closed"));
  absl::StatusOr<std::unique_ptr<Session>> session = client_->BeginSession();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ((*session)->name(), "s1");
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginSession", "BeginSession"));
  // One id for all attempts, made by the client (a UUID: within the
  // broker's alphabet and length), so a broker that opened the session for
  // an attempt whose answer was lost answers the retry with it.
  std::vector<std::string> ids = BeginSessionIds(fake_);
  ASSERT_EQ(ids.size(), 3);
  EXPECT_THAT(ids[0], ::testing::MatchesRegex(
                          "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"));
  EXPECT_THAT(ids, ElementsAre(ids[0], ids[0], ids[0]));
}

TEST_F(ClientTest, ACallersRequestIdIsSentOnEveryAttemptOfBeginSession) {
  fake_.FailNext("BeginSession", 1, Unavailable("Socket closed"));
  SessionOptions options;
  options.call.request_id = "order-42-session";
  options.label = "billing-worker";
  ASSERT_TRUE(client_->BeginSession(options).ok());
  EXPECT_THAT(BeginSessionIds(fake_), ElementsAre("order-42-session", "order-42-session"));
  // Every attempt repeats the request exactly: the broker replays only an
  // identical one.
  std::vector<v1::BeginSessionRequest> sent = fake_.begin_sessions();
  ASSERT_EQ(sent.size(), 2);
  EXPECT_EQ(sent[0].SerializeAsString(), sent[1].SerializeAsString());
}

TEST_F(ClientTest, SeparateBeginSessionCallsSendSeparateRequestIds) {
  std::unique_ptr<Session> first = *client_->BeginSession();
  std::unique_ptr<Session> second = *client_->BeginSession();
  std::vector<std::string> ids = BeginSessionIds(fake_);
  ASSERT_EQ(ids.size(), 2);
  EXPECT_FALSE(ids[0].empty());
  EXPECT_NE(ids[0], ids[1]);
}

TEST_F(ClientTest, BeginSessionGivesUpAfterThreeAttemptsWithTheLastUnavailable) {
  fake_.FailNext("BeginSession", 1, Unavailable("down 1"));
  fake_.FailNext("BeginSession", 1, Unavailable("down 2"));
  fake_.FailNext("BeginSession", 1, Unavailable("down 3"));
  fake_.FailNext("BeginSession", 1, Unavailable("down 4"));
  absl::Status s = client_->BeginSession().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("down 3"));
  EXPECT_EQ(fake_.begin_sessions().size(), 3);
}

TEST_F(ClientTest, OtherErrorsOfBeginSessionAreReturnedAtOnce) {
  for (grpc::StatusCode code : {grpc::StatusCode::RESOURCE_EXHAUSTED,
                                grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::ABORTED}) {
    const size_t before = fake_.begin_sessions().size();
    fake_.FailNext("BeginSession", 1, {code, "refused", "", "", ""});
    absl::Status s = client_->BeginSession().status();
    EXPECT_EQ(static_cast<int>(s.code()), static_cast<int>(code));
    EXPECT_EQ(fake_.begin_sessions().size(), before + 1) << s;
  }
}

TEST_F(ClientTest, NoBeginSessionAttemptStartsWithoutTimeForItWithinTheDeadline) {
  // Less than the first backoff (50 ms) plus the 250 ms an attempt needs:
  // the first UNAVAILABLE is returned, not a DEADLINE_EXCEEDED from an
  // attempt that had no chance.
  fake_.FailNext("BeginSession", 3, Unavailable("Socket closed"));
  SessionOptions options;
  options.call.deadline = absl::Milliseconds(290);
  absl::Status s = client_->BeginSession(options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake_.begin_sessions().size(), 1);
}

TEST_F(ClientTest, TransactionRetriesTheBeginSessionOfItsFreshSession) {
  fake_.FailNext("BeginSession", 1, Unavailable("Socket closed"));
  absl::Status s =
      client_->Transaction([](Session& session) { return session.Execute("UPDATE ...").status(); });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginSession", "BeginTransaction s1",
                                         "Execute s1", "Commit s1", "EndSession s1"));
  std::vector<std::string> ids = BeginSessionIds(fake_);
  ASSERT_EQ(ids.size(), 2);
  EXPECT_EQ(ids[0], ids[1]);
}

// ---- Transaction ----

TEST_F(ClientTest, TransactionRetriesAbortedCommitsAfterRollingBack) {
  fake_.FailCommits(
      2, {grpc::StatusCode::ABORTED, "could not serialize [SQLSTATE 40001]", "40001", "", ""});
  int runs = 0;
  TransactionOptions options;
  options.initial_backoff = absl::Milliseconds(1);
  absl::Status s = client_->Transaction(
      [&](Session& session) {
        ++runs;
        return session.Execute("UPDATE ...").status();
      },
      options);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(runs, 3);
  EXPECT_THAT(
      fake_.calls(),
      ElementsAre("BeginSession", "BeginTransaction s1", "Execute s1", "Commit s1", "Rollback s1",
                  "BeginTransaction s1", "Execute s1", "Commit s1", "Rollback s1",
                  "BeginTransaction s1", "Execute s1", "Commit s1", "EndSession s1"));
}

TEST_F(ClientTest, TransactionGivesUpAfterMaxAttemptsWithTheLastError) {
  fake_.FailCommits(
      10, {grpc::StatusCode::ABORTED, "deadlock detected [SQLSTATE 40P01]", "40P01", "", ""});
  int runs = 0;
  TransactionOptions options;
  options.max_attempts = 3;
  options.initial_backoff = absl::Milliseconds(1);
  absl::Status s = client_->Transaction(
      [&](Session&) {
        ++runs;
        return absl::OkStatus();
      },
      options);
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(SqlStateOf(s), "40P01");
  EXPECT_EQ(runs, 3);
}

TEST_F(ClientTest, TransactionDoesNotRetryOtherErrorsAndRollsBack) {
  int runs = 0;
  absl::Status s = client_->Transaction([&](Session&) {
    ++runs;
    return absl::InvalidArgumentError("bad input");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runs, 1);
  EXPECT_THAT(fake_.calls(),
              ElementsAre("BeginSession", "BeginTransaction s1", "Rollback s1", "EndSession s1"));
}

TEST_F(ClientTest, TransactionOnASessionWhoseBeginFailsLeavesItsTransactionAlone) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  fake_.FailNext(
      "BeginTransaction", 1,
      {grpc::StatusCode::FAILED_PRECONDITION, "a transaction is already open", "", "", ""});
  TransactionOptions options;
  options.session = session.get();
  int runs = 0;
  absl::Status s = client_->Transaction(
      [&](Session&) {
        ++runs;
        return absl::OkStatus();
      },
      options);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(runs, 0);
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginTransaction s1"));
}

TEST_F(ClientTest, TransactionRunsOnAGivenSessionAndLeavesItOpen) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  TransactionOptions options;
  options.session = session.get();
  ASSERT_TRUE(
      client_->Transaction([](Session& s) { return s.Execute("SELECT 1").status(); }, options)
          .ok());
  EXPECT_THAT(fake_.calls(),
              ElementsAre("BeginSession", "BeginTransaction s1", "Execute s1", "Commit s1"));
}

// ---- streamed results (StreamExecute) ----

v1::StreamExecuteResponse ColumnsMessage(const std::vector<std::string>& names) {
  v1::StreamExecuteResponse m;
  for (const std::string& n : names) {
    v1::Column* c = m.mutable_columns()->add_columns();
    c->set_name(n);
    c->set_type_name("int8");
    c->set_type_oid(20);
  }
  return m;
}
// A message of rows with one cell each: first, first + 1, ...
v1::StreamExecuteResponse RowsMessage(int64_t first, int n) {
  v1::StreamExecuteResponse m;
  for (int i = 0; i < n; ++i) *m.mutable_rows()->add_rows()->add_values() = Int(first + i);
  return m;
}
v1::StreamExecuteResponse EndMessage(const std::string& tag, int64_t rows) {
  v1::StreamExecuteResponse m;
  m.mutable_end()->set_command_tag(tag);
  m.mutable_end()->set_rows_affected(rows);
  return m;
}

TEST_F(ClientTest, AStreamHasItsColumnsFirstThenRowsAcrossMessagesThenItsTag) {
  fake_.NextStream(
      {ColumnsMessage({"n"}), RowsMessage(1, 2), RowsMessage(3, 1), EndMessage("SELECT 3", 3)});
  absl::StatusOr<std::unique_ptr<RowStream>> rows = client_->Stream("SELECT n ...", {7});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ((*rows)->columns().size(), 1u);
  EXPECT_EQ((*rows)->columns()[0].name, "n");
  EXPECT_EQ((*rows)->column_index("n"), 0u);
  EXPECT_EQ((*rows)->command_tag(), "");
  std::vector<int64_t> seen;
  while (std::optional<Row> row = (*rows)->Next()) seen.push_back(*row->Get<int64_t>("n"));
  EXPECT_THAT(seen, ElementsAre(1, 2, 3));
  EXPECT_TRUE((*rows)->status().ok()) << (*rows)->status();
  EXPECT_TRUE((*rows)->done());
  EXPECT_EQ((*rows)->rows_read(), 3);
  EXPECT_EQ((*rows)->command_tag(), "SELECT 3");
  EXPECT_EQ((*rows)->rows_affected(), 3);
  EXPECT_FALSE((*rows)->Next().has_value());
  ASSERT_EQ(fake_.executes().size(), 1u);
  EXPECT_EQ(fake_.executes()[0].sql(), "SELECT n ...");
  EXPECT_EQ(fake_.executes()[0].params(0).int64_value(), 7);
  EXPECT_EQ(fake_.last_client_id(), "billing");
}

TEST_F(ClientTest, AStreamHasNoDeadlineUnlessTheCallSetsOne) {
  fake_.NextStream({ColumnsMessage({}), EndMessage("CREATE TABLE", 0)});
  ASSERT_TRUE(client_->Stream("CREATE TABLE t ()").ok());
  EXPECT_FALSE(fake_.last_call_had_deadline());
  fake_.NextStream({ColumnsMessage({}), EndMessage("CREATE TABLE", 0)});
  ASSERT_TRUE(client_->Stream("CREATE TABLE t ()", {}, CallOptions{absl::Seconds(30)}).ok());
  EXPECT_TRUE(fake_.last_call_had_deadline());
}

TEST_F(ClientTest, ARowOutlivesItsStream) {
  fake_.NextStream({ColumnsMessage({"n"}), RowsMessage(41, 1), EndMessage("SELECT 1", 1)});
  std::optional<Row> kept;
  {
    std::unique_ptr<RowStream> rows = *client_->Stream("SELECT 41");
    kept = rows->Next();
  }
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(*kept->Get<int64_t>(0), 41);
}

TEST_F(ClientTest, AnErrorBeforeTheColumnsIsTheStreamCallsErrorWithItsSqlError) {
  v1::SqlErrorDetail detail;
  detail.set_sqlstate("42P01");
  detail.set_message("relation \"nope\" does not exist");
  v1::RpcStatus rpc;
  rpc.add_details()->PackFrom(detail);
  fake_.NextStream({}, {grpc::StatusCode::NOT_FOUND, "relation \"nope\" does not exist", "42P01",
                        "", rpc.SerializeAsString()});
  absl::Status s = client_->Stream("SELECT * FROM nope").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SqlStateOf(s), "42P01");
  ASSERT_TRUE(SqlErrorOf(s).has_value());
  EXPECT_EQ(SqlErrorOf(s)->message, "relation \"nope\" does not exist");
}

TEST_F(ClientTest, AnErrorMidResultEndsTheRowsAndIsTheStatusWithoutATag) {
  v1::SqlErrorDetail detail;
  detail.set_sqlstate("22012");
  v1::RpcStatus rpc;
  rpc.add_details()->PackFrom(detail);
  fake_.NextStream({ColumnsMessage({"x"}), RowsMessage(1, 2)},
                   {grpc::StatusCode::INVALID_ARGUMENT, "division by zero", "22012", "",
                    rpc.SerializeAsString()});
  std::unique_ptr<RowStream> rows = *client_->Stream("SELECT 1 / (3 - g) ...");
  int n = 0;
  while (rows->Next()) ++n;
  EXPECT_EQ(n, 2);
  EXPECT_EQ(rows->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlErrorOf(rows->status())->sqlstate, "22012");
  EXPECT_EQ(rows->command_tag(), "");
}

TEST_F(ClientTest, AStreamThatEndsWithoutItsEndMessageIsDataLoss) {
  fake_.NextStream({ColumnsMessage({"n"}), RowsMessage(1, 1)});
  std::unique_ptr<RowStream> rows = *client_->Stream("SELECT 1");
  while (rows->Next()) {
  }
  EXPECT_EQ(rows->status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ClientTest, DestroyingAStreamMidResultCancelsTheCall) {
  fake_.NextStream({ColumnsMessage({"n"}), RowsMessage(1, 1)}, {}, /*hang=*/true);
  {
    std::unique_ptr<RowStream> rows = *client_->Stream("SELECT n FROM big");
    ASSERT_TRUE(rows->Next().has_value());
  }
  fake_.AwaitStreamsCancelled(1);
  EXPECT_EQ(fake_.streams_cancelled(), 1);
}

TEST_F(ClientTest, CancelEndsAWaitingNextWithCancelled) {
  fake_.NextStream({ColumnsMessage({"n"})}, {}, /*hang=*/true);
  std::unique_ptr<RowStream> rows = *client_->Stream("SELECT n FROM big");
  std::thread canceller([&rows] { rows->Cancel(); });
  EXPECT_FALSE(rows->Next().has_value());
  canceller.join();
  EXPECT_EQ(rows->status().code(), absl::StatusCode::kCancelled);
}

TEST_F(ClientTest, ASessionStreamNamesItsSessionAndAnEndedOneRefuses) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  fake_.NextStream({ColumnsMessage({}), EndMessage("SELECT 0", 0)});
  ASSERT_TRUE(session->Stream("SELECT 1 WHERE false").ok());
  EXPECT_EQ(fake_.executes().back().session(), session->name());
  ASSERT_TRUE(session->End().ok());
  EXPECT_EQ(session->Stream("SELECT 1").status().code(), absl::StatusCode::kFailedPrecondition);
}

// ---- LISTEN/NOTIFY (Listen) ----

v1::ListenResponse Listening(const std::vector<std::string>& channels, int32_t pid) {
  v1::ListenResponse m;
  for (const std::string& c : channels) m.mutable_listening()->add_channels(c);
  m.mutable_listening()->set_listener_pid(pid);
  return m;
}
v1::ListenResponse NotificationMessage(const std::string& channel, const std::string& payload,
                                       int32_t pid) {
  v1::ListenResponse m;
  m.mutable_notification()->set_channel(channel);
  m.mutable_notification()->set_payload(payload);
  m.mutable_notification()->set_sender_pid(pid);
  return m;
}
v1::ListenResponse GapMessage(v1::ListenGap::Reason reason, int64_t dropped, int32_t pid) {
  v1::ListenResponse m;
  m.mutable_gap()->set_reason(reason);
  m.mutable_gap()->set_dropped(dropped);
  m.mutable_gap()->set_listener_pid(pid);
  return m;
}

TEST_F(ClientTest, ListenReturnsOnceConfirmedThenDeliversNotificationsAndGaps) {
  fake_.NextListen(
      {Listening({"orders", "Audit"}, 900), NotificationMessage("orders", "42", 77),
       GapMessage(v1::ListenGap::OVERFLOW, 5, 900), GapMessage(v1::ListenGap::RECONNECTED, 0, 901)},
      {}, /*hang=*/true);
  absl::StatusOr<std::unique_ptr<Subscription>> sub = client_->Listen({"orders", "Audit"});
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_THAT((*sub)->channels(), ElementsAre("orders", "Audit"));
  EXPECT_EQ((*sub)->listener_pid(), 900);
  ASSERT_EQ(fake_.listens().size(), 1u);
  EXPECT_THAT(fake_.listens()[0].channels(), ElementsAre("orders", "Audit"));
  EXPECT_FALSE(fake_.last_call_had_deadline());

  std::optional<ListenEvent> e = (*sub)->Next();
  ASSERT_TRUE(e.has_value());
  const Notification* n = std::get_if<Notification>(&*e);
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->channel, "orders");
  EXPECT_EQ(n->payload, "42");
  EXPECT_EQ(n->sender_pid, 77);
  e = (*sub)->Next();
  ASSERT_TRUE(e.has_value());
  const NotificationGap* g = std::get_if<NotificationGap>(&*e);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->reason, NotificationGap::Reason::kOverflow);
  EXPECT_EQ(g->dropped, 5);
  e = (*sub)->Next();
  ASSERT_TRUE(e.has_value());
  g = std::get_if<NotificationGap>(&*e);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->reason, NotificationGap::Reason::kReconnected);
  EXPECT_EQ(g->listener_pid, 901);
}

TEST_F(ClientTest, ListenRefusedByTheBrokerIsItsError) {
  fake_.NextListen({}, {grpc::StatusCode::INVALID_ARGUMENT, "channel name is empty", "", "", ""});
  absl::Status s = client_->Listen({""}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("channel name is empty"));
}

TEST_F(ClientTest, ASubscriptionWhoseStreamBreaksReportsTheErrorAndDoesNotReconnect) {
  fake_.NextListen({Listening({"orders"}, 900)},
                   {grpc::StatusCode::UNAVAILABLE, "the broker is shutting down", "", "", ""});
  std::unique_ptr<Subscription> sub = *client_->Listen({"orders"});
  EXPECT_FALSE(sub->Next().has_value());
  EXPECT_EQ(sub->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(sub->Next().has_value());
  EXPECT_EQ(fake_.listens().size(), 1u);
}

TEST_F(ClientTest, CancelEndsAWaitingSubscriptionWithOk) {
  fake_.NextListen({Listening({"orders"}, 900)}, {}, /*hang=*/true);
  std::unique_ptr<Subscription> sub = *client_->Listen({"orders"});
  std::thread canceller([&sub] { sub->Cancel(); });
  EXPECT_FALSE(sub->Next().has_value());
  canceller.join();
  EXPECT_TRUE(sub->status().ok()) << sub->status();
  fake_.AwaitStreamsCancelled(1);
}

TEST_F(ClientTest, DestroyingASubscriptionCancelsItsStream) {
  fake_.NextListen({Listening({"orders"}, 900)}, {}, /*hang=*/true);
  { std::unique_ptr<Subscription> sub = *client_->Listen({"orders"}); }
  fake_.AwaitStreamsCancelled(1);
  EXPECT_EQ(fake_.streams_cancelled(), 1);
}

// Over a real TCP channel: the client's service config applies there.
class ClientChannelTest : public ::testing::Test {
 protected:
  ClientChannelTest() : fake_(/*tcp=*/true) {
    ClientOptions options;
    options.target = fake_.address();
    client_ = *Client::Create(std::move(options));
  }
  FakeBroker fake_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientChannelTest, ReadsAreRetriedOnUnavailable) {
  fake_.FailNext("GetSession", 2, {grpc::StatusCode::UNAVAILABLE, "shutting down", "", "", ""});
  absl::StatusOr<v1::Session> s = client_->GetSession("s9");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name(), "s9");
  EXPECT_THAT(fake_.calls(), ElementsAre("GetSession s9", "GetSession s9", "GetSession s9"));
}

TEST_F(ClientChannelTest, StatementsAreNotRetriedOnUnavailable) {
  fake_.FailNext("Execute", 1, {grpc::StatusCode::UNAVAILABLE, "connection lost", "", "", ""});
  absl::Status s = client_->Execute("INSERT ...").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(fake_.calls(), ElementsAre("Execute "));
}

TEST_F(ClientChannelTest, BeginSessionIsRetriedByTheClientAloneAtMostThreeTimes) {
  // The service config does not name BeginSession: on a real channel the
  // client's own three attempts are all there are.
  fake_.FailNext("BeginSession", 5, {grpc::StatusCode::UNAVAILABLE, "Socket closed", "", "", ""});
  absl::Status s = client_->BeginSession().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(fake_.calls(), ElementsAre("BeginSession", "BeginSession", "BeginSession"));
}

TEST_F(ClientChannelTest, ACallOptionsDeadlineBoundsTheCall) {
  fake_.HangExecutes();
  absl::Status s = client_->Execute("SELECT 1", {}, CallOptions{absl::Milliseconds(50)}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ClientCreateTest, ATargetIsRequired) {
  EXPECT_EQ(Client::Create(ClientOptions()).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- the shared Pipeline stream ----

TEST(ClientPipelineTest, ABrokerWithoutThePipelineMethodIsCalledUnaryAndNotAskedAgainAtOnce) {
  FakeBroker fake;  // implements no Pipeline: UNIMPLEMENTED
  ClientOptions options;
  options.channel = fake.channel();
  options.pipeline = PipelineMode::kAlways;
  std::unique_ptr<Client> client = *Client::Create(std::move(options));
  fake.NextExecute(OneCell("n", "int8", Int(1)));
  ASSERT_TRUE(client->Execute("SELECT 1").ok());  // opens the stream, goes unary
  for (int i = 0; i < 500 && client->pipeline_stats().streams_failed == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(client->pipeline_stats().streams_failed, 1);
  for (int i = 0; i < 10; ++i) {
    fake.NextExecute(OneCell("n", "int8", Int(i)));
    absl::StatusOr<Result> r = client->Execute("SELECT $1::int8", {i});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*(*r)[0].Get<int64_t>(0), i);
  }
  PipelineStats stats = client->pipeline_stats();
  EXPECT_EQ(stats.streams_opened, 1);
  EXPECT_EQ(stats.stream_calls, 0);
  EXPECT_EQ(stats.unary_calls, 11);
  EXPECT_EQ(fake.executes().size(), 11u);
}

// A kAlways client of `fake` whose stream is open (the first call opened it
// and went unary).
std::unique_ptr<Client> StreamingClient(FakeBroker& fake) {
  ClientOptions options;
  options.channel = fake.channel();
  options.pipeline = PipelineMode::kAlways;
  options.keepalive_reconnect_initial = absl::Milliseconds(1);
  std::unique_ptr<Client> client = *Client::Create(std::move(options));
  EXPECT_TRUE(client->Execute("SELECT 1").ok());
  for (int i = 0; i < 500 && !client->pipeline_stats().stream_ready; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(client->pipeline_stats().stream_ready);
  return client;
}

TEST(ClientPipelineTest, ACallAnsweredOnTheStreamIsNotSentUnary) {
  FakeBroker fake;
  fake.EnablePipeline(FakeBroker::PipelineScript::kAnswer);
  std::unique_ptr<Client> client = StreamingClient(fake);
  absl::StatusOr<Result> r = client->Execute("SELECT 1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(*(*r)[0].Get<int64_t>(0), 0);  // the id the fake echoes
  EXPECT_EQ(fake.executes().size(), 1u);   // the opener only
  EXPECT_EQ(fake.pipeline_calls(), 1);
  EXPECT_EQ(client->pipeline_stats().stream_calls, 1);
}

TEST(ClientPipelineTest, ACallTheDrainingBrokerRefusedOnTheStreamIsSentUnary) {
  FakeBroker fake;
  fake.EnablePipeline(FakeBroker::PipelineScript::kRefuseDraining);
  std::unique_ptr<Client> client = StreamingClient(fake);
  fake.NextExecute(OneCell("n", "int8", Int(7)));
  absl::StatusOr<Result> r = client->Execute("SELECT 7");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*(*r)[0].Get<int64_t>(0), 7);
  EXPECT_EQ(fake.pipeline_calls(), 1);
  EXPECT_EQ(fake.executes().size(), 2u);
  EXPECT_EQ(client->pipeline_stats().handed_back, 1);
}

TEST(ClientPipelineTest, CallsADrainLeftUnansweredAreSentUnary) {
  FakeBroker fake;
  fake.EnablePipeline(FakeBroker::PipelineScript::kEndDraining);
  std::unique_ptr<Client> client = StreamingClient(fake);
  fake.NextExecute(OneCell("n", "int8", Int(8)));
  absl::StatusOr<Result> r = client->Execute("SELECT 8");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*(*r)[0].Get<int64_t>(0), 8);
  EXPECT_EQ(fake.pipeline_calls(), 1);
  EXPECT_EQ(fake.executes().size(), 2u);
  EXPECT_EQ(client->pipeline_stats().handed_back, 1);
}

TEST(ClientPipelineTest, ACallWrittenOnAStreamThatBreaksFailsUnavailableAndANewStreamOpensLater) {
  FakeBroker fake;
  fake.EnablePipeline(FakeBroker::PipelineScript::kBreak);
  std::unique_ptr<Client> client = StreamingClient(fake);
  absl::StatusOr<Result> r = client->Execute("INSERT INTO t VALUES (1)");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.status().message()),
              ::testing::HasSubstr("may or may not have been applied"));
  EXPECT_EQ(fake.executes().size(), 1u);  // never resent
  EXPECT_EQ(client->pipeline_stats().handed_back, 0);
  // The next call opens a new stream (and goes unary); calls then use it.
  fake.EnablePipeline(FakeBroker::PipelineScript::kAnswer);
  for (int i = 0; i < 500 && !client->pipeline_stats().stream_ready; ++i) {
    ASSERT_TRUE(client->Execute("SELECT 1").ok());
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_TRUE(client->pipeline_stats().stream_ready);
  ASSERT_TRUE(client->Execute("SELECT 1").ok());
  EXPECT_EQ(fake.pipeline_streams(), 2);
  EXPECT_EQ(client->pipeline_stats().streams_opened, 2);
  EXPECT_EQ(client->pipeline_stats().stream_calls, 1);
}

TEST(ClientPipelineTest, TheConcurrentPolicyLeavesALoneCallerUnaryWithoutAStream) {
  FakeBroker fake;
  ClientOptions options;
  options.channel = fake.channel();
  std::unique_ptr<Client> client = *Client::Create(std::move(options));
  EXPECT_EQ(client->options().pipeline, PipelineMode::kConcurrent);
  for (int i = 0; i < 3; ++i) {
    fake.NextExecute(OneCell("n", "int8", Int(i)));
    ASSERT_TRUE(client->Execute("SELECT 1").ok());
  }
  EXPECT_EQ(client->pipeline_stats().streams_opened, 0);
  EXPECT_EQ(client->pipeline_stats().unary_calls, 3);
}

}  // namespace
}  // namespace sessionbroker
