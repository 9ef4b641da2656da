#include "server/core/pool/reconnect_backoff.h"

#include <algorithm>

namespace sessionbroker::core {

bool ReconnectBackoff::TryStart(absl::Time now, bool* probe) {
  *probe = false;
  if (!enabled() || !down_) return true;
  if (probe_in_flight_ || now < next_attempt_) return false;
  probe_in_flight_ = true;
  *probe = true;
  return true;
}

void ReconnectBackoff::OnSuccess(bool probe) {
  if (probe) probe_in_flight_ = false;
  down_ = false;
  failures_ = 0;
  delay_ = absl::ZeroDuration();
  next_attempt_ = absl::InfinitePast();
}

void ReconnectBackoff::OnFailure(absl::Time now, bool probe) {
  ++failures_;
  if (!enabled()) return;
  if (probe) probe_in_flight_ = false;
  if (down_ && !probe) return;  // started before the outage was known
  delay_ = down_ ? std::min(options_.max, delay_ * options_.multiplier)
                 : std::min(options_.max, options_.initial);
  down_ = true;
  double scale = 1.0;
  if (options_.jitter > 0) {
    scale = absl::Uniform(rng_, 1.0 - options_.jitter, 1.0 + options_.jitter);
  }
  next_attempt_ = now + delay_ * scale;
}

}  // namespace sessionbroker::core
