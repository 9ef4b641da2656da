// Specification of PoolSnapshotToProto: every number of a snapshot lands in
// its PoolStatus field; times that are not instants (never, or not while the
// database is up) and an infinite recycle age are left unset, not sent as
// sentinels.
#include "server/transport/pool_status_conversion.h"

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::transport {
namespace {

const absl::Time kT = absl::FromUnixSeconds(1'700'000'000) + absl::Milliseconds(250);

core::RecentDurations Recent(int base_ms) {
  core::RecentDurations r;
  r.window = absl::Seconds(60);
  r.count = base_ms * 10;
  r.p50 = absl::Milliseconds(base_ms);
  r.p90 = absl::Milliseconds(base_ms * 2);
  r.p99 = absl::Milliseconds(base_ms * 3);
  r.max = absl::Seconds(1) + absl::Milliseconds(base_ms * 4);
  return r;
}

core::PoolSnapshot ASnapshot() {
  core::PoolSnapshot s;
  s.time = kT;
  s.version = "1.2.3";
  s.started = kT - absl::Hours(1);
  s.uptime = absl::Hours(1);
  s.draining = true;
  s.watchers = 4;
  s.config.pool_size = 5;
  s.config.max_overflow = 10;
  s.config.timeout = absl::Seconds(30);
  s.config.recycle = absl::Seconds(3600);
  s.config.pre_ping = true;
  s.config.max_waiters = 1000;
  s.pool.open = 7;
  s.pool.idle = 2;
  s.pool.in_use = 5;
  s.pool.opening = 1;
  s.pool.overflow_in_use = 2;
  s.pool.waiters = 3;
  s.pool.oldest_wait = absl::Milliseconds(1500);
  s.pool.connects = 11;
  s.pool.connect_failures = 12;
  s.pool.checkouts = 13;
  s.pool.checkout_timeouts = 14;
  s.pool.waiter_rejections = 15;
  s.pool.recycled = 16;
  s.pool.invalidated = 17;
  s.pool.pre_ping_failures = 18;
  s.pool.overflow_closed = 19;
  s.pool.backoff_rejections = 20;
  s.statements.statements = 21;
  s.statements.statement_errors = 22;
  s.statements.cancellations = 23;
  s.statements.session_resets = 24;
  s.checkout_wait = Recent(1);
  s.statement_duration = Recent(5);
  s.sessions.open = 31;
  s.sessions.in_transaction = 32;
  s.sessions.held_by_stream = 33;
  s.sessions.queued_calls = 34;
  s.sessions.begun = 35;
  s.sessions.rejected = 36;
  s.sessions.ended_by_client = 37;
  s.sessions.expired = 38;
  s.sessions.orphaned = 39;
  s.sessions.lifetime_exceeded = 40;
  s.sessions.ended_by_shutdown = 41;
  s.sessions.transactions_begun = 42;
  s.sessions.transactions_committed = 43;
  s.sessions.transactions_rolled_back = 44;
  s.sessions.transactions_failed = 45;
  s.sessions.tx_killed_idle = 46;
  s.sessions.tx_killed_max_duration = 47;
  s.sessions.tx_killed_session_end = 48;
  core::ClientQuota billing_quota;
  billing_quota.weight = 2;
  billing_quota.max_connections = 4;
  billing_quota.max_waiters = 8;
  billing_quota.max_sessions = 50;
  billing_quota.reserved_connections = 1;
  billing_quota.statement_timeout_max = absl::Seconds(30);
  s.top_clients = {{"billing", 3, 1, 7, billing_quota, 5},
                   {"reports", 1, 0, 2, core::ClientQuota{}, 0}};
  s.clients_total = 9;
  s.database_reachable = false;
  s.last_error = "connection refused";
  s.last_error_time = kT - absl::Seconds(5);
  s.pool.database_down = true;
  s.pool.connect_failures_in_row = 6;
  s.pool.next_connect_attempt = kT + absl::Seconds(2);
  return s;
}

TEST(PoolStatusConversionTest, TheBrokerAndThePoolConfiguration) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  EXPECT_EQ(out.time().seconds(), 1'700'000'000);
  EXPECT_EQ(out.time().nanos(), 250'000'000);
  EXPECT_EQ(out.broker().version(), "1.2.3");
  EXPECT_EQ(out.broker().start_time().seconds(), 1'700'000'000 - 3600);
  EXPECT_EQ(out.broker().uptime().seconds(), 3600);
  EXPECT_TRUE(out.broker().draining());
  EXPECT_EQ(out.broker().watchers(), 4);
  EXPECT_EQ(out.config().pool_size(), 5);
  EXPECT_EQ(out.config().max_overflow(), 10);
  EXPECT_EQ(out.config().max_connections(), 15);
  EXPECT_EQ(out.config().timeout().seconds(), 30);
  ASSERT_TRUE(out.config().has_recycle());
  EXPECT_EQ(out.config().recycle().seconds(), 3600);
  EXPECT_TRUE(out.config().pre_ping());
  EXPECT_EQ(out.config().max_waiters(), 1000);
}

TEST(PoolStatusConversionTest, TheConnectionsWaitersAndCounters) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  EXPECT_EQ(out.connections().open(), 7);
  EXPECT_EQ(out.connections().idle(), 2);
  EXPECT_EQ(out.connections().in_use(), 5);
  EXPECT_EQ(out.connections().opening(), 1);
  EXPECT_EQ(out.connections().overflow_in_use(), 2);
  EXPECT_EQ(out.waiters().count(), 3);
  EXPECT_EQ(out.waiters().oldest_wait().seconds(), 1);
  EXPECT_EQ(out.waiters().oldest_wait().nanos(), 500'000'000);
  const v1::PoolCounters& c = out.counters();
  EXPECT_EQ(c.connects(), 11);
  EXPECT_EQ(c.connect_failures(), 12);
  EXPECT_EQ(c.checkouts(), 13);
  EXPECT_EQ(c.checkout_timeouts(), 14);
  EXPECT_EQ(c.waiter_rejections(), 15);
  EXPECT_EQ(c.recycled(), 16);
  EXPECT_EQ(c.invalidated(), 17);
  EXPECT_EQ(c.pre_ping_failures(), 18);
  EXPECT_EQ(c.overflow_closed(), 19);
  EXPECT_EQ(c.backoff_rejections(), 20);
  EXPECT_EQ(c.statements(), 21);
  EXPECT_EQ(c.statement_errors(), 22);
  EXPECT_EQ(c.cancellations(), 23);
  EXPECT_EQ(c.session_resets(), 24);
}

TEST(PoolStatusConversionTest, TheRecentDistributions) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  const v1::DurationSummary& w = out.checkout_wait();
  EXPECT_EQ(w.window().seconds(), 60);
  EXPECT_EQ(w.count(), 10);
  EXPECT_EQ(w.p50().nanos(), 1'000'000);
  EXPECT_EQ(w.p90().nanos(), 2'000'000);
  EXPECT_EQ(w.p99().nanos(), 3'000'000);
  EXPECT_EQ(w.max().seconds(), 1);
  EXPECT_EQ(w.max().nanos(), 4'000'000);
  const v1::DurationSummary& d = out.statement_duration();
  EXPECT_EQ(d.count(), 50);
  EXPECT_EQ(d.p50().nanos(), 5'000'000);
  EXPECT_EQ(d.max().nanos(), 20'000'000);
}

TEST(PoolStatusConversionTest, EverySessionNumber) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  const v1::SessionNumbers& s = out.sessions();
  EXPECT_EQ(s.open(), 31);
  EXPECT_EQ(s.in_transaction(), 32);
  EXPECT_EQ(s.held_by_stream(), 33);
  EXPECT_EQ(s.queued_calls(), 34);
  EXPECT_EQ(s.begun(), 35);
  EXPECT_EQ(s.rejected(), 36);
  EXPECT_EQ(s.ended_by_client(), 37);
  EXPECT_EQ(s.expired(), 38);
  EXPECT_EQ(s.orphaned(), 39);
  EXPECT_EQ(s.lifetime_exceeded(), 40);
  EXPECT_EQ(s.ended_by_shutdown(), 41);
  EXPECT_EQ(s.transactions_begun(), 42);
  EXPECT_EQ(s.transactions_committed(), 43);
  EXPECT_EQ(s.transactions_rolled_back(), 44);
  EXPECT_EQ(s.transactions_failed(), 45);
  EXPECT_EQ(s.transactions_killed_idle(), 46);
  EXPECT_EQ(s.transactions_killed_max_duration(), 47);
  EXPECT_EQ(s.transactions_killed_session_end(), 48);
}

TEST(PoolStatusConversionTest, TheTopClientsInOrderAndTheirTotal) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  ASSERT_EQ(out.clients_size(), 2);
  EXPECT_EQ(out.clients(0).client_id(), "billing");
  EXPECT_EQ(out.clients(0).in_use(), 3);
  EXPECT_EQ(out.clients(0).waiting(), 1);
  EXPECT_EQ(out.clients(0).sessions(), 7);
  EXPECT_EQ(out.clients(0).weight(), 2);
  EXPECT_EQ(out.clients(0).max_connections(), 4);
  EXPECT_EQ(out.clients(0).max_waiters(), 8);
  EXPECT_EQ(out.clients(0).max_sessions(), 50);
  EXPECT_EQ(out.clients(0).reserved_connections(), 1);
  EXPECT_EQ(out.clients(0).statement_timeout_max().seconds(), 30);
  EXPECT_EQ(out.clients(0).quota_rejections(), 5);
  EXPECT_FALSE(out.clients(1).has_statement_timeout_max()) << "no ceiling: absent";
  EXPECT_EQ(out.clients(1).weight(), 1);
  EXPECT_EQ(out.clients(1).client_id(), "reports");
  EXPECT_EQ(out.clients_total(), 9);
}

