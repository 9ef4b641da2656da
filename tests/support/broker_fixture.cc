#include "tests/support/broker_fixture.h"

#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/storage/pq_connection.h"
#include "tests/support/test_env.h"

namespace sessionbroker::testing {
namespace {
int fixture_counter = 0;
}  // namespace

v1::Value Int(int64_t v) {
  v1::Value out;
  out.set_int64_value(v);
  return out;
}

v1::Value Str(const std::string& v) {
  v1::Value out;
  out.set_string_value(v);
  return out;
}

std::string SqlStateOf(const grpc::ClientContext& context) {
  auto it = context.GetServerTrailingMetadata().find("sqlstate");
  if (it == context.GetServerTrailingMetadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string ReasonOf(const grpc::ClientContext& context) {
  auto it = context.GetServerTrailingMetadata().find("sessionbroker-reason");
  if (it == context.GetServerTrailingMetadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

absl::Time TimeOf(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

namespace {

// One unary call with a deadline and optional x-client-id.
template <typename Request, typename Response>
RpcResult<Response> Unary(v1::SessionBroker::Stub* stub,
                          grpc::Status (v1::SessionBroker::Stub::*method)(grpc::ClientContext*,
                                                                          const Request&,
                                                                          Response*),
                          const Request& request, const std::string& client_id = "",
                          absl::Duration timeout = absl::Seconds(20)) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!client_id.empty()) context.AddMetadata("x-client-id", client_id);
  RpcResult<Response> out;
  out.status = (stub->*method)(&context, request, &out.response);
  out.sqlstate = SqlStateOf(context);
  out.reason = ReasonOf(context);
  return out;
}

}  // namespace

KeepAliveStream::KeepAliveStream(v1::SessionBroker::Stub* stub, const std::string& client_id,
                                 const std::string& token) {
  if (!client_id.empty()) context_.AddMetadata("x-client-id", client_id);
  if (!token.empty()) context_.AddMetadata("authorization", "Bearer " + token);
  stream_ = stub->KeepAlive(&context_);
  reader_ = std::thread([this] {
    v1::KeepAliveResponse response;
    while (stream_->Read(&response)) {
      std::lock_guard<std::mutex> lock(mu_);
      responses_.push_back(response);
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    cv_.notify_all();
  });
}

KeepAliveStream::~KeepAliveStream() {
  context_.TryCancel();
  if (reader_.joinable()) reader_.join();
  if (!finished_) stream_->Finish();
}

bool KeepAliveStream::Hold(const std::vector<std::string>& names) {
  v1::KeepAliveRequest request;
  for (const std::string& n : names) request.add_hold(n);
  return stream_->Write(request);
}

bool KeepAliveStream::Release(const std::vector<std::string>& names) {
  v1::KeepAliveRequest request;
  for (const std::string& n : names) request.add_release(n);
  return stream_->Write(request);
}

std::optional<v1::KeepAliveResponse> KeepAliveStream::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
               [this] { return !responses_.empty() || ended_; });
  if (responses_.empty()) return std::nullopt;
  v1::KeepAliveResponse out = std::move(responses_.front());
  responses_.pop_front();
  return out;
}

bool KeepAliveStream::WaitEnded(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [this] { return ended_; });
}

grpc::Status KeepAliveStream::Close(absl::Duration timeout) {
  stream_->WritesDone();
  return FinishAfterEnd(timeout);
}

grpc::Status KeepAliveStream::FinishAfterEnd(absl::Duration timeout) {
  if (!WaitEnded(timeout)) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "test: the server did not end the KeepAlive stream in time");
  }
  reader_.join();
  finished_ = true;
  return stream_->Finish();
}

