// Which hot connection gets the next pipelined statement (pure policy, used
// by the libpq event loop of pq_pipeline_loop.h; unit-tested with made-up
// loads and times).
//
// The rules, from issue 14's measurements (busy backends starve each other,
// so a few deep pipelines beat many shallow ones, and a slow statement must
// not hold the ones queued behind it hostage):
//  - a connection takes at most `max_depth` statements in flight;
//  - a connection whose oldest statement (its head) has been running for
//    longer than `stall_after` is not fed while a peer's head is younger, or
//    a peer is idle: what would queue behind the slow one waits in the
//    engine's queue instead, free to go wherever capacity appears first. So
//    at most the statements sent before the head was seen as slow wait
//    behind it;
//  - among the rest, the one with the fewest in flight (the lowest index on
//    a tie, which keeps the hot set's first connections warm).
//
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_PIPELINE_DISPATCH_H_
#define SESSIONBROKER_SERVER_STORAGE_PIPELINE_DISPATCH_H_

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace sessionbroker::storage {

struct ConnectionLoad {
  bool ready = false;  // connected, in pipeline mode
  int in_flight = 0;
  absl::Time head_sent = absl::InfinitePast();  // meaningful when in_flight > 0
};

struct DispatchLimits {
  int max_depth = 8;
  absl::Duration stall_after = absl::Milliseconds(20);
};

// The index of the connection to send the next statement to, or -1 when
// none may take one now.
int ChooseConnection(absl::Span<const ConnectionLoad> loads, absl::Time now,
                     const DispatchLimits& limits);

// Whether connection `index` counts as stalled at `now` (its head older than
// stall_after while a peer's is younger or a peer is idle).
bool IsStalled(absl::Span<const ConnectionLoad> loads, size_t index, absl::Time now,
               const DispatchLimits& limits);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PIPELINE_DISPATCH_H_
