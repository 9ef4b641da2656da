#include "server/core/notify/subscriber_queue.h"

#include <utility>

namespace sessionbroker::core {

ListenEvent ListenEvent::Listening(std::vector<std::string> channels, int pid) {
  ListenEvent e;
  e.kind = Kind::kListening;
  e.channels = std::move(channels);
  e.listener_pid = pid;
  return e;
}

ListenEvent ListenEvent::Notify(storage::Notification n) {
  ListenEvent e;
  e.kind = Kind::kNotification;
  e.notification = std::move(n);
  return e;
}

ListenEvent ListenEvent::Gap(GapReason reason, int64_t dropped, int pid) {
  ListenEvent e;
  e.kind = Kind::kGap;
  e.gap_reason = reason;
  e.dropped = dropped;
  e.listener_pid = pid;
  return e;
}

ListenEvent ListenEvent::End(absl::Status status) {
  ListenEvent e;
  e.kind = Kind::kEnd;
  e.status = std::move(status);
  return e;
}

SubscriberQueue::SubscriberQueue(size_t capacity, std::function<void()> on_ready)
    : capacity_(capacity < 1 ? 1 : capacity), on_ready_(std::move(on_ready)) {}

int SubscriberQueue::Push(ListenEvent event) {
  int dropped = 0;
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (ended_) return 0;
    if (event.listener_pid != 0) last_pid_ = event.listener_pid;
    if (event.kind == ListenEvent::Kind::kNotification) {
      if (notifications_ >= capacity_) {
        // The oldest waiting notification goes; the reader learns of it
        // through the overflow gap Pop() puts in its place.
        for (auto it = events_.begin(); it != events_.end(); ++it) {
          if (it->kind == ListenEvent::Kind::kNotification) {
            events_.erase(it);
            --notifications_;
            ++dropped_;
            dropped = 1;
            break;
          }
        }
      }
      ++notifications_;
    }
    events_.push_back(std::move(event));
    wake = std::exchange(waiting_, false);
  }
  if (wake) on_ready_();
  return dropped;
}

void SubscriberQueue::End(absl::Status status) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    events_.push_back(ListenEvent::End(std::move(status)));
    wake = std::exchange(waiting_, false);
  }
  if (wake) on_ready_();
}

std::optional<ListenEvent> SubscriberQueue::Pop() {
  MutexLock lock(&mu_);
  if (events_.empty()) {
    waiting_ = true;
    return std::nullopt;
  }
  // The overflow gap goes where the dropped notifications were: before the
  // newer ones, after the confirmation.
  if (dropped_ > 0 && events_.front().kind != ListenEvent::Kind::kListening) {
    return ListenEvent::Gap(ListenEvent::GapReason::kOverflow, std::exchange(dropped_, 0),
                            last_pid_);
  }
  ListenEvent e = std::move(events_.front());
  events_.pop_front();
  if (e.kind == ListenEvent::Kind::kNotification) --notifications_;
  return e;
}

size_t SubscriberQueue::size() const {
  MutexLock lock(&mu_);
  return events_.size();
}

}  // namespace sessionbroker::core
