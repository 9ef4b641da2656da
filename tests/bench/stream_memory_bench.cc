// stream-memory-bench: how much memory the broker needs for large results.
// Starts the real session-broker binary (tests/support/broker_process.h)
// against $SB_TEST_DATABASE_URL, then
//   1. streams --stream_bytes of rows through StreamExecute and reads them
//      all, and
//   2. runs the issue-15 case: --unary_callers concurrent Execute calls of
//      SELECT repeat('x', 200000000), each over BROKER_MAX_RESULT_BYTES,
// printing the broker's VmHWM (peak RSS) and VmRSS from /proc/PID/status
// after each step. docs/benchmarks.md records a run. Nothing is asserted.
//
//   SB_TEST_DATABASE_URL=... build/tests/bench/stream-memory-bench
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "tests/support/broker_process.h"

ABSL_FLAG(int64_t, stream_bytes, int64_t{2} << 30, "bytes of cell text to stream");
ABSL_FLAG(int64_t, row_bytes, 8000, "bytes of text per row");
ABSL_FLAG(int64_t, window_bytes, 1 << 20, "BROKER_STREAM_WINDOW_BYTES");
ABSL_FLAG(int, unary_callers, 4, "concurrent over-cap Execute calls (0: skip)");

namespace v1 = sessionbroker::v1;

namespace {

int64_t Memory(pid_t pid, const char* field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, absl::StrCat(field, ":"))) continue;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits += c;
    }
    int64_t kb = 0;
    if (absl::SimpleAtoi(digits, &kb)) return kb * 1024;
  }
  return -1;
}

void Report(pid_t pid, const char* step) {
  std::printf("%-44s VmHWM %8.1f MiB  VmRSS %8.1f MiB\n", step,
              static_cast<double>(Memory(pid, "VmHWM")) / (1 << 20),
              static_cast<double>(Memory(pid, "VmRSS")) / (1 << 20));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const char* url = std::getenv("SB_TEST_DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "set SB_TEST_DATABASE_URL to a PostgreSQL URL\n");
    return 2;
  }
  const int64_t window = absl::GetFlag(FLAGS_window_bytes);
  sessionbroker::testing::BrokerProcess broker(
      url, {{"BROKER_STREAM_WINDOW_BYTES", absl::StrCat(window)}});
  if (!broker.WaitUntilServing()) {
    std::fprintf(stderr, "the broker did not start:\n%s\n", broker.Log().c_str());
    return 1;
  }
  auto stub = v1::SessionBroker::NewStub(broker.NewChannel());
  {
    grpc::ClientContext context;
    v1::ExecuteRequest request;
    request.set_sql("SELECT 1");
    v1::ExecuteResponse response;
    (void)stub->Execute(&context, request, &response);
  }
  const pid_t pid = broker.pid();
  Report(pid, "started, one Execute");

  const int64_t row_bytes = absl::GetFlag(FLAGS_row_bytes);
  const int64_t rows = absl::GetFlag(FLAGS_stream_bytes) / row_bytes;
  {
    grpc::ClientContext context;
    v1::ExecuteRequest request;
    request.set_sql(
        absl::StrCat("SELECT repeat('x', ", row_bytes, ") FROM generate_series(1, ", rows, ")"));
    const absl::Time start = absl::Now();
    auto reader = stub->StreamExecute(&context, request);
    v1::StreamExecuteResponse response;
    int64_t received_rows = 0;
    int64_t received_bytes = 0;
    int64_t messages = 0;
    while (reader->Read(&response)) {
      ++messages;
      received_bytes += static_cast<int64_t>(response.ByteSizeLong());
      if (response.has_rows()) received_rows += response.rows().rows_size();
    }
    const grpc::Status status = reader->Finish();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    std::printf("streamed %lld rows, %.2f GiB in %lld messages, %.1f s (%.0f MiB/s), status %s\n",
                static_cast<long long>(received_rows),
                static_cast<double>(received_bytes) / (1 << 30), static_cast<long long>(messages),
                seconds, static_cast<double>(received_bytes) / (1 << 20) / seconds,
                status.ok() ? "OK" : status.error_message().c_str());
    Report(pid, absl::StrCat("after the stream (window ", window, " B)").c_str());
  }

  const int callers = absl::GetFlag(FLAGS_unary_callers);
  if (callers > 0) {
    std::vector<std::thread> threads;
    std::vector<grpc::Status> statuses(static_cast<size_t>(callers));
    for (int i = 0; i < callers; ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext context;
        v1::ExecuteRequest request;
        request.set_sql("SELECT repeat('x', 200000000)");
        v1::ExecuteResponse response;
        statuses[static_cast<size_t>(i)] = stub->Execute(&context, request, &response);
      });
    }
    for (std::thread& t : threads) t.join();
    std::printf("%d x SELECT repeat('x', 200000000): first status %d %s\n", callers,
                statuses[0].error_code(), statuses[0].error_message().substr(0, 80).c_str());
    Report(pid, absl::StrCat("after ", callers, " over-cap unary calls").c_str());
  }
  return 0;
}
