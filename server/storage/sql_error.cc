#include "server/storage/sql_error.h"

#include <array>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/optional.h"

namespace sessionbroker::storage {
namespace {

using absl::StatusCode;

// The code for a SQLSTATE class (its first two characters) when no specific
// SQLSTATE of that class has a rule of its own.
StatusCode CodeForClass(absl::string_view cls) {
  // Integrity constraint violations, cardinality violations (21), invalid
  // transaction state (25, including writes in a read-only transaction),
  // object-not-in-prerequisite-state (55) and PL/pgSQL errors (P0, including
  // RAISE EXCEPTION) all mean "the data or the session is not in a state that
  // lets this statement succeed": retrying the same statement will not help.
  if (cls == "23" || cls == "21" || cls == "25" || cls == "55" || cls == "P0") {
    return StatusCode::kFailedPrecondition;
  }
  // Serialization failures and deadlocks: the whole transaction may succeed if
  // retried.
  if (cls == "40") return StatusCode::kAborted;
  // Connection exceptions: the database is (or was) unreachable.
  if (cls == "08") return StatusCode::kUnavailable;
  // Invalid authorization.
  if (cls == "28") return StatusCode::kPermissionDenied;
  // Syntax errors and access rule violations (42), data exceptions (22),
  // invalid catalog/schema names (3D, 3F): the statement itself is wrong.
  if (cls == "42" || cls == "22" || cls == "3D" || cls == "3F") {
    return StatusCode::kInvalidArgument;
  }
  if (cls == "0A") return StatusCode::kUnimplemented;
  // Insufficient resources (53) and program limits exceeded (54).
  if (cls == "53" || cls == "54") return StatusCode::kResourceExhausted;
  if (cls == "XX") return StatusCode::kInternal;
  return StatusCode::kUnknown;
}

// The fields in their encoded order; the numbers as decimal text.
constexpr size_t kEncodedFieldCount = 12;

}  // namespace

bool SqlErrorFields::operator==(const SqlErrorFields& o) const {
  return sqlstate == o.sqlstate && severity == o.severity && message == o.message &&
         detail == o.detail && hint == o.hint && position == o.position &&
         schema_name == o.schema_name && table_name == o.table_name &&
         column_name == o.column_name && data_type_name == o.data_type_name &&
         constraint_name == o.constraint_name && statement_index == o.statement_index;
}

std::string EncodeSqlErrorFields(const SqlErrorFields& f) {
  const std::string position = absl::StrCat(f.position);
  const std::string statement_index = absl::StrCat(f.statement_index);
  const std::array<absl::string_view, kEncodedFieldCount> parts = {
      f.sqlstate,    f.severity,       f.message,         f.detail,
      f.hint,        position,         f.schema_name,     f.table_name,
      f.column_name, f.data_type_name, f.constraint_name, statement_index};
  std::string out;
  for (const absl::string_view part : parts) absl::StrAppend(&out, part.size(), ":", part);
  return out;
}

std::optional<SqlErrorFields> DecodeSqlErrorFields(absl::string_view encoded) {
  std::array<std::string, kEncodedFieldCount> parts;
  for (std::string& part : parts) {
    const size_t colon = encoded.find(':');
    size_t length = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(encoded.substr(0, colon), &length) ||
        length > encoded.size() - colon - 1) {
      return std::nullopt;
    }
    part = std::string(encoded.substr(colon + 1, length));
    encoded.remove_prefix(colon + 1 + length);
  }
  SqlErrorFields f;
  if (!encoded.empty() || !absl::SimpleAtoi(parts[5], &f.position) ||
      !absl::SimpleAtoi(parts[11], &f.statement_index)) {
    return std::nullopt;
  }
  f.sqlstate = std::move(parts[0]);
  f.severity = std::move(parts[1]);
  f.message = std::move(parts[2]);
  f.detail = std::move(parts[3]);
  f.hint = std::move(parts[4]);
  f.schema_name = std::move(parts[6]);
  f.table_name = std::move(parts[7]);
  f.column_name = std::move(parts[8]);
  f.data_type_name = std::move(parts[9]);
  f.constraint_name = std::move(parts[10]);
  return f;
}

absl::StatusCode CodeForSqlState(absl::string_view sqlstate) {
  if (sqlstate.size() != 5) return StatusCode::kUnknown;
  // Specific SQLSTATEs whose meaning differs from the rest of their class.
  if (sqlstate == "23505") return StatusCode::kAlreadyExists;  // unique_violation
  // statement_completion_unknown: the statement may or may not have taken
  // effect, so ABORTED (which invites a blind retry) would be wrong.
  if (sqlstate == "40003") return StatusCode::kUnknown;
  if (sqlstate == "55P03")
    return StatusCode::kAborted;  // lock_not_available (NOWAIT, lock_timeout)
  // query_canceled: a statement_timeout or a cancel request, both of which the
  // broker issues when a deadline passes.
  if (sqlstate == "57014") return StatusCode::kDeadlineExceeded;
  // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going
  // away or not yet accepting work.
  if (sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03") {
    return StatusCode::kUnavailable;
  }
  // The server reports a protocol violation on a live connection when the
  // request itself is malformed, above all when the number of parameters does
  // not match the $n placeholders. That is the caller's mistake, and
  // UNAVAILABLE (class 08) would invite endless retries. A connection that
  // really is lost is reported as UNAVAILABLE by the adapter whatever the
  // SQLSTATE.
  if (sqlstate == "08P01") return StatusCode::kInvalidArgument;
  if (sqlstate == "42501") return StatusCode::kPermissionDenied;  // insufficient_privilege
  return CodeForClass(sqlstate.substr(0, 2));
}

absl::Status SqlError(absl::string_view sqlstate, absl::string_view message) {
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
    message.remove_suffix(1);
  }
  if (sqlstate.empty()) return absl::Status(StatusCode::kUnknown, message);
  absl::Status status(CodeForSqlState(sqlstate),
                      absl::StrCat(message, " [SQLSTATE ", sqlstate, "]"));
  status.SetPayload(kSqlStatePayloadUrl, absl::Cord(sqlstate));
  return status;
}

absl::Status SqlError(const SqlErrorFields& fields, absl::string_view message) {
  absl::Status status = SqlError(fields.sqlstate, message);
  if (!fields.sqlstate.empty()) {
    status.SetPayload(kSqlErrorFieldsPayloadUrl, absl::Cord(EncodeSqlErrorFields(fields)));
  }
  return status;
}

std::optional<SqlErrorFields> SqlErrorFieldsOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kSqlErrorFieldsPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  return DecodeSqlErrorFields(std::string(*payload));
}

absl::Status ForStatement(const absl::Status& status, size_t index, size_t count) {
  absl::Status out = WithPrefix(status, absl::StrCat("statement ", index + 1, " of ", count, ": "));
  if (std::optional<SqlErrorFields> fields = SqlErrorFieldsOf(out)) {
    fields->statement_index = static_cast<uint32_t>(index + 1);
    out.SetPayload(kSqlErrorFieldsPayloadUrl, absl::Cord(EncodeSqlErrorFields(*fields)));
  }
  return out;
}

std::optional<std::string> SqlStateOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kSqlStatePayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

absl::Status Recode(const absl::Status& status, absl::StatusCode code, absl::string_view prefix) {
  absl::Status out(code, absl::StrCat(prefix, status.message()));
  status.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return out;
}

absl::Status WithPrefix(const absl::Status& status, absl::string_view prefix) {
  return Recode(status, status.code(), prefix);
}

}  // namespace sessionbroker::storage
