#include "server/transport/call_identity.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/transport/client_id.h"

namespace sessionbroker::transport {
namespace {

constexpr char kHowToAuthenticate[] =
    "send metadata `authorization: Bearer <token>` with a token listed (hashed) in the broker's "
    "clients file, or connect with a client certificate the clients file maps to a client "
    "(docs/security.md)";

std::vector<std::string> Values(const grpc::AuthContext& context, const char* name) {
  std::vector<std::string> out;
  for (const grpc::string_ref& v : context.FindPropertyValues(name)) {
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

}  // namespace

core::PeerCertificate PeerCertificateOf(const grpc::AuthContext& context) {
  core::PeerCertificate peer;
  if (!context.IsPeerAuthenticated()) return peer;
  peer.spiffe_ids = Values(context, "peer_spiffe_id");
  peer.subjects = Values(context, "x509_subject");
  return peer;
}

absl::StatusOr<CallIdentity> CallAuthenticator::Identify(
    const grpc::ServerContextBase& context) const {
  if (auth_ == nullptr) return CallIdentity{ClientIdOf(context), nullptr};
  const auto& metadata = context.client_metadata();
  std::string authorization;
  const bool has_authorization = [&] {
    auto it = metadata.find(kAuthorizationHeader);
    if (it == metadata.end()) return false;
    authorization.assign(it->second.data(), it->second.size());
    return true;
  }();
  core::PeerCertificate peer;
  if (!has_authorization) {
    std::shared_ptr<const grpc::AuthContext> auth_context = context.auth_context();
    if (auth_context != nullptr) peer = PeerCertificateOf(*auth_context);
  }
  return Identify(has_authorization ? &authorization : nullptr, ClientIdOf(context), peer);
}

absl::StatusOr<CallIdentity> CallAuthenticator::Identify(const std::string* authorization,
                                                         const std::string& declared_id,
                                                         const core::PeerCertificate& peer) const {
  if (auth_ == nullptr) return CallIdentity{declared_id, nullptr};
  if (authorization != nullptr) {
    absl::string_view value = absl::StripAsciiWhitespace(*authorization);
    // RFC 6750: the scheme is case-insensitive.
    if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the authorization metadata is not of the form `Bearer <token>`; ", kHowToAuthenticate));
    }
    value.remove_prefix(7);
    value = absl::StripLeadingAsciiWhitespace(value);
    std::shared_ptr<const core::ClientPolicy> policy = auth_->VerifyToken(value, declared_id);
    if (policy == nullptr) {
      return absl::UnauthenticatedError(
          "the bearer token is not valid: it matches no client of the broker's clients file "
          "(check the token, or whether the client was removed or its token rotated)");
    }
    return CallIdentity{policy->id, std::move(policy)};
  }
  if (!peer.spiffe_ids.empty() || !peer.subjects.empty()) {
    std::shared_ptr<const core::ClientPolicy> policy = auth_->MatchPeer(peer);
    if (policy == nullptr) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the client certificate (",
          peer.spiffe_ids.empty() ? absl::StrCat("subject \"", peer.subjects.front(), "\"")
                                  : absl::StrCat("SPIFFE id \"", peer.spiffe_ids.front(), "\""),
          ") is mapped to no client in the broker's clients file (spiffe_ids, cert_subjects)"));
    }
    return CallIdentity{policy->id, std::move(policy)};
  }
  return absl::UnauthenticatedError(
      absl::StrCat("this broker requires authentication: ", kHowToAuthenticate));
}

}  // namespace sessionbroker::transport
