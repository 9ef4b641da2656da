// End-to-end: the pool monitor of the real broker binary against a real
// PostgreSQL. GetPoolStatus and WatchPoolStatus through generated stubs,
// /metrics parsed by prometheus_client's own parser (Debian's
// python3-prometheus-client), /livez and /readyz with cpp-httplib's client,
// and a database outage with a private cluster that the test stops and
// starts again.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "server/core/base/mutex.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/broker_process.h"
#include "tests/support/grpc_wire.h"
#include "tests/support/test_env.h"

namespace sessionbroker::testing {
namespace {

using ::testing::HasSubstr;

// Debian's interpreter, which has python3-prometheus-client (a python3 found
// first on PATH, e.g. from pyenv, may not).
constexpr char kPython[] = "/usr/bin/python3";

// Health probes check out connections too; a long interval leaves exactly
// one probe (the one that makes the broker SERVING) in the counters.
const std::map<std::string, std::string> kQuietHealth = {{"BROKER_HEALTH_CHECK_INTERVAL", "3600"}};

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// A WatchPoolStatus stream read on a thread of its own.
class Watcher {
 public:
  Watcher(v1::PoolMonitor::Stub* stub, absl::Duration interval) {
    v1::WatchPoolStatusRequest request;
    request.mutable_interval()->set_seconds(absl::ToInt64Seconds(interval));
    request.mutable_interval()->set_nanos(static_cast<int32_t>(
        absl::ToInt64Nanoseconds(interval - absl::Seconds(absl::ToInt64Seconds(interval)))));
    reader_ = stub->WatchPoolStatus(&context_, request);
    thread_ = std::thread([this] {
      v1::PoolStatus status;
      while (reader_->Read(&status)) {
        core::MutexLock lock(&mu_);
        received_.push_back(status);
      }
      grpc::Status end = reader_->Finish();
      core::MutexLock lock(&mu_);
      end_ = end;
      ended_ = true;
    });
  }
  ~Watcher() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