ConnectionPeakSampler::ConnectionPeakSampler(const std::string& database_url,
                                             const std::string& application_name) {
  thread_ = std::thread([this, database_url, application_name] {
    storage::PqConnector connector(database_url);
    auto conn = connector.Connect();
    if (!conn.ok()) return;  // samples() stays 0: the test sees it
    while (!done_.load()) {
      auto r = (*conn)->Execute(
          storage::Statement{"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                             {storage::Value::String(application_name)}},
          {});
      if (r.ok()) {
        peak_ = std::max<int64_t>(peak_.load(), r->rows[0][0].int64_value);
        samples_.fetch_add(1);
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
}

ConnectionPeakSampler::~ConnectionPeakSampler() { Stop(); }

void ConnectionPeakSampler::Stop() {
  done_ = true;
  if (thread_.joinable()) thread_.join();
}

void BrokerFixture::SetUp() {
  base_url_ = TestDatabaseUrl();
  ASSERT_FALSE(base_url_.empty());
  app_name_ = absl::StrCat("sb_e2e_", getpid(), "_", ++fixture_counter);
  broker_url_ = absl::StrCat(base_url_, absl::StrContains(base_url_, "?") ? "&" : "?",
                             "application_name=", app_name_);
  storage::PqConnector connector(base_url_);
  auto admin = connector.Connect();
  ASSERT_TRUE(admin.ok()) << admin.status();
  admin_ = *std::move(admin);
}

void BrokerFixture::StartBroker(std::map<std::string, std::string> env) {
  broker_ = std::make_unique<BrokerProcess>(broker_url_, std::move(env));
  ASSERT_TRUE(broker_->WaitUntilServing()) << "broker did not become SERVING:\n" << broker_->Log();
  stub_ = v1::SessionBroker::NewStub(broker_->channel());
}

namespace {

// One GetPoolStatus call; nullopt if it failed.
std::optional<v1::PoolStatus> PoolStatusOf(BrokerProcess& broker) {
  std::unique_ptr<v1::PoolMonitor::Stub> monitor = v1::PoolMonitor::NewStub(broker.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::PoolStatus status;
  if (!monitor->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status).ok()) {
    return std::nullopt;
  }
  return status;
}

}  // namespace

void BrokerFixture::WaitForStartupWork() {
  std::optional<v1::PoolStatus> last;
  // The give-up only turns a hang into a failure; the condition decides.
  const bool done = Eventually(
      [&] {
        last = PoolStatusOf(*broker_);
        return last.has_value() && last->counters().statements() >= kStartupStatements &&
               last->connections().in_use() == 0;
      },
      absl::Seconds(60));
  if (!done) {
    ADD_FAILURE() << "the broker's start-up statements did not finish; last pool status: "
                  << (last.has_value() ? last->DebugString() : "none") << "\n"
                  << broker_->Log();
  }
}

int BrokerFixture::PoolWaiters() {
  std::optional<v1::PoolStatus> status = PoolStatusOf(*broker_);
  return status.has_value() ? status->waiters().count() : -1;
}

CallResult BrokerFixture::Execute(const std::string& sql, std::vector<v1::Value> params,
                                  absl::Duration timeout, v1::SessionBroker::Stub* stub,
                                  const std::string& session) {
  v1::ExecuteRequest request;
  request.set_sql(sql);
  for (v1::Value& p : params) *request.add_params() = std::move(p);
  if (!session.empty()) request.set_session(session);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  CallResult out;
  out.status = (stub ? stub : stub_.get())->Execute(&context, request, &out.response);
  out.sqlstate = SqlStateOf(context);
  return out;
}

RpcResult<v1::Session> BrokerFixture::BeginSession(const v1::BeginSessionRequest& request,
                                                   const std::string& client_id, Stub* stub) {
  return Unary(stub ? stub : stub_.get(), &Stub::BeginSession, request, client_id);
}

RpcResult<v1::Session> BrokerFixture::BeginSessionWithTtl(absl::Duration ttl) {
  v1::BeginSessionRequest request;
  if (ttl != absl::ZeroDuration()) *request.mutable_ttl() = DurationProto(ttl);
  return BeginSession(request);
}

RpcResult<v1::Session> BrokerFixture::RenewSession(const std::string& session, absl::Duration ttl) {
  v1::RenewSessionRequest request;
  request.set_session(session);
  if (ttl != absl::ZeroDuration()) *request.mutable_ttl() = DurationProto(ttl);
  return Unary(stub_.get(), &Stub::RenewSession, request);
}

RpcResult<v1::Session> BrokerFixture::GetSession(const std::string& session, Stub* stub) {
  v1::GetSessionRequest request;
  request.set_session(session);
  return Unary(stub ? stub : stub_.get(), &Stub::GetSession, request);
}

RpcResult<v1::EndSessionResponse> BrokerFixture::EndSession(const std::string& session) {
  v1::EndSessionRequest request;
  request.set_session(session);
  return Unary(stub_.get(), &Stub::EndSession, request);
}

RpcResult<v1::ListSessionsResponse> BrokerFixture::ListSessions(
    const v1::ListSessionsRequest& request) {
  return Unary(stub_.get(), &Stub::ListSessions, request);
}

RpcResult<v1::BeginTransactionResponse> BrokerFixture::BeginTransaction(
    const std::string& session, v1::IsolationLevel isolation, bool read_only) {
  v1::BeginTransactionRequest request;
  request.set_session(session);
  request.set_isolation(isolation);
  request.set_read_only(read_only);
  return Unary(stub_.get(), &Stub::BeginTransaction, request);
}

RpcResult<v1::CommitResponse> BrokerFixture::Commit(const std::string& session) {
  v1::CommitRequest request;
  request.set_session(session);
  return Unary(stub_.get(), &Stub::Commit, request);
}

RpcResult<v1::RollbackResponse> BrokerFixture::Rollback(const std::string& session) {
  v1::RollbackRequest request;
  request.set_session(session);
  return Unary(stub_.get(), &Stub::Rollback, request);
}

RpcResult<v1::ExecuteResponse> BrokerFixture::ExecuteIn(const std::string& session,
                                                        const std::string& sql,
                                                        std::vector<v1::Value> params,
                                                        absl::Duration timeout, Stub* stub) {
  v1::ExecuteRequest request;
  request.set_sql(sql);
  for (v1::Value& p : params) *request.add_params() = std::move(p);
  request.set_session(session);
  return Unary(stub ? stub : stub_.get(), &Stub::Execute, request, "", timeout);
}

bool BrokerFixture::Eventually(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (absl::Now() >= end) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

storage::QueryResult BrokerFixture::Admin(const std::string& sql,
                                          std::vector<storage::Value> params) {
  auto r = admin_->Execute(storage::Statement{sql, std::move(params)}, {});
  EXPECT_TRUE(r.ok()) << sql << ": " << r.status();
  return r.ok() ? *std::move(r) : storage::QueryResult{};
}

int64_t BrokerFixture::AdminCount(const std::string& sql, std::vector<storage::Value> params) {
  storage::QueryResult r = Admin(sql, std::move(params));
  if (r.rows.size() != 1 || r.rows[0].size() != 1) return -1;
  return r.rows[0][0].int64_value;
}

void BrokerFixture::WaitForActiveStatements(int64_t n) {
  for (int i = 0; i < 500; ++i) {
    // Only the tests' pg_sleep statements: a connection the pool is still
    // opening is "active" too while it applies the broker's baseline
    // settings, and counting it let tests look at the pool before their
    // statements had a connection.
    if (AdminCount("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                   "state = 'active' AND query LIKE 'SELECT pg_sleep%'",
                   {storage::Value::String(app_name_)}) >= n) {
      return;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ADD_FAILURE() << "the broker's statements never became active";
}

int64_t BrokerFixture::BrokerConnections() {
  return AdminCount("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    {storage::Value::String(app_name_)});
}

int64_t BrokerFixture::BrokerConnectionsIn(const std::string& state) {
  return AdminCount(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = $2",
      {storage::Value::String(app_name_), storage::Value::String(state)});
}

}  // namespace sessionbroker::testing
