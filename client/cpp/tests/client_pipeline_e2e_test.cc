// The C++ client's shared Pipeline stream (ClientOptions::pipeline) end to
// end, against the real broker and PostgreSQL: concurrent callers are
// answered correctly over one stream, outcomes (errors, deadlines) are the
// unary calls', and a drain or a broken stream never resends a call. Which
// RPCs the client made is counted by an interceptor on its channel, apart
// from the client's own counters.
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/client_interceptor.h"
#include "gtest/gtest.h"
#include "sessionbroker/client.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"

namespace sessionbroker {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

// Counts the RPCs started on a channel by method.
class RpcCounter final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    std::lock_guard<std::mutex> lock(*mu_);
    ++(*counts_)[info->method()];
    return nullptr;  // counts only
  }
  int64_t count(const std::string& method) const {
    std::lock_guard<std::mutex> lock(*mu_);
    auto it = counts_->find("/sessionbroker.v1.SessionBroker/" + method);
    return it == counts_->end() ? 0 : it->second;
  }
  // Shared with the copy the channel owns.
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::map<std::string, int64_t>> counts_ =
      std::make_shared<std::map<std::string, int64_t>>();
};

class ClientPipelineE2eTest : public testing::BrokerFixture {
 protected:
  void SetUp() override {
    BrokerFixture::SetUp();
    if (HasFatalFailure()) return;
    StartBroker({{"BROKER_DRAIN_SECONDS", "0"}});
  }

  // A client whose channel counts its RPCs in `counter`.
  std::unique_ptr<Client> MakeClient(PipelineMode mode, RpcCounter* counter) {
    auto factory = std::make_unique<RpcCounter>();
    factory->mu_ = counter->mu_;
    factory->counts_ = counter->counts_;
    std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
    factories.push_back(std::move(factory));
    ClientOptions options;
    options.target = broker_->address();
    options.client_id = "cpp-pipeline";
    options.pipeline = mode;
    options.channel = grpc::experimental::CreateCustomChannelWithInterceptors(
        broker_->address(), grpc::InsecureChannelCredentials(), grpc::ChannelArguments(),
        std::move(factories));
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  // kAlways, with its stream open (the first call opens it and goes unary).
  std::unique_ptr<Client> StreamingClient(RpcCounter* counter) {
    std::unique_ptr<Client> client = MakeClient(PipelineMode::kAlways, counter);
    EXPECT_TRUE(client->Execute("SELECT 1").ok());
    EXPECT_TRUE(Eventually([&] { return client->pipeline_stats().stream_ready; }));
    return client;
  }

  // `threads` callers, `calls` each of SELECT $1 * 2 with their own numbers;
  // returns how many answers were right.
  static int64_t RunCallers(Client& client, int threads, int calls) {
    std::atomic<int64_t> right{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&, t] {
        for (int i = 0; i < calls; ++i) {
          const int64_t n = t * 100000 + i;
          absl::StatusOr<Result> r = client.Execute("SELECT $1::int8 * 2 AS twice", {n});
          if (r.ok() && r->size() == 1 && *(*r)[0].Get<int64_t>(0) == 2 * n) ++right;
        }
      });
    }
    for (std::thread& c : callers) c.join();
    return right.load();
  }
};

TEST_F(ClientPipelineE2eTest, ConcurrentCallersAreAllAnsweredOverOneStream) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  EXPECT_EQ(RunCallers(*client, 8, 50), 400);
  PipelineStats stats = client->pipeline_stats();
  EXPECT_EQ(stats.streams_opened, 1);
  EXPECT_EQ(stats.stream_calls, 400);
  EXPECT_EQ(stats.unary_calls, 1);  // the call that opened the stream
  EXPECT_LE(stats.stream_messages, 400);
  EXPECT_EQ(rpcs.count("Pipeline"), 1);
  EXPECT_EQ(rpcs.count("Execute"), 1);
}

TEST_F(ClientPipelineE2eTest, TheConcurrentPolicyOpensTheStreamWhenCallsOverlap) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = MakeClient(PipelineMode::kConcurrent, &rpcs);
  // A lone call goes unary and opens no stream.
  ASSERT_TRUE(client->Execute("SELECT 1").ok());
  EXPECT_EQ(client->pipeline_stats().streams_opened, 0);
  EXPECT_EQ(RunCallers(*client, 8, 50), 400);
  PipelineStats stats = client->pipeline_stats();
  EXPECT_EQ(stats.streams_opened, 1);
  EXPECT_GT(stats.stream_calls, 0);
  EXPECT_EQ(stats.stream_calls + stats.unary_calls, 401);
  EXPECT_EQ(rpcs.count("Execute"), stats.unary_calls);
  EXPECT_EQ(rpcs.count("Pipeline"), 1);
  // Once the stream is open, a lone call uses it too.
  ASSERT_TRUE(client->Execute("SELECT 1").ok());
  EXPECT_EQ(client->pipeline_stats().stream_calls, stats.stream_calls + 1);
  EXPECT_EQ(rpcs.count("Execute"), stats.unary_calls);
}

