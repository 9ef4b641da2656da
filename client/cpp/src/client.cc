#include "sessionbroker/client.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cpp/src/internal.h"
#include "client/cpp/src/keep_alive.h"
#include "client/cpp/src/pipeline_mux.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace sessionbroker {
namespace internal {

// What a Client and its Sessions share: the channel, the stubs and the
// KeepAlive stream. Immutable after construction but for KeepAlive, which is
// thread-safe.
class ClientCore {
 public:
  ClientCore(ClientOptions o, std::shared_ptr<grpc::Channel> ch)
      : options(std::move(o)),
        channel(std::move(ch)),
        broker(v1::SessionBroker::NewStub(channel)),
        monitor(v1::PoolMonitor::NewStub(channel)),
        health(grpc::health::v1::Health::NewStub(channel)),
        keep_alive(broker.get(), Metadata(), options.keepalive_reconnect_initial,
                   options.keepalive_reconnect_max),
        mux(broker.get(), Metadata(), options.keepalive_reconnect_initial,
            options.keepalive_reconnect_max) {}

  // What every call carries: the bearer token and the client id.
  std::vector<std::pair<std::string, std::string>> Metadata() const {
    std::vector<std::pair<std::string, std::string>> out;
    if (!options.token.empty()) out.emplace_back("authorization", "Bearer " + options.token);
    if (!options.client_id.empty()) out.emplace_back("x-client-id", options.client_id);
    return out;
  }
  void AddMetadata(grpc::ClientContext& context) const {
    if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
    if (!options.client_id.empty()) context.AddMetadata("x-client-id", options.client_id);
  }

  // A call's deadline (absolute) and metadata.
  absl::Time DeadlineOf(const CallOptions& call) const {
    return absl::Now() +
           (call.deadline > absl::ZeroDuration() ? call.deadline : options.default_deadline);
  }
  void Prepare(grpc::ClientContext& context, const CallOptions& call) const {
    context.set_deadline(absl::ToChronoTime(DeadlineOf(call)));
    AddMetadata(context);
  }

  template <typename Stub, typename Request, typename Response>
  absl::Status Unary(Stub& stub,
                     grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                     const Request& request, Response* response, const CallOptions& call) const {
    return UnaryUntil(stub, method, request, response, DeadlineOf(call));
  }
  template <typename Stub, typename Request, typename Response>
  absl::Status UnaryUntil(Stub& stub,
                          grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                       Response*),
                          const Request& request, Response* response, absl::Time deadline) const {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    AddMetadata(context);
    grpc::Status status = (stub.*method)(&context, request, response);
    return FromGrpc(status, context);
  }

  // Counts this client's Execute/ExecuteBatch calls in flight, for
  // PipelineMode::kConcurrent.
  class InFlight {
   public:
    explicit InFlight(std::atomic<int>& n) : n_(n), others_(n.fetch_add(1)) {}
    ~InFlight() { n_.fetch_sub(1); }
    int others() const { return others_; }

   private:
    std::atomic<int>& n_;
    const int others_;
  };
  bool UseStream(const InFlight& in_flight) const {
    switch (options.pipeline) {
      case PipelineMode::kOff:
        return false;
      case PipelineMode::kConcurrent:
        // Overlapping calls open the stream; once open it is the faster
        // way for a lone call too (docs/clients.md, measured).
        return in_flight.others() > 0 || mux.ready();
      case PipelineMode::kAlways:
        return true;
    }
    return false;
  }

  // `call` on the shared stream when the policy and the stream allow;
  // nullopt: make the unary call (the caller does, until `deadline`).
  std::optional<absl::StatusOr<v1::PipelineResult>> OnStream(const InFlight& in_flight,
                                                             v1::PipelineCall& call,
                                                             absl::Time deadline) {
    if (!UseStream(in_flight)) return std::nullopt;
    absl::StatusOr<v1::PipelineResult> out;
    if (mux.Run(call, deadline, &out) == PipelineMux::Routed::kUnary) {
      return std::nullopt;
    }
    if (out.ok() && out->has_status()) {
      absl::Status failed = FromPipeline(out->status(), out->sqlstate(), out->reason());
      if (failed.ok()) return UnexpectedResult();  // a status without an error
      return failed;
    }
    return out;
  }

