// FakeBroker: a scripted sessionbroker.v1.SessionBroker service on a real
// in-process gRPC server (no port), for the C++ client's unit tests. It
// records what the client sent (requests, metadata, deadlines, the order of
// session calls, the sessions its KeepAlive streams hold) and answers as the
// test scripts it (the next Execute response or error, Commit failures, the
// messages and end of the next StreamExecute or Listen stream).
//
// Thread-safe: gRPC runs the handlers on its threads while the test reads.
#ifndef SESSIONBROKER_CLIENT_CPP_TESTS_FAKE_BROKER_H_
#define SESSIONBROKER_CLIENT_CPP_TESTS_FAKE_BROKER_H_

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/v1/broker.grpc.pb.h"

namespace sessionbroker::testing {

// A scripted error: code, message, trailers and grpc-status-details-bin.
struct FakeError {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  std::string sqlstate;  // "sqlstate" trailer when not empty
  std::string reason;    // "sessionbroker-reason" trailer when not empty
  std::string details;   // serialized v1::RpcStatus
};

class FakeBroker final : public v1::SessionBroker::Service {
 public:
  // Listening on no port (in-process channel only), or with `tcp` on a port
  // of 127.0.0.1 the kernel picks: for tests that need a real channel
  // (service config retries do not run on in-process channels).
  explicit FakeBroker(bool tcp = false) {
    grpc::ServerBuilder builder;
    builder.RegisterService(this);
    if (tcp) builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    server_ = builder.BuildAndStart();
  }
  // "127.0.0.1:PORT" of a tcp fake.
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  ~FakeBroker() override {
    server_->Shutdown();
    server_->Wait();
  }

  std::shared_ptr<grpc::Channel> channel() { return server_->InProcessChannel({}); }

