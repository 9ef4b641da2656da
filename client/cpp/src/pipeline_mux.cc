#include "client/cpp/src/pipeline_mux.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace sessionbroker::internal {
namespace {

// The reasons (PipelineResult.reason, the stream's sessionbroker-reason
// trailer; server/transport/pipeline_book.h) of the broker's refusals of
// calls that did not run, so they go unary: DRAINING (read after the drain
// began; on the stream's final status, none of the calls without a result
// ran) and PIPELINE_LIMIT (BROKER_PIPELINE_MAX_IN_FLIGHT[_PER_CLIENT], which
// a unary call is not subject to).
constexpr absl::string_view kDrainingReason = "DRAINING";
constexpr absl::string_view kPipelineLimitReason = "PIPELINE_LIMIT";

bool NotRun(const v1::PipelineResult& result) {
  return result.has_status() &&
         (result.reason() == kDrainingReason || result.reason() == kPipelineLimitReason);
}

// The stream ended by the drain (its trailers, after OnDone).
bool EndedDraining(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find("sessionbroker-reason");
  return it != trailers.end() &&
         absl::string_view(it->second.data(), it->second.size()) == kDrainingReason;
}

}  // namespace

// One caller blocked in Run(). Lives on its stack; the stream writes
// `routed`/`out` and then Notify()s, and never touches it afterwards.
struct MuxWaiter {
  absl::Notification done;
  PipelineMux::Routed routed = PipelineMux::Routed::kAnswered;
  absl::StatusOr<v1::PipelineResult> out;
};

// One Pipeline stream. Kept alive by `self_` from Start() until OnDone, and
// by the mux while it is the current stream.
class MuxStream final : public grpc::ClientBidiReactor<v1::PipelineRequest, v1::PipelineResponse> {
 public:
  explicit MuxStream(PipelineMux* mux) : liveness_{mux}, mux_(mux) {}

  void Start(v1::SessionBroker::Stub* stub,
             const std::vector<std::pair<std::string, std::string>>& metadata,
             std::shared_ptr<MuxStream> self) {
    self_ = std::move(self);
    for (const auto& [key, value] : metadata) context_.AddMetadata(key, value);
    stub->async()->Pipeline(&context_, this);
    StartRead(&response_);
    AddHold();  // writes may start until the read side has ended
    StartCall();
  }

  // Cancels the call unless it is already finishing. TryCancel is only safe
  // while gRPC's call lives, which the hold guarantees: it is not released
  // while a cancel is in progress.
  void Cancel() {
    {
      absl::MutexLock lock(&mu_);
      if (hold_released_) return;
      cancelling_ = true;
    }
    context_.TryCancel();
    bool release;
    {
      absl::MutexLock lock(&mu_);
      cancelling_ = false;
      release = ReleaseHoldLocked();
    }
    if (release) RemoveHold();
  }