  absl::StatusOr<Result> Execute(const std::string& session, absl::string_view sql,
                                 const std::vector<Param>& params, const CallOptions& call) {
    const absl::Time deadline = DeadlineOf(call);
    InFlight in_flight(one_shot_in_flight);
    v1::PipelineCall piped;
    v1::ExecuteRequest& request = *piped.mutable_execute();
    request.set_sql(std::string(sql));
    request.set_session(session);
    request.set_request_id(call.request_id);
    for (const Param& p : params) *request.add_params() = p.proto();
    if (UseStream(in_flight)) {
      if (auto out = OnStream(in_flight, piped, deadline)) {
        if (!out->ok()) return out->status();
        if (!(*out)->has_execute()) return UnexpectedResult();
        return Result(std::move(*(*out)->mutable_execute()));
      }
    }
    unary_calls.fetch_add(1, std::memory_order_relaxed);
    v1::ExecuteResponse response;
    absl::Status s =
        UnaryUntil(*broker, &v1::SessionBroker::Stub::Execute, request, &response, deadline);
    if (!s.ok()) return s;
    return Result(std::move(response));
  }

  absl::StatusOr<std::vector<Result>> ExecuteBatch(const std::string& session,
                                                   const std::vector<Statement>& statements,
                                                   const CallOptions& call) {
    const absl::Time deadline = DeadlineOf(call);
    InFlight in_flight(one_shot_in_flight);
    v1::PipelineCall piped;
    v1::ExecuteBatchRequest& request = *piped.mutable_execute_batch();
    request.set_session(session);
    request.set_request_id(call.request_id);
    for (const Statement& st : statements) {
      v1::Statement* out = request.add_statements();
      out->set_sql(st.sql);
      for (const Param& p : st.params) *out->add_params() = p.proto();
    }
    v1::ExecuteBatchResponse response;
    std::optional<absl::StatusOr<v1::PipelineResult>> piped_out;
    if (UseStream(in_flight)) piped_out = OnStream(in_flight, piped, deadline);
    if (piped_out.has_value()) {
      if (!piped_out->ok()) return piped_out->status();
      if (!(*piped_out)->has_execute_batch()) return UnexpectedResult();
      response = std::move(*(*piped_out)->mutable_execute_batch());
    } else {
      unary_calls.fetch_add(1, std::memory_order_relaxed);
      absl::Status s =
          UnaryUntil(*broker, &v1::SessionBroker::Stub::ExecuteBatch, request, &response, deadline);
      if (!s.ok()) return s;
    }
    std::vector<Result> results;
    results.reserve(response.results_size());
    for (v1::ExecuteResponse& r : *response.mutable_results()) results.emplace_back(std::move(r));
    return results;
  }

  static absl::Status UnexpectedResult() {
    return absl::InternalError("the broker's Pipeline result does not match the call's kind");
  }

  // A StreamExecute call, once its first message (the columns) is read:
  // errors that come before any row (syntax, permissions, the pool wait)
  // are returned here rather than from the first Next().
  static absl::StatusOr<std::unique_ptr<RowStream>> Stream(std::shared_ptr<ClientCore> core,
                                                           const std::string& session,
                                                           absl::string_view sql,
                                                           const std::vector<Param>& params,
                                                           const CallOptions& call) {
    v1::ExecuteRequest request;
    request.set_sql(std::string(sql));
    request.set_session(session);
    request.set_request_id(call.request_id);
    for (const Param& p : params) *request.add_params() = p.proto();
    auto state = std::make_unique<RowStreamState>();
    core->PrepareStream(state->context, call);
    state->reader = core->broker->StreamExecute(&state->context, request);
    state->owner = core;
    std::unique_ptr<RowStream> stream(new RowStream(std::move(state)));
    if (!stream->ReadMessage()) return stream->status();
    return stream;
  }

