#include "server/transport/status_mapping.h"

#include <optional>
#include <string>

#include "google/protobuf/any.pb.h"
#include "server/core/session/session_manager.h"
#include "server/storage/sql_error.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

v1::SqlErrorDetail SqlErrorDetailFrom(const storage::SqlErrorFields& fields) {
  v1::SqlErrorDetail out;
  out.set_sqlstate(fields.sqlstate);
  out.set_severity(fields.severity);
  out.set_message(fields.message);
  out.set_detail(fields.detail);
  out.set_hint(fields.hint);
  out.set_position(fields.position);
  out.set_schema_name(fields.schema_name);
  out.set_table_name(fields.table_name);
  out.set_column_name(fields.column_name);
  out.set_data_type_name(fields.data_type_name);
  out.set_constraint_name(fields.constraint_name);
  out.set_statement_index(fields.statement_index);
  return out;
}

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
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  std::optional<storage::SqlErrorFields> fields = storage::SqlErrorFieldsOf(status);
  if (!fields.has_value()) return grpc::Status(code, std::move(message));
  v1::RpcStatus rpc_status;
  rpc_status.set_code(static_cast<int32_t>(status.code()));
  rpc_status.set_message(message);
  rpc_status.add_details()->PackFrom(SqlErrorDetailFrom(*fields));
  // gRPC sends these bytes as the grpc-status-details-bin trailer.
  return grpc::Status(code, std::move(message), rpc_status.SerializeAsString());
}

void StatusToProto(const absl::Status& status, v1::RpcStatus* out, std::string* sqlstate,
                   std::string* reason) {
  out->set_code(static_cast<int32_t>(status.code()));
  out->set_message(std::string(status.message()));
  if (std::optional<storage::SqlErrorFields> fields = storage::SqlErrorFieldsOf(status)) {
    out->add_details()->PackFrom(SqlErrorDetailFrom(*fields));
  }
  std::optional<std::string> state = storage::SqlStateOf(status);
  *sqlstate = state.has_value() ? *std::move(state) : std::string();
  absl::optional<absl::Cord> why = status.GetPayload(core::kSessionReasonPayloadUrl);
  *reason = why.has_value() ? std::string(*why) : std::string();
}

}  // namespace sessionbroker::transport
