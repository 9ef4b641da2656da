#include "server/storage/pq_codec.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "server/storage/pq_error.h"
#include "server/storage/sql_error.h"
#include "server/storage/value_text.h"

namespace sessionbroker::storage {
namespace {

absl::string_view Field(const PGresult* result, int code) {
  const char* value = PQresultErrorField(result, code);
  return value == nullptr ? absl::string_view() : absl::string_view(value);
}

}  // namespace

absl::StatusOr<PqParams> EncodeParams(absl::Span<const Value> params) {
  PqParams out;
  const size_t n = params.size();
  out.types.reserve(n);
  out.texts.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<std::optional<std::string>> text = ParameterText(params[i]);
    if (!text.ok()) return WithPrefix(text.status(), absl::StrCat("parameter $", i + 1, ": "));
    out.texts.push_back(*std::move(text));
    out.types.push_back(ImpliedTypeOid(params[i]));
  }
  // Only now: the texts no longer move.
  out.values.reserve(n);
  out.lengths.reserve(n);
  for (const std::optional<std::string>& text : out.texts) {
    out.values.push_back(text.has_value() ? text->c_str() : nullptr);
    out.lengths.push_back(text.has_value() ? static_cast<int>(text->size()) : 0);
  }
  out.formats.assign(n, 0);
  return out;
}

std::string PreparedStatementKey(const std::string& sql, absl::Span<const Oid> types) {
  bool typed = false;
  for (const Oid type : types) typed = typed || type != 0;
  if (!typed) return sql;
  // A NUL cannot occur in SQL text (libpq sends it as a C string).
  return absl::StrCat(sql, absl::string_view("\0", 1), absl::StrJoin(types, ","));
}

ResultShape ShapeOf(const PGresult* result) {
  ResultShape shape;
  const int num_columns = PQnfields(result);
  shape.columns.resize(static_cast<size_t>(num_columns));
  shape.element_oids.resize(static_cast<size_t>(num_columns));
  for (int c = 0; c < num_columns; ++c) {
    Column& column = shape.columns[static_cast<size_t>(c)];
    const char* name = PQfname(result, c);
    column.name = name == nullptr ? "" : name;
    column.type_oid = PQftype(result, c);
    column.type_name = std::string(TypeName(column.type_oid));
    shape.element_oids[static_cast<size_t>(c)] = ArrayElementType(column.type_oid);
    shape.all_named = shape.all_named && !column.type_name.empty();
  }
  return shape;
}

absl::Status ResultTooLarge(size_t max_bytes, bool in_transaction) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "result exceeds ", max_bytes,
      " bytes (BROKER_MAX_RESULT_BYTES); add a LIMIT, page with WHERE/ORDER BY, or use "
      "StreamExecute",
      in_transaction ? "; its transaction was rolled back"
                     : "; the statement was stopped, in autocommit (the broker runs only "
                       "queries so: a statement that writes and returns rows runs in a "
                       "transaction, rolled back then)"));
}

size_t RawRowBytes(const PGresult* result, int row) {
  size_t bytes = kResultRowOverheadBytes;
  for (int c = 0; c < PQnfields(result); ++c) {
    bytes += kResultCellOverheadBytes + static_cast<size_t>(PQgetlength(result, row, c));
  }
  return bytes;
}

