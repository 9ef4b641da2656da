#include "server/transport/session_broker_service.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/core/auth/statement_policy.h"
#include "server/core/exec/request_outcomes.h"
#include "server/core/sql/session_settings.h"
#include "server/transport/client_id.h"
#include "server/transport/keep_alive_reactor.h"
#include "server/transport/listen_reactor.h"
#include "server/transport/parse_failure.h"
#include "server/transport/pipeline_reactor.h"
#include "server/transport/request_fingerprint.h"
#include "server/transport/session_conversion.h"
#include "server/transport/status_mapping.h"
#include "server/transport/stream_execute_reactor.h"
#include "server/transport/value_conversion.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

// Listen's position among SessionBroker's methods in broker.proto (its
// handler slot). The one place to change when a method is added before it.
constexpr int kListenMethodIndex = 12;
// Pipeline's position (after Listen).
constexpr int kPipelineMethodIndex = 13;
// Results at least this large give their memory back when done.
constexpr size_t kTrimAfterBytes = size_t{1} << 20;

constexpr char kDrainingMessage[] = "the broker is shutting down; retry on another instance";

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

absl::Status TooLarge(size_t bytes, size_t limit) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the result is ", bytes, " bytes, over the ", limit,
      "-byte limit for one response (BROKER_MAX_RESULT_BYTES); add a LIMIT or page through "
      "the rows with WHERE/ORDER BY"));
}

// Listen on a service built without a NotificationHub.
class UnimplementedWriter final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  void OnDone() override { delete this; }
};

}  // namespace

// One unary call whose work completes later. Lives until OnDone. Finish is
// called once, and only after Start() has published the running call, so that
// OnCancel always finds it and the reactor cannot be deleted under Start().
class SessionBrokerService::CallReactor final : public grpc::ServerUnaryReactor {
 public:
  CallReactor(SessionBrokerService& service, grpc::CallbackServerContext* context,
              absl::AnyInvocable<void() &&> on_done)
      : service_(service), context_(context), on_done_(std::move(on_done)) {
    service_.CallStarted();
  }

  void Start(Starter start) {
    std::shared_ptr<core::RunningCall> call = std::move(start)(
        [this](absl::Status status) { FinishOnce(std::move(status), /*from_start=*/false); });
    {
      core::MutexLock lock(&mu_);
      call_ = std::move(call);
    }
    FinishOnce(absl::OkStatus(), /*from_start=*/true);
  }

  // Ends the call without running anything.
  void FinishNow(absl::Status status) { Finish(ToGrpcStatus(status, context_)); }

  void OnCancel() override {
    std::shared_ptr<core::RunningCall> call;
    {
      core::MutexLock lock(&mu_);
      call = call_;
    }
    if (call != nullptr) call->Cancel();
  }

  void OnDone() override {
    SessionBrokerService& service = service_;
    absl::AnyInvocable<void()&&> on_done = std::move(on_done_);
    delete this;
    if (on_done) std::move(on_done)();
    service.CallDone();
  }

 private:
  // Called twice: once when the work completes, once when Start() returns;
  // the second of the two finishes the RPC.
  void FinishOnce(absl::Status status, bool from_start) {
    {
      core::MutexLock lock(&mu_);
      if (!from_start) result_ = std::move(status);
      if (++arrivals_ < 2) return;
    }
    // After Finish, OnDone may run at any moment: touch nothing of `this`.
    Finish(ToGrpcStatus(result_, context_));
  }

  SessionBrokerService& service_;
  grpc::CallbackServerContext* const context_;
  absl::AnyInvocable<void() &&> on_done_;
  core::Mutex mu_;
  std::shared_ptr<core::RunningCall> call_ ABSL_GUARDED_BY(mu_);
  absl::Status result_;  // written before the second arrival, read after it
  int arrivals_ ABSL_GUARDED_BY(mu_) = 0;
};

