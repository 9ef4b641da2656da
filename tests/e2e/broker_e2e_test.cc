// End-to-end: the session-broker binary, a real PostgreSQL, generated C++
// stubs. Each test starts its own broker (a second or less) with the knobs it
// needs, and inspects the database directly (pg_stat_activity, pg_locks) to
// check what the broker claims.
#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Le;

using BrokerE2eTest = BrokerFixture;

TEST_F(BrokerE2eTest, ExecuteReturnsTypedColumnsAndRows) {
  StartBroker();
  CallResult r = Execute(
      "SELECT 42::int4 AS answer, 'hi'::text AS greeting, NULL::int8 AS nothing, "
      "1.5::float8 AS ratio, 12.50::numeric AS price, true AS yes");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.response.columns_size(), 6);
  EXPECT_EQ(r.response.columns(0).name(), "answer");
  EXPECT_EQ(r.response.columns(0).type_oid(), 23u);
  EXPECT_EQ(r.response.columns(0).type_name(), "int4");
  EXPECT_EQ(r.response.columns(4).type_name(), "numeric");
  ASSERT_EQ(r.response.rows_size(), 1);
  const v1::Row& row = r.response.rows(0);
  EXPECT_EQ(row.values(0).int64_value(), 42);
  EXPECT_EQ(row.values(1).string_value(), "hi");
  EXPECT_TRUE(row.values(2).has_null_value());
  EXPECT_EQ(row.values(3).double_value(), 1.5);
  EXPECT_EQ(row.values(4).numeric_value(), "12.50");
  EXPECT_TRUE(row.values(5).bool_value());
  EXPECT_EQ(r.response.command_tag(), "SELECT 1");
  EXPECT_EQ(r.response.rows_affected(), 1);
}

TEST_F(BrokerE2eTest, ParametersAreBoundNotSpliced) {
  StartBroker();
  const std::string table = absl::StrCat("e2e_params_", app_name_);
  ASSERT_TRUE(Execute(absl::StrCat("CREATE TABLE ", table, " (id int8 PRIMARY KEY, name text)"))
                  .status.ok());
  // A value that would break (or inject into) SQL if it were spliced in.
  const std::string evil = "x'); DROP TABLE " + table + "; --";
  CallResult insert =
      Execute(absl::StrCat("INSERT INTO ", table, " VALUES ($1, $2)"), {Int(7), Str(evil)});
  ASSERT_TRUE(insert.status.ok()) << insert.status.error_message();
  EXPECT_EQ(insert.response.command_tag(), "INSERT 0 1");
  EXPECT_EQ(insert.response.rows_affected(), 1);
  CallResult select = Execute(absl::StrCat("SELECT name FROM ", table, " WHERE id = $1"), {Int(7)});
  ASSERT_TRUE(select.status.ok()) << select.status.error_message();
  ASSERT_EQ(select.response.rows_size(), 1);
  EXPECT_EQ(select.response.rows(0).values(0).string_value(), evil);
  Execute(absl::StrCat("DROP TABLE ", table));
}

TEST_F(BrokerE2eTest, ExecuteBatchAppliesAllStatementsAtomically) {
  StartBroker();
  const std::string table = absl::StrCat("e2e_batch_", app_name_);
  ASSERT_TRUE(Execute(absl::StrCat("CREATE TABLE ", table, " (id int PRIMARY KEY)")).status.ok());
  v1::ExecuteBatchRequest ok_batch;
  for (int id : {1, 2}) {
    v1::Statement* s = ok_batch.add_statements();
    s->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES ($1)"));
    *s->add_params() = Int(id);
  }
  ok_batch.add_statements()->set_sql(absl::StrCat("SELECT count(*) FROM ", table));
  {
    grpc::ClientContext context;
    v1::ExecuteBatchResponse response;
    grpc::Status status = stub_->ExecuteBatch(&context, ok_batch, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.results_size(), 3);
    EXPECT_EQ(response.results(0).command_tag(), "INSERT 0 1");
    // The third statement sees the first two: one transaction, in order.
    EXPECT_EQ(response.results(2).rows(0).values(0).int64_value(), 2);
  }
  // A batch whose last statement fails leaves nothing of the others behind.
  v1::ExecuteBatchRequest bad_batch;
  for (int id : {3, 4, 1}) {
    v1::Statement* s = bad_batch.add_statements();
    s->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES ($1)"));
    *s->add_params() = Int(id);
  }
  grpc::ClientContext context;
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, bad_batch, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(status.error_message(), AllOf(HasSubstr("statement 3 of 3"), HasSubstr("23505")));
  EXPECT_EQ(SqlStateOf(context), "23505");
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 2);
  Execute(absl::StrCat("DROP TABLE ", table));
}

