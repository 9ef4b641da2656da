// End-to-end tests of the Pipeline stream: the session-broker binary, a real
// PostgreSQL and generated C++ stubs. Calls are multiplexed over one stream
// and answered by id; what the broker claims is checked in PostgreSQL itself
// (rows committed, statements gone from pg_stat_activity). Orders are
// asserted only where the protocol fixes them (a message not read while the
// stream is at its limit); nothing asserts how fast.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
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
#include "httplib.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"
#include "tests/support/grpc_wire.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

std::optional<v1::SqlErrorDetail> DetailOf(const v1::RpcStatus& status) {
  for (const google::protobuf::Any& any : status.details()) {
    v1::SqlErrorDetail detail;
    if (any.UnpackTo(&detail)) return detail;
  }
  return std::nullopt;
}

v1::PipelineCall ExecuteCall(uint64_t id, const std::string& sql,
                             std::vector<v1::Value> params = {}, const std::string& session = "") {
  v1::PipelineCall call;
  call.set_id(id);
  call.mutable_execute()->set_sql(sql);
  for (v1::Value& v : params) *call.mutable_execute()->add_params() = std::move(v);
  call.mutable_execute()->set_session(session);
  return call;
}

// A Pipeline stream driven from a test: messages written from the calling
// thread, results collected by id (and in arrival order) by a reader thread.
class PipelineStream {
 public:
  explicit PipelineStream(v1::SessionBroker::Stub* stub, const std::string& token = "") {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    if (!token.empty()) context_.AddMetadata("authorization", "Bearer " + token);
    stream_ = stub->Pipeline(&context_);
    reader_ = std::thread([this] {
      v1::PipelineResponse response;
      while (stream_->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        ++messages_;
        if (response.has_limits()) limits_ = response.limits();
        for (const v1::PipelineResult& r : response.results()) {
          order_.push_back(r.id());
          all_.push_back(r);
          results_[r.id()].push_back(r);
        }
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  ~PipelineStream() {
    if (!finished_) context_.TryCancel();
    reader_.join();
  }
  PipelineStream(const PipelineStream&) = delete;
  PipelineStream& operator=(const PipelineStream&) = delete;

  bool Send(std::vector<v1::PipelineCall> calls, std::vector<uint64_t> cancel = {}) {
    v1::PipelineRequest request;
    for (v1::PipelineCall& c : calls) *request.add_calls() = std::move(c);
    for (uint64_t id : cancel) request.add_cancel(id);
    return stream_->Write(request);
  }
  // The `n`th result for `id` (1-based), waiting up to a minute.
  std::optional<v1::PipelineResult> Result(uint64_t id, size_t n = 1) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(60),
                 [&] { return results_[id].size() >= n || ended_; });
    if (results_[id].size() < n) return std::nullopt;
    return results_[id][n - 1];
  }
  std::optional<v1::PipelineLimits> Limits() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(60), [&] { return limits_.has_value() || ended_; });
    return limits_;
  }
  std::vector<uint64_t> Order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }
  int Messages() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }
  // Waits for the server to end the stream (up to a minute) and finishes.
  grpc::Status End(bool half_close = true) {
    if (half_close) stream_->WritesDone();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(60), [&] { return ended_; });
    }
    finished_ = true;
    return stream_->Finish();
  }
  // A trailer of the ended stream (after End()), "" if absent.
  std::string Trailer(const std::string& key) {
    const auto& trailers = context_.GetServerTrailingMetadata();
    auto it = trailers.find(key);
    return it == trailers.end() ? std::string() : std::string(it->second.data(), it->second.size());
  }
  bool WaitEnded() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return ended_; });
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::PipelineRequest, v1::PipelineResponse>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::vector<v1::PipelineResult>> results_;
  std::vector<uint64_t> order_;
  std::vector<v1::PipelineResult> all_;
  std::optional<v1::PipelineLimits> limits_;
  int messages_ = 0;
  bool ended_ = false;
  bool finished_ = false;
};