TEST_F(ClientPipelineE2eTest, CallsBeyondTheAdvertisedLimitGoUnaryInsteadOfBeingRefused) {
  broker_.reset();
  StartBroker({{"BROKER_PIPELINE_MAX_IN_FLIGHT", "2"}});
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  // 8 callers, at most 2 calls on the stream at a time: every call is
  // answered, none RESOURCE_EXHAUSTED.
  EXPECT_EQ(RunCallers(*client, 8, 30), 240);
  PipelineStats stats = client->pipeline_stats();
  EXPECT_EQ(stats.stream_calls + stats.unary_calls, 241);
  EXPECT_GT(stats.stream_calls, 0);
  EXPECT_EQ(rpcs.count("Execute"), stats.unary_calls);
  EXPECT_EQ(stats.streams_opened, 1);
}

TEST_F(ClientPipelineE2eTest, WithThePipelineOffEveryCallIsUnary) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = MakeClient(PipelineMode::kOff, &rpcs);
  EXPECT_EQ(RunCallers(*client, 8, 20), 160);
  EXPECT_EQ(client->pipeline_stats().streams_opened, 0);
  EXPECT_EQ(rpcs.count("Pipeline"), 0);
  EXPECT_EQ(rpcs.count("Execute"), 160);
}

// Every observable part of a failed call's status.
struct Outcome {
  absl::StatusCode code;
  std::string message;
  std::optional<std::string> sqlstate;
  std::optional<std::string> reason;
  std::optional<std::string> details;  // the raw RpcStatus payload
  std::optional<SqlError> sql;
};
Outcome OutcomeOf(const absl::Status& s) {
  absl::optional<absl::Cord> details = s.GetPayload(kRpcStatusPayloadUrl);
  return Outcome{s.code(),
                 std::string(s.message()),
                 SqlStateOf(s),
                 ReasonOf(s),
                 details ? std::optional<std::string>(std::string(*details)) : std::nullopt,
                 SqlErrorOf(s)};
}
void ExpectSame(const Outcome& unary, const Outcome& piped, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(unary.code, piped.code);
  EXPECT_EQ(unary.message, piped.message);
  EXPECT_EQ(unary.sqlstate, piped.sqlstate);
  EXPECT_EQ(unary.reason, piped.reason);
  EXPECT_EQ(unary.details, piped.details);
  ASSERT_EQ(unary.sql.has_value(), piped.sql.has_value());
  if (unary.sql.has_value()) {
    EXPECT_EQ(unary.sql->sqlstate, piped.sql->sqlstate);
    EXPECT_EQ(unary.sql->message, piped.sql->message);
    EXPECT_EQ(unary.sql->detail, piped.sql->detail);
    EXPECT_EQ(unary.sql->constraint, piped.sql->constraint);
    EXPECT_EQ(unary.sql->table, piped.sql->table);
    EXPECT_EQ(unary.sql->position, piped.sql->position);
    EXPECT_EQ(unary.sql->statement_index, piped.sql->statement_index);
  }
}