  // A Listen call, once the broker confirmed it listens.
  static absl::StatusOr<std::unique_ptr<Subscription>> Listen(
      std::shared_ptr<ClientCore> core, const std::vector<std::string>& channels,
      const CallOptions& call) {
    v1::ListenRequest request;
    for (const std::string& c : channels) request.add_channels(c);
    auto state = std::make_unique<SubscriptionState>();
    core->PrepareStream(state->context, call);
    state->reader = core->broker->Listen(&state->context, request);
    state->owner = core;
    v1::ListenResponse first;
    if (!state->reader->Read(&first)) {
      absl::Status s = FromGrpc(state->reader->Finish(), state->context);
      if (s.ok()) s = absl::UnavailableError("the broker ended the Listen stream before listening");
      return s;
    }
    if (!first.has_listening()) {
      state->context.TryCancel();
      while (state->reader->Read(&first)) {
      }
      (void)state->reader->Finish();
      return absl::InternalError("the broker's Listen stream did not begin with its confirmation");
    }
    state->channels.assign(first.listening().channels().begin(),
                           first.listening().channels().end());
    state->listener_pid = first.listening().listener_pid();
    return std::unique_ptr<Subscription>(new Subscription(std::move(state)));
  }

  // A stream's metadata, and a deadline only if the call sets one: a
  // stream lasts as long as its reader reads, not the unary default.
  void PrepareStream(grpc::ClientContext& context, const CallOptions& call) const {
    if (call.deadline > absl::ZeroDuration()) {
      context.set_deadline(absl::ToChronoTime(absl::Now() + call.deadline));
    }
    AddMetadata(context);
  }

  const ClientOptions options;
  const std::shared_ptr<grpc::Channel> channel;
  const std::unique_ptr<v1::SessionBroker::Stub> broker;
  const std::unique_ptr<v1::PoolMonitor::Stub> monitor;
  const std::unique_ptr<grpc::health::v1::Health::Stub> health;
  KeepAlive keep_alive;
  // After the stubs: it is destroyed (its stream cancelled) before them.
  PipelineMux mux;
  std::atomic<int> one_shot_in_flight{0};
  std::atomic<int64_t> unary_calls{0};
};

}  // namespace internal

