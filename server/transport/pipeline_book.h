// PipelineBook: the bookkeeping of one Pipeline stream, without gRPC: which
// call ids are in flight, the stream's in-flight limit, and the results that
// completed but are not yet sent, coalesced into one PipelineResponse per
// write. A call counts against the limit from its admission until the message
// holding its result has been written (so a client that stops reading stops
// the stream's reading too: back pressure). Its id may be used again as soon
// as its result is taken into a write: a client that received the result may
// send the id again before the broker saw its write complete.
//
// One write at a time: TakeWrite() hands out everything queued (and the
// limits, in the first message) and nothing more until WriteDone(). There is
// no timer: a result that completes while nothing is being written goes out
// at once; those that complete during a write go together in the next one.
//
// Not thread-safe: PipelineReactor calls it under its own mutex.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_BOOK_H_
#define SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_BOOK_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

// The reason tokens (PipelineResult.reason, the sessionbroker-reason
// trailer) of the stream's refusals of calls that did not run, so that a
// client can send them as unary calls without reading message text:
// PIPELINE_LIMIT (BROKER_PIPELINE_MAX_IN_FLIGHT[_PER_CLIENT], which unary
// calls are not subject to) and DRAINING (read after the drain began, or a
// stream refused or ended by the drain: every call without a result never
// started).
inline constexpr absl::string_view kPipelineLimitReason = "PIPELINE_LIMIT";
inline constexpr absl::string_view kPipelineDrainingReason = "DRAINING";

// `status` carrying `reason` as its reason payload.
absl::Status WithPipelineReason(absl::Status status, absl::string_view reason);

class PipelineBook final {
 public:
  // What a result held, given back when it was sent (or dropped).
  struct Held {
    bool admitted = false;  // counted as in flight (and by the host)
    size_t bytes = 0;       // result bytes reserved for it
  };

  // `limits` go out in the first message.
  explicit PipelineBook(v1::PipelineLimits limits);
  PipelineBook(const PipelineBook&) = delete;
  PipelineBook& operator=(const PipelineBook&) = delete;

  // Admits call `id`: INVALID_ARGUMENT if that id is in flight,
  // RESOURCE_EXHAUSTED if the stream is at its limit.
  absl::Status Admit(uint64_t id);
  // Queues a result. `held.admitted`: the call was admitted (its id stays in
  // flight until the result is written); false for a call refused before it
  // was admitted.
  void Complete(v1::PipelineResult result, Held held);

  // The next message, if nothing is being written and there is something to
  // write; it is then being written until WriteDone().
  std::optional<v1::PipelineResponse> TakeWrite();
  // An admitted call's result will never be sent (the stream was
  // abandoned): it is no longer in flight.
  void Forget(uint64_t id) {
    if (ids_.erase(id) > 0) --in_flight_;
  }
  // The message being written has gone; returns what its results held.
  std::vector<Held> WriteDone();
  // The client is gone or the stream failed: queued results will never be
  // sent. Returns what they held (not what the write in flight holds).
  std::vector<Held> DropQueued();

  bool writing() const { return writing_; }
  bool has_queued() const { return !queued_.empty() || limits_.has_value(); }
  // Calls admitted whose result has not been written yet.
  size_t in_flight() const { return in_flight_; }
  // Whether another message may be read (fewer than the limit in flight).
  bool may_read() const { return in_flight_ < max_in_flight_; }

 private:
  struct Queued {
    v1::PipelineResult result;
    Held held;
  };

  const size_t max_in_flight_;
  std::optional<v1::PipelineLimits> limits_;  // until the first write
  // Ids of admitted calls whose result has not been taken into a write.
  absl::flat_hash_set<uint64_t> ids_;
  // Admitted calls whose result has not been written.
  size_t in_flight_ = 0;
  std::vector<Queued> queued_;
  // What the message being written held.
  std::vector<Held> writing_held_;
  bool writing_ = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_BOOK_H_
