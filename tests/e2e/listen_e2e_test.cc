// Listen (LISTEN/NOTIFY as a server stream) end to end: the broker binary, a
// real PostgreSQL, generated stubs. Notifications sent through Execute and
// straight from PostgreSQL arrive with their sender's pid; subscribers of one
// channel share one LISTEN on the one listener connection; leaving frees
// channels and the connection; a killed listener connection is replaced and
// subscribers are told of the gap; a killed client is cleaned up; LISTEN
// through Execute is refused; pool status and /metrics show the listener; a
// drain ends the streams. Every wait polls with a generous deadline.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

// One Listen stream read by a thread of its own. Cancels (and joins) on
// destruction.
class ListenStream {
 public:
  ListenStream(v1::SessionBroker::Stub* stub, const std::vector<std::string>& channels) {
    v1::ListenRequest request;
    for (const std::string& c : channels) request.add_channels(c);
    context_.AddMetadata("x-client-id", "listen-e2e");
    reader_ = stub->Listen(&context_, request);
    thread_ = std::thread([this] {
      v1::ListenResponse response;
      while (reader_->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        responses_.push_back(response);
        cv_.notify_all();
      }
      grpc::Status status = reader_->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      cv_.notify_all();
    });
  }
  ~ListenStream() {
    context_.TryCancel();
    thread_.join();
  }

  std::optional<v1::ListenResponse> Next(absl::Duration timeout = absl::Seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(timeout),
                 [this] { return !responses_.empty() || status_.has_value(); });
    if (responses_.empty()) return std::nullopt;
    v1::ListenResponse r = responses_.front();
    responses_.pop_front();
    return r;
  }
  // The next notification, skipping nothing: fails the test on anything else.
  std::optional<v1::ListenNotification> NextNotification() {
    std::optional<v1::ListenResponse> r = Next();
    if (!r.has_value() || !r->has_notification()) {
      ADD_FAILURE() << "expected a notification, got "
                    << (r.has_value() ? r->DebugString() : "nothing");
      return std::nullopt;
    }
    return r->notification();
  }
  // The listener pid of the confirmation, which must come first; 0 if not.
  int Confirmed() {
    std::optional<v1::ListenResponse> r = Next();
    if (!r.has_value() || !r->has_listening()) {
      ADD_FAILURE() << "expected the confirmation, got "
                    << (r.has_value() ? r->DebugString() : "nothing")
                    << (status_.has_value() ? status_->error_message() : "");
      return 0;
    }
    return r->listening().listener_pid();
  }
  std::optional<grpc::Status> WaitEnd(absl::Duration timeout = absl::Seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(timeout), [this] { return status_.has_value(); });
    return status_;
  }
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::ListenResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ListenResponse> responses_;
  std::optional<grpc::Status> status_;
};

class ListenE2eTest : public BrokerFixture {
 protected:
  void StartWith(std::map<std::string, std::string> env = {}) {
    StartBroker(std::move(env));
    monitor_ = v1::PoolMonitor::NewStub(broker_->channel());
  }

  v1::ListenerStatus Listener() {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::PoolStatus status;
    grpc::Status s = monitor_->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status.listener();
  }

  bool BackendExists(int pid) {
    return AdminCount(absl::StrCat("SELECT count(*) FROM pg_stat_activity WHERE pid = ", pid)) == 1;
  }

  void Notify(const std::string& channel, const std::string& payload) {
    CallResult r = Execute("SELECT pg_notify($1, $2)", {Str(channel), Str(payload)});
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  }

  std::unique_ptr<v1::PoolMonitor::Stub> monitor_;
};

TEST_F(ListenE2eTest, ConfirmsFirstThenDeliversNotifiesFromExecuteAndFromPostgresWithPids) {
  StartWith();
  ListenStream stream(stub_.get(), {"orders", "Mixed Case"});
  const int listener = stream.Confirmed();
  ASSERT_GT(listener, 0);
  EXPECT_TRUE(BackendExists(listener)) << "the listener pid is a live backend";

  CallResult sent = Execute("NOTIFY orders, 'via execute'");
  ASSERT_TRUE(sent.status.ok()) << sent.status.error_message();
  std::optional<v1::ListenNotification> n = stream.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel(), "orders");
  EXPECT_EQ(n->payload(), "via execute");
  EXPECT_GT(n->sender_pid(), 0);
  EXPECT_NE(n->sender_pid(), listener);

  // Straight from PostgreSQL, not through the broker; the channel name is
  // used as given (quoted), so a mixed-case name with a space works.
  const int64_t admin_pid = AdminCount("SELECT pg_backend_pid()::int8");
  Admin("NOTIFY \"Mixed Case\", 'direct'");
  n = stream.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel(), "Mixed Case");
  EXPECT_EQ(n->payload(), "direct");
  EXPECT_EQ(n->sender_pid(), admin_pid);

  // A NOTIFY without payload and one on a channel nobody listens to.
  Notify("elsewhere", "not for us");
  ASSERT_TRUE(Execute("NOTIFY orders").status.ok());
  n = stream.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel(), "orders");
  EXPECT_EQ(n->payload(), "");
}

