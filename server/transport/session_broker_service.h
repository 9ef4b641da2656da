// The sessionbroker.v1.SessionBroker gRPC service (callback API). Handlers
// convert the request, hand it to the StatementRunner and return at once; the
// runner completes the call from an executor thread. No handler blocks.
//
// Draining: after StartDraining() new calls fail with UNAVAILABLE while calls
// already running finish; WaitForIdle() lets shutdown wait for them.
//
// Thread-safe. Outlives the grpc::Server it is registered with.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_

#include <atomic>
#include <cstddef>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "server/core/mutex.h"
#include "server/core/statement_runner.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::transport {

class SessionBrokerService final : public v1::SessionBroker::CallbackService {
 public:
  SessionBrokerService(core::StatementRunner& runner, size_t max_result_bytes);

  grpc::ServerUnaryReactor* Execute(grpc::CallbackServerContext* context,
                                    const v1::ExecuteRequest* request,
                                    v1::ExecuteResponse* response) override;
  grpc::ServerUnaryReactor* ExecuteBatch(grpc::CallbackServerContext* context,
                                         const v1::ExecuteBatchRequest* request,
                                         v1::ExecuteBatchResponse* response) override;

  void StartDraining();
  // True if no call was in flight by `deadline` (real time).
  bool WaitForIdle(absl::Time deadline);
  int in_flight() const;

 private:
  class RunReactor;

  // Fills the response from the results; may fail (size limit).
  using RunFill = absl::AnyInvocable<absl::Status(core::StatementRunner::Results&&)>;

  // Creates the reactor that runs `run` and completes the call.
  grpc::ServerUnaryReactor* StartRun(grpc::CallbackServerContext* context, core::RunRequest run,
                                     RunFill fill);
  // RESOURCE_EXHAUSTED (and an empty response) if it is over the size limit.
  absl::Status CapResponse(google::protobuf::Message* response) const;
  // Finishes at once with `status` (no database work was started).
  grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* context,
                                   const absl::Status& status);
  grpc::ServerUnaryReactor* RejectDraining(grpc::CallbackServerContext* context);
  void CallStarted();
  void CallDone();

  core::StatementRunner& runner_;
  const size_t max_result_bytes_;
  std::atomic<bool> draining_{false};
  mutable core::Mutex mu_;
  core::CondVar idle_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_
