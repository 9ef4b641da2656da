// The sessionbroker.v1.SessionBroker gRPC service (callback API). Handlers
// convert the request, hand it to the StatementRunner (one-shot calls) or the
// SessionManager (calls naming a session, and the session RPCs) and return at
// once; the work completes the call from an executor thread. No handler
// blocks.
//
// Who calls is CallAuthenticator's answer (call_identity.h): with a clients
// file, the authenticated client (unauthenticated calls are refused with
// UNAUTHENTICATED before anything else); without one, the self-declared
// "x-client-id". It is the id sessions are owned by, the pool's occupancy and
// quotas are charged to, and logs show. A session answers only its owner
// (and admins): to anyone else it is NOT_FOUND, as if it did not exist.
//
// request_id (docs/retries.md): one-shot Execute/ExecuteBatch record it in
// the database with the call's own transaction (RunRequest::durable);
// BeginSession and the calls in a session remember it in the RequestLedger.
// Either way a retry gets the first outcome.
//
// A request that cannot be parsed is answered INVALID_ARGUMENT, naming its
// message type (gRPC's own handlers would answer UNIMPLEMENTED with no
// message): the constructor wraps each unary method's handler to report the
// failure, and KeepAlive reads raw bytes and parses them itself.
//
// Draining: after StartDraining() new calls fail with UNAVAILABLE (except
// EndSession, Commit and Rollback, which only give back) and calls already
// running finish; WaitForIdle() lets shutdown wait for them. KeepAlive
// streams are not waited for (see keep_alive_reactor.h); Listen streams are
// ended by the NotificationHub's Shutdown (listen_reactor.h); Pipeline
// streams end by themselves once their calls' results are sent, and
// WaitForPipelineStreamsDone() lets shutdown wait for their status to be sent
// (WaitForIdle returns as soon as the last result was written, before the
// stream's Finish).
//
// Thread-safe. Outlives the grpc::Server it is registered with.
#ifndef SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_
#define SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/core/exec/request_ledger.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/monitor/pool_snapshot.h"
#include "server/core/notify/notification_hub.h"
#include "server/core/session/session_manager.h"
#include "server/transport/arena_message_allocator.h"
#include "server/transport/call_identity.h"
#include "server/transport/pipeline_reactor.h"
#include "server/transport/value_conversion.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::transport {

// Bounds on what calls may hold (README's configuration table).
struct CallLimits {
  // BROKER_STREAM_WINDOW_BYTES: rows a StreamExecute call holds at most.
  size_t stream_window_bytes = 1 << 20;
  // BROKER_MAX_PENDING_RESULT_BYTES: results (unary responses, stream
  // windows) held by all calls together until they are sent; a call that
  // would pass it fails with RESOURCE_EXHAUSTED.
  size_t max_pending_result_bytes = size_t{256} << 20;
  // BROKER_MAX_CALLS_PER_CLIENT: Execute, ExecuteBatch and StreamExecute
  // calls in flight per x-client-id (0 = no limit).
  int max_calls_per_client = 0;
  // BROKER_PIPELINE_MAX_IN_FLIGHT: calls in flight on one Pipeline stream.
  int pipeline_max_in_flight = 256;
  // BROKER_PIPELINE_MAX_IN_FLIGHT_PER_CLIENT: calls in flight on all of a
  // client's Pipeline streams together (0 = no limit).
  int pipeline_max_in_flight_per_client = 1024;
};

// Pipeline streams (PipelineReactor) run their calls through the service's
// PipelineHost side: the same path as Execute/ExecuteBatch, without a
// grpc::ServerContext per call. A call of a stream counts as in flight (for
// draining) until its result was sent; StartDraining() tells every stream.
class SessionBrokerService final : public v1::SessionBroker::CallbackService, private PipelineHost {
 public:
  // `ledger` remembers the request ids of session calls; it must outlive
  // the service. `max_array_depth`: BROKER_MAX_ARRAY_DEPTH, the deepest
  // nesting of array parameters taken (value_conversion.h). `notifications` serves Listen; null
  // (unit tests without a database) answers Listen with UNIMPLEMENTED.
  SessionBrokerService(core::StatementRunner& runner, core::SessionManager& sessions,
                       size_t max_result_bytes, core::RequestLedger& ledger,
                       CallAuthenticator auth = CallAuthenticator(),
                       int max_array_depth = kMaxArrayDepth,
                       core::NotificationHub* notifications = nullptr,
                       size_t listen_queue_capacity = 1000, CallLimits limits = CallLimits());