class PipelineE2eTest : public BrokerFixture {
 protected:
  void TearDown() override {
    stub_.reset();
    broker_.reset();
    for (const std::string& table : tables_) Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
  }
  std::string NewTable(const std::string& what) {
    const std::string table = absl::StrCat("sb_pipeline_", what, "_", getpid());
    Admin(absl::StrCat("DROP TABLE IF EXISTS ", table));
    Admin(absl::StrCat("CREATE TABLE ", table, " (id int)"));
    tables_.push_back(table);
    return table;
  }
  bool StatementGone(const std::string& text) {
    return AdminCount(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
               "AND state = 'active' AND position($2 in query) > 0",
               {storage::Value::String(app_name_), storage::Value::String(text)}) == 0;
  }
  v1::PipelineStatus PipelineStatus() {
    auto monitor = v1::PoolMonitor::NewStub(broker_->NewChannel());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::PoolStatus status;
    const grpc::Status s = monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status.pipeline();
  }
  std::string Metrics() {
    httplib::Client http(absl::StrCat("http://", broker_->metrics_address()));
    httplib::Result metrics = http.Get("/metrics");
    EXPECT_TRUE(metrics) << "no /metrics";
    return metrics ? metrics->body : "";
  }
  std::vector<std::string> tables_;
};

TEST_F(PipelineE2eTest, TheFirstMessageAdvertisesTheLimits) {
  StartBroker(
      {{"BROKER_PIPELINE_MAX_IN_FLIGHT", "7"}, {"BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT", "40"}});
  PipelineStream s(stub_.get());
  std::optional<v1::PipelineLimits> limits = s.Limits();
  ASSERT_TRUE(limits.has_value());
  EXPECT_EQ(limits->max_in_flight_per_stream(), 7u);
  EXPECT_EQ(limits->max_in_flight_per_client(), 40u);
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, PoolStatusAndMetricsCountTheStreamsAndTheirCallsWithTheEngineOff) {
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "0"}});
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send({ExecuteCall(1, "SELECT 1"), ExecuteCall(2, "SELECT 2")}));
  ASSERT_TRUE(s.Result(1).has_value());
  ASSERT_TRUE(s.Result(2).has_value());
  // Snapshots are sampled: the numbers show up within a sampling period.
  EXPECT_TRUE(Eventually([&] {
    const v1::PipelineStatus p = PipelineStatus();
    return p.streams_open() == 1 && p.streams() == 1 && p.stream_calls() == 2;
  })) << PipelineStatus().DebugString();
  EXPECT_FALSE(PipelineStatus().enabled());
  EXPECT_TRUE(Eventually([&] {
    const std::string m = Metrics();
    return absl::StrContains(m, "\nsessionbroker_pipeline_streams_open 1\n") &&
           absl::StrContains(m, "\nsessionbroker_pipeline_streams_total 1\n") &&
           absl::StrContains(m, "\nsessionbroker_pipeline_stream_calls_total 2\n");
  })) << Metrics();
  EXPECT_TRUE(s.End().ok());
  EXPECT_TRUE(Eventually([&] { return PipelineStatus().streams_open() == 0; }));
  EXPECT_EQ(PipelineStatus().streams(), 1);
}

TEST_F(PipelineE2eTest, ManyCallsInOneMessageAreAnsweredByIdWithTheirOwnResults) {
  StartBroker();
  PipelineStream s(stub_.get());
  std::vector<v1::PipelineCall> calls;
  for (uint64_t id = 1; id <= 100; ++id) {
    calls.push_back(
        ExecuteCall(id * 1000, "SELECT $1::int8 * 2 AS twice", {Int(static_cast<int64_t>(id))}));
  }
  ASSERT_TRUE(s.Send(std::move(calls)));
  for (uint64_t id = 1; id <= 100; ++id) {
    std::optional<v1::PipelineResult> r = s.Result(id * 1000);
    ASSERT_TRUE(r.has_value()) << id;
    ASSERT_TRUE(r->has_execute()) << r->status().message();
    ASSERT_EQ(r->execute().rows_size(), 1);
    EXPECT_EQ(r->execute().rows(0).values(0).int64_value(), static_cast<int64_t>(2 * id));
    EXPECT_EQ(r->execute().command_tag(), "SELECT 1");
  }
  EXPECT_EQ(s.Order().size(), 100u);
  EXPECT_TRUE(s.End().ok());
}

