// UnaryCompletionQueues: serves SessionBroker's Execute and ExecuteBatch on
// gRPC's asynchronous completion-queue API (BROKER_UNARY_CQ_THREADS > 0),
// the transport adapter beside the callback handlers. Each of its threads owns
// one ServerCompletionQueue, keeps calls of both methods requested on it, and
// runs every event of its calls itself: a call arrives, is started inline on
// that thread (SessionBrokerService::StartAsyncUnary; the pipelined engine's
// Submit does not block) and is finished (ServerAsyncResponseWriter::Finish)
// from whatever thread completes it, with no hop back. What the call does is
// the service's; this class only moves it through gRPC:
//   arrived  -> a new request of the same method is posted; the call starts
//   done     -> (AsyncNotifyWhenDone) the client cancelled or the deadline
//               passed: the running call is cancelled, as OnCancel does
//   finished -> the status was sent: what the call held is given back
// A call is deleted once both `finished` and `done` came out of its queue.
//
// Life cycle: construct before ServerBuilder::BuildAndStart (it adds the
// queues to the builder), Start() after it, Shutdown() after the server's
// Shutdown and after everything that may still complete a call (the engine,
// the executor) has stopped. Start and Shutdown are called from one thread;
// the rest runs on the queues' own threads.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_UNARY_COMPLETION_QUEUES_H_
#define SESSIONBROKER_SERVER_TRANSPORT_UNARY_COMPLETION_QUEUES_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/transport/session_broker_service.h"

namespace sessionbroker::transport {

class UnaryCompletionQueues final {
 public:
  // `service` was built with UnaryApi::kCompletionQueue and is registered
  // with `builder`; `threads` >= 1 queues, one thread each.
  UnaryCompletionQueues(SessionBrokerService& service, grpc::ServerBuilder& builder, int threads);
  ~UnaryCompletionQueues();
  UnaryCompletionQueues(const UnaryCompletionQueues&) = delete;
  UnaryCompletionQueues& operator=(const UnaryCompletionQueues&) = delete;

  // After BuildAndStart: requests the first calls and starts the threads.
  void Start();
  // Waits until `deadline` for the calls still being answered (a call's
  // Finish may not start on a queue that is shut down), then shuts the queues
  // down and joins the threads. Only the first call does anything.
  void Shutdown(absl::Time deadline);

 private:
  class Call;
  struct Queue {
    std::unique_ptr<grpc::ServerCompletionQueue> cq;
    std::thread thread;
    core::Mutex mu;  // orders posting a request against the queue's Shutdown
    bool stopping ABSL_GUARDED_BY(mu) = false;
  };

  // Requests the next call of `method` on `queue` (none once it stops).
  void Post(Queue& queue, int method);
  void Run(Queue& queue);

  SessionBrokerService& service_;
  std::vector<std::unique_ptr<Queue>> queues_;
  // Calls that arrived and whose status was not sent yet.
  std::atomic<int> answering_{0};
  bool shut_down_ = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_UNARY_COMPLETION_QUEUES_H_
