// PeerIdentity: what a caller's verified TLS client certificate says about
// it, read from gRPC's AuthContext into plain data, so that code mapping
// callers to client ids (the clients file) needs no gRPC security types.
// gRPC fills these properties only for a certificate it verified against
// BROKER_TLS_CLIENT_CA during the handshake (an unverifiable one fails the
// handshake), so anything here can be trusted as the caller's identity;
// a plaintext call, or a TLS call without a client certificate
// (BROKER_TLS_CLIENT_AUTH=optional), has has_certificate false.
// Pure function over its argument; thread-compatible.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_PEER_IDENTITY_H_
#define SESSIONBROKER_SERVER_TRANSPORT_PEER_IDENTITY_H_

#include <string>
#include <vector>

#include "grpcpp/security/auth_context.h"

namespace sessionbroker::transport {

struct PeerIdentity {
  // The call came over TLS (gRPC's transport_security_type "tls" or "ssl").
  bool tls = false;
  // A verified client certificate was presented; the fields below are its.
  bool has_certificate = false;
  // The subject, as gRPC renders it (e.g. "CN=orders,O=shop").
  std::string subject;
  std::string common_name;
  // The SPIFFE ID: the single spiffe:// URI SAN, if the certificate has
  // exactly one (gRPC leaves it empty otherwise).
  std::string spiffe_id;
  std::vector<std::string> uri_sans;
  std::vector<std::string> dns_sans;
};

// Reads the identity of the peer of one call (ServerContext::auth_context(),
// CallbackServerContext too). Never fails: absent properties stay empty.
PeerIdentity ReadPeerIdentity(const grpc::AuthContext& context);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_PEER_IDENTITY_H_
