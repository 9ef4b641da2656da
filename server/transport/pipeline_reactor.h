// PipelineReactor: one Pipeline stream (bidirectional, served on raw bytes so
// that an unparseable message ends the stream with INVALID_ARGUMENT naming
// its type). Each PipelineRequest's calls are admitted (PipelineBook: unique
// ids, the stream's in-flight limit) and started through the PipelineHost,
// which runs them on the unary calls' path (a call the pipelined engine
// runs is submitted inline from the gRPC thread that read it); results go
// out by id in completion order, one write in flight, everything that
// completed during a write coalesced into the next message, and results the
// engine answers in one loop turn written together when the turn ends
// (storage::CompletionRound), not the first alone.
//
// Back pressure: the next message is read only while fewer calls than the
// limit are in flight (a call is in flight until its result was written), so
// a client that sends faster than the database serves, or reads results
// slower, is throttled by HTTP/2 flow control.
//
// End of stream: after the client half-closes, once every call's result has
// been written, OK. On drain (Drain()), calls no longer start (those read
// later are answered UNAVAILABLE), those running finish and are sent, then
// UNAVAILABLE. An unparseable message, a failed write or the client's cancel
// cancels the running calls and drops their results. The RPC is finished
// only once no completion callback is pending, so none sees a deleted
// reactor.
//
// Lifetime: created by SessionBrokerService's Pipeline handler, deleted in
// OnDone after telling the host. Thread-safe (gRPC's reaction threads, the
// threads completing calls, and the host's Drain()).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_REACTOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_REACTOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/core/exec/statement_runner.h"
#include "server/storage/pipeline_engine.h"
#include "server/transport/call_identity.h"
#include "server/transport/pipeline_book.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

class PipelineReactor;

// What a stream needs of the service. Thread-safe.
class PipelineHost {
 public:
  // A call's outcome, and the result bytes reserved for it (given back by
  // PipelineCallSent).
  using Completion = absl::AnyInvocable<void(v1::PipelineResult result, size_t held_bytes) &&>;

  virtual ~PipelineHost() = default;
  // A new stream: registered so that a drain reaches it (Drain()), unless the
  // broker drains already (false: the stream is refused).
  virtual bool RegisterPipelineStream(PipelineReactor* reactor) = 0;
  // Counts a call of `client` in flight (the per-client pipeline limit, the
  // broker's calls in flight for draining); an error refuses the call.
  virtual absl::Status AdmitPipelineCall(const std::string& client) = 0;
  // Starts an admitted call as the unary call with its body would run.
  // `done` runs exactly once, possibly before this returns. Returns what
  // cancels it (null if it completed or cannot be cancelled).
  virtual std::shared_ptr<core::RunningCall> StartPipelineCall(const CallIdentity& who,
                                                               absl::Time deadline,
                                                               v1::PipelineCall& call,
                                                               Completion done) = 0;
  // An admitted call's result was sent or dropped: ends its accounting.
  virtual void PipelineCallSent(const std::string& client, size_t held_bytes) = 0;
  // The stream is over (from OnDone, before the reactor is deleted).
  virtual void PipelineStreamDone(PipelineReactor* reactor) = 0;
};

class PipelineReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // A stream for the authenticated `who` (or, if `who` failed, one that ends
  // at once with its error), limited by `limits`; one opened while the broker
  // drains ends at once with UNAVAILABLE. Writes the limits, starts reading.
  static PipelineReactor* Create(PipelineHost& host, grpc::CallbackServerContext* context,
                                 absl::StatusOr<CallIdentity> who, v1::PipelineLimits limits);

  // The broker drains: start no more calls; finish with UNAVAILABLE once the
  // running ones are sent. Called at most once by the host (under its lock,
  // before PipelineStreamDone for this reactor can return).
  void Drain();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  PipelineReactor(PipelineHost& host, grpc::CallbackServerContext* context, CallIdentity who,
                  v1::PipelineLimits limits);

  // What a critical section decided to do once the lock is released.
  enum class Action { kNone, kWrite, kRead, kFinish };

  void Begin();
  // The next op to start (counted in starting_) or whether to finish.
  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Does `action`, then whatever comes next, until nothing is left to start.
  void Run(Action action);
  // Starts the message's calls and applies its cancels.
  void Serve(v1::PipelineRequest& request);
  void Refuse(uint64_t id, const absl::Status& status);
  void CallDone(uint64_t id, v1::PipelineResult result, size_t held_bytes);
  // Stops everything running and drops unsent results; the stream ends with
  // `status`.
  void Abandon(absl::Status status);
  void Release(const std::vector<PipelineBook::Held>& held);

  PipelineHost& host_;
  grpc::CallbackServerContext* const context_;
  const CallIdentity who_;
  grpc::ByteBuffer read_buffer_;   // the read in flight
  grpc::ByteBuffer write_buffer_;  // the write in flight (filled under mu_)

  core::Mutex mu_;
  PipelineBook book_ ABSL_GUARDED_BY(mu_);
  // Calls whose completion has not run yet; the RunningCall once Start
  // returned it.
  absl::flat_hash_map<uint64_t, std::shared_ptr<core::RunningCall>> running_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;      // a read is in flight
  bool serving_ ABSL_GUARDED_BY(mu_) = false;      // a message's calls are being started
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;  // the client sends no more
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;  // results are dropped, not sent
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Read, write ops being started outside the lock: no Finish meanwhile.
  int starting_ ABSL_GUARDED_BY(mu_) = 0;
  // A completion on the engine's loop thread deferred the next write to the
  // end of the loop's turn (storage::CompletionRound); counted in starting_.
  bool kick_deferred_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);  // why it was abandoned
  absl::Status finish_status_;                    // written when finished_ is set, read after
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_REACTOR_H_
