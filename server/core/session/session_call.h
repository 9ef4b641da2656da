// SessionCall: one call on a session, as the kind it is. Each kind holds
// exactly its own inputs and its own typed callback, so a call can neither
// carry a callback of another kind nor lack its own; code that dispatches on
// the kind does so with std::visit (or std::holds_alternative).
//
// Plain values (move-only: the callbacks are). Which thread runs a callback
// is SessionManager's business (see its header).
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_SESSION_CALL_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_SESSION_CALL_H_

#include <type_traits>
#include <utility>
#include <variant>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/exec/statement_runner.h"
#include "server/core/session/session_types.h"

namespace sessionbroker::core {

template <typename T>
using SessionCallback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

// Execute (request.op kExecute) or ExecuteBatch (kBatch); the request has
// passed StatementRunner::Validate. Its deadline is request.deadline.
struct RunCall {
  RunRequest request;
  StatementRunner::Callback done;
};

// `done` gets the session as it is once the transaction is open.
struct BeginTransactionCall {
  TransactionSpec spec;
  absl::Time deadline = absl::InfiniteFuture();
  SessionCallback<SessionInfo> done;
};

// `done` gets the commit time.
struct CommitCall {
  absl::Time deadline = absl::InfiniteFuture();
  SessionCallback<absl::Time> done;
};

// `done` gets whether a transaction was rolled back by this call (false: none
// was open, or the broker had already rolled it back).
struct RollbackCall {
  absl::Time deadline = absl::InfiniteFuture();
  SessionCallback<bool> done;
};

using SessionCall = std::variant<RunCall, BeginTransactionCall, CommitCall, RollbackCall>;

// The call's own deadline.
inline absl::Time DeadlineOf(const SessionCall& call) {
  return std::visit(
      [](const auto& kind) -> absl::Time {
        if constexpr (std::is_same_v<std::decay_t<decltype(kind)>, RunCall>) {
          return kind.request.deadline;
        } else {
          return kind.deadline;
        }
      },
      call);
}

// Completes the call with `status` (an error), whatever its kind.
inline void FailCall(SessionCall& call, absl::Status status) {
  std::visit([&status](auto& kind) { std::move(kind.done)(std::move(status)); }, call);
}

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_SESSION_CALL_H_
