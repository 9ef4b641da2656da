// The sessionbroker.v1.PoolMonitor gRPC service (callback API).
//
//  * GetPoolStatus takes a snapshot on the gRPC thread (short locks only).
//  * WatchPoolStatus registers a watcher with the shared SnapshotSampler;
//    each stream keeps one write in flight and only the newest snapshot
//    waiting (LatestOnlyWriter), so a slow reader never grows memory. A
//    snapshot is converted to a PoolStatus once, whatever the number of
//    watchers it goes to.
//  * A request that cannot be parsed is answered INVALID_ARGUMENT naming its
//    message type (parse_failure.h), on both methods.
//  * EndAllStreams() (shutdown) refuses new watches with UNAVAILABLE and ends
//    every open stream with OK, so that clients see a clean end rather than
//    the cancellation grpc::Server::Shutdown would give them.
//
// With a clients file, only clients with the role admin or monitor may call
// it (PERMISSION_DENIED otherwise; UNAUTHENTICATED without credentials): the
// status names every client and its occupancy.
//
// Thread-safe. Outlives the grpc::Server it is registered with; the sampler
// outlives it.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_POOL_MONITOR_SERVICE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_POOL_MONITOR_SERVICE_H_

#include <memory>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/core/monitor/snapshot_sampler.h"
#include "server/transport/call_identity.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"

namespace sessionbroker::transport {

class PoolMonitorService final : public v1::PoolMonitor::CallbackService {
 public:
  static constexpr absl::Duration kDefaultInterval = absl::Seconds(1);
  static constexpr absl::Duration kMaxInterval = absl::Hours(1);

  explicit PoolMonitorService(core::SnapshotSampler& sampler,
                              CallAuthenticator auth = CallAuthenticator());

  grpc::ServerUnaryReactor* GetPoolStatus(grpc::CallbackServerContext* context,
                                          const v1::GetPoolStatusRequest* request,
                                          v1::PoolStatus* response) override;
  grpc::ServerWriteReactor<v1::PoolStatus>* WatchPoolStatus(
      grpc::CallbackServerContext* context, const v1::WatchPoolStatusRequest* request) override;

  void EndAllStreams();
  // True if every stream was done by `deadline` (real time).
  bool WaitForStreamsDone(absl::Time deadline);
  int streams() const;

 private:
  class WatchReactor;

  // The PoolStatus for a snapshot; the last conversion is cached because
  // every watcher due at a tick gets the same snapshot.
  std::shared_ptr<const v1::PoolStatus> ProtoOf(const core::SnapshotSampler::Snapshot& snapshot);
  void StreamDone(WatchReactor* reactor);
  absl::Status MayMonitor(const grpc::CallbackServerContext& context) const;

  core::SnapshotSampler& sampler_;
  const CallAuthenticator auth_;

  mutable core::Mutex mu_;
  core::CondVar all_done_;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<WatchReactor*> streams_ ABSL_GUARDED_BY(mu_);

  core::Mutex cache_mu_;
  core::SnapshotSampler::Snapshot cached_snapshot_ ABSL_GUARDED_BY(cache_mu_);
  std::shared_ptr<const v1::PoolStatus> cached_proto_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_POOL_MONITOR_SERVICE_H_
