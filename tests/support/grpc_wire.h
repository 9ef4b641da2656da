// Minimal clients for the two standard services the broker serves but whose
// generated stubs Debian does not ship: grpc.health.v1.Health and
// grpc.reflection.v1alpha.ServerReflection. Messages are built and read with
// protobuf's UnknownFieldSet (field numbers from the public service
// definitions), so no third-party .proto is needed. Also raw calls, which
// send bytes as they are (for requests no stub would build). Functions are
// thread-safe; a HealthWatch is used by one thread.
#ifndef SESSIONBROKER_TESTS_SUPPORT_GRPC_WIRE_H_
#define SESSIONBROKER_TESTS_SUPPORT_GRPC_WIRE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace sessionbroker::testing {

enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// grpc.health.v1.Health/Check for `service` ("" = the whole server).
absl::StatusOr<ServingStatus> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                          const std::string& service,
                                          absl::Duration timeout = absl::Seconds(5));

// Polls HealthCheck until it reports `want` or `timeout` passes.
bool WaitForHealth(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                   ServingStatus want, absl::Duration timeout);

// Opens grpc.health.v1.Health/Watch and returns the first `count` statuses
// the server streams (the current one first, then each change).
class HealthWatch {
 public:
  HealthWatch(const std::shared_ptr<grpc::Channel>& channel, const std::string& service);
  ~HealthWatch();
  // Blocks for the next streamed status (up to `timeout`).
  absl::StatusOr<ServingStatus> Next(absl::Duration timeout);

 private:
  grpc::ClientContext context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  bool started_ = false;
};

// ServerReflectionInfo list_services: the fully-qualified service names.
absl::StatusOr<std::vector<std::string>> ReflectionListServices(
    const std::shared_ptr<grpc::Channel>& channel);

// ServerReflectionInfo file_containing_symbol: the method names of `service`
// found in the returned FileDescriptorProtos.
absl::StatusOr<std::vector<std::string>> ReflectionDescribeService(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service);

// Calls unary `method` ("/package.Service/Method") with `request_bytes` as
// the request message, unchanged, and returns the call's status.
grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& request_bytes,
                          absl::Duration timeout = absl::Seconds(10));

// Opens the streaming `method`, writes `request_bytes` as one message, reads
// until the server ends the stream (without closing the client's side first)
// and returns the stream's status.
grpc::Status RawStreamCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                           const std::string& request_bytes,
                           absl::Duration timeout = absl::Seconds(10));

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_TESTS_SUPPORT_GRPC_WIRE_H_
