// CallGate: whether a call to a service that is open by default
// (grpc.health.v1.Health, server reflection) must authenticate first.
// BROKER_AUTH_EXEMPT_SERVICES names the services that need no credentials
// while a clients file is on; BrokerServer gives each of those services a
// gate that admits everyone, and the others a gate that asks the
// CallAuthenticator (the same check SessionBroker and PoolMonitor make), so
// an operator can close health and reflection too.
//
// RefusedReactor is what a streaming method returns for a call its gate
// refused: it finishes with the refusal at once and deletes itself in
// OnDone (the gRPC reactor idiom; it stays in transport/).
//
// Immutable and copyable; thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_CALL_GATE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_CALL_GATE_H_

#include <utility>

#include "grpcpp/grpcpp.h"
#include "server/transport/call_identity.h"

namespace sessionbroker::transport {

class CallGate final {
 public:
  // Admits every call (an exempt service, or no clients file).
  CallGate() = default;
  // Admits a call only if `auth` identifies its caller (always, when `auth`
  // is not enabled: without a clients file there is nothing to check).
  explicit CallGate(CallAuthenticator auth) : auth_(auth) {}

  // OK, or the caller's refusal (UNAUTHENTICATED, saying what to send).
  grpc::Status Admit(grpc::ServerContextBase* context) const;

 private:
  CallAuthenticator auth_;
};

// A streaming call refused before it started: Finish(status) at once.
template <typename Base>
class RefusedReactor final : public Base {
 public:
  explicit RefusedReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_CALL_GATE_H_
