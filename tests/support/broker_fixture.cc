#include "tests/support/broker_fixture.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/storage/pqxx_connection.h"
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

void BrokerFixture::SetUp() {
  base_url_ = TestDatabaseUrl();
  ASSERT_FALSE(base_url_.empty());
  app_name_ = absl::StrCat("sb_e2e_", getpid(), "_", ++fixture_counter);
  broker_url_ = absl::StrCat(base_url_, absl::StrContains(base_url_, "?") ? "&" : "?",
                             "application_name=", app_name_);
  storage::PqxxConnector connector(base_url_);
  auto admin = connector.Connect();
  ASSERT_TRUE(admin.ok()) << admin.status();
  admin_ = *std::move(admin);
}

void BrokerFixture::StartBroker(std::map<std::string, std::string> env) {
  broker_ = std::make_unique<BrokerProcess>(broker_url_, std::move(env));
  ASSERT_TRUE(broker_->WaitUntilServing()) << "broker did not become SERVING:\n"
                                           << broker_->Log();
  stub_ = v1::SessionBroker::NewStub(broker_->channel());
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
    if (BrokerConnectionsIn("active") >= n) return;
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
