// ClientDirectory: the parsed, validated clients file (BROKER_CLIENTS_FILE),
// YAML or JSON (JSON is YAML), and the lookups authentication needs: a client
// by id, by SPIFFE id, by certificate subject. Parse refuses anything it does
// not understand (unknown keys, a plain-text token, duplicate ids or
// identities, bad numbers) with INVALID_ARGUMENT naming the client and field,
// and never repeats a token-hash value in a message (it might be a token
// pasted by mistake).
//
// Immutable after Parse; shared between threads as
// shared_ptr<const ClientDirectory> (a reload makes a new one).
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_DIRECTORY_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_DIRECTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/core/auth/client_policy.h"

namespace sessionbroker::core {

// Client ids become metric labels and log fields.
inline constexpr size_t kMaxClientIdLength = 64;

class ClientDirectory final {
 public:
  using Policy = std::shared_ptr<const ClientPolicy>;

  // `text`: the file's contents. Format (docs/security.md):
  //   clients:
  //     - id: billing
  //       token_hashes: ["$argon2id$..."]
  //       roles: [admin]
  //       ...
  static absl::StatusOr<std::shared_ptr<const ClientDirectory>> Parse(absl::string_view text);

  const std::vector<Policy>& clients() const { return clients_; }
  // nullptr when absent.
  Policy Find(absl::string_view id) const;
  Policy FindBySpiffeId(absl::string_view spiffe_id) const;
  Policy FindBySubject(absl::string_view subject) const;

 private:
  ClientDirectory() = default;

  std::vector<Policy> clients_;
  absl::flat_hash_map<std::string, Policy> by_id_;
  absl::flat_hash_map<std::string, Policy> by_spiffe_;
  absl::flat_hash_map<std::string, Policy> by_subject_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_CLIENT_DIRECTORY_H_
