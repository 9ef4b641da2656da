// The libpq-level half of running a statement, shared by every connection
// built on libpq (the pooled connections of pq_connection.h, blocking, and
// the pipelined engine of pq_pipeline_loop.h, non-blocking): parameters become the four
// arrays PQexecParams / PQsendQueryParams / PQexecPrepared take (types,
// values, lengths, formats), and a PGresult becomes a QueryResult or, for an
// error result, an absl::Status with the error's fields (pq_error.h,
// sql_error.h). It sends nothing and owns no connection.
//
// Parameters travel in text format (value_text.h gives each kind's text),
// each with a type OID: the explicit one the caller named, resolved by the
// connection, or the one its kind implies (ImpliedTypeOid), 0 leaving it to
// the server.
//
// Pure functions and plain data; thread-compatible (a PqParams is used by one
// thread at a time, a PGresult is read only).
#ifndef SESSIONBROKER_SERVER_STORAGE_PQ_CODEC_H_
#define SESSIONBROKER_SERVER_STORAGE_PQ_CODEC_H_

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/storage/value.h"

namespace sessionbroker::storage {

// Run on every new connection, pooled or pipelined, so a result reads the
// same whichever path ran it, whatever the server's or role's defaults: ISO
// dates, ISO 8601 intervals, UTC timestamps, and floats printed with the
// shortest text that round-trips exactly. One round trip (simple protocol,
// several statements).
inline constexpr char kBaselineSettingsSql[] =
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 3";

// Names a result's non-built-in types ($1: their OIDs as an oid[]). For
// arrays it also gives the element type to decode with (a domain's base type,
// since the server reports domain values with their base type's OID anyway).
// Every name is qualified, also the operators, so that nothing on the
// session's search_path can change what it runs.
inline constexpr char kTypeLookupSql[] =
    "SELECT t.oid, t.typname, "
    "CASE WHEN t.typcategory OPERATOR(pg_catalog.=) 'A' "
    "AND t.typelem OPERATOR(pg_catalog.<>) 0::pg_catalog.oid "
    "THEN CASE WHEN e.typtype OPERATOR(pg_catalog.=) 'd' THEN e.typbasetype ELSE e.oid END "
    "ELSE 0::pg_catalog.oid END "
    "FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e "
    "ON e.oid OPERATOR(pg_catalog.=) t.typelem "
    "WHERE t.oid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.oid[])";

struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
// Owns a PGresult.
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// One statement's parameters in libpq's form. `values`, `lengths` and
// `formats` point into / describe `texts`; moving a PqParams keeps them
// valid, copying it does not (hence move-only).
struct PqParams {
  PqParams() = default;
  PqParams(PqParams&&) = default;
  PqParams& operator=(PqParams&&) = default;
  PqParams(const PqParams&) = delete;
  PqParams& operator=(const PqParams&) = delete;

  std::vector<Oid> types;                         // 0: untyped (the server infers it)
  std::vector<std::optional<std::string>> texts;  // nullopt: SQL NULL
  std::vector<const char*> values;                // texts' c_str(), nullptr for NULL
  std::vector<int> lengths;                       // texts' sizes (libpq ignores them for text)
  std::vector<int> formats;                       // all 0: text

  int count() const { return static_cast<int>(values.size()); }
};

// The texts of `params` with the types their kinds imply (types[i] =
// ImpliedTypeOid(params[i])). INVALID_ARGUMENT, prefixed "parameter $n: ",
// for a value PostgreSQL cannot receive as text (ParameterText).
absl::StatusOr<PqParams> EncodeParams(absl::Span<const Value> params);

// The key a statement's prepared copy is cached under: its SQL and the types
// its parameters are prepared with (a prepared statement's parameter types
// are fixed when it is prepared, so the same SQL with other types is another
// statement). Just the SQL when every type is 0.
std::string PreparedStatementKey(const std::string& sql, absl::Span<const Oid> types);

// A result's columns: names, type OIDs and the built-in types' names (empty
// for the others, which the connection names: enums, domains' arrays,
// extension types), and for each column the element type to decode an array
// with (0: decode as a scalar).
struct ResultShape {
  std::vector<Column> columns;
  std::vector<uint32_t> element_oids;
  bool all_named = true;  // no column's type name is missing
};
ResultShape ShapeOf(const PGresult* result);

// The rows, command tag and row count of a successful result
// (PGRES_TUPLES_OK or PGRES_COMMAND_OK) with the columns `shape` describes,
// decoded as value_text.h says. Counts the result against `max_bytes` (0:
// unlimited) in *used_bytes as ExecuteOptions::max_result_bytes says:
// RESOURCE_EXHAUSTED once over, saying what happened to the statement's
// effects (`in_transaction`: rolled back with its transaction; otherwise
// committed). INTERNAL for a value the server sent in an unexpected form.
absl::StatusOr<QueryResult> ConvertResult(const PGresult* result, ResultShape shape,
                                          bool in_transaction, size_t max_bytes,
                                          size_t* used_bytes);

// Appends the rows of `result` (PGRES_TUPLES_OK, or PGRES_SINGLE_TUPLE in
// single-row mode) to *rows, decoded as ConvertResult does and counted the
// same way against `max_bytes` in *used_bytes (a value whose text alone
// would pass the cap is refused before it is decoded). On failure *rows may
// hold some of the rows.
absl::Status AppendRows(const PGresult* result, const ResultShape& shape, bool in_transaction,
                        size_t max_bytes, size_t* used_bytes,
                        std::vector<std::vector<Value>>* rows);

// The command tag and row count of a completed statement's result.
void SetCommandTag(const PGresult* result, QueryResult* out);

// An upper bound of what row `row` of `result` adds to a response, from the
// lengths of its texts (before decoding): used to count rows that cannot be
// decoded yet.
size_t RawRowBytes(const PGresult* result, int row);

// RESOURCE_EXHAUSTED for a result over BROKER_MAX_RESULT_BYTES, saying what
// became of the statement's effects.
absl::Status ResultTooLarge(size_t max_bytes, bool in_transaction);

// The status for an error result (PGRES_FATAL_ERROR): from its fields
// (PQresultErrorField) as FromErrorFields reads them, or from its message if
// it has no SQLSTATE (libpq's own errors, a lost connection).
absl::Status StatusOfErrorResult(const PGresult* result);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PQ_CODEC_H_
