#include "server/transport/pipeline_book.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::transport {

absl::Status WithPipelineReason(absl::Status status, absl::string_view reason) {
  status.SetPayload(core::kSessionReasonPayloadUrl, absl::Cord(reason));
  return status;
}

PipelineBook::PipelineBook(v1::PipelineLimits limits)
    : max_in_flight_(limits.max_in_flight_per_stream()), limits_(std::move(limits)) {}

absl::Status PipelineBook::Admit(uint64_t id) {
  if (ids_.contains(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("call id ", id,
                     " is already in flight on this stream; an id may be used again once its "
                     "result has been received"));
  }
  if (in_flight_ >= max_in_flight_) {
    return WithPipelineReason(
        absl::ResourceExhaustedError(absl::StrCat(
            "the stream has ", in_flight_, " calls in flight, its limit (",
            "BROKER_PIPELINE_MAX_IN_FLIGHT, advertised in the stream's first message); send more "
            "once results have arrived")),
        kPipelineLimitReason);
  }
  ids_.insert(id);
  ++in_flight_;
  return absl::OkStatus();
}

void PipelineBook::Complete(v1::PipelineResult result, Held held) {
  queued_.push_back(Queued{std::move(result), held});
}

std::optional<v1::PipelineResponse> PipelineBook::TakeWrite() {
  if (writing_ || !has_queued()) return std::nullopt;
  v1::PipelineResponse response;
  if (limits_.has_value()) {
    *response.mutable_limits() = *std::move(limits_);
    limits_.reset();
  }
  response.mutable_results()->Reserve(static_cast<int>(queued_.size()));
  for (Queued& q : queued_) {
    if (q.held.admitted) ids_.erase(q.result.id());
    writing_held_.push_back(q.held);
    *response.add_results() = std::move(q.result);
  }
  queued_.clear();
  writing_ = true;
  return response;
}

std::vector<PipelineBook::Held> PipelineBook::WriteDone() {
  for (const Held& held : writing_held_) {
    if (held.admitted) --in_flight_;
  }
  writing_ = false;
  return std::exchange(writing_held_, {});
}

std::vector<PipelineBook::Held> PipelineBook::DropQueued() {
  std::vector<Held> held;
  held.reserve(queued_.size());
  for (Queued& q : queued_) {
    if (q.held.admitted) {
      ids_.erase(q.result.id());
      --in_flight_;
    }
    held.push_back(q.held);
  }
  queued_.clear();
  limits_.reset();
  return held;
}

}  // namespace sessionbroker::transport
