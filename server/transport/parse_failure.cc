#include "server/transport/parse_failure.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace sessionbroker::transport {
namespace {

thread_local const std::string* t_parse_failure = nullptr;

}  // namespace

std::string UnparseableRequestMessage(absl::string_view request_type,
                                      absl::string_view proto_file) {
  return absl::StrCat(request_type,
                      " could not be parsed: the request's bytes are not that protobuf message "
                      "(does the client use the broker's ",
                      proto_file, "?)");
}

const std::string* CurrentParseFailure() { return t_parse_failure; }

ParseFailureReporter::ParseFailureReporter(std::string message,
                                           grpc::internal::MethodHandler* inner)
    : message_(std::move(message)), inner_(inner) {}

void ParseFailureReporter::RunHandler(const HandlerParameter& param) {
  if (param.status.ok()) {
    inner_->RunHandler(param);
    return;
  }
  t_parse_failure = &message_;
  inner_->RunHandler(HandlerParameter(param.call, param.server_context, param.request,
                                      grpc::Status::OK, param.internal_data, param.call_requester));
  t_parse_failure = nullptr;
}

void* ParseFailureReporter::Deserialize(grpc_call* call, grpc_byte_buffer* request,
                                        grpc::Status* status, void** handler_data) {
  return inner_->Deserialize(call, request, status, handler_data);
}

}  // namespace sessionbroker::transport
