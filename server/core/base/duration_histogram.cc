#include "server/core/base/duration_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace sessionbroker::core {
namespace {

constexpr int kSubBits = 4;  // 16 steps per power of two
constexpr int kSub = 1 << kSubBits;
// Durations are clamped to 2^36 µs (about 19 hours).
constexpr int kMaxExponent = 35;
constexpr int kFineBuckets = kSub + (kMaxExponent - kSubBits + 1) * kSub;
constexpr int64_t kMaxMicros = (int64_t{1} << (kMaxExponent + 1)) - 1;

int Log2Floor(uint64_t v) { return 63 - __builtin_clzll(v); }

// The most nanoseconds n with n / 1e9 <= `seconds` (computed in double, as a
// sample's seconds are), so that comparing nanoseconds with it puts every
// sample in the same bucket as comparing seconds with the bound would.
int64_t BoundNanos(double seconds) {
  if (!(seconds < 9e9)) return std::numeric_limits<int64_t>::max();
  if (seconds < 0) return -1;
  auto s = [](int64_t n) { return static_cast<double>(n) / 1e9; };
  int64_t n = static_cast<int64_t>(seconds * 1e9);
  while (n >= 0 && s(n) > seconds) --n;
  while (s(n + 1) <= seconds) ++n;
  return n;
}

std::vector<int64_t> BoundsNanos(const std::vector<double>& bounds_seconds) {
  std::vector<int64_t> out;
  out.reserve(bounds_seconds.size());
  for (double b : bounds_seconds) out.push_back(BoundNanos(b));
  return out;
}

}  // namespace

std::vector<double> DurationHistogram::DefaultBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

DurationHistogram::DurationHistogram(const Clock& clock, Options options)
    : clock_(clock),
      options_(std::move(options)),
      slot_width_(options_.window / std::max(1, options_.slots)),
      origin_(clock.Now()),
      slot_width_nanos_(std::max<int64_t>(1, absl::ToInt64Nanoseconds(slot_width_))),
      origin_unix_nanos_(absl::ToUnixNanos(origin_)),
      bound_nanos_(BoundsNanos(options_.bounds_seconds)) {
  MutexLock lock(&mu_);
  bucket_counts_.assign(options_.bounds_seconds.size() + 1, 0);
  slots_.resize(std::max(1, options_.slots));
  for (Slot& s : slots_) s.fine.assign(kFineBuckets, 0);
}

int DurationHistogram::FineIndex(int64_t micros) {
  const uint64_t v = static_cast<uint64_t>(std::clamp<int64_t>(micros, 0, kMaxMicros));
  if (v < static_cast<uint64_t>(kSub)) return static_cast<int>(v);
  const int e = Log2Floor(v);
  const int mantissa = static_cast<int>((v >> (e - kSubBits)) & (kSub - 1));
  return kSub + (e - kSubBits) * kSub + mantissa;
}

int64_t DurationHistogram::FineUpperMicros(int index) {
  if (index < kSub) return index;
  const int e = (index - kSub) / kSub + kSubBits;
  const int64_t mantissa = (index - kSub) % kSub;
  const int64_t step = int64_t{1} << (e - kSubBits);
  return (kSub + mantissa) * step + step - 1;
}

int64_t DurationHistogram::EpochOf(absl::Time t) const {
  // Integer nanoseconds (absl's Duration division is a slow 128-bit one);
  // good for 292 years either side of 1970. A clock set back before
  // construction counts as the first step.
  return std::max<int64_t>(0, (absl::ToUnixNanos(t) - origin_unix_nanos_) / slot_width_nanos_);
}

void DurationHistogram::Record(absl::Duration d, absl::Time now) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  // Nanoseconds (saturating at about 292 years): integer arithmetic, unlike
  // absl's Duration division.
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  const double seconds = static_cast<double>(nanos) / 1e9;
  const int fine = FineIndex(nanos / 1000);
  const int64_t epoch = EpochOf(now);
  // A linear scan: most samples (checkout waits) fall in the first buckets.
  size_t bucket = 0;
  while (bucket < bound_nanos_.size() && nanos > bound_nanos_[bucket]) ++bucket;

  MutexLock lock(&mu_);
  ++bucket_counts_[bucket];
  ++count_;
  sum_seconds_ += seconds;
  Slot& slot = slots_[static_cast<size_t>(epoch % static_cast<int64_t>(slots_.size()))];
  if (slot.epoch != epoch) {
    slot.epoch = epoch;
    slot.count = 0;
    slot.max = absl::ZeroDuration();
    std::fill(slot.fine.begin(), slot.fine.end(), 0);
  }
  ++slot.count;
  slot.max = std::max(slot.max, d);
  ++slot.fine[static_cast<size_t>(fine)];
}

HistogramTotals DurationHistogram::Totals() const {
  HistogramTotals out;
  out.bounds_seconds = options_.bounds_seconds;
  MutexLock lock(&mu_);
  out.cumulative.reserve(bucket_counts_.size());
  uint64_t running = 0;
  for (uint64_t c : bucket_counts_) {
    running += c;
    out.cumulative.push_back(running);
  }
  out.count = count_;
  out.sum_seconds = sum_seconds_;
  return out;
}

RecentDurations DurationHistogram::Recent() const {
  RecentDurations out;
  out.window = options_.window;
  const int64_t now_epoch = EpochOf(clock_.Now());
  const int64_t oldest = now_epoch - std::max(1, options_.slots) + 1;
  std::vector<uint64_t> merged(kFineBuckets, 0);
  {
    MutexLock lock(&mu_);
    for (const Slot& s : slots_) {
      if (s.epoch < oldest || s.epoch > now_epoch || s.count == 0) continue;
      out.count += s.count;
      out.max = std::max(out.max, s.max);
      for (int i = 0; i < kFineBuckets; ++i) merged[i] += s.fine[i];
    }
  }
  if (out.count == 0) return out;
  auto percentile = [&](double q) {
    // Nearest rank: the smallest value with at least q of the samples at or
    // below it.
    const uint64_t rank =
        std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(out.count))));
    uint64_t seen = 0;
    for (int i = 0; i < kFineBuckets; ++i) {
      seen += merged[i];
      if (seen >= rank) return std::min(absl::Microseconds(FineUpperMicros(i)), out.max);
    }
    return out.max;
  };
  out.p50 = percentile(0.50);
  out.p90 = percentile(0.90);
  out.p99 = percentile(0.99);
  return out;
}

}  // namespace sessionbroker::core
