// Authenticator: who a caller is, from the clients file's current
// directory. Two proofs: a bearer token (checked against the argon2 hashes,
// slow by design) and a verified mTLS certificate (its SPIFFE URI SAN or its
// subject, looked up exactly).
//
// Token verification costs tens of milliseconds, so a success is cached in
// memory keyed by a keyed BLAKE2b digest of the token (the key is random per
// process: the cache never holds the token or anything that could be looked
// up offline); a failure is cached too, in a bounded set, so a client
// retrying a wrong token does not cost an argon2 run per call. Replace()
// (a reload) clears both. A cache hit costs one BLAKE2b of the token and one
// hash lookup under a short lock.
//
// Thread-safe. Verification runs outside the lock.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_AUTHENTICATOR_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_AUTHENTICATOR_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "server/core/auth/client_directory.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

// What a verified client certificate says, as gRPC's auth context gives it.
struct PeerCertificate {
  std::vector<std::string> spiffe_ids;  // peer_spiffe_id
  std::vector<std::string> subjects;    // x509_subject
};

class Authenticator final {
 public:
  using Policy = ClientDirectory::Policy;
  // Failed digests remembered; the set is cleared when full.
  static constexpr size_t kMaxRememberedFailures = 4096;

  explicit Authenticator(std::shared_ptr<const ClientDirectory> directory);
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // A new directory (the file changed); forgets every cached verification.
  void Replace(std::shared_ptr<const ClientDirectory> directory);
  std::shared_ptr<const ClientDirectory> directory() const;

  // The client `token` belongs to, nullptr if none. `hint` (a self-declared
  // client id, may be empty) is tried first, so that a miss costs one argon2
  // run rather than one per client.
  Policy VerifyToken(absl::string_view token, absl::string_view hint = "");
  // The client a certificate maps to (SPIFFE id first, then subject),
  // nullptr if none.
  Policy MatchPeer(const PeerCertificate& peer) const;

  // argon2 runs so far (tests prove the cache with it).
  int64_t slow_verifications() const { return slow_verifications_.load(); }

 private:
  using Digest = std::array<uint8_t, 32>;
  Digest DigestOf(absl::string_view token) const;
  Policy SlowVerify(const ClientDirectory& directory, absl::string_view token,
                    absl::string_view hint);

  std::array<uint8_t, 32> key_;  // BLAKE2b key, random per process
  mutable Mutex mu_;
  std::shared_ptr<const ClientDirectory> directory_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<Digest, Policy> verified_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Digest> failed_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> slow_verifications_{0};
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_AUTHENTICATOR_H_
