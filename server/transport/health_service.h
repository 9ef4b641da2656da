// HealthService: the broker's grpc.health.v1.Health (Check and Watch, callback
// API), generated from the official health.proto (Debian's grpc-proto), so
// that reflection serves its descriptor and grpcurl can call it. gRPC's
// built-in health service cannot be described by reflection; this one is.
//
// It knows two names, with different meanings (Kubernetes probes one each):
//  * "" is liveness: SERVING while the process serves calls, whatever the
//    database does (a database outage must not make the kubelet restart
//    every broker), until Shutdown();
//  * the readiness name (sessionbroker.v1.SessionBroker) is SERVING only
//    while the database is reachable (SetDatabaseReachable, driven by the
//    HealthChecker; false until its first probe succeeds), the broker's
//    start-up work is done (SetStarting / SetStartupDone: the request
//    outcomes table, which would otherwise take a pool connection, or a
//    waiter's place, from the first callers), and the broker is not draining
//    (SetDraining: the first step of SIGTERM).
// Any other name: Check fails with NOT_FOUND; Watch sends SERVICE_UNKNOWN
// and stays open, as the protocol says.
//
// Watch sends the current status at once, then each change. Each stream keeps
// one write in flight and only the newest status waiting, so a slow reader
// costs nothing more. Shutdown() makes every name NOT_SERVING for good, sends
// that to every watcher, then ends each stream with OK once its last write is
// done (grpc::Server::Shutdown would cancel them instead).
//
// Calls pass `gate` first (BROKER_AUTH_EXEMPT_SERVICES): refused, Check and
// Watch answer its status (UNAUTHENTICATED) instead.
//
// Thread-safe. Outlives the grpc::Server it is registered with.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_HEALTH_SERVICE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_HEALTH_SERVICE_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/transport/call_gate.h"

namespace sessionbroker::transport {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  explicit HealthService(std::string readiness_service, CallGate gate = CallGate());
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

  // The health checker's verdict on the database (readiness).
  void SetDatabaseReachable(bool reachable);
  // Readiness waits for start-up work from SetStarting() until
  // SetStartupDone() (which may come first: then SetStarting does nothing).
  void SetStarting();
  void SetStartupDone();
  // Between SetStarting() and SetStartupDone().
  bool starting() const;
  // Readiness NOT_SERVING for good; liveness unchanged.
  void SetDraining();
  // Every name NOT_SERVING for good; Watch streams end with OK after they
  // sent it, and new ones end as soon as they sent it.
  void Shutdown();
  // True if every Watch stream was done by `deadline` (real time).
  bool WaitForStreamsDone(absl::Time deadline);

  // What Check answers for `service` (SERVICE_UNKNOWN: NOT_FOUND).
  ServingStatus StatusOf(const std::string& service) const;

 private:
  class WatchReactor;

  ServingStatus StatusOfLocked(const std::string& service) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Offers every watcher its service's status (changes only are written).
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StreamDone(WatchReactor* reactor);

  const std::string readiness_service_;
  const CallGate gate_;
  mutable core::Mutex mu_;
  core::CondVar all_done_;
  bool reachable_ ABSL_GUARDED_BY(mu_) = false;
  bool starting_ ABSL_GUARDED_BY(mu_) = false;
  bool startup_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<WatchReactor*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_HEALTH_SERVICE_H_
