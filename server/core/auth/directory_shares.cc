#include "server/core/auth/directory_shares.h"

#include <memory>

namespace sessionbroker::core {

ClientQuota QuotaFromPolicy(const ClientPolicy& policy, const ClientQuota& defaults) {
  ClientQuota quota = defaults;
  if (policy.weight > 1) quota.weight = policy.weight;
  if (policy.max_connections > 0) quota.max_connections = policy.max_connections;
  if (policy.max_waiters > 0) quota.max_waiters = policy.max_waiters;
  if (policy.max_sessions > 0) quota.max_sessions = policy.max_sessions;
  if (policy.reserved_connections > 0) quota.reserved_connections = policy.reserved_connections;
  if (policy.statement_timeout_max > absl::ZeroDuration()) {
    quota.statement_timeout_max = policy.statement_timeout_max;
  }
  return quota;
}

ClientQuota DirectoryShares::QuotaFor(absl::string_view client_id) const {
  const std::shared_ptr<const ClientDirectory> directory = authenticator_.directory();
  if (directory == nullptr) return defaults_;
  const ClientDirectory::Policy policy = directory->Find(client_id);
  return policy == nullptr ? defaults_ : QuotaFromPolicy(*policy, defaults_);
}

std::vector<std::string> DirectoryShares::ReservedClients() const {
  std::vector<std::string> ids;
  const std::shared_ptr<const ClientDirectory> directory = authenticator_.directory();
  if (directory == nullptr) return ids;
  for (const ClientDirectory::Policy& policy : directory->clients()) {
    if (policy->reserved_connections > 0) ids.push_back(policy->id);
  }
  return ids;
}

}  // namespace sessionbroker::core
