// The shared fixture of the end-to-end tests: starts the real broker binary
// against the test database with a per-test application_name (so a test can
// count exactly its broker's connections in pg_stat_activity), offers typed
// helpers for the SessionBroker RPCs, and an admin connection that goes to
// PostgreSQL directly, to check what the broker claims.
#ifndef SESSIONBROKER_TESTS_SUPPORT_BROKER_FIXTURE_H_
#define SESSIONBROKER_TESTS_SUPPORT_BROKER_FIXTURE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/storage/db_connection.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
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

// The "sessionbroker-reason" trailing metadata of a finished call ("" if none).
std::string ReasonOf(const grpc::ClientContext& context);

// Any unary call's outcome, with the trailing metadata the session API uses.
template <typename Response>
struct RpcResult {
  grpc::Status status;
  Response response;
  std::string sqlstate;  // "sqlstate" trailing metadata, if any
  std::string reason;    // "sessionbroker-reason" trailing metadata, if any
};

google::protobuf::Duration DurationProto(absl::Duration d);
absl::Time TimeOf(const google::protobuf::Timestamp& t);

// A KeepAlive stream driven from a test: requests are written from the
// calling thread, responses collected by a reader thread. Cancels the call
// (and joins the reader) on destruction.
class KeepAliveStream {
 public:
  // `token`, when not empty, goes out as `authorization: Bearer <token>`.
  explicit KeepAliveStream(v1::SessionBroker::Stub* stub, const std::string& client_id = "",
                           const std::string& token = "");
  ~KeepAliveStream();
  KeepAliveStream(const KeepAliveStream&) = delete;
  KeepAliveStream& operator=(const KeepAliveStream&) = delete;

  bool Hold(const std::vector<std::string>& names);
  bool Release(const std::vector<std::string>& names);
  // The next response (up to `timeout`); nullopt on timeout or once the
  // stream ended with nothing left to read.
  std::optional<v1::KeepAliveResponse> Next(absl::Duration timeout);
  // Waits until the server ended the stream (up to `timeout`).
  bool WaitEnded(absl::Duration timeout);
  // WritesDone, waits for the server to end the stream, Finish.
  grpc::Status Close(absl::Duration timeout = absl::Seconds(10));
  // Finish after the server ended the stream (e.g. the broker exited).
  grpc::Status FinishAfterEnd(absl::Duration timeout = absl::Seconds(10));

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::KeepAliveResponse> responses_;
  bool ended_ = false;
  bool finished_ = false;
};

// Polls pg_stat_activity on a thread of its own (its own connection), every
// few milliseconds until Stop(), for the most connections that carry
// `application_name` at any sample: what a test checks the pool bound with
// from outside the broker.
class ConnectionPeakSampler final {
 public:
  ConnectionPeakSampler(const std::string& database_url, const std::string& application_name);
  ~ConnectionPeakSampler();  // Stop()s
  ConnectionPeakSampler(const ConnectionPeakSampler&) = delete;
  ConnectionPeakSampler& operator=(const ConnectionPeakSampler&) = delete;

  void Stop();
  int64_t peak() const { return peak_.load(); }
  int samples() const { return samples_.load(); }

 private:
  std::atomic<bool> done_{false};
  std::atomic<int64_t> peak_{0};
  std::atomic<int> samples_{0};
  std::thread thread_;
};

class BrokerFixture : public ::testing::Test {
 protected:
  void SetUp() override;

  // Starts the broker with `env` on top of the defaults and waits until it
  // serves; stub_ talks to it.
  void StartBroker(std::map<std::string, std::string> env = {});

  // Waits until the broker's own start-up work is done and its connection is
  // back in the pool. Readiness already waits for that work (the request
  // outcomes table's creation, OutcomePruner's first run, a transaction of
  // kStartupStatements statements that checks out a connection like a
  // caller), but its answer may reach the broker just before the connection
  // is returned. A test that counts connections in use calls this after
  // StartBroker. Observed through GetPoolStatus: the statements counter
  // covers the batch however it ended (a role without CREATE fails it, which
  // is fine here).
  void WaitForStartupWork();
  // The broker's start-up statements: CREATE SCHEMA, TABLE and INDEX IF NOT
  // EXISTS of the request outcomes table (RequestOutcomes::CreateStatements).
  static constexpr int kStartupStatements = 3;
  // Calls queued for a connection now, as GetPoolStatus reports them (-1 if
  // GetPoolStatus failed).
  int PoolWaiters();

  // One Execute call; `session` empty = one-shot.
  CallResult Execute(const std::string& sql, std::vector<v1::Value> params = {},
                     absl::Duration timeout = absl::Seconds(20),
                     v1::SessionBroker::Stub* stub = nullptr, const std::string& session = "");

  // Session RPCs; `client_id` goes out as "x-client-id" when not empty.
  using Stub = v1::SessionBroker::Stub;
  RpcResult<v1::Session> BeginSession(const v1::BeginSessionRequest& request = {},
                                      const std::string& client_id = "", Stub* stub = nullptr);
  // A session with this ttl (zero: the default) and nothing else.
  RpcResult<v1::Session> BeginSessionWithTtl(absl::Duration ttl);
  RpcResult<v1::Session> RenewSession(const std::string& session,
                                      absl::Duration ttl = absl::ZeroDuration());
  RpcResult<v1::Session> GetSession(const std::string& session, Stub* stub = nullptr);
  RpcResult<v1::EndSessionResponse> EndSession(const std::string& session);
  RpcResult<v1::ListSessionsResponse> ListSessions(const v1::ListSessionsRequest& request);
  RpcResult<v1::BeginTransactionResponse> BeginTransaction(
      const std::string& session, v1::IsolationLevel isolation = v1::ISOLATION_LEVEL_UNSPECIFIED,
      bool read_only = false);
  RpcResult<v1::CommitResponse> Commit(const std::string& session);
  RpcResult<v1::RollbackResponse> Rollback(const std::string& session);
  // Execute in `session`, with the reason metadata.
  RpcResult<v1::ExecuteResponse> ExecuteIn(const std::string& session, const std::string& sql,
                                           std::vector<v1::Value> params = {},
                                           absl::Duration timeout = absl::Seconds(20),
                                           Stub* stub = nullptr);

  // Polls `condition` every 20 ms until it holds or `timeout` passes;
  // returns whether it held.
  static bool Eventually(const std::function<bool()>& condition,
                         absl::Duration timeout = absl::Seconds(10));

  // Runs SQL directly on the admin connection (not through the broker).
  storage::QueryResult Admin(const std::string& sql, std::vector<storage::Value> params = {});
  // The single int8 cell `sql` returns (-1 if it returns something else).
  int64_t AdminCount(const std::string& sql, std::vector<storage::Value> params = {});

  // Waits until `n` of this broker's `SELECT pg_sleep(...)` statements run in
  // PostgreSQL.
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
