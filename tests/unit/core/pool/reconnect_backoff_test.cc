// Specification of ReconnectBackoff, the rationing of connects while the
// database is down. Times are plain values (what the pool reads from its
// injected Clock); no sleeping.
#include "server/core/pool/reconnect_backoff.h"

#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

BackoffOptions NoJitter() {
  BackoffOptions o;
  o.initial = absl::Milliseconds(100);
  o.max = absl::Seconds(2);
  o.multiplier = 2;
  o.jitter = 0;
  return o;
}

TEST(ReconnectBackoffTest, WhileUpEveryAttemptMayStart) {
  ReconnectBackoff b(NoJitter());
  bool probe = true;
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(b.TryStart(kT0, &probe));
    EXPECT_FALSE(probe);
  }
  EXPECT_FALSE(b.down());
}

TEST(ReconnectBackoffTest, AFailureAllowsNoAttemptUntilTheInitialDelayPassed) {
  ReconnectBackoff b(NoJitter());
  b.OnFailure(kT0, /*probe=*/false);
  EXPECT_TRUE(b.down());
  EXPECT_EQ(b.next_attempt(), kT0 + absl::Milliseconds(100));
  bool probe;
  EXPECT_FALSE(b.TryStart(kT0 + absl::Milliseconds(99), &probe));
  EXPECT_TRUE(b.TryStart(kT0 + absl::Milliseconds(100), &probe));
  EXPECT_TRUE(probe);
}

TEST(ReconnectBackoffTest, AtMostOneProbeIsInFlight) {
  ReconnectBackoff b(NoJitter());
  b.OnFailure(kT0, false);
  const absl::Time later = kT0 + absl::Seconds(1);
  bool probe;
  ASSERT_TRUE(b.TryStart(later, &probe));
  ASSERT_TRUE(probe);
  bool other;
  EXPECT_FALSE(b.TryStart(later, &other));
  EXPECT_FALSE(b.TryStart(later + absl::Hours(1), &other)) << "still one in flight";
  EXPECT_TRUE(b.probe_in_flight());
}

TEST(ReconnectBackoffTest, EachFailedProbeDoublesTheDelayUpToTheMax) {
  ReconnectBackoff b(NoJitter());
  absl::Time now = kT0;
  b.OnFailure(now, false);
  std::vector<absl::Duration> delays = {b.delay()};
  for (int i = 0; i < 6; ++i) {
    now = b.next_attempt();
    bool probe;
    ASSERT_TRUE(b.TryStart(now, &probe));
    b.OnFailure(now, probe);
    delays.push_back(b.delay());
    EXPECT_EQ(b.next_attempt(), now + b.delay());
  }
  EXPECT_EQ(delays, (std::vector<absl::Duration>{absl::Milliseconds(100), absl::Milliseconds(200),
                                                 absl::Milliseconds(400), absl::Milliseconds(800),
                                                 absl::Milliseconds(1600), absl::Seconds(2),
                                                 absl::Seconds(2)}));
  EXPECT_EQ(b.failures(), 7);
}

TEST(ReconnectBackoffTest, AttemptsStartedBeforeTheOutageDoNotLengthenTheDelay) {
  ReconnectBackoff b(NoJitter());
  // Three connects were already dialing when the database went away.
  b.OnFailure(kT0, false);
  b.OnFailure(kT0, false);
  b.OnFailure(kT0, false);
  EXPECT_EQ(b.delay(), absl::Milliseconds(100));
  EXPECT_EQ(b.next_attempt(), kT0 + absl::Milliseconds(100));
  EXPECT_EQ(b.failures(), 3);
}

TEST(ReconnectBackoffTest, ASuccessMarksTheDatabaseUpAndResetsTheDelay) {
  ReconnectBackoff b(NoJitter());
  b.OnFailure(kT0, false);
  bool probe;
  ASSERT_TRUE(b.TryStart(kT0 + absl::Seconds(1), &probe));
  b.OnSuccess(probe);
  EXPECT_FALSE(b.down());
  EXPECT_FALSE(b.probe_in_flight());
  EXPECT_EQ(b.failures(), 0);
  EXPECT_TRUE(b.TryStart(kT0 + absl::Seconds(1), &probe));
  EXPECT_FALSE(probe);
  // The next outage starts again from the initial delay.
  b.OnFailure(kT0 + absl::Seconds(2), false);
  EXPECT_EQ(b.delay(), absl::Milliseconds(100));
}

TEST(ReconnectBackoffTest, JitterSpreadsDelaysWithinItsBounds) {
  BackoffOptions o = NoJitter();
  o.jitter = 0.2;
  absl::Duration lowest = absl::InfiniteDuration();
  absl::Duration highest = absl::ZeroDuration();
  for (int i = 0; i < 200; ++i) {
    ReconnectBackoff b(o);
    b.OnFailure(kT0, false);
    const absl::Duration d = b.next_attempt() - kT0;
    EXPECT_GE(d, absl::Milliseconds(80));
    EXPECT_LT(d, absl::Milliseconds(120));
    lowest = std::min(lowest, d);
    highest = std::max(highest, d);
  }
  EXPECT_LT(lowest, absl::Milliseconds(95)) << "no spread";
  EXPECT_GT(highest, absl::Milliseconds(105)) << "no spread";
}

TEST(ReconnectBackoffTest, ZeroInitialDelayDisablesRationing) {
  BackoffOptions o;
  o.initial = absl::ZeroDuration();
  ReconnectBackoff b(o);
  b.OnFailure(kT0, false);
  EXPECT_FALSE(b.down());
  EXPECT_EQ(b.failures(), 1);
  bool probe;
  EXPECT_TRUE(b.TryStart(kT0, &probe));
  EXPECT_TRUE(b.TryStart(kT0, &probe));
  EXPECT_FALSE(probe);
}

}  // namespace
}  // namespace sessionbroker::core