  std::vector<v1::PoolStatus> received() const {
    core::MutexLock lock(&mu_);
    return received_;
  }
  size_t count() const {
    core::MutexLock lock(&mu_);
    return received_.size();
  }
  // Waits until the stream has ended; its status.
  std::optional<grpc::Status> WaitForEnd(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      {
        core::MutexLock lock(&mu_);
        if (ended_) return end_;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }
  bool WaitForCount(size_t n, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (count() < n) {
      if (absl::Now() >= end) return false;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return true;
  }
  // Waits until a snapshot satisfies `pred`, looking only at snapshots from
  // the `from`-th received on.
  template <typename Pred>
  bool WaitFor(Pred pred, absl::Duration timeout, size_t from = 0) {
    const absl::Time end = absl::Now() + timeout;
    size_t checked = from;
    while (absl::Now() < end) {
      std::vector<v1::PoolStatus> got = received();
      for (; checked < got.size(); ++checked) {
        if (pred(got[checked])) return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::PoolStatus>> reader_;
  std::thread thread_;
  mutable core::Mutex mu_;
  std::vector<v1::PoolStatus> received_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_ ABSL_GUARDED_BY(mu_);
};

class MonitorE2eTest : public BrokerFixture {
 protected:
  void Start(std::map<std::string, std::string> env = {}) {
    StartBroker(std::move(env));
    monitor_ = v1::PoolMonitor::NewStub(broker_->channel());
    WaitForStartupWork();
  }

  // The broker's own work at start, counted like any call: the health probe
  // (one checkout) and the request outcomes table's CREATE ... IF NOT EXISTS
  // (one checkout, kStartupStatements statements; docs/retries.md). The
  // tests count from after it.
  static constexpr int kStartupCheckouts = 2;
  static constexpr int kStartupStatements = 3;
  // The table's creation is one batch: one statement_duration sample.
  static constexpr int kStartupCalls = 1;
  void WaitForStartupWork() {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (absl::Now() < give_up) {
      const v1::PoolStatus s = Status();
      if (s.counters().statements() >= kStartupStatements && s.connections().in_use() == 0) return;
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "the broker's start-up statements did not finish";
  }

  v1::PoolStatus Status() {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::PoolStatus status;
    const grpc::Status s = monitor_->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  // One Execute as `client` (the x-client-id metadata).
  grpc::Status ExecuteAs(const std::string& client, const std::string& sql,
                         absl::Duration timeout = absl::Seconds(20),
                         v1::SessionBroker::Stub* stub = nullptr) {
    v1::ExecuteRequest request;
    request.set_sql(sql);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    context.AddMetadata("x-client-id", client);
    v1::ExecuteResponse response;
    return (stub ? stub : stub_.get())->Execute(&context, request, &response);
  }

  // Every sample of /metrics as prometheus_client parsed it, keyed
  // "name{label=value,...}" (labels sorted), plus "families" (their count).
  std::map<std::string, double> ScrapeMetrics(const std::string& address) {
    const std::string script = absl::StrCat(TempDir(), "/sb-parse-metrics-", getpid(), ".py");
    {
      std::ofstream out(script);
      out << "import sys, urllib.request\n"
             "from prometheus_client.parser import text_string_to_metric_families\n"
             "text = urllib.request.urlopen('http://' + sys.argv[1] + '/metrics',"
             " timeout=10).read().decode()\n"
             "n = 0\n"
             "for family in text_string_to_metric_families(text):\n"
             "    n += 1\n"
             "    for s in family.samples:\n"
             "        labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))\n"
             "        print(s.name + '{' + labels + '} ' + repr(float(s.value)))\n"
             "print('families{} ' + str(n))\n";
    }
    std::string output;
    const int rc = RunCommand(absl::StrCat(kPython, " '", script, "' ", address, " 2>&1"), &output);
    unlink(script.c_str());
    EXPECT_EQ(rc, 0) << "prometheus_client could not fetch or parse /metrics:\n" << output;
    std::map<std::string, double> samples;
    for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipEmpty())) {
      const size_t space = line.rfind(' ');
      double value;
      if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) {
        ADD_FAILURE() << "unexpected parser output: " << line;
        continue;
      }
      const absl::string_view key = line.substr(0, space);
      samples[std::string(key.substr(0, key.size() - (absl::EndsWith(key, "{}") ? 2 : 0)))] = value;
    }
    return samples;
  }

  static std::string TempDir() {
    const char* dir = std::getenv("TMPDIR");
    return dir != nullptr && *dir != '\0' ? dir : "/tmp";
  }

  // GET http://<metrics address><path>: the status code (-1 if no answer).
  int HttpGet(const std::string& path, std::string* body = nullptr) {
    httplib::Client client(absl::StrCat("http://", broker_->metrics_address()));
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(5, 0);
    httplib::Result r = client.Get(path.c_str());
    if (!r) return -1;
    if (body != nullptr) *body = r->body;
    return r->status;
  }

  std::unique_ptr<v1::PoolMonitor::Stub> monitor_;
};

TEST_F(MonitorE2eTest, GetPoolStatusCountsWhatTheTestDid) {
  std::map<std::string, std::string> env = kQuietHealth;
  env.insert({{"DB_POOL_SIZE", "2"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_TIMEOUT", "0.3"}});
  // Exact checkout counts: no catalog lookup for pg_sleep($1) (it would take
  // a pooled connection of its own).
  env.insert({"BROKER_PIPELINE_TABLE_READS", "false"});
  Start(env);
  const v1::PoolStatus before = Status();
  EXPECT_EQ(before.counters().checkouts(), kStartupCheckouts)
      << "the health probe that made it SERVING and the outcomes table's creation";
  EXPECT_EQ(before.config().pool_size(), 2);
  EXPECT_EQ(before.config().max_overflow(), 0);
  EXPECT_EQ(before.config().max_connections(), 2);
  EXPECT_EQ(FromProto(before.config().timeout()), absl::Milliseconds(300));
  EXPECT_EQ(FromProto(before.config().recycle()), absl::Seconds(3600));
  EXPECT_EQ(before.broker().version(), "0.1.0");
  EXPECT_TRUE(before.database().reachable());

  constexpr int kCalls = 7;
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(ExecuteAs("e2e-serial", "SELECT 1").ok());

  // Two callers hold both connections; three more time out in the pool.
  std::vector<std::thread> holders;
  for (int i = 0; i < 2; ++i) {
    holders.emplace_back([this] {
      auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
      EXPECT_TRUE(ExecuteAs("holder", "SELECT pg_sleep(2)", absl::Seconds(20), stub.get()).ok());
    });
  }
  WaitForActiveStatements(2);
  const v1::PoolStatus busy = Status();
  EXPECT_EQ(busy.connections().in_use(), 2);
  EXPECT_EQ(busy.connections().open(), 2);
  EXPECT_EQ(BrokerConnections(), busy.connections().open()) << "as pg_stat_activity sees it";
  ASSERT_GE(busy.clients_size(), 1);
  EXPECT_EQ(busy.clients(0).client_id(), "holder");
  EXPECT_EQ(busy.clients(0).in_use(), 2);
  constexpr int kTimeouts = 3;
  for (int i = 0; i < kTimeouts; ++i) {
    EXPECT_EQ(ExecuteAs("late", "SELECT 1").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  for (std::thread& t : holders) t.join();

  const v1::PoolStatus after = Status();
  const v1::PoolCounters& c = after.counters();
  EXPECT_EQ(c.checkouts(), kStartupCheckouts + kCalls + 2);
  EXPECT_EQ(c.checkout_timeouts(), kTimeouts);
  EXPECT_EQ(c.statements(), kStartupStatements + kCalls + 2);
  EXPECT_EQ(c.statement_errors(), 0);
  EXPECT_EQ(c.connects(), 2);
  EXPECT_EQ(c.connect_failures(), 0);
  EXPECT_EQ(after.connections().open(), 2);
  EXPECT_EQ(after.connections().idle(), 2);
  EXPECT_EQ(after.connections().in_use(), 0);
  EXPECT_EQ(after.waiters().count(), 0);
  EXPECT_EQ(BrokerConnections(), 2);
  EXPECT_EQ(after.checkout_wait().count(), kStartupCheckouts + kCalls + 2);
  EXPECT_EQ(FromProto(after.checkout_wait().window()), absl::Seconds(60));
  EXPECT_EQ(after.statement_duration().count(), kStartupCalls + kCalls + 2);
  // The two pg_sleep(2) statements are the slowest.
  EXPECT_GE(FromProto(after.statement_duration().max()), absl::Seconds(2));
  EXPECT_LT(FromProto(after.statement_duration().p50()), absl::Seconds(2));
  EXPECT_EQ(after.clients_size(), 0) << "nobody holds or waits any more";
  EXPECT_GT(FromProto(after.broker().uptime()), absl::ZeroDuration());
}

TEST_F(MonitorE2eTest, AWatcherSeesWaitersRiseUnderLoadAndFallAfter) {
  Start({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}, {"DB_POOL_TIMEOUT", "20"}});
  Watcher watcher(monitor_.get(), absl::Milliseconds(100));
  ASSERT_TRUE(watcher.WaitFor([](const v1::PoolStatus&) { return true; }, absl::Seconds(5)))
      << "the first snapshot comes at once";

  constexpr int kWaiters = 5;
  std::vector<std::thread> callers;
  callers.emplace_back([this] { EXPECT_TRUE(ExecuteAs("load", "SELECT pg_sleep(1.5)").ok()); });
  WaitForActiveStatements(1);
  for (int i = 0; i < kWaiters; ++i) {
    callers.emplace_back([this] {
      auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
      const grpc::Status status = ExecuteAs("load", "SELECT 1", absl::Seconds(20), stub.get());
      EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
    });
  }
  EXPECT_TRUE(watcher.WaitFor(
      [](const v1::PoolStatus& s) {
        return s.waiters().count() == kWaiters &&
               FromProto(s.waiters().oldest_wait()) > absl::ZeroDuration() &&
               s.clients_size() == 1 && s.clients(0).waiting() == kWaiters;
      },
      absl::Seconds(10)))
      << "waiters never reached " << kWaiters;
  for (std::thread& t : callers) t.join();
  EXPECT_TRUE(watcher.WaitFor(
      [](const v1::PoolStatus& s) {
        return s.waiters().count() == 0 && s.connections().in_use() == 0 &&
               s.counters().checkouts() >= 1 + kWaiters;
      },
      absl::Seconds(5)))
      << "waiters never fell back to 0";
  // Snapshots came about every 100 ms, in time order.
  const std::vector<v1::PoolStatus> got = watcher.received();
  ASSERT_GE(got.size(), 10u);
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_GE(got[i].time().seconds() * 1'000'000'000LL + got[i].time().nanos(),
              got[i - 1].time().seconds() * 1'000'000'000LL + got[i - 1].time().nanos());
  }
  EXPECT_EQ(got.back().broker().watchers(), 1);
}

TEST_F(MonitorE2eTest, WatchIntervalDefaultsToOneSecondAndRejectsTooShort) {
  Start();
  {
    v1::WatchPoolStatusRequest request;
    request.mutable_interval()->set_nanos(50'000'000);  // 50 ms
    grpc::ClientContext context;
    auto reader = monitor_->WatchPoolStatus(&context, request);
    v1::PoolStatus status;
    EXPECT_FALSE(reader->Read(&status));
    const grpc::Status end = reader->Finish();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(end.error_message(), HasSubstr("100ms"));
  }
  // No interval: one snapshot at once, the next about a second later.
  grpc::ClientContext context;
  auto reader = monitor_->WatchPoolStatus(&context, v1::WatchPoolStatusRequest());
  v1::PoolStatus first;
  v1::PoolStatus second;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(reader->Read(&second));
  const absl::Duration gap = absl::Seconds(second.time().seconds() - first.time().seconds()) +
                             absl::Nanoseconds(second.time().nanos() - first.time().nanos());
  EXPECT_GE(gap, absl::Milliseconds(900));
  context.TryCancel();
  reader->Finish();
}

TEST_F(MonitorE2eTest, MetricsParseAsPrometheusTextWithTheNumbersOfThePool) {
  std::map<std::string, std::string> env = kQuietHealth;
  env.insert({{"DB_POOL_SIZE", "3"}, {"DB_MAX_OVERFLOW", "1"}});
  // Exact checkout counts: no catalog lookup for 1/0 (it would take a
  // pooled connection of its own).
  env.insert({"BROKER_PIPELINE_TABLE_READS", "false"});
  Start(env);
  constexpr int kCalls = 4;
  for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(ExecuteAs("metrics-test", "SELECT 1").ok());
  EXPECT_EQ(ExecuteAs("metrics-test", "SELECT 1/0").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  std::map<std::string, double> m = ScrapeMetrics(broker_->metrics_address());
  EXPECT_GE(m["families"], 40);
  EXPECT_EQ(m["sessionbroker_build_info{version=0.1.0}"], 1);
  EXPECT_EQ(m["sessionbroker_pool_size"], 3);
  EXPECT_EQ(m["sessionbroker_pool_max_overflow"], 1);
  EXPECT_EQ(m["sessionbroker_pool_checkouts_total"], kStartupCheckouts + kCalls + 1);
  EXPECT_EQ(m["sessionbroker_statements_total"], kStartupStatements + kCalls + 1);
  EXPECT_EQ(m["sessionbroker_statement_errors_total"], 1);
  // The health probe and the outcomes table's creation may have overlapped
  // at start and opened a connection each.
  const double opened = m["sessionbroker_pool_connects_total"];
  EXPECT_GE(opened, 1);
  EXPECT_LE(opened, 2);
  EXPECT_EQ(m["sessionbroker_pool_connections{state=idle}"], opened);
  EXPECT_EQ(m["sessionbroker_pool_connections{state=in_use}"], 0);
  EXPECT_EQ(m["sessionbroker_pool_connections_open"], BrokerConnections());
  EXPECT_EQ(m["sessionbroker_pool_waiters"], 0);
  EXPECT_EQ(m["sessionbroker_database_reachable"], 1);
  // Histograms: buckets are cumulative and end in +Inf = _count.
  EXPECT_EQ(m["sessionbroker_statement_duration_seconds_count"], kStartupCalls + kCalls + 1);
  EXPECT_EQ(m["sessionbroker_statement_duration_seconds_bucket{le=+Inf}"],
            kStartupCalls + kCalls + 1);
  EXPECT_LE(m["sessionbroker_statement_duration_seconds_bucket{le=0.001}"],
            m["sessionbroker_statement_duration_seconds_bucket{le=0.01}"]);
  EXPECT_GT(m["sessionbroker_statement_duration_seconds_sum"], 0);
  EXPECT_EQ(m["sessionbroker_pool_checkout_wait_seconds_count"], kStartupCheckouts + kCalls + 1);
  EXPECT_EQ(m.count("sessionbroker_pool_checkout_wait_seconds_bucket{le=0.0005}"), 1u);
  EXPECT_EQ(m["sessionbroker_sessions_open"], 0);
  EXPECT_EQ(m.count("sessionbroker_transactions_killed_total{reason=idle}"), 1u);
  EXPECT_GT(m["sessionbroker_uptime_seconds"], 0);

  // The same numbers as PoolStatus.
  const v1::PoolStatus s = Status();
  EXPECT_EQ(m["sessionbroker_pool_checkouts_total"], s.counters().checkouts());
}

TEST_F(MonitorE2eTest, SessionNumbersMatchWhatTheSessionsDid) {
  std::map<std::string, std::string> env = kQuietHealth;
  env.insert({"BROKER_TX_IDLE_TIMEOUT", "0.3"});
  Start(env);
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) {
    RpcResult<v1::Session> s = BeginSession({}, "jobs");
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    names.push_back(s.response.name());
  }
  // One transaction committed, one left idle until the broker kills it.
  ASSERT_TRUE(BeginTransaction(names[0]).status.ok());
  ASSERT_TRUE(Commit(names[0]).status.ok());
  ASSERT_TRUE(BeginTransaction(names[1]).status.ok());
  ASSERT_TRUE(Eventually([&] { return Status().sessions().transactions_killed_idle() == 1; }));
  ASSERT_TRUE(EndSession(names[2]).status.ok());

  const v1::PoolStatus st = Status();
  const v1::SessionNumbers& n = st.sessions();
  EXPECT_EQ(n.open(), 2);
  EXPECT_EQ(n.in_transaction(), 0);  // the killed one holds no connection
  EXPECT_EQ(n.begun(), 3);
  EXPECT_EQ(n.ended_by_client(), 1);
  EXPECT_EQ(n.transactions_begun(), 2);
  EXPECT_EQ(n.transactions_committed(), 1);
  EXPECT_EQ(n.transactions_killed_idle(), 1);
  bool found = false;
  for (const v1::ClientOccupancy& c : st.clients()) {
    if (c.client_id() == "jobs") {
      found = true;
      EXPECT_EQ(c.sessions(), 2);
    }
  }
  EXPECT_TRUE(found) << st.DebugString();

  std::map<std::string, double> m = ScrapeMetrics(broker_->metrics_address());
  EXPECT_EQ(m["sessionbroker_sessions_open"], 2);
  EXPECT_EQ(m["sessionbroker_transactions_killed_total{reason=idle}"], 1);
  EXPECT_EQ(m["sessionbroker_client_sessions_open{client=jobs}"], 2);
}

TEST_F(MonitorE2eTest, PerClientOccupancyShowsUpInMetrics) {
  Start({{"DB_POOL_SIZE", "1"}, {"DB_MAX_OVERFLOW", "0"}});
  std::thread holder([this] { EXPECT_TRUE(ExecuteAs("billing", "SELECT pg_sleep(1.5)").ok()); });
  WaitForActiveStatements(1);
  std::thread waiter([this] {
    auto stub = v1::SessionBroker::NewStub(broker_->NewChannel());
    EXPECT_TRUE(ExecuteAs("search", "SELECT 1", absl::Seconds(20), stub.get()).ok());
  });
  std::map<std::string, double> m;
  for (int i = 0; i < 100; ++i) {
    m = ScrapeMetrics(broker_->metrics_address());
    if (m["sessionbroker_client_waiters{client=search}"] == 1) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(m["sessionbroker_client_connections_in_use{client=billing}"], 1);
  EXPECT_EQ(m["sessionbroker_client_waiters{client=search}"], 1);
  EXPECT_EQ(m["sessionbroker_pool_waiters"], 1);
  holder.join();
  waiter.join();
}

// HTTP/2 lets a caller put any bytes in x-client-id, and the id becomes a
// proto3 string (PoolStatus, Session) and a Prometheus label value, both of
// which must be UTF-8: one caller with a Latin-1 name, or a UTF-8 name cut
// at 64 bytes in the middle of a character, must not make PoolStatus
// unreadable or /metrics unparseable for everyone.
TEST_F(MonitorE2eTest, ClientIdsThatAreNotUtf8KeepPoolStatusAndMetricsReadable) {
  // gRPC's own clients refuse such metadata, so the calls go out with curl
  // (HTTP/2 without TLS), which sends header bytes as they are.
  // curl only talks to the broker under test on loopback (nothing is fetched
  // from anywhere). scripts/install-deps installs it; a missing one is a
  // failure, not a skip.
  ASSERT_EQ(access("/usr/bin/curl", X_OK), 0) << "needs /usr/bin/curl (scripts/install-deps)";
  Start(kQuietHealth);
  const std::string latin1 = "caf\xe9";                             // "café" in Latin-1
  const std::string cut = std::string(63, 'a') + "\xc3\xa9" + "z";  // é at bytes 63..64
  const std::string dir = absl::StrCat(TempDir(), "/sb-client-id-", getpid());
  ASSERT_EQ(RunCommand(absl::StrCat("mkdir -p '", dir, "'")), 0);
  {
    std::ofstream body(dir + "/request", std::ios::binary);
    body.write("\0\0\0\0\0", 5);  // a gRPC frame holding an empty BeginSessionRequest
  }
  for (const std::string& id : {latin1, cut}) {
    {
      std::ofstream headers(dir + "/headers", std::ios::binary | std::ios::trunc);
      headers << "x-client-id: " << id << "\ncontent-type: application/grpc\nte: trailers\n";
    }
    std::string out;
    RunCommand(
        absl::StrCat("/usr/bin/curl -sS --http2-prior-knowledge -H @'", dir,
                     "/headers' --data-binary @'", dir, "/request' -o /dev/null -D - http://",
                     broker_->address(), "/sessionbroker.v1.SessionBroker/BeginSession 2>&1"),
        &out);
    EXPECT_THAT(out, HasSubstr("grpc-status: 0")) << out;
  }
  RunCommand(absl::StrCat("rm -rf '", dir, "'"));

  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::PoolStatus status;
  const grpc::Status got = monitor_->GetPoolStatus(&context, v1::GetPoolStatusRequest(), &status);
  ASSERT_TRUE(got.ok()) << got.error_code() << ": " << got.error_message();
  std::vector<std::string> ids;
  for (const v1::ClientOccupancy& c : status.clients()) ids.push_back(c.client_id());
  EXPECT_THAT(ids, ::testing::UnorderedElementsAre("caf\xef\xbf\xbd", std::string(63, 'a')));

  std::map<std::string, double> m = ScrapeMetrics(broker_->metrics_address());
  EXPECT_EQ(m["sessionbroker_client_sessions_open{client=caf\xef\xbf\xbd}"], 1);
  EXPECT_EQ(
      m[absl::StrCat("sessionbroker_client_sessions_open{client=", std::string(63, 'a'), "}")], 1);
}

TEST_F(MonitorE2eTest, ProbesAnswerAndTurnNotReadyAsSoonAsTheDrainStarts) {
  Start();
  std::string body;
  EXPECT_EQ(HttpGet("/livez", &body), 200);
  EXPECT_EQ(body, "ok\n");
  EXPECT_EQ(HttpGet("/readyz", &body), 200);
  EXPECT_EQ(HttpGet("/nothing-here"), 404);

  HealthWatch health(broker_->NewChannel(), kService);
  ASSERT_EQ(*health.Next(absl::Seconds(5)), ServingStatus::kServing);
  // A call in flight keeps the drain going for a second.
  std::thread call([this] { EXPECT_TRUE(ExecuteAs("x", "SELECT pg_sleep(1.5)").ok()); });
  WaitForActiveStatements(1);
  kill(broker_->pid(), SIGTERM);
  // NOT_SERVING first: Check and Watch say so while the call still runs.
  absl::StatusOr<ServingStatus> watched = health.Next(absl::Seconds(5));
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(*watched, ServingStatus::kNotServing);
  EXPECT_EQ(*HealthCheck(broker_->NewChannel(), kService, absl::Seconds(2)),
            ServingStatus::kNotServing);
  bool not_ready = false;
  for (int i = 0; i < 50 && !not_ready; ++i) {
    not_ready = HttpGet("/readyz", &body) == 503;
    if (!not_ready) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(not_ready) << "/readyz stayed 200 during the drain";
  EXPECT_THAT(body, HasSubstr("draining"));
  EXPECT_EQ(HttpGet("/livez"), 200) << "alive while draining";
  call.join();
  const std::optional<int> code = broker_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker_->Log();
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(HttpGet("/livez"), -1) << "the HTTP endpoint closed with the broker";
}

TEST_F(MonitorE2eTest, MetricsPortInUseFailsTheStartWithExitOne) {
  // Something else listens on the port.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string taken = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));

  BrokerProcess broker(broker_url_, {{"BROKER_METRICS_ADDR", taken}});
  const std::optional<int> code = broker.WaitForExit(absl::Seconds(15));
  ::close(fd);
  ASSERT_TRUE(code.has_value()) << broker.Log();
  EXPECT_EQ(*code, 1);
  EXPECT_THAT(broker.Log(), HasSubstr("BROKER_METRICS_ADDR"));
  EXPECT_THAT(broker.Log(), HasSubstr(taken));
}

TEST_F(MonitorE2eTest, MetricsOffServesNoHttpButTheBrokerRuns) {
  Start({{"BROKER_METRICS_ADDR", "off"}});
  EXPECT_EQ(HttpGet("/livez"), -1);
  EXPECT_TRUE(Status().database().reachable());
}

// The port of "HOST:PORT" (0 if there is none).
int PortOf(const std::string& address) {
  int port = 0;
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) return 0;
  return port;
}

// Port 0 is how tests (and scripts) get listeners no one else can hold: the
// kernel chooses, and the broker tells where in its port file and its log.
TEST_F(MonitorE2eTest, PortZeroListenersAreReportedInThePortFileAndTheLogUntilShutdown) {
  Start({{"BROKER_LISTEN_ADDR", "127.0.0.1:0"}, {"BROKER_METRICS_ADDR", "127.0.0.1:0"}});
  const std::string port_file = broker_->port_file();
  const std::map<std::string, std::string> ports = ReadPortFile(port_file);
  ASSERT_EQ(ports.size(), 2u) << "grpc and metrics, nothing else";
  ASSERT_EQ(ports.count("grpc"), 1u);
  ASSERT_EQ(ports.count("metrics"), 1u);
  const int grpc_port = PortOf(ports.at("grpc"));
  const int metrics_port = PortOf(ports.at("metrics"));
  EXPECT_EQ(ports.at("grpc"), absl::StrCat("127.0.0.1:", grpc_port));
  EXPECT_EQ(ports.at("metrics"), absl::StrCat("127.0.0.1:", metrics_port));
  EXPECT_GT(grpc_port, 0);
  EXPECT_GT(metrics_port, 0);
  EXPECT_NE(grpc_port, metrics_port);

  // Both addresses serve.
  EXPECT_EQ(*HealthCheck(grpc::CreateChannel(ports.at("grpc"), grpc::InsecureChannelCredentials()),
                         "", absl::Seconds(5)),
            ServingStatus::kServing);
  httplib::Client http(absl::StrCat("http://", ports.at("metrics")));
  http.set_connection_timeout(5, 0);
  httplib::Result livez = http.Get("/livez");
  ASSERT_TRUE(livez) << "no answer from " << ports.at("metrics");
  EXPECT_EQ(livez->status, 200);

  // The startup line names the same ports.
  EXPECT_THAT(broker_->Log(),
              HasSubstr(absl::StrCat("listening on 127.0.0.1:0 (port ", grpc_port,
                                     "), metrics on 127.0.0.1:0 (port ", metrics_port, ")")));

  // A clean shutdown takes the file away, and the temporary file it was
  // written through is gone too: only the broker's log is left beside it.
  const std::optional<int> code = broker_->SignalAndWait(SIGTERM, absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker_->Log();
  EXPECT_EQ(*code, 0);
  EXPECT_FALSE(std::filesystem::exists(port_file));
  std::vector<std::string> left;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(port_file).parent_path())) {
    left.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(left, ::testing::ElementsAre("log"));
}

TEST_F(MonitorE2eTest, PortFileHasNoMetricsLineWhenMetricsAreOff) {
  Start({{"BROKER_METRICS_ADDR", "off"}});
  const std::map<std::string, std::string> ports = ReadPortFile(broker_->port_file());
  ASSERT_EQ(ports.size(), 1u);
  EXPECT_EQ(ports.at("grpc"), broker_->address());
  EXPECT_GT(PortOf(ports.at("grpc")), 0);
  EXPECT_THAT(broker_->Log(), HasSubstr("metrics off"));
}

TEST_F(MonitorE2eTest, UnwritablePortFileFailsTheStartWithExitOne) {
  const std::string port_file = absl::StrCat(TempDir(), "/sb-no-such-dir-", getpid(), "/ports");
  BrokerProcess broker(broker_url_, {{"BROKER_PORT_FILE", port_file}});
  const std::optional<int> code = broker.WaitForExit(absl::Seconds(15));
  ASSERT_TRUE(code.has_value()) << broker.Log();
  EXPECT_EQ(*code, 1);
  EXPECT_THAT(broker.Log(), HasSubstr("BROKER_PORT_FILE"));
  EXPECT_THAT(broker.Log(), HasSubstr(port_file));
  EXPECT_FALSE(std::filesystem::exists(port_file));
}

// The database goes away and comes back: health flips both ways (Check and
// Watch), WatchPoolStatus keeps streaming through it and reports the outage,
// calls fail fast with UNAVAILABLE, the pool reconnects by itself.
TEST_F(MonitorE2eTest, HealthAndWatchersFollowADatabaseOutageAndRecovery) {
  PrivateCluster cluster;
  ASSERT_TRUE(cluster.Start());
  broker_ = std::make_unique<BrokerProcess>(
      cluster.url(), std::map<std::string, std::string>{{"DB_POOL_SIZE", "2"}});
  ASSERT_TRUE(broker_->WaitUntilServing()) << broker_->Log();
  monitor_ = v1::PoolMonitor::NewStub(broker_->channel());
  auto stub = v1::SessionBroker::NewStub(broker_->channel());
  ASSERT_TRUE(ExecuteAs("outage", "SELECT 1", absl::Seconds(10), stub.get()).ok());
  Watcher watcher(monitor_.get(), absl::Milliseconds(200));
  HealthWatch health(broker_->channel(), kService);
  ASSERT_EQ(*health.Next(absl::Seconds(5)), ServingStatus::kServing);

  ASSERT_TRUE(watcher.WaitForCount(1, absl::Seconds(5)));
  ASSERT_TRUE(watcher.received().back().database().reachable());
  const size_t before_outage = watcher.count();
  ASSERT_TRUE(cluster.Stop());
  const absl::Time stopped = absl::Now();
  EXPECT_TRUE(
      WaitForHealth(broker_->channel(), kService, ServingStatus::kNotServing, absl::Seconds(10)))
      << broker_->Log();
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(10));
  absl::StatusOr<ServingStatus> watched = health.Next(absl::Seconds(10));
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(*watched, ServingStatus::kNotServing);
  EXPECT_TRUE(watcher.WaitFor(
      [](const v1::PoolStatus& s) {
        return !s.database().reachable() && !s.database().last_error().empty() &&
               s.database().has_last_error_time();
      },
      absl::Seconds(10), before_outage))
      << "the stream never reported the outage";
  EXPECT_EQ(HttpGet("/readyz"), 503);
  EXPECT_EQ(HttpGet("/livez"), 200);
  EXPECT_EQ(*HealthCheck(broker_->channel(), ""), ServingStatus::kServing)
      << "liveness does not follow the database";

  // Calls fail fast and say why, instead of each dialing the dead database.
  const absl::Time call_start = absl::Now();
  const grpc::Status down = ExecuteAs("outage", "SELECT 1", absl::Seconds(10), stub.get());
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE) << down.error_message();
  EXPECT_LT(absl::Now() - call_start, absl::Seconds(5));
  const size_t during_outage = watcher.count();
  // The pool itself tries the database again (with backoff) and logs the
  // failure; wait for that before the database comes back, or a fast restart
  // would leave nothing to report.
  EXPECT_TRUE(
      watcher.WaitFor([](const v1::PoolStatus& s) { return s.counters().connect_failures() >= 1; },
                      absl::Seconds(20), during_outage))
      << "the pool never tried to reconnect during the outage\n"
      << broker_->Log();

  ASSERT_TRUE(cluster.Start());
  EXPECT_TRUE(
      WaitForHealth(broker_->channel(), kService, ServingStatus::kServing, absl::Seconds(20)))
      << broker_->Log();
  watched = health.Next(absl::Seconds(10));
  ASSERT_TRUE(watched.ok()) << watched.status();
  EXPECT_EQ(*watched, ServingStatus::kServing);
  EXPECT_TRUE(watcher.WaitFor(
      [](const v1::PoolStatus& s) {
        return s.database().reachable() && !s.database().connect_backoff();
      },
      absl::Seconds(10), during_outage))
      << "the stream kept going and reported the recovery";
  EXPECT_TRUE(ExecuteAs("outage", "SELECT 1", absl::Seconds(10), stub.get()).ok());
  EXPECT_EQ(HttpGet("/readyz"), 200);

  const v1::PoolStatus after = Status();
  EXPECT_GE(after.counters().invalidated() + after.counters().connect_failures(), 1);
  EXPECT_THAT(after.database().last_error(), ::testing::Not(::testing::IsEmpty()))
      << "kept after recovery";
  // Pool events were logged as key=value lines.
  const std::string log = broker_->Log();
  EXPECT_THAT(log, HasSubstr("pool: event=connect pid="));
  EXPECT_THAT(log, HasSubstr("event=database_unreachable"));
  EXPECT_THAT(log, HasSubstr("event=database_reachable"));
  EXPECT_FALSE(watcher.WaitForEnd(absl::ZeroDuration()).has_value()) << "still streaming";
  broker_.reset();  // before the cluster goes away
}

TEST_F(MonitorE2eTest, TwoHundredWatchersAllGetSnapshotsAndEndCleanlyOnSigterm) {
  Start();
  constexpr int kWatchers = 200;
  std::vector<std::unique_ptr<v1::PoolMonitor::Stub>> stubs;
  for (int i = 0; i < 4; ++i) stubs.push_back(v1::PoolMonitor::NewStub(broker_->NewChannel()));
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    watchers.push_back(
        std::make_unique<Watcher>(stubs[i % stubs.size()].get(), absl::Milliseconds(200)));
  }
  for (auto& w : watchers) {
    EXPECT_TRUE(w->WaitFor([](const v1::PoolStatus& s) { return s.broker().watchers() > 0; },
                           absl::Seconds(20)));
  }
  EXPECT_EQ(Status().broker().watchers(), kWatchers);
  // Each keeps getting them.
  for (auto& w : watchers) EXPECT_TRUE(w->WaitForCount(3, absl::Seconds(10)));

  kill(broker_->pid(), SIGTERM);
  int ok = 0;
  for (auto& w : watchers) {
    const std::optional<grpc::Status> end = w->WaitForEnd(absl::Seconds(20));
    ASSERT_TRUE(end.has_value()) << "a stream did not end";
    EXPECT_TRUE(end->ok()) << end->error_code() << " " << end->error_message();
    ok += end->ok() ? 1 : 0;
  }
  EXPECT_EQ(ok, kWatchers);
  const std::optional<int> code = broker_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(code.has_value()) << broker_->Log();
  EXPECT_EQ(*code, 0) << broker_->Log();
}

}  // namespace
}  // namespace sessionbroker::testing
