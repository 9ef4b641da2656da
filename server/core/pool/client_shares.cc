#include "server/core/pool/client_shares.h"

#include "absl/strings/str_cat.h"

namespace sessionbroker::core {

std::string ClientLabel(absl::string_view client_id) {
  if (client_id.empty()) return "the client without an id (no x-client-id)";
  return absl::StrCat("client \"", client_id, "\"");
}

}  // namespace sessionbroker::core
