#include "sessionbroker/subscription.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "client/cpp/src/internal.h"

namespace sessionbroker {

Subscription::Subscription(std::unique_ptr<internal::SubscriptionState> state)
    : state_(std::move(state)) {}

Subscription::~Subscription() {
  if (state_->finished) return;
  Cancel();
  while (Next().has_value()) {
  }
}

const std::vector<std::string>& Subscription::channels() const { return state_->channels; }
int32_t Subscription::listener_pid() const { return state_->listener_pid; }
const absl::Status& Subscription::status() const { return state_->status; }

std::optional<ListenEvent> Subscription::Next() {
  internal::SubscriptionState& s = *state_;
  if (s.finished) return std::nullopt;
  v1::ListenResponse message;
  while (s.reader->Read(&message)) {
    switch (message.event_case()) {
      case v1::ListenResponse::kNotification: {
        Notification n;
        n.channel = message.notification().channel();
        n.payload = message.notification().payload();
        n.sender_pid = message.notification().sender_pid();
        return n;
      }
      case v1::ListenResponse::kGap: {
        NotificationGap g;
        switch (message.gap().reason()) {
          case v1::ListenGap::RECONNECTED:
            g.reason = NotificationGap::Reason::kReconnected;
            break;
          case v1::ListenGap::OVERFLOW:
            g.reason = NotificationGap::Reason::kOverflow;
            break;
          default:
            break;
        }
        g.dropped = message.gap().dropped();
        g.listener_pid = message.gap().listener_pid();
        return g;
      }
      default:
        // A repeated confirmation (none is sent today) carries nothing new.
        break;
    }
  }
  absl::Status status = internal::FromGrpc(s.reader->Finish(), s.context);
  s.finished = true;
  s.status = s.cancelled.load() ? absl::OkStatus() : std::move(status);
  if (s.status.ok() && !s.cancelled.load()) {
    s.status = absl::UnavailableError("the broker ended the Listen stream: subscribe again");
  }
  return std::nullopt;
}

void Subscription::Cancel() {
  state_->cancelled.store(true);
  state_->context.TryCancel();
}

}  // namespace sessionbroker
