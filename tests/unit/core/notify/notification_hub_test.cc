// NotificationHub without a database: a fake listener connection whose
// LISTENs always succeed, to check what the hub publishes (Stats, which
// PoolStatus and /metrics show) against what its subscribers were told.
#include "server/core/notify/notification_hub.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"
#include "server/core/notify/subscriber_queue.h"

namespace sessionbroker::core {
namespace {

constexpr int kFakePid = 4242;

class FakeListenConnection final : public storage::ListenConnection {
 public:
  absl::Status Listen(absl::string_view) override { return absl::OkStatus(); }
  absl::Status Unlisten(absl::string_view) override { return absl::OkStatus(); }
  absl::Status Consume(std::vector<storage::Notification>*) override { return absl::OkStatus(); }
  int Socket() const override { return -1; }  // poll() ignores it: only wake-ups
  bool IsBroken() const override { return false; }
  int BackendPid() const override { return kFakePid; }
};

class FakeListenConnector final : public storage::ListenConnector {
 public:
  absl::StatusOr<std::unique_ptr<storage::ListenConnection>> ConnectListener() override {
    return std::make_unique<FakeListenConnection>();
  }
};

// What the hub's Stats said at the moment a subscriber was woken for its
// confirmation.
class StatsAtConfirmation {
 public:
  void Record(const ListenerStats& stats) {
    MutexLock lock(&mu_);
    stats_ = stats;
    recorded_.SignalAll();
  }
  ListenerStats Await() {
    MutexLock lock(&mu_);
    while (!stats_.has_value()) recorded_.Wait(&mu_);
    return *stats_;
  }

 private:
  // The project's Mutex/CondVar (std:: underneath), which ThreadSanitizer
  // sees; Debian's absl::Mutex is not instrumented.
  Mutex mu_;
  CondVar recorded_;
  std::optional<ListenerStats> stats_ ABSL_GUARDED_BY(mu_);
};

TEST(NotificationHubTest, ASubscriberIsConfirmedOnlyOnceStatsShowItsChannelsListened) {
  FakeListenConnector connector;
  NotificationHub hub(connector, RealClock::Get(), NotificationHub::Options{});
  StatsAtConfirmation seen;
  // on_ready runs on the listener thread right after the confirmation is
  // pushed: a client reading PoolStatus after its confirmation must see its
  // channels, never the state before its LISTENs.
  auto queue = std::make_shared<SubscriberQueue>(10, [&] { seen.Record(hub.Stats()); });
  ASSERT_FALSE(queue->Pop().has_value());  // waits, so the push wakes it
  ASSERT_TRUE(hub.Subscribe({"a", "b"}, "client", queue).ok());
  const ListenerStats stats = seen.Await();
  std::optional<ListenEvent> confirmed = queue->Pop();
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_EQ(confirmed->kind, ListenEvent::Kind::kListening);
  EXPECT_EQ(stats.connections, 1);
  EXPECT_EQ(stats.backend_pid, kFakePid);
  EXPECT_EQ(stats.channels, 2);
  EXPECT_EQ(stats.subscribers, 1);
  hub.Stop();
}

}  // namespace
}  // namespace sessionbroker::core
