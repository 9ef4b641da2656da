// Where blocking work runs. The pooled database connections block (libpq in
// blocking mode), and gRPC's callback threads must never block, so every
// database call is posted to an Executor owned by the broker. The pool hands
// out connections on executor threads; the statement runner runs SQL there
// and completes the RPC from there.
//
// Thread-safe. A ThreadPoolExecutor owns its threads; its destructor runs the
// tasks already posted, then joins.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_EXECUTOR_H_
#define SESSIONBROKER_SERVER_CORE_BASE_EXECUTOR_H_

#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `task` soon, on another thread. Never blocks the caller.
  virtual void Post(absl::AnyInvocable<void() &&> task) = 0;
};

class ThreadPoolExecutor final : public Executor {
 public:
  ThreadPoolExecutor(int threads, std::string name);
  ~ThreadPoolExecutor() override;
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  void Post(absl::AnyInvocable<void() &&> task) override;

  // Runs what is queued, then stops the threads. Tasks posted afterwards run
  // inline on the posting thread (so a late completion is never lost).
  void Shutdown();

 private:
  void WorkerLoop();

  Mutex mu_;
  CondVar cv_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  const std::string name_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_EXECUTOR_H_
