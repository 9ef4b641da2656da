// The KeepAlive bidirectional stream: while it is open, the sessions it holds
// do not expire. Each request holds and/or releases sessions and is answered
// with their state; the broker also writes when a held session ends. When the
// stream ends, for whatever reason (the client closed it, crashed, or the
// network broke), the SessionManager gives its sessions the orphan grace.
//
// Writes go through a LatestOnlyWriter (one write in flight); updates that
// arrive meanwhile are merged by session name (MergeUpdates, linear in the
// states merged). A request names at most kMaxKeepAliveNames sessions (hold
// and release together); a longer one ends the stream with INVALID_ARGUMENT,
// as does a request that cannot be parsed (the stream carries raw bytes,
// parsed here, because gRPC reports a message that does not parse like the
// client closing its side). While an answer waits behind the write in
// flight, the next request is not read (ReadNextOrPause), so a client that
// does not read is throttled by HTTP/2 flow control and what waits for it is
// bounded by one request's names plus the sessions the stream holds.
//
// A stream is not a call in flight for draining: it stays open until the
// gRPC server shuts down (after the SessionManager has ended every session
// and told the stream so), and a stream opened while draining is refused.
//
// Lifetime: reference counted. Created by SessionBrokerService's KeepAlive
// handler,
// which hands gRPC a raw pointer; gRPC's reference (self_) is dropped in
// OnDone. The SessionManager's listener holds only a weak reference and takes
// a strong one for each call, because it may be called after CloseStream()
// returned, even after OnDone. Whichever drops the last reference, OnDone or
// the last listener call in flight, deletes the reactor, exactly once.
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/latest_only_writer.h"
#include "server/core/base/mutex.h"
#include "server/core/session/session_manager.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

// The most session names one KeepAliveRequest may carry, hold and release
// together: far more than a client holds (one name per open session), and
// few enough that the answer fits gRPC's default 4 MB message limit.
inline constexpr int kMaxKeepAliveNames = 10'000;

// The states of one KeepAlive response: one per session name, the newest,
// in the order the names were first added. Each Add costs one hash lookup,
// so building a response from N states costs O(N) whatever the names (a
// linear search per name made a request of 48k names cost seconds of CPU).
// Not thread-safe; not copyable or movable (the map's comparator points at
// the counter).
class SessionStateList final {
 public:
  SessionStateList() = default;
  // Starts from the states of `response`, deduplicated as if each were added.
  explicit SessionStateList(const v1::KeepAliveResponse& response);
  SessionStateList(const SessionStateList&) = delete;
  SessionStateList& operator=(const SessionStateList&) = delete;

  // Adds `state`, replacing the state of the same session if it is there.
  void Add(v1::SessionState state);
  int size() const { return response_.sessions_size(); }
  // The list as a response; the list is empty afterwards.
  std::shared_ptr<v1::KeepAliveResponse> Take();

  // How often two session names were compared so far: the work the list did,
  // for the test that proves it linear.
  int64_t name_comparisons() const { return name_comparisons_; }

 private:
  struct CountingEq {
    int64_t* count;
    bool operator()(const std::string& a, const std::string& b) const {
      ++*count;
      return a == b;
    }
  };

  int64_t name_comparisons_ = 0;
  v1::KeepAliveResponse response_;
  // Session name -> its index in response_.
  absl::flat_hash_map<std::string, int, absl::Hash<std::string>, CountingEq> index_{
      0, absl::Hash<std::string>(), CountingEq{&name_comparisons_}};
};

class KeepAliveReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `caller`: who opened the stream (it holds only sessions `caller` may
  // see); an error (UNAUTHENTICATED) ends the stream with it at once.
  static KeepAliveReactor* Create(core::SessionManager& sessions, bool draining,
                                  absl::StatusOr<core::Caller> caller);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

  // The writer's merge rule: `waiting` becomes one response with every
  // session either names, once, with its newest state; sessions keep the
  // place where they were first named. Exposed for its unit test.
  struct MergeUpdates {
    void operator()(std::shared_ptr<const v1::KeepAliveResponse>& waiting,
                    std::shared_ptr<const v1::KeepAliveResponse> newer) const;
  };

 private:
  KeepAliveReactor(core::SessionManager& sessions, core::Caller caller);
  // Opens the stream with the SessionManager, then starts reading or, when
  // draining or `refused` is an error, finishes. Call once, with self_ set.
  void Begin(bool draining, absl::Status refused);
  // Ends the stream from the broker's side with UNAVAILABLE.
  void FinishFromServer(absl::string_view why);
  // Ends the stream with `status` once the write in flight, if any, is done;
  // the first status asked for is the one sent.
  void RequestFinish(absl::Status status);
  void Enqueue(std::vector<core::SessionManager::StreamUpdate> updates);
  // Starts the next read, unless a response already waits behind the write
  // in flight: then reading pauses until it has gone out (OnWriteDone), so a
  // client that does not read stops being read, and what waits for it stays
  // bounded by one request's names and the sessions the stream holds.
  void ReadNextOrPause();

  core::SessionManager& sessions_;
  const core::Caller caller_;
  // gRPC's reference, from Create to OnDone. Touched only there, never
  // concurrently.
  std::shared_ptr<KeepAliveReactor> self_;
  core::SessionManager::StreamId stream_ = 0;  // set in Begin, before any reaction
  // Requests arrive as raw bytes and are parsed here, so that bytes that
  // are no KeepAliveRequest end the stream with INVALID_ARGUMENT rather than
  // looking like the client closing its side.
  grpc::ByteBuffer read_buffer_;   // owned by the pending read
  v1::KeepAliveRequest request_;   // used in OnReadDone only
  grpc::ByteBuffer write_buffer_;  // owned by the write in flight (one at a time)
  core::LatestOnlyWriter<v1::KeepAliveResponse, MergeUpdates> writer_;

  core::Mutex mu_;
  std::optional<absl::Status> finish_status_ ABSL_GUARDED_BY(mu_);
  bool stream_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_KEEP_ALIVE_REACTOR_H_
