// DirectoryShares: the clients file's quotas as the pool's ClientShares.
// Each client entry's weight, max_connections, max_waiters, max_sessions,
// reserved_connections and statement_timeout_max apply to that client; a
// field the entry leaves out (0, or weight 1) and every client the file does
// not list get the BROKER_CLIENT_* defaults. It reads the Authenticator's
// current directory on each call, so a reload takes effect once the pool
// re-reads its cached quotas (ConnectionPool::RefreshQuotas, called from the
// ClientsFileWatcher's reload hook). The entries that set
// reserved_connections are the clients whose floor the pool holds.
// Thread-safe; never blocks on I/O (it takes the Authenticator's lock only
// to copy a shared_ptr) and never calls into the pool.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_DIRECTORY_SHARES_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_DIRECTORY_SHARES_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/client_policy.h"
#include "server/core/pool/client_shares.h"

namespace sessionbroker::core {

// The quota `policy` gives, its unset fields taken from `defaults`.
ClientQuota QuotaFromPolicy(const ClientPolicy& policy, const ClientQuota& defaults);

class DirectoryShares final : public ClientShares {
 public:
  // `authenticator` must outlive this.
  DirectoryShares(const Authenticator& authenticator, ClientQuota defaults)
      : authenticator_(authenticator), defaults_(defaults) {}

  ClientQuota QuotaFor(absl::string_view client_id) const override;
  // The entries that set reserved_connections themselves (a floor from the
  // BROKER_CLIENT_RESERVED_CONNECTIONS default is not held: it only orders
  // the fair queue), in file order.
  std::vector<std::string> ReservedClients() const override;

 private:
  const Authenticator& authenticator_;
  const ClientQuota defaults_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_DIRECTORY_SHARES_H_
