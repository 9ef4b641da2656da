// NotificationHub: LISTEN/NOTIFY for every Listen stream over ONE dedicated
// database connection, outside the pool's bound.
//
//  * The connection opens when the first subscriber arrives and closes when
//    the last one leaves (an idle broker holds no extra connection; the cost
//    is one connect for the next first subscriber).
//  * Channels are multiplexed: each is LISTENed once, whatever the number of
//    subscribers naming it, and UNLISTENed when the last of them leaves.
//  * One listener thread owns the connection: it poll()s the connection's
//    socket and a wake-up eventfd (written by Subscribe/Unsubscribe/Shutdown),
//    applies subscription changes, reads notifications without blocking and
//    pushes each to the bounded SubscriberQueue of every confirmed subscriber
//    of its channel. No gRPC thread ever waits on the database here.
//  * A subscriber is confirmed (ListenEvent::kListening, its first event)
//    once all its channels are LISTENed; only then does it get
//    notifications.
//  * Lost connection (pg_terminate_backend, a restart, a network failure
//    noticed by TCP keepalives): the thread reconnects, rationed by a
//    ReconnectBackoff with the pool's options, LISTENs every channel again,
//    then sends every confirmed subscriber a kReconnected gap. Subscribers
//    not yet confirmed when a connect attempt fails end with UNAVAILABLE
//    (they never were listening); confirmed ones stay and wait.
//  * Shutdown(status) ends every stream with `status` and refuses new
//    subscribers with UNAVAILABLE.
//
// Bounds: kMaxListenChannels channels per subscriber, kMaxChannelBytes per
// name, kMaxSubscribers streams, Options::queue_capacity notifications
// waiting per subscriber (see SubscriberQueue for what happens past it).
//
// Ownership: the hub borrows the connector and clock (they outlive it) and
// shares each SubscriberQueue with the stream that reads it.
// Thread-safe. Connecting blocks the listener thread (bounded by libpq's
// connect_timeout), never a caller; Stop() may wait for such a connect.
#ifndef SESSIONBROKER_SERVER_CORE_NOTIFY_NOTIFICATION_HUB_H_
#define SESSIONBROKER_SERVER_CORE_NOTIFY_NOTIFICATION_HUB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"
#include "server/core/notify/subscriber_queue.h"
#include "server/core/pool/reconnect_backoff.h"
#include "server/storage/listen_connection.h"

namespace sessionbroker::core {

// Distinct channels one Listen stream may name.
inline constexpr int kMaxListenChannels = 64;
// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), so a longer
// name would LISTEN on something NOTIFY with the full name never reaches.
inline constexpr size_t kMaxChannelBytes = 63;
// Open Listen streams per broker.
inline constexpr int kMaxSubscribers = 10'000;

// The listener as PoolStatus and /metrics show it.
struct ListenerStats {
  int connections = 0;  // 0 or 1
  int backend_pid = 0;
  int channels = 0;
  int subscribers = 0;
  int64_t notifications_received = 0;
  int64_t notifications_dropped = 0;
  int64_t connections_lost = 0;
};

// The channels of a ListenRequest, checked and deduplicated (first
// occurrence kept): INVALID_ARGUMENT naming the bound or the entry at fault.
absl::StatusOr<std::vector<std::string>> NormalizeChannels(std::vector<std::string> channels);

class NotificationHub final {
 public:
  struct Options {
    BackoffOptions backoff;
    size_t queue_capacity = 1000;
  };
  using SubscriberId = int64_t;

  NotificationHub(storage::ListenConnector& connector, const Clock& clock, Options options);
  ~NotificationHub();
  NotificationHub(const NotificationHub&) = delete;
  NotificationHub& operator=(const NotificationHub&) = delete;

  // Registers a subscriber to `channels` (NormalizeChannels first); its
  // events go to `queue`, starting with kListening once it is listening.
  // INVALID_ARGUMENT for bad channels, RESOURCE_EXHAUSTED past
  // kMaxSubscribers, UNAVAILABLE after Shutdown().
  absl::StatusOr<SubscriberId> Subscribe(std::vector<std::string> channels, std::string client_id,
                                         std::shared_ptr<SubscriberQueue> queue);
  // Forgets the subscriber (a stream that ended); unknown ids are ignored.
  void Unsubscribe(SubscriberId id);

  // Ends every subscriber's stream with `status`; later Subscribe calls fail
  // with UNAVAILABLE. The listener connection closes as they leave.
  void Shutdown(const absl::Status& status);
  // Waits until every subscriber has left (Unsubscribe), so that a drain can
  // let the streams ended by Shutdown() deliver their status before the
  // server cancels what is left. False if some remain at `deadline`.
  bool WaitForSubscribersGone(absl::Time deadline);
  // Shutdown (if not yet) and joins the listener thread; idempotent.
  void Stop();

  ListenerStats Stats() const;

 private:
  struct Subscriber {
    std::vector<std::string> channels;
    std::string client_id;
    std::shared_ptr<SubscriberQueue> queue;
    bool confirmed = false;
  };

  void Loop();
  void Wake();
  // LISTEN what is wanted and not listened, UNLISTEN the reverse.
  void SyncChannels(const absl::flat_hash_set<std::string>& wanted);
  // Reads what arrived and hands it out; on loss, forgets the connection.
  void ReadAndDispatch();
  void OnConnectionLost(const absl::Status& why);
  // Confirms each unconfirmed subscriber whose channels are all listened.
  void ConfirmReady();
  // Ends (and forgets) the subscribers that were never confirmed.
  void FailUnconfirmed(const absl::Status& status);
  void PublishConnectionStats();

  storage::ListenConnector& connector_;
  const Clock& clock_;
  const Options options_;
  int wake_fd_ = -1;

  // The listener thread's own state: no lock.
  std::unique_ptr<storage::ListenConnection> conn_;
  absl::flat_hash_set<std::string> listened_;
  bool gap_owed_ = false;  // the connection was lost while subscribers were confirmed
  ReconnectBackoff backoff_;

  mutable Mutex mu_;
  absl::flat_hash_map<SubscriberId, Subscriber> subscribers_ ABSL_GUARDED_BY(mu_);
  CondVar subscribers_gone_;  // signalled when subscribers_ runs empty
  SubscriberId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  ListenerStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_NOTIFY_NOTIFICATION_HUB_H_
