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

}  // namespace

KeepAliveReactor* KeepAliveReactor::Create(core::SessionManager& sessions, bool draining) {
  auto* reactor = new KeepAliveReactor(sessions);
  reactor->Begin(draining);
  return reactor;
}

KeepAliveReactor::KeepAliveReactor(core::SessionManager& sessions)
    : sessions_(sessions), link_(std::make_shared<Link>()) {
  {
    core::MutexLock lock(&link_->mu);
    link_->reactor = this;
  }
  std::shared_ptr<Link> link = link_;
  stream_ = sessions_.OpenStream([link](Update update) {
    KeepAliveReactor* reactor;
    {
      core::MutexLock lock(&link->mu);
      if (link->done) return;
      reactor = link->reactor;
      ++link->users;
    }
    reactor->Enqueue({std::move(update)});
    bool last = false;
    {
      core::MutexLock lock(&link->mu);
      last = --link->users == 0 && link->done;
    }
    if (last) delete reactor;
  });
}

void KeepAliveReactor::Begin(bool draining) {
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
      if (!finish_.has_value()) finish_ = absl::OkStatus();
    }
    if (close) sessions_.CloseStream(stream_);
    Pump();
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
  {
    core::MutexLock lock(&mu_);
    if (finished_) return;
    for (const Update& update : updates) {
      v1::SessionState state = ToProto(update);
      bool merged = false;
      for (v1::SessionState& p : pending_) {
        if (p.name() == state.name()) {
          p = std::move(state);
          merged = true;
          break;
        }
      }
      if (!merged) pending_.push_back(std::move(state));
    }
  }
  Pump();
}

void KeepAliveReactor::Pump() {
  enum class Next { kNothing, kWrite, kFinish } next = Next::kNothing;
  absl::Status status;
  {
    core::MutexLock lock(&mu_);
    if (finished_ || writing_) return;
    if (!pending_.empty() && !finish_.has_value()) {
      response_.Clear();
      for (v1::SessionState& s : pending_) *response_.add_sessions() = std::move(s);
      pending_.clear();
      writing_ = true;
      next = Next::kWrite;
    } else if (finish_.has_value()) {
      finished_ = true;
      status = *finish_;
      next = Next::kFinish;
    }
  }
  // Outside the lock: the library may run a reaction inline.
  if (next == Next::kWrite) StartWrite(&response_);
  if (next == Next::kFinish) Finish(ToGrpcStatus(status, nullptr));
}

void KeepAliveReactor::OnWriteDone(bool ok) {
  {
    core::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !finish_.has_value()) finish_ = absl::CancelledError("the stream broke");
  }
  Pump();
}

void KeepAliveReactor::FinishFromServer(absl::string_view why) {
  {
    core::MutexLock lock(&mu_);
    if (!finish_.has_value()) finish_ = absl::UnavailableError(std::string(why));
  }
  Pump();
}

void KeepAliveReactor::OnDone() {
  bool close;
  {
    core::MutexLock lock(&mu_);
    close = !std::exchange(stream_closed_, true);
    finished_ = true;  // a late listener call writes nothing
  }
  if (close) sessions_.CloseStream(stream_);
  bool last;
  {
    core::MutexLock lock(&link_->mu);
    link_->done = true;
    last = link_->users == 0;
  }
  if (last) delete this;
}

}  // namespace sessionbroker::transport
