// End-to-end tests of StreamExecute: the session-broker binary, a real
// PostgreSQL and generated C++ stubs; a separate reader process is
// SIGKILLed for the vanished-reader test. What the broker claims is checked
// in PostgreSQL itself (pg_stat_activity, rows committed or not) and in the
// broker's own memory (/proc/PID/status). Things that must eventually
// happen are polled with generous deadlines; nothing asserts how fast.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

// Everything one StreamExecute call received, in order.
struct StreamResult {
  grpc::Status status;
  std::string sqlstate;
  std::vector<std::string> kinds;  // "columns", "rows", "end" per message
  std::vector<v1::Column> columns;
  std::vector<v1::Row> rows;
  std::optional<v1::StreamEnd> end;
};

std::optional<v1::SqlErrorDetail> SqlErrorDetailOf(const grpc::Status& status) {
  v1::RpcStatus rpc_status;
  if (status.error_details().empty() || !rpc_status.ParseFromString(status.error_details())) {
    return std::nullopt;
  }
  for (const google::protobuf::Any& any : rpc_status.details()) {
    v1::SqlErrorDetail detail;
    if (any.UnpackTo(&detail)) return detail;
  }
  return std::nullopt;
}

// The broker's resident memory now (VmRSS) or at its peak (VmHWM), in bytes.
int64_t BrokerMemory(pid_t pid, const std::string& field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, field + ":")) continue;
    int64_t kb = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    if (absl::SimpleAtoi(digits, &kb)) return kb * 1024;
  }
  return -1;
}

class StreamE2eTest : public BrokerFixture {
 protected:
  void TearDown() override {
    stub_.reset();
    broker_.reset();
    for (const std::string& table : tables_) Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
  }

  std::string NewTable(const std::string& what) {
    const std::string table = absl::StrCat("sb_stream_", what, "_", getpid());
    Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
    Admin(absl::StrCat("CREATE TABLE ", table, " (id int)"));
    tables_.push_back(table);
    return table;
  }

  StreamResult Stream(const std::string& sql, const std::string& session = "",
                      absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::ExecuteRequest request;
    request.set_sql(sql);
    request.set_session(session);
    StreamResult out;
    auto reader = stub_->StreamExecute(&context, request);
    v1::StreamExecuteResponse response;
    while (reader->Read(&response)) {
      switch (response.kind_case()) {
        case v1::StreamExecuteResponse::kColumns:
          out.kinds.push_back("columns");
          out.columns.assign(response.columns().columns().begin(),
                             response.columns().columns().end());
          break;
        case v1::StreamExecuteResponse::kRows:
          out.kinds.push_back("rows");
          for (const v1::Row& row : response.rows().rows()) out.rows.push_back(row);
          break;
        case v1::StreamExecuteResponse::kEnd:
          out.kinds.push_back("end");
          out.end = response.end();
          break;
        case v1::StreamExecuteResponse::KIND_NOT_SET:
          out.kinds.push_back("empty");
          break;
      }
    }
    out.status = reader->Finish();
    out.sqlstate = SqlStateOf(context);
    return out;
  }

  // No statement of this broker's runs `text` in PostgreSQL any more.
  bool StatementGone(const std::string& text) {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
               "AND state = 'active' AND position($2 in query) > 0",
               {storage::Value::String(app_name_), storage::Value::String(text)}) == 0;
  }

  std::vector<std::string> tables_;
};