namespace {

v1::IsolationLevel ToProto(Isolation i) {
  switch (i) {
    case Isolation::kReadCommitted:
      return v1::READ_COMMITTED;
    case Isolation::kRepeatableRead:
      return v1::REPEATABLE_READ;
    case Isolation::kSerializable:
      return v1::SERIALIZABLE;
    case Isolation::kDefault:
      break;
  }
  return v1::ISOLATION_LEVEL_UNSPECIFIED;
}

// Retries UNAVAILABLE only where repeating the call cannot do anything twice
// (docs/errors.md, "Retry guide"): reads, lease renewal, and Rollback (which
// succeeds with no transaction open). Execute, ExecuteBatch, BeginTransaction,
// Commit and EndSession are not retried: their outcome after UNAVAILABLE is
// for the caller to judge. BeginSession is not named here either, since a
// service config retries every call of a method alike and a retry without a
// request_id would lease a second session: Client::BeginSession retries it
// itself, every attempt with the same request_id (BeginSessionRetryDelay).
// gRPC's transparent retries (the call never left the client) apply to all.
constexpr char kServiceConfig[] = R"json({
  "methodConfig": [{
    "name": [
      {"service": "sessionbroker.v1.SessionBroker", "method": "GetSession"},
      {"service": "sessionbroker.v1.SessionBroker", "method": "ListSessions"},
      {"service": "sessionbroker.v1.SessionBroker", "method": "RenewSession"},
      {"service": "sessionbroker.v1.SessionBroker", "method": "Rollback"},
      {"service": "sessionbroker.v1.PoolMonitor", "method": "GetPoolStatus"},
      {"service": "grpc.health.v1.Health", "method": "Check"}
    ],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})json";

constexpr absl::Duration kDestructorDeadline = absl::Seconds(5);

// Attempts of BeginSession while it fails UNAVAILABLE: the connection broke
// under the call (a broker restart or rolling deploy, an idle connection a
// proxy or NAT closed just as the call went out), which the next attempt
// replaces. Every attempt carries the same request_id, so a broker that
// opened the session for an attempt whose answer was lost answers the retry
// with that session instead of leasing a second one (docs/retries.md). The
// Python client's connect() does the same (client/python/sessionbroker/
// _core.py, begin_session_retry_delay).
constexpr int kBeginSessionAttempts = 3;
constexpr absl::Duration kBeginSessionBackoff = absl::Milliseconds(50);
// An attempt needs this much of the call's deadline left after its backoff;
// with less, the last UNAVAILABLE (which says what went wrong) is returned
// rather than a DEADLINE_EXCEEDED from an attempt that had no chance.
constexpr absl::Duration kBeginSessionMinAttempt = absl::Milliseconds(250);

// How long to wait before BeginSession's next attempt, after attempt number
// `attempt` (1-based) failed with `code` and `remaining` of the call's
// deadline is left; nullopt: give up and return the failure.
std::optional<absl::Duration> BeginSessionRetryDelay(absl::StatusCode code, int attempt,
                                                     absl::Duration remaining) {
  if (code != absl::StatusCode::kUnavailable || attempt >= kBeginSessionAttempts) {
    return std::nullopt;
  }
  const absl::Duration delay = kBeginSessionBackoff * (1 << (attempt - 1));
  if (remaining < delay + kBeginSessionMinAttempt) return std::nullopt;
  return delay;
}

// A random (version 4) UUID: 36 characters of the request_id alphabet, one
// per BeginSession call that came without a request_id of the caller's.
std::string NewRequestId() {
  absl::BitGen rng;
  uint64_t hi = absl::Uniform<uint64_t>(rng);
  uint64_t lo = absl::Uniform<uint64_t>(rng);
  hi = (hi & ~uint64_t{0xF000}) | uint64_t{0x4000};            // version 4
  lo = (lo & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);  // variant 10
  return absl::StrCat(
      absl::Hex(hi >> 32, absl::kZeroPad8), "-", absl::Hex((hi >> 16) & 0xFFFF, absl::kZeroPad4),
      "-", absl::Hex(hi & 0xFFFF, absl::kZeroPad4), "-", absl::Hex(lo >> 48, absl::kZeroPad4), "-",
      absl::Hex(lo & 0xFFFFFFFFFFFF, absl::kZeroPad12));
}

absl::Status Ended(const std::string& name) {
  return absl::FailedPreconditionError(
      absl::StrCat("session ", name, " was ended by this client (Session::End)"));
}

}  // namespace

// ---- Session ----

Session::Session(std::shared_ptr<internal::ClientCore> core, std::string name)
    : core_(std::move(core)), name_(std::move(name)) {
  core_->keep_alive.Hold(name_);
}

Session::~Session() {
  if (ended_) return;
  // A destructor must not hang on an unreachable broker for the default
  // deadline twice: the lease (and the broker's own timeouts) end the
  // session and its transaction anyway.
  CallOptions call;
  call.deadline = std::min(core_->options.default_deadline, kDestructorDeadline);
  if (in_transaction_) (void)Rollback(call);
  (void)End(call);
}

absl::StatusOr<Result> Session::Execute(absl::string_view sql, std::vector<Param> params,
                                        const CallOptions& options) {
  if (ended_) return Ended(name_);
  return core_->Execute(name_, sql, params, options);
}

absl::StatusOr<std::vector<Result>> Session::ExecuteBatch(std::vector<Statement> statements,
                                                          const CallOptions& options) {
  if (ended_) return Ended(name_);
  return core_->ExecuteBatch(name_, statements, options);
}

absl::StatusOr<std::unique_ptr<RowStream>> Session::Stream(absl::string_view sql,
                                                           std::vector<Param> params,
                                                           const CallOptions& options) {
  if (ended_) return Ended(name_);
  return internal::ClientCore::Stream(core_, name_, sql, params, options);
}

