// Unparseable requests answered INVALID_ARGUMENT with a message, for every
// service's unary and server-streaming methods. gRPC's generated handlers
// answer a request whose bytes do not parse with UNIMPLEMENTED and no
// message; ParseFailureReporter wraps such a handler and, when parsing
// failed, runs it as if it had not (the handler then calls the method with a
// null request) while CurrentParseFailure() names the failure, so the
// method's wrapper answers INVALID_ARGUMENT instead of calling the method.
//
// The thread-local failure is set only around the wrapped handler's
// RunHandler, which calls the method synchronously on the same thread.
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_PARSE_FAILURE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_PARSE_FAILURE_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/rpc_service_method.h"

namespace sessionbroker::transport {

// INVALID_ARGUMENT's message for a request that is not a `request_type`
// (full protobuf name) message; `proto_file` names the contract's file.
std::string UnparseableRequestMessage(
    absl::string_view request_type,
    absl::string_view proto_file = "proto/sessionbroker/v1/broker.proto");

// The message for the request of the call this thread is setting up, when it
// could not be parsed; null otherwise.
const std::string* CurrentParseFailure();

// Wraps a generated unary or server-streaming handler (owned).
class ParseFailureReporter final : public grpc::internal::MethodHandler {
 public:
  ParseFailureReporter(std::string message, grpc::internal::MethodHandler* inner);

  void RunHandler(const HandlerParameter& param) override;
  void* Deserialize(grpc_call* call, grpc_byte_buffer* request, grpc::Status* status,
                    void** handler_data) override;

 private:
  const std::string message_;
  const std::unique_ptr<grpc::internal::MethodHandler> inner_;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_PARSE_FAILURE_H_
