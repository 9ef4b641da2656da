#include "server/transport/session_broker_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/strings/str_cat.h"
#include "server/transport/client_id.h"
#include "server/transport/status_mapping.h"
#include "server/transport/value_conversion.h"

namespace sessionbroker::transport {
namespace {

constexpr char kDrainingMessage[] =
    "the broker is shutting down; retry on another instance";

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

}  // namespace

// One unary call that runs SQL. Lives until OnDone. Finish is called once,
// and only after Start() has published the running call, so that OnCancel
// always finds it and the reactor cannot be deleted under Start().
class SessionBrokerService::RunReactor final : public grpc::ServerUnaryReactor {
 public:
  using Fill = RunFill;

  RunReactor(SessionBrokerService& service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    service_.CallStarted();
  }

  void Start(core::RunRequest request, Fill fill) {
    fill_ = std::move(fill);
    std::shared_ptr<core::RunningCall> call = service_.runner_.Run(
        std::move(request), [this](absl::StatusOr<core::StatementRunner::Results> results) {
          absl::Status status = results.ok() ? fill_(*std::move(results)) : results.status();
          FinishOnce(std::move(status), /*from_start=*/false);
        });
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
    delete this;
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
  Fill fill_;
  core::Mutex mu_;
  std::shared_ptr<core::RunningCall> call_ ABSL_GUARDED_BY(mu_);
  absl::Status result_;  // written before the second arrival, read after it
  int arrivals_ ABSL_GUARDED_BY(mu_) = 0;
};

SessionBrokerService::SessionBrokerService(core::StatementRunner& runner, size_t max_result_bytes)
    : runner_(runner), max_result_bytes_(max_result_bytes) {}

grpc::ServerUnaryReactor* SessionBrokerService::RejectDraining(
    grpc::CallbackServerContext* context) {
  return Reject(context, absl::UnavailableError(kDrainingMessage));
}

grpc::ServerUnaryReactor* SessionBrokerService::Reject(grpc::CallbackServerContext* context,
                                                       const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status, context));
  return reactor;
}

grpc::ServerUnaryReactor* SessionBrokerService::Execute(grpc::CallbackServerContext* context,
                                                        const v1::ExecuteRequest* request,
                                                        v1::ExecuteResponse* response) {
  if (draining_.load()) return RejectDraining(context);
  core::RunRequest run;
  run.deadline = DeadlineOf(*context);
  run.client_id = ClientIdOf(*context);
  absl::StatusOr<std::vector<storage::Value>> params = ParamsFromProto(request->params(), "");
  if (!params.ok()) return Reject(context, params.status());
  run.statements.push_back(storage::Statement{request->sql(), *std::move(params)});
  // Invalid SQL requests (empty, several statements, placeholder count) are
  // refused by the runner before it touches the pool.
  return StartRun(context, std::move(run),
                  [this, response](core::StatementRunner::Results&& results) {
                    ResultToProto(std::move(results.front()), response);
                    return CapResponse(response);
                  });
}

grpc::ServerUnaryReactor* SessionBrokerService::ExecuteBatch(
    grpc::CallbackServerContext* context, const v1::ExecuteBatchRequest* request,
    v1::ExecuteBatchResponse* response) {
  if (draining_.load()) return RejectDraining(context);
  core::RunRequest run;
  run.batch = true;
  run.deadline = DeadlineOf(*context);
  run.client_id = ClientIdOf(*context);
  run.statements.reserve(request->statements_size());
  for (int i = 0; i < request->statements_size(); ++i) {
    const v1::Statement& s = request->statements(i);
    absl::StatusOr<std::vector<storage::Value>> params =
        ParamsFromProto(s.params(), absl::StrCat("statements[", i, "]."));
    if (!params.ok()) return Reject(context, params.status());
    run.statements.push_back(storage::Statement{s.sql(), *std::move(params)});
  }
  return StartRun(context, std::move(run),
                  [this, response](core::StatementRunner::Results&& results) {
                    for (storage::QueryResult& r : results) {
                      ResultToProto(std::move(r), response->add_results());
                    }
                    return CapResponse(response);
                  });
}

grpc::ServerUnaryReactor* SessionBrokerService::StartRun(grpc::CallbackServerContext* context,
                                                         core::RunRequest run, RunFill fill) {
  auto* reactor = new RunReactor(*this, context);
  // Counted in flight first, checked second: StartDraining() either sees
  // this call in WaitForIdle or this call sees the drain.
  if (draining_.load()) {
    reactor->FinishNow(absl::UnavailableError(kDrainingMessage));
    return reactor;
  }
  reactor->Start(std::move(run), std::move(fill));
  return reactor;
}

absl::Status SessionBrokerService::CapResponse(google::protobuf::Message* response) const {
  // The storage layer already refused results whose upper-bound estimate is
  // over the limit; this checks the exact size of what will be sent.
  const size_t bytes = response->ByteSizeLong();
  if (bytes <= max_result_bytes_) return absl::OkStatus();
  response->Clear();
  return TooLarge(bytes, max_result_bytes_);
}

void SessionBrokerService::StartDraining() { draining_.store(true); }

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
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    idle_.WaitWithTimeout(&mu_, left);
  }
  return true;
}

int SessionBrokerService::in_flight() const {
  core::MutexLock lock(&mu_);
  return in_flight_;
}

}  // namespace sessionbroker::transport
