#include "server/core/notify/notification_hub.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {

absl::StatusOr<std::vector<std::string>> NormalizeChannels(std::vector<std::string> channels) {
  if (channels.empty()) {
    return absl::InvalidArgumentError("channels is empty: name at least one channel to listen to");
  }
  std::vector<std::string> out;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < channels.size(); ++i) {
    std::string& c = channels[i];
    if (c.empty()) return absl::InvalidArgumentError(absl::StrCat("channels[", i, "] is empty"));
    if (c.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("channels[", i, "] contains a NUL byte"));
    }
    if (c.size() > kMaxChannelBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "channels[", i, "] is ", c.size(), " bytes; a channel name is at most ", kMaxChannelBytes,
          " bytes (PostgreSQL's NAMEDATALEN - 1: it would cut a longer name, and a NOTIFY with "
          "the full name would never arrive)"));
    }
    if (seen.insert(c).second) out.push_back(std::move(c));
  }
  if (static_cast<int>(out.size()) > kMaxListenChannels) {
    return absl::InvalidArgumentError(absl::StrCat("the ListenRequest names ", out.size(),
                                                   " channels; one Listen stream may name "
                                                   "at most ",
                                                   kMaxListenChannels, ": open several streams"));
  }
  return out;
}

NotificationHub::NotificationHub(storage::ListenConnector& connector, const Clock& clock,
                                 Options options)
    : connector_(connector),
      clock_(clock),
      options_(options),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      backoff_(options.backoff),
      thread_([this] { Loop(); }) {}

NotificationHub::~NotificationHub() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void NotificationHub::Wake() {
  const uint64_t one = 1;
  // A full counter (never in practice) still leaves the fd readable.
  (void)!::write(wake_fd_, &one, sizeof(one));
}

absl::StatusOr<NotificationHub::SubscriberId> NotificationHub::Subscribe(
    std::vector<std::string> channels, std::string client_id,
    std::shared_ptr<SubscriberQueue> queue) {
  absl::StatusOr<std::vector<std::string>> normalized = NormalizeChannels(std::move(channels));
  if (!normalized.ok()) return normalized.status();
  SubscriberId id;
  {
    MutexLock lock(&mu_);
    if (shut_down_) {
      return absl::UnavailableError("the broker is shutting down; listen on another instance");
    }
    if (static_cast<int>(subscribers_.size()) >= kMaxSubscribers) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the broker already serves ", kMaxSubscribers,
                       " Listen streams (its limit); name several channels in one stream"));
    }
    id = next_id_++;
    spdlog::debug("listen: subscriber {} (client '{}') for {} channel(s)", id, client_id,
                  normalized->size());
    subscribers_.emplace(
        id, Subscriber{*std::move(normalized), std::move(client_id), std::move(queue), false});
    stats_.subscribers = static_cast<int>(subscribers_.size());
  }
  Wake();
  return id;
}

void NotificationHub::Unsubscribe(SubscriberId id) {
  {
    MutexLock lock(&mu_);
    if (subscribers_.erase(id) == 0) return;
    stats_.subscribers = static_cast<int>(subscribers_.size());
    if (subscribers_.empty()) subscribers_gone_.SignalAll();
  }
  Wake();
}

bool NotificationHub::WaitForSubscribersGone(absl::Time deadline) {
  MutexLock lock(&mu_);
  while (!subscribers_.empty()) {
    if (!subscribers_gone_.WaitUntil(&mu_, deadline)) return subscribers_.empty();
  }
  return true;
}

void NotificationHub::Shutdown(const absl::Status& status) {
  std::vector<std::shared_ptr<SubscriberQueue>> queues;
  {
    MutexLock lock(&mu_);
    shut_down_ = true;
    for (auto& [id, s] : subscribers_) queues.push_back(s.queue);
  }
  for (auto& q : queues) q->End(status);
}

void NotificationHub::Stop() {
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
  }
  Shutdown(absl::UnavailableError("the broker is shutting down; listen on another instance"));
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
}

ListenerStats NotificationHub::Stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