absl::Status Session::Begin(const TransactionOptions& options) {
  if (ended_) return Ended(name_);
  v1::BeginTransactionRequest request;
  request.set_session(name_);
  request.set_isolation(ToProto(options.isolation));
  request.set_read_only(options.read_only);
  request.set_deferrable(options.deferrable);
  request.set_request_id(options.request_id);
  v1::BeginTransactionResponse response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::BeginTransaction, request,
                                &response, CallOptions());
  if (s.ok()) in_transaction_ = true;
  return s;
}

absl::Status Session::Commit(const CallOptions& options) {
  if (ended_) return Ended(name_);
  v1::CommitRequest request;
  request.set_session(name_);
  request.set_request_id(options.request_id);
  v1::CommitResponse response;
  absl::Status s =
      core_->Unary(*core_->broker, &v1::SessionBroker::Stub::Commit, request, &response, options);
  // After a failed Commit the transaction is still to be rolled back
  // (ABORTED: the broker wants the Rollback that acknowledges it).
  if (s.ok()) in_transaction_ = false;
  return s;
}

absl::Status Session::Rollback(const CallOptions& options) {
  if (ended_) return Ended(name_);
  v1::RollbackRequest request;
  request.set_session(name_);
  v1::RollbackResponse response;
  absl::Status s =
      core_->Unary(*core_->broker, &v1::SessionBroker::Stub::Rollback, request, &response, options);
  if (s.ok()) in_transaction_ = false;
  return s;
}

absl::Status Session::End(const CallOptions& options) {
  if (ended_) return Ended(name_);
  ended_ = true;
  in_transaction_ = false;
  v1::EndSessionRequest request;
  request.set_session(name_);
  v1::EndSessionResponse response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::EndSession, request,
                                &response, options);
  // Ended or not (the broker unreachable), the stream stops holding it: its
  // lease then runs out on its own.
  core_->keep_alive.Release(name_);
  return s;
}

absl::StatusOr<v1::Session> Session::Get(const CallOptions& options) {
  v1::GetSessionRequest request;
  request.set_session(name_);
  v1::Session response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::GetSession, request,
                                &response, options);
  if (!s.ok()) return s;
  return response;
}

// ---- WatchCanceller ----

struct WatchCanceller::State {
  absl::Mutex mu;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  grpc::ClientContext* context ABSL_GUARDED_BY(mu) = nullptr;
};

WatchCanceller::WatchCanceller() : state_(std::make_shared<State>()) {}
WatchCanceller::~WatchCanceller() = default;

void WatchCanceller::Cancel() {
  absl::MutexLock lock(&state_->mu);
  state_->cancelled = true;
  if (state_->context != nullptr) state_->context->TryCancel();
}

// ---- Client ----

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS: a client certificate and its key go together (give both files or neither)");
  }
  grpc::SslCredentialsOptions options;
  struct Source {
    const std::string& path;
    std::string* into;
    const char* what;
  };
  for (const Source& s : {Source{files.ca, &options.pem_root_certs, "CA bundle"},
                          Source{files.cert, &options.pem_cert_chain, "client certificate"},
                          Source{files.key, &options.pem_private_key, "client key"}}) {
    if (s.path.empty()) continue;
    std::ifstream in(s.path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in || text.str().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("TLS: cannot read the ", s.what, " ", s.path));
    }
    *s.into = text.str();
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  std::shared_ptr<grpc::Channel> channel = options.channel;
  if (channel == nullptr) {
    if (options.target.empty()) {
      return absl::InvalidArgumentError("ClientOptions.target is empty: name the broker's address");
    }
    grpc::ChannelArguments args;
    args.SetServiceConfigJSON(kServiceConfig);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    // Pings only while calls are open: the broker accepts one every 10 s.
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    for (const auto& [name, value] : options.int_channel_args) args.SetInt(name, value);
    std::shared_ptr<grpc::ChannelCredentials> credentials =
        options.credentials != nullptr ? options.credentials : grpc::InsecureChannelCredentials();
    channel = grpc::CreateCustomChannel(options.target, credentials, args);
  }
  if (options.default_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ClientOptions.default_deadline must be positive");
  }
  if (options.token.empty()) {
    if (const char* token = std::getenv("SB_TOKEN"); token != nullptr) options.token = token;
  }
  return std::unique_ptr<Client>(
      new Client(std::make_shared<internal::ClientCore>(std::move(options), std::move(channel))));
}