// With the pipelined engine on, its calls are submitted from the thread
// that read the message, and the results one loop turn answers go out in one
// message (storage::CompletionRound), not the first alone.
TEST_F(PipelineE2eTest, OnThePipelinedEngineResultsShareMessagesAndEachIsItsOwn) {
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "2"}});
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Limits().has_value());
  constexpr uint64_t kCalls = 200;
  std::vector<v1::PipelineCall> calls;
  for (uint64_t id = 1; id <= kCalls; ++id) {
    calls.push_back(ExecuteCall(id, "SELECT $1::int8 AS n", {Int(static_cast<int64_t>(id))}));
  }
  ASSERT_TRUE(s.Send(std::move(calls)));
  for (uint64_t id = 1; id <= kCalls; ++id) {
    std::optional<v1::PipelineResult> r = s.Result(id);
    ASSERT_TRUE(r.has_value()) << id;
    ASSERT_TRUE(r->has_execute()) << r->status().message();
    EXPECT_EQ(r->execute().rows(0).values(0).int64_value(), static_cast<int64_t>(id));
  }
  EXPECT_EQ(s.Order().size(), kCalls);
  // The limits' message, then fewer messages than results.
  EXPECT_LT(s.Messages() - 1, static_cast<int>(kCalls));
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, OnThePipelinedEngineCancellingOneCallLeavesTheStream) {
  StartBroker({{"BROKER_PIPELINE_CONNECTIONS", "2"}});
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send(
      {ExecuteCall(1, "SELECT pg_sleep(60) -- engine-cancel-me"), ExecuteCall(2, "SELECT 2")}));
  std::optional<v1::PipelineResult> other = s.Result(2);
  ASSERT_TRUE(other.has_value());
  EXPECT_TRUE(other->has_execute()) << other->status().message();
  WaitForActiveStatements(1);
  ASSERT_TRUE(s.Send({}, {1}));
  std::optional<v1::PipelineResult> cancelled = s.Result(1);
  ASSERT_TRUE(cancelled.has_value());
  ASSERT_TRUE(cancelled->has_status());
  EXPECT_EQ(cancelled->status().code(), static_cast<int>(grpc::StatusCode::CANCELLED));
  EXPECT_TRUE(Eventually([&] { return StatementGone("engine-cancel-me"); }));
  ASSERT_TRUE(s.Send({ExecuteCall(3, "SELECT 3")}));
  std::optional<v1::PipelineResult> after = s.Result(3);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->has_execute()) << after->status().message();
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, AnSqlErrorFailsOnlyItsCallWithTheUnaryCallsStatusAndDetail) {
  StartBroker();
  const std::string table = NewTable("errors");
  CallResult unary = Execute("SELECT 1 / 0");
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send({ExecuteCall(1, absl::StrCat("INSERT INTO ", table, " VALUES (1)")),
                      ExecuteCall(2, "SELECT 1 / 0"),
                      ExecuteCall(3, absl::StrCat("INSERT INTO ", table, " VALUES (3)"))}));
  std::optional<v1::PipelineResult> failed = s.Result(2);
  ASSERT_TRUE(failed.has_value());
  ASSERT_TRUE(failed->has_status());
  EXPECT_EQ(failed->status().code(), static_cast<int>(unary.status.error_code()));
  EXPECT_EQ(failed->status().message(), unary.status.error_message());
  EXPECT_EQ(failed->sqlstate(), "22012");
  std::optional<v1::SqlErrorDetail> detail = DetailOf(failed->status());
  ASSERT_TRUE(detail.has_value());
  EXPECT_EQ(detail->sqlstate(), "22012");
  for (uint64_t id : {1, 3}) {
    std::optional<v1::PipelineResult> r = s.Result(id);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->execute().command_tag(), "INSERT 0 1") << r->status().message();
  }
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 2);
  // The stream goes on.
  ASSERT_TRUE(s.Send({ExecuteCall(4, "SELECT 4")}));
  std::optional<v1::PipelineResult> after = s.Result(4);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->has_execute());
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, ADuplicateIdInFlightIsRefusedAndTheFirstCallGoesOn) {
  StartBroker();
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send(
      {ExecuteCall(7, "SELECT 'first' FROM pg_sleep(0.5)"), ExecuteCall(7, "SELECT 'second'")}));
  std::optional<v1::PipelineResult> refused = s.Result(7, 1);
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(refused->has_status());
  EXPECT_EQ(refused->status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(refused->status().message(), HasSubstr("already in flight"));
  std::optional<v1::PipelineResult> first = s.Result(7, 2);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(first->has_execute()) << first->status().message();
  EXPECT_EQ(first->execute().rows(0).values(0).string_value(), "first");
  // Once its result was received, the id is free again.
  ASSERT_TRUE(s.Send({ExecuteCall(7, "SELECT 'again'")}));
  std::optional<v1::PipelineResult> again = s.Result(7, 3);
  ASSERT_TRUE(again.has_value());
  ASSERT_TRUE(again->has_execute()) << again->status().message();
  EXPECT_EQ(again->execute().rows(0).values(0).string_value(), "again");
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, CancellingOneCallStopsItInPostgresqlAndLeavesTheStream) {
  StartBroker();
  PipelineStream s(stub_.get());
  ASSERT_TRUE(
      s.Send({ExecuteCall(1, "SELECT pg_sleep(60) -- cancel-me"), ExecuteCall(2, "SELECT 2")}));
  std::optional<v1::PipelineResult> other = s.Result(2);
  ASSERT_TRUE(other.has_value());
  EXPECT_TRUE(other->has_execute());
  WaitForActiveStatements(1);
  ASSERT_TRUE(s.Send({}, {1}));
  std::optional<v1::PipelineResult> cancelled = s.Result(1);
  ASSERT_TRUE(cancelled.has_value());
  ASSERT_TRUE(cancelled->has_status());
  EXPECT_EQ(cancelled->status().code(), static_cast<int>(grpc::StatusCode::CANCELLED));
  EXPECT_TRUE(Eventually([&] { return StatementGone("cancel-me"); }));
  ASSERT_TRUE(s.Send({ExecuteCall(3, "SELECT 3")}));
  std::optional<v1::PipelineResult> after = s.Result(3);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->has_execute());
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, EachCallHasItsOwnDeadline) {
  StartBroker();
  PipelineStream s(stub_.get());
  v1::PipelineCall slow = ExecuteCall(1, "SELECT pg_sleep(60) -- deadline-me");
  *slow.mutable_timeout() = DurationProto(absl::Milliseconds(300));
  ASSERT_TRUE(s.Send({std::move(slow), ExecuteCall(2, "SELECT 'no deadline' FROM pg_sleep(0.5)")}));
  std::optional<v1::PipelineResult> late = s.Result(1);
  ASSERT_TRUE(late.has_value());
  ASSERT_TRUE(late->has_status());
  EXPECT_EQ(late->status().code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
  std::optional<v1::PipelineResult> other = s.Result(2);
  ASSERT_TRUE(other.has_value());
  EXPECT_TRUE(other->has_execute()) << other->status().message();
  EXPECT_TRUE(Eventually([&] { return StatementGone("deadline-me"); }));
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, AtItsLimitTheStreamReadsNoFurtherMessageAndRefusesTheExcess) {
  StartBroker({{"BROKER_PIPELINE_MAX_IN_FLIGHT", "2"}});
  PipelineStream s(stub_.get());
  // Three calls in one message: the third is over the limit.
  ASSERT_TRUE(s.Send({ExecuteCall(1, "SELECT pg_sleep(1)"), ExecuteCall(2, "SELECT pg_sleep(1)"),
                      ExecuteCall(3, "SELECT 3")}));
  // The next message is read only once a result was sent.
  ASSERT_TRUE(s.Send({ExecuteCall(4, "SELECT 4")}));
  std::optional<v1::PipelineResult> over = s.Result(3);
  ASSERT_TRUE(over.has_value());
  ASSERT_TRUE(over->has_status());
  EXPECT_EQ(over->status().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(over->status().message(), HasSubstr("BROKER_PIPELINE_MAX_IN_FLIGHT"));
  EXPECT_EQ(over->reason(), "PIPELINE_LIMIT");  // it did not run: a client may go unary
  ASSERT_TRUE(s.Result(4).has_value());
  const std::vector<uint64_t> order = s.Order();
  const auto position = [&](uint64_t id) {
    return std::find(order.begin(), order.end(), id) - order.begin();
  };
  EXPECT_LT(std::min(position(1), position(2)), position(4));
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, TheClientsLimitCountsTheCallsOfAllItsStreams) {
  StartBroker({{"BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT", "2"}});
  PipelineStream first(stub_.get());
  PipelineStream second(stub_.get());
  ASSERT_TRUE(
      first.Send({ExecuteCall(1, "SELECT pg_sleep(1)"), ExecuteCall(2, "SELECT pg_sleep(1)")}));
  WaitForActiveStatements(2);
  ASSERT_TRUE(second.Send({ExecuteCall(1, "SELECT 1")}));
  std::optional<v1::PipelineResult> refused = second.Result(1);
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(refused->has_status());
  EXPECT_EQ(refused->status().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(refused->status().message(), HasSubstr("BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT"));
  EXPECT_EQ(refused->reason(), "PIPELINE_LIMIT");
  ASSERT_TRUE(first.Result(1).has_value());
  ASSERT_TRUE(first.Result(2).has_value());
  EXPECT_TRUE(first.End().ok());
  // With the first stream's calls sent, there is room again.
  ASSERT_TRUE(second.Send({ExecuteCall(2, "SELECT 2")}));
  std::optional<v1::PipelineResult> admitted = second.Result(2);
  ASSERT_TRUE(admitted.has_value());
  EXPECT_TRUE(admitted->has_execute()) << admitted->status().message();
  EXPECT_TRUE(second.End().ok());
}

TEST_F(PipelineE2eTest, SessionCallsRunInTheirSessionsTransaction) {
  StartBroker();
  const std::string table = NewTable("session");
  RpcResult<v1::Session> session = BeginSession();
  ASSERT_TRUE(session.status.ok()) << session.status.error_message();
  const std::string name = session.response.name();
  ASSERT_TRUE(BeginTransaction(name).status.ok());
  PipelineStream s(stub_.get());
  ASSERT_TRUE(
      s.Send({ExecuteCall(1, absl::StrCat("INSERT INTO ", table, " VALUES (1)"), {}, name)}));
  std::optional<v1::PipelineResult> inserted = s.Result(1);
  ASSERT_TRUE(inserted.has_value());
  ASSERT_TRUE(inserted->has_execute()) << inserted->status().message();
  v1::PipelineCall batch;
  batch.set_id(2);
  batch.mutable_execute_batch()->set_session(name);
  batch.mutable_execute_batch()->add_statements()->set_sql(
      absl::StrCat("SELECT count(*) FROM ", table));
  ASSERT_TRUE(s.Send({std::move(batch)}));
  std::optional<v1::PipelineResult> counted = s.Result(2);
  ASSERT_TRUE(counted.has_value());
  ASSERT_TRUE(counted->has_execute_batch()) << counted->status().message();
  EXPECT_EQ(counted->execute_batch().results(0).rows(0).values(0).int64_value(), 1);
  // Not committed yet: the insert is the session's transaction's.
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 0);
  ASSERT_TRUE(Commit(name).status.ok());
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 1);
  // Another client's stream does not see the session.
  EXPECT_TRUE(s.End().ok());
  EXPECT_TRUE(EndSession(name).status.ok());
}

TEST_F(PipelineE2eTest, AnIndependentBatchRunsEachItemInItsOwnTransaction) {
  StartBroker();
  const std::string table = NewTable("independent");
  PipelineStream s(stub_.get());
  v1::PipelineCall call;
  call.set_id(5);
  v1::ExecuteBatchRequest* batch = call.mutable_independent_batch();
  batch->add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  batch->add_statements()->set_sql("SELECT 1 / 0");
  batch->add_statements()->set_sql(absl::StrCat("INSERT INTO ", table, " VALUES (3)"));
  ASSERT_TRUE(s.Send({std::move(call)}));
  std::optional<v1::PipelineResult> r = s.Result(5);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_items()) << r->status().message();
  ASSERT_EQ(r->items().items_size(), 3);
  EXPECT_EQ(r->items().items(0).result().command_tag(), "INSERT 0 1");
  EXPECT_EQ(r->items().items(1).sqlstate(), "22012");
  EXPECT_TRUE(r->items().items(1).has_status());
  EXPECT_EQ(r->items().items(2).result().command_tag(), "INSERT 0 1");
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 2);
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, RequestLimitsApplyToEachCall) {
  StartBroker({{"BROKER_MAX_SQL_BYTES", "64"}});
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send({ExecuteCall(1, absl::StrCat("SELECT '", std::string(100, 'x'), "'")),
                      ExecuteCall(2, "SELECT 2"), v1::PipelineCall()}));
  std::optional<v1::PipelineResult> big = s.Result(1);
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->status().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(big->status().message(), HasSubstr("BROKER_MAX_SQL_BYTES"));
  std::optional<v1::PipelineResult> empty = s.Result(0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_THAT(empty->status().message(), HasSubstr("needs a body"));
  ASSERT_TRUE(s.Result(2).has_value());
  EXPECT_TRUE(s.Result(2)->has_execute());
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, ARetryWithTheSameRequestIdGetsTheFirstOutcome) {
  StartBroker();
  const std::string table = NewTable("retry");
  PipelineStream s(stub_.get());
  v1::PipelineCall call = ExecuteCall(1, absl::StrCat("INSERT INTO ", table, " VALUES (1)"));
  call.mutable_execute()->set_request_id(
      absl::StrCat("pipeline-retry-", getpid(), "-", absl::ToUnixNanos(absl::Now())));
  v1::PipelineCall retry = call;
  retry.set_id(2);
  ASSERT_TRUE(s.Send({std::move(call)}));
  ASSERT_TRUE(s.Result(1).has_value());
  ASSERT_TRUE(s.Send({std::move(retry)}));
  std::optional<v1::PipelineResult> again = s.Result(2);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->execute().command_tag(), "INSERT 0 1") << again->status().message();
  EXPECT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM ", table)), 1);
  EXPECT_TRUE(s.End().ok());
}

