#include "server/core/auth/authenticator.h"

#include <sodium.h>

#include <utility>

#include "server/core/auth/sodium_init.h"
#include "server/core/auth/token_hash.h"

namespace sessionbroker::core {

Authenticator::Authenticator(std::shared_ptr<const ClientDirectory> directory)
    : directory_(std::move(directory)) {
  EnsureSodium();
  randombytes_buf(key_.data(), key_.size());
}

void Authenticator::Replace(std::shared_ptr<const ClientDirectory> directory) {
  MutexLock lock(&mu_);
  directory_ = std::move(directory);
  ++generation_;
  verified_.clear();
  failed_.clear();
}

std::shared_ptr<const ClientDirectory> Authenticator::directory() const {
  MutexLock lock(&mu_);
  return directory_;
}

Authenticator::Digest Authenticator::DigestOf(absl::string_view token) const {
  Digest digest;
  crypto_generichash(digest.data(), digest.size(), reinterpret_cast<const uint8_t*>(token.data()),
                     token.size(), key_.data(), key_.size());
  return digest;
}

Authenticator::Policy Authenticator::VerifyToken(absl::string_view token, absl::string_view hint) {
  if (token.empty() || token.size() > kMaxTokenBytes) return nullptr;
  const Digest digest = DigestOf(token);
  std::shared_ptr<const ClientDirectory> directory;
  uint64_t generation;
  {
    MutexLock lock(&mu_);
    if (auto it = verified_.find(digest); it != verified_.end()) return it->second;
    if (failed_.contains(digest)) return nullptr;
    directory = directory_;
    generation = generation_;
  }
  Policy found = SlowVerify(*directory, token, hint);
  MutexLock lock(&mu_);
  // A reload while verifying: the result belongs to the old directory and is
  // not cached (the caller still gets it, as a call that began before).
  if (generation != generation_) return found;
  if (found != nullptr) {
    verified_.emplace(digest, found);
  } else {
    if (failed_.size() >= kMaxRememberedFailures) failed_.clear();
    failed_.insert(digest);
  }
  return found;
}

Authenticator::Policy Authenticator::SlowVerify(const ClientDirectory& directory,
                                                absl::string_view token, absl::string_view hint) {
  const auto matches = [&](const ClientPolicy& p) {
    for (const std::string& hash : p.token_hashes) {
      slow_verifications_.fetch_add(1);
      if (TokenMatches(hash, token)) return true;
    }
    return false;
  };
  Policy hinted = hint.empty() ? nullptr : directory.Find(hint);
  if (hinted != nullptr && matches(*hinted)) return hinted;
  for (const Policy& p : directory.clients()) {
    if (p != hinted && matches(*p)) return p;
  }
  return nullptr;
}

Authenticator::Policy Authenticator::MatchPeer(const PeerCertificate& peer) const {
  std::shared_ptr<const ClientDirectory> directory = this->directory();
  for (const std::string& id : peer.spiffe_ids) {
    if (Policy p = directory->FindBySpiffeId(id)) return p;
  }
  for (const std::string& subject : peer.subjects) {
    if (Policy p = directory->FindBySubject(subject)) return p;
  }
  return nullptr;
}

}  // namespace sessionbroker::core