SessionBrokerService::SessionBrokerService(core::StatementRunner& runner,
                                           core::SessionManager& sessions, size_t max_result_bytes,
                                           core::RequestLedger& ledger, CallAuthenticator auth,
                                           int max_array_depth,
                                           core::NotificationHub* notifications,
                                           size_t listen_queue_capacity, CallLimits limits)
    : runner_(runner),
      sessions_(sessions),
      max_result_bytes_(max_result_bytes),
      ledger_(ledger),
      auth_(auth),
      max_array_depth_(max_array_depth),
      notifications_(notifications),
      listen_queue_capacity_(listen_queue_capacity),
      limits_(limits) {
  // The indexes are the methods' order in broker.proto, as the generated
  // base class registers them.
  ReportParseFailures(0, &SessionBrokerService::Execute, &execute_messages_);
  ReportParseFailures(1, &SessionBrokerService::ExecuteBatch, &batch_messages_);
  ReportParseFailures(2, &SessionBrokerService::BeginSession);
  ReportParseFailures(3, &SessionBrokerService::RenewSession);
  ReportParseFailures(4, &SessionBrokerService::EndSession);
  ReportParseFailures(5, &SessionBrokerService::GetSession);
  ReportParseFailures(6, &SessionBrokerService::ListSessions);
  ReportParseFailures(7, &SessionBrokerService::BeginTransaction);
  ReportParseFailures(8, &SessionBrokerService::Commit);
  ReportParseFailures(9, &SessionBrokerService::Rollback);
  MarkMethodRawCallback(
      10, new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
              [this](grpc::CallbackServerContext* context) {
                absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
                absl::StatusOr<core::Caller> caller =
                    who.ok() ? absl::StatusOr<core::Caller>(who->caller())
                             : absl::StatusOr<core::Caller>(who.status());
                return KeepAliveReactor::Create(sessions_, draining_.load(), std::move(caller));
              }));
  MarkMethodRawCallback(
      11, new grpc::internal::CallbackServerStreamingHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
              [this](grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
                return ServeStreamExecute(context, *request);
              }));
  {
    // Like ReportParseFailures' check: the slot must be Listen's, or another
    // method's calls would be served as Listen streams.
    const google::protobuf::ServiceDescriptor* service =
        v1::ListenRequest::descriptor()->file()->FindServiceByName("SessionBroker");
    const google::protobuf::MethodDescriptor* slot =
        service != nullptr && kListenMethodIndex < service->method_count()
            ? service->method(kListenMethodIndex)
            : nullptr;
    if (slot == nullptr || slot->input_type() != v1::ListenRequest::descriptor() ||
        slot->output_type() != v1::ListenResponse::descriptor() || !slot->server_streaming()) {
      spdlog::critical("SessionBrokerService: handler slot {} is {}, not Listen",
                       kListenMethodIndex, slot == nullptr ? "missing" : slot->full_name());
      std::abort();
    }
  }
  MarkMethodRawCallback(
      kListenMethodIndex,
      new grpc::internal::CallbackServerStreamingHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
          [this](grpc::CallbackServerContext* context,
                 const grpc::ByteBuffer* request) -> grpc::ServerWriteReactor<grpc::ByteBuffer>* {
            // Listen is refused to whom every other call is refused.
            if (absl::StatusOr<CallIdentity> who = auth_.Identify(*context); !who.ok()) {
              auto* reactor = new UnimplementedWriter();
              reactor->Finish(ToGrpcStatus(who.status(), context));
              return reactor;
            }
            if (notifications_ == nullptr) {
              auto* reactor = new UnimplementedWriter();
              reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                           "this broker was built without a listener"));
              return reactor;
            }
            return ListenReactor::Create(*notifications_, context, *request, draining_.load(),
                                         listen_queue_capacity_);
          }));
  {
    const google::protobuf::ServiceDescriptor* service =
        v1::PipelineRequest::descriptor()->file()->FindServiceByName("SessionBroker");
    const google::protobuf::MethodDescriptor* slot =
        service != nullptr && kPipelineMethodIndex < service->method_count()
            ? service->method(kPipelineMethodIndex)
            : nullptr;
    if (slot == nullptr || slot->input_type() != v1::PipelineRequest::descriptor() ||
        slot->output_type() != v1::PipelineResponse::descriptor() || !slot->client_streaming() ||
        !slot->server_streaming()) {
      spdlog::critical("SessionBrokerService: handler slot {} is {}, not Pipeline",
                       kPipelineMethodIndex, slot == nullptr ? "missing" : slot->full_name());
      std::abort();
    }
  }
  // Raw bytes, parsed by the reactor: an unparseable message ends the stream
  // with INVALID_ARGUMENT naming PipelineRequest.
  MarkMethodRawCallback(
      kPipelineMethodIndex,
      new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
          [this](grpc::CallbackServerContext* context) {
            v1::PipelineLimits advertised;
            advertised.set_max_in_flight_per_stream(
                static_cast<uint32_t>(std::max(1, limits_.pipeline_max_in_flight)));
            // Each call is also an Execute call of BROKER_MAX_CALLS_PER_CLIENT:
            // the client is told the tighter of the two.
            int per_client = std::max(0, limits_.pipeline_max_in_flight_per_client);
            if (limits_.max_calls_per_client > 0) {
              per_client = per_client == 0 ? limits_.max_calls_per_client
                                           : std::min(per_client, limits_.max_calls_per_client);
            }
            advertised.set_max_in_flight_per_client(static_cast<uint32_t>(per_client));
            return PipelineReactor::Create(*this, context, auth_.Identify(*context),
                                           std::move(advertised));
          }));
}

template <typename Request, typename Response>
void SessionBrokerService::ReportParseFailures(
    int index,
    grpc::ServerUnaryReactor* (SessionBrokerService::*method)(grpc::CallbackServerContext*,
                                                              const Request*, Response*),
    grpc::MessageAllocator<Request, Response>* allocator) {
  // The generated base class numbers its handlers in broker.proto's method
  // order; a wrapper in the wrong slot would serve one method's calls with
  // another's code. Checked once per method at construction, so every test
  // that builds the service catches a reordered or added method.
  const google::protobuf::ServiceDescriptor* service =
      Request::descriptor()->file()->FindServiceByName("SessionBroker");
  const google::protobuf::MethodDescriptor* slot =
      service != nullptr && index < service->method_count() ? service->method(index) : nullptr;
  if (slot == nullptr || slot->input_type() != Request::descriptor() ||
      slot->output_type() != Response::descriptor()) {
    spdlog::critical("SessionBrokerService: handler slot {} is {}, not a {} -> {} method", index,
                     slot == nullptr ? "missing" : slot->full_name(),
                     Request::descriptor()->full_name(), Response::descriptor()->full_name());
    std::abort();
  }
  auto* handler = new grpc::internal::CallbackUnaryHandler<Request, Response>(
      [this, method](grpc::CallbackServerContext* context, const Request* request,
                     Response* response) {
        if (const std::string* failure = CurrentParseFailure()) {
          return Respond(context, absl::InvalidArgumentError(*failure));
        }
        return (this->*method)(context, request, response);
      });
  // Set on the handler itself: the generated SetMessageAllocatorFor_*
  // would cast the ParseFailureReporter around it.
  if (allocator != nullptr) handler->SetMessageAllocator(allocator);
  MarkMethodCallback(
      index, new ParseFailureReporter(UnparseableRequestMessage(Request::descriptor()->full_name()),
                                      handler));
}

grpc::ServerUnaryReactor* SessionBrokerService::RejectDraining(
    grpc::CallbackServerContext* context) {
  return Respond(context, absl::UnavailableError(kDrainingMessage));
}

grpc::ServerUnaryReactor* SessionBrokerService::Respond(grpc::CallbackServerContext* context,
                                                        const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status, context));
  return reactor;
}

namespace {

// A one-shot call's own settings (ExecuteRequest.settings,
// ExecuteBatchRequest.settings), checked against the sessions' allow list,
// into `run`: the runner then begins the call's transaction with them.
absl::Status TakeCallSettings(const google::protobuf::Map<std::string, std::string>& settings,
                              const std::string& session, core::RunRequest& run) {
  if (settings.empty()) return absl::OkStatus();
  if (!session.empty()) {
    return absl::InvalidArgumentError(
        "settings are not taken on a call in a session: the session's own settings "
        "(BeginSessionRequest.settings) apply to its statements; inside its transaction, SET "
        "LOCAL lasts until the transaction ends");
  }
  core::SessionSettings given(settings.begin(), settings.end());
  absl::StatusOr<core::SessionSettings> normalized =
      core::NormalizeSessionSettings(std::move(given));
  if (!normalized.ok()) return normalized.status();
  run.transaction.settings = *std::move(normalized);
  return absl::OkStatus();
}

// A request_id claim in the ledger, settled exactly once: Complete on
// success, Abandon on failure, and Abandon when the call never ran (it was
// refused while draining and its starter was dropped).
class LedgerClaim final {
 public:
  LedgerClaim(core::RequestLedger& ledger, std::string scope, std::string request_id)
      : ledger_(ledger), scope_(std::move(scope)), request_id_(std::move(request_id)) {}
  ~LedgerClaim() {
    if (!settled_) ledger_.Abandon(scope_, request_id_);
  }
  LedgerClaim(const LedgerClaim&) = delete;
  LedgerClaim& operator=(const LedgerClaim&) = delete;

