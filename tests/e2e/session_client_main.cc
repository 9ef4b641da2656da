// A client of the broker that the session e2e tests kill: it begins a
// session, holds it with a KeepAlive stream, opens a transaction, inserts a
// row, reports, and then sleeps until it is killed.
//
//   session_e2e_client BROKER_ADDRESS TABLE
//
// Writes "SESSION <name>" and then "READY" to stdout once the row is inserted
// (uncommitted); on any failure it writes "ERROR <what>" and exits 1.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace v1 = sessionbroker::v1;

namespace {

int Fail(const std::string& what, const grpc::Status& status) {
  std::printf("ERROR %s: %d %s\n", what.c_str(), static_cast<int>(status.error_code()),
              status.error_message().c_str());
  std::fflush(stdout);
  return 1;
}

void Deadline(grpc::ClientContext& context) {
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

}  // namespace

int main(int argc, char** argv) {
  // Never outlive the test that started us.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BROKER_ADDRESS TABLE\n", argv[0]);
    return 2;
  }
  const std::string address = argv[1];
  const std::string table = argv[2];
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::SessionBroker::NewStub(channel);

  v1::Session session;
  {
    grpc::ClientContext context;
    Deadline(context);
    context.AddMetadata("x-client-id", "killed-client");
    v1::BeginSessionRequest request;
    request.set_label("session_e2e_client");
    grpc::Status status = stub->BeginSession(&context, request, &session);
    if (!status.ok()) return Fail("BeginSession", status);
  }

  // Held for as long as this process lives: the context and stream stay open.
  grpc::ClientContext keep_alive_context;
  auto stream = stub->KeepAlive(&keep_alive_context);
  {
    v1::KeepAliveRequest hold;
    hold.add_hold(session.name());
    if (!stream->Write(hold)) return Fail("KeepAlive write", grpc::Status::CANCELLED);
    v1::KeepAliveResponse response;
    if (!stream->Read(&response) || response.sessions_size() != 1 ||
        response.sessions(0).state() != v1::SessionState::HELD) {
      return Fail("KeepAlive did not answer HELD", grpc::Status::CANCELLED);
    }
  }

  {
    grpc::ClientContext context;
    Deadline(context);
    v1::BeginTransactionRequest request;
    request.set_session(session.name());
    v1::BeginTransactionResponse response;
    grpc::Status status = stub->BeginTransaction(&context, request, &response);
    if (!status.ok()) return Fail("BeginTransaction", status);
  }
  {
    grpc::ClientContext context;
    Deadline(context);
    v1::ExecuteRequest request;
    request.set_session(session.name());
    request.set_sql("INSERT INTO " + table + " VALUES (1)");
    v1::ExecuteResponse response;
    grpc::Status status = stub->Execute(&context, request, &response);
    if (!status.ok()) return Fail("INSERT", status);
  }

  std::printf("SESSION %s\nREADY\n", session.name().c_str());
  std::fflush(stdout);
  for (;;) pause();
}
