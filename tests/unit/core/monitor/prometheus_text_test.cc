// Specification of the Prometheus text rendering of a PoolSnapshot. (The e2e
// tests also parse the real /metrics with prometheus_client's parser.)
#include "server/core/monitor/prometheus_text.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

PoolSnapshot Example() {
  PoolSnapshot s;
  s.version = "9.8.7";
  s.started = absl::FromUnixSeconds(1'700'000'000);
  s.uptime = absl::Milliseconds(1500);
  s.config.pool_size = 3;
  s.config.max_overflow = 2;
  s.config.recycle = absl::InfiniteDuration();
  s.pool.open = 4;
  s.pool.idle = 1;
  s.pool.in_use = 2;
  s.pool.opening = 1;
  s.pool.checkouts = 17;
  s.pool.checkout_timeouts = 2;
  s.pool.waiters = 5;
  s.pool.oldest_wait = absl::Milliseconds(250);
  s.checkout_wait_totals.bounds_seconds = {0.01, 0.1};
  s.checkout_wait_totals.cumulative = {10, 15, 17};
  s.checkout_wait_totals.count = 17;
  s.checkout_wait_totals.sum_seconds = 0.75;
  s.sessions.tx_killed_idle = 3;
  s.sessions.expired = 4;
  ClientQuota quota;
  quota.weight = 3;
  quota.max_connections = 4;
  s.top_clients.push_back({"billing \"eu\"\\1", 2, 1, 6, quota, 9});
  s.config.fair_queuing = true;
  s.clients_total = 1;
  s.database_reachable = true;
  return s;
}

TEST(PrometheusTextTest, GaugesCarryHelpTypeAndLabels) {
  const std::string text = RenderPrometheus(Example());
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pool_connections gauge\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_connections{state=\"idle\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_connections{state=\"in_use\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_connections{state=\"opening\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_waiters 5\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_oldest_wait_seconds 0.250000\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_build_info{version=\"9.8.7\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_uptime_seconds 1.500000\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_start_time_seconds 1700000000\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_recycle_seconds -1\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_database_reachable 1\n"));
}

TEST(PrometheusTextTest, TheEffectiveLimitAndTheBudgetAreGauges) {
  PoolSnapshot s = Example();
  s.pool.connection_limit = 3;
  s.pool.limit_refusals = 7;
  s.config.expected_replicas = 2;
  std::string text = RenderPrometheus(s);
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pool_connection_limit gauge\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_connection_limit 3\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_limit_refusals_total 7\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_expected_replicas 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("sessionbroker_database_max_connections"))) << "not read yet";

  s.pool.server = {60, 3, 2};
  text = RenderPrometheus(s);
  EXPECT_THAT(text, HasSubstr("sessionbroker_database_max_connections 60\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_database_reserved_connections 5\n"));
}

TEST(PrometheusTextTest, CountersEndInTotal) {
  const std::string text = RenderPrometheus(Example());
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pool_checkouts_total counter\n"
                              "sessionbroker_pool_checkouts_total 17\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pool_checkout_timeouts_total 2\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_transactions_killed_total{reason=\"idle\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_sessions_ended_total{reason=\"expired\"} 4\n"));
}

TEST(PrometheusTextTest, PipelineStreamsAreShownWithTheEngineOffToo) {
  PoolSnapshot s = Example();
  s.pipeline.reset();
  s.pipeline_streams = {/*open=*/2, /*opened=*/7, /*calls=*/130};
  const std::string text = RenderPrometheus(s);
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pipeline_streams_open gauge\n"
                              "sessionbroker_pipeline_streams_open 2\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pipeline_streams_total counter\n"
                              "sessionbroker_pipeline_streams_total 7\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pipeline_stream_calls_total counter\n"
                              "sessionbroker_pipeline_stream_calls_total 130\n"));
  // The engine's own numbers are not shown when it is off.
  EXPECT_THAT(text, Not(HasSubstr("sessionbroker_pipeline_loops")));
}

TEST(PrometheusTextTest, CatalogProofsAreShownWithTheEngineOffToo) {
  // Without the engine the proofs spare pooled connections their reset.
  PoolSnapshot s = Example();
  s.pipeline.reset();
  s.statements.catalog_proved = 40;
  s.statements.catalog_lookups = 3;
  const std::string text = RenderPrometheus(s);
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pipeline_catalog_proved_total counter\n"
                              "sessionbroker_pipeline_catalog_proved_total 40\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pipeline_catalog_lookups_total 3\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_pipeline_catalog_lookup_failures_total 0\n"));
}

TEST(PrometheusTextTest, HistogramsHaveCumulativeBucketsSumAndCount) {
  const std::string text = RenderPrometheus(Example());
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_pool_checkout_wait_seconds histogram\n"
                              "sessionbroker_pool_checkout_wait_seconds_bucket{le=\"0.01\"} 10\n"
                              "sessionbroker_pool_checkout_wait_seconds_bucket{le=\"0.1\"} 15\n"
                              "sessionbroker_pool_checkout_wait_seconds_bucket{le=\"+Inf\"} 17\n"
                              "sessionbroker_pool_checkout_wait_seconds_sum 0.750000\n"
                              "sessionbroker_pool_checkout_wait_seconds_count 17\n"));
}

TEST(PrometheusTextTest, ClientLabelValuesAreEscaped) {
  const std::string text = RenderPrometheus(Example());
  EXPECT_THAT(
      text,
      HasSubstr("sessionbroker_client_connections_in_use{client=\"billing \\\"eu\\\"\\\\1\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("sessionbroker_client_waiters{client=\"billing \\\"eu\\\"\\\\1\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr("sessionbroker_client_sessions_open{client=\"billing \\\"eu\\\"\\\\1\"} 6\n"));
  EXPECT_EQ(EscapeLabelValue("a\nb"), "a\\nb");
}

TEST(PrometheusTextTest, FairSharesArePerClientQuotasAndRejections) {
  const std::string text = RenderPrometheus(Example());
  const std::string client = "client=\"billing \\\"eu\\\"\\\\1\"";
  EXPECT_THAT(text, HasSubstr("# TYPE sessionbroker_client_quota_rejections_total counter\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_client_quota_rejections_total{" + client + "} 9\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_client_quota{" + client + ",quota=\"weight\"} 3\n"));
  EXPECT_THAT(
      text, HasSubstr("sessionbroker_client_quota{" + client + ",quota=\"max_connections\"} 4\n"));
  EXPECT_THAT(text,
              HasSubstr("sessionbroker_client_quota{" + client + ",quota=\"max_waiters\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("sessionbroker_fair_queuing 1\n"));
}

TEST(PrometheusTextTest, EveryLineIsACommentOrASample) {
  const std::string text = RenderPrometheus(Example());
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_THAT(text, Not(HasSubstr("\n\n")));
  EXPECT_THAT(text, Not(HasSubstr("nan")));
}

}  // namespace
}  // namespace sessionbroker::core
