// broker-bench: closed-loop load generator for a running session broker.
//
// N callers, spread round-robin over C channels (one TCP connection each),
// each keep exactly one call outstanding: when a call completes, its caller
// records the latency and issues the next one at once. Everything runs on the
// gRPC callback API, so 256 callers cost no more threads than one. See
// kUsage below (or --help) for the modes and flags.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/empty.pb.h"
#include "google/protobuf/wrappers.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/status.h"
#include "server/core/base/escape.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "broker address");
ABSL_FLAG(std::string, mode, "execute",
          "execute | pipeline | batch | pipeline-batch | health | session-tx | session-churn | "
          "sessions-idle");
ABSL_FLAG(int, callers, 1, "concurrent callers, one call outstanding each");
ABSL_FLAG(int, channels, 0, "channels (TCP connections); 0 = min(callers, 4)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "measured window");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "unmeasured time before the window");
ABSL_FLAG(int64_t, requests, 0, "measured calls (iterations); > 0 replaces --duration");
ABSL_FLAG(absl::Duration, call_timeout, absl::Seconds(10), "deadline of each call");
ABSL_FLAG(std::string, sql, "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
          "statement of --mode=execute and --mode=pipeline");
ABSL_FLAG(int64_t, aid_max, 1000000, "aid parameters are uniform in [1, aid_max]");
ABSL_FLAG(int, scale, 10, "pgbench scale (session-tx: tid in [1, 10*scale], bid in [1, scale])");
ABSL_FLAG(std::string, batch, "tx3",
          "statements of --mode=batch and --mode=pipeline-batch: tx3 (session-tx's UPDATE, "
          "SELECT, INSERT on the pgbench tables) or int8 (three relation-free SELECT $1::int8)");
ABSL_FLAG(std::string, client_id, "broker-bench", "sent as x-client-id metadata");
ABSL_FLAG(std::string, token, "",
          "sent as `authorization: Bearer <token>` metadata when not empty (a broker with a "
          "clients file)");
ABSL_FLAG(bool, json, false, "print one JSON object on stdout");
ABSL_FLAG(std::string, label, "", "free text copied into the output");
ABSL_FLAG(int, broker_pid, 0, "sessions-idle: the broker's pid (its VmRSS is read)");
ABSL_FLAG(std::string, sessions, "10000", "sessions-idle: session counts, e.g. 10000,100000");

namespace {

namespace pb = ::sessionbroker::v1;

constexpr char kUsage[] = R"(broker-bench: closed-loop gRPC load generator for the session broker.

Usage: broker-bench [--flag=value ...]

Each of --callers keeps exactly one call outstanding and issues the next one as
soon as the previous completes (closed loop); callers are spread round-robin
over --channels TCP connections. Calls made during --warmup are not counted.
calls = successful calls (iterations) completed in the measured window;
throughput = calls / window; latencies (nearest-rank percentiles) are those of
the successful calls; errors = failed calls completed in the window, by gRPC
status code.

Modes (--mode):
  execute        Execute(--sql) one-shot, with $1 = uniform random aid in
                 [1, --aid_max] (int64_value). A --sql without $1 gets no
                 parameter.
  pipeline       the execute mode's calls over Pipeline streams, one per
                 channel: each caller sends its call (with --call_timeout as
                 its timeout) on its channel's stream and awaits its result by
                 id; calls submitted while a message is being written go
                 together in the next one. --json adds calls_per_message and
                 results_per_message.
  batch          one ExecuteBatch of 3 statements (--batch): one all-or-nothing
                 transaction per call, the session-tx transaction in one round
                 trip. --batch=tx3 is session-tx's UPDATE, SELECT, INSERT (needs
                 the pgbench tables); --batch=int8 is SELECT $1::int8 three
                 times, relation-free (the pipelined engine takes it).
  pipeline-batch the batch mode's calls as execute_batch calls on Pipeline
                 streams, one per channel (as --mode=pipeline).
  health         grpc.health.v1.Health/Check (service ""): the bare gRPC round
                 trip of the same broker process.
  session-tx     each caller leases a session (BeginSession, ttl 60s; each call
                 renews it), then loops over pgbench-like transactions:
                 BeginTransaction, UPDATE pgbench_accounts, SELECT abalance,
                 INSERT INTO pgbench_history, Commit. One iteration = one
                 transaction (latency and throughput per transaction); after an
                 error the transaction is rolled back. Sessions are ended at the
                 end. Needs pgbench tables (pgbench -i -s SCALE).
  session-churn  one iteration = BeginSession + EndSession.
  sessions-idle  memory per idle session: reads the broker's VmRSS
                 (/proc/--broker_pid/status), opens idle sessions (ttl 1h) with
                 --callers in flight up to each count of --sessions, waits 1s and
                 reads VmRSS again after each; reports bytes per session, then
                 ends every session it opened and reports how long that took.
                 The broker must allow that many sessions:
                   BROKER_MAX_SESSIONS >= the largest count and
                   BROKER_MAX_SESSIONS_PER_CLIENT >= it (or 0 = no cap),
                 as every session is opened under the same --client_id.

Flags:
  --target=127.0.0.1:50051   broker address
  --mode=execute             see above
  --callers=1                concurrent callers (one call outstanding each)
  --channels=0               channels, each its own TCP connection; 0 = min(callers, 4)
  --duration=10s             measured window (ignored when --requests > 0)
  --warmup=2s                unmeasured time before the window
  --requests=0               measured calls (iterations) instead of a duration
  --call_timeout=10s         deadline of each call
  --sql="SELECT abalance FROM pgbench_accounts WHERE aid = $1"   (execute)
  --aid_max=1000000          aid range (pgbench scale 10 has 1,000,000 accounts)
  --scale=10                 pgbench scale (session-tx, batch: tid and bid ranges)
  --batch=tx3                statements of batch and pipeline-batch: tx3 | int8
  --client_id=broker-bench   sent as x-client-id metadata
  --token=                   sent as authorization: Bearer metadata when set
  --json                     print one JSON object on stdout (latencies in us)
  --label=                   free text copied into the output
  --broker_pid=              sessions-idle: the broker's process id
  --sessions=10000           sessions-idle: counts to reach, e.g. 10000,100000

Exit status: 0 when the run completed (even with call errors), 2 on bad flags,
1 when the target could not be reached (no channel ready within 10 s) or calls
were still in flight long after their deadline.

Example:
  broker-bench --target=127.0.0.1:50051 --mode=execute --callers=64 --duration=10s
)";

// ---- small helpers --------------------------------------------------------

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN_CODE";
  }
}

// A JSON string literal, quotes included (the broker's one JSON escaper).
std::string JsonString(absl::string_view s) {
  std::string out;
  ::sessionbroker::core::AppendJsonString(s, &out);
  return out;
}

// The broker's resident set size, from /proc/PID/status (VmRSS, in kB).
std::optional<int64_t> ReadRssBytes(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(
        absl::string_view(line).substr(6), absl::ByAnyChar(" \t"), absl::SkipEmpty());
    int64_t kb = 0;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &kb)) return kb * 1024;
  }
  return std::nullopt;
}

std::string FormatBytes(double bytes) {
  return absl::StrFormat("%.1fMiB", bytes / (1024.0 * 1024.0));
}

