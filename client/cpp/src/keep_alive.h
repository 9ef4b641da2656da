// KeepAlive: the one KeepAlive stream of a Client, holding all of its open
// sessions (broker.proto, KeepAlive). A background thread opens the stream
// when the first session is held, sends each hold/release, reads the
// broker's answers (dropping sessions the broker reports ENDED or
// NOT_FOUND), and when the stream breaks re-opens it with exponential
// backoff and jitter, holding every session again. While the stream is up
// the broker keeps the sessions' leases; while it is down their ttl runs.
//
// Owned by the client's core; thread-safe. The destructor cancels the stream
// and joins the threads.
#ifndef SESSIONBROKER_CLIENT_SRC_KEEP_ALIVE_H_
#define SESSIONBROKER_CLIENT_SRC_KEEP_ALIVE_H_

#include <deque>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::internal {

class KeepAlive {
 public:
  // `stub` outlives this object.
  // `metadata`: sent with every stream (authorization, x-client-id).
  KeepAlive(v1::SessionBroker::Stub* stub,
            std::vector<std::pair<std::string, std::string>> metadata,
            absl::Duration initial_backoff, absl::Duration max_backoff);
  ~KeepAlive();
  KeepAlive(const KeepAlive&) = delete;
  KeepAlive& operator=(const KeepAlive&) = delete;

  void Hold(const std::string& session);
  void Release(const std::string& session);

  // The broker confirmed `session` HELD on the current stream.
  bool IsHeld(const std::string& session) const;
  // Streams opened so far.
  int streams_opened() const;

 private:
  void Run();
  bool StoppedOrHolding() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one stream until it breaks or Stop; true if it got any response.
  bool RunStream();

  v1::SessionBroker::Stub* const stub_;
  const std::vector<std::pair<std::string, std::string>> metadata_;
  const absl::Duration initial_backoff_;
  const absl::Duration max_backoff_;

  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> held_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> confirmed_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::KeepAliveRequest> pending_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  int streams_opened_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace sessionbroker::internal

#endif  // SESSIONBROKER_CLIENT_SRC_KEEP_ALIVE_H_
