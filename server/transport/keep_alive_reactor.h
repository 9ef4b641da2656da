// The KeepAlive bidirectional stream: while it is open, the sessions it holds
// do not expire. Each request holds and/or releases sessions and is answered
// with their state; the broker also writes when a held session ends. When the
// stream ends, for whatever reason (the client closed it, crashed, or the
// network broke), the SessionManager gives its sessions the orphan grace.
//
// Writes go through a LatestOnlyWriter (one write in flight); updates that
// arrive meanwhile are merged by session name (MergeUpdates), so a client that
// never reads costs at most one pending update per session it named.
//
// A stream is not a call in flight for draining: it stays open until the
// gRPC server shuts down (after the SessionManager has ended every session
// and told the stream so), and a stream opened while draining is refused.
//
// Lifetime: reference counted. Created by SessionBrokerService::KeepAlive,
// which hands gRPC a raw pointer; gRPC's reference (self_) is dropped in
// OnDone. The SessionManager's listener holds only a weak reference and takes
// a strong one for each call, because it may be called after CloseStream()
// returned, even after OnDone. Whichever drops the last reference, OnDone or
// the last listener call in flight, deletes the reactor, exactly once.
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/latest_only_writer.h"
#include "server/core/base/mutex.h"
#include "server/core/session/session_manager.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

class KeepAliveReactor final
    : public grpc::ServerBidiReactor<v1::KeepAliveRequest, v1::KeepAliveResponse> {
 public:
  static KeepAliveReactor* Create(core::SessionManager& sessions, bool draining);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

  // The writer's merge rule: `waiting` becomes one response with every
  // session either names, once, with its newest state; sessions keep the
  // place where they were first named. Exposed for its unit test.
  struct MergeUpdates {
    void operator()(std::shared_ptr<const v1::KeepAliveResponse>& waiting,
                    std::shared_ptr<const v1::KeepAliveResponse> newer) const;
  };

 private:
  explicit KeepAliveReactor(core::SessionManager& sessions);
  // Opens the stream with the SessionManager, then starts reading or, when
  // draining, finishes. Call once, with self_ set.
  void Begin(bool draining);
  // Ends the stream from the broker's side with UNAVAILABLE.
  void FinishFromServer(absl::string_view why);
  // Ends the stream with `status` once the write in flight, if any, is done;
  // the first status asked for is the one sent.
  void RequestFinish(absl::Status status);
  void Enqueue(std::vector<core::SessionManager::StreamUpdate> updates);

  core::SessionManager& sessions_;
  // gRPC's reference, from Create to OnDone. Touched only there, never
  // concurrently.
  std::shared_ptr<KeepAliveReactor> self_;
  core::SessionManager::StreamId stream_ = 0;  // set in Begin, before any reaction
  v1::KeepAliveRequest request_;               // owned by the pending read
  core::LatestOnlyWriter<v1::KeepAliveResponse, MergeUpdates> writer_;

  core::Mutex mu_;
  std::optional<absl::Status> finish_status_ ABSL_GUARDED_BY(mu_);
  bool stream_closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_