// Counts down once per caller; the main thread waits for zero.
class Latch {
 public:
  explicit Latch(int count) : count_(count) {}

  void CountDown() {
    absl::MutexLock lock(&mu_);
    --count_;
  }

  // True when the count reached zero before the deadline.
  bool WaitUntil(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(this, &Latch::Done), deadline);
  }

  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }

 private:
  bool Done() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ <= 0; }

  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_);
};

// Errors by status code, with the first message of each. Only the error path
// takes the lock.
class ErrorTable {
 public:
  struct Entry {
    int64_t count = 0;
    std::string first_message;
  };

  void Add(absl::string_view code, absl::string_view message) {
    absl::MutexLock lock(&mu_);
    Entry& entry = entries_[std::string(code)];
    if (entry.count++ == 0) entry.first_message = std::string(message);
    if (total_++ == 0) first_ = absl::StrCat(code, ": ", message);
  }

  void Add(const grpc::Status& status) {
    Add(CodeName(status.error_code()), status.error_message());
  }

  int64_t total() {
    absl::MutexLock lock(&mu_);
    return total_;
  }
  std::string first() {
    absl::MutexLock lock(&mu_);
    return first_;
  }
  std::map<std::string, Entry> entries() {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

  // "  CODE: n (first: message)" lines, for the human output.
  std::string HumanLines() {
    std::string out;
    for (const auto& [code, entry] : entries()) {
      absl::StrAppend(&out, "  ", code, ": ", entry.count, " (first: ", entry.first_message, ")\n");
    }
    return out;
  }

  // "errors_by_code": {...}, "first_error": "..."
  std::string JsonFields() {
    std::string out = "\"errors_by_code\":{";
    bool first_entry = true;
    for (const auto& [code, entry] : entries()) {
      if (!first_entry) out += ',';
      first_entry = false;
      absl::StrAppend(&out, JsonString(code), ":", entry.count);
    }
    absl::StrAppend(&out, "},\"first_error\":", JsonString(first()));
    return out;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  std::string first_ ABSL_GUARDED_BY(mu_);
};

// ---- options ---------------------------------------------------------------

enum class Mode {
  kExecute,
  kPipeline,
  kBatch,
  kPipelineBatch,
  kHealth,
  kSessionTx,
  kSessionChurn,
  kSessionsIdle
};

struct Options {
  std::string target;
  std::string mode_name;
  Mode mode = Mode::kExecute;
  int callers = 1;
  int channels = 1;
  absl::Duration duration;
  absl::Duration warmup;
  int64_t requests = 0;
  absl::Duration call_timeout_abs;
  std::chrono::nanoseconds call_timeout{0};
  std::string sql;
  bool sql_has_param = true;
  int64_t aid_max = 0;
  int scale = 0;
  bool batch_tx3 = true;  // --batch=tx3 (else int8)
  std::string client_id;
  std::string token;
  bool json = false;
  std::string label;
  int broker_pid = 0;
  std::vector<int64_t> sessions;
};

// Parses argv into the flags above. absl::ParseCommandLine exits with status 1
// on a bad flag; this tool promises 2, so it parses with the public reflection
// API instead. Returns an exit code, or -1 to go on.
int ParseFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::StartsWith(arg, "-") || arg == "-" || arg == "--") {
      std::cerr << "broker-bench: unexpected argument '" << arg << "' (see --help)\n";
      return 2;
    }
    arg.remove_prefix(absl::StartsWith(arg, "--") ? 2 : 1);
    if (arg == "help" || arg == "h" || arg == "helpfull") {
      std::cout << kUsage;
      return 0;
    }
    absl::string_view name = arg;
    std::optional<absl::string_view> value;
    if (const size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag != nullptr && !absl::EndsWith(flag->Filename(), "broker_bench.cc")) flag = nullptr;
    if (flag == nullptr && !value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() &&
          absl::EndsWith(negated->Filename(), "broker_bench.cc")) {
        flag = negated;
        value = "false";
      }
    }
    if (flag == nullptr) {
      std::cerr << "broker-bench: unknown flag --" << name << " (see --help)\n";
      return 2;
    }
    if (!value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        std::cerr << "broker-bench: --" << name << " needs a value\n";
        return 2;
      }
    }
    std::string error;
    if (!flag->ParseFrom(*value, &error)) {
      std::cerr << "broker-bench: --" << name << "=" << *value << ": " << error << "\n";
      return 2;
    }
  }
  return -1;
}

// Reads and checks the flags. Returns an exit code, or -1 to go on.
int LoadOptions(Options* o) {
  auto bad = [](absl::string_view message) {
    std::cerr << "broker-bench: " << message << " (see --help)\n";
    return 2;
  };
  o->target = absl::GetFlag(FLAGS_target);
  o->mode_name = absl::GetFlag(FLAGS_mode);
  if (o->mode_name == "execute") {
    o->mode = Mode::kExecute;
  } else if (o->mode_name == "pipeline") {
    o->mode = Mode::kPipeline;
  } else if (o->mode_name == "batch") {
    o->mode = Mode::kBatch;
  } else if (o->mode_name == "pipeline-batch") {
    o->mode = Mode::kPipelineBatch;
  } else if (o->mode_name == "health") {
    o->mode = Mode::kHealth;
  } else if (o->mode_name == "session-tx") {
    o->mode = Mode::kSessionTx;
  } else if (o->mode_name == "session-churn") {
    o->mode = Mode::kSessionChurn;
  } else if (o->mode_name == "sessions-idle") {
    o->mode = Mode::kSessionsIdle;
  } else {
    return bad(absl::StrCat("unknown --mode=", o->mode_name));
  }
  o->callers = absl::GetFlag(FLAGS_callers);
  if (o->callers < 1) return bad("--callers must be at least 1");
  const int channels = absl::GetFlag(FLAGS_channels);
  if (channels < 0) return bad("--channels must be 0 (automatic) or more");
  o->channels = channels == 0 ? std::min(o->callers, 4) : std::min(channels, o->callers);
  o->duration = absl::GetFlag(FLAGS_duration);
  o->warmup = absl::GetFlag(FLAGS_warmup);
  o->requests = absl::GetFlag(FLAGS_requests);
  if (o->requests < 0) return bad("--requests must be 0 (use --duration) or more");
  if (o->requests == 0 && o->duration <= absl::ZeroDuration()) {
    return bad("--duration must be positive");
  }
  if (o->warmup < absl::ZeroDuration()) return bad("--warmup must not be negative");
  o->call_timeout_abs = absl::GetFlag(FLAGS_call_timeout);
  if (o->call_timeout_abs <= absl::ZeroDuration()) return bad("--call_timeout must be positive");
  o->call_timeout = absl::ToChronoNanoseconds(o->call_timeout_abs);
  o->sql = absl::GetFlag(FLAGS_sql);
  if (o->sql.empty()) return bad("--sql must not be empty");
  o->sql_has_param = absl::StrContains(o->sql, "$1");
  o->aid_max = absl::GetFlag(FLAGS_aid_max);
  if (o->aid_max < 1) return bad("--aid_max must be at least 1");
  o->scale = absl::GetFlag(FLAGS_scale);
  if (o->scale < 1) return bad("--scale must be at least 1");
  const std::string batch = absl::GetFlag(FLAGS_batch);
  if (batch != "tx3" && batch != "int8") return bad("--batch must be tx3 or int8");
  o->batch_tx3 = batch == "tx3";
  o->client_id = absl::GetFlag(FLAGS_client_id);
  o->token = absl::GetFlag(FLAGS_token);
  o->json = absl::GetFlag(FLAGS_json);
  o->label = absl::GetFlag(FLAGS_label);
  o->broker_pid = absl::GetFlag(FLAGS_broker_pid);
  if (o->mode == Mode::kSessionsIdle) {
    if (o->broker_pid <= 0) return bad("--mode=sessions-idle needs --broker_pid");
    if (!ReadRssBytes(o->broker_pid)) {
      return bad(absl::StrCat("cannot read VmRSS from /proc/", o->broker_pid, "/status"));
    }
    int64_t previous = 0;
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_sessions), ',')) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(part, &n) || n <= previous) {
        return bad("--sessions must be a list of increasing positive counts, e.g. 10000,100000");
      }
      o->sessions.push_back(n);
      previous = n;
    }
  }
  return -1;
}

