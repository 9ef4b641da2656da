// libFuzzer target: request decoding and validation, as the transport does
// it before any database work. The first byte picks the message the rest is
// parsed as (ExecuteRequest, ExecuteBatchRequest, BeginSessionRequest,
// KeepAliveRequest); a message that parses goes through the transport's
// proto -> domain conversions (parameters and their types, durations,
// isolation, settings) and the StatementRunner's validation (under the
// default RequestLimits and tighter ones), over a pool of fake connections
// that it must never touch; a KeepAlive request's names go through the
// response's deduplication. Nothing may crash, read out of bounds or hit
// undefined behaviour, and a request the runner accepts must also have
// passed every limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "server/core/base/clock.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/pool/connection_pool.h"
#include "server/core/sql/session_settings.h"
#include "server/transport/keep_alive_reactor.h"
#include "server/transport/session_conversion.h"
#include "server/transport/value_conversion.h"
#include "sessionbroker/v1/broker.pb.h"
#include "tests/support/fake_db.h"

namespace {

namespace core = sessionbroker::core;
namespace storage = sessionbroker::storage;
namespace transport = sessionbroker::transport;
namespace v1 = sessionbroker::v1;

void Check(bool condition) {
  if (!condition) std::abort();
}

// Runners over a pool of fake connections, built once: one with the default
// limits, one with tight ones. Validate never reaches the pool (the
// connector's count proves it).
struct Runners {
  Runners() {
    core::PoolOptions options;
    options.pool_size = 1;
    options.max_overflow = 0;
    pool = std::make_unique<core::ConnectionPool>(options, connector, executor, timers, clock);
    runner = std::make_unique<core::StatementRunner>(*pool, timers, executor, clock,
                                                     core::RunnerOptions{});
    core::RunnerOptions tight_options;
    tight_options.limits = kTight;
    tight = std::make_unique<core::StatementRunner>(*pool, timers, executor, clock, tight_options);
  }
  static constexpr core::RequestLimits kTight = {64, 4, 2};
  core::FakeClock clock;
  core::TimerQueue timers{clock};
  sessionbroker::testing::ManualExecutor executor;
  sessionbroker::testing::FakeConnector connector;
  std::unique_ptr<core::ConnectionPool> pool;
  std::unique_ptr<core::StatementRunner> runner;
  std::unique_ptr<core::StatementRunner> tight;
};

Runners& TheRunners() {
  static Runners* runners = new Runners();
  return *runners;
}

// Validates `run` with both runners; what the tight one accepts is within
// its limits.
void Validate(const core::RunRequest& run) {
  Runners& r = TheRunners();
  (void)r.runner->Validate(run);
  (void)r.runner->Validate(run, /*in_session=*/true);
  if (r.tight->Validate(run).ok()) {
    Check(run.statements.size() <= Runners::kTight.max_batch_statements);
    for (const storage::Statement& s : run.statements) {
      Check(s.sql.size() <= Runners::kTight.max_sql_bytes);
      Check(s.params.size() <= Runners::kTight.max_statement_params);
    }
  }
  Check(r.connector.connects() == 0);
}

// One statement's SQL and parameters as the transport converts them; false
// if the conversion refused them.
bool AddStatement(const std::string& sql,
                  const google::protobuf::RepeatedPtrField<v1::Value>& params, int depth,
                  core::RunRequest* run) {
  auto values = transport::ParamsFromProto(params, "", depth);
  auto types = transport::ParamTypesFromProto(params, "");
  if (!values.ok() || !types.ok()) return false;
  run->statements.push_back(
      storage::Statement{sql, *std::move(values), /*cacheable=*/false, *std::move(types)});
  return true;
}

void Settings(const google::protobuf::Map<std::string, std::string>& settings) {
  if (settings.empty()) return;
  core::SessionSettings given(settings.begin(), settings.end());
  (void)core::NormalizeSessionSettings(std::move(given));
}

}  // namespace

// Protobuf logs every string field that is not UTF-8 as it parses; the
// fuzzer sends many, and the lines would drown its own output.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 4;
  // The operator's array depth limit, 1 to 6.
  const int depth = 1 + (data[0] / 4) % 6;
  const char* bytes = reinterpret_cast<const char*>(data + 1);
  const int length = static_cast<int>(size - 1);
  switch (which) {
    case 0: {
      v1::ExecuteRequest request;
      if (!request.ParseFromArray(bytes, length)) return 0;
      core::RunRequest run;
      if (AddStatement(request.sql(), request.params(), depth, &run)) Validate(run);
      Settings(request.settings());
      break;
    }
    case 1: {
      v1::ExecuteBatchRequest request;
      if (!request.ParseFromArray(bytes, length)) return 0;
      core::RunRequest run;
      run.op = core::RunRequest::Op::kBatch;
      for (const v1::Statement& s : request.statements()) {
        if (!AddStatement(s.sql(), s.params(), depth, &run)) return 0;
      }
      Validate(run);
      Settings(request.settings());
      break;
    }
    case 2: {
      v1::BeginSessionRequest request;
      if (!request.ParseFromArray(bytes, length)) return 0;
      (void)transport::DurationFromProto(request.ttl(), "ttl");
      (void)transport::IsolationFromProto(request.isolation(), "isolation");
      Settings(request.settings());
      break;
    }
    default: {
      v1::KeepAliveRequest request;
      if (!request.ParseFromArray(bytes, length)) return 0;
      if (request.hold_size() + request.release_size() > transport::kMaxKeepAliveNames) return 0;
      // The answer holds one state per distinct name, in first-named order.
      transport::SessionStateList states;
      absl::flat_hash_set<std::string> names;
      for (const std::string& name : request.hold()) {
        v1::SessionState state;
        state.set_name(name);
        states.Add(std::move(state));
        names.insert(name);
      }
      for (const std::string& name : request.release()) {
        v1::SessionState state;
        state.set_name(name);
        states.Add(std::move(state));
        names.insert(name);
      }
      Check(states.size() == static_cast<int>(names.size()));
      break;
    }
  }
  return 0;
}
