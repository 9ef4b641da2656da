#include "server/transport/peer_identity.h"

#include "grpc/grpc_security_constants.h"

namespace sessionbroker::transport {
namespace {

std::vector<std::string> All(const grpc::AuthContext& context, const char* name) {
  std::vector<std::string> out;
  for (const grpc::string_ref& v : context.FindPropertyValues(name)) {
    out.emplace_back(v.data(), v.size());
  }
  return out;
}

std::string First(const grpc::AuthContext& context, const char* name) {
  std::vector<std::string> values = All(context, name);
  return values.empty() ? std::string() : std::move(values.front());
}

}  // namespace

PeerIdentity ReadPeerIdentity(const grpc::AuthContext& context) {
  PeerIdentity id;
  // "tls" from TlsServerCredentials (the broker's), "ssl" from
  // SslServerCredentials.
  const std::string type = First(context, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
  id.tls = type == "tls" || type == GRPC_SSL_TRANSPORT_SECURITY_TYPE;
  id.subject = First(context, GRPC_X509_SUBJECT_PROPERTY_NAME);
  id.common_name = First(context, GRPC_X509_CN_PROPERTY_NAME);
  id.spiffe_id = First(context, GRPC_PEER_SPIFFE_ID_PROPERTY_NAME);
  id.uri_sans = All(context, GRPC_PEER_URI_PROPERTY_NAME);
  id.dns_sans = All(context, GRPC_PEER_DNS_PROPERTY_NAME);
  // gRPC sets the PEM of the peer's certificate whenever it got (and
  // verified) one; the subject alone could be empty.
  id.has_certificate = id.tls && !First(context, GRPC_X509_PEM_CERT_PROPERTY_NAME).empty();
  return id;
}

}  // namespace sessionbroker::transport