void NotificationHub::Loop() {
  while (true) {
    absl::flat_hash_set<std::string> wanted;
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
      for (const auto& [id, s] : subscribers_) wanted.insert(s.channels.begin(), s.channels.end());
    }
    int timeout_ms = -1;
    bool failed = false;  // a connect attempt failed in this turn
    if (wanted.empty()) {
      if (conn_ != nullptr) {
        spdlog::info("listen: last subscriber left; closing the listener connection (pid {})",
                     conn_->BackendPid());
        conn_.reset();
        listened_.clear();
        PublishConnectionStats();
      }
      gap_owed_ = false;
    } else {
      if (conn_ == nullptr) {
        bool probe = false;
        if (backoff_.TryStart(clock_.Now(), &probe)) {
          absl::StatusOr<std::unique_ptr<storage::ListenConnection>> opened =
              connector_.ConnectListener();
          if (opened.ok()) {
            backoff_.OnSuccess(probe);
            conn_ = *std::move(opened);
            listened_.clear();
            spdlog::info("listen: listener connection open (pid {})", conn_->BackendPid());
          } else {
            backoff_.OnFailure(clock_.Now(), probe);
            failed = true;
            spdlog::warn("listen: {}", std::string(opened.status().message()));
            FailUnconfirmed(opened.status());
          }
        }
      }
      if (conn_ != nullptr) {
        SyncChannels(wanted);
        if (conn_ != nullptr) ReadAndDispatch();  // what arrived during the round trips
        // Published before anyone is confirmed or told of a gap: a client
        // that reads PoolStatus after its confirmation sees its channels.
        PublishConnectionStats();
        if (conn_ != nullptr) {
          const int pid = conn_->BackendPid();
          if (std::exchange(gap_owed_, false)) {
            std::vector<std::shared_ptr<SubscriberQueue>> owed;
            {
              MutexLock lock(&mu_);
              for (auto& [id, s] : subscribers_) {
                if (s.confirmed) owed.push_back(s.queue);
              }
            }
            for (auto& q : owed) {
              q->Push(ListenEvent::Gap(ListenEvent::GapReason::kReconnected, 0, pid));
            }
            spdlog::info(
                "listen: listener connection re-established (pid {}), {} channel(s) "
                "LISTENed again, {} subscriber(s) told of the gap",
                pid, listened_.size(), owed.size());
          }
          ConfirmReady();
        }
      }
      // No connection (the attempt failed or was not allowed yet, or the
      // connection was lost just now): try again when the backoff allows,
      // at once if it is not rationing.
      if (conn_ == nullptr) {
        const absl::Duration left = backoff_.next_attempt() - clock_.Now();
        timeout_ms =
            left <= absl::ZeroDuration()
                ? 0
                : static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 60'000));
        // With the backoff turned off, still no tight loop of refusals.
        if (failed) timeout_ms = std::max(timeout_ms, 100);
      }
    }
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {-1, POLLIN, 0}};
    if (conn_ != nullptr) fds[1].fd = conn_->Socket();
    if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR) {
      spdlog::error("listen: poll failed: errno {}", errno);
    }
    uint64_t count;
    while (::read(wake_fd_, &count, sizeof(count)) > 0) {
    }
    if (conn_ != nullptr && (fds[1].revents != 0 || conn_->IsBroken())) ReadAndDispatch();
  }
  conn_.reset();
  listened_.clear();
  PublishConnectionStats();
}

