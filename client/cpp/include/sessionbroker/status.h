// Errors of the C++ client: every failed call is an absl::Status with the
// gRPC code and message of the broker's reply, carrying what the broker said
// about it as payloads: the SQLSTATE (trailer "sqlstate"), the
// sessionbroker-reason token of a session error, and PostgreSQL's error
// fields (the SqlErrorDetail inside the "grpc-status-details-bin" trailer,
// docs/errors.md). The helpers below read them back.
//
// Pure functions over values: thread-safe.
#ifndef SESSIONBROKER_CLIENT_STATUS_H_
#define SESSIONBROKER_CLIENT_STATUS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessionbroker {

// Payload type URLs on the absl::Status of a failed call (absl::Status::
// GetPayload). The helpers below are the intended way to read them.
// The five-character SQLSTATE, as text.
inline constexpr absl::string_view kSqlStatePayloadUrl = "type.sessionbroker.dev/sqlstate";
// The sessionbroker-reason token (SESSION_EXPIRED, TX_IDLE_TIMEOUT, ...).
inline constexpr absl::string_view kReasonPayloadUrl = "type.sessionbroker.dev/reason";
// The serialized sessionbroker.v1.RpcStatus of grpc-status-details-bin.
inline constexpr absl::string_view kRpcStatusPayloadUrl =
    "type.googleapis.com/sessionbroker.v1.RpcStatus";

// The fields of an error PostgreSQL reported (sessionbroker.v1.SqlErrorDetail;
// docs/errors.md). Empty strings (and 0) for fields PostgreSQL did not send.
struct SqlError {
  std::string sqlstate;  // e.g. "23505"
  std::string severity;  // "ERROR" or "FATAL"
  std::string message;   // the primary message, without the status prefixes
  std::string detail;
  std::string hint;
  uint32_t position = 0;  // 1-based character position in the statement
  std::string schema;
  std::string table;
  std::string column;
  std::string datatype;
  std::string constraint;
  // In an ExecuteBatch: the 1-based index of the statement that failed.
  uint32_t statement_index = 0;
};

// The SQLSTATE of an error PostgreSQL reported; nullopt for the broker's own
// errors (and for OK).
std::optional<std::string> SqlStateOf(const absl::Status& status);

// All of PostgreSQL's fields of the error; nullopt when the broker sent no
// SqlErrorDetail (its own errors: a session that ended, a pool timeout, ...).
std::optional<SqlError> SqlErrorOf(const absl::Status& status);

// The broker's sessionbroker-reason token of a session error
// (docs/sessions.md#errors), e.g. "SESSION_EXPIRED"; nullopt if none.
std::optional<std::string> ReasonOf(const absl::Status& status);

// True for the errors after which re-running the whole transaction can
// succeed (docs/errors.md, "Retry guide"): ABORTED (serialization failure,
// deadlock, lock not available, a transaction the broker rolled back), and
// SQLSTATE 40001 / 40P01 whatever the code.
bool IsRetryableTransactionError(const absl::Status& status);

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_STATUS_H_