  // Queues `call` (id and timeout set) for the next message; false when
  // this stream takes no call now (its limits not yet read, ended, or as
  // many calls in flight as the broker allows).
  bool Submit(const v1::PipelineCall& call, MuxWaiter* waiter) {
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ready_ || ended_ || broken_ || waiting_.size() >= limit_) return false;
      waiting_.emplace(call.id(), Entry{waiter, /*sent=*/false});
      *next_.add_calls() = call;
      write = !writing_;
      if (write) TakeNextLocked();
    }
    if (write) StartWrite(&sending_);
    return true;
  }

  // The caller of `id` stops waiting (its deadline passed). True: it was
  // still waiting; its result will be dropped and a cancel for it goes
  // out. False: its outcome is being delivered; wait for it.
  bool Abandon(uint64_t id) {
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = waiting_.find(id);
      if (it == waiting_.end() || it->second.waiter == nullptr) return false;
      if (!it->second.sent) {
        // Still in the next message: it never leaves.
        auto* calls = next_.mutable_calls();
        for (int i = 0; i < calls->size(); ++i) {
          if (calls->Get(i).id() == id) {
            calls->DeleteSubrange(i, 1);
            break;
          }
        }
        waiting_.erase(it);
        return true;
      }
      // Counted in flight until the broker's result for it arrives.
      it->second.waiter = nullptr;
      if (ended_ || broken_) return true;
      next_.add_cancel(id);
      write = !writing_;
      if (write) TakeNextLocked();
    }
    if (write) StartWrite(&sending_);
    return true;
  }

  void OnWriteDone(bool ok) override {
    bool write = false;
    bool release = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
      if (!ended_ && !broken_ && (next_.calls_size() > 0 || next_.cancel_size() > 0)) {
        TakeNextLocked();
        write = true;
      } else {
        release = ReleaseHoldLocked();
      }
    }
    if (write) StartWrite(&sending_);
    if (release) RemoveHold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool release;
      {
        absl::MutexLock lock(&mu_);
        ended_ = true;
        release = ReleaseHoldLocked();
      }
      if (release) RemoveHold();
      return;
    }
    bool became_ready = false;
    std::vector<std::pair<MuxWaiter*, v1::PipelineResult*>> ready;
    {
      absl::MutexLock lock(&mu_);
      if (!ready_) {
        ready_ = true;
        became_ready = true;
        const v1::PipelineLimits& l = response_.limits();
        uint32_t limit = l.max_in_flight_per_stream() > 0 ? l.max_in_flight_per_stream()
                                                          : PipelineMux::kDefaultLimit;
        if (l.max_in_flight_per_client() > 0) limit = std::min(limit, l.max_in_flight_per_client());
        limit_ = limit;
      }
      for (v1::PipelineResult& r : *response_.mutable_results()) {
        auto it = waiting_.find(r.id());
        if (it == waiting_.end()) continue;
        MuxWaiter* waiter = it->second.waiter;
        waiting_.erase(it);
        if (waiter != nullptr) ready.emplace_back(waiter, &r);
      }
    }
    if (became_ready) mux_->StreamReady();
    for (auto& [waiter, result] : ready) {
      if (NotRun(*result)) {
        waiter->routed = PipelineMux::Routed::kUnary;
        mux_->handed_back_.fetch_add(1, std::memory_order_relaxed);
      } else {
        waiter->out = std::move(*result);
        // Counted before its caller wakes, so the caller sees it counted.
        mux_->stream_calls_.fetch_add(1, std::memory_order_relaxed);
      }
      waiter->done.Notify();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<MuxStream> keep = std::move(self_);  // `this` lives until we return
    const bool draining = !status.ok() && EndedDraining(context_);
    std::vector<std::pair<MuxWaiter*, bool>> orphans;  // waiter, was written
    bool ready;
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      ready = ready_;
      for (auto& [id, entry] : waiting_) {
        if (entry.waiter != nullptr) orphans.emplace_back(entry.waiter, entry.sent);
      }
      waiting_.clear();
    }
    for (auto& [waiter, sent] : orphans) {
      if (!sent || draining) {
        waiter->routed = PipelineMux::Routed::kUnary;
        mux_->handed_back_.fetch_add(1, std::memory_order_relaxed);
      } else {
        waiter->out = absl::UnavailableError(absl::StrCat(
            "the Pipeline stream to the broker broke before this call's result arrived (",
            absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())), ": ",
            status.error_message(), "); the call may or may not have been applied"));
      }
    }
    // The mux forgets this stream before its callers wake, so their next
    // calls see it gone (and open a new one, or go unary for a backoff).
    mux_->StreamEnded(this, status, ready);
    for (auto& [waiter, sent] : orphans) waiter->done.Notify();
    // The mux learns that this stream is gone when it is destroyed (liveness_),
    // which may be right here, as `keep` goes.
  }

 private:
  struct Entry {
    MuxWaiter* waiter;  // null: abandoned by its caller, awaiting the broker's result
    bool sent;          // handed to a write
  };

  void TakeNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    sending_.Clear();
    sending_.Swap(&next_);
    for (const v1::PipelineCall& c : sending_.calls()) {
      auto it = waiting_.find(c.id());
      if (it != waiting_.end()) it->second.sent = true;
    }
    writing_ = true;
    mux_->stream_messages_.fetch_add(1, std::memory_order_relaxed);
  }

  // The hold goes once the read side ended and no write is in flight: no
  // write starts after that, so gRPC may then finish the call.
  bool ReleaseHoldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!ended_ || writing_ || cancelling_ || hold_released_) return false;
    hold_released_ = true;
    return true;
  }

  // Tells the mux the stream is gone from its destructor. Declared first, so
  // destroyed last: the mux's destructor waits for every stream to be gone,
  // its ClientContext included, which holds a reference to the channel. Were
  // the context destroyed after the mux (and the client) had gone, the
  // channel's last reference could drop on gRPC's callback thread, in OnDone;
  // gRPC 1.51 then tears its callback completion queue down from its own
  // thread and aborts (seen as "assertion failed: prior > 0" in
  // grpc_cq_internal_unref at a test's end).
  struct Liveness {
    PipelineMux* mux;
    ~Liveness() { Gone(mux); }
  };
  static void Gone(PipelineMux* mux) { mux->StreamGone(); }

  Liveness liveness_;
  PipelineMux* const mux_;
  std::shared_ptr<MuxStream> self_;
  grpc::ClientContext context_;
  v1::PipelineResponse response_;  // the read in flight (gRPC's, between reads ours)
  v1::PipelineRequest sending_;    // the write in flight

  absl::Mutex mu_;
  v1::PipelineRequest next_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Entry> waiting_ ABSL_GUARDED_BY(mu_);
  uint32_t limit_ ABSL_GUARDED_BY(mu_) = 0;
  bool ready_ ABSL_GUARDED_BY(mu_) = false;       // the limits arrived
  bool ended_ ABSL_GUARDED_BY(mu_) = false;       // the read side ended
  bool broken_ ABSL_GUARDED_BY(mu_) = false;      // a write failed
  bool writing_ ABSL_GUARDED_BY(mu_) = false;     // a write is in flight
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;  // Cancel() is in TryCancel
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
};