TEST_F(ClientPipelineE2eTest, FailedCallsEndAsTheirUnaryCallsDo) {
  const std::string table = absl::StrCat("cpp_pipe_", app_name_);
  Admin("DROP TABLE IF EXISTS " + table);
  Admin("CREATE TABLE " + table + " (id int8 CONSTRAINT " + table + "_pk PRIMARY KEY)");
  Admin("INSERT INTO " + table + " VALUES (1)");
  RpcCounter unary_rpcs, piped_rpcs;
  std::unique_ptr<Client> unary = MakeClient(PipelineMode::kOff, &unary_rpcs);
  std::unique_ptr<Client> piped = StreamingClient(&piped_rpcs);
  const int64_t before = piped->pipeline_stats().stream_calls;

  const std::vector<std::string> failing = {
      "SELECT 1 / 0",
      "SELEC 1",
      "SELECT * FROM no_such_table_here",
      "INSERT INTO " + table + " VALUES (1)",
  };
  for (const std::string& sql : failing) {
    absl::StatusOr<Result> u = unary->Execute(sql);
    absl::StatusOr<Result> p = piped->Execute(sql);
    ASSERT_FALSE(u.ok()) << sql;
    ASSERT_FALSE(p.ok()) << sql;
    ExpectSame(OutcomeOf(u.status()), OutcomeOf(p.status()), sql);
  }
  // A batch names its failing statement.
  std::vector<Statement> batch = {{"SELECT 1", {}}, {"INSERT INTO " + table + " VALUES (1)", {}}};
  absl::StatusOr<std::vector<Result>> ub = unary->ExecuteBatch(batch);
  absl::StatusOr<std::vector<Result>> pb = piped->ExecuteBatch(batch);
  ASSERT_FALSE(ub.ok());
  ASSERT_FALSE(pb.ok());
  ExpectSame(OutcomeOf(ub.status()), OutcomeOf(pb.status()), "batch");
  EXPECT_EQ(SqlErrorOf(pb.status())->statement_index, 2u);
  // Successful batches and results too.
  absl::StatusOr<std::vector<Result>> ok =
      piped->ExecuteBatch({{"SELECT 1", {}}, {"SELECT 2", {}}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ(*(*ok)[1][0].Get<int64_t>(0), 2);

  EXPECT_EQ(piped->pipeline_stats().stream_calls - before, failing.size() + 2);
  EXPECT_EQ(piped_rpcs.count("Execute"), 1);  // only the call that opened the stream
  EXPECT_EQ(piped_rpcs.count("ExecuteBatch"), 0);
  Admin("DROP TABLE IF EXISTS " + table);
}

TEST_F(ClientPipelineE2eTest, SessionCallsRunInTheirSessionOverTheStream) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  absl::StatusOr<std::unique_ptr<Session>> session = client->BeginSession();
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Begin().ok());
  // Both statements run in the session's one transaction.
  absl::StatusOr<Result> first = (*session)->Execute("SELECT pg_current_xact_id()::text");
  absl::StatusOr<Result> second = (*session)->Execute("SELECT pg_current_xact_id()::text");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*(*first)[0].Get<std::string>(0), *(*second)[0].Get<std::string>(0));
  ASSERT_TRUE((*session)->Rollback().ok());
  ASSERT_TRUE((*session)->End().ok());
  absl::StatusOr<Result> after = client->Execute("SELECT 1");  // still on the stream
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(rpcs.count("Execute"), 1);
  EXPECT_GE(client->pipeline_stats().stream_calls, 3);
}

TEST_F(ClientPipelineE2eTest, APassedDeadlineAnswersDeadlineExceededAndCancelsTheStatement) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  CallOptions call;
  call.deadline = absl::Milliseconds(500);
  absl::StatusOr<Result> r = client->Execute("SELECT pg_sleep(30)", {}, call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  // PostgreSQL no longer runs it.
  EXPECT_TRUE(Eventually(
      [&] {
        return AdminCount(
                   "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                   "state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                   {storage::Value::String(app_name_)}) == 0;
      },
      absl::Seconds(20)));
  // The stream goes on.
  absl::StatusOr<Result> next = client->Execute("SELECT 2");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(client->pipeline_stats().streams_opened, 1);
  EXPECT_EQ(rpcs.count("Pipeline"), 1);
}

TEST_F(ClientPipelineE2eTest, ADrainFinishesRunningCallsThenCallsGoUnary) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  absl::StatusOr<Result> slow = absl::UnknownError("not run");
  std::thread caller([&] { slow = client->Execute("SELECT pg_sleep(2)"); });
  WaitForActiveStatements(1);
  kill(broker_->pid(), SIGTERM);
  caller.join();
  // It was running when the drain began, and finished on the stream.
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_EQ(slow->command_tag(), "SELECT 1");
  ASSERT_TRUE(Eventually([&] { return !client->pipeline_stats().stream_ready; }));
  const int64_t unary_before = client->pipeline_stats().unary_calls;
  // A call now is a unary call, answered as one to a broker that is going
  // away (refused, or cancelled by its shutdown).
  absl::StatusOr<Result> late = client->Execute("SELECT 1");
  ASSERT_FALSE(late.ok());
  EXPECT_THAT(late.status().code(),
              AnyOf(absl::StatusCode::kUnavailable, absl::StatusCode::kCancelled))
      << late.status();
  EXPECT_EQ(client->pipeline_stats().unary_calls, unary_before + 1);
  EXPECT_EQ(broker_->WaitForExit(absl::Seconds(30)), 0) << broker_->Log();
}

TEST_F(ClientPipelineE2eTest, ACallSentOnAStreamThatBreaksEndsUnavailableAndIsNotResent) {
  RpcCounter rpcs;
  std::unique_ptr<Client> client = StreamingClient(&rpcs);
  absl::StatusOr<Result> lost = absl::UnknownError("not run");
  std::thread caller([&] { lost = client->Execute("SELECT pg_sleep(5)"); });
  WaitForActiveStatements(1);
  kill(broker_->pid(), SIGKILL);
  caller.join();
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(lost.status().message(), HasSubstr("may or may not have been applied"));
  PipelineStats stats = client->pipeline_stats();
  EXPECT_EQ(stats.handed_back, 0);
  EXPECT_EQ(stats.unary_calls, 1);  // the opener only: the lost call was not resent
  EXPECT_EQ(rpcs.count("Execute"), 1);
  (void)broker_->WaitForExit(absl::Seconds(10));
}

}  // namespace
}  // namespace sessionbroker
