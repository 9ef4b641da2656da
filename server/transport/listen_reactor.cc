#include "server/transport/listen_reactor.h"

#include <optional>
#include <utility>
#include <vector>

#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/transport/client_id.h"
#include "server/transport/keep_alive_reactor.h"
#include "server/transport/parse_failure.h"
#include "server/transport/status_mapping.h"
#include "sessionbroker/v1/broker.pb.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

void ToProto(const core::ListenEvent& e, v1::ListenResponse* out) {
  switch (e.kind) {
    case core::ListenEvent::Kind::kListening: {
      v1::ListenConfirmation* c = out->mutable_listening();
      for (const std::string& channel : e.channels) c->add_channels(channel);
      c->set_listener_pid(e.listener_pid);
      break;
    }
    case core::ListenEvent::Kind::kNotification: {
      v1::ListenNotification* n = out->mutable_notification();
      n->set_channel(e.notification.channel);
      n->set_payload(e.notification.payload);
      n->set_sender_pid(e.notification.sender_pid);
      break;
    }
    case core::ListenEvent::Kind::kGap: {
      v1::ListenGap* g = out->mutable_gap();
      g->set_reason(e.gap_reason == core::ListenEvent::GapReason::kOverflow
                        ? v1::ListenGap::OVERFLOW
                        : v1::ListenGap::RECONNECTED);
      g->set_dropped(e.dropped);
      g->set_listener_pid(e.listener_pid);
      break;
    }
    case core::ListenEvent::Kind::kEnd:
      break;
  }
}

}  // namespace

ListenReactor* ListenReactor::Create(core::NotificationHub& hub,
                                     grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer& request, bool draining,
                                     size_t queue_capacity) {
  std::shared_ptr<ListenReactor> reactor(new ListenReactor(hub));
  reactor->self_ = reactor;
  reactor->client_id_ = ClientIdOf(*context);
  std::weak_ptr<ListenReactor> weak = reactor;
  reactor->queue_ = std::make_shared<core::SubscriberQueue>(queue_capacity, [weak] {
    if (std::shared_ptr<ListenReactor> r = weak.lock()) r->Pump();
  });
  if (draining) {
    reactor->FinishOnce(
        absl::UnavailableError("the broker is shutting down; listen on another instance"));
    return reactor.get();
  }
  grpc::ByteBuffer bytes(request);
  v1::ListenRequest parsed;
  if (!grpc::SerializationTraits<v1::ListenRequest>::Deserialize(&bytes, &parsed).ok()) {
    reactor->FinishOnce(absl::InvalidArgumentError(
        UnparseableRequestMessage(v1::ListenRequest::descriptor()->full_name())));
    return reactor.get();
  }
  std::vector<std::string> channels(parsed.channels().begin(), parsed.channels().end());
  absl::StatusOr<core::NotificationHub::SubscriberId> id =
      hub.Subscribe(std::move(channels), reactor->client_id_, reactor->queue_);
  if (!id.ok()) {
    reactor->FinishOnce(id.status());
    return reactor.get();
  }
  reactor->id_ = *id;
  // Marks the reader as waiting, so the hub's first push (the confirmation)
  // wakes it; or writes what was pushed already.
  reactor->Pump();
  return reactor.get();
}

void ListenReactor::Pump() {
  std::optional<core::ListenEvent> event;
  {
    core::MutexLock lock(&mu_);
    if (writing_ || finished_) return;
    event = queue_->Pop();
    if (!event.has_value()) return;
    if (event->kind == core::ListenEvent::Kind::kEnd) {
      finished_ = true;
    } else {
      v1::ListenResponse response;
      ToProto(*event, &response);
      bool own_buffer = false;
      buffer_.Clear();
      (void)grpc::SerializationTraits<v1::ListenResponse>::Serialize(response, &buffer_,
                                                                     &own_buffer);
      writing_ = true;
    }
  }
  if (event->kind == core::ListenEvent::Kind::kEnd) {
    Finish(ToGrpcStatus(event->status, nullptr));
  } else {
    StartWrite(&buffer_);
  }
}

void ListenReactor::OnWriteDone(bool ok) {
  bool stop = false;
  {
    core::MutexLock lock(&mu_);
    writing_ = false;
    stop = !ok || cancelled_;
  }
  if (stop) {
    FinishOnce(absl::CancelledError("the Listen stream was cancelled or broke"));
    return;
  }
  Pump();
}

void ListenReactor::OnCancel() {
  {
    core::MutexLock lock(&mu_);
    cancelled_ = true;
    // A write in flight completes (not ok) and finishes the stream then.
    if (writing_) return;
  }
  FinishOnce(absl::CancelledError("the Listen stream was cancelled"));
}

void ListenReactor::FinishOnce(const absl::Status& status) {
  {
    core::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  Finish(ToGrpcStatus(status, nullptr));
}

void ListenReactor::OnDone() {
  if (id_ != 0) {
    hub_.Unsubscribe(id_);
    spdlog::debug("listen: subscriber {} (client '{}') left", id_, client_id_);
  }
  // Drops gRPC's reference last: this may delete the reactor now.
  std::shared_ptr<ListenReactor> self = std::move(self_);
}

}  // namespace sessionbroker::transport
