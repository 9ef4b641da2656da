#include "server/transport/stream_execute_reactor.h"

#include <utility>
#include <vector>

#include "grpcpp/impl/codegen/proto_utils.h"
#include "server/transport/status_mapping.h"
#include "server/transport/value_conversion.h"

namespace sessionbroker::transport {

StreamExecuteReactor::StreamExecuteReactor(grpc::CallbackServerContext* context, DoneHook on_done)
    : context_(context), on_done_(std::move(on_done)) {}

StreamExecuteReactor* StreamExecuteReactor::Refuse(grpc::CallbackServerContext* context,
                                                   absl::Status status, DoneHook on_done) {
  auto* reactor = new StreamExecuteReactor(context, std::move(on_done));
  {
    core::MutexLock lock(&reactor->mu_);
    reactor->finished_ = true;
  }
  reactor->Finish(ToGrpcStatus(status, context));
  return reactor;
}

StreamExecuteReactor* StreamExecuteReactor::Start(grpc::CallbackServerContext* context,
                                                  core::StatementRunner& runner,
                                                  core::SessionManager& sessions,
                                                  core::RunRequest run, const std::string& session,
                                                  core::Caller caller, size_t window_bytes,
                                                  DoneHook on_done) {
  auto* reactor = new StreamExecuteReactor(context, std::move(on_done));
  reactor->Begin(runner, sessions, std::move(run), session, caller, window_bytes);
  return reactor;
}

void StreamExecuteReactor::Begin(core::StatementRunner& runner, core::SessionManager& sessions,
                                 core::RunRequest run, const std::string& session,
                                 const core::Caller& caller, size_t window_bytes) {
  window_ = std::make_shared<core::RowWindow>(window_bytes, [this] { Pump(); });
  run.sink = window_;
  auto done = [this](absl::StatusOr<core::StatementRunner::Results> results) {
    RunDone(std::move(results));
  };
  std::shared_ptr<core::RunningCall> call =
      session.empty() ? runner.Run(std::move(run), std::move(done))
                      : sessions.Run(caller, session, std::move(run), std::move(done));
  {
    core::MutexLock lock(&mu_);
    call_ = std::move(call);
    started_ = true;
  }
  Pump();
}

void StreamExecuteReactor::RunDone(absl::StatusOr<core::StatementRunner::Results> results) {
  // The producer is done: what it gathered last goes out before the end.
  window_->Flush();
  {
    core::MutexLock lock(&mu_);
    run_done_ = true;
    if (!results.ok()) {
      status_ = results.status();
    } else if (!results->empty()) {
      end_ = std::move(results->front());
    }
  }
  Pump();
}

void StreamExecuteReactor::Write(const v1::StreamExecuteResponse& response) {
  bool own_buffer = false;
  buffer_.Clear();
  (void)grpc::SerializationTraits<v1::StreamExecuteResponse>::Serialize(response, &buffer_,
                                                                        &own_buffer);
  StartWrite(&buffer_);
}

void StreamExecuteReactor::Pump() {
  std::optional<core::RowWindow::Chunk> chunk;
  std::optional<storage::QueryResult> end;
  absl::Status finish_with;
  bool finish = false;
  {
    core::MutexLock lock(&mu_);
    if (!started_ || writing_ || finished_) return;
    if (!cancelled_) chunk = window_->Take();
    if (chunk.has_value()) {
      writing_ = true;
    } else if (run_done_) {
      if (status_.ok() && !cancelled_ && !end_written_ && end_.has_value()) {
        end = std::move(end_);
        end_.reset();
        end_written_ = true;
        writing_ = true;
      } else {
        finish = true;
        finished_ = true;
        finish_with =
            cancelled_ && status_.ok() ? absl::CancelledError("the stream was cancelled") : status_;
      }
    }
  }
  if (chunk.has_value()) {
    v1::StreamExecuteResponse response;
    if (chunk->has_columns) {
      v1::StreamColumns* columns = response.mutable_columns();
      for (storage::Column& c : chunk->columns) {
        v1::Column* column = columns->add_columns();
        column->set_name(std::move(c.name));
        column->set_type_oid(c.type_oid);
        column->set_type_name(std::move(c.type_name));
      }
    } else {
      v1::StreamRows* rows = response.mutable_rows();
      rows->mutable_rows()->Reserve(static_cast<int>(chunk->rows.size()));
      for (std::vector<storage::Value>& r : chunk->rows) {
        v1::Row* row = rows->add_rows();
        row->mutable_values()->Reserve(static_cast<int>(r.size()));
        for (storage::Value& v : r) ValueToProto(std::move(v), row->add_values());
      }
    }
    chunk.reset();  // the message holds the rows now
    Write(response);
  } else if (end.has_value()) {
    v1::StreamExecuteResponse response;
    response.mutable_end()->set_rows_affected(end->rows_affected);
    response.mutable_end()->set_command_tag(std::move(end->command_tag));
    Write(response);
  } else if (finish) {
    Finish(ToGrpcStatus(finish_with, context_));
  }
}

void StreamExecuteReactor::OnWriteDone(bool ok) {
  if (!ok) {
    // The client is gone; OnCancel follows and stops the statement. Stop
    // the producer now as well.
    window_->Close(absl::CancelledError("the client stopped the stream"));
    core::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  {
    core::MutexLock lock(&mu_);
    writing_ = false;
  }
  Pump();
}

void StreamExecuteReactor::OnCancel() {
  std::shared_ptr<core::RunningCall> call;
  {
    core::MutexLock lock(&mu_);
    cancelled_ = true;
    call = call_;
  }
  if (window_ == nullptr) return;  // refused: nothing runs
  window_->Close(absl::CancelledError(
      "the call was cancelled (the client went away or its deadline passed), so the statement "
      "was cancelled"));
  if (call != nullptr) call->Cancel();
  Pump();
}

void StreamExecuteReactor::OnDone() {
  DoneHook on_done = std::move(on_done_);
  delete this;
  if (on_done) std::move(on_done)();
}

}  // namespace sessionbroker::transport
