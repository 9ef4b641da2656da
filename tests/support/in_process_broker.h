// InProcessBroker: the broker's two gRPC services (SessionBroker,
// PoolMonitor) on a real grpc::Server with no listening port, reached through
// its in-process channel, with the core wired as BrokerServer wires it but
// over the fake database (FakeConnector) and a FakeClock. Statements run on
// real worker threads; timers (leases, orphan grace, deadlines) run only when
// the test calls Advance(), so tests move time instead of sleeping.
//
// For unit tests of the transport layer. Owns everything it creates; the
// destructor shuts down in BrokerServer's order (drain, end the sessions, end
// the watch streams, stop the server, stop the core). Thread-safe as far as
// the parts it hands out are.
#ifndef SESSIONBROKER_TESTS_SUPPORT_IN_PROCESS_BROKER_H_
#define SESSIONBROKER_TESTS_SUPPORT_IN_PROCESS_BROKER_H_

#include <cstddef>
#include <memory>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/clock.h"
#include "server/core/base/executor.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/request_ledger.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/monitor/snapshot_sampler.h"
#include "server/core/monitor/status_collector.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/pool/health_checker.h"
#include "server/core/session/session_manager.h"
#include "server/transport/pool_monitor_service.h"
#include "server/transport/session_broker_service.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/fake_db.h"

namespace sessionbroker::testing {

class InProcessBroker final {
 public:
  struct Options {
    core::PoolOptions pool;
    core::SessionOptions sessions;
    size_t max_result_bytes = 64 << 20;
  };
  // A small pool (2 connections, no overflow, no pre-ping, no recycling) and
  // the default session options.
  static Options DefaultOptions();

  explicit InProcessBroker(Options options = DefaultOptions());
  ~InProcessBroker();
  InProcessBroker(const InProcessBroker&) = delete;
  InProcessBroker& operator=(const InProcessBroker&) = delete;

  v1::SessionBroker::Stub& broker() { return *broker_stub_; }
  v1::PoolMonitor::Stub& monitor() { return *monitor_stub_; }
  // The in-process channel the stubs use (for raw calls).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  FakeConnector& connector() { return connector_; }
  core::FakeClock& clock() { return clock_; }
  core::SessionManager& sessions() { return *sessions_; }
  core::ConnectionPool& pool() { return *pool_; }
  transport::SessionBrokerService& broker_service() { return *broker_service_; }
  core::RequestLedger& ledger() { return *ledger_; }
  transport::PoolMonitorService& monitor_service() { return *monitor_service_; }
  const Options& options() const { return options_; }

  // Moves the fake clock on by `d` and runs the timers then due, on the
  // calling thread.
  void Advance(absl::Duration d);

 private:
  const Options options_;
  core::FakeClock clock_;
  core::TimerQueue timers_{clock_};
  FakeConnector connector_;
  std::unique_ptr<core::ThreadPoolExecutor> executor_;
  core::ThreadPoolExecutor cancel_executor_{1, "ipb-cancel"};
  core::ThreadPoolExecutor monitor_executor_{1, "ipb-monitor"};
  std::unique_ptr<core::ConnectionPool> pool_;
  std::unique_ptr<core::StatementRunner> runner_;
  std::unique_ptr<core::SessionManager> sessions_;
  std::unique_ptr<core::HealthChecker> health_;
  std::unique_ptr<core::StatusCollector> collector_;
  std::unique_ptr<core::SnapshotSampler> sampler_;
  std::unique_ptr<core::RequestLedger> ledger_;
  std::unique_ptr<transport::SessionBrokerService> broker_service_;
  std::unique_ptr<transport::PoolMonitorService> monitor_service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::SessionBroker::Stub> broker_stub_;
  std::unique_ptr<v1::PoolMonitor::Stub> monitor_stub_;
};

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_IN_PROCESS_BROKER_H_
