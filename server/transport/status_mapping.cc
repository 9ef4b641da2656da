#include "server/transport/status_mapping.h"

#include <string>

#include "server/core/session/session_manager.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::transport {

grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContextBase* context) {
  if (status.ok()) return grpc::Status::OK;
  if (context != nullptr) {
    if (std::optional<std::string> sqlstate = storage::SqlStateOf(status)) {
      context->AddTrailingMetadata(kSqlStateMetadataKey, *sqlstate);
    }
    if (absl::optional<absl::Cord> reason = status.GetPayload(core::kSessionReasonPayloadUrl)) {
      context->AddTrailingMetadata(kReasonMetadataKey, std::string(*reason));
    }
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace sessionbroker::transport
