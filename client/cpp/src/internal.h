// Internals of the C++ client shared by its .cc files (not installed): the
// data a Result shares with its Rows, and gRPC status conversion.
#ifndef SESSIONBROKER_CLIENT_SRC_INTERNAL_H_
#define SESSIONBROKER_CLIENT_SRC_INTERNAL_H_

#include <vector>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/result.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::internal {

// What a Result and its Rows share; immutable once built.
struct ResultData {
  v1::ExecuteResponse response;
  std::vector<Column> columns;
};

// The absl::Status of a finished call: the gRPC code and message, and as
// payloads (status.h) the "sqlstate" and "sessionbroker-reason" trailers and
// the grpc-status-details-bin bytes.
absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context);

}  // namespace sessionbroker::internal

#endif  // SESSIONBROKER_CLIENT_SRC_INTERNAL_H_
