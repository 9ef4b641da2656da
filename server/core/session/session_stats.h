// The session numbers the SessionManager reports for metrics (PoolMonitor,
// /metrics): its current shape and counters since start. A plain value; taken
// as a snapshot under the manager's lock.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATS_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATS_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"

namespace sessionbroker::core {

struct SessionStats {
  // Now.
  int64_t open = 0;
  int64_t in_transaction = 0;  // holding a pinned connection
  int64_t held_by_stream = 0;  // kept alive by a KeepAlive stream
  int64_t queued_calls = 0;    // calls waiting behind a session's running call
  // Open sessions per client ("x-client-id"; "" for callers that send none).
  absl::flat_hash_map<std::string, int64_t> open_by_client;

  // Counters since start: sessions.
  int64_t begun = 0;
  int64_t rejected = 0;           // BeginSession refused by a session quota
  int64_t ended_by_client = 0;    // EndSession
  int64_t expired = 0;            // lease passed without a renew
  int64_t orphaned = 0;           // KeepAlive stream gone, grace passed
  int64_t lifetime_exceeded = 0;  // BROKER_SESSION_MAX_LIFETIME reached
  int64_t ended_by_shutdown = 0;

  // Counters since start: transactions.
  int64_t transactions_begun = 0;
  int64_t transactions_committed = 0;
  int64_t transactions_rolled_back = 0;  // by the client's Rollback
  int64_t transactions_failed = 0;       // a statement failed; the broker rolled back
  // Rolled back by the broker because a deadline fired.
  int64_t tx_killed_idle = 0;          // BROKER_TX_IDLE_TIMEOUT
  int64_t tx_killed_max_duration = 0;  // BROKER_TX_MAX_DURATION
  int64_t tx_killed_session_end = 0;   // the session ended (expiry, orphan, lifetime, shutdown)
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_SESSION_STATS_H_