TEST(PoolStatusConversionTest, ADatabaseInBackoffSaysWhenTheNextConnectIs) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  const v1::DatabaseHealth& db = out.database();
  EXPECT_FALSE(db.reachable());
  EXPECT_EQ(db.last_error(), "connection refused");
  EXPECT_EQ(db.last_error_time().seconds(), 1'700'000'000 - 5);
  EXPECT_TRUE(db.connect_backoff());
  EXPECT_EQ(db.connect_failures_in_row(), 6);
  ASSERT_TRUE(db.has_next_connect_attempt());
  EXPECT_EQ(db.next_connect_attempt().seconds(), 1'700'000'002);
}

TEST(PoolStatusConversionTest, TheEffectiveLimitAndTheBudgetAreShown) {
  core::PoolSnapshot s = ASnapshot();
  s.config.expected_replicas = 2;
  s.pool.connection_limit = 6;
  s.pool.limit_refusals = 9;
  s.pool.next_limit_probe = kT + absl::Seconds(2);
  s.pool.last_limit_error = "sorry, too many clients already [SQLSTATE 53300]";
  s.pool.last_limit_error_time = kT - absl::Seconds(1);
  s.pool.server = {6, 3, -1};
  v1::PoolStatus out;
  PoolSnapshotToProto(s, &out);
  const v1::ConnectionLimit& l = out.connection_limit();
  EXPECT_EQ(l.effective(), 6);
  EXPECT_TRUE(l.limited()) << "6 of 15";
  EXPECT_EQ(l.next_probe().seconds(), 1'700'000'002);
  EXPECT_EQ(l.last_refusal(), "sorry, too many clients already [SQLSTATE 53300]");
  EXPECT_EQ(l.last_refusal_time().seconds(), 1'700'000'000 - 1);
  EXPECT_EQ(l.refusals(), 9);
  EXPECT_EQ(l.server_max_connections(), 6);
  EXPECT_EQ(l.server_superuser_reserved_connections(), 3);
  EXPECT_EQ(l.server_reserved_connections(), 0) << "before PostgreSQL 16";
  EXPECT_EQ(l.expected_replicas(), 2);
  EXPECT_TRUE(l.budget_exceeded()) << "15 x 2 > 6 - 3";

  s.pool.connection_limit = 15;
  s.pool.server = {100, 3, -1};
  PoolSnapshotToProto(s, &out);
  EXPECT_FALSE(out.connection_limit().limited());
  EXPECT_FALSE(out.connection_limit().has_next_probe()) << "only while limited";
  EXPECT_FALSE(out.connection_limit().budget_exceeded());
}

TEST(PoolStatusConversionTest, WhatDidNotHappenIsLeftUnset) {
  core::PoolSnapshot s = ASnapshot();
  s.config.recycle = absl::InfiniteDuration();
  s.database_reachable = true;
  s.last_error.clear();
  s.last_error_time = absl::InfinitePast();
  s.pool.database_down = false;
  v1::PoolStatus out;
  PoolSnapshotToProto(s, &out);
  EXPECT_FALSE(out.config().has_recycle()) << "recycling off";
  EXPECT_TRUE(out.database().reachable());
  EXPECT_FALSE(out.database().has_last_error_time()) << "no error yet";
  EXPECT_FALSE(out.database().connect_backoff());
  EXPECT_FALSE(out.database().has_next_connect_attempt()) << "only while the database is down";
}

TEST(PoolStatusConversionTest, ConvertingIntoAUsedMessageLeavesNothingOfTheOldOne) {
  v1::PoolStatus out;
  PoolSnapshotToProto(ASnapshot(), &out);
  core::PoolSnapshot empty;
  empty.time = kT;
  PoolSnapshotToProto(empty, &out);
  EXPECT_EQ(out.clients_size(), 0);
  EXPECT_EQ(out.counters().checkouts(), 0);
  EXPECT_FALSE(out.database().has_next_connect_attempt());
}

TEST(PoolStatusConversionTest, ThePipelinedEnginesNumbersWhenItIsOn) {
  core::PoolSnapshot s = ASnapshot();
  storage::PipelineStats pl;
  pl.loops = 2;
  pl.connections = 3;
  pl.connections_up = 2;
  pl.max_depth = 16;
  pl.queued = 7;
  pl.in_flight = 11;
  pl.calls = 1000;
  pl.errors = 12;
  pl.statements = 1005;
  pl.retries = 5;
  pl.cancels_sent = 4;
  pl.connection_failures = 3;
  pl.recycles = 1;
  pl.recent_statements_per_flush = 6.5;
  s.pipeline = pl;
  s.pipeline_streams = {/*open=*/1, /*opened=*/3, /*calls=*/900};
  v1::PoolStatus out;
  PoolSnapshotToProto(s, &out);
  ASSERT_TRUE(out.has_pipeline());
  const v1::PipelineStatus& p = out.pipeline();
  EXPECT_TRUE(p.enabled());
  EXPECT_EQ(p.loops(), 2);
  EXPECT_EQ(p.connections(), 3);
  EXPECT_EQ(p.connections_up(), 2);
  EXPECT_EQ(p.max_depth(), 16);
  EXPECT_EQ(p.queued(), 7);
  EXPECT_EQ(p.in_flight(), 11);
  EXPECT_EQ(p.calls(), 1000);
  EXPECT_EQ(p.errors(), 12);
  EXPECT_EQ(p.statements(), 1005);
  EXPECT_EQ(p.retries(), 5);
  EXPECT_EQ(p.cancels_sent(), 4);
  EXPECT_EQ(p.connection_failures(), 3);
  EXPECT_EQ(p.recycles(), 1);
  EXPECT_DOUBLE_EQ(p.recent_statements_per_flush(), 6.5);
  EXPECT_EQ(p.streams_open(), 1);
  EXPECT_EQ(p.streams(), 3);
  EXPECT_EQ(p.stream_calls(), 900);
}

TEST(PoolStatusConversionTest, WithTheEngineOffThePipelineIsDisabledAndStillCountsItsStreams) {
  core::PoolSnapshot s = ASnapshot();
  s.pipeline.reset();
  s.pipeline_streams = {/*open=*/2, /*opened=*/5, /*calls=*/40};
  v1::PoolStatus out;
  PoolSnapshotToProto(s, &out);
  ASSERT_TRUE(out.has_pipeline());
  const v1::PipelineStatus& p = out.pipeline();
  EXPECT_FALSE(p.enabled());
  EXPECT_EQ(p.connections(), 0);
  EXPECT_EQ(p.calls(), 0);
  EXPECT_EQ(p.streams_open(), 2);
  EXPECT_EQ(p.streams(), 5);
  EXPECT_EQ(p.stream_calls(), 40);
}

}  // namespace
}  // namespace sessionbroker::transport
