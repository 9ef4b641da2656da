// The Listen server stream: one subscriber of the NotificationHub. The
// request (raw bytes, parsed here so that bytes that are no ListenRequest end
// the stream with INVALID_ARGUMENT, as for KeepAlive) names the channels; the
// hub's events for this subscriber arrive in a bounded SubscriberQueue and
// are written one at a time (one write in flight; the queue, not gRPC,
// bounds what waits for a slow reader). The queue's on_ready callback
// restarts writing after the queue ran empty.
//
// The stream ends when the client cancels it or goes away (gRPC notices a
// vanished client through HTTP/2 keepalive pings), when the hub ends it
// (UNAVAILABLE while draining; UNAVAILABLE when the listener connection could
// not be opened for it), or with INVALID_ARGUMENT for a bad request. Either
// way OnDone unsubscribes it, so its channels are UNLISTENed if nobody else
// listens to them.
//
// Lifetime: reference counted like KeepAliveReactor. gRPC's reference
// (self_) is dropped in OnDone; the queue's callback holds a weak reference
// and takes a strong one for each call, since the hub may push after OnDone.
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_LISTEN_REACTOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_LISTEN_REACTOR_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/core/notify/notification_hub.h"
#include "server/core/notify/subscriber_queue.h"

namespace sessionbroker::transport {

class ListenReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Subscribes (unless `draining` or the request is bad, which end the
  // stream at once) and returns the reactor gRPC drives.
  static ListenReactor* Create(core::NotificationHub& hub, grpc::CallbackServerContext* context,
                               const grpc::ByteBuffer& request, bool draining,
                               size_t queue_capacity);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  explicit ListenReactor(core::NotificationHub& hub) : hub_(hub) {}
  // Writes the next event, or finishes on the queue's end event.
  void Pump();
  // Ends the stream with `status` unless it is ending already.
  void FinishOnce(const absl::Status& status);

  core::NotificationHub& hub_;
  std::shared_ptr<ListenReactor> self_;  // gRPC's reference, Create to OnDone
  std::shared_ptr<core::SubscriberQueue> queue_;
  core::NotificationHub::SubscriberId id_ = 0;  // 0: not subscribed
  std::string client_id_;

  core::Mutex mu_;
  // Owned by the write in flight (writing_ says whether there is one).
  grpc::ByteBuffer buffer_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_LISTEN_REACTOR_H_
