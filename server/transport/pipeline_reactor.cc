#include "server/transport/pipeline_reactor.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/transport/parse_failure.h"
#include "server/transport/session_conversion.h"
#include "server/transport/status_mapping.h"

namespace sessionbroker::transport {
namespace {

constexpr char kDrainingMessage[] =
    "the broker is shutting down; retry the calls that got no result on another instance";

// A call, or a whole stream, the drain stopped before it started.
absl::Status Draining() {
  return WithPipelineReason(absl::UnavailableError(kDrainingMessage), kPipelineDrainingReason);
}

absl::Time StreamDeadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

v1::PipelineResult FailedResult(uint64_t id, const absl::Status& status) {
  v1::PipelineResult result;
  result.set_id(id);
  StatusToProto(status, result.mutable_status(), result.mutable_sqlstate(),
                result.mutable_reason());
  return result;
}

}  // namespace

PipelineReactor::PipelineReactor(PipelineHost& host, grpc::CallbackServerContext* context,
                                 CallIdentity who, v1::PipelineLimits limits)
    : host_(host), context_(context), who_(std::move(who)), book_(std::move(limits)) {}

PipelineReactor* PipelineReactor::Create(PipelineHost& host, grpc::CallbackServerContext* context,
                                         absl::StatusOr<CallIdentity> who,
                                         v1::PipelineLimits limits) {
  auto* reactor =
      new PipelineReactor(host, context, who.ok() ? *who : CallIdentity(), std::move(limits));
  if (!who.ok()) {
    // Finished before it is registered, so a drain never starts its writes.
    core::MutexLock lock(&reactor->mu_);
    reactor->finished_ = true;
  }
  const bool draining = !host.RegisterPipelineStream(reactor);
  absl::Status refused = !who.ok() ? who.status() : draining ? Draining() : absl::OkStatus();
  if (!refused.ok()) {
    {
      core::MutexLock lock(&reactor->mu_);
      reactor->finished_ = true;
    }
    reactor->Finish(ToGrpcStatus(refused, context));
    return reactor;
  }
  reactor->Begin();
  return reactor;
}

void PipelineReactor::Begin() {
  // The first write carries the limits; reading starts with it.
  Run([&] {
    core::MutexLock lock(&mu_);
    return NextLocked();
  }());
}

void PipelineReactor::Run(Action action) {
  // Finish waits while an op is being started (starting_), so `this` lives
  // until the loop sees kNone or finishes.
  while (action == Action::kWrite || action == Action::kRead) {
    if (action == Action::kWrite) {
      StartWrite(&write_buffer_);
    } else {
      StartRead(&read_buffer_);
    }
    core::MutexLock lock(&mu_);
    --starting_;
    action = NextLocked();
  }
  if (action == Action::kFinish) Finish(ToGrpcStatus(finish_status_, context_));
}

PipelineReactor::Action PipelineReactor::NextLocked() {
  if (finished_ || starting_ > 0) return Action::kNone;
  if (!abandoned_) {
    if (std::optional<v1::PipelineResponse> response = book_.TakeWrite()) {
      write_buffer_.Clear();
      bool own_buffer = false;
      (void)grpc::SerializationTraits<v1::PipelineResponse>::Serialize(*response, &write_buffer_,
                                                                       &own_buffer);
      ++starting_;
      return Action::kWrite;
    }
  }
  if (!reading_ && !serving_ && !half_closed_ && !draining_ && !abandoned_ && book_.may_read()) {
    reading_ = true;
    ++starting_;
    return Action::kRead;
  }
  const bool ending = abandoned_ || draining_ || half_closed_;
  if (ending && running_.empty() && !serving_ && !book_.writing() &&
      (abandoned_ || !book_.has_queued())) {
    finished_ = true;
    finish_status_ = abandoned_                   ? end_status_
                     : draining_ && !half_closed_ ? Draining()
                                                  : absl::OkStatus();
    return Action::kFinish;
  }
  return Action::kNone;
}

void PipelineReactor::Drain() {
  Action action;
  {
    core::MutexLock lock(&mu_);
    draining_ = true;
    action = NextLocked();
  }
  Run(action);
}

void PipelineReactor::OnReadDone(bool ok) {
  if (!ok) {
    Action action;
    {
      core::MutexLock lock(&mu_);
      reading_ = false;
      half_closed_ = true;
      action = NextLocked();
    }
    Run(action);
    return;
  }
  v1::PipelineRequest request;
  const bool parsed =
      grpc::SerializationTraits<v1::PipelineRequest>::Deserialize(&read_buffer_, &request).ok();
  {
    core::MutexLock lock(&mu_);
    reading_ = false;
    serving_ = parsed;
  }
  if (!parsed) {
    Abandon(absl::InvalidArgumentError(
        UnparseableRequestMessage(v1::PipelineRequest::descriptor()->full_name())));
  } else {
    Serve(request);
  }
  Action action;
  {
    core::MutexLock lock(&mu_);
    serving_ = false;
    action = NextLocked();
  }
  Run(action);
}

void PipelineReactor::Refuse(uint64_t id, const absl::Status& status) {
  core::MutexLock lock(&mu_);
  book_.Complete(FailedResult(id, status), PipelineBook::Held{});
}

void PipelineReactor::Serve(v1::PipelineRequest& request) {
  const absl::Time stream_deadline = StreamDeadline(*context_);
  for (v1::PipelineCall& call : *request.mutable_calls()) {
    const uint64_t id = call.id();
    bool stopped;
    {
      core::MutexLock lock(&mu_);
      stopped = draining_ || abandoned_;
    }
    if (stopped) {
      Refuse(id, Draining());
      continue;
    }
    absl::Time deadline = stream_deadline;
    if (call.has_timeout()) {
      absl::StatusOr<absl::Duration> timeout = DurationFromProto(call.timeout(), "timeout");
      if (!timeout.ok()) {
        Refuse(id, timeout.status());
        continue;
      }
      deadline = std::min(deadline, absl::Now() + *timeout);
    }
    if (absl::Status admitted = host_.AdmitPipelineCall(who_.client_id); !admitted.ok()) {
      Refuse(id, admitted);
      continue;
    }
    absl::Status booked;
    {
      core::MutexLock lock(&mu_);
      booked = book_.Admit(id);
      if (booked.ok()) running_.emplace(id, nullptr);
    }
    if (!booked.ok()) {
      host_.PipelineCallSent(who_.client_id, 0);
      Refuse(id, booked);
      continue;
    }
    std::shared_ptr<core::RunningCall> running = host_.StartPipelineCall(
        who_, deadline, call, [this, id](v1::PipelineResult result, size_t held_bytes) {
          CallDone(id, std::move(result), held_bytes);
        });
    bool cancel_now = false;
    {
      core::MutexLock lock(&mu_);
      // Absent if it completed already (its id stays booked until it is
      // sent, so no later call can have taken it).
      if (auto it = running_.find(id); it != running_.end()) {
        it->second = running;
        cancel_now = abandoned_;  // Abandon() ran before it could see it
      }
    }
    if (cancel_now && running != nullptr) running->Cancel();
  }
  std::vector<std::shared_ptr<core::RunningCall>> cancel;
  {
    core::MutexLock lock(&mu_);
    for (uint64_t id : request.cancel()) {
      auto it = running_.find(id);
      if (it != running_.end() && it->second != nullptr) cancel.push_back(it->second);
    }
  }
  for (const std::shared_ptr<core::RunningCall>& call : cancel) call->Cancel();
}

void PipelineReactor::CallDone(uint64_t id, v1::PipelineResult result, size_t held_bytes) {
  // Runs on whichever thread completed the call: once the lock is released
  // the stream may finish and be deleted, so only locals are used after it
  // (Run keeps `this` alive while it starts an op).
  PipelineHost& host = host_;
  const std::string client = who_.client_id;
  result.set_id(id);
  bool dropped = false;
  bool defer = false;
  Action action = Action::kNone;
  {
    core::MutexLock lock(&mu_);
    running_.erase(id);
    if (abandoned_) {
      dropped = true;
      book_.Forget(id);
    } else {
      book_.Complete(std::move(result), PipelineBook::Held{/*admitted=*/true, held_bytes});
    }
    if (kick_deferred_) {
      // The end of this round writes it with the others.
    } else if (!dropped && storage::CompletionRound::Open()) {
      // Completed on the engine's loop thread, whose turn may answer more
      // of this stream's calls: write them all when the turn ends. Counted
      // as an op being started, so the stream cannot finish meanwhile.
      kick_deferred_ = true;
      ++starting_;
      defer = true;
    } else {
      action = NextLocked();
    }
  }
  if (dropped) host.PipelineCallSent(client, held_bytes);
  if (defer) {
    storage::CompletionRound::Action kick = [this] {
      Action next;
      {
        core::MutexLock lock(&mu_);
        kick_deferred_ = false;
        --starting_;
        next = NextLocked();
      }
      Run(next);
    };
    // Open was checked on this same thread just above.
    const bool deferred = storage::CompletionRound::Defer(kick);
    if (!deferred) std::move(kick)();
    return;
  }
  Run(action);
}

void PipelineReactor::Abandon(absl::Status status) {
  std::vector<std::shared_ptr<core::RunningCall>> cancel;
  std::vector<PipelineBook::Held> dropped;
  {
    core::MutexLock lock(&mu_);
    if (!abandoned_) {
      abandoned_ = true;
      end_status_ = std::move(status);
    }
    for (auto& [id, call] : running_) {
      if (call != nullptr) cancel.push_back(call);
    }
    dropped = book_.DropQueued();
  }
  Release(dropped);
  for (const std::shared_ptr<core::RunningCall>& call : cancel) call->Cancel();
}

void PipelineReactor::Release(const std::vector<PipelineBook::Held>& held) {
  for (const PipelineBook::Held& h : held) {
    if (h.admitted) host_.PipelineCallSent(who_.client_id, h.bytes);
  }
}

void PipelineReactor::OnWriteDone(bool ok) {
  std::vector<PipelineBook::Held> sent;
  {
    core::MutexLock lock(&mu_);
    sent = book_.WriteDone();
  }
  Release(sent);
  if (!ok) Abandon(absl::CancelledError("the client stopped reading the stream"));
  Action action;
  {
    core::MutexLock lock(&mu_);
    action = NextLocked();
  }
  Run(action);
}

void PipelineReactor::OnCancel() {
  Abandon(absl::CancelledError(
      "the stream was cancelled (the client went away or its deadline passed), so its calls "
      "were cancelled"));
  Action action;
  {
    core::MutexLock lock(&mu_);
    action = NextLocked();
  }
  Run(action);
}

void PipelineReactor::OnDone() {
  host_.PipelineStreamDone(this);
  delete this;
}

}  // namespace sessionbroker::transport
