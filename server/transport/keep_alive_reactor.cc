#include "server/transport/keep_alive_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/transport/parse_failure.h"
#include "server/transport/session_conversion.h"
#include "server/transport/status_mapping.h"

namespace sessionbroker::transport {
namespace {

using Update = core::SessionManager::StreamUpdate;

v1::SessionState ToProto(const Update& update) {
  v1::SessionState out;
  out.set_name(update.name);
  switch (update.state) {
    case Update::State::kHeld:
      out.set_state(v1::SessionState::HELD);
      break;
    case Update::State::kReleased:
      out.set_state(v1::SessionState::RELEASED);
      break;
    case Update::State::kEnded:
      out.set_state(v1::SessionState::ENDED);
      break;
    case Update::State::kNotFound:
      out.set_state(v1::SessionState::NOT_FOUND);
      break;
  }
  out.set_reason(update.reason);
  if (update.expire_time != absl::InfinitePast()) {
    TimeToProto(update.expire_time, out.mutable_expire_time());
  }
  return out;
}

}  // namespace

SessionStateList::SessionStateList(const v1::KeepAliveResponse& response) {
  for (const v1::SessionState& state : response.sessions()) Add(state);
}

void SessionStateList::Add(v1::SessionState state) {
  const auto [it, added] = index_.try_emplace(state.name(), response_.sessions_size());
  if (added) {
    *response_.add_sessions() = std::move(state);
  } else {
    *response_.mutable_sessions(it->second) = std::move(state);
  }
}

std::shared_ptr<v1::KeepAliveResponse> SessionStateList::Take() {
  index_.clear();
  auto out = std::make_shared<v1::KeepAliveResponse>();
  out->Swap(&response_);
  return out;
}

void KeepAliveReactor::MergeUpdates::operator()(
    std::shared_ptr<const v1::KeepAliveResponse>& waiting,
    std::shared_ptr<const v1::KeepAliveResponse> newer) const {
  SessionStateList merged(*waiting);
  for (const v1::SessionState& state : newer->sessions()) merged.Add(state);
  waiting = merged.Take();
}

KeepAliveReactor* KeepAliveReactor::Create(core::SessionManager& sessions, bool draining,
                                           absl::StatusOr<core::Caller> caller) {
  const absl::Status refused = caller.status();
  std::shared_ptr<KeepAliveReactor> reactor(
      new KeepAliveReactor(sessions, caller.ok() ? *std::move(caller) : core::Caller{"", false}));
  reactor->self_ = reactor;
  reactor->Begin(draining, refused);
  return reactor.get();
}

KeepAliveReactor::KeepAliveReactor(core::SessionManager& sessions, core::Caller caller)
    : sessions_(sessions),
      caller_(std::move(caller)),
      writer_(
          [this](const v1::KeepAliveResponse& response) {
            // Only one write is in flight: the buffer is free again.
            bool own_buffer = false;
            write_buffer_.Clear();
            (void)grpc::SerializationTraits<v1::KeepAliveResponse>::Serialize(
                response, &write_buffer_, &own_buffer);
            StartWrite(&write_buffer_);
          },
          [this] {
            absl::Status status;
            {
              core::MutexLock lock(&mu_);
              status = finish_status_.value_or(absl::OkStatus());
            }
            Finish(ToGrpcStatus(status, nullptr));
          }) {}

void KeepAliveReactor::Begin(bool draining, absl::Status refused) {
  std::weak_ptr<KeepAliveReactor> weak = self_;
  stream_ = sessions_.OpenStream([weak](Update update) {
    // The reference taken here keeps the reactor alive through the call even
    // if OnDone runs meanwhile (the writer ignores updates once finishing).
    if (std::shared_ptr<KeepAliveReactor> reactor = weak.lock()) {
      reactor->Enqueue({std::move(update)});
    }
  });
  if (!refused.ok()) {
    RequestFinish(std::move(refused));
    return;
  }
  if (draining) {
    FinishFromServer("the broker is shutting down; retry on another instance");
    return;
  }
  StartRead(&read_buffer_);
}

void KeepAliveReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client closed its side, or the stream broke: either way nobody
    // keeps these sessions alive any more.
    bool close = false;
    {
      core::MutexLock lock(&mu_);
      close = !std::exchange(stream_closed_, true);
    }
    if (close) sessions_.CloseStream(stream_);
    RequestFinish(absl::OkStatus());
    return;
  }
  request_.Clear();
  if (!grpc::SerializationTraits<v1::KeepAliveRequest>::Deserialize(&read_buffer_, &request_)
           .ok()) {
    RequestFinish(absl::InvalidArgumentError(
        UnparseableRequestMessage(v1::KeepAliveRequest::descriptor()->full_name())));
    return;
  }
  const int names = request_.hold_size() + request_.release_size();
  if (names > kMaxKeepAliveNames) {
    RequestFinish(absl::InvalidArgumentError(absl::StrCat(
        "the KeepAliveRequest carries ", names, " session names; one request may carry at most ",
        kMaxKeepAliveNames, " (hold and release together): send them in several requests")));
    return;
  }
  std::vector<std::string> hold(request_.hold().begin(), request_.hold().end());
  std::vector<std::string> release(request_.release().begin(), request_.release().end());
  std::vector<Update> updates = sessions_.Hold(caller_, stream_, hold);
  std::vector<Update> released = sessions_.Release(caller_, stream_, release);
  for (Update& u : released) updates.push_back(std::move(u));
  Enqueue(std::move(updates));
  ReadNextOrPause();
}

void KeepAliveReactor::ReadNextOrPause() {
  {
    core::MutexLock lock(&mu_);
    if (writer_.has_pending()) {
      read_paused_ = true;
      return;
    }
  }
  StartRead(&read_buffer_);
}

void KeepAliveReactor::Enqueue(std::vector<Update> updates) {
  // Nothing to say: no write (an empty request is not answered).
  if (updates.empty()) return;
  SessionStateList states;
  for (const Update& update : updates) states.Add(ToProto(update));
  writer_.Offer(states.Take());
}

void KeepAliveReactor::OnWriteDone(bool ok) {
  if (!ok) {
    core::MutexLock lock(&mu_);
    if (!finish_status_.has_value()) finish_status_ = absl::CancelledError("the stream broke");
  }
  writer_.OnWriteDone(ok);
  // gRPC runs OnDone only after this reaction returns: `this` stays valid.
  bool resume = false;
  {
    core::MutexLock lock(&mu_);
    if (ok && read_paused_ && !writer_.has_pending() && !writer_.finishing()) {
      read_paused_ = false;
      resume = true;
    }
  }
  if (resume) StartRead(&read_buffer_);
}

void KeepAliveReactor::RequestFinish(absl::Status status) {
  {
    core::MutexLock lock(&mu_);
    if (!finish_status_.has_value()) finish_status_ = std::move(status);
  }
  writer_.Finish();
}

void KeepAliveReactor::FinishFromServer(absl::string_view why) {
  RequestFinish(absl::UnavailableError(std::string(why)));
}

void KeepAliveReactor::OnDone() {
  bool close;
  {
    core::MutexLock lock(&mu_);
    close = !std::exchange(stream_closed_, true);
  }
  if (close) sessions_.CloseStream(stream_);
  // gRPC runs OnDone only after Finish, so the writer is finishing already
  // and a late listener call writes nothing.
  // Drops gRPC's reference last: this deletes the reactor now, or when the
  // listener call still in flight returns. Nothing may touch a member after.
  std::shared_ptr<KeepAliveReactor> self = std::move(self_);
}

}  // namespace sessionbroker::transport
