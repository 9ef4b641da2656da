// The KeepAlive bidirectional stream: while it is open, the sessions it holds
// do not expire. Each request holds and/or releases sessions and is answered
// with their state; the broker also writes when a held session ends. When the
// stream ends, for whatever reason (the client closed it, crashed, or the
// network broke), the SessionManager gives its sessions the orphan grace.
//
// One write in flight; updates that arrive meanwhile are merged by session
// name, so a client that never reads costs at most one pending update per
// session it named.
//
// A stream is not a call in flight for draining: it stays open until the
// gRPC server shuts down (after the SessionManager has ended every session
// and told the stream so), and a stream opened while draining is refused.
//
// Created by SessionBrokerService::KeepAlive; deletes itself in OnDone.
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

 private:
  // What the SessionManager's listener reaches the reactor through; it may
  // outlive the reactor. The listener calls into the reactor without holding
  // the lock (a write or Finish may run reactions inline), so the reactor is
  // deleted by whoever lets go of it last: OnDone, or a listener call that
  // was in progress when OnDone ran.
  struct Link {
    core::Mutex mu;
    KeepAliveReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    int users ABSL_GUARDED_BY(mu) = 0;      // listener calls in progress
    bool done ABSL_GUARDED_BY(mu) = false;  // OnDone ran
  };

  explicit KeepAliveReactor(core::SessionManager& sessions);
  void Begin(bool draining);
  // Ends the stream from the broker's side with UNAVAILABLE.
  void FinishFromServer(absl::string_view why);
  void Enqueue(std::vector<core::SessionManager::StreamUpdate> updates);
  // Starts the next write or the Finish, if one is due. Call without mu_.
  void Pump();

  core::SessionManager& sessions_;
  const std::shared_ptr<Link> link_;
  core::SessionManager::StreamId stream_ = 0;
  v1::KeepAliveRequest request_;  // owned by the pending read

  core::Mutex mu_;
  std::vector<v1::SessionState> pending_ ABSL_GUARDED_BY(mu_);
  v1::KeepAliveResponse response_ ABSL_GUARDED_BY(mu_);  // owned by the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> finish_ ABSL_GUARDED_BY(mu_);  // requested
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_
