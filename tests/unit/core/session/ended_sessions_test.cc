#include "server/core/session/ended_sessions.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::core {
namespace {

using ::testing::IsNull;
using ::testing::NotNull;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);  // 2023-11-14T22:13:20Z

EndedSession At(absl::Time at, EndReason reason = EndReason::kExpired) {
  return EndedSession{reason, at, "its lease expired"};
}

std::string ReasonOf(const absl::Status& status) {
  auto reason = status.GetPayload(kSessionReasonPayloadUrl);
  return reason.has_value() ? std::string(*reason) : "";
}

TEST(EndedSessionsTest, RemembersWhenAndWhyASessionEnded) {
  EndedSessions ended(10, absl::Hours(1));
  ended.Remember("a", At(kT0, EndReason::kOrphaned));
  const EndedSession* a = ended.Find("a", kT0);
  ASSERT_THAT(a, NotNull());
  EXPECT_EQ(a->reason, EndReason::kOrphaned);
  EXPECT_EQ(a->at, kT0);
  EXPECT_EQ(a->detail, "its lease expired");
  EXPECT_THAT(ended.Find("b", kT0), IsNull());
  EXPECT_FALSE(ended.Contains("b"));
}

TEST(EndedSessionsTest, AnEntryIsReportedUpToRememberForAfterItsEndThenNot) {
  EndedSessions ended(10, absl::Hours(1));
  ended.Remember("a", At(kT0));
  EXPECT_THAT(ended.Find("a", kT0 + absl::Hours(1)), NotNull());
  EXPECT_THAT(ended.Find("a", kT0 + absl::Hours(1) + absl::Nanoseconds(1)), IsNull());
  // Still kept (nothing newer pruned it): its name is not given out again.
  EXPECT_TRUE(ended.Contains("a"));
}

TEST(EndedSessionsTest, ANewerEntryForgetsThoseOlderThanRememberFor) {
  EndedSessions ended(10, absl::Hours(1));
  ended.Remember("old", At(kT0));
  ended.Remember("mid", At(kT0 + absl::Minutes(30)));
  ended.Remember("new", At(kT0 + absl::Hours(1) + absl::Nanoseconds(1)));
  EXPECT_FALSE(ended.Contains("old"));
  EXPECT_TRUE(ended.Contains("mid"));
  EXPECT_TRUE(ended.Contains("new"));
  EXPECT_EQ(ended.size(), 2u);
}

TEST(EndedSessionsTest, AtMostCapacityAreKeptTheOldestForgottenFirst) {
  EndedSessions ended(2, absl::Hours(1));
  ended.Remember("a", At(kT0));
  ended.Remember("b", At(kT0 + absl::Seconds(1)));
  ended.Remember("c", At(kT0 + absl::Seconds(2)));
  EXPECT_EQ(ended.size(), 2u);
  EXPECT_FALSE(ended.Contains("a"));
  EXPECT_THAT(ended.Find("b", kT0 + absl::Seconds(2)), NotNull());
  EXPECT_THAT(ended.Find("c", kT0 + absl::Seconds(2)), NotNull());
}

TEST(EndedSessionsTest, ZeroCapacityRemembersNothing) {
  EndedSessions ended(0, absl::Hours(1));
  ended.Remember("a", At(kT0));
  EXPECT_EQ(ended.size(), 0u);
  EXPECT_THAT(ended.Find("a", kT0), IsNull());
}

TEST(EndedSessionsTest, StatusOfSaysWhenAndWhyWithTheReasonToken) {
  const absl::Status status =
      EndedSessions::StatusOf("abc", EndedSession{EndReason::kExpired, kT0, "its lease expired"});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(),
            "session abc ended at 2023-11-14T22:13:20.000Z: its lease expired; begin a new "
            "session");
  EXPECT_EQ(ReasonOf(status), "SESSION_EXPIRED");
}

TEST(EndedSessionsTest, EachEndReasonHasItsOwnToken) {
  const std::pair<EndReason, const char*> cases[] = {
      {EndReason::kClient, "SESSION_ENDED"},      {EndReason::kExpired, "SESSION_EXPIRED"},
      {EndReason::kOrphaned, "SESSION_ORPHANED"}, {EndReason::kLifetime, "SESSION_MAX_LIFETIME"},
      {EndReason::kShutdown, "BROKER_SHUTDOWN"},
  };
  for (const auto& [reason, token] : cases) {
    EXPECT_EQ(ReasonOf(EndedSessions::StatusOf("s", EndedSession{reason, kT0, "why"})), token);
  }
}

}  // namespace
}  // namespace sessionbroker::core
