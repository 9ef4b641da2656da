// Specification of the session conversions between the proto and the core:
// times and durations split into seconds and non-negative nanos, durations
// from clients checked and named in the error, isolation levels both ways,
// and a SessionInfo as a Session.
#include "server/transport/session_conversion.h"

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::transport {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

const absl::Time kT = absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(123'456'789);

google::protobuf::Duration ProtoDuration(int64_t seconds, int32_t nanos) {
  google::protobuf::Duration d;
  d.set_seconds(seconds);
  d.set_nanos(nanos);
  return d;
}

TEST(SessionConversionTest, ATimeIsSecondsAndNanos) {
  google::protobuf::Timestamp out;
  TimeToProto(kT, &out);
  EXPECT_EQ(out.seconds(), 1'700'000'000);
  EXPECT_EQ(out.nanos(), 123'456'789);
}

TEST(SessionConversionTest, ATimeBeforeTheEpochKeepsItsNanosNonNegative) {
  google::protobuf::Timestamp out;
  TimeToProto(absl::UnixEpoch() - absl::Milliseconds(250), &out);
  EXPECT_EQ(out.seconds(), -1);
  EXPECT_EQ(out.nanos(), 750'000'000);
}

TEST(SessionConversionTest, ADurationIsSecondsAndNanos) {
  google::protobuf::Duration out;
  DurationToProto(absl::Seconds(90) + absl::Milliseconds(500), &out);
  EXPECT_EQ(out.seconds(), 90);
  EXPECT_EQ(out.nanos(), 500'000'000);
}

TEST(SessionConversionTest, AValidDurationFromAClientRoundTrips) {
  absl::StatusOr<absl::Duration> d = DurationFromProto(ProtoDuration(30, 250'000'000), "ttl");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, absl::Seconds(30) + absl::Milliseconds(250));
  google::protobuf::Duration back;
  DurationToProto(*d, &back);
  EXPECT_EQ(back.seconds(), 30);
  EXPECT_EQ(back.nanos(), 250'000'000);
}

TEST(SessionConversionTest, ANegativeOrMalformedDurationIsRefusedNamingTheField) {
  for (const google::protobuf::Duration& bad :
       {ProtoDuration(-1, 0), ProtoDuration(0, -1), ProtoDuration(1, 1'000'000'000)}) {
    absl::StatusOr<absl::Duration> d = DurationFromProto(bad, "ttl");
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << bad.DebugString();
    EXPECT_EQ(d.status().message(), "ttl must be a non-negative duration (e.g. \"30s\")");
  }
}

TEST(SessionConversionTest, EveryIsolationLevelConvertsBothWays) {
  const struct {
    v1::IsolationLevel proto;
    core::Isolation core;
  } kLevels[] = {
      {v1::ISOLATION_LEVEL_UNSPECIFIED, core::Isolation::kDefault},
      {v1::READ_COMMITTED, core::Isolation::kReadCommitted},
      {v1::REPEATABLE_READ, core::Isolation::kRepeatableRead},
      {v1::SERIALIZABLE, core::Isolation::kSerializable},
  };
  for (const auto& level : kLevels) {
    absl::StatusOr<core::Isolation> in = IsolationFromProto(level.proto, "isolation");
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ(*in, level.core);
    EXPECT_EQ(IsolationToProto(level.core), level.proto);
  }
}

TEST(SessionConversionTest, AnUnknownIsolationLevelIsRefusedNamingTheFieldAndTheChoices) {
  absl::StatusOr<core::Isolation> in = IsolationFromProto(7, "isolation");
  EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(in.status().message(),
            "isolation = 7 is not an isolation level: use READ_COMMITTED, REPEATABLE_READ or "
            "SERIALIZABLE");
}

core::SessionInfo AnInfo() {
  core::SessionInfo info;
  info.name = "s-1";
  info.label = "report";
  info.client_id = "billing";
  info.create_time = kT;
  info.expire_time = kT + absl::Seconds(60);
  info.max_expire_time = kT + absl::Hours(24);
  info.ttl = absl::Seconds(60);
  info.read_only = true;
  info.isolation = core::Isolation::kSerializable;
  info.settings = {{"search_path", "app"}, {"statement_timeout", "5s"}};
  info.held_by_stream = true;
  info.queued_calls = 3;
  return info;
}

TEST(SessionConversionTest, ASessionCarriesEveryField) {
  core::SessionInfo info = AnInfo();
  info.in_transaction = true;
  info.transaction_aborted = true;
  info.abort_reason = "idle for longer than BROKER_TX_IDLE_TIMEOUT";
  info.transaction_start_time = kT + absl::Seconds(1);
  v1::Session out;
  SessionToProto(info, &out);
  EXPECT_EQ(out.name(), "s-1");
  EXPECT_EQ(out.label(), "report");
  EXPECT_EQ(out.client_id(), "billing");
  EXPECT_EQ(out.create_time().seconds(), 1'700'000'000);
  EXPECT_EQ(out.create_time().nanos(), 123'456'789);
  EXPECT_EQ(out.expire_time().seconds(), 1'700'000'060);
  EXPECT_EQ(out.max_expire_time().seconds(), 1'700'086'400);
  EXPECT_EQ(out.ttl().seconds(), 60);
  EXPECT_TRUE(out.read_only());
  EXPECT_EQ(out.isolation(), v1::SERIALIZABLE);
  EXPECT_THAT(out.settings(),
              UnorderedElementsAre(Pair("search_path", "app"), Pair("statement_timeout", "5s")));
  EXPECT_TRUE(out.in_transaction());
  EXPECT_TRUE(out.transaction_aborted());
  EXPECT_THAT(out.abort_reason(), HasSubstr("BROKER_TX_IDLE_TIMEOUT"));
  ASSERT_TRUE(out.has_transaction_start_time());
  EXPECT_EQ(out.transaction_start_time().seconds(), 1'700'000'001);
  EXPECT_TRUE(out.held_by_stream());
  EXPECT_EQ(out.queued_calls(), 3);
}

TEST(SessionConversionTest, ASessionOutsideATransactionHasNoTransactionStartTime) {
  v1::Session out;
  SessionToProto(AnInfo(), &out);
  EXPECT_FALSE(out.in_transaction());
  EXPECT_FALSE(out.has_transaction_start_time());
}

}  // namespace
}  // namespace sessionbroker::transport
