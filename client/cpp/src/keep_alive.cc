#include "client/cpp/src/keep_alive.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/random/random.h"

namespace sessionbroker::internal {

KeepAlive::KeepAlive(v1::SessionBroker::Stub* stub,
                     std::vector<std::pair<std::string, std::string>> metadata,
                     absl::Duration initial_backoff, absl::Duration max_backoff)
    : stub_(stub),
      metadata_(std::move(metadata)),
      initial_backoff_(initial_backoff),
      max_backoff_(max_backoff),
      thread_([this] { Run(); }) {}

KeepAlive::~KeepAlive() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  thread_.join();
}

void KeepAlive::Hold(const std::string& session) {
  absl::MutexLock lock(&mu_);
  held_.insert(session);
  v1::KeepAliveRequest request;
  request.add_hold(session);
  pending_.push_back(std::move(request));
}

void KeepAlive::Release(const std::string& session) {
  absl::MutexLock lock(&mu_);
  held_.erase(session);
  confirmed_.erase(session);
  v1::KeepAliveRequest request;
  request.add_release(session);
  pending_.push_back(std::move(request));
}

bool KeepAlive::IsHeld(const std::string& session) const {
  absl::MutexLock lock(&mu_);
  return confirmed_.contains(session);
}

int KeepAlive::streams_opened() const {
  absl::MutexLock lock(&mu_);
  return streams_opened_;
}

bool KeepAlive::StoppedOrHolding() const { return stop_ || !held_.empty(); }
bool KeepAlive::HasWork() const { return stop_ || broken_ || !pending_.empty(); }

void KeepAlive::Run() {
  absl::BitGen rng;
  absl::Duration backoff = initial_backoff_;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &KeepAlive::StoppedOrHolding));
      if (stop_) return;
    }
    if (RunStream()) backoff = initial_backoff_;
    // The stream broke (or the broker closed it): wait, then hold again.
    absl::Duration wait =
        absl::Nanoseconds(absl::Uniform<int64_t>(rng, 0, absl::ToInt64Nanoseconds(backoff) + 1));
    backoff = std::min(backoff * 2, max_backoff_);
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stop_), wait)) return;
  }
}

bool KeepAlive::RunStream() {
  grpc::ClientContext context;
  for (const auto& [key, value] : metadata_) context.AddMetadata(key, value);
  v1::KeepAliveRequest first;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return false;
    context_ = &context;
    broken_ = false;
    pending_.clear();
    confirmed_.clear();
    for (const std::string& name : held_) first.add_hold(name);
    ++streams_opened_;
  }
  std::unique_ptr<grpc::ClientReaderWriter<v1::KeepAliveRequest, v1::KeepAliveResponse>> stream =
      stub_->KeepAlive(&context);
  bool got_response = false;
  std::thread reader([&] {
    v1::KeepAliveResponse response;
    while (stream->Read(&response)) {
      absl::MutexLock lock(&mu_);
      got_response = true;
      for (const v1::SessionState& s : response.sessions()) {
        switch (s.state()) {
          case v1::SessionState::HELD:
            if (held_.contains(s.name())) confirmed_.insert(s.name());
            break;
          case v1::SessionState::ENDED:
          case v1::SessionState::NOT_FOUND:
            // Holding it again on the next stream would be pointless.
            held_.erase(s.name());
            confirmed_.erase(s.name());
            break;
          default:
            confirmed_.erase(s.name());
            break;
        }
      }
    }
    absl::MutexLock lock(&mu_);
    broken_ = true;
  });
  bool ok = stream->Write(first);
  while (ok) {
    v1::KeepAliveRequest request;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &KeepAlive::HasWork));
      if (stop_ || broken_) break;
      request = std::move(pending_.front());
      pending_.pop_front();
    }
    ok = stream->Write(request);
  }
  context.TryCancel();
  reader.join();
  (void)stream->Finish();
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
  confirmed_.clear();
  return got_response;
}

}  // namespace sessionbroker::internal