TEST_F(StreamE2eTest, StreamSendsColumnsThenRowsInChunksThenTheTagWithTypesAndNulls) {
  StartBroker({{"BROKER_STREAM_WINDOW_BYTES", "65536"}});
  StreamResult r = Stream(
      "SELECT g AS n, CASE WHEN g % 3 = 0 THEN NULL ELSE 'v' || g END AS t, g % 2 = 0 AS even, "
      "g::numeric / 4 AS q, '2026-12-02'::date AS d FROM generate_series(1, 20000) g");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_GE(r.kinds.size(), 4u);
  EXPECT_EQ(r.kinds.front(), "columns");
  EXPECT_EQ(r.kinds.back(), "end");
  // 20000 rows do not fit in one 16 KiB chunk.
  EXPECT_GT(r.kinds.size(), 3u);
  for (size_t i = 1; i + 1 < r.kinds.size(); ++i) EXPECT_EQ(r.kinds[i], "rows");
  ASSERT_EQ(r.columns.size(), 5u);
  EXPECT_EQ(r.columns[0].name(), "n");
  EXPECT_EQ(r.columns[0].type_name(), "int4");
  EXPECT_EQ(r.columns[1].type_name(), "text");
  EXPECT_EQ(r.columns[2].type_name(), "bool");
  EXPECT_EQ(r.columns[3].type_name(), "numeric");
  EXPECT_EQ(r.columns[4].type_name(), "date");
  ASSERT_EQ(r.rows.size(), 20000u);
  EXPECT_EQ(r.rows[0].values(0).int64_value(), 1);
  EXPECT_EQ(r.rows[0].values(1).string_value(), "v1");
  EXPECT_FALSE(r.rows[0].values(2).bool_value());
  EXPECT_EQ(r.rows[1].values(3).numeric_value(), "0.50000000000000000000");
  EXPECT_EQ(r.rows[2].values(1).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(r.rows[0].values(4).string_value(), "2026-12-02");
  EXPECT_EQ(r.rows[19999].values(0).int64_value(), 20000);
  ASSERT_TRUE(r.end.has_value());
  EXPECT_EQ(r.end->command_tag(), "SELECT 20000");
  EXPECT_EQ(r.end->rows_affected(), 20000);
}

TEST_F(StreamE2eTest, EmptyResultHasColumnsNoRowsAndTheTag) {
  StartBroker();
  StreamResult r = Stream("SELECT 1 AS one WHERE false");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.kinds, (std::vector<std::string>{"columns", "end"}));
  ASSERT_EQ(r.columns.size(), 1u);
  EXPECT_EQ(r.columns[0].name(), "one");
  EXPECT_EQ(r.end->command_tag(), "SELECT 0");
}

TEST_F(StreamE2eTest, ErrorMidQueryEndsTheStreamWithItsSqlstateAfterTheRowsSent) {
  StartBroker({{"BROKER_STREAM_WINDOW_BYTES", "4096"}});
  StreamResult r = Stream("SELECT 1 / (3000 - g) AS x FROM generate_series(1, 5000) g");
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  EXPECT_EQ(r.sqlstate, "22012");
  std::optional<v1::SqlErrorDetail> detail = SqlErrorDetailOf(r.status);
  ASSERT_TRUE(detail.has_value());
  EXPECT_EQ(detail->sqlstate(), "22012");
  EXPECT_EQ(detail->message(), "division by zero");
  // Every row before the failing one arrived, then no end message.
  EXPECT_EQ(r.rows.size(), 2999u);
  EXPECT_EQ(r.kinds.front(), "columns");
  EXPECT_NE(r.kinds.back(), "end");
}

