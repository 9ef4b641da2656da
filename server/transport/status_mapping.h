// The one place where an absl::Status becomes a grpc::Status. absl status
// codes are the google.rpc codes, so the code carries over unchanged; the
// SQLSTATE a status carries (storage/sql_error.h) is added to the trailing
// metadata as "sqlstate", and the session layer's reason token
// (core/session/session_manager.h) as "sessionbroker-reason". An error
// PostgreSQL reported (a status with storage::SqlErrorFields) also gets its
// fields as the status details: a sessionbroker.v1.RpcStatus holding one
// SqlErrorDetail, which gRPC sends as the "grpc-status-details-bin" trailer.
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_STATUS_MAPPING_H_
#define SESSIONBROKER_SERVER_TRANSPORT_STATUS_MAPPING_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/storage/sql_error.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

inline constexpr char kSqlStateMetadataKey[] = "sqlstate";
inline constexpr char kReasonMetadataKey[] = "sessionbroker-reason";

// The SqlErrorDetail sent for `fields`.
v1::SqlErrorDetail SqlErrorDetailFrom(const storage::SqlErrorFields& fields);

// `context` may be null (no metadata is added then; the details still go
// with the status).
grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContextBase* context);

// For a call inside a stream (Pipeline): `status` (not OK) as the message a
// unary call's "grpc-status-details-bin" would carry (the same code, message
// and SqlErrorDetail), plus what its trailers would: the SQLSTATE and the
// session layer's reason ("" when none).
void StatusToProto(const absl::Status& status, v1::RpcStatus* out, std::string* sqlstate,
                   std::string* reason);

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_STATUS_MAPPING_H_