// ---- channels ----------------------------------------------------------------

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  // Its own subchannel (TCP connection) per channel: without these, channels
  // with equal arguments share one connection.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("sessionbroker.bench.channel_index", index);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

const char* StateName(grpc_connectivity_state state) {
  switch (state) {
    case GRPC_CHANNEL_IDLE:
      return "IDLE";
    case GRPC_CHANNEL_CONNECTING:
      return "CONNECTING";
    case GRPC_CHANNEL_READY:
      return "READY";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "TRANSIENT_FAILURE";
    case GRPC_CHANNEL_SHUTDOWN:
      return "SHUTDOWN";
  }
  return "?";
}

// The standard health service, called without its generated stubs (Debian's
// gRPC ships none): HealthCheckRequest{service: ""} serializes to zero bytes,
// as google.protobuf.Empty does, and HealthCheckResponse{status = 1 (enum)}
// has the wire form of google.protobuf.Int32Value{value = 1}.
using HealthStub =
    grpc::TemplatedGenericStub<google::protobuf::Empty, google::protobuf::Int32Value>;
// gRPC keeps a pointer to the method name for the life of the call (a static
// slice), so the string must outlive every call: never a temporary.
const std::string& HealthCheckMethod() {
  static const std::string* const method = new std::string("/grpc.health.v1.Health/Check");
  return *method;
}
constexpr int32_t kServing = 1;

class PipelineMux;

struct Endpoint {
  std::shared_ptr<grpc::Channel> channel;
  // --mode=pipeline: the channel's one Pipeline stream.
  std::unique_ptr<PipelineMux> mux;
  std::unique_ptr<pb::SessionBroker::Stub> stub;
  std::unique_ptr<HealthStub> health;
};

// ---- load modes: callers -------------------------------------------------------

// State shared by the callers of one load run.
struct LoadShared {
  const Options* opt = nullptr;
  bool count_mode = false;  // --requests
  int64_t warmup_end_ns = 0;
  int64_t measure_end_ns = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> tickets{0};  // measured units left to issue (count mode)
  std::atomic<int64_t> warmup_errors{0};
  ErrorTable errors;
  Latch* done = nullptr;
};

// One closed-loop caller. A caller's callbacks run one after the other (it
// has one call outstanding), so its state needs no lock. A "unit" is what is
// measured: one call, or one iteration of several calls.
class LoadCaller {
 public:
  LoadCaller(LoadShared* shared, Endpoint* endpoint) : shared_(shared), endpoint_(endpoint) {
    latencies_.reserve(shared->count_mode
                           ? static_cast<size_t>(shared->opt->requests / shared->opt->callers + 16)
                           : 4096);
  }
  virtual ~LoadCaller() = default;
  LoadCaller(const LoadCaller&) = delete;
  LoadCaller& operator=(const LoadCaller&) = delete;

  void Start() { NextUnit(); }

  // Read after the run (the latch orders them after the callbacks).
  const std::vector<int64_t>& latencies() const { return latencies_; }
  int64_t last_done_ns() const { return last_done_ns_; }

 protected:
  // Starts one unit; ends it with EndUnit / EndUnitError.
  virtual void IssueUnit() = 0;

  // A fresh context for the next call (a ClientContext serves one call).
  grpc::ClientContext* NewContext() {
    ctx_.emplace();
    ctx_->set_deadline(std::chrono::system_clock::now() + shared_->opt->call_timeout);
    ctx_->AddMetadata("x-client-id", shared_->opt->client_id);
    if (!shared_->opt->token.empty()) {
      ctx_->AddMetadata("authorization", "Bearer " + shared_->opt->token);
    }
    return &*ctx_;
  }

  int64_t Uniform(int64_t lo, int64_t hi) {
    return absl::Uniform(absl::IntervalClosed, gen_, lo, hi);
  }
  int64_t RandomAid() { return Uniform(1, shared_->opt->aid_max); }

  // Ends the current unit and starts the next (or finishes the caller). Must
  // be the last thing a callback does: the caller may be destroyed after it.
  void EndUnit(const grpc::Status& status) {
    if (status.ok()) {
      Record(true, {}, {});
    } else {
      Record(false, CodeName(status.error_code()), status.error_message());
    }
    NextUnit();
  }
  void EndUnitError(absl::string_view code, absl::string_view message) {
    Record(false, code, message);
    NextUnit();
  }

  LoadShared* const shared_;
  Endpoint* const endpoint_;
  std::optional<grpc::ClientContext> ctx_;

 private:
  void Record(bool ok, absl::string_view code, absl::string_view message) {
    const int64_t now = NowNs();
    const bool measured = shared_->count_mode
                              ? ticket_
                              : now >= shared_->warmup_end_ns && now < shared_->measure_end_ns;
    if (!measured) {
      if (!ok) shared_->warmup_errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    last_done_ns_ = now;
    if (ok) {
      latencies_.push_back(now - unit_start_ns_);
    } else {
      shared_->errors.Add(code, message);
    }
  }

  void NextUnit() {
    const int64_t now = NowNs();
    bool go;
    if (shared_->count_mode) {
      ticket_ = now >= shared_->warmup_end_ns;
      go = !ticket_ || shared_->tickets.fetch_sub(1, std::memory_order_relaxed) > 0;
    } else {
      go = now < shared_->measure_end_ns;
    }
    if (!go) {
      shared_->done->CountDown();  // last touch of this caller
      return;
    }
    unit_start_ns_ = now;
    IssueUnit();
  }

  absl::InsecureBitGen gen_;
  std::vector<int64_t> latencies_;
  bool ticket_ = false;
  int64_t unit_start_ns_ = 0;
  int64_t last_done_ns_ = 0;
};

class ExecuteCaller final : public LoadCaller {
 public:
  ExecuteCaller(LoadShared* shared, Endpoint* endpoint) : LoadCaller(shared, endpoint) {
    req_.set_sql(shared->opt->sql);
    if (shared->opt->sql_has_param) req_.add_params()->set_int64_value(1);
  }

 private:
  void IssueUnit() override {
    if (req_.params_size() > 0) req_.mutable_params(0)->set_int64_value(RandomAid());
    endpoint_->stub->async()->Execute(NewContext(), &req_, &resp_,
                                      [this](grpc::Status status) { EndUnit(status); });
  }

