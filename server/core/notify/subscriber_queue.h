// SubscriberQueue: what waits to be written to one Listen stream. The
// NotificationHub's listener thread pushes events; the stream's reactor pops
// them, one write in flight at a time.
//
// Bounded: at most `capacity` notifications wait. A subscriber that does not
// read does not stop the others or grow the broker's memory: when its queue
// is full the oldest waiting notification is dropped, and the next event it
// pops is a gap (kOverflow, with how many were dropped) followed by the
// newer notifications. The stream stays open: a slow reader learns exactly
// that it lost notifications, as it does after a reconnect (a subscriber must
// handle gaps anyway). The confirmation (kListening) is never dropped.
//
// Wake-ups: Pop() on an empty queue marks the consumer as waiting; the next
// Push or End then calls `on_ready` (once, outside the lock), after which the
// consumer pops again. So the consumer never polls and never misses an event.
//
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_NOTIFY_SUBSCRIBER_QUEUE_H_
#define SESSIONBROKER_SERVER_CORE_NOTIFY_SUBSCRIBER_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/core/base/mutex.h"
#include "server/storage/listen_connection.h"

namespace sessionbroker::core {

// One message of a Listen stream, or its end.
struct ListenEvent {
  enum class Kind { kListening, kNotification, kGap, kEnd };
  enum class GapReason { kReconnected, kOverflow };

  Kind kind = Kind::kNotification;
  std::vector<std::string> channels;   // kListening
  storage::Notification notification;  // kNotification
  GapReason gap_reason = GapReason::kReconnected;
  int64_t dropped = 0;   // kGap with kOverflow
  int listener_pid = 0;  // kListening, kGap
  absl::Status status;   // kEnd: how the stream ends

  static ListenEvent Listening(std::vector<std::string> channels, int pid);
  static ListenEvent Notify(storage::Notification n);
  static ListenEvent Gap(GapReason reason, int64_t dropped, int pid);
  static ListenEvent End(absl::Status status);
};

class SubscriberQueue final {
 public:
  SubscriberQueue(size_t capacity, std::function<void()> on_ready);
  SubscriberQueue(const SubscriberQueue&) = delete;
  SubscriberQueue& operator=(const SubscriberQueue&) = delete;

  // Adds `event` (not kEnd); ignored after End(). Returns how many
  // notifications were dropped to make room (0 or 1).
  int Push(ListenEvent event);
  // The last event: the stream ends with `status` once what waits before it
  // has been popped. Only the first End counts.
  void End(absl::Status status);
  // The next event, or nullopt when there is none (the consumer then waits
  // for `on_ready`).
  std::optional<ListenEvent> Pop();

  size_t size() const;

 private:
  const size_t capacity_;
  const std::function<void()> on_ready_;
  mutable Mutex mu_;
  std::deque<ListenEvent> events_ ABSL_GUARDED_BY(mu_);
  size_t notifications_ ABSL_GUARDED_BY(mu_) = 0;  // kNotification entries in events_
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;       // not yet reported in a gap
  int last_pid_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool waiting_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_NOTIFY_SUBSCRIBER_QUEUE_H_
