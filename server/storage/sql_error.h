// How PostgreSQL errors become absl::Status values: the SQLSTATE picks the
// status code (docs/errors.md is the table) and travels with the status as a
// payload, so the transport can put it in trailing metadata; an error the
// server reported also carries all of its fields (SqlErrorFields) as a second
// payload, which the transport sends as a SqlErrorDetail. The storage layer
// does not see the generated proto, so the fields have an encoding of their
// own here. Errors of the broker's own carry the SQLSTATE at most, never the
// fields.
// Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_
#define SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {

// Payload type URL under which a Status carries its SQLSTATE.
inline constexpr absl::string_view kSqlStatePayloadUrl =
    "type.googleapis.com/sessionbroker.v1.SqlState";

// Payload type URL under which a Status carries the fields of the error
// PostgreSQL reported (EncodeSqlErrorFields). Not a protobuf type: the
// transport decodes it and builds the SqlErrorDetail.
inline constexpr absl::string_view kSqlErrorFieldsPayloadUrl =
    "sessionbroker.storage/SqlErrorFields";

// The fields of one ErrorResponse (PostgreSQL's "Error Message Fields"),
// empty when the server did not send them; mirrors sessionbroker.v1's
// SqlErrorDetail.
struct SqlErrorFields {
  std::string sqlstate;  // five characters
  std::string severity;  // "ERROR", "FATAL", ...
  std::string message;   // the primary message, one line
  std::string detail;
  std::string hint;
  uint32_t position = 0;  // 1-based character position in the statement; 0: none
  std::string schema_name;
  std::string table_name;
  std::string column_name;
  std::string data_type_name;
  std::string constraint_name;
  // 1-based index of the failed statement in a batch; 0: not in a batch.
  uint32_t statement_index = 0;

  bool operator==(const SqlErrorFields& other) const;
};

// A self-delimiting encoding of the fields (each string field as its length
// and bytes, the numbers in decimal), and its inverse: nullopt for bytes that
// are not such an encoding.
std::string EncodeSqlErrorFields(const SqlErrorFields& fields);
std::optional<SqlErrorFields> DecodeSqlErrorFields(absl::string_view encoded);

// The status code for a five-character SQLSTATE.
absl::StatusCode CodeForSqlState(absl::string_view sqlstate);

// A status for a server-reported error: code from CodeForSqlState, message
// "<message> [SQLSTATE xxxxx]", and the SQLSTATE as payload.
absl::Status SqlError(absl::string_view sqlstate, absl::string_view message);

// SqlError(fields.sqlstate, message) that also carries `fields` (a
// kSqlErrorFieldsPayloadUrl payload), for an error the server reported.
// `message` is the composed one line (primary message, detail, hint).
absl::Status SqlError(const SqlErrorFields& fields, absl::string_view message);

// The SQLSTATE a status carries, if any.
std::optional<std::string> SqlStateOf(const absl::Status& status);

// The same status with another code and a prefix on its message, keeping its
// payloads (the SQLSTATE).
absl::Status Recode(const absl::Status& status, absl::StatusCode code, absl::string_view prefix);
absl::Status WithPrefix(const absl::Status& status, absl::string_view prefix);

// The fields a status carries, if the server reported its error.
std::optional<SqlErrorFields> SqlErrorFieldsOf(const absl::Status& status);

// The failure of statement `index` (0-based) of a batch of `count`: the
// status prefixed "statement <index+1> of <count>: ", its fields (if any)
// with statement_index = index + 1.
absl::Status ForStatement(const absl::Status& status, size_t index, size_t count);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_SQL_ERROR_H_