Client::Client(std::shared_ptr<internal::ClientCore> core) : core_(std::move(core)) {}
Client::~Client() = default;

absl::StatusOr<Result> Client::Execute(absl::string_view sql, std::vector<Param> params,
                                       const CallOptions& options) {
  return core_->Execute("", sql, params, options);
}

absl::StatusOr<std::vector<Result>> Client::ExecuteBatch(std::vector<Statement> statements,
                                                         const CallOptions& options) {
  return core_->ExecuteBatch("", statements, options);
}

absl::StatusOr<std::unique_ptr<RowStream>> Client::Stream(absl::string_view sql,
                                                          std::vector<Param> params,
                                                          const CallOptions& options) {
  return internal::ClientCore::Stream(core_, "", sql, params, options);
}

absl::StatusOr<std::unique_ptr<Subscription>> Client::Listen(std::vector<std::string> channels,
                                                             const CallOptions& options) {
  return internal::ClientCore::Listen(core_, channels, options);
}

absl::StatusOr<std::unique_ptr<Session>> Client::BeginSession(const SessionOptions& options) {
  v1::BeginSessionRequest request;
  if (options.ttl > absl::ZeroDuration()) {
    *request.mutable_ttl() = google::protobuf::util::TimeUtil::NanosecondsToDuration(
        absl::ToInt64Nanoseconds(options.ttl));
  }
  request.set_read_only(options.read_only);
  request.set_isolation(ToProto(options.isolation));
  for (const auto& [k, v] : options.settings) (*request.mutable_settings())[k] = v;
  request.set_label(options.label);
  // One id for every attempt (BeginSessionRetryDelay): the caller's, or one
  // of this call's own.
  request.set_request_id(options.call.request_id.empty() ? NewRequestId()
                                                         : options.call.request_id);
  // One deadline for all attempts: a retry never outlives the call's.
  const absl::Time deadline = core_->DeadlineOf(options.call);
  v1::Session response;
  for (int attempt = 1;; ++attempt) {
    absl::Status s = core_->UnaryUntil(*core_->broker, &v1::SessionBroker::Stub::BeginSession,
                                       request, &response, deadline);
    if (s.ok()) break;
    std::optional<absl::Duration> delay =
        BeginSessionRetryDelay(s.code(), attempt, deadline - absl::Now());
    if (!delay.has_value()) return s;
    absl::SleepFor(*delay);
  }
  return std::unique_ptr<Session>(new Session(core_, response.name()));
}

