// DurationHistogram: a distribution of durations (checkout waits, statement
// run times) kept two ways at once:
//
//  * cumulative, since start, in fixed Prometheus buckets (`le` bounds in
//    seconds) with a count and a sum, for /metrics;
//  * over a recent sliding window (60 s by default, in one-second slots),
//    as p50/p90/p99/max for PoolStatus. Percentiles come from log-linear
//    buckets with 16 steps per power of two, so each is within 1/16 (6.25%)
//    above the true value, and never above the window's exact maximum.
//
// Time comes from the injected Clock. Memory is fixed at construction (about
// 130 KiB with the default window), whatever the number of samples; durations
// beyond 19 hours count as 19 hours in the percentiles.
//
// Thread-safe; Record() takes a short lock.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_DURATION_HISTOGRAM_H_
#define SESSIONBROKER_SERVER_CORE_BASE_DURATION_HISTOGRAM_H_

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

// Since start, Prometheus-style.
struct HistogramTotals {
  std::vector<double> bounds_seconds;  // the finite `le` bounds, ascending
  // cumulative[i]: samples <= bounds_seconds[i]; one more entry for +Inf
  // (equal to count).
  std::vector<uint64_t> cumulative;
  uint64_t count = 0;
  double sum_seconds = 0;
};

// Over the recent window.
struct RecentDurations {
  absl::Duration window;
  int64_t count = 0;
  absl::Duration p50;
  absl::Duration p90;
  absl::Duration p99;
  absl::Duration max;
};

class DurationHistogram final {
 public:
  struct Options {
    absl::Duration window = absl::Seconds(60);
    int slots = 60;  // the window moves in steps of window / slots
    // Finite Prometheus bucket bounds in seconds, ascending.
    std::vector<double> bounds_seconds = DefaultBounds();
  };

  // 0.5 ms to 60 s: pool waits and statements both land in it.
  static std::vector<double> DefaultBounds();

  explicit DurationHistogram(const Clock& clock) : DurationHistogram(clock, Options()) {}
  DurationHistogram(const Clock& clock, Options options);
  DurationHistogram(const DurationHistogram&) = delete;
  DurationHistogram& operator=(const DurationHistogram&) = delete;

  // Negative durations count as zero.
  void Record(absl::Duration d) { Record(d, clock_.Now()); }
  // The same, for a caller that has just read the clock: `now` is
  // clock.Now(), which decides the window slot.
  void Record(absl::Duration d, absl::Time now);

  HistogramTotals Totals() const;
  RecentDurations Recent() const;

 private:
  struct Slot {
    int64_t epoch = -1;  // which window step it holds; stale ones are reset on use
    int64_t count = 0;
    absl::Duration max;
    std::vector<uint32_t> fine;  // log-linear buckets of microseconds
  };

  static int FineIndex(int64_t micros);
  static int64_t FineUpperMicros(int index);
  int64_t EpochOf(absl::Time t) const;

  const Clock& clock_;
  const Options options_;
  const absl::Duration slot_width_;
  const absl::Time origin_;
  // The same in nanoseconds, for integer arithmetic on the Record() path.
  const int64_t slot_width_nanos_;
  const int64_t origin_unix_nanos_;
  // Per bound: the most nanoseconds whose value in seconds is <= the bound.
  const std::vector<int64_t> bound_nanos_;

  mutable Mutex mu_;
  std::vector<uint64_t> bucket_counts_ ABSL_GUARDED_BY(mu_);  // per bound, plus +Inf
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  double sum_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_DURATION_HISTOGRAM_H_