PipelineMux::PipelineMux(v1::SessionBroker::Stub* stub,
                         std::vector<std::pair<std::string, std::string>> metadata,
                         absl::Duration backoff_initial, absl::Duration backoff_max)
    : stub_(stub),
      metadata_(std::move(metadata)),
      backoff_initial_(backoff_initial),
      backoff_max_(backoff_max),
      backoff_(backoff_initial) {}

PipelineMux::~PipelineMux() {
  std::shared_ptr<MuxStream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_;
  }
  if (stream != nullptr) stream->Cancel();
  stream.reset();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* live) { return *live == 0; }, &live_streams_));
}

PipelineMux::Routed PipelineMux::Run(v1::PipelineCall& call, absl::Time deadline,
                                     absl::StatusOr<v1::PipelineResult>* out) {
  std::shared_ptr<MuxStream> stream;
  bool start = false;
  {
    absl::MutexLock lock(&mu_);
    if (absl::Now() < unary_until_) return Routed::kUnary;
    if (stream_ == nullptr) {
      stream_ = std::make_shared<MuxStream>(this);
      ++live_streams_;
      ++counters_.streams_opened;
      start = true;
    }
    stream = stream_;
    call.set_id(next_id_++);
  }
  if (start) {
    // This call does not wait for the stream to open: it goes unary.
    stream->Start(stub_, metadata_, stream);
    return Routed::kUnary;
  }
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return Routed::kUnary;  // the unary call answers it
  const int64_t nanos = absl::ToInt64Nanoseconds(left);
  call.mutable_timeout()->set_seconds(nanos / 1000000000);
  call.mutable_timeout()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  MuxWaiter waiter;
  if (!stream->Submit(call, &waiter)) return Routed::kUnary;
  if (!waiter.done.WaitForNotificationWithDeadline(deadline)) {
    if (stream->Abandon(call.id())) {
      // As a unary call's own deadline answers.
      *out = absl::DeadlineExceededError("Deadline Exceeded");
      return Routed::kAnswered;
    }
    waiter.done.WaitForNotification();  // being delivered right now
  }
  if (waiter.routed == Routed::kUnary) return Routed::kUnary;
  *out = std::move(waiter.out);
  return Routed::kAnswered;
}

MuxCounters PipelineMux::counters() const {
  absl::MutexLock lock(&mu_);
  MuxCounters c = counters_;
  c.stream_calls = stream_calls_.load(std::memory_order_relaxed);
  c.stream_messages = stream_messages_.load(std::memory_order_relaxed);
  c.handed_back = handed_back_.load(std::memory_order_relaxed);
  return c;
}

void PipelineMux::StreamReady() {
  absl::MutexLock lock(&mu_);
  counters_.stream_ready = true;
  ready_.store(true, std::memory_order_relaxed);
  backoff_ = backoff_initial_;
}

void PipelineMux::StreamEnded(MuxStream* stream, const grpc::Status& status, bool ready) {
  absl::MutexLock lock(&mu_);
  if (stream_.get() == stream) {
    stream_.reset();
    counters_.stream_ready = false;
    ready_.store(false, std::memory_order_relaxed);
  }
  if (!ready) ++counters_.streams_failed;
  const absl::Time now = absl::Now();
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    unary_until_ = now + kUnimplementedRetry;
  } else if (!ready) {
    // It never opened: unary for a while, longer each time (jittered).
    absl::BitGen gen;
    unary_until_ = now + backoff_ * absl::Uniform(gen, 0.5, 1.0);
    backoff_ = std::min(backoff_ * 2, backoff_max_);
  }
}

void PipelineMux::StreamGone() {
  absl::MutexLock lock(&mu_);
  --live_streams_;
}

}  // namespace sessionbroker::internal