TEST_F(ListenE2eTest, TwoSubscribersOfOneChannelBothReceiveOverOneListenerConnection) {
  StartWith();
  ListenStream a(stub_.get(), {"shared"});
  ListenStream b(stub_.get(), {"shared", "shared"});  // duplicates count once
  const int pid_a = a.Confirmed();
  const int pid_b = b.Confirmed();
  ASSERT_GT(pid_a, 0);
  EXPECT_EQ(pid_a, pid_b) << "one listener connection serves every subscriber";
  Notify("shared", "both");
  for (ListenStream* s : {&a, &b}) {
    std::optional<v1::ListenNotification> n = s->NextNotification();
    ASSERT_TRUE(n.has_value());
    EXPECT_EQ(n->payload(), "both");
  }
  const v1::ListenerStatus status = Listener();
  EXPECT_EQ(status.connections(), 1);
  EXPECT_EQ(status.channels(), 1) << "one LISTEN for both subscribers";
  EXPECT_EQ(status.subscribers(), 2);
  EXPECT_EQ(status.backend_pid(), pid_a);
}

TEST_F(ListenE2eTest, CancellingFreesItsChannelsAndTheLastOneClosesTheConnection) {
  StartWith();
  auto a = std::make_unique<ListenStream>(stub_.get(), std::vector<std::string>{"keep"});
  auto b = std::make_unique<ListenStream>(stub_.get(), std::vector<std::string>{"keep", "drop"});
  const int listener = a->Confirmed();
  ASSERT_GT(b->Confirmed(), 0);
  EXPECT_EQ(Listener().channels(), 2);

  b->Cancel();
  ASSERT_TRUE(b->WaitEnd().has_value());
  EXPECT_TRUE(Eventually([&] {
    const v1::ListenerStatus s = Listener();
    return s.channels() == 1 && s.subscribers() == 1;
  })) << Listener().DebugString();
  // Still listening on what is left.
  Notify("keep", "still here");
  std::optional<v1::ListenNotification> n = a->NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->payload(), "still here");

  a->Cancel();
  ASSERT_TRUE(a->WaitEnd().has_value());
  EXPECT_TRUE(Eventually([&] {
    const v1::ListenerStatus s = Listener();
    return s.connections() == 0 && s.channels() == 0 && s.subscribers() == 0;
  })) << Listener().DebugString();
  EXPECT_TRUE(Eventually([&] { return !BackendExists(listener); }))
      << "the listener connection stays open in PostgreSQL with no subscriber";
}

TEST_F(ListenE2eTest, KilledListenerConnectionIsReplacedAndSubscribersAreToldOfTheGap) {
  StartWith();
  ListenStream a(stub_.get(), {"survive"});
  ListenStream b(stub_.get(), {"survive", "other"});
  const int first = a.Confirmed();
  ASSERT_GT(first, 0);
  ASSERT_EQ(b.Confirmed(), first);
  ASSERT_EQ(AdminCount(absl::StrCat("SELECT count(*) FROM pg_terminate_backend(", first,
                                    ") WHERE pg_terminate_backend")),
            1);
  for (ListenStream* s : {&a, &b}) {
    std::optional<v1::ListenResponse> r = s->Next();
    ASSERT_TRUE(r.has_value() && r->has_gap()) << (r ? r->DebugString() : "nothing") << "\n"
                                               << broker_->Log();
    EXPECT_EQ(r->gap().reason(), v1::ListenGap::RECONNECTED);
    EXPECT_NE(r->gap().listener_pid(), first);
    EXPECT_TRUE(BackendExists(r->gap().listener_pid()));
  }
  // Every channel is LISTENed again on the new connection.
  Notify("survive", "after");
  Notify("other", "after too");
  std::optional<v1::ListenNotification> n = a.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->payload(), "after");
  n = b.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->payload(), "after");
  n = b.NextNotification();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel(), "other");
  const v1::ListenerStatus status = Listener();
  EXPECT_EQ(status.connections_lost(), 1);
  EXPECT_EQ(status.channels(), 2);
}

