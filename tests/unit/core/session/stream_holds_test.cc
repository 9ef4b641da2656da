#include "server/core/session/stream_holds.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

TEST(StreamHoldsTest, OpenGivesDistinctNonZeroIds) {
  StreamHolds holds;
  const StreamHolds::StreamId a = holds.Open();
  const StreamHolds::StreamId b = holds.Open();
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(holds.IsOpen(a));
  EXPECT_FALSE(holds.IsOpen(b + 1));
}

TEST(StreamHoldsTest, AHeldSessionIsHeldOnceWhateverHowOftenItIsHeld) {
  StreamHolds holds;
  const auto stream = holds.Open();
  EXPECT_FALSE(holds.Held("s"));
  EXPECT_TRUE(holds.Hold(stream, "s"));
  EXPECT_FALSE(holds.Hold(stream, "s"));
  EXPECT_TRUE(holds.Held("s"));
  EXPECT_EQ(holds.held_sessions(), 1u);
  EXPECT_TRUE(holds.Release(stream, "s"));
  EXPECT_FALSE(holds.Held("s"));
  EXPECT_EQ(holds.held_sessions(), 0u);
}

TEST(StreamHoldsTest, AStreamThatIsNotOpenHoldsNothing) {
  StreamHolds holds;
  const auto stream = holds.Open();
  holds.Close(stream);
  EXPECT_FALSE(holds.Hold(stream, "s"));
  EXPECT_FALSE(holds.Hold(stream + 1, "s"));
  EXPECT_FALSE(holds.Held("s"));
}

TEST(StreamHoldsTest, ReleasingWhatTheStreamDoesNotHoldChangesNothing) {
  StreamHolds holds;
  const auto a = holds.Open();
  const auto b = holds.Open();
  holds.Hold(a, "s");
  EXPECT_FALSE(holds.Release(b, "s"));
  EXPECT_FALSE(holds.Release(a, "t"));
  EXPECT_TRUE(holds.Held("s"));
}

TEST(StreamHoldsTest, ClosingAStreamOrphansOnlyWhatNoOtherStreamHolds) {
  StreamHolds holds;
  const auto a = holds.Open();
  const auto b = holds.Open();
  holds.Hold(a, "only-a");
  holds.Hold(a, "both");
  holds.Hold(b, "both");
  holds.Hold(a, "released");
  holds.Release(a, "released");
  EXPECT_THAT(holds.Close(a), ElementsAre("only-a"));
  EXPECT_FALSE(holds.IsOpen(a));
  EXPECT_FALSE(holds.Held("only-a"));
  EXPECT_TRUE(holds.Held("both"));
  EXPECT_THAT(holds.Close(b), ElementsAre("both"));
  EXPECT_EQ(holds.held_sessions(), 0u);
  EXPECT_THAT(holds.Close(b), IsEmpty()) << "closing twice does nothing";
}

TEST(StreamHoldsTest, ForgettingAnEndedSessionNamesItsStreamsAndFreesThem) {
  StreamHolds holds;
  const auto a = holds.Open();
  const auto b = holds.Open();
  holds.Hold(b, "s");
  holds.Hold(a, "s");
  holds.Hold(a, "t");
  EXPECT_THAT(holds.Forget("s"), ElementsAre(b, a));
  EXPECT_FALSE(holds.Held("s"));
  EXPECT_THAT(holds.Forget("s"), IsEmpty());
  // The streams no longer list it: closing them orphans only what they hold.
  EXPECT_THAT(holds.Close(b), IsEmpty());
  EXPECT_THAT(holds.Close(a), UnorderedElementsAre("t"));
}

}  // namespace
}  // namespace sessionbroker::core