TEST_F(PipelineE2eTest, HalfClosingEndsTheStreamOkAfterTheLastResult) {
  StartBroker();
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send({ExecuteCall(1, "SELECT 'late' FROM pg_sleep(0.3)")}));
  grpc::Status end = s.End();
  EXPECT_TRUE(end.ok()) << end.error_message();
  std::optional<v1::PipelineResult> r = s.Result(1);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->execute().rows(0).values(0).string_value(), "late");
}

TEST_F(PipelineE2eTest, AnUnparseableMessageEndsTheStreamWithInvalidArgument) {
  StartBroker();
  const grpc::Status status =
      RawStreamCall(broker_->channel(), "/sessionbroker.v1.SessionBroker/Pipeline",
                    std::string("\xff\xff\xff", 3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("sessionbroker.v1.PipelineRequest"));
}

TEST_F(PipelineE2eTest, DrainFinishesTheRunningCallsThenEndsWithUnavailable) {
  StartBroker({{"BROKER_DRAIN_SECONDS", "0"}});
  PipelineStream s(stub_.get());
  ASSERT_TRUE(s.Send({ExecuteCall(1, "SELECT pg_sleep(2)")}));
  WaitForActiveStatements(1);
  kill(broker_->pid(), SIGTERM);
  std::optional<v1::PipelineResult> r = s.Result(1);
  ASSERT_TRUE(r.has_value());
  // It was running when the drain began, and finished.
  ASSERT_TRUE(r->has_execute()) << r->status().message();
  EXPECT_EQ(r->execute().command_tag(), "SELECT 1");
  EXPECT_TRUE(r->reason().empty());
  ASSERT_TRUE(s.WaitEnded());
  grpc::Status end = s.End(/*half_close=*/false);
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE) << end.error_message();
  EXPECT_THAT(end.error_message(), HasSubstr("shutting down"));
  // Every call without a result never started: safe to send elsewhere.
  EXPECT_EQ(s.Trailer("sessionbroker-reason"), "DRAINING");
  EXPECT_EQ(broker_->WaitForExit(absl::Seconds(30)), 0) << broker_->Log();
}