TEST_F(ListenE2eTest, ASubscriberWhoseProcessIsKilledIsCleanedUp) {
  StartWith();
  // A client in a process of its own (the reflection grpcurl), killed
  // without a chance to cancel: the broker notices the closed connection.
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    const std::string address = broker_->address();
    execl("/usr/bin/python3", "python3", SB_GRPCURL, "-plaintext", "-d",
          "{\"channels\": [\"vanish\"]}", address.c_str(), "sessionbroker.v1.SessionBroker/Listen",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  // Its confirmation printed means it is subscribed.
  std::string printed;
  char buf[256];
  while (printed.find("listenerPid") == std::string::npos) {
    const ssize_t got = read(out[0], buf, sizeof(buf));
    if (got <= 0) break;
    printed.append(buf, static_cast<size_t>(got));
  }
  ASSERT_THAT(printed, HasSubstr("listenerPid")) << broker_->Log();
  EXPECT_EQ(Listener().subscribers(), 1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(out[0]);
  EXPECT_TRUE(Eventually(
      [&] {
        const v1::ListenerStatus s = Listener();
        return s.subscribers() == 0 && s.connections() == 0;
      },
      absl::Seconds(60)))
      << Listener().DebugString();
}

TEST_F(ListenE2eTest, ListenThroughExecuteIsRefusedWithAPointerToListen) {
  StartWith();
  CallResult one_shot = Execute("listen some_channel");
  EXPECT_EQ(one_shot.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(one_shot.status.error_message(), HasSubstr("Listen stream"));

  v1::ExecuteBatchRequest batch;
  batch.add_statements()->set_sql("SELECT 1");
  batch.add_statements()->set_sql("/* hi */ LISTEN some_channel");
  grpc::ClientContext context;
  v1::ExecuteBatchResponse batch_response;
  grpc::Status batch_status = stub_->ExecuteBatch(&context, batch, &batch_response);
  EXPECT_EQ(batch_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(batch_status.error_message(), HasSubstr("statements[1]: LISTEN"));

  RpcResult<v1::Session> session = BeginSession();
  ASSERT_TRUE(session.status.ok()) << session.status.error_message();
  RpcResult<v1::ExecuteResponse> in_session =
      ExecuteIn(session.response.name(), "LISTEN some_channel");
  EXPECT_EQ(in_session.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(in_session.status.error_message(), HasSubstr("rpc Listen"));
  // NOTIFY and UNLISTEN are not refused.
  EXPECT_TRUE(ExecuteIn(session.response.name(), "NOTIFY some_channel").status.ok());
  EXPECT_TRUE(Execute("UNLISTEN *").status.ok());
}

TEST_F(ListenE2eTest, BadChannelListsAreRefusedWithTheBoundNamed) {
  StartWith();
  struct Case {
    std::vector<std::string> channels;
    std::string message;
  };
  std::vector<std::string> many;
  for (int i = 0; i < 65; ++i) many.push_back(absl::StrCat("c", i));
  const std::vector<Case> cases = {
      {{}, "name at least one channel"},
      {{"ok", ""}, "channels[1] is empty"},
      {{std::string(64, 'x')}, "at most 63 bytes"},
      {many, "at most 64"},
  };
  for (const Case& c : cases) {
    ListenStream s(stub_.get(), c.channels);
    std::optional<grpc::Status> end = s.WaitEnd();
    ASSERT_TRUE(end.has_value());
    EXPECT_EQ(end->error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(end->error_message(), HasSubstr(c.message));
  }
  EXPECT_EQ(Listener().connections(), 0) << "no connection opened for refused requests";
  // 63 bytes is fine.
  ListenStream ok(stub_.get(), {std::string(63, 'y')});
  EXPECT_GT(ok.Confirmed(), 0);
}

TEST_F(ListenE2eTest, PoolStatusAndMetricsShowTheListenerConnectionOutsideThePool) {
  StartWith({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  ListenStream s(stub_.get(), {"metrics"});
  const int listener = s.Confirmed();
  ASSERT_GT(listener, 0);
  Notify("metrics", "counted");
  ASSERT_TRUE(s.NextNotification().has_value());
  // The pool's one connection and the listener: two, beyond the bound of 1.
  EXPECT_TRUE(Eventually([&] { return BrokerConnections() == 2; })) << BrokerConnections();
  const v1::ListenerStatus status = Listener();
  EXPECT_EQ(status.connections(), 1);
  EXPECT_EQ(status.backend_pid(), listener);
  EXPECT_EQ(status.notifications_received(), 1);
  httplib::Client http(absl::StrCat("http://", broker_->metrics_address()));
  httplib::Result r = http.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, HasSubstr("\nsessionbroker_listener_connections 1\n"));
  EXPECT_THAT(r->body, HasSubstr("\nsessionbroker_listener_subscribers 1\n"));
  EXPECT_THAT(r->body, HasSubstr("\nsessionbroker_listener_notifications_received_total 1\n"));
}

TEST_F(ListenE2eTest, DrainEndsListenStreamsWithUnavailable) {
  StartWith({{"BROKER_DRAIN_SECONDS", "0"}});
  ListenStream s(stub_.get(), {"drained"});
  ASSERT_GT(s.Confirmed(), 0);
  kill(broker_->pid(), SIGTERM);
  std::optional<grpc::Status> end = s.WaitEnd();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->error_code(), grpc::StatusCode::UNAVAILABLE) << end->error_message();
  EXPECT_THAT(end->error_message(), HasSubstr("shutting down"));
  EXPECT_EQ(broker_->WaitForExit(absl::Seconds(30)), 0) << broker_->Log();
}

}  // namespace
}  // namespace sessionbroker::testing
