// ChooseConnection: which hot connection takes the next pipelined statement
// (depth cap, stalled heads, least loaded).
#include "server/storage/pipeline_dispatch.h"

#include <gtest/gtest.h>

#include <vector>

namespace sessionbroker::storage {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1000);

ConnectionLoad Busy(int in_flight, absl::Duration head_age) {
  return ConnectionLoad{true, in_flight, kNow - head_age};
}
ConnectionLoad Idle() { return ConnectionLoad{true, 0, kNow}; }

DispatchLimits Limits(int depth, absl::Duration stall_after) {
  DispatchLimits limits;
  limits.max_depth = depth;
  limits.stall_after = stall_after;
  return limits;
}

TEST(PipelineDispatchTest, LeastLoadedConnectionTakesTheStatement) {
  const std::vector<ConnectionLoad> loads = {Busy(3, absl::Milliseconds(1)),
                                             Busy(1, absl::Milliseconds(1)),
                                             Busy(2, absl::Milliseconds(1))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(8, absl::Milliseconds(20))), 1);
}

TEST(PipelineDispatchTest, TieGoesToTheFirstConnection) {
  const std::vector<ConnectionLoad> loads = {Idle(), Idle()};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(8, absl::Milliseconds(20))), 0);
}

TEST(PipelineDispatchTest, ConnectionAtItsDepthCapTakesNothing) {
  const std::vector<ConnectionLoad> loads = {Busy(4, absl::Milliseconds(1)),
                                             Busy(4, absl::Milliseconds(1))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(4, absl::Milliseconds(20))), -1);
}

TEST(PipelineDispatchTest, ConnectionNotReadyTakesNothing) {
  std::vector<ConnectionLoad> loads = {Idle()};
  loads[0].ready = false;
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(4, absl::Milliseconds(20))), -1);
}

TEST(PipelineDispatchTest, ConnectionWhoseHeadLagsItsPeersIsNotFed) {
  // Fewer in flight, but its head has run for a second while the peer's
  // statements keep completing.
  const std::vector<ConnectionLoad> loads = {Busy(1, absl::Seconds(1)),
                                             Busy(5, absl::Milliseconds(2))};
  EXPECT_TRUE(IsStalled(loads, 0, kNow, Limits(8, absl::Milliseconds(20))));
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(8, absl::Milliseconds(20))), 1);
}

TEST(PipelineDispatchTest, SlowHeadWithinTheThresholdIsStillFed) {
  const std::vector<ConnectionLoad> loads = {Busy(1, absl::Milliseconds(10)),
                                             Busy(5, absl::Milliseconds(2))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(8, absl::Milliseconds(20))), 0);
}

TEST(PipelineDispatchTest, StatementsWaitRatherThanQueueBehindASlowHeadWhenPeersAreFull) {
  const std::vector<ConnectionLoad> loads = {Busy(1, absl::Seconds(1)),
                                             Busy(4, absl::Milliseconds(2))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(4, absl::Milliseconds(20))), -1);
}

TEST(PipelineDispatchTest, YoungestOfSeveralSlowHeadsIsStillFed) {
  // Everything is slow (a long-running workload): the connection whose head
  // started last lags nobody, so work still flows.
  const std::vector<ConnectionLoad> loads = {Busy(1, absl::Seconds(2)), Busy(1, absl::Seconds(1))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(4, absl::Milliseconds(20))), 1);
}

TEST(PipelineDispatchTest, LoneConnectionIsNeverStalled) {
  const std::vector<ConnectionLoad> loads = {Busy(1, absl::Seconds(5))};
  EXPECT_EQ(ChooseConnection(loads, kNow, Limits(4, absl::Milliseconds(20))), 0);
}

}  // namespace
}  // namespace sessionbroker::storage
