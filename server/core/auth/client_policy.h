// ClientPolicy: one calling service as the clients file (BROKER_CLIENTS_FILE)
// describes it: how it proves who it is (argon2 token hashes, mTLS
// certificate subjects or SPIFFE ids), what it may do (roles, database role,
// read-only, statement kinds) and its share of the pool (the quota fields,
// enforced by the pool's fair-share scheduler). Plain immutable values once
// parsed; shared between threads as shared_ptr<const ClientPolicy>.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_POLICY_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_POLICY_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sessionbroker::core {

// Roles a client may hold. kAdmin sees and may end every session and reads
// the pool's status; kMonitor reads the pool's status (PoolMonitor) only.
inline constexpr absl::string_view kRoleAdmin = "admin";
inline constexpr absl::string_view kRoleMonitor = "monitor";

struct ClientPolicy {
  std::string id;
  // argon2id (or argon2i) strings as crypto_pwhash_str writes them.
  std::vector<std::string> token_hashes;
  // Exact SPIFFE URI SANs ("spiffe://trust-domain/path") and certificate
  // subjects (as gRPC's x509_subject property spells them) that identify
  // this client over mutual TLS.
  std::vector<std::string> spiffe_ids;
  std::vector<std::string> cert_subjects;
  std::vector<std::string> roles;
  // The PostgreSQL role its statements run as (SET ROLE); "" = the broker's.
  std::string database_role;
  // Every transaction of this client is read-only.
  bool read_only = false;
  // Statement kinds it may run (lower case, e.g. "select", "insert"); empty
  // = every kind.
  std::vector<std::string> allowed_statement_kinds;
  // Its share of the pool when saturated (weighted fair queuing).
  int weight = 1;
  // 0 = no per-client limit.
  int max_connections = 0;
  int max_waiters = 0;
  int max_sessions = 0;
  // Connections kept available for this client alone.
  int reserved_connections = 0;
  // The longest statement timeout it may get; zero = the broker's.
  absl::Duration statement_timeout_max = absl::ZeroDuration();

  bool HasRole(absl::string_view role) const;
  bool admin() const { return HasRole(kRoleAdmin); }
  // PoolMonitor: admin or monitor.
  bool may_monitor() const { return admin() || HasRole(kRoleMonitor); }
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_POLICY_H_
