// pipeline-loop-bench: the pipelined engine alone (PqPipelineLoop, no gRPC)
// against a PostgreSQL: N closed-loop callers each submit `SELECT $1::int8`
// and resubmit from the completion, for a few seconds; prints statements/s,
// statements per flush and the latency percentiles. Used to choose
// BROKER_PIPELINE_CONNECTIONS / BROKER_PIPELINE_DEPTH / BROKER_PIPELINE_LOOPS
// and to measure corking (docs/benchmarks.md). Nothing here is a test.
//
//   pipeline-loop-bench --url=postgresql://... --callers=64 --connections=3 \
//     --depth=16 --seconds=4 --cork=true --loops=1
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/storage/pq_pipeline_loop.h"

ABSL_FLAG(std::string, url, "", "libpq connection string");
ABSL_FLAG(int, callers, 64, "closed-loop callers");
ABSL_FLAG(int, connections, 3, "pipelined connections");
ABSL_FLAG(int, depth, 16, "statements in flight per connection");
ABSL_FLAG(double, seconds, 4, "measured seconds");
ABSL_FLAG(bool, cork, true, "cork sockets per dispatch round");
ABSL_FLAG(int, loops, 1, "event-loop threads the connections are divided among");

namespace sessionbroker::storage {
namespace {

class Bench {
 public:
  explicit Bench(PqPipelineLoop* loop) : loop_(loop) {}

  void Issue(int caller) {
    if (stop_.load()) {
      if (--running_ == 0) idle_.Notify();
      return;
    }
    PipelineCall call;
    call.statement.sql = "SELECT $1::int8";
    call.statement.params.push_back(Value::Int64(caller));
    call.statement.cacheable = true;
    const absl::Time start = absl::Now();
    loop_->Submit(std::move(call), [this, caller, start](absl::StatusOr<QueryResult> r) {
      if (!r.ok()) {
        errors_.fetch_add(1);
      } else {
        absl::MutexLock lock(&mu_);
        latencies_.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      }
      Issue(caller);
    });
  }

  void Run(int callers, absl::Duration duration) {
    running_ = callers;
    for (int i = 0; i < callers; ++i) Issue(i);
    absl::SleepFor(absl::Milliseconds(500));  // warm-up: connections, prepares
    {
      absl::MutexLock lock(&mu_);
      latencies_.clear();
    }
    const PipelineStats before = loop_->Stats();
    rusage usage_before{};
    getrusage(RUSAGE_SELF, &usage_before);
    const absl::Time start = absl::Now();
    absl::SleepFor(duration);
    std::vector<double> sample;
    {
      absl::MutexLock lock(&mu_);
      sample.swap(latencies_);
    }
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    const PipelineStats after = loop_->Stats();
    rusage usage_after{};
    getrusage(RUSAGE_SELF, &usage_after);
    stop_.store(true);
    idle_.WaitForNotification();
    std::sort(sample.begin(), sample.end());
    auto pct = [&](double p) {
      return sample.empty() ? 0.0 : sample[static_cast<size_t>(p * (sample.size() - 1))];
    };
    const double statements = static_cast<double>(after.statements - before.statements);
    const double flushes = static_cast<double>(after.flushes - before.flushes);
    auto micros = [](const timeval& t) { return t.tv_sec * 1e6 + t.tv_usec; };
    const double cpu_us = micros(usage_after.ru_utime) + micros(usage_after.ru_stime) -
                          micros(usage_before.ru_utime) - micros(usage_before.ru_stime);
    const double switches = static_cast<double>(usage_after.ru_nvcsw + usage_after.ru_nivcsw -
                                                usage_before.ru_nvcsw - usage_before.ru_nivcsw);
    const double done = std::max<double>(1, static_cast<double>(sample.size()));
    // CPU and context switches of this process (the engine's loops and the
    // callers' resubmissions), per statement.
    std::printf(
        "statements/s %.0f  per flush %.2f  p50 %.0f us  p99 %.0f us  cpu %.1f us/stmt  "
        "cs %.2f/stmt  errors %d\n",
        static_cast<double>(sample.size()) / elapsed, flushes > 0 ? statements / flushes : 0.0,
        pct(0.5), pct(0.99), cpu_us / done, switches / done, errors_.load());
  }

 private:
  PqPipelineLoop* loop_;
  std::atomic<bool> stop_{false};
  std::atomic<int> running_{0};
  std::atomic<int> errors_{0};
  absl::Notification idle_;
  absl::Mutex mu_;
  std::vector<double> latencies_ ABSL_GUARDED_BY(mu_);
};

}  // namespace
}  // namespace sessionbroker::storage

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  sessionbroker::storage::PqPipelineLoop::Options options;
  options.conninfo = absl::GetFlag(FLAGS_url);
  options.connections = absl::GetFlag(FLAGS_connections);
  options.limits.max_depth = absl::GetFlag(FLAGS_depth);
  options.cork = absl::GetFlag(FLAGS_cork);
  options.loops = absl::GetFlag(FLAGS_loops);
  sessionbroker::storage::PqPipelineLoop loop(std::move(options));
  sessionbroker::storage::Bench bench(&loop);
  bench.Run(absl::GetFlag(FLAGS_callers), absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  return 0;
}