absl::Status AppendRows(const PGresult* result, const ResultShape& shape, bool in_transaction,
                        size_t max_bytes, size_t* used_bytes,
                        std::vector<std::vector<Value>>* rows) {
  // Counted as the result is converted, so an oversized one is abandoned
  // early (see value_text.h for why the count bounds the response).
  auto over_cap = [&](size_t bytes) {
    *used_bytes += bytes;
    return max_bytes > 0 && *used_bytes > max_bytes;
  };
  const int num_rows = PQntuples(result);
  const int num_columns = static_cast<int>(shape.columns.size());
  rows->reserve(rows->size() + static_cast<size_t>(num_rows));
  for (int r = 0; r < num_rows; ++r) {
    if (over_cap(kResultRowOverheadBytes)) return ResultTooLarge(max_bytes, in_transaction);
    std::vector<Value> values;
    values.reserve(static_cast<size_t>(num_columns));
    for (int c = 0; c < num_columns; ++c) {
      const size_t column = static_cast<size_t>(c);
      if (PQgetisnull(result, r, c)) {
        values.push_back(Value::Null());
      } else {
        const absl::string_view text(PQgetvalue(result, r, c),
                                     static_cast<size_t>(PQgetlength(result, r, c)));
        // A value whose text alone is over the cap is refused before it is
        // decoded (a copy as large as itself).
        if (max_bytes > 0 && *used_bytes + text.size() > max_bytes) {
          return ResultTooLarge(max_bytes, in_transaction);
        }
        absl::StatusOr<Value> value = shape.element_oids[column] != 0
                                          ? ArrayFromText(shape.element_oids[column], text)
                                          : ScalarFromText(shape.columns[column].type_oid, text);
        if (!value.ok()) {
          return WithPrefix(value.status(),
                            absl::StrCat("column \"", shape.columns[column].name, "\": "));
        }
        values.push_back(*std::move(value));
      }
      if (over_cap(ResultBytes(values.back()))) return ResultTooLarge(max_bytes, in_transaction);
    }
    rows->push_back(std::move(values));
  }
  return absl::OkStatus();
}

void SetCommandTag(const PGresult* result, QueryResult* out) {
  const char* tag = PQcmdStatus(const_cast<PGresult*>(result));
  out->command_tag = tag == nullptr ? "" : tag;
  // Empty for statements without a row count (CREATE, SET, ...).
  int64_t affected = 0;
  if (!absl::SimpleAtoi(PQcmdTuples(const_cast<PGresult*>(result)), &affected)) affected = 0;
  out->rows_affected = affected;
}

absl::StatusOr<QueryResult> ConvertResult(const PGresult* result, ResultShape shape,
                                          bool in_transaction, size_t max_bytes,
                                          size_t* used_bytes) {
  QueryResult out;
  SetCommandTag(result, &out);
  out.columns = shape.columns;
  *used_bytes += ResultHeaderBytes(out);
  if (max_bytes > 0 && *used_bytes > max_bytes) return ResultTooLarge(max_bytes, in_transaction);
  if (absl::Status appended =
          AppendRows(result, shape, in_transaction, max_bytes, used_bytes, &out.rows);
      !appended.ok()) {
    return appended;
  }
  return out;
}

absl::Status StatusOfErrorResult(const PGresult* result) {
  PqErrorFields fields;
  fields.sqlstate = Field(result, PG_DIAG_SQLSTATE);
  if (fields.sqlstate.empty()) {
    const char* message = PQresultErrorMessage(result);
    return ToStatus(ParseErrorText(message == nullptr ? "" : message));
  }
  fields.severity = Field(result, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (fields.severity.empty()) fields.severity = Field(result, PG_DIAG_SEVERITY);
  fields.primary = Field(result, PG_DIAG_MESSAGE_PRIMARY);
  fields.detail = Field(result, PG_DIAG_MESSAGE_DETAIL);
  fields.hint = Field(result, PG_DIAG_MESSAGE_HINT);
  fields.position = Field(result, PG_DIAG_STATEMENT_POSITION);
  fields.schema_name = Field(result, PG_DIAG_SCHEMA_NAME);
  fields.table_name = Field(result, PG_DIAG_TABLE_NAME);
  fields.column_name = Field(result, PG_DIAG_COLUMN_NAME);
  fields.data_type_name = Field(result, PG_DIAG_DATATYPE_NAME);
  fields.constraint_name = Field(result, PG_DIAG_CONSTRAINT_NAME);
  return ToStatus(FromErrorFields(fields));
}

}  // namespace sessionbroker::storage
