// stream_e2e_reader: a client process for stream_e2e_test that starts a
// StreamExecute call, reads its first two messages (columns, then rows),
// says so on stdout ("columns", "rows") and then stops reading, until the
// test kills it: a reader that vanishes mid-stream.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace v1 = sessionbroker::v1;

int main(int argc, char** argv) {
  // Never outlive the test that started us.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BROKER_ADDRESS SQL\n", argv[0]);
    return 2;
  }
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  auto stub = v1::SessionBroker::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::ExecuteRequest request;
  request.set_sql(argv[2]);
  auto reader = stub->StreamExecute(&context, request);
  v1::StreamExecuteResponse response;
  if (!reader->Read(&response) || !response.has_columns()) return 1;
  std::printf("columns\n");
  std::fflush(stdout);
  if (!reader->Read(&response) || !response.has_rows()) return 1;
  std::printf("rows\n");
  std::fflush(stdout);
  for (;;) pause();
}
