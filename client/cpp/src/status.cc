#include "sessionbroker/status.h"

#include <string>

#include "absl/strings/cord.h"
#include "client/cpp/src/internal.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker {
namespace {

std::optional<std::string> PayloadText(const absl::Status& status, absl::string_view url) {
  auto payload = status.GetPayload(url);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

}  // namespace

std::optional<std::string> SqlStateOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  if (std::optional<std::string> s = PayloadText(status, kSqlStatePayloadUrl)) return s;
  if (std::optional<SqlError> e = SqlErrorOf(status); e && !e->sqlstate.empty()) {
    return e->sqlstate;
  }
  return std::nullopt;
}

std::optional<SqlError> SqlErrorOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  std::optional<std::string> raw = PayloadText(status, kRpcStatusPayloadUrl);
  if (!raw.has_value()) return std::nullopt;
  v1::RpcStatus rpc;
  if (!rpc.ParseFromString(*raw)) return std::nullopt;
  for (const google::protobuf::Any& any : rpc.details()) {
    v1::SqlErrorDetail d;
    if (!any.Is<v1::SqlErrorDetail>() || !any.UnpackTo(&d)) continue;
    SqlError e;
    e.sqlstate = d.sqlstate();
    e.severity = d.severity();
    e.message = d.message();
    e.detail = d.detail();
    e.hint = d.hint();
    e.position = d.position();
    e.schema = d.schema_name();
    e.table = d.table_name();
    e.column = d.column_name();
    e.datatype = d.data_type_name();
    e.constraint = d.constraint_name();
    e.statement_index = d.statement_index();
    return e;
  }
  return std::nullopt;
}

std::optional<std::string> ReasonOf(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  return PayloadText(status, kReasonPayloadUrl);
}

bool IsRetryableTransactionError(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kAborted) return true;
  std::optional<std::string> state = SqlStateOf(status);
  return state.has_value() && (*state == "40001" || *state == "40P01");
}

namespace internal {

namespace {

// The one place a broker's error becomes an absl::Status, whichever way it
// came: the code and message, and the payloads status.h reads.
absl::Status WithPayloads(int code, absl::string_view message, absl::string_view sqlstate,
                          absl::string_view reason, absl::string_view details) {
  absl::Status out(static_cast<absl::StatusCode>(code), message);
  if (!sqlstate.empty()) out.SetPayload(kSqlStatePayloadUrl, absl::Cord(sqlstate));
  if (!reason.empty()) out.SetPayload(kReasonPayloadUrl, absl::Cord(reason));
  if (!details.empty()) out.SetPayload(kRpcStatusPayloadUrl, absl::Cord(details));
  return out;
}

absl::string_view TrailerOf(const std::multimap<grpc::string_ref, grpc::string_ref>& trailers,
                            absl::string_view key) {
  auto it = trailers.find(grpc::string_ref(key.data(), key.size()));
  if (it == trailers.end()) return absl::string_view();
  return absl::string_view(it->second.data(), it->second.size());
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context) {
  if (status.ok()) return absl::OkStatus();
  const std::multimap<grpc::string_ref, grpc::string_ref>& trailers =
      context.GetServerTrailingMetadata();
  return WithPayloads(status.error_code(), status.error_message(), TrailerOf(trailers, "sqlstate"),
                      TrailerOf(trailers, "sessionbroker-reason"), status.error_details());
}

absl::Status FromPipeline(const v1::RpcStatus& status, const std::string& sqlstate,
                          const std::string& reason) {
  if (status.code() == 0) return absl::OkStatus();
  // The unary call sends grpc-status-details-bin only with a SqlErrorDetail
  // (server/transport/status_mapping.cc), the same RpcStatus message.
  std::string details;
  if (status.details_size() > 0) details = status.SerializeAsString();
  return WithPayloads(status.code(), status.message(), sqlstate, reason, details);
}

}  // namespace internal
}  // namespace sessionbroker
