// StreamExecuteReactor: one StreamExecute call (server streaming, served on
// raw bytes so that an unparseable request is answered INVALID_ARGUMENT).
// It starts the statement with a core::RowWindow as its sink, writes the
// window's chunks one at a time (columns, then rows), then the end (command
// tag and row count) or the statement's error as the call's status.
//
// Flow control: one write in flight; the next chunk is taken only when the
// previous write completed, and the window blocks the connection's thread
// while it is full, so a client that stops reading stops the reading from
// PostgreSQL. A client that goes away (or the deadline) cancels the
// statement through the runner's cancel machinery and closes the window.
//
// Lifetime: owned by gRPC, deleted in OnDone. It finishes the RPC only after
// the statement's completion callback ran, so the window's callback and the
// runner never see a deleted reactor. Thread-safe (reactions and the pool's
// executor threads).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_STREAM_EXECUTE_REACTOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_STREAM_EXECUTE_REACTOR_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/core/base/mutex.h"
#include "server/core/exec/row_window.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/session/session_manager.h"
#include "server/storage/value.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {

class StreamExecuteReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Runs once, when the call is done (for the service's accounting).
  using DoneHook = absl::AnyInvocable<void() &&>;

  // A reactor that ends the call at once with `status` (not OK).
  static StreamExecuteReactor* Refuse(grpc::CallbackServerContext* context, absl::Status status,
                                      DoneHook on_done);

  // Starts `run` (one-shot, or in `session` when not empty, which `caller`
  // must own) streaming through a window of `window_bytes`.
  static StreamExecuteReactor* Start(grpc::CallbackServerContext* context,
                                     core::StatementRunner& runner, core::SessionManager& sessions,
                                     core::RunRequest run, const std::string& session,
                                     core::Caller caller, size_t window_bytes, DoneHook on_done);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  StreamExecuteReactor(grpc::CallbackServerContext* context, DoneHook on_done);

  void Begin(core::StatementRunner& runner, core::SessionManager& sessions, core::RunRequest run,
             const std::string& session, const core::Caller& caller, size_t window_bytes);
  void RunDone(absl::StatusOr<core::StatementRunner::Results> results);
  // Starts the next write, or finishes, if nothing is being written.
  void Pump();
  void Write(const v1::StreamExecuteResponse& response);

  // The call's context: the status's SQLSTATE goes into its trailers.
  grpc::CallbackServerContext* const context_;
  DoneHook on_done_;
  std::shared_ptr<core::RowWindow> window_;
  grpc::ByteBuffer buffer_;  // the write in flight

  core::Mutex mu_;
  std::shared_ptr<core::RunningCall> call_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // Begin() has published call_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool run_done_ ABSL_GUARDED_BY(mu_) = false;
  bool end_written_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::optional<storage::QueryResult> end_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_STREAM_EXECUTE_REACTOR_H_