  grpc::ServerUnaryReactor* Execute(grpc::CallbackServerContext* context,
                                    const v1::ExecuteRequest* request,
                                    v1::ExecuteResponse* response) override;
  grpc::ServerUnaryReactor* ExecuteBatch(grpc::CallbackServerContext* context,
                                         const v1::ExecuteBatchRequest* request,
                                         v1::ExecuteBatchResponse* response) override;
  grpc::ServerUnaryReactor* BeginSession(grpc::CallbackServerContext* context,
                                         const v1::BeginSessionRequest* request,
                                         v1::Session* response) override;
  grpc::ServerUnaryReactor* RenewSession(grpc::CallbackServerContext* context,
                                         const v1::RenewSessionRequest* request,
                                         v1::Session* response) override;
  grpc::ServerUnaryReactor* EndSession(grpc::CallbackServerContext* context,
                                       const v1::EndSessionRequest* request,
                                       v1::EndSessionResponse* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* BeginTransaction(grpc::CallbackServerContext* context,
                                             const v1::BeginTransactionRequest* request,
                                             v1::BeginTransactionResponse* response) override;
  grpc::ServerUnaryReactor* Commit(grpc::CallbackServerContext* context,
                                   const v1::CommitRequest* request,
                                   v1::CommitResponse* response) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* context,
                                     const v1::RollbackRequest* request,
                                     v1::RollbackResponse* response) override;
  // KeepAlive, StreamExecute, Listen and Pipeline are served on raw bytes (see
  // KeepAliveReactor, StreamExecuteReactor, ListenReactor); the typed methods
  // of the generated base class are never called.

  // Result bytes held by calls now (CallLimits::max_pending_result_bytes).
  size_t pending_result_bytes() const;

  void StartDraining();
  // True if no call was in flight by `deadline` (real time).
  bool WaitForIdle(absl::Time deadline);
  // True if every Pipeline stream was done (its status sent) by `deadline`
  // (real time). After StartDraining, so that no new stream opens.
  bool WaitForPipelineStreamsDone(absl::Time deadline);
  // The Pipeline streams open, opened and their calls started, for
  // PoolStatus and /metrics.
  core::PipelineStreamStats PipelineStreams() const;
  int in_flight() const;

 private:
  class CallReactor;

  // Replaces method `index`'s handler with one that calls `method` when the
  // request parsed, and answers INVALID_ARGUMENT when it did not. With an
  // `allocator`, the call's request and response come from it.
  template <typename Request, typename Response>
  void ReportParseFailures(int index,
                           grpc::ServerUnaryReactor* (SessionBrokerService::*method)(
                               grpc::CallbackServerContext*, const Request*, Response*),
                           grpc::MessageAllocator<Request, Response>* allocator = nullptr);

  // Completes a call: OK or the error to send.
  using Done = absl::AnyInvocable<void(absl::Status) &&>;
  // Starts the work; returns what lets the call be cancelled (may be null).
  using Starter = absl::AnyInvocable<std::shared_ptr<core::RunningCall>(Done) &&>;
  // Fills the response from the results; may fail (size limit).
  using RunFill = absl::AnyInvocable<absl::Status(core::StatementRunner::Results&&)>;

