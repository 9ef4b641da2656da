// Microbenchmarks of the proto <-> domain value conversion on the RPC path.
//
//  * BM_ResultToProto: a 100-row x 6-column storage::QueryResult (int8, text
//    of ~20 characters, numeric, float8, bool, timestamptz as text) converted
//    into a fresh v1::ExecuteResponse. The result's copy (the input is moved
//    from) and the response's destruction are outside the timing.
//  * BM_ResultToProtoAndSerialize: the same plus SerializeToString, what the
//    wire costs (bytes/s is the serialized size).
//  * BM_ResultToProtoOnArena: BM_ResultToProto into a response allocated on a
//    protobuf Arena, to show what allocation costs.
//  * BM_ParamsFromProto: an ExecuteRequest with 10 parameters (the same kinds,
//    plus a json document and a small int array) into storage values.
//
//   build-micro/tests/bench/conversion_benchmark --benchmark_repetitions=5 \
//       --benchmark_report_aggregates_only=true
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "google/protobuf/arena.h"
#include "server/storage/value.h"
#include "server/transport/value_conversion.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {
namespace {

using storage::Value;

constexpr int kRows = 100;

storage::QueryResult MakeResult() {
  storage::QueryResult r;
  r.columns = {{"id", 20, "int8"},          {"name", 25, "text"},
               {"amount", 1700, "numeric"}, {"score", 701, "float8"},
               {"active", 16, "bool"},      {"created_at", 1184, "timestamptz"}};
  r.rows.reserve(kRows);
  for (int i = 0; i < kRows; ++i) {
    std::vector<Value> row;
    row.reserve(6);
    row.push_back(Value::Int64(1'000'000 + i));
    row.push_back(Value::String(absl::StrFormat("customer-name-%06d", i)));  // 20 characters
    row.push_back(Value::Numeric(absl::StrCat(12345 + i, ".", 10 + i % 90)));
    row.push_back(Value::Double(0.5 + i * 1.25));
    row.push_back(Value::Bool(i % 2 == 0));
    row.push_back(
        Value::String(absl::StrFormat("2024-02-29 10:%02d:%02d.789012+00", i % 60, i % 60)));
    r.rows.push_back(std::move(row));
  }
  r.rows_affected = kRows;
  r.command_tag = absl::StrCat("SELECT ", kRows);
  return r;
}

void BM_ResultToProto(benchmark::State& state) {
  const storage::QueryResult source = MakeResult();
  size_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    storage::QueryResult result = source;
    auto response = std::make_unique<v1::ExecuteResponse>();
    state.ResumeTiming();
    ResultToProto(std::move(result), response.get());
    benchmark::DoNotOptimize(response.get());
    state.PauseTiming();
    bytes = response->ByteSizeLong();
    response.reset();
    result = {};
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRows);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_ResultToProto);

void BM_ResultToProtoAndSerialize(benchmark::State& state) {
  const storage::QueryResult source = MakeResult();
  size_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    storage::QueryResult result = source;
    auto response = std::make_unique<v1::ExecuteResponse>();
    state.ResumeTiming();
    ResultToProto(std::move(result), response.get());
    std::string wire;
    response->SerializeToString(&wire);
    bytes = wire.size();
    benchmark::DoNotOptimize(wire.data());
    state.PauseTiming();
    response.reset();
    result = {};
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRows);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_ResultToProtoAndSerialize);

// For comparison: the same conversion into a response on a protobuf Arena
// (what a gRPC MessageAllocator for the service would give): one allocation
// per block instead of one per message and string.
void BM_ResultToProtoOnArena(benchmark::State& state) {
  const storage::QueryResult source = MakeResult();
  size_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    storage::QueryResult result = source;
    auto arena = std::make_unique<google::protobuf::Arena>();
    auto* response = google::protobuf::Arena::CreateMessage<v1::ExecuteResponse>(arena.get());
    state.ResumeTiming();
    ResultToProto(std::move(result), response);
    benchmark::DoNotOptimize(response);
    state.PauseTiming();
    bytes = response->ByteSizeLong();
    arena.reset();
    result = {};
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRows);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_ResultToProtoOnArena);

v1::ExecuteRequest MakeRequest() {
  v1::ExecuteRequest request;
  request.set_sql(
      "INSERT INTO orders (id, customer, amount, score, paid, created_at, note, meta, tags, ref) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
  request.add_params()->set_int64_value(1'000'042);
  request.add_params()->set_string_value("customer-name-000042");
  request.add_params()->set_numeric_value("12387.52");
  request.add_params()->set_double_value(53.75);
  request.add_params()->set_bool_value(true);
  request.add_params()->set_string_value("2024-02-29 10:42:42.789012+00");
  request.add_params()->set_null_value(google::protobuf::NULL_VALUE);
  request.add_params()->set_json_value(R"({"source":"web","campaign":"spring-sale","items":3})");
  v1::ArrayValue* tags = request.add_params()->mutable_array_value();
  for (int i = 0; i < 4; ++i) tags->add_values()->set_int64_value(i);
  request.add_params()->set_string_value("ref-7f3a");
  return request;
}

void BM_ParamsFromProto(benchmark::State& state) {
  const v1::ExecuteRequest request = MakeRequest();
  for (auto _ : state) {
    absl::StatusOr<std::vector<Value>> params = ParamsFromProto(request.params(), "");
    if (!params.ok()) {
      state.SkipWithError("ParamsFromProto failed");
      break;
    }
    benchmark::DoNotOptimize(params->data());
  }
  state.SetItemsProcessed(state.iterations() * request.params_size());
}
BENCHMARK(BM_ParamsFromProto);

}  // namespace
}  // namespace sessionbroker::transport

BENCHMARK_MAIN();
