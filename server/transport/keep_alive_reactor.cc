#include "server/transport/keep_alive_reactor.h"

#include <utility>

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

// Adds `state` to `response`, replacing the state of the same session if it
// is already there.
void AddOrReplace(v1::SessionState state, v1::KeepAliveResponse* response) {
  for (v1::SessionState& s : *response->mutable_sessions()) {
    if (s.name() == state.name()) {
      s = std::move(state);
      return;
    }
  }
  *response->add_sessions() = std::move(state);
}

}  // namespace

void KeepAliveReactor::MergeUpdates::operator()(
    std::shared_ptr<const v1::KeepAliveResponse>& waiting,
    std::shared_ptr<const v1::KeepAliveResponse> newer) const {
  auto merged = std::make_shared<v1::KeepAliveResponse>(*waiting);
  for (const v1::SessionState& state : newer->sessions()) AddOrReplace(state, merged.get());
  waiting = std::move(merged);
}

KeepAliveReactor* KeepAliveReactor::Create(core::SessionManager& sessions, bool draining) {
  std::shared_ptr<KeepAliveReactor> reactor(new KeepAliveReactor(sessions));
  reactor->self_ = reactor;
  reactor->Begin(draining);
  return reactor.get();
}

KeepAliveReactor::KeepAliveReactor(core::SessionManager& sessions)
    : sessions_(sessions),
      writer_([this](const v1::KeepAliveResponse& response) { StartWrite(&response); },
              [this] {
                absl::Status status;
                {
                  core::MutexLock lock(&mu_);
                  status = finish_status_.value_or(absl::OkStatus());
                }
                Finish(ToGrpcStatus(status, nullptr));
              }) {}

void KeepAliveReactor::Begin(bool draining) {
  std::weak_ptr<KeepAliveReactor> weak = self_;
  stream_ = sessions_.OpenStream([weak](Update update) {
    // The reference taken here keeps the reactor alive through the call even
    // if OnDone runs meanwhile (the writer ignores updates once finishing).
    if (std::shared_ptr<KeepAliveReactor> reactor = weak.lock()) {
      reactor->Enqueue({std::move(update)});
    }
  });
  if (draining) {
    FinishFromServer("the broker is shutting down; retry on another instance");
    return;
  }
  StartRead(&request_);
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
  std::vector<std::string> hold(request_.hold().begin(), request_.hold().end());
  std::vector<std::string> release(request_.release().begin(), request_.release().end());
  std::vector<Update> updates = sessions_.Hold(stream_, hold);
  std::vector<Update> released = sessions_.Release(stream_, release);
  for (Update& u : released) updates.push_back(std::move(u));
  Enqueue(std::move(updates));
  StartRead(&request_);
}

void KeepAliveReactor::Enqueue(std::vector<Update> updates) {
  // Nothing to say: no write (an empty request is not answered).
  if (updates.empty()) return;
  auto response = std::make_shared<v1::KeepAliveResponse>();
  for (const Update& update : updates) AddOrReplace(ToProto(update), response.get());
  writer_.Offer(std::move(response));
}

void KeepAliveReactor::OnWriteDone(bool ok) {
  if (!ok) {
    core::MutexLock lock(&mu_);
    if (!finish_status_.has_value()) finish_status_ = absl::CancelledError("the stream broke");
  }
  writer_.OnWriteDone(ok);
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
