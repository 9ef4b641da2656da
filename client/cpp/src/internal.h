// Internals of the C++ client shared by its .cc files (not installed): the
// data a Result shares with its Rows, the state of a RowStream and of a
// Subscription (their calls), and gRPC status conversion.
#ifndef SESSIONBROKER_CLIENT_SRC_INTERNAL_H_
#define SESSIONBROKER_CLIENT_SRC_INTERNAL_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/result.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::internal {

// What a Result and its Rows share; immutable once built.
struct ResultData {
  v1::ExecuteResponse response;
  std::vector<Column> columns;
};

// A StreamExecute call and what has been read of it (row_stream.cc). The
// rows of the message being read are `chunk`, shared with the Rows handed
// out; `next` is the index of the next one.
struct RowStreamState {
  // Keeps the client's channel alive while the call is open.
  std::shared_ptr<const void> owner;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::StreamExecuteResponse>> reader;
  std::vector<Column> columns;
  std::shared_ptr<const ResultData> chunk;
  int next = 0;
  int64_t rows_read = 0;
  bool ended = false;     // `end` received
  bool finished = false;  // the call is finished: status is final
  absl::Status status;
  std::string command_tag;
  int64_t rows_affected = 0;
};

// A Listen call (subscription.cc).
struct SubscriptionState {
  std::shared_ptr<const void> owner;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::ListenResponse>> reader;
  std::vector<std::string> channels;
  int32_t listener_pid = 0;
  std::atomic<bool> cancelled{false};
  bool finished = false;
  absl::Status status;
};

// The absl::Status of a finished call: the gRPC code and message, and as
// payloads (status.h) the "sqlstate" and "sessionbroker-reason" trailers and
// the grpc-status-details-bin bytes.
absl::Status FromGrpc(const grpc::Status& status, const grpc::ClientContext& context);

// The same for a Pipeline call's failed result (PipelineResult.status with
// its sqlstate and reason): the Status the unary call would have returned.
absl::Status FromPipeline(const v1::RpcStatus& status, const std::string& sqlstate,
                          const std::string& reason);

}  // namespace sessionbroker::internal

#endif  // SESSIONBROKER_CLIENT_SRC_INTERNAL_H_
