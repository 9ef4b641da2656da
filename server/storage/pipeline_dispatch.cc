#include "server/storage/pipeline_dispatch.h"

#include <cstddef>

namespace sessionbroker::storage {

bool IsStalled(absl::Span<const ConnectionLoad> loads, size_t index, absl::Time now,
               const DispatchLimits& limits) {
  const ConnectionLoad& self = loads[index];
  if (self.in_flight == 0 || now - self.head_sent <= limits.stall_after) return false;
  for (size_t i = 0; i < loads.size(); ++i) {
    if (i == index || !loads[i].ready) continue;
    if (loads[i].in_flight == 0 || loads[i].head_sent > self.head_sent) return true;
  }
  return false;
}

int ChooseConnection(absl::Span<const ConnectionLoad> loads, absl::Time now,
                     const DispatchLimits& limits) {
  int best = -1;
  for (size_t i = 0; i < loads.size(); ++i) {
    const ConnectionLoad& load = loads[i];
    if (!load.ready || load.in_flight >= limits.max_depth) continue;
    if (IsStalled(loads, i, now, limits)) continue;
    if (best < 0 || load.in_flight < loads[static_cast<size_t>(best)].in_flight) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

}  // namespace sessionbroker::storage
