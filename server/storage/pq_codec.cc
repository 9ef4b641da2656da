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

absl::StatusOr<QueryResult> ConvertResult(const PGresult* result, ResultShape shape,
                                          bool in_transaction, size_t max_bytes,
                                          size_t* used_bytes) {
  QueryResult out;
  const char* tag = PQcmdStatus(const_cast<PGresult*>(result));
  out.command_tag = tag == nullptr ? "" : tag;
  out.columns = std::move(shape.columns);
  const std::vector<uint32_t>& element_oids = shape.element_oids;

  // Counted as the result is converted, so an oversized one is abandoned
  // early (see value_text.h for why the count bounds the response).
  auto over_cap = [&](size_t bytes) {
    *used_bytes += bytes;
    return max_bytes > 0 && *used_bytes > max_bytes;
  };
  auto too_large = [&] {
    return absl::ResourceExhaustedError(absl::StrCat(
        "result exceeds ", max_bytes,
        " bytes (BROKER_MAX_RESULT_BYTES); add a LIMIT or page with WHERE/ORDER BY",
        in_transaction ? "; its transaction was rolled back"
                       : "; the statement itself ran to completion and, outside a batch, its "
                         "changes were committed"));
  };
  if (over_cap(ResultHeaderBytes(out))) return too_large();
  const int num_rows = PQntuples(result);
  const int num_columns = static_cast<int>(out.columns.size());
  out.rows.reserve(static_cast<size_t>(num_rows));
  for (int r = 0; r < num_rows; ++r) {
    if (over_cap(kResultRowOverheadBytes)) return too_large();
    std::vector<Value> values;
    values.reserve(static_cast<size_t>(num_columns));
    for (int c = 0; c < num_columns; ++c) {
      const size_t column = static_cast<size_t>(c);
      if (PQgetisnull(result, r, c)) {
        values.push_back(Value::Null());
      } else {
        const absl::string_view text(PQgetvalue(result, r, c),
                                     static_cast<size_t>(PQgetlength(result, r, c)));
        absl::StatusOr<Value> value = element_oids[column] != 0
                                          ? ArrayFromText(element_oids[column], text)
                                          : ScalarFromText(out.columns[column].type_oid, text);
        if (!value.ok()) {
          return WithPrefix(value.status(),
                            absl::StrCat("column \"", out.columns[column].name, "\": "));
        }
        values.push_back(*std::move(value));
      }
      if (over_cap(ResultBytes(values.back()))) return too_large();
    }
    out.rows.push_back(std::move(values));
  }
  // Empty for statements without a row count (CREATE, SET, ...).
  int64_t affected = 0;
  if (!absl::SimpleAtoi(PQcmdTuples(const_cast<PGresult*>(result)), &affected)) affected = 0;
  out.rows_affected = affected;
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