absl::Status Client::Transaction(const std::function<absl::Status(Session&)>& fn,
                                 const TransactionOptions& options) {
  std::unique_ptr<Session> owned;
  Session* session = options.session;
  if (session == nullptr) {
    absl::StatusOr<std::unique_ptr<Session>> begun = BeginSession(options.session_options);
    if (!begun.ok()) return begun.status();
    owned = *std::move(begun);
    session = owned.get();
  }
  absl::BitGen rng;
  absl::Duration backoff = options.initial_backoff;
  const int max_attempts = std::max(1, options.max_attempts);
  for (int attempt = 1;; ++attempt) {
    absl::Status s = session->Begin(options);
    // A Begin that failed began nothing here: a Rollback could only undo a
    // transaction the caller's session already had open.
    if (!s.ok()) return s;
    s = fn(*session);
    if (s.ok()) s = session->Commit();
    if (s.ok()) return s;
    // Always: it also acknowledges a transaction the broker rolled back.
    (void)session->Rollback();
    if (!IsRetryableTransactionError(s) || attempt >= max_attempts) return s;
    absl::SleepFor(
        absl::Nanoseconds(absl::Uniform<int64_t>(rng, 0, absl::ToInt64Nanoseconds(backoff) + 1)));
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

absl::StatusOr<v1::PoolStatus> Client::GetPoolStatus(const CallOptions& options) {
  v1::PoolStatus response;
  absl::Status s = core_->Unary(*core_->monitor, &v1::PoolMonitor::Stub::GetPoolStatus,
                                v1::GetPoolStatusRequest(), &response, options);
  if (!s.ok()) return s;
  return response;
}

absl::Status Client::WatchPoolStatus(absl::Duration interval,
                                     const std::function<bool(const v1::PoolStatus&)>& on_status,
                                     WatchCanceller* cancel) {
  grpc::ClientContext context;
  core_->AddMetadata(context);
  std::shared_ptr<WatchCanceller::State> state =
      cancel != nullptr ? cancel->state_ : std::make_shared<WatchCanceller::State>();
  {
    absl::MutexLock lock(&state->mu);
    if (state->cancelled) return absl::OkStatus();
    state->context = &context;
  }
  v1::WatchPoolStatusRequest request;
  if (interval > absl::ZeroDuration()) {
    *request.mutable_interval() =
        google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(interval));
  }
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> reader =
      core_->monitor->WatchPoolStatus(&context, request);
  v1::PoolStatus status;
  bool stopped = false;
  while (reader->Read(&status)) {
    if (!on_status(status)) {
      stopped = true;
      context.TryCancel();
      break;
    }
  }
  grpc::Status finished = reader->Finish();
  bool cancelled;
  {
    absl::MutexLock lock(&state->mu);
    state->context = nullptr;
    cancelled = state->cancelled;
  }
  if (stopped || cancelled) return absl::OkStatus();
  return internal::FromGrpc(finished, context);
}

absl::StatusOr<v1::ListSessionsResponse> Client::ListSessions(absl::string_view client_id,
                                                              int32_t page_size,
                                                              absl::string_view page_token,
                                                              const CallOptions& options) {
  v1::ListSessionsRequest request;
  request.set_client_id(std::string(client_id));
  request.set_page_size(page_size);
  request.set_page_token(std::string(page_token));
  v1::ListSessionsResponse response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::ListSessions, request,
                                &response, options);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::Session> Client::GetSession(absl::string_view name, const CallOptions& options) {
  v1::GetSessionRequest request;
  request.set_session(std::string(name));
  v1::Session response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::GetSession, request,
                                &response, options);
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<bool> Client::EndSession(absl::string_view name, const CallOptions& options) {
  v1::EndSessionRequest request;
  request.set_session(std::string(name));
  v1::EndSessionResponse response;
  absl::Status s = core_->Unary(*core_->broker, &v1::SessionBroker::Stub::EndSession, request,
                                &response, options);
  if (!s.ok()) return s;
  return response.rolled_back();
}

absl::StatusOr<ServingStatus> Client::Health(absl::string_view service,
                                             const CallOptions& options) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(std::string(service));
  grpc::health::v1::HealthCheckResponse response;
  absl::Status s = core_->Unary(*core_->health, &grpc::health::v1::Health::Stub::Check, request,
                                &response, options);
  if (s.code() == absl::StatusCode::kNotFound) return ServingStatus::kServiceUnknown;
  if (!s.ok()) return s;
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return ServingStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return ServingStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return ServingStatus::kServiceUnknown;
    default:
      return ServingStatus::kUnknown;
  }
}

const std::shared_ptr<grpc::Channel>& Client::channel() const { return core_->channel; }
v1::SessionBroker::Stub& Client::broker_stub() { return *core_->broker; }
v1::PoolMonitor::Stub& Client::monitor_stub() { return *core_->monitor; }
PipelineStats Client::pipeline_stats() const {
  internal::MuxCounters c = core_->mux.counters();
  PipelineStats out;
  out.streams_opened = c.streams_opened;
  out.stream_calls = c.stream_calls;
  out.stream_messages = c.stream_messages;
  out.unary_calls = core_->unary_calls.load(std::memory_order_relaxed);
  out.handed_back = c.handed_back;
  out.streams_failed = c.streams_failed;
  out.stream_ready = c.stream_ready;
  return out;
}

const ClientOptions& Client::options() const { return core_->options; }

std::unique_ptr<grpc::ClientContext> Client::NewContext(const CallOptions& options) const {
  auto context = std::make_unique<grpc::ClientContext>();
  core_->Prepare(*context, options);
  return context;
}

}  // namespace sessionbroker
