#include "server/storage/pq_error.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
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

// The one way a message is composed, whichever source the parts came from.
PqError Compose(std::string sqlstate, std::string primary, absl::string_view detail,
                absl::string_view hint) {
  PqError out{std::move(sqlstate), std::move(primary)};
  if (!detail.empty()) absl::StrAppend(&out.message, "; DETAIL: ", detail);
  if (!hint.empty()) absl::StrAppend(&out.message, "; HINT: ", hint);
  return out;
}

}  // namespace

PqError ParseErrorText(absl::string_view text) {
  std::string sqlstate;
  std::string primary;
  std::string detail;
  std::string hint;
  std::string* field = &primary;
  bool first = true;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    const size_t colon = line.find(":  ");
    if (first) {
      first = false;
      // "SEVERITY:  " (the severity word may be translated, but has no spaces).
      if (colon != absl::string_view::npos && colon > 0 &&
          line.substr(0, colon).find(' ') == absl::string_view::npos) {
        line.remove_prefix(colon + 3);
        if (line.size() >= 7 && IsSqlState(line.substr(0, 5)) && line.substr(5, 2) == ": ") {
          sqlstate = std::string(line.substr(0, 5));
          line.remove_prefix(7);
        }
      }
      AppendPiece(line, &primary);
      continue;
    }
    if (colon != absl::string_view::npos && IsFieldLabel(line.substr(0, colon))) {
      const absl::string_view label = line.substr(0, colon);
      field = label == "DETAIL" ? &detail : label == "HINT" ? &hint : nullptr;
      if (field != nullptr) AppendPiece(line.substr(colon + 3), field);
      continue;
    }
    if (absl::StartsWith(line, "LINE ") || absl::StripAsciiWhitespace(line) == "^") {
      field = nullptr;  // the statement excerpt and its caret
      continue;
    }
    if (field != nullptr) AppendPiece(line, field);
  }
  return Compose(std::move(sqlstate), std::move(primary), detail, hint);
}

PqError FromErrorFields(const PqErrorFields& fields) {
  std::string primary;
  std::string detail;
  std::string hint;
  for (const absl::string_view line : absl::StrSplit(fields.primary, '\n')) {
    AppendPiece(line, &primary);
  }
  for (const absl::string_view line : absl::StrSplit(fields.detail, '\n')) {
    AppendPiece(line, &detail);
  }
  for (const absl::string_view line : absl::StrSplit(fields.hint, '\n')) AppendPiece(line, &hint);
  return Compose(IsSqlState(fields.sqlstate) ? std::string(fields.sqlstate) : std::string(),
                 std::move(primary), detail, hint);
}

absl::Status ToStatus(const PqError& error) { return SqlError(error.sqlstate, error.message); }

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
