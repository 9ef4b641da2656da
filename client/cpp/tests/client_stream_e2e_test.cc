// The C++ client's streams end to end (the real broker binary and
// PostgreSQL): Client::Stream / Session::Stream read results of any size in
// bounded memory with back pressure reaching PostgreSQL, and Client::Listen
// delivers NOTIFYs, gaps and the broker's shutdown. Checked from
// PostgreSQL's side through the fixture's admin connection.
#include <signal.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sessionbroker/client.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker {
namespace {

using ::testing::HasSubstr;

class ClientStreamE2eTest : public testing::BrokerFixture {
 protected:
  // The pool has one connection: a call that did not give it back would
  // make the next one wait for ever.
  void SetUp() override {
    BrokerFixture::SetUp();
    if (HasFatalFailure()) return;
    StartBroker({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
    if (HasFatalFailure()) return;
    ClientOptions options;
    options.target = broker_->address();
    options.client_id = "cpp-stream-e2e";
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    table_ = absl::StrCat("cpp_stream_", app_name_);
    Admin("DROP TABLE IF EXISTS " + table_);
  }
  void TearDown() override {
    client_.reset();
    if (admin_ != nullptr) Admin("DROP TABLE IF EXISTS " + table_);
  }

  // This broker's backends waiting to write to it (PostgreSQL's side of
  // back pressure).
  int64_t BackendsWaitingOnClientWrite() {
    return AdminCount(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
        "wait_event = 'ClientWrite'",
        {storage::Value::String(app_name_)});
  }

  std::unique_ptr<Client> client_;
  std::string table_;
};

// 100,000 rows of 1,000 bytes: 25 times Execute's 4 MiB cap. The set-
// returning function in the select list yields row by row (in FROM,
// PostgreSQL would materialize the whole series before the first row).
constexpr int kBigRows = 100000;
const std::string kBigQuery = absl::StrCat(
    "SELECT n, repeat('x', 1000) AS body FROM (SELECT generate_series(1, ", kBigRows, ") AS n) s");

TEST_F(ClientStreamE2eTest, AResultOverExecutesCapStreamsWhole) {
  EXPECT_EQ(client_->Execute(kBigQuery).status().code(), absl::StatusCode::kResourceExhausted);

  absl::StatusOr<std::unique_ptr<RowStream>> rows = client_->Stream(kBigQuery);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ((*rows)->columns().size(), 2u);
  EXPECT_EQ((*rows)->columns()[0].name, "n");
  EXPECT_EQ((*rows)->columns()[1].type_name, "text");
  int64_t count = 0;
  int64_t sum = 0;
  while (std::optional<Row> row = (*rows)->Next()) {
    ++count;
    sum += *row->Get<int64_t>("n");
    if (count == 1) EXPECT_EQ(row->Get<std::string>("body")->size(), 1000u);
  }
  ASSERT_TRUE((*rows)->status().ok()) << (*rows)->status();
  EXPECT_EQ(count, kBigRows);
  EXPECT_EQ(sum, int64_t{kBigRows} * (kBigRows + 1) / 2);
  EXPECT_EQ((*rows)->command_tag(), absl::StrCat("SELECT ", kBigRows));
  EXPECT_EQ((*rows)->rows_affected(), kBigRows);
}

TEST_F(ClientStreamE2eTest, AReaderThatStopsReadingStopsPostgresThenGetsEveryRow) {
  std::unique_ptr<RowStream> rows = *client_->Stream(kBigQuery);
  ASSERT_TRUE(rows->Next().has_value());
  // Not reading: the client's and the broker's windows fill, and the
  // backend waits for its socket to drain.
  EXPECT_TRUE(Eventually([&] { return BackendsWaitingOnClientWrite() == 1; }));
  int64_t count = 1;
  while (rows->Next()) ++count;
  ASSERT_TRUE(rows->status().ok()) << rows->status();
  EXPECT_EQ(count, kBigRows);
}

TEST_F(ClientStreamE2eTest, DestroyingAStreamMidResultCancelsTheStatementAndFreesTheConnection) {
  {
    std::unique_ptr<RowStream> rows = *client_->Stream("SELECT generate_series(1, 100000000) AS g");
    ASSERT_TRUE(rows->Next().has_value());
  }
  EXPECT_TRUE(Eventually([&] {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
               "state = 'active' AND query LIKE '%generate_series(1, 100000000)%'",
               {storage::Value::String(app_name_)}) == 0;
  }));
  // The pool's one connection is back.
  absl::StatusOr<Result> r = client_->Execute("SELECT 1");
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(ClientStreamE2eTest, AnErrorBeforeTheFirstRowIsStreamsError) {
  absl::Status s = client_->Stream("SELECT * FROM no_such_table_here").status();
  EXPECT_EQ(SqlStateOf(s), "42P01");
  ASSERT_TRUE(SqlErrorOf(s).has_value()) << s;
  EXPECT_THAT(SqlErrorOf(s)->message, HasSubstr("no_such_table_here"));
  EXPECT_TRUE(client_->Execute("SELECT 1").ok());
}

TEST_F(ClientStreamE2eTest, AnErrorMidResultEndsTheRowsWithItsSqlError) {
  std::unique_ptr<RowStream> rows =
      *client_->Stream("SELECT 1 / (3 - g) AS x FROM generate_series(1, 5) g");
  int64_t count = 0;
  while (rows->Next()) ++count;
  EXPECT_LE(count, 2);
  EXPECT_FALSE(rows->status().ok());
  EXPECT_EQ(SqlStateOf(rows->status()), "22012");
  ASSERT_TRUE(SqlErrorOf(rows->status()).has_value());
  EXPECT_EQ(SqlErrorOf(rows->status())->sqlstate, "22012");
  EXPECT_EQ(rows->command_tag(), "");
}

TEST_F(ClientStreamE2eTest, ASessionStreamReadsItsOwnUncommittedRows) {
  std::unique_ptr<Session> session = *client_->BeginSession();
  ASSERT_TRUE(session->Execute("CREATE TABLE " + table_ + " (v int4)").ok());
  ASSERT_TRUE(session->Begin().ok());
  ASSERT_TRUE(session->Execute("INSERT INTO " + table_ + " SELECT generate_series(1, 1000)").ok());
  std::unique_ptr<RowStream> rows = *session->Stream("SELECT v FROM " + table_ + " ORDER BY v");
  int64_t count = 0;
  while (rows->Next()) ++count;
  ASSERT_TRUE(rows->status().ok()) << rows->status();
  EXPECT_EQ(count, 1000);
  ASSERT_TRUE(session->Rollback().ok());
  EXPECT_EQ(AdminCount("SELECT count(*) FROM " + table_), 0);
}

TEST_F(ClientStreamE2eTest, ANotifySentThroughExecuteArrivesWithPayloadAndSenderPid) {
  const std::string channel = table_;
  absl::StatusOr<std::unique_ptr<Subscription>> sub = client_->Listen({channel, channel});
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->channels(), std::vector<std::string>{channel});
  EXPECT_GT((*sub)->listener_pid(), 0);

  absl::StatusOr<Result> sent =
      client_->Execute("SELECT pg_notify($1, $2), pg_backend_pid()", {channel, "order 42"});
  ASSERT_TRUE(sent.ok()) << sent.status();
  std::optional<ListenEvent> e = (*sub)->Next();
  ASSERT_TRUE(e.has_value()) << (*sub)->status();
  const Notification* n = std::get_if<Notification>(&*e);
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->channel, channel);
  EXPECT_EQ(n->payload, "order 42");
  EXPECT_EQ(n->sender_pid, *(*sent)[0].Get<int32_t>(1));
}

TEST_F(ClientStreamE2eTest, ALostListenerConnectionIsAReconnectedGapAndListeningGoesOn) {
  const std::string channel = table_;
  std::unique_ptr<Subscription> sub = *client_->Listen({channel});
  const int32_t old_pid = sub->listener_pid();
  Admin(absl::StrCat("SELECT pg_terminate_backend(", old_pid, ")"));
  std::optional<ListenEvent> e = sub->Next();
  ASSERT_TRUE(e.has_value()) << sub->status();
  const NotificationGap* gap = std::get_if<NotificationGap>(&*e);
  ASSERT_NE(gap, nullptr);
  EXPECT_EQ(gap->reason, NotificationGap::Reason::kReconnected);
  EXPECT_NE(gap->listener_pid, old_pid);

  ASSERT_TRUE(client_->Execute("NOTIFY " + channel + ", 'after'").ok());
  e = sub->Next();
  ASSERT_TRUE(e.has_value()) << sub->status();
  ASSERT_TRUE(std::holds_alternative<Notification>(*e));
  EXPECT_EQ(std::get<Notification>(*e).payload, "after");
}

TEST_F(ClientStreamE2eTest, ABrokerShutdownEndsTheSubscriptionWithUnavailable) {
  std::unique_ptr<Subscription> sub = *client_->Listen({table_});
  std::thread stop([this] { EXPECT_EQ(broker_->SignalAndWait(SIGTERM, absl::Seconds(30)), 0); });
  EXPECT_FALSE(sub->Next().has_value());
  stop.join();
  EXPECT_EQ(sub->status().code(), absl::StatusCode::kUnavailable) << sub->status();
}

TEST_F(ClientStreamE2eTest, ABadChannelListIsInvalidArgument) {
  EXPECT_EQ(client_->Listen({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Listen({std::string(64, 'c')}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sessionbroker
