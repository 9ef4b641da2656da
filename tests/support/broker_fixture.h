// The shared fixture of the end-to-end tests: starts the real broker binary
// against the test database with a per-test application_name (so a test can
// count exactly its broker's connections in pg_stat_activity), offers typed
// helpers for the SessionBroker RPCs, and an admin connection that goes to
// PostgreSQL directly, to check what the broker claims.
#ifndef SESSIONBROKER_TESTS_SUPPORT_BROKER_FIXTURE_H_
#define SESSIONBROKER_TESTS_SUPPORT_BROKER_FIXTURE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/storage/db_connection.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/broker_process.h"

namespace sessionbroker::testing {

inline constexpr char kService[] = "sessionbroker.v1.SessionBroker";

v1::Value Int(int64_t v);
v1::Value Str(const std::string& v);

// The "sqlstate" trailing metadata of a finished call ("" if none).
std::string SqlStateOf(const grpc::ClientContext& context);

struct CallResult {
  grpc::Status status;
  v1::ExecuteResponse response;
  std::string sqlstate;  // trailing metadata, if any
};

class BrokerFixture : public ::testing::Test {
 protected:
  void SetUp() override;

  // Starts the broker with `env` on top of the defaults and waits until it
  // serves; stub_ talks to it.
  void StartBroker(std::map<std::string, std::string> env = {});

  // One Execute call; `session` empty = one-shot.
  CallResult Execute(const std::string& sql, std::vector<v1::Value> params = {},
                     absl::Duration timeout = absl::Seconds(20),
                     v1::SessionBroker::Stub* stub = nullptr, const std::string& session = "");

  // Runs SQL directly on the admin connection (not through the broker).
  storage::QueryResult Admin(const std::string& sql, std::vector<storage::Value> params = {});
  // The single int8 cell `sql` returns (-1 if it returns something else).
  int64_t AdminCount(const std::string& sql, std::vector<storage::Value> params = {});

  // Waits until `n` statements of this broker run in PostgreSQL.
  void WaitForActiveStatements(int64_t n);
  // This broker's connections as pg_stat_activity sees them.
  int64_t BrokerConnections();
  // This broker's connections in `state` ('idle', 'active', 'idle in transaction', ...).
  int64_t BrokerConnectionsIn(const std::string& state);

  std::string base_url_;
  std::string app_name_;
  std::string broker_url_;
  std::unique_ptr<storage::DbConnection> admin_;
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<v1::SessionBroker::Stub> stub_;
};

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_BROKER_FIXTURE_H_