void NotificationHub::SyncChannels(const absl::flat_hash_set<std::string>& wanted) {
  std::vector<std::string> stale;
  for (const std::string& c : listened_) {
    if (!wanted.contains(c)) stale.push_back(c);
  }
  for (const std::string& c : stale) {
    absl::Status s = conn_->Unlisten(c);
    if (!s.ok() && conn_->IsBroken()) return OnConnectionLost(s);
    listened_.erase(c);
  }
  for (const std::string& c : wanted) {
    if (listened_.contains(c)) continue;
    absl::Status s = conn_->Listen(c);
    if (s.ok()) {
      listened_.insert(c);
      continue;
    }
    if (conn_->IsBroken()) return OnConnectionLost(s);
    // The server refused this channel alone: its subscribers end with why.
    spdlog::warn("listen: {}", std::string(s.message()));
    std::vector<std::shared_ptr<SubscriberQueue>> failed;
    {
      MutexLock lock(&mu_);
      for (auto it = subscribers_.begin(); it != subscribers_.end();) {
        const auto& ch = it->second.channels;
        if (std::find(ch.begin(), ch.end(), c) != ch.end()) {
          failed.push_back(it->second.queue);
          subscribers_.erase(it++);
        } else {
          ++it;
        }
      }
      stats_.subscribers = static_cast<int>(subscribers_.size());
    }
    for (auto& q : failed) q->End(s);
  }
}

void NotificationHub::ReadAndDispatch() {
  std::vector<storage::Notification> got;
  absl::Status s = conn_->Consume(&got);
  if (!got.empty()) {
    std::vector<std::pair<std::shared_ptr<SubscriberQueue>, size_t>> targets;
    int64_t dropped = 0;
    {
      MutexLock lock(&mu_);
      stats_.notifications_received += static_cast<int64_t>(got.size());
      for (size_t i = 0; i < got.size(); ++i) {
        for (auto& [id, sub] : subscribers_) {
          if (!sub.confirmed) continue;
          if (std::find(sub.channels.begin(), sub.channels.end(), got[i].channel) ==
              sub.channels.end()) {
            continue;
          }
          targets.emplace_back(sub.queue, i);
        }
      }
    }
    // Pushed outside the lock: a push may wake a stream, which writes.
    for (auto& [queue, i] : targets) dropped += queue->Push(ListenEvent::Notify(got[i]));
    if (dropped > 0) {
      MutexLock lock(&mu_);
      stats_.notifications_dropped += dropped;
    }
  }
  if (!s.ok()) OnConnectionLost(s);
}

void NotificationHub::OnConnectionLost(const absl::Status& why) {
  bool confirmed = false;
  int pid = 0;
  {
    MutexLock lock(&mu_);
    ++stats_.connections_lost;
    pid = stats_.backend_pid;
    for (const auto& [id, s] : subscribers_) confirmed = confirmed || s.confirmed;
  }
  spdlog::warn("listen: {} (pid {}); reconnecting and LISTENing again", std::string(why.message()),
               pid);
  conn_.reset();
  listened_.clear();
  gap_owed_ = gap_owed_ || confirmed;
  PublishConnectionStats();
}

void NotificationHub::ConfirmReady() {
  const int pid = conn_->BackendPid();
  std::vector<std::pair<std::shared_ptr<SubscriberQueue>, std::vector<std::string>>> ready;
  {
    MutexLock lock(&mu_);
    for (auto& [id, s] : subscribers_) {
      if (s.confirmed) continue;
      if (!std::all_of(s.channels.begin(), s.channels.end(),
                       [this](const std::string& c) { return listened_.contains(c); })) {
        continue;
      }
      s.confirmed = true;
      ready.emplace_back(s.queue, s.channels);
    }
  }
  for (auto& [q, channels] : ready) q->Push(ListenEvent::Listening(std::move(channels), pid));
}

void NotificationHub::FailUnconfirmed(const absl::Status& status) {
  std::vector<std::shared_ptr<SubscriberQueue>> failed;
  {
    MutexLock lock(&mu_);
    for (auto it = subscribers_.begin(); it != subscribers_.end();) {
      if (!it->second.confirmed) {
        failed.push_back(it->second.queue);
        subscribers_.erase(it++);
      } else {
        ++it;
      }
    }
    stats_.subscribers = static_cast<int>(subscribers_.size());
  }
  for (auto& q : failed) q->End(status);
}

void NotificationHub::PublishConnectionStats() {
  MutexLock lock(&mu_);
  stats_.connections = conn_ != nullptr ? 1 : 0;
  stats_.backend_pid = conn_ != nullptr ? conn_->BackendPid() : 0;
  stats_.channels = static_cast<int>(listened_.size());
}

}  // namespace sessionbroker::core