// Per-process tokens, so nothing here could work against another broker.
std::string TokenFor(const std::string& who) {
  return absl::StrCat(who, "-pipeline-token-", getpid(), "-51c0ffee");
}

TEST_F(PipelineE2eTest, WithAClientsFileAStreamNeedsCredentialsAndRunsAsItsClient) {
  std::string hash;
  ASSERT_EQ(RunCommand(absl::StrCat("printf '%s\\n' '", TokenFor("alice"), "' | ", SB_BROKER_BINARY,
                                    " hash-token"),
                       &hash),
            0);
  while (!hash.empty() && hash.back() == '\n') hash.pop_back();
  char dir[] = "/tmp/sb-pipeline-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string file = std::string(dir) + "/clients.yaml";
  std::ofstream(file) << "clients:\n  - id: alice\n    token_hashes: [\"" << hash << "\"]\n"
                      << "    read_only: true\n";
  StartBroker({{"BROKER_CLIENTS_FILE", file}});
  {
    PipelineStream anonymous(stub_.get());
    grpc::Status end = anonymous.End(/*half_close=*/false);
    EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAUTHENTICATED) << end.error_message();
  }
  {
    PipelineStream alice(stub_.get(), TokenFor("alice"));
    ASSERT_TRUE(alice.Send({ExecuteCall(1, "SELECT current_setting('transaction_read_only')")}));
    std::optional<v1::PipelineResult> r = alice.Result(1);
    ASSERT_TRUE(r.has_value());
    ASSERT_TRUE(r->has_execute()) << r->status().message();
    // Her policy (read-only) applies to each call, as on Execute.
    EXPECT_EQ(r->execute().rows(0).values(0).string_value(), "on");
    EXPECT_TRUE(alice.End().ok());
  }
  std::remove(file.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace sessionbroker::testing