  pb::ExecuteRequest req_;
  pb::ExecuteResponse resp_;
};

// One Pipeline stream shared by the callers of a channel: each Submit()ted
// call goes out in the next message (one write in flight; calls submitted
// meanwhile are coalesced into the one after), and each result is handed to
// its call's callback by id. Callbacks run on gRPC's threads, never under
// the lock (a callback usually submits the caller's next call).
class PipelineMux final
    : public grpc::ClientBidiReactor<pb::PipelineRequest, pb::PipelineResponse> {
 public:
  using Callback = std::function<void(const pb::PipelineResult&)>;

  PipelineMux(pb::SessionBroker::Stub* stub, const std::string& client_id) {
    ctx_.AddMetadata("x-client-id", client_id);
    stub->async()->Pipeline(&ctx_, this);
    StartRead(&response_);
    AddHold();  // released by Close(): writes may follow until then
    StartCall();
  }

  // `call.id()` must be unique among this stream's calls in flight.
  void Submit(pb::PipelineCall call, Callback done) {
    bool write = false;
    {
      absl::ReleasableMutexLock lock(&mu_);
      if (ended_) {
        lock.Release();
        done(Failed(call.id(), "the Pipeline stream has ended"));
        return;
      }
      waiting_[call.id()] = std::move(done);
      *next_.add_calls() = std::move(call);
      ++submitted_;
      write = !writing_;
      if (write) TakeNextLocked();
    }
    if (write) StartWrite(&sending_);
  }

  // After the last call: half-closes and waits for the stream's end.
  grpc::Status Close() {
    {
      absl::ReleasableMutexLock lock(&mu_);
      closing_ = true;
      if (!writing_) {
        lock.Release();
        StartWritesDone();
      }
    }
    RemoveHold();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return status_;
  }

  // Calls sent per request message and results per response message.
  double calls_per_message() {
    absl::MutexLock lock(&mu_);
    return messages_sent_ == 0 ? 0 : static_cast<double>(submitted_) / messages_sent_;
  }
  int64_t submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  // Results that matched a call waiting for one.
  int64_t answered() {
    absl::MutexLock lock(&mu_);
    return answered_;
  }
  double results_per_message() {
    absl::MutexLock lock(&mu_);
    return messages_read_ == 0 ? 0 : static_cast<double>(results_read_) / messages_read_;
  }

  void OnWriteDone(bool ok) override {
    bool write = false, writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (ok && next_.calls_size() > 0) {
        TakeNextLocked();
        write = true;
      } else if (closing_) {
        writes_done = true;
      }
    }
    if (write) StartWrite(&sending_);
    if (writes_done) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::vector<std::pair<Callback, const pb::PipelineResult*>> ready;
    {
      absl::MutexLock lock(&mu_);
      ++messages_read_;
      results_read_ += response_.results_size();
      for (const pb::PipelineResult& r : response_.results()) {
        auto it = waiting_.find(r.id());
        if (it == waiting_.end()) continue;
        ready.emplace_back(std::move(it->second), &r);
        waiting_.erase(it);
        ++answered_;
      }
    }
    for (auto& [done, result] : ready) done(*result);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    std::map<uint64_t, Callback> orphans;
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      orphans.swap(waiting_);
    }
    for (auto& [id, done] : orphans) {
      done(Failed(id, absl::StrCat("the Pipeline stream ended: ", status.error_message())));
    }
    absl::MutexLock lock(&mu_);
    status_ = status;
    done_ = true;
  }

 private:
  static pb::PipelineResult Failed(uint64_t id, const std::string& message) {
    pb::PipelineResult r;
    r.set_id(id);
    r.mutable_status()->set_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
    r.mutable_status()->set_message(message);
    return r;
  }
  void TakeNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sending_.Clear();
    sending_.Swap(&next_);
    writing_ = true;
    ++messages_sent_;
  }

  grpc::ClientContext ctx_;
  pb::PipelineResponse response_;  // the read in flight
  pb::PipelineRequest sending_;    // the write in flight
  absl::Mutex mu_;
  pb::PipelineRequest next_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Callback> waiting_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  int64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t answered_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t messages_sent_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t messages_read_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t results_read_ ABSL_GUARDED_BY(mu_) = 0;
};

// Execute(--sql) as a call on its channel's Pipeline stream, awaiting its
// result: a closed loop like ExecuteCaller.
class PipelineCaller final : public LoadCaller {
 public:
  PipelineCaller(LoadShared* shared, Endpoint* endpoint, uint64_t id)
      : LoadCaller(shared, endpoint) {
    call_.set_id(id);
    call_.mutable_execute()->set_sql(shared->opt->sql);
    if (shared->opt->sql_has_param) call_.mutable_execute()->add_params()->set_int64_value(1);
    const int64_t timeout_ns = shared->opt->call_timeout.count();
    call_.mutable_timeout()->set_seconds(timeout_ns / 1000000000);
    call_.mutable_timeout()->set_nanos(static_cast<int32_t>(timeout_ns % 1000000000));
  }

 private:
  void IssueUnit() override {
    if (call_.execute().params_size() > 0) {
      call_.mutable_execute()->mutable_params(0)->set_int64_value(RandomAid());
    }
    endpoint_->mux->Submit(call_, [this](const pb::PipelineResult& r) {
      if (r.has_status()) {
        EndUnit(
            grpc::Status(static_cast<grpc::StatusCode>(r.status().code()), r.status().message()));
      } else {
        EndUnit(grpc::Status::OK);
      }
    });
  }

  pb::PipelineCall call_;
};

// The 3 statements of --mode=batch and --mode=pipeline-batch (--batch), with
// fresh random parameters per call.
class BatchStatements {
 public:
  explicit BatchStatements(const Options& opt) : tx3_(opt.batch_tx3), scale_(opt.scale) {
    if (tx3_) {
      Add("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", 2);
      Add("SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1);
      Add("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
          "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
          4);
    } else {
      for (int i = 0; i < 3; ++i) Add("SELECT $1::int8", 1);
    }
  }

  // Sets `request`'s parameters as session-tx sets its transaction's.
  template <typename Uniform>
  void Randomize(pb::ExecuteBatchRequest* request, int64_t aid, Uniform uniform) const {
    if (request->statements_size() == 0) *request = request_;
    auto set = [request](int statement, int param, int64_t v) {
      request->mutable_statements(statement)->mutable_params(param)->set_int64_value(v);
    };
    if (!tx3_) {
      for (int i = 0; i < 3; ++i) set(i, 0, uniform(1, 1000000));
      return;
    }
    const int64_t delta = uniform(-5000, 5000);
    set(0, 0, delta);
    set(0, 1, aid);
    set(1, 0, aid);
    set(2, 0, uniform(1, 10 * scale_));
    set(2, 1, uniform(1, scale_));
    set(2, 2, aid);
    set(2, 3, delta);
  }

 private:
  void Add(const std::string& sql, int params) {
    pb::Statement* s = request_.add_statements();
    s->set_sql(sql);
    for (int i = 0; i < params; ++i) s->add_params()->set_int64_value(1);
  }

  const bool tx3_;
  const int64_t scale_;
  pb::ExecuteBatchRequest request_;
};

// One unary ExecuteBatch (BatchStatements) per unit.
class BatchCaller final : public LoadCaller {
 public:
  BatchCaller(LoadShared* shared, Endpoint* endpoint)
      : LoadCaller(shared, endpoint), statements_(*shared->opt) {}

