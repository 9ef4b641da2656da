#include "server/transport/client_id.h"

#include <algorithm>

namespace sessionbroker::transport {

std::string ClientIdOf(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kClientIdHeader);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), std::min(it->second.size(), kMaxClientIdBytes));
}

}  // namespace sessionbroker::transport
