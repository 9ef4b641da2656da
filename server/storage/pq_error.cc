#include "server/storage/pq_error.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::storage {
namespace {

bool IsSqlState(absl::string_view s) {
  if (s.size() != 5) return false;
  for (const char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) &&
        !absl::ascii_isupper(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

bool IsFieldLabel(absl::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (c != ' ' && !absl::ascii_isupper(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Appends `piece` without its surrounding whitespace, a space before it if
// `out` already has something: a multi-line field becomes one line.
void AppendPiece(absl::string_view piece, std::string* out) {
  piece = absl::StripAsciiWhitespace(piece);
  if (piece.empty()) return;
  if (!out->empty()) out->push_back(' ');
  out->append(piece.data(), piece.size());
}

// `text` as one line.
std::string OneLine(absl::string_view text) {
  std::string out;
  for (const absl::string_view line : absl::StrSplit(text, '\n')) AppendPiece(line, &out);
  return out;
}

// The one way a message is composed, whichever source the parts came from.
PqError Compose(std::string sqlstate, SqlErrorFields fields) {
  PqError out{std::move(sqlstate), fields.message, SqlErrorFields()};
  if (!fields.detail.empty()) absl::StrAppend(&out.message, "; DETAIL: ", fields.detail);
  if (!fields.hint.empty()) absl::StrAppend(&out.message, "; HINT: ", fields.hint);
  fields.sqlstate = out.sqlstate;
  out.fields = std::move(fields);
  return out;
}

}  // namespace

// The field a label of verbose error text introduces; nullptr for the ones
// left out (CONTEXT, QUERY, LOCATION, ...).
std::string* FieldFor(absl::string_view label, SqlErrorFields* f) {
  if (label == "DETAIL") return &f->detail;
  if (label == "HINT") return &f->hint;
  if (label == "SCHEMA NAME") return &f->schema_name;
  if (label == "TABLE NAME") return &f->table_name;
  if (label == "COLUMN NAME") return &f->column_name;
  if (label == "DATATYPE NAME") return &f->data_type_name;
  if (label == "CONSTRAINT NAME") return &f->constraint_name;
  return nullptr;
}

PqError ParseErrorText(absl::string_view text) {
  std::string sqlstate;
  SqlErrorFields fields;
  std::string* field = &fields.message;
  bool first = true;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    const size_t colon = line.find(":  ");
    if (first) {
      first = false;
      // "SEVERITY:  " (the severity word may be translated, but has no spaces).
      if (colon != absl::string_view::npos && colon > 0 &&
          line.substr(0, colon).find(' ') == absl::string_view::npos) {
        fields.severity = std::string(line.substr(0, colon));
        line.remove_prefix(colon + 3);
        if (line.size() >= 7 && IsSqlState(line.substr(0, 5)) && line.substr(5, 2) == ": ") {
          sqlstate = std::string(line.substr(0, 5));
          line.remove_prefix(7);
        }
      }
      AppendPiece(line, &fields.message);
      continue;
    }
    if (colon != absl::string_view::npos && IsFieldLabel(line.substr(0, colon))) {
      field = FieldFor(line.substr(0, colon), &fields);
      if (field != nullptr) AppendPiece(line.substr(colon + 3), field);
      continue;
    }
    if (absl::StartsWith(line, "LINE ") || absl::StripAsciiWhitespace(line) == "^") {
      field = nullptr;  // the statement excerpt and its caret
      continue;
    }
    if (field != nullptr) AppendPiece(line, field);
  }
  return Compose(std::move(sqlstate), std::move(fields));
}

PqError FromErrorFields(const PqErrorFields& in) {
  SqlErrorFields fields;
  fields.severity = OneLine(in.severity);
  fields.message = OneLine(in.primary);
  fields.detail = OneLine(in.detail);
  fields.hint = OneLine(in.hint);
  if (!absl::SimpleAtoi(in.position, &fields.position)) fields.position = 0;
  fields.schema_name = std::string(in.schema_name);
  fields.table_name = std::string(in.table_name);
  fields.column_name = std::string(in.column_name);
  fields.data_type_name = std::string(in.data_type_name);
  fields.constraint_name = std::string(in.constraint_name);
  return Compose(IsSqlState(in.sqlstate) ? std::string(in.sqlstate) : std::string(),
                 std::move(fields));
}

absl::Status ToStatus(const PqError& error) {
  if (error.sqlstate.empty()) return SqlError(error.sqlstate, error.message);
  SqlErrorFields fields = error.fields;
  fields.sqlstate = error.sqlstate;
  return SqlError(fields, error.message);
}

bool IsOutOfConnectionSlots(absl::string_view message) {
  for (absl::string_view text :
       {"too many clients already", "remaining connection slots are reserved",
        "too many connections for role", "too many connections for database",
        "max clients reached"}) {
    if (absl::StrContains(message, text)) return true;
  }
  return false;
}

bool IsStalePreparedStatement(absl::string_view sqlstate, absl::string_view message) {
  return sqlstate == "26000" ||
         (sqlstate == "0A000" &&
          absl::StrContains(message, "cached plan must not change result type"));
}

}  // namespace sessionbroker::storage