  // Creates the reactor that runs `start` and completes the call.
  // `during_drain`: the call may still start while draining (it ends a
  // session or transaction, which only gives back).
  // `on_done` runs when the call is over.
  grpc::ServerUnaryReactor* StartCall(grpc::CallbackServerContext* context, Starter start,
                                      bool during_drain = false,
                                      absl::AnyInvocable<void() &&> on_done = nullptr);
  // What a unary statement call holds until it is over: written by its
  // completion (before Finish), read when the call is done (after it).
  struct HeldResult {
    size_t bytes = 0;   // reserved for the response (max_pending_result_bytes)
    bool trim = false;  // a large result went through: give memory back
  };
  // Execute/ExecuteBatch: one-shot, or in the named session; with a
  // request_id, remembered (in a session) or recorded (one-shot). Counted
  // against max_calls_per_client, and the filled `response` is held against
  // max_pending_result_bytes until the call is over.
  grpc::ServerUnaryReactor* StartRun(grpc::CallbackServerContext* context, core::RunRequest run,
                                     const std::string& session, core::Caller caller,
                                     const std::string& request_id,
                                     const google::protobuf::Message& request,
                                     google::protobuf::Message* response, RunFill fill);
  Starter RunStarter(core::RunRequest run, const std::string& session, core::Caller caller,
                     RunFill fill, google::protobuf::Message* response,
                     std::shared_ptr<HeldResult> held);
  // Calls whose request_id the ledger keeps (BeginSession, calls in a
  // session): answers a retry from the ledger, or runs `start` and records
  // its outcome (the serialized `response`) if it succeeds. `replay` turns a
  // remembered response into the answer (default: parse it into
  // `response`). Without a request_id, StartCall. `on_done` runs when the
  // call is over, however it ended.
  using Replay = absl::AnyInvocable<grpc::ServerUnaryReactor*(grpc::CallbackServerContext*,
                                                              const std::string& outcome)>;
  // `scope` is the caller's client id: request ids are per client.
  grpc::ServerUnaryReactor* StartRemembered(grpc::CallbackServerContext* context,
                                            const std::string& scope, const std::string& request_id,
                                            const google::protobuf::Message& request,
                                            google::protobuf::Message* response, Starter start,
                                            bool during_drain = false, Replay replay = nullptr,
                                            absl::AnyInvocable<void() &&> on_done = nullptr);
  // The one-shot request id's record (docs/retries.md): sets run.durable
  // and returns `fill` wrapped to answer a retry from the first attempt's
  // record into `response`.
  RunFill RecordOneShot(core::RunRequest& run, const std::string& request_id,
                        const google::protobuf::Message& request,
                        google::protobuf::Message* response, RunFill fill);
  // PipelineHost.
  bool RegisterPipelineStream(PipelineReactor* reactor) override;
  absl::Status AdmitPipelineCall(const std::string& client) override;
  std::shared_ptr<core::RunningCall> StartPipelineCall(const CallIdentity& who, absl::Time deadline,
                                                       v1::PipelineCall& call,
                                                       PipelineHost::Completion done) override;
  void PipelineCallSent(const std::string& client, size_t held_bytes) override;
  void PipelineStreamDone(PipelineReactor* reactor) override;
  // A pipeline call's run, as StartRun without a gRPC call: `finish` gets
  // the status (the filled `response` when OK) and the bytes reserved.
  using Finish = absl::AnyInvocable<void(absl::Status, size_t held_bytes) &&>;
  std::shared_ptr<core::RunningCall> StartDetached(
      core::RunRequest run, const std::string& session, core::Caller caller,
      const std::string& request_id, const google::protobuf::Message& request,
      std::shared_ptr<google::protobuf::Message> response, RunFill fill, Finish finish);
  // A pipeline call's Execute or ExecuteBatch body.
  std::shared_ptr<core::RunningCall> StartPipelineExecute(const CallIdentity& who,
                                                          absl::Time deadline,
                                                          const v1::ExecuteRequest& request,
                                                          Finish finish,
                                                          std::shared_ptr<v1::ExecuteResponse> out);
  std::shared_ptr<core::RunningCall> StartPipelineBatch(
      const CallIdentity& who, absl::Time deadline, const v1::ExecuteBatchRequest& request,
      Finish finish, std::shared_ptr<v1::ExecuteBatchResponse> out);
  std::shared_ptr<core::RunningCall> StartIndependentBatch(const CallIdentity& who,
                                                           absl::Time deadline,
                                                           const v1::ExecuteBatchRequest& request,
                                                           PipelineHost::Completion done);
  grpc::ServerWriteReactor<grpc::ByteBuffer>* ServeStreamExecute(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer& request);
  // The RunRequest of an Execute or StreamExecute request of the
  // authenticated caller `who` (its policy and the request limits applied).
  absl::StatusOr<core::RunRequest> RunOfExecute(const CallIdentity& who, absl::Time deadline,
                                                const v1::ExecuteRequest& request) const;
  // The same for an ExecuteBatch request.
  absl::StatusOr<core::RunRequest> RunOfBatch(const CallIdentity& who, absl::Time deadline,
                                              const v1::ExecuteBatchRequest& request) const;
  // Counts a call of `client` in flight (max_calls_per_client); Leave ends it.
  absl::Status Admit(const std::string& client);
  void Leave(const std::string& client);
  // Holds `bytes` of results (max_pending_result_bytes); Release gives back.
  absl::Status Reserve(size_t bytes);
  void Release(size_t bytes);
  // Gives freed heap memory back to the system after a large result
  // (glibc keeps it otherwise); one trim at a time.
  void TrimMemory();
  // RESOURCE_EXHAUSTED (and an empty response) if it is over the size limit.
  absl::Status CapResponse(google::protobuf::Message* response) const;
  // Finishes at once with `status` (OK: the response is filled in; otherwise
  // no database work was started).
  grpc::ServerUnaryReactor* Respond(grpc::CallbackServerContext* context,
                                    const absl::Status& status);
  grpc::ServerUnaryReactor* RejectDraining(grpc::CallbackServerContext* context);
  void CallStarted();
  void CallDone();

