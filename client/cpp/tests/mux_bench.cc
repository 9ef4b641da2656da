// A small load driver for the C++ client's shared Pipeline stream: N threads
// share one Client and run `SELECT $1::int8` in a closed loop for a while,
// with ClientOptions::pipeline off, concurrent or always; prints calls/s and
// the median and p99 latency. Indicative numbers for docs/clients.md; not a
// test (no assertion) and not part of ./scripts/bench.
//
// Usage: cpp_client_mux_bench ADDRESS THREADS SECONDS off|concurrent|always
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "sessionbroker/client.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s ADDRESS THREADS SECONDS off|concurrent|always\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[4];
  sessionbroker::ClientOptions options;
  options.target = argv[1];
  options.client_id = "mux-bench";
  options.pipeline = mode == "off"          ? sessionbroker::PipelineMode::kOff
                     : mode == "concurrent" ? sessionbroker::PipelineMode::kConcurrent
                                            : sessionbroker::PipelineMode::kAlways;
  const int threads = std::atoi(argv[2]);
  const absl::Duration length = absl::Seconds(std::atoi(argv[3]));
  auto client = sessionbroker::Client::Create(options);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  // Warm-up: the channel connects and (unless off) the stream opens.
  for (int i = 0; i < 50; ++i) (void)(*client)->Execute("SELECT 1");
  absl::SleepFor(absl::Milliseconds(200));
  const sessionbroker::PipelineStats before = (*client)->pipeline_stats();

  std::atomic<int64_t> errors{0};
  std::vector<std::vector<double>> latencies(threads);
  const absl::Time start = absl::Now();
  const absl::Time end = start + length;
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      for (int64_t i = 0; absl::Now() < end; ++i) {
        const absl::Time at = absl::Now();
        absl::StatusOr<sessionbroker::Result> r = (*client)->Execute("SELECT $1::int8", {i});
        latencies[t].push_back(absl::ToDoubleMicroseconds(absl::Now() - at));
        if (!r.ok()) ++errors;
      }
    });
  }
  for (std::thread& c : callers) c.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  const sessionbroker::PipelineStats after = (*client)->pipeline_stats();
  const int64_t stream_calls = after.stream_calls - before.stream_calls;
  const int64_t messages = after.stream_messages - before.stream_messages;
  std::printf(
      "mode=%s threads=%d calls=%zu calls/s=%.0f p50_us=%.0f p99_us=%.0f errors=%lld "
      "stream_calls=%lld calls_per_message=%.2f\n",
      mode.c_str(), threads, all.size(), all.size() / seconds,
      all.empty() ? 0.0 : all[all.size() / 2],
      all.empty() ? 0.0 : all[std::min(all.size() - 1, all.size() * 99 / 100)],
      static_cast<long long>(errors.load()), static_cast<long long>(stream_calls),
      messages == 0 ? 0.0 : static_cast<double>(stream_calls) / messages);
  return errors.load() == 0 ? 0 : 1;
}
