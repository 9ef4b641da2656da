#include "server/transport/unary_completion_queues.h"

#include <pthread.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

// Calls of each method kept requested per queue: with fewer, calls that
// arrive together wait in gRPC's own queue until a request is posted.
constexpr int kRequestedPerMethod = 32;

constexpr int kMethods[] = {SessionBrokerService::kExecuteMethod,
                            SessionBrokerService::kExecuteBatchMethod};

}  // namespace

// One call, from its request to its deletion. Every event of it comes out of
// its own queue and so runs on that queue's one thread, in order; only the
// completion (which calls Finish) runs elsewhere.
class UnaryCompletionQueues::Call final {
 public:
  Call(UnaryCompletionQueues& owner, Queue& queue, int method)
      : owner_(owner), queue_(queue), method_(method), responder_(&context_) {
    context_.AsyncNotifyWhenDone(&done_);
    owner_.service_.RequestAsyncUnary(method, &context_, &request_, &responder_, queue.cq.get(),
                                      &arrived_);
  }

  // What comes out of the queue: the event and its call.
  struct Tag {
    Call* call;
    void (Call::*on)(bool ok);
  };

 private:
  void Arrived(bool ok) {
    if (!ok) {
      // The server shuts down; a call that never started has no done event.
      delete this;
      return;
    }
    owner_.Post(queue_, method_);
    owner_.answering_.fetch_add(1);
    running_ = owner_.service_.StartAsyncUnary(
        method_, context_, request_,
        [this](grpc::Status status, grpc::ByteBuffer response, size_t held_bytes) {
          // Read by Finished, which the queue runs after this Finish.
          held_bytes_ = held_bytes;
          if (status.ok()) {
            responder_.Finish(response, status, &finished_);
          } else {
            responder_.FinishWithError(status, &finished_);
          }
        });
    request_.Clear();
  }

  void Finished(bool /*ok: false when the status could not be sent*/) {
    owner_.service_.AsyncUnaryDone(held_bytes_);
    owner_.answering_.fetch_sub(1);
    running_.reset();
    finished_seen_ = true;
    if (done_seen_) delete this;
  }

  void Done(bool /*ok*/) {
    done_seen_ = true;
    // A client's cancel, or the deadline: the statement stops in PostgreSQL.
    if (context_.IsCancelled() && running_ != nullptr) running_->Cancel();
    if (finished_seen_) delete this;
  }

  UnaryCompletionQueues& owner_;
  Queue& queue_;
  const int method_;
  grpc::ServerContext context_;
  grpc::ByteBuffer request_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  Tag arrived_{this, &Call::Arrived};
  Tag finished_{this, &Call::Finished};
  Tag done_{this, &Call::Done};
  std::shared_ptr<core::RunningCall> running_;
  size_t held_bytes_ = 0;
  bool finished_seen_ = false;
  bool done_seen_ = false;
};

UnaryCompletionQueues::UnaryCompletionQueues(SessionBrokerService& service,
                                             grpc::ServerBuilder& builder, int threads)
    : service_(service) {
  for (int i = 0; i < threads; ++i) {
    auto queue = std::make_unique<Queue>();
    queue->cq = builder.AddCompletionQueue();
    queues_.push_back(std::move(queue));
  }
}

UnaryCompletionQueues::~UnaryCompletionQueues() { Shutdown(absl::Now()); }

void UnaryCompletionQueues::Start() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue& queue = *queues_[i];
    for (const int method : kMethods) {
      for (int n = 0; n < kRequestedPerMethod; ++n) Post(queue, method);
    }
    queue.thread = std::thread([this, &queue, i] {
      const std::string name = absl::StrCat("sb-cq-", i);
      pthread_setname_np(pthread_self(), name.c_str());
      Run(queue);
    });
  }
}

void UnaryCompletionQueues::Post(Queue& queue, int method) {
  core::MutexLock lock(&queue.mu);
  if (queue.stopping) return;
  new Call(*this, queue, method);
}

void UnaryCompletionQueues::Run(Queue& queue) {
  void* tag = nullptr;
  bool ok = false;
  while (queue.cq->Next(&tag, &ok)) {
    auto* event = static_cast<Call::Tag*>(tag);
    (event->call->*event->on)(ok);
  }
}

void UnaryCompletionQueues::Shutdown(absl::Time deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  while (answering_.load() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  if (const int left = answering_.load(); left > 0) {
    spdlog::warn("{} Execute calls were still being answered when their queues shut down", left);
  }
  for (const std::unique_ptr<Queue>& queue : queues_) {
    core::MutexLock lock(&queue->mu);
    queue->stopping = true;
    queue->cq->Shutdown();
  }
  // A queue whose thread never started is drained here.
  for (const std::unique_ptr<Queue>& queue : queues_) {
    if (queue->thread.joinable()) {
      queue->thread.join();
    } else {
      Run(*queue);
    }
  }
}

}  // namespace sessionbroker::transport
