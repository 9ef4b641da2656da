// ClientShares: where each calling service's quota and weight come from.
// The pool (connections, waiters, fair queuing), the statement runner (the
// statement-timeout ceiling) and the session manager (sessions) ask it for a
// client id's ClientQuota; they never parse a configuration themselves.
// UniformClientShares gives every client the same quota (the
// BROKER_CLIENT_* settings) and holds no connections for anyone (its
// reserved_connections, BROKER_CLIENT_RESERVED_CONNECTIONS, only orders the
// fair queue); a clients file (per-service entries) plugs in by implementing
// ClientShares and falling back to those defaults, and names the clients
// whose floor is held (ReservedClients).
//
// QuotaFor is called on the pool's hot paths, sometimes under the pool's
// lock: implementations must be thread-safe, must not block on I/O and must
// not call back into the pool. The pool caches a client's quota while it
// keeps the client's entry; ConnectionPool::RefreshQuotas() re-reads them
// (after a clients file reloads).
#ifndef SESSIONBROKER_SERVER_CORE_POOL_CLIENT_SHARES_H_
#define SESSIONBROKER_SERVER_CORE_POOL_CLIENT_SHARES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

// One client's share. A cap of 0 means "no cap of the client's own" (the
// pool's and the broker's global bounds still hold).
struct ClientQuota {
  // Its weight in the fair queue: while the pool is saturated, a client with
  // weight 2 is served twice as many queued requests per round as one with
  // weight 1. At least 1.
  int weight = 1;
  // Connections it may have in use plus requests it may have queued.
  int max_connections = 0;
  // Requests it may have queued for a connection.
  int max_waiters = 0;
  // Sessions it may have open (the session manager also bounds every
  // client's share of BROKER_MAX_SESSIONS, see SessionOptions).
  int max_sessions = 0;
  // While it has fewer connections than this in use, its queued requests are
  // served before any other client's. For a client that ClientShares names
  // in ReservedClients() the pool also holds that many connections back
  // from everyone else (idle, or room to open them) while it uses fewer:
  // see ConnectionPool.
  int reserved_connections = 0;
  // Upper bound on each of its statements' run time (the call's deadline and
  // BROKER_MAX_STATEMENT_DURATION are lowered to it).
  absl::Duration statement_timeout_max = absl::InfiniteDuration();
};

class ClientShares {
 public:
  virtual ~ClientShares() = default;
  virtual ClientQuota QuotaFor(absl::string_view client_id) const = 0;
  // The clients the pool holds a reserved floor for (their
  // QuotaFor().reserved_connections connections kept free of other
  // clients' use): only clients named in configuration, never a default
  // for every id (ids are unbounded; a floor held for each would hold the
  // whole pool). Empty by default. Read at pool construction and on
  // ConnectionPool::RefreshQuotas().
  virtual std::vector<std::string> ReservedClients() const { return {}; }
};

// The same quota for every client. Immutable; thread-safe.
class UniformClientShares final : public ClientShares {
 public:
  explicit UniformClientShares(ClientQuota quota) : quota_(quota) {}
  ClientQuota QuotaFor(absl::string_view) const override { return quota_; }

 private:
  const ClientQuota quota_;
};

// "client \"billing\"" for messages ("the client without an id" for "").
std::string ClientLabel(absl::string_view client_id);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_POOL_CLIENT_SHARES_H_
