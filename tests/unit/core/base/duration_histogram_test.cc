// Specification of DurationHistogram: Prometheus buckets since start, and
// percentiles over a sliding window driven by a FakeClock.
#include "server/core/base/duration_histogram.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;

// The reported percentile is at or above the true one, by at most 1/16.
void ExpectNear(absl::Duration reported, absl::Duration truth) {
  EXPECT_GE(reported, truth);
  EXPECT_LE(reported, truth + truth / 16 + absl::Microseconds(1));
}

TEST(DurationHistogramTest, EmptyHistogramReportsZeros) {
  FakeClock clock;
  DurationHistogram h(clock);
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.p50, absl::ZeroDuration());
  EXPECT_EQ(r.max, absl::ZeroDuration());
  EXPECT_EQ(r.window, absl::Seconds(60));
  const HistogramTotals t = h.Totals();
  EXPECT_EQ(t.count, 0u);
  EXPECT_EQ(t.cumulative.size(), t.bounds_seconds.size() + 1);
}

TEST(DurationHistogramTest, PercentilesOfAKnownSpreadAreWithinOneSixteenth) {
  FakeClock clock;
  DurationHistogram h(clock);
  for (int ms = 1; ms <= 1000; ++ms) h.Record(absl::Milliseconds(ms));
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 1000);
  ExpectNear(r.p50, absl::Milliseconds(500));
  ExpectNear(r.p90, absl::Milliseconds(900));
  ExpectNear(r.p99, absl::Milliseconds(990));
  EXPECT_EQ(r.max, absl::Milliseconds(1000));
}

TEST(DurationHistogramTest, PercentilesNeverExceedTheExactMaximum) {
  FakeClock clock;
  DurationHistogram h(clock);
  h.Record(absl::Microseconds(1001));
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.p50, absl::Microseconds(1001));
  EXPECT_EQ(r.p99, absl::Microseconds(1001));
  EXPECT_EQ(r.max, absl::Microseconds(1001));
}

TEST(DurationHistogramTest, SamplesLeaveTheWindowAfterSixtySeconds) {
  FakeClock clock;
  DurationHistogram h(clock);
  h.Record(absl::Seconds(5));  // an old slow one
  clock.Advance(absl::Seconds(30));
  for (int i = 0; i < 10; ++i) h.Record(absl::Milliseconds(2));
  RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 11);
  EXPECT_EQ(r.max, absl::Seconds(5));

  clock.Advance(absl::Seconds(30));  // the 5 s sample is now 60 s old
  r = h.Recent();
  EXPECT_EQ(r.count, 10);
  EXPECT_EQ(r.max, absl::Milliseconds(2));
  ExpectNear(r.p99, absl::Milliseconds(2));

  clock.Advance(absl::Seconds(31));
  r = h.Recent();
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.max, absl::ZeroDuration());
  // The totals since start keep everything.
  EXPECT_EQ(h.Totals().count, 11u);
}

TEST(DurationHistogramTest, ASlotReusedAfterAFullTurnStartsEmpty) {
  FakeClock clock;
  DurationHistogram h(clock);
  h.Record(absl::Seconds(3));
  clock.Advance(absl::Seconds(120));  // same ring slot, two turns later
  h.Record(absl::Milliseconds(1));
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.max, absl::Milliseconds(1));
}

TEST(DurationHistogramTest, TotalsAreCumulativePrometheusBuckets) {
  FakeClock clock;
  DurationHistogram::Options options;
  options.bounds_seconds = {0.001, 0.01, 0.1};
  DurationHistogram h(clock, options);
  h.Record(absl::Microseconds(500));  // <= 0.001
  h.Record(absl::Milliseconds(1));    // <= 0.001 (le is inclusive)
  h.Record(absl::Milliseconds(50));   // <= 0.1
  h.Record(absl::Seconds(2));         // +Inf only
  h.Record(absl::Milliseconds(-3));   // counts as 0
  const HistogramTotals t = h.Totals();
  EXPECT_THAT(t.bounds_seconds, ElementsAre(0.001, 0.01, 0.1));
  EXPECT_THAT(t.cumulative, ElementsAre(3u, 3u, 4u, 5u));
  EXPECT_EQ(t.count, 5u);
  EXPECT_DOUBLE_EQ(t.sum_seconds, 0.0005 + 0.001 + 0.05 + 2);
}

TEST(DurationHistogramTest, EachDefaultBoundIsInclusiveToTheNanosecond) {
  FakeClock clock;
  const std::vector<double> bounds = DurationHistogram::DefaultBounds();
  for (size_t i = 0; i < bounds.size(); ++i) {
    DurationHistogram h(clock);
    const absl::Duration bound = absl::Nanoseconds(std::llround(bounds[i] * 1e9));
    h.Record(bound);                         // le: in bucket i
    h.Record(bound + absl::Nanoseconds(1));  // the next one
    h.Record(bound - absl::Nanoseconds(1));  // bucket i (above the previous bound)
    const HistogramTotals t = h.Totals();
    EXPECT_EQ(t.cumulative[i], 2u) << "le=" << bounds[i];
    if (i > 0) EXPECT_EQ(t.cumulative[i - 1], 0u) << "le=" << bounds[i];
    EXPECT_EQ(t.cumulative[i + 1], 3u) << "le=" << bounds[i];
  }
}

TEST(DurationHistogramTest, RecordGivenTheTimeFilesTheSampleAtThatTime) {
  FakeClock clock;
  DurationHistogram h(clock);
  const absl::Time start = clock.Now();
  clock.Advance(absl::Seconds(59));
  h.Record(absl::Seconds(7), start);  // in the window's first second
  h.Record(absl::Seconds(1));         // in its last
  EXPECT_EQ(h.Recent().count, 2);
  clock.Advance(absl::Seconds(1));  // the first second leaves the window
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.max, absl::Seconds(1));
}

TEST(DurationHistogramTest, VeryLongDurationsAreClampedNotLost) {
  FakeClock clock;
  DurationHistogram h(clock);
  h.Record(absl::Hours(100));
  const RecentDurations r = h.Recent();
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.max, absl::Hours(100));
  EXPECT_GT(r.p50, absl::Hours(18));
  EXPECT_EQ(h.Totals().cumulative.back(), 1u);
}

TEST(DurationHistogramTest, ConcurrentRecordsAreAllCounted) {
  DurationHistogram h(RealClock::Get());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h] {
      for (int i = 0; i < 2000; ++i) h.Record(absl::Microseconds(i));
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(h.Totals().count, 8000u);
  EXPECT_EQ(h.Recent().count, 8000);
}

}  // namespace
}  // namespace sessionbroker::core
