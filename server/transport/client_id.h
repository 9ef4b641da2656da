// Who is calling: the "x-client-id" request metadata a calling service sets
// on each call (its name, e.g. "billing"), used for per-client occupancy in
// PoolStatus and /metrics. "" when absent. Not authentication: any caller can
// send any id. Pure function; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_
#define SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_

#include <cstddef>
#include <string>

#include "grpcpp/grpcpp.h"

namespace sessionbroker::transport {

inline constexpr char kClientIdHeader[] = "x-client-id";
// Longer ids are cut to this many bytes (they become metric labels).
inline constexpr size_t kMaxClientIdBytes = 64;

std::string ClientIdOf(const grpc::ServerContextBase& context);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_CLIENT_ID_H_
