// Who is calling: the "x-client-id" request metadata a calling service sets
// on each call (its name, e.g. "billing"), used for per-client occupancy in
// PoolStatus and /metrics. "" when absent. Not authentication: any caller can
// send any id. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_
#define SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"

namespace sessionbroker::transport {

inline constexpr char kClientIdHeader[] = "x-client-id";
// Longer ids are cut to this many bytes (they become metric labels).
inline constexpr size_t kMaxClientIdBytes = 64;

std::string ClientIdOf(const grpc::ServerContextBase& context);

// The client id for a raw header value. The id becomes a proto3 string and a
// Prometheus label value, which must both be UTF-8, while HTTP/2 lets a
// caller send any bytes (gRPC's server does not check): bytes that are not
// UTF-8 become U+FFFD, and the cut to kMaxClientIdBytes never splits a
// character.
std::string ClientIdFromHeader(absl::string_view value);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_
