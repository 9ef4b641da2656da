#include "server/transport/pool_monitor_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/base/latest_only_writer.h"
#include "server/transport/parse_failure.h"
#include "server/transport/pool_status_conversion.h"
#include "server/transport/status_mapping.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::transport {
namespace {

// A stream refused before it started.
class RefusedStream final : public grpc::ServerWriteReactor<v1::PoolStatus> {
 public:
  explicit RefusedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

// One WatchPoolStatus stream. Lives until OnDone. The sampler calls it (via
// its listener) only between Watch and Unwatch; Unwatch runs in OnDone before
// the delete, and the service's registry is updated there too, so neither
// can reach a deleted reactor.
class PoolMonitorService::WatchReactor final : public grpc::ServerWriteReactor<v1::PoolStatus> {
 public:
  explicit WatchReactor(PoolMonitorService& service)
      : service_(service),
        writer_([this](const v1::PoolStatus& status) { StartWrite(&status); },
                [this] { Finish(grpc::Status::OK); }) {}

  // Called once, after the reactor is registered with the service.
  void Start(absl::Duration interval) {
    watch_id_ =
        service_.sampler_.Watch(interval, [this](const core::SnapshotSampler::Snapshot& snapshot) {
          writer_.Offer(service_.ProtoOf(snapshot));
        });
  }

  // Ends the stream with OK once the write in flight, if any, is done.
  void End() { writer_.Finish(); }

  void OnWriteDone(bool ok) override { writer_.OnWriteDone(ok); }
  void OnCancel() override { writer_.Finish(); }
  void OnDone() override {
    service_.sampler_.Unwatch(watch_id_);
    PoolMonitorService& service = service_;
    service.StreamDone(this);
    delete this;
  }

 private:
  PoolMonitorService& service_;
  core::LatestOnlyWriter<v1::PoolStatus> writer_;
  core::SnapshotSampler::WatchId watch_id_ = 0;  // set before any callback can run
};

PoolMonitorService::PoolMonitorService(core::SnapshotSampler& sampler, CallAuthenticator auth)
    : sampler_(sampler), auth_(auth) {
  // The indexes are the methods' order in monitor.proto, as the generated
  // base class registers them. A request that cannot be parsed is answered
  // INVALID_ARGUMENT with a message, as SessionBroker's are, instead of
  // gRPC's UNIMPLEMENTED without one.
  constexpr char kProto[] = "proto/sessionbroker/v1/monitor.proto";
  MarkMethodCallback(
      0, new ParseFailureReporter(
             UnparseableRequestMessage(v1::GetPoolStatusRequest::descriptor()->full_name(), kProto),
             new grpc::internal::CallbackUnaryHandler<v1::GetPoolStatusRequest, v1::PoolStatus>(
                 [this](grpc::CallbackServerContext* context,
                        const v1::GetPoolStatusRequest* request, v1::PoolStatus* response) {
                   if (const std::string* failure = CurrentParseFailure()) {
                     grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
                     reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, *failure));
                     return reactor;
                   }
                   return GetPoolStatus(context, request, response);
                 })));
  MarkMethodCallback(
      1,
      new ParseFailureReporter(
          UnparseableRequestMessage(v1::WatchPoolStatusRequest::descriptor()->full_name(), kProto),
          new grpc::internal::CallbackServerStreamingHandler<v1::WatchPoolStatusRequest,
                                                             v1::PoolStatus>(
              [this](grpc::CallbackServerContext* context,
                     const v1::WatchPoolStatusRequest* request)
                  -> grpc::ServerWriteReactor<v1::PoolStatus>* {
                if (const std::string* failure = CurrentParseFailure()) {
                  return new RefusedStream(
                      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, *failure));
                }
                return WatchPoolStatus(context, request);
              })));
}

absl::Status PoolMonitorService::MayMonitor(const grpc::CallbackServerContext& context) const {
  absl::StatusOr<CallIdentity> who = auth_.Identify(context);
  if (!who.ok()) return who.status();
  if (!who->may_monitor()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "client \"", who->client_id,
        "\" may not read the pool's status: it names every client's occupancy; give the client "
        "the role admin or monitor in the clients file"));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* PoolMonitorService::GetPoolStatus(grpc::CallbackServerContext* context,
                                                            const v1::GetPoolStatusRequest*,
                                                            v1::PoolStatus* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = MayMonitor(*context); !allowed.ok()) {
    reactor->Finish(ToGrpcStatus(allowed, context));
    return reactor;
  }
  PoolSnapshotToProto(*sampler_.Current(), response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::PoolStatus>* PoolMonitorService::WatchPoolStatus(
    grpc::CallbackServerContext* context, const v1::WatchPoolStatusRequest* request) {
  if (absl::Status allowed = MayMonitor(*context); !allowed.ok()) {
    return new RefusedStream(ToGrpcStatus(allowed, context));
  }
  absl::Duration interval = kDefaultInterval;
  if (request->has_interval()) {
    interval = absl::Seconds(request->interval().seconds()) +
               absl::Nanoseconds(request->interval().nanos());
  }
  if (interval < core::SnapshotSampler::kMinInterval || interval > kMaxInterval) {
    return new RefusedStream(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("interval=", absl::FormatDuration(interval), " is out of range: give from ",
                     absl::FormatDuration(core::SnapshotSampler::kMinInterval), " to ",
                     absl::FormatDuration(kMaxInterval), " (unset means ",
                     absl::FormatDuration(kDefaultInterval), ")")));
  }
  auto* reactor = new WatchReactor(*this);
  {
    core::MutexLock lock(&mu_);
    if (ending_) {
      delete reactor;
      return new RefusedStream(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                            "the broker is shutting down; watch another instance"));
    }
    streams_.insert(reactor);
  }
  reactor->Start(interval);
  return reactor;
}

std::shared_ptr<const v1::PoolStatus> PoolMonitorService::ProtoOf(
    const core::SnapshotSampler::Snapshot& snapshot) {
  core::MutexLock lock(&cache_mu_);
  if (cached_snapshot_ != snapshot) {
    auto proto = std::make_shared<v1::PoolStatus>();
    PoolSnapshotToProto(*snapshot, proto.get());
    cached_proto_ = std::move(proto);
    cached_snapshot_ = snapshot;
  }
  return cached_proto_;
}

void PoolMonitorService::EndAllStreams() {
  core::MutexLock lock(&mu_);
  ending_ = true;
  if (!streams_.empty())
    spdlog::info("monitor: ending {} WatchPoolStatus streams", streams_.size());
  // Under the lock: a reactor's OnDone (never run inline by Finish for a
  // server stream) waits for it in StreamDone before deleting the reactor.
  for (WatchReactor* r : streams_) r->End();
}

void PoolMonitorService::StreamDone(WatchReactor* reactor) {
  core::MutexLock lock(&mu_);
  streams_.erase(reactor);
  if (streams_.empty()) all_done_.SignalAll();
}

bool PoolMonitorService::WaitForStreamsDone(absl::Time deadline) {
  core::MutexLock lock(&mu_);
  while (!streams_.empty()) {
    if (!all_done_.WaitUntil(&mu_, deadline)) return false;
  }
  return true;
}

int PoolMonitorService::streams() const {
  core::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

}  // namespace sessionbroker::transport