  core::StatementRunner& runner_;
  core::SessionManager& sessions_;
  const size_t max_result_bytes_;
  core::RequestLedger& ledger_;
  const CallAuthenticator auth_;
  const int max_array_depth_;
  core::NotificationHub* const notifications_;
  const size_t listen_queue_capacity_;
  const CallLimits limits_;
  // Execute's and ExecuteBatch's requests and responses, each call's on its
  // own protobuf arena (arena_message_allocator.h). Nothing of a call's
  // request or response is kept past its OnDone: the ledger and the one-shot
  // records keep serialized bytes.
  ArenaMessageAllocator<v1::ExecuteRequest, v1::ExecuteResponse> execute_messages_;
  ArenaMessageAllocator<v1::ExecuteBatchRequest, v1::ExecuteBatchResponse> batch_messages_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> trimming_{false};
  mutable core::Mutex mu_;
  core::CondVar idle_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  size_t pending_result_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> calls_by_client_ ABSL_GUARDED_BY(mu_);
  // Pipeline calls in flight per client (pipeline_max_in_flight_per_client).
  absl::flat_hash_map<std::string, int> pipeline_calls_by_client_ ABSL_GUARDED_BY(mu_);
  // Open Pipeline streams; a stream's OnDone removes it under this lock, so
  // StartDraining may call Drain() on each while holding it. Never taken by
  // what a stream calls under its own lock, nor while mu_ is held.
  mutable core::Mutex pipelines_mu_;
  absl::flat_hash_set<PipelineReactor*> pipelines_ ABSL_GUARDED_BY(pipelines_mu_);
  core::CondVar pipelines_gone_;  // signalled when pipelines_ becomes empty
  bool pipelines_draining_ ABSL_GUARDED_BY(pipelines_mu_) = false;
  uint64_t pipeline_streams_opened_ ABSL_GUARDED_BY(pipelines_mu_) = 0;
  std::atomic<uint64_t> pipeline_stream_calls_{0};  // calls started on streams
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_SESSION_BROKER_SERVICE_H_
