#include "server/transport/health_service.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sessionbroker::transport {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream. Lives until OnDone; the service reaches it only while it
// is in streams_, and OnDone takes it out (under the service's lock) before
// the delete. One write in flight; a status offered meanwhile waits (only the
// newest: `pending_` says the last offered one is still to be written).
class HealthService::WatchReactor final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  WatchReactor(HealthService& service, std::string name)
      : service_(service), name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  // Writes `status` unless it is the one last offered.
  void Offer(ServingStatus status) {
    {
      core::MutexLock lock(&mu_);
      if (ending_ || (offered_any_ && status == offered_)) return;
      offered_any_ = true;
      offered_ = status;
      if (writing_) {
        pending_ = true;
        return;
      }
      writing_ = true;
      response_.set_status(status);
    }
    StartWrite(&response_);
  }

  // Ends the stream with OK once what was offered has been written.
  void End() { EndWith(/*drop_pending=*/false); }

  void OnWriteDone(bool ok) override {
    bool write = false;
    bool finish = false;
    {
      core::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        ending_ = true;
        pending_ = false;
      }
      if (pending_) {
        pending_ = false;
        writing_ = true;
        response_.set_status(offered_);
        write = true;
      } else if (ending_ && !finish_called_) {
        finish_called_ = true;
        finish = true;
      }
    }
    if (write) StartWrite(&response_);
    if (finish) Finish(grpc::Status::OK);
  }

  void OnCancel() override { EndWith(/*drop_pending=*/true); }

  void OnDone() override {
    service_.StreamDone(this);
    delete this;
  }

 private:
  void EndWith(bool drop_pending) {
    bool finish = false;
    {
      core::MutexLock lock(&mu_);
      ending_ = true;
      if (drop_pending) pending_ = false;
      if (!writing_ && !finish_called_) {
        finish_called_ = true;
        finish = true;
      }
    }
    if (finish) Finish(grpc::Status::OK);
  }

  HealthService& service_;
  const std::string name_;
  core::Mutex mu_;
  // Written only while no write is in flight.
  HealthCheckResponse response_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;
  bool offered_any_ ABSL_GUARDED_BY(mu_) = false;
  ServingStatus offered_ ABSL_GUARDED_BY(mu_) = HealthCheckResponse::UNKNOWN;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

HealthService::HealthService(std::string readiness_service, CallGate gate)
    : readiness_service_(std::move(readiness_service)), gate_(std::move(gate)) {}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status admitted = gate_.Admit(context); !admitted.ok()) {
    reactor->Finish(std::move(admitted));
    return reactor;
  }
  const ServingStatus status = StatusOf(request->service());
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("unknown service '", request->service(),
                     "': ask for \"\" (liveness: ", "the process serves) or \"", readiness_service_,
                     "\" (readiness: the database is reachable and the broker not draining)")));
    return reactor;
  }
  response->set_status(status);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request) {
  if (grpc::Status admitted = gate_.Admit(context); !admitted.ok()) {
    return new RefusedReactor<grpc::ServerWriteReactor<HealthCheckResponse>>(std::move(admitted));
  }
  auto* reactor = new WatchReactor(*this, request->service());
  core::MutexLock lock(&mu_);
  streams_.insert(reactor);
  // Under the lock: the reactor cannot be done (and deleted) before it is
  // registered, and no update can overtake this first status.
  reactor->Offer(StatusOfLocked(reactor->name()));
  if (shut_down_) reactor->End();
  return reactor;
}

void HealthService::SetDatabaseReachable(bool reachable) {
  core::MutexLock lock(&mu_);
  reachable_ = reachable;
  PublishLocked();
}

void HealthService::SetStarting() {
  core::MutexLock lock(&mu_);
  starting_ = !startup_done_;
  PublishLocked();
}

void HealthService::SetStartupDone() {
  core::MutexLock lock(&mu_);
  startup_done_ = true;
  starting_ = false;
  PublishLocked();
}

bool HealthService::starting() const {
  core::MutexLock lock(&mu_);
  return starting_;
}

void HealthService::SetDraining() {
  core::MutexLock lock(&mu_);
  draining_ = true;
  PublishLocked();
}

void HealthService::Shutdown() {
  core::MutexLock lock(&mu_);
  shut_down_ = true;
  PublishLocked();
  for (WatchReactor* r : streams_) r->End();
}

bool HealthService::WaitForStreamsDone(absl::Time deadline) {
  core::MutexLock lock(&mu_);
  while (!streams_.empty()) {
    if (!all_done_.WaitUntil(&mu_, deadline)) return false;
  }
  return true;
}

HealthService::ServingStatus HealthService::StatusOf(const std::string& service) const {
  core::MutexLock lock(&mu_);
  return StatusOfLocked(service);
}

HealthService::ServingStatus HealthService::StatusOfLocked(const std::string& service) const {
  if (service.empty()) {
    return shut_down_ ? HealthCheckResponse::NOT_SERVING : HealthCheckResponse::SERVING;
  }
  if (service == readiness_service_) {
    return !shut_down_ && !draining_ && !starting_ && reachable_ ? HealthCheckResponse::SERVING
                                                                 : HealthCheckResponse::NOT_SERVING;
  }
  return HealthCheckResponse::SERVICE_UNKNOWN;
}

void HealthService::PublishLocked() {
  // Offer only starts a write; a reactor's OnDone waits for this lock in
  // StreamDone, so none is deleted meanwhile.
  for (WatchReactor* r : streams_) r->Offer(StatusOfLocked(r->name()));
}

void HealthService::StreamDone(WatchReactor* reactor) {
  core::MutexLock lock(&mu_);
  streams_.erase(reactor);
  if (streams_.empty()) all_done_.SignalAll();
}

}  // namespace sessionbroker::transport
