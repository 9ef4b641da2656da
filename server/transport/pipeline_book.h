// PipelineBook: the bookkeeping of one Pipeline stream, without gRPC: which
// call ids are in flight, the stream's in-flight limit, and the results that
// completed but are not yet sent, coalesced into one PipelineResponse per
// write. A call is in flight from its admission until the message holding its
// result has been written (so a client that stops reading stops the stream's
// reading too: back pressure), and its id may be used again only after that.
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
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

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
  // abandoned): its id leaves.
  void Forget(uint64_t id) { in_flight_.erase(id); }
  // The message being written has gone; returns what its results held.
  std::vector<Held> WriteDone();
  // The client is gone or the stream failed: queued results will never be
  // sent. Returns what they held (not what the write in flight holds).
  std::vector<Held> DropQueued();

  bool writing() const { return writing_; }
  bool has_queued() const { return !queued_.empty() || limits_.has_value(); }
  // Calls admitted whose result has not been written yet.
  size_t in_flight() const { return in_flight_.size(); }
  // Whether another message may be read (fewer than the limit in flight).
  bool may_read() const { return in_flight_.size() < max_in_flight_; }

 private:
  struct Queued {
    v1::PipelineResult result;
    Held held;
  };

  const size_t max_in_flight_;
  std::optional<v1::PipelineLimits> limits_;  // until the first write
  absl::flat_hash_set<uint64_t> in_flight_;
  std::vector<Queued> queued_;
  // The message being written: the ids it frees and what it held.
  std::vector<uint64_t> writing_ids_;
  std::vector<Held> writing_held_;
  bool writing_ = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_PIPELINE_BOOK_H_
