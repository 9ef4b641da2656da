// The C++ client's shared Pipeline stream (docs/pipeline.md; docs/clients.md,
// "Shared Pipeline stream"): one-shot Execute/ExecuteBatch calls of many
// threads go out as calls of one bidirectional Pipeline stream per Client,
// each with an id, and each caller blocks until its result arrives by id.
//
// Owned by ClientCore. PipelineMux owns the current stream (a MuxStream,
// gRPC's callback bidi reactor); a stream that ends is replaced by a new one
// on a later call. One write is in flight per stream; calls submitted while
// it is being written are coalesced into the next request message (no
// timer). gRPC's callback threads read results and wake their callers.
//
// A call is only ever sent on a stream whose first message (the broker's
// limits) has arrived; until then, and while the broker does not offer the
// method (UNIMPLEMENTED: unary for kUnimplementedRetry) or a stream cannot
// be opened (unary for a backoff), Run() answers kUnary and the caller makes
// the unary call. A stream that breaks hands calls it has not written back
// for the unary path and ends the written ones UNAVAILABLE ("may or may not
// have been applied"), never resending them; on a drain (the broker's
// draining answer) nothing unanswered ran, so those go unary too.
//
// Thread-safe: Run() from any number of threads.
#ifndef SESSIONBROKER_CLIENT_SRC_PIPELINE_MUX_H_
#define SESSIONBROKER_CLIENT_SRC_PIPELINE_MUX_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::internal {

class MuxStream;

// Counters of the shared stream (Client::pipeline_stats()).
struct MuxCounters {
  int64_t streams_opened = 0;
  int64_t stream_calls = 0;     // calls answered through a stream
  int64_t stream_messages = 0;  // request messages written (calls coalesced)
  int64_t handed_back = 0;      // calls a stream handed back for the unary path
  int64_t streams_failed = 0;   // streams that ended before the broker's first message
  bool stream_ready = false;
};

class PipelineMux {
 public:
  // How long calls go unary after the broker answered the stream with
  // UNIMPLEMENTED (an older broker; it may be upgraded meanwhile).
  static constexpr absl::Duration kUnimplementedRetry = absl::Seconds(60);
  // Calls sent before the limits arrive never happen (see above); this is
  // only the cap should a broker advertise none.
  static constexpr uint32_t kDefaultLimit = 64;

  // `metadata` goes on every stream; a stream that cannot be opened is
  // retried after `backoff_initial`, doubling up to `backoff_max`.
  PipelineMux(v1::SessionBroker::Stub* stub,
              std::vector<std::pair<std::string, std::string>> metadata,
              absl::Duration backoff_initial, absl::Duration backoff_max);
  // Cancels the stream and waits until gRPC is done with it. No Run() may be
  // in progress.
  ~PipelineMux();
  PipelineMux(const PipelineMux&) = delete;
  PipelineMux& operator=(const PipelineMux&) = delete;

  enum class Routed {
    kUnary,     // not run on a stream: make the unary call
    kAnswered,  // *out holds the outcome
  };
  // Sends `call` (its id and timeout are set here, the timeout to the time
  // left until `deadline`; its body is untouched for a unary retry) on the stream and waits for its
  // result until `deadline`; then it answers DEADLINE_EXCEEDED and cancels the call on the stream.
  // *out: the broker's result, or a status of the client's own
  // (DEADLINE_EXCEEDED, or UNAVAILABLE when the stream broke after the call
  // was written).
  Routed Run(v1::PipelineCall& call, absl::Time deadline, absl::StatusOr<v1::PipelineResult>* out);

  MuxCounters counters() const;
  // A stream takes calls now (lock-free; it may end at any time).
  bool ready() const { return ready_.load(std::memory_order_relaxed); }

 private:
  friend class MuxStream;
  // The stream's end (from its OnDone): `ready` whether its limits came.
  void StreamEnded(MuxStream* stream, const grpc::Status& status, bool ready);
  // The stream's last use of the mux (the destructor waits for it).
  void StreamGone();
  void StreamReady();
  void CountCalls(int64_t calls, int64_t messages);

  v1::SessionBroker::Stub* const stub_;
  const std::vector<std::pair<std::string, std::string>> metadata_;
  const absl::Duration backoff_initial_;
  const absl::Duration backoff_max_;

  mutable absl::Mutex mu_;
  std::shared_ptr<MuxStream> stream_ ABSL_GUARDED_BY(mu_);
  // Calls go unary until then (UNIMPLEMENTED, or a stream that failed to open).
  absl::Time unary_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;  // created, not yet destroyed
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;  // never reused: no id clash on any stream
  MuxCounters counters_ ABSL_GUARDED_BY(mu_);  // but for the three below
  std::atomic<int64_t> stream_calls_{0};
  std::atomic<int64_t> stream_messages_{0};
  std::atomic<int64_t> handed_back_{0};
  std::atomic<bool> ready_{false};
};

}  // namespace sessionbroker::internal

#endif  // SESSIONBROKER_CLIENT_SRC_PIPELINE_MUX_H_
