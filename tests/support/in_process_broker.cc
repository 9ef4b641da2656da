#include "tests/support/in_process_broker.h"

#include <chrono>
#include <utility>

namespace sessionbroker::testing {

InProcessBroker::Options InProcessBroker::DefaultOptions() {
  Options o;
  o.pool.pool_size = 2;
  o.pool.max_overflow = 0;
  o.pool.pre_ping = false;
  o.pool.recycle = absl::InfiniteDuration();
  return o;
}

InProcessBroker::InProcessBroker(Options options) : options_(std::move(options)) {
  // As in BrokerServer: one worker per connection, plus one for completions.
  executor_ =
      std::make_unique<core::ThreadPoolExecutor>(options_.pool.max_connections() + 1, "ipb-worker");
  pool_ = std::make_unique<core::ConnectionPool>(options_.pool, connector_, *executor_, timers_,
                                                 clock_);
  core::RunnerOptions runner_options;
  runner_options.max_result_bytes = options_.max_result_bytes;
  // The fake database answers no catalog lookup (CatalogGuard): table reads
  // and writes take the reset path, with no lookup taking a connection.
  // The runner's own tests cover the proofs.
  runner_options.pipeline_table_reads = false;
  runner_options.pipeline_table_writes = false;
  runner_ = std::make_unique<core::StatementRunner>(*pool_, timers_, cancel_executor_, clock_,
                                                    runner_options);
  sessions_ = std::make_unique<core::SessionManager>(*runner_, timers_, clock_, options_.sessions);
  // Never started: the tests do not need probes, the collector only reads it.
  health_ = std::make_unique<core::HealthChecker>(*pool_, timers_, clock_, absl::Seconds(10),
                                                  [](bool) {});
  collector_ = std::make_unique<core::StatusCollector>(
      *pool_, *runner_, *health_, [this] { return sessions_->Stats(); }, clock_);
  sampler_ = std::make_unique<core::SnapshotSampler>([this] { return collector_->Collect(); },
                                                     timers_, monitor_executor_, clock_);
  ledger_ = std::make_unique<core::RequestLedger>(clock_, core::RequestLedgerOptions{});
  broker_service_ = std::make_unique<transport::SessionBrokerService>(
      *runner_, *sessions_, options_.max_result_bytes, *ledger_);
  monitor_service_ = std::make_unique<transport::PoolMonitorService>(*sampler_);

  grpc::ServerBuilder builder;
  builder.RegisterService(broker_service_.get());
  builder.RegisterService(monitor_service_.get());
  server_ = builder.BuildAndStart();  // no port: in-process channel only
  channel_ = server_->InProcessChannel(grpc::ChannelArguments());
  broker_stub_ = v1::SessionBroker::NewStub(channel_);
  monitor_stub_ = v1::PoolMonitor::NewStub(channel_);
}

InProcessBroker::~InProcessBroker() {
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  broker_service_->StartDraining();
  broker_service_->WaitForIdle(give_up);
  sessions_->Shutdown(give_up);
  monitor_service_->EndAllStreams();
  monitor_service_->WaitForStreamsDone(give_up);
  server_->Shutdown(std::chrono::system_clock::now());
  health_->Stop();
  sampler_->Stop();
  pool_->Close();
  executor_->Shutdown();
  cancel_executor_.Shutdown();
  monitor_executor_.Shutdown();
  server_->Wait();
}

void InProcessBroker::Advance(absl::Duration d) {
  clock_.Advance(d);
  timers_.RunDue();
}

}  // namespace sessionbroker::testing