TEST_F(StreamE2eTest, InvalidStatementFailsBeforeAnyMessage) {
  StartBroker();
  StreamResult r = Stream("SELECT * FROM no_such_table_for_streams");
  EXPECT_EQ(r.sqlstate, "42P01");
  EXPECT_TRUE(r.kinds.empty());
  StreamResult two = Stream("SELECT 1; SELECT 2");
  EXPECT_EQ(two.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(StreamE2eTest, SlowReaderDoesNotGrowBrokerMemoryBeyondTheWindow) {
  StartBroker({{"BROKER_STREAM_WINDOW_BYTES", "1048576"}});
  // A 400 MB result read by a client that stops after the first rows.
  const std::string sql = "SELECT repeat('x', 4000) FROM generate_series(1, 100000) slow_reader";
  ASSERT_TRUE(Execute("SELECT 1").status.ok());
  const int64_t before = BrokerMemory(broker_->pid(), "VmRSS");
  ASSERT_GT(before, 0);
  grpc::ClientContext context;
  v1::ExecuteRequest request;
  request.set_sql(sql);
  auto reader = stub_->StreamExecute(&context, request);
  v1::StreamExecuteResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_columns());
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_rows());
  // PostgreSQL ends up waiting to write to the broker (ClientWrite): the
  // broker stopped reading because its window and gRPC's buffers are full.
  ASSERT_TRUE(Eventually(
      [&] {
        return AdminCount(
                   "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                   "AND wait_event = 'ClientWrite' AND position('slow_reader' in query) > 0",
                   {storage::Value::String(app_name_)}) == 1;
      },
      absl::Seconds(60)));
  const int64_t during = BrokerMemory(broker_->pid(), "VmRSS");
  // The window (1 MiB), the message being written, gRPC's flow-control
  // buffers and allocator slack: far below the 400 MB the result holds.
  EXPECT_LT(during - before, int64_t{64} << 20) << "before " << before << " during " << during;
  context.TryCancel();
  reader->Finish();
  EXPECT_TRUE(Eventually([&] { return StatementGone("slow_reader"); }, absl::Seconds(30)));
}

TEST_F(StreamE2eTest, KilledReaderCancelsTheQueryAndFreesTheConnection) {
  StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const std::string address = broker_->address();
  const std::string sql =
      "SELECT repeat('y', 1000) FROM generate_series(1, 10000000) killed_reader";
  const pid_t child = fork();
  if (child == 0) {
    dup2(fds[1], STDOUT_FILENO);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execl(SB_STREAM_READER_BINARY, SB_STREAM_READER_BINARY, address.c_str(), sql.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string seen;
  char buf[64];
  while (!absl::StrContains(seen, "rows\n")) {
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  ASSERT_THAT(seen, HasSubstr("rows")) << "the reader got no rows";
  EXPECT_FALSE(StatementGone("killed_reader"));
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  // The broker sees the connection drop, cancels the query and returns its
  // connection: PostgreSQL no longer runs it, and the single pooled
  // connection serves the next call.
  EXPECT_TRUE(Eventually([&] { return StatementGone("killed_reader"); }, absl::Seconds(30)));
  CallResult next = Execute("SELECT 42");
  ASSERT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.response.rows(0).values(0).int64_value(), 42);
}

TEST_F(StreamE2eTest, DeadlineMidStreamCancelsTheQueryInPostgres) {
  StartBroker();
  // One row every 0.2 s: the deadline passes after a few rows.
  StreamResult r = Stream(
      "SELECT g, pg_sleep(0.2) AS deadline_mid_stream FROM "
      "generate_series(1, 1000) g",
      "", absl::Seconds(2));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << r.status.error_message();
  EXPECT_TRUE(Eventually([&] { return StatementGone("deadline_mid_stream"); }, absl::Seconds(30)));
  // Awaited: the cancelled connection's reset, or a catalog lookup for the
  // statement's function calls (CatalogGuard on the pooled path), may still
  // be running on a broker connection for a moment.
  EXPECT_TRUE(Eventually([&] { return BrokerConnectionsIn("active") == 0; }, absl::Seconds(30)));
}

TEST_F(StreamE2eTest, MaxStatementDurationEndsAStreamWhoseReaderStoppedReading) {
  StartBroker({{"BROKER_MAX_STATEMENT_DURATION", "1"}});
  grpc::ClientContext context;  // no deadline
  v1::ExecuteRequest request;
  request.set_sql("SELECT repeat('z', 4000) FROM generate_series(1, 1000000) stalled_reader");
  auto reader = stub_->StreamExecute(&context, request);
  v1::StreamExecuteResponse response;
  ASSERT_TRUE(reader->Read(&response));
  // The reader stops; the broker's cap on statement time still ends the
  // statement and frees its connection.
  EXPECT_TRUE(Eventually([&] { return StatementGone("stalled_reader"); }, absl::Seconds(30)));
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("BROKER_MAX_STATEMENT_DURATION"));
}

TEST_F(StreamE2eTest, StreamInsideASessionTransactionJoinsItAndAFailedOneAbortsIt) {
  StartBroker();
  const std::string table = NewTable("session");
  RpcResult<v1::Session> session = BeginSession();
  ASSERT_TRUE(session.status.ok()) << session.status.error_message();
  const std::string name = session.response.name();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  StreamResult inserted = Stream(
      absl::StrCat("INSERT INTO ", table, " SELECT generate_series(1, 50) RETURNING id"), name);
  ASSERT_TRUE(inserted.status.ok()) << inserted.status.error_message();
  EXPECT_EQ(inserted.rows.size(), 50u);
  EXPECT_EQ(inserted.end->command_tag(), "INSERT 0 50");
  // Seen inside the transaction, not outside it yet.
  StreamResult inside = Stream(absl::StrCat("SELECT count(*) FROM ", table), name);
  ASSERT_EQ(inside.rows.size(), 1u);
  EXPECT_EQ(inside.rows[0].values(0).int64_value(), 50);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  // A stream failing mid-way aborts the transaction as a failed Execute does.
  StreamResult failed =
      Stream(absl::StrCat("SELECT 1 / (10 - id) FROM ", table, " ORDER BY id"), name);
  EXPECT_EQ(failed.sqlstate, "22012");
  RpcResult<v1::CommitResponse> commit = Commit(name);
  EXPECT_EQ(commit.status.error_code(), grpc::StatusCode::ABORTED) << commit.status.error_message();
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  Rollback(name);
  // Outside a transaction the session streams in autocommit.
  StreamResult after = Stream("SELECT 5", name);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.rows[0].values(0).int64_value(), 5);
}