TEST_F(BrokerE2eTest, SqlErrorsMapToStatusCodesWithSqlstateMetadata) {
  StartBroker();
  CallResult syntax = Execute("SELEC 1");
  EXPECT_EQ(syntax.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(syntax.sqlstate, "42601");
  EXPECT_THAT(syntax.status.error_message(), HasSubstr("SQLSTATE 42601"));

  CallResult missing = Execute("SELECT * FROM no_such_table_e2e");
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(missing.sqlstate, "42P01");

  CallResult division = Execute("SELECT 1 / 0");
  EXPECT_EQ(division.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(division.sqlstate, "22012");

  CallResult check = Execute("SELECT 'abc'::int");
  EXPECT_EQ(check.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(check.sqlstate, "22P02");
}

// The SqlErrorDetail of a failed call, read from its status details (the
// "grpc-status-details-bin" trailer, an RpcStatus); nullopt if it has none.
std::optional<v1::SqlErrorDetail> SqlErrorDetailOf(const grpc::Status& status) {
  v1::RpcStatus rpc_status;
  if (status.error_details().empty() || !rpc_status.ParseFromString(status.error_details())) {
    return std::nullopt;
  }
  EXPECT_EQ(rpc_status.code(), static_cast<int>(status.error_code()));
  EXPECT_EQ(rpc_status.message(), status.error_message());
  for (const google::protobuf::Any& any : rpc_status.details()) {
    v1::SqlErrorDetail detail;
    if (any.UnpackTo(&detail)) return detail;
  }
  return std::nullopt;
}

v1::Value Typed(v1::Value value, const std::string& type) {
  value.set_type(type);
  return value;
}

TEST_F(BrokerE2eTest, ParametersArriveWithTheTypeTheirCaseImpliesOrNames) {
  StartBroker();
  CallResult int8 = Execute("SELECT $1 AS v", {Int(41)});
  ASSERT_TRUE(int8.status.ok()) << int8.status.error_message();
  EXPECT_EQ(int8.response.columns(0).type_name(), "int8");
  EXPECT_EQ(int8.response.rows(0).values(0).int64_value(), 41);
  CallResult sum = Execute("SELECT $1 + 1 AS v", {Int(int64_t{1} << 40)});
  ASSERT_TRUE(sum.status.ok()) << sum.status.error_message();
  EXPECT_EQ(sum.response.rows(0).values(0).int64_value(), (int64_t{1} << 40) + 1);

  CallResult uuid =
      Execute("SELECT $1 AS v", {Typed(Str("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), "uuid")});
  ASSERT_TRUE(uuid.status.ok()) << uuid.status.error_message();
  EXPECT_EQ(uuid.response.columns(0).type_name(), "uuid");
  EXPECT_EQ(uuid.response.rows(0).values(0).string_value(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");

  CallResult unknown = Execute("SELECT $1", {Typed(Str("x"), "no_such_type_e2e")});
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unknown.status.error_message(),
              AllOf(HasSubstr("parameter $1"), HasSubstr("no_such_type_e2e")));
  EXPECT_EQ(SqlErrorDetailOf(unknown.status), std::nullopt) << "an error of the broker's own";
}

TEST_F(BrokerE2eTest, AUniqueViolationSendsItsFieldsInTheStatusDetailsTrailer) {
  StartBroker();
  const std::string table = absl::StrCat("e2e_fields_", app_name_);
  ASSERT_TRUE(Execute(absl::StrCat("CREATE TABLE ", table, " (id int8, email text CONSTRAINT ",
                                   table, "_email_key UNIQUE)"))
                  .status.ok());
  const std::string insert = absl::StrCat("INSERT INTO ", table, " VALUES ($1, $2)");
  ASSERT_TRUE(Execute(insert, {Int(1), Str("a@example.com")}).status.ok());

  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql(insert);
  *request.add_params() = Int(2);
  *request.add_params() = Str("a@example.com");
  v1::ExecuteResponse response;
  grpc::Status status = stub_->Execute(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(SqlStateOf(context), "23505") << "the sqlstate trailer stays";
  // The details are the grpc-status-details-bin trailer, as any gRPC library
  // sees it.
  const auto& trailers = context.GetServerTrailingMetadata();
  const auto details = trailers.find("grpc-status-details-bin");
  ASSERT_NE(details, trailers.end());
  EXPECT_EQ(std::string(details->second.data(), details->second.size()), status.error_details());
  const std::optional<v1::SqlErrorDetail> detail = SqlErrorDetailOf(status);
  ASSERT_TRUE(detail.has_value()) << "no SqlErrorDetail in grpc-status-details-bin";
  EXPECT_EQ(detail->sqlstate(), "23505");
  EXPECT_EQ(detail->severity(), "ERROR");
  EXPECT_EQ(detail->constraint_name(), absl::StrCat(table, "_email_key"));
  EXPECT_EQ(detail->table_name(), table);
  EXPECT_EQ(detail->schema_name(), "public");
  EXPECT_EQ(detail->detail(), "Key (email)=(a@example.com) already exists.");
  EXPECT_EQ(detail->statement_index(), 0u);
  Execute(absl::StrCat("DROP TABLE ", table));
}

TEST_F(BrokerE2eTest, ABatchFailureSendsTheIndexOfTheFailedStatement) {
  StartBroker();
  const std::string table = absl::StrCat("e2e_batch_fields_", app_name_);
  ASSERT_TRUE(Execute(absl::StrCat("CREATE TABLE ", table, " (id int8 PRIMARY KEY)")).status.ok());
  v1::ExecuteBatchRequest batch;
  for (int id : {1, 1, 2}) {
    v1::Statement* s = batch.add_statements();
    s->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES ($1)"));
    *s->add_params() = Int(id);
  }
  grpc::ClientContext context;
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, batch, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  const std::optional<v1::SqlErrorDetail> detail = SqlErrorDetailOf(status);
  ASSERT_TRUE(detail.has_value()) << status.error_message();
  EXPECT_EQ(detail->statement_index(), 2u);
  EXPECT_EQ(detail->constraint_name(), absl::StrCat(table, "_pkey"));
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  Execute(absl::StrCat("DROP TABLE ", table));
}

TEST_F(BrokerE2eTest, InvalidRequestsAreRefusedBeforeReachingTheDatabase) {
  StartBroker();
  CallResult empty = Execute("  -- nothing\n ");
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(empty.status.error_message(), HasSubstr("empty"));

  CallResult count = Execute("SELECT $1::int + $2::int", {Int(1)});
  EXPECT_EQ(count.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(count.status.error_message(), HasSubstr("$2"));

  CallResult two = Execute("SELECT 1; SELECT 2");
  EXPECT_EQ(two.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  CallResult begin = Execute("BEGIN");
  EXPECT_EQ(begin.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(begin.status.error_message(), HasSubstr("BEGIN"));

  CallResult unset = Execute("SELECT $1::text", {v1::Value()});
  EXPECT_EQ(unset.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unset.status.error_message(), HasSubstr("params[0]"));
  // None of them produced a SQLSTATE: the database never saw them.
  for (const CallResult* r : {&empty, &count, &two, &begin, &unset}) EXPECT_EQ(r->sqlstate, "");
}

TEST_F(BrokerE2eTest, RequestsNoDatabaseCouldRunAreInvalidArgumentNamingTheProblem) {
  StartBroker();
  // More parameters than libpq can send: refused before the database.
  std::vector<v1::Value> params(65'536, Int(1));
  CallResult many = Execute("SELECT $65536::int", params);
  EXPECT_EQ(many.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(many.status.error_message(), HasSubstr("at most 65535"));

  // A NUL byte would cut the statement short in libpq.
  CallResult nul = Execute(std::string("SELECT 1") + '\0' + " + 1");
  EXPECT_EQ(nul.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(nul.status.error_message(), HasSubstr("NUL byte"));
  for (const CallResult* r : {&many, &nul}) EXPECT_EQ(r->sqlstate, "");

  // Bytes that are no ExecuteRequest (field 1, wire type 7).
  const std::string garbage("\x0f\x01", 2);
  grpc::Status unparsed =
      RawUnaryCall(broker_->channel(), "/sessionbroker.v1.SessionBroker/Execute", garbage);
  EXPECT_EQ(unparsed.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unparsed.error_message(), HasSubstr("ExecuteRequest could not be parsed"));
  grpc::Status stream =
      RawStreamCall(broker_->channel(), "/sessionbroker.v1.SessionBroker/KeepAlive", garbage);
  EXPECT_EQ(stream.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(stream.error_message(), HasSubstr("KeepAliveRequest could not be parsed"));
}

TEST_F(BrokerE2eTest, AnUnknownSessionWithAVeryLongNameIsStillNotFound) {
  StartBroker();
  // Echoed whole, the name made the trailers exceed gRPC's metadata limit
  // and the caller saw RESOURCE_EXHAUSTED.
  RpcResult<v1::Session> got = GetSession(std::string(10'000, 'n'));
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::NOT_FOUND) << got.status.error_message();
  EXPECT_THAT(got.status.error_message(), HasSubstr("nnn...\" not found"));
  EXPECT_EQ(got.reason, "SESSION_NOT_FOUND");
  RpcResult<v1::ExecuteResponse> run = ExecuteIn(std::string(10'000, 'n'), "SELECT 1");
  EXPECT_EQ(run.status.error_code(), grpc::StatusCode::NOT_FOUND) << run.status.error_message();
}

TEST_F(BrokerE2eTest, PoolTimeoutFailsWithResourceExhaustedWithinItsBound) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_TIMEOUT", "0.5"}});
  std::thread holder([&] { Execute("SELECT pg_sleep(3)", {}, absl::Seconds(20), nullptr); });
  // Wait until the holder's statement is running.
  for (int i = 0; i < 200 && AdminCount("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name = $1 AND query LIKE 'SELECT pg_sleep%' "
                                        "AND state = 'active'",
                                        {storage::Value::String(app_name_)}) == 0;
       ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
  const absl::Time start = absl::Now();
  CallResult waited = Execute("SELECT 1", {}, absl::Seconds(20), stub.get());
  const absl::Duration took = absl::Now() - start;
  holder.join();
  EXPECT_EQ(waited.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(waited.status.error_message(), HasSubstr("DB_POOL_TIMEOUT"));
  // The pool timeout is 0.5 s; the connection was busy for 3 s.
  EXPECT_GE(took, absl::Milliseconds(450));
  EXPECT_LT(took, absl::Milliseconds(2500));
}

TEST_F(BrokerE2eTest, CallerDeadlineShorterThanPoolTimeoutGivesDeadlineExceeded) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_TIMEOUT", "30"}});
  std::thread holder([&] { Execute("SELECT pg_sleep(2)"); });
  WaitForActiveStatements(1);
  auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
  CallResult waited = Execute("SELECT 1", {}, absl::Milliseconds(300), stub.get());
  holder.join();
  EXPECT_EQ(waited.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(BrokerE2eTest, DeadlineCancelsRunningQueryAndConnectionIsReused) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  CallResult pid_before = Execute("SELECT pg_backend_pid()");
  ASSERT_TRUE(pid_before.status.ok());
  const absl::Time start = absl::Now();
  CallResult slow = Execute("SELECT pg_sleep(30)", {}, absl::Milliseconds(200));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(slow.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(took, absl::Seconds(10));
  // The statement is gone from the server, not left running.
  for (int i = 0; i < 100 && AdminCount("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name = $1 AND state = 'active'",
                                        {storage::Value::String(app_name_)}) > 0;
       ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(AdminCount("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                       "query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                       {storage::Value::String(app_name_)}),
            0);
  // The same (only) connection serves the next call: it was cancelled, not lost.
  CallResult pid_after = Execute("SELECT pg_backend_pid()");
  ASSERT_TRUE(pid_after.status.ok()) << pid_after.status.error_message();
  EXPECT_EQ(pid_after.response.rows(0).values(0).int64_value(),
            pid_before.response.rows(0).values(0).int64_value());
}

TEST_F(BrokerE2eTest, DeadlineStopsABatchBetweenStatementsAndCommitsNothing) {
  StartBroker();
  const std::string table = absl::StrCat("e2e_batch_deadline_", app_name_);
  ASSERT_TRUE(Execute(absl::StrCat("CREATE TABLE ", table, " (id int)")).status.ok());
  // Many short statements: the deadline mostly lands between two of them,
  // where PostgreSQL itself ignores a cancel request.
  v1::ExecuteBatchRequest batch;
  batch.add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  for (int i = 0; i < 300; ++i) {
    batch.add_statements()->set_sql("SELECT pg_sleep(0.005)");
  }
  batch.add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (2)"));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, batch, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  // The connection is fine afterwards.
  EXPECT_TRUE(Execute(absl::StrCat("DROP TABLE ", table)).status.ok());
}

TEST_F(BrokerE2eTest, CancelledCallCancelsQueryInPostgres) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  v1::ExecuteRequest request;
  request.set_sql("SELECT pg_sleep(30)");
  grpc::ClientContext context;
  v1::ExecuteResponse response;
  std::thread canceller([&] {
    for (int i = 0; i < 200 && AdminCount("SELECT count(*) FROM pg_stat_activity WHERE "
                                          "application_name = $1 AND state = 'active'",
                                          {storage::Value::String(app_name_)}) == 0;
         ++i) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    context.TryCancel();
  });
  grpc::Status status = stub_->Execute(&context, request, &response);
  canceller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  bool stopped = false;
  for (int i = 0; i < 250 && !stopped; ++i) {
    stopped = AdminCount(
                  "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                  "query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                  {storage::Value::String(app_name_)}) == 0;
    if (!stopped) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(stopped) << "pg_sleep(30) still running after the call was cancelled";
  EXPECT_TRUE(Execute("SELECT 1").status.ok());
}

TEST_F(BrokerE2eTest, ConnectionBoundHoldsUnderFiftyConcurrentCallers) {
  StartBroker({{"DB_POOL_SIZE", "3"}, {"DB_MAX_OVERFLOW", "2"}});
  constexpr int kCallers = 50;
  std::atomic<int> failures{0};
  std::mutex first_failure_mu;
  std::string first_failure;  // the first failed call's code and message
  std::atomic<int64_t> max_seen{0};
  std::vector<std::thread> callers;
  // Several channels, as several client services would have.
  std::vector<std::unique_ptr<v1::SessionBroker::Stub>> stubs;
  for (int i = 0; i < 5; ++i) stubs.push_back(v1::SessionBroker::NewStub(broker_->NewChannel()));
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&, i] {
      for (int round = 0; round < 3; ++round) {
        // Each statement counts, from inside the database, how many
        // connections this broker holds at that moment.
        CallResult r = Execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND pg_sleep(0.02) IS NOT NULL",
            {Str(app_name_)}, absl::Seconds(60), stubs[i % stubs.size()].get());
        if (!r.status.ok()) {
          if (failures.fetch_add(1) == 0) {
            std::lock_guard<std::mutex> lock(first_failure_mu);
            first_failure = absl::StrCat(r.status.error_code(), ": ", r.status.error_message());
          }
          continue;
        }
        const int64_t seen = r.response.rows(0).values(0).int64_value();
        int64_t prev = max_seen.load();
        while (seen > prev && !max_seen.compare_exchange_weak(prev, seen)) {
        }
      }
    });
  }
  ConnectionPeakSampler connections(base_url_, app_name_);
  for (std::thread& t : callers) t.join();
  connections.Stop();
  EXPECT_EQ(failures.load(), 0) << "the first failure: " << first_failure;
  EXPECT_THAT(max_seen.load(), Le(5));
  EXPECT_GT(connections.samples(), 0);
  EXPECT_THAT(connections.peak(), Le(5));
  EXPECT_GE(max_seen.load(), 2) << "the load never needed more than one connection?";
}

TEST_F(BrokerE2eTest, ReadinessComesAfterTheStartupStatements) {
  // The request outcomes table is created before the broker reports
  // SERVING: a first caller never finds that work holding the pool.
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_MAX_WAITERS", "1"}});
  std::unique_ptr<v1::PoolMonitor::Stub> monitor = v1::PoolMonitor::NewStub(broker_->channel());
  grpc::ClientContext context;
  v1::PoolStatus status;
  ASSERT_TRUE(monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status).ok());
  EXPECT_GE(status.counters().statements(), kStartupStatements) << status.DebugString();
  EXPECT_EQ(status.waiters().count(), 0) << status.DebugString();
  const CallResult outcomes = Execute(
      "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
      "n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname || '.' || c.relname = "
      "'sessionbroker.request_outcomes'");
  ASSERT_TRUE(outcomes.status.ok()) << outcomes.status.error_message();
  EXPECT_EQ(outcomes.response.rows(0).values(0).int64_value(), 1);
}

TEST_F(BrokerE2eTest, WaiterLimitRejectsAtOnceWithResourceExhausted) {
  // Readiness waits for the broker's own start-up statements, so none of
  // them queues for the one connection by the time the test calls.
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_MAX_WAITERS", "1"}});
  CallResult held;
  std::thread holder([&] { held = Execute("SELECT pg_sleep(3)"); });
  WaitForActiveStatements(1);
  auto stub2 = v1::SessionBroker::NewStub(broker_->NewChannel());
  CallResult waited;
  std::thread waiter([&] { waited = Execute("SELECT 1", {}, absl::Seconds(20), stub2.get()); });
  // The third call comes once the second is seen queued (the holder keeps
  // the connection for 3 s, far longer than this takes).
  const bool queued = Eventually([&] { return PoolWaiters() == 1; });
  auto stub3 = v1::SessionBroker::NewStub(broker_->NewChannel());
  CallResult rejected = Execute("SELECT 1", {}, absl::Seconds(20), stub3.get());
  holder.join();
  waiter.join();
  EXPECT_TRUE(held.status.ok()) << held.status.error_message();
  EXPECT_TRUE(queued) << "the second call never queued";
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(rejected.status.error_message(), HasSubstr("DB_POOL_MAX_WAITERS"));
  EXPECT_TRUE(waited.status.ok()) << "the queued caller is served once the holder is done: "
                                  << waited.status.error_message();
}

TEST_F(BrokerE2eTest, NoSessionStateLeaksToTheNextCaller) {
  // One connection: every call below runs on the same backend.
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const int64_t pid = Execute("SELECT pg_backend_pid()").response.rows(0).values(0).int64_value();
  const std::string default_path =
      Execute("SHOW search_path").response.rows(0).values(0).string_value();

  ASSERT_TRUE(Execute("SET search_path TO pg_catalog").status.ok());
  EXPECT_EQ(Execute("SHOW search_path").response.rows(0).values(0).string_value(), default_path);

  ASSERT_TRUE(Execute("SELECT set_config('search_path', 'information_schema', false)").status.ok());
  EXPECT_EQ(Execute("SHOW search_path").response.rows(0).values(0).string_value(), default_path);

  ASSERT_TRUE(Execute("UPDATE pg_settings SET setting = 'pg_catalog' WHERE name = 'search_path'")
                  .status.ok());
  EXPECT_EQ(Execute("SHOW search_path").response.rows(0).values(0).string_value(), default_path);

  CallResult copy = Execute("COPY (SELECT 1) TO STDOUT");
  EXPECT_EQ(copy.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(Execute("CREATE TEMP TABLE leaked_temp (x int)").status.ok());
  CallResult temp = Execute("SELECT to_regclass('pg_temp.leaked_temp') IS NULL");
  ASSERT_TRUE(temp.status.ok()) << temp.status.error_message();
  EXPECT_TRUE(temp.response.rows(0).values(0).bool_value());

  ASSERT_TRUE(Execute("PREPARE leaked_plan AS SELECT 1").status.ok());
  CallResult prepared = Execute("SELECT count(*) FROM pg_prepared_statements");
  EXPECT_EQ(prepared.response.rows(0).values(0).int64_value(), 0);

  ASSERT_TRUE(Execute("SELECT pg_advisory_lock(424242)").status.ok());
  EXPECT_EQ(AdminCount("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                       "objid = 424242"),
            0);

  CallResult begin = Execute("BEGIN");
  EXPECT_EQ(begin.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Each call runs in a transaction of its own: no transaction was left open.
  CallResult xid1 = Execute("SELECT txid_current()");
  CallResult xid2 = Execute("SELECT txid_current()");
  ASSERT_TRUE(xid1.status.ok() && xid2.status.ok());
  EXPECT_NE(xid1.response.rows(0).values(0).int64_value(),
            xid2.response.rows(0).values(0).int64_value())
      << "two calls shared one transaction";

  // All of the above ran on the one connection, which is still the same one.
  EXPECT_EQ(Execute("SELECT pg_backend_pid()").response.rows(0).values(0).int64_value(), pid);
  EXPECT_EQ(AdminCount("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                       "state LIKE 'idle in transaction%'",
                       {storage::Value::String(app_name_)}),
            0);
}

TEST_F(BrokerE2eTest, RepeatedQueriesArePreparedOncePerConnectionButSessionStateIsNot) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const std::string query = "SELECT $1::int8 + 1";
  for (int64_t i = 0; i < 3; ++i) {
    v1::Value param;
    param.set_int64_value(i);
    CallResult r = Execute(query, {param});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.response.rows(0).values(0).int64_value(), i + 1);
  }
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Execute("SELECT set_config('x.y', '1', false)").status.ok());
  const std::string list =
      "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'sessionbroker%' AND "
      "statement NOT LIKE '%pg_prepared_statements%' AND "
      // The catalog lookup that proves `query` stateless (CatalogGuard).
      "statement NOT LIKE '%pg_catalog.to_regclass%' ORDER BY 1";
  CallResult prepared = Execute(list);
  ASSERT_TRUE(prepared.status.ok()) << prepared.status.error_message();
  // The set_config calls reset the session, which keeps the broker's own
  // prepared statements (and only those).
  EXPECT_EQ(prepared.response.rows_size(), 1);
  v1::Value seven;
  seven.set_int64_value(7);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(Execute(query, {seven}).status.ok());
  prepared = Execute(list);
  ASSERT_TRUE(prepared.status.ok()) << prepared.status.error_message();
  ASSERT_EQ(prepared.response.rows_size(), 1);
  EXPECT_EQ(prepared.response.rows(0).values(0).string_value(), query);
}

TEST_F(BrokerE2eTest, StatementCacheSizeZeroPreparesNothing) {
  StartBroker(
      {{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"BROKER_STATEMENT_CACHE_SIZE", "0"}});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Execute("SELECT 1 AS one").status.ok());
  CallResult prepared = Execute("SELECT count(*) FROM pg_prepared_statements");
  ASSERT_TRUE(prepared.status.ok()) << prepared.status.error_message();
  EXPECT_EQ(prepared.response.rows(0).values(0).int64_value(), 0);
}

TEST_F(BrokerE2eTest, OversizedResultFailsWithResourceExhausted) {
  StartBroker({{"BROKER_MAX_RESULT_BYTES", "100000"}});
  CallResult big = Execute("SELECT repeat('x', 1000) FROM generate_series(1, 1000)");
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.status.error_message(),
              AllOf(HasSubstr("BROKER_MAX_RESULT_BYTES"), HasSubstr("LIMIT")));
  EXPECT_TRUE(Execute("SELECT repeat('x', 1000) FROM generate_series(1, 10)").status.ok());
}

TEST_F(BrokerE2eTest, ReflectionListsAndDescribesTheServices) {
  StartBroker();
  absl::StatusOr<std::vector<std::string>> services = ReflectionListServices(broker_->channel());
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, Contains(kService));
  EXPECT_THAT(*services, Contains("grpc.health.v1.Health"));
  absl::StatusOr<std::vector<std::string>> methods =
      ReflectionDescribeService(broker_->channel(), kService);
  ASSERT_TRUE(methods.ok()) << methods.status();
  EXPECT_THAT(*methods, Contains("Execute"));
  EXPECT_THAT(*methods, Contains("ExecuteBatch"));
  // The pool monitor is served on the same port, and described too.
  EXPECT_THAT(*services, Contains("sessionbroker.v1.PoolMonitor"));
  absl::StatusOr<std::vector<std::string>> monitor =
      ReflectionDescribeService(broker_->channel(), "sessionbroker.v1.PoolMonitor");
  ASSERT_TRUE(monitor.ok()) << monitor.status();
  EXPECT_THAT(*monitor, Contains("GetPoolStatus"));
  EXPECT_THAT(*monitor, Contains("WatchPoolStatus"));
}

TEST_F(BrokerE2eTest, HealthFollowsTheDatabase) {
  PrivateCluster cluster;
  ASSERT_TRUE(cluster.Start());
  broker_ = std::make_unique<BrokerProcess>(cluster.url(), std::map<std::string, std::string>{});
  ASSERT_TRUE(broker_->WaitUntilServing()) << broker_->Log();
  EXPECT_EQ(*HealthCheck(broker_->channel(), kService), ServingStatus::kServing);
  HealthWatch watch(broker_->channel(), kService);
  EXPECT_EQ(*watch.Next(absl::Seconds(5)), ServingStatus::kServing);

  ASSERT_TRUE(cluster.Stop());
  EXPECT_TRUE(
      WaitForHealth(broker_->channel(), kService, ServingStatus::kNotServing, absl::Seconds(15)))
      << broker_->Log();
  // Liveness ("") does not follow the database: an outage must not get the
  // broker restarted.
  EXPECT_EQ(*HealthCheck(broker_->channel(), ""), ServingStatus::kServing);
  absl::StatusOr<ServingStatus> watched = watch.Next(absl::Seconds(10));
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(*watched, ServingStatus::kNotServing);
  auto stub = v1::SessionBroker::NewStub(broker_->channel());
  CallResult down = Execute("SELECT 1", {}, absl::Seconds(10), stub.get());
  EXPECT_EQ(down.status.error_code(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_TRUE(cluster.Start());
  EXPECT_TRUE(
      WaitForHealth(broker_->channel(), kService, ServingStatus::kServing, absl::Seconds(15)))
      << broker_->Log();
  EXPECT_TRUE(Execute("SELECT 1", {}, absl::Seconds(10), stub.get()).status.ok());
  broker_.reset();  // before the cluster goes away
}

// Ctrl-C at a terminal: nothing routes to the broker, so there is no drain
// window to wait out (a window of an hour would otherwise hold the exit).
TEST_F(BrokerE2eTest, SigintSkipsTheDrainWindow) {
  StartBroker({{"BROKER_DRAIN_SECONDS", "3600"}});
  const std::optional<int> code = broker_->SignalAndWait(SIGINT, absl::Seconds(60));
  ASSERT_TRUE(code.has_value()) << "still draining after SIGINT\n" << broker_->Log();
  EXPECT_EQ(*code, 0) << broker_->Log();
  EXPECT_THAT(broker_->Log(), HasSubstr("still serving every call for 0"));
}

TEST_F(BrokerE2eTest, SigtermFinishesInFlightCallsRefusesNewOnesAndExitsZero) {
  StartBroker();
  CallResult in_flight;
  std::thread call([&] { in_flight = Execute("SELECT pg_sleep(1.0), 'done'::text"); });
  for (int i = 0; i < 200 && AdminCount("SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name = $1 AND state = 'active'",
                                        {storage::Value::String(app_name_)}) == 0;
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  kill(broker_->pid(), SIGTERM);
  absl::SleepFor(absl::Milliseconds(200));
  auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
  CallResult refused = Execute("SELECT 1", {}, absl::Seconds(5), stub.get());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  call.join();
  EXPECT_TRUE(in_flight.status.ok()) << in_flight.status.error_message();
  const std::optional<int> code = broker_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker_->Log();
  EXPECT_EQ(*code, 0) << broker_->Log();
  // Every connection was closed on the way out.
  for (int i = 0; i < 100 && BrokerConnections() > 0; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(BrokerConnections(), 0);
}

TEST_F(BrokerE2eTest, BadConfigurationExitsNonZeroNamingTheVariable) {
  BrokerProcess broker(broker_url_, {{"DB_POOL_SIZE", "lots"}});
  const std::optional<int> code = broker.WaitForExit(absl::Seconds(10));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(broker.Log(), HasSubstr("DB_POOL_SIZE"));
}

// ---- Per-call settings ----------------------------------------------------------

// Execute with settings: they hold for that call (SET LOCAL) and leave no
// trace on the connection, which the next call (pool of one) shows.
TEST_F(BrokerE2eTest, PerCallSettingsApplyToThatCallAloneOnTheSharedConnection) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  const auto execute = [&](const std::string& sql,
                           std::map<std::string, std::string> settings) -> CallResult {
    CallResult out;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::ExecuteRequest request;
    request.set_sql(sql);
    for (const auto& [name, value] : settings) (*request.mutable_settings())[name] = value;
    out.status = stub_->Execute(&context, request, &out.response);
    out.sqlstate = SqlStateOf(context);
    return out;
  };
  const std::string read =
      "SELECT pg_backend_pid()::int8, current_setting('app.tenant_id', true), "
      "current_setting('statement_timeout')";
  CallResult baseline = execute(read, {});
  ASSERT_TRUE(baseline.status.ok()) << baseline.status.error_message();
  const int64_t pid = baseline.response.rows(0).values(0).int64_value();
  const std::string baseline_timeout = baseline.response.rows(0).values(2).string_value();

  CallResult tenant = execute(read, {{"app.tenant_id", "42"}, {"statement_timeout", "7s"}});
  ASSERT_TRUE(tenant.status.ok()) << tenant.status.error_message();
  EXPECT_EQ(tenant.response.rows(0).values(0).int64_value(), pid) << "one pooled connection";
  EXPECT_EQ(tenant.response.rows(0).values(1).string_value(), "42");
  EXPECT_EQ(tenant.response.rows(0).values(2).string_value(), "7s");

  CallResult after = execute(read, {});
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.response.rows(0).values(0).int64_value(), pid);
  EXPECT_TRUE(after.response.rows(0).values(1).has_null_value() ||
              after.response.rows(0).values(1).string_value().empty())
      << "app.tenant_id leaked to the next call";
  EXPECT_EQ(after.response.rows(0).values(2).string_value(), baseline_timeout);

  CallResult slept = execute("SELECT pg_sleep(30)", {{"statement_timeout", "50ms"}});
  EXPECT_EQ(slept.sqlstate, "57014") << slept.status.error_message();
  EXPECT_THAT(slept.status.error_message(), HasSubstr("statement timeout"));
  CallResult next = execute(read, {});
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.response.rows(0).values(0).int64_value(), pid) << "the connection was kept";
  EXPECT_EQ(next.response.rows(0).values(2).string_value(), baseline_timeout);

  CallResult bad_value = execute("SELECT 1", {{"statement_timeout", "soon"}});
  EXPECT_EQ(bad_value.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(bad_value.sqlstate, "22023");
  CallResult refused = execute("SELECT 1", {{"role", "postgres"}});
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("role"));
}

TEST_F(BrokerE2eTest, PerCallSettingsApplyToABatchsTransaction) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  grpc::ClientContext context;
  v1::ExecuteBatchRequest request;
  request.add_statements()->set_sql("SELECT current_setting('app.tenant_id')");
  request.add_statements()->set_sql("SELECT current_setting('search_path')");
  (*request.mutable_settings())["app.tenant_id"] = "7";
  (*request.mutable_settings())["search_path"] = "pg_catalog";
  v1::ExecuteBatchResponse response;
  grpc::Status status = stub_->ExecuteBatch(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.results(0).rows(0).values(0).string_value(), "7");
  EXPECT_EQ(response.results(1).rows(0).values(0).string_value(), "pg_catalog");
  CallResult after = Execute("SELECT current_setting('search_path')");
  ASSERT_TRUE(after.status.ok());
  EXPECT_NE(after.response.rows(0).values(0).string_value(), "pg_catalog");
}

}  // namespace
}  // namespace sessionbroker::testing
