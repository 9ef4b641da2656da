// ReflectionService: gRPC server reflection, both grpc.reflection.v1 (which
// newer grpcurl asks for first) and grpc.reflection.v1alpha (what older
// clients speak), from one implementation over the generated descriptor pool
// of this binary. gRPC 1.51's reflection plugin serves only v1alpha, and
// could not describe its built-in health service; every service the broker
// registers (sessionbroker.v1.*, grpc.health.v1.Health, both reflection
// services) is compiled into this binary from its .proto, so each one lists,
// describes and resolves here.
//
// Answers, as gRPC's own implementation does: list_services (the names given
// at construction), file_by_filename, file_containing_symbol,
// file_containing_extension, all_extension_numbers_of_type; a file comes
// with its transitive dependencies (each once per response), so a client
// can build every type from one answer. Unknown names get an error_response
// with NOT_FOUND; the stream goes on.
//
// One request is answered at a time per stream (read, answer, write, read).
// Thread-safe; the descriptor pool is immutable once main runs.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_REFLECTION_SERVICE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_REFLECTION_SERVICE_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/transport/call_gate.h"

namespace sessionbroker::transport {

// The generated types of one reflection protocol version.
struct ReflectionV1 {
  using Service = grpc::reflection::v1::ServerReflection;
  using Request = grpc::reflection::v1::ServerReflectionRequest;
  using Response = grpc::reflection::v1::ServerReflectionResponse;
};
struct ReflectionV1Alpha {
  using Service = grpc::reflection::v1alpha::ServerReflection;
  using Request = grpc::reflection::v1alpha::ServerReflectionRequest;
  using Response = grpc::reflection::v1alpha::ServerReflectionResponse;
};

template <typename Version>
class ReflectionService final : public Version::Service::CallbackService {
 public:
  using Request = typename Version::Request;
  using Response = typename Version::Response;

  // `services`: the fully qualified names list_services answers with.
  // `gate`: who may call (BROKER_AUTH_EXEMPT_SERVICES); refused, the stream
  // ends at once with its status (UNAUTHENTICATED).
  explicit ReflectionService(std::vector<std::string> services, CallGate gate = CallGate());
  ReflectionService(const ReflectionService&) = delete;
  ReflectionService& operator=(const ReflectionService&) = delete;

  grpc::ServerBidiReactor<Request, Response>* ServerReflectionInfo(
      grpc::CallbackServerContext* context) override;

  // The answer to one request (what the stream writes back).
  void Answer(const Request& request, Response* response) const;

 private:
  class Reactor;

  const std::vector<std::string> services_;
  const CallGate gate_;
};

extern template class ReflectionService<ReflectionV1>;
extern template class ReflectionService<ReflectionV1Alpha>;
using ReflectionV1Service = ReflectionService<ReflectionV1>;
using ReflectionV1AlphaService = ReflectionService<ReflectionV1Alpha>;

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_REFLECTION_SERVICE_H_
