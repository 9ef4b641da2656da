// How PostgreSQL errors become absl::Status values: the SQLSTATE picks the
// status code (docs/errors.md is the table) and travels with the status as a
// payload, so the transport can put it in trailing metadata.
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_
#define SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {

// Payload type URL under which a Status carries its SQLSTATE.
inline constexpr absl::string_view kSqlStatePayloadUrl =
    "type.googleapis.com/sessionbroker.v1.SqlState";

// The status code for a five-character SQLSTATE.
absl::StatusCode CodeForSqlState(absl::string_view sqlstate);

// A status for a server-reported error: code from CodeForSqlState, message
// "<message> [SQLSTATE xxxxx]", and the SQLSTATE as payload.
absl::Status SqlError(absl::string_view sqlstate, absl::string_view message);

// The SQLSTATE a status carries, if any.
std::optional<std::string> SqlStateOf(const absl::Status& status);

// The same status with another code and a prefix on its message, keeping its
// payloads (the SQLSTATE).
absl::Status Recode(const absl::Status& status, absl::StatusCode code, absl::string_view prefix);
absl::Status WithPrefix(const absl::Status& status, absl::string_view prefix);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_
