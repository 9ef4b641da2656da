// Who is calling, for every service: CallAuthenticator turns a call's
// metadata and TLS peer into a CallIdentity.
//
//  * With a clients file (BROKER_CLIENTS_FILE) a caller proves its identity
//    with `authorization: Bearer <token>` metadata, or a verified client
//    certificate whose SPIFFE URI SAN or subject the file maps to a client.
//    Anything else is UNAUTHENTICATED with a message saying what to send.
//    The self-declared x-client-id is then ignored for identity (it is only
//    a hint of which hash to try first); the authenticated id is what
//    sessions, pool occupancy, metrics, quotas and logs see.
//  * Without one, x-client-id is taken at its word, as before, and every
//    caller may see and end every session: there is nothing to check it
//    against (docs/security.md says so).
//
// Tokens never leave this file: no message, log line or identity holds one.
// Thread-safe; a copyable handle (the Authenticator outlives it).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_CALL_IDENTITY_H_
#define SESSIONBROKER_SERVER_TRANSPORT_CALL_IDENTITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/client_policy.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::transport {

inline constexpr char kAuthorizationHeader[] = "authorization";

struct CallIdentity {
  // The authenticated client id; without a clients file, x-client-id ("" if
  // absent).
  std::string client_id;
  // The client's policy; null without a clients file.
  std::shared_ptr<const core::ClientPolicy> policy;

  bool admin() const { return policy == nullptr || policy->admin(); }
  bool may_monitor() const { return policy == nullptr || policy->may_monitor(); }
  // For the session layer: an admin (or a broker without a clients file)
  // sees every session, anyone else only its own.
  core::Caller caller() const { return core::Caller{client_id, admin()}; }
};

// What the TLS layer verified about the peer: SPIFFE ids (peer_spiffe_id)
// and subjects (x509_subject), only when the peer is authenticated (a
// certificate that was not verified proves nothing).
core::PeerCertificate PeerCertificateOf(const grpc::AuthContext& context);

class CallAuthenticator final {
 public:
  // No clients file: x-client-id is the identity.
  CallAuthenticator() = default;
  explicit CallAuthenticator(core::Authenticator* authenticator) : auth_(authenticator) {}

  bool enabled() const { return auth_ != nullptr; }
  absl::StatusOr<CallIdentity> Identify(const grpc::ServerContextBase& context) const;
  // The same from the parts, for tests: the `authorization` value (null when
  // absent), x-client-id, and the peer's certificate.
  absl::StatusOr<CallIdentity> Identify(const std::string* authorization,
                                        const std::string& declared_id,
                                        const core::PeerCertificate& peer) const;

 private:
  core::Authenticator* auth_ = nullptr;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_CALL_IDENTITY_H_