  void Settle(const absl::Status& status, const google::protobuf::Message& response) {
    settled_ = true;
    if (status.ok()) {
      ledger_.Complete(scope_, request_id_, response.SerializeAsString());
    } else {
      ledger_.Abandon(scope_, request_id_);
    }
  }

 private:
  core::RequestLedger& ledger_;
  const std::string scope_;
  const std::string request_id_;
  bool settled_ = false;
};

// What a ledger claim answers without running the call: a request id reused
// for another request, one still running, an outcome too large to have been
// kept, or the remembered outcome (parsed into `response`, OK); nullopt when
// the call is to run (kRun).
std::optional<absl::Status> LedgerAnswerOf(const core::RequestLedger::Claim& claim,
                                           const std::string& request_id, size_t max_outcome_bytes,
                                           google::protobuf::Message* response) {
  using Kind = core::RequestLedger::Claim::Kind;
  switch (claim.kind) {
    case Kind::kMismatch:
      return core::RequestIdReusedError(request_id);
    case Kind::kRunning:
      return core::RequestIdRunningError(request_id);
    case Kind::kOmitted:
      return core::OutcomeOmittedError(request_id, max_outcome_bytes);
    case Kind::kReplay:
      return response->ParseFromString(claim.outcome)
                 ? absl::OkStatus()
                 : absl::InternalError("a remembered outcome could not be read");
    case Kind::kRun:
      break;
  }
  return std::nullopt;
}

// The answer a one-shot call's retry gets from the row its first attempt
// recorded.
absl::Status FromRecorded(const core::DurableRequest& durable, size_t max_outcome_bytes,
                          google::protobuf::Message* response) {
  const core::DurableRequest::Stored& stored = *durable.replayed;
  if (!stored.same_request) return core::RequestIdReusedError(durable.request_id);
  if (stored.omitted) return core::OutcomeOmittedError(durable.request_id, max_outcome_bytes);
  if (!response->ParseFromString(stored.response)) {
    return absl::InternalError(absl::StrCat("the recorded outcome of request_id \"",
                                            durable.request_id, "\" could not be read"));
  }
  return absl::OkStatus();
}

// The caller's policy on a one-shot or session call: its statements are
// checked (role changes, statement kinds, SET when read-only); a one-shot
// call runs as the client's database role and, for a read-only client, in a
// read-only transaction (a session call gets both from its session).
absl::Status ApplyPolicy(const CallIdentity& who, bool in_session, core::RunRequest& run) {
  if (who.policy == nullptr) return absl::OkStatus();
  const core::ClientPolicy& policy = *who.policy;
  if (core::ConstrainsStatements(policy)) {
    std::vector<absl::string_view> sqls;
    sqls.reserve(run.statements.size());
    for (const storage::Statement& s : run.statements) sqls.push_back(s.sql);
    if (absl::Status allowed = core::CheckStatementsAllowed(policy, sqls); !allowed.ok()) {
      return allowed;
    }
  }
  if (in_session) return absl::OkStatus();
  run.database_role = policy.database_role;
  if (policy.read_only) run.transaction.read_only = true;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<core::RunRequest> SessionBrokerService::RunOfExecute(
    const CallIdentity& who, absl::Time deadline, const v1::ExecuteRequest& request) const {
  core::RunRequest run;
  run.deadline = deadline;
  run.client_id = who.client_id;
  absl::StatusOr<std::vector<storage::Value>> params =
      ParamsFromProto(request.params(), "", max_array_depth_);
  if (!params.ok()) return params.status();
  absl::StatusOr<std::vector<std::string>> types = ParamTypesFromProto(request.params(), "");
  if (!types.ok()) return types.status();
  run.statements.push_back(storage::Statement{request.sql(), *std::move(params),
                                              /*cacheable=*/false, *std::move(types)});
  if (absl::Status taken = TakeCallSettings(request.settings(), request.session(), run);
      !taken.ok()) {
    return taken;
  }
  if (absl::Status allowed = ApplyPolicy(who, !request.session().empty(), run); !allowed.ok()) {
    return allowed;
  }
  return run;
}

grpc::ServerUnaryReactor* SessionBrokerService::Execute(grpc::CallbackServerContext* context,
                                                        const v1::ExecuteRequest* request,
                                                        v1::ExecuteResponse* response) {
  if (draining_.load()) return RejectDraining(context);
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  if (absl::Status valid = core::ValidateRequestId(request->request_id()); !valid.ok()) {
    return Respond(context, valid);
  }
  absl::StatusOr<core::RunRequest> run = RunOfExecute(*who, DeadlineOf(*context), *request);
  if (!run.ok()) return Respond(context, run.status());
  // Invalid SQL requests (empty, several statements, placeholder count) are
  // refused by the runner before it touches the pool.
  return StartRun(context, *std::move(run), request->session(), who->caller(),
                  request->request_id(), *request, response,
                  [this, response](core::StatementRunner::Results&& results) {
                    ResultToProto(std::move(results.front()), response);
                    return CapResponse(response);
                  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* SessionBrokerService::ServeStreamExecute(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer& raw) {
  CallStarted();
  auto done = [this] { CallDone(); };
  if (draining_.load()) {
    return StreamExecuteReactor::Refuse(context, absl::UnavailableError(kDrainingMessage), done);
  }
  // Refused to whom every other call is refused, before the request is read.
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return StreamExecuteReactor::Refuse(context, who.status(), done);
  v1::ExecuteRequest request;
  grpc::ByteBuffer copy(raw);
  if (!grpc::SerializationTraits<v1::ExecuteRequest>::Deserialize(&copy, &request).ok()) {
    return StreamExecuteReactor::Refuse(
        context,
        absl::InvalidArgumentError(UnparseableRequestMessage("sessionbroker.v1.ExecuteRequest")),
        done);
  }
  if (!request.request_id().empty()) {
    // A retry could not be answered with the first attempt's rows (they
    // are streamed, not kept), so a request id is not taken here.
    return StreamExecuteReactor::Refuse(
        context,
        absl::InvalidArgumentError(
            "request_id is not taken on StreamExecute (a streamed result cannot be replayed to a "
            "retry); use Execute for a write that must be safe to retry (docs/retries.md)"),
        done);
  }
  absl::StatusOr<core::RunRequest> run = RunOfExecute(*who, DeadlineOf(*context), request);
  if (!run.ok()) return StreamExecuteReactor::Refuse(context, run.status(), done);
  const std::string client = run->client_id;
  if (absl::Status admitted = Admit(client); !admitted.ok()) {
    return StreamExecuteReactor::Refuse(context, admitted, done);
  }
  // The window, and the message being written from it.
  const size_t held = 2 * limits_.stream_window_bytes;
  if (absl::Status reserved = Reserve(held); !reserved.ok()) {
    Leave(client);
    return StreamExecuteReactor::Refuse(context, reserved, done);
  }
  return StreamExecuteReactor::Start(context, runner_, sessions_, *std::move(run),
                                     request.session(), who->caller(), limits_.stream_window_bytes,
                                     [this, client, held] {
                                       Release(held);
                                       Leave(client);
                                       TrimMemory();
                                       CallDone();
                                     });
}

absl::StatusOr<core::RunRequest> SessionBrokerService::RunOfBatch(
    const CallIdentity& who, absl::Time deadline, const v1::ExecuteBatchRequest& request) const {
  core::RunRequest run;
  run.op = core::RunRequest::Op::kBatch;
  run.deadline = deadline;
  run.client_id = who.client_id;
  run.statements.reserve(request.statements_size());
  for (int i = 0; i < request.statements_size(); ++i) {
    const v1::Statement& s = request.statements(i);
    absl::StatusOr<std::vector<storage::Value>> params =
        ParamsFromProto(s.params(), absl::StrCat("statements[", i, "]."), max_array_depth_);
    if (!params.ok()) return params.status();
    absl::StatusOr<std::vector<std::string>> types =
        ParamTypesFromProto(s.params(), absl::StrCat("statements[", i, "]."));
    if (!types.ok()) return types.status();
    run.statements.push_back(storage::Statement{s.sql(), *std::move(params),
                                                /*cacheable=*/false, *std::move(types)});
  }
  if (absl::Status taken = TakeCallSettings(request.settings(), request.session(), run);
      !taken.ok()) {
    return taken;
  }
  if (absl::Status allowed = ApplyPolicy(who, !request.session().empty(), run); !allowed.ok()) {
    return allowed;
  }
  return run;
}

grpc::ServerUnaryReactor* SessionBrokerService::ExecuteBatch(grpc::CallbackServerContext* context,
                                                             const v1::ExecuteBatchRequest* request,
                                                             v1::ExecuteBatchResponse* response) {
  if (draining_.load()) return RejectDraining(context);
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  if (absl::Status valid = core::ValidateRequestId(request->request_id()); !valid.ok()) {
    return Respond(context, valid);
  }
  absl::StatusOr<core::RunRequest> run = RunOfBatch(*who, DeadlineOf(*context), *request);
  if (!run.ok()) return Respond(context, run.status());
  return StartRun(context, *std::move(run), request->session(), who->caller(),
                  request->request_id(), *request, response,
                  [this, response](core::StatementRunner::Results&& results) {
                    for (storage::QueryResult& r : results) {
                      ResultToProto(std::move(r), response->add_results());
                    }
                    return CapResponse(response);
                  });
}

grpc::ServerUnaryReactor* SessionBrokerService::BeginSession(grpc::CallbackServerContext* context,
                                                             const v1::BeginSessionRequest* request,
                                                             v1::Session* response) {
  if (draining_.load()) return RejectDraining(context);
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  core::SessionSpec spec;
  absl::StatusOr<absl::Duration> ttl = DurationFromProto(request->ttl(), "ttl");
  if (!ttl.ok()) return Respond(context, ttl.status());
  spec.ttl = *ttl;
  absl::StatusOr<core::Isolation> isolation = IsolationFromProto(request->isolation(), "isolation");
  if (!isolation.ok()) return Respond(context, isolation.status());
  spec.isolation = *isolation;
  spec.read_only = request->read_only();
  for (const auto& [name, value] : request->settings()) spec.settings.emplace_back(name, value);
  spec.label = request->label();
  spec.client_id = who->client_id;
  if (who->policy != nullptr) {
    // A read-only client's sessions are read-only whatever it asks.
    spec.read_only = spec.read_only || who->policy->read_only;
    spec.database_role = who->policy->database_role;
  }
  const absl::Time deadline = DeadlineOf(*context);
  if (absl::Status valid = core::ValidateRequestId(request->request_id()); !valid.ok()) {
    return Respond(context, valid);
  }
  // A retry gets the session the first call leased, as it is now (or the
  // error GetSession would give once it has ended): never a second one.
  Replay replay = [this, response, caller = who->caller()](grpc::CallbackServerContext* context,
                                                           const std::string& outcome) {
    v1::Session first;
    if (!first.ParseFromString(outcome)) {
      return Respond(context, absl::InternalError("a remembered session could not be read"));
    }
    absl::StatusOr<core::SessionInfo> info = sessions_.Get(caller, first.name());
    if (info.ok()) SessionToProto(*info, response);
    return Respond(context, info.status());
  };
  return StartRemembered(
      context, who->client_id, request->request_id(), *request, response,
      [this, spec = std::move(spec), deadline,
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        sessions_.Begin(
            std::move(spec), deadline,
            [response, done = std::move(done)](absl::StatusOr<core::SessionInfo> info) mutable {
              if (info.ok()) SessionToProto(*info, response);
              std::move(done)(info.status());
            });
        return nullptr;
      },
      /*during_drain=*/false, std::move(replay));
}

grpc::ServerUnaryReactor* SessionBrokerService::RenewSession(grpc::CallbackServerContext* context,
                                                             const v1::RenewSessionRequest* request,
                                                             v1::Session* response) {
  if (draining_.load()) return RejectDraining(context);
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  absl::StatusOr<absl::Duration> ttl = DurationFromProto(request->ttl(), "ttl");
  if (!ttl.ok()) return Respond(context, ttl.status());
  absl::StatusOr<core::SessionInfo> info = sessions_.Renew(who->caller(), request->session(), *ttl);
  if (info.ok()) SessionToProto(*info, response);
  return Respond(context, info.status());
}

grpc::ServerUnaryReactor* SessionBrokerService::GetSession(grpc::CallbackServerContext* context,
                                                           const v1::GetSessionRequest* request,
                                                           v1::Session* response) {
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  absl::StatusOr<core::SessionInfo> info = sessions_.Get(who->caller(), request->session());
  if (info.ok()) SessionToProto(*info, response);
  return Respond(context, info.status());
}

grpc::ServerUnaryReactor* SessionBrokerService::ListSessions(grpc::CallbackServerContext* context,
                                                             const v1::ListSessionsRequest* request,
                                                             v1::ListSessionsResponse* response) {
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  // Only an admin (or any caller without a clients file) sees every
  // client's sessions; the others see their own whatever they filter by.
  absl::StatusOr<core::SessionManager::Page> page = sessions_.List(
      who->caller(), request->page_size(), request->page_token(), request->client_id());
  if (page.ok()) {
    for (const core::SessionInfo& info : page->sessions) {
      SessionToProto(info, response->add_sessions());
    }
    response->set_next_page_token(page->next_page_token);
    response->set_total_size(page->total_size);
  }
  return Respond(context, page.status());
}

grpc::ServerUnaryReactor* SessionBrokerService::EndSession(grpc::CallbackServerContext* context,
                                                           const v1::EndSessionRequest* request,
                                                           v1::EndSessionResponse* response) {
  // Allowed while draining: ending a session only gives back. An admin may
  // end any session.
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  return StartCall(
      context,
      [this, name = request->session(), caller = who->caller(),
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        sessions_.End(caller, name,
                      [response, done = std::move(done)](absl::StatusOr<bool> rolled_back) mutable {
                        if (rolled_back.ok()) response->set_rolled_back(*rolled_back);
                        std::move(done)(rolled_back.status());
                      });
        return nullptr;
      },
      /*during_drain=*/true);
}

grpc::ServerUnaryReactor* SessionBrokerService::BeginTransaction(
    grpc::CallbackServerContext* context, const v1::BeginTransactionRequest* request,
    v1::BeginTransactionResponse* response) {
  if (draining_.load()) return RejectDraining(context);
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  core::TransactionSpec spec;
  absl::StatusOr<core::Isolation> isolation = IsolationFromProto(request->isolation(), "isolation");
  if (!isolation.ok()) return Respond(context, isolation.status());
  spec.isolation = *isolation;
  spec.read_only = request->read_only() || (who->policy != nullptr && who->policy->read_only);
  spec.deferrable = request->deferrable();
  const absl::Time deadline = DeadlineOf(*context);
  if (absl::Status valid = core::ValidateRequestId(request->request_id()); !valid.ok()) {
    return Respond(context, valid);
  }
  return StartRemembered(
      context, who->client_id, request->request_id(), *request, response,
      [this, name = request->session(), caller = who->caller(), spec, deadline,
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        return sessions_.BeginTransaction(
            caller, name, spec, deadline,
            [response, done = std::move(done)](absl::StatusOr<core::SessionInfo> info) mutable {
              if (info.ok()) SessionToProto(*info, response->mutable_session());
              std::move(done)(info.status());
            });
      });
}

grpc::ServerUnaryReactor* SessionBrokerService::Commit(grpc::CallbackServerContext* context,
                                                       const v1::CommitRequest* request,
                                                       v1::CommitResponse* response) {
  // Allowed while draining: it ends a transaction a running client began.
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  const absl::Time deadline = DeadlineOf(*context);
  if (absl::Status valid = core::ValidateRequestId(request->request_id()); !valid.ok()) {
    return Respond(context, valid);
  }
  return StartRemembered(
      context, who->client_id, request->request_id(), *request, response,
      [this, name = request->session(), caller = who->caller(), deadline,
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        return sessions_.Commit(
            caller, name, deadline,
            [response, done = std::move(done)](absl::StatusOr<absl::Time> at) mutable {
              if (at.ok()) TimeToProto(*at, response->mutable_commit_time());
              std::move(done)(at.status());
            });
      },
      /*during_drain=*/true);
}

grpc::ServerUnaryReactor* SessionBrokerService::Rollback(grpc::CallbackServerContext* context,
                                                         const v1::RollbackRequest* request,
                                                         v1::RollbackResponse* response) {
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (!who.ok()) return Respond(context, who.status());
  const absl::Time deadline = DeadlineOf(*context);
  return StartCall(
      context,
      [this, name = request->session(), caller = who->caller(), deadline,
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        return sessions_.Rollback(
            caller, name, deadline,
            [response, done = std::move(done)](absl::StatusOr<bool> rolled_back) mutable {
              if (rolled_back.ok()) response->set_rolled_back(*rolled_back);
              std::move(done)(rolled_back.status());
            });
      },
      /*during_drain=*/true);
}

grpc::ServerUnaryReactor* SessionBrokerService::StartCall(grpc::CallbackServerContext* context,
                                                          Starter start, bool during_drain,
                                                          absl::AnyInvocable<void() &&> on_done) {
  auto* reactor = new CallReactor(*this, context, std::move(on_done));
  // Counted in flight first, checked second: StartDraining() either sees
  // this call in WaitForIdle or this call sees the drain.
  if (draining_.load() && !during_drain) {
    reactor->FinishNow(absl::UnavailableError(kDrainingMessage));
    return reactor;
  }
  reactor->Start(std::move(start));
  return reactor;
}

grpc::ServerUnaryReactor* SessionBrokerService::StartRemembered(
    grpc::CallbackServerContext* context, const std::string& scope, const std::string& request_id,
    const google::protobuf::Message& request, google::protobuf::Message* response, Starter start,
    bool during_drain, Replay replay, absl::AnyInvocable<void() &&> on_done) {
  if (request_id.empty())
    return StartCall(context, std::move(start), during_drain, std::move(on_done));
  // Answered without a call: what the call would release at its end goes now.
  auto answer = [&](absl::Status status) {
    if (on_done != nullptr) std::move(on_done)();
    return Respond(context, status);
  };
  if (draining_.load() && !during_drain) {
    if (on_done != nullptr) std::move(on_done)();
    return RejectDraining(context);
  }
  const core::RequestLedger::Claim claim =
      ledger_.Begin(scope, request_id, RequestFingerprint(request));
  if (claim.kind == core::RequestLedger::Claim::Kind::kReplay && replay != nullptr) {
    if (on_done != nullptr) std::move(on_done)();
    return replay(context, claim.outcome);
  }
  if (std::optional<absl::Status> answered =
          LedgerAnswerOf(claim, request_id, ledger_.options().max_outcome_bytes, response)) {
    return answer(*std::move(answered));
  }
  auto settle = std::make_shared<LedgerClaim>(ledger_, scope, request_id);
  return StartCall(
      context,
      [start = std::move(start), settle,
       response](Done done) mutable -> std::shared_ptr<core::RunningCall> {
        return std::move(start)(
            [settle, response, done = std::move(done)](absl::Status status) mutable {
              settle->Settle(status, *response);
              std::move(done)(std::move(status));
            });
      },
      during_drain, std::move(on_done));
}

grpc::ServerUnaryReactor* SessionBrokerService::StartRun(
    grpc::CallbackServerContext* context, core::RunRequest run, const std::string& session,
    core::Caller caller, const std::string& request_id, const google::protobuf::Message& request,
    google::protobuf::Message* response, RunFill fill) {
  const std::string client = run.client_id;
  if (absl::Status admitted = Admit(client); !admitted.ok()) return Respond(context, admitted);
  auto held = std::make_shared<HeldResult>();
  absl::AnyInvocable<void()&&> on_done = [this, client, held] {
    Release(held->bytes);
    Leave(client);
    if (held->trim) TrimMemory();
  };
  if (request_id.empty()) {
    return StartCall(context,
                     RunStarter(std::move(run), session, caller, std::move(fill), response, held),
                     /*during_drain=*/false, std::move(on_done));
  }
  if (!session.empty()) {
    return StartRemembered(
        context, caller.client_id, request_id, request, response,
        RunStarter(std::move(run), session, caller, std::move(fill), response, held),
        /*during_drain=*/false, /*replay=*/nullptr, std::move(on_done));
  }
  // One-shot: the request id is recorded with the statements' own
  // transaction, and an earlier attempt's record answers instead. A result
  // over BROKER_MAX_RESULT_BYTES fails inside that transaction, so the
  // statements are rolled back together with their record.
  RunFill recorded = RecordOneShot(run, request_id, request, response, std::move(fill));
  return StartCall(
      context,
      RunStarter(std::move(run), session, std::move(caller), std::move(recorded), response, held),
      /*during_drain=*/false, std::move(on_done));
}

SessionBrokerService::RunFill SessionBrokerService::RecordOneShot(
    core::RunRequest& run, const std::string& request_id, const google::protobuf::Message& request,
    google::protobuf::Message* response, RunFill fill) {
  auto durable = std::make_shared<core::DurableRequest>();
  durable->client_id = run.client_id;
  durable->request_id = request_id;
  durable->fingerprint = RequestFingerprint(request);
  const bool batch = run.op == core::RunRequest::Op::kBatch;
  durable->serialize = [batch](const core::StatementRunner::Results& results) {
    if (batch) {
      v1::ExecuteBatchResponse out;
      for (const storage::QueryResult& r : results) {
        ResultToProto(storage::QueryResult(r), out.add_results());
      }
      return out.SerializeAsString();
    }
    v1::ExecuteResponse out;
    ResultToProto(storage::QueryResult(results.front()), &out);
    return out.SerializeAsString();
  };
  run.durable = durable;
  const size_t max_outcome_bytes = ledger_.options().max_outcome_bytes;
  RunFill recorded = [durable, max_outcome_bytes, response,
                      fill = std::move(fill)](core::StatementRunner::Results&& results) mutable {
    if (durable->replayed.has_value()) return FromRecorded(*durable, max_outcome_bytes, response);
    return fill(std::move(results));
  };
  return recorded;
}

SessionBrokerService::Starter SessionBrokerService::RunStarter(core::RunRequest run,
                                                               const std::string& session,
                                                               core::Caller caller, RunFill fill,
                                                               google::protobuf::Message* response,
                                                               std::shared_ptr<HeldResult> held) {
  return [this, run = std::move(run), session, caller = std::move(caller), fill = std::move(fill),
          response, held](Done done) mutable -> std::shared_ptr<core::RunningCall> {
    auto complete = [this, fill = std::move(fill), done = std::move(done), response,
                     held](absl::StatusOr<core::StatementRunner::Results> results) mutable {
      absl::Status status = results.ok() ? fill(*std::move(results)) : results.status();
      // Over a limit: large results were read (and dropped) to get here.
      if (status.code() == absl::StatusCode::kResourceExhausted) held->trim = true;
      if (status.ok()) {
        const size_t bytes = response->ByteSizeLong();
        status = Reserve(bytes);
        if (status.ok()) {
          held->bytes = bytes;
          held->trim = held->trim || bytes >= kTrimAfterBytes;
        } else {
          response->Clear();
        }
      }
      std::move(done)(std::move(status));
    };
    // Invalid SQL requests (empty, several statements, placeholder count)
    // are refused before any database work.
    if (session.empty()) return runner_.Run(std::move(run), std::move(complete));
    return sessions_.Run(caller, session, std::move(run), std::move(complete));
  };
}

absl::Status SessionBrokerService::Admit(const std::string& client) {
  if (limits_.max_calls_per_client <= 0) return absl::OkStatus();
  core::MutexLock lock(&mu_);
  int& calls = calls_by_client_[client];
  if (calls >= limits_.max_calls_per_client) {
    if (calls == 0) calls_by_client_.erase(client);
    return absl::ResourceExhaustedError(
        absl::StrCat("client \"", client, "\" has ", limits_.max_calls_per_client,
                     " Execute/ExecuteBatch/StreamExecute calls in flight, its limit "
                     "(BROKER_MAX_CALLS_PER_CLIENT); retry once some have completed"));
  }
  ++calls;
  return absl::OkStatus();
}

void SessionBrokerService::Leave(const std::string& client) {
  if (limits_.max_calls_per_client <= 0) return;
  core::MutexLock lock(&mu_);
  auto it = calls_by_client_.find(client);
  if (it == calls_by_client_.end()) return;
  if (--it->second <= 0) calls_by_client_.erase(it);
}

absl::Status SessionBrokerService::Reserve(size_t bytes) {
  core::MutexLock lock(&mu_);
  if (pending_result_bytes_ + bytes > limits_.max_pending_result_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the broker holds ", pending_result_bytes_, " bytes of results not yet sent and this one ",
        "needs ", bytes, " more, over BROKER_MAX_PENDING_RESULT_BYTES (",
        limits_.max_pending_result_bytes,
        "); retry shortly, read results faster, or stream them (StreamExecute)"));
  }
  pending_result_bytes_ += bytes;
  return absl::OkStatus();
}

void SessionBrokerService::Release(size_t bytes) {
  core::MutexLock lock(&mu_);
  pending_result_bytes_ -= std::min(bytes, pending_result_bytes_);
}

size_t SessionBrokerService::pending_result_bytes() const {
  core::MutexLock lock(&mu_);
  return pending_result_bytes_;
}

void SessionBrokerService::TrimMemory() {
  // glibc keeps freed memory of its arenas for reuse; a large result would
  // stay in the broker's RSS without this (docs/streaming.md, measured).
  if (trimming_.exchange(true)) return;
  malloc_trim(0);
  trimming_.store(false);
}

absl::Status SessionBrokerService::CapResponse(google::protobuf::Message* response) const {
  // The storage layer already refused results whose upper-bound estimate is
  // over the limit; this checks the exact size of what will be sent.
  const size_t bytes = response->ByteSizeLong();
  if (bytes <= max_result_bytes_) return absl::OkStatus();
  response->Clear();
  return TooLarge(bytes, max_result_bytes_);
}

void SessionBrokerService::StartDraining() {
  draining_.store(true);
  // Each stream stops starting calls and ends once its running ones are
  // sent. Under pipelines_mu_: a stream's OnDone waits for it, so none is
  // deleted meanwhile.
  core::MutexLock lock(&pipelines_mu_);
  pipelines_draining_ = true;
  for (PipelineReactor* reactor : pipelines_) reactor->Drain();
}

void SessionBrokerService::CallStarted() {
  core::MutexLock lock(&mu_);
  ++in_flight_;
}

void SessionBrokerService::CallDone() {
  core::MutexLock lock(&mu_);
  if (--in_flight_ == 0) idle_.SignalAll();
}

bool SessionBrokerService::WaitForIdle(absl::Time deadline) {
  core::MutexLock lock(&mu_);
  while (in_flight_ > 0) {
    if (!idle_.WaitUntil(&mu_, deadline)) return false;
  }
  return true;
}

int SessionBrokerService::in_flight() const {
  core::MutexLock lock(&mu_);
  return in_flight_;
}

// ---- Pipeline ---------------------------------------------------------------

namespace {

// The calls of an independent batch: cancelling it cancels each.
class RunningCalls final : public core::RunningCall {
 public:
  void Add(std::shared_ptr<core::RunningCall> call) {
    if (call == nullptr) return;
    core::MutexLock lock(&mu_);
    calls_.push_back(std::move(call));
  }
  void Cancel() override {
    for (const std::shared_ptr<core::RunningCall>& call : Calls()) call->Cancel();
  }
  void Abort(absl::Status why) override {
    for (const std::shared_ptr<core::RunningCall>& call : Calls()) call->Abort(why);
  }

 private:
  std::vector<std::shared_ptr<core::RunningCall>> Calls() {
    core::MutexLock lock(&mu_);
    return calls_;
  }
  core::Mutex mu_;
  std::vector<std::shared_ptr<core::RunningCall>> calls_ ABSL_GUARDED_BY(mu_);
};

// An independent batch's items as they complete; the last one answers.
struct ItemsGather {
  ItemsGather(int count, PipelineHost::Completion done) : remaining(count), done(std::move(done)) {
    for (int i = 0; i < count; ++i) result.mutable_items()->add_items();
  }
  // Returns true for the last item.
  bool Done(size_t bytes) {
    core::MutexLock lock(&mu);
    held_bytes += bytes;
    return --remaining == 0;
  }
  core::Mutex mu;
  int remaining ABSL_GUARDED_BY(mu);
  size_t held_bytes ABSL_GUARDED_BY(mu) = 0;
  // Each item is written by its own call only, and read by the last.
  v1::PipelineResult result;
  PipelineHost::Completion done;
};

void FailItem(const absl::Status& status, v1::PipelineItem* item) {
  std::string reason;
  StatusToProto(status, item->mutable_status(), item->mutable_sqlstate(), &reason);
}

void Fail(const absl::Status& status, PipelineHost::Completion done) {
  v1::PipelineResult result;
  StatusToProto(status, result.mutable_status(), result.mutable_sqlstate(),
                result.mutable_reason());
  std::move(done)(std::move(result), 0);
}

}  // namespace

bool SessionBrokerService::RegisterPipelineStream(PipelineReactor* reactor) {
  core::MutexLock lock(&pipelines_mu_);
  pipelines_.insert(reactor);
  ++pipeline_streams_opened_;
  return !pipelines_draining_;
}

core::PipelineStreamStats SessionBrokerService::PipelineStreams() const {
  core::PipelineStreamStats out;
  out.calls = pipeline_stream_calls_.load(std::memory_order_relaxed);
  core::MutexLock lock(&pipelines_mu_);
  out.open = static_cast<int64_t>(pipelines_.size());
  out.opened = pipeline_streams_opened_;
  return out;
}

void SessionBrokerService::PipelineStreamDone(PipelineReactor* reactor) {
  core::MutexLock lock(&pipelines_mu_);
  pipelines_.erase(reactor);
  if (pipelines_.empty()) pipelines_gone_.SignalAll();
}

bool SessionBrokerService::WaitForPipelineStreamsDone(absl::Time deadline) {
  core::MutexLock lock(&pipelines_mu_);
  while (!pipelines_.empty()) {
    if (!pipelines_gone_.WaitUntil(&pipelines_mu_, deadline)) return false;
  }
  return true;
}

absl::Status SessionBrokerService::AdmitPipelineCall(const std::string& client) {
  core::MutexLock lock(&mu_);
  const int limit = limits_.pipeline_max_in_flight_per_client;
  int& calls = pipeline_calls_by_client_[client];
  if (limit > 0 && calls >= limit) {
    if (calls == 0) pipeline_calls_by_client_.erase(client);
    return WithPipelineReason(
        absl::ResourceExhaustedError(absl::StrCat(
            "client \"", client, "\" has ", limit,
            " Pipeline calls in flight on its streams together, its limit "
            "(BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT, advertised in each stream's first "
            "message); send more once results have arrived")),
        kPipelineLimitReason);
  }
  ++calls;
  ++in_flight_;  // as CallStarted(): draining waits for it
  return absl::OkStatus();
}

void SessionBrokerService::PipelineCallSent(const std::string& client, size_t held_bytes) {
  Release(held_bytes);
  core::MutexLock lock(&mu_);
  if (auto it = pipeline_calls_by_client_.find(client); it != pipeline_calls_by_client_.end()) {
    if (--it->second <= 0) pipeline_calls_by_client_.erase(it);
  }
  if (--in_flight_ == 0) idle_.SignalAll();
}

std::shared_ptr<core::RunningCall> SessionBrokerService::StartDetached(
    core::RunRequest run, const std::string& session, core::Caller caller,
    const std::string& request_id, const google::protobuf::Message& request,
    std::shared_ptr<google::protobuf::Message> response, RunFill fill, Finish finish) {
  const std::string client = run.client_id;
  if (absl::Status admitted = Admit(client); !admitted.ok()) {
    std::move(finish)(admitted, 0);
    return nullptr;
  }
  auto held = std::make_shared<HeldResult>();
  // `response` lives until the call is done: the fill writes into it.
  Done done = [this, client, held, response,
               finish = std::move(finish)](absl::Status status) mutable {
    Leave(client);
    if (held->trim) TrimMemory();
    std::move(finish)(std::move(status), held->bytes);
  };
  if (!request_id.empty() && session.empty()) {
    fill = RecordOneShot(run, request_id, request, response.get(), std::move(fill));
  }
  Starter start =
      RunStarter(std::move(run), session, caller, std::move(fill), response.get(), held);
  if (!request_id.empty() && !session.empty()) {
    // As StartRemembered: the ledger answers a retry of a session call.
    const core::RequestLedger::Claim claim =
        ledger_.Begin(caller.client_id, request_id, RequestFingerprint(request));
    if (std::optional<absl::Status> answered = LedgerAnswerOf(
            claim, request_id, ledger_.options().max_outcome_bytes, response.get())) {
      std::move(done)(*std::move(answered));
      return nullptr;
    }
    auto settle = std::make_shared<LedgerClaim>(ledger_, caller.client_id, request_id);
    done = [settle, response, done = std::move(done)](absl::Status status) mutable {
      settle->Settle(status, *response);
      std::move(done)(std::move(status));
    };
  }
  return std::move(start)(std::move(done));
}

std::shared_ptr<core::RunningCall> SessionBrokerService::StartPipelineExecute(
    const CallIdentity& who, absl::Time deadline, const v1::ExecuteRequest& request, Finish finish,
    std::shared_ptr<v1::ExecuteResponse> out) {
  if (absl::Status valid = core::ValidateRequestId(request.request_id()); !valid.ok()) {
    std::move(finish)(valid, 0);
    return nullptr;
  }
  absl::StatusOr<core::RunRequest> run = RunOfExecute(who, deadline, request);
  if (!run.ok()) {
    std::move(finish)(run.status(), 0);
    return nullptr;
  }
  v1::ExecuteResponse* response = out.get();
  return StartDetached(
      *std::move(run), request.session(), who.caller(), request.request_id(), request, out,
      [this, response](core::StatementRunner::Results&& results) {
        ResultToProto(std::move(results.front()), response);
        return CapResponse(response);
      },
      std::move(finish));
}

std::shared_ptr<core::RunningCall> SessionBrokerService::StartPipelineBatch(
    const CallIdentity& who, absl::Time deadline, const v1::ExecuteBatchRequest& request,
    Finish finish, std::shared_ptr<v1::ExecuteBatchResponse> out) {
  if (absl::Status valid = core::ValidateRequestId(request.request_id()); !valid.ok()) {
    std::move(finish)(valid, 0);
    return nullptr;
  }
  absl::StatusOr<core::RunRequest> run = RunOfBatch(who, deadline, request);
  if (!run.ok()) {
    std::move(finish)(run.status(), 0);
    return nullptr;
  }
  v1::ExecuteBatchResponse* response = out.get();
  return StartDetached(
      *std::move(run), request.session(), who.caller(), request.request_id(), request, out,
      [this, response](core::StatementRunner::Results&& results) {
        for (storage::QueryResult& r : results) {
          ResultToProto(std::move(r), response->add_results());
        }
        return CapResponse(response);
      },
      std::move(finish));
}

std::shared_ptr<core::RunningCall> SessionBrokerService::StartIndependentBatch(
    const CallIdentity& who, absl::Time deadline, const v1::ExecuteBatchRequest& request,
    PipelineHost::Completion done) {
  if (!request.request_id().empty()) {
    Fail(absl::InvalidArgumentError(
             "request_id is not taken on an independent_batch (its items have no single outcome "
             "to replay); send each item as an execute call with its own request_id"),
         std::move(done));
    return nullptr;
  }
  if (request.statements_size() == 0) {
    Fail(absl::InvalidArgumentError("an independent_batch needs at least one statement"),
         std::move(done));
    return nullptr;
  }
  auto gather = std::make_shared<ItemsGather>(request.statements_size(), std::move(done));
  auto calls = std::make_shared<RunningCalls>();
  for (int i = 0; i < request.statements_size(); ++i) {
    v1::ExecuteRequest item;
    item.set_sql(request.statements(i).sql());
    *item.mutable_params() = request.statements(i).params();
    item.set_session(request.session());
    *item.mutable_settings() = request.settings();
    auto out = std::make_shared<v1::ExecuteResponse>();
    v1::PipelineItem* slot = gather->result.mutable_items()->mutable_items(i);
    calls->Add(StartPipelineExecute(
        who, deadline, item,
        [gather, slot, out](absl::Status status, size_t bytes) {
          if (status.ok()) {
            slot->mutable_result()->Swap(out.get());
          } else {
            FailItem(status, slot);
          }
          if (!gather->Done(bytes)) return;
          size_t held;
          {
            core::MutexLock lock(&gather->mu);
            held = gather->held_bytes;
          }
          std::move(gather->done)(std::move(gather->result), held);
        },
        out));
  }
  return calls;
}

std::shared_ptr<core::RunningCall> SessionBrokerService::StartPipelineCall(
    const CallIdentity& who, absl::Time deadline, v1::PipelineCall& call,
    PipelineHost::Completion done) {
  pipeline_stream_calls_.fetch_add(1, std::memory_order_relaxed);
  switch (call.body_case()) {
    case v1::PipelineCall::kExecute: {
      auto out = std::make_shared<v1::ExecuteResponse>();
      return StartPipelineExecute(
          who, deadline, call.execute(),
          [out, done = std::move(done)](absl::Status status, size_t bytes) mutable {
            if (!status.ok()) return Fail(status, std::move(done));
            v1::PipelineResult result;
            result.mutable_execute()->Swap(out.get());
            std::move(done)(std::move(result), bytes);
          },
          out);
    }
    case v1::PipelineCall::kExecuteBatch: {
      auto out = std::make_shared<v1::ExecuteBatchResponse>();
      return StartPipelineBatch(
          who, deadline, call.execute_batch(),
          [out, done = std::move(done)](absl::Status status, size_t bytes) mutable {
            if (!status.ok()) return Fail(status, std::move(done));
            v1::PipelineResult result;
            result.mutable_execute_batch()->Swap(out.get());
            std::move(done)(std::move(result), bytes);
          },
          out);
    }
    case v1::PipelineCall::kIndependentBatch:
      return StartIndependentBatch(who, deadline, call.independent_batch(), std::move(done));
    case v1::PipelineCall::BODY_NOT_SET:
      break;
  }
  Fail(absl::InvalidArgumentError(
           "a PipelineCall needs a body: execute, execute_batch or independent_batch"),
       std::move(done));
  return nullptr;
}

}  // namespace sessionbroker::transport