TEST_F(StreamE2eTest, ExecuteInsertReturningOverTheCapIsRolledBackAndSaysSo) {
  StartBroker({{"BROKER_MAX_RESULT_BYTES", "10000"}});
  const std::string table = NewTable("cap");
  CallResult r = Execute(absl::StrCat("INSERT INTO ", table,
                                      " SELECT generate_series(1, 5000) RETURNING id, 'padding'"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << r.status.error_message();
  EXPECT_THAT(r.status.error_message(), HasSubstr("BROKER_MAX_RESULT_BYTES"));
  EXPECT_THAT(r.status.error_message(), HasSubstr("rolled back"));
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  // Under the cap the same kind of statement commits as before.
  CallResult small =
      Execute(absl::StrCat("INSERT INTO ", table, " SELECT generate_series(1, 3) RETURNING id"));
  ASSERT_TRUE(small.status.ok()) << small.status.error_message();
  EXPECT_EQ(small.response.rows_size(), 3);
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 3);
}

TEST_F(StreamE2eTest, CallsOverTheClientsLimitAreRefusedNamingIt) {
  StartBroker({{"BROKER_MAX_CALLS_PER_CLIENT", "1"}});
  grpc::ClientContext context;
  context.AddMetadata("x-client-id", "greedy");
  v1::ExecuteRequest request;
  request.set_sql("SELECT g, pg_sleep(0.05) FROM generate_series(1, 100000) g");
  auto first = stub_->StreamExecute(&context, request);
  v1::StreamExecuteResponse response;
  ASSERT_TRUE(first->Read(&response));
  grpc::ClientContext second_context;
  second_context.AddMetadata("x-client-id", "greedy");
  v1::ExecuteRequest second_request;
  second_request.set_sql("SELECT 1");
  v1::ExecuteResponse second_response;
  grpc::Status second = stub_->Execute(&second_context, second_request, &second_response);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(second.error_message(), HasSubstr("BROKER_MAX_CALLS_PER_CLIENT"));
  // Another client is not affected.
  EXPECT_TRUE(Execute("SELECT 1").status.ok());
  context.TryCancel();
  first->Finish();
}

}  // namespace
}  // namespace sessionbroker::testing
