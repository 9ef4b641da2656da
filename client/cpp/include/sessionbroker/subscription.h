// Subscription: LISTEN/NOTIFY through the broker's Listen stream
// (docs/notifications.md), from Client::Listen.
//
//   auto sub = client->Listen({"orders"});  // StatusOr; returns once listening
//   while (std::optional<ListenEvent> e = (*sub)->Next()) {
//     if (auto* n = std::get_if<Notification>(&*e)) Handle(n->channel, n->payload);
//     else Reload();  // a NotificationGap: notifications may have been missed
//   }
//   // (*sub)->status(): OK after Cancel(), else why the stream ended.
//
// Client::Listen returns once the broker has confirmed that it LISTENs on
// every channel, so a NOTIFY committed afterwards is delivered. The broker
// keeps one listener connection for all subscribers and re-LISTENs after
// losing it, telling each subscriber with a gap (kReconnected); a subscriber
// that reads too slowly loses its oldest notifications (kOverflow gap).
//
// When the gRPC stream itself breaks (the broker restarts or drains, the
// network fails), the subscription does NOT reconnect behind the caller's
// back: Next() returns nullopt and status() says why (UNAVAILABLE), as
// node-postgres, psycopg and pgx report a lost LISTEN connection. Whatever
// was notified meanwhile is lost: subscribe again (Client::Listen) and
// re-read the state the notifications were about, as after a gap.
//
// Destroying a Subscription cancels the stream (the broker UNLISTENs
// channels no other subscriber needs). One thread calls Next() at a time;
// Cancel() may be called from any thread, to end a Next() that waits.
#ifndef SESSIONBROKER_CLIENT_SUBSCRIPTION_H_
#define SESSIONBROKER_CLIENT_SUBSCRIPTION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"

namespace sessionbroker {

namespace internal {
class ClientCore;
struct SubscriptionState;
}  // namespace internal

// A NOTIFY on one of the subscribed channels.
struct Notification {
  std::string channel;
  std::string payload;  // "" when NOTIFY gave none
  // The backend pid of the session that sent the NOTIFY.
  int32_t sender_pid = 0;
};

// Notifications may have been missed before the next event.
struct NotificationGap {
  enum class Reason {
    kUnspecified,
    // The broker's listener connection was lost and listens again.
    kReconnected,
    // This subscriber read too slowly; `dropped` oldest were discarded.
    kOverflow,
  };
  Reason reason = Reason::kUnspecified;
  int64_t dropped = 0;
  // The backend pid of the listener connection now in use.
  int32_t listener_pid = 0;
};

using ListenEvent = std::variant<Notification, NotificationGap>;

class Subscription {
 public:
  // Cancels the stream.
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // The channels listened to, deduplicated, in the order first given.
  const std::vector<std::string>& channels() const;
  // The backend pid of the broker's listener connection at subscription.
  int32_t listener_pid() const;

  // Blocks for the next notification or gap; nullopt once the subscription
  // has ended (status() says why).
  std::optional<ListenEvent> Next();
  // OK while open and after Cancel(); otherwise the stream's error.
  const absl::Status& status() const;

  // Ends the subscription: a waiting or later Next() returns nullopt with
  // status() OK. Thread-safe, idempotent.
  void Cancel();

 private:
  friend class internal::ClientCore;
  explicit Subscription(std::unique_ptr<internal::SubscriptionState> state);

  std::unique_ptr<internal::SubscriptionState> state_;
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_SUBSCRIPTION_H_