 private:
  void IssueUnit() override {
    statements_.Randomize(&req_, RandomAid(),
                          [this](int64_t lo, int64_t hi) { return Uniform(lo, hi); });
    endpoint_->stub->async()->ExecuteBatch(NewContext(), &req_, &resp_,
                                           [this](grpc::Status status) { EndUnit(status); });
  }

  BatchStatements statements_;
  pb::ExecuteBatchRequest req_;
  pb::ExecuteBatchResponse resp_;
};

// The batch mode's call as an execute_batch call on its channel's Pipeline
// stream, awaiting its result: a closed loop like BatchCaller.
class PipelineBatchCaller final : public LoadCaller {
 public:
  PipelineBatchCaller(LoadShared* shared, Endpoint* endpoint, uint64_t id)
      : LoadCaller(shared, endpoint), statements_(*shared->opt) {
    call_.set_id(id);
    const int64_t timeout_ns = shared->opt->call_timeout.count();
    call_.mutable_timeout()->set_seconds(timeout_ns / 1000000000);
    call_.mutable_timeout()->set_nanos(static_cast<int32_t>(timeout_ns % 1000000000));
  }

 private:
  void IssueUnit() override {
    statements_.Randomize(call_.mutable_execute_batch(), RandomAid(),
                          [this](int64_t lo, int64_t hi) { return Uniform(lo, hi); });
    endpoint_->mux->Submit(call_, [this](const pb::PipelineResult& r) {
      if (r.has_status()) {
        EndUnit(
            grpc::Status(static_cast<grpc::StatusCode>(r.status().code()), r.status().message()));
      } else if (!r.has_execute_batch() || r.execute_batch().results_size() != 3) {
        EndUnitError("BAD_RESULT", "an execute_batch call did not get its 3 results");
      } else {
        EndUnit(grpc::Status::OK);
      }
    });
  }

  BatchStatements statements_;
  pb::PipelineCall call_;
};

class HealthCaller final : public LoadCaller {
 public:
  using LoadCaller::LoadCaller;

 private:
  void IssueUnit() override {
    endpoint_->health->UnaryCall(NewContext(), HealthCheckMethod(), grpc::StubOptions(), &req_,
                                 &resp_, [this](grpc::Status status) {
                                   if (status.ok() && resp_.value() != kServing) {
                                     EndUnitError("NOT_SERVING",
                                                  absl::StrCat("health status ", resp_.value()));
                                   } else {
                                     EndUnit(status);
                                   }
                                 });
  }

  google::protobuf::Empty req_;
  google::protobuf::Int32Value resp_;
};

// True when a failed session call says the session itself is gone (a new one
// is needed), from its code and the "sessionbroker-reason" trailer.
bool SessionGone(const grpc::Status& status, const grpc::ClientContext& ctx) {
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) return true;
  const auto& trailers = ctx.GetServerTrailingMetadata();
  const auto it = trailers.find("sessionbroker-reason");
  if (it == trailers.end()) return false;
  const absl::string_view reason(it->second.data(), it->second.size());
  return absl::StartsWith(reason, "SESSION_") || reason == "BROKER_SHUTDOWN";
}

// pgbench's TPC-B-like transaction in a session: BeginTransaction, UPDATE,
// SELECT, INSERT, Commit. One unit = one transaction.
class SessionTxCaller final : public LoadCaller {
 public:
  SessionTxCaller(LoadShared* shared, Endpoint* endpoint) : LoadCaller(shared, endpoint) {
    *begin_session_req_.mutable_ttl() = ProtoSeconds(60);
    begin_session_req_.set_label("broker-bench session-tx");
    update_req_.set_sql("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2");
    update_req_.add_params();
    update_req_.add_params();
    select_req_.set_sql("SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    select_req_.add_params();
    insert_req_.set_sql(
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)");
    for (int i = 0; i < 4; ++i) insert_req_.add_params();
  }

  const std::string& session() const { return session_; }

  static google::protobuf::Duration ProtoSeconds(int64_t seconds) {
    google::protobuf::Duration d;
    d.set_seconds(seconds);
    return d;
  }

 private:
  using Step = void (SessionTxCaller::*)();

  void IssueUnit() override {
    const int64_t aid = RandomAid();
    const int64_t delta = Uniform(-5000, 5000);
    const int64_t scale = shared_->opt->scale;
    update_req_.mutable_params(0)->set_int64_value(delta);
    update_req_.mutable_params(1)->set_int64_value(aid);
    select_req_.mutable_params(0)->set_int64_value(aid);
    insert_req_.mutable_params(0)->set_int64_value(Uniform(1, 10 * scale));
    insert_req_.mutable_params(1)->set_int64_value(Uniform(1, scale));
    insert_req_.mutable_params(2)->set_int64_value(aid);
    insert_req_.mutable_params(3)->set_int64_value(delta);
    if (session_.empty()) {
      BeginSession();
    } else {
      BeginTransaction();
    }
  }

  void SetSession(const std::string& name) {
    session_ = name;
    begin_tx_req_.set_session(name);
    update_req_.set_session(name);
    select_req_.set_session(name);
    insert_req_.set_session(name);
    commit_req_.set_session(name);
    rollback_req_.set_session(name);
  }

  // The completion of a step: on success go on with `Next`, else fail. (The
  // step is a template argument so that the lambda captures only `this` and
  // fits std::function's inline storage: no allocation per call.)
  template <Step Next>
  std::function<void(grpc::Status)> Then() {
    return [this](grpc::Status status) {
      if (status.ok()) {
        (this->*Next)();
      } else {
        Fail(status);
      }
    };
  }

  void BeginSession() {
    endpoint_->stub->async()->BeginSession(NewContext(), &begin_session_req_, &session_resp_,
                                           [this](grpc::Status status) {
                                             if (!status.ok()) {
                                               EndUnit(status);
                                               return;
                                             }
                                             SetSession(session_resp_.name());
                                             BeginTransaction();
                                           });
  }
  void BeginTransaction() {
    endpoint_->stub->async()->BeginTransaction(NewContext(), &begin_tx_req_, &begin_tx_resp_,
                                               Then<&SessionTxCaller::Update>());
  }
  void Update() {
    endpoint_->stub->async()->Execute(NewContext(), &update_req_, &exec_resp_,
                                      Then<&SessionTxCaller::Select>());
  }
  void Select() {
    endpoint_->stub->async()->Execute(NewContext(), &select_req_, &exec_resp_,
                                      Then<&SessionTxCaller::Insert>());
  }
  void Insert() {
    endpoint_->stub->async()->Execute(NewContext(), &insert_req_, &exec_resp_,
                                      Then<&SessionTxCaller::Commit>());
  }
  void Commit() {
    endpoint_->stub->async()->Commit(NewContext(), &commit_req_, &commit_resp_,
                                     [this](grpc::Status status) {
                                       if (status.ok()) {
                                         EndUnit(status);
                                       } else {
                                         Fail(status);
                                       }
                                     });
  }

  // One error per iteration. If the session is gone, the next iteration
  // begins a new one; otherwise whatever transaction is open is rolled back
  // first (Rollback with none open succeeds).
  void Fail(const grpc::Status& status) {
    if (SessionGone(status, *ctx_)) {
      session_.clear();
      EndUnit(status);
      return;
    }
    error_ = status;
    endpoint_->stub->async()->Rollback(
        NewContext(), &rollback_req_, &rollback_resp_, [this](grpc::Status rollback_status) {
          if (!rollback_status.ok() && SessionGone(rollback_status, *ctx_)) {
            session_.clear();
          }
          EndUnit(error_);
        });
  }

  std::string session_;
  grpc::Status error_;
  pb::BeginSessionRequest begin_session_req_;
  pb::Session session_resp_;
  pb::BeginTransactionRequest begin_tx_req_;
  pb::BeginTransactionResponse begin_tx_resp_;
  pb::ExecuteRequest update_req_;
  pb::ExecuteRequest select_req_;
  pb::ExecuteRequest insert_req_;
  pb::ExecuteResponse exec_resp_;
  pb::CommitRequest commit_req_;
  pb::CommitResponse commit_resp_;
  pb::RollbackRequest rollback_req_;
  pb::RollbackResponse rollback_resp_;
};

// One unit = BeginSession + EndSession.
class SessionChurnCaller final : public LoadCaller {
 public:
  SessionChurnCaller(LoadShared* shared, Endpoint* endpoint) : LoadCaller(shared, endpoint) {
    *begin_req_.mutable_ttl() = SessionTxCaller::ProtoSeconds(60);
    begin_req_.set_label("broker-bench session-churn");
  }

