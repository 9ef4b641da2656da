#include "server/transport/call_gate.h"

#include "server/transport/status_mapping.h"

namespace sessionbroker::transport {

grpc::Status CallGate::Admit(grpc::ServerContextBase* context) const {
  if (!auth_.enabled()) return grpc::Status::OK;
  absl::StatusOr<CallIdentity> who = auth_.Identify(*context);
  if (who.ok()) return grpc::Status::OK;
  return ToGrpcStatus(who.status(), context);
}

}  // namespace sessionbroker::transport
