// Specifications of what `watch` and `status` show of a PoolStatus.
#include "client/cpp/brokerctl/watch_view.h"

#include "client/cpp/brokerctl/format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace brokerctl {
namespace {

using sessionbroker::v1::PoolStatus;
using testing::HasSubstr;
using testing::Not;

PoolStatus Snapshot(int64_t second, int in_use, int64_t statements) {
  PoolStatus s;
  s.mutable_time()->set_seconds(1'796'000'000 + second);
  s.mutable_broker()->set_version("0.1.0");
  s.mutable_config()->set_pool_size(5);
  s.mutable_config()->set_max_overflow(10);
  s.mutable_config()->set_max_connections(15);
  s.mutable_connections()->set_in_use(in_use);
  s.mutable_connections()->set_idle(2);
  s.mutable_connections()->set_open(in_use + 2);
  s.mutable_waiters()->set_count(1);
  s.mutable_waiters()->mutable_oldest_wait()->set_nanos(250'000'000);
  s.mutable_counters()->set_statements(statements);
  s.mutable_checkout_wait()->set_count(10);
  s.mutable_checkout_wait()->mutable_p99()->set_nanos(2'000'000);
  s.mutable_checkout_wait()->mutable_window()->set_seconds(60);
  s.mutable_database()->set_reachable(true);
  s.set_clients_total(2);
  auto* c = s.add_clients();
  c->set_client_id("billing");
  c->set_in_use(in_use);
  c->set_sessions(3);
  s.add_clients()->set_client_id("");
  return s;
}

TEST(PoolHistory, KeepsOneMinuteAndDerivesStatementRate) {
  PoolHistory h;
  for (int i = 0; i <= 90; ++i) h.Add(Snapshot(i, i % 5, i * 10));
  ASSERT_EQ(h.samples().size(), 61u);  // seconds 30..90
  EXPECT_DOUBLE_EQ(h.samples().back().statements_per_second, 10.0);
  EXPECT_DOUBLE_EQ(h.samples().back().wait_p99_ms, 2.0);
}

TEST(Sparkline, ScalesToTheLargestValueShown) {
  EXPECT_EQ(Sparkline({0, 1, 2, 4}, 10), "▁▃▅█");
  EXPECT_EQ(Sparkline({0, 0}, 10), "▁▁");
  EXPECT_EQ(Sparkline({9, 0, 1}, 2), "▁█");  // only the newest 2
  EXPECT_EQ(Sparkline({}, 5), "");
  EXPECT_EQ(Sparkline({0, 1, 2, 4}, 10, /*unicode=*/false), "_:=#");
}

TEST(HumanDuration, PicksAReadableUnit) {
  EXPECT_EQ(HumanDuration(absl::ZeroDuration()), "0s");
  EXPECT_EQ(HumanDuration(absl::Microseconds(850)), "850us");
  EXPECT_EQ(HumanDuration(absl::Microseconds(1200)), "1.2ms");
  EXPECT_EQ(HumanDuration(absl::Seconds(125)), "2m05s");
  EXPECT_EQ(HumanDuration(absl::Minutes(62)), "1h02m");
}

TEST(RenderWatchScreen, ShowsConnectionsWaitersPercentilesSparklinesAndClients) {
  PoolHistory h;
  for (int i = 0; i < 5; ++i) h.Add(Snapshot(i, i, i * 4));
  const PoolStatus s = Snapshot(4, 4, 16);
  std::vector<ScreenLine> lines = RenderWatchScreen(s, h, "127.0.0.1:50051", 120, 40);
  std::string all;
  for (const auto& l : lines) all += l.text + "\n";
  EXPECT_THAT(all, HasSubstr("in use 4"));
  EXPECT_THAT(all, HasSubstr("open 6 of 15"));
  EXPECT_THAT(all, HasSubstr("effective limit 15 (pool 5 + overflow 10)"));
  EXPECT_THAT(all, HasSubstr("waiters 1  oldest wait 250.0ms"));
  EXPECT_THAT(all, HasSubstr("p99 2.0ms"));
  EXPECT_THAT(all, HasSubstr("▁▃▅▆█"));  // in use 0..4
  EXPECT_THAT(all, HasSubstr("billing"));
  EXPECT_THAT(all, HasSubstr("(no client id)"));
  EXPECT_TRUE(lines[0].bold);
}

TEST(RenderWatchScreen, FitsTheTerminal) {
  PoolHistory h;
  h.Add(Snapshot(0, 1, 0));
  for (auto [w, ht] : {std::pair{40, 10}, {200, 60}, {20, 3}}) {
    std::vector<ScreenLine> lines = RenderWatchScreen(Snapshot(0, 1, 0), h, "t", w, ht);
    EXPECT_LE(static_cast<int>(lines.size()), ht);
    for (const auto& l : lines) EXPECT_LE(DisplayWidth(l.text), w) << l.text;
  }
}

TEST(RenderWatchScreen, SaysHowManyClientsDoNotFit) {
  PoolStatus s = Snapshot(0, 1, 0);
  for (int i = 0; i < 18; ++i) s.add_clients()->set_client_id("c" + std::to_string(i));
  PoolHistory h;
  h.Add(s);
  std::vector<ScreenLine> lines = RenderWatchScreen(s, h, "t", 100, 26);
  EXPECT_EQ(lines.size(), 26u);
  EXPECT_THAT(lines.back().text, HasSubstr("more (make the window taller)"));
}

TEST(PlainWatchLine, IsOneGreppableLine) {
  const std::string line = PlainWatchLine(Snapshot(0, 3, 0));
  EXPECT_THAT(line, HasSubstr("open=5/15 in_use=3 idle=2"));
  EXPECT_THAT(line, HasSubstr("waiters=1 oldest_wait=250.0ms"));
  EXPECT_THAT(line, HasSubstr("db=up"));
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(RenderWatchScreen, ShowsTheLimitTheDatabaseHoldsThePoolAtAndTheNextProbe) {
  PoolHistory h;
  PoolStatus s = Snapshot(0, 4, 16);
  auto* limit = s.mutable_connection_limit();
  limit->set_effective(6);
  limit->set_limited(true);
  limit->set_refusals(3);
  limit->mutable_next_probe()->set_seconds(s.time().seconds() + 2);
  h.Add(s);
  std::string all;
  for (const auto& l : RenderWatchScreen(s, h, "127.0.0.1:50051", 120, 40)) all += l.text + "\n";
  EXPECT_THAT(all, HasSubstr("effective limit 6 (pool 5 + overflow 10)\n"));
  EXPECT_THAT(all, HasSubstr("LIMITED by the database (53300), 3 refusals, next probe in 2.0s"));
  EXPECT_THAT(FormatStatus(s), HasSubstr("limit       effective limit 6 (pool 5 + overflow 10); "
                                         "LIMITED by the database (53300), 3 refusals"));
  EXPECT_THAT(PlainWatchLine(s), HasSubstr("open=6/6"));
}

TEST(FormatStatus, ShowsTheConnectionBudgetWhenTheBrokerReadIt) {
  PoolStatus s = Snapshot(0, 3, 7);
  EXPECT_THAT(FormatStatus(s), Not(HasSubstr("budget")));
  auto* limit = s.mutable_connection_limit();
  limit->set_effective(15);
  limit->set_server_max_connections(60);
  limit->set_server_superuser_reserved_connections(3);
  limit->set_expected_replicas(4);
  limit->set_budget_exceeded(true);
  const std::string text = FormatStatus(s);
  EXPECT_THAT(text, HasSubstr("limit       effective limit 15 (pool 5 + overflow 10)\n"));
  EXPECT_THAT(text, HasSubstr("budget      15 x 4 replicas against the server's max_connections 60 "
                              "- reserved 3: EXCEEDED"));
}

TEST(FormatStatus, CoversEverySection) {
  const std::string text = FormatStatus(Snapshot(0, 3, 7));
  for (const char* section : {"broker ", "database ", "pool ", "connections ", "waiters ",
                              "checkout ", "statements ", "sessions ", "counters ", "clients "}) {
    EXPECT_THAT(text, HasSubstr(section));
  }
  EXPECT_THAT(text, HasSubstr("billing"));
}

PoolStatus WithPipeline(PoolStatus s) {
  auto* pl = s.mutable_pipeline();
  pl->set_enabled(true);
  pl->set_loops(2);
  pl->set_connections(3);
  pl->set_connections_up(3);
  pl->set_max_depth(16);
  pl->set_queued(5);
  pl->set_in_flight(9);
  pl->set_calls(1200);
  pl->set_errors(4);
  pl->set_statements(1203);
  pl->set_retries(3);
  pl->set_cancels_sent(2);
  pl->set_connection_failures(1);
  pl->set_recent_statements_per_flush(4.25);
  return s;
}

TEST(RenderWatchScreen, ShowsThePipelinedEngineWhenItIsOn) {
  PoolHistory h;
  h.Add(Snapshot(0, 1, 1));
  std::string all;
  for (const auto& l : RenderWatchScreen(WithPipeline(Snapshot(0, 1, 1)), h, "t", 160, 40)) {
    all += l.text + "\n";
  }
  EXPECT_THAT(all, HasSubstr("Pipeline        3/3 connections up on 2 loops  queued 5  in flight 9 "
                             "(depth 16)  4.2 stmts/flush  calls 1200  errors 4"));
  all.clear();
  for (const auto& l : RenderWatchScreen(Snapshot(0, 1, 1), h, "t", 160, 40)) all += l.text;
  EXPECT_THAT(all, Not(HasSubstr("Pipeline")));
}

TEST(FormatStatus, CountsThePipelinedConnectionsInTheLimitAndTheBudget) {
  // DB_POOL_SIZE 5 with 2 hot connections: the pool keeps 3.
  PoolStatus s = Snapshot(0, 3, 7);
  s.mutable_config()->set_pool_size(3);
  s.mutable_config()->set_max_connections(13);
  s.mutable_pipeline()->set_enabled(true);
  s.mutable_pipeline()->set_connections(2);
  auto* limit = s.mutable_connection_limit();
  limit->set_effective(13);
  limit->set_server_max_connections(60);
  limit->set_server_superuser_reserved_connections(3);
  limit->set_expected_replicas(4);
  const std::string text = FormatStatus(s);
  EXPECT_THAT(text, HasSubstr("pool        size 3 (+ 2 pipelined), overflow 10, limit 13,"));
  EXPECT_THAT(text,
              HasSubstr("limit       effective limit 13 (pool 3 + overflow 10, + 2 pipelined)\n"));
  EXPECT_THAT(text, HasSubstr("budget      15 x 4 replicas against the server's max_connections 60 "
                              "- reserved 3\n"));
}

TEST(FormatStatus, ShowsThePipelinedEngineOrSaysItIsOff) {
  const std::string on = FormatStatus(WithPipeline(Snapshot(0, 3, 7)));
  EXPECT_THAT(on, HasSubstr("pipeline    3 of 3 connections up on 2 loops, depth 16; queued 5, "
                            "in flight 9; 4.2 statements per flush (recent)"));
  EXPECT_THAT(on, HasSubstr("calls 1200 (errors 4), statements 1203, retries 3, cancels 2, "
                            "connection failures 1, recycled 0"));
  EXPECT_THAT(
      FormatStatus(Snapshot(0, 3, 7)),
      HasSubstr(
          "pipeline    off (BROKER_PIPELINE_CONNECTIONS=0, or auto with DB_POOL_SIZE under 4)"));
  // A broker with the engine off still sends `pipeline` (its stream counters).
  PoolStatus off = Snapshot(0, 3, 7);
  off.mutable_pipeline()->set_stream_calls(5);
  EXPECT_THAT(
      FormatStatus(off),
      HasSubstr(
          "pipeline    off (BROKER_PIPELINE_CONNECTIONS=0, or auto with DB_POOL_SIZE under 4)"));
}

TEST(StatusJson, UsesProtoFieldNames) {
  const std::string json = StatusJson(Snapshot(0, 3, 7));
  EXPECT_THAT(json, HasSubstr("\"in_use\":3"));
  EXPECT_THAT(json, HasSubstr("\"max_connections\":15"));
}

}  // namespace
}  // namespace brokerctl