 private:
  void IssueUnit() override {
    endpoint_->stub->async()->BeginSession(
        NewContext(), &begin_req_, &session_resp_, [this](grpc::Status status) {
          if (!status.ok()) {
            EndUnit(status);
            return;
          }
          end_req_.set_session(session_resp_.name());
          endpoint_->stub->async()->EndSession(NewContext(), &end_req_, &end_resp_,
                                               [this](grpc::Status s) { EndUnit(s); });
        });
  }

  pb::BeginSessionRequest begin_req_;
  pb::Session session_resp_;
  pb::EndSessionRequest end_req_;
  pb::EndSessionResponse end_resp_;
};

// ---- load modes: the run -------------------------------------------------------

struct Percentiles {
  int64_t p50 = 0, p90 = 0, p99 = 0, max = 0;
  double mean = 0;
};

// Nearest rank: the smallest value with at least p% of the values <= it.
int64_t NearestRank(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

std::string Ms(int64_t ns) { return absl::StrFormat("%.3fms", static_cast<double>(ns) / 1e6); }
int64_t Us(int64_t ns) { return (ns + 500) / 1000; }

int RunLoad(const Options& opt, std::vector<Endpoint>& endpoints) {
  Latch done(opt.callers);
  LoadShared shared;
  shared.opt = &opt;
  shared.done = &done;
  shared.count_mode = opt.requests > 0;
  shared.tickets.store(opt.requests);

  std::vector<std::unique_ptr<LoadCaller>> callers;
  callers.reserve(static_cast<size_t>(opt.callers));
  for (int i = 0; i < opt.callers; ++i) {
    Endpoint* endpoint = &endpoints[static_cast<size_t>(i % opt.channels)];
    switch (opt.mode) {
      case Mode::kExecute:
        callers.push_back(std::make_unique<ExecuteCaller>(&shared, endpoint));
        break;
      case Mode::kPipeline:
        if (endpoint->mux == nullptr) {
          endpoint->mux = std::make_unique<PipelineMux>(endpoint->stub.get(), opt.client_id);
        }
        callers.push_back(
            std::make_unique<PipelineCaller>(&shared, endpoint, static_cast<uint64_t>(i)));
        break;
      case Mode::kBatch:
        callers.push_back(std::make_unique<BatchCaller>(&shared, endpoint));
        break;
      case Mode::kPipelineBatch:
        if (endpoint->mux == nullptr) {
          endpoint->mux = std::make_unique<PipelineMux>(endpoint->stub.get(), opt.client_id);
        }
        callers.push_back(
            std::make_unique<PipelineBatchCaller>(&shared, endpoint, static_cast<uint64_t>(i)));
        break;
      case Mode::kHealth:
        callers.push_back(std::make_unique<HealthCaller>(&shared, endpoint));
        break;
      case Mode::kSessionTx:
        callers.push_back(std::make_unique<SessionTxCaller>(&shared, endpoint));
        break;
      case Mode::kSessionChurn:
        callers.push_back(std::make_unique<SessionChurnCaller>(&shared, endpoint));
        break;
      case Mode::kSessionsIdle:
        return 2;  // not a load mode
    }
  }

  const int64_t start_ns = NowNs();
  shared.warmup_end_ns = start_ns + absl::ToInt64Nanoseconds(opt.warmup);
  if (!shared.count_mode) {
    shared.measure_end_ns = shared.warmup_end_ns + absl::ToInt64Nanoseconds(opt.duration);
  }
  for (auto& caller : callers) caller->Start();

  // A unit is at most 6 calls (session-tx with a rollback), each bounded by
  // its deadline; past that, something is stuck.
  const absl::Duration drain_bound = 6 * opt.call_timeout_abs + absl::Seconds(5);
  bool drained;
  if (shared.count_mode) {
    // Waits as long as calls keep completing (each has a deadline).
    drained = done.WaitUntil(absl::InfiniteFuture());
  } else {
    const absl::Time end =
        absl::Now() + absl::Nanoseconds(shared.measure_end_ns - NowNs()) + drain_bound;
    drained = done.WaitUntil(end);
  }
  if (!drained) {
    std::cerr << "broker-bench: " << done.count() << " callers still had a call in flight "
              << absl::FormatDuration(drain_bound) << " after the end; giving up\n";
    std::fflush(stdout);
    std::_Exit(1);
  }

  // Pipeline streams end cleanly (half-close, then the broker's OK).
  double calls_per_message = 0, results_per_message = 0;
  int64_t submitted = 0, answered = 0;
  for (Endpoint& e : endpoints) {
    if (e.mux == nullptr) continue;
    submitted += e.mux->submitted();
    answered += e.mux->answered();
    calls_per_message += e.mux->calls_per_message() / opt.channels;
    results_per_message += e.mux->results_per_message() / opt.channels;
    const grpc::Status status = e.mux->Close();
    if (!status.ok()) {
      shared.errors.Add(absl::StrCat("STREAM_", CodeName(status.error_code())),
                        status.error_message());
    }
    e.mux.reset();
  }

  // Sessions the callers leased are ended, so the broker is left clean.
  int64_t end_errors = 0;
  if (opt.mode == Mode::kSessionTx) {
    for (size_t i = 0; i < callers.size(); ++i) {
      const std::string& name = static_cast<SessionTxCaller*>(callers[i].get())->session();
      if (name.empty()) continue;
      grpc::ClientContext ctx;
      // Cleanup gets at least 10s, even when --call_timeout is tiny.
      ctx.set_deadline(
          std::chrono::system_clock::now() +
          std::max<std::chrono::nanoseconds>(opt.call_timeout, std::chrono::seconds(10)));
      ctx.AddMetadata("x-client-id", opt.client_id);
      if (!opt.token.empty()) ctx.AddMetadata("authorization", "Bearer " + opt.token);
      pb::EndSessionRequest req;
      req.set_session(name);
      pb::EndSessionResponse resp;
      const grpc::Status status =
          endpoints[i % endpoints.size()].stub->EndSession(&ctx, req, &resp);
      if (!status.ok()) {
        ++end_errors;
        std::cerr << "broker-bench: EndSession: " << CodeName(status.error_code()) << ": "
                  << status.error_message() << "\n";
      }
    }
  }

  std::vector<int64_t> all;
  size_t total = 0;
  int64_t last_done_ns = 0;
  for (const auto& caller : callers) {
    total += caller->latencies().size();
    last_done_ns = std::max(last_done_ns, caller->last_done_ns());
  }
  all.reserve(total);
  for (const auto& caller : callers) {
    all.insert(all.end(), caller->latencies().begin(), caller->latencies().end());
  }
  std::sort(all.begin(), all.end());
  Percentiles pct;
  pct.p50 = NearestRank(all, 50);
  pct.p90 = NearestRank(all, 90);
  pct.p99 = NearestRank(all, 99);
  pct.max = all.empty() ? 0 : all.back();
  if (!all.empty()) {
    long double sum = 0;
    for (const int64_t v : all) sum += v;
    pct.mean = static_cast<double>(sum / all.size());
  }

  const int64_t window_ns = shared.count_mode
                                ? std::max<int64_t>(last_done_ns - shared.warmup_end_ns, 1)
                                : absl::ToInt64Nanoseconds(opt.duration);
  const double window_s = static_cast<double>(window_ns) / 1e9;
  const int64_t calls = static_cast<int64_t>(all.size());
  const double throughput = static_cast<double>(calls) / window_s;
  const int64_t errors = shared.errors.total();

  if (opt.json) {
    std::string out = "{";
    absl::StrAppend(&out, "\"label\":", JsonString(opt.label),
                    ",\"mode\":", JsonString(opt.mode_name), ",\"target\":", JsonString(opt.target),
                    ",\"callers\":", opt.callers, ",\"channels\":", opt.channels);
    if (opt.mode == Mode::kExecute || opt.mode == Mode::kPipeline) {
      absl::StrAppend(&out, ",\"sql\":", JsonString(opt.sql));
    }
    if (opt.mode == Mode::kBatch || opt.mode == Mode::kPipelineBatch) {
      absl::StrAppend(&out, ",\"batch\":", JsonString(opt.batch_tx3 ? "tx3" : "int8"));
    }
    if (opt.mode == Mode::kPipeline || opt.mode == Mode::kPipelineBatch) {
      absl::StrAppend(&out,
                      absl::StrFormat(",\"calls_per_message\":%.2f,\"results_per_message\":%.2f",
                                      calls_per_message, results_per_message),
                      ",\"submitted\":", submitted, ",\"answered\":", answered);
    }
    absl::StrAppend(&out, absl::StrFormat(",\"warmup_s\":%.3f,\"duration_s\":%.3f",
                                          absl::ToDoubleSeconds(opt.warmup), window_s));
    if (shared.count_mode) absl::StrAppend(&out, ",\"requests\":", opt.requests);
    absl::StrAppend(&out, ",\"calls\":", calls, absl::StrFormat(",\"throughput\":%.1f", throughput),
                    ",\"p50_us\":", Us(pct.p50), ",\"p90_us\":", Us(pct.p90),
                    ",\"p99_us\":", Us(pct.p99), ",\"max_us\":", Us(pct.max),
                    absl::StrFormat(",\"mean_us\":%.1f", pct.mean / 1e3), ",\"errors\":", errors,
                    ",", shared.errors.JsonFields(),
                    ",\"warmup_errors\":", shared.warmup_errors.load());
    if (opt.mode == Mode::kSessionTx) absl::StrAppend(&out, ",\"end_session_errors\":", end_errors);
    out += "}\n";
    std::cout << out;
  } else {
    std::string line = absl::StrFormat(
        "mode=%s callers=%d channels=%d duration=%.1fs calls=%d throughput=%.1f/s p50=%s p90=%s "
        "p99=%s max=%s errors=%d",
        opt.mode_name, opt.callers, opt.channels, window_s, calls, throughput, Ms(pct.p50),
        Ms(pct.p90), Ms(pct.p99), Ms(pct.max), errors);
    if (const int64_t w = shared.warmup_errors.load(); w > 0) {
      absl::StrAppend(&line, " warmup_errors=", w);
    }
    if (!opt.label.empty()) absl::StrAppend(&line, " label=", opt.label);
    std::cout << line << "\n" << (errors > 0 ? shared.errors.HumanLines() : "");
    if (end_errors > 0) std::cout << "  EndSession failed for " << end_errors << " sessions\n";
  }
  std::cout.flush();
  return 0;
}

// ---- sessions-idle -----------------------------------------------------------------

// Opens (or ends) the sessions names[next..limit) with one call in flight per
// caller.
struct BulkShared {
  const Options* opt = nullptr;
  bool end = false;  // EndSession instead of BeginSession
  std::vector<std::string>* names = nullptr;
  std::atomic<int64_t> next{0};
  int64_t limit = 0;
  std::atomic<int64_t> ok{0};
  ErrorTable* errors = nullptr;
  Latch* done = nullptr;
};

class BulkCaller {
 public:
  BulkCaller(BulkShared* shared, pb::SessionBroker::Stub* stub) : shared_(shared), stub_(stub) {
    *begin_req_.mutable_ttl() = SessionTxCaller::ProtoSeconds(3600);
    begin_req_.set_label("broker-bench sessions-idle");
  }

  void Next() {
    for (;;) {
      const int64_t i = shared_->next.fetch_add(1, std::memory_order_relaxed);
      if (i >= shared_->limit) {
        shared_->done->CountDown();  // last touch of this caller
        return;
      }
      std::string& name = (*shared_->names)[static_cast<size_t>(i)];
      if (shared_->end && name.empty()) continue;  // never opened
      index_ = i;
      break;
    }
    ctx_.emplace();
    ctx_->set_deadline(std::chrono::system_clock::now() + shared_->opt->call_timeout);
    ctx_->AddMetadata("x-client-id", shared_->opt->client_id);
    if (!shared_->opt->token.empty()) {
      ctx_->AddMetadata("authorization", "Bearer " + shared_->opt->token);
    }
    if (shared_->end) {
      end_req_.set_session((*shared_->names)[static_cast<size_t>(index_)]);
      stub_->async()->EndSession(&*ctx_, &end_req_, &end_resp_,
                                 [this](grpc::Status status) { Done(status); });
    } else {
      stub_->async()->BeginSession(
          &*ctx_, &begin_req_, &session_resp_, [this](grpc::Status status) {
            if (status.ok()) {
              (*shared_->names)[static_cast<size_t>(index_)] = session_resp_.name();
            }
            Done(status);
          });
    }
  }

 private:
  void Done(const grpc::Status& status) {
    if (status.ok()) {
      shared_->ok.fetch_add(1, std::memory_order_relaxed);
    } else {
      shared_->errors->Add(status);
    }
    Next();
  }

  BulkShared* const shared_;
  pb::SessionBroker::Stub* const stub_;
  std::optional<grpc::ClientContext> ctx_;
  int64_t index_ = 0;
  pb::BeginSessionRequest begin_req_;
  pb::Session session_resp_;
  pb::EndSessionRequest end_req_;
  pb::EndSessionResponse end_resp_;
};

// Runs names[from..to) through Begin/EndSession; returns successes. Exits
// when callers are still in flight long after their deadline.
int64_t RunBulk(const Options& opt, std::vector<Endpoint>& endpoints,
                std::vector<std::string>* names, bool end, int64_t from, int64_t to,
                ErrorTable* errors) {
  const int n = static_cast<int>(std::min<int64_t>(opt.callers, std::max<int64_t>(to - from, 1)));
  Latch done(n);
  BulkShared shared;
  shared.opt = &opt;
  shared.end = end;
  shared.names = names;
  shared.next.store(from);
  shared.limit = to;
  shared.errors = errors;
  shared.done = &done;
  std::vector<std::unique_ptr<BulkCaller>> callers;
  for (int i = 0; i < n; ++i) {
    callers.push_back(std::make_unique<BulkCaller>(
        &shared, endpoints[static_cast<size_t>(i % opt.channels)].stub.get()));
  }
  for (auto& caller : callers) caller->Next();
  // Generous: each call has its deadline; this only catches a hang.
  const absl::Duration bound =
      opt.call_timeout_abs * static_cast<double>((to - from) / n + 1) + absl::Seconds(5);
  if (!done.WaitUntil(absl::Now() + bound)) {
    std::cerr << "broker-bench: " << done.count() << " callers still had a call in flight after "
              << absl::FormatDuration(bound) << "; giving up\n";
    std::fflush(stdout);
    std::_Exit(1);
  }
  return shared.ok.load();
}

int RunSessionsIdle(const Options& opt, std::vector<Endpoint>& endpoints) {
  const std::optional<int64_t> baseline = ReadRssBytes(opt.broker_pid);
  if (!baseline) {
    std::cerr << "broker-bench: cannot read VmRSS of pid " << opt.broker_pid << "\n";
    return 1;
  }
  std::vector<std::string> names(static_cast<size_t>(opt.sessions.back()));
  ErrorTable errors;

  struct StepResult {
    int64_t target = 0;
    int64_t open = 0;
    int64_t rss = 0;
    double per_session = 0;       // vs baseline
    double per_session_step = 0;  // vs the previous step
    double seconds = 0;
  };
  std::vector<StepResult> steps;
  if (!opt.json) {
    std::cout << absl::StrFormat(
        "mode=sessions-idle callers=%d channels=%d baseline_rss=%s (%d B)%s\n", opt.callers,
        opt.channels, FormatBytes(static_cast<double>(*baseline)), *baseline,
        opt.label.empty() ? "" : absl::StrCat(" label=", opt.label));
    std::cout.flush();
  }
  int64_t open = 0;
  int64_t previous_target = 0;
  int64_t previous_open = 0;
  int64_t previous_rss = *baseline;
  for (const int64_t target : opt.sessions) {
    const absl::Time t0 = absl::Now();
    open += RunBulk(opt, endpoints, &names, /*end=*/false, previous_target, target, &errors);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    absl::SleepFor(absl::Seconds(1));
    const int64_t rss = ReadRssBytes(opt.broker_pid).value_or(0);
    StepResult step;
    step.target = target;
    step.open = open;
    step.rss = rss;
    step.per_session =
        open > 0 ? static_cast<double>(rss - *baseline) / static_cast<double>(open) : 0;
    step.per_session_step = open > previous_open ? static_cast<double>(rss - previous_rss) /
                                                       static_cast<double>(open - previous_open)
                                                 : 0;
    step.seconds = seconds;
    steps.push_back(step);
    if (!opt.json) {
      std::cout << absl::StrFormat(
          "sessions=%d open=%d rss=%s (%d B) per_session=%.0fB per_session_step=%.0fB "
          "open_time=%.2fs rate=%.0f/s errors=%d\n",
          target, open, FormatBytes(static_cast<double>(rss)), rss, step.per_session,
          step.per_session_step, seconds,
          static_cast<double>(target - previous_target) / std::max(seconds, 1e-9), errors.total());
      std::cout.flush();
    }
    previous_target = target;
    previous_open = open;
    previous_rss = rss;
  }

  ErrorTable end_errors;
  const absl::Time t0 = absl::Now();
  const int64_t ended = RunBulk(opt, endpoints, &names, /*end=*/true, 0,
                                static_cast<int64_t>(names.size()), &end_errors);
  const double end_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  const int64_t rss_after_end = ReadRssBytes(opt.broker_pid).value_or(0);

  if (opt.json) {
    std::string out = "{";
    absl::StrAppend(&out, "\"label\":", JsonString(opt.label),
                    ",\"mode\":", JsonString(opt.mode_name), ",\"target\":", JsonString(opt.target),
                    ",\"callers\":", opt.callers, ",\"channels\":", opt.channels,
                    ",\"baseline_rss_bytes\":", *baseline, ",\"steps\":[");
    for (size_t i = 0; i < steps.size(); ++i) {
      const StepResult& s = steps[i];
      absl::StrAppend(&out, i > 0 ? "," : "", "{\"sessions\":", s.target, ",\"open\":", s.open,
                      ",\"rss_bytes\":", s.rss,
                      absl::StrFormat(",\"bytes_per_session\":%.1f,\"bytes_per_session_step\":%.1f,"
                                      "\"open_seconds\":%.3f}",
                                      s.per_session, s.per_session_step, s.seconds));
    }
    absl::StrAppend(&out, "],\"errors\":", errors.total(), ",", errors.JsonFields(),
                    ",\"ended\":", ended, absl::StrFormat(",\"end_seconds\":%.3f", end_seconds),
                    ",\"end_errors\":", end_errors.total(),
                    ",\"rss_after_end_bytes\":", rss_after_end, "}\n");
    std::cout << out;
  } else {
    if (errors.total() > 0) std::cout << "errors=" << errors.total() << "\n";
    std::cout << errors.HumanLines();
    std::cout << absl::StrFormat("ended=%d end_time=%.2fs end_errors=%d rss_after_end=%s\n", ended,
                                 end_seconds, end_errors.total(),
                                 FormatBytes(static_cast<double>(rss_after_end)));
    std::cout << end_errors.HumanLines();
  }
  std::cout.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (const int rc = ParseFlags(argc, argv); rc >= 0) return rc;
  Options opt;
  if (const int rc = LoadOptions(&opt); rc >= 0) return rc;

  std::vector<Endpoint> endpoints(static_cast<size_t>(opt.channels));
  for (int i = 0; i < opt.channels; ++i) {
    Endpoint& e = endpoints[static_cast<size_t>(i)];
    e.channel = MakeChannel(opt.target, i);
    e.stub = pb::SessionBroker::NewStub(e.channel);
    e.health = std::make_unique<HealthStub>(e.channel);
  }
  const auto connect_deadline = std::chrono::system_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < opt.channels; ++i) {
    Endpoint& e = endpoints[static_cast<size_t>(i)];
    if (!e.channel->WaitForConnected(connect_deadline)) {
      std::cerr << "broker-bench: could not connect to " << opt.target << " within 10s (channel "
                << i << " is " << StateName(e.channel->GetState(false))
                << "); is the broker running and listening there?\n";
      return 1;
    }
  }

  if (opt.mode == Mode::kSessionsIdle) return RunSessionsIdle(opt, endpoints);
  return RunLoad(opt, endpoints);
}
