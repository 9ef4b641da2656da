#include "server/core/duration_histogram.h"

#include <algorithm>
#include <cmath>
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

}  // namespace

std::vector<double> DurationHistogram::DefaultBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

DurationHistogram::DurationHistogram(const Clock& clock, Options options)
    : clock_(clock),
      options_(std::move(options)),
      slot_width_(options_.window / std::max(1, options_.slots)),
      origin_(clock.Now()) {
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
  // A clock set back before construction counts as the first step.
  absl::Duration remainder;
  return std::max<int64_t>(0, absl::IDivDuration(t - origin_, slot_width_, &remainder));
}

void DurationHistogram::Record(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  const double seconds = absl::ToDoubleSeconds(d);
  const int fine = FineIndex(absl::ToInt64Microseconds(d));
  const int64_t epoch = EpochOf(clock_.Now());
  const auto bound =
      std::lower_bound(options_.bounds_seconds.begin(), options_.bounds_seconds.end(), seconds);
  const size_t bucket = static_cast<size_t>(bound - options_.bounds_seconds.begin());

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
