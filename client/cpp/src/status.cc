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

absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  const std::multimap<grpc::string_ref, grpc::string_ref>& trailers =
      context.GetServerTrailingMetadata();
  if (auto it = trailers.find("sqlstate"); it != trailers.end()) {
    out.SetPayload(kSqlStatePayloadUrl,
                   absl::Cord(absl::string_view(it->second.data(), it->second.size())));
  }
  if (auto it = trailers.find("sessionbroker-reason"); it != trailers.end()) {
    out.SetPayload(kReasonPayloadUrl,
                   absl::Cord(absl::string_view(it->second.data(), it->second.size())));
  }
  if (!status.error_details().empty()) {
    out.SetPayload(kRpcStatusPayloadUrl, absl::Cord(status.error_details()));
  }
  return out;
}

}  // namespace internal
}  // namespace sessionbroker