  // ---- scripting ----
  void NextExecute(v1::ExecuteResponse response) {
    absl::MutexLock lock(&mu_);
    execute_replies_.push_back({std::move(response), FakeError()});
  }
  void NextExecuteError(FakeError error) {
    absl::MutexLock lock(&mu_);
    execute_replies_.push_back({v1::ExecuteResponse(), std::move(error)});
  }
  // The next `n` calls of `method` ("Execute", "GetSession", "BeginSession",
  // "BeginTransaction") fail with `error` (before any scripted reply).
  void FailNext(const std::string& method, int n, FakeError error) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) failures_[method].push_back(error);
  }
  // Executes run until their call is cancelled (deadline, client cancel).
  void HangExecutes() {
    absl::MutexLock lock(&mu_);
    hang_executes_ = true;
  }
  // The next StreamExecute (or Listen) call writes `messages`, then ends
  // with `end` or, with `hang`, waits until the client cancels it.
  void NextStream(std::vector<v1::StreamExecuteResponse> messages, FakeError end = {},
                  bool hang = false) {
    absl::MutexLock lock(&mu_);
    streams_script_.push_back({std::move(messages), std::move(end), hang});
  }
  void NextListen(std::vector<v1::ListenResponse> messages, FakeError end = {}, bool hang = false) {
    absl::MutexLock lock(&mu_);
    listen_script_.push_back({std::move(messages), std::move(end), hang});
  }
  // Server streams (StreamExecute, Listen) that ended because the client
  // cancelled them.
  int streams_cancelled() const {
    absl::MutexLock lock(&mu_);
    return streams_cancelled_;
  }
  // Blocks until `n` server streams were cancelled by their client.
  void AwaitStreamsCancelled(int n) const {
    struct Waiter {
      const FakeBroker* fake;
      int n;
      bool Done() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return fake->streams_cancelled_ >= n; }
    };
    Waiter waiter{this, n};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&waiter, &Waiter::Done));
  }
  std::vector<v1::ListenRequest> listens() const {
    absl::MutexLock lock(&mu_);
    return listens_;
  }
  // The next `n` Commits fail with `error`.
  void FailCommits(int n, FakeError error) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < n; ++i) commit_errors_.push_back(error);
  }

  // ---- Pipeline ----
  // How the Pipeline method treats a stream's calls. Until EnablePipeline it
  // answers UNIMPLEMENTED, as a broker without the method. Its first
  // message advertises 16 calls in flight per stream.
  enum class PipelineScript {
    kAnswer,          // each call answered: one int8 cell holding its id
    kRefuseDraining,  // each call answered UNAVAILABLE, reason DRAINING, as a draining broker
    kEndDraining,     // the first message read ends the stream as a drain does (reason
                      // DRAINING), unanswered
    kBreak,           // the first message read ends the stream UNAVAILABLE, unanswered
  };
  // The broker's draining message (server/transport/pipeline_reactor.cc).
  static constexpr char kDrainingMessage[] =
      "the broker is shutting down; retry the calls that got no result on another instance";
  void EnablePipeline(PipelineScript script) {
    absl::MutexLock lock(&mu_);
    pipeline_enabled_ = true;
    pipeline_script_ = script;
  }
  // Pipeline streams opened (while enabled) and calls read on them.
  int pipeline_streams() const {
    absl::MutexLock lock(&mu_);
    return pipeline_streams_;
  }
  int pipeline_calls() const {
    absl::MutexLock lock(&mu_);
    return pipeline_calls_;
  }

  // ---- what the client did ----
  std::vector<v1::ExecuteRequest> executes() const {
    absl::MutexLock lock(&mu_);
    return executes_;
  }
  // Every BeginSession request (failed ones too), in arrival order.
  std::vector<v1::BeginSessionRequest> begin_sessions() const {
    absl::MutexLock lock(&mu_);
    return begin_sessions_;
  }
  // "BeginSession", "BeginTransaction s1", "Commit s1", "Rollback s1",
  // "EndSession s1", "Execute s1", in arrival order.
  std::vector<std::string> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  std::string last_client_id() const {
    absl::MutexLock lock(&mu_);
    return last_client_id_;
  }
  bool last_call_had_deadline() const {
    absl::MutexLock lock(&mu_);
    return last_had_deadline_;
  }
  // Blocks until a KeepAlive stream holds `session`.
  void AwaitHeld(const std::string& session) const {
    struct Waiter {
      const FakeBroker* fake;
      const std::string* name;
      bool Held() const ABSL_NO_THREAD_SAFETY_ANALYSIS {  // called under mu_
        return std::find(fake->held_.begin(), fake->held_.end(), *name) != fake->held_.end();
      }
    };
    Waiter waiter{this, &session};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&waiter, &Waiter::Held));
  }
  // Cancels the KeepAlive streams open now, as a broken connection would;
  // what they held is forgotten.
  void BreakKeepAliveStreams() {
    absl::MutexLock lock(&mu_);
    for (grpc::ServerContext* c : streams_) c->TryCancel();
    held_.clear();
  }
  // Blocks until `n` KeepAlive streams have been opened in all.
  void AwaitStreamsOpened(int n) const {
    struct Waiter {
      const FakeBroker* fake;
      int n;
      bool Done() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return fake->streams_opened_ >= n; }
    };
    Waiter waiter{this, n};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&waiter, &Waiter::Done));
  }
  int streams_opened() const {
    absl::MutexLock lock(&mu_);
    return streams_opened_;
  }
  std::vector<std::string> held() const {
    absl::MutexLock lock(&mu_);
    return held_;
  }

  // ---- the service ----
  grpc::Status Execute(grpc::ServerContext* context, const v1::ExecuteRequest* request,
                       v1::ExecuteResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("Execute ", request->session()));
    static constexpr bool kNever = false;
    while (hang_executes_ && !context->IsCancelled()) {
      // Releases mu_ while it waits: polls the cancellation.
      mu_.AwaitWithTimeout(absl::Condition(&kNever), absl::Milliseconds(5));
    }
    executes_.push_back(*request);
    if (std::optional<FakeError> e = TakeFailure("Execute")) return Fail(context, *e);
    if (execute_replies_.empty()) return grpc::Status::OK;
    Reply reply = std::move(execute_replies_.front());
    execute_replies_.pop_front();
    if (reply.error.code != grpc::StatusCode::OK) return Fail(context, reply.error);
    *response = std::move(reply.response);
    return grpc::Status::OK;
  }

  grpc::Status Pipeline(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::PipelineResponse, v1::PipelineRequest>* stream) override {
    {
      absl::MutexLock lock(&mu_);
      if (!pipeline_enabled_) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
      ++pipeline_streams_;
    }
    v1::PipelineResponse first;
    first.mutable_limits()->set_max_in_flight_per_stream(16);
    if (!stream->Write(first)) return grpc::Status::OK;
    v1::PipelineRequest request;
    while (stream->Read(&request)) {
      PipelineScript script;
      {
        absl::MutexLock lock(&mu_);
        pipeline_calls_ += request.calls_size();
        script = pipeline_script_;
      }
      if (script == PipelineScript::kEndDraining) {
        context->AddTrailingMetadata("sessionbroker-reason", "DRAINING");
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, kDrainingMessage);
      }
      if (script == PipelineScript::kBreak) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the connection was lost");
      }
      v1::PipelineResponse response;
      for (const v1::PipelineCall& call : request.calls()) {
        v1::PipelineResult* r = response.add_results();
        r->set_id(call.id());
        if (script == PipelineScript::kRefuseDraining) {
          r->mutable_status()->set_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
          r->mutable_status()->set_message(kDrainingMessage);
          r->set_reason("DRAINING");
        } else {
          v1::ExecuteResponse* e = r->mutable_execute();
          e->add_columns()->set_name("id");
          e->add_rows()->add_values()->set_int64_value(static_cast<int64_t>(call.id()));
          e->set_command_tag("SELECT 1");
        }
      }
      if (response.results_size() > 0 && !stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status StreamExecute(grpc::ServerContext* context, const v1::ExecuteRequest* request,
                             grpc::ServerWriter<v1::StreamExecuteResponse>* writer) override {
    Script<v1::StreamExecuteResponse> script;
    {
      absl::MutexLock lock(&mu_);
      Record(context, absl::StrCat("StreamExecute ", request->session()));
      executes_.push_back(*request);
      if (!streams_script_.empty()) {
        script = std::move(streams_script_.front());
        streams_script_.pop_front();
      }
    }
    return Play(context, writer, script);
  }

  grpc::Status Listen(grpc::ServerContext* context, const v1::ListenRequest* request,
                      grpc::ServerWriter<v1::ListenResponse>* writer) override {
    Script<v1::ListenResponse> script;
    {
      absl::MutexLock lock(&mu_);
      Record(context, "Listen");
      listens_.push_back(*request);
      if (!listen_script_.empty()) {
        script = std::move(listen_script_.front());
        listen_script_.pop_front();
      }
    }
    return Play(context, writer, script);
  }

  grpc::Status BeginSession(grpc::ServerContext* context, const v1::BeginSessionRequest* request,
                            v1::Session* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, "BeginSession");
    begin_sessions_.push_back(*request);
    if (std::optional<FakeError> e = TakeFailure("BeginSession")) return Fail(context, *e);
    response->set_name(absl::StrCat("s", ++sessions_));
    response->set_label(request->label());
    return grpc::Status::OK;
  }

  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::Session* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("GetSession ", request->session()));
    if (std::optional<FakeError> e = TakeFailure("GetSession")) return Fail(context, *e);
    response->set_name(request->session());
    return grpc::Status::OK;
  }

  grpc::Status BeginTransaction(grpc::ServerContext* context,
                                const v1::BeginTransactionRequest* request,
                                v1::BeginTransactionResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("BeginTransaction ", request->session()));
    if (std::optional<FakeError> e = TakeFailure("BeginTransaction")) return Fail(context, *e);
    return grpc::Status::OK;
  }

  grpc::Status Commit(grpc::ServerContext* context, const v1::CommitRequest* request,
                      v1::CommitResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("Commit ", request->session()));
    if (!commit_errors_.empty()) {
      FakeError e = commit_errors_.front();
      commit_errors_.pop_front();
      return Fail(context, e);
    }
    return grpc::Status::OK;
  }

  grpc::Status Rollback(grpc::ServerContext* context, const v1::RollbackRequest* request,
                        v1::RollbackResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("Rollback ", request->session()));
    return grpc::Status::OK;
  }

  grpc::Status EndSession(grpc::ServerContext* context, const v1::EndSessionRequest* request,
                          v1::EndSessionResponse* response) override {
    absl::MutexLock lock(&mu_);
    Record(context, absl::StrCat("EndSession ", request->session()));
    return grpc::Status::OK;
  }

  grpc::Status KeepAlive(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::KeepAliveResponse, v1::KeepAliveRequest>* stream) override {
    {
      absl::MutexLock lock(&mu_);
      streams_.push_back(context);
      ++streams_opened_;
    }
    v1::KeepAliveRequest request;
    while (stream->Read(&request)) {
      v1::KeepAliveResponse response;
      {
        absl::MutexLock lock(&mu_);
        for (const std::string& h : request.hold()) {
          held_.push_back(h);
          v1::SessionState* s = response.add_sessions();
          s->set_name(h);
          s->set_state(v1::SessionState::HELD);
        }
        for (const std::string& r : request.release()) {
          held_.erase(std::remove(held_.begin(), held_.end(), r), held_.end());
        }
      }
      stream->Write(response);
    }
    absl::MutexLock lock(&mu_);
    streams_.erase(std::remove(streams_.begin(), streams_.end(), context), streams_.end());
    return grpc::Status::OK;
  }

 private:
  struct Reply {
    v1::ExecuteResponse response;
    FakeError error;
  };
  template <typename Message>
  struct Script {
    std::vector<Message> messages;
    FakeError end;
    bool hang = false;
  };

  // Writes a script's messages, then ends as it says; a call the client
  // cancels is counted.
  template <typename Message>
  grpc::Status Play(grpc::ServerContext* context, grpc::ServerWriter<Message>* writer,
                    const Script<Message>& script) {
    for (const Message& m : script.messages) {
      if (!writer->Write(m)) break;
    }
    static constexpr bool kNever = false;
    absl::MutexLock lock(&mu_);
    while (script.hang && !context->IsCancelled()) {
      mu_.AwaitWithTimeout(absl::Condition(&kNever), absl::Milliseconds(5));
    }
    if (context->IsCancelled()) {
      ++streams_cancelled_;
      return grpc::Status::CANCELLED;
    }
    return Fail(context, script.end);
  }

  void Record(grpc::ServerContext* context, std::string call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    calls_.push_back(std::move(call));
    auto it = context->client_metadata().find("x-client-id");
    last_client_id_ = it == context->client_metadata().end()
                          ? ""
                          : std::string(it->second.data(), it->second.size());
    last_had_deadline_ =
        context->deadline() < std::chrono::system_clock::now() + std::chrono::hours(24 * 365);
  }

  std::optional<FakeError> TakeFailure(const std::string& method)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = failures_.find(method);
    if (it == failures_.end() || it->second.empty()) return std::nullopt;
    FakeError e = it->second.front();
    it->second.pop_front();
    return e;
  }

  static grpc::Status Fail(grpc::ServerContext* context, const FakeError& e) {
    if (!e.sqlstate.empty()) context->AddTrailingMetadata("sqlstate", e.sqlstate);
    if (!e.reason.empty()) context->AddTrailingMetadata("sessionbroker-reason", e.reason);
    return grpc::Status(e.code, e.message, e.details);
  }

  mutable absl::Mutex mu_;
  std::deque<Reply> execute_replies_ ABSL_GUARDED_BY(mu_);
  std::deque<FakeError> commit_errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::deque<FakeError>> failures_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ExecuteRequest> executes_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::BeginSessionRequest> begin_sessions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> held_ ABSL_GUARDED_BY(mu_);
  std::string last_client_id_ ABSL_GUARDED_BY(mu_);
  bool last_had_deadline_ ABSL_GUARDED_BY(mu_) = false;
  int sessions_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<grpc::ServerContext*> streams_ ABSL_GUARDED_BY(mu_);
  int streams_opened_ ABSL_GUARDED_BY(mu_) = 0;
  bool hang_executes_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Script<v1::StreamExecuteResponse>> streams_script_ ABSL_GUARDED_BY(mu_);
  std::deque<Script<v1::ListenResponse>> listen_script_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ListenRequest> listens_ ABSL_GUARDED_BY(mu_);
  int streams_cancelled_ ABSL_GUARDED_BY(mu_) = 0;
  bool pipeline_enabled_ ABSL_GUARDED_BY(mu_) = false;
  PipelineScript pipeline_script_ ABSL_GUARDED_BY(mu_) = PipelineScript::kAnswer;
  int pipeline_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int pipeline_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace sessionbroker::testing

#endif  // SESSIONBROKER_CLIENT_CPP_TESTS_FAKE_BROKER_H_
